"""The embedded demo: a slim Pose2Img trained by poserender on its own generated puppet.

* :mod:`.gestures` makes keypoint sequences (a procedural upper body with joint limits),
  :mod:`.puppet` draws the puppet at a pose (the ground truth), :mod:`.data` writes both in the
  training layout (``poserender demo-data``); ``configs/demo.yaml`` trains the model.
* The trained model ships in this package: ``model/`` (the exported ONNX stages and their
  manifest) and ``clip.npy`` (a generated gesture clip, T x 3 x 137 OpenPose keypoints).
  :func:`shipped_model` and :func:`puppet_inputs` are what ``poserender demo`` renders.
* :func:`demo_model` / :func:`write_demo_inputs` / :func:`draw_figure` are the older SLIM,
  RANDOMLY INITIALISED model and template figure that runtime benchmarks and tests use where the
  weights do not matter (they are built into a cache folder on first use, never shipped).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Tuple

import cv2
import numpy as np

from ..config import Pose2ImgConfig
from ..errors import UserError
from ..keypoints.template import gesture_sequence, template_pose
from .gestures import gesture_sequence as puppet_sequence
from .gestures import pose122_to_openpose, rest_pose
from .puppet import draw_puppet

#: the trained demo model and the shipped clip (package data)
MODEL_DIR = Path(__file__).with_name("model")
CLIP_PATH = Path(__file__).with_name("clip.npy")

DEMO_SIZE = 256
DEMO_WIDTH = 8


def demo_config() -> Pose2ImgConfig:
    """A 256 x 256 crop at scale 1 with the reference's heat-map and limb widths."""
    return Pose2ImgConfig(img_h=DEMO_SIZE, img_w=DEMO_SIZE, scale=1.0,
                          kp_var_root=(5, 5, 5, 5, 5, 5, 5, 2, 1, 1.5, 1, 2, 2),
                          mask_sigma_perp=(14, 10, 10, 8, 10, 8, 4, 4))


def draw_figure(pose: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A simple BGR drawing of an upper body at ``pose`` (122 x 2 pixels) on a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([90 + 60 * yy, 110 + 40 * xx, 150 - 50 * yy], axis=-1)
    image += rng.normal(0, 6, size=image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    p = lambda j: tuple(int(round(v)) for v in pose[j])  # noqa: E731
    torso = np.array([pose[2], pose[5], pose[5] + [0, size * 0.5], pose[2] + [0, size * 0.5]], np.int32)
    cv2.fillConvexPoly(image, torso, (60, 40, 120))
    for a, b in ((2, 3), (3, 4), (5, 6), (6, 7)):
        cv2.line(image, p(a), p(b), (70, 50, 140), max(2, size // 18))
    for j in (4, 7):
        cv2.circle(image, p(j), max(2, size // 40), (140, 170, 210), -1)
    head = pose[10:27].mean(axis=0)
    cv2.ellipse(image, tuple(int(v) for v in head), (int(size * 0.08), int(size * 0.11)), 0, 0, 360,
                (140, 170, 210), -1)
    for j in (8, 9):
        cv2.circle(image, p(j), max(1, size // 80), (40, 30, 30), -1)
    cv2.polylines(image, [pose[58:70].astype(np.int32)], True, (60, 60, 170), 1)
    return image


def write_demo_inputs(folder: Path, frames: int, seed: int) -> Tuple[Path, Path, Path]:
    """Source image (png), source keypoints (.npy 122 x 2) and target keypoints (.npy T x 122 x 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    pose = template_pose(DEMO_SIZE, DEMO_SIZE)
    image_path, source_path, target_path = folder / "source.png", folder / "source.npy", folder / f"targets_{frames}_{seed}.npy"
    cv2.imwrite(str(image_path), draw_figure(pose, DEMO_SIZE, seed))
    np.save(source_path, pose)
    np.save(target_path, gesture_sequence(frames, DEMO_SIZE, DEMO_SIZE, seed=seed))
    return image_path, source_path, target_path


def demo_model(cache: Path, log: Callable[[str], None]) -> Path:
    """Export (once) the slim random-init model into ``cache/model``; returns the model folder."""
    model_dir = cache / f"model-w{DEMO_WIDTH}-{DEMO_SIZE}"
    if (model_dir / "manifest.json").is_file():
        return model_dir
    import torch

    from .. import families
    from ..export.exporter import export_model
    from ..families.pose2img import generator_plan
    from ..models.pose2img import Pose2ImgGenerator

    torch.manual_seed(0)
    generator = Pose2ImgGenerator(width=DEMO_WIDTH).eval()
    log(f"building the demo model (slim, randomly initialised, {DEMO_SIZE}x{DEMO_SIZE}) in {model_dir}")
    export_model(families.get("pose2img"), generator_plan(generator, demo_config(), "exact", {
        "path": None, "meta": {"note": "randomly initialised demo model (seed 0)"}}), model_dir, log)
    return model_dir


def shipped_model() -> Path:
    """The trained demo model's folder inside the package."""
    if not (MODEL_DIR / "manifest.json").is_file():
        raise UserError("the trained demo model is not in this installation; expected model/manifest.json "
                        "and the ONNX stages (reinstall poserender)", MODEL_DIR)
    return MODEL_DIR


def puppet_inputs(folder: Path, frames: Optional[int] = None, seed: Optional[int] = None) -> Tuple[Path, Path, Path]:
    """The demo's inputs in ``folder``: the puppet at rest as the source (png + 3 x 137 .npy) and
    the targets, the shipped clip or, when ``frames`` or ``seed`` is given, a new gesture
    sequence (``frames`` defaults to the clip's length, ``seed`` to 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    pose = rest_pose(DEMO_SIZE)
    image_path, source_path = folder / "puppet_source.png", folder / "puppet_source.npy"
    cv2.imwrite(str(image_path), draw_puppet(pose, DEMO_SIZE))
    np.save(source_path, pose122_to_openpose(pose))
    if frames is None and seed is None:
        return image_path, source_path, CLIP_PATH
    if frames is None:
        frames = int(np.load(CLIP_PATH, mmap_mode="r").shape[0])
    seed = 0 if seed is None else seed
    target_path = folder / f"puppet_targets_{frames}_{seed}.npy"
    clip = np.stack([pose122_to_openpose(p) for p in puppet_sequence(frames, DEMO_SIZE, seed)])
    np.save(target_path, clip)
    return image_path, source_path, target_path
