"""Against a real tritonserver (the nvidia-pytriton wheel's, 2.51) serving `--backend python`
repositories of both families: loading, frames bit-identical to `poserender render` over gRPC,
four identities at once, a malformed request, the server killed mid-stream, `triton-serve`.

Every server here is started on free loopback ports, waited for with a time limit and stopped
in a fixture teardown or a ``finally``. Without a server binary the tests skip with the reason.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.errors import UserError

SIZE = 64
READY_S = 240                 # a cold start loads 6 Python-backend models on 2 busy cores


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def server_binary():
    from poserender.triton.server import find_server

    try:
        return find_server()
    except UserError as exc:
        pytest.skip(str(exc))


def _python_repo(tmp_path_factory, model_dir, name):
    from poserender.triton.repository import TritonOptions, generate_repository

    out = tmp_path_factory.mktemp("served") / name
    generate_repository(model_dir, out, TritonOptions(devices=("cpu",), backend="python", threads=1))
    return out


@pytest.fixture(scope="module")
def served_repos(tmp_path_factory, tiny_model, psc_export):
    return {"pose2img": _python_repo(tmp_path_factory, tiny_model, "pose2img_repo"),
            "psc": _python_repo(tmp_path_factory, psc_export / "art", "psc_repo")}


def start_server(repos, **kwargs):
    from poserender.triton.server import TritonServer, free_port

    server = TritonServer(repos, http_port=free_port(), grpc_port=free_port(), **kwargs)
    server.start()
    try:
        server.wait_ready(READY_S)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def live(server_binary, served_repos):
    """One server with both families' repositories."""
    server = start_server(list(served_repos.values()))
    try:
        yield server
    finally:
        server.stop()


def grpc_client(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url)


def test_both_families_load(live):
    index = {m.name: m.state for m in grpc_client(live).get_model_repository_index().models}
    assert index == {name: "READY" for name in ("pose2img", "pose2img_source", "pose2img_frame", "psc", "psc_source",
                                               "psc_parsing", "psc_frame", "psc_interp")}
    assert live.grpc_url.startswith("127.0.0.1:") and "--grpc-address=127.0.0.1" in live.command()


