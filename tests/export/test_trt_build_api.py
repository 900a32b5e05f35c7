"""How `build_plan` drives the TensorRT builder, checked on a CPU against a stand-in `tensorrt`
module shaped like the real Python API (names and signatures as in NVIDIA/TensorRT
python/src/infer/pyCore.cpp / pyGraph.cpp and onnx-tensorrt's pyOnnx bindings; see
docs/gpu_api_audit.md). The real builder is exercised by the `trt`-marked tests.

The stand-in is deliberately strict where TensorRT is: TensorRT 11 has no FP16/BF16/
OBEY_PRECISION_CONSTRAINTS builder flags, ``set_timing_cache`` returns False for a cache it
rejects, ``create_timing_cache`` may return None for a corrupt blob.
"""
from __future__ import annotations

import sys
import types

import pytest

from poserender.errors import UserError
from poserender.export import trt_build, trt_precision
from poserender.specs import StageSpec, TensorSpec


class _Tensor:
    def __init__(self, dtype):
        self.dtype = dtype


class _Layer:
    def __init__(self, trt, name, metadata, dtypes):
        self.name, self.metadata, self._trt = name, metadata, trt
        self._outputs = [_Tensor(d) for d in dtypes]
        self.output_types = {}
        self._precision = None

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, i):
        return self._outputs[i]

    @property
    def precision(self):
        return self._precision

    @precision.setter
    def precision(self, value):
        self._precision = value

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


