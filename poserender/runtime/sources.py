"""Keypoint sources: files and live inputs, all yielding :class:`Frame` records one at a time.

A source knows nothing about the model: it delivers each frame's points as the input holds them
(``xy`` (K, 2) float64 in source-image pixels and a validity mask), with the frame's index and a
timestamp. The model adapter then maps the points to its layout (OpenPose 137 -> 122, ...) and
onto its canvas. A frame the source cannot use is still delivered, as a bad frame carrying a
:class:`BadFrame` (kind ``decode``, ``shape``, ``nan``, ``range``, ``empty``), so the stream's
``--on-bad-frame`` policy decides what happens to it; only a problem with the whole input (a
missing file, an address that is not loopback) is a :class:`UserError`. Sources never fill
gaps: a frame carries the index its input gives it, and the policy (policy.py) decides what a
jump means. A line that cannot be decoded carries no index at all (``index`` None), so it never
takes the place of a real frame that names that index later.

Sources: a :class:`KeypointSequence` read from a file (``.npz``, ``.npy``, one OpenPose JSON),
a folder of OpenPose JSON parsed file by file (:class:`OpenPoseFolderSource`, ``follow=True`` to
pick up files as OpenPose writes them), JSON lines on a stream (stdin ``-``), and a TCP
listener on a loopback address (``tcp://127.0.0.1:PORT``, one JSON object per line; contract in
:class:`TcpSource`). Lines are read with a bound on their length (:data:`MAX_LINE_BYTES`): a
longer one is a ``decode`` bad frame, and its bytes are skipped, never held in memory.
"""
from __future__ import annotations

import abc
import dataclasses
import ipaddress
import json
import math
import re
import select
import socket
import threading
import time
from pathlib import Path
from typing import IO, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..errors import BadFrame, UserError
from ..keypoints.readers import KeypointSequence, openpose_json_files, openpose_rows, openpose_validity
from ..keypoints.validate import frame_problem

LIVE_RECORD = '{"frame": i, "keypoints": [[x, y, c], ...]} or an OpenPose document {"people": [...]}'
#: longest accepted line of a live stream (a 137-point record is ~8 KB; an OpenPose document with
#: a crowd well under this); a longer line is a ``decode`` bad frame
MAX_LINE_BYTES = 1 << 20
_OPENPOSE_NUMBER = re.compile(r"(\d+)_keypoints\.json$", re.IGNORECASE)


@dataclasses.dataclass
class Frame:
    """One keypoint frame as its source delivered it.

    ``index``: the frame number in the stream (a jump in it means frames are missing); None for
    a record that could not be decoded far enough to know its number (it takes no place).
    ``timestamp``: seconds, from the file's frame rate, a ``"t"`` field, or the arrival time.
    ``xy``: (K, 2) float64 source-image pixels and ``valid`` (K,) bool; None for a bad frame.
    ``bad``: why the source could not use the frame (its ``kind`` is counted per kind).
    """

    index: Optional[int]
    timestamp: float
    xy: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None
    bad: Optional[BadFrame] = None


class FrameSource(abc.ABC):
    """Iterable of :class:`Frame`; ``close()`` unblocks a source waiting for input.

    ``live`` sources deliver frames at their own pace (real-time mode does not pace them);
    ``length`` is the number of frames when known in advance (for the progress bar).
    """

    live = False
    length: Optional[int] = None
    description = "keypoints"

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        ...

    def close(self) -> None:
        """Nothing to release by default; live sources override it."""


class SequenceSource(FrameSource):
    """Frames of an in-memory :class:`KeypointSequence` (a ``.npz``, ``.npy`` or JSON file)."""

    def __init__(self, seq: KeypointSequence, fps: float):
        self.seq, self.fps, self.length = seq, fps, len(seq)
        self.description = seq.path

    def __iter__(self) -> Iterator[Frame]:
        seq = self.seq
        for t in range(len(seq)):
            index, bad = int(seq.index[t]), None
            if seq.bad[t]:
                bad = BadFrame(seq.bad_reasons.get(t, "bad frame"), kind=seq.bad_kinds.get(t, "nan"), frame=index,
                               path=seq.path)
            yield Frame(index, index / self.fps, seq.xy[t], seq.valid[t], bad)


