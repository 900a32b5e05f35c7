"""The PSC pieces every PSC module shares: the stage contract (StageSpecs), the identity inputs'
loaders (I0 image, S0 parsing) and the realistic verification feeds. No torch here."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from ..errors import UserError
from ..images import read_image
from ..keypoints.coco18 import template_pose
from ..specs import StageSpec, TensorSpec
from .base import Warn

JOINTS = 18
CLASSES = 7
CHECKPOINT_NAMES = ("pm.pth", "aa.pth", "ct.pth")
#: user-facing names of AA-Net's BatchNorm statistics (export --aa-norm) -> models.psc.blocks.BN_STATS
AA_NORM_CHOICES = {"authors": "sample", "eval": "running"}


def stage_specs(height: int = 256, width: int = 256, ngf: int = 16) -> List[StageSpec]:
    if height % 16 or width % 16:
        raise ValueError(f"PSC canvas {height}x{width}: both sides must be multiples of 16")
    q, e, s = (height // 4, width // 4), (height // 8, width // 8), (height // 16, width // 16)
    features = (TensorSpec("parsing_code", "float32", ("batch", ngf * 16) + s, "AA-Net: normalised S0 code"),
                TensorSpec("s0_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: S0 features"),
                TensorSpec("s0_enc_3", "float32", ("batch", ngf * 8) + e, "CT-Net: S0 features"),
                TensorSpec("s0_enc_4", "float32", ("batch", ngf * 16) + s, "CT-Net: S0 features"),
                TensorSpec("body_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: body-masked I0 features"),
                TensorSpec("cloth_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: cloth-masked I0 features"),
                TensorSpec("cloth_grad_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: Sobel-branch features"),
                TensorSpec("style_code", "float32", ("batch", CLASSES, ngf * 4), "CT-Net: per-label style code"))
    one = lambda t: TensorSpec(t.name, t.dtype, (1,) + t.shape[1:], t.doc)  # noqa: E731
    kp = lambda name: TensorSpec(name, "float32", ("batch", JOINTS, 2), "COCO-18 (x, y) canvas pixels")  # noqa: E731
    kv = lambda name: TensorSpec(name, "float32", ("batch", JOINTS), "1 = joint present, 0 = missing")  # noqa: E731
    key = lambda t: TensorSpec(t.name, t.dtype, (1,) + t.shape[1:], t.doc + " (key pose)")  # noqa: E731
    labels = TensorSpec("target_labels", "uint8", ("batch", height, width), f"parsing labels 0..{CLASSES - 1}")
    return [
        StageSpec("source", inputs=(TensorSpec("source_image", "float32", ("batch", 3, height, width), "RGB in [-1, 1]"),
                                    TensorSpec("source_labels", "uint8", ("batch", height, width),
                                               f"S0 parsing labels 0..{CLASSES - 1}")),
                  outputs=features, min_batch=1, opt_batch=1, max_batch=4, file="source.onnx",
                  doc="once per identity: S0 one-hot, AA-Net parsing encoder, CT-Net source encoders, style code"),
        StageSpec("interp", inputs=(key(kp("pose_a")), key(kv("valid_a")), key(kp("pose_b")), key(kv("valid_b")),
                                    TensorSpec("t", "float32", ("batch",), "interpolation parameter, 0 = A, 1 = B")),
                  outputs=(kp("keypoints"), kv("valid")), min_batch=1, opt_batch=4, max_batch=64, file="interp.onnx",
                  doc="PM-Net between two key poses: heat maps, PM-Net, per-joint peak (> 0.5)"),
        StageSpec("parsing", inputs=(kp("target_keypoints"), kv("target_valid"), one(features[0])),
                  outputs=(labels,), min_batch=1, opt_batch=4, max_batch=16, file="parsing.onnx",
                  doc="per frame: peak snap, heat maps (sigma 100), AA-Net, argmax"),
        StageSpec("frame", inputs=(labels,) + tuple(one(f) for f in features[1:]),
                  outputs=(TensorSpec("frames", "uint8", ("batch", height, width, 3), "BGR"),),
                  min_batch=1, opt_batch=4, max_batch=16, file="frame.onnx",
                  doc="per frame: one-hot, CT-Net flows, warps, decoders, to uint8 BGR"),
    ]



def load_psc_image(path: Path, height: int, width: int, warn: Warn) -> np.ndarray:
    """I0 as the reference's dataset makes it: (1, 3, H, W) float32 RGB, (x / 255 - 0.5) / 0.5.
    Another size is resized bilinearly (the reference resizes too, with PIL) and a warning says so."""
    image = read_image(path, cv2.IMREAD_COLOR, "source image")
    if image.shape[:2] != (height, width):
        warn(f"{path}: image is {image.shape[1]}x{image.shape[0]}, the model's canvas is {width}x{height}; "
             "resized bilinearly (the reference resizes images too; poses must be in canvas pixels)")
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    rgb = image[:, :, ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((rgb - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)[None])


def _is_palette_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[25] == 3


def load_psc_parsing(path: Path, height: int, width: int, classes: int) -> np.ndarray:
    """S0 as labels (1, H, W) uint8: the png's first channel (quirk parsing-channel0). Refused: another
    size (label maps cannot be interpolated safely, and the reference does not resize them either),
    labels >= ``classes``, palette PNGs (their pixel values are colours, not labels)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("source parsing not found; expected a label-map PNG", path)
    if _is_palette_png(path):
        raise UserError("is a palette PNG; expected the labels as pixel values (grey or RGB with equal channels)", path)
    image = read_image(path, cv2.IMREAD_UNCHANGED, "parsing")
    labels = image if image.ndim == 2 else image[:, :, 2]   # OpenCV is BGR(A): the first channel is index 2
    if labels.shape != (height, width):
        raise UserError(f"parsing is {labels.shape[1]}x{labels.shape[0]}; expected {width}x{height} (refused, not "
                        "resized: interpolating a label map invents labels; resize it with nearest-neighbour)", path)
    top = int(labels.max())
    if top >= classes:
        raise UserError(f"has label {top} ({int((labels >= classes).sum())} pixels); the model has {classes} "
                        f"classes, labels 0..{classes - 1}", path)
    return np.ascontiguousarray(labels.astype(np.uint8)[None])



