"""The one check on keypoint values, applied wherever keypoints enter (files, live records, sources).

A frame is unusable when a coordinate or confidence is NaN/inf (kind ``nan``) or when a coordinate
is finite but beyond :data:`COORDINATE_LIMIT` pixels (kind ``range``). The second kind matters
because coordinates are read in float64 and run in float32: 1e39 is finite in float64, becomes inf
in float32, and then fails inside the graphs (an index computed from it is out of bounds); values
far below float32's limit still overflow once squared in the heat maps. No detector writes
coordinates a million pixels away from its image, so such a value is a broken record, and it is
refused like NaN instead of being clipped into a plausible-looking pose.

Inside a stream a bad frame follows ``--on-bad-frame``; for an identity input (source keypoints,
a single key pose) the caller turns it into a one-line error.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

#: largest accepted |x| or |y|, in pixels of the input (source image or PSC canvas)
COORDINATE_LIMIT = 1e6
#: the kinds a problem can have (the stream's bad-frame counters use them)
NAN, RANGE = "nan", "range"

Problem = Tuple[str, str]       # (kind, reason)


def _joints(mask: np.ndarray) -> str:
    joints = np.flatnonzero(mask)
    return ", ".join(str(j) for j in joints[:8]) + (", ..." if len(joints) > 8 else "")


def frame_problem(xy: np.ndarray, confidence: Optional[np.ndarray] = None) -> Optional[Problem]:
    """(kind, reason) for one frame's (K, 2) coordinates and optional (K,) confidences; None if usable.

    The clean case costs two reductions: ``max(|xy|) <= limit`` is False for NaN as well.
    """
    xy = np.asarray(xy)
    if xy.size and not np.abs(xy).max() <= COORDINATE_LIMIT or (
            confidence is not None and not np.isfinite(confidence).all()):
        return _explain(xy, confidence)
    return None


def _explain(xy: np.ndarray, confidence: Optional[np.ndarray]) -> Optional[Problem]:
    values = xy if confidence is None else np.concatenate([xy, np.asarray(confidence)[..., None]], axis=-1)
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        return NAN, f"{int(nonfinite.sum())} NaN/inf values (joints {_joints(nonfinite.any(axis=-1))})"
    with np.errstate(invalid="ignore"):
        beyond = np.abs(xy) > COORDINATE_LIMIT
    if beyond.any():
        worst = float(np.abs(xy).max())
        return RANGE, (f"{int(beyond.sum())} coordinates beyond +-{COORDINATE_LIMIT:.0e} pixels (joints "
                       f"{_joints(beyond.any(axis=-1))}, largest {worst:.3g}); expected pixel coordinates")
    return None


def sequence_problems(xy: np.ndarray, confidence: Optional[np.ndarray] = None) -> Dict[int, Problem]:
    """{frame: (kind, reason)} for (T, K, 2) coordinates and optional (T, K) confidences."""
    xy = np.asarray(xy)
    if not len(xy):
        return {}
    with np.errstate(invalid="ignore"):
        suspect = ~(np.abs(xy).reshape(len(xy), -1).max(axis=1) <= COORDINATE_LIMIT)
    if confidence is not None:
        suspect |= ~np.isfinite(np.asarray(confidence).reshape(len(xy), -1)).all(axis=1)
    found = {}
    for t in np.flatnonzero(suspect):
        problem = _explain(xy[t], None if confidence is None else confidence[t])
        if problem is not None:
            found[int(t)] = problem
    return found
