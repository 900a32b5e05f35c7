"""Shared pieces of the click commands: one-line errors, logging, the cache, progress."""
from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path
from typing import Any, Dict, Optional

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


def model_dir_for(model: str, options: Optional[Dict[str, Any]] = None) -> Path:
    """MODEL is an exported folder (used as it is), or a checkpoint of any family, exported once
    into the cache (keyed by the checkpoint's content and the export options)."""
    from .. import families
    from ..export.exporter import export_checkpoint, export_key
    from ..fileio import write_json_atomic
    from ..manifest import MANIFEST, read_manifest

    options = {k: v for k, v in (options or {}).items() if v not in (None, False)}
    path = Path(model)
    if (path / MANIFEST).is_file():
        if options:
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in options)} apply to a checkpoint; this is "
                            "an exported folder (re-export it to change them)", path)
        return path
    if not path.exists():
        raise UserError("not found; expected an exported model folder or a checkpoint", path)
    family = families.detect(path)
    family.check_export_options(options)
    cached = cache_root() / "exports" / f"{family.name}-{export_key(family, path, options)}"
    if not (cached / MANIFEST).is_file():
        export_checkpoint(family, path, cached, options, log=log)
    else:
        # The cache is keyed by content: point the torch backend at the checkpoint given now, since
        # the one first exported from may have moved or been deleted.
        manifest = read_manifest(cached)
        if manifest.checkpoint.get("path") != str(path.resolve()):
            data = manifest.to_dict()
            data.setdefault("checkpoint", {})["path"] = str(path.resolve())
            write_json_atomic(cached / MANIFEST, data)
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
