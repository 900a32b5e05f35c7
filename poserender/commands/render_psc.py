"""The PSC side of ``poserender render`` (which dispatches on the manifest's family): the psc-only
options (``psc_render_options``), :func:`psc_mode` (which of the three modes the options select),
:func:`psc_model_dir` (checkpoint folder -> cached export) and :func:`render_psc`, which runs the
reference-layout and interpolation modes directly on the engines. The sequence mode (``--keypoints``)
goes through the streaming pipeline (runtime.stream, adapters.PSCAdapter), like pose2img.

\b
poserender render art/psc --psc-data data/test --t 0.2,0.4,0.6,0.8,1 --panels -o out/test
poserender render art/psc --source I0/0001.jpg --source-parsing S0/0001.png --keypoints poses/ -o out.mp4
poserender render art/psc --source I0/0001.jpg --source-parsing S0/0001.png \\
    --key-poses P0/0001.csv P1/0001.csv --frames 30 -o interp.mp4
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence, Tuple

import click

from ..errors import UserError
from .common import Progress, cache_root, log

AA_NORMS = ("authors", "eval")


def _parse_ts(text: str) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--t {text!r}: expected comma-separated numbers, e.g. 0.2,0.4,0.6,0.8,1") from None


def psc_render_options(f):
    """Add the PSC-only options of ``render`` (reference layout, sequence and interpolation modes)."""
    options = [
        click.option("--psc-data", type=click.Path(), help="Reference layout folder with I0/ S0/ P0/ P1/ "
                     "(e.g. psc/data/test): one image per sample and --t value, written into -o FOLDER."),
        click.option("--t", "t_values", default="0.2,0.4,0.6,0.8,1", show_default=True,
                     help="With --psc-data: interpolation values; 1 uses P1 itself, as the reference."),
        click.option("--panels", is_flag=True, help="With --psc-data: also write the reference's process strip "
                     "(P0, P1, S0, I0, Pt, St, output) per image into FOLDER/process/."),
        click.option("--source-parsing", type=click.Path(), help="PSC: parsing label PNG of --source (S0)."),
        click.option("--key-poses", nargs=2, type=click.Path(), help="PSC interpolation: two key pose csv "
                     "files, e.g. P0/0001.csv P1/0001.csv; with --frames."),
        click.option("--frames", type=int, help="PSC interpolation: in-between frames (PM-Net) between the key poses."),
        click.option("--aa-norm", type=click.Choice(AA_NORMS), default=None,
                     help="When MODEL is a checkpoint folder: AA-Net BatchNorm statistics; authors (default: "
                          "per-sample batch statistics, what the reference computes) or eval (running stats)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def psc_model_dir(model: str, aa_norm: Optional[str]) -> Path:
    """An exported PSC folder, or a checkpoint folder (pm.pth/aa.pth/ct.pth) exported once into the cache."""
    from ..manifest import sha256_file

    path = Path(model)
    if (path / "manifest.json").is_file():
        if aa_norm:
            raise UserError("--aa-norm applies to a checkpoint folder; this is an exported model "
                            "(re-export it with --aa-norm to change it)", path)
        return path
    names = ("pm.pth", "aa.pth", "ct.pth")
    if not path.is_dir() or not all((path / n).is_file() for n in names):
        raise UserError("not an exported model folder (no manifest.json) nor a PSC checkpoint folder "
                        "(pm.pth, aa.pth, ct.pth)", path)
    from ..export.psc_export import export_psc

    key = hashlib.sha256("|".join([sha256_file(path / n) for n in names] + [aa_norm or "authors"]).encode()).hexdigest()[:16]
    cached = cache_root() / "exports" / f"psc-{key}"
    if not (cached / "manifest.json").is_file():
        export_psc(path, cached, aa_norm or "authors", log=log)
    return cached


def psc_mode(psc_data: Optional[str], keypoints: Optional[str], key_poses: Optional[Sequence[str]],
             source: Optional[str], source_parsing: Optional[str], frames: Optional[int], audio: Optional[str],
             max_frames: Optional[int]) -> str:
    """``layout``, ``sequence`` or ``interpolation`` from the options, or a UserError naming the conflict."""
    modes = [name for name, given in (("--psc-data", psc_data), ("--keypoints", keypoints),
                                      ("--key-poses", key_poses)) if given]
    if len(modes) != 1:
        raise UserError("PSC renders one of: --psc-data DIR (reference layout), --keypoints POSES (sequence) or "
                        f"--key-poses A B --frames N (interpolation); got {' and '.join(modes) or 'none'}")
    if psc_data and (source or source_parsing):
        raise UserError("--psc-data takes its sources from I0/ and S0/; drop --source/--source-parsing")
    if not psc_data and not (source and source_parsing):
        raise UserError(f"{modes[0]} needs --source (I0 image) and --source-parsing (S0 label PNG)")
    if key_poses and frames is None:
        raise UserError("--key-poses needs --frames N (in-between frames)")
    if frames is not None and not key_poses:
        raise UserError("--frames applies to --key-poses (interpolation)")
    if psc_data and (audio or max_frames):
        raise UserError("--audio and --max-frames apply to video modes, not to --psc-data")
    if key_poses and max_frames:
        raise UserError("--max-frames applies to pose streams (--keypoints); use --frames with --key-poses")
    return {"--psc-data": "layout", "--keypoints": "sequence", "--key-poses": "interpolation"}[modes[0]]


def render_psc(model_dir: Path, backend: str, output: str, fmt: Optional[str] = None, fps: float = 15.0,
               audio: Optional[str] = None, batch: int = 4, source: Optional[str] = None,
               psc_data: Optional[str] = None, t_values: str = "0.2,0.4,0.6,0.8,1", panels: bool = False,
               source_parsing: Optional[str] = None, key_poses: Optional[Sequence[str]] = None,
               frames: Optional[int] = None) -> None:
    """The reference-layout (``psc_data``) or interpolation (``key_poses``) mode, run directly on the
    engines, and the one-line summary. (Pose streams go through ``render_model``.)"""
    from ..engines.select import stage_engines
    from ..manifest import read_manifest
    from ..runtime import psc_render

    if bool(psc_data) == bool(key_poses):
        raise UserError("render_psc runs --psc-data or --key-poses (one of them)")
    if fmt == "raw":
        raise UserError("--format raw applies to pose streams (--keypoints); expected mp4, png or jpg here")
    manifest = read_manifest(model_dir)
    if manifest.get("family") != "psc":
        raise UserError(f"model family is {manifest.get('family', 'pose2img')!r}; the PSC options need a PSC model",
                        model_dir)
    name, engines = stage_engines(model_dir, manifest, backend)
    warn = lambda message: log(f"poserender: warning: {message}")  # noqa: E731
    progress = Progress("rendering")
    for engine in engines:
        engine.activate()
    try:
        model = psc_render.PSCModel({e.spec.name: e for e in engines}, manifest)
        if psc_data:
            result = psc_render.render_reference_layout(model, Path(psc_data), Path(output), _parse_ts(t_values),
                                                        panels, fmt or "png", batch, warn, progress)
            what = f"{result['images']} images of {result['samples']} samples to {result['path']}"
        else:
            result = psc_render.render_interpolation(model, Path(source), Path(source_parsing), Path(key_poses[0]),
                                                     Path(key_poses[1]), frames, Path(output), fmt, fps,
                                                     Path(audio) if audio else None, batch, warn, progress)
            what = f"{result['frames']} frames ({frames} in-between) to {result['summary'].path}"
    finally:
        progress.finish()
        for engine in engines:
            engine.deactivate()
    h, w = manifest["canvas"]
    click.echo(f"rendered {what} in {result['seconds']:.1f} s, backend {name}, psc {h}x{w}, "
               f"AA-Net norm {manifest['config'].get('aa_norm', 'authors')}")
