"""Train the Pose2Img generator the way the reference trainer does, resumably and under DDP.

One step (reference ``Trainer.__train_with_D__``): the generator renders the target pose from
the source frame; its loss is ``10 * L1 + perceptual + style + 0.5 * hinge(D(output))``
(Adam, betas (0.5, 0.999)); then the discriminator takes one hinge step on (target, output)
at half the learning rate. Pre-processing (heat maps, limb-mask prior, limb fits, warps) is
the same batched torch code that is exported, so training and deployment see identical inputs.

Extras over the reference: a step-based schedule with optional linear LR decay, AMP on CUDA
(bf16, or fp16 with grad scaling), DDP under torchrun, atomic checkpoints every N steps and at
the end, and ``--resume`` that restores weights, optimisers, schedulers, scalers, the step and
the RNG states, and skips the samples of the interrupted epoch already trained on, so the
resumed run's losses equal an uninterrupted run's.
"""
from __future__ import annotations

import datetime
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import __version__
from ..errors import UserError
from ..models.pose2img import FullPipeline, Pose2ImgGenerator, Pose2ImgGeometry
from . import checkpoint as ckpt
from .config import Pose2ImgTrainConfig
from .discriminator import Discriminator, blocks_for
from .distributed import DistContext
from .logs import image_grid
from .loop import AMP_MODES, RunOptions, Schedule, TrainLoop
from .losses import PerceptualStyleLoss, hinge_fake, hinge_real
from .pose2img_data import PairSampler, load_frames, split, validation_pairs
from .vgg import load_vgg19

FAMILY = "pose2img"
__all__ = ["Pose2ImgTrainer", "RunOptions", "AMP_MODES"]


class DiscriminatorPair(nn.Module):
    """Scores (real, fake) in one forward, so DDP sees one forward/backward per D step."""

    def __init__(self, discriminator: Discriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        return self.discriminator(real), self.discriminator(fake)


def lr_factor(decay: str, steps: int) -> Callable[[int], float]:
    """constant: 1; linear: 1 for the first half of the run, then down to 0 at the last step."""
    if decay == "constant":
        return lambda step: 1.0
    half = steps // 2
    return lambda step: 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, steps - half))


