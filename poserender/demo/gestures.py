"""Procedural upper-body gestures: a small articulated puppet posed by a handful of parameters
per frame, written out as OpenPose keypoints.

The puppet has the proportions of an upper body seen from the front on a square canvas
(shoulders about a third of the width apart, arms that can reach above the head, a head about a
fifth of the canvas tall). Each frame is a :class:`PoseParams` vector: body sway and shoulder
tilt, head yaw/pitch/roll, mouth opening, blink, and per arm shoulder abduction, elbow flexion,
wrist bend, finger curl and an index-finger "point". :func:`gesture_params` strings gestures
together (rest, speech beats, pointing left/right/up, open palms, a wave, arm swings) as
segments with smooth, critically damped transitions, adds slow head motion and talking, and
clamps everything to joint limits. :func:`pose_from_params` turns one vector into the 122
model joints by forward kinematics (face points come from a 3-D face template rotated by the
head angles and projected orthographically), so bone lengths stay fixed and the face turns as a
face does. Everything is deterministic for a seed.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from ..keypoints.layout import N_BODY25, N_FACE, N_HAND, N_JOINTS, N_OPENPOSE, OPENPOSE_TO_122

#: parameter names, in vector order; ``r_``/``l_`` = the person's right (image left) / left arm
PARAMS: Tuple[str, ...] = (
    "sway", "tilt", "yaw", "pitch", "roll", "mouth", "blink", "gaze",
    "r_abduct", "r_flex", "r_wrist", "r_curl", "r_point",
    "l_abduct", "l_flex", "l_wrist", "l_curl", "l_point",
)
P = {name: i for i, name in enumerate(PARAMS)}

#: joint limits (radians for angles, canvas/256 pixels for sway, 0..1 for the rest)
LIMITS: Dict[str, Tuple[float, float]] = {
    "sway": (-10.0, 10.0), "tilt": (-0.08, 0.08), "yaw": (-0.55, 0.55), "pitch": (-0.25, 0.25),
    "roll": (-0.15, 0.15), "mouth": (0.0, 1.0), "blink": (0.0, 1.0), "gaze": (-1.0, 1.0),
    "r_abduct": (-0.3, 2.6), "r_flex": (0.0, 2.5), "r_wrist": (-0.7, 0.7), "r_curl": (0.0, 1.0),
    "r_point": (0.0, 1.0),
    "l_abduct": (-0.3, 2.6), "l_flex": (0.0, 2.5), "l_wrist": (-0.7, 0.7), "l_curl": (0.0, 1.0),
    "l_point": (0.0, 1.0),
}
_LO = np.array([LIMITS[n][0] for n in PARAMS])
_HI = np.array([LIMITS[n][1] for n in PARAMS])

#: body measures in pixels on a 256 canvas (scaled with the canvas)
NECK_Y = 122.0
SHOULDER_HALF = 40.0
UPPER_ARM = 50.0
FOREARM = 46.0
HAND = 24.0
HEAD_R = 30.0          # face half width
HEAD_UP = 48.0         # neck -> head centre

#: rest pose: arms hanging slightly away from the body, elbows a little bent, hands relaxed
REST = {"r_abduct": 0.12, "r_flex": 0.35, "r_curl": 0.35, "l_abduct": 0.12, "l_flex": 0.35, "l_curl": 0.35}


def clamp(params: np.ndarray) -> np.ndarray:
    return np.clip(params, _LO, _HI)


def rest_params() -> np.ndarray:
    v = np.zeros(len(PARAMS))
    for name, value in REST.items():
        v[P[name]] = value
    return v


# ----------------------------------------------------------------------------------------- face
def _face_template() -> np.ndarray:
    """(70, 3) canonical face in head units (x right in the image, y down, z towards the
    camera), neutral: mouth closed, eyes open. Mouth and eyes are opened in :func:`_face`."""
    pts = np.zeros((N_FACE, 3))
    phi = np.linspace(0.0, np.pi, 17)                                      # jaw, image left -> right
    pts[0:17] = np.stack([-np.cos(phi) * 0.95, -0.12 + np.sin(phi) * 1.08, 0.15 + 0.45 * np.sin(phi)], 1)
    bx = np.linspace(-0.68, -0.16, 5)                                       # right brow (image left)
    pts[17:22] = np.stack([bx, -0.47 - 0.07 * np.sin(np.linspace(0.3, np.pi - 0.3, 5)), np.full(5, 0.85)], 1)
    pts[22:27] = pts[17:22][::-1] * [-1, 1, 1]
    pts[27:31] = np.stack([np.zeros(4), np.linspace(-0.28, 0.14, 4), np.linspace(0.95, 1.2, 4)], 1)
    pts[31:36] = np.stack([np.linspace(-0.17, 0.17, 5), [0.22, 0.25, 0.27, 0.25, 0.22],
                           [1.0, 1.06, 1.1, 1.06, 1.0]], 1)
    # eyes, both in OpenPose order: image-left corner, two top points, image-right corner, two bottom
    a = np.array([np.pi, 4 * np.pi / 3, 5 * np.pi / 3, 0.0, np.pi / 3, 2 * np.pi / 3])
    for base, cx in ((36, -0.37), (42, 0.37)):
        pts[base:base + 6] = np.stack([cx + 0.17 * np.cos(a), -0.22 + 0.075 * np.sin(a), np.full(6, 0.82)], 1)
    t = np.linspace(0, 2 * np.pi, 13)[:12]                                  # outer lip from the right corner
    pts[48:60] = np.stack([-0.33 * np.cos(t), 0.55 - 0.09 * np.sin(t), 0.9 + 0.05 * np.sin(t) ** 2], 1)
    t = np.linspace(0, 2 * np.pi, 9)[:8]                                    # inner lip
    pts[60:68] = np.stack([-0.24 * np.cos(t), 0.55 - 0.02 * np.sin(t), np.full(8, 0.92)], 1)
    pts[68] = [-0.37, -0.22, 0.86]
    pts[69] = [0.37, -0.22, 0.86]
    return pts


_FACE = _face_template()
_NOSE_TIP = np.array([0.0, 0.12, 1.25])


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _face(v: np.ndarray, centre: np.ndarray, unit: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face points (70, 2), nose tip (2,) and eye centres (2, 2) in pixels."""
    pts = _FACE.copy()
    mouth, blink, gaze = v[P["mouth"]], v[P["blink"]], v[P["gaze"]]
    lower_outer = pts[48:60, 1] > 0.55 + 1e-9
    pts[48:60, 1] += np.where(lower_outer, 0.28 * mouth, 0.0)
    pts[48:60, 1] += np.where(np.abs(pts[48:60, 0]) > 0.32, 0.10 * mouth, 0.0)     # corners
    lower_inner = np.array([False, False, False, False, False, True, True, True])
    pts[60:68, 1] += np.where(lower_inner, 0.26 * mouth + 0.01, -0.01)
    pts[64, 1] += 0.12 * mouth
    pts[60, 1] += 0.12 * mouth
    for base, cx in ((36, -0.37), (42, 0.37)):
        pts[base:base + 6, 1] = -0.22 + (pts[base:base + 6, 1] + 0.22) * (1.0 - 0.9 * blink)
    pts[68, 0] += 0.06 * gaze
    pts[69, 0] += 0.06 * gaze
    rot = _rotation(v[P["yaw"]], v[P["pitch"]], v[P["roll"]])
    proj = (pts @ rot.T)[:, :2] * (HEAD_R * unit) + centre
    nose = (rot @ _NOSE_TIP)[:2] * (HEAD_R * unit) + centre
    eyes = np.stack([proj[36:42].mean(0), proj[42:48].mean(0)])
    return proj, nose, eyes


# ----------------------------------------------------------------------------------------- hands
def _rot2(vec: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vec[0] - s * vec[1], s * vec[0] + c * vec[1]])


def _hand(wrist: np.ndarray, direction: np.ndarray, side: int, curl: float, point: float, unit: float) -> np.ndarray:
    """21 OpenPose hand points. ``side`` +1 for the person's right hand (thumb towards the body
    midline, image right, for a palm facing the camera), -1 for the left."""
    d = direction / (np.linalg.norm(direction) + 1e-9)
    perp = np.array([-d[1], d[0]]) * side            # towards the thumb
    size = HAND * unit
    pts = [wrist]
    thumb_base = wrist + d * 0.12 * size + perp * 0.22 * size
    thumb_dir = _rot2(d, side * 0.9)
    c = curl * 0.8
    for k, length in enumerate((0.0, 0.28, 0.22, 0.18)):
        if k == 0:
            p = thumb_base
        else:
            thumb_dir = _rot2(thumb_dir, -side * c * 0.5)
            p = p + thumb_dir * length * size * (1 - 0.3 * c)
        pts.append(p)
    for f, (offset, lengths) in enumerate(((0.22, (0.26, 0.16, 0.13)), (0.07, (0.28, 0.18, 0.14)),
                                          (-0.08, (0.26, 0.17, 0.13)), (-0.22, (0.21, 0.13, 0.11)))):
        knuckle = wrist + d * 0.48 * size + perp * offset * size
        fcurl = curl * (1 - point) if f == 0 else max(curl, point)
        fdir = _rot2(d, side * (0.12 - 0.09 * f))
        p = knuckle
        pts.append(p)
        for length in lengths:
            fdir = _rot2(fdir, -side * fcurl * 0.55)
            p = p + fdir * length * size * (1 - 0.55 * fcurl)
            pts.append(p)
    return np.asarray(pts)


# ----------------------------------------------------------------------------------------- body
def pose_from_params(v: np.ndarray, size: int = 256) -> np.ndarray:
    """(122, 2) float64 pixel coordinates of the puppet posed by ``v`` on a ``size`` canvas."""
    v = clamp(np.asarray(v, dtype=np.float64))
    unit = size / 256.0
    pose = np.zeros((N_JOINTS, 2))
    neck = np.array([size / 2 + v[P["sway"]] * unit, NECK_Y * unit])
    across = _rot2(np.array([1.0, 0.0]), v[P["tilt"]])
    down = np.array([-across[1], across[0]])
    pose[1] = neck
    shoulders = {+1: neck - across * SHOULDER_HALF * unit + down * 6 * unit,      # person's right = image left
                 -1: neck + across * SHOULDER_HALF * unit + down * 6 * unit}
    centre = neck - down * HEAD_UP * unit + across * v[P["roll"]] * 10 * unit
    face, nose, eyes = _face(v, centre, unit)
    pose[0] = nose
    pose[8], pose[9] = eyes[0], eyes[1]
    pose[10:80] = face
    for side, (s_idx, e_idx, w_idx, hand_slice, pre) in (
            (+1, (2, 3, 4, slice(101, 122), "r_")), (-1, (5, 6, 7, slice(80, 101), "l_"))):
        shoulder = shoulders[side]
        a, f, w = v[P[pre + "abduct"]], v[P[pre + "flex"]], v[P[pre + "wrist"]]
        # upper arm: hanging = "down"; abduction swings it outwards (image left for the right arm)
        upper = _rot2(down, side * a)
        elbow = shoulder + upper * UPPER_ARM * unit
        fore = _rot2(upper, -side * f)                       # flexion brings the forearm inwards/up
        fore_len = FOREARM * unit * (1.0 - 0.3 * np.sin(min(f, np.pi / 2)) * (1 - min(a, 1.2) / 1.2))
        wrist = elbow + fore * fore_len
        pose[s_idx], pose[e_idx], pose[w_idx] = shoulder, elbow, wrist
        pose[hand_slice] = _hand(wrist, _rot2(fore, -side * w), side, v[P[pre + "curl"]], v[P[pre + "point"]], unit)
    return pose


def pose122_to_openpose(pose: np.ndarray) -> np.ndarray:
    """(3, 137) OpenPose array (x, y, confidence) from (122, 2); points the puppet does not have
    (hips, legs, ears, feet) get confidence 0, as OpenPose writes undetected points."""
    out = np.zeros((3, N_OPENPOSE), dtype=np.float32)
    cols = np.asarray(OPENPOSE_TO_122)
    out[0, cols] = pose[:, 0]
    out[1, cols] = pose[:, 1]
    out[2, cols] = 1.0
    assert N_BODY25 + N_FACE + 2 * N_HAND == N_OPENPOSE
    return out


# ----------------------------------------------------------------------------------------- motion
@dataclasses.dataclass(frozen=True)
class Gesture:
    name: str
    targets: Dict[str, Tuple[float, float]]     # parameter -> (low, high) of the target drawn
    beats: float = 0.0                          # amplitude of speech beats on the elbows
    duration: Tuple[float, float] = (0.8, 2.0)  # seconds


_BOTH = lambda name, lo, hi: {"r_" + name: (lo, hi), "l_" + name: (lo, hi)}  # noqa: E731

GESTURES: Tuple[Gesture, ...] = (
    Gesture("rest", {**_BOTH("abduct", 0.05, 0.2), **_BOTH("flex", 0.2, 0.5), **_BOTH("curl", 0.3, 0.5)},
            duration=(0.6, 1.4)),
    Gesture("beat", {**_BOTH("abduct", 0.15, 0.45), **_BOTH("flex", 1.2, 1.9), **_BOTH("curl", 0.1, 0.5),
                     **_BOTH("wrist", -0.3, 0.3)}, beats=0.25),
    Gesture("beat_right", {"r_abduct": (0.2, 0.6), "r_flex": (1.3, 2.0), "r_curl": (0.0, 0.4),
                           "l_abduct": (0.05, 0.2), "l_flex": (0.2, 0.5)}, beats=0.3),
    Gesture("beat_left", {"l_abduct": (0.2, 0.6), "l_flex": (1.3, 2.0), "l_curl": (0.0, 0.4),
                          "r_abduct": (0.05, 0.2), "r_flex": (0.2, 0.5)}, beats=0.3),
    Gesture("point_right", {"r_abduct": (0.9, 1.5), "r_flex": (0.0, 0.25), "r_point": (1.0, 1.0),
                            "r_curl": (0.8, 1.0), "l_abduct": (0.05, 0.2), "l_flex": (0.2, 0.6), "yaw": (-0.4, -0.2)}),
    Gesture("point_left", {"l_abduct": (0.9, 1.5), "l_flex": (0.0, 0.25), "l_point": (1.0, 1.0),
                           "l_curl": (0.8, 1.0), "r_abduct": (0.05, 0.2), "r_flex": (0.2, 0.6), "yaw": (0.2, 0.4)}),
    Gesture("point_up", {"r_abduct": (2.2, 2.5), "r_flex": (0.0, 0.3), "r_point": (1.0, 1.0), "r_curl": (0.8, 1.0),
                         "l_abduct": (0.05, 0.2), "l_flex": (0.3, 0.6), "pitch": (-0.2, -0.1)}),
    Gesture("open_palms", {**_BOTH("abduct", 0.6, 1.0), **_BOTH("flex", 0.8, 1.3), **_BOTH("curl", 0.0, 0.1),
                           **_BOTH("wrist", 0.2, 0.5)}),
    Gesture("wave", {"r_abduct": (1.6, 2.0), "r_flex": (1.3, 1.7), "r_curl": (0.0, 0.1),
                     "l_abduct": (0.05, 0.2), "l_flex": (0.2, 0.5)}, duration=(1.2, 2.2)),
    Gesture("swing", {**_BOTH("abduct", 0.3, 1.2), **_BOTH("flex", 0.2, 1.0)}, duration=(1.0, 2.0)),
)


def _smooth_noise(rng: np.random.Generator, frames: int, fps: float, hz: float) -> np.ndarray:
    """Zero-mean, unit-ish band-limited noise: white noise through two passes of a one-pole filter."""
    x = rng.normal(size=frames + 64)
    a = np.exp(-2 * np.pi * hz / fps)
    for _ in range(2):
        y = np.empty_like(x)
        acc = 0.0
        for i, value in enumerate(x):
            acc = a * acc + (1 - a) * value
            y[i] = acc
        x = y
    x = x[64:]
    return x / (x.std() + 1e-9)


