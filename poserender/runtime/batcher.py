"""The streaming pipeline's second step, on its own thread: the bad-frame policy, then batches.

Two ways to form batches, one per kind of real-time promise:

* every policy but ``latest``: up to ``--batch`` frames in input order, sent once full or once the
  first has waited ``--max-wait-ms``; room in the pipeline is waited for (backpressure), so every
  frame is rendered unless the real-time clock says it will miss its tick (``drop``/``hold``);
* ``--late latest``: one pending pose, the newest. The batcher keeps draining the input (so
  nothing waits in a queue or a pipe), and hands the pending pose to the renderer only when one
  of the first stage's workers is free; a newer pose replaces a pending one, which is dropped
  (reason ``stale``). A held bad frame never replaces a pending good frame (it would show the
  same pose): it is the one dropped (``held-copy``). A batch is then one frame.

A part of :class:`~poserender.runtime.pipeline.StreamPipeline` (its base class), kept apart
because it is one idea: how frames are grouped and when they enter the renderer.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Tuple

from ..errors import StageError, UserError

_POLL = 0.1
_LATEST_POLL = 0.002        # latest: how often a pending pose looks for a free renderer
Times = Tuple[float, float, float, bool]    # origin, read, taken (perf_counter), origin is the sender's stamp


@dataclasses.dataclass
class Batch:
    """Frames rendered together, and the times the latency split is made of (runtime/latency.py)."""

    number: int
    indices: List[int]
    slots: List[int]
    feed: Optional[Dict[str, Any]]
    formed: float                   # prepared: ready for the first stage
    times: List[Times] = dataclasses.field(default_factory=list)
    closed: float = 0.0             # the batcher decided to send it
    queue_s: float = 0.0            # closed -> permit, and the waits between stages
    compute_s: float = 0.0          # prepare, and every stage's run
    enqueued: float = 0.0           # put into the queue it is in now (at the writer: its last stage ended)
    frames: Any = None
    unwritten: int = 0              # frames of this batch the writer has not consumed yet


class Batcher:
    """Uses the pipeline's ``_raw`` and ``_stage_queues``, ``_permits``, ``_idle`` (free first-stage
    workers, for latest), ``policy``, ``clock``, ``counts``, ``metrics``, ``adapter``, ``options``."""

    def _emit(self, pending: List[Tuple[int, Any, int, Times]], number: int, opened: float,
              closed: Optional[float] = None) -> bool:
        """Prepare ``pending`` and put it into the first stage's queue; False when the stream aborted.
        ``closed``: when the batch was complete (default now)."""
        closed = time.perf_counter() if closed is None else closed
        while not self._permits.acquire(timeout=_POLL):
            if self.abort.is_set():
                return False
        permit = time.perf_counter()
        feed = self.adapter.prepare([pose for _, pose, _, _ in pending])
        prepared = time.perf_counter()
        self.metrics.stage("prepare").record(prepared - permit, prepared - opened, len(pending))
        batch = Batch(number, [i for i, _, _, _ in pending], [s for _, _, s, _ in pending], feed, formed=prepared,
                      times=[t for _, _, _, t in pending], closed=closed, queue_s=permit - closed,
                      compute_s=prepared - permit, enqueued=prepared, unwritten=len(pending))
        return self._put(self._stage_queues[0], batch)

    def _batch(self) -> None:
        try:
            if self.clock is not None and self.options.late == "latest":
                self._form_latest()
            else:
                self._form_batches()
        except UserError as exc:
            self._fail(exc)
        except Exception as exc:
            self._fail(StageError(f"preparing frames failed: {type(exc).__name__}: {exc}"))

    def _form_batches(self) -> None:
        options, raw = self.options, self._raw
        pending: List[Tuple[int, Any, int, Times]] = []
        opened = 0.0
        slot = number = 0
        max_wait = options.max_wait_ms / 1e3
        while not self.abort.is_set():
            if self.stop.is_set():
                break
            timeout = _POLL if not pending else max(0.0, opened + max_wait - time.perf_counter())
            item = self._get(raw, timeout)
            if item is None:
                if pending and time.perf_counter() >= opened + max_wait:
                    if not self._emit(pending, number, opened):
                        return
                    pending, number = [], number + 1
                continue
            if item is self._END:
                break
            frame, origin, read, stamped = item
            taken = time.perf_counter()
            for index, pose in self.policy.feed(frame):
                if self.abort.is_set():
                    return
                now = time.perf_counter()
                if self.clock is not None and self.clock.input_is_stale(slot, now):
                    self.counts.drop("late")
                else:
                    if not pending:
                        opened = now
                    pending.append((index, pose, slot, (origin, read, taken, stamped)))
                    if self.clock is not None:
                        self.clock.accepted()
                slot += 1
                if len(pending) >= options.batch:
                    if not self._emit(pending, number, opened):
                        return
                    pending, number = [], number + 1
                if self.stop.is_set():      # a signal: no more gap frames from this record
                    break
        if self.abort.is_set():
            return
        self.policy.finish(interrupted=self.stop.is_set())
        if pending:
            if not self._emit(pending, number, opened):
                return
        self._put(self._stage_queues[0], (self._END, slot))

    def _form_latest(self) -> None:
        raw = self._raw
        pending: Optional[Tuple[int, Any, Times, bool]] = None     # index, pose, times, a good frame
        slot = 0
        ended = False
        while not self.abort.is_set() and not self.stop.is_set():
            if not ended:
                item = self._get(raw, _LATEST_POLL if pending is not None else _POLL)
                if item is self._END:
                    ended = True
                elif item is not None:
                    frame, origin, read, stamped = item
                    taken = time.perf_counter()
                    for index, pose in self.policy.feed(frame):
                        new = (index, pose, (origin, read, taken, stamped), index == self.policy.good_index)
                        if pending is None:
                            pending = new
                        elif new[3] or not pending[3]:
                            self.counts.drop("stale")
                            pending = new
                        else:
                            self.counts.drop("held-copy")
            if pending is not None and self._idle.acquire(timeout=_POLL if ended else 0):
                index, pose, times, _ = pending
                # a batch of one is complete when taken: waiting for the renderer is queueing
                if not self._emit([(index, pose, slot, times)], slot, times[2], closed=times[2]):
                    return
                pending, slot = None, slot + 1
            elif ended and pending is None:
                break
        if self.abort.is_set():
            return
        if pending is not None:         # stopped by a signal before a renderer was free
            self.counts.drop("stopped")
        self.policy.finish(interrupted=self.stop.is_set())
        self._put(self._stage_queues[0], (self._END, slot))