class Coco18FileSource(SequenceSource):
    """PSC poses (18 COCO joints, PSC canvas pixels): a csv, a folder of csv files (PSC's layout),
    OpenPose JSON or .npy, read by :func:`poserender.keypoints.coco18.read_pose_stream`; for the
    PSC family's adapter. Frames failing the value check are ``nan``/``range`` bad frames,
    frames with nobody ``empty``."""

    def __init__(self, path: Path, fps: float):
        from ..keypoints.coco18 import read_pose_stream

        super().__init__(read_pose_stream(path), fps)
        self.description = str(path)


class ArraySource(FrameSource):
    """Frames from arrays or a generator of (K, 2) poses (tests, benchmarks, the demo, poses a
    family computes); ``valid`` (T, K) bool, else the OpenPose missing-joint rule."""

    def __init__(self, poses: Iterable[np.ndarray], fps: float, length: Optional[int] = None,
                 description: str = "array", valid: Optional[np.ndarray] = None):
        self.poses, self.fps, self.length, self.description, self.valid = poses, fps, length, description, valid

    def __iter__(self) -> Iterator[Frame]:
        for t, xy in enumerate(self.poses):
            xy = np.asarray(xy, dtype=np.float64)
            valid = openpose_validity(xy, None) if self.valid is None else np.asarray(self.valid[t], dtype=bool)
            yield Frame(t, t / self.fps, xy, valid)


def _rows_to_frame(rows: Optional[np.ndarray], index: int, timestamp: float, where: Optional[str] = None) -> Frame:
    """(3, K) x/y/confidence rows (None: nobody detected) -> a Frame with the OpenPose validity;
    values that fail the one value check (NaN/inf, out of range) make it a bad frame."""
    if rows is None:
        return Frame(index, timestamp, np.zeros((137, 2)), np.zeros(137, dtype=bool))
    xy = np.ascontiguousarray(rows[:2].T)
    problem = frame_problem(xy, rows[2])
    if problem is not None:
        return Frame(index, timestamp, bad=BadFrame(problem[1], kind=problem[0], frame=index, path=where))
    return Frame(index, timestamp, xy, openpose_validity(xy, rows[2]))


