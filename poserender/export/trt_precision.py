"""Which layers a reduced-precision TensorRT build keeps in FP32, and finding the ones that make
a plan's output non-finite (plain code, tested on a CPU; the builder is trt_build.py).

Unsafe in FP16/BF16: normalisation, softmax, warps and gathers of coordinates, reductions,
exp/log/pow/sqrt/division, and everything outside the convolutional trunk (a node's trunk is the
first component of its scope name, e.g. ``/unet_stageC/...``; scopes without a convolution are
pre/post-processing on canvas-pixel coordinates, whose squares overflow FP16).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, FrozenSet, List, Sequence

from ..errors import UserError

TRUNK_OPS = frozenset({"Conv", "ConvTranspose"})
#: op -> why it stays FP32. BatchNormalization is not here: TensorRT folds it into the conv.
UNSAFE_OPS = {
    **dict.fromkeys(("InstanceNormalization", "LayerNormalization", "GroupNormalization", "LpNormalization",
                     "MeanVarianceNormalization", "RMSNormalization"), "normalisation"),
    **dict.fromkeys(("Softmax", "LogSoftmax"), "softmax"),
    **dict.fromkeys(("GridSample", "GatherElements", "GatherND"), "warp"),
    **dict.fromkeys(("ReduceSum", "ReduceMean", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd",
                     "CumSum"), "reduction"),
    **dict.fromkeys(("Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div"), "exp/log/pow/div"),
}


def _scope(node_name: str) -> str:
    parts = [p for p in node_name.split("/") if p]
    return parts[0] if len(parts) > 1 else ""


def fp32_nodes(model) -> "OrderedDict[str, str]":
    """ONNX node name -> why it stays FP32 in a reduced-precision build (float outputs only)."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - without inferred types every output counts as float
        pass
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.UNDEFINED)
    trunk = {_scope(n.name) for n in model.graph.node if n.op_type in TRUNK_OPS} - {""}
    pinned: "OrderedDict[str, str]" = OrderedDict()
    for node in model.graph.node:
        if node.op_type in ("Constant", "Identity") or not any(types.get(o, 0) in floats for o in node.output):
            continue
        reason = UNSAFE_OPS.get(node.op_type)
        if reason is None and _scope(node.name) not in trunk:
            reason = f"pre/post-processing ({_scope(node.name) or 'top level'})"
        if reason:
            pinned[node.name] = reason
    return pinned


def find_nonfinite_layers(candidates: Sequence[str], nonfinite: Callable[[FrozenSet[str]], bool],
                          max_checks: int = 64) -> List[str]:
    """A small set of ``candidates`` that must be FP32 for finite output.

    ``nonfinite(pinned)`` builds with ``pinned`` forced to FP32 and says whether the output
    still has NaN/inf. Group testing: if pinning one half fixes it, recurse there; otherwise
    the causes sit in both halves and each half is searched with the other one pinned.
    """
    checks = [0]

    def still_bad(pinned: FrozenSet[str]) -> bool:
        checks[0] += 1
        if checks[0] > max_checks:
            raise UserError(f"NaN/inf bisection gave up after {max_checks} builds; build with --precision fp32")
        return nonfinite(pinned)

    def search(cands: List[str], base: FrozenSet[str]) -> List[str]:
        if len(cands) == 1:
            return cands
        left, right = cands[:len(cands) // 2], cands[len(cands) // 2:]
        if not still_bad(base | frozenset(left)):
            return search(left, base)
        if not still_bad(base | frozenset(right)):
            return search(right, base)
        found_left = search(left, base | frozenset(right))
        return found_left + search(right, base | frozenset(found_left))

    candidates = list(candidates)
    if not candidates or still_bad(frozenset(candidates)):
        return []      # not a precision problem: FP32 everywhere is still non-finite
    return search(candidates, frozenset())


def _onnx_node_of(layer) -> str:
    """The ONNX node a TensorRT layer came from: the parser's metadata (TensorRT >= 8.6), which
    onnx-tensorrt writes as ``[ONNX Layer: NAME]`` or ``[ONNX Layer: NAME | Local Function: F]``
    / ``[ONNX Layer: NAME | <doc string>]`` (importerUtils.cpp processMetadata), else the layer
    name, which the parser sets to the node name."""
    match = re.search(r"\[ONNX Layer: ([^\]]+)\]", getattr(layer, "metadata", "") or "")
    return match.group(1).split(" | ")[0] if match else layer.name


def _pin_layers(trt, network, nodes: set) -> List[str]:
    float_types = (trt.float32, trt.float16, trt.bfloat16)
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if _onnx_node_of(layer) not in nodes:
            continue
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not outputs or any(o.dtype not in float_types for o in outputs):
            continue                                     # shape/index arithmetic has no precision choice
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        pinned.append(layer.name)
    return pinned

