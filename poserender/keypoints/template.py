"""A synthetic upper-body pose in the 122-joint layout, and a simple procedural gesture.

Used where real keypoints are not at hand: export verification inputs, tests, and the demo
clip of the randomly initialised model. Coordinates are in a unit square (x right, y down);
:func:`template_pose` scales them to a canvas. This is a plausible frontal figure, not data
from any person.
"""
from __future__ import annotations

import numpy as np

from .layout import N_JOINTS


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _hand(wrist: np.ndarray, direction: float, size: float) -> np.ndarray:
    """21 hand points: wrist, then 5 fingers of 4 joints fanning around ``direction`` (radians)."""
    pts = [wrist]
    for finger in range(5):
        angle = direction + (finger - 2) * 0.3
        for joint in range(1, 5):
            r = size * (0.35 + 0.18 * joint)
            pts.append(wrist + r * np.array([np.cos(angle), np.sin(angle)]))
    return np.asarray(pts)


def unit_template() -> np.ndarray:
    """(122, 2) float64 pose in a unit square, facing the viewer, arms down."""
    body = np.array([[0.50, 0.26], [0.50, 0.45], [0.36, 0.47], [0.30, 0.64], [0.31, 0.80],
                     [0.64, 0.47], [0.70, 0.64], [0.69, 0.80]])
    eyes = np.array([[0.47, 0.23], [0.53, 0.23]])
    jaw = _arc(0.50, 0.24, 0.075, 0.10, 0.0, np.pi, 17)[::-1]
    brows = np.concatenate([_arc(0.465, 0.215, 0.025, 0.01, np.pi, 2 * np.pi, 5),
                            _arc(0.535, 0.215, 0.025, 0.01, np.pi, 2 * np.pi, 5)])
    nose = np.concatenate([np.stack([np.full(4, 0.50), np.linspace(0.23, 0.27, 4)], 1),
                           _arc(0.50, 0.275, 0.015, 0.005, 0.2, np.pi - 0.2, 5)])
    eye_r = _arc(0.47, 0.232, 0.012, 0.006, 0, 2 * np.pi, 7)[:6]
    eye_l = _arc(0.53, 0.232, 0.012, 0.006, 0, 2 * np.pi, 7)[:6]
    mouth_outer = _arc(0.50, 0.300, 0.025, 0.010, 0, 2 * np.pi, 13)[:12]
    mouth_inner = _arc(0.50, 0.300, 0.015, 0.005, 0, 2 * np.pi, 9)[:8]
    pupils = np.array([[0.47, 0.232], [0.53, 0.232]])
    face = np.concatenate([jaw, brows, nose, eye_r, eye_l, mouth_outer, mouth_inner, pupils])
    left_hand = _hand(body[7], np.pi / 2, 0.05)
    right_hand = _hand(body[4], np.pi / 2, 0.05)
    pose = np.concatenate([body, eyes, face, left_hand, right_hand])
    assert pose.shape == (N_JOINTS, 2)
    return pose


def template_pose(height: int, width: int) -> np.ndarray:
    """The template in canvas pixels, (122, 2) float64."""
    return unit_template() * np.array([width, height], dtype=np.float64)


def gesture_sequence(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(frames, 122, 2) float64 canvas pixels: arms swinging, head nodding, mouth moving."""
    rng = np.random.default_rng(seed)
    base = unit_template()
    phase = rng.uniform(0, 2 * np.pi, size=4)
    out = np.empty((frames, N_JOINTS, 2))
    for t in range(frames):
        pose = base.copy()
        s = t / 12.0
        for side, (_shoulder, elbow, wrist, hand) in enumerate(((2, 3, 4, slice(101, 122)),
                                                               (5, 6, 7, slice(80, 101)))):
            lift = 0.10 * (1 + np.sin(s + phase[side]))
            sign = -1 if side == 0 else 1
            pose[elbow] += [sign * 0.4 * lift, -0.5 * lift]
            delta = np.array([sign * 0.2 * lift, -1.3 * lift + 0.03 * np.sin(2.1 * s + phase[2])])
            pose[wrist] += delta
            pose[hand] += delta
        nod = 0.008 * np.sin(1.7 * s + phase[3])
        pose[[0, 8, 9]] += [0, nod]
        pose[10:80] += [0, nod]
        pose[58:78, 1] += 0.004 * np.sin(5.0 * s) * np.sign(pose[58:78, 1] - 0.30)
        out[t] = pose
    return out * np.array([width, height], dtype=np.float64)
