"""FLOPs counted, not guessed, and the dense fp32 matmul peak of this machine.

What is counted (:func:`onnx_graph_flops`): the multiply-adds of ``Conv``, ``ConvTranspose``,
``MatMul`` and ``Gemm`` nodes of an exported graph, with every tensor shape taken from ONNX shape
inference after the ``batch`` axis is fixed; FLOPs = 2 x MACs (a multiply and an add). The
elementwise arithmetic (``Add``, ``Mul``, ``Tanh``, ...; one FLOP per output element) is
counted separately and not included in the headline, because its cost is memory traffic, not
arithmetic. A counted node whose shapes inference could not resolve is listed, never guessed.

torch modules (the ``torch`` backends and the reference baseline) are counted with
``torch.utils.flop_counter.FlopCounterMode`` over one real call (:func:`torch_call_flops`), which
counts the same operator classes (convolutions and matrix products, 2 x MACs).

Neither onnx nor torch is imported when this module is imported.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

MATRIX_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid",
                             "Relu", "LeakyRelu", "Abs", "Neg", "Floor", "Ceil", "Round", "Sign", "Max",
                             "Min", "Clip", "Erf", "Softmax", "Where", "BatchNormalization"})
COUNTED = ("multiply-adds of Conv, ConvTranspose, MatMul and Gemm nodes x 2 (FLOPs = 2 x MACs), "
           "shapes from ONNX shape inference at a fixed batch; elementwise arithmetic counted apart "
           "(1 FLOP per output element of Add/Mul/Tanh/...) and not in the total")


def _dims(value_info) -> Optional[Tuple[int, ...]]:
    shape = value_info.type.tensor_type.shape
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim)
    return None if any(d <= 0 for d in dims) and dims else dims


def _fix_batch(model, batch: int) -> None:
    """Give every symbolic input/output dimension the value ``batch`` (our graphs' only symbol)."""
    for value_info in list(model.graph.input) + list(model.graph.output):
        for dim in value_info.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = batch


def _node_macs(op: str, node, shapes: Dict[str, Tuple[int, ...]]) -> Optional[int]:
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0])
    attrs = {a.name: a for a in node.attribute}
    if op == "Conv":
        if ins[1] is None or out is None:
            return None
        # out (N, Cout, *spatial) x weight (Cout, Cin/group, *kernel)
        return math.prod(out) * math.prod(ins[1][1:])
    if op == "ConvTranspose":
        if ins[0] is None or ins[1] is None:
            return None
        # every input element is scattered through (Cout/group x kernel) weights
        return math.prod(ins[0]) * math.prod(ins[1][1:])
    if op in ("MatMul", "Gemm"):
        if ins[0] is None or ins[1] is None or out is None:
            return None
        a = ins[0]
        if op == "Gemm" and "transA" in attrs and attrs["transA"].i:
            k = a[0]
        else:
            k = a[-1] if len(a) > 1 else a[0]
        return math.prod(out) * k
    return None


def onnx_graph_flops(model: Union[str, Path, Any], batch: int = 1) -> Dict[str, Any]:
    """Count an ONNX graph (a path or a ModelProto) at ``batch``: total FLOPs, FLOPs per item
    of the batch, per op type, elementwise apart, and the counted nodes left unresolved."""
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else onnx.ModelProto.FromString(
        model.SerializeToString())
    _fix_batch(proto, batch)
    _fold_constants(proto)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    graph = inferred.graph
    shapes: Dict[str, Tuple[int, ...]] = {}
    for value_info in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = _dims(value_info)
        if dims is not None:
            shapes[value_info.name] = dims
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    # shapes inference cannot follow (e.g. a Pad whose pads are computed) come from one run
    missing = sorted({name for node in graph.node if node.op_type in MATRIX_OPS
                      for name in list(node.input[:2]) + [node.output[0]] if name and name not in shapes})
    if missing:
        shapes.update(_shapes_from_run(proto, missing))
    by_op: Dict[str, int] = {op: 0 for op in MATRIX_OPS}
    unresolved: List[str] = []
    elementwise = 0
    for node in graph.node:
        if node.op_type in MATRIX_OPS:
            macs = _node_macs(node.op_type, node, shapes)
            if macs is None:
                unresolved.append(node.name or node.output[0])
            else:
                by_op[node.op_type] += 2 * macs
        elif node.op_type in ELEMENTWISE_OPS:
            out = shapes.get(node.output[0])
            if out is not None:
                elementwise += math.prod(out)
    total = sum(by_op.values())
    return {"batch": batch, "flops": total, "flops_per_item": total / batch,
            "by_op": {k: v for k, v in by_op.items() if v}, "elementwise_flops": elementwise,
            "shapes_from_run": len(missing), "unresolved_nodes": unresolved, "counted": COUNTED}


