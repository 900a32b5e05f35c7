"""A third family, added as one module (toy_family.py, beside this test) plus its registration,
goes through every generic path with no edit anywhere in poserender: export, verify, render from a
file and from stdin, bench, and a Triton repository served in-process."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender import families
from poserender.cli import main

_spec = importlib.util.spec_from_file_location("toy_family", Path(__file__).with_name("toy_family.py"))
toy_family = importlib.util.module_from_spec(_spec)
sys.modules["toy_family"] = toy_family
_spec.loader.exec_module(toy_family)


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The registration: one call. Removed again after the module's tests."""
    family = families.register(toy_family.ToyFamily())
    root = tmp_path_factory.mktemp("toy")
    toy_family.write_checkpoint(root / "ckpt")
    cv2.imwrite(str(root / "face.png"), np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    rng = np.random.default_rng(2)
    np.save(root / "poses.npy", rng.uniform(3, 29, (7, toy_family.JOINTS, 2)))
    yield family, root
    families.unregister(family.name)


@pytest.fixture(scope="module")
def exported(toy):
    family, root = toy
    result = run("export", root / "ckpt", "--model", "toy", "-o", root / "art")
    assert result.exit_code == 0, result.output
    assert "exported" in result.output and "toy stages source, frame" in result.output
    return root / "art"


def test_auto_detection_finds_the_toy_checkpoint(toy):
    family, root = toy
    assert families.detect(root / "ckpt") is family
    assert families.detect(root / "poses.npy").name == "pose2img"     # a file is still a Pose2Img checkpoint


def test_export_writes_a_verified_manifest(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["family"] == "toy" and manifest["canvas"] == [32, 32]
    assert [s["name"] for s in manifest["stages"]] == ["source", "frame"]
    assert [s["runs"] for s in manifest["stages"]] == ["per_identity", "per_frame"]
    for stage in manifest["stages"]:
        assert all(e["max_abs_error"] <= 2 for e in stage["verification"]["outputs"].values())


def test_verify_against_torch(exported):
    result = run("verify", exported, "--backends", "ort-cpu")
    assert result.exit_code == 0, result.output
    assert "against torch: all within tolerance" in result.output


def test_render_from_a_file_and_from_stdin_agree(toy, exported, tmp_path):
    _, root = toy
    common = ["render", exported, "--source", root / "face.png", "--format", "png"]
    result = run(*common, "--keypoints", root / "poses.npy", "-o", tmp_path / "file")
    assert result.exit_code == 0, result.output
    assert "rendered 7/7 frames" in result.stdout
    poses = np.load(root / "poses.npy")
    lines = "\n".join(json.dumps({"frame": t, "keypoints": pose.tolist()}) for t, pose in enumerate(poses)) + "\n"
    result = run(*common, "--keypoints", "-", "-o", tmp_path / "stdin", input=lines)
    assert result.exit_code == 0, result.output
    read = lambda folder: [cv2.imread(str(p)) for p in sorted(folder.iterdir())]  # noqa: E731
    from_file, from_stdin = read(tmp_path / "file"), read(tmp_path / "stdin")
    assert len(from_file) == 7 and all(np.array_equal(a, b) for a, b in zip(from_file, from_stdin))
    assert not np.array_equal(from_file[0], from_file[1])            # the poses move the picture


def test_the_wrong_identity_input_is_one_line(toy, exported, tmp_path):
    _, root = toy
    result = run("render", exported, "--source", root / "face.png", "--source-keypoints", root / "poses.npy",
                 "--keypoints", root / "poses.npy", "-o", tmp_path / "x.mp4")
    assert result.exit_code == 2 and "--source-keypoints is for pose2img models; a toy model takes --source" \
        in result.output


def test_bench(exported, tmp_path):
    result = run("bench", exported, "--backend", "ort-cpu", "--batch", "1,2", "--stage", "frame,stream",
                 "--min-seconds", "0", "--min-runs", "3", "--warmup", "1", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["stage"] for r in ok} == {"frame", "stream"} and all(r["fps"] > 0 for r in ok)


def test_triton_repository_served_in_process(toy, exported, tmp_path):
    _, root = toy
    result = run("triton", exported, "-o", tmp_path / "repo", "--devices", "cpu")
    assert result.exit_code == 0, result.output
    assert "ensemble 'toy' (source -> frame)" in result.output
    result = run("triton-client", "--local", tmp_path / "repo", "--source", root / "face.png", root / "poses.npy",
                 "-o", tmp_path / "triton", "--format", "png")
    assert result.exit_code == 0, result.output
    rendered = run("render", exported, "--source", root / "face.png", "--keypoints", root / "poses.npy",
                   "-o", tmp_path / "render", "--format", "png")
    assert rendered.exit_code == 0, rendered.output
    a = [cv2.imread(str(p)) for p in sorted((tmp_path / "triton").iterdir())]
    b = [cv2.imread(str(p)) for p in sorted((tmp_path / "render").iterdir())]
    assert len(a) == 7 and all(np.array_equal(x, y) for x, y in zip(a, b))
