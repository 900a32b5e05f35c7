"""Stream metrics: per-stage compute and queue time (p50/p90/p99), throughput, memory.

Each stage of the pipeline (``read``, ``prepare``, every model stage, ``write``) records, per
batch, the time it computed and the time the batch waited in the stage's input queue. Samples
are kept in a fixed-size ring per stage, so a stream of any length uses constant memory; the
percentiles are over the most recent :data:`WINDOW` batches, the totals over all of them.
"""
from __future__ import annotations

import resource
import sys
import threading
from typing import Any, Dict, List, Optional

import numpy as np

WINDOW = 4096
PERCENTILES = (50, 90, 99)


class Samples:
    """A ring of the last WINDOW float samples (seconds) plus a running count and sum."""

    def __init__(self, window: int = WINDOW):
        self._ring = np.zeros(window, dtype=np.float64)
        self.count, self.total = 0, 0.0

    def add(self, value: float) -> None:
        self._ring[self.count % len(self._ring)] = value
        self.count += 1
        self.total += value

    def summary_ms(self) -> Dict[str, float]:
        """{"p50", "p90", "p99", "mean"} in milliseconds (zeros when empty)."""
        if self.count == 0:
            return {f"p{p}": 0.0 for p in PERCENTILES} | {"mean": 0.0}
        kept = self._ring[:min(self.count, len(self._ring))] * 1e3
        values = np.percentile(kept, PERCENTILES)
        return {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, values)} | {
            "mean": round(self.total / self.count * 1e3, 3)}


class StageMetrics:
    """Compute and queue time per batch of one stage (all its workers together)."""

    def __init__(self, name: str, workers: int = 1):
        self.name, self.workers = name, workers
        self.compute, self.queue = Samples(), Samples()
        self.frames = 0
        self._lock = threading.Lock()

    def record(self, compute_s: float, queue_s: float, frames: int) -> None:
        with self._lock:
            self.compute.add(compute_s)
            self.queue.add(queue_s)
            self.frames += frames

    def to_dict(self) -> Dict[str, Any]:
        with self._lock:
            return {"workers": self.workers, "batches": self.compute.count, "frames": self.frames,
                    "compute_ms": self.compute.summary_ms(), "queue_ms": self.queue.summary_ms(),
                    "busy_s": round(self.compute.total, 3)}


class PipelineMetrics:
    """The stages of one stream, in pipeline order."""

    def __init__(self):
        self.stages: Dict[str, StageMetrics] = {}

    def stage(self, name: str, workers: int = 1) -> StageMetrics:
        if name not in self.stages:
            self.stages[name] = StageMetrics(name, workers)
        return self.stages[name]

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return {name: stage.to_dict() for name, stage in self.stages.items()}

    def table(self) -> List[str]:
        """Lines of a fixed-width table: stage, workers, batches, compute and queue p50/p90/p99 (ms)."""
        lines = [f"{'stage':<16}{'workers':>8}{'batches':>9}   compute ms p50/p90/p99     queue ms p50/p90/p99"]
        for name, stage in self.stages.items():
            d = stage.to_dict()
            c, q = d["compute_ms"], d["queue_ms"]
            lines.append(f"{name:<16}{d['workers']:>8}{d['batches']:>9}   "
                         f"{c['p50']:8.2f} {c['p90']:8.2f} {c['p99']:8.2f}    "
                         f"{q['p50']:8.2f} {q['p90']:8.2f} {q['p99']:8.2f}")
        return lines


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def current_rss_mb() -> Optional[float]:
    """Current resident set size in MiB from /proc (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return round(pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 1)
