"""Real-time mode: the output clock, the late-frame policy, and what the summary reports.

Output frame ``k`` (its *slot*) is due at ``t0 + k / fps``. The first frame is written as soon
as it is ready, and ``t0`` is one tick after that: one frame period of slack against jitter (a
frame that takes a little longer than the first one is not late at once). A frame that is ready
early waits for its tick; a frame that is not ready at its tick is *late*, and ``--late`` says
what happens:

- ``queue``: it is written as soon as it is ready; nothing is lost, latency may grow without
  bound when the renderer is slower than the input;
- ``drop``: it is not written (counted as dropped, reason ``late``); an input frame that would
  miss its tick anyway is dropped before rendering (reason ``late``), so the renderer spends its
  time only on frames that can still be on time and the output keeps the renderer's pace;
- ``hold``: as ``drop``, and the previous frame is written again at the missed tick (counted
  as held), so the output has exactly one frame per tick and stays in step with audio;
- ``latest`` (interactive): there are no ticks. The newest pose wins: the batcher keeps one
  pending pose and hands it to the renderer as soon as a worker is free, and a newer pose
  replaces it (the replaced one is dropped, reason ``stale``); each frame is written as soon as
  it is rendered, one frame per batch. A frame's latency is then at most about two render
  times plus its writing, however far behind the renderer is, where ``drop`` and ``hold``
  still wait for ticks and batches and ``queue`` lets the backlog grow. The output's frame rate
  is what the renderer manages, not ``--fps``.

Whether an input frame would miss its tick (drop, hold) is predicted from the backlog, not from
past latencies alone: it would be written at about ``now + pass x (1 + batches ahead / workers)``,
where ``pass`` is the recent compute time of a batch (preparing it and every stage's run, not
its waits), and the batches ahead are the frames accepted but not yet rendered, in
batches. A renderer that is idle gets the next frame that can make its tick; one with a backlog
gets none until the backlog is gone. (Predicting from the latency of written frames alone
missed the wait for room in the pipeline, and once every frame came out late nothing updated
it: a renderer slower than the input then wrote almost nothing.)

The summary reports the first-frame delay (first input frame read -> first frame written), the
jitter (standard deviation of write time - tick, over written frames; under ``latest``, of the
interval between written frames), and the dropped and held counts. The latency of each frame is
measured for every policy (runtime/latency.py).
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Dict, Optional

from .metrics import Samples

LATE_POLICIES = ("drop", "hold", "queue", "latest")


class RealtimeClock:
    def __init__(self, fps: float, late: str):
        if late not in LATE_POLICIES:
            raise ValueError(f"late policy {late!r}; expected one of {LATE_POLICIES}")
        self.fps, self.period, self.late = fps, 1.0 / fps, late
        self.t0: Optional[float] = None
        self.first_input: Optional[float] = None
        self.first_write: Optional[float] = None
        self._previous = 0.0        # latest: when the previous frame was written
        self.batch, self.workers = 1, 1     # frames per batch and workers of the slowest stage (the pipeline's)
        self.pass_s = 0.0           # recent compute time of a batch (prepare + its stages' runs)
        self.in_flight = 0          # frames accepted for rendering that have not reached the writer
        self.lateness = Samples()   # write time - tick, seconds, per written frame
        self._sum = self._sum_sq = 0.0
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self.t0 is not None

    def tick(self, slot: int) -> float:
        return self.t0 + slot * self.period

    def input_is_stale(self, slot: int, now: float) -> bool:
        """drop/hold: will this not-yet-rendered frame miss its tick anyway (module doc)?"""
        if self.late in ("queue", "latest") or self.t0 is None:
            return False
        with self._lock:
            ahead = -(-self.in_flight // self.batch)          # batches in front of this frame
            ready = now + self.pass_s * (1.0 + ahead / self.workers)
        return self.tick(slot) < ready

    def accepted(self, frames: int = 1) -> None:
        """The batcher took frames for rendering."""
        with self._lock:
            self.in_flight += frames

    def arrived(self, frames: int, pass_seconds: Optional[float]) -> None:
        """A batch reached the writer (rendered, or given up on a stop); ``pass_seconds``: its
        compute time (None: not rendered)."""
        with self._lock:
            self.in_flight = max(0, self.in_flight - frames)
            if pass_seconds is not None:
                self.pass_s = pass_seconds if self.pass_s == 0 else 0.7 * self.pass_s + 0.3 * pass_seconds

    def note_written(self, slot: int, when: float) -> None:
        if self.t0 is None:
            self.first_write = self._previous = when
            self.t0 = when - slot * self.period + self.period
            return
        if self.late == "latest":           # no ticks: how far each interval is from one period
            late, self._previous = when - self._previous - self.period, when
        else:
            late = when - self.tick(slot)
        self.lateness.add(late)
        self._sum += late
        self._sum_sq += late * late

    def wait_for_tick(self, slot: int, stop: threading.Event) -> None:
        if self.t0 is not None:
            delay = self.tick(slot) - time.perf_counter()
            if delay > 0:
                stop.wait(delay)

    def summary(self) -> Dict[str, Any]:
        n = self.lateness.count
        mean = self._sum / n if n else 0.0
        std = math.sqrt(max(self._sum_sq / n - mean * mean, 0.0)) if n else 0.0
        delay = None if self.first_write is None or self.first_input is None else self.first_write - self.first_input
        late = self.lateness.summary_ms()
        return {"fps": self.fps, "late_policy": self.late,
                "first_frame_delay_ms": None if delay is None else round(delay * 1e3, 2),
                "jitter_ms": round(std * 1e3, 3), "lateness_ms": {k: late[k] for k in ("p50", "p99", "mean")}}
