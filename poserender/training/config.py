"""Training configuration: the reference Pose2Img YAML plus a ``TRAINING:`` section of ours.

The reference's ``POSE2IMAGE`` section (crop, canvas scale, heat-map and limb-mask widths,
``PATH.kp_base/img_base/img_extension``) is read by :func:`poserender.config.load_pose2img_config`
unchanged, so the authors' ``Oliver.yaml`` trains as it is. ``TRAINING:`` (ignored by the
reference code) holds what the reference passed on its command line or hard-coded: steps,
batch size, learning rates, loss weights, net widths, where the frames are, how often to
checkpoint and log. Every key is optional; unknown keys are an error that lists the known ones.

Paths under ``TRAINING.data`` are relative to the YAML file; ``POSE2IMAGE.PATH`` paths are
relative to the working directory, as in the reference (which runs from its repository root).
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..config import Pose2ImgConfig, load_pose2img_config
from ..errors import UserError

LR_DECAYS = ("constant", "linear")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    #: a video (frames = crops or full frames) or a folder of images; None: POSE2IMAGE.PATH.img_base
    frames: Optional[str] = None
    #: a keypoint sequence (.npz/.npy/JSON folder) for a video, or a folder of per-frame .npy/.json
    keypoints: Optional[str] = None
    img_extension: str = ".jpg"
    #: the first ``val_frames`` frames (sorted by name / in video order) are the validation set
    val_frames: int = 64
    #: decode at most this many frames of a video (0 = all); for quick smoke runs
    max_frames: int = 0
    #: keep decoded image-folder frames in memory (videos are always decoded once, up front)
    cache: bool = False
    workers: int = 0


@dataclasses.dataclass(frozen=True)
class Pose2ImgTrainConfig:
    geometry: Pose2ImgConfig
    data: DataConfig = DataConfig()
    width: int = 64                    # generator U-Net width (64 = the published nets)
    disc_width: int = 64               # discriminator width (64 = the reference discriminator)
    warp_mode: str = "exact"
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-5                   # the reference's --lr; D uses lr_d (reference: lr / 2)
    lr_d: Optional[float] = None
    betas: Tuple[float, float] = (0.5, 0.999)
    lr_decay: str = "constant"        # linear: constant for the first half, then linearly to 0
    w_l1: float = 10.0
    w_perceptual: float = 1.0
    w_style: float = 1.0
    w_adversarial: float = 0.5
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    images_every: int = 200
    val_every: int = 1000
    seed: int = 0
    source: str = ""                   # the YAML this came from (for messages and metadata)

    @property
    def lr_discriminator(self) -> float:
        return self.lr / 2 if self.lr_d is None else self.lr_d

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["geometry"] = self.geometry.to_dict()
        d["betas"] = list(self.betas)
        return d


# YAML key -> dataclass field, per sub-section of TRAINING
_SECTIONS: Dict[str, Dict[str, str]] = {
    "data": {f.name: f.name for f in dataclasses.fields(DataConfig)},
    "model": {"width": "width", "disc_width": "disc_width", "warp_mode": "warp_mode"},
    "optim": {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "lr_d": "lr_d", "betas": "betas",
              "lr_decay": "lr_decay"},
    "loss": {"l1": "w_l1", "perceptual": "w_perceptual", "style": "w_style", "adversarial": "w_adversarial"},
    "checkpoint": {"every": "checkpoint_every", "keep": "keep_checkpoints"},
    "log": {"every": "log_every", "images_every": "images_every", "val_every": "val_every"},
}
_TOP_LEVEL = {"seed": "seed"}


def _unknown(key: str, known, where: str, path: Union[str, Path]) -> UserError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return UserError(f"unknown key {where}{key!r}{suggestion}; expected one of {', '.join(sorted(known))}", path)


def _resolve(value: Optional[str], base: Path) -> Optional[str]:
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (base / p))


def load_train_config(path: Union[str, Path], overrides: Optional[Dict[str, Any]] = None) -> Pose2ImgTrainConfig:
    """Read a Pose2Img training YAML; ``overrides`` (field name -> value, None = keep) come from
    the command line and win over the file."""
    import yaml

    path = Path(path)
    geometry = load_pose2img_config(path)
    doc = yaml.safe_load(path.read_text()) or {}
    section = doc.get("TRAINING") or {}
    if not isinstance(section, dict):
        raise UserError(f"TRAINING is {type(section).__name__}; expected a mapping", path)
    fields: Dict[str, Any] = {}
    data: Dict[str, Any] = {}
    for key, value in section.items():
        if key in _TOP_LEVEL:
            fields[_TOP_LEVEL[key]] = value
            continue
        if key not in _SECTIONS:
            raise _unknown(key, list(_SECTIONS) + list(_TOP_LEVEL), "TRAINING.", path)
        if not isinstance(value, dict):
            raise UserError(f"TRAINING.{key} is {value!r}; expected a mapping", path)
        for sub, sub_value in value.items():
            if sub not in _SECTIONS[key]:
                raise _unknown(sub, _SECTIONS[key], f"TRAINING.{key}.", path)
            (data if key == "data" else fields)[_SECTIONS[key][sub]] = sub_value
    node = doc.get("POSE2IMAGE", doc)
    ref_paths = node.get("PATH") if isinstance(node, dict) and isinstance(node.get("PATH"), dict) else {}
    base = path.parent
    data["frames"] = _resolve(data.get("frames"), base) or _resolve(ref_paths.get("img_base"), Path.cwd())
    data["keypoints"] = _resolve(data.get("keypoints"), base) or _resolve(ref_paths.get("kp_base"), Path.cwd())
    if "img_extension" not in data and ref_paths.get("img_extension"):
        data["img_extension"] = str(ref_paths["img_extension"])
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("frames", "keypoints", "workers", "max_frames", "val_frames"):
            data[key] = str(Path(value).resolve()) if key in ("frames", "keypoints") else value
        else:
            fields[key] = value
    try:
        cfg = Pose2ImgTrainConfig(geometry=geometry, data=_typed(DataConfig, data, path), source=str(path),
                                  **_typed_fields(fields, path))
    except TypeError as exc:
        raise UserError(f"bad TRAINING value ({exc})", path) from None
    _check(cfg, path)
    return cfg


def _typed(cls, values: Dict[str, Any], path: Path):
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in values and values[f.name] is not None:
            out[f.name] = _cast(f.name, values[f.name], f.default, path)
    return cls(**out)


def _typed_fields(values: Dict[str, Any], path: Path) -> Dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(Pose2ImgTrainConfig)}
    return {k: _cast(k, v, defaults[k], path) for k, v in values.items()}


def _cast(name: str, value: Any, default: Any, path: Path) -> Any:
    try:
        if name == "betas":
            betas = tuple(float(b) for b in value)
            if len(betas) != 2:
                raise ValueError("two numbers")
            return betas
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError("true or false")
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError("an integer")
            return int(float(value))
        if isinstance(default, float) or name == "lr_d":
            return float(value)
        return str(value) if value is not None else None
    except (TypeError, ValueError) as exc:
        raise UserError(f"TRAINING value {name} = {value!r}; expected {exc}", path) from None


def _check(cfg: Pose2ImgTrainConfig, path: Path) -> None:
    from ..models.warp import WARP_MODES

    problems = []
    for name in ("width", "disc_width", "steps", "batch_size", "checkpoint_every", "log_every",
                 "images_every", "val_every", "keep_checkpoints"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} is {getattr(cfg, name)}; expected >= 1")
    if cfg.data.val_frames < 1:
        problems.append(f"data.val_frames is {cfg.data.val_frames}; expected >= 1")
    if cfg.warp_mode not in WARP_MODES:
        problems.append(f"model.warp_mode is {cfg.warp_mode!r}; expected one of {', '.join(WARP_MODES)}")
    if cfg.lr_decay not in LR_DECAYS:
        problems.append(f"optim.lr_decay is {cfg.lr_decay!r}; expected one of {', '.join(LR_DECAYS)}")
    if cfg.lr <= 0 or cfg.lr_discriminator <= 0:
        problems.append(f"learning rates are {cfg.lr:g} / {cfg.lr_discriminator:g}; expected > 0")
    if not cfg.data.frames or not cfg.data.keypoints:
        problems.append("no training data: set TRAINING.data.frames and .keypoints (or POSE2IMAGE.PATH."
                        "img_base and kp_base), or pass --frames and --keypoints")
    if problems:
        raise UserError("; ".join(problems), path)
