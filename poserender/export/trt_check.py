"""TensorRT-readiness of an ONNX graph, checked statically on any machine (no TensorRT needed).

The rules follow the ONNX-TensorRT operator support matrix for TensorRT 10
(onnx/onnx-tensorrt docs/operators.md, checked against the 10.15 matrix; the 10.x release that
added an operator from onnx/onnx-tensorrt docs/Changelog.md) and TensorRT's I/O type rules:

* every operator must be one the TensorRT 10 parser imports (custom domains need a plugin);
  operators added during 10.x (window functions 10.4, STFT 10.5, ...) are warnings;
* per-operator restrictions: GridSample only on 4-D input, Resize only nearest/linear with
  the supported coordinate modes, 'stretch', no antialiasing and (with scales) axes covering
  every dimension in order, TopK sorted with K below 3840 (a runtime K is fine since 8.6),
  ScatterND without reduction, LayerNormalization with its first output only, pooling without
  dilations or the MaxPool indices output, reduction axes constant;
* UINT8 exists only on network inputs/outputs, produced or consumed by a Cast (a Transpose of
  a uint8 tensor is rejected by the builder: "not produced by an IIdentityLayer or ICastLayer");
* tensor types TensorRT has no kernels for (uint16/32/64, int16, string, complex) are errors,
  DOUBLE is a warning (TensorRT casts it down to float);
* opset 9 to 20 imports in every TensorRT 10 release (later 10.x releases accept up to 24);
* with a StageSpec, every dynamic input dimension must be the spec's batch axis, so the
  optimisation profile built from the spec covers the whole graph.

It is generic: any family's graphs can be checked (``check_onnx(path, spec)``).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ..specs import StageSpec

OPSET_RANGE = (9, 20)           # every TensorRT 10 release; later 10.x go to 24
OPSET_LATEST = 24

#: ONNX operators (default domain) the TensorRT 10 ONNX parser imports in every 10.x release
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos
Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool
Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
#: imported only from a later TensorRT 10.x release (onnx-tensorrt docs/Changelog.md): a warning
RECENT_SINCE = {"DeformConv": "10.1", "BlackmanWindow": "10.4", "HammingWindow": "10.4", "HannWindow": "10.4",
                "STFT": "10.5", "Attention": "10.14", "RMSNormalization": "10.15", "RotaryEmbedding": "10.15",
                "TensorScatter": "10.15"}
RECENT_OPS = frozenset(RECENT_SINCE)
TOPK_MAX_K = 3840               # "K input must be less than 3840" (10.15 matrix)

_UNSUPPORTED_TYPES = {TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.INT16,
                      TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.COMPLEX128}
_RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_REDUCE_OPS = {op for op in SUPPORTED_OPS if op.startswith("Reduce")}


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str          # "error" (TensorRT will refuse the graph) or "warning"
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.op} {self.node or '(graph)'}: {self.message}"


@dataclasses.dataclass
class ReadinessReport:
    graph: str
    opset: int
    findings: List[Finding]
    op_counts: Dict[str, int]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def summary(self) -> str:
        errors = [f for f in self.findings if f.severity == "error"]
        warnings = len(self.findings) - len(errors)
        head = f"{self.graph}: TensorRT 10 readiness " + ("ok" if not errors else f"{len(errors)} error(s)")
        tail = f", {warnings} warning(s)" if warnings else ""
        return head + tail + (f"; first: {errors[0]}" if errors else "")

    def to_dict(self) -> Dict[str, Any]:
        return {"target": "TensorRT 10", "ok": self.ok, "opset": self.opset,
                "findings": [dataclasses.asdict(f) for f in self.findings],
                "ops": dict(sorted(self.op_counts.items()))}


def constant_tensors(graph: onnx.GraphProto) -> List[Any]:
    """(name, TensorProto) of every build-time constant: initializers and Constant nodes' values."""
    found = [(i.name, i) for i in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant":
            found += [(node.output[0], attr.t) for attr in node.attribute if attr.name == "value"]
    return found


class _Graph:
    """Types, ranks and constant values of the tensors of one (shape-inferred) graph."""

    def __init__(self, model: onnx.ModelProto):
        try:
            model = shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - checking still works with the declared types
            pass
        self.model = model
        graph = model.graph
        self.types: Dict[str, int] = {}
        self.ranks: Dict[str, int] = {}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            t = value.type.tensor_type
            self.types[value.name] = t.elem_type
            if t.HasField("shape"):
                self.ranks[value.name] = len(t.shape.dim)
        self.constants: Dict[str, Any] = {}
        for name, tensor in constant_tensors(graph):
            self.constants[name] = numpy_helper.to_array(tensor)
            self.types[name] = tensor.data_type
        self.inputs = {i.name for i in graph.input}
        self.outputs = {o.name for o in graph.output}


def _attrs(node: onnx.NodeProto) -> Dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _node_findings(node: onnx.NodeProto, g: _Graph, opset: int) -> List[Finding]:
    out: List[Finding] = []
    op, name, attrs = node.op_type, node.name, _attrs(node)

    def error(message: str) -> None:
        out.append(Finding("error", name, op, message))

    if node.domain not in ("", "ai.onnx"):
        error(f"custom domain {node.domain!r}: TensorRT needs a plugin for it")
        return out
    if op in RECENT_OPS:
        out.append(Finding("warning", name, op, f"imported only by TensorRT {RECENT_SINCE[op]} and later"))
    elif op not in SUPPORTED_OPS:
        error("not supported by the TensorRT 10 ONNX parser")
        return out
    if op == "GridSample" and g.ranks.get(node.input[0], 4) != 4:
        error(f"input has rank {g.ranks[node.input[0]]}; TensorRT supports 4-D GridSample only")
    if op == "Resize":
        mode = _text(attrs.get("mode", b"nearest"))
        coords = _text(attrs.get("coordinate_transformation_mode", b"half_pixel"))
        if mode not in ("nearest", "linear"):
            error(f"mode {mode!r}; TensorRT supports nearest and linear")
        if coords not in _RESIZE_COORDINATES:
            error(f"coordinate_transformation_mode {coords!r}; supported: {', '.join(sorted(_RESIZE_COORDINATES))}")
        if mode == "nearest" and _text(attrs.get("nearest_mode", b"round_prefer_floor")) not in _NEAREST_MODES:
            error(f"nearest_mode {_text(attrs['nearest_mode'])!r} is not supported")
        if attrs.get("antialias", 0):
            error("antialias=1; TensorRT does not antialias")
        if _text(attrs.get("keep_aspect_ratio_policy", b"stretch")) != "stretch":
            error("keep_aspect_ratio_policy must be 'stretch'")
        rank = g.ranks.get(node.input[0]) if node.input else None
        has_scales = len(node.input) > 2 and bool(node.input[2])
        axes = [a % rank for a in attrs.get("axes", [])] if rank else []
        if has_scales and "axes" in attrs and rank is not None and axes != list(range(rank)):
            error(f"axes {list(attrs['axes'])} with scales; TensorRT needs axes 0..{rank - 1} in order")
    if op == "TopK":
        if attrs.get("sorted", 1) != 1:
            error("sorted=0; TensorRT supports sorted TopK only")
        k = g.constants.get(node.input[1]) if len(node.input) > 1 else None
        if k is None:       # a runtime K imports since TensorRT 8.6 (onnx-tensorrt Changelog)
            out.append(Finding("warning", name, op, f"K is a runtime value; TensorRT fails if it is >= {TOPK_MAX_K}"))
        elif int(k.reshape(-1)[0]) >= TOPK_MAX_K:
            error(f"K={int(k.reshape(-1)[0])}; TensorRT supports K < {TOPK_MAX_K}")
    if op == "ScatterND" and _text(attrs.get("reduction", b"none")) != "none":
        error(f"reduction {_text(attrs['reduction'])!r}; TensorRT supports reduction='none' only")
    if op == "LayerNormalization" and len([o for o in node.output if o]) > 1:
        error("only the first output (Y) is supported")
    if op in ("MaxPool", "AveragePool", "LpPool") and any(d != 1 for d in attrs.get("dilations", [])):
        error(f"dilations {list(attrs['dilations'])}; TensorRT pools without dilation")
    if op == "MaxPool" and len([o for o in node.output if o]) > 1:
        error("the Indices output is not supported")
    if op in _REDUCE_OPS and len(node.input) > 1 and node.input[1] and node.input[1] not in g.constants:
        error("axes is a runtime tensor; TensorRT needs constant reduction axes")
    if op == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = g.constants.get(node.input[2])
        if training is None or bool(training.reshape(-1)[0]):
            error("training_mode must be a constant False")
    # UINT8 lives only at the network boundary, next to a Cast
    uint8 = [t for t in list(node.input) + list(node.output) if t and g.types.get(t) == TensorProto.UINT8]
    if op not in ("Cast", "Identity") and uint8:
        error(f"works on UINT8 tensor {uint8[0]!r}; TensorRT keeps UINT8 only on network inputs/outputs, "
              "right after/before a Cast (cast to uint8 as the very last op)")
    if op == "Cast" and attrs.get("to") == TensorProto.UINT8 and not all(o in g.outputs for o in node.output):
        error("casts to UINT8 inside the graph; TensorRT allows UINT8 only as a network output of the Cast")
    for tensor in node.output:
        if g.types.get(tensor) in _UNSUPPORTED_TYPES:
            error(f"output {tensor!r} has type {TensorProto.DataType.Name(g.types[tensor])}, which TensorRT "
                  "does not support")
        elif g.types.get(tensor) == TensorProto.DOUBLE:
            out.append(Finding("warning", name, op, f"output {tensor!r} is DOUBLE; TensorRT casts it to FLOAT"))
    for attr in node.attribute:     # If/Loop/Scan bodies
        if attr.type == onnx.AttributeProto.GRAPH:
            sub = _Graph(helper.make_model(attr.g, opset_imports=g.model.opset_import))
            for inner in attr.g.node:
                out.extend(_node_findings(inner, sub, opset))
    return out


def _io_findings(g: _Graph, spec: Optional[StageSpec]) -> List[Finding]:
    out = []
    graph = g.model.graph
    for value in list(graph.input) + list(graph.output):
        kind = "input" if value.name in g.inputs else "output"
        elem = value.type.tensor_type.elem_type
        if elem in _UNSUPPORTED_TYPES:
            out.append(Finding("error", value.name, kind, f"type {TensorProto.DataType.Name(elem)} is not supported"))
    if spec is not None:
        declared = {t.name: t for t in spec.inputs}
        for value in graph.input:
            tensor = declared.get(value.name)
            if tensor is None:
                out.append(Finding("error", value.name, "input", f"not in the StageSpec of {spec.name!r}"))
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                dynamic = not dim.HasField("dim_value")
                if dynamic and (axis >= len(tensor.shape) or tensor.shape[axis] != "batch"):
                    out.append(Finding("error", value.name, "input", f"axis {axis} is dynamic but the StageSpec "
                                       "has no batch axis there, so no optimisation profile covers it"))
    return out


def check_model(model: onnx.ModelProto, spec: Optional[StageSpec] = None, name: str = "graph") -> ReadinessReport:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    findings: List[Finding] = []
    low, high = OPSET_RANGE
    if not low <= opset <= OPSET_LATEST:
        findings.append(Finding("error", "", "opset", f"opset {opset}; TensorRT 10 imports opsets {low} to {OPSET_LATEST}"))
    elif opset > high:
        findings.append(Finding("warning", "", "opset", f"opset {opset} needs a recent TensorRT 10.x (every 10.x: {low}-{high})"))
    g = _Graph(model)
    for node in g.model.graph.node:
        findings.extend(_node_findings(node, g, opset))
    findings.extend(_io_findings(g, spec))
    return ReadinessReport(name, opset, findings, dict(Counter(n.op_type for n in model.graph.node)))


def check_onnx(path: Union[str, Path], spec: Optional[StageSpec] = None) -> ReadinessReport:
    return check_model(onnx.load(str(path)), spec, Path(path).name)
