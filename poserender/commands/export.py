"""`poserender export`: checkpoint -> verified ONNX stages + manifest.json."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import UserError
from .common import WARP_CHOICES, load_config, log, user_errors


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--model", "family", type=click.Choice(["auto", "pose2img", "psc"]), default="auto", show_default=True,
              help="Model family; auto: psc for a folder holding pm.pth, aa.pth and ct.pth, else pose2img.")
@click.option("--config", "config", type=click.Path(), help="Pose2Img YAML, e.g. Oliver.yaml "
              "(optional for poserender checkpoints, which embed theirs).")
@click.option("--scale", type=float, help="Override HYPERPARAM.scale: canvas = 640 / scale (e.g. 2.5 -> 256).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler; default: the "
              "checkpoint's, or legacy (the reference sampler) for the authors' checkpoints.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Output folder, e.g. art/oliver.")
@click.option("--aa-norm", type=click.Choice(["authors", "eval"]), help="psc: AA-Net BatchNorm statistics; "
              "authors (default: per-sample batch statistics, what the reference's test.py computes) or eval.")
@click.option("--size", type=int, help="psc: square canvas in pixels, a multiple of 16 (default 256, the reference's).")
@user_errors
def export_cmd(checkpoint: str, family: str, config: Optional[str], scale: Optional[float], warp_mode: Optional[str],
               output: str, aa_norm: Optional[str], size: Optional[int]) -> None:
    """Export CHECKPOINT to one verified ONNX graph per stage plus manifest.json.

    CHECKPOINT is a Pose2Img .pth (with --config), or a PSC folder with pm.pth, aa.pth and ct.pth.
    """
    import time
    from pathlib import Path

    from ..models.psc.checkpoint import is_psc_checkpoint_dir

    if family == "psc" or (family == "auto" and is_psc_checkpoint_dir(checkpoint)):
        from ..export.psc_export import export_psc

        if config or scale or warp_mode:
            raise UserError("--config/--scale/--warp-mode are Pose2Img options; a PSC export takes --aa-norm, --size")
        started = time.perf_counter()
        manifest = export_psc(checkpoint, output, aa_norm or "authors", size or 256, size or 256, log=log)
        h, w = manifest["canvas"]
        click.echo(f"exported {checkpoint} -> {output}: psc stages {', '.join(s['name'] for s in manifest['stages'])}, "
                   f"{h}x{w}, AA-Net norm {manifest['config']['aa_norm']}, verified with ONNX Runtime "
                   f"({time.perf_counter() - started:.1f} s)")
        return
    if aa_norm or size:
        raise UserError("--aa-norm/--size are PSC options; CHECKPOINT is not a folder with pm.pth, aa.pth, ct.pth")
    if Path(checkpoint).is_dir():
        raise UserError("is a folder; expected a Pose2Img checkpoint file, or a PSC folder with pm.pth, aa.pth "
                        "and ct.pth", checkpoint)
    from ..export.pose2img_export import export_checkpoint

    started = time.perf_counter()
    cfg = load_config(config, scale)
    if cfg is None and scale is not None:
        raise UserError("--scale needs --config (or re-export from a config)")
    manifest = export_checkpoint(checkpoint, cfg, output, warp_mode, log=log)
    h, w = manifest["canvas"]
    click.echo(f"exported {checkpoint} -> {output}: stages {', '.join(s['name'] for s in manifest['stages'])}, "
               f"{h}x{w}, warp {manifest['warp_mode']}, verified with ONNX Runtime "
               f"({time.perf_counter() - started:.1f} s)")
