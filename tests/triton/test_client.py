"""`poserender triton-client`: requests built from the runtime's adapters fit the generated
ensembles exactly; the whole loop to an mp4 with a fake server; the repository run in-process
(ONNX Runtime) gives the frames `poserender render` gives; the gRPC layer with a fake client."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.errors import UserError
from poserender.triton.client import (GrpcTransport, build_request, client_metadata, contracts, grpc_inputs,
                                      identity_inputs, stream_through_ensemble)
from poserender.triton.validate import load_config

SIZE = 64


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))])


def pose2img_adapter(repo, tiny_inputs):
    from poserender import families
    from poserender.runtime.sources import Frame

    config = load_config(repo / "pose2img" / "config.pbtxt")
    adapter = families.get("pose2img").adapter(client_metadata(config), {"source": tiny_inputs / "source.png",
                                                                        "source_keypoints": tiny_inputs / "source.npy"})
    targets = np.load(tiny_inputs / "targets.npy")                         # (6, 122, 2) image pixels
    poses = [adapter.normalise(Frame(i, 0.0, t.astype(np.float64), np.ones(122, bool))) for i, t in enumerate(targets)]
    return config, adapter, poses


def test_requests_from_the_adapters_fit_the_ensembles(pose2img_repo, psc_repo, tiny_inputs, psc_export):
    """The identity inputs and a batch of frames, as the runtime's adapters prepare them, are
    exactly the ensemble's inputs: names, dtypes and shapes."""
    from poserender import families
    from poserender.runtime.sources import Frame
    from poserender.keypoints.coco18 import template_pose

    config, adapter, poses = pose2img_adapter(pose2img_repo, tiny_inputs)
    request = build_request({**identity_inputs(adapter), **adapter.frame_feed(poses[:3])}, config)
    inputs, _ = contracts(config)
    assert [n for n, _ in request] == [c.name for c in inputs]
    shapes = {n: a.shape for n, a in request}
    assert shapes == {"source_image": (1, 3, SIZE, SIZE), "source_keypoints": (1, 122, 2), "source_valid": (1, 122),
                      "target_keypoints": (3, 122, 2), "target_valid": (3, 122)}
    assert all(a.dtype == np.float32 for _, a in request)

    psc_config = load_config(psc_repo / "psc" / "config.pbtxt")
    psc = families.get("psc").adapter(client_metadata(psc_config), {"source": psc_export / "i0.png",
                                                                   "source_parsing": psc_export / "s0.png"})
    pose = template_pose(SIZE, SIZE)
    batch = [psc.normalise(Frame(i, 0.0, pose + i, np.ones(18, bool))) for i in range(2)]
    request = dict(build_request({**identity_inputs(psc), **psc.frame_feed(batch)}, psc_config))
    assert {n: (a.dtype, a.shape) for n, a in request.items()} == {
        "source_image": (np.float32, (1, 3, SIZE, SIZE)), "source_labels": (np.uint8, (1, SIZE, SIZE)),
        "target_keypoints": (np.float32, (2, 18, 2)), "target_valid": (np.float32, (2, 18))}


def test_request_building_refuses_what_the_server_would(pose2img_repo, tiny_inputs):
    config, adapter, poses = pose2img_adapter(pose2img_repo, tiny_inputs)
    good = {**identity_inputs(adapter), **adapter.frame_feed(poses[:2])}
    cases = [({**good, "target_keypoints": good["target_keypoints"].astype(np.float64)}, "is float64"),
             ({**good, "target_keypoints": good["target_keypoints"][:, :121]}, "expected ['any', 122, 2]"),
             ({**good, "source_image": np.concatenate([good["source_image"]] * 2)}, "'source_image' shape (2, 3"),
             ({k: v for k, v in good.items() if k != "source_valid"}, "lacks inputs ['source_valid']"),
             ({**good, "target_valid": good["target_valid"][:1]}, "disagree on the number of frames")]
    for feed, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
            build_request(feed, config)


