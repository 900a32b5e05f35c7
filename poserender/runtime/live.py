"""Live keypoint sources: JSON lines on a stream (stdin ``-``) and a TCP listener on a loopback
address (``tcp://127.0.0.1:PORT``; contract in :class:`TcpSource`).

Each line is parsed by :func:`parse_record`, which never raises: a line that is not a keypoint
record is a ``decode`` bad frame *without an index* (it cannot take the place of a real record),
and a record whose points are wrong is a bad frame at its index. Lines are read with a bound on
their length (:data:`MAX_LINE_BYTES`, :class:`LineReader`): a longer one is a ``decode`` bad
frame, and its bytes are dropped as they arrive, never held in memory.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import select
import socket
import threading
import time
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import BadFrame, UserError
from .sources import Frame, FrameSource, OpenPoseFolderSource, _detail, _openpose_doc_frame, _rows_to_frame

LIVE_RECORD = '{"frame": i, "keypoints": [[x, y, c], ...]} or an OpenPose document {"people": [...]}'
#: longest accepted line of a live stream (a 137-point record is ~8 KB; an OpenPose document with
#: a crowd well under this); a longer line is a ``decode`` bad frame
MAX_LINE_BYTES = 1 << 20


def _unplaced(reason: str, timestamp: float, where: str) -> Frame:
    """A line that could not be decoded far enough to know its frame: it takes no index."""
    return Frame(None, timestamp, bad=BadFrame(reason, kind="decode", path=where))


def parse_record(line: Union[str, bytes], index: int, timestamp: float, where: str = "<stream>") -> Frame:
    """One line of a live stream -> a Frame; ``index`` is used when the record has no ``frame``.

    Accepted: ``{"frame": i, "keypoints": [[x, y, c], ...]}`` (c optional, x/y source-image
    pixels, as many points as the model's layout: 137 OpenPose points for pose2img) or an
    OpenPose document ``{"people": [...]}``; an optional ``"t"`` is the time the sender took or
    sent the pose, in seconds since the Unix epoch on a clock shared with the renderer (it starts
    the frame's glass-to-glass latency; runtime/latency.py); it becomes ``sent`` and ``timestamp``.
    A line that is not such a record (not UTF-8, not JSON, not an object, a ``frame`` that is not
    an integer >= 0, neither ``keypoints`` nor ``people``) is a ``decode`` bad frame with no index;
    a record with a usable index whose points are wrong is a bad frame at that index. Never raises.
    """
    try:
        record = json.loads(line)
    except Exception as exc:        # not UTF-8, not JSON, nested too deep, a number too large
        return _unplaced(f"undecodable line ({_detail(exc)})", timestamp, where)
    if not isinstance(record, dict):
        return _unplaced(f"a JSON {type(record).__name__}; expected {LIVE_RECORD}", timestamp, where)
    if "keypoints" not in record and "people" not in record:
        return _unplaced(f"a JSON object without 'keypoints' or 'people'; expected {LIVE_RECORD}", timestamp, where)
    frame_no = record.get("frame", index)
    if isinstance(frame_no, bool) or not isinstance(frame_no, int) or frame_no < 0:
        return _unplaced(f"'frame' is {str(frame_no)[:40]!r}; expected an integer >= 0", timestamp, where)
    stamp = record.get("t", timestamp)
    sent = None
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        stamp = timestamp
    elif "t" in record:
        sent = float(stamp)
    frame = _parse_points(record, frame_no, float(stamp), where)
    frame.sent = sent
    return frame


def _parse_points(record: dict, frame_no: int, stamp: float, where: str) -> Frame:
    if "people" in record:
        return _openpose_doc_frame(record, frame_no, stamp, where)
    points = record.get("keypoints")
    try:
        rows = np.asarray(points, dtype=np.float64)
    except Exception:               # ragged, not numbers, integers too large for a float
        rows = None
    if rows is None or rows.ndim != 2 or rows.shape[1] not in (2, 3):
        return Frame(frame_no, stamp, bad=BadFrame(f"'keypoints' is not a list of [x, y, c] points; expected "
                                                   f"{LIVE_RECORD}", kind="decode", frame=frame_no, path=where))
    if rows.shape[1] == 2:
        rows = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    return _rows_to_frame(rows.T, frame_no, stamp, where)


class TooLong:
    """What :class:`LineReader` yields in place of a line longer than its limit."""

    def __init__(self, size: int):
        self.size = size


class LineReader:
    """Split a byte stream into lines of at most ``limit`` bytes without ever holding more.

    :meth:`feed` takes the next chunk (b"" at the end) and yields the complete lines (bytes,
    without the newline) and a :class:`TooLong` for each line over the limit, whose bytes are
    dropped as they arrive.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES):
        self.limit = limit
        self._buffer = bytearray()
        self._skipped: Optional[int] = None     # bytes of an over-long line dropped so far

    def feed(self, chunk: bytes) -> Iterator[Union[bytes, TooLong]]:
        if not chunk:                           # end of input: whatever is left is the last line
            if self._skipped is not None:
                yield TooLong(self._skipped)
            elif self._buffer:
                yield bytes(self._buffer)
            self._buffer, self._skipped = bytearray(), None
            return
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._skipped is not None:
                self._skipped += len(piece)
            elif len(self._buffer) + len(piece) > self.limit:
                self._skipped = len(self._buffer) + len(piece)
                self._buffer = bytearray()
            else:
                self._buffer += piece
            if end < 0:
                return
            if self._skipped is not None:
                yield TooLong(self._skipped)
            else:
                yield bytes(self._buffer)
            self._buffer, self._skipped = bytearray(), None
            start = end + 1


class _Records:
    """Lines -> Frames, numbering records without a ``frame`` field: the next index after the
    highest one seen. Blank lines are ignored; an over-long line is an unplaced ``decode`` frame."""

    def __init__(self, where: str, limit: int):
        self.where, self.limit = where, limit
        self.started, self.next_index = time.monotonic(), 0

    def frame(self, line: Union[bytes, TooLong]) -> Optional[Frame]:
        stamp = time.monotonic() - self.started
        if isinstance(line, TooLong):
            return _unplaced(f"a line of {line.size} bytes or more, over the limit of {self.limit}; expected one "
                             "JSON record per line", stamp, self.where)
        if not line.strip():
            return None
        frame = parse_record(line, self.next_index, stamp, self.where)
        if frame.index is not None:
            self.next_index = max(self.next_index, frame.index) + 1
        return frame


class JsonLinesSource(FrameSource):
    """One JSON object per line from a stream (stdin for ``-``), each line at most ``max_line``
    bytes; blank lines are ignored."""

    live = True

    def __init__(self, stream: IO, description: str = "<stdin>", max_line: int = MAX_LINE_BYTES):
        self.stream, self.description, self.max_line = stream, description, max_line
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        binary = getattr(self.stream, "buffer", self.stream)
        read = getattr(binary, "read1", None) or binary.read
        reader, records = LineReader(self.max_line), _Records(self.description, self.max_line)
        while not self._stop.is_set():
            chunk = read(1 << 16)
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            for line in reader.feed(chunk):
                frame = records.frame(line)
                if frame is not None:
                    yield frame
            if not chunk:
                return


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) stays on this machine; a name other than
    localhost may resolve anywhere, so it is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_address(spec: str) -> Tuple[str, int]:
    """``tcp://127.0.0.1:PORT`` -> (host, port); only loopback hosts are accepted (no network exposure)."""
    match = re.fullmatch(r"tcp://(\[[^\]]+\]|[^:/]+):(\d+)", spec)
    if not match:
        raise UserError(f"keypoint address {spec!r}; expected tcp://127.0.0.1:PORT")
    host, port = match.group(1).strip("[]"), int(match.group(2))
    if not is_loopback(host) or port > 65535:
        raise UserError(f"keypoint address {spec!r}: the listener only binds a loopback address "
                        "(127.0.0.1, ::1 or localhost) and a port 0-65535; expected tcp://127.0.0.1:PORT")
    return host, port


