"""The training loop every family shares: steps, epochs, resume, checkpoints, logs, DDP checks.

A family's trainer subclasses :class:`TrainLoop` and provides the data (``train_set`` and
``sample_order``), one optimisation step (``train_step``), what goes into a checkpoint
(``checkpoint_payload`` / ``load_payload``) and optionally ``validate`` and ``log_images``.
The loop owns the step counter, the per-epoch sample order (so a resumed run skips exactly the
samples the interrupted epoch already trained on), logging on rank 0, atomic checkpoints every
N steps and at the end, ``--resume`` (including the RNG states) and the end-of-run check that
every DDP rank holds the same weights.
"""
from __future__ import annotations

import abc

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import UserError
from ..models.checkpoint import META_KEY
from . import checkpoint as ckpt
from .distributed import DistContext
from .logs import RunLog


@dataclasses.dataclass
class RunOptions:
    """How to run (not what to learn): where, on what, resuming from where."""

    run_dir: Path
    resume: Optional[str] = None            # a checkpoint path, or "auto" (latest in run_dir)
    vgg_weights: Optional[str] = None
    amp: str = "off"
    warn: Callable[[str], None] = lambda s: None
    #: called on rank 0 after every step: (step, total_steps, latest logged scalars, it/s)
    on_step: Optional[Callable[[int, int, Dict[str, float], float], None]] = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    seed: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    images_every: int = 0       # 0 = never
    val_every: int = 0
    workers: int = 0


AMP_MODES = ("off", "bf16", "fp16")


