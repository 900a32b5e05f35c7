"""The browser preview (runtime/serve.py, render --serve): the page, the MJPEG stream and the
figures over HTTP; the render command serving it; bad addresses; and the page in a real headless
Chromium driven over the W3C WebDriver protocol with urllib (skipped when chromium or chromedriver
are absent). Every server and chromedriver here binds a free loopback port, is bounded in time
and is stopped by the test."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.errors import UserError
from poserender.runtime.serve import BOUNDARY, PreviewServer, parse_serve_address

from .test_stream_cli import base_args

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", \
    shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def _frame(value, size=32):
    return np.full((size, size, 3), value, np.uint8)


@pytest.fixture
def server():
    srv = PreviewServer("127.0.0.1:0")
    try:
        yield srv
    finally:
        srv.close()


def test_the_page_the_figures_and_the_newest_frame(server):
    assert server.loopback and server.url == f"http://127.0.0.1:{server.port}/"
    status, kind, body = _get(server.url)
    assert status == 200 and kind.startswith("text/html") and b"/stream.mjpg" in body and b"/stats.json" in body
    stats = json.loads(_get(server.url + "stats.json")[2])
    assert stats == {"frames": 0, "fps": None, "latency_ms": None, "ended": False}
    server.figures = lambda: {"frames": 3, "latency_ms": {"last": 5.0, "p50": 4.0, "p99": 6.0}}
    for value in (10, 120, 240):
        server.publish(_frame(value))
        time.sleep(0.02)
    stats = json.loads(_get(server.url + "stats.json")[2])
    assert stats["frames"] == 3 and stats["fps"] > 0 and stats["latency_ms"]["p99"] == 6.0
    status, kind, jpeg = _get(server.url + "frame.jpg")
    import cv2
    assert kind == "image/jpeg" and abs(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).mean() - 240) < 4
    assert "loopback only" in server.note() and "3 frames" in server.note()


def test_the_mjpeg_stream_sends_each_new_frame(server):
    feeding = threading.Event()

    def feed():
        value = 0
        while not feeding.wait(0.04):
            value = (value + 37) % 256
            server.publish(_frame(value))
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "stream.mjpg", timeout=5) as response:
            assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            data = b""
            while data.count(b"--" + BOUNDARY.encode()) < 4:
                data += response.read1(65536)
    finally:
        feeding.set()
        thread.join(timeout=5)
    parts = data.split(b"--" + BOUNDARY.encode())[1:4]
    assert all(b"Content-Type: image/jpeg" in part for part in parts)
    assert len({part.split(b"\r\n\r\n", 1)[1] for part in parts}) == 3      # three different frames


@pytest.mark.parametrize("address", ["8080", "127.0.0.1", "127.0.0.1:http", ":8080", "127.0.0.1:70000"])
def test_bad_serve_addresses_are_user_errors(address):
    with pytest.raises(UserError, match="expected HOST:PORT"):
        parse_serve_address(address)


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match="cannot listen there"):
            PreviewServer(f"127.0.0.1:{taken.getsockname()[1]}")


def test_a_named_address_beyond_loopback_is_said():
    assert parse_serve_address("0.0.0.0:8080") == ("0.0.0.0", 8080, False)
    assert parse_serve_address("[::1]:8080") == ("::1", 8080, True)
    assert parse_serve_address("localhost:0")[2]


def test_render_serve_without_an_output(tiny_inputs, tiny_model):
    args = [str(a) for a in base_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", "x")]
    args = args[:args.index("-o")] + ["--serve", "127.0.0.1:0", "--realtime", "--fps", "25", "--late", "latest"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "live preview: http://127.0.0.1:" in result.output
    assert "loopback only), 6 frames" in result.output and "no output written (6 frames shown only)" in result.output


def test_render_needs_an_output_or_serve(tiny_inputs, tiny_model):
    args = [str(a) for a in base_args(tiny_inputs, tiny_model, tiny_inputs / "targets.npy", "x")]
    result = CliRunner().invoke(main, args[:args.index("-o")])
    assert result.exit_code == 2 and "no output: give -o" in result.output and "Traceback" not in result.output


# --- a real headless Chromium -------------------------------------------------------------------

class WebDriver:
    """chromedriver on a free loopback port, spoken to over plain W3C WebDriver HTTP (urllib)."""

    def __init__(self, timeout=30.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base, self.session = f"http://127.0.0.1:{self.port}", None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._call("GET", "/status")["value"]["ready"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.quit()
                pytest.fail("chromedriver did not start")
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                         "--no-first-run", "--window-size=640,480"]}}}}
        self.session = self._call("POST", "/session", caps)["value"]["sessionId"]

    def _call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def get(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source, *args):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": list(args)})["value"]

    def quit(self):
        try:
            if self.session is not None:
                self._call("DELETE", f"/session/{self.session}", timeout=10)
        except OSError:
            pass
        finally:
            self.process.kill()
            self.process.wait(timeout=10)


# the live image drawn into a canvas (same origin): its mean pixel value
IMAGE_MEAN = """
const img = document.getElementById('live');
if (!img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d'); g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0;
for (let i = 0; i < d.length; i += 4) s += d[i];
return s / (d.length / 4);
"""


@pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                    reason="needs chromium and chromedriver (e.g. /usr/bin/chromium, /usr/bin/chromedriver)")
def test_the_page_in_a_headless_chromium_shows_the_live_frames_and_figures(server):
    stop, count = threading.Event(), [0]

    def feed():     # a stream at 25 fps whose frames get brighter, with changing figures
        while not stop.wait(0.04):
            count[0] += 1
            server.publish(_frame((count[0] * 3) % 250, 64))
    server.figures = lambda: {"latency_ms": {"last": 1.0 + count[0], "p50": 2.0 + count[0], "p99": 3.0 + count[0]}}
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    driver = None
    try:
        driver = WebDriver()
        driver.get(server.url)

        def wait_for(read, accept, seconds=15):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                value = read()
                if accept(value):
                    return value
                time.sleep(0.1)
            pytest.fail(f"the page did not get there; last {value!r}")

        first = wait_for(lambda: driver.script(IMAGE_MEAN), lambda v: v is not None)
        wait_for(lambda: driver.script(IMAGE_MEAN), lambda v: v is not None and abs(v - first) > 5)
        text = "return document.getElementById('latency').textContent + '|' + document.getElementById('fps')" \
               ".textContent + '|' + document.getElementById('state').textContent"
        before = wait_for(lambda: driver.script(text), lambda v: not v.startswith("-") and v.endswith("|live"))
        after = wait_for(lambda: driver.script(text), lambda v: v != before and not v.startswith("-"))
        assert float(after.split("|")[1]) > 5          # the fps figure: frames arriving at about 25 fps
        shot = base64.b64decode(driver._call("GET", f"/session/{driver.session}/screenshot")["value"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        stop.set()
        feeder.join(timeout=5)
        if driver is not None:
            driver.quit()


def test_demo_live_serves_the_puppet_and_sends_udp(tmp_path, monkeypatch):
    from .test_netsink import UdpReceiver

    monkeypatch.setenv("POSERENDER_CACHE", str(tmp_path / "cache"))
    receiver = UdpReceiver()
    try:
        result = CliRunner().invoke(main, ["demo", "--live", "--frames", "20", "--serve", "127.0.0.1:0",
                                           "-o", f"udp://127.0.0.1:{receiver.port}"], catch_exceptions=False)
        receiver.close()
    finally:
        receiver.close(settle=0)
    assert result.exit_code == 0, result.output
    assert "live preview: http://127.0.0.1:" in result.output and "loopback only" in result.output
    assert "--late latest" in result.output and "sent " in result.output and "MPEG-TS over UDP" in result.output
    frames_sent = int(result.output.split("sent ")[1].split(" frames")[0])
    types, frames = receiver.decoded()
    assert types == ["video"] and len(frames) == frames_sent > 0


def test_demo_live_and_inputs_contradict(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--live", "--inputs", str(tmp_path / "i")])
    assert result.exit_code == 2 and "--live renders; --inputs renders nothing" in result.output
