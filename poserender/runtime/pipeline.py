"""The streaming renderer: source -> normalise -> batch -> stage workers -> reorder -> sink.

Threads and bounded queues, so the stages overlap (while batch k renders, batch k+1 is being
prepared and batch k-1 encoded) and a slow stage holds the ones before it back (backpressure)
instead of letting frames pile up in memory:

    reader thread      source frames (paced to the clock in real-time mode) -> raw queue
    batcher thread     bad-frame policy + the adapter's normalise; batches of --batch frames,
                       or fewer once the first has waited --max-wait-ms; adapter.prepare
                       (--late latest: the newest pose alone, when a worker is free; batcher.py)
    stage workers      one thread per (frame stage, device), each with its own engines;
                       replicated workers of a stage share its input queue
    main thread        puts batches back in frame order, writes the sink (and the previews),
                       paces output in real-time mode, records each frame's latency
                       (latency.py), reports progress (writer.py)

End of input or a signal ends the stream cleanly. SIGINT (Ctrl-C), SIGTERM and SIGHUP act
alike (poserender.signals): the first stops reading, drops the batches still waiting for the
first model stage (counted as dropped), finishes the ones being rendered, writes them and closes
the sink, so the output is playable and the stop takes about one batch's time whatever the
backlog; a second one stops at once and keeps what was written. An error in any worker stops
them all, removes the partial output, and is raised once, naming the stage and the frames.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import signal
import threading
import time
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from .. import signals
from ..engines.base import Engine
from ..errors import StageError, UserError
from ..engines.placement import PER_FRAME, PER_IDENTITY, Placement, plan_placement
from ..fileio import output_error
from .batcher import Batch, Batcher
from .latency import LatencyMeter, origin_of
from .metrics import PipelineMetrics
from .policy import BadFramePolicy, StreamCounts, default_max_gap
from .realtime import RealtimeClock
from .report import StreamOptions, StreamReport, gpu_memory
from .writer import ReorderingWriter
from .sources import FrameSource

EngineFactory = Callable[[str, Optional[int]], Mapping[str, Engine]]
_POLL = 0.1


class StreamPipeline(Batcher, ReorderingWriter):
    """One stream through one model; :meth:`run` returns a :class:`StreamReport`.

    ``preview``: a contact sheet (runtime/preview.py); ``live``: a live view that is handed every
    written frame (the browser preview, runtime/serve.py): ``publish(frame)``."""

    _END = "end of stream"

    def __init__(self, adapter, engine_factory: EngineFactory, source: FrameSource, sink, options: StreamOptions,
                 log: Callable[[str], None] = lambda message: None,
                 progress: Callable[[int, Optional[int], float], None] = lambda done, total, fps: None,
                 preview=None, placement: Optional[Placement] = None, live=None):
        if options.realtime and options.late == "latest":
            options = dataclasses.replace(options, batch=1)     # the newest pose alone
        self.adapter, self.source, self.sink, self.options = adapter, source, sink, options
        self.log, self.progress, self.preview, self.live = log, progress, preview, live
        self.counts = StreamCounts()
        self.metrics = PipelineMetrics()
        self.latency = LatencyMeter()
        self.clock = RealtimeClock(options.fps, options.late) if options.realtime else None
        self.policy = BadFramePolicy(adapter.normalise, options.on_bad_frame, self.counts, log,
                                     where=source.description,
                                     max_gap=default_max_gap(options.fps) if options.max_gap is None else options.max_gap)
        self.stop, self.abort = threading.Event(), threading.Event()
        self._closing = threading.Event()       # the writer is done: threads still waiting give up
        self._failure: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._signal: Optional[int] = None
        n_stages = len(adapter.frame_stages)
        self._raw: "queue.Queue" = queue.Queue(maxsize=max(8, 2 * options.batch))
        self._stage_queues = [queue.Queue(maxsize=options.queue_batches) for _ in range(n_stages)]
        self._results: "queue.Queue" = queue.Queue()   # bounded by the batches in flight upstream
        # the model's plan (engines.placement, the one `build` records); without one, the adapter's stages
        placement = placement or plan_placement([{"name": n, "runs": PER_IDENTITY} for n in adapter.identity_stages]
                                                + [{"name": n, "runs": PER_FRAME} for n in adapter.frame_stages],
                                                options.devices, options.replicate)
        self.placement = placement
        identity_device = placement.stages[adapter.identity_stages[0]][0] if adapter.identity_stages \
            else placement.devices[0]
        per_stage = {name: list(placement.stages[name]) for name in adapter.frame_stages}
        cpu_workers = sum(d == "cpu" for ds in per_stage.values() for d in ds)
        threads = max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers > 1 else None
        # Engines are built here (cheap, lazy; a bad device fails now, before any frame), and
        # activated in the thread that uses them.
        self._identity_engines = engine_factory(identity_device, None)
        self._workers: List[Tuple[int, str, str, Engine]] = []
        for i, name in enumerate(adapter.frame_stages):
            for k, device in enumerate(per_stage[name]):
                label = f"{name}@{device}" + (f"#{k}" if len(per_stage[name]) > 1 else "")
                self._workers.append((i, name, label, engine_factory(device, threads)[name]))
        self._done = [0] * n_stages
        self._per_stage = [len(per_stage[name]) for name in adapter.frame_stages]
        if self.clock is not None:     # what the clock's backlog prediction divides by
            self.clock.batch, self.clock.workers = max(1, options.batch), min(self._per_stage or [1])
        # Batches in flight between the batcher and the writer hold a permit each, returned when the
        # writer has consumed all their frames: memory stays bounded even when one replicated worker
        # stalls while the others run ahead into the reorder buffer.
        self._permits = threading.Semaphore(options.queue_batches * n_stages + len(self._workers) + 1)
        # --late latest: free workers of the first stage (the batcher sends a pose only to a free one)
        self._latest = self.clock is not None and options.late == "latest"
        self._idle = threading.Semaphore(self._per_stage[0] if n_stages else 1)
        for name, workers in [("read", 1), ("prepare", 1), *zip(adapter.frame_stages, self._per_stage), ("write", 1)]:
            self.metrics.stage(name, workers)      # table and JSON in pipeline order

    # -- failure and shutdown -------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
        self.abort.set()
        self.source.close()

    def _on_signal(self, signum: int) -> None:
        """The first SIGINT/SIGTERM/SIGHUP: stop reading, finish what is being rendered."""
        self._signal = signum
        self.log(f"interrupted ({signal.Signals(signum).name}): finishing the frames being rendered "
                 "(send it again to stop now)")
        self.stop.set()
        self.source.close()

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocking put that gives up when the stream is aborted (backpressure without deadlock)."""
        while not (self.abort.is_set() or self._closing.is_set()):
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue, timeout: float = _POLL):
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- threads --------------------------------------------------------------------------------

    def _read(self) -> None:
        metrics, raw = self.metrics.stage("read"), self._raw
        pace = self.clock is not None and not self.source.live
        try:
            frames, started = iter(self.source), None
            n = 0
            while not (self.stop.is_set() or self.abort.is_set()):
                if self.options.max_frames is not None and n >= self.options.max_frames:
                    break
                t = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                now = time.perf_counter()
                metrics.record(now - t, 0.0, 1)
                if started is None:
                    started = now
                    if self.clock is not None:
                        self.clock.first_input = now
                if pace:   # a file in real-time mode arrives like a live stream, at --fps
                    self.stop.wait(max(0.0, started + n / self.options.fps - now))
                    now = time.perf_counter()
                frame.timestamp = frame.timestamp if frame.timestamp is not None else now - started
                origin, stamped = origin_of(frame.sent, now)
                if frame.sent is not None and not stamped:
                    self._stamp_ignored(frame.sent)
                if not self._put(raw, (frame, origin, now, stamped)):
                    return
                n += 1
        except UserError as exc:
            self._fail(exc)
        except Exception as exc:   # a bug or an I/O failure in the source: report it, stop cleanly
            self._fail(StageError(f"reading {self.source.description} failed: {type(exc).__name__}: {exc}"))
        finally:
            self._put(raw, self._END)

    def _stamp_ignored(self, sent: float) -> None:
        self.latency.stamps_ignored += 1
        if self.latency.stamps_ignored == 1:
            self.log(f"warning: {self.source.description}: a record's \"t\" ({sent:.6g}) is {time.time() - sent:.6g} s "
                     "from this machine's clock; expected seconds since the Unix epoch on a shared clock; latency "
                     "is measured from the moment each such record is read (further ones are counted)")

    def _work(self, stage_index: int, name: str, label: str, engine: Engine, ready: threading.Barrier) -> None:
        q_in = self._stage_queues[stage_index]
        last = stage_index == len(self._stage_queues) - 1
        q_out = self._results if last else self._stage_queues[stage_index + 1]
        metrics = self.metrics.stage(name, self._per_stage[stage_index])
        batch = None
        try:
            with engine:
                ready.wait()
                while not self.abort.is_set():
                    batch = self._get(q_in)
                    if batch is None:
                        continue
                    if isinstance(batch, tuple):        # (END, slots): tell siblings, the last one forwards
                        q_in.put(batch)
                        with self._lock:
                            self._done[stage_index] += 1
                            finished = self._done[stage_index] == self._per_stage[stage_index]
                        if finished:
                            self._put(q_out, batch)
                        return
                    if stage_index == 0 and self.stop.is_set():    # stopping: not started, not rendered
                        batch.feed = batch.frames = None
                        if self._latest:
                            self._idle.release()
                        if not self._put(self._results, batch):
                            return
                        continue
                    started = time.perf_counter()
                    batch.feed.update(engine.infer(batch.feed))
                    now = time.perf_counter()
                    metrics.record(now - started, started - batch.enqueued, len(batch.indices))
                    if last:
                        batch.frames, batch.feed = self.adapter.frames(batch.feed), None
                        now = time.perf_counter()
                    batch.queue_s += started - batch.enqueued
                    batch.compute_s += now - started
                    batch.enqueued = now
                    if not self._put(q_out, batch):
                        return
                    if stage_index == 0 and self._latest:
                        self._idle.release()
        except threading.BrokenBarrierError:
            return
        except UserError as exc:        # e.g. a model file the engine cannot load: one line, as it is
            self._fail(exc)
            ready.abort()
        except BaseException as exc:
            frames = "" if not isinstance(batch, Batch) else (
                f" on frames {batch.indices[0]}-{batch.indices[-1]}" if len(batch.indices) > 1
                else f" on frame {batch.indices[0]}")
            detail = (str(exc).strip().splitlines() or [""])[0]
            self._fail(StageError(f"stage {name!r} ({label}, {engine.backend}) failed{frames}: "
                                  f"{type(exc).__name__}: {detail}"))
            ready.abort()

    # -- main thread: start, reorder, write -----------------------------------------------------

    def run(self) -> StreamReport:
        setup_started = time.perf_counter()
        with _identity_engines(self._identity_engines, self.adapter.identity_stages) as engines:
            self.adapter.run_identity(engines)
        identity_seconds = time.perf_counter() - setup_started
        ready = threading.Barrier(len(self._workers) + 1)
        threads = [threading.Thread(target=self._work, args=(*w, ready), name=f"poserender-{w[2]}", daemon=True)
                   for w in self._workers]
        for t in threads:
            t.start()
        try:
            ready.wait()          # every engine is active (sessions created) before the clock starts
        except threading.BrokenBarrierError:
            pass
        setup_seconds = time.perf_counter() - setup_started
        if getattr(self.source, "live", False):     # a sender can start now: records sent earlier waited
            self.log(f"ready: rendering what arrives on {getattr(self.source, 'description', 'the live input')}")
        started = self._started = time.perf_counter()
        feeders = [threading.Thread(target=self._read, name="poserender-read", daemon=True),
                   threading.Thread(target=self._batch, name="poserender-batch", daemon=True)]
        interrupted_hard = False
        try:
            with signals.graceful(self._on_signal):
                if not self.abort.is_set():
                    for t in feeders:
                        t.start()
                self._write_loop()
        except KeyboardInterrupt as exc:
            interrupted_hard = True
            self._signal = getattr(exc, "signum", self._signal or signal.SIGINT)
            self.abort.set()
            self.source.close()
        except BaseException as exc:
            self._fail(exc if isinstance(exc, UserError) else output_error(exc, self.sink.path))
        finally:
            self._closing.set()
        # from here on the output is finished, not cut: a signal is only noted (joins and close are short)
        with signals.deferred(lambda signum: setattr(self, "_signal", self._signal or signum)):
            summary = self._finish(feeders + threads, interrupted_hard)
        seconds = time.perf_counter() - started
        return StreamReport(self.counts, seconds, setup_seconds, identity_seconds,
                            self._signal is not None or interrupted_hard, self.metrics, [w[2] for w in self._workers],
                            summary, None if self.clock is None else self.clock.summary(),
                            gpu_memory_mb=gpu_memory(self.options.devices), signal=self._signal,
                            latency=self.latency)

    def _finish(self, threads: List[threading.Thread], interrupted_hard: bool):
        """Join the threads, then close the sink (or remove it after a failure); the sink's summary."""
        for t in threads:
            if t.is_alive() and t.ident is not None:
                t.join(timeout=2.0)
        if self._failure is not None:
            self.sink.abort()
            if self.preview is not None:
                self.preview.abort()
            raise self._failure
        if interrupted_hard:   # frames still in flight are lost; say so, keep the counts honest
            lost = self.counts.frames_in - self.counts.frames_out - self.counts.dropped - self.counts.skipped
            self.counts.drop("stopped", max(0, lost))
            self.log(f"stopped at once: {max(0, lost)} frames in flight were not written")
        try:
            summary = self.sink.close()     # on failure the sink removes its partial output
        except UserError:
            raise
        except Exception as exc:
            raise output_error(exc, self.sink.path) from None
        if self.preview is not None:
            self.preview.close()
        return summary


class _identity_engines:
    """Activate the identity-stage engines for one use, and free them after."""

    def __init__(self, engines: Mapping[str, Engine], names: Sequence[str]):
        self.engines = {name: engines[name] for name in names}

    def __enter__(self) -> Mapping[str, Engine]:
        for engine in self.engines.values():
            engine.activate()
        return self.engines

    def __exit__(self, *exc) -> None:
        for engine in self.engines.values():
            engine.deactivate()
