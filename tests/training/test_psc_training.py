"""PSC training: the train layout is checked whole at start, each stage trains with the
reference's objective, writes the authors' plain state dict, and resumes exactly."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poserender.errors import UserError
from poserender.models.psc import AANet, CTNet, PMNet
from poserender.models.psc.checkpoint import load_psc_nets
from poserender.training.distributed import DistContext
from poserender.training.loop import RunOptions
from poserender.training.pose2img_data import DatasetError
from poserender.training.psc_data import PscTrainData
from poserender.training.psc_trainer import PscTrainer, load_psc_config


class Crash(Exception):
    pass


def train(config: Path, stage: str, run_dir: Path, resume=None, crash_at=None, warnings=None, **overrides):
    def on_step(step, total, scalars, it_per_s):
        if step == crash_at:
            raise Crash(step)

    opts = RunOptions(run_dir, resume=resume, warn=(warnings.append if warnings is not None else lambda s: None),
                      on_step=on_step)
    trainer = PscTrainer(load_psc_config(config, stage, overrides), opts, DistContext())
    return trainer, trainer.fit()


def test_items_per_stage(tiny_psc):
    pm = PscTrainData(tiny_psc, "pm", 32)[0]
    assert pm["keypoints"].shape == (12, 18, 2) and pm["t"].shape == (8,)
    assert (pm["keypoints"][:, 10] == -1).all() and (pm["valid"][:, 10] == 0).all()
    assert ((pm["t"] > 0) & (pm["t"] < 1)).all()
    aa = PscTrainData(tiny_psc, "aa", 32)[1]
    assert aa["labels"].shape == (8, 32, 32) and aa["labels"].max() == 5
    ct = PscTrainData(tiny_psc, "ct", 16)[0]                  # resized: images bilinear, parsing nearest
    assert ct["images"].shape == (8, 3, 16, 16) and set(ct["labels"].unique().tolist()) <= set(range(6))
    assert -1 <= ct["images"].min() and ct["images"].max() <= 1


def test_every_problem_is_listed_at_start(tmp_path, tiny_psc):
    data = tmp_path / "train"
    shutil.copytree(tiny_psc, data)
    (data / "mid2_sg" / "0002.png").unlink()
    labels = np.full((32, 32, 3), 9, np.uint8)
    cv2.imwrite(str(data / "left_sg" / "0001.png"), labels)
    (data / "joint" / "0001.csv").write_text("0,1,2\n")
    cv2.imwrite(str(data / "back_img" / "0001.jpg"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError) as info:
        PscTrainData(data, "aa", 32)
    text = str(info.value)
    assert len(info.value.problems) == 3, info.value.problems
    assert "mid2_sg/0002.png: missing" in text and "left_sg/0001.png: has label 9" in text
    assert "joint/0001.csv: has 1 rows x 3 columns; expected 16 rows" in text
    with pytest.raises(DatasetError, match="back_img/0001.jpg: is 20 x 20; expected square images of one size"):
        PscTrainData(data, "ct", 32)
    rows = (data / "joint_interpolation" / "0002.csv").read_text().splitlines()
    rows[8] = "1.5" + rows[8][rows[8].index(","):]
    rows[9] = "1.5" + rows[9][rows[9].index(","):]
    (data / "joint_interpolation" / "0002.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"expected 0 < t < 1"):
        PscTrainData(data, "pm", 32)


def test_config_checks(psc_config):
    with pytest.raises(UserError, match=r"unknown key PSC\.pm\.'l3'"):
        load_psc_config(psc_config("bad.yaml", pm={"l3": 1}), "pm")
    with pytest.raises(UserError, match="multiple of 16"):
        load_psc_config(psc_config(), "pm", {"size": 40})
    cfg = load_psc_config(psc_config(), "pm", {"size": 64})
    assert cfg.size == 64 and cfg.sigma == 25.0                 # sigma follows the canvas
    assert cfg.weights == {"l1": 10.0, "l2": 30.0, "grad": 0.35, "perturbation": 1.5, "t_eps": 0.01}


def test_pm_resume_after_a_crash_is_exact(tmp_path, psc_config):
    # batch 1, 2 samples: 2 steps per epoch, lr halves every epoch; the crash is mid-epoch 0
    config = psc_config("pm.yaml", pm={"steps": 3, "batch_size": 1, "lr_halve_epochs": 1},
                        checkpoint={"every": 1})
    reference, _ = train(config, "pm", tmp_path / "a" / "pm")
    assert [r["lr"] for r in reference.history] == [4e-4, 4e-4, 2e-4]
    with pytest.raises(Crash):
        train(config, "pm", tmp_path / "b" / "pm", crash_at=2)
    resumed, result = train(config, "pm", tmp_path / "b" / "pm", resume=str(tmp_path / "b" / "pm" / "ckpt_0000001.pth"))
    assert result["step"] == 3
    pick = lambda h: [(r["step"], r["total"], r["perturbation"], r["lr"]) for r in h]  # noqa: E731
    assert pick(resumed.history) == pick(reference.history)[1:]       # bit for bit, RNG draws included
    a = torch.load(tmp_path / "a" / "pm.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "pm.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pm_stage_writes_the_authors_state_dict(tmp_path, psc_config):
    trainer, result = train(psc_config("one.yaml", pm={"steps": 1, "batch_size": 1}), "pm", tmp_path / "pm")
    PMNet().load_state_dict(torch.load(tmp_path / "pm.pth", weights_only=True), strict=True)
    meta = torch.load(result["checkpoint"], weights_only=True)["poserender"]
    assert meta["family"] == "psc" and meta["stage"] == "pm" and meta["step"] == 1 and meta["sigma"] == 12.5
    assert set(trainer.history[0]) >= {"l1", "l2", "grad", "perturbation", "total"}


def test_three_stages_make_a_psc_checkpoint_folder(tmp_path, psc_config):
    config = psc_config("all.yaml", pm={"steps": 1, "batch_size": 1})
    warnings = []
    for stage, net in (("pm", PMNet), ("aa", AANet), ("ct", CTNet)):
        trainer, result = train(config, stage, tmp_path / stage, warnings=warnings)
        plain = torch.load(tmp_path / f"{stage}.pth", weights_only=True)
        assert all(torch.is_tensor(v) for v in plain.values())
        net().load_state_dict(plain, strict=True)                   # the reference's test.py load
        raw = torch.load(result["checkpoint"], weights_only=True)
        assert {"state_dict", "opt", "epoch", "poserender", "resume"} <= set(raw)
        meta = raw["poserender"]
        assert meta["family"] == "psc" and meta["stage"] == stage and meta["size"] == 32 and meta["step"] == 1
        assert np.isfinite(trainer.history[0]["total"]) and trainer.history[0]["total"] > 0
    assert any("content and style losses are off" in w for w in warnings)
    assert {"l1", "face", "cloth", "flow", "total"} == set(trainer.history[0]) - {"step", "it_per_s", "lr"}
    pm, aa, ct, info = load_psc_nets(tmp_path)                      # what poserender export reads
    assert isinstance(pm, PMNet) and isinstance(aa, AANet) and isinstance(ct, CTNet)
