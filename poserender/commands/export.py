"""`poserender export`: checkpoint -> verified ONNX stages + manifest.json."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import UserError
from .common import WARP_CHOICES, load_config, log, user_errors


@click.command("export")
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
