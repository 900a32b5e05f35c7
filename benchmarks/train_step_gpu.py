"""Training throughput of the full-size Pose2Img (width 64 generator + discriminator) at 256 x 256.

Runs the real trainer step (``Pose2ImgTrainer.train_step``: generator + hinge discriminator,
L1, and perceptual/style with a randomly initialised VGG19 unless --vgg-weights is given) under
AMP on CUDA, on a small synthetic dataset in the reference layout written to a temp folder.
Prints one JSON object: it/s, ms/step (median), images/s, peak GPU memory, device, versions.
It is a measurement, not a test: nothing here asserts a speed.

    python benchmarks/train_step_gpu.py                      # bf16, batch 4, 20 timed steps
    python benchmarks/train_step_gpu.py --amp fp16 --batch 8
    python benchmarks/train_step_gpu.py --device cpu --amp off --width 8 --size 64 --steps 2   # plumbing check
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poserender.demo import draw_figure  # noqa: E402
from poserender.keypoints.template import gesture_sequence  # noqa: E402
from poserender.training.config import load_train_config  # noqa: E402
from poserender.training.distributed import setup  # noqa: E402
from poserender.training.pose2img_trainer import Pose2ImgTrainer, RunOptions  # noqa: E402
from poserender.training.vgg import VGG19Features  # noqa: E402


def write_dataset(root: Path, size: int, frames: int, args) -> Path:
    (root / "frames").mkdir(parents=True)
    (root / "keypoints").mkdir()
    for i, pose in enumerate(gesture_sequence(frames, size, size, seed=2)):
        cv2.imwrite(str(root / "frames" / f"{i:04d}.png"), draw_figure(pose, size))
        np.save(root / "keypoints" / f"{i:04d}.npy", pose)
    scale = size / 256
    doc = {
        "POSE2IMAGE": {"HYPERPARAM": {"img_H": size, "img_W": size, "scale": 1.0,
                                      "kp_var_root": [v * scale for v in (5, 5, 5, 5, 5, 5, 5, 2, 1, 1.5, 1, 2, 2)],
                                      "mask_sigma_perp": [v * scale for v in (14, 10, 10, 8, 10, 8, 4, 4)]},
                       "INFER": {"root_node": [[size / 2], [size / 3]]}},
        "TRAINING": {"data": {"frames": "frames", "keypoints": "keypoints", "img_extension": ".png",
                              "val_frames": 1, "workers": args.workers},
                     "model": {"width": args.width, "disc_width": args.width, "warp_mode": "exact"},
                     "optim": {"steps": 10 ** 6, "batch_size": args.batch, "lr": 1e-5},
                     "log": {"every": 10 ** 6, "images_every": 10 ** 6, "val_every": 10 ** 6},
                     "checkpoint": {"every": 10 ** 6}},
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amp", choices=("bf16", "fp16", "off"), default="bf16")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="canvas side (multiple of 32)")
    parser.add_argument("--width", type=int, default=64, help="net width (64 = the published nets)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--vgg-weights", help="torchvision VGG19 state dict; default: random VGG19 weights "
                                              "(same cost; the loss values mean nothing)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device; run on a GPU machine or pass --device cpu --amp off"}))
        sys.exit(2)
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = max(args.batch + 3, 8)
        config = write_dataset(tmp / "data", args.size, frames, args)
        vgg = args.vgg_weights
        if vgg is None:
            torch.manual_seed(0)
            vgg = tmp / "vgg19_random.pth"
            torch.save(VGG19Features().state_dict(), vgg)
        ctx = setup(args.device)
        trainer = Pose2ImgTrainer(load_train_config(config), RunOptions(tmp / "run", vgg_weights=str(vgg),
                                                                         amp=args.amp), ctx)
        batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=args.batch,
                                                      sampler=[(i, (i + 1) % len(trainer.train_set))
                                                               for i in range(args.batch)])))
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            trainer.train_step(batch)
        sync()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            values = trainer.train_step(batch)
            sync()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        result = {
            "benchmark": "pose2img_train_step", "size": [args.size, args.size], "width": args.width,
            "batch": args.batch, "amp": args.amp, "device": str(ctx.device),
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
            "it_per_s": 1.0 / median, "images_per_s": args.batch / median,
            "ms_per_step": {"median": 1000 * median, "min": 1000 * min(times), "max": 1000 * max(times)},
            "timed_steps": args.steps, "warmup_steps": args.warmup,
            "generator_params": sum(p.numel() for p in trainer.generator.parameters()),
            "discriminator_params": sum(p.numel() for p in trainer.discriminator.parameters()),
            "losses_finite": all(bool(torch.isfinite(v)) for v in values.values()),
            "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated() / 2 ** 30) if args.device == "cuda" else None,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "command": " ".join([Path(sys.executable).name] + sys.argv),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
