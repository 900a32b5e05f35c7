"""Compute floors per precision: how close a CPU cell is to what its arithmetic allows.

A cell's floor is its counted FLOPs per frame divided by the measured peak of the arithmetic its
precision runs (:data:`PEAK_PRECISION`): fp32 from the machine's fp32 matmul peak (torch/numpy,
and OpenVINO's when it is measured: the best), bf16 and int8 from OpenVINO's dense GEMM at that
precision (``flops.openvino_matmul_peak``: the runtime that has BF16 and INT8 GEMMs on a CPU).
Every CPU row gets ``floor_ms_per_frame`` and ``ratio_to_floor`` (its ms per frame over the
floor) when its precision's peak is known; the peaks go into the result as ``precision_peaks``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..engines import registry

#: the arithmetic that bounds each precision (an INT8 trunk with BF16 elsewhere: INT8 GEMMs)
PEAK_PRECISION = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "int8-bf16": "int8"}
#: the precisions whose peak OpenVINO measures
MEASURED = ("fp32", "bf16", "int8")


def _cpu_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and r.get("backend") in registry.BACKENDS
            and not registry.is_gpu(r["backend"]) and r.get("flops_per_frame")]


def precision_peaks(rows: List[Dict[str, Any]], threads: int, seconds: float) -> Dict[str, Any]:
    """OpenVINO's GEMM peak per precision the CPU rows run below fp32 (and fp32 with them, so
    every floor of the run comes from the same kind of measurement); {} when none is needed or
    ``seconds`` is 0; a precision that cannot be measured here says why."""
    wanted = {PEAK_PRECISION.get(r["precision"]) for r in _cpu_rows(rows)} & set(MEASURED)
    if seconds <= 0 or not wanted - {"fp32"}:
        return {}
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {p: {"gflops": None, "how": "not measured: openvino not installed"} for p in sorted(wanted)}
    from ..flops import openvino_matmul_peak

    return {p: openvino_matmul_peak(p, threads, seconds) for p in sorted(wanted | {"fp32"})}


def apply_floors(rows: List[Dict[str, Any]], fp32_peak: Optional[float], peaks: Dict[str, Any]) -> None:
    """``floor_ms_per_frame`` and ``ratio_to_floor`` on every CPU row whose precision's peak is known."""
    for r in _cpu_rows(rows):
        kind = PEAK_PRECISION.get(r["precision"])
        measured = (peaks.get(kind) or {}).get("gflops")
        best = max(v for v in (measured, fp32_peak) if v) if kind == "fp32" and (measured or fp32_peak) \
            else measured
        if not best or not r.get("fps"):
            continue
        floor_ms = r["flops_per_frame"] / best / 1e6
        r["floor_ms_per_frame"] = float(f"{floor_ms:.4g}")
        r["ratio_to_floor"] = round(1e3 / r["fps"] / floor_ms, 2)
        r["floor_peak"] = {"precision": kind, "gflops": best}


def floor_lines(result: Dict[str, Any]) -> List[str]:
    """The terminal table's lines: each CPU row's ms per frame beside its floor."""
    rows = [r for r in result["rows"] if r["status"] == "ok" and r.get("floor_ms_per_frame")]
    if not rows:
        return []
    peaks = result.get("precision_peaks") or {}
    measured = ", ".join(f"{p} {v['gflops']:.0f} GFLOP/s" for p, v in peaks.items() if v.get("gflops"))
    lines = ["compute floors (FLOPs per frame / the measured peak of the precision's arithmetic"
             + (f"; OpenVINO GEMM: {measured}" if measured else "; fp32: the matmul peak") + "):"]
    lines.extend(f"  {r['backend']} {r['stage']} batch {r['batch']} {r['precision']}: {1e3 / r['fps']:.1f} ms/frame, "
                 f"floor {r['floor_ms_per_frame']} ms, {r['ratio_to_floor']}x the floor" for r in rows)
    return lines