def test_grpc_client_renders_what_render_renders(live, tiny_model, tiny_inputs, psc_export, tmp_path):
    """`triton-client` over gRPC writes the frames `poserender render --backend ort-cpu` writes,
    bit for bit (pose2img through the CLI, PSC through the client API)."""
    from poserender.triton.client import GrpcTransport, stream_through_ensemble

    source = ["--source", tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy"]
    result = run("triton-client", tiny_inputs / "targets.npy", "--url", live.grpc_url, *source, "-o",
                 tmp_path / "triton", "--batch", "4", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert "rendered 6/6 frames" in result.output and "2 requests of up to 4 frames" in result.output
    result = run("render", tiny_model, *source, "--keypoints", tiny_inputs / "targets.npy", "-o", tmp_path / "render",
                 "--backend", "ort-cpu")
    assert result.exit_code == 0, result.output
    got, want = frames_of(tmp_path / "triton"), frames_of(tmp_path / "render")
    assert got.shape == (6, SIZE, SIZE, 3) and got.std() > 1.0 and np.array_equal(got, want)

    report = stream_through_ensemble(GrpcTransport(live.grpc_url, timeout_s=60), "psc", psc_export / "poses",
                                     tmp_path / "psc_triton", source_image=psc_export / "i0.png",
                                     source_parsing=psc_export / "s0.png", batch=2)
    assert report.counts.frames_out == 5 and report.requests == 3
    result = run("render", psc_export / "art", "--source", psc_export / "i0.png", "--source-parsing",
                 psc_export / "s0.png", "--keypoints", psc_export / "poses", "-o", tmp_path / "psc_render",
                 "--backend", "ort-cpu", "--batch", "2")
    assert result.exit_code == 0, result.output
    got, want = frames_of(tmp_path / "psc_triton"), frames_of(tmp_path / "psc_render")
    assert got.shape == (5, SIZE, SIZE, 3) and got.std() > 1.0 and np.array_equal(got, want)


def test_four_identities_at_once_get_only_their_own_frames(live, served_repos, tiny_inputs, tmp_path):
    """Four clients, four source images, 12 frames each in requests of 3, all in flight together:
    each gets exactly the frames its identity gives in-process, in order, none lost."""
    from poserender.keypoints.template import gesture_sequence
    from poserender.triton.client import GrpcTransport, stream_through_ensemble
    from poserender.triton.local import LocalTriton

    image = cv2.imread(str(tiny_inputs / "source.png"))
    targets = tmp_path / "targets.npy"
    np.save(targets, gesture_sequence(12, SIZE, SIZE, seed=7))
    sources = []
    for i in range(4):
        path = tmp_path / f"identity{i}.png"
        cv2.imwrite(str(path), np.roll(255 - image if i % 2 else image, 9 * i, axis=1))
        sources.append(path)

    def stream(transport, i, kind):
        return stream_through_ensemble(transport, "pose2img", targets, tmp_path / f"{kind}{i}", source_image=sources[i],
                                       source_keypoints=tiny_inputs / "source.npy", batch=3, concurrency=2)

    local = LocalTriton(served_repos["pose2img"])
    for i in range(4):
        stream(local, i, "want")
    reports, errors = {}, []

    def client(i):
        try:
            reports[i] = stream(GrpcTransport(live.grpc_url, timeout_s=120), i, "got")
        except BaseException as exc:         # reported below
            errors.append(f"client {i}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    wants = [frames_of(tmp_path / f"want{i}") for i in range(4)]
    for i in range(4):
        assert reports[i].counts.frames_out == 12 and reports[i].requests == 4
        got = frames_of(tmp_path / f"got{i}")
        assert got.shape == (12, SIZE, SIZE, 3) and np.array_equal(got, wants[i])
    assert all(not np.array_equal(wants[i], wants[j]) for i in range(4) for j in range(i + 1, 4))


def test_a_malformed_request_gets_a_triton_error_not_a_dead_server(live):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpc_client(live)

    def request(frames=2, joints=122, dtype=np.float32):
        feed = {"source_image": np.zeros((1, 3, SIZE, SIZE), np.float32),
                "source_keypoints": np.full((1, 122, 2), 30, np.float32), "source_valid": np.ones((1, 122), np.float32),
                "target_keypoints": np.full((frames, joints, 2), 30, dtype), "target_valid": np.ones((frames, joints), dtype)}
        inputs = []
        for name, array in feed.items():
            item = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "FP64")
            item.set_data_from_numpy(array)
            inputs.append(item)
        return client.infer("pose2img", inputs, client_timeout=60)

    for kwargs, message in (({"joints": 121}, "unexpected shape for input 'target_"), ({"dtype": np.float64}, "FP64"),
                            ({"frames": 17}, "holds 17 items; stage 'frame' takes 1 to 16 per request")):
        with pytest.raises(InferenceServerException, match=message):
            request(**kwargs)
    assert live.is_ready() and live.process.poll() is None
    frames = request().as_numpy("frames")
    assert frames.shape == (2, SIZE, SIZE, 3) and frames.dtype == np.uint8


def test_a_server_killed_mid_stream_leaves_one_error_line_and_no_output(server_binary, served_repos, tmp_path):
    """The client is rendering to an mp4 when the server dies (SIGKILL after its second frame
    request): one `poserender: error:` line, exit 2, and no video or partial file left."""
    from poserender.keypoints.template import gesture_sequence, template_pose
    from poserender.demo import draw_figure

    server = start_server([served_repos["pose2img"]])
    try:
        pose = template_pose(SIZE, SIZE)
        cv2.imwrite(str(tmp_path / "source.png"), draw_figure(pose, SIZE))
        np.save(tmp_path / "source.npy", pose.T.copy())
        np.save(tmp_path / "long.npy", gesture_sequence(600, SIZE, SIZE, seed=3))
        out = tmp_path / "out" / "clip.mp4"
        out.parent.mkdir()
        killed = threading.Event()

        def kill_after_two_requests():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and server.process.poll() is None:
                try:
                    with urllib.request.urlopen(f"{server.http_url}/v2/models/pose2img_frame/stats", timeout=2) as r:
                        count = json.load(r)["model_stats"][0]["execution_count"]
                except OSError:
                    count = 0
                if count >= 2:
                    server.kill()
                    killed.set()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=kill_after_two_requests)
        watcher.start()
        result = run("triton-client", tmp_path / "long.npy", "--url", server.grpc_url, "--source", tmp_path / "source.png",
                     "--source-keypoints", tmp_path / "source.npy", "-o", out, "--batch", "1", "--concurrency", "1",
                     "--timeout", "60")
        watcher.join(timeout=130)
    finally:
        server.stop()
    assert killed.is_set(), result.output
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"poserender: error: Triton at {server.grpc_url}: inference on "
                                                   "'pose2img' failed"), result.output
    assert list(out.parent.iterdir()) == []


