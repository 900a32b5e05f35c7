"""SIGINT, SIGTERM and SIGHUP to a real `poserender` process: mid-render (mp4, png folder, raw
stdout) the first one finishes the frames being rendered and closes a complete output with exactly
the counted frames (exit 128 + signal); mid-export nothing is left behind; a stream with a large
backlog still stops at once."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

from poserender.keypoints import OPENPOSE_TO_122

FRAME_BYTES = 64 * 64 * 3
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def _default_signals():
    """The child starts with default dispositions even if the test runner ignores SIGHUP (nohup)."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "poserender.cli", *map(str, args)], preexec_fn=_default_signals,
                            **kwargs)


def render_args(tiny_inputs, model, keypoints, out, *extra):
    return ["render", model, "--source", tiny_inputs / "source.png", "--source-keypoints",
            tiny_inputs / "source.npy", "--keypoints", keypoints, "-o", out, *extra]


def partials(folder):
    return [p for p in folder.rglob("*") if "partial" in p.name]


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {seconds} s")


@pytest.fixture(scope="module")
def long_poses(tiny_inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.npy"
    np.save(path, np.concatenate([np.load(tiny_inputs / "targets.npy")] * 100))      # 600 frames
    return path


def counted(summary: str) -> int:
    """Frames the output holds by the summary: those rendered, plus (real time, --late hold) the
    copies of the previous frame written at missed ticks."""
    line = next(ln for ln in summary.splitlines() if ln.startswith("rendered "))
    rendered = int(line.split("rendered ")[1].split("/")[0])
    realtime = [ln for ln in summary.splitlines() if ln.startswith("real time ")]
    held = int(realtime[0].rsplit(" held", 1)[0].rsplit(" ", 1)[1]) if realtime else 0
    return rendered + held


@pytest.mark.parametrize("sink", ["mp4", "png", "raw"])
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_render_leaves_a_complete_output(tiny_inputs, tiny_model, long_poses, tmp_path, sink, signum):
    out = {"mp4": tmp_path / "o.mp4", "png": tmp_path / "frames", "raw": "-"}[sink]
    extra = ["--format", "png"] if sink == "png" else []
    proc = cli(*render_args(tiny_inputs, tiny_model, long_poses, out, "--realtime", "--fps", "20", *extra),
               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    received = bytearray()
    reader = None
    try:
        if sink == "raw":
            def read():
                while True:
                    chunk = proc.stdout.read1(1 << 16)
                    if not chunk:
                        return
                    received.extend(chunk)
            reader = threading.Thread(target=read)
            reader.start()
            wait_for(lambda: len(received) >= 3 * FRAME_BYTES, 60, "no raw frames arrived")
        elif sink == "mp4":
            wait_for(lambda: any(p.is_file() and p.stat().st_size > 0 for p in partials(tmp_path)), 60,
                     "no frames reached the partial mp4")
        else:
            wait_for(lambda: any(p.is_dir() and len(list(p.iterdir())) >= 3 for p in partials(tmp_path)), 60,
                     "no frames reached the partial folder")
        sent = time.monotonic()
        proc.send_signal(signum)
        if reader is None:
            stdout, stderr = proc.communicate(timeout=60)
        else:                       # stdout is the reader thread's: wait, then take stderr alone
            proc.wait(timeout=60)
            reader.join(timeout=10)
            stdout, stderr = b"", proc.stderr.read()
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
        if reader is not None:
            reader.join(timeout=10)
    stderr = stderr.decode()
    summary = stderr if sink == "raw" else stdout.decode()
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and f"interrupted ({signal.Signals(signum).name})" in stderr
    assert stopped_after < 15, stopped_after                 # a hang check; docs/streaming.md: about one batch
    written = counted(summary)
    assert 0 < written < 600 and "interrupted" in summary
    frames_line = next(ln for ln in summary.splitlines() if ln.startswith("frames: in "))
    assert "= out" in frames_line                            # in = out + dropped + skipped, reconciled
    if sink == "mp4":
        with av.open(str(out)) as container:
            assert sum(1 for _ in container.decode(video=0)) == written
    elif sink == "png":
        assert len(list(out.iterdir())) == written
    else:
        assert len(received) == written * FRAME_BYTES
    assert not partials(tmp_path)


def test_a_second_signal_stops_at_once_and_keeps_what_was_written(tiny_inputs, tiny_model, long_poses, tmp_path):
    out = tmp_path / "o.mp4"
    proc = cli(*render_args(tiny_inputs, tiny_model, long_poses, out, "--realtime", "--fps", "20"),
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in partials(tmp_path)), 60, "no frames written")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == counted(stdout)
    assert not partials(tmp_path)


def test_ctrl_c_stops_at_once_whatever_the_gap_backlog(tiny_inputs, tiny_model, tmp_path):
    """A record 50,000 frames ahead, with --max-gap allowing it, queues 50,000 held frames: the first
    Ctrl-C must not render them all."""
    poses = np.load(tiny_inputs / "targets.npy")
    lines = []
    for t, frame in ((0, 0), (1, 50_000)):
        rows = np.zeros((137, 3))
        rows[list(OPENPOSE_TO_122), :2] = poses[t]
        rows[list(OPENPOSE_TO_122), 2] = 1.0
        lines.append(json.dumps({"frame": frame, "keypoints": rows.tolist()}))
    proc = cli(*render_args(tiny_inputs, tiny_model, "-", tmp_path / "o.mp4", "--max-gap", "100000"),
               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("\n".join(lines) + "\n")
        proc.stdin.flush()                                   # stdin stays open: a live stream
        wait_for(lambda: any(p.stat().st_size > 0 for p in partials(tmp_path)), 60, "no frames written")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stopped_after < 10, stopped_after
    written = counted(stdout)
    assert 0 < written < 50_000
    with av.open(str(tmp_path / "o.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == written


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_export_leaves_nothing(tiny_checkpoint, tmp_path, signum):
    proc = cli("export", tiny_checkpoint, "-o", tmp_path / "art", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True)
    try:
        wait_for(lambda: partials(tmp_path), 120, "the export never started writing")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("poserender: error:")]
    assert lines == [f"poserender: error: interrupted ({signal.Signals(signum).name}); no partial output was kept"]
    assert "Traceback" not in stderr
    assert not list(tmp_path.iterdir())
