"""The bad-frame policy of a stream, and the frame counts that must reconcile.

Every frame that enters the stream is counted once in ``frames_in`` and leaves it in exactly one
way: written (``frames_out``, held bad frames included), ``skipped`` (bad frame, policy
``skip``, a frame that arrived after a later one, or a record without a frame index), or
``dropped`` (real-time mode: late, or stale under ``--late latest``; interrupted; a receiver
that went away), each drop counted with its reason in ``drop_reasons``. So ``frames_in ==
frames_out + dropped + skipped`` once the stream is over.

Bad frames: NaN/inf (``nan``), a coordinate beyond the accepted range (``range``), wrong joint
count (``shape``), undecodable record (``decode``), nobody detected (``empty``), a missing frame
index (``gap``), an index that goes backwards (``order``). ``--on-bad-frame hold`` renders the
last good pose in their place (bad frames before the first good one take the first good pose),
``skip`` drops them, ``error`` stops the stream. Each kind is logged once, with its frame index;
later ones are only counted.

The index/gap policy lives here and only here: sources deliver frames with the index their input
gives (or none, for a line that could not be decoded: it is counted as ``decode`` and skipped,
since it has no place of its own, so it can never take the place of a real frame). A jump of up
to ``max_gap`` missing indices is filled with ``gap`` bad frames; a larger jump is a
*discontinuity*: counted (with the number of frames it skipped), never filled, and the stream
carries on from the new index, so one record claiming frame 1,000,000 costs nothing.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Callable, Counter, Iterator, List, Optional, Tuple

from ..errors import BadFrame, UserError
from .sources import Frame

BAD_FRAME_POLICIES = ("hold", "skip", "error")
#: why a frame was dropped (not written)
DROP_REASONS = {
    "late": "real time (--late drop/hold): it would miss, or missed, its tick",
    "stale": "real time (--late latest): a newer pose arrived before the renderer was free",
    "held-copy": "real time (--late latest): a held bad frame while a good frame with that pose waited",
    "stopped": "a signal stopped the stream before it was rendered or written",
    "receiver-gone": "the output's reader or receiver went away",
}


@dataclasses.dataclass
class StreamCounts:
    frames_in: int = 0
    frames_out: int = 0
    held: int = 0           # bad frames rendered with the last good pose (part of frames_out)
    skipped: int = 0
    dropped: int = 0        # not written: late, stale, stopped, receiver gone (see drop_reasons)
    late_held: int = 0      # real time, --late hold: extra copies of the previous frame written
    discontinuities: int = 0    # index jumps over --max-gap: not filled
    unfilled: int = 0           # missing indices those jumps skipped (not frames: never counted in)
    bad: Counter[str] = dataclasses.field(default_factory=collections.Counter)
    drop_reasons: Counter[str] = dataclasses.field(default_factory=collections.Counter)
    _lock: Any = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def drop(self, reason: str, n: int = 1) -> None:
        """``n`` frames not written, for ``reason`` (a key of :data:`DROP_REASONS`)."""
        if n <= 0:
            return
        with self._lock:
            self.dropped += n
            self.drop_reasons[reason] += n

    def reconciles(self) -> bool:
        return self.frames_in == self.frames_out + self.dropped + self.skipped

    def to_dict(self) -> dict:
        return {"in": self.frames_in, "out": self.frames_out, "held": self.held, "skipped": self.skipped,
                "dropped": self.dropped, "drop_reasons": dict(self.drop_reasons), "late_held": self.late_held,
                "bad_frames": dict(self.bad),
                "discontinuities": self.discontinuities, "unfilled_indices": self.unfilled,
                "reconciles": self.reconciles()}


def default_max_gap(fps: float) -> int:
    """``--max-gap`` when not given: five seconds of frames at the stream's rate."""
    return max(1, int(round(5 * fps)))


