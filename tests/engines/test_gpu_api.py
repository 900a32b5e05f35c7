"""GPU-engine API contracts that can be decided on a CPU: the TensorRT engine's I/O check
(a stand-in engine with the real ICudaEngine method names), the onnxruntime-gpu version gate of
``trt_bf16_enable``, and, where an onnxruntime-gpu is installed, that every TensorRT/CUDA EP option
key poserender passes is one that build of onnxruntime knows (no GPU needed: the keys are read
from its provider libraries)."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from poserender.engines import ort_engine
from poserender.engines.compat import version_tuple
from poserender.engines.trt_engine import check_io
from poserender.errors import UserError
from poserender.families.pose2img import stage_specs as pose2img_stage_specs
from poserender.specs import StageSpec, TensorSpec

TRT = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"))
SPEC = StageSpec("frame", (TensorSpec("x", "float32", ("batch", 4)), TensorSpec("k", "float32", (1, 4))),
                 (TensorSpec("y", "uint8", ("batch", 4)),))


class _Engine:
    def __init__(self, io):
        self._io = list(io.items())

    @property
    def num_io_tensors(self):
        return len(self._io)

    def get_tensor_name(self, i):
        return self._io[i][0]

    def get_tensor_mode(self, name):
        return dict(self._io)[name]


def test_engine_io_matching_the_spec_is_accepted():
    engine = _Engine({"y": "OUTPUT", "x": "INPUT", "k": "INPUT"})
    assert [t.name for t in check_io(TRT, engine, SPEC)] == ["x", "k"]


@pytest.mark.parametrize("io, named", [
    ({"x": "INPUT", "y": "OUTPUT"}, "k"),                             # plan from a graph without k
    ({"x": "INPUT", "k": "INPUT", "frames": "OUTPUT"}, "y"),          # renamed output
    ({"x": "INPUT", "k": "OUTPUT", "y": "OUTPUT"}, "k"),              # wrong direction
])
def test_engine_io_that_differs_from_the_spec_is_refused_by_name(io, named):
    with pytest.raises(RuntimeError, match=rf"does not match its StageSpec: {named} \(engine I/O: "):
        check_io(TRT, _Engine(io), SPEC)


@pytest.mark.parametrize("version, ok", [("1.22.0", False), ("1.22.2+cu12", False), ("1.23.0", True),
                                         ("1.31.1", True), ("2.0.0", True)])
def test_trt_bf16_enable_needs_onnxruntime_gpu_1_23(version, ok, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__=version))
    _, frame = pose2img_stage_specs(64, 64)
    if ok:
        options = ort_engine.tensorrt_providers(0, tmp_path, "bf16", frame)[0][1]
        assert options["trt_bf16_enable"] is True and options["trt_fp16_enable"] is False
    else:
        expected = r"needs onnxruntime-gpu >= 1\.23 \(trt_bf16_enable\); this is " + re.escape(version)
        with pytest.raises(UserError, match=expected):
            ort_engine.tensorrt_providers(0, tmp_path, "bf16", frame)
    # fp16/fp32 never ask for the version
    assert "trt_bf16_enable" not in ort_engine.tensorrt_providers(0, tmp_path, "fp16", frame)[0][1]


def _provider_library(name: str) -> Path:
    ort = pytest.importorskip("onnxruntime")
    path = Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{name}.so"
    if not path.is_file():
        pytest.skip(f"{path.name} not in this onnxruntime {ort.__version__} (CPU build): onnxruntime-gpu installs "
                    "the same package and cannot sit beside it (README, Status); runs where onnxruntime-gpu is installed")
    return path


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_tensorrt_ep_option_keys_exist_in_this_onnxruntime(precision, tmp_path):
    import onnxruntime

    keys = set(re.findall(rb"trt_[a-z0-9_]+", _provider_library("tensorrt").read_bytes()))
    if precision == "bf16" and version_tuple(onnxruntime.__version__)[:2] < ort_engine.ORT_BF16_VERSION:
        pytest.skip("bf16 is refused on this onnxruntime (tested above)")
    _, frame = pose2img_stage_specs(64, 64)
    options = ort_engine.tensorrt_providers(0, tmp_path, precision, frame)[0][1]
    unknown = [k for k in options if k != "device_id" and k.encode() not in keys]
    assert not unknown, f"TensorRT EP options unknown to onnxruntime {onnxruntime.__version__}: {unknown}"


def test_cuda_ep_option_keys_and_values_exist_in_this_onnxruntime():
    data = _provider_library("cuda").read_bytes()
    name, options = ort_engine.cuda_providers(0)[0]
    assert name == "CUDAExecutionProvider"
    for key, value in options.items():
        assert b"\0" + key.encode() + b"\0" in data, key
        if isinstance(value, str):
            assert b"\0" + value.encode() + b"\0" in data, value
