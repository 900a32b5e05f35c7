"""`poserender bench`: fps, latency percentiles, memory and FLOP/s over a grid, against the reference.

The measuring lives in :mod:`poserender.bench`; this module parses the options, prepares the
model(s), and writes the results (terminal table, JSON, CSV and a PNG plot: bench.report,
bench.plot).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from ..errors import UserError
from .common import WARP_CHOICES, cache_root, log, model_dir_for, user_errors


# -- models -------------------------------------------------------------------------------------
def prepare_models(model: str, config: Optional[str], scale: Optional[float], warp_mode: Optional[str],
                   resolutions: Optional[List[int]]) -> Tuple[List[Tuple[Path, Dict[str, Any]]], List[Tuple[str, str]]]:
    """([(model_dir, manifest)], [(resolution, why skipped)]). A checkpoint is exported once per
    resolution into the cache; an exported folder has one canvas, other resolutions are skipped."""
    from ..manifest import read_manifest

    path = Path(model)
    if not resolutions or path.is_dir():
        model_dir = model_dir_for(model, {"config": config, "scale": scale, "warp_mode": warp_mode})
        manifest = _from_checkpoint(read_manifest(model_dir), path)
        canvas = manifest["canvas"][0]
        fix = ("pass the checkpoint to bench other resolutions" if model_dir == path else
               "--resolution re-exports checkpoint files (Pose2Img); export this one at each size and bench the folders")
        skipped = [(f"{r}x{r}", f"{model_dir} is exported at {canvas}x{manifest['canvas'][1]}; {fix}")
                   for r in resolutions or [] if r != canvas]
        keep = not resolutions or canvas in resolutions
        return ([(model_dir, manifest)] if keep else []), skipped
    if scale is not None:
        raise UserError("--scale and --resolution both set the canvas; give one")
    return [_export_at(path, config, r, warp_mode) for r in resolutions], []


def _export_at(checkpoint: Path, config: Optional[str], resolution: int, warp_mode: Optional[str]):
    from .. import families
    from ..config import Pose2ImgConfig, load_pose2img_config
    from ..export.exporter import export_checkpoint
    from ..manifest import read_manifest, sha256_file
    from ..models.checkpoint import load_checkpoint

    if config:
        base = load_pose2img_config(config)
    else:
        meta = load_checkpoint(checkpoint)[1]
        if not meta.get("config"):
            raise UserError("has no embedded config (an authors' checkpoint?); pass --config CFG.yaml", checkpoint)
        base = Pose2ImgConfig.from_dict(meta["config"])
    cfg = base.with_scale(base.img_h / resolution)
    cfg.check_canvas(f"--resolution {resolution}")
    key = hashlib.sha256("|".join([sha256_file(checkpoint), json.dumps(cfg.to_dict(), sort_keys=True),
                                   str(warp_mode)]).encode()).hexdigest()[:16]
    cached = cache_root() / "exports" / key
    if not (cached / "manifest.json").is_file():
        export_checkpoint(families.get("pose2img"), checkpoint, cached, {"config": cfg, "warp_mode": warp_mode}, log=log)
    return cached, _from_checkpoint(read_manifest(cached), checkpoint)


def _from_checkpoint(manifest: Dict[str, Any], model: Path) -> Dict[str, Any]:
    """A cached export is keyed by the checkpoint's sha256, so the checkpoint given now is the one
    it was made from, even when the file it was first exported from has moved or gone: the torch
    backend and the baseline load this one."""
    from ..manifest import Manifest

    if model.is_file() and isinstance(manifest.get("checkpoint"), dict):
        data = manifest.to_dict()
        data["checkpoint"] = {**data["checkpoint"], "path": str(model.resolve())}
        return Manifest.from_dict(manifest.dir, data)
    return manifest


def _write_text(path: Path, text: str) -> None:
    from ..fileio import write_atomic

    write_atomic(path, text, f"the bench {path.suffix.lstrip('.') or 'result'}")


# -- the command --------------------------------------------------------------------------------
@click.command()
@click.argument("model", type=click.Path())
@click.option("--backend", default="all", show_default=True,
              help="Comma-separated names from `poserender doctor` (torch, ort-cpu, ov-cpu, ort-cuda, ...), or 'all'. "
                   "Ones unusable here are listed as skipped with the reason.")
@click.option("--batch", "batches", default="1,4,8", show_default=True, help="Batch sizes, e.g. 1,4,8.")
@click.option("--stage", "stages", default="frame", show_default=True,
              help="source (identity stages), frame (per-frame stages), all (both per call: a new identity), "
                   "stream; comma-separated.")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              help="e.g. fp32,int8 (int8: the model's calibrated INT8 graphs on ort-cpu/ov-cpu), "
                   "fp32,bf16,int8,int8-bf16 (ov-cpu) or fp32,fp16 (GPU backends); a backend that does not run one "
                   "skips its cells. Reduced-precision rows get their speed-up and PSNR/SSIM vs the fp32 row; every "
                   "CPU row its compute floor (FLOPs / the measured peak of its precision).")
@click.option("--resolution", "resolutions", help="Canvas sides, e.g. 128,256 (a Pose2Img checkpoint is exported "
                                                  "per side).")
@click.option("--devices", help="Device slots, e.g. 0, 0,1 (pipeline split: the stages cut in order over the "
                                "devices, as render does) or cpu,cpu with --replicate.")
@click.option("--replicate", is_flag=True, help="With --devices: the per-frame stages on every device, batches "
                                                "dealt round-robin.")
@click.option("--baseline", type=click.Choice(["reference", "none"]), default="none", show_default=True,
              help="reference: PyTorch eager FP32, full forward per frame, batch 1, in the same run (Pose2Img).")
@click.option("--config", type=click.Path(), help="Pose2Img YAML when MODEL is a checkpoint.")
@click.option("--scale", type=float, help="Canvas scale when MODEL is a checkpoint (640 / scale).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler when MODEL is a checkpoint.")
@click.option("--source", type=click.Path(), help="Source image, e.g. frame.jpg (PSC: I0). Default: the model "
                                                  "family's verification inputs.")
@click.option("--source-keypoints", type=click.Path(), help="pose2img: the source's OpenPose keypoints.")
@click.option("--source-parsing", type=click.Path(), help="psc: the source's parsing S0 (label PNG).")
@click.option("--keypoints", type=click.Path(), help="Target poses, read as render reads them (with the identity "
                                                     "inputs). Default: the family's verification poses.")
@click.option("--frames", type=int, help="Use the first N target frames (default inputs: N frames, default 64).")
@click.option("--warmup", default=2, show_default=True, help="Untimed calls per cell.")
@click.option("--min-seconds", default=10.0, show_default=True, help="Minimum timed seconds per cell.")
@click.option("--min-runs", default=10, show_default=True, help="Minimum timed calls per cell.")
@click.option("--threads", type=int, help="CPU threads (torch, ONNX Runtime intra-op); default: usable cores.")
@click.option("--peak-seconds", default=2.0, show_default=True,
              help="Seconds to measure the dense fp32 matmul peak (0: skip).")
@click.option("--json", "json_path", type=click.Path(), help="Write the full result (with the environment).")
@click.option("--csv", "csv_path", type=click.Path(), help="Write one line per cell.")
@click.option("--plot", "plot_path", type=click.Path(), help="Write a PNG: fps and p99 vs batch, speed-up bars.")
@user_errors
def bench(model, backend, batches, stages, precisions, resolutions, devices, replicate, baseline, config, scale,
          warp_mode, source, source_keypoints, source_parsing, keypoints, frames, warmup, min_seconds, min_runs,
          threads, peak_seconds, json_path, csv_path, plot_path) -> None:
    """Measure MODEL (an exported folder, or a checkpoint) over a grid of backends and batches.

    \b
    poserender bench art/oliver --backend ort-cpu,torch --batch 1,4,8 --baseline reference \\
        --json r.json --csv r.csv --plot r.png
    """
    from .. import bench as measure
    from ..bench.report import format_table, to_csv, verdict
    from ..fileio import check_writable

    grid = measure.Grid(backends=measure.parse_backends(backend),
                        stages=measure.parse_names(stages, "--stage", measure.STAGES),
                        batches=measure.parse_ints(batches, "--batch"),
                        precisions=measure.parse_names(precisions, "--precision", measure.PRECISIONS),
                        devices=measure.parse_device_slots(devices), replicate=replicate)
    if replicate and not grid.devices:
        raise UserError("--replicate needs --devices, e.g. --devices 0,1")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    method = measure.Method(warmup=warmup, min_seconds=min_seconds, min_runs=min_runs, threads=threads or usable)
    method.check()
    if frames is not None and frames < 1:
        raise UserError(f"--frames {frames}; expected a positive number")
    identity = {"source": source, "source_keypoints": source_keypoints, "source_parsing": source_parsing}
    for key, value in (*identity.items(), ("keypoints", keypoints)):
        if value is not None and not Path(value).exists():
            raise UserError(f"--{key.replace('_', '-')} not found", value)
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib (pip install 'poserender[bench]')") from None
    for option, path in (("--json", json_path), ("--csv", csv_path), ("--plot", plot_path)):
        if path:        # before the grid runs, not after
            check_writable(path, f"the {option} result")
    models, skipped = prepare_models(model, config, scale, warp_mode,
                                     measure.parse_ints(resolutions, "--resolution") if resolutions else None)
    result = measure.run_bench(models, grid, method,
                               inputs_from={"identity": identity, "keypoints": keypoints, "frames": frames},
                               baseline=None if baseline == "none" else baseline, peak_seconds=peak_seconds,
                               argv=["poserender", *sys.argv[1:]] if Path(sys.argv[0]).name == "poserender"
                               else sys.argv, skipped_models=skipped, log=log)
    click.echo(format_table(result))
    written = []
    for path, write in ((json_path, lambda p: _write_text(p, json.dumps(result, indent=2) + "\n")),
                        (csv_path, lambda p: _write_text(p, to_csv(result))),
                        (plot_path, lambda p: _write_plot(result, p))):
        if path:        # the one output rule: an existing file is replaced when the new one is complete, and said
            existed = Path(path).exists()
            write(Path(path))
            written.append(f"{path} (replaced)" if existed else str(path))
    click.echo(verdict(result, written))


def _write_plot(result: Dict[str, Any], path: Path) -> None:
    from ..bench.plot import write_plot

    write_plot(result, path)
