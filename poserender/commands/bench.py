"""`poserender bench`: fps, latency percentiles, memory and FLOP/s over a grid, against the reference.

The measuring lives in :mod:`poserender.bench`; this module parses the grid, prepares the
model(s), and writes the results as a terminal table, JSON, CSV and a PNG plot.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from ..errors import UserError
from .common import WARP_CHOICES, cache_root, log, model_dir_for, user_errors

CSV_COLUMNS = (
    "backend", "stage", "batch", "precision", "canvas", "layout", "status", "reason", "runs", "clipped", "fps",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "raw_p99_ms", "frame_ms_min",
    "frame_ms_median", "frame_ms_max", "compute_source_ms", "compute_frame_ms", "host_ms", "queue_ms",
    "peak_rss_mib", "gpu_memory_peak_mib", "flops_per_frame", "achieved_gflops", "peak_fraction", "speedup",
    "frames_max_abs_diff", "frames_within_2_levels", "speedup_vs_fp32", "psnr_vs_fp32_db", "ssim_vs_fp32",
    "max_abs_vs_fp32")


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
        skipped = [(f"{r}x{r}", f"{model_dir} is exported at {canvas}x{manifest['canvas'][1]}; pass the "
                                "checkpoint to bench other resolutions") for r in resolutions or [] if r != canvas]
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


# -- output -------------------------------------------------------------------------------------
def _get(row: Dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def flat_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """One CSV line of a result row (CSV_COLUMNS)."""
    lat = row.get("latency_ms") or {}
    per = row.get("per_frame_ms") or {}
    return {**{k: row.get(k) for k in ("backend", "stage", "batch", "precision", "canvas", "layout", "status",
                                       "reason", "runs", "clipped", "fps", "host_ms", "queue_ms", "peak_rss_mib",
                                       "flops_per_frame", "achieved_gflops", "peak_fraction", "speedup")},
            **{f"{k}_ms": lat.get(k) for k in ("p50", "p90", "p95", "p99", "mean", "min", "max")},
            "raw_p99_ms": _get(row, "latency_raw_ms", "p99"), "frame_ms_min": per.get("min"),
            "frame_ms_median": per.get("median"), "frame_ms_max": per.get("max"),
            "compute_source_ms": _get(row, "compute_ms", "source"),
            "compute_frame_ms": _get(row, "compute_ms", "frame") or _get(row, "compute_ms", "full_forward"),
            "gpu_memory_peak_mib": row.get("gpu_memory_used_peak_mib"),
            "frames_max_abs_diff": _get(row, "frames_vs_baseline", "max_abs_diff"),
            "frames_within_2_levels": _get(row, "frames_vs_baseline", "fraction_within_2_levels"),
            "speedup_vs_fp32": row.get("speedup_vs_fp32"), "psnr_vs_fp32_db": _get(row, "quality_vs_fp32", "psnr_db"),
            "ssim_vs_fp32": _get(row, "quality_vs_fp32", "ssim"),
            "max_abs_vs_fp32": _get(row, "quality_vs_fp32", "max_abs_error")}


def to_csv(result: Dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result["rows"]:
        writer.writerow(flat_row(row))
    return out.getvalue()


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(result: Dict[str, Any]) -> str:
    env, peak = result["environment"], result["machine_peak"]
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "no GPU"
    lines = [f"poserender bench: {env['cpu_model']}, {env['usable_cores']} usable cores, {env['threads']} threads, "
             f"{gpus}; fp32 matmul peak {_num(peak.get('gflops'), '.1f')} GFLOP/s",
             f"{'backend':<10}{'stage':<7}{'batch':>5} {'prec':<5}{'canvas':<8}{'layout':<9}{'fps':>8}"
             f"{'p50':>9}{'p90':>9}{'p95':>9}{'p99':>9}  {'ms/frame min/med/max':<22}{'compute/host':>14}"
             f"{'RSS':>7}{'GFLOP/f':>9}{'GFLOP/s':>9}{'peak':>7}{'speed-up':>9}{'clip':>5}  frames"]
    skipped = []
    for row in result["rows"]:
        if row["status"] != "ok":
            what = " ".join(str(row[k]) for k in ("backend", "stage", "batch", "precision", "canvas", "layout")
                            if row.get(k) not in (None, "*"))
            skipped.append(f"  skipped {what or row.get('resolution', '')}: {row['reason']}")
            continue
        lat, per = row["latency_ms"], row["per_frame_ms"]
        compute = sum((row.get("compute_ms") or {}).values())
        check = row.get("frames_vs_baseline")
        frames = "-" if not check else (f"{'ok' if check['passed'] else 'DIFFER'} (max {check['max_abs_diff']})")
        lines.append(
            f"{row['backend']:<10}{row['stage']:<7}{row['batch']:>5} {row['precision']:<5}{row['canvas']:<8}"
            f"{row['layout'][:8]:<9}{row['fps']:>8.2f}"
            + "".join(f"{_num(lat.get(p), '.1f'):>9}" for p in ("p50", "p90", "p95", "p99"))
            + f"  {per['min']:>6.1f}/{per['median']:>6.1f}/{per['max']:>6.1f}   "
            f"{compute:>7.1f}/{_num(row.get('host_ms'), '.1f'):<6}{_num(row.get('peak_rss_mib'), '.0f'):>7}"
            f"{row['flops_per_frame'] / 1e9:>9.2f}{row['achieved_gflops']:>9.1f}"
            f"{_num(None if row['peak_fraction'] is None else 100 * row['peak_fraction'], '.1f'):>6}%"
            f"{_num(row['speedup'], '.2f'):>8}x{row['clipped']:>5}  {frames}")
    lines.append("latency in ms per call (one batch; stream: per stage below); ms/frame = call / batch "
                 "(min/median/max: machine noise); compute = engine calls, host = the rest; RSS in MiB; "
                 "clip = calls dropped as outliers")
    lines.extend(precision_lines(result["rows"]))
    for row in result["rows"]:
        if row["status"] == "ok" and row["stage"] == "stream":
            lines.append(f"stream {row['backend']} batch {row['batch']}: first frame {row['first_frame_s']['median']} s "
                         f"after the call (setup {row['setup_s']} s); queue {row['queue_ms']} ms, compute "
                         + ", ".join(f"{k} {v} ms" for k, v in row["compute_ms"].items()) + " (p50 per batch)")
    return "\n".join(lines + skipped)


def precision_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """Reduced precision beside FP32: speed-up and quality measured in this run, and the
    export's quality gate record for int8."""
    out = []
    for row in rows:
        if row["status"] != "ok" or row["precision"] in ("fp32", "*") or row.get("is_baseline"):
            continue
        what = f"{row['precision']} vs fp32, {row['backend']} {row['stage']} batch {row['batch']}"
        if row.get("speedup_vs_fp32") is None:
            out.append(f"{what}: {_get(row, 'quality_vs_fp32', 'note') or 'no fp32 cell to compare with'}")
            continue
        q = row.get("quality_vs_fp32") or {}
        psnr = "inf" if q.get("psnr_db") is None else f"{q['psnr_db']:.1f}"
        quality = q.get("note") or (f"PSNR {psnr} dB, "
                                    f"SSIM {_num(q.get('ssim'), '.4f')}, max |err| {_num(q.get('max_abs_error'), 'g')} "
                                    f"on {q.get('frames')} frames (this run)")
        gate = row.get("int8_gate")
        gate_text = "" if not gate else (f"; export gate: PSNR {_num(gate.get('psnr_db'), '.1f')} dB, SSIM "
                                         f"{_num(gate.get('ssim'), '.4f')} on {gate.get('frames')} held-out frames "
                                         f"({gate.get('method')} calibration)")
        out.append(f"{what}: {row['speedup_vs_fp32']:.2f}x fps; {quality}{gate_text}")
    return out


