"""What a stream is asked to do (:class:`StreamOptions`) and what it reports (:class:`StreamReport`):
frame counts, timings, per-stage metrics, per-frame latency, real-time figures, GPU memory, the
stopping signal."""
from __future__ import annotations

import dataclasses
import signal
from typing import Any, Dict, List, Optional, Sequence

from .latency import LatencyMeter
from .metrics import PipelineMetrics, peak_rss_mb
from .policy import StreamCounts


@dataclasses.dataclass
class StreamOptions:
    batch: int = 4
    max_wait_ms: float = 50.0
    on_bad_frame: str = "hold"
    devices: Sequence[str] = ("cpu",)
    replicate: bool = False
    fps: float = 15.0
    realtime: bool = False
    late: str = "hold"              # drop | hold | queue | latest (runtime/realtime.py)
    max_frames: Optional[int] = None
    max_gap: Optional[int] = None   # missing indices filled as gap frames; None: 5 s of frames at fps
    queue_batches: int = 2          # capacity of each stage's input queue, in batches


@dataclasses.dataclass
class StreamReport:
    counts: StreamCounts
    seconds: float
    setup_seconds: float
    identity_seconds: float
    interrupted: bool
    metrics: PipelineMetrics
    workers: List[str]
    sink: Any = None
    realtime: Optional[Dict[str, Any]] = None
    gpu_memory_mb: Optional[Dict[str, Any]] = None   # per GPU used, from NVML; None on CPU-only runs
    signal: Optional[int] = None    # the signal that stopped the stream (SIGINT, SIGTERM, SIGHUP)
    latency: LatencyMeter = dataclasses.field(default_factory=LatencyMeter)   # per frame, glass to glass

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal that interrupted the stream (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
        return 0 if not self.interrupted else 128 + (self.signal or signal.SIGINT)

    @property
    def fps(self) -> float:
        return self.counts.frames_out / max(self.seconds, 1e-9)

    def to_dict(self) -> Dict[str, Any]:
        return {"frames": self.counts.to_dict(), "seconds": round(self.seconds, 3), "fps": round(self.fps, 3),
                "setup_seconds": round(self.setup_seconds, 3), "identity_seconds": round(self.identity_seconds, 3),
                "interrupted": self.interrupted,
                "signal": None if self.signal is None else signal.Signals(self.signal).name,
                "workers": self.workers, "realtime": self.realtime, "latency": self.latency.to_dict(),
                "stages": self.metrics.to_dict(), "peak_rss_mb": peak_rss_mb(),
                "gpu_memory_mb": self.gpu_memory_mb,
                "output": None if self.sink is None else {"path": str(self.sink.path), "format": self.sink.format,
                                                          "frames_written": self.sink.frames_written}}


def gpu_memory(devices: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Used memory of the stream's GPUs at its end (NVML; allocators keep their pools, so this is
    about the peak), ``{"not_measured": why}`` without NVML, None when every device is the CPU."""
    indices = sorted({int(d) for d in devices if str(d).isdigit()})
    if not indices:
        return None
    from .. import gpumem

    return gpumem.used_mib(indices)