def _fold_constants(proto) -> None:
    """Replace the graph's constant-only subgraphs (e.g. a Pad's pads computed from Constants,
    which shape inference cannot follow) by their values, computed once by ONNX Runtime."""
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        return
    graph = proto.graph
    small = {init.name: init for init in graph.initializer if math.prod(init.dims) <= 64}
    constant, folded = set(small), []
    for node in graph.node:
        if node.op_type not in MATRIX_OPS and node.input and all(not i or i in constant for i in node.input) \
                or node.op_type == "Constant":
            folded.append(node)
            constant.update(node.output)
    folded_ids = {id(n) for n in folded}
    needed = sorted({i for node in graph.node if id(node) not in folded_ids for i in node.input
                     if i in constant and i not in small} | {o.name for o in graph.output if o.name in constant})
    if not needed:
        return
    sub = onnx.helper.make_graph(folded, "constants", [], [onnx.ValueInfoProto(name=n) for n in needed],
                                 [small[n] for n in small])
    model = onnx.helper.make_model(sub, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    values = ort.InferenceSession(model.SerializeToString(), options,
                                  providers=["CPUExecutionProvider"]).run(needed, {})
    kept = [n for n in graph.node if id(n) not in folded_ids]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(onnx.numpy_helper.from_array(v, n) for n, v in zip(needed, values))


def _shapes_from_run(proto, names: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """Actual shapes of ``names``: the graph run once by ONNX Runtime (CPU) on zero inputs of the
    fixed-batch input shapes, with those tensors exposed as extra outputs. {} without ORT."""
    import numpy as np
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    initializers = {init.name for init in probe.graph.initializer}
    names = [n for n in names if n not in initializers]
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    dtypes = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.UINT8: np.uint8,
              onnx.TensorProto.INT64: np.int64, onnx.TensorProto.FLOAT16: np.float16}
    feed = {i.name: np.zeros(_dims(i) or (), dtype=dtypes.get(i.type.tensor_type.elem_type, np.float32))
            for i in probe.graph.input if i.name not in initializers}
    values = session.run(names, feed)
    return {name: tuple(value.shape) for name, value in zip(names, values)}


def torch_call_flops(call: Callable[[], Any]) -> Tuple[Any, int]:
    """(call's result, FLOPs) of one call, counted by torch's FlopCounterMode (2 x MACs of
    convolutions and matrix products, like :func:`onnx_graph_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = call()
    return result, int(counter.get_total_flops())


def matmul_peak(threads: int, seconds: float = 2.0, size: int = 2048,
                libraries: Sequence[str] = ("torch", "numpy")) -> Dict[str, Any]:
    """The dense fp32 matmul rate of this machine: the best of repeated ``size`` x ``size``
    products per library (torch.mm with ``threads`` threads, numpy's BLAS), in GFLOP/s.

    The peak is the best of all, so the fraction of it a model reaches is not flattered."""
    import numpy as np

    flop = 2.0 * size ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    results: Dict[str, Dict[str, Any]] = {}
    for library in libraries:
        if library == "torch":
            try:
                import torch
            except ImportError:
                continue
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            product = lambda: torch.mm(ta, tb)  # noqa: E731
        else:
            product = lambda: a @ b  # noqa: E731
        try:
            product()                                   # warm-up (thread pool, packing buffers)
            best, runs, began = math.inf, 0, time.perf_counter()
            while runs < 3 or time.perf_counter() - began < seconds / len(libraries):
                start = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - start)
                runs += 1
        finally:
            if library == "torch":
                torch.set_num_threads(previous)
        results[library] = {"gflops": round(flop / best / 1e9, 2), "runs": runs}
    if not results:
        return {"gflops": None, "how": "no matmul library available"}
    winner = max(results, key=lambda k: results[k]["gflops"])
    return {"gflops": results[winner]["gflops"], "library": winner, "by_library": results,
            "how": f"best of repeated {size}x{size} fp32 matmuls per library, {threads} threads, "
                   f"FLOPs = 2 n^3"}


def openvino_matmul_peak(precision: str, threads: int, seconds: float = 2.0, size: int = 2048) -> Dict[str, Any]:
    """The dense ``size`` x ``size`` matmul rate of OpenVINO's CPU plugin at ``precision``, in
    GFLOP/s (2 n^3 per product; for int8, integer multiply-adds counted the same way): fp32 with
    ``INFERENCE_PRECISION_HINT=f32``, bf16 with ``bf16``, int8 with FakeQuantize on both operands
    (OpenVINO runs the product as an INT8 GEMM, AMX/VNNI where the CPU has them). The best of
    repeated calls, so a model's fraction of it is not flattered; the int8 figure includes
    quantizing one operand per call, as a quantized layer does. Needs openvino."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    if precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"precision {precision!r}; expected fp32, bf16 or int8")
    rng = np.random.default_rng(0)
    activations = ops.parameter([size, size], np.float32, name="a")
    weights = ops.constant(rng.standard_normal((size, size)).astype(np.float32))
    left = activations
    if precision == "int8":
        lo, hi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        left = ops.fake_quantize(activations, lo, hi, lo, hi, 256)
        weights = ops.fake_quantize(weights, lo, hi, lo, hi, 255)
    model = ov.Model([ops.matmul(left, weights, False, False)], [activations], f"peak_{precision}")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                                      "INFERENCE_NUM_THREADS": str(threads),
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    operand = rng.standard_normal((size, size)).astype(np.float32)
    request.infer({0: operand})
    best, runs, began = math.inf, 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        request.infer({0: operand})
        best = min(best, time.perf_counter() - start)
        runs += 1
    return {"gflops": round(2.0 * size ** 3 / best / 1e9, 2), "runs": runs, "library": f"openvino {ov.__version__}",
            "how": f"best of repeated {size}x{size} {precision} matmuls on OpenVINO CPU, {threads} threads, "
                   "FLOPs = 2 n^3" + (" (FakeQuantize on both operands: an INT8 GEMM)" if precision == "int8" else "")}
