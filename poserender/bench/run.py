"""Running the grid: for each model, its inputs, then every (backend, precision, layout) engine
set and its cells, the stream cells, the baseline, and the rows derived across them."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import families
from ..manifest import Manifest
from .baseline import baseline_row
from .cellflops import GraphFlops
from .cells import open_engines, run_cell
from .environment import environment, load_average
from .floors import apply_floors, precision_peaks
from .grid import Grid, backend_status, layout as plan_layout
from .inputs import BenchInputs, load_inputs
from .rows import Skip, compare_precisions, derive, row
from .stats import GUARD_FRACTION, GUARD_LEVELS, OUTLIER_RULE, Method, frame_agreement
from .stream_cells import run_stream_cells

SCHEMA = "poserender-bench/1"


def run_bench(models: Sequence[Tuple[Path, Mapping[str, Any]]], grid: Grid, method: Method,
              inputs_from: Optional[Dict[str, Any]] = None, baseline: Optional[str] = None,
              peak_seconds: float = 2.0, argv: Sequence[str] = (), skipped_models: Sequence[Tuple[str, str]] = (),
              log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Measure every cell of ``grid`` for each (model_dir, manifest); returns the result dict
    (environment, method, FLOPs, machine peak, rows). Rows of cells that cannot run here have
    ``status: skipped`` and the reason. ``inputs_from``: load_inputs' keywords (``identity``,
    ``keypoints``, ``frames``)."""
    from ..flops import COUNTED, matmul_peak

    method.check()
    started = time.perf_counter()
    env = environment(argv, method.threads)
    status = backend_status(grid.backends)
    rows: List[Dict[str, Any]] = [row("*", "*", "*", "*", (), "*", status="skipped", reason=reason, resolution=label)
                                  for label, reason in skipped_models]
    flops_summary: Dict[str, Any] = {}
    described: Dict[str, Any] = {}
    for model_dir, manifest in models:
        if not isinstance(manifest, Manifest):
            manifest = Manifest.from_dict(model_dir, manifest)
        canvas = list(manifest["canvas"])
        inputs = load_inputs(manifest, warn=lambda message: log(f"poserender: warning: {message}"),
                             **(inputs_from or {}))
        described = inputs.described
        graph_flops = GraphFlops(model_dir, manifest)
        flops_summary[f"{canvas[0]}x{canvas[1]}"] = graph_flops.summary()
        model_rows = run_model(model_dir, manifest, grid, method, inputs, graph_flops, status, baseline, log)
        rows.extend(model_rows)
    peak = matmul_peak(method.threads, peak_seconds) if peak_seconds > 0 else {"gflops": None,
                                                                               "how": "not measured"}
    derive(rows, peak.get("gflops"))
    peaks = precision_peaks(rows, method.threads, peak_seconds)
    apply_floors(rows, peak.get("gflops"), peaks)
    env["load_average_end"] = load_average()
    return {"schema": SCHEMA, "environment": env,
            "method": {**dataclasses.asdict(method), "outliers": OUTLIER_RULE, "clock": "time.perf_counter",
                       "latency": "per call (one batch), percentiles of the kept calls",
                       "fps": "frames / total kept call time (replicated: all frames / wall time)",
                       "compute_vs_host": "compute = engine.infer per stage; host = rest of the call; "
                                          "queue = 0 (no queues in a synchronous cell)",
                       "frames_check": f"frames vs the baseline's: within {GUARD_LEVELS} levels on >= "
                                       f"{GUARD_FRACTION:.1%} of pixels"},
            "grid": dataclasses.asdict(grid), "baseline": baseline, "inputs": described,
            "models": [model_info(d, m) for d, m in models],
            "flops": {"counted": COUNTED, "per_stage_at_batch_1": flops_summary},
            "machine_peak": peak, "precision_peaks": peaks, "rows": rows,
            "wall_s": round(time.perf_counter() - started, 1)}


def run_model(model_dir: Path, manifest: Manifest, grid: Grid, method: Method, inputs: BenchInputs,
              graph_flops: GraphFlops, status: Mapping[str, Tuple[bool, str]], baseline: Optional[str],
              log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Every row of one model: the baseline, then per backend, precision and layout its cells."""
    family = families.of(manifest)
    canvas = list(manifest["canvas"])
    layout = plan_layout(grid.devices, grid.replicate, manifest["stages"])
    rows: List[Dict[str, Any]] = []
    reference: Dict[int, np.ndarray] = {}
    cell_frames: Dict[Tuple, Dict[int, np.ndarray]] = {}
    if baseline:
        rows.append(baseline_row(manifest, inputs, method, reference, canvas, log))
    for backend in grid.backends:
        usable, why = status[backend]
        if not usable:
            rows.append(row(backend, "*", "*", "*", canvas, "*", status="skipped", reason=why))
            continue
        for precision in grid.precisions:
            try:
                engines = open_engines(model_dir, manifest, family, backend, precision, layout, method.threads)
            except Skip as exc:
                rows.append(row(backend, "*", "*", precision, canvas, layout.label, status="skipped", reason=str(exc)))
                continue
            try:
                inputs.adapter.run_identity(engines.identity)
                for stage in [s for s in grid.stages if s != "stream"]:
                    for batch in grid.batches:
                        key = (backend, stage, batch, precision, canvas, engines.layout)
                        try:
                            log(f"timing {backend} {stage} stage, batch {batch}, {precision}, {engines.layout}")
                            frames: Dict[int, np.ndarray] = {}
                            cell = run_cell(stage, batch, engines, inputs, method, frames, graph_flops)
                        except Skip as exc:
                            rows.append(row(*key, status="skipped", reason=str(exc)))
                            continue
                        if reference and frames:
                            cell["frames_vs_baseline"] = frame_agreement(reference, frames)
                        rows.append(row(*key, status="ok", **cell))
                        cell_frames[(backend, stage, batch, precision, engines.layout)] = frames
            finally:
                engines.close()
            if "stream" in grid.stages:   # the engines are freed: a stream builds its own
                rows.extend(run_stream_cells(manifest, backend, precision, layout, grid, inputs, method,
                                             graph_flops, log))
    compare_precisions(rows, cell_frames, manifest)
    return rows


def model_info(model_dir: Path, manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """What the result file records of a model: family, canvas, checkpoint, graph sizes, and the
    family's own manifest fields it has (width, warp mode, rewrites)."""
    checkpoint = manifest.get("checkpoint") or {}
    return {"dir": str(model_dir), "family": manifest.get("family"), "canvas": manifest.get("canvas"),
            "width": manifest.get("width"), "precision": manifest.get("precision", "fp32"),
            "warp_mode": manifest.get("warp_mode"), "graph_rewrites": manifest.get("graph_rewrites", []),
            "checkpoint": checkpoint.get("path"), "checkpoint_sha256": checkpoint.get("sha256"),
            "checkpoint_meta": checkpoint.get("meta", {}),
            "onnx_mib": {s["file"]: round((Path(model_dir) / s["file"]).stat().st_size / 2 ** 20, 1)
                         for s in manifest["stages"]}}
