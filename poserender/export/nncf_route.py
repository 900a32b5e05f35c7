"""INT8's second route, for OpenVINO: NNCF post-training quantization of the same stage.

export/int8.py calibrates every route from the same real feeds and gates each on the same
held-out frames; this module is what differs for ``--int8-target ov``: ``nncf.quantize`` on the
OpenVINO model read from the FP32 ONNX graph, with an ignored scope that leaves exactly the QDQ
route's trunk to INT8 (the family's Int8Plan: everything outside the trunk prefixes, the output
head, the FP32 op types), writing an OpenVINO IR (``frame.int8.nncf.xml`` + ``.bin``); the frames
the gate compares come from OpenVINO, which runs the graph.

Why a second route: our QDQ graph has asymmetric uint8 activations (ONNX Runtime's best CPU
format); OpenVINO's import turns their zero points into FP32 ``Subtract`` nodes at every concat
and keeps ReLUs apart, which costs more than the INT8 convolutions save. NNCF's ``performance``
preset (symmetric activations) places FakeQuantize nodes where OpenVINO fuses them. Which graph
``ov-cpu --precision int8`` runs is measured, not assumed (:func:`compare_routes`): both are
timed on OpenVINO on the gate frames, alternating, and the faster that passes the gate there is
recorded as ``int8_nncf.ov_route.chosen`` (engines/ov_engine.int8_key reads it).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from ..errors import UserError
from .quality import QualityGate, frame_quality

PRESET = "performance"
#: ONNX op type -> the OpenVINO op it becomes (for the FP32 op types of the ignored scope)
OV_TYPES = {"InstanceNormalization": "MVN"}
INSTALL = "pip install 'poserender[openvino]'"


def check_available() -> None:
    """One line when openvino or nncf is missing (before any calibration work)."""
    import importlib.util

    missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--int8-target ov needs OpenVINO and NNCF ({', '.join(missing)} not installed): {INSTALL}")


def ignored_scope(plan, fp32_ops: Mapping[str, str]) -> Dict[str, List[str]]:
    """NNCF ignored scope (patterns and types) that leaves exactly the QDQ plan's trunk to INT8.
    ``plan``: export.quantize.QuantPlan of the FP32 graph (OpenVINO keeps ONNX node names as
    friendly names, and names the bias Add of a Conv after it, the Conv itself ``NAME/WithoutBiases``)."""
    outside = "^(?!" + "|".join(re.escape(p) for p in plan.trunk_prefixes) + ").*"
    heads = [f"^{re.escape(name)}(/.*)?$" for name in plan.excluded.get("output_head", [])]
    return {"patterns": [outside] + heads, "types": sorted({OV_TYPES.get(op, op) for op in fp32_ops})}


def quantize(fp32_graph: Path, out_xml: Path, scope: Dict[str, List[str]], feeds: List[Dict[str, np.ndarray]],
             preset: str = PRESET) -> None:
    """``nncf.quantize`` the FP32 graph on the calibration feeds into an OpenVINO IR at ``out_xml``."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)       # its per-node notes; what matters is in the manifest
    quantized = nncf.quantize(ov.Core().read_model(str(fp32_graph)), nncf.Dataset(feeds),
                              preset=getattr(nncf.QuantizationPreset, preset.upper()), subset_size=len(feeds),
                              ignored_scope=nncf.IgnoredScope(patterns=scope["patterns"], types=scope["types"],
                                                              validate=False))
    ov.save_model(quantized, str(out_xml))


def versions() -> str:
    import nncf
    import openvino as ov

    return f"nncf.quantize {nncf.__version__}, OpenVINO {ov.__version__.split('-')[0]}"


def _engine(graph: Path, feed: Mapping[str, np.ndarray], threads: Optional[int] = None):
    from ..engines.ov_engine import OvEngine
    from ..specs import StageSpec, TensorSpec

    spec = StageSpec("int8", tuple(TensorSpec(k, str(v.dtype), ("batch",) + v.shape[1:]) for k, v in feed.items()),
                     (), max_batch=1 << 16)
    return OvEngine(spec, graph, "int8", threads)


def ov_frames(graph: Path, feeds: List[Dict[str, np.ndarray]]) -> np.ndarray:
    """The uint8 frames OpenVINO's CPU plugin makes of ``feeds`` with ``graph`` (f32 for the float ops)."""
    with _engine(graph, feeds[0]) as engine:
        return np.concatenate([engine.infer(feed)["frames"] for feed in feeds])


def time_graphs(graphs: Mapping[str, Path], feeds: List[Dict[str, np.ndarray]], rounds: int = 3) -> Dict[str, float]:
    """Median ms per frame of each graph on OpenVINO, the graphs alternated call by call."""
    engines = {name: _engine(path, feeds[0]).activate() for name, path in graphs.items()}
    try:
        for engine in engines.values():
            engine.infer(feeds[0])
        times: Dict[str, List[float]] = {name: [] for name in engines}
        for r in range(rounds):
            feed = feeds[r % len(feeds)]
            for name, engine in engines.items():
                t0 = time.perf_counter()
                engine.infer(feed)
                times[name].append((time.perf_counter() - t0) * 1e3 / len(next(iter(feed.values()))))
        return {name: round(float(np.median(t)), 2) for name, t in times.items()}
    finally:
        for engine in engines.values():
            engine.deactivate()


def compare_routes(graphs: Mapping[str, Path], feeds: List[Dict[str, np.ndarray]], reference: np.ndarray,
                   gate: QualityGate, log: Callable[[str], None]) -> Dict[str, Any]:
    """Time OpenVINO on the QDQ graph and the NNCF graph (which passed its gate); the faster one
    that passes the gate on OpenVINO is the one ``ov-cpu --precision int8`` runs."""
    qdq_quality = frame_quality(reference, ov_frames(graphs["qdq"], feeds))
    ms = time_graphs(graphs, feeds)
    passing = ["nncf"] + (["qdq"] if gate.passes(qdq_quality) else [])
    chosen = min(passing, key=lambda name: ms[name])
    log(f"OpenVINO INT8 routes on the gate frames: QDQ graph {ms['qdq']} ms/frame (PSNR {qdq_quality['psnr_db']} dB), "
        f"NNCF graph {ms['nncf']} ms/frame; ov-cpu --precision int8 runs the {chosen} graph")
    return {"chosen": chosen, "ms_per_frame": ms, "qdq_quality_on_openvino": qdq_quality,
            "how": "median of alternating calls on the gate frames, OpenVINO CPU, all threads, f32 for the rest"}
