"""`poserender train`: train a model family; the checkpoints go straight into `poserender export`.

Runs as a plain process (one CPU or GPU) or under torchrun for DDP:
``torchrun --nproc_per_node 2 -m poserender.cli train pose2img --config cfg.yaml``.
"""
from __future__ import annotations

import sys
import time
from typing import Dict, Optional

import click

from .common import log, user_errors

DEVICE_CHOICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("off", "bf16", "fp16")


class TrainProgress:
    """One line on a terminal: step, bar, loss terms, it/s, ETA; elsewhere a line every 5 %."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = False
        self.last_line = 0.0

    def __call__(self, step: int, total: int, scalars: Dict[str, float], it_per_s: float) -> None:
        terms = " ".join(f"{k} {v:.3g}" for k, v in scalars.items() if k not in ("it_per_s", "lr"))
        eta = (total - step) / it_per_s if it_per_s > 0 else 0.0
        if self.tty:
            filled = int(24 * step / max(total, 1))
            sys.stderr.write(f"\r{self.label} {step}/{total} [{'#' * filled}{'.' * (24 - filled)}] {terms} "
                             f"| {it_per_s:.2f} it/s, eta {eta:.0f} s \x1b[K")
            sys.stderr.flush()
            self.shown = True
        elif step == total or step % max(1, total // 20) == 0:
            log(f"{self.label} step {step}/{total}: {terms} | {it_per_s:.2f} it/s, eta {eta:.0f} s")

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _run_options(f):
    """Options shared by every family's trainer."""
    decorators = [
        click.option("-o", "--output", "output", type=click.Path(file_okay=False),
                     help="Run folder for checkpoints, TensorBoard events and metrics.jsonl "
                          "(default: runs/<config name>)."),
        click.option("--resume", help="Continue exactly from a checkpoint of this trainer, or 'auto' "
                                      "for the latest one in the run folder."),
        click.option("--steps", type=int, help="Total training steps (overrides the config)."),
        click.option("--batch-size", type=int, help="Batch size per process (overrides the config)."),
        click.option("--lr", type=float, help="Generator learning rate (overrides the config)."),
        click.option("--seed", type=int, help="Seed for weights, pairing and shuffling (overrides the config)."),
        click.option("--workers", type=int, help="DataLoader worker processes (overrides the config)."),
        click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                     help="auto: CUDA device LOCAL_RANK when CUDA is usable, else CPU."),
        click.option("--amp", type=click.Choice(AMP_CHOICES), default="off", show_default=True,
                     help="Mixed precision on CUDA: bf16, or fp16 with gradient scaling."),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _fit(device: str, plan) -> None:
    """What every family's training run shares: device/process setup, the progress line, the
    opening and closing lines (from the main process only) and teardown; ``plan`` is the family's
    (families.base.TrainingPlan)."""
    from ..training.distributed import setup, teardown

    label, batch_size, build, describe, finished = plan.label, plan.batch_size, plan.build, plan.describe, plan.finished
    ctx = setup(device)
    say = log if ctx.is_main else (lambda s: None)
    progress = TrainProgress(label)
    trainer = None
    try:
        started = time.perf_counter()
        trainer = build(say, progress if ctx.is_main else None, ctx)
        say(f"{label}: {describe(trainer)}, {ctx.world_size} process(es) on {ctx.device}"
            f"{' (' + ctx.backend + ')' if ctx.backend else ''}, batch {batch_size} per process")
        result = trainer.fit()
        progress.finish()
        ctx.barrier()          # no rank leaves while rank 0 still writes the final checkpoint
        say(finished(result, time.perf_counter() - started))
    finally:
        progress.finish()
        # The DDP wrapper keeps the process group alive after destroy_process_group(); drop it
        # now, while the interpreter is whole (gloo worker threads freed during interpreter
        # shutdown abort the process: "terminate called without an active exception").
        trainer = None
        teardown(ctx)


@click.group("train")
def train() -> None:
    """Train a model; checkpoints are the reference format plus metadata, ready for export.

    \b
    poserender train pose2img --config configs/pose2img_oliver_tiny.yaml -o runs/tiny
    poserender export runs/tiny/ckpt_final.pth -o art/tiny
    torchrun --nproc_per_node 2 -m poserender.cli train pose2img --config cfg.yaml -o runs/ddp
    """


@train.command("pose2img")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="Pose2Img YAML (the reference's POSE2IMAGE section + our TRAINING section), "
                   "e.g. configs/pose2img_oliver_tiny.yaml.")
@click.option("--frames", type=click.Path(), help="Video or folder of frames (overrides TRAINING.data.frames).")
@click.option("--keypoints", type=click.Path(), help="Keypoints for the frames (overrides TRAINING.data.keypoints).")
@click.option("--vgg-weights", type=click.Path(dir_okay=False),
              help="torchvision VGG19 state dict (e.g. vgg19-dcbb9e9d.pth) for the perceptual and style "
                   "losses; without it they are off (nothing is downloaded).")
@_run_options
@user_errors
def train_pose2img(config: str, frames: Optional[str], keypoints: Optional[str], vgg_weights: Optional[str],
                   output: Optional[str], resume: Optional[str], steps: Optional[int], batch_size: Optional[int],
                   lr: Optional[float], seed: Optional[int], workers: Optional[int], device: str, amp: str) -> None:
    """Train the Pose2Img generator (+ discriminator) on frames of one person."""
    from .. import families

    _fit(device, families.get("pose2img").training(dict(
        config=config, frames=frames, keypoints=keypoints, vgg_weights=vgg_weights, output=output, resume=resume,
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, workers=workers, amp=amp)))


@train.command("psc")
@click.option("--stage", required=True, type=click.Choice(("pm", "aa", "ct")),
              help="Which net: pm (PM-Net, pose interpolation), aa (AA-Net, parsing), ct (CT-Net, image).")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="YAML with a PSC section, e.g. configs/psc_tiny.yaml.")
@click.option("--data", type=click.Path(), help="PSC train folder (overrides PSC.data), e.g. data/train.")
@click.option("--size", type=int, help="Square training canvas, a multiple of 16 (overrides PSC.size; the "
                                       "reference trains at 256). The heat-map sigma scales with it.")
@click.option("--vgg-weights", type=click.Path(dir_okay=False),
              help="torchvision VGG19 state dict for CT-Net's content and style losses; without it they are off.")
@_run_options
@user_errors
def train_psc(stage: str, config: str, data: Optional[str], size: Optional[int], vgg_weights: Optional[str],
              output: Optional[str],
              resume: Optional[str], steps: Optional[int], batch_size: Optional[int], lr: Optional[float],
              seed: Optional[int], workers: Optional[int], device: str, amp: str) -> None:
    """Train one PSC stage; -o DIR collects pm.pth, aa.pth and ct.pth (a PSC checkpoint folder)."""
    from .. import families

    _fit(device, families.get("psc").training(dict(
        stage=stage, config=config, data=data, size=size, vgg_weights=vgg_weights, output=output, resume=resume,
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, workers=workers, amp=amp)))
