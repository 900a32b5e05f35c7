"""User-facing errors.

A :class:`UserError` is a problem with what the user gave us (a file, a shape, an option).
The CLI prints its message as one line and exits with code 2, without a traceback. Messages
say what was received and what was expected, and name the file when there is one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class UserError(Exception):
    """Bad input: one clear line for the user, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class BadFrame(UserError):
    """A single frame of a keypoint stream is unusable (NaN/inf, wrong joint count, ...).

    Inside a stream this is handled by the bad-frame policy rather than ending the run.
    ``kind`` is a short stable tag used for counting (``nan``, ``shape``, ``decode``, ...).
    """

    def __init__(self, message: str, kind: str, frame: Optional[int] = None,
                 path: Optional[Union[str, Path]] = None):
        self.kind = kind
        self.frame = frame
        super().__init__(message if frame is None else f"frame {frame}: {message}", path)


class StageError(UserError):
    """Something failed while running (an engine error, out of memory, a bug): one line naming what
    and where, exit code 1 (the input was fine; a retry or a report may help)."""

    exit_code = 1
