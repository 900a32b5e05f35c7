"""The ``poserender`` command line: thin click commands over library functions.

Every UserError becomes one line on stderr and exit code 2, without a traceback.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path
from typing import Optional

import click

from . import __version__
from .errors import UserError

WARP_CHOICES = ("legacy", "exact")


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"poserender: error: {message}", err=True)
    sys.exit(code)


def user_errors(fn):
    """Turn UserError into one line + exit 2; Ctrl-C into exit 130 (outputs are already cleaned up)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
    return wrapper


def _log(message: str) -> None:
    click.echo(message, err=True)


def _cache_root() -> Path:
    return Path(os.environ.get("POSERENDER_CACHE", Path.home() / ".cache" / "poserender"))


def _load_config(config: Optional[str], scale: Optional[float]):
    if config is None:
        return None
    from .config import load_pose2img_config
    return load_pose2img_config(config, scale=scale)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poserender")
def main() -> None:
    """Pose-guided human image synthesis: export checkpoints, render keypoint streams.

    \b
    poserender doctor
    poserender export ckpt_final.pth --config Oliver.yaml --scale 2.5 -o art/oliver
    poserender render art/oliver --source img.jpg --source-keypoints kp.npy \\
        --keypoints poses.npz --audio speech.mp4 -o out.mp4
    """


@main.command()
@user_errors
def doctor() -> None:
    """Show which backends and devices are usable here, and library versions."""
    from .doctor import collect, format_report
    click.echo(format_report(collect()))


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--config", "config", type=click.Path(), help="Pose2Img YAML, e.g. Oliver.yaml "
              "(optional for poserender checkpoints, which embed theirs).")
@click.option("--scale", type=float, help="Override HYPERPARAM.scale: canvas = 640 / scale (e.g. 2.5 -> 256).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler; default: the "
              "checkpoint's, or legacy (the reference sampler) for the authors' checkpoints.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Output folder, e.g. art/oliver.")
@user_errors
def export_cmd(checkpoint: str, config: Optional[str], scale: Optional[float], warp_mode: Optional[str],
               output: str) -> None:
    """Export CHECKPOINT to one verified ONNX graph per stage plus manifest.json."""
    import time

    from .export.pose2img_export import export_checkpoint

    started = time.perf_counter()
    cfg = _load_config(config, scale)
    if cfg is None and scale is not None:
        raise UserError("--scale needs --config (or re-export from a config)")
    manifest = export_checkpoint(checkpoint, cfg, output, warp_mode, log=_log)
    h, w = manifest["canvas"]
    click.echo(f"exported {checkpoint} -> {output}: stages {', '.join(s['name'] for s in manifest['stages'])}, "
               f"{h}x{w}, warp {manifest['warp_mode']}, verified with ONNX Runtime "
               f"({time.perf_counter() - started:.1f} s)")


def _model_dir_for(model: str, config: Optional[str], scale: Optional[float], warp_mode: Optional[str]) -> Path:
    """MODEL is an exported folder, or a checkpoint exported once into the cache."""
    path = Path(model)
    if path.is_dir():
        if config or scale or warp_mode:
            raise UserError("--config/--scale/--warp-mode apply to a checkpoint; this is an exported "
                            "folder (re-export it to change them)", path)
        return path
    if not path.is_file():
        raise UserError("not found; expected an exported model folder or a checkpoint (.pth)", path)
    from .export.pose2img_export import export_checkpoint
    from .manifest import sha256_file

    key = hashlib.sha256("|".join([sha256_file(path), sha256_file(config) if config and Path(config).is_file()
                                   else str(config), str(scale), str(warp_mode)]).encode()).hexdigest()[:16]
    cached = _cache_root() / "exports" / key
    if not (cached / "manifest.json").is_file():
        export_checkpoint(path, _load_config(config, scale), cached, warp_mode, log=_log)
    return cached


class _Progress:
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


