"""Train one PSC stage (pm, aa or ct) as the reference's ``train.py data/train <stage>`` does.

Per stage: Adam (betas 0.9, 0.999, lr 4e-4) with the learning rate halved every
``lr_halve_epochs`` epochs (reference: 12 / 25 / 37), batch 2 / 2 / 1, the reference's weight
initialisation (conv and linear N(0, 0.02), BatchNorm weight N(1, 0.02), biases 0) and the
objectives of ``psc_objectives.py``.

Outputs in the run folder ``-o DIR``: ``DIR/<stage>/`` holds the training checkpoints
(``{'state_dict', 'opt', 'epoch'}`` + ``'poserender'`` metadata + ``'resume'`` state), TensorBoard
events and metrics.jsonl; at the end ``DIR/<stage>.pth`` is written as the plain state dict the
authors' ``test.py`` loads, so after the three stages ``DIR`` is a PSC checkpoint folder
(``pm.pth``, ``aa.pth``, ``ct.pth``) for ``poserender.models.psc.checkpoint.load_psc_nets``.
"""
from __future__ import annotations

import dataclasses
import datetime
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from .. import __version__
from ..errors import UserError
from ..models.psc import AANet, CTNet, PMNet
from ..models.psc.blocks import BN_STATS
from ..models.psc.ops import PoseHeatmaps
from . import checkpoint as ckpt
from .config import _unknown
from .distributed import DistContext
from .logs import image_grid
from .loop import RunOptions, Schedule, TrainLoop
from .psc_data import STAGES, PscTrainData, sample_order
from .psc_objectives import AAObjective, CTObjective, PMObjective
from .vgg import load_vgg19

FAMILY = "psc"
#: the reference's per-stage settings (options/train_options.py); epochs are per pass over the data
STAGE_DEFAULTS: Dict[str, Dict[str, float]] = {
    "pm": {"epochs": 50, "batch_size": 2, "lr": 4e-4, "lr_halve_epochs": 12,
           "l1": 10.0, "l2": 30.0, "grad": 0.35, "perturbation": 1.5, "t_eps": 1e-2},
    "aa": {"epochs": 100, "batch_size": 2, "lr": 4e-4, "lr_halve_epochs": 25, "l1": 8.0, "ce": 0.5},
    "ct": {"epochs": 150, "batch_size": 1, "lr": 4e-4, "lr_halve_epochs": 37, "l1": 2.0, "content": 0.3,
           "style": 100.0, "face": 300.0, "cloth": 30.0, "cloth_grad": 0.0, "flow": 5.0},
}
_COMMON = {"data", "size", "sigma", "aa_bn_stats", "seed", "workers", "checkpoint", "log"}
#: parsing label colours for the TensorBoard previews (the reference's par2img palette)
PALETTE = torch.tensor([(0, 0, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 0, 255), (0, 255, 0),
                        (255, 0, 0)], dtype=torch.float32)


