"""Fixtures for the keypoint tests: the shared reference data beside the repository."""
from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared relative to the repository root (tests/keypoints/conftest.py -> parents[2] is the root)
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data" / "oliver").is_dir() or not (SHARED / "fixtures" / "pose2img").is_dir():
        pytest.skip("../shared not found: reference data/fixtures are not in this checkout")
    return SHARED


@pytest.fixture(scope="session")
def oliver_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "oliver"


@pytest.fixture(scope="session")
def oliver_source_npy(oliver_dir: Path) -> Path:
    (path,) = sorted(oliver_dir.glob("*.npy"))
    return path
