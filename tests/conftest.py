"""Shared test helpers: where ../shared is, and a tiny exported model for CLI tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OLIVER = SHARED / "data" / "oliver"
OLIVER_STEM = "Auto_Lending_-_Last_Week_Tonight_with_John_Oliver_HBO-4U2eDJnwz_s_58_000_0_00_05.405405"
FIXTURES = SHARED / "fixtures" / "pose2img"


def need_shared(path: Path = SHARED) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared (reference data/fixtures) is not in this checkout")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Checkpoint exports made by `render CKPT` go to a per-session temp cache, never ~/.cache."""
    monkeypatch.setenv("POSERENDER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory):
    """A 64 x 64 source image, its keypoints (.npy 2x122 image pixels) and 6 target frames (.npy)."""
    from poserender.demo import draw_figure
    from poserender.keypoints.template import gesture_sequence, template_pose

    folder = tmp_path_factory.mktemp("tiny_inputs")
    pose = template_pose(64, 64)
    cv2.imwrite(str(folder / "source.png"), draw_figure(pose, 64))
    np.save(folder / "source.npy", pose.T.copy())
    np.save(folder / "targets.npy", gesture_sequence(6, 64, 64, seed=1))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Our checkpoint format: a width-8 generator with its config (64 x 64 canvas) embedded."""
    import torch

    from poserender.config import Pose2ImgConfig
    from poserender.models.checkpoint import save_checkpoint
    from poserender.models.pose2img import Pose2ImgGenerator

    torch.manual_seed(3)
    generator = Pose2ImgGenerator(width=8).eval()
    config = Pose2ImgConfig(img_h=64, img_w=64, scale=1.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, generator, {"config": config.to_dict(), "warp_mode": "exact"})
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_checkpoint):
    from poserender.export.pose2img_export import export_checkpoint

    out = tmp_path_factory.mktemp("art") / "tiny"
    export_checkpoint(tiny_checkpoint, None, out)
    return out
