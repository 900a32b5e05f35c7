"""The browser preview (``render --serve 127.0.0.1:8080``): the live frames and figures over HTTP.

===================  ===========================================================================
path                 what
===================  ===========================================================================
``/``                a small page: the live frames and the fps / latency figures, polled twice a second
``/stream.mjpg``     the frames as they are written, MJPEG (``multipart/x-mixed-replace``, JPEG each)
``/frame.jpg``       the newest frame
``/stats.json``      ``{"frames", "fps", "latency_ms": {"last", "p50", "p99"}, "ended"}``
===================  ===========================================================================

The server listens on the address the user names; ``127.0.0.1`` (or ``localhost``, ``[::1]``)
keeps it on this machine. Any other address is allowed because the user named it, and the summary
says that the preview was reachable beyond this machine. A port of 0 picks a free one; the URL is
logged when the server starts. The frames are JPEG-encoded on the writer's thread when handed
over (:meth:`PreviewServer.publish`, part of the frame's ``write`` latency) and sent to each viewer
by its own thread; a slow viewer skips frames, it never holds up the stream; a viewer that goes
away ends its own thread only.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from ..errors import UserError
from .live import is_loopback

BOUNDARY = "poserenderframe"
JPEG_QUALITY = 80

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>poserender live</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:1em}
img{image-rendering:pixelated;min-width:256px;border:1px solid #444}td{padding:0 .8em 0 0}</style></head>
<body><h3>poserender live preview</h3>
<img id="live" src="/stream.mjpg" alt="live frames">
<table><tr><td>frames</td><td id="frames">-</td></tr>
<tr><td>fps</td><td id="fps">-</td></tr>
<tr><td>latency p50 / p99 ms</td><td id="latency">-</td></tr>
<tr><td>state</td><td id="state">waiting</td></tr></table>
<script>
async function poll() {
  try {
    const s = await (await fetch('/stats.json', {cache: 'no-store'})).json();
    document.getElementById('frames').textContent = s.frames;
    document.getElementById('fps').textContent = s.fps === null ? '-' : s.fps.toFixed(1);
    const l = s.latency_ms;
    document.getElementById('latency').textContent = l ? l.p50.toFixed(1) + ' / ' + l.p99.toFixed(1) : '-';
    document.getElementById('state').textContent = s.ended ? 'ended' : 'live';
  } catch (e) { document.getElementById('state').textContent = 'disconnected'; }
}
setInterval(poll, 500); poll();
</script></body></html>
"""


def parse_serve_address(address: str) -> Tuple[str, int, bool]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port, loopback)."""
    host, sep, port = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UserError(f"--serve {address}: expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one)")
    return host, int(port), is_loopback(host)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class PreviewServer:
    """An HTTP server on its own thread; ``publish(frame)`` (BGR uint8) hands it each written frame;
    ``figures`` (set by the caller, e.g. the pipeline's ``LatencyMeter.live``) gives the latency."""

    def __init__(self, address: str, log: Callable[[str], None] = lambda message: None):
        self.host, port, self.loopback = parse_serve_address(address)
        self.figures: Callable[[], Dict[str, Any]] = lambda: {"latency_ms": None}
        self._jpeg: Optional[bytes] = None
        self._seq = 0
        self._times: deque = deque(maxlen=50)
        self._cond = threading.Condition()
        self._ended = False
        self._closed = threading.Event()
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._httpd = server_class((self.host, port), self._handler())
        except OSError as exc:
            raise UserError(f"--serve {address}: cannot listen there ({exc.strerror or exc}); expected a free port "
                            "on an address of this machine, e.g. 127.0.0.1:8080") from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="preview-server", daemon=True)
        self._thread.start()
        log(f"live preview: {self.url}" + ("" if self.loopback else
                                           f" (listening on {self.host}: reachable beyond this machine)"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def note(self) -> str:
        where = "loopback only" if self.loopback else f"listening on {self.host}: reachable beyond this machine"
        return f"live preview served at {self.url} ({where}), {self._seq} frames"

    def publish(self, frame: np.ndarray) -> None:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return
        with self._cond:
            self._jpeg, self._seq = data.tobytes(), self._seq + 1
            self._times.append(time.perf_counter())
            self._cond.notify_all()

    def stats(self) -> Dict[str, Any]:
        with self._cond:
            times, frames = list(self._times), self._seq
        fps = None if len(times) < 2 else (len(times) - 1) / max(times[-1] - times[0], 1e-9)
        figures = self.figures() or {}
        return {"frames": frames, "fps": None if fps is None else round(fps, 2),
                "latency_ms": figures.get("latency_ms"), "ended": self._ended}

    def end(self) -> None:
        """The stream ended: viewers keep the last frame, the page says so."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        self.end()
        self._closed.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next(self, seen: int, timeout: float = 0.5) -> Tuple[Optional[bytes], int]:
        with self._cond:
            if self._seq == seen and not self._closed.is_set():
                self._cond.wait(timeout)
            return (self._jpeg, self._seq) if self._seq != seen else (None, seen)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:      # no request log on stderr
                pass

            def _send(self, body: bytes, kind: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path in ("/", "/index.html"):
                        self._send(PAGE.encode(), "text/html; charset=utf-8")
                    elif path == "/stats.json":
                        self._send(json.dumps(server.stats()).encode(), "application/json")
                    elif path == "/frame.jpg":
                        jpeg = server._jpeg
                        if jpeg is None:
                            self._send(b"no frame yet\n", "text/plain", 503)
                        else:
                            self._send(jpeg, "image/jpeg")
                    elif path == "/stream.mjpg":
                        self._stream()
                    else:
                        self._send(b"not found\n", "text/plain", 404)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass        # the viewer went away: its thread ends, nothing else does

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = -1
                while not server._closed.is_set():
                    jpeg, seen = server._next(seen)
                    if jpeg is None:
                        continue
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     "\r\n\r\n".encode() + jpeg + b"\r\n")
                    self.wfile.flush()

        return Handler