def write_plot(result: Dict[str, Any], path: Path) -> None:
    """fps and p99 latency against batch per backend, and the speed-up over the baseline."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..fileio import temp_file_beside

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    base = [r for r in rows if r.get("is_baseline")]
    series: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        if not row.get("is_baseline"):
            label = f"{row['backend']} {row['stage']}" + (f" {row['precision']}" if row["precision"] != "fp32" else "") \
                + (f" {row['layout']}" if row["layout"] != "default" else "") + f" {row['canvas']}"
            series.setdefault(label, []).append(row)
    fig, (ax_fps, ax_p99, ax_up) = plt.subplots(1, 3, figsize=(17, 5.2))
    colours: Dict[str, Any] = {}
    for index, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["batch"])
        batches = [p["batch"] for p in points]
        colour = colours[label] = f"C{index % 10}"
        ax_fps.plot(batches, [p["fps"] for p in points], marker="o", label=label, color=colour)
        if all(p["latency_ms"].get("p99") is not None for p in points):
            ax_p99.plot(batches, [p["latency_ms"]["p99"] for p in points], marker="o", label=label, color=colour)
        for p in points:
            p["_colour"] = colour
    for b in base:
        ax_fps.axhline(b["fps"], color="black", linestyle="--", label=f"reference baseline {b['canvas']} (batch 1)")
        ax_p99.axhline(b["latency_ms"]["p99"], color="black", linestyle="--", label=f"reference baseline {b['canvas']}")
    for ax, title, unit in ((ax_fps, "throughput", "frames / s"), (ax_p99, "p99 latency per call", "ms")):
        ax.set(title=title, xlabel="batch size", ylabel=unit)
        ax.set_xticks(sorted({r["batch"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_fps.legend(fontsize=7)
    ups = [r for r in rows if r.get("speedup") is not None and not r.get("is_baseline")]
    if ups:
        labels = [f"{r['backend']} {r['stage']} b{r['batch']}" + (f" {r['layout']}" if r["layout"] != "default" else "")
                  for r in ups]
        bars = ax_up.bar(range(len(ups)), [r["speedup"] for r in ups], color=[r.pop("_colour") for r in ups])
        ax_up.bar_label(bars, labels=[f"{r['speedup']:.2f}x" for r in ups], fontsize=8)
        ax_up.set_xticks(range(len(ups)), labels, fontsize=8, rotation=35, ha="right")
        ax_up.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax_up.set(title="speed-up over the reference baseline", ylabel="x (frames/s ratio)")
    else:
        ax_up.text(0.5, 0.5, "no baseline in this run\n(--baseline reference)", ha="center", va="center")
        ax_up.set_axis_off()
    env = result["environment"]
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "CPU only"
    fig.suptitle(f"poserender bench: {env['cpu_model']}, {env['threads']} threads, {gpus}; "
                 f"{env['timestamp'][:10]}, commit {(env['git'].get('commit') or 'unknown')[:9]}", fontsize=10)
    for row in rows:
        row.pop("_colour", None)
    fig.tight_layout()
    fd, tmp = temp_file_beside(path, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_text(path: Path, text: str) -> None:
    from ..fileio import write_atomic

    write_atomic(path, text, f"the bench {path.suffix.lstrip('.') or 'result'}")


def _backends(text: str) -> List[str]:
    from ..bench import known_backends

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"--backend {text!r}; expected names from {', '.join(known_backends())} or 'all'")
    return list(known_backends()) if names == ["all"] else list(dict.fromkeys(names))


# -- the command --------------------------------------------------------------------------------
@click.command()
@click.argument("model", type=click.Path())
@click.option("--backend", default="all", show_default=True,
              help="Comma-separated: torch, ort-cpu, ort-cuda, ort-trt, trt, torch-cuda, or 'all'. "
                   "Ones unusable here are listed as skipped with the reason.")
@click.option("--batch", "batches", default="1,4,8", show_default=True, help="Batch sizes, e.g. 1,4,8.")
@click.option("--stage", "stages", default="frame", show_default=True,
              help="source, frame, all (source + frame per call: a new identity), stream; comma-separated.")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              help="e.g. fp32,int8 (int8: the model's calibrated INT8 graphs on ort-cpu) or fp32,fp16 (GPU "
                   "backends). Reduced-precision rows get their speed-up and PSNR/SSIM vs the fp32 row.")
@click.option("--resolution", "resolutions", help="Canvas sides, e.g. 128,256 (a checkpoint is exported per side).")
@click.option("--devices", help="Device layout for GPU backends, e.g. 0 or 0,1 (split: source on the first, "
                                "frame on the second).")
@click.option("--replicate", is_flag=True, help="With --devices: the frame stage on every device, batches dealt "
                                                "round-robin.")
@click.option("--baseline", type=click.Choice(["reference", "none"]), default="none", show_default=True,
              help="reference: PyTorch eager FP32, full forward per frame, batch 1, in the same run.")
@click.option("--config", type=click.Path(), help="Pose2Img YAML when MODEL is a checkpoint.")
@click.option("--scale", type=float, help="Canvas scale when MODEL is a checkpoint (640 / scale).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler when MODEL is a checkpoint.")
@click.option("--source", type=click.Path(), help="Source image (default: a smooth random image).")
@click.option("--source-keypoints", type=click.Path(), help="Its keypoints (default: a template pose).")
@click.option("--keypoints", type=click.Path(), help="Target poses (default: a synthetic 64-frame gesture).")
@click.option("--frames", type=int, help="Use the first N target frames.")
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
          warp_mode, source, source_keypoints, keypoints, frames, warmup, min_seconds, min_runs, threads,
          peak_seconds, json_path, csv_path, plot_path) -> None:
    """Measure MODEL (an exported folder, or a checkpoint) over a grid of backends and batches.

    \b
    poserender bench art/oliver --backend ort-cpu,torch --batch 1,4,8 --baseline reference \\
        --json r.json --csv r.csv --plot r.png
    """
    from .. import bench as measure

    grid = measure.Grid(backends=_backends(backend), stages=measure.parse_names(stages, "--stage", measure.STAGES),
                        batches=measure.parse_ints(batches, "--batch"),
                        precisions=measure.parse_names(precisions, "--precision", ("fp32", "fp16", "bf16", "int8")),
                        devices=[d.strip() for d in devices.split(",") if d.strip()] if devices else [],
                        replicate=replicate)
    if replicate and not grid.devices:
        raise UserError("--replicate needs --devices, e.g. --devices 0,1")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    method = measure.Method(warmup=warmup, min_seconds=min_seconds, min_runs=min_runs, threads=threads or usable)
    method.check()
    if frames is not None and frames < 1:
        raise UserError(f"--frames {frames}; expected a positive number")
    for option, value in (("--source", source), ("--source-keypoints", source_keypoints), ("--keypoints", keypoints)):
        if value is not None and not Path(value).exists():
            raise UserError(f"{option} not found", value)
    if bool(source) != bool(source_keypoints):
        raise UserError("--source and --source-keypoints go together (the image and its keypoints)")
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib (pip install 'poserender[bench]')") from None
    from ..fileio import check_writable

    for option, path in (("--json", json_path), ("--csv", csv_path), ("--plot", plot_path)):
        if path:        # before the grid runs, not after
            check_writable(path, f"the {option} result")
    models, skipped = prepare_models(model, config, scale, warp_mode,
                                     measure.parse_ints(resolutions, "--resolution") if resolutions else None)
    result = measure.run_bench(models, grid, method,
                               inputs_from={"source": source, "source_keypoints": source_keypoints,
                                            "keypoints": keypoints, "frames": frames},
                               baseline=None if baseline == "none" else baseline, peak_seconds=peak_seconds,
                               argv=["poserender", *sys.argv[1:]] if Path(sys.argv[0]).name == "poserender"
                               else sys.argv, skipped_models=skipped, log=log)
    click.echo(format_table(result))
    for path, write in ((json_path, lambda p: _write_text(p, json.dumps(result, indent=2) + "\n")),
                        (csv_path, lambda p: _write_text(p, to_csv(result))),
                        (plot_path, lambda p: write_plot(result, p))):
        if path:
            write(Path(path))
    ok = [r for r in result["rows"] if r["status"] == "ok" and not r.get("is_baseline")]
    best = max(ok, key=lambda r: r["fps"], default=None)
    verdict = "no cell ran" if best is None else (
        f"best {best['fps']:.2f} fps: {best['backend']} {best['stage']} batch {best['batch']}"
        + (f", {best['speedup']:.2f}x the reference" if best.get("speedup") else ""))
    click.echo(f"{verdict}; {len(ok)} cells timed, {sum(r['status'] != 'ok' for r in result['rows'])} skipped, "
               f"{result['wall_s']:.0f} s" + "".join(f"; wrote {p}" for p in (json_path, csv_path, plot_path) if p))
