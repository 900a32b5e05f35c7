"""The rows of a result: one per cell (``status`` ok, or skipped with the reason), and what is
derived across rows once they are all measured (speed-ups, FLOP rates, reduced precision
beside FP32)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..engines import registry


class Skip(Exception):
    """A cell that cannot run here; the message is the reason shown to the user."""


def row(backend: str, stage: str, batch: Any, precision: str, canvas: Sequence[int], layout: str,
        **fields: Any) -> Dict[str, Any]:
    """One result row; ``*`` for what a skipped row does not narrow down."""
    return {"backend": backend, "stage": stage, "batch": batch, "precision": precision,
            "canvas": f"{canvas[0]}x{canvas[1]}" if canvas else "*", "layout": layout, **fields}


def derive(rows: List[Dict[str, Any]], peak_gflops: Optional[float]) -> None:
    """Achieved GFLOP/s, fraction of the CPU matmul peak, and speed-up over the baseline of the
    same canvas (frames/s ratio; not for source-stage rows, which count identities)."""
    base = {r["canvas"]: r["fps"] for r in rows if r.get("is_baseline") and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        r["achieved_gflops"] = round(r["flops_per_frame"] * r["fps"] / 1e9, 2)
        on_cpu = not registry.is_gpu(r["backend"])
        r["peak_fraction"] = round(r["achieved_gflops"] / peak_gflops, 4) if on_cpu and peak_gflops else None
        r["speedup"] = round(r["fps"] / base[r["canvas"]], 3) if r["canvas"] in base and r["stage"] != "source" \
            else None


def compare_precisions(rows: List[Dict[str, Any]], cell_frames: Dict[Tuple, Dict[int, np.ndarray]],
                       manifest: Mapping[str, Any]) -> None:
    """Reduced-precision rows side by side with FP32: ``speedup_vs_fp32`` (fps over the fp32 row
    of the same backend, stage, batch and layout in this run), ``quality_vs_fp32`` (PSNR, SSIM,
    max abs error of the frames both rendered for the same targets, measured here) and, for
    int8, the export's gate record (``int8_gate``, held-out frames, from manifest.json)."""
    ok = {(r["backend"], r["stage"], r["batch"], r["precision"], r["layout"]): r for r in rows if r["status"] == "ok"}
    gate_record = (manifest.get("int8") or {}).get("quality")
    for key, r in ok.items():
        backend, stage, batch, precision, layout = key
        if precision == "fp32" or r.get("is_baseline"):
            continue
        if precision == "int8" and gate_record:
            r["int8_gate"] = {k: gate_record.get(k) for k in ("psnr_db", "ssim", "max_abs_error", "frames")}
            r["int8_gate"].update(method=(manifest["int8"].get("calibration") or {}).get("method"),
                                  passed=(manifest["int8"].get("gate") or {}).get("passed"))
        fp32 = ok.get((backend, stage, batch, "fp32", layout))
        if fp32 is None:
            r["speedup_vs_fp32"] = None
            r["quality_vs_fp32"] = {"note": "no fp32 cell of this backend/stage/batch in the run "
                                            "(add fp32 to --precision)"}
            continue
        r["speedup_vs_fp32"] = round(r["fps"] / fp32["fps"], 3)
        ref, got = cell_frames.get((backend, stage, batch, "fp32", layout)), cell_frames.get(key)
        common = sorted(set(ref or {}) & set(got or {}))
        if not common:
            r["quality_vs_fp32"] = {"note": "no frames to compare (stream or source cell)"}
            continue
        from ..export.quality import frame_quality      # numpy + OpenCV only

        quality = frame_quality(np.stack([ref[i] for i in common]), np.stack([got[i] for i in common]))
        r["quality_vs_fp32"] = {**quality, "frame_indices": common}
