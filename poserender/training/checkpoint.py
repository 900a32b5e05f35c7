"""Training checkpoints: the reference layout, a metadata block, and the state to resume exactly.

A pose2img checkpoint is the reference trainer's dict, ``{'G', 'D', 'opt', 'optD', 'epoch'}``
(so the authors' ``trainer.py --load_ckpt_path`` and ``inference.py`` read it), plus:

* ``'poserender'``: metadata (family, width, config, warp mode, resolution, step, epoch, git
  commit, ...), which ``poserender export`` reads to need no ``--config``;
* ``'resume'``: what the reference does not keep: LR schedulers, AMP grad scalers, the step,
  and the RNG states, so that ``--resume`` continues exactly.

Files are written to a temporary name in the same folder, flushed to disk, and renamed over
the target, so a run killed at any moment (even ``kill -9``) leaves either the previous
checkpoint or the new one, never a partial file.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from ..errors import UserError
from ..models.checkpoint import safe_load
from ..fileio import temp_file_beside
from ..models.checkpoint import META_KEY

RESUME_KEY = "resume"
_STEP_NAME = re.compile(r"^ckpt_(\d+)\.pth$")


def write_atomic(path: Union[str, Path], payload: Dict[str, Any]) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, rename, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            dir_fd = None
        if dir_fd is not None:
            try:
                os.fsync(dir_fd)
            except OSError:
                pass
            finally:
                os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_stale_partials(folder: Union[str, Path]) -> int:
    """Delete temp files left by a killed run (``.<name>.partial-*``); returns how many."""
    count = 0
    for p in Path(folder).glob(".*.partial-*"):
        if p.is_file():
            p.unlink()
            count += 1
    return count


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found; expected a .pth written by poserender train", path)
    return safe_load(path, "a checkpoint written by poserender train")


def resumable(payload: Dict[str, Any], path: Union[str, Path], family: str) -> Dict[str, Any]:
    """The checkpoint's metadata, after checking it can resume a ``family`` run."""
    meta = payload.get(META_KEY) if isinstance(payload, dict) else None
    if not isinstance(meta, dict) or RESUME_KEY not in payload:
        raise UserError("has no resume state (an authors' or exported checkpoint?); --resume takes a "
                        "checkpoint written by poserender train", path)
    if meta.get("family") != family:
        raise UserError(f"is a {meta.get('family')!r} checkpoint; expected {family!r}", path)
    return meta


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:07d}.pth"


def periodic_checkpoints(folder: Union[str, Path]) -> List[Path]:
    """``ckpt_<step>.pth`` files in ``folder``, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("ckpt_*.pth") if (m := _STEP_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Union[str, Path]) -> Optional[Path]:
    """The checkpoint ``--resume auto`` continues from: the final one, else the highest step."""
    folder = Path(folder)
    final = folder / "ckpt_final.pth"
    periodic = periodic_checkpoints(folder)
    if final.is_file():
        return final
    return periodic[-1] if periodic else None


def prune(folder: Union[str, Path], keep: int) -> None:
    for old in periodic_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit() -> Optional[str]:
    """The poserender source commit (``+dirty`` with local changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
