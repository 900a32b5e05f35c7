"""Tiny exports of both families (64 x 64), their identity inputs and keypoints, and Triton
repositories generated from them."""
from __future__ import annotations

import pytest

SIZE = 64


@pytest.fixture(scope="session")
def psc_export(tmp_path_factory, tiny_psc_builders):
    """A 64 x 64 PSC export of random-weight nets, an I0 image, an S0 parsing and 5 csv poses."""
    from poserender import families
    from poserender.export.exporter import export_checkpoint
    from poserender.keypoints.coco18 import template_pose, write_psc_csv

    root = tmp_path_factory.mktemp("triton_psc")
    export_checkpoint(families.get("psc"), tiny_psc_builders.checkpoint(11), root / "art", {"size": SIZE})
    tiny_psc_builders.identity(root / "i0.png", root / "s0.png", SIZE)
    poses = root / "poses"
    poses.mkdir()
    for i in range(5):
        write_psc_csv(poses / f"{i}.csv", template_pose(SIZE, SIZE) + [i, -i])
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
