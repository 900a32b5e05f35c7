"""Python-backend stage models without a server: what `--backend python` writes, and StageModel
(the code model.py hands over to) driven through a stand-in for ``triton_python_backend_utils``
that moves tensors by DLPack as the real stub does."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from poserender.triton.contract import ENGINE_PARAMETER, PYTHON_PATH_PARAMETER, THREADS_PARAMETER
from poserender.triton.python_backend import MODEL_PY, StageModel, check_tensor_path
from poserender.triton.validate import load_config, validate_repository


class FakeTensor:
    """pb_utils.Tensor: holds an array; DLPack out (``__dlpack__``), DLPack in (``from_dlpack``)."""

    def __init__(self, name, array):
        self._name, self.array = name, array

    def name(self):
        return self._name

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    @classmethod
    def from_dlpack(cls, name, capsule):
        import torch.utils.dlpack

        return cls(name, torch.utils.dlpack.from_dlpack(capsule).numpy().copy())


def fake_pb_utils(tensor_cls=FakeTensor):
    class Response:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    return types.SimpleNamespace(
        Tensor=tensor_cls, InferenceResponse=Response, TritonError=lambda message: message,
        get_input_tensor_by_name=lambda request, name: request.get(name))


def stage_model(repo, model):
    """StageModel as model.py builds it: the config as the JSON Triton hands to ``initialize``."""
    from google.protobuf.json_format import MessageToDict

    config = MessageToDict(load_config(repo / model / "config.pbtxt"), preserving_proto_field_name=True)
    return StageModel(fake_pb_utils(), config, str(repo / model / "1"))


@pytest.fixture(scope="module")
def python_repo(tmp_path_factory, tiny_model):
    from poserender.triton.repository import TritonOptions, generate_repository

    out = tmp_path_factory.mktemp("python_repo") / "repo"
    generate_repository(tiny_model, out, TritonOptions(devices=("cpu",), backend="python", threads=1))
    return out


def test_python_backend_repository_layout(python_repo, tiny_model):
    for stage in ("source", "frame"):
        version = python_repo / f"pose2img_{stage}" / "1"
        assert sorted(p.name for p in version.iterdir()) == sorted(["model.py", "manifest.json", f"{stage}.onnx"])
        assert (version / f"{stage}.onnx").read_bytes() == (tiny_model / f"{stage}.onnx").read_bytes()
        assert (version / "model.py").read_text() == MODEL_PY
        assert [s["name"] for s in json.loads((version / "manifest.json").read_text())["stages"]] == [stage]
        config = load_config(python_repo / f"pose2img_{stage}" / "config.pbtxt")
        assert config.backend == "python" and config.platform == "" and config.default_model_filename == "model.py"
        assert config.parameters[ENGINE_PARAMETER].string_value == "ort-cpu"
        assert config.parameters[THREADS_PARAMETER].string_value == "1"
        assert config.parameters[PYTHON_PATH_PARAMETER].string_value          # where poserender is, for the stub
        assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_CPU]
    assert validate_repository(python_repo).models["pose2img_frame"] == "python"


def test_stage_model_runs_the_engine_and_answers_each_request(python_repo, tiny_inputs):
    """The frame stage answers what the ONNX graph answers; a request outside the batch range or
    missing an input gets an error response and the others in the same call are still served."""
    from poserender.triton.local import LocalTriton

    local = LocalTriton(python_repo)
    source = {"source_image": np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32),
              "source_keypoints": np.tile(np.load(tiny_inputs / "source.npy").T[None].astype(np.float32), (2, 1, 1)),
              "source_valid": np.ones((2, 122), np.float32)}
    want_source = local.infer("pose2img_source", list(source.items()), ["source_parts", "background"])
    model = stage_model(python_repo, "pose2img_source")
    one = {k: FakeTensor(k, v[:1]) for k, v in source.items()}
    two = {k: FakeTensor(k, v[1:]) for k, v in source.items()}
    responses = model.execute([one, {**two, "source_valid": None}, two])      # merged into one batch of 2
    assert responses[1].error and "no input 'source_valid'" in responses[1].error
    for response, row in ((responses[0], 0), (responses[2], 1)):
        assert response.error is None
        got = {t.name(): t.array for t in response.output_tensors}
        assert np.array_equal(got["source_parts"], want_source["source_parts"][row:row + 1])

    frame = stage_model(python_repo, "pose2img_frame")
    targets = np.load(tiny_inputs / "targets.npy").astype(np.float32)
    feed = {"target_keypoints": targets, "target_valid": np.ones((6, 122), np.float32),
            "source_keypoints": source["source_keypoints"][:1], "source_valid": source["source_valid"][:1],
            "source_parts": want_source["source_parts"][:1], "background": want_source["background"][:1]}
    want = local.infer("pose2img_frame", list(feed.items()), ["frames"])["frames"]
    too_many = {**feed, "target_keypoints": np.concatenate([targets] * 3), "target_valid": np.ones((18, 122), np.float32)}
    good, bad = frame.execute([{k: FakeTensor(k, v) for k, v in feed.items()},
                               {k: FakeTensor(k, v) for k, v in too_many.items()}])
    frames = good.output_tensors[0].array
    assert frames.dtype == np.uint8 and frames.shape == (6, 64, 64, 3) and np.array_equal(frames, want)
    assert "holds 18 items; stage 'frame' takes 1 to 16 per request" in bad.error


def test_a_stub_that_loses_tensor_bytes_is_refused():
    """The NumPy 2 trap, as a class: a stub whose tensors do not come back as sent (zeros, or
    empty) must fail the model's load, never serve empty frames."""

    class Zeroing(FakeTensor):
        @classmethod
        def from_dlpack(cls, name, capsule):
            return cls(name, np.zeros(0, np.float32))

    check_tensor_path(fake_pb_utils())
    with pytest.raises(RuntimeError, match=r"does not survive the Python backend's stub \(sent \(3, 4\) float32, "
                                           r"got \(0,\) float32\)"):
        check_tensor_path(fake_pb_utils(Zeroing))
