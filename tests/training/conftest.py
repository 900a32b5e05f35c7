"""A tiny Pose2Img training set in the reference layout (images + per-frame .npy keypoints) and
a config writer, so the trainer tests run in seconds without ../shared."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict

import cv2
import numpy as np
import pytest
import yaml

TINY_SIZE = 64
TINY_FRAMES = 12


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """``frames/NNNN.png`` (64 x 64 drawings of a gesturing figure) and ``keypoints/NNNN.npy``
    (122 x 2 pixels), 12 frames; the background is the same in every frame."""
    from poserender.demo import draw_figure
    from poserender.keypoints.template import gesture_sequence

    root = tmp_path_factory.mktemp("tiny_dataset")
    (root / "frames").mkdir()
    (root / "keypoints").mkdir()
    poses = gesture_sequence(TINY_FRAMES, TINY_SIZE, TINY_SIZE, seed=4)
    for i, pose in enumerate(poses):
        cv2.imwrite(str(root / "frames" / f"{i:04d}.png"), draw_figure(pose, TINY_SIZE, seed=0))
        np.save(root / "keypoints" / f"{i:04d}.npy", pose)
    return root


def tiny_training(**overrides: Any) -> Dict[str, Any]:
    section: Dict[str, Any] = {
        "data": {"frames": "frames", "keypoints": "keypoints", "img_extension": ".png", "val_frames": 2},
        "model": {"width": 4, "disc_width": 4, "warp_mode": "exact"},
        "optim": {"steps": 4, "batch_size": 2, "lr": 0.001, "lr_d": 0.0005},
        "checkpoint": {"every": 2, "keep": 5},
        "log": {"every": 1, "images_every": 2, "val_every": 4},
        "seed": 0,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            section.setdefault(key, {}).update(value)
        else:
            section[key] = value
    return section


@pytest.fixture
def write_config(tiny_dataset: Path) -> Callable[..., Path]:
    """``write_config(name, **TRAINING overrides)`` -> a YAML beside the tiny dataset (64 x 64 canvas)."""

    def write(name: str = "tiny.yaml", **overrides: Any) -> Path:
        doc = {
            "POSE2IMAGE": {
                "TRAIN": {"CROP": {"W_bias": 0, "H_bias": 0}},
                "HYPERPARAM": {"img_H": TINY_SIZE, "img_W": TINY_SIZE, "scale": 1.0,
                               "kp_var_root": [5, 5, 5, 5, 5, 5, 5, 2, 1, 1.5, 1, 2, 2],
                               "mask_sigma_perp": [14, 10, 10, 8, 10, 8, 4, 4]},
                "INFER": {"root_node": [[32.0], [20.0]]},
            },
            "TRAINING": tiny_training(**overrides),
        }
        path = tiny_dataset / name
        path.write_text(yaml.safe_dump(doc))
        return path

    return write


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's
    spinning threads make them 10x slower; run the trainer tests single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PSC_SIZE = 32
PSC_VIEWS = ("right", "front", "left", "back", "mid0", "mid1", "mid2", "mid3")


def _pose_rows(rng, poses: int, size: int, t_values=None) -> str:
    rows = []
    for p in range(poses):
        lead = 0.0 if t_values is None or p < 4 else float(t_values[p - 4])
        xy = rng.uniform(2, size - 2, size=(2, 18))
        xy[:, 10] = -1                                        # a missing joint, as in the demo data
        rows += [",".join([repr(lead)] + [f"{v:.3f}" for v in xy[0]]),
                 ",".join([repr(lead)] + [f"{v:.3f}" for v in xy[1]])]
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="session")
def tiny_psc(tmp_path_factory) -> Path:
    """PSC's data/train layout with two synthetic 32 x 32 samples (blocky parsings with labels
    0..5, images coloured by label plus noise, random poses, t in (0, 1))."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("tiny_psc")
    for name in ("0001", "0002"):
        for v, view in enumerate(PSC_VIEWS):
            labels = np.zeros((PSC_SIZE, PSC_SIZE), np.uint8)
            labels[6 + v % 3:26, 8:24] = 4
            labels[6 + v % 3:12, 12:20] = 2
            labels[12:26, 4:8] = 3
            labels[2:6, 12:20] = 1
            labels[20:26, 10 + v % 4:22] = 5
            (root / f"{view}_sg").mkdir(exist_ok=True)
            cv2.imwrite(str(root / f"{view}_sg" / f"{name}.png"), np.repeat(labels[..., None], 3, axis=2))
            colours = np.array([[200, 200, 200], [30, 30, 30], [120, 160, 220], [110, 150, 210],
                                [40, 40, 160], [60, 120, 40], [0, 0, 0]], np.float64)
            image = colours[labels] + rng.normal(0, 8, size=(PSC_SIZE, PSC_SIZE, 3))
            (root / f"{view}_img").mkdir(exist_ok=True)
            cv2.imwrite(str(root / f"{view}_img" / f"{name}.jpg"), np.clip(image, 0, 255).astype(np.uint8))
        (root / "joint").mkdir(exist_ok=True)
        (root / "joint" / f"{name}.csv").write_text(_pose_rows(rng, 8, PSC_SIZE))
        t = [x for v in rng.uniform(0.1, 0.9, size=4) for x in (v / 2, v / 2 + 0.4)]
        (root / "joint_interpolation").mkdir(exist_ok=True)
        (root / "joint_interpolation" / f"{name}.csv").write_text(_pose_rows(rng, 12, PSC_SIZE, t))
    return root


@pytest.fixture
def psc_config(tiny_psc: Path) -> Callable[..., Path]:
    """``psc_config(name, **PSC section overrides)`` -> a YAML for the tiny PSC set at 32 x 32."""

    def write(name: str = "psc.yaml", **overrides: Any) -> Path:
        section: Dict[str, Any] = {
            "data": str(tiny_psc), "size": PSC_SIZE, "sigma": 12.5, "seed": 0,
            "checkpoint": {"every": 2, "keep": 5}, "log": {"every": 1, "images_every": 2},
            "pm": {"steps": 3, "batch_size": 2, "lr_halve_epochs": 2},
            "aa": {"steps": 1, "batch_size": 1},
            "ct": {"steps": 1, "batch_size": 1},
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                section.setdefault(key, {}).update(value)
            else:
                section[key] = value
        path = tiny_psc.parent / f"{tiny_psc.name}_{name}"
        path.write_text(yaml.safe_dump({"PSC": section}))
        return path

    return write
