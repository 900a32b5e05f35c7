"""Shared pieces of the click commands: one-line errors, logging, the cache, progress."""
from __future__ import annotations

import functools
import hashlib
import signal
import sys
from pathlib import Path
from typing import Optional

import click

from .. import signals
from ..cache import cache_root
from ..errors import UserError
from ..fileio import os_error_reason

WARP_CHOICES = ("legacy", "exact")


def fail(message: str, code: int = 2) -> None:
    click.echo(f"poserender: error: {message}", err=True)
    sys.exit(code)


def user_errors(fn):
    """Turn UserError into one line + exit 2; Ctrl-C, SIGTERM and SIGHUP into 128 + the signal
    (130, 143, 129; outputs are already cleaned up by then)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            code = signals.exit_code(exc)
            fail(f"interrupted ({signal.Signals(code - 128).name}); no partial output was kept", code)
        except OSError as exc:      # the disk, not poserender: full, ulimit -f, read-only, a vanished folder
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            fail(f"{where}a file operation failed ({os_error_reason(exc)})", 2)
    return wrapper


def log(message: str) -> None:
    click.echo(message, err=True)


def load_config(config: Optional[str], scale: Optional[float]):
    if config is None:
        return None
    from ..config import load_pose2img_config
    return load_pose2img_config(config, scale=scale)


def model_dir_for(model: str, config: Optional[str], scale: Optional[float], warp_mode: Optional[str]) -> Path:
    """MODEL is an exported folder, or a checkpoint exported once into the cache."""
    path = Path(model)
    if path.is_dir():
        if config or scale or warp_mode:
            raise UserError("--config/--scale/--warp-mode apply to a checkpoint; this is an exported "
                            "folder (re-export it to change them)", path)
        return path
    if not path.is_file():
        raise UserError("not found; expected an exported model folder or a checkpoint (.pth)", path)
    from ..export.pose2img_export import export_checkpoint
    from ..manifest import sha256_file

    key = hashlib.sha256("|".join([sha256_file(path), sha256_file(config) if config and Path(config).is_file()
                                   else str(config), str(scale), str(warp_mode)]).encode()).hexdigest()[:16]
    cached = cache_root() / "exports" / key
    if not (cached / "manifest.json").is_file():
        export_checkpoint(path, load_config(config, scale), cached, warp_mode, log=log)
    else:
        # The cache is keyed by content: point the torch backend at the checkpoint given now, since
        # the one first exported from may have moved or been deleted.
        from ..manifest import read_manifest, write_json_atomic

        manifest = read_manifest(cached)
        if manifest.get("checkpoint", {}).get("path") != str(path.resolve()):
            manifest.setdefault("checkpoint", {})["path"] = str(path.resolve())
            write_json_atomic(cached / "manifest.json", manifest)
    return cached


class Progress:
    """A one-line progress bar on stderr (only on a terminal): frames, percent, fps, ETA."""

    def __init__(self, label: str):
        import time
        self.label, self.clock, self.started = label, time.perf_counter, time.perf_counter()
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(30 * done / total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                         f"{rate:5.1f} fps, eta {eta:4.0f} s ")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
