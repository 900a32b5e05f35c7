"""How a cell's timed calls become numbers: the method, outlier clipping, percentiles, frame checks.

One call is one batch. Calls slower than the outlier fence (:func:`clip_outliers`) are dropped
from the statistics and counted; the raw p99/max stay in the result. Throughput is frames /
total kept time; latency percentiles are per call.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from ..errors import UserError

PERCENTILES = (50, 90, 95, 99)
OUTLIER_IQR, OUTLIER_MIN_RATIO = 3.0, 1.2
OUTLIER_RULE = (f"calls slower than max(Q3 + {OUTLIER_IQR:g} x IQR, {OUTLIER_MIN_RATIO:g} x median) are dropped "
                "from the statistics and counted (clipped); raw p99/max are kept beside")
#: frames agree with the baseline's when the worst channel is within GUARD_LEVELS on GUARD_FRACTION of pixels
GUARD_LEVELS, GUARD_FRACTION = 2, 0.999


@dataclasses.dataclass
class Method:
    """Per cell: ``warmup`` untimed calls, then timed calls until both ``min_seconds`` and
    ``min_runs`` are reached; ``threads`` for torch and ONNX Runtime; the first
    ``compare_frames`` target frames are kept for the frame checks."""

    warmup: int = 2
    min_seconds: float = 10.0
    min_runs: int = 10
    threads: int = 1
    compare_frames: int = 8

    def check(self) -> None:
        for name, ok, wanted in (("--warmup", self.warmup >= 1, ">= 1"), ("--min-runs", self.min_runs >= 3, ">= 3"),
                                 ("--min-seconds", self.min_seconds >= 0, ">= 0"),
                                 ("--threads", self.threads >= 1, ">= 1")):
            if not ok:
                raise UserError(f"{name} is {getattr(self, name[2:].replace('-', '_'))}; expected {wanted}")


def clip_outliers(times: np.ndarray) -> Tuple[np.ndarray, float]:
    """(mask of kept calls, fence in seconds): see OUTLIER_RULE. Machine noise (another process
    taking the cores for a moment) shows up as a few calls far above the rest."""
    times = np.asarray(times, dtype=np.float64)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    fence = max(q3 + OUTLIER_IQR * (q3 - q1), OUTLIER_MIN_RATIO * median)
    return times <= fence, float(fence)


def summarise(times: Sequence[float], batch: int) -> Dict[str, Any]:
    """Statistics of one cell's timed calls (seconds, one call = one batch) in ms and frames/s."""
    times = np.asarray(times, dtype=np.float64)
    kept_mask, fence = clip_outliers(times)
    kept = times[kept_mask]
    ms = lambda v: round(float(v) * 1e3, 3)  # noqa: E731
    per_frame = kept / batch
    return {
        "runs": int(times.size), "clipped": int(times.size - kept.size), "clip_fence_ms": ms(fence),
        "timed_s": round(float(times.sum()), 3),
        "fps": round(batch * kept.size / float(kept.sum()), 4),
        "latency_ms": {**{f"p{p}": ms(np.percentile(kept, p)) for p in PERCENTILES},
                       "mean": ms(kept.mean()), "min": ms(kept.min()), "max": ms(kept.max())},
        "latency_raw_ms": {"p99": ms(np.percentile(times, 99)), "max": ms(times.max())},
        "per_frame_ms": {"min": ms(per_frame.min()), "median": ms(np.median(per_frame)), "max": ms(per_frame.max())},
        "noise_cv": round(float(kept.std() / kept.mean()), 4) if kept.size > 1 else 0.0,
    }


def frame_agreement(reference: Dict[int, np.ndarray], got: Dict[int, np.ndarray]) -> Dict[str, Any]:
    """uint8 frames of the same index: worst-channel difference, share within GUARD_LEVELS, PSNR."""
    common = sorted(set(reference) & set(got))
    if not common:
        return {"frames_compared": 0, "passed": False}
    a = np.stack([reference[i] for i in common]).astype(np.int16)
    b = np.stack([got[i] for i in common]).astype(np.int16)
    diff = np.abs(a - b).max(-1)
    mse = float(np.mean((a - b).astype(np.float64) ** 2))
    within = float((diff <= GUARD_LEVELS).mean())
    return {"frames_compared": len(common), "max_abs_diff": int(diff.max()),
            "fraction_within_2_levels": round(within, 6),
            "psnr_db": None if mse == 0 else round(10 * math.log10(255.0 ** 2 / mse), 2),
            "passed": within >= GUARD_FRACTION}


def round_or_none(value, digits: int = 3):
    """``value`` rounded, or None for None and NaN (a stream that never wrote a frame)."""
    return None if value is None or value != value else round(float(value), digits)
