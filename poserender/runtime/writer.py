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
    ``counts``, ``metrics``, ``sink``, ``preview`` and ``progress`` (set up by StreamPipeline)."""

    def _write_loop(self) -> None:
        clock, late = self.clock, self.options.late
        metrics = self.metrics.stage("write")
        ready: Dict[int, Tuple[Any, Any]] = {}   # the reorder buffer: slot -> (frame, its batch)
        next_slot, total_slots, last_frame = 0, None, None
        while not self.abort.is_set():
            if total_slots is not None and next_slot >= total_slots:
                return
            if next_slot in ready:
                frame, batch = ready.pop(next_slot)
                if frame is None:
                    self.counts.add(dropped=1)
                    self._consumed(batch)
                    next_slot += 1
                    continue
                if clock is not None:
                    clock.wait_for_tick(next_slot, self.stop)
                self._write(frame, next_slot, batch.formed, batch.enqueued, metrics)
                self._consumed(batch)
                last_frame, next_slot = frame, next_slot + 1
                continue
            timeout = _POLL
            if clock is not None and clock.started and late != "queue":
                now = time.perf_counter()
                due = clock.tick(next_slot)
                if now >= due:          # missed its tick: drop it (hold: repeat the previous frame)
                    if late == "hold" and last_frame is not None:
                        self._write(last_frame, next_slot, None, None, metrics)
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
            if item.frames is None:     # dropped on a stop before rendering: its slots are skipped
                for slot in item.slots:
                    ready[slot] = (None, item)
                continue
            for slot, frame in zip(item.slots, item.frames):
                if slot < next_slot:     # its tick has passed (real time, drop/hold)
                    self.counts.add(dropped=1)
                    self._consumed(item)
                else:
                    ready[slot] = (frame, item)
            if getattr(self.sink, "reader_gone", False):   # e.g. the process reading stdout exited
                self.stop.set()

    def _consumed(self, batch) -> None:
        batch.unwritten -= 1
        if batch.unwritten == 0:
            batch.frames = None
            self._permits.release()

    def _write(self, frame, slot: int, formed: Optional[float], arrived: Optional[float], metrics) -> None:
        """Write one frame; ``formed`` is None for a real-time repeat of the previous frame."""
        started = time.perf_counter()
        before = self.sink.frames_written
        self.sink.write(frame[None])
        now = time.perf_counter()
        metrics.record(now - started, 0.0 if arrived is None else started - arrived, 1)
        if self.sink.frames_written == before:      # the reader of stdout is gone: not delivered
            if formed is not None:
                self.counts.add(dropped=1)
            return
        if formed is not None:
            self.counts.add(frames_out=1)
            if self.preview is not None:
                self.preview.add(frame, self.counts.frames_out - 1)
        if self.clock is not None:
            self.clock.note_written(slot, started)
            if formed is not None:
                self.clock.note_latency(now - formed)
        total = self.source.length
        if total is not None and self.options.max_frames is not None:
            total = min(total, self.options.max_frames)
        self.progress(self.counts.frames_out, total, self.counts.frames_out / max(now - self._started, 1e-9))
