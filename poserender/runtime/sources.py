"""Keypoint sources: files and live inputs, all yielding :class:`Frame` records one at a time.

A source knows nothing about the model: it delivers each frame's points as the input holds them
(``xy`` (K, 2) float64 in source-image pixels and a validity mask), with the frame's index and a
timestamp. The model adapter then maps the points to its layout (OpenPose 137 -> 122, ...) and
onto its canvas. A frame the source cannot decode is still delivered, as a bad frame carrying a
:class:`BadFrame` (kind ``decode``, ``shape``, ``nan``, ``gap``), so the stream's
``--on-bad-frame`` policy decides what happens to it; only a problem with the whole input (a
missing file, an address that is not loopback) is a :class:`UserError`.

Sources: a :class:`KeypointSequence` read from a file (``.npz``, ``.npy``, one OpenPose JSON),
a folder of OpenPose JSON parsed file by file (:class:`OpenPoseFolderSource`, ``follow=True`` to
pick up files as OpenPose writes them), JSON lines on a text stream (stdin ``-``), and a TCP
listener on a loopback address (``tcp://127.0.0.1:PORT``, one JSON object per line).
"""
from __future__ import annotations

import abc

import dataclasses
import ipaddress
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, TextIO, Tuple

import numpy as np

from ..errors import BadFrame, UserError
from ..keypoints.readers import (KeypointSequence, openpose_json_files, openpose_rows, openpose_validity)

LIVE_RECORD = '{"frame": i, "keypoints": [[x, y, c], ...]} or an OpenPose document {"people": [...]}'
_OPENPOSE_NUMBER = re.compile(r"(\d+)_keypoints\.json$", re.IGNORECASE)


@dataclasses.dataclass
class Frame:
    """One keypoint frame as its source delivered it.

    ``index``: the frame number in the stream (a jump in it means frames are missing).
    ``timestamp``: seconds, from the file's frame rate, a ``"t"`` field, or the arrival time.
    ``xy``: (K, 2) float64 source-image pixels and ``valid`` (K,) bool; None for a bad frame.
    ``bad``: why the source could not use the frame (its ``kind`` is counted per kind).
    """

    index: int
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

    @staticmethod
    def bad_kind(reason: str) -> str:
        """The policy's kind for a reader's bad-frame reason: the readers' two frame-level problems
        are a NaN/inf value and a missing OpenPose file."""
        return "gap" if reason.startswith("no JSON file") else "nan"

    def __iter__(self) -> Iterator[Frame]:
        seq = self.seq
        for t in range(len(seq)):
            bad = None
            if seq.bad[t]:
                reason = seq.bad_reasons.get(t, "bad frame")
                bad = BadFrame(reason, kind=self.bad_kind(reason), frame=t, path=seq.path)
            yield Frame(t, t / self.fps, seq.xy[t], seq.valid[t], bad)


class Coco18FileSource(SequenceSource):
    """PSC poses (18 COCO joints, PSC canvas pixels): a csv, a folder of csv files (PSC's layout),
    OpenPose JSON or .npy, read by :func:`poserender.keypoints.coco18.read_pose_stream`; for the
    PSC family's adapter. NaN/inf frames are ``nan`` bad frames, frames with nobody ``empty``."""

    def __init__(self, path: Path, fps: float):
        from ..keypoints.coco18 import read_pose_stream

        super().__init__(read_pose_stream(path), fps)
        self.description = str(path)

    @staticmethod
    def bad_kind(reason: str) -> str:
        return "nan" if "NaN" in reason else "gap" if reason.startswith("no JSON file") else "empty"


class ArraySource(FrameSource):
    """Frames from arrays or a generator of (K, 2) poses (tests, benchmarks, the demo)."""

    def __init__(self, poses: Iterable[np.ndarray], fps: float, length: Optional[int] = None,
                 description: str = "array"):
        self.poses, self.fps, self.length, self.description = poses, fps, length, description

    def __iter__(self) -> Iterator[Frame]:
        for t, xy in enumerate(self.poses):
            xy = np.asarray(xy, dtype=np.float64)
            yield Frame(t, t / self.fps, xy, openpose_validity(xy, None))


def _rows_to_frame(rows: Optional[np.ndarray], index: int, timestamp: float, where: Optional[str] = None) -> Frame:
    """(3, K) x/y/confidence rows (None: nobody detected) -> a Frame with the OpenPose validity."""
    if rows is None:
        return Frame(index, timestamp, np.zeros((137, 2)), np.zeros(137, dtype=bool))
    if not np.isfinite(rows).all():
        joints = np.flatnonzero(~np.isfinite(rows).all(axis=0))
        return Frame(index, timestamp, bad=BadFrame(
            f"{int((~np.isfinite(rows)).sum())} NaN/inf values (joints {', '.join(map(str, joints[:8]))})",
            kind="nan", frame=index, path=where))
    xy = np.ascontiguousarray(rows[:2].T)
    return Frame(index, timestamp, xy, openpose_validity(xy, rows[2]))


