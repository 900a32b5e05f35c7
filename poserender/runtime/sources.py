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
pick up files as OpenPose writes them), and the live ones in live.py: JSON lines on a stream
(stdin ``-``) and a TCP listener on a loopback address (``tcp://127.0.0.1:PORT``).
"""
from __future__ import annotations

import abc
import dataclasses
import json
import re
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import BadFrame, UserError
from ..keypoints.readers import KeypointSequence, openpose_json_files, openpose_rows, openpose_validity
from ..keypoints.validate import frame_problem

_OPENPOSE_NUMBER = re.compile(r"(\d+)_keypoints\.json$", re.IGNORECASE)


@dataclasses.dataclass
class Frame:
    """One keypoint frame as its source delivered it.

    ``index``: the frame number in the stream (a jump in it means frames are missing); None for
    a record that could not be decoded far enough to know its number (it takes no place).
    ``timestamp``: seconds, from the file's frame rate, a ``"t"`` field, or the arrival time.
    ``xy``: (K, 2) float64 source-image pixels and ``valid`` (K,) bool; None for a bad frame.
    ``bad``: why the source could not use the frame (its ``kind`` is counted per kind).
    ``sent``: the record's own ``"t"`` (live records), read as seconds since the Unix epoch on the
    sender's clock; the glass-to-glass latency starts there when it can be on the renderer's
    clock (runtime/latency.py), else at the moment the record was read.
    """

    index: Optional[int]
    timestamp: float
    xy: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None
    bad: Optional[BadFrame] = None
    sent: Optional[float] = None


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
