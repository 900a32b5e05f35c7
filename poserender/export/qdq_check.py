"""TensorRT's rules for explicitly quantized (Q/DQ) INT8 graphs, checked statically (no TensorRT).

TensorRT quantizes symmetrically and only through QuantizeLinear/DequantizeLinear pairs
("explicit quantization"). What its ONNX parser and builder accept, per the ONNX-TensorRT
operator matrix for TensorRT 10 (onnx/onnx-tensorrt ``docs/operators.md``: QuantizeLinear
"`y_zero_point` must be 0", DequantizeLinear "INT8, FP8, FP4, INT4; `x_zero_point` must be
zero") and the TensorRT developer guide ("Working with Quantized Types", "Explicit
Quantization"; the operator reference for IQuantizeLayer: "scale ... must be a build-time
constant scalar or a 1D tensor", "zero_point must only contain zero-valued coefficients",
scale type float32):

* Q/DQ are ONNX-domain operators (a ``com.microsoft`` contrib Q/DQ needs a plugin);
* the quantized type is INT8: the zero point is present (ONNX's default zero point is UINT8),
  of type int8 and all zeros; a DequantizeLinear's input is int8 (no INT32 bias DQs, no uint8);
* the scale is a float32 build-time constant (initializer or Constant), every element finite and
  > 0, a scalar or 1-D, with the zero point of the same shape;
* per-tensor scales for activations; a per-channel (1-D, more than one element) scale only on
  weights (a constant input), on the output-channel axis of the layer that consumes them: axis 0
  of a Conv's weights (K, C, R, S), axis 1 of a ConvTranspose's (C, K, R, S), and the scale's
  length is that axis' size; no blocked quantization (``block_size``: INT4/FP4 only);
* a QuantizeLinear quantizes a floating-point tensor (float32/float16/bfloat16);
* quantized constants (weights) feed a linear layer's weight input (Conv/ConvTranspose input 1,
  MatMul/Gemm): "when using pre-quantized weights, an IDequantizeLayer is required between the
  weights and the linear operator that uses them" (Explicit Quantization); INT8 is a quantized
  type TensorRT supports "only through quantization from a floating-point type" (operators.md),
  so an int8 constant dequantized into, e.g., a BatchNormalization's scale is refused.

``check_qdq(model)`` returns a :class:`QDQReport` of :class:`~poserender.export.trt_check.Finding`
(the TensorRT-readiness check's record); every finding here is an error. The INT8 export with
``--int8-target trt`` refuses a graph with any finding.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .trt_check import Finding, constant_tensors

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
#: the weight axis TensorRT quantizes per channel: the output channels of the consuming layer
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
#: linear layers that take quantized weights -> the input slot of the weights (None: any)
LINEAR_WEIGHT_SLOT = {"Conv": 1, "ConvTranspose": 1, "Gemm": None, "MatMul": None}


@dataclasses.dataclass
class QDQReport:
    graph: str
    findings: List[Finding]
    quantize: int
    dequantize: int
    per_channel: int

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        head = (f"{self.graph}: TensorRT INT8 Q/DQ rules " + ("ok" if self.ok else f"{len(self.findings)} error(s)")
                + f" ({self.quantize} Q, {self.dequantize} DQ, {self.per_channel} per-channel)")
        return head + (f"; first: {self.findings[0]}" if self.findings else "")

    def to_dict(self) -> Dict[str, Any]:
        return {"target": "TensorRT 10 explicit quantization (INT8 Q/DQ)", "ok": self.ok,
                "quantize_linear": self.quantize, "dequantize_linear": self.dequantize,
                "per_channel": self.per_channel, "findings": [dataclasses.asdict(f) for f in self.findings]}


class _Tensors:
    """Constants (initializers and Constant outputs), element types and consumers of a graph."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        constants = constant_tensors(graph)
        self.constants: Dict[str, np.ndarray] = {name: numpy_helper.to_array(t) for name, t in constants}
        self.types: Dict[str, int] = {name: t.data_type for name, t in constants}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            self.types.setdefault(value.name, value.type.tensor_type.elem_type)
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        self.producers: Dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.producers[name] = node

    def is_weight(self, name: str) -> bool:
        """A constant, or a constant quantized by a QuantizeLinear (the float-weights Q/DQ form)."""
        if name in self.constants:
            return True
        producer = self.producers.get(name)
        return producer is not None and producer.op_type == "QuantizeLinear" and producer.input[0] in self.constants


