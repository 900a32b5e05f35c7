"""Draw the demo "puppet" from its 122 keypoints: the ground truth the demo model learns.

Everything drawn follows the keypoints, so a frame is a function of the pose alone (one
identity, a fixed background): the torso and collar from the neck and shoulders, sleeves and
forearms as shaded capsules from the arm joints, palms and fingers from the 21 hand points,
the head outline from the jaw line (the skull is the ellipse through the jaw's end points),
hair above it, and brows, eyes with pupils, nose and an opening mouth from the face points.
It is drawn at twice the size with anti-aliased primitives and reduced with area averaging.
"""
from __future__ import annotations

import functools
from typing import Sequence, Tuple

import cv2
import numpy as np

#: colours (BGR)
SKIN = (150, 180, 225)
SKIN_DARK = (115, 145, 195)
SHIRT = (120, 70, 40)
SHIRT_DARK = (85, 45, 25)
SHIRT_LIGHT = (160, 105, 65)
HAIR = (30, 40, 60)
LIPS = (95, 95, 190)
MOUTH = (40, 30, 90)
EYE_WHITE = (245, 245, 245)
PUPIL = (60, 50, 40)
BROW = (30, 35, 50)

SUPERSAMPLE = 2


@functools.lru_cache(maxsize=4)
def background(size: int) -> np.ndarray:
    """The fixed room behind the puppet: a wall with a soft gradient and a fine texture, a
    darker panel at the bottom, a framed picture and a shelf. Read-only; copy before drawing."""
    rng = np.random.default_rng(20211010)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    wall = np.stack([150 + 30 * xx, 165 - 25 * yy, 120 + 20 * yy], -1)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), max(0.6, size / 256))
    wall += 6 * grain[..., None]
    stripes = 4 * np.sin(xx * 2 * np.pi * 9)[..., None]
    wall += stripes
    image = np.clip(wall, 0, 255).astype(np.uint8)
    s = size / 256
    cv2.rectangle(image, (0, int(200 * s)), (size, size), (80, 95, 110), -1)
    cv2.line(image, (0, int(200 * s)), (size, int(200 * s)), (60, 70, 85), max(1, int(3 * s)), cv2.LINE_AA)
    cv2.rectangle(image, (int(182 * s), int(22 * s)), (int(238 * s), int(70 * s)), (40, 70, 110), -1)
    cv2.rectangle(image, (int(188 * s), int(28 * s)), (int(232 * s), int(64 * s)), (170, 140, 90), -1)
    cv2.circle(image, (int(205 * s), int(42 * s)), max(2, int(7 * s)), (60, 180, 230), -1, cv2.LINE_AA)
    pts = np.array([[188, 64], [205, 48], [218, 58], [232, 44], [232, 64]]) * s
    cv2.fillPoly(image, [pts.astype(np.int32)], (70, 120, 60), cv2.LINE_AA)
    cv2.rectangle(image, (int(14 * s), int(60 * s)), (int(70 * s), int(66 * s)), (50, 80, 120), -1)
    for i, colour in enumerate(((60, 60, 160), (150, 90, 50), (70, 140, 90))):
        x0 = int((20 + 14 * i) * s)
        cv2.rectangle(image, (x0, int(38 * s)), (x0 + int(10 * s), int(60 * s)), colour, -1)
    image.setflags(write=False)
    return image


def _ipts(points: np.ndarray) -> np.ndarray:
    return np.round(points * 16).astype(np.int32)     # 4 fractional bits for cv2's shift=4


def _poly(img: np.ndarray, points: np.ndarray, colour: Tuple[int, int, int]) -> None:
    cv2.fillPoly(img, [_ipts(points)], colour, cv2.LINE_AA, shift=4)


def _line(img: np.ndarray, a: np.ndarray, b: np.ndarray, colour, width: float) -> None:
    cv2.line(img, tuple(_ipts(a)), tuple(_ipts(b)), colour, max(1, int(round(width))), cv2.LINE_AA, shift=4)


def _polyline(img: np.ndarray, points: np.ndarray, colour, width: float, closed: bool = False) -> None:
    cv2.polylines(img, [_ipts(points)], closed, colour, max(1, int(round(width))), cv2.LINE_AA, shift=4)


def _circle(img: np.ndarray, c: np.ndarray, r: float, colour) -> None:
    cv2.circle(img, tuple(_ipts(c)), int(round(r * 16)), colour, -1, cv2.LINE_AA, shift=4)


def _capsule(img: np.ndarray, a: np.ndarray, b: np.ndarray, width: float, dark, mid, light) -> None:
    """A limb segment shaded like a cylinder lit from the upper left."""
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    if n[0] + n[1] > 0:
        n = -n
    _line(img, a, b, dark, width)
    _line(img, a + n * width * 0.08, b + n * width * 0.08, mid, width * 0.72)
    _line(img, a + n * width * 0.22, b + n * width * 0.22, light, width * 0.25)


def _arc(centre: np.ndarray, u: np.ndarray, up: np.ndarray, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, np.pi, n)
    return centre + np.outer(np.cos(t), u) * rx + np.outer(np.sin(t), up) * ry


def _torso(img: np.ndarray, pose: np.ndarray, unit: float, height: int) -> None:
    neck, rs, ls = pose[1], pose[2], pose[5]
    across = (ls - rs) / (np.linalg.norm(ls - rs) + 1e-9)
    down = np.array([-across[1], across[0]])
    bottom = height + 10 * unit
    def at_bottom(p: np.ndarray, dx: float) -> np.ndarray:
        return np.array([p[0] + dx, bottom])
    outline = np.array([rs - across * 12 * unit + down * 10 * unit, rs - across * 4 * unit - down * 4 * unit,
                        neck - across * 10 * unit - down * 2 * unit, neck + across * 10 * unit - down * 2 * unit,
                        ls + across * 4 * unit - down * 4 * unit, ls + across * 12 * unit + down * 10 * unit,
                        at_bottom(ls, 6 * unit), at_bottom(rs, -6 * unit)])
    _poly(img, outline, SHIRT_DARK)
    inner = outline.copy()
    inner[:, 0] = neck[0] + (inner[:, 0] - neck[0]) * 0.9
    _poly(img, inner, SHIRT)
    _poly(img, np.array([neck - across * 18 * unit + down * 16 * unit, neck - across * 6 * unit + down * 60 * unit,
                         neck + across * 2 * unit + down * 40 * unit]), SHIRT_LIGHT)
    # neck and the V of the collar
    _poly(img, np.array([neck - across * 9 * unit - down * 30 * unit, neck + across * 9 * unit - down * 30 * unit,
                         neck + across * 11 * unit + down * 2 * unit, neck + down * 20 * unit,
                         neck - across * 11 * unit + down * 2 * unit]), SKIN_DARK)
    _polyline(img, np.array([neck - across * 13 * unit, neck + down * 22 * unit, neck + across * 13 * unit]),
              (235, 235, 235), 4 * unit)
    for k in range(3):
        _circle(img, neck + down * (34 + 16 * k) * unit, 1.6 * unit, (220, 220, 220))


