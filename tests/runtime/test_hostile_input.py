"""The stream's promise under hostile input, through the CLI with the tiny model: values beyond
float32, undecodable lines among real ones, huge index jumps, over-long lines, a TCP listener
probed and crowded, damaged model files and images, full disks and unwritable side outputs.
Each test is one class of input from docs/streaming.md's contract (signals: test_signals.py;
the seeded fuzz over all of them: test_stream_fuzz.py)."""
from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.keypoints import OPENPOSE_TO_122

FRAME_BYTES = 64 * 64 * 3


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def render_args(tiny_inputs, model, keypoints, out, *extra):
    return ["render", model, "--source", tiny_inputs / "source.png", "--source-keypoints",
            tiny_inputs / "source.npy", "--keypoints", keypoints, "-o", out, *extra]


def record(pose, frame=None, scale_joint=None, value=None):
    rows = np.zeros((137, 3))
    rows[list(OPENPOSE_TO_122), :2] = pose
    rows[list(OPENPOSE_TO_122), 2] = 1.0
    if scale_joint is not None:
        rows[OPENPOSE_TO_122[scale_joint], 0] = value
    doc = {"keypoints": rows.tolist()}
    if frame is not None:
        doc["frame"] = frame
    return json.dumps(doc)


def png_frames(folder):
    return [cv2.imread(str(p)) for p in sorted(folder.iterdir())]


def one_error_line(result_or_stderr):
    text = result_or_stderr if isinstance(result_or_stderr, str) else result_or_stderr.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("poserender: error: ") and "Traceback" not in text, text
    return lines[-1]


def no_hidden_partials(folder):
    return not [p for p in folder.rglob("*") if "partial" in p.name]


@pytest.fixture(scope="module")
def poses(tiny_inputs):
    return np.load(tiny_inputs / "targets.npy")                 # (6, 122, 2) image pixels


@pytest.fixture
def file_frames(tiny_file_frames):
    return tiny_file_frames


# -- 1. values beyond float32 (or any sane pixel range), at every entry point -------------------