class Pose2ImgTrainer(TrainLoop):
    family = FAMILY

    def __init__(self, cfg: Pose2ImgTrainConfig, opts: RunOptions, ctx: DistContext):
        super().__init__(opts, ctx)
        self.cfg = cfg
        self.schedule = Schedule(cfg.steps, cfg.batch_size, cfg.seed, cfg.log_every, cfg.checkpoint_every,
                                 cfg.keep_checkpoints, cfg.images_every, cfg.val_every, cfg.data.workers)
        cfg.geometry.check_canvas(cfg.source or "config")
        self.geometry = Pose2ImgGeometry.from_config(cfg.geometry, cfg.warp_mode)
        table = load_frames(cfg.data, cfg.geometry)
        self.train_set, self.val_set = split(table, cfg.data.val_frames, str(cfg.data.frames))
        per_rank = len(self.train_set) // ctx.world_size
        self.steps_per_epoch = per_rank // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise UserError(f"{len(self.train_set)} training frames over {ctx.world_size} process(es) give "
                            f"{per_rank} per process, fewer than batch_size {cfg.batch_size}; lower the batch "
                            "size or val_frames, or add frames", cfg.source)

        torch.manual_seed(cfg.seed)          # same initial weights on every rank and every run
        self.generator = Pose2ImgGenerator(width=cfg.width).to(self.device)
        self.pipeline = FullPipeline(self.generator, self.geometry).to(self.device)
        self.discriminator = None
        if cfg.w_adversarial > 0:
            h, w = self.geometry.height, self.geometry.width
            self.discriminator = Discriminator(cfg.disc_width, blocks_for(h, w)).to(self.device)
        self.vgg_loss = None
        if opts.vgg_weights:
            self.vgg_loss = PerceptualStyleLoss(load_vgg19(opts.vgg_weights)).to(self.device)
        elif cfg.w_perceptual > 0 or cfg.w_style > 0:
            opts.warn("perceptual and style losses are off: no --vgg-weights given (poserender never "
                      "downloads weights; pass a torchvision VGG19 state dict such as vgg19-dcbb9e9d.pth)")

        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lr_factor(cfg.lr_decay, cfg.steps))
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=opts.amp == "fp16")
        self.opt_d = self.sched_d = None
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=opts.amp == "fp16")
        if self.discriminator is not None:
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_discriminator, betas=cfg.betas)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lr_factor(cfg.lr_decay, cfg.steps))

        self.resume(opts.resume, ("width", "disc_width", "resolution", "warp_mode"))

        self.g_model: nn.Module = self.wrap_ddp(self.pipeline)
        self.d_model: Optional[nn.Module] = None
        if self.discriminator is not None:
            self.d_model = self.wrap_ddp(DiscriminatorPair(self.discriminator))
        self.generator.train()
        if self.discriminator is not None:
            self.discriminator.train()

    # -- checkpoint / resume --------------------------------------------------------------------
    def load_payload(self, payload: Dict[str, Any], path: Path) -> None:
        self.generator.load_state_dict(payload["G"])
        self.opt_g.load_state_dict(payload["opt"])
        if self.discriminator is not None:
            if "D" not in payload:
                raise UserError("has no discriminator state; this config trains one (loss.adversarial > 0)", path)
            self.discriminator.load_state_dict(payload["D"])
            self.opt_d.load_state_dict(payload["optD"])

    def resume_state(self) -> Dict[str, Any]:
        state = {"sched": self.sched_g.state_dict(), "scaler": self.scaler_g.state_dict()}
        if self.discriminator is not None:
            state.update(schedD=self.sched_d.state_dict(), scalerD=self.scaler_d.state_dict())
        return state

    def load_resume_state(self, state: Dict[str, Any]) -> None:
        self.sched_g.load_state_dict(state["sched"])
        self.scaler_g.load_state_dict(state["scaler"])
        if self.discriminator is not None:
            self.sched_d.load_state_dict(state["schedD"])
            self.scaler_d.load_state_dict(state["scalerD"])

    def checkpoint_payload(self) -> Dict[str, Any]:
        """The reference trainer's dict: G, D, opt, optD, epoch."""
        payload: Dict[str, Any] = {"G": self.generator.state_dict(), "opt": self.opt_g.state_dict(),
                                   "epoch": self.step // self.steps_per_epoch}
        if self.discriminator is not None:
            payload["D"] = self.discriminator.state_dict()
            payload["optD"] = self.opt_d.state_dict()
        return payload

    def synced_parameters(self) -> Sequence[torch.Tensor]:
        return list(self.generator.parameters())

    def current_lr(self) -> float:
        return self.sched_g.get_last_lr()[0]

    def sample_order(self, epoch: int):
        return PairSampler(len(self.train_set), self.cfg.seed, epoch, self.ctx.rank, self.ctx.world_size)

    def log_images(self) -> None:
        b, fake = self._last
        self.log.images(self.step, "train/source_target_output",
                        image_grid([b["source_image"], b["target_image"], fake]))

    def metadata(self) -> Dict[str, Any]:
        d = self.discriminator
        return {
            "family": FAMILY, "width": self.cfg.width, "config": self.cfg.geometry.to_dict(),
            "warp_mode": self.cfg.warp_mode, "resolution": [self.geometry.height, self.geometry.width],
            "disc_width": d.width if d else None, "disc_blocks": d.blocks if d else None,
            "step": self.step, "epoch": self.step // self.steps_per_epoch,
            "git_commit": ckpt.git_commit() if self.ctx.is_main else None,
            "poserender": __version__, "world_size": self.ctx.world_size,
            "global_batch": self.cfg.batch_size * self.ctx.world_size, "amp": self.opts.amp,
            "perceptual_style": self.vgg_loss is not None, "training": self.cfg.to_dict(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    # -- one step -----------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _generator_terms(self, b: Dict[str, torch.Tensor], model: nn.Module):
        fake = model(b["source_image"], b["source_keypoints"], b["source_valid"],
                     b["target_keypoints"], b["target_valid"])
        target = b["target_image"]
        terms = {"l1": self.cfg.w_l1 * F.l1_loss(fake.float(), target)}
        if self.vgg_loss is not None:
            perceptual, style = self.vgg_loss(fake, target)
            terms["perceptual"] = self.cfg.w_perceptual * perceptual
            terms["style"] = self.cfg.w_style * style
        return fake, terms

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        b = self._to_device(batch)
        with self._autocast():
            fake, terms = self._generator_terms(b, self.g_model)
            if self.discriminator is not None:
                self.discriminator.requires_grad_(False)     # G step: gradients reach G only
                terms["g_adv"] = self.cfg.w_adversarial * hinge_real(self.discriminator(fake).float())
                self.discriminator.requires_grad_(True)
        loss_g = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        out = {"total": loss_g.detach(), **{k: v.detach() for k, v in terms.items()}}
        if self.discriminator is not None:
            with self._autocast():
                real_score, fake_score = self.d_model(b["target_image"], fake.detach())
                loss_d = (hinge_fake(fake_score.float()) + hinge_real(real_score.float())) / 2
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(loss_d).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            self.sched_d.step()
            out.update(d=loss_d.detach(), d_real_score=real_score.detach().float().mean(),
                       d_fake_score=fake_score.detach().float().mean())
        self.sched_g.step()
        self._last = (b, fake.detach())
        return out

    # -- loops --------------------------------------------------------------------------------
    def validate(self) -> Dict[str, float]:
        """Mean losses over the validation pairs (source = first validation frame), rank 0's view."""
        self.generator.eval()
        sums: Dict[str, float] = {}
        batches = 0
        first = None
        loader = self._loader(self.val_set, validation_pairs(len(self.val_set)), 2 * self.cfg.batch_size)
        with torch.no_grad(), self._autocast():
            for batch in loader:
                b = self._to_device(batch)
                fake, terms = self._generator_terms(b, self.pipeline)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                batches += 1
                if first is None:
                    first = (b, fake)
        self.generator.train()
        means = {k: v / batches for k, v in sums.items()}
        means["total"] = sum(means.values())
        if first is not None:
            b, fake = first
            self.log.images(self.step, "val/source_target_output",
                            image_grid([b["source_image"], b["target_image"], fake]))
        return means