def fake_tensorrt(version="10.8.0", weak_typing=True, layers=(), parse_ok=True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16, trt.bfloat16, trt.int32 = "float32", "float16", "bfloat16", "int32"
    calls = trt.calls = []
    flags = ["TF32"] + (["FP16", "BF16", "OBEY_PRECISION_CONSTRAINTS"] if weak_typing else [])
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            pass

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return bytearray(self.data + b"+timings")          # IHostMemory has the buffer protocol

    class Profile:
        def set_shape(self, name, low, opt, high):
            calls.append(("set_shape", name, tuple(low), tuple(opt), tuple(high)))

    class Config:
        builder_optimization_level = 3

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return None if bytes(data) == b"corrupt" else Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", cache.data, ignore_mismatch))
            return not cache.data.startswith(b"other-gpu")

    class Network:
        def __init__(self):
            self.layers = [_Layer(trt, *spec) for spec in layers]

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            trt.network = Network()
            return trt.network

        def create_builder_config(self):
            trt.config = Config()
            return trt.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build", config.builder_optimization_level))
            return bytearray(b"PLAN")

    class ParserError:
        def __str__(self):
            return "In node 3 with name: /warp/GridSample and operator: GridSample (importGridSample): UNSUPPORTED_NODE"

        def desc(self):
            return "UNSUPPORTED_NODE"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        @property
        def num_errors(self):
            return 0 if parse_ok else 1

        def get_error(self, i):
            return ParserError()

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


SPEC = StageSpec("frame", (TensorSpec("x", "float32", ("batch", 3, 8, 8)), TensorSpec("k", "float32", (1, 4))),
                 (TensorSpec("y", "uint8", ("batch", 8, 8, 3)),), min_batch=1, opt_batch=2, max_batch=4)
LAYERS = (("/warp/MatMul", "[ONNX Layer: /warp/MatMul]", ["float32"]),
          ("/unet/Conv", "[ONNX Layer: /unet/Conv]", ["float32"]),
          # a layer the parser added for a node inside a local function: metadata carries " | ..."
          ("/heat/Exp_aux", "[ONNX Layer: /heat/Exp | Local Function: heatmap]", ["float32"]),
          ("/shape/Shape", "[ONNX Layer: /warp/MatMul]", ["int32"]))       # index arithmetic: no precision


def build(monkeypatch, trt, precision="fp16", pinned=("/warp/MatMul", "/heat/Exp"), cache=None, level=4):
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt_build.build_plan("model/frame.onnx", SPEC, precision, pinned, cache, level)


def test_fp16_build_sets_flags_profile_and_pins_layers_by_onnx_node(monkeypatch):
    trt = fake_tensorrt(layers=LAYERS)
    plan, pinned = build(monkeypatch, trt)
    assert plan == b"PLAN"
    assert ("create_network", 0) in trt.calls and ("parse_from_file", "model/frame.onnx") in trt.calls
    assert ("set_shape", "x", (1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)) in trt.calls
    assert not any(c[0] == "set_shape" and c[1] == "k" for c in trt.calls)       # static input: no profile
    assert [c[1] for c in trt.calls if c[0] == "set_flag"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert ("build", 4) in trt.calls
    assert pinned == ["/warp/MatMul", "/heat/Exp_aux"]
    layers = {layer.name: layer for layer in trt.network.layers}
    assert layers["/heat/Exp_aux"].precision == "float32" and layers["/heat/Exp_aux"].output_types == {0: "float32"}
    assert layers["/unet/Conv"].precision is None and layers["/shape/Shape"].precision is None


def test_bf16_uses_the_bf16_flag_and_fp32_sets_none(monkeypatch):
    trt = fake_tensorrt(layers=LAYERS)
    build(monkeypatch, trt, precision="bf16")
    assert [c[1] for c in trt.calls if c[0] == "set_flag"] == ["BF16", "OBEY_PRECISION_CONSTRAINTS"]
    trt = fake_tensorrt(layers=LAYERS)
    _, pinned = build(monkeypatch, trt, precision="fp32")
    assert pinned == [] and not [c for c in trt.calls if c[0] == "set_flag"]


def test_tensorrt_11_refuses_reduced_precision_before_building_but_builds_fp32(monkeypatch):
    trt = fake_tensorrt(version="11.4.0", weak_typing=False, layers=LAYERS)
    with pytest.raises(UserError, match=r"--precision fp16 needs TensorRT 10\.x: TensorRT 11\.4\.0 has no "
                                        r"BuilderFlag\.FP16"):
        build(monkeypatch, trt)
    assert not any(c[0] == "build" for c in trt.calls)
    plan, pinned = build(monkeypatch, trt, precision="fp32")
    assert plan == b"PLAN" and pinned == []


@pytest.mark.parametrize("version, strongly_typed", [("10.8.0", True), ("11.4.0", True), ("9.3.0", False)])
def test_int8_builds_the_qdq_graph_by_explicit_quantization(monkeypatch, version, strongly_typed):
    """A Q/DQ graph: strongly typed network and no precision flag where TensorRT has strong typing
    (10+; 11 has no weak typing at all), else the INT8 flag; never any layer pinning."""
    trt = fake_tensorrt(version=version, weak_typing=not version.startswith("11"), layers=LAYERS)
    if strongly_typed:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=3)
    else:
        trt.BuilderFlag.INT8 = "INT8"
    plan, pinned = build(monkeypatch, trt, precision="int8")
    assert plan == b"PLAN" and pinned == []
    assert ("create_network", (1 << 3) if strongly_typed else 0) in trt.calls
    assert [c[1] for c in trt.calls if c[0] == "set_flag"] == ([] if strongly_typed else ["INT8"])
    assert all(layer.precision is None for layer in trt.network.layers)


def test_int8_graphs_come_from_the_trt_entry_and_must_pass_the_qdq_rules(tmp_path, monkeypatch):
    from poserender.export import qdq_check

    with pytest.raises(UserError, match=r"has no TensorRT INT8 graphs \(its INT8 graphs are for ONNX Runtime CPU"):
        trt_build.int8_graphs(tmp_path, {"int8": {"stages": [{"name": "frame", "file": "frame.int8.onnx"}]}})
    manifest = {"int8_trt": {"stages": [{"name": "frame", "file": "frame.int8.trt.onnx"}]}}
    with pytest.raises(UserError, match="'frame.int8.trt.onnx' of stage 'frame' is missing"):
        trt_build.int8_graphs(tmp_path, manifest)
    (tmp_path / "frame.int8.trt.onnx").write_bytes(b"graph")
    verdicts = iter([False, True])

    class Report:
        def __init__(self):
            self.ok = next(verdicts)

        def summary(self):
            return "1 error: zero point 3 of /unet/Conv_quant"

    monkeypatch.setattr(qdq_check, "check_qdq", lambda path: Report())
    with pytest.raises(UserError, match="breaks TensorRT's Q/DQ rules: 1 error: zero point 3"):
        trt_build.int8_graphs(tmp_path, manifest)
    assert trt_build.int8_graphs(tmp_path, manifest) == {"frame": "frame.int8.trt.onnx"}


def test_parse_failure_names_the_node(monkeypatch):
    with pytest.raises(UserError, match="TensorRT cannot parse it: In node 3 with name: /warp/GridSample"):
        build(monkeypatch, fake_tensorrt(parse_ok=False))


def test_timing_cache_is_loaded_and_written_back(monkeypatch, tmp_path):
    path = tmp_path / "caches" / "h100.timing"
    trt = fake_tensorrt()
    build(monkeypatch, trt, cache=path)                                          # no file yet: empty cache
    assert ("create_timing_cache", b"") in trt.calls and ("set_timing_cache", b"", False) in trt.calls
    assert path.read_bytes() == b"+timings"
    trt = fake_tensorrt()
    build(monkeypatch, trt, cache=path)                                          # reused, then extended
    assert ("set_timing_cache", b"+timings", False) in trt.calls
    assert path.read_bytes() == b"+timings+timings"


@pytest.mark.parametrize("stored", [b"corrupt", b"other-gpu timings"])
def test_a_timing_cache_tensorrt_rejects_is_replaced_not_fatal(monkeypatch, tmp_path, stored, capsys):
    path = tmp_path / "gpu.timing"
    path.write_bytes(stored)
    trt = fake_tensorrt()
    plan, _ = build(monkeypatch, trt, cache=path)
    assert plan == b"PLAN" and ("set_timing_cache", b"", False) in trt.calls
    assert path.read_bytes() == b"+timings" and "not usable by this TensorRT/GPU" in capsys.readouterr().err


@pytest.mark.parametrize("metadata, name, node", [
    ("[ONNX Layer: /unet/Conv]", "/unet/Conv_1", "/unet/Conv"),
    ("[ONNX Layer: /unet/Conv | Local Function: block]", "x", "/unet/Conv"),
    ("[ONNX Layer: /a/Add]\x1f[ONNX Layer: /a/Relu]", "fused", "/a/Add"),
    ("", "/top/Round", "/top/Round"),                                            # no metadata: the layer name
])
def test_onnx_node_of_a_layer(metadata, name, node):
    layer = types.SimpleNamespace(metadata=metadata, name=name)
    assert trt_precision._onnx_node_of(layer) == node


def test_builder_flags_follow_the_tensorrt_version():
    flags = types.SimpleNamespace(INT8="INT8", FP16="FP16")
    trt10 = types.SimpleNamespace(__version__="10.3.0", BuilderFlag=flags,
                                  NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1))
    assert trt_build.trt_int8_builder_flags(trt10) == [] and trt_build.trt_int8_network_flags(trt10) == 2
    trt8 = types.SimpleNamespace(__version__="8.6.1", BuilderFlag=flags,
                                 NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0))
    assert trt_build.trt_int8_builder_flags(trt8) == ["INT8"] and trt_build.trt_int8_network_flags(trt8) == 0
