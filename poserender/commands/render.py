"""`poserender render`: a keypoint sequence -> video or frames."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UserError
from .common import WARP_CHOICES, Progress, model_dir_for, user_errors


def render_model(model_dir: Path, backend: str, **kwargs) -> None:
    from ..config import Pose2ImgConfig
    from ..engines.select import stage_engines
    from ..manifest import read_manifest
    from ..runtime.render import render_sequence

    manifest = read_manifest(model_dir)
    config = Pose2ImgConfig.from_dict(manifest["config"])
    name, engines = stage_engines(model_dir, manifest, backend)
    progress = Progress("rendering")
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


@click.command()
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
    model_dir = model_dir_for(model, config, scale, warp_mode)
    render_model(model_dir, backend, source_image=Path(source), source_keypoints=Path(source_keypoints),
            keypoints=Path(keypoints), output=Path(output), fmt=fmt, fps=fps,
            audio=Path(audio) if audio else None, batch=batch, on_bad_frame=on_bad_frame,
            max_frames=max_frames)