class TcpSource(FrameSource):
    """A listener on a loopback address, serving one keypoint stream (JSON lines) from one client.

    The contract:

    * The socket is bound when the source is created (a busy port fails before any output
      exists); ``port`` is the bound port (useful with port 0). Only loopback addresses.
    * Connections are accepted until one of them sends a keypoint record (a line that parses as a
      record with a frame index): that connection is the stream's client. Connections that close,
      or stay silent for ``idle_timeout`` seconds, before sending one (health probes, port scans)
      are dropped and the listener keeps waiting; their undecodable lines count as ``decode`` bad
      frames.
    * One stream at a time: once the client is chosen, every other connection (earlier or later)
      gets one line, ``poserender: busy: ...``, and is closed.
    * The client's disconnect ends the stream, and so does ``idle_timeout`` seconds without a
      byte from it (a stalled client cannot hold the renderer forever).
    * Lines longer than ``max_line`` bytes are ``decode`` bad frames; their bytes are dropped as
      they arrive.
    """

    live = True
    BUSY = b"poserender: busy: this listener serves one keypoint stream at a time\n"

    def __init__(self, spec: str, log: Callable[[str], None] = lambda message: None, idle_timeout: float = 30.0,
                 max_line: int = MAX_LINE_BYTES):
        host, port = loopback_address(spec)
        if not idle_timeout > 0:
            raise UserError(f"--idle-timeout {idle_timeout!r}; expected a positive number of seconds")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = socket.socket(family, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._server.bind((host, port))
        except OSError as exc:
            self._server.close()
            raise UserError(f"cannot listen on {spec} ({exc.strerror or exc})") from None
        self._server.listen(8)
        self._server.setblocking(False)
        self.port = self._server.getsockname()[1]
        self.description = f"tcp://{host}:{self.port}"
        self.idle_timeout, self.max_line, self.log = idle_timeout, max_line, log
        self._stop = threading.Event()
        self._pending: Dict[socket.socket, Tuple[LineReader, float]] = {}   # connection -> (lines, last data)
        self._client: Optional[socket.socket] = None
        self._probes = 0
        log(f"listening for keypoints on {self.description} (one JSON object per line)")

    def close(self) -> None:
        self._stop.set()
        for sock in [*self._pending, self._client, self._server]:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self._pending.clear()

    def _drop(self, conn: socket.socket, message: Optional[bytes] = None) -> None:
        self._pending.pop(conn, None)
        try:
            if message:
                conn.sendall(message)
            conn.close()
        except OSError:
            pass

    def _probe_gone(self, why: str) -> None:
        self._probes += 1
        if self._probes == 1:
            self.log(f"a connection {why} before sending a keypoint record (a probe?); still listening "
                     "(further ones are not logged)")

    def __iter__(self) -> Iterator[Frame]:
        records = _Records(self.description, self.max_line)
        try:
            while not self._stop.is_set():
                watched = [self._server, *self._pending] if self._client is None else [self._server, self._client]
                readable, _, _ = select.select(watched, [], [], 0.2)
                now = time.monotonic()
                for sock in readable:
                    if sock is self._server:
                        self._accept(now)
                        continue
                    try:
                        chunk = sock.recv(1 << 16)
                    except OSError:
                        chunk = b""
                    lines = self._client_lines if sock is self._client else self._pending[sock][0]
                    if sock is not self._client:
                        self._pending[sock] = (lines, now)
                    else:
                        self._client_seen = now
                    for line in lines.feed(chunk):
                        frame = records.frame(line)
                        if frame is None:
                            continue
                        if self._client is None and frame.index is not None:
                            self._choose(sock)
                        yield frame
                    if not chunk:
                        if sock is self._client:
                            return                      # the client is done: end of the stream
                        self._drop(sock)
                        self._probe_gone("closed")
                if self._client is not None:
                    if now - self._client_seen > self.idle_timeout:
                        self.log(f"no data from the client for {self.idle_timeout:g} s (--idle-timeout); "
                                 "ending the stream")
                        return
                else:
                    for conn, (_, seen) in list(self._pending.items()):
                        if now - seen > self.idle_timeout:
                            self._drop(conn)
                            self._probe_gone(f"stayed silent for {self.idle_timeout:g} s")
        except (OSError, ValueError):       # a socket closed under us by close(): end of input
            return

    def _accept(self, now: float) -> None:
        try:
            conn, _ = self._server.accept()
        except (BlockingIOError, InterruptedError):
            return
        if self._client is not None:
            self._drop(conn, self.BUSY)
            return
        conn.setblocking(True)
        self._pending[conn] = (LineReader(self.max_line), now)

    def _choose(self, conn: socket.socket) -> None:
        self._client_lines, self._client_seen = self._pending.pop(conn)
        self._client = conn
        for other in list(self._pending):
            self._drop(other, self.BUSY)


def open_source(spec: str, open_file: Callable[[Path, float], FrameSource], fps: float, follow: bool = False,
                idle_seconds: float = 10.0, log: Callable[[str], None] = lambda message: None,
                stdin: Optional[IO] = None, idle_timeout: float = 30.0) -> FrameSource:
    """The source for a ``--keypoints`` argument: ``-`` (JSON lines on stdin), ``tcp://HOST:PORT``
    (a loopback listener), a folder to ``follow``, or a file/folder the model family reads
    (``open_file``, e.g. .npz/.npy/OpenPose JSON for pose2img)."""
    if spec == "-":
        import sys

        return JsonLinesSource(stdin if stdin is not None else sys.stdin, "<stdin>")
    if spec.startswith("tcp://"):
        return TcpSource(spec, log, idle_timeout=idle_timeout)
    path = Path(spec)
    if follow:
        if not path.is_dir():
            raise UserError("--follow watches a folder that OpenPose writes JSON files into; this is not a folder",
                            path)
        return OpenPoseFolderSource(path, fps, follow=True, idle_seconds=idle_seconds)
    return open_file(path, fps)
