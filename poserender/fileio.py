"""The one writer discipline for every output poserender makes (videos, frame folders, exported
models, checkpoints, and the side outputs: previews, metrics, bench results, repositories).

1. Check first: :func:`check_writable` creates the output's folder and proves a file can be made
   there before any work starts, so an unwritable ``--preview`` or a missing ``--metrics``
   folder is one line at start, not a traceback after the render.
2. Write under a temporary name beside the target (:func:`temp_file_beside`,
   :func:`temp_dir_beside`) and rename onto it when complete, so a file with the final name is
   always whole; on any failure or interruption the temporary is removed.
3. A write that fails anyway (disk full, ``ulimit -f``, quota, the folder made read-only) is one
   line naming the path and the reason (:func:`output_error`), exit code 2.

``tempfile.mkstemp``/``mkdtemp`` create private (0600/0700) entries; outputs a user keeps
(videos, frame folders, exported models, checkpoints) get the usual umask-based mode instead.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

from .errors import StageError, UserError

PathLike = Union[str, Path]
#: errno -> what a user should read; these are problems of the place written to, not of poserender
_WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EFBIG: "file too large for this system's limits (ulimit -f?)",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted", errno.ENOENT: "no such folder",
                 errno.ENOTDIR: "a part of the path is not a folder", errno.EISDIR: "is a folder",
                 errno.EIO: "input/output error"}


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


def os_error_reason(exc: BaseException) -> str:
    """A short reason for an OSError, in words a user acts on (\"no space left on the device\")."""
    code = getattr(exc, "errno", None)
    if code in _WRITE_ERRORS:
        return _WRITE_ERRORS[code]
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def output_error(exc: BaseException, path: PathLike, what: str = "the output") -> UserError:
    """The one line for a failed write of ``path``: an OSError (PyAV's errors included) is a
    problem of the place written to (exit 2); anything else a failure while writing (exit 1)."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError):
        return UserError(f"cannot write {what} ({os_error_reason(exc)}); nothing was kept under this name", path)
    return StageError(f"writing {what} failed: {type(exc).__name__}: {os_error_reason(exc)}", path)


def check_writable(path: PathLike, what: str = "the output", folder: bool = False) -> Path:
    """Create ``path``'s parent folder (or ``path`` itself when ``folder``) and prove that a file
    can be written there, before any work starts; a UserError naming the path otherwise."""
    path = Path(path)
    parent = path if folder else path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".poserender-write-check-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write {what} here ({os_error_reason(exc)}); expected a writable location", path) from None
    return path


def write_json_atomic(path: PathLike, data: Dict[str, Any], what: str = "the JSON file") -> None:
    """Write ``data`` as indented JSON under a temporary name and rename it onto ``path``."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", what)


def write_atomic(path: PathLike, content: Union[str, bytes], what: str = "the file") -> None:
    """Write text or bytes under a temporary name beside ``path`` and rename it onto ``path``;
    on any failure the temporary is removed and an OSError becomes one line (:func:`output_error`)."""
    path = Path(path)
    try:
        fd, tmp = temp_file_beside(path)
    except OSError as exc:
        raise output_error(exc, path, what) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise output_error(exc, path, what) from None
        raise