def _head(img: np.ndarray, pose: np.ndarray, unit: float) -> None:
    face = pose[10:80]
    jaw = face[0:17]
    chord = jaw[16] - jaw[0]
    rx = np.linalg.norm(chord) / 2
    u = chord / (2 * rx + 1e-9)
    up = np.array([u[1], -u[0]])                           # perpendicular, away from the chin
    centre = (jaw[0] + jaw[16]) / 2
    skull = _arc(centre, u, up, rx * 1.04, rx * 1.35)
    head = np.concatenate([jaw, skull[::-1]])
    _poly(img, head, SKIN_DARK)
    _poly(img, centre + (head - centre) * 0.9 + up * 1.5 * unit, SKIN)
    t = np.linspace(0, np.pi, 24)
    outer = _arc(centre - up * 2 * unit, u, up, rx * 1.16, rx * 1.55)
    hairline = centre + np.outer(np.cos(t), u) * rx * 1.08 + np.outer(0.55 + 0.25 * np.sin(t), up) * rx
    _poly(img, np.concatenate([outer, hairline[::-1]]), HAIR)
    # features
    for brow in (face[17:22], face[22:27]):
        _polyline(img, brow, BROW, 3.0 * unit)
    for eye, pupil in ((face[36:42], face[68]), (face[42:48], face[69])):
        opening = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
        if opening > 1.2 * unit:
            _poly(img, eye, EYE_WHITE)
            _circle(img, pupil, min(3.2 * unit, opening * 0.35), PUPIL)
        _polyline(img, eye[[0, 1, 2, 3]], (40, 40, 60), 1.6 * unit)
    _polyline(img, face[27:31], SKIN_DARK, 2.0 * unit)
    _polyline(img, face[31:36], (90, 110, 160), 2.0 * unit)
    _poly(img, face[48:60], LIPS)
    inner_mouth = face[60:68]
    if np.linalg.norm(inner_mouth[6] - inner_mouth[2]) > 1.5 * unit:
        _poly(img, inner_mouth, MOUTH)
        top = inner_mouth[[0, 1, 2, 3, 4]]
        _polyline(img, top + (inner_mouth[6] - inner_mouth[2]) * 0.18, (230, 230, 235), 2.0 * unit)
    else:
        _polyline(img, inner_mouth[[0, 1, 2, 3, 4]], MOUTH, 1.5 * unit)


def _hand(img: np.ndarray, hand: np.ndarray, unit: float) -> None:
    palm = hand[[0, 1, 2, 5, 9, 13, 17]]
    hull = cv2.convexHull(palm.astype(np.float32)).reshape(-1, 2)
    _poly(img, hull, SKIN_DARK)
    _poly(img, hull[0] + (hull - hull.mean(0)) * 0.85 + (hull.mean(0) - hull[0]), SKIN)
    for base, width in ((1, 4.2), (5, 3.6), (9, 3.8), (13, 3.5), (17, 3.0)):
        chain = hand[base:base + 4]
        _polyline(img, chain, SKIN_DARK, width * unit)
        _polyline(img, chain, SKIN, width * 0.55 * unit)


def _arm(img: np.ndarray, shoulder: np.ndarray, elbow: np.ndarray, wrist: np.ndarray, unit: float) -> None:
    _capsule(img, shoulder, elbow, 20 * unit, SHIRT_DARK, SHIRT, SHIRT_LIGHT)
    _circle(img, elbow, 9.5 * unit, SHIRT)
    _capsule(img, elbow, wrist, 16 * unit, SHIRT_DARK, SHIRT, SHIRT_LIGHT)
    d = (wrist - elbow) / (np.linalg.norm(wrist - elbow) + 1e-9)
    _line(img, wrist - d * 5 * unit, wrist - d * 1 * unit, (225, 225, 225), 15 * unit)


def draw_puppet(pose: np.ndarray, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8 BGR picture of the puppet at ``pose`` ((122, 2) pixels of a
    ``size`` canvas)."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (122, 2):
        raise ValueError(f"pose has shape {pose.shape}; expected (122, 2)")
    ss = SUPERSAMPLE
    big = cv2.resize(background(size), (size * ss, size * ss), interpolation=cv2.INTER_NEAREST)
    p = pose * ss
    unit = ss * size / 256.0
    _torso(big, p, unit, size * ss)
    _head(big, p, unit)
    # the arm whose hand is higher is drawn last (it is usually the one reaching forward)
    arms = [((2, 3, 4), slice(101, 122)), ((5, 6, 7), slice(80, 101))]
    arms.sort(key=lambda arm: -p[arm[0][2], 1])
    for (s, e, w), hand in arms:
        _arm(big, p[s], p[e], p[w], unit)
        _hand(big, p[hand], unit)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def draw_sequence(poses: Sequence[np.ndarray], size: int = 256) -> np.ndarray:
    return np.stack([draw_puppet(p, size) for p in poses])
