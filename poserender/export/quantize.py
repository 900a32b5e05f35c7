"""Calibrated INT8 (QDQ) graphs beside the FP32 ones, behind a measured quality gate: the quantizer.

This module holds what the quantization itself needs (which nodes INT8 takes, ``quantize_graph``);
export/calibration.py makes the real calibration feeds and export/int8.py is the driver.

``add_int8(model_dir, data)`` takes an exported pose2img folder and real inputs (one identity
and a keypoint sequence), and writes ``frame.int8.onnx`` plus an ``int8`` entry in
manifest.json:

1. The FP32 source stage runs once on the identity; its outputs and the keypoint frames are the
   frame stage's inputs (calibration never sees random tensors).
2. ``onnxruntime.quantization.quantize_static`` (QDQ, uint8 activations, int8 weights) quantizes
   the stage's convolutional trunk (stage C's U-Net); everything else stays FP32 and is named
   in the manifest: the trunk's output head (its last conv), whatever follows it (tanh/sigmoid,
   fusion, to-uint8), the target heat maps, limb fits and warps.
3. The frames are split into disjoint sets: calibration, method selection (``auto`` only) and
   held-out gate frames. ``auto`` calibrates with MinMax, entropy and percentile and keeps the
   one with the best PSNR on the selection frames.
4. On the gate frames the INT8 graph's uint8 frames are compared with the FP32 graph's (PSNR,
   SSIM, max abs error; :mod:`poserender.export.quality`). Below the gate nothing is written
   (UserError with the numbers); above it the graph is moved into place and the manifest
   updated (atomically).

PSC models (``"family": "psc"``): the same for CT-Net's frame stage, fed by the FP32 source
stage on (I0, S0) and the FP32 parsing stage on the target poses; its InstanceNormalization
nodes stay FP32 (manifest group ``instance_norm``), as do its output, flow and occlusion heads
and the warps (:data:`FP32_OPS`, :data:`HEADS_OUTSIDE_TRUNK`).

The source stage stays FP32: it runs once per identity, so INT8 there would cost quality for no
per-frame speed.

Targets (``target``, CLI ``--int8-target``): ``ort`` (default) writes the graph above, for ONNX
Runtime CPU (asymmetric uint8 activations). ``trt`` writes ``frame.int8.trt.onnx`` and the
manifest entry ``int8_trt`` (the same record, plus ``target`` and the Q/DQ check): TensorRT's
explicit quantization is symmetric INT8 only, so activations are int8 with zero point 0 (per
tensor), weights int8 symmetric per output channel, biases stay float (TensorRT has no INT32
DequantizeLinear) and Relu/Clip stay in the graph (symmetric ranges do not absorb them). Its
gate is measured on ONNX Runtime CPU, which runs the same S8S8 Q/DQ graph, as TensorRT's stand-in;
:mod:`poserender.export.qdq_check` checks TensorRT's Q/DQ rules and any finding refuses the
export. ``both`` calibrates once (the collected ranges are cached and reused) and writes both.
``ov`` writes the ``ort`` graph and a second route of the same calibration for OpenVINO: NNCF's
post-training quantization of the same trunk from the same calibration frames, gated on the same
held-out frames (export/nncf_route.py; manifest entry ``int8_nncf``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..manifest import INT8_KEY, INT8_NNCF_KEY, INT8_TRT_KEY
from .calibration import FeedReader

METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_CHOICES = METHODS + ("auto",)
#: the calibrator's histogram/percentile settings (onnxruntime's defaults, written down)
PERCENTILE = 99.999
#: --int8-target values: the graph(s) written (ov: the ort graph and the NNCF route's OpenVINO IR)
TARGETS = ("ort", "trt", "both", "ov")
#: --int8-target -> the graphs it writes, each a route of the same calibration
TARGET_OUTPUTS = {"ort": ("ort",), "trt": ("trt",), "both": ("ort", "trt"), "ov": ("ort", "ov")}
#: manifest key of the TensorRT-ready (symmetric INT8) graphs; ``int8`` (INT8_KEY) stays the ORT CPU one
#: target -> (manifest key, file infix, what the record says)
TARGET_RECORDS = {
    "ort": (INT8_KEY, "int8", {"activations": "uint8 (asymmetric, per tensor)"}),
    "trt": (INT8_TRT_KEY, "int8.trt", {
        "target": "TensorRT explicit quantization (symmetric INT8 Q/DQ); measured on ONNX Runtime CPU",
        "activations": "int8 (symmetric, zero point 0, per tensor)",
        "bias": "float (not quantized: TensorRT has no INT32 DequantizeLinear)"}),
    "ov": (INT8_NNCF_KEY, "int8.nncf", {
        "target": "OpenVINO (NNCF post-training quantization, export/nncf_route.py); measured on OpenVINO CPU",
        "activations": "int8 (symmetric: NNCF preset performance)"}),
}
#: file extension of each target's graph (the NNCF route writes an OpenVINO IR: .xml + .bin)
TARGET_EXT = {"ov": "xml"}
#: op types kept FP32 in the TensorRT graph on top of FP32_OPS, manifest group names: TensorRT takes
#: pre-quantized (DequantizeLinear) weights for its linear layers only; a BatchNormalization the
#: pre-processing could not fold into a conv would otherwise get int8 scale/variance constants
TRT_FP32_OPS: Dict[str, str] = {"BatchNormalization": "batch_norm"}
#: quantize_static's extra options for the TensorRT graph (onnxruntime.quantization.quantize_static doc):
#: symmetric int8 activations and weights, float biases, Relu/Clip kept as nodes
TRT_EXTRA_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                     "QDQKeepRemovableActivations": True}


def int8_file(stage_file: str, target: str = "ort") -> str:
    """``frame.onnx`` -> ``frame.int8.onnx`` (target ``trt``: ``frame.int8.trt.onnx``; ``ov``:
    ``frame.int8.nncf.xml``, the OpenVINO IR, its weights beside it as ``.bin``)."""
    infix = TARGET_RECORDS[target][1]
    stem, dot, ext = stage_file.rpartition(".")
    ext = TARGET_EXT.get(target, ext)
    return f"{stem}.{infix}.{ext}" if dot else f"{stage_file}.{infix}"


# -- which nodes INT8 takes ---------------------------------------------------------------------
@dataclasses.dataclass
class QuantPlan:
    """``nodes_to_exclude`` for quantize_static and, for the manifest, the excluded nodes INT8
    could otherwise take, grouped by where they are (``warp``, ``heatmaps``, ``output_head``...)."""

    trunk_prefixes: Tuple[str, ...]
    nodes_to_exclude: List[str]
    excluded: Dict[str, List[str]]
    trunk_nodes: int

    def manifest_entry(self) -> Dict[str, Any]:
        return {"trunk": list(self.trunk_prefixes), "trunk_nodes_quantized": self.trunk_nodes,
                "excluded_nodes": self.excluded,
                "excluded_counts": {k: len(v) for k, v in self.excluded.items()}}


def _quantizable_op_types() -> set:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def quantization_plan(model, trunk_prefixes: Sequence[str], head_in_trunk: bool = True,
                      fp32_ops: Optional[Dict[str, str]] = None) -> QuantPlan:
    """Everything outside the trunk, each trunk's last Conv (the output head) and anything after
    it stays FP32. ``model`` is an onnx.ModelProto in topological order (as exported).
    ``head_in_trunk=False``: the prefixes hold no head (it is outside them). ``fp32_ops``: op type
    -> manifest group of nodes kept FP32 inside the trunk too (e.g. InstanceNormalization)."""
    fp32_ops = fp32_ops or {}
    quantizable = _quantizable_op_types()
    nodes = list(model.graph.node)
    unnamed = [i for i, n in enumerate(nodes) if not n.name]
    if unnamed:
        raise ValueError(f"{len(unnamed)} graph nodes have no name; nodes_to_exclude needs names")
    in_trunk = [any(n.name.startswith(p) for p in trunk_prefixes) for n in nodes]
    heads = set()
    for prefix in trunk_prefixes:
        convs = [i for i, n in enumerate(nodes) if n.name.startswith(prefix) and n.op_type in ("Conv", "ConvTranspose")]
        if not convs:
            raise ValueError(f"no Conv under {prefix!r}: the graph does not look like this stage's export")
        if not head_in_trunk:
            continue
        heads.add(convs[-1])
        for i in range(convs[-1] + 1, len(nodes)):        # the trunk's tail after its head
            if nodes[i].name.startswith(prefix):
                heads.add(i)
    exclude, excluded = [], {}
    trunk_count = 0
    for i, node in enumerate(nodes):
        if in_trunk[i] and i not in heads and node.op_type not in fp32_ops:
            trunk_count += node.op_type in quantizable
            continue
        exclude.append(node.name)
        if node.op_type not in quantizable:
            continue
        group = fp32_ops[node.op_type] if in_trunk[i] and node.op_type in fp32_ops else \
            "output_head" if i in heads else (node.name.strip("/").split("/")[0] if "/" in node.name.strip("/")
                                                  else "fusion_and_output")
        excluded.setdefault(group, []).append(node.name)
    return QuantPlan(tuple(trunk_prefixes), exclude, excluded, trunk_count)


def calibration_cache_supported() -> bool:
    """Whether this onnxruntime's quantize_static can save and reuse calibrated ranges
    (``calibration_cache_path``): then ``--int8-target both`` calibrates once."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def quantize_graph(fp32_path: Path, out_path: Path, plan: QuantPlan, feeds: List[Dict[str, np.ndarray]],
                   method: str, per_channel: bool = False, target: str = "ort",
                   calibration_cache: Optional[Path] = None) -> None:
    """QDQ-quantize ``fp32_path`` (already pre-processed) into ``out_path`` with ``method``.
    ``target`` ``ort``: uint8 activations, int8 weights (per channel if ``per_channel``); ``trt``:
    symmetric int8 activations and per-channel weights, float biases (:data:`TRT_EXTRA_OPTIONS`).
    ``calibration_cache``: a JSON file of calibrated ranges; written by the first call, read
    (no calibration run) by a later call with the same graph and method (the calibrator records
    every tensor of the quantizable op types whatever ``plan`` excludes, so the ranges serve any plan)."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise UserError(f"calibration method {method!r}; expected one of {', '.join(CALIBRATION_CHOICES)}")
    if target not in ("ort", "trt"):
        raise ValueError(f"target {target!r}; expected ort or trt")
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra: Dict[str, Any] = {"CalibStridedMinMax": 1}   # one feed at a time (the name is historical: every method)
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    activations = QuantType.QUInt8
    if target == "trt":
        extra.update(TRT_EXTRA_OPTIONS)
        activations, per_channel = QuantType.QInt8, True
    cache = {} if calibration_cache is None else {"calibration_cache_path": str(calibration_cache)}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)            # the quantizer's advice about pre-processing
    try:
        with contextlib.redirect_stdout(io.StringIO()):     # the calibrators print progress to stdout
            quantize_static(str(fp32_path), str(out_path), FeedReader(feeds), quant_format=QuantFormat.QDQ,
                            activation_type=activations, weight_type=QuantType.QInt8, per_channel=per_channel,
                            reduce_range=False, nodes_to_exclude=plan.nodes_to_exclude, calibrate_method=calibrate,
                            extra_options=extra, **cache)
    finally:
        root.setLevel(level)


def _session(path: Path, threads: Optional[int] = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _frames(session, feeds: List[Dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run(["frames"], feed)[0] for feed in feeds])


