"""Glass-to-glass latency of each frame, and where it went.

A frame's latency runs from its *origin* to the moment its frame has been written or sent (the
sink's write returned: bytes handed to the file, the pipe or the socket, and the live preview's
JPEG handed to its viewers). The origin is the record's own ``"t"`` stamp when the sender gives
one on a clock shared with the renderer (seconds since the Unix epoch, as ``time.time()``; the
same machine, or clocks kept in step by NTP/PTP), and otherwise the moment the record was read
from its source. A stamp that cannot be on that clock (in the future by more than
:data:`STAMP_SKEW_S`, or older than :data:`STAMP_MAX_AGE_S`: e.g. seconds since the sender
started) is ignored, counted, and the read time is used.

The latency is split into parts that add up to it exactly, from a chain of timestamps each frame
collects on its way (all ``time.perf_counter()``)::

    origin -> read -> taken -> closed -> permit -> prepared -> stage 1 start -> end ... -> done
           -> due -> ticked -> written

* ``input``: origin -> read (the way from the sender to poserender; 0 without a stamp);
* ``queue``: read -> taken (the reader's queue), closed -> permit (waiting for room in the
  pipeline, or in ``--late latest`` for a free renderer), the waits between model stages, and
  done -> due (the reorder buffer and the frames of its batch written before it);
* ``batch``: taken -> closed (waiting for its batch to fill, up to ``--max-wait-ms``);
* ``compute``: permit -> prepared (the adapter's ``prepare``) and every model stage's run;
* ``pacing``: due -> ticked (real time: an early frame waiting for its tick);
* ``write``: ticked -> written (encoding and writing, or sending).

Frames written again by ``--late hold`` are copies, not frames: they have no latency of their own.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .metrics import WINDOW

PARTS = ("input", "queue", "batch", "compute", "pacing", "write")
PERCENTILES = (50, 90, 99)
#: a stamp at most this far in the future of the renderer's clock is taken as now (clock skew)
STAMP_SKEW_S = 0.05
#: a stamp older than this cannot be the record's own time on a shared clock
STAMP_MAX_AGE_S = 60.0


def origin_of(sent: Optional[float], read: float, now_epoch: Optional[float] = None) -> Tuple[float, bool]:
    """(origin on the perf_counter clock, whether the stamp was used) for a record read at
    ``read`` (perf_counter) whose sender stamped it ``sent`` (epoch seconds, or None)."""
    if sent is None:
        return read, False
    age = (time.time() if now_epoch is None else now_epoch) - sent
    if not (-STAMP_SKEW_S <= age <= STAMP_MAX_AGE_S):
        return read, False
    return read - max(0.0, age), True


class _Ring:
    """The last WINDOW values (seconds) with the count, sum and maximum of all of them."""

    def __init__(self):
        self.values = np.zeros(WINDOW, dtype=np.float64)
        self.count, self.total, self.max = 0, 0.0, 0.0

    def add(self, value: float) -> None:
        self.values[self.count % WINDOW] = value
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def summary_ms(self) -> Dict[str, float]:
        if self.count == 0:
            return {**{f"p{p}": 0.0 for p in PERCENTILES}, "max": 0.0, "mean": 0.0}
        kept = self.values[:min(self.count, WINDOW)] * 1e3
        found = np.percentile(kept, PERCENTILES)
        return {**{f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, found)},
                "max": round(self.max * 1e3, 3), "mean": round(self.total / self.count * 1e3, 3)}

    def recent_ms(self, n: int) -> Sequence[float]:
        n = min(n, self.count, WINDOW)
        end = self.count % WINDOW
        idx = (np.arange(end - n, end)) % WINDOW
        return self.values[idx] * 1e3


class LatencyMeter:
    """Per-frame latency and its parts; percentiles over the last WINDOW frames, max and mean over
    all. Thread-safe: the writer records, the live preview reads."""

    def __init__(self):
        self.total = _Ring()
        self.parts = {name: _Ring() for name in PARTS}
        self.stamped = 0            # frames whose origin is the sender's "t"
        self.stamps_ignored = 0     # records whose "t" could not be on the renderer's clock
        self.last_written: Optional[float] = None
        self._lock = threading.Lock()

    def record(self, parts: Dict[str, float], stamped: bool) -> None:
        """One written frame: ``parts`` in seconds (each of :data:`PARTS`)."""
        total = sum(parts[name] for name in PARTS)
        with self._lock:
            self.total.add(total)
            for name in PARTS:
                self.parts[name].add(parts[name])
            self.stamped += bool(stamped)
            self.last_written = time.perf_counter()

    @property
    def frames(self) -> int:
        return self.total.count

    def to_dict(self) -> Dict[str, Any]:
        """``{"frames", "from", "stamps_ignored", "total_ms": {p50, p90, p99, max, mean},
        "split_ms": {part: {...}}, "split_mean_sum_ms"}``; the parts' means add up to the total's."""
        with self._lock:
            total = self.total.summary_ms()
            split = {name: ring.summary_ms() for name, ring in self.parts.items()}
            return {"frames": self.total.count,
                    "from": {"sender_stamp": self.stamped, "read": self.total.count - self.stamped},
                    "stamps_ignored": self.stamps_ignored, "total_ms": total, "split_ms": split,
                    "split_mean_sum_ms": round(sum(self.parts[n].total for n in PARTS) / max(1, self.total.count)
                                               * 1e3, 3)}

    def live(self, recent: int = 50) -> Dict[str, Any]:
        """Figures of the last ``recent`` frames, for the live preview's page."""
        with self._lock:
            values = self.total.recent_ms(recent)
            if not len(values):
                return {"frames": 0, "latency_ms": None}
            return {"frames": self.total.count,
                    "latency_ms": {"last": round(float(values[-1]), 1),
                                   "p50": round(float(np.percentile(values, 50)), 1),
                                   "p99": round(float(np.percentile(values, 99)), 1)}}

    def summary_line(self) -> Optional[str]:
        """``latency ms p50/p90/p99/max (from ...): ...; split p50: ...`` or None before any frame."""
        d = self.to_dict()
        if not d["frames"]:
            return None
        t = d["total_ms"]
        origin = "the sender's t" if d["from"]["sender_stamp"] == d["frames"] else (
            "read" if not d["from"]["sender_stamp"] else "the sender's t where given, else read")
        means = ", ".join(f"{name} {d['split_ms'][name]['mean']:.1f}" for name in PARTS)
        line = (f"latency ms (from {origin} to written) p50 {t['p50']:.1f}, p90 {t['p90']:.1f}, p99 {t['p99']:.1f}, "
                f"max {t['max']:.1f}; mean {t['mean']:.1f} = {means}")
        if d["stamps_ignored"]:
            line += f"; {d['stamps_ignored']} 't' stamps not on this clock were ignored"
        return line


