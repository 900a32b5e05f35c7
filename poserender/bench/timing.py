"""The timing loops of a synchronous cell: one closed loop, or one per replica side by side.

A *step* is one call of a cell: ``step(frame_indices) -> ({stage: compute seconds}, uint8
frames (B, H, W, 3) or None)``. :func:`measure` warms up, then times steps until both
``min_runs`` and ``min_seconds`` are met (``time.perf_counter``); the compute of each stage is
timed inside the step, the rest of the call is host time, and the synchronous cells have no
queues. A memory sampler runs alongside.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .environment import MemorySampler
from .stats import Method, clip_outliers, summarise

Step = Callable[[np.ndarray], Tuple[Dict[str, float], Optional[np.ndarray]]]


def measure(step: Step, batch: int, n_frames: int, method: Method, frames_out: Optional[Dict[int, np.ndarray]] = None,
            gpu: bool = False, on_first: Optional[Callable[[Step, np.ndarray], None]] = None) -> Dict[str, Any]:
    """Warm up, then time ``step(frame_indices)`` until ``min_runs`` and ``min_seconds`` are met.

    Target frames cycle through the sequence; the frames of the first ``method.compare_frames``
    indices are kept in ``frames_out``. ``on_first`` runs once, untimed, before the warm-up (e.g.
    to count FLOPs).
    """
    cursor = 0

    def one() -> Tuple[float, Dict[str, float]]:
        nonlocal cursor
        indices = (cursor + np.arange(batch)) % n_frames
        cursor += batch
        start = time.perf_counter()
        compute, frames = step(indices)
        elapsed = time.perf_counter() - start
        if frames_out is not None and frames is not None:
            for i, frame in zip(indices.tolist(), frames):
                if i < method.compare_frames:
                    frames_out.setdefault(i, np.array(frame))
        return elapsed, compute

    with MemorySampler(gpu=gpu) as memory:
        if on_first is not None:
            on_first(step, np.arange(batch) % n_frames)
        warm = [one()[0] for _ in range(method.warmup)]
        times: List[float] = []
        compute: Dict[str, List[float]] = {}
        began = time.perf_counter()
        while len(times) < method.min_runs or time.perf_counter() - began < method.min_seconds:
            elapsed, stages = one()
            times.append(elapsed)
            for name, seconds in stages.items():
                compute.setdefault(name, []).append(seconds)
    result = summarise(times, batch)
    kept, _ = clip_outliers(np.asarray(times))
    compute_kept = {k: np.asarray(v)[kept] for k, v in compute.items()}
    host = np.asarray(times)[kept] - sum(compute_kept.values()) if compute_kept else np.asarray(times)[kept]
    result.update({"warmup_ms": [round(t * 1e3, 3) for t in warm],
                   "compute_ms": {k: round(float(np.median(v)) * 1e3, 3) for k, v in compute_kept.items()},
                   "host_ms": round(float(np.median(host)) * 1e3, 3), "queue_ms": 0.0,
                   **memory.report()})
    return result


def measure_replicated(steps: Sequence[Step], batch: int, n_frames: int, method: Method,
                       gpu: bool = False) -> Dict[str, Any]:
    """The steps of every replica at once, each in a worker thread taking the next batch as soon
    as it is free (closed loop); throughput = all frames / wall time of the timed window."""
    lock, stop = threading.Lock(), threading.Event()
    state = {"cursor": 0}
    times: List[float] = []
    compute: Dict[str, List[float]] = {}
    warm: List[float] = []
    barrier = threading.Barrier(len(steps) + 1)

    def worker(step: Step) -> None:
        for _ in range(method.warmup):
            start = time.perf_counter()
            step(np.arange(batch) % n_frames)
            with lock:
                warm.append(time.perf_counter() - start)
        barrier.wait()
        while not stop.is_set():
            with lock:
                indices = (state["cursor"] + np.arange(batch)) % n_frames
                state["cursor"] += batch
            start = time.perf_counter()
            stage_times, _ = step(indices)
            elapsed = time.perf_counter() - start
            with lock:
                if not stop.is_set():
                    times.append(elapsed)
                    for name, seconds in stage_times.items():
                        compute.setdefault(name, []).append(seconds)

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in steps]
    with MemorySampler(gpu=gpu) as memory:
        for t in threads:
            t.start()
        barrier.wait()
        began = time.perf_counter()
        while len(times) < method.min_runs or time.perf_counter() - began < method.min_seconds:
            time.sleep(0.01)
        stop.set()
        window = time.perf_counter() - began
        for t in threads:
            t.join()
    result = summarise(times, batch)
    host = np.asarray(times) - sum(np.asarray(v) for v in compute.values())
    result.update({"fps": round(batch * len(times) / window, 4), "fps_how": "all replicas' frames / wall time",
                   "warmup_ms": [round(t * 1e3, 3) for t in warm],
                   "compute_ms": {k: round(float(np.median(v)) * 1e3, 3) for k, v in compute.items()},
                   "host_ms": round(float(np.median(host)) * 1e3, 3), "queue_ms": 0.0, **memory.report()})
    return result