def _render(model_dir: Path, backend: str, **kwargs) -> None:
    from .config import Pose2ImgConfig
    from .engines.select import stage_engines
    from .manifest import read_manifest
    from .runtime.render import render_sequence

    manifest = read_manifest(model_dir)
    config = Pose2ImgConfig.from_dict(manifest["config"])
    name, engines = stage_engines(model_dir, manifest, backend)
    progress = _Progress("rendering")
    try:
        stats, summary = render_sequence(engines, config, progress=progress, **kwargs)
    finally:
        progress.finish()
    fps = stats.frames_out / max(stats.seconds - stats.source_seconds, 1e-9)
    h, w = manifest["canvas"]
    extra = "".join(f", {n} {k}" for k, n in (("held", stats.held), ("skipped", stats.skipped)) if n)
    if stats.interrupted:
        extra += ", interrupted"
    click.echo(f"rendered {stats.frames_out}/{stats.frames_in} frames{extra} to {summary.path} "
               f"in {stats.seconds:.1f} s ({fps:.1f} fps after the {stats.source_seconds:.2f} s source stage), "
               f"backend {name}, {h}x{w}")
    if stats.interrupted:
        sys.exit(130)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--source", "source", required=True, type=click.Path(), help="Source image (the identity), e.g. frame.jpg.")
@click.option("--source-keypoints", required=True, type=click.Path(), help="Its OpenPose keypoints (.npy 3x137 or .json).")
@click.option("--keypoints", required=True, type=click.Path(), help="Target poses: .npz, OpenPose JSON folder, or .npy.")
@click.option("-o", "--output", required=True, type=click.Path(), help="out.mp4, or a folder for png/jpg frames.")
@click.option("--config", type=click.Path(), help="Pose2Img YAML when MODEL is a checkpoint.")
@click.option("--scale", type=float, help="Canvas scale when MODEL is a checkpoint (640 / scale).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler when MODEL is a checkpoint.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "ort-cpu", "torch"]))
@click.option("--format", "fmt", type=click.Choice(["mp4", "png", "jpg"]), help="Default: from the suffix of -o.")
@click.option("--fps", default=15.0, show_default=True, help="Output frame rate (the reference renders at 15).")
@click.option("--audio", type=click.Path(), help="Audio to mux into the mp4 (any file PyAV decodes).")
@click.option("--batch", default=4, show_default=True, help="Frames per frame-stage call.")
@click.option("--on-bad-frame", default="hold", show_default=True, type=click.Choice(["hold", "skip", "error"]),
              help="NaN/inf or empty frames: repeat the last good pose, drop the frame, or stop.")
@click.option("--max-frames", type=int, help="Render only the first N frames.")
@user_errors
def render(model, source, source_keypoints, keypoints, output, config, scale, warp_mode, backend, fmt,
           fps, audio, batch, on_bad_frame, max_frames) -> None:
    """Render KEYPOINTS with the appearance of SOURCE.

    MODEL is a folder from `poserender export`, or a checkpoint (.pth) with --config, which is
    exported to a cache on first use.
    """
    if fps <= 0 or batch < 1:
        raise UserError(f"--fps {fps:g} and --batch {batch} must be positive")
    for option, value in (("--source", source), ("--source-keypoints", source_keypoints),
                          ("--keypoints", keypoints), ("--audio", audio)):
        if value is not None and value != "-" and not Path(value).exists():
            raise UserError(f"{option} not found", value)
    model_dir = _model_dir_for(model, config, scale, warp_mode)
    _render(model_dir, backend, source_image=Path(source), source_keypoints=Path(source_keypoints),
            keypoints=Path(keypoints), output=Path(output), fmt=fmt, fps=fps,
            audio=Path(audio) if audio else None, batch=batch, on_bad_frame=on_bad_frame,
            max_frames=max_frames)


@main.command()
@click.option("-o", "--output", default="out/demo.mp4", show_default=True, type=click.Path())
@click.option("--frames", default=60, show_default=True, help="Length of the generated gesture clip.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated gesture clip.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "ort-cpu", "torch"]))
@user_errors
def demo(output: str, frames: int, seed: int, backend: str) -> None:
    """Render a generated gesture clip with the built-in demo model (slim, randomly initialised
    until the trained demo model ships) to out/demo.mp4."""
    from .demo import demo_model, write_demo_inputs

    if frames < 1:
        raise UserError(f"--frames {frames}; expected at least 1")
    cache = _cache_root() / "demo"
    model_dir = demo_model(cache, _log)
    image, source_kp, targets = write_demo_inputs(cache / "inputs", frames, seed)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    _render(model_dir, backend, source_image=image, source_keypoints=source_kp, keypoints=targets,
            output=Path(output), fmt=None, fps=25.0, audio=None, batch=4, on_bad_frame="hold",
            max_frames=None)
    _log("note: the demo model is randomly initialised (the trained demo model is a later issue), "
         "so the frames show the pipeline working, not a person")


if __name__ == "__main__":  # pragma: no cover
    main()