class BadFramePolicy:
    """Feed source frames in; get (frame index, normalised input) pairs to render out.

    ``normalise`` is the model adapter's per-frame step (raises BadFrame). Up to ``max_gap``
    missing indices become ``gap`` bad frames; a longer jump is a discontinuity (counted, not
    filled); an index lower than one already seen is an ``order`` bad frame, and a frame without
    an index a ``decode`` one: both always skipped (they have no place in the output).
    """

    def __init__(self, normalise: Callable[[Frame], Any], policy: str, counts: StreamCounts,
                 log: Callable[[str], None], where: str = "keypoints", max_gap: int = 75):
        if policy not in BAD_FRAME_POLICIES:
            raise UserError(f"--on-bad-frame {policy!r}; expected one of {', '.join(BAD_FRAME_POLICIES)}")
        if max_gap < 0:
            raise UserError(f"--max-gap {max_gap}; expected a number of frames >= 0")
        self.normalise, self.policy, self.counts, self.log, self.where = normalise, policy, counts, log, where
        self.max_gap = max_gap
        self.next_index: Optional[int] = None
        self.last_good: Any = None
        # the index of the last good frame: a pair fed out at another index is a held bad frame
        self.good_index: Optional[int] = None
        self._leading: List[int] = []      # indices of bad frames waiting for the first good pose
        self._logged = set()

    def feed(self, frame: Frame) -> Iterator[Tuple[int, Any]]:
        if frame.index is None:
            yield from self._bad(frame.bad, None, placed=False)
            return
        if self.next_index is not None and frame.index < self.next_index:
            yield from self._bad(BadFrame(f"arrived after frame {self.next_index - 1}; frames must come in "
                                          "index order", kind="order", frame=frame.index, path=self.where),
                                 frame.index, placed=False)
            return
        if self.next_index is not None and frame.index > self.next_index:
            missing = frame.index - self.next_index
            if missing > self.max_gap:
                self._discontinuity(frame.index, missing)
            else:
                for index in range(self.next_index, frame.index):
                    yield from self._bad(BadFrame("missing from the stream (index gap)", kind="gap", frame=index,
                                                  path=self.where), index)
        self.next_index = frame.index + 1
        if frame.bad is not None:
            yield from self._bad(frame.bad, frame.index)
            return
        try:
            pose = self.normalise(frame)
        except BadFrame as exc:
            yield from self._bad(BadFrame(str(exc), kind=exc.kind, path=self.where), frame.index)
            return
        self.counts.add(frames_in=1)
        self.last_good, self.good_index = pose, frame.index
        for index in self._leading:
            yield index, pose
        self._leading = []
        yield frame.index, pose

    def finish(self, interrupted: bool = False) -> None:
        """End of the stream: bad frames still waiting for a first good pose cannot be rendered."""
        if self._leading:
            if not interrupted:
                raise UserError(f"no usable frame in the stream; all {len(self._leading)} frames are bad "
                                f"({', '.join(f'{k} {n}' for k, n in self.counts.bad.items())})", self.where)
            self.counts.add(held=-len(self._leading), skipped=len(self._leading))
            self._leading = []

    def _discontinuity(self, index: int, missing: int) -> None:
        self.counts.add(discontinuities=1, unfilled=missing)
        if "discontinuity" not in self._logged:
            self._logged.add("discontinuity")
            self.log(f"warning: {self.where}: frame {index} follows frame {self.next_index - 1}: {missing} missing "
                     f"frames, more than --max-gap {self.max_gap}; not filled, the stream continues from frame "
                     f"{index} (further jumps are counted, not logged)")

    def _bad(self, exc: BadFrame, index: Optional[int], placed: bool = True) -> Iterator[Tuple[int, Any]]:
        if self.policy == "error":
            raise UserError(f"{exc} (--on-bad-frame error)")
        action = "held" if self.policy == "hold" and placed else "skipped"
        with self.counts._lock:
            self.counts.frames_in += 1
            self.counts.bad[exc.kind] += 1
        if exc.kind not in self._logged:
            self._logged.add(exc.kind)
            self.log(f"warning: bad frame: {exc}; {action} (--on-bad-frame {self.policy}); "
                     f"further '{exc.kind}' frames are counted, not logged")
        if action == "skipped":
            self.counts.add(skipped=1)
            return
        self.counts.add(held=1)
        if self.last_good is None:
            self._leading.append(index)
        else:
            yield index, self.last_good
