"""Reading and writing Pose2Img checkpoints in the reference format.

The reference saves ``{'G': generator_state_dict, ...}``; the authors' released checkpoints
carry nn.DataParallel's ``module.`` prefix on every key. Ours add a ``'poserender'`` metadata
block (family, width, warp mode, config, ...) that the reference code ignores.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ..errors import UserError
from ..fileio import temp_file_beside
from .pose2img import Pose2ImgGenerator

META_KEY = "poserender"
_FIRST_CONV = "unet_stageA.model.model.0.weight"


def _strip_prefix(state: Mapping[str, Any]) -> Dict[str, Any]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def safe_load(path: Union[str, Path], expected: str) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure is one line in poserender's words.

    A file holding Python objects other than tensors and plain containers is refused by torch
    before anything runs; that is said plainly (torch's own text reads like advice to turn the
    check off, which would let the file run arbitrary code), with what a valid checkpoint holds.
    """
    import pickle
    import re

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise UserError(f"holds Python objects other than tensors ({found.group(1)}), so it was not loaded (for "
                            f"safety: loading them could run code from the file); expected {expected}: tensors in "
                            "plain dicts and lists, as torch.save(model.state_dict(), ...) writes", path) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise UserError(f"is not a torch file poserender can read ({detail.group(1).strip() if detail else 'damaged'})"
                        f"; expected {expected}", path) from None
    except Exception as exc:  # torch raises many types for corrupt/unsupported files
        raise UserError(f"cannot read it as a torch file ({_first_line(exc)}); expected {expected}", path) from None


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]


def load_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Return ``(generator_state_dict, metadata)``; metadata is ``{}`` for reference checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found; expected a .pth with {'G': state_dict}", path)
    ckpt = safe_load(path, "a Pose2Img checkpoint {'G': state_dict}")
    if not isinstance(ckpt, Mapping) or "G" not in ckpt or not isinstance(ckpt["G"], Mapping):
        keys = sorted(ckpt.keys())[:6] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise UserError(f"has no generator state dict under 'G' (found {keys}); "
                        "expected a Pose2Img checkpoint {'G': state_dict}", path)
    state = _strip_prefix(ckpt["G"])
    meta = dict(ckpt.get(META_KEY) or {})
    return state, meta


def generator_from_state(state: Mapping[str, torch.Tensor], where: Union[str, Path] = "checkpoint") -> Pose2ImgGenerator:
    """Build a generator of the right width and strictly load ``state`` into it."""
    first = state.get(_FIRST_CONV)
    if first is None or getattr(first, "ndim", 0) != 4:
        raise UserError(f"has no {_FIRST_CONV!r}; expected Pose2Img generator keys "
                        "(unet_stageA/unet_stageC/unet_stageD)", where)
    generator = Pose2ImgGenerator(width=int(first.shape[0]))
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise UserError(f"state dict keys do not match the Pose2Img generator: {', '.join(parts)}", where)
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{key} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)}", where)
    generator.load_state_dict(state, strict=True)
    return generator.eval()


def load_generator(path: Union[str, Path]) -> Tuple[Pose2ImgGenerator, Dict[str, Any]]:
    state, meta = load_checkpoint(path)
    return generator_from_state(state, path), meta


def save_checkpoint(path: Union[str, Path], generator: Pose2ImgGenerator, meta: Optional[Dict[str, Any]] = None,
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """Write ``{'G': state_dict, 'poserender': meta, **extra}`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: Dict[str, Any] = {"G": generator.state_dict(), META_KEY: {"family": "pose2img",
                                                                       "width": generator.width, **(meta or {})}}
    payload.update(extra or {})
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