def _spring(targets: np.ndarray, fps: float, omega: float) -> np.ndarray:
    """Follow a piecewise-constant target with a critically damped spring (no overshoot)."""
    out = np.empty_like(targets)
    pos, vel = targets[0].copy(), np.zeros(targets.shape[1])
    dt = 1.0 / fps
    for i, target in enumerate(targets):
        for _ in range(2):                       # two sub-steps: stable at omega * dt up to ~1.5
            h = dt / 2
            acc = omega * omega * (target - pos) - 2 * omega * vel
            vel = vel + acc * h
            pos = pos + vel * h
        out[i] = pos
    return out


def gesture_params(frames: int, seed: int = 0, fps: float = 25.0) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
    """(frames, len(PARAMS)) parameters and the gesture schedule [(start frame, name), ...]."""
    if frames < 1:
        raise ValueError(f"frames={frames}; expected at least 1")
    rng = np.random.default_rng(seed)
    targets = np.tile(rest_params(), (frames, 1))
    beats = np.zeros(frames)
    schedule: List[Tuple[int, str]] = []
    start = 0
    previous = None
    while start < frames:
        choices = [g for g in GESTURES if g.name != previous]
        gesture = choices[rng.integers(len(choices))]
        length = max(1, int(round(rng.uniform(*gesture.duration) * fps)))
        target = rest_params()
        for name, (lo, hi) in gesture.targets.items():
            target[P[name]] = rng.uniform(lo, hi)
        end = min(frames, start + length)
        targets[start:end] = target
        beats[start:end] = gesture.beats
        if gesture.name == "wave":                 # wrist oscillation around the held forearm
            t = np.arange(end - start) / fps
            targets[start:end, P["r_wrist"]] = 0.5 * np.sin(2 * np.pi * 2.0 * t)
        schedule.append((start, gesture.name))
        previous = gesture.name
        start = end
    params = _spring(targets, fps, omega=9.0)
    # speech beats: quick elbow/abduction pulses at ~2.2 Hz, in phase for both arms
    t = np.arange(frames) / fps
    pulse = np.sin(2 * np.pi * 2.2 * t + rng.uniform(0, 2 * np.pi)) + 0.5 * _smooth_noise(rng, frames, fps, 3.0)
    beat_env = _spring(beats[:, None], fps, omega=6.0)[:, 0]
    for pre in ("r_", "l_"):
        params[:, P[pre + "flex"]] += beat_env * pulse * 0.6
        params[:, P[pre + "abduct"]] += beat_env * pulse * 0.2
    # slow head motion, body sway, talking mouth, blinks, gaze
    params[:, P["yaw"]] += 0.18 * _smooth_noise(rng, frames, fps, 0.3)
    params[:, P["pitch"]] += 0.06 * _smooth_noise(rng, frames, fps, 0.6) + 0.04 * beat_env * pulse
    params[:, P["roll"]] += 0.05 * _smooth_noise(rng, frames, fps, 0.3)
    params[:, P["sway"]] += 3.0 * _smooth_noise(rng, frames, fps, 0.2)
    params[:, P["tilt"]] += 0.025 * _smooth_noise(rng, frames, fps, 0.25)
    params[:, P["gaze"]] += 0.5 * _smooth_noise(rng, frames, fps, 0.4)
    talking = _spring((_smooth_noise(rng, frames, fps, 0.15) > -0.6).astype(float)[:, None], fps, 4.0)[:, 0]
    syllables = np.clip(0.5 + 0.7 * _smooth_noise(rng, frames, fps, 4.0), 0, 1)
    params[:, P["mouth"]] = talking * syllables
    blink = np.zeros(frames)
    i = int(rng.integers(0, int(fps * 2)))
    while i < frames:
        blink[i:i + 3] = (1.0, 0.8, 0.3)[:max(0, min(3, frames - i))]
        i += int(rng.uniform(2.0, 5.0) * fps)
    params[:, P["blink"]] = blink
    return clamp(params), schedule


def gesture_sequence(frames: int, size: int = 256, seed: int = 0, fps: float = 25.0) -> np.ndarray:
    """(frames, 122, 2) float64 pixel poses of a generated gesture clip."""
    params, _ = gesture_params(frames, seed, fps)
    return np.stack([pose_from_params(p, size) for p in params])


def rest_pose(size: int = 256) -> np.ndarray:
    """(122, 2) the puppet at rest, facing the camera, mouth closed: the demo's source pose."""
    return pose_from_params(rest_params(), size)
