"""`poserender train` as a user runs it: train -> export (unchanged checkpoint) -> render;
bad data is one error listing every problem; checkpoints survive kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from click.testing import CliRunner

from poserender.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_train_then_export_then_render(tmp_path, write_config, tiny_dataset):
    config = write_config("cli.yaml")
    result = run("train", "pose2img", "--config", config, "-o", tmp_path / "run", "--steps", 2)
    assert result.exit_code == 0, result.output
    assert "64x64, width 4, 1 process(es) on cpu" in result.stderr
    assert "trained to step 2" in result.stderr and "ckpt_final.pth" in result.stderr
    ckpt = tmp_path / "run" / "ckpt_final.pth"
    result = run("export", ckpt, "-o", tmp_path / "art")        # no --config: the checkpoint carries it
    assert result.exit_code == 0, result.output
    assert "64x64, warp exact" in result.output
    targets = np.stack([np.load(tiny_dataset / "keypoints" / f"{i:04d}.npy") for i in range(4)])
    np.save(tmp_path / "targets.npy", targets)
    result = run("render", tmp_path / "art", "--source", tiny_dataset / "frames" / "0000.png",
                 "--source-keypoints", tiny_dataset / "keypoints" / "0000.npy",
                 "--keypoints", tmp_path / "targets.npy", "-o", tmp_path / "frames", "--format", "png")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "frames").glob("*.png"))) == 4


def test_resume_continues_to_more_steps(tmp_path, write_config):
    config = write_config("more.yaml")
    assert run("train", "pose2img", "--config", config, "-o", tmp_path / "run", "--steps", 2).exit_code == 0
    result = run("train", "pose2img", "--config", config, "-o", tmp_path / "run", "--steps", 3, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stderr and "at step 2" in result.stderr
    meta = torch.load(tmp_path / "run" / "ckpt_final.pth", weights_only=True)["poserender"]
    assert meta["step"] == 3


def test_bad_dataset_lists_every_problem_without_traceback(tmp_path, write_config, tiny_dataset):
    keypoints = tmp_path / "kp"
    keypoints.mkdir()
    for name in ("0000", "0001"):
        np.save(keypoints / f"{name}.npy", np.load(tiny_dataset / "keypoints" / f"{name}.npy"))
    np.save(keypoints / "extra.npy", np.load(tiny_dataset / "keypoints" / "0002.npy"))   # no extra.png
    np.save(keypoints / "short.npy", np.zeros((2, 9)))
    result = run("train", "pose2img", "--config", write_config("bad.yaml"), "--keypoints", keypoints,
                 "-o", tmp_path / "run")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.startswith("poserender: error: ") and "2 problem(s)" in result.stderr
    assert "extra.png: missing" in result.stderr and "short.npy" in result.stderr
    assert not (tmp_path / "run").exists()


def test_amp_needs_cuda_and_vgg_file_must_exist(tmp_path, write_config):
    config = write_config("amp.yaml")
    result = run("train", "pose2img", "--config", config, "-o", tmp_path / "r", "--device", "cpu", "--amp", "fp16")
    assert result.exit_code == 2 and "--amp fp16 needs a CUDA device" in result.stderr
    result = run("train", "pose2img", "--config", config, "-o", tmp_path / "r", "--vgg-weights", tmp_path / "no.pth")
    assert result.exit_code == 2 and "no.pth: not found; expected a torchvision VGG19 state dict" in result.stderr


WRITER = """
import sys, torch
from poserender.training.checkpoint import write_atomic
path = sys.argv[1]
i = 0
while True:
    i += 1
    write_atomic(path, {"G": {"w": torch.full((256, 1024), float(i))}, "step": i})
"""


def test_checkpoint_written_while_killed_is_never_corrupt(tmp_path):
    path = tmp_path / "ckpt.pth"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)                            # mid-way through some later write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    payload = torch.load(path, weights_only=True)  # the last complete checkpoint
    assert payload["step"] >= 1 and torch.all(payload["G"]["w"] == payload["step"])
    from poserender.training.checkpoint import remove_stale_partials
    remove_stale_partials(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