@pytest.mark.parametrize("value", [1e39, -1e39, 3.4e38, 2e6])
def test_out_of_range_value_on_stdin_is_one_held_frame(tiny_inputs, tiny_model, tmp_path, poses, file_frames, value):
    lines = [record(p, t) for t, p in enumerate(poses)]
    lines[3] = record(poses[3], 3, scale_joint=5, value=value)
    result = run(*render_args(tiny_inputs, tiny_model, "-", tmp_path / "out", "--format", "png"),
                 input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert "bad frames: range 1 (held 1, skipped 0)" in result.stdout
    assert "frames: in 6 = out 6 + dropped 0 + skipped 0" in result.stdout
    got = png_frames(tmp_path / "out")
    assert np.array_equal(got[3], file_frames[2])                # held: the last good pose
    assert all(np.array_equal(got[i], file_frames[i]) for i in (0, 1, 2, 4, 5))


def test_out_of_range_values_in_files_are_bad_frames(tiny_inputs, tiny_model, tmp_path, poses, write_openpose_json):
    from poserender.keypoints.readers import NPZ_KEY

    bad = poses.copy()
    bad[2, 7, 1] = 1e40
    np.save(tmp_path / "seq.npy", bad)                                          # (T, 122, 2) float64
    folder = tmp_path / "openpose"
    folder.mkdir()
    for t, pose in enumerate(poses):
        rows = np.zeros((137, 3))
        rows[list(OPENPOSE_TO_122), :2] = pose
        rows[list(OPENPOSE_TO_122), 2] = 1.0
        if t == 4:
            rows[0, 0] = 1e39
        write_openpose_json(folder / f"clip_{t:012d}_keypoints.json", rows)
    # an .npz is root-relative (121 joints, no neck); any finite float64 beyond the range is bad
    npz = np.zeros((1, 6, 2, 121))
    npz[0, 1, 0, 3] = 1e40
    np.savez(tmp_path / "poses.npz", **{NPZ_KEY: npz})
    for keypoints, row in ((tmp_path / "seq.npy", 2), (folder, 4), (tmp_path / "poses.npz", 1)):
        out = tmp_path / f"out_{keypoints.name}.mp4"
        result = run(*render_args(tiny_inputs, tiny_model, keypoints, out))
        assert result.exit_code == 0, (keypoints, result.output)
        assert "bad frames: range 1 (held 1, skipped 0)" in result.stdout, (keypoints, result.stdout)
        assert f"frame {row}:" in result.stderr and "beyond" in result.stderr
        with av.open(str(out)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 6


def test_out_of_range_source_keypoints_are_one_error_line(tiny_inputs, tiny_model, tmp_path):
    source = np.load(tiny_inputs / "source.npy").copy()
    source[0, 3] = 1e39
    np.save(tmp_path / "src.npy", source)
    result = run("render", tiny_model, "--source", tiny_inputs / "source.png", "--source-keypoints",
                 tmp_path / "src.npy", "--keypoints", tiny_inputs / "targets.npy", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 2 and "beyond" in one_error_line(result)
    assert not (tmp_path / "o.mp4").exists()


# -- 2. undecodable lines never take a real frame's index ---------------------------------------

def test_random_bytes_between_real_records_cost_no_real_frame(tiny_inputs, tiny_model, tmp_path, poses, file_frames):
    rng = np.random.default_rng(11)
    chunks = []
    for t in range(20):                                        # 20 real records, each with its index
        chunks.append((record(poses[t % 6], t) + "\n").encode())
        if t in (3, 9, 15):
            chunks.append(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() + b"\n")
    proc = subprocess.run([sys.executable, "-m", "poserender.cli", *map(str, render_args(
        tiny_inputs, tiny_model, "-", "-", "--batch", "3"))], input=b"".join(chunks), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 20 * FRAME_BYTES
    frames = np.frombuffer(proc.stdout, np.uint8).reshape(20, 64, 64, 3)
    assert all(np.array_equal(frames[t], file_frames[t % 6]) for t in range(20))
    summary = proc.stderr.decode()
    assert "rendered 20/" in summary and "= out 20 + dropped 0 + skipped" in summary and "gap" not in summary


# -- 3. index jumps are bounded -------------------------------------------------------------------

@pytest.mark.parametrize("jump", [1_000_000, 10 ** 9, 10 ** 30])
def test_a_huge_frame_index_is_a_discontinuity_not_a_backlog(tiny_inputs, tiny_model, tmp_path, poses, jump):
    lines = [record(poses[t], t) for t in range(5)] + [record(poses[5], jump), record(poses[0], jump + 3)]
    started = time.monotonic()
    result = run(*render_args(tiny_inputs, tiny_model, "-", tmp_path / "out.mp4", "--max-gap", "10"),
                 input="\n".join(lines) + "\n")
    assert time.monotonic() - started < 60          # a hang check, not a speed goal
    assert result.exit_code == 0, result.output
    assert "frames: in 9 = out 9 + dropped 0 + skipped 0" in result.stdout     # 7 records + a gap of 2 held
    assert f"discontinuities: 1 (index jumps over --max-gap; {jump - 5} missing indices not filled)" in result.stdout
    assert "bad frames: gap 2 (held 2, skipped 0)" in result.stdout


def test_default_max_gap_is_five_seconds_of_frames(tiny_inputs, tiny_model, tmp_path, poses):
    lines = [record(poses[0], 0), record(poses[1], 51), record(poses[2], 52 + 50 + 1)]
    result = run(*render_args(tiny_inputs, tiny_model, "-", tmp_path / "out.mp4", "--fps", "10"),
                 input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output      # 50 missing = 5 s at 10 fps: filled; 51: not filled
    assert "frames: in 53 = out 53" in result.stdout and "discontinuities: 1" in result.stdout


def test_openpose_folder_numbered_0_and_100000000(tiny_inputs, tiny_model, tmp_path, poses, write_openpose_json):
    folder = tmp_path / "op"
    folder.mkdir()
    for number, pose in ((0, poses[0]), (100_000_000, poses[1])):
        rows = np.zeros((137, 3))
        rows[list(OPENPOSE_TO_122), :2] = pose
        rows[list(OPENPOSE_TO_122), 2] = 1.0
        write_openpose_json(folder / f"x_{number:012d}_keypoints.json", rows)
    result = run(*render_args(tiny_inputs, tiny_model, folder, tmp_path / "out.mp4"))
    assert result.exit_code == 0, result.output
    assert "rendered 2/2 frames" in result.stdout and "discontinuities: 1" in result.stdout


# -- 7. the TCP listener's contract --------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(port, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


def test_tcp_probes_crowds_long_lines_and_a_silent_client(tiny_inputs, tiny_model, tmp_path, poses, file_frames):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "poserender.cli", *map(str, render_args(
        tiny_inputs, tiny_model, f"tcp://127.0.0.1:{port}", tmp_path / "out", "--format", "png",
        "--idle-timeout", "2"))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _connect(port).close()                                    # a health probe: connects and closes
        scan = _connect(port)
        scan.sendall(b"GET / HTTP/1.0\r\n\r\n")                   # a probe speaking another protocol
        scan.close()
        silent = _connect(port)                                   # a connection that never says anything
        client = _connect(port)
        client.sendall(b"x" * (1 << 20) + b"y" * 4096 + b"\n")    # one line over the 1 MiB limit
        for t in range(6):
            client.sendall((record(poses[t], t) + "\n").encode())
        crowd = _connect(port)                                    # a second stream while one is served
        crowd.settimeout(10)
        assert crowd.recv(200).startswith(b"poserender: busy")
        silent.settimeout(10)
        assert silent.recv(200).startswith(b"poserender: busy")
        # the client now stalls without closing: --idle-timeout ends the stream
        stdout, stderr = proc.communicate(timeout=60)
        client.close()
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "no data from the client for 2 s (--idle-timeout)" in stderr
    assert "rendered 6/" in stdout and "= out 6 + dropped 0 + skipped" in stdout
    got = png_frames(tmp_path / "out")
    assert len(got) == 6 and all(np.array_equal(a, b) for a, b in zip(got, file_frames))


# -- 5. full disks and unwritable side outputs ----------------------------------------------------

def _limited(nbytes):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def test_a_full_disk_while_writing_the_mp4_is_one_line_and_no_file(tiny_inputs, tiny_model, tmp_path):
    out = tmp_path / "out" / "o.mp4"
    proc = subprocess.run([sys.executable, "-m", "poserender.cli", *map(str, render_args(
        tiny_inputs, tiny_model, tiny_inputs / "targets.npy", out))], capture_output=True, text=True, timeout=120,
        preexec_fn=_limited(1500))
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert str(out) in line and "file too large" in line
    assert not out.exists() and no_hidden_partials(tmp_path)


def test_a_full_disk_during_export_is_one_line_and_no_folder(tiny_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "poserender.cli", "export", str(tiny_checkpoint), "-o",
                           str(tmp_path / "art")], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(100_000))
    assert proc.returncode == 2, proc.stderr
    assert "file too large" in one_error_line(proc.stderr)
    assert not list(tmp_path.iterdir())


def test_unwritable_preview_and_metrics_fail_before_rendering(tiny_inputs, tiny_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for option in ("--preview", "--metrics"):
        target = blocker / ("sheet.png" if option == "--preview" else "m.json")
        result = run(*render_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", tmp_path / "o.mp4",
                                  option, target))
        assert result.exit_code == 2
        line = one_error_line(result)
        assert str(target) in line and "cannot write" in line
        assert not (tmp_path / "o.mp4").exists() and no_hidden_partials(tmp_path)
    nested = tmp_path / "new" / "deeper" / "m.json"             # a missing folder is made, as for -o
    result = run(*render_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", tmp_path / "o.mp4",
                              "--metrics", nested))
    assert result.exit_code == 0 and json.loads(nested.read_text())["frames"]["out"] == 6


def test_bench_results_path_is_checked_before_the_grid_runs(tiny_model, tmp_path):
    (tmp_path / "f").write_text("")
    result = run("bench", tiny_model, "--backend", "ort-cpu", "--batch", "1", "--json", tmp_path / "f" / "r.json")
    assert result.exit_code == 2 and "cannot write the --json result" in one_error_line(result)


# -- 6. model files against their manifest --------------------------------------------------------

@pytest.fixture
def model_copy(tiny_model, tmp_path):
    import shutil

    dest = tmp_path / "model"
    shutil.copytree(tiny_model, dest)
    return dest


def test_a_replaced_stage_file_is_refused(tiny_inputs, model_copy, tmp_path, tiny_checkpoint):
    from poserender import families
    from poserender.export.exporter import export_checkpoint
    from poserender.models.checkpoint import load_generator, save_checkpoint

    generator, meta = load_generator(tiny_checkpoint)
    for p in generator.parameters():                   # another model with the same shapes
        p.data.mul_(0.5)
    save_checkpoint(tmp_path / "other.pth", generator, meta)
    export_checkpoint(families.get("pose2img"), tmp_path / "other.pth", tmp_path / "other", {})
    (model_copy / "frame.onnx").write_bytes((tmp_path / "other" / "frame.onnx").read_bytes())
    result = run(*render_args(tiny_inputs, model_copy, tiny_inputs / "targets.npy", tmp_path / "o.mp4"))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "frame.onnx: does not match manifest.json" in line and "re-export" in line
    assert not (tmp_path / "o.mp4").exists()


def test_a_truncated_stage_file_and_an_unknown_format_are_refused(tiny_inputs, model_copy, tmp_path):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["format_version"] = 999
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    result = run(*render_args(tiny_inputs, model_copy, tiny_inputs / "targets.npy", tmp_path / "o.mp4"))
    assert result.exit_code == 2 and "format_version 999" in one_error_line(result)
    manifest["format_version"] = 1
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    data = (model_copy / "source.onnx").read_bytes()
    (model_copy / "source.onnx").write_bytes(data[: len(data) // 3])
    for command in (render_args(tiny_inputs, model_copy, tiny_inputs / "targets.npy", tmp_path / "o.mp4"),
                    ["bench", model_copy, "--backend", "ort-cpu", "--batch", "1"], ["verify", model_copy]):
        result = run(*command)
        assert result.exit_code == 2, (command[0], result.output)
        assert "source.onnx: does not match manifest.json" in one_error_line(result), command[0]
    assert not (tmp_path / "o.mp4").exists()


def test_a_foreign_graph_with_a_matching_manifest_is_one_line(tiny_inputs, model_copy, tmp_path):
    """Someone rewrote the manifest to match a damaged file: ONNX Runtime's refusal is still one line."""
    from poserender.manifest import sha256_file

    (model_copy / "frame.onnx").write_bytes(b"\x08\x07not an onnx graph at all")
    manifest = json.loads((model_copy / "manifest.json").read_text())
    next(s for s in manifest["stages"] if s["name"] == "frame")["sha256"] = sha256_file(model_copy / "frame.onnx")
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    result = run(*render_args(tiny_inputs, model_copy, tiny_inputs / "targets.npy", tmp_path / "o.mp4"))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "frame.onnx: ONNX Runtime cannot load this graph" in line and "re-export" in line


def test_verified_hashes_are_remembered_per_file(model_copy, monkeypatch, tmp_path):
    from poserender import manifest as manifest_module
    from poserender.manifest import read_manifest

    monkeypatch.setenv("POSERENDER_CACHE", str(tmp_path / "cache"))
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    read_manifest(model_copy)
    assert sorted(hashed) == ["frame.onnx", "source.onnx"]
    read_manifest(model_copy)
    assert len(hashed) == 2                                 # unchanged files: not read again
    (model_copy / "frame.onnx").touch()                     # a new mtime: read again
    read_manifest(model_copy)
    assert hashed[2:] == ["frame.onnx"]


# -- 8. a truncated source image ------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_truncated_source_image_is_refused(tiny_inputs, tiny_model, tmp_path, suffix):
    image = cv2.imread(str(tiny_inputs / "source.png"))
    ok, data = cv2.imencode(suffix, image)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data.tobytes()[: len(data) // 2])
    result = run("render", tiny_model, "--source", cut, "--source-keypoints", tiny_inputs / "source.npy",
                 "--keypoints", tiny_inputs / "targets.npy", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(cut) in line and "truncated" in line
    assert not (tmp_path / "o.mp4").exists()
