"""The Pose2Img trainer on a tiny dataset: it learns, checkpoints in the reference format with
metadata, and --resume after a crash reproduces the uninterrupted run exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poserender.models.checkpoint import load_generator
from poserender.training.checkpoint import latest_checkpoint, periodic_checkpoints
from poserender.training.config import load_train_config
from poserender.training.distributed import DistContext
from poserender.training.logs import read_metrics
from poserender.training.pose2img_trainer import Pose2ImgTrainer, RunOptions


class Crash(Exception):
    pass


def train(config: Path, run_dir: Path, resume=None, crash_at=None, warnings=None, **overrides):
    def on_step(step, total, scalars, it_per_s):
        if step == crash_at:
            raise Crash(step)

    opts = RunOptions(run_dir, resume=resume, warn=(warnings.append if warnings is not None else lambda s: None),
                      on_step=on_step)
    trainer = Pose2ImgTrainer(load_train_config(config, overrides), opts, DistContext())
    return trainer, trainer.fit()


def losses(history, first_step=1):
    keys = ("total", "l1", "g_adv", "d", "d_real_score", "d_fake_score", "lr")
    return [(h["step"],) + tuple(h[k] for k in keys) for h in history if h["step"] >= first_step]


def test_resume_after_a_crash_gives_the_uninterrupted_losses(tmp_path, write_config):
    config = write_config("resume.yaml", optim={"steps": 7, "lr_decay": "linear"}, checkpoint={"every": 3},
                          log={"every": 1, "val_every": 4})
    reference, result = train(config, tmp_path / "a")
    assert result["step"] == 7 and len(reference.history) == 7
    # 10 training frames / batch 2 = 5 steps per epoch: the crash and the resume are mid-epoch 0/1
    with pytest.raises(Crash):
        train(config, tmp_path / "b", crash_at=5)
    assert [p.name for p in periodic_checkpoints(tmp_path / "b")] == ["ckpt_0000003.pth"]
    assert latest_checkpoint(tmp_path / "b").name == "ckpt_0000003.pth"
    warnings = []
    resumed, result = train(config, tmp_path / "b", resume="auto", warnings=warnings)
    assert any("resumed from" in w and "step 3" in w for w in warnings)
    assert result["step"] == 7
    assert losses(resumed.history) == losses(reference.history, first_step=4)      # bit for bit
    a = torch.load(tmp_path / "a" / "ckpt_final.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "ckpt_final.pth", weights_only=True)
    for part in ("G", "D"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["poserender"]["step"] == b["poserender"]["step"] == 7


def test_checkpoint_is_the_reference_format_with_metadata(tmp_path, write_config):
    warnings = []
    trainer, result = train(write_config(), tmp_path / "run", warnings=warnings)
    assert any("perceptual and style losses are off" in w for w in warnings)
    path = result["checkpoint"]
    assert path == tmp_path / "run" / "ckpt_final.pth"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert {"G", "D", "opt", "optD", "epoch", "poserender", "resume"} <= set(raw)
    meta = raw["poserender"]
    assert meta["family"] == "pose2img" and meta["width"] == 4 and meta["warp_mode"] == "exact"
    assert meta["resolution"] == [64, 64] and meta["step"] == 4 and meta["epoch"] == 0
    assert meta["config"]["img_h"] == 64 and "git_commit" in meta
    generator, loaded_meta = load_generator(path)              # what poserender export reads
    assert generator.width == 4 and loaded_meta["step"] == 4
    assert all(torch.equal(v, trainer.generator.state_dict()[k]) for k, v in generator.state_dict().items())
    # periodic checkpoints every 2 steps (the final step is saved as ckpt_final only)
    assert [p.name for p in periodic_checkpoints(tmp_path / "run")] == ["ckpt_0000002.pth"]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", split=None)
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["split"] == "val"] == [4]
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_loss_goes_down_on_the_tiny_dataset(tmp_path, write_config):
    config = write_config("learn.yaml", optim={"steps": 30, "batch_size": 2, "lr": 0.002},
                          loss={"adversarial": 0}, log={"every": 1, "val_every": 1000},
                          checkpoint={"every": 1000})
    trainer, _ = train(config, tmp_path / "run")
    l1 = [h["l1"] for h in trainer.history]
    assert trainer.discriminator is None
    first, last = sum(l1[:5]) / 5, sum(l1[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_resume_refuses_a_different_model(tmp_path, write_config):
    from poserender.errors import UserError

    train(write_config(), tmp_path / "run")
    wider = write_config("wider.yaml", model={"width": 8})
    with pytest.raises(UserError, match="width 4; this config has 8"):
        train(wider, tmp_path / "run", resume=str(tmp_path / "run" / "ckpt_final.pth"))
