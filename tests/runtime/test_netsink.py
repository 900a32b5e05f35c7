"""Live outputs chosen by the -o URL (runtime/netsink.py): UDP received and decoded by PyAV with
every frame, in order; a TCP receiver that goes away mid-stream (a counted end, no traceback);
receivers that are not there (one line before any frame); the FLV path with the low-latency
encoder (no B-frames: each packet decodes to a frame at once); audio; bad URLs. Every server here
binds a free loopback port, is bounded in time and is closed by the test."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.errors import UserError
from poserender.runtime.netsink import LiveStreamSink, LiveTarget, parse_live_url
from poserender.runtime.sinks import open_sink
from poserender.runtime.sources import ArraySource

from .test_pipeline import SlowLiveSource, adapter, factory, poses, run  # noqa: F401 (fixture)
from .test_sinks import make_tone
from .test_stream_cli import base_args, json_lines

SIZE = 32


class UdpReceiver:
    """A datagram socket on a free loopback port, collecting everything sent to it on a thread."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.data, self.datagrams = bytearray(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.data += chunk
            self.datagrams += 1

    def close(self, settle: float = 0.3):
        time.sleep(settle)          # loopback datagrams still in the kernel's buffer
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def decoded(self):
        with av.open(io.BytesIO(bytes(self.data)), format="mpegts") as container:
            types = sorted(s.type for s in container.streams)
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        return types, frames


@pytest.fixture
def udp_receiver():
    receiver = UdpReceiver()
    yield receiver
    receiver.close(settle=0)


def test_udp_output_is_received_and_decoded_frame_for_frame(adapter, udp_receiver):
    n = 24
    targets = poses(n)
    targets[:, 1, 0] = 20 + 9 * np.arange(n)       # frame t is filled with 20 + 9 t (far from black)
    sink = open_sink(f"udp://127.0.0.1:{udp_receiver.port}", fps=25, frame_size=(SIZE, SIZE))
    report, _ = run(adapter, ArraySource(targets, 25), sink=sink, batch=4)
    udp_receiver.close()
    assert report.counts.frames_out == n and report.sink.frames_written == n
    assert "MPEG-TS over UDP" in report.sink.note and "not loopback" not in report.sink.note
    types, frames = udp_receiver.decoded()
    assert types == ["video"] and len(frames) == n
    values = [int(round(f.mean())) for f in frames]
    assert all(abs(v - (20 + 9 * t)) <= 6 for t, v in enumerate(values)), values   # each frame, in order
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert report.latency.frames == n


def test_udp_output_through_the_cli_with_audio(tiny_inputs, tiny_model, tmp_path, udp_receiver):
    tone = make_tone(tmp_path / "tone.wav", seconds=1.0)
    metrics = tmp_path / "m.json"
    result = CliRunner().invoke(main, [str(a) for a in base_args(
        tiny_inputs, tiny_model, tiny_inputs / "targets.npy", f"udp://127.0.0.1:{udp_receiver.port}",
        "--audio", tone, "--fps", "25", "--metrics", metrics)], catch_exceptions=False)
    udp_receiver.close()
    assert result.exit_code == 0, result.output
    assert f"sent 6 frames as MPEG-TS over UDP to udp://127.0.0.1:{udp_receiver.port}" in result.output
    assert "latency ms" in result.output
    types, frames = udp_receiver.decoded()
    assert types == ["audio", "video"] and len(frames) == 6
    data = json.loads(metrics.read_text())
    assert data["output"]["format"] == "live" and data["latency"]["frames"] == 6


class TcpReceiver:
    """Listens on a free loopback port, accepts one connection, reads ``keep`` bytes, then closes
    it (a viewer that goes away)."""

    def __init__(self, keep: int):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(30)
        self.port, self.keep, self.received = self.server.getsockname()[1], keep, 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            while self.received < self.keep:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                self.received += len(chunk)

    def close(self):
        self.server.close()
        self._thread.join(timeout=5)


def test_a_tcp_receiver_that_goes_away_ends_the_stream_as_a_counted_end(adapter):
    receiver = TcpReceiver(keep=2000)
    try:
        sink = open_sink(f"tcp://127.0.0.1:{receiver.port}", fps=25, frame_size=(SIZE, SIZE))
        started = time.monotonic()
        report, _ = run(adapter, SlowLiveSource(500, 0.01), sink=sink, batch=1)
        assert time.monotonic() - started < 30          # it ended with the receiver, not with the input
    finally:
        receiver.close()
    counts = report.counts
    assert counts.reconciles() and counts.frames_out < 500
    assert counts.drop_reasons["receiver-gone"] >= 1
    assert "the receiver went away after" in report.sink.note


