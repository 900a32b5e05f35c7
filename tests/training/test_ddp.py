"""DDP through PyTorch's own launcher: two gloo processes on the CPU (torchrun --standalone)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_two_process_gloo_ddp_under_torchrun(tmp_path, write_config):
    config = write_config("ddp.yaml", optim={"steps": 3, "batch_size": 2}, checkpoint={"every": 2},
                          log={"every": 1, "val_every": 3})
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "poserender.cli", "train", "pose2img", "--config", str(config), "-o", str(run_dir),
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es) on cpu (gloo)" in proc.stderr
    assert proc.stderr.count("trained to step 3") == 1                 # rank 0 talks, rank 1 does not
    raw = torch.load(run_dir / "ckpt_final.pth", weights_only=True)
    meta = raw["poserender"]
    assert meta["world_size"] == 2 and meta["global_batch"] == 4 and meta["step"] == 3
    # 10 training frames, 5 per rank, batch 2: two steps per epoch, so step 3 is in epoch 1
    assert raw["epoch"] == 1 and meta["epoch"] == 1
    assert (run_dir / "ckpt_0000002.pth").is_file()
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"split": "train"' in ln]) == 3   # one writer
