"""Pose2Img configuration: the reference YAML (``POSE2IMAGE`` section) as a plain dataclass.

The reference config (e.g. ``Oliver.yaml``) describes the crop of the source video frame
(``TRAIN.CROP.W_bias/H_bias``), the crop size (``HYPERPARAM.img_H/img_W``, 640 x 640), the
downscale to the network canvas (``HYPERPARAM.scale``), the heat-map and limb-mask widths, and
the mean neck position used to place root-relative poses (``INFER.root_node``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .errors import UserError

N_CLUSTERS = 13
N_LIMBS = 8
#: every U-Net has five stride-2 levels, so a canvas side must be a multiple of 2**5
CANVAS_MULTIPLE = 32


@dataclasses.dataclass(frozen=True)
class Pose2ImgConfig:
    img_h: int = 640
    img_w: int = 640
    w_bias: float = 0.0
    h_bias: float = 0.0
    scale: float = 1.0
    kp_var_root: Tuple[float, ...] = (10, 10, 10, 10, 10, 10, 10, 4, 2, 3, 2, 4, 4)
    mask_sigma_perp: Tuple[float, ...] = (35, 25, 25, 20, 25, 20, 10, 10)
    root_node: Tuple[float, float] = (0.0, 0.0)
    infer_scale: float = 1.0

    @property
    def canvas_hw(self) -> Tuple[int, int]:
        """Network canvas (height, width) in pixels: the crop divided by ``scale``."""
        return int(self.img_h / self.scale), int(self.img_w / self.scale)

    def with_scale(self, scale: float) -> "Pose2ImgConfig":
        return dataclasses.replace(self, scale=float(scale))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Pose2ImgConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kw)

    def check_canvas(self, where: str = "config") -> None:
        """Refuse canvases the five-level U-Nets cannot take."""
        h, w = self.canvas_hw
        if h <= 0 or w <= 0 or h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE:
            raise UserError(
                f"canvas is {h} x {w} (img {self.img_h} x {self.img_w} / scale {self.scale:g}); "
                f"the U-Nets have five levels, so each side must be a positive multiple of "
                f"{CANVAS_MULTIPLE} (e.g. scale 1 -> 640, 2.5 -> 256, 5 -> 128)", where)


def _get(node: Dict[str, Any], dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _floats(value: Any, n: int, name: str, path: Union[str, Path]) -> Tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{name} is {value!r}; expected a list of {n} numbers", path) from None
    if len(out) != n:
        raise UserError(f"{name} has {len(out)} values; expected {n}", path)
    return out


def load_pose2img_config(path: Union[str, Path], scale: Optional[float] = None) -> Pose2ImgConfig:
    """Read a reference Pose2Img YAML (``POSE2IMAGE:`` section or the section's keys at top level).

    ``scale`` overrides ``HYPERPARAM.scale`` (e.g. 2.5 renders Oliver at 256 x 256).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError("config file not found; expected a Pose2Img YAML such as Oliver.yaml", path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"not valid YAML ({first})", path) from None
    if not isinstance(doc, dict):
        raise UserError("expected a YAML mapping with a POSE2IMAGE section", path)
    node = doc.get("POSE2IMAGE", doc)
    hp = _get(node, "HYPERPARAM", None)
    if not isinstance(hp, dict):
        raise UserError("no HYPERPARAM section; expected a Pose2Img config (POSE2IMAGE.HYPERPARAM)", path)
    root = _get(node, "INFER.root_node", [[0.0], [0.0]])
    try:
        root_xy = tuple(float(v[0] if isinstance(v, (list, tuple)) else v) for v in root)
    except (TypeError, ValueError, IndexError):
        root_xy = ()
    if len(root_xy) != 2:
        raise UserError(f"INFER.root_node is {root!r}; expected [[x], [y]]", path)
    try:
        cfg = Pose2ImgConfig(
            img_h=int(hp.get("img_H", 640)),
            img_w=int(hp.get("img_W", 640)),
            w_bias=float(_get(node, "TRAIN.CROP.W_bias", 0)),
            h_bias=float(_get(node, "TRAIN.CROP.H_bias", 0)),
            scale=float(hp.get("scale", 1.0) if scale is None else scale),
            kp_var_root=_floats(hp.get("kp_var_root"), N_CLUSTERS, "HYPERPARAM.kp_var_root", path),
            mask_sigma_perp=_floats(hp.get("mask_sigma_perp"), N_LIMBS, "HYPERPARAM.mask_sigma_perp", path),
            root_node=(root_xy[0], root_xy[1]),
            infer_scale=float(_get(node, "INFER.scale", 1.0)),
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad value in config ({exc})", path) from None
    if cfg.scale <= 0 or cfg.infer_scale == 0:
        raise UserError(f"HYPERPARAM.scale is {cfg.scale:g} and INFER.scale {cfg.infer_scale:g}; expected > 0", path)
    cfg.check_canvas(str(path))
    return cfg


