"""CPU smoke training of the three PSC stages on the reference's demo train set
(../shared/data/psc/train): each stage's loss goes down with a fixed seed, and the folder the
three stages fill exports (poserender export) and renders the demo test samples."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main

REPO = Path(__file__).resolve().parents[2]
PSC = REPO.parent / "shared" / "data" / "psc"
CONFIG = REPO / "configs" / "psc_tiny.yaml"
SIZE = 32          # the tiny config's 64 x 64 halved again, to keep this test to a few minutes
STEPS = 60


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def small_test_set(folder: Path, size: int) -> Path:
    """The demo test samples at the trained canvas: images bilinear, parsings nearest, poses scaled."""
    for sub in ("I0", "S0", "P0", "P1"):
        (folder / sub).mkdir(parents=True)
    for name in ("0001", "0002"):
        image = cv2.imread(str(PSC / "test" / "I0" / f"{name}.jpg"))
        cv2.imwrite(str(folder / "I0" / f"{name}.jpg"), cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        parsing = cv2.imread(str(PSC / "test" / "S0" / f"{name}.png"))
        cv2.imwrite(str(folder / "S0" / f"{name}.png"),
                    cv2.resize(parsing, (size, size), interpolation=cv2.INTER_NEAREST))
        for pose in ("P0", "P1"):
            rows = np.loadtxt(PSC / "test" / pose / f"{name}.csv", delimiter=",", ndmin=2)
            coords = rows[:, 1:]
            rows[:, 1:] = np.where(coords == -1, -1, coords * size / 256)
            np.savetxt(folder / pose / f"{name}.csv", rows, delimiter=",", fmt="%.5f")
    return folder


@pytest.mark.slow
def test_psc_stages_learn_export_and_render(tmp_path):
    if not (PSC / "train" / "joint").is_dir():
        pytest.skip(f"{PSC} not found: ../shared (reference data) is not in this checkout")
    out = tmp_path / "psc"
    for stage in ("pm", "aa", "ct"):
        result = run("train", "psc", "--stage", stage, "--config", CONFIG, "-o", out, "--size", SIZE,
                     "--steps", STEPS, "--seed", 0, "--device", "cpu")
        assert result.exit_code == 0, result.output
        totals = [json.loads(line)["total"] for line in (out / stage / "metrics.jsonl").read_text().splitlines()]
        assert len(totals) == STEPS // 5
        assert np.mean(totals[-2:]) < 0.75 * totals[0], (stage, totals)
        assert (out / f"{stage}.pth").is_file()
    result = run("export", out, "--size", SIZE, "-o", tmp_path / "art")
    assert result.exit_code == 0, result.output
    result = run("render", tmp_path / "art", "--psc-data", small_test_set(tmp_path / "test", SIZE),
                 "--t", "0.5,1", "-o", tmp_path / "frames")
    assert result.exit_code == 0, result.output
    frames = sorted((tmp_path / "frames").rglob("*.jpg")) + sorted((tmp_path / "frames").rglob("*.png"))
    assert len(frames) >= 4, [p.name for p in (tmp_path / "frames").rglob("*")]
    image = cv2.imread(str(frames[0]))
    assert image.shape[:2] == (SIZE, SIZE) and image.std() > 1.0
