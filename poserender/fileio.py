"""Atomic output helpers: temporary names beside the target, renamed when complete.

``tempfile.mkstemp``/``mkdtemp`` create private (0600/0700) entries; outputs a user keeps
(videos, frame folders, exported models, checkpoints) get the usual umask-based mode instead.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Tuple, Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file_beside(path: Union[str, Path], suffix: str = "") -> Tuple[int, str]:
    """(fd, name) of a new file in ``path``'s folder, with the mode a plain ``open()`` would give."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=suffix, dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def temp_dir_beside(path: Union[str, Path]) -> Path:
    """A new folder in ``path``'s parent, with the mode ``mkdir`` would give."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp
