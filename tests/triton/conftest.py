"""Tiny exports of both families (64 x 64), their identity inputs and keypoints, and Triton
repositories generated from them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

SIZE = 64


def pose_csv(path: Path, xy: np.ndarray) -> Path:
    """A PSC csv pose (row 0: x, row 1: y, after a leading index column)."""
    rows = [[0] + list(xy[:, 0]), [0] + list(xy[:, 1])]
    path.write_text("\n".join(",".join(f"{v:.3f}" for v in r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="session")
def psc_export(tmp_path_factory):
    """A 64 x 64 PSC export of random-weight nets, an I0 image, an S0 parsing and 5 csv poses."""
    from poserender.export.psc_export import export_psc, verification_feeds
    from poserender.keypoints.coco18 import template_pose
    from poserender.models.psc import AANet, CTNet, PMNet
    from poserender.runtime.psc_render import image_to_bgr8

    root = tmp_path_factory.mktemp("triton_psc")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    torch.manual_seed(11)
    for name, net in (("pm.pth", PMNet()), ("aa.pth", AANet()), ("ct.pth", CTNet())):
        torch.save(net.state_dict(), ckpt / name)
    export_psc(ckpt, root / "art", height=SIZE, width=SIZE)
    feeds = verification_feeds(SIZE, SIZE)
    cv2.imwrite(str(root / "i0.png"), image_to_bgr8(feeds["source"]["source_image"]))
    labels = feeds["source"]["source_labels"][0]
    cv2.imwrite(str(root / "s0.png"), np.repeat(labels[:, :, None], 3, axis=2))
    poses = root / "poses"
    poses.mkdir()
    for i in range(5):
        pose_csv(poses / f"{i}.csv", template_pose(SIZE, SIZE) + [i, -i])
    return root


@pytest.fixture(scope="session")
def pose2img_repo(tmp_path_factory, tiny_model):
    from poserender.triton.repository import TritonOptions, generate_repository

    out = tmp_path_factory.mktemp("repos") / "pose2img_repo"
    generate_repository(tiny_model, out, TritonOptions(devices=("cpu",)))
    return out


@pytest.fixture(scope="session")
def psc_repo(tmp_path_factory, psc_export):
    from poserender.triton.repository import TritonOptions, generate_repository

    out = tmp_path_factory.mktemp("repos") / "psc_repo"
    generate_repository(psc_export / "art", out, TritonOptions(devices=("cpu",)))
    return out