class FakeTriton:
    """A server stand-in: answers the ensemble's config and returns frames of the right shape
    (request k's frames are all k), checking every request against the config."""

    def __init__(self, repo: Path, model: str):
        self.config, self.model, self.requests = load_config(repo / model / "config.pbtxt"), model, []

    def get_model_config(self, model):
        if model != self.model:
            raise UserError(f"no model {model!r}")
        return self.config

    def infer(self, model, inputs, outputs):
        assert outputs == ["frames"]
        fed = dict(inputs)
        build_request(fed, self.config)                       # what the server checks
        self.requests.append({k: v.shape for k, v in fed.items()})
        n = fed["target_keypoints"].shape[0]
        return {"frames": np.full((n, SIZE, SIZE, 3), 40 * len(self.requests), np.uint8)}


def test_the_whole_loop_to_an_mp4_with_a_fake_server(pose2img_repo, tiny_inputs, tmp_path):
    fake = FakeTriton(pose2img_repo, "pose2img")
    out = tmp_path / "out.mp4"
    report = stream_through_ensemble(fake, "pose2img", tiny_inputs / "targets.npy", out,
                                     source_image=tiny_inputs / "source.png",
                                     source_keypoints=tiny_inputs / "source.npy", batch=4, concurrency=2)
    assert report.counts.frames_out == 6 and report.requests == 2 and report.counts.reconciles()
    assert [r["target_keypoints"] for r in fake.requests] == [(4, 122, 2), (2, 122, 2)]
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (SIZE, SIZE, 3)
    assert abs(float(decoded[0].mean()) - 40) < 3 and abs(float(decoded[5].mean()) - 80) < 3   # in request order


def test_a_bad_frame_is_held_and_a_wrong_reply_writes_nothing(pose2img_repo, tiny_inputs, tmp_path):
    targets = np.load(tiny_inputs / "targets.npy")
    targets[2, 5, 0] = np.nan
    np.save(tmp_path / "nan.npy", targets)
    fake = FakeTriton(pose2img_repo, "pose2img")
    report = stream_through_ensemble(fake, "pose2img", tmp_path / "nan.npy", tmp_path / "frames",
                                     source_image=tiny_inputs / "source.png",
                                     source_keypoints=tiny_inputs / "source.npy", batch=3)
    assert report.counts.frames_out == 6 and report.counts.held == 1 and report.counts.bad["nan"] == 1

    class Wrong(FakeTriton):
        def infer(self, model, inputs, outputs):
            return {"frames": np.zeros((1, SIZE, SIZE, 3), np.float32)}

    with pytest.raises(UserError, match="expected uint8"):
        stream_through_ensemble(Wrong(pose2img_repo, "pose2img"), "pose2img", tiny_inputs / "targets.npy",
                                tmp_path / "bad.mp4", source_image=tiny_inputs / "source.png",
                                source_keypoints=tiny_inputs / "source.npy")
    assert not list(tmp_path.glob("*bad.mp4*"))


def test_local_repository_renders_what_render_renders(pose2img_repo, tiny_model, tiny_inputs, tmp_path):
    """The ensemble, run step by step from the repository's files with ONNX Runtime, gives the
    same frames, bit for bit, as `poserender render` on the export it came from."""
    result = run("triton-client", tiny_inputs / "targets.npy", "--local", pose2img_repo, "--source",
                 tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy", "-o",
                 tmp_path / "triton", "--batch", "4")
    assert result.exit_code == 0, result.output
    assert "rendered 6/6 frames" in result.output and "2 requests of up to 4 frames" in result.output
    result = run("render", tiny_model, "--source", tiny_inputs / "source.png", "--source-keypoints",
                 tiny_inputs / "source.npy", "--keypoints", tiny_inputs / "targets.npy", "-o", tmp_path / "render",
                 "--backend", "ort-cpu")
    assert result.exit_code == 0, result.output
    got, want = frames_of(tmp_path / "triton"), frames_of(tmp_path / "render")
    assert got.shape == (6, SIZE, SIZE, 3) and got.std() > 1.0 and np.array_equal(got, want)


def test_local_psc_repository_renders_what_render_renders(psc_repo, psc_export, tmp_path):
    from poserender.triton.local import LocalTriton

    local = LocalTriton(psc_repo)
    report = stream_through_ensemble(local, "psc", psc_export / "poses", tmp_path / "triton",
                                     source_image=psc_export / "i0.png", source_parsing=psc_export / "s0.png", batch=2)
    assert report.counts.frames_out == 5 and report.requests == 3
    assert local.calls["psc_source"] == 3 and local.calls["psc_parsing"] == 3 and local.calls["psc_frame"] == 3
    result = run("render", psc_export / "art", "--source", psc_export / "i0.png", "--source-parsing",
                 psc_export / "s0.png", "--keypoints", psc_export / "poses", "-o", tmp_path / "render",
                 "--backend", "ort-cpu", "--batch", "2")
    assert result.exit_code == 0, result.output
    got, want = frames_of(tmp_path / "triton"), frames_of(tmp_path / "render")
    assert got.shape == (5, SIZE, SIZE, 3) and got.std() > 1.0 and np.array_equal(got, want)