class OpenPoseFolderSource(FrameSource):
    """A folder of OpenPose JSON, one file per frame, parsed as the stream reaches it.

    Files are ordered by the OpenPose frame number (``*_<n>_keypoints.json``; natural order for
    other names); a missing number is a ``gap`` bad frame, an unreadable file a ``decode`` one.
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
            self._files, self._missing = openpose_json_files(self.folder)
            self.length = len(self._files)

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        if not self.follow:
            for t, path in enumerate(self._files):
                if self._stop.is_set():
                    return
                if path is None:
                    yield Frame(t, t / self.fps, bad=BadFrame(self._missing[t], kind="gap", frame=t,
                                                              path=self.folder))
                else:
                    yield self._read(path, t)
            return
        yield from self._follow()

    def _read(self, path: Path, index: int) -> Frame:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return _rows_to_frame(openpose_rows(doc, None, stream=True), index, index / self.fps, str(path))
        except BadFrame as exc:
            return Frame(index, index / self.fps, bad=BadFrame(str(exc), kind=exc.kind, frame=index, path=path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Frame(index, index / self.fps, bad=BadFrame(
                f"cannot read as JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                kind="decode", frame=index, path=path))

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


def parse_record(line: str, index: int, timestamp: float, where: str = "<stream>") -> Frame:
    """One JSON line of a live stream -> a Frame; ``index`` is used when the line has no ``frame``.

    Accepted: ``{"frame": i, "keypoints": [[x, y, c], ...]}`` (c optional, x/y source-image
    pixels, as many points as the model's layout: 137 OpenPose points for pose2img) or an
    OpenPose document ``{"people": [...]}``; an optional ``"t"`` gives the timestamp in seconds.
    """
    try:
        record = json.loads(line)
    except ValueError as exc:
        return Frame(index, timestamp, bad=BadFrame(f"undecodable JSON line ({exc})", kind="decode",
                                                    frame=index, path=where))
    if not isinstance(record, dict):
        return Frame(index, timestamp, bad=BadFrame(f"a JSON {type(record).__name__}; expected {LIVE_RECORD}",
                                                    kind="decode", frame=index, path=where))
    frame_no = record.get("frame", index)
    if isinstance(frame_no, bool) or not isinstance(frame_no, int) or frame_no < 0:
        return Frame(index, timestamp, bad=BadFrame(f"'frame' is {frame_no!r}; expected an integer >= 0",
                                                    kind="decode", frame=index, path=where))
    stamp = record.get("t", timestamp)
    stamp = float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else timestamp
    if "people" in record:
        try:
            return _rows_to_frame(openpose_rows(record, None, stream=True), frame_no, stamp, where)
        except BadFrame as exc:
            return Frame(frame_no, stamp, bad=BadFrame(str(exc), kind=exc.kind, frame=frame_no, path=where))
    points = record.get("keypoints")
    try:
        rows = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        rows = None
    if points is None or rows is None or rows.ndim != 2 or rows.shape[1] not in (2, 3):
        return Frame(frame_no, stamp, bad=BadFrame(f"'keypoints' is not a list of [x, y, c] points; expected "
                                                   f"{LIVE_RECORD}", kind="decode", frame=frame_no, path=where))
    if rows.shape[1] == 2:
        rows = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    return _rows_to_frame(rows.T, frame_no, stamp, where)


class JsonLinesSource(FrameSource):
    """One JSON object per line from a text stream (stdin for ``-``); blank lines are ignored."""

    live = True

    def __init__(self, stream: TextIO, description: str = "<stdin>"):
        self.stream, self.description = stream, description
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        started, index = time.monotonic(), 0
        for line in self.stream:
            if self._stop.is_set():
                return
            if not line.strip():
                continue
            frame = parse_record(line, index, time.monotonic() - started, self.description)
            index = max(index, frame.index) + 1
            yield frame


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
    """Listen on a loopback address; one client sends JSON lines; its disconnect ends the stream.

    The socket is bound when the source is created (so a busy port fails before any output
    exists); ``port`` is the bound port (useful with port 0).
    """

    live = True

    def __init__(self, spec: str, log: Callable[[str], None] = lambda message: None):
        host, port = loopback_address(spec)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = socket.socket(family, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._server.bind((host, port))
        except OSError as exc:
            self._server.close()
            raise UserError(f"cannot listen on {spec} ({exc.strerror or exc})") from None
        self._server.listen(1)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.description = f"tcp://{host}:{self.port}"
        self._stop = threading.Event()
        self._conn: Optional[socket.socket] = None
        log(f"listening for keypoints on {self.description} (one JSON object per line)")

    def close(self) -> None:
        self._stop.set()
        for sock in (self._conn, self._server):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def __iter__(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            try:
                self._conn, _ = self._server.accept()
                break
            except socket.timeout:
                continue
            except OSError:
                return
        if self._conn is None:
            return
        self._conn.settimeout(None)
        with self._conn.makefile("r", encoding="utf-8", errors="replace") as stream:
            try:
                yield from JsonLinesSource(stream, self.description)
            except OSError:         # the socket was closed under us by close(): end of input
                return


def open_source(spec: str, open_file: Callable[[Path, float], FrameSource], fps: float, follow: bool = False,
                idle_seconds: float = 10.0, log: Callable[[str], None] = lambda message: None,
                stdin: Optional[TextIO] = None) -> FrameSource:
    """The source for a ``--keypoints`` argument: ``-`` (JSON lines on stdin), ``tcp://HOST:PORT``
    (a loopback listener), a folder to ``follow``, or a file/folder the model family reads
    (``open_file``, e.g. .npz/.npy/OpenPose JSON for pose2img)."""
    if spec == "-":
        import sys

        return JsonLinesSource(stdin if stdin is not None else sys.stdin, "<stdin>")
    if spec.startswith("tcp://"):
        return TcpSource(spec, log)
    path = Path(spec)
    if follow:
        if not path.is_dir():
            raise UserError("--follow watches a folder that OpenPose writes JSON files into; this is not a folder",
                            path)
        return OpenPoseFolderSource(path, fps, follow=True, idle_seconds=idle_seconds)
    return open_file(path, fps)