class OpenPoseFolderSource(FrameSource):
    """A folder of OpenPose JSON, one file per frame, parsed as the stream reaches it.

    Files are ordered by the OpenPose frame number (``*_<n>_keypoints.json``; natural order for
    other names), and a frame's index is its number counted from the first file's (a missing
    number is a jump for the gap policy); an unreadable file is a ``decode`` bad frame.
    With ``follow`` the folder is watched for new files (OpenPose still writing) until none has
    appeared for ``idle_seconds``; a file that does not parse yet is retried until it is
    ``settle_seconds`` old, since OpenPose may be half-way through writing it.
    """

    def __init__(self, folder: Path, fps: float, follow: bool = False, idle_seconds: float = 10.0,
                 poll_seconds: float = 0.05, settle_seconds: float = 1.0):
        self.folder, self.fps, self.follow = Path(folder), fps, follow
        self.idle_seconds, self.poll_seconds, self.settle_seconds = idle_seconds, poll_seconds, settle_seconds
        self.live = follow
        self.description = str(folder)
        self._stop = threading.Event()
        if not self.folder.is_dir():
            raise UserError("not a folder; expected a folder of OpenPose JSON files", folder)
        if not follow:
            self._files = openpose_json_files(self.folder)
            self.length = len(self._files)

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        if not self.follow:
            for index, path in self._files:
                if self._stop.is_set():
                    return
                yield self._read(path, index)
            return
        yield from self._follow()

    def _read(self, path: Path, index: int) -> Frame:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return Frame(index, index / self.fps, bad=BadFrame(f"cannot read ({_detail(exc)})", kind="decode",
                                                               frame=index, path=path))
        return _openpose_frame(text, index, index / self.fps, str(path))

    def _follow(self) -> Iterator[Frame]:
        seen, first_number, count = set(), None, 0
        last_new = time.monotonic()
        while not self._stop.is_set():
            fresh = self._new_files(seen)
            if not fresh:
                if time.monotonic() - last_new > self.idle_seconds:
                    return
                self._stop.wait(self.poll_seconds)
                continue
            for path, number in fresh:
                if not self._settled(path):
                    break           # OpenPose may still be writing it; look again on the next poll
                seen.add(path.name)
                last_new = time.monotonic()
                if number is not None:
                    first_number = number if first_number is None else first_number
                    index = number - first_number
                else:
                    index = count
                count += 1
                yield self._read(path, index)

    def _new_files(self, seen) -> List[Tuple[Path, Optional[int]]]:
        found = []
        for path in self.folder.iterdir():
            if path.suffix.lower() == ".json" and path.name not in seen:
                match = _OPENPOSE_NUMBER.search(path.name)
                found.append((path, int(match.group(1)) if match else None))
        return sorted(found, key=lambda item: (item[1] if item[1] is not None else -1, item[0].name))

    def _settled(self, path: Path) -> bool:
        """True once the file parses as JSON or is older than settle_seconds (then it is bad)."""
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return True
        except (OSError, UnicodeDecodeError, ValueError):
            try:
                return time.time() - path.stat().st_mtime > self.settle_seconds
            except OSError:
                return False


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _openpose_frame(text: str, index: int, timestamp: float, where: str) -> Frame:
    """An OpenPose JSON file's text -> a Frame at ``index``; anything wrong with it is a bad frame there."""
    try:
        doc = json.loads(text)
    except Exception as exc:        # invalid JSON, nesting too deep, ...
        return Frame(index, timestamp, bad=BadFrame(f"cannot read as JSON ({_detail(exc)})", kind="decode",
                                                    frame=index, path=where))
    return _openpose_doc_frame(doc, index, timestamp, where)


def _openpose_doc_frame(doc: object, index: int, timestamp: float, where: str) -> Frame:
    try:
        return _rows_to_frame(openpose_rows(doc, None, stream=True), index, timestamp, where)
    except BadFrame as exc:
        return Frame(index, timestamp, bad=BadFrame(str(exc), kind=exc.kind, frame=index, path=where))
    except Exception as exc:        # numbers too large for a float, ...
        return Frame(index, timestamp, bad=BadFrame(f"not a usable OpenPose document ({_detail(exc)})",
                                                    kind="decode", frame=index, path=where))


def _unplaced(reason: str, timestamp: float, where: str) -> Frame:
    """A line that could not be decoded far enough to know its frame: it takes no index."""
    return Frame(None, timestamp, bad=BadFrame(reason, kind="decode", path=where))


def parse_record(line: Union[str, bytes], index: int, timestamp: float, where: str = "<stream>") -> Frame:
    """One line of a live stream -> a Frame; ``index`` is used when the record has no ``frame``.

    Accepted: ``{"frame": i, "keypoints": [[x, y, c], ...]}`` (c optional, x/y source-image
    pixels, as many points as the model's layout: 137 OpenPose points for pose2img) or an
    OpenPose document ``{"people": [...]}``; an optional ``"t"`` gives the timestamp in seconds.
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
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        stamp = timestamp
    if "people" in record:
        return _openpose_doc_frame(record, frame_no, float(stamp), where)
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
    return _rows_to_frame(rows.T, frame_no, float(stamp), where)


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


def loopback_address(spec: str) -> Tuple[str, int]:
    """``tcp://127.0.0.1:PORT`` -> (host, port); only loopback hosts are accepted (no network exposure)."""
    match = re.fullmatch(r"tcp://(\[[^\]]+\]|[^:/]+):(\d+)", spec)
    if not match:
        raise UserError(f"keypoint address {spec!r}; expected tcp://127.0.0.1:PORT")
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or port > 65535:
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
