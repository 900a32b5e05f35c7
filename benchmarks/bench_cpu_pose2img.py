"""Keypoints -> uint8 frame time per frame on CPU, the reference way vs ours, in one run.

Cells, all on the same machine, weights, inputs and thread count:

* ``baseline``        the authors' way: PyTorch eager FP32, all three U-Nets every frame, batch 1
                      (``FullPipeline`` + ``to_uint8_bgr``; its preprocessing is our batched
                      code, which only flatters the baseline).
* ``torch_frame``     the per-frame stage alone (``FrameStage``), PyTorch eager, batch 1: the
                      effect of the source/frame split without ONNX Runtime.
* ``torch_prep``      the frame stage's preprocessing alone (heat maps, limb transforms, warps):
                      its share of ``torch_frame`` (DESIGN.md wants <= 5 %).
* ``ours_b{B}``       the frame stage exported to ONNX, run by onnxruntime (CPU EP,
                      ORT_ENABLE_ALL, intra-op threads = cores) at batch B; per-frame = batch / B.

The source stage (once per identity) runs before the frame cells; its one-off time is reported
on its own. Every cell is warmed up, then runs for at least ``--min-seconds`` and ``--min-runs``;
batch times above 3x the median are dropped from the statistics and counted. Ours' frames are
checked against the baseline's (within 2 levels on >= 99.9 % of pixels).

    python benchmarks/bench_cpu_pose2img.py --quick          # smoke run, ~1 min
    python benchmarks/bench_cpu_pose2img.py --keypoints K.npz --source-keypoints S.npy --source S.jpg
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from poserender.config import Pose2ImgConfig, load_pose2img_config  # noqa: E402
from poserender.errors import UserError  # noqa: E402
from poserender.export.pose2img_export import export_generator  # noqa: E402
from poserender.export.stages import pose2img_stages  # noqa: E402
from poserender.keypoints import canvas_transform, read_keypoints  # noqa: E402
from poserender.keypoints.template import gesture_sequence, template_pose  # noqa: E402
from poserender.models.pose2img import FullPipeline, Pose2ImgGenerator, Pose2ImgGeometry, to_uint8_bgr  # noqa: E402

log = logging.getLogger("bench_cpu_pose2img")

#: Oliver.yaml (POSE2IMAGE section) values, used when --config is not given
OLIVER = dict(img_h=640, img_w=640, w_bias=500.0, h_bias=40.0,
              kp_var_root=(10, 10, 10, 10, 10, 10, 10, 4, 2, 3, 2, 4, 4),
              mask_sigma_perp=(35, 25, 25, 20, 25, 20, 10, 10),
              root_node=(822.07040391, 357.76986784))
TARGET_SPEEDUP = 4.0          # DESIGN.md, "Performance targets" (CPU, 2 cores, 256 x 256)
TARGET_PREP_SHARE = 0.05
OUTLIER_FACTOR = 3.0
GUARD_LEVELS, GUARD_FRACTION = 2, 0.999


# -- inputs -------------------------------------------------------------------------------------
def make_config(args: argparse.Namespace) -> Pose2ImgConfig:
    if args.config:
        return load_pose2img_config(args.config, scale=args.scale)
    config = Pose2ImgConfig(scale=args.scale, **OLIVER)
    config.check_canvas("--scale")
    return config


def make_generator(width: int, seed: int) -> Pose2ImgGenerator:
    """Seeded random weights; BatchNorm statistics and affine set off their identity defaults
    (mean 0.1 N, var 1 + 0.1 |N|, scale 1 + 0.1 N, shift 0.1 N) so frames are not flat."""
    torch.manual_seed(seed)
    generator = Pose2ImgGenerator(width=width)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.normal_(0.0, 1.0).abs_().mul_(0.1).add_(1.0)
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return generator.eval()


def load_inputs(args: argparse.Namespace, config: Pose2ImgConfig) -> Dict[str, object]:
    """Canvas-pixel keypoints (float32) and the source image (1, 3, H, W) BGR in [-1, 1]."""
    h, w = config.canvas_hw
    info: Dict[str, object] = {}
    if args.keypoints:
        seq = read_keypoints(args.keypoints, config)
        target, target_valid = canvas_transform(seq.xy, config), seq.valid
        info["targets"] = f"real: {args.keypoints}"
    else:
        target = gesture_sequence(args.frames or 64, h, w, seed=args.seed)
        target_valid = np.ones(target.shape[:2], dtype=bool)
        info["targets"] = "synthetic: keypoints.template.gesture_sequence"
    if args.frames:
        target, target_valid = target[:args.frames], target_valid[:args.frames]
    if args.source_keypoints:
        src = read_keypoints(args.source_keypoints, config)
        source, source_valid = canvas_transform(src.xy[:1], config), src.valid[:1]
        info["source_keypoints"] = f"real: {args.source_keypoints}"
    else:
        source, source_valid = template_pose(h, w)[None], np.ones((1, target.shape[1]), dtype=bool)
        info["source_keypoints"] = "synthetic: keypoints.template.template_pose"
    if args.source:
        image = read_source_image(Path(args.source), config)
        info["source_image"] = f"real: {args.source}"
    else:
        rng = np.random.default_rng(args.seed)
        coarse = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32))
        image = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        image = image.clamp(-1, 1).numpy()
        info["source_image"] = "synthetic: smooth random (8x8 noise, bicubic)"
    info["n_target_frames"] = int(len(target))
    return dict(info=info, image=np.ascontiguousarray(image, dtype=np.float32),
                source=source.astype(np.float32), source_valid=source_valid.astype(np.float32),
                target=target.astype(np.float32), target_valid=target_valid.astype(np.float32))


def read_source_image(path: Path, config: Pose2ImgConfig) -> np.ndarray:
    """The reference's source image: BGR, crop at (w_bias, h_bias), x/255*2-1, bilinear resize."""
    import cv2

    if not path.is_file():
        raise UserError("not found; expected the source .jpg/.png", path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("cannot read as an image; expected the source .jpg/.png", path)
    x0, y0 = int(config.w_bias), int(config.h_bias)
    crop = image[y0:y0 + config.img_h, x0:x0 + config.img_w]
    if crop.shape[:2] != (config.img_h, config.img_w):
        raise UserError(f"image is {image.shape[1]} x {image.shape[0]}; expected room for a {config.img_w} x "
                        f"{config.img_h} crop at ({x0}, {y0})", path)
    crop = crop.astype(np.float32) / 255.0 * 2.0 - 1.0
    h, w = config.canvas_hw
    if (h, w) != crop.shape[:2]:
        crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    return crop.transpose(2, 0, 1)[None]


# -- timing -------------------------------------------------------------------------------------
def measure(run: Callable[[np.ndarray], Optional[np.ndarray]], batch: int, n_frames: int, args: argparse.Namespace,
            frames_out: Optional[Dict[int, np.ndarray]] = None) -> Dict[str, object]:
    """Warm up, then time ``run(frame_indices)`` until both minimums are met; frames cycle through
    the sequence. Outputs (B, H, W, 3) are kept per frame index in ``frames_out`` if given."""
    cursor = 0

    def one() -> float:
        nonlocal cursor
        indices = (cursor + np.arange(batch)) % n_frames
        cursor += batch
        start = time.perf_counter()
        out = run(indices)
        elapsed = time.perf_counter() - start
        if frames_out is not None and out is not None:
            for i, frame in zip(indices.tolist(), out):
                frames_out.setdefault(i, np.array(frame))
        return elapsed

    warmup = [one() for _ in range(args.warmup)]
    times: List[float] = []
    began = time.perf_counter()
    while len(times) < args.min_runs or time.perf_counter() - began < args.min_seconds:
        times.append(one())
    return summarise(np.asarray(times), batch, warmup)


def summarise(times: np.ndarray, batch: int, warmup: Sequence[float]) -> Dict[str, object]:
    median = float(np.median(times))
    kept = times[times <= OUTLIER_FACTOR * median]
    per_frame = kept / batch
    ms = lambda v: round(float(v) * 1e3, 3)  # noqa: E731
    return {"batch": batch, "runs": int(times.size), "outliers_dropped": int(times.size - kept.size),
            "warmup_ms": [ms(t) for t in warmup], "timed_seconds": round(float(times.sum()), 3),
            "per_frame_ms": {"min": ms(per_frame.min()), "median": ms(np.median(per_frame)),
                             "mean": ms(per_frame.mean()), "max": ms(per_frame.max()),
                             "p90": ms(np.percentile(per_frame, 90))},
            "batch_ms": {"median": ms(np.median(kept)), "p90": ms(np.percentile(kept, 90))},
            "fps": round(1.0 / float(np.median(per_frame)), 3)}


def frame_agreement(ref: Dict[int, np.ndarray], got: Dict[int, np.ndarray]) -> Dict[str, object]:
    """Per-pixel (worst channel) agreement of uint8 frames on the indices both hold."""
    common = sorted(set(ref) & set(got))
    if not common:
        return {"frames_compared": 0, "passed": False}
    diff = np.stack([np.abs(ref[i].astype(np.int16) - got[i].astype(np.int16)).max(-1) for i in common])
    mse = float(np.mean(np.stack([(ref[i].astype(np.float64) - got[i]) ** 2 for i in common])))
    within = float((diff <= GUARD_LEVELS).mean())
    return {"frames_compared": len(common), "max_abs_diff": int(diff.max()),
            "fraction_pixels_within_2_levels": round(within, 6),
            "psnr_db": None if mse == 0 else round(10 * math.log10(255.0 ** 2 / mse), 2),
            "passed": within >= GUARD_FRACTION}


# -- the cells ----------------------------------------------------------------------------------
def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def unet_gflops(generator: Pose2ImgGenerator, height: int, width: int) -> Dict[str, float]:
    """FLOPs (2 x MACs) of each U-Net at this canvas, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name in ("unet_stageA", "unet_stageC", "unet_stageD"):
        net = getattr(generator, name)
        with torch.device("meta"):
            probe = type(net)(net.in_channels, net.out_channels, net.width)
            x = torch.empty(1, net.in_channels, height, width)
        with FlopCounterMode(display=False) as counter:
            probe(x)
        out[name] = round(counter.get_total_flops() / 1e9, 3)
    return out


def time_torch_cells(args: argparse.Namespace, inputs: Dict[str, np.ndarray], pipeline: FullPipeline,
                     source_stage: torch.nn.Module, frame_stage: torch.nn.Module) -> Dict[str, object]:
    """(a) the baseline, (c) the torch frame stage and its preprocessing alone, all at batch 1."""
    T = len(inputs["target"])
    tgt, tgt_valid = torch.from_numpy(inputs["target"]), torch.from_numpy(inputs["target_valid"])
    image, skp, skv = (torch.from_numpy(inputs[k]) for k in ("image", "source", "source_valid"))
    cells, frames = {}, {"baseline": {}, "torch_frame": {}}

    def baseline(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return to_uint8_bgr(pipeline(image, skp, skv, tgt[idx], tgt_valid[idx])).numpy()

    log.info("timing (a) baseline: FullPipeline, torch eager, batch 1")
    cells["baseline"] = measure(baseline, 1, T, args, frames["baseline"])
    for i in range(min(max(args.batch_sizes), T)):  # untimed: the guard covers the largest batch
        if i not in frames["baseline"]:
            frames["baseline"][i] = baseline(np.array([i]))[0]

    start = time.perf_counter()
    with torch.no_grad():
        parts, background = source_stage(image, skp, skv)
    torch_source_s = time.perf_counter() - start

    def torch_frame(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return frame_stage(tgt[idx], tgt_valid[idx], skp, skv, parts, background).numpy()

    def torch_prep(idx: np.ndarray) -> None:  # everything in the frame stage but stage C and fusion
        with torch.no_grad():
            frame_stage.heatmaps(tgt[idx], tgt_valid[idx])
            frame_stage.warp(parts, frame_stage.transforms(skp, skv, tgt[idx], tgt_valid[idx]))

    log.info("timing (c) torch eager frame stage, batch 1")
    cells["torch_frame"] = measure(torch_frame, 1, T, args, frames["torch_frame"])
    log.info("timing torch preprocessing alone, batch 1")
    cells["torch_prep"] = measure(torch_prep, 1, T, args)
    return {"cells": cells, "frames": frames, "torch_source_stage_s": torch_source_s,
            "source_outputs": {"source_parts": parts.numpy(), "background": background.numpy()}}


def time_ours(args: argparse.Namespace, inputs: Dict[str, np.ndarray], stages, torch_source: Dict[str, np.ndarray],
              work: Path, generator: Pose2ImgGenerator, config: Pose2ImgConfig) -> Dict[str, object]:
    """(b) export both stages, run the source stage once, then time the frame stage per batch size."""
    (source_spec, _), (frame_spec, _) = stages
    T = len(inputs["target"])
    one_off: Dict[str, float] = {}

    def timed(key: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = fn()
        one_off[key] = round(time.perf_counter() - start, 3)
        return out

    source_feed = {"source_image": inputs["image"], "source_keypoints": inputs["source"],
                   "source_valid": inputs["source_valid"]}
    log.info("exporting with `poserender export`'s exporter (verified against torch) to %s", work / "model")
    timed("export_s", lambda: export_generator(generator, config, work / "model", args.warp_mode))
    work = work / "model"
    source_session = timed("source_session_create_s", lambda: ort_session(work / source_spec.file, args.threads))
    for key in ("source_stage_first_run_s", "source_stage_second_run_s"):
        parts, background = timed(key, lambda: source_session.run(source_spec.output_names, source_feed))
    del source_session
    session = timed("frame_session_create_s", lambda: ort_session(work / frame_spec.file, args.threads))
    fixed = {"source_keypoints": inputs["source"], "source_valid": inputs["source_valid"],
             "source_parts": parts, "background": background}

    def ours(idx: np.ndarray) -> np.ndarray:
        feed = dict(fixed, target_keypoints=inputs["target"][idx], target_valid=inputs["target_valid"][idx])
        return session.run(frame_spec.output_names, feed)[0]

    cells, frames = {}, {}
    for batch in args.batch_sizes:
        log.info("timing (b) ours: onnxruntime frame stage, batch %d", batch)
        frames[f"ours_b{batch}"] = {}
        cells[f"ours_b{batch}"] = measure(ours, batch, T, args, frames[f"ours_b{batch}"])
    return {"cells": cells, "frames": frames, "one_off": one_off, "providers": session.get_providers(),
            "onnx_file_mb": {f: round((work / f).stat().st_size / 2 ** 20, 1)
                             for f in (source_spec.file, frame_spec.file)}}


def run_benchmark(args: argparse.Namespace) -> Dict[str, object]:
    torch.set_num_threads(args.threads)
    config = make_config(args)
    h, w = config.canvas_hw
    geometry = Pose2ImgGeometry.from_config(config, args.warp_mode)
    inputs = load_inputs(args, config)
    info = inputs.pop("info")
    generator = make_generator(args.width, args.seed)
    n_params = sum(p.numel() for p in generator.parameters())
    log.info("canvas %dx%d, width %d (%.1f M params), %d target frames, %d threads",
             h, w, args.width, n_params / 1e6, len(inputs["target"]), args.threads)
    stages = pose2img_stages(generator, geometry)
    torch_part = time_torch_cells(args, inputs, FullPipeline(generator, geometry).eval(), stages[0][1], stages[1][1])
    with tempfile.TemporaryDirectory(prefix="bench_pose2img_") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ours_part = time_ours(args, inputs, stages, torch_part["source_outputs"], work, generator, config)

    cells = {**torch_part["cells"], **ours_part["cells"]}
    ref = torch_part["frames"]["baseline"]
    guards = {f"{name}_vs_baseline": frame_agreement(ref, got)
              for name, got in {**torch_part["frames"], **ours_part["frames"]}.items() if name != "baseline"}
    median = {name: c["per_frame_ms"]["median"] for name, c in cells.items()}
    ours_medians = {b: median[f"ours_b{b}"] for b in args.batch_sizes}
    best_batch = min(ours_medians, key=ours_medians.get)
    speedup = median["baseline"] / ours_medians[best_batch]
    prep_share = median["torch_prep"] / median["torch_frame"]
    sample = np.stack(list(ref.values()))
    return {
        "settings": {"canvas_hw": [h, w], "config": config.to_dict(), "unet_width": args.width,
                     "generator_params": n_params, "weights": f"random, torch.manual_seed({args.seed}), "
                     "BatchNorm stats/affine randomised (see make_generator)", "warp_mode": args.warp_mode,
                     "gflops_per_unet": unet_gflops(generator, h, w), "inputs": info,
                     "batch_sizes": args.batch_sizes,
                     "threads": {"torch": torch.get_num_threads(), "ort_intra_op": args.threads, "ort_inter_op": 1},
                     "ort": {"providers": ours_part["providers"], "graph_optimization_level": "ORT_ENABLE_ALL",
                             "execution_mode": "ORT_SEQUENTIAL"},
                     "onnx_file_mb": ours_part["onnx_file_mb"], "min_seconds": args.min_seconds,
                     "min_runs": args.min_runs, "warmup_runs": args.warmup,
                     "outliers": f"batch times > {OUTLIER_FACTOR:g} x median dropped from the statistics, counted",
                     "order": list(cells),
                     "scope": "canvas keypoints (float32, in memory) -> uint8 BGR frames (B, H, W, 3); "
                              "excludes reading files and video encoding"},
        "one_off": {"torch_source_stage_s": round(torch_part["torch_source_stage_s"], 3), **ours_part["one_off"]},
        "cells": cells,
        "speedup": {"headline": round(speedup, 3), "best_batch": best_batch,
                    "by_batch": {str(b): round(median["baseline"] / m, 3) for b, m in ours_medians.items()},
                    "split_only_torch_frame_vs_baseline": round(median["baseline"] / median["torch_frame"], 3),
                    "ort_only_ours_b1_vs_torch_frame": round(median["torch_frame"] / ours_medians[1], 3)
                    if 1 in ours_medians else None},
        "preprocessing_share": {"torch_prep_over_torch_frame_b1": round(prep_share, 4),
                                "target_max": TARGET_PREP_SHARE, "met": prep_share <= TARGET_PREP_SHARE},
        "target": {"speedup_min": TARGET_SPEEDUP, "met": speedup >= TARGET_SPEEDUP,
                   "source": "DESIGN.md, Performance targets (CPU, 2 cores, ORT FP32, 256x256, full-size nets)"},
        "correctness_guard": {"rule": f"ours' frames within {GUARD_LEVELS} levels of the baseline's on >= "
                                      f"{GUARD_FRACTION:.1%} of pixels (worst channel)",
                              "passed": all(g["passed"] for k, g in guards.items() if k.startswith("ours")),
                              **guards},
        "baseline_frame_stats": {"frames": len(ref), "mean": round(float(sample.mean()), 2),
                                 "std": round(float(sample.std()), 2),
                                 "fraction_saturated": round(float(((sample == 0) | (sample == 255)).mean()), 4)},
    }


# -- report -------------------------------------------------------------------------------------
def machine_info() -> Dict[str, object]:
    cpu, mem_kib = None, None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)
        mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                        if line.startswith("MemTotal")), None)
    except OSError:
        pass
    return {"cpu_model": cpu or platform.processor() or None, "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "ram_gib": round(mem_kib / 2 ** 20, 1) if mem_kib else None,
            "platform": platform.platform(), "load_average_start": list(os.getloadavg())}


def library_versions() -> Dict[str, str]:
    import onnx
    import onnxruntime

    return {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "onnx": onnx.__version__, "numpy": np.__version__}


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def format_table(result: Dict[str, object]) -> str:
    s = result["settings"]
    lines = [f"pose2img keypoints -> uint8 frame, CPU, {s['canvas_hw'][0]}x{s['canvas_hw'][1]}, width "
             f"{s['unet_width']} ({s['generator_params'] / 1e6:.1f} M params), {s['threads']['torch']} threads",
             f"{'cell':<13}{'batch':>6}{'runs':>6}{'out':>5}{'min':>10}{'median':>10}{'mean':>10}{'max':>10}"
             f"{'p90 batch':>11}{'fps':>9}   (ms per frame)"]
    for name, c in result["cells"].items():
        p = c["per_frame_ms"]
        lines.append(f"{name:<13}{c['batch']:>6}{c['runs']:>6}{c['outliers_dropped']:>5}{p['min']:>10.2f}"
                     f"{p['median']:>10.2f}{p['mean']:>10.2f}{p['max']:>10.2f}{c['batch_ms']['p90']:>11.2f}"
                     f"{c['fps']:>9.2f}")
    sp, o, g = result["speedup"], result["one_off"], result["correctness_guard"]
    lines.append(f"source stage (once): ORT {o['source_stage_first_run_s'] * 1e3:.1f} ms first, "
                 f"{o['source_stage_second_run_s'] * 1e3:.1f} ms second; export + verification {o['export_s']:.1f} s")
    lines.append("speed-up vs baseline by batch: " + ", ".join(f"b{b} {v:.2f}x" for b, v in sp["by_batch"].items())
                 + f"; split alone {sp['split_only_torch_frame_vs_baseline']:.2f}x"
                 + (f", ORT alone {sp['ort_only_ours_b1_vs_torch_frame']:.2f}x" if sp["ort_only_ours_b1_vs_torch_frame"]
                    else ""))
    ps = result["preprocessing_share"]
    lines.append(f"preprocessing share of torch frame stage: {ps['torch_prep_over_torch_frame_b1']:.1%} "
                 f"(target <= {ps['target_max']:.0%}: {'met' if ps['met'] else 'NOT met'})")
    worst = min((v["fraction_pixels_within_2_levels"] for k, v in g.items()
                 if k.startswith("ours") and v.get("frames_compared")), default=0.0)
    lines.append(f"correctness guard: {'passed' if g['passed'] else 'FAILED'} (worst {worst:.4%} of pixels within "
                 f"{GUARD_LEVELS} levels)")
    return "\n".join(lines)


def batch_sizes(text: str) -> List[int]:
    """'1,4,8' -> [1, 4, 8] (argparse type)."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}; expected comma-separated positive integers, e.g. 1,4,8")
    return sizes


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keypoints", help="target keypoints (.npz/.npy/OpenPose JSON), e.g. varying_tmplt.npz; "
                                       "default: synthetic gesture")
    p.add_argument("--source-keypoints", help="source keypoints, e.g. the Oliver 3x137 .npy; default: template")
    p.add_argument("--source", help="source image (.jpg), cropped and scaled like the reference; default: "
                                    "smooth random image")
    p.add_argument("--config", help="Pose2Img YAML, e.g. Oliver.yaml; default: built-in Oliver values")
    p.add_argument("--scale", type=float, default=2.5, help="640 / scale = canvas side (default 2.5 -> 256)")
    p.add_argument("--width", type=int, default=64, help="U-Net width (default 64, the published size)")
    p.add_argument("--batch-sizes", type=batch_sizes, default=[1, 4, 8],
                   help="ours' batch sizes, comma-separated (default 1,4,8)")
    p.add_argument("--frames", type=int, help="use the first N target frames (default: all; synthetic 64)")
    p.add_argument("--min-seconds", type=float, default=20.0, help="minimum timed seconds per cell (default 20)")
    p.add_argument("--min-runs", type=int, default=5, help="minimum timed runs per cell (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per cell (default 2, at least 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads and ORT intra-op threads (default: os.cpu_count())")
    p.add_argument("--warp-mode", default="legacy", choices=("legacy", "exact"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="keep the exported .onnx files here (default: a temporary folder)")
    p.add_argument("--json", help="result file (default benchmarks/results/cpu_pose2img_256.json; "
                                  "with --quick cpu_pose2img_quick.json)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64x64 canvas, width 16, min-seconds 1")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.width, args.min_seconds = 10.0, 16, 1.0
    for flag, value, ok, wanted in (("--warmup", args.warmup, args.warmup >= 2, ">= 2"),
                                    ("--min-runs", args.min_runs, args.min_runs >= 1, ">= 1"),
                                    ("--min-seconds", args.min_seconds, args.min_seconds >= 0, ">= 0"),
                                    ("--threads", args.threads, args.threads >= 1, ">= 1")):
        if not ok:
            p.error(f"{flag} is {value}; expected {wanted}")
    name = "cpu_pose2img_quick.json" if args.quick else "cpu_pose2img_256.json"
    args.json = Path(args.json) if args.json else REPO_ROOT / "benchmarks" / "results" / name
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    began = time.perf_counter()
    load = os.getloadavg()[0]
    if load > 0.5:  # timings of a busy machine are noisy; ratios hold up better than absolute times
        log.warning("1-minute load average is %.2f before starting; other work will disturb the timings", load)
    header = {"command": sys.argv, "command_line": shlex.join([Path(sys.executable).name] + sys.argv),
              "python_executable": sys.executable,
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "git_commit": git_commit(), "machine": machine_info(), "versions": library_versions()}
    try:
        result = run_benchmark(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    header["machine"]["load_average_end"] = list(os.getloadavg())
    result = {**header, **result, "wall_seconds": round(time.perf_counter() - began, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    sp, target = result["speedup"], result["target"]
    print(f"speed-up {sp['headline']:.2f}x at batch {sp['best_batch']} (target >= {target['speedup_min']:g}x: "
          f"{'met' if target['met'] else 'NOT met'}); results in {args.json}; {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