def test_a_receiver_that_goes_away_through_the_cli_is_one_line_and_exit_0(tiny_inputs, tiny_model, tmp_path):
    targets = np.load(tiny_inputs / "targets.npy")
    lines = json_lines(np.concatenate([targets] * 50))            # 300 frames at 50 fps: 6 s
    receiver = TcpReceiver(keep=3000)
    try:
        result = CliRunner().invoke(main, [str(a) for a in base_args(
            tiny_inputs, tiny_model, "-", f"tcp://127.0.0.1:{receiver.port}", "--realtime", "--fps", "50")],
            input="\n".join(lines) + "\n")
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    gone = [line for line in result.output.splitlines() if "the receiver went away" in line]
    assert len(gone) == 1 and gone[0].startswith("output: sent ")
    assert "frames: in " in result.output and "MISMATCH" not in result.output
    assert "receiver-gone" in result.output


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["tcp", "rtmp", "rtsp"])
def test_a_receiver_that_is_not_there_is_one_line_before_any_frame(tiny_inputs, tiny_model, tmp_path, scheme):
    port = _free_port()             # nothing listens there
    url = f"{scheme}://127.0.0.1:{port}" + ("/live/key" if scheme != "tcp" else "")
    result = CliRunner().invoke(main, [str(a) for a in base_args(tiny_inputs, tiny_model,
                                                                  tiny_inputs / "targets.npy", url)])
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"poserender: error: -o {url}: cannot reach the receiver (")
    assert "rendered" not in result.output


HANG_UP = r"""
import socket
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
server.settimeout(20)
conn, _ = server.accept()
conn.settimeout(20)
conn.recv(100)
conn.close()
"""


def test_an_rtmp_server_that_hangs_up_during_the_handshake_is_one_line():
    # in another process: FFmpeg's RTMP handshake holds the GIL, a server thread here could not answer
    server = subprocess.Popen([sys.executable, "-c", HANG_UP], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with pytest.raises(UserError, match=r"cannot reach the receiver"):
            open_sink(f"rtmp://127.0.0.1:{port}/live/key", fps=25, frame_size=(SIZE, SIZE))
    finally:
        server.kill()
        server.wait(timeout=5)
        server.stdout.close()


def test_flv_with_the_low_latency_encoder_has_no_decoder_delay(tmp_path):
    """The rtmp:// path (FLV, global header) written to a file: every packet decodes to its frame
    at once (no B-frames, no reordering), keyframes every second."""
    path = tmp_path / "out.flv"
    target = LiveTarget(str(path), "rtmp://test", "rtmp", "127.0.0.1", None, True)
    sink = LiveStreamSink(target, Fraction(25), (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(60):
        sink.write(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8))
    sink.close()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes, decoded = 0, 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            keyframes += packet.is_keyframe
            frames = stream.codec_context.decode(packet)
            assert len(frames) == 1, "a packet that does not decode at once means encoder or decoder delay"
            decoded += 1
    assert decoded == 60 and keyframes == 3


@pytest.mark.parametrize("url, message", [
    ("srt://127.0.0.1:9000", "unknown live output scheme 'srt://'"),
    ("udp://127.0.0.1", "expected udp://HOST:PORT"),
    ("udp://:9000", "expected udp://HOST:PORT"),
    ("tcp://127.0.0.1:notaport", "expected tcp://HOST:PORT"),
])
def test_bad_live_urls_are_user_errors(url, message):
    with pytest.raises(UserError, match=message):
        parse_live_url(url)


def test_the_address_is_checked_for_loopback_and_a_named_remote_one_is_said():
    assert parse_live_url("udp://127.0.0.1:5000").loopback and parse_live_url("udp://[::1]:5000").loopback
    assert parse_live_url("udp://localhost:5000").loopback
    remote = parse_live_url("udp://192.0.2.7:5000")         # TEST-NET-1: never routed
    assert not remote.loopback and remote.url.endswith("?pkt_size=1316")
    sink = open_sink("udp://192.0.2.7:5000", fps=25, frame_size=(SIZE, SIZE))
    try:
        assert "not loopback: the stream left this machine for 192.0.2.7" in sink.note()
    finally:
        sink.abort()