def _node_findings(node: onnx.NodeProto, t: _Tensors) -> List[Finding]:
    out: List[Finding] = []
    op, name = node.op_type, node.name

    def error(message: str) -> None:
        out.append(Finding("error", name, op, message))

    if node.domain not in ("", "ai.onnx"):
        error(f"domain {node.domain!r}: TensorRT imports only ONNX-domain Q/DQ (a contrib Q/DQ needs a plugin)")
        return out
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size", 0):
        error(f"blocked quantization (block_size {attrs['block_size']}): TensorRT has it for INT4/FP4 weights only")
    if "output_dtype" in attrs and attrs["output_dtype"] not in (0, TensorProto.INT8):
        error(f"output_dtype {TensorProto.DataType.Name(attrs['output_dtype'])}; expected INT8")
    x, scale_name = node.input[0], node.input[1]
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    # -- scale: float32 build-time constant, finite and > 0, scalar or 1-D
    scale = t.constants.get(scale_name)
    if scale is None:
        error(f"scale {scale_name!r} is not a build-time constant (initializer or Constant)")
    else:
        if scale.dtype != np.float32:
            error(f"scale {scale_name!r} is {scale.dtype}; expected float32")
        if scale.ndim > 1:
            error(f"scale {scale_name!r} has shape {list(scale.shape)}; expected a scalar or 1-D")
        values = scale.astype(np.float64).ravel()
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            error(f"scale {scale_name!r}: {int(bad.sum())} of {values.size} value(s) not finite and > 0 "
                  f"(first {float(values[bad][0])!r})")
    # -- zero point: present, int8, all zero, shaped like the scale
    if zp_name is None:
        error("no zero point: ONNX then quantizes to UINT8; TensorRT needs INT8 with an explicit zero point of 0")
    else:
        zp = t.constants.get(zp_name)
        if zp is None:
            error(f"zero point {zp_name!r} is not a build-time constant")
        else:
            if zp.dtype != np.int8:
                error(f"zero point {zp_name!r} is {zp.dtype}; TensorRT quantizes to INT8 (symmetric)")
            if np.any(zp != 0):
                error(f"zero point {zp_name!r} has {int(np.count_nonzero(zp))} non-zero value(s) (first "
                      f"{zp.ravel()[np.flatnonzero(zp)[0]]}); TensorRT quantization is symmetric: zero point 0")
            if scale is not None and zp.shape != scale.shape:
                error(f"zero point shape {list(zp.shape)} differs from the scale's {list(scale.shape)}")
    # -- the quantized tensor's type
    if op == "QuantizeLinear":
        x_type = t.types.get(x)
        if x_type and x_type not in _FLOATS:
            error(f"quantizes {x!r} of type {TensorProto.DataType.Name(x_type)}; expected a float tensor")
    else:
        x_type = t.types.get(x)
        if x_type is None and x in t.producers and t.producers[x].op_type == "QuantizeLinear":
            q = t.producers[x]              # a Q's output type is its zero point's (UINT8 without one)
            zp = t.constants.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
            x_type = TensorProto.UINT8 if zp is None else helper.np_dtype_to_tensor_dtype(zp.dtype)
        if x_type and x_type != TensorProto.INT8:
            error(f"dequantizes {x!r} of type {TensorProto.DataType.Name(x_type)}; TensorRT dequantizes INT8 "
                  "(no INT32 bias or UINT8 DequantizeLinear)")
    # -- weights feed linear layers; per-channel: weights only, on the consuming layer's output-channel axis
    if t.is_weight(x):
        wrong: Dict[str, Tuple[onnx.NodeProto, List[int]]] = {}
        for layer, slot in _weight_layers(node, t):
            expected = LINEAR_WEIGHT_SLOT.get(layer.op_type, -1)
            if expected == -1 or (expected is not None and slot != expected):
                wrong.setdefault(layer.name, (layer, []))[1].append(slot)
        for layer, slots in wrong.values():
            where = ", ".join(map(str, slots))
            error(f"quantized constant {x!r} feeds {layer.op_type} {layer.name!r} (input {where}); "
                  "TensorRT takes quantized weights as the weight input of a linear layer (Conv, ConvTranspose, "
                  "MatMul, Gemm)")
    if scale is not None and scale.ndim == 1 and scale.size > 1:
        out.extend(_axis_findings(node, t, x, scale, attrs.get("axis", 1)))
    return out


