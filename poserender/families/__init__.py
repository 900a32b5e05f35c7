"""Model families: one module each behind :class:`~poserender.families.base.Family`, one registry.

The registry is this plain dict, so every family is visible in one place; a new family is one
module plus one line here (or a call to :func:`register`, which is how a test adds a toy one).
Everything family-specific is reached through it: ``families.of(manifest)`` for an exported
model, ``families.detect(path)`` for a checkpoint, ``families.get(name)`` for ``--model NAME``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

from ..errors import UserError
from .base import ExportPlan, ExportStage, Family, IdentityInput, Int8Plan
from .pose2img import Pose2ImgFamily
from .psc import PSCFamily

FAMILIES: Dict[str, Family] = {family.name: family for family in (Pose2ImgFamily(), PSCFamily())}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (its name must be new); returns it."""
    if not family.name or family.name in FAMILIES:
        raise ValueError(f"family name {family.name!r} is empty or already registered")
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)


def names() -> Tuple[str, ...]:
    return tuple(FAMILIES)


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def of(manifest: Mapping[str, Any]) -> Family:
    """The family of an exported model (manifests without ``family`` are pose2img, the first one)."""
    return get(manifest.get("family", "pose2img"))


def detect(path: Path) -> Family:
    """The family whose checkpoint ``path`` is: a PSC folder (pm.pth, aa.pth, ct.pth) before the
    file-based families, so a folder is never mistaken for a file."""
    for family in FAMILIES.values():
        if family.is_checkpoint(Path(path)):
            return family
    raise UserError(f"not a checkpoint of any known family ({', '.join(FAMILIES)}); expected a Pose2Img .pth file "
                    "or a PSC folder with pm.pth, aa.pth and ct.pth", path)


def others(family: Family) -> Tuple[Family, ...]:
    return tuple(f for f in FAMILIES.values() if f is not family)


__all__ = ["ExportPlan", "ExportStage", "FAMILIES", "Family", "IdentityInput", "Int8Plan", "detect", "get", "names",
           "of", "others", "register", "unregister"]
