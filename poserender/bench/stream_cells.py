"""Stream cells: whole streams through the streaming runtime, as ``render`` runs them.

Each stream is ``runtime.stream.render_stream`` with a ``RenderRequest``: the identity read by
a fresh adapter of the model's family, the keypoint file read by the family's reader (or, for
the default inputs, the frames from memory), the pipeline, and an H.264 mp4. One warm-up
stream, then whole streams until ``min_seconds`` and at least 3 streams.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from .. import families
from ..engines import registry
from ..errors import UserError
from ..runtime.stream import RenderRequest, StreamOptions, render_stream
from .cellflops import GraphFlops
from .environment import MemorySampler
from .grid import Grid, Layout
from .inputs import BenchInputs
from .rows import row
from .stats import Method, round_or_none

#: the runtime's own stages in its metrics (the rest are the model's)
RUNTIME_STAGES = ("read", "prepare", "write")


def measure_stream(manifest, inputs: BenchInputs, backend: str, batch: int, layout: Layout, method: Method,
                   work: Path, precision: Optional[str] = None) -> Dict[str, Any]:
    """fps per stream (after setup), first-frame delay from the call, per-stage compute and
    queue time from the runtime's metrics (of the median stream)."""
    family = families.of(manifest)
    request = RenderRequest(keypoints=str(inputs.keypoints or "(in memory)"), output=str(work / "stream.mp4"),
                            backend=backend, precision=precision,
                            devices=",".join(layout.devices) if layout.devices else None,
                            stream=StreamOptions(batch=batch, replicate=bool(layout.placement and
                                                                             layout.placement.replicate),
                                                 max_frames=inputs.max_frames))
    runs: List[Dict[str, Any]] = []

    def one() -> Dict[str, Any]:
        first: List[float] = []
        started = time.perf_counter()
        result = render_stream(manifest, inputs.new_adapter(), request, torch_stages=family.torch_stage,
                               source=inputs.stream_source(request.stream.fps),
                               progress=lambda done, total, fps: first or first.append(time.perf_counter()))
        report = result.report
        return {"fps": report.fps, "frames": report.counts.frames_out, "seconds": report.seconds,
                "setup_s": report.setup_seconds, "first_frame_s": (first[0] - started) if first else None,
                "stages": report.metrics.to_dict()}

    with MemorySampler(gpu=registry.is_gpu(backend)) as memory:
        warm = one()
        began = time.perf_counter()
        while len(runs) < 3 or time.perf_counter() - began < method.min_seconds:
            runs.append(one())
    runs.sort(key=lambda r: r["fps"])
    median = runs[len(runs) // 2]
    stages = median["stages"]
    model_stages = [name for name in stages if name not in RUNTIME_STAGES]
    per_frame = [1e3 / r["fps"] for r in runs]
    firsts = [r["first_frame_s"] for r in runs if r["first_frame_s"] is not None]
    return {"runs": len(runs), "clipped": 0, "timed_s": round(sum(r["seconds"] for r in runs), 3),
            "frames_per_stream": median["frames"], "fps": round(median["fps"], 4),
            "fps_how": "frames / stream time after setup (median stream); includes reading keypoints and H.264",
            "latency_ms": {"p50": None, "p90": None, "p95": None, "p99": None, "mean": None},
            "latency_how": "not measured per frame in a stream; see stages: compute and queue time per stage "
                           "(p50/p90/p99 per batch, from the runtime's metrics, median stream)",
            "per_frame_ms": {"min": round(min(per_frame), 3), "median": round(float(np.median(per_frame)), 3),
                             "max": round(max(per_frame), 3)},
            "first_frame_s": {"warmup": round_or_none(warm["first_frame_s"]),
                              "median": round_or_none(float(np.median(firsts)) if firsts else None)},
            "setup_s": round_or_none(median["setup_s"]), "warmup_ms": [round(warm["seconds"] * 1e3, 3)],
            "compute_ms": {name: stages[name]["compute_ms"]["p50"] for name in model_stages},
            "host_ms": None, "queue_ms": round(sum(stages[n]["queue_ms"]["p50"] for n in model_stages), 3),
            "stages": stages, **memory.report()}


def run_stream_cells(manifest: Mapping[str, Any], backend: str, precision: str, layout: Layout, grid: Grid,
                     inputs: BenchInputs, method: Method, graph_flops: GraphFlops,
                     log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """One stream row per batch size; a stream the runtime refuses is a skipped row with its reason."""
    canvas = list(manifest["canvas"])
    model_precision = manifest.get("precision", "fp32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="poserender-bench-stream-") as tmp:
        for batch in grid.batches:
            key = (backend, "stream", batch, precision, canvas, layout.label)
            log(f"timing {backend} stream, batch {batch}, {layout.label}")
            try:
                cell = measure_stream(manifest, inputs, backend, batch, layout, method, Path(tmp),
                                      None if precision == model_precision else precision)
            except UserError as exc:
                rows.append(row(*key, status="skipped", reason=str(exc)))
                continue
            cell.update(flops_per_frame=graph_flops.per_frame("stream", batch),
                        flops_from="ONNX graph (per-frame stages)", transfer_ms=None)
            rows.append(row(*key, status="ok", **cell))
    return rows
