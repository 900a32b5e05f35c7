"""`poserender render` through the streaming pipeline, as a user runs it, with the tiny model:
stdin JSON lines, the TCP listener, --follow, raw frames on stdout, bad frames, replicas,
--preview/--metrics, Ctrl-C on a real process."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.keypoints import OPENPOSE_TO_122


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def base_args(tiny_inputs, model, keypoints, out, *extra):
    return ["render", model, "--source", tiny_inputs / "source.png", "--source-keypoints",
            tiny_inputs / "source.npy", "--keypoints", keypoints, "-o", out, *extra]


def json_lines(poses, start=0):
    """Each (122, 2) pose as an OpenPose-style 137-point record, as a live pose tracker sends it."""
    lines = []
    for t, pose in enumerate(poses):
        rows = np.zeros((137, 3))
        rows[list(OPENPOSE_TO_122), :2] = pose
        rows[list(OPENPOSE_TO_122), 2] = 1.0
        lines.append(json.dumps({"frame": start + t, "keypoints": rows.tolist()}))
    return lines


def png_frames(folder):
    return [cv2.imread(str(p)) for p in sorted(folder.iterdir())]


@pytest.fixture
def file_render(tiny_file_frames):
    return tiny_file_frames


def test_stdin_json_lines_equal_the_file_render(tiny_inputs, tiny_model, tmp_path, file_render):
    lines = json_lines(np.load(tiny_inputs / "targets.npy"))
    result = run(*base_args(tiny_inputs, tiny_model, "-", tmp_path / "out", "--format", "png", "--batch", "4"),
                 input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert "rendered 6/6 frames" in result.stdout
    got = png_frames(tmp_path / "out")
    assert len(got) == 6 and all(np.array_equal(a, b) for a, b in zip(got, file_render))


def test_tcp_listener_renders_what_a_client_sends(tiny_inputs, tiny_model, tmp_path, file_render, tcp_sender):
    port, join = tcp_sender(json_lines(np.load(tiny_inputs / "targets.npy")))
    result = run(*base_args(tiny_inputs, tiny_model, f"tcp://127.0.0.1:{port}", tmp_path / "out.mp4"))
    errors = join()
    assert not errors and result.exit_code == 0, result.output
    assert f"listening for keypoints on tcp://127.0.0.1:{port}" in result.stderr
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


def test_injected_bad_frames_on_stdin_complete_and_reconcile(tiny_inputs, tiny_model, tmp_path):
    poses = np.load(tiny_inputs / "targets.npy")
    lines = json_lines(np.concatenate([poses, poses]))          # frames 0..11
    record = json.loads(lines[2])
    record["keypoints"][1][0] = float("nan")
    lines[2] = json.dumps(record)                                # NaN
    lines[4] = json.dumps({"frame": 4, "keypoints": [[1, 2, 1], [3, 4, 1], [5, 6, 1]]})   # 3 joints
    lines[5] = '{"frame": 5, "keypoints": [[1, 2'                 # broken JSON
    del lines[8:10]                                              # frames 8 and 9 missing
    metrics = tmp_path / "m.json"
    result = run(*base_args(tiny_inputs, tiny_model, "-", tmp_path / "out.mp4", "--metrics", metrics),
                 input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    # the broken line has no index of its own (decode, skipped); frame 5 is then a gap, held like 8 and 9
    assert "bad frames: decode 1, gap 3, nan 1, shape 1 (held 5, skipped 1)" in result.stdout
    assert "frames: in 13 = out 12 + dropped 0 + skipped 1" in result.stdout
    for kind in ("NaN", "3 joints", "undecodable", "gap"):
        assert sum(kind in line for line in result.stderr.splitlines() if "warning" in line) == 1, kind
    data = json.loads(metrics.read_text())
    assert data["frames"]["bad_frames"] == {"nan": 1, "shape": 1, "decode": 1, "gap": 3}
    assert data["frames"]["in"] == data["frames"]["out"] + data["frames"]["dropped"] + data["frames"]["skipped"]
    assert set(data["stages"]) == {"read", "prepare", "frame", "write"} and data["stages"]["frame"]["compute_ms"]["p99"] > 0
    skipped = run(*base_args(tiny_inputs, tiny_model, "-", tmp_path / "skip.mp4", "--on-bad-frame", "skip"),
                  input="\n".join(lines) + "\n")
    assert "frames: in 13 = out 7 + dropped 0 + skipped 6" in skipped.stdout


def test_replicated_cpu_workers_equal_one_worker(tiny_inputs, tiny_model, tmp_path, file_render):
    result = run(*base_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", tmp_path / "out",
                            "--format", "png", "--devices", "cpu,cpu", "--replicate", "--batch", "1"))
    assert result.exit_code == 0, result.output
    assert "workers: frame@cpu#0, frame@cpu#1" in result.stdout
    assert all(np.array_equal(a, b) for a, b in zip(png_frames(tmp_path / "out"), file_render))


def test_gpu_device_with_cpu_backend_is_one_line(tiny_inputs, tiny_model, tmp_path):
    result = run(*base_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", tmp_path / "out.mp4",
                            "--devices", "0", "--backend", "ort-cpu"))
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("poserender: error: ") and "'0'" in lines[0]
    assert not list(tmp_path.iterdir())


def test_preview_contact_sheet(tiny_inputs, tiny_model, tmp_path):
    result = run(*base_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", tmp_path / "out.mp4",
                            "--preview", tmp_path / "sheet.png", "--preview-every", "2"))
    assert result.exit_code == 0, result.output
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (160 + 2, 3 * (160 + 2), 3)       # frames 0, 2, 4 as 160 px tiles


def test_follow_renders_files_as_openpose_writes_them(tiny_inputs, tiny_model, tmp_path, file_render):
    folder = tmp_path / "live"
    folder.mkdir()
    poses = np.load(tiny_inputs / "targets.npy")

    def openpose():
        for t, line in enumerate(json_lines(poses)):
            rows = np.asarray(json.loads(line)["keypoints"])
            doc = {"people": [{"pose_keypoints_2d": rows[:25].ravel().tolist(),
                               "face_keypoints_2d": rows[25:95].ravel().tolist(),
                               "hand_left_keypoints_2d": rows[95:116].ravel().tolist(),
                               "hand_right_keypoints_2d": rows[116:].ravel().tolist()}]}
            (folder / f"cam_{t:012d}_keypoints.json").write_text(json.dumps(doc))
            time.sleep(0.1)

    writer = threading.Thread(target=openpose)
    writer.start()
    result = run(*base_args(tiny_inputs, tiny_model, folder, tmp_path / "out", "--format", "png", "--follow",
                            "--follow-timeout", "1.5"))
    writer.join()
    assert result.exit_code == 0, result.output
    assert all(np.array_equal(a, b) for a, b in zip(png_frames(tmp_path / "out"), file_render))
    assert len(list((tmp_path / "out").iterdir())) == 6


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "poserender.cli", *map(str, args)], **kwargs)


def test_raw_frames_on_stdout_and_nothing_else(tiny_inputs, tiny_model):
    proc = _cli(*base_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", "-"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert len(out) == 6 * 64 * 64 * 3                 # frames only: the summary went to stderr
    assert b"rendered 6/6 frames to stdout" in err
    first = np.frombuffer(out[:64 * 64 * 3], np.uint8).reshape(64, 64, 3)
    assert first.std() > 0


def test_codec_auto_falls_back_to_libx264_without_nvenc():
    import shutil

    from poserender.runtime.sinks import pick_video_codec

    if shutil.which("nvidia-smi"):
        pytest.skip("an NVIDIA driver is present: auto may pick h264_nvenc here")
    assert pick_video_codec("auto") == "libx264" and pick_video_codec("h264_nvenc") == "h264_nvenc"