def check_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``--amp`` (None = off); AMP needs CUDA."""
    if amp not in AMP_MODES:
        raise UserError(f"--amp {amp!r}; expected one of {', '.join(AMP_MODES)}")
    if amp != "off" and device.type != "cuda":
        raise UserError(f"--amp {amp} needs a CUDA device; this run is on {device}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


class TrainLoop(abc.ABC):
    family = ""
    schedule: Schedule
    train_set: Any
    steps_per_epoch: int

    def __init__(self, opts: RunOptions, ctx: DistContext):
        self.opts, self.ctx, self.device = opts, ctx, ctx.device
        self.amp_dtype = check_amp(opts.amp, self.device)     # autocast dtype of --amp, None = off
        self.step = 0
        self.history: List[Dict[str, float]] = []
        self.log: Optional[RunLog] = None

    # -- what a family provides ---------------------------------------------------------------
    @abc.abstractmethod
    def sample_order(self, epoch: int) -> Sequence[Any]:
        """This rank's samples of ``epoch`` in order (dataset keys), ``steps_per_epoch`` batches' worth."""
        ...

    @abc.abstractmethod
    def train_step(self, batch) -> Dict[str, torch.Tensor]:
        ...

    @abc.abstractmethod
    def checkpoint_payload(self) -> Dict[str, Any]:
        """The family's checkpoint dict (reference layout); the loop adds metadata and resume state."""
        ...

    @abc.abstractmethod
    def load_payload(self, payload: Dict[str, Any], path: Path) -> None:
        ...

    @abc.abstractmethod
    def metadata(self) -> Dict[str, Any]:
        ...

    def synced_parameters(self) -> Sequence[torch.Tensor]:
        """Parameters DDP keeps equal on every rank (checked at the end of a run)."""
        return []

    def validate(self) -> Optional[Dict[str, float]]:
        return None

    def log_images(self) -> None:
        """Optional hook: image grids for TensorBoard (a family without images logs none)."""

    def resume_state(self) -> Dict[str, Any]:
        """Schedulers, scalers, extra generators: the family's part of ``payload['resume']``."""
        return {}

    def load_resume_state(self, state: Dict[str, Any]) -> None:
        """Optional hook: restore what :meth:`resume_state` saved (nothing by default)."""

    # -- shared ---------------------------------------------------------------------------------
    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def resume(self, resume: Optional[str], must_match: Sequence[str]) -> None:
        """Restore a run from ``resume`` (a path, or 'auto'); ``must_match`` metadata keys must agree."""
        if not resume:
            return
        path = ckpt.latest_checkpoint(self.opts.run_dir) if resume == "auto" else Path(resume)
        if path is None:
            self.opts.warn(f"--resume auto: no checkpoint in {self.opts.run_dir}; starting from step 0")
            return
        payload = ckpt.read_checkpoint(path)
        meta = ckpt.resumable(payload, path, self.family)
        mine = self.metadata()
        for key in must_match:
            if meta.get(key) != mine.get(key):
                raise UserError(f"was trained with {key} {meta.get(key)!r}; this config has {mine.get(key)!r}", path)
        self.load_payload(payload, path)
        state = payload[ckpt.RESUME_KEY]
        self.load_resume_state(state)
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])
        self.opts.warn(f"resumed from {path} at step {self.step}")

    def save(self, name: str) -> Optional[Path]:
        if not self.ctx.is_main:
            return None
        payload = self.checkpoint_payload()
        payload[META_KEY] = self.metadata()
        payload[ckpt.RESUME_KEY] = {"step": self.step, "rng": ckpt.rng_state(), **self.resume_state()}
        path = ckpt.write_atomic(self.opts.run_dir / name, payload)
        ckpt.prune(self.opts.run_dir, self.schedule.keep_checkpoints)
        return path

    def after_fit(self, final: Optional[Path]) -> Optional[Path]:
        """Hook for extra outputs written next to the final checkpoint (rank 0)."""
        return final

    def _loader(self, dataset, order, batch_size: int):
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=list(order),
                                           num_workers=self.schedule.workers,
                                           pin_memory=self.device.type == "cuda")

    def fit(self) -> Dict[str, Any]:
        s, ctx = self.schedule, self.ctx
        if self.log is None:
            self.log = RunLog(self.opts.run_dir, ctx.is_main, self.opts.warn)
        if ctx.is_main:
            self.opts.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_partials(self.opts.run_dir)
        last_logged: Dict[str, float] = {}
        started, steps_at_start = time.perf_counter(), self.step
        interval_start, interval_steps = time.perf_counter(), 0
        try:
            while self.step < s.steps:
                epoch, done = divmod(self.step, self.steps_per_epoch)
                order = list(self.sample_order(epoch))[done * s.batch_size:self.steps_per_epoch * s.batch_size]
                for batch in self._loader(self.train_set, order, s.batch_size):
                    lr = self.current_lr()              # the rate this step trains with
                    values = self.train_step(batch)
                    self.step += 1
                    interval_steps += 1
                    if self.step % s.log_every == 0 or self.step == s.steps:
                        names = list(values)
                        means = ctx.mean(torch.stack([values[n].detach().float() for n in names])).tolist()
                        now = time.perf_counter()
                        last_logged = dict(zip(names, means))
                        last_logged["it_per_s"] = interval_steps / max(now - interval_start, 1e-9)
                        last_logged["lr"] = lr
                        interval_start, interval_steps = now, 0
                        self.history.append({"step": self.step, **last_logged})
                        self.log.scalars(self.step, last_logged)
                    if ctx.is_main and s.images_every and self.step % s.images_every == 0:
                        self.log_images()
                    if ctx.is_main and s.val_every and self.step % s.val_every == 0:
                        scores = self.validate()
                        if scores:
                            self.log.scalars(self.step, scores, split="val")
                    if self.step % s.checkpoint_every == 0 and self.step < s.steps:
                        self.save(ckpt.checkpoint_name(self.step))
                    if ctx.is_main and self.opts.on_step is not None:
                        elapsed = time.perf_counter() - started
                        self.opts.on_step(self.step, s.steps, last_logged,
                                          (self.step - steps_at_start) / max(elapsed, 1e-9))
                    if self.step >= s.steps:
                        break
            in_sync = self._ranks_in_sync()
            final = self.after_fit(self.save("ckpt_final.pth"))
            if not in_sync:
                raise RuntimeError("DDP ranks ended with different weights")
            return {"step": self.step, "checkpoint": final, "last": last_logged, "ranks_in_sync": in_sync,
                    "seconds": time.perf_counter() - started}
        except KeyboardInterrupt:
            if not ctx.distributed and self.step > steps_at_start:   # keep what was learned; resumable
                self.opts.warn(f"interrupted: saved {self.save(ckpt.checkpoint_name(self.step))}")
            raise
        finally:
            self.log.close()

    def current_lr(self) -> float:
        return 0.0

    def _ranks_in_sync(self) -> bool:
        if not self.ctx.distributed:
            return True
        with torch.no_grad():
            checksum = torch.stack([p.double().sum() for p in self.synced_parameters()]).sum().view(1)
        return self.ctx.same_on_all_ranks(checksum.to(self.device))