def test_grpc_layer_with_a_fake_tritonclient(pose2img_repo, tiny_inputs):
    """InferInput objects carry the checked request (name, shape, datatype, bytes); responses are
    read with as_numpy; a server error is one line."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    config, adapter, poses = pose2img_adapter(pose2img_repo, tiny_inputs)
    request = build_request({**identity_inputs(adapter), **adapter.frame_feed(poses[:2])}, config)
    items = grpc_inputs(grpcclient, request)
    assert [(i.name(), i.shape(), i.datatype()) for i in items] == [
        (n, list(a.shape), "FP32") for n, a in request]
    assert items[3]._get_content() == request[3][1].tobytes()

    class Result:
        def __init__(self, arrays):
            self.arrays = arrays

        def as_numpy(self, name):
            return self.arrays[name]

    class Client:
        def __init__(self):
            self.calls = []

        def get_model_config(self, model):
            if model != "pose2img":
                raise InferenceServerException("Request for unknown model: 'x' is not found")
            return type("Response", (), {"config": config})()

        def infer(self, model, inputs, outputs=None, client_timeout=None):
            self.calls.append((model, [i.name() for i in inputs], [o.name() for o in outputs], client_timeout))
            return Result({"frames": np.zeros((inputs[3].shape()[0], SIZE, SIZE, 3), np.uint8)})

    client = Client()
    transport = GrpcTransport("localhost:8001", client=client, timeout_s=5.0)
    assert transport.get_model_config("pose2img") is config
    assert transport.infer("pose2img", request, ["frames"])["frames"].shape == (2, SIZE, SIZE, 3)
    assert client.calls == [("pose2img", [n for n, _ in request], ["frames"], 5.0)]
    with pytest.raises(UserError, match="Triton at localhost:8001: cannot get the config of model 'x'"):
        transport.get_model_config("x")


@pytest.mark.parametrize("args, message", [
    (["--url", "http://localhost:8001"], "expected HOST:PORT"),
    (["--url", "localhost"], "expected HOST:PORT"),
    (["--batch", "0", "--local", "REPO"], "--batch 0"),
    (["--model", "pose2img_frame", "--local", "REPO"], "must name the ensemble"),
    (["--source-parsing", "SRC", "--local", "REPO"], "--source-parsing is for psc models"),
])
def test_client_bad_input_is_one_line(pose2img_repo, tiny_inputs, tmp_path, args, message):
    args = [str(pose2img_repo) if a == "REPO" else str(tiny_inputs / "source.png") if a == "SRC" else a for a in args]
    result = run("triton-client", tiny_inputs / "targets.npy", "--source", tiny_inputs / "source.png",
                 "--source-keypoints", tiny_inputs / "source.npy", "-o", tmp_path / "o.mp4", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()


def test_an_empty_output_from_the_server_is_an_error_not_frames(pose2img_repo, tiny_inputs):
    """What the Python backend's stub sent under NumPy 2 before tensors went by DLPack: the
    output's shape with no bytes. The client says so in one line instead of writing nothing."""
    from tritonclient.grpc import InferResult, service_pb2

    config, adapter, poses = pose2img_adapter(pose2img_repo, tiny_inputs)
    request = build_request({**identity_inputs(adapter), **adapter.frame_feed(poses[:2])}, config)
    response = service_pb2.ModelInferResponse(model_name="pose2img")
    output = response.outputs.add(name="frames", datatype="UINT8")
    output.shape.extend([2, SIZE, SIZE, 3])
    response.raw_output_contents.append(b"")

    class Client:
        def infer(self, model, inputs, outputs=None, client_timeout=None):
            return InferResult(response)

    with pytest.raises(UserError, match="'pose2img' returned output 'frames' with too few bytes for its shape"):
        GrpcTransport("localhost:8001", client=Client()).infer("pose2img", request, ["frames"])