def _weight_layers(node: onnx.NodeProto, t: _Tensors) -> List[Tuple[onnx.NodeProto, int]]:
    """(layer, input slot) of the layers that consume a weight Q/DQ's dequantized output
    (for a QuantizeLinear: the output of its DequantizeLinear)."""
    outputs = [node.output[0]]
    if node.op_type == "QuantizeLinear":
        outputs = [d.output[0] for d in t.consumers.get(node.output[0], []) if d.op_type == "DequantizeLinear"]
    layers = {id(c): c for o in outputs for c in t.consumers.get(o, [])}      # a node once, whatever it reads twice
    return [(c, i) for c in layers.values() for i, name in enumerate(c.input) if name in outputs]


def _axis_findings(node: onnx.NodeProto, t: _Tensors, x: str, scale: np.ndarray, axis: int) -> List[Finding]:
    out: List[Finding] = []

    def error(message: str) -> None:
        out.append(Finding("error", node.name, node.op_type, message))

    if not t.is_weight(x):
        error(f"per-channel scale ({scale.size} values) on the activation {x!r}: TensorRT quantizes activations "
              "per tensor")
        return out
    weight = t.constants.get(x)
    if weight is None:                                   # Q of a float weight: the weight is its input
        weight = t.constants[t.producers[x].input[0]]
    rank = weight.ndim
    if not -rank <= axis < rank:
        error(f"axis {axis} is out of range for the rank-{rank} weight {x!r}")
        return out
    axis %= rank
    if weight.shape[axis] != scale.size:
        error(f"axis {axis} of {x!r} has {weight.shape[axis]} channels but the scale has {scale.size} values")
    for layer, slot in _weight_layers(node, t):
        expected = WEIGHT_AXIS.get(layer.op_type)
        if expected is None or slot != 1:
            error(f"per-channel weights feed {layer.op_type} {layer.name!r} (input {slot}); checked per-channel "
                  "weights are those of Conv/ConvTranspose (input 1)")
        elif axis != expected:
            error(f"axis {axis} for {layer.op_type} {layer.name!r} weights; expected {expected} (output channels)")
    return out


def check_qdq_model(model: onnx.ModelProto, name: str = "graph") -> QDQReport:
    """Every QuantizeLinear/DequantizeLinear of ``model`` against TensorRT's INT8 rules (module doc)."""
    t = _Tensors(model)
    findings: List[Finding] = []
    counts = {op: 0 for op in QDQ_OPS}
    per_channel = 0
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        counts[node.op_type] += 1
        scale = t.constants.get(node.input[1]) if len(node.input) > 1 else None
        per_channel += node.op_type == "DequantizeLinear" and scale is not None and scale.size > 1
        findings.extend(_node_findings(node, t))
    if not any(counts.values()):
        findings.append(Finding("error", "", "graph", "no QuantizeLinear/DequantizeLinear: not a Q/DQ graph"))
    return QDQReport(name, findings, counts["QuantizeLinear"], counts["DequantizeLinear"], per_channel)


def check_qdq(path: Union[str, Path], name: Optional[str] = None) -> QDQReport:
    """:func:`check_qdq_model` of the ONNX file ``path`` (weights loaded: the rules read the constants)."""
    path = Path(path)
    return check_qdq_model(onnx.load(str(path)), name or path.name)