def verification_feeds(height: int, width: int, seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    """Realistic inputs for every stage at batch 2: a smooth image, a parsing of a drawn figure
    (labels 0-4), template poses with jitter (one joint missing) and two t values."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(max(height // 16, 2), max(width // 16, 2), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None]
    pose = template_pose(height, width)
    labels = np.zeros((height, width), np.uint8)
    pts = lambda idx: np.round(pose[list(idx)]).astype(np.int32)  # noqa: E731
    thick = max(2, width // 20)
    cv2.fillConvexPoly(labels, pts((2, 5, 11, 8)), 4)
    for limb in ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13)):
        cv2.line(labels, *map(tuple, pts(limb)), 3, thick)
    cv2.circle(labels, tuple(pts((0,))[0]), max(3, width // 18), 2, -1)
    cv2.circle(labels, tuple(pts((14,))[0]), max(2, width // 40), 1, -1)
    targets = pose[None] + rng.normal(0, width / 40, size=(2, 18, 2))
    valid = np.ones((2, 18), np.float32)
    valid[1, 10] = 0
    targets[1, 10] = -1
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {
        "source": {"source_image": f32(image), "source_labels": labels[None]},
        "interp": {"pose_a": f32(pose[None]), "valid_a": np.ones((1, 18), np.float32),
                   "pose_b": f32(targets[:1]), "valid_b": np.ones((1, 18), np.float32),
                   "t": np.array([0.3, 0.7], np.float32)},
        "parsing": {"target_keypoints": f32(targets), "target_valid": valid},
    }


