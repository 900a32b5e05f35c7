"""A bounded, seeded fuzz of a live stream, through a real `poserender render` process on stdin and
on the TCP listener (loopback only): random mixtures of valid records, undecodable bytes, values
beyond the accepted range, NaN, index jumps below and above --max-gap, records that go
backwards, over-long lines, and (TCP) probe connections before the client.

Every case checks the stream's invariants against a model of the documented policy
(docs/streaming.md): the process ends by itself, exit 0; every valid record is rendered exactly
once, in order, at its place; bad records with an index are held there, short gaps are held,
long jumps and undecodable lines take no place; the frame counts reconcile; the raw output holds
exactly the frames the summary counts."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from poserender.keypoints import OPENPOSE_TO_122

FRAME_BYTES = 64 * 64 * 3
MAX_GAP = 4
LINE_LIMIT = 1 << 20


def record(pose, frame, bad=None):
    rows = np.zeros((137, 3))
    rows[list(OPENPOSE_TO_122), :2] = pose
    rows[list(OPENPOSE_TO_122), 2] = 1.0
    if bad == "range":
        rows[OPENPOSE_TO_122[7], 1] = 3e38
    elif bad == "nan":
        rows[OPENPOSE_TO_122[9], 0] = float("nan")
    return json.dumps({"frame": int(frame), "keypoints": rows.tolist()})


def make_case(seed: int, poses: np.ndarray):
    """(the byte chunks to send, the expected output as indices into ``poses``)."""
    rng = np.random.default_rng(seed)
    chunks, expected = [], []
    index, last_good, sent = 0, None, -1          # sent: the highest index sent so far
    for n in range(rng.integers(18, 30)):
        if n:
            roll = rng.random()
            if roll < 0.12:
                missing = int(rng.integers(1, MAX_GAP + 1))              # filled: held frames
                expected += [last_good] * missing
                index += missing
            elif roll < 0.18:
                index += int(rng.integers(MAX_GAP + 1, 10 ** 7))          # a discontinuity: not filled
        noise = rng.random()
        if noise < 0.12:
            chunks.append(rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes() + b"\n")
        elif noise < 0.16:
            chunks.append(b"z" * (LINE_LIMIT + int(rng.integers(1, 5000))) + b"\n")
        elif noise < 0.22 and n:                  # an index already passed: skipped as order
            chunks.append((record(poses[0], max(0, sent - int(rng.integers(0, 3)))) + "\n").encode())
        kind = None if n == 0 else rng.choice([None] * 8 + ["range", "nan"])
        pose_id = int(rng.integers(0, len(poses)))
        chunks.append((record(poses[pose_id], index, kind) + "\n").encode())
        if kind is None:
            last_good = pose_id
        expected.append(last_good)
        sent = index
        index += 1
    return chunks, expected


def render_cmd(tiny_inputs, tiny_model, keypoints):
    return [sys.executable, "-m", "poserender.cli", "render", str(tiny_model), "--source",
            str(tiny_inputs / "source.png"), "--source-keypoints", str(tiny_inputs / "source.npy"), "--keypoints",
            keypoints, "-o", "-", "--batch", "3", "--max-gap", str(MAX_GAP), "--idle-timeout", "20"]


@pytest.fixture(scope="module")
def pose_frames(tiny_inputs, tiny_model):
    """Each of the tiny clip's 6 poses rendered alone, through the file path."""
    proc = subprocess.run(render_cmd(tiny_inputs, tiny_model, str(tiny_inputs / "targets.npy")),
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return np.load(tiny_inputs / "targets.npy"), np.frombuffer(proc.stdout, np.uint8).reshape(-1, 64, 64, 3)


def check(stdout: bytes, stderr: str, returncode: int, expected, frames_by_pose):
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = next(ln for ln in stderr.splitlines() if ln.startswith("frames: in "))
    numbers = [int(w) for w in summary.replace(";", " ").split() if w.isdigit()]
    frames_in, out, dropped, skipped = numbers[:4]
    assert "= out" in summary and frames_in == out + dropped + skipped and dropped == 0, summary
    assert out == len(expected), (summary, len(expected))
    assert len(stdout) == out * FRAME_BYTES
    got = np.frombuffer(stdout, np.uint8).reshape(-1, 64, 64, 3)
    for k, pose_id in enumerate(expected):
        assert np.array_equal(got[k], frames_by_pose[pose_id]), f"output frame {k} is not pose {pose_id}"


@pytest.mark.parametrize("seed", range(5))
def test_fuzz_stdin(tiny_inputs, tiny_model, pose_frames, seed):
    poses, frames = pose_frames
    chunks, expected = make_case(seed, poses)
    proc = subprocess.run(render_cmd(tiny_inputs, tiny_model, "-"), input=b"".join(chunks), capture_output=True,
                          timeout=180)
    check(proc.stdout, proc.stderr.decode(), proc.returncode, expected, frames)


@pytest.mark.parametrize("seed", range(100, 103))
def test_fuzz_tcp_with_probes_and_disconnects(tiny_inputs, tiny_model, pose_frames, seed):
    poses, frames = pose_frames
    chunks, expected = make_case(seed, poses)
    rng = np.random.default_rng(seed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(render_cmd(tiny_inputs, tiny_model, f"tcp://127.0.0.1:{port}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    errors = []

    def connect():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=10)
            except ConnectionRefusedError:
                time.sleep(0.05)
        raise AssertionError("the listener never accepted")

    def client():
        try:
            for _ in range(int(rng.integers(1, 4))):          # probes: connect, maybe babble, disconnect
                probe = connect()
                if rng.random() < 0.5:
                    probe.sendall(rng.integers(0, 256, 300, dtype=np.uint8).tobytes().replace(b"\n", b" ") + b"\n")
                probe.close()
            conn = connect()
            for chunk in chunks:
                conn.sendall(chunk)
            conn.close()                                      # the client's disconnect ends the stream
        except Exception as exc:                              # reported by the test, not lost in the thread
            errors.append(repr(exc))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
        thread.join(timeout=30)
    assert not errors, errors
    check(stdout, stderr.decode(), proc.returncode, expected, frames)
