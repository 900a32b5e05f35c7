"""`poserender demo-data`: generated puppet frames + keypoints in the training layout."""
from __future__ import annotations

import click

from .common import Progress, user_errors


@click.command("demo-data")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="New folder for images/, keypoints/, poses.npy and info.json.")
@click.option("--frames", default=2400, show_default=True, help="Frames to generate (25 fps).")
@click.option("--seed", default=0, show_default=True, help="Gesture seed; the same seed gives the same frames.")
@click.option("--size", default=256, show_default=True, help="Square canvas in pixels (a multiple of 32).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@user_errors
def demo_data(output: str, frames: int, seed: int, size: int, overwrite: bool) -> None:
    """Draw the demo puppet performing generated gestures: training (or held-out) data for
    `poserender train pose2img --config configs/demo.yaml`."""
    import time

    from ..demo.data import write_dataset

    started = time.perf_counter()
    progress = Progress("demo-data")
    try:
        out = write_dataset(output, frames, seed, size, overwrite=overwrite, progress=progress)
    finally:
        progress.finish()
    click.echo(f"wrote {frames} frames ({size}x{size}, seed {seed}) to {out} in {time.perf_counter() - started:.1f} s")