@dataclasses.dataclass(frozen=True)
class PscTrainConfig:
    stage: str
    data: str
    size: int = 256
    sigma: float = 100.0
    aa_bn_stats: str = "batch"       # the reference trains AA-Net's BatchNorm on batch statistics
    seed: int = 0
    workers: int = 0
    steps: Optional[int] = None       # None: epochs x steps per epoch
    epochs: int = 50
    batch_size: int = 2
    lr: float = 4e-4
    lr_halve_epochs: int = 12
    weights: Dict[str, float] = dataclasses.field(default_factory=dict)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    images_every: int = 200
    source: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def load_psc_config(path: Union[str, Path], stage: str, overrides: Optional[Dict[str, Any]] = None) -> PscTrainConfig:
    """The ``PSC:`` section of a YAML (see configs/psc_tiny.yaml); ``overrides`` (None = keep) win."""
    import yaml

    path = Path(path)
    if stage not in STAGES:
        raise UserError(f"--stage {stage!r}; expected one of {', '.join(STAGES)}")
    if not path.is_file():
        raise UserError("config file not found; expected a YAML with a PSC section", path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
    node = doc.get("PSC") if isinstance(doc, dict) else None
    if not isinstance(node, dict):
        raise UserError("has no PSC section; expected PSC: {data: ..., pm: {...}, aa: {...}, ct: {...}}", path)
    for key in node:
        if key not in _COMMON and key not in STAGES:
            raise _unknown(key, sorted(_COMMON) + list(STAGES), "PSC.", path)
    stage_node = dict(node.get(stage) or {})
    for key in stage_node:
        if key not in STAGE_DEFAULTS[stage] and key != "steps":
            raise _unknown(key, list(STAGE_DEFAULTS[stage]) + ["steps"], f"PSC.{stage}.", path)
    merged = {**STAGE_DEFAULTS[stage], **stage_node}
    data = (overrides or {}).get("data") or node.get("data")
    if not data:
        raise UserError("PSC.data is not set; expected the reference's data/train folder (or pass --data)", path)
    data_path = Path(str(data)).expanduser()
    if not data_path.is_absolute() and not (overrides or {}).get("data"):
        data_path = path.parent / data_path
    try:
        cfg = PscTrainConfig(
            stage=stage, data=str(data_path), size=int(node.get("size", 256)), sigma=float(node.get("sigma", 100.0)),
            aa_bn_stats=str(node.get("aa_bn_stats", "batch")), seed=int(node.get("seed", 0)),
            workers=int(node.get("workers", 0)),
            steps=None if merged.get("steps") is None else int(merged["steps"]), epochs=int(merged["epochs"]),
            batch_size=int(merged["batch_size"]), lr=float(merged["lr"]),
            lr_halve_epochs=int(merged["lr_halve_epochs"]),
            weights={k: float(v) for k, v in merged.items()
                     if k not in ("epochs", "steps", "batch_size", "lr", "lr_halve_epochs")},
            checkpoint_every=int((node.get("checkpoint") or {}).get("every", 1000)),
            keep_checkpoints=int((node.get("checkpoint") or {}).get("keep", 3)),
            log_every=int((node.get("log") or {}).get("every", 10)),
            images_every=int((node.get("log") or {}).get("images_every", 200)), source=str(path))
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad PSC value ({exc})", path) from None
    for key, value in (overrides or {}).items():
        if value is not None and key == "size":     # the Gaussian keeps its size relative to the canvas
            cfg = dataclasses.replace(cfg, size=int(value), sigma=cfg.sigma * int(value) / cfg.size)
        elif value is not None and key != "data":
            cfg = dataclasses.replace(cfg, **{key: value})
    problems = [f"{k} is {getattr(cfg, k)}; expected >= 1" for k in
                ("size", "epochs", "batch_size", "lr_halve_epochs", "checkpoint_every", "log_every", "keep_checkpoints")
                if getattr(cfg, k) < 1]
    if cfg.steps is not None and cfg.steps < 1:
        problems.append(f"steps is {cfg.steps}; expected >= 1")
    if cfg.size % 16:
        problems.append(f"size is {cfg.size}; the PSC nets downsample 16x, so expected a multiple of 16")
    if cfg.aa_bn_stats not in BN_STATS:
        problems.append(f"aa_bn_stats is {cfg.aa_bn_stats!r}; expected one of {', '.join(BN_STATS)}")
    if problems:
        raise UserError("; ".join(problems), path)
    return cfg


def init_reference_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's ``init_weights('normal')``: conv/linear N(0, gain), BatchNorm weight N(1, gain), biases 0."""
    for m in net.modules():
        name = type(m).__name__
        if "BatchNorm2d" in name:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
        elif ("Conv" in name or "Linear" in name) and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class PscTrainer(TrainLoop):
    family = FAMILY

    def __init__(self, cfg: PscTrainConfig, opts: RunOptions, ctx: DistContext):
        super().__init__(opts, ctx)
        self.cfg = cfg
        self.train_set = PscTrainData(Path(cfg.data), cfg.stage, cfg.size)
        per_rank = len(self.train_set) // ctx.world_size
        self.steps_per_epoch = per_rank // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise UserError(f"{len(self.train_set)} samples over {ctx.world_size} process(es) give {per_rank} per "
                            f"process, fewer than batch_size {cfg.batch_size}", cfg.data)
        steps = cfg.steps or cfg.epochs * self.steps_per_epoch
        self.schedule = Schedule(steps, cfg.batch_size, cfg.seed, cfg.log_every, cfg.checkpoint_every,
                                 cfg.keep_checkpoints, cfg.images_every, 0, cfg.workers)
        torch.manual_seed(cfg.seed)
        w = cfg.weights
        heatmaps = PoseHeatmaps(cfg.size, cfg.size, cfg.sigma)
        self.vgg = None
        if cfg.stage == "pm":
            self.net: nn.Module = PMNet()
            objective: nn.Module = PMObjective(self.net, heatmaps, w)
        elif cfg.stage == "aa":
            self.net = AANet(bn_stats=cfg.aa_bn_stats)
            objective = AAObjective(self.net, heatmaps, w)
        else:
            self.net = CTNet()
            if opts.vgg_weights:
                self.vgg = load_vgg19(opts.vgg_weights)
            elif w["content"] or w["style"]:
                opts.warn("content and style losses are off: no --vgg-weights given (poserender never downloads "
                          "weights; pass a torchvision VGG19 state dict such as vgg19-dcbb9e9d.pth)")
            objective = CTObjective(self.net, self.vgg, w)
        init_reference_weights(self.net)
        self.objective = objective.to(self.device)
        self.net.train()
        self.perturbation_rng = torch.Generator().manual_seed(cfg.seed + 7)   # PM's t perturbations
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        spe, halve = self.steps_per_epoch, cfg.lr_halve_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda step: 0.5 ** ((step // spe) // halve))
        self.scaler = torch.amp.GradScaler("cuda", enabled=opts.amp == "fp16")
        self.resume(opts.resume, ("stage", "size", "sigma"))
        self.model = self.wrap_ddp(self.objective)

    # -- one step -------------------------------------------------------------------------------
    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        context = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with context:
            if self.cfg.stage == "pm":
                # one draw per in-between pose, shared by the batch (the reference's torch.rand(1))
                draw = torch.rand(8, generator=self.perturbation_rng) * 2 - 1
                perturbation = (draw * self.cfg.weights["t_eps"]).to(self.device).view(1, 8)
                terms = self.model(b["keypoints"], b["valid"], b["t"], perturbation)
            elif self.cfg.stage == "aa":
                terms = self.model(b["keypoints"], b["valid"], b["labels"])
            else:
                terms = self.model(b["labels"], b["images"])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {k: v.detach() for k, v in terms.items()}

    def sample_order(self, epoch: int):
        return sample_order(len(self.train_set), self.cfg.seed, epoch, self.ctx.rank, self.ctx.world_size)

    def current_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def log_images(self) -> None:
        preview = getattr(self.objective, "preview", None)
        if not preview:
            return
        if self.cfg.stage == "pm":      # heat maps: sum over joints, white on black
            rows = [p.sum(1, keepdim=True).clamp(0, 1).expand(-1, 3, -1, -1) * 2 - 1 for p in preview]
        elif self.cfg.stage == "aa":    # parsings in the reference's colours
            rows = [PALETTE.to(p.device)[p.long()].permute(0, 3, 1, 2) / 127.5 - 1 for p in preview]
        else:
            rows = list(preview)
        self.log.images(self.step, f"train/{self.cfg.stage}", image_grid(rows, bgr=False))

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_payload(self) -> Dict[str, Any]:
        return {"state_dict": self.net.state_dict(), "opt": self.optimizer.state_dict(),
                "epoch": self.step // self.steps_per_epoch}

    def load_payload(self, payload: Dict[str, Any], path: Path) -> None:
        self.net.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["opt"])

    def resume_state(self) -> Dict[str, Any]:
        return {"sched": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "perturbation_rng": self.perturbation_rng.get_state()}

    def load_resume_state(self, state: Dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state["scaler"])
        self.perturbation_rng.set_state(state["perturbation_rng"])

    def synced_parameters(self) -> Sequence[torch.Tensor]:
        return list(self.net.parameters())

    def metadata(self) -> Dict[str, Any]:
        return {"family": FAMILY, "stage": self.cfg.stage, "size": self.cfg.size, "sigma": self.cfg.sigma,
                "resolution": [self.cfg.size, self.cfg.size], "step": self.step,
                "epoch": self.step // self.steps_per_epoch, "aa_bn_stats": self.cfg.aa_bn_stats,
                "git_commit": ckpt.git_commit() if self.ctx.is_main else None, "poserender": __version__,
                "world_size": self.ctx.world_size, "global_batch": self.cfg.batch_size * self.ctx.world_size,
                "amp": self.opts.amp, "vgg": self.vgg is not None, "training": self.cfg.to_dict(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def after_fit(self, final: Optional[Path]) -> Optional[Path]:
        """Also write ``<run>/<stage>.pth``: the plain state dict the authors' test.py loads."""
        if final is None:
            return None
        plain = self.opts.run_dir.parent / f"{self.cfg.stage}.pth"
        ckpt.write_atomic(plain, self.net.state_dict())
        return final