def test_triton_serve_starts_answers_and_stops_on_sigterm(server_binary, served_repos, tiny_inputs, tmp_path):
    """The README's flow: `poserender triton-serve REPO` prints the endpoints once the models are
    loaded, `triton-client` renders through it, SIGTERM stops it cleanly (exit 0)."""
    from poserender.triton.server import free_port

    http, grpc = free_port(), free_port()
    command = [sys.executable, "-m", "poserender.cli", "triton-serve", str(served_repos["pose2img"]),
               "--http-port", str(http), "--grpc-port", str(grpc), "--timeout", str(READY_S)]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        ready = serve.stdout.readline()                 # blocks until ready, or EOF if it failed
        assert ready.startswith(f"tritonserver ready: gRPC 127.0.0.1:{grpc}, HTTP http://127.0.0.1:{http}"), \
            ready + serve.stderr.read() if serve.poll() is not None else ready
        result = run("triton-client", tiny_inputs / "targets.npy", "--url", f"127.0.0.1:{grpc}", "--source",
                     tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy", "-o",
                     tmp_path / "out.mp4", "--timeout", "60")
        assert result.exit_code == 0 and (tmp_path / "out.mp4").stat().st_size > 0, result.output
        os.kill(serve.pid, signal.SIGTERM)
        out, _ = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=30)
    assert serve.returncode == 0 and "tritonserver stopped (exit code 0)" in out
    with pytest.raises(OSError):                        # nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2)


def test_triton_serve_without_a_server_says_how_to_get_one(monkeypatch, served_repos, tmp_path):
    import poserender.triton.server as server_module

    monkeypatch.setattr(server_module, "wheel_server", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run("triton-serve", served_repos["pose2img"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert 'no tritonserver found: install the one in the nvidia-pytriton wheel with pip install --no-deps ' \
           '"nvidia-pytriton==0.7.0"' in result.output
    result = run("triton-serve", tmp_path / "missing")
    assert result.exit_code == 2 and "not a folder" in result.output


def test_triton_serve_binds_loopback_without_metrics(server_binary, served_repos):
    result = run("triton-serve", served_repos["pose2img"], "--print-command")
    assert result.exit_code == 0, result.output
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--allow-metrics=false",
                 "--allow-gpu-metrics=false", "--http-port=8000", "--grpc-port=8001"):
        assert flag in result.output.split()


def test_triton_serve_refuses_a_repository_the_wheels_server_cannot_load(server_binary, pose2img_repo):
    if server_binary.wheel_root is None:
        pytest.skip("the server on PATH may have the ONNX Runtime backend")
    result = run("triton-serve", pose2img_repo)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "model 'pose2img_frame' needs Triton's onnxruntime_onnx backend" in result.output
    assert "--backend python" in result.output
