"""`poserender demo`: the embedded default model renders a generated gesture clip."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .common import cache_root, log, user_errors
from .render import render_model

@click.command()
@click.option("-o", "--output", default="out/demo.mp4", show_default=True, type=click.Path())
@click.option("--frames", default=60, show_default=True, help="Length of the generated gesture clip.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated gesture clip.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "ort-cpu", "torch"]))
@user_errors
def demo(output: str, frames: int, seed: int, backend: str) -> None:
    """Render a generated gesture clip with the built-in demo model (slim, randomly initialised
    until the trained demo model ships) to out/demo.mp4."""
    from ..demo import demo_model, write_demo_inputs

    if frames < 1:
        raise UserError(f"--frames {frames}; expected at least 1")
    cache = cache_root() / "demo"
    model_dir = demo_model(cache, log)
    image, source_kp, targets = write_demo_inputs(cache / "inputs", frames, seed)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    render_model(model_dir, backend, source_image=image, source_keypoints=source_kp, keypoints=targets,
            output=Path(output), fmt=None, fps=25.0, audio=None, batch=4, on_bad_frame="hold",
            max_frames=None)
    log("note: the demo model is randomly initialised (the trained demo model is a later issue), "
         "so the frames show the pipeline working, not a person")
