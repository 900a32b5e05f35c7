"""Fixtures for the model tests: the Pose2Img reference fixtures and small random generators.

The reference-parity fixtures live in ``../shared/fixtures/pose2img`` beside the repository
(see its README.md for the arrays, tolerances and the 27 quirks). They are optional: without
them every test that needs them is skipped, and the rest (small random models) still runs.

The full-size fixture generator (131.8 M parameters, synthetic ``kaiming-crc32-v1`` weights)
is built once per session by :func:`fixture_generator`.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import torch

from poserender.config import Pose2ImgConfig
from poserender.models.pose2img import Pose2ImgGenerator

#: ../shared relative to the repository root (tests/models/conftest.py -> parents[2] is the root)
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures"
POSE2IMG_FIXTURES = FIXTURES / "pose2img"
SKIP_REASON = "../shared not found: reference fixtures are not in this checkout"


def _have_fixtures() -> bool:
    return (POSE2IMG_FIXTURES / "manifest.json").is_file() and (FIXTURES / "weights.py").is_file()


def _read_manifest() -> dict:
    with open(POSE2IMG_FIXTURES / "manifest.json") as f:
        return json.load(f)


def pytest_generate_tests(metafunc):
    """``case_name``: every fixture case; ``full_case_name``: the cases with the whole model.

    Without ../shared the parameter list is a single skipped placeholder, so the tests show
    up as skipped (with the reason) instead of silently disappearing.
    """
    for argname, kinds in (("case_name", None), ("full_case_name", ("full",))):
        if argname not in metafunc.fixturenames:
            continue
        if not _have_fixtures():
            metafunc.parametrize(argname, [pytest.param(None, marks=pytest.mark.skip(reason=SKIP_REASON),
                                                        id="no-fixtures")])
            continue
        cases = _read_manifest()["cases"]
        names: List[str] = [n for n, c in cases.items() if kinds is None or c["kind"] in kinds]
        metafunc.parametrize(argname, names)


# ---------------------------------------------------------------------------------------------
# reference fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not _have_fixtures():
        pytest.skip(SKIP_REASON)
    return POSE2IMG_FIXTURES


@pytest.fixture(scope="session")
def manifest(fixtures_dir: Path) -> dict:
    return _read_manifest()


@pytest.fixture(scope="session")
def fixture_weights_module(fixtures_dir: Path):
    """``../shared/fixtures/weights.py`` imported by path (no sys.path changes)."""
    spec = importlib.util.spec_from_file_location("pose2img_fixture_weights", FIXTURES / "weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_case(fixtures_dir: Path, manifest: dict) -> Callable[[str], Dict[str, np.ndarray]]:
    """``load_case(name)`` -> the case's arrays (cached for the session)."""
    cache: Dict[str, Dict[str, np.ndarray]] = {}

    def load(name: str) -> Dict[str, np.ndarray]:
        if name not in cache:
            with np.load(fixtures_dir / manifest["cases"][name]["file"]) as z:
                cache[name] = {k: z[k] for k in z.files}
        return cache[name]

    return load


@pytest.fixture(scope="session")
def fixture_generator(manifest: dict, fixture_weights_module) -> Pose2ImgGenerator:
    """The full-size generator with the fixtures' synthetic weights, eval mode, built once."""
    from poserender.models.checkpoint import generator_from_state

    state = fixture_weights_module.make_state_dict(manifest["state_dict"])
    generator = generator_from_state({k: torch.from_numpy(v) for k, v in state.items()})
    assert not generator.training
    return generator


# ---------------------------------------------------------------------------------------------
# small random models (no fixtures needed)
# ---------------------------------------------------------------------------------------------
def randomise_batchnorm(module: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so eval-mode
    outputs depend on them (a freshly built BN is the identity in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


@pytest.fixture(scope="session")
def make_small_generator() -> Callable[..., Pose2ImgGenerator]:
    """``make_small_generator(width=8, seed=0)``: a seeded random generator in eval mode with
    randomised BatchNorm statistics."""

    def make(width: int = 8, seed: int = 0) -> Pose2ImgGenerator:
        torch.manual_seed(seed)
        generator = Pose2ImgGenerator(width=width)
        randomise_batchnorm(generator, seed + 1)
        return generator.eval()

    return make


@pytest.fixture(scope="session")
def default_config() -> Pose2ImgConfig:
    """The Oliver.yaml heat-map / limb-mask widths (the Pose2ImgConfig defaults)."""
    return Pose2ImgConfig()


@pytest.fixture(scope="session")
def smooth_image() -> Callable[..., np.ndarray]:
    """``smooth_image(batch, height, width, seed)``: (B, 3, H, W) float32 in [-1, 1], a smooth random
    image (so warps and blends give structured, not white-noise, outputs)."""

    def make(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows = np.arange(height)[:, None] / height
        cols = np.arange(width)[None, :] / width
        out = np.empty((batch, 3, height, width))
        for b in range(batch):
            for c in range(3):
                fx, fy, px, py = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), *rng.uniform(0, 2 * np.pi, 2)
                out[b, c] = 0.6 * np.sin(2 * np.pi * fx * cols + px) * np.cos(2 * np.pi * fy * rows + py)
        out += 0.3 * rng.uniform(-1, 1, size=out.shape)
        return np.clip(out, -1, 1).astype(np.float32)

    return make
