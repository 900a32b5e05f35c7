"""The streaming pipeline's last step, on the main thread: put finished batches back in frame
order, write them to the sink (and the preview) on the real-time clock when there is one, and
count every frame that leaves. A part of :class:`~poserender.runtime.pipeline.StreamPipeline`
(its base class), kept apart because it is one idea: the reorder buffer and the writer."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

_POLL = 0.1


class ReorderingWriter:
    """Uses the pipeline's ``abort``/``stop`` events, ``_results`` queue, ``_permits``, ``clock``,
    ``counts``, ``metrics``, ``latency``, ``sink``, ``preview``, ``live`` and ``progress`` (set up
    by StreamPipeline). ``--late latest`` frames are written as soon as they are ready (no tick)."""

    def _write_loop(self) -> None:
        clock, late = self.clock, self.options.late
        paced = clock is not None and late != "latest"     # latest writes a frame as soon as it is ready
        metrics = self.metrics.stage("write")
        ready: Dict[int, Tuple[Any, Any, int]] = {}   # the reorder buffer: slot -> (frame, its batch, place in it)
        next_slot, total_slots, last_frame = 0, None, None
        while not self.abort.is_set():
            if total_slots is not None and next_slot >= total_slots:
                return
            if next_slot in ready:
                frame, batch, place = ready.pop(next_slot)
                if frame is None:
                    self.counts.drop("stopped")
                    self._consumed(batch)
                    next_slot += 1
                    continue
                due = None
                if paced:
                    due = time.perf_counter()
                    clock.wait_for_tick(next_slot, self.stop)
                self._write(frame, next_slot, batch, place, due, metrics)
                self._consumed(batch)
                last_frame, next_slot = frame, next_slot + 1
                continue
            timeout = _POLL
            if paced and clock.started and late != "queue":
                now = time.perf_counter()
                due = clock.tick(next_slot)
                if now >= due:          # missed its tick: drop it (hold: repeat the previous frame)
                    if late == "hold" and last_frame is not None:
                        self._write(last_frame, next_slot, None, 0, now, metrics)
                        self.counts.add(late_held=1)
                    next_slot += 1
                    continue
                timeout = min(timeout, due - now)
            elif total_slots is not None:
                raise RuntimeError(f"frame slot {next_slot} never arrived (pipeline bug)")
            item = self._get(self._results, max(timeout, 1e-3))
            if item is None:
                continue
            if isinstance(item, tuple):
                total_slots = item[1]
                continue
            if clock is not None:
                clock.arrived(len(item.slots), None if item.frames is None else item.compute_s)
            if item.frames is None:     # dropped on a stop before rendering: its slots are skipped
                for place, slot in enumerate(item.slots):
                    ready[slot] = (None, item, place)
                continue
            for place, (slot, frame) in enumerate(zip(item.slots, item.frames)):
                if slot < next_slot:     # its tick has passed (real time, drop/hold)
                    self.counts.drop("late")
                    self._consumed(item)
                else:
                    ready[slot] = (frame, item, place)
            if getattr(self.sink, "reader_gone", False):   # e.g. the process reading stdout exited
                self.stop.set()

    def _consumed(self, batch) -> None:
        batch.unwritten -= 1
        if batch.unwritten == 0:
            batch.frames = None
            self._permits.release()

    def _write(self, frame, slot: int, batch, place: int, due: Optional[float], metrics) -> None:
        """Write one frame (``batch`` None: a real-time repeat of the previous frame) and, for a
        rendered one, record its latency; ``due``: when it was ready to go, before a tick wait."""
        started = time.perf_counter()
        due = started if due is None else due
        before = self.sink.frames_written
        self.sink.write(frame[None])
        delivered = self.sink.frames_written > before
        if delivered and self.live is not None:
            self.live.publish(frame)
        now = time.perf_counter()
        metrics.record(now - started, 0.0 if batch is None else started - batch.enqueued, 1)
        if not delivered:      # the reader or receiver is gone: not delivered
            if batch is not None:
                self.counts.drop("receiver-gone")
            return
        if batch is not None:
            self.counts.add(frames_out=1)
            origin, read, taken, stamped = batch.times[place]
            self.latency.record({"input": read - origin, "queue": (taken - read) + batch.queue_s + (due - batch.enqueued),
                                 "batch": batch.closed - taken, "compute": batch.compute_s, "pacing": started - due,
                                 "write": now - started}, stamped)
            if self.preview is not None:
                self.preview.add(frame, self.counts.frames_out - 1)
        if self.clock is not None:
            self.clock.note_written(slot, started)
        total = self.source.length
        if total is not None and self.options.max_frames is not None:
            total = min(total, self.options.max_frames)
        self.progress(self.counts.frames_out, total, self.counts.frames_out / max(now - self._started, 1e-9))
