"""`poserender demo`: the embedded trained model renders a gesture clip of the demo puppet."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import UserError
from .common import cache_root, log, user_errors
from .render import run_stream

CONTACT_SHEET_FRAMES = 12
LIVE_SECONDS = 60           # demo --live: a new gesture sequence this long (at --fps) unless --frames
LIVE_SERVE = "127.0.0.1:8080"


@click.command()
@click.option("-o", "--output", type=click.Path(allow_dash=True),
              help="Video (.mp4) or a folder of frames; '-' writes raw BGR frames to stdout; a live URL such as "
                   "udp://127.0.0.1:5000 (MPEG-TS). Default: out/demo.mp4; with --live, none (the browser only).")
@click.option("--sheet", type=click.Path(), help="Contact sheet PNG of the rendered clip (default: the video's "
              "name with .png, e.g. out/demo.png; '' for none).")
@click.option("--frames", type=int, help="Render a NEW gesture sequence of this many frames (default: the shipped clip).")
@click.option("--seed", type=int, help="Seed of a NEW gesture sequence (default: the shipped clip).")
@click.option("--fps", default=25.0, show_default=True, help="Frame rate of the clip (and of --realtime pacing).")
@click.option("--realtime", is_flag=True, help="Stream live: pace the frames to the clock at --fps.")
@click.option("--live", is_flag=True, help="Render the puppet's generated gesture stream in real time (--late "
              f"latest) to the browser preview at http://{LIVE_SERVE}/ (see --serve), and to -o when given; "
              f"{LIVE_SECONDS} s of gestures unless --frames. Ctrl-C stops it.")
@click.option("--serve", metavar="HOST:PORT", help=f"Show the live frames in a browser at http://HOST:PORT/ "
              f"(default with --live: {LIVE_SERVE}; port 0: a free one). Listens only where named.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "ort-cpu", "ort-cuda"]),
              help="auto: ONNX Runtime on a GPU when one is usable, else on the CPU (the rule of every command).")
@click.option("--batch", default=4, show_default=True, help="Frames per frame-stage call.")
@click.option("--metrics", type=click.Path(), help="Write fps, latency and per-stage timings to this JSON file.")
@click.option("--inputs", "inputs_dir", type=click.Path(file_okay=False),
              help="Render nothing: write the demo's model and inputs into this folder (model/, puppet_source.png, "
                   "puppet_source.npy, clip.npy) for `poserender render`, `triton` and `triton-client`.")
@user_errors
def demo(output: Optional[str], sheet: Optional[str], frames: Optional[int], seed: Optional[int], fps: float,
         realtime: bool, live: bool, serve: Optional[str], backend: str, batch: int, metrics: Optional[str], inputs_dir: Optional[str]) -> None:
    """Render the demo puppet with the built-in trained model (a slim Pose2Img trained by
    poserender on its own generated data; nothing is downloaded) to out/demo.mp4 and
    out/demo.png, and print the frame rate and the backend."""
    from .. import families
    from ..demo import puppet_inputs, shipped_model
    from ..manifest import read_manifest
    from ..runtime.report import StreamOptions
    from ..runtime.stream import RenderRequest

    if frames is not None and frames < 1:
        raise UserError(f"--frames {frames}; expected at least 1")
    if batch < 1:
        raise UserError(f"--batch {batch}; expected at least 1")
    if fps <= 0:
        raise UserError(f"--fps {fps:g}; expected a positive frame rate")
    if live and inputs_dir is not None:
        raise UserError("--live renders; --inputs renders nothing: give one")
    if live:
        serve = LIVE_SERVE if serve is None else serve
        frames = round(LIVE_SECONDS * fps) if frames is None else frames
        sheet = "" if sheet is None else sheet
    elif output is None:
        output = "out/demo.mp4"
    model_dir = shipped_model()
    if inputs_dir is not None:
        _write_inputs(Path(inputs_dir), model_dir, frames, seed)
        return
    image, source_kp, targets = puppet_inputs(cache_root() / "demo" / "inputs", frames, seed)
    import numpy as np

    n = int(np.load(targets, mmap_mode="r").shape[0])
    if sheet is None:
        sheet = str(Path(output).with_suffix(".png")) if output.lower().endswith(".mp4") else ""
    if output is not None and output != "-" and "://" not in output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    if sheet:
        Path(sheet).parent.mkdir(parents=True, exist_ok=True)
    what = "the shipped clip" if frames is None and seed is None else f"a new gesture sequence (seed {seed or 0})"
    log(f"demo: {n} frames of {what}, trained demo model {model_dir}")
    manifest = read_manifest(model_dir)
    request = RenderRequest(keypoints=str(targets), output="(no output)" if output is None else output,
                            fmt="none" if output is None else None, backend=backend, serve=serve,
                            stream=StreamOptions(batch=batch, fps=fps, realtime=realtime or live,
                                                 late="latest" if live else "hold"),
                            preview=Path(sheet) if sheet else None, preview_every=max(1, n // CONTACT_SHEET_FRAMES),
                            metrics=Path(metrics) if metrics else None)
    run_stream(manifest, families.of(manifest), {"source": image, "source_keypoints": source_kp}, request)


def _write_inputs(folder: Path, model_dir: Path, frames: Optional[int], seed: Optional[int]) -> None:
    """The shipped model (copied whole, then renamed into place) and the puppet's inputs."""
    import shutil

    import numpy as np

    from ..demo import puppet_inputs
    from ..fileio import temp_dir_beside

    if folder.exists() and not folder.is_dir():
        raise UserError("exists and is not a folder; --inputs takes a folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    replaced = (folder / "model").exists()
    work = temp_dir_beside(folder / "model")
    try:
        for item in model_dir.iterdir():
            if item.is_file():
                shutil.copyfile(item, work / item.name)
        if (folder / "model").exists():
            shutil.rmtree(folder / "model")
        work.rename(folder / "model")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    image, source_kp, targets = puppet_inputs(folder, frames, seed)
    shutil.copyfile(targets, folder / "clip.npy")
    if targets.parent == folder and targets.name != "clip.npy":
        targets.unlink()
    click.echo(f"wrote the demo model and inputs to {folder}: model/, {image.name}, {source_kp.name}, clip.npy "
               f"({int(np.load(folder / 'clip.npy', mmap_mode='r').shape[0])} frames)"
               + (" (replaced)" if replaced else ""))

