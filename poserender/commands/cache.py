"""`poserender cache list|clear`: what poserender keeps in its cache folder, and removing it.

The cache ($POSERENDER_CACHE, default ~/.cache/poserender) holds checkpoints exported on first use
by `render`/`bench` (exports/), the demo's generated inputs (demo/), TensorRT timing caches
(trt_timing/) and the record of model files already checked against their manifests
(verified-files.json). Everything in it can be rebuilt; removing it only makes the next start
slower."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Tuple

import click

from ..errors import UserError
from .common import cache_root, user_errors

#: what `clear` takes, and the entries of the cache it means
PARTS = {"exports": ("exports",), "demo": ("demo",), "timing": ("trt_timing",),
         "verified": ("verified-files.json",)}


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _export_line(folder: Path) -> str:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        h, w = manifest.get("canvas", ["?", "?"])
        source = (manifest.get("checkpoint") or {}).get("path") or "?"
        return f"{manifest.get('family', '?')} {h}x{w} from {source}"
    except (OSError, ValueError):
        return "incomplete export (no readable manifest.json)"


def entries(root: Path) -> List[Tuple[Path, int, str]]:
    """(path, bytes, what) for each thing in the cache, exports one by one."""
    out = []
    if (root / "exports").is_dir():
        for folder in sorted((root / "exports").iterdir()):
            out.append((folder, size_of(folder), _export_line(folder)))
    for name, what in (("demo", "the demo's generated inputs"), ("trt_timing", "TensorRT timing caches"),
                       ("verified-files.json", "model files already checked against their manifests")):
        if (root / name).exists():
            out.append((root / name, size_of(root / name), what))
    return out


@click.group("cache")
def cache() -> None:
    """List or clear poserender's cache ($POSERENDER_CACHE, default ~/.cache/poserender).

    \b
    poserender cache list
    poserender cache clear exports
    """


@cache.command("list")
@user_errors
def cache_list() -> None:
    """What the cache holds, with sizes."""
    root = cache_root()
    found = entries(root)
    for path, size, what in found:
        click.echo(f"{human(size):>9}  {path}  ({what})")
    click.echo(f"{human(sum(s for _, s, _ in found)):>9}  in all, in {root}" if found else f"{root} is empty")


@cache.command("clear")
@click.argument("what", default="all", type=click.Choice(["all", *PARTS]))
@user_errors
def cache_clear(what: str) -> None:
    """Remove WHAT from the cache (default all): exports, demo, timing or verified."""
    root = cache_root()
    names = [n for part in (PARTS if what == "all" else {what: PARTS[what]}).values() for n in part]
    freed = 0
    for name in names:
        path = root / name
        if not path.exists():
            continue
        freed += size_of(path)
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError as exc:
            raise UserError(f"cannot remove it ({exc.strerror or exc})", path) from None
    click.echo(f"removed {what} from {root}: {human(freed)} freed")
