"""PSC at 256 x 256 on the CPU: poserender's batched ONNX Runtime path against the reference's loop.

Reference-style loop (re-implemented from the reference's description, network/psc_model.py and
dataset/test_dataset.py): per sample and t, batch 1, torch eager, full nets (CT-Net re-encodes
the source every time), host round trips between the stages: PM-Net output to numpy, peak search
with np.where and 18 float64 exp re-renders, AA-Net (train-mode BatchNorm, as the authors run it),
argmax + one-hot, CT-Net, image to uint8 on the host. The dataset step (float64 heat maps from the
csv, one-hot parsing) is timed with it, once per sample as the reference does.

poserender: the exported graphs on ONNX Runtime CPU, source stage once per sample, PM-Net batched
over the t values (key-pose features once), peak snap/heat maps/argmax/one-hot/uint8 inside the
graphs; plus the per-frame cost of a pose stream (parsing + frame stages, source cached).

Same weights for both (the fixtures' kaiming-crc32-v1 weights when ../shared is there, else a
seeded random init), the demo test data (2 samples, t = 0.2, 0.4, 0.6, 0.8, 1.0) or a synthetic
sample, 2 threads each.

    python benchmarks/bench_cpu_psc.py            # -> benchmarks/results/cpu_psc_256.json
    python benchmarks/bench_cpu_psc.py --quick    # smoke run, 1 repeat -> cpu_psc_quick.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
RESULTS = REPO_ROOT / "benchmarks" / "results"
TS = (0.2, 0.4, 0.6000000000000001, 0.8, 1.0)


def write_checkpoint(folder: Path) -> str:
    import torch

    from poserender.models.psc import AANet, CTNet, PMNet

    manifest = SHARED / "fixtures" / "psc" / "manifest.json"
    if manifest.is_file():
        sys.path.insert(0, str(SHARED / "fixtures"))
        from weights import make_state_dict

        nets = json.loads(manifest.read_text())["nets"]
        for net, name in (("pm_net", "pm.pth"), ("aa_net", "aa.pth"), ("ct_net", "ct.pth")):
            torch.save({k: torch.from_numpy(v) for k, v in make_state_dict(nets[net]["state_dict"]).items()},
                       folder / name)
        return "kaiming-crc32-v1 (the fixtures' weights)"
    torch.manual_seed(0)
    for name, net in (("pm.pth", PMNet()), ("aa.pth", AANet()), ("ct.pth", CTNet())):
        torch.save(net.state_dict(), folder / name)
    return "torch default init, seed 0"


def layout_folder(work: Path) -> Path:
    data = SHARED / "data" / "psc" / "test"
    if data.is_dir():
        return data
    import cv2

    from poserender.families.psc_io import verification_feeds
    from poserender.keypoints.coco18 import template_pose, write_psc_csv
    from poserender.families.psc_modes import image_to_bgr8

    feeds = verification_feeds(256, 256)
    for sub in ("I0", "S0", "P0", "P1"):
        (work / "data" / sub).mkdir(parents=True)
    cv2.imwrite(str(work / "data" / "I0" / "0001.jpg"), image_to_bgr8(feeds["source"]["source_image"]))
    cv2.imwrite(str(work / "data" / "S0" / "0001.png"), np.repeat(feeds["source"]["source_labels"][0, :, :, None], 3, 2))
    for sub, shift in (("P0", 0), ("P1", 9)):
        write_psc_csv(work / "data" / sub / "0001.csv", template_pose(256, 256) + shift)
    return work / "data"


# -- the reference-style loop --------------------------------------------------------------------------------

def _joint_maps(xy: np.ndarray, size: int = 256, sigma: float = 100.0) -> np.ndarray:
    """The dataset's joint2map: per joint a float64 meshgrid exp, stored float32 (H, W, 18)."""
    out = np.zeros((size, size, xy.shape[1]), np.float32)
    for j in range(xy.shape[1]):
        if xy[0, j] == -1 or xy[1, j] == -1:
            continue
        xx, yy = np.meshgrid(np.arange(size), np.arange(size))
        out[:, :, j] = np.exp(-((yy - int(xy[1, j])) ** 2 + (xx - int(xy[0, j])) ** 2) / (2 * sigma ** 2))
    return out


def _peaks_then_maps(pose_map: np.ndarray) -> np.ndarray:
    """joint2transfer: per channel the first maximum above 0.5 via np.where, then re-rendered."""
    ys, xs, zs = np.where(np.logical_and(pose_map == pose_map.max(axis=(0, 1)), pose_map > 0.5))
    xy = -np.ones((2, pose_map.shape[2]))
    for x, y, z in zip(xs, ys, zs):
        if xy[0, z] == -1:
            xy[:, z] = (x, y)
    return _joint_maps(xy)


def _parse_and_render(aa, ct, s0, i0, pt_map) -> np.ndarray:
    """The reference's step from a pose map to an image (under no_grad): AA-Net, argmax and
    one-hot on the host, CT-Net (re-encoding the source), the image to uint8 BGR."""
    import torch

    st = aa(s0, pt_map)
    index = torch.argmax(st[0], dim=0).view(-1)
    st_map = torch.eye(7).index_select(0, index).view(256, 256, 7).permute(2, 0, 1)[None].contiguous()
    image, _, _ = ct(s0, st_map, i0)
    frame = np.clip(np.round((image[0].numpy().transpose(1, 2, 0)[:, :, ::-1] + 1) * 127.5), 0, 255)
    return frame.astype(np.uint8)


def reference_loop(nets, data: Path) -> List[float]:
    """Seconds per output image (dataset step shared over a sample's t values)."""
    import cv2
    import torch

    from poserender.keypoints.coco18 import read_psc_pose

    pm, aa, ct = nets
    times = []
    for stem in sorted(p.stem for p in (data / "I0").iterdir()):
        started = time.perf_counter()
        rgb = cv2.imread(str(data / "I0" / f"{stem}.jpg"))[:, :, ::-1].astype(np.float32) / 255
        i0 = torch.from_numpy(((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())
        labels = torch.from_numpy(cv2.imread(str(data / "S0" / f"{stem}.png"))[:, :, 2].astype(np.int64)).view(-1)
        s0 = torch.eye(7).index_select(0, labels).view(256, 256, 7).permute(2, 0, 1)[None].contiguous()
        p0 = torch.from_numpy(_joint_maps(read_psc_pose(data / "P0" / f"{stem}.csv")[0].T).transpose(2, 0, 1)[None].copy())
        p1 = torch.from_numpy(_joint_maps(read_psc_pose(data / "P1" / f"{stem}.csv")[0].T).transpose(2, 0, 1)[None].copy())
        dataset = time.perf_counter() - started
        for t in TS:
            started = time.perf_counter()
            with torch.no_grad():
                pt = pm(p0, p1, torch.tensor([t], dtype=torch.float32)) if t < 1 else p1.clone()
                pt_map = torch.from_numpy(_peaks_then_maps(pt.numpy()[0].transpose(1, 2, 0)).transpose(2, 0, 1)[None].copy())
                _parse_and_render(aa, ct, s0, i0, pt_map)
            times.append(time.perf_counter() - started + dataset / len(TS))
    return times


def stream_poses(data: Path, frames: int):
    """The pose stream both stream cells render: the first sample's P1 jittered (seeded), all joints kept."""
    from poserender.keypoints.coco18 import read_psc_pose

    stem = sorted(p.stem for p in (data / "I0").iterdir())[0]
    xy, valid = read_psc_pose(data / "P1" / f"{stem}.csv")
    rng = np.random.default_rng(0)
    kp = (xy[None] + rng.normal(0, 3, size=(frames, 18, 2))).astype(np.float32)
    return stem, kp, np.repeat(valid[None], frames, 0).astype(np.float32)


def reference_stream(nets, data: Path, frames: int) -> List[float]:
    """Seconds per frame of the same pose stream done the reference's way (the work ``ours_stream``
    does: pose -> parsing -> frame for one source): per frame, batch 1, torch eager, the dataset's
    float64 joint maps of the pose, AA-Net on the source parsing, argmax + one-hot on the host,
    CT-Net (which re-encodes the source: the reference keeps nothing between frames), uint8 image.
    The source's tensors are built once, outside the timing (ours caches its source stage too)."""
    import cv2
    import torch

    _, aa, ct = nets
    stem, kp, kv = stream_poses(data, frames)
    rgb = cv2.imread(str(data / "I0" / f"{stem}.jpg"))[:, :, ::-1].astype(np.float32) / 255
    i0 = torch.from_numpy(((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())
    labels = torch.from_numpy(cv2.imread(str(data / "S0" / f"{stem}.png"))[:, :, 2].astype(np.int64)).view(-1)
    s0 = torch.eye(7).index_select(0, labels).view(256, 256, 7).permute(2, 0, 1)[None].contiguous()
    times = []
    for xy, valid in zip(kp, kv):
        started = time.perf_counter()
        pose = np.where(valid[:, None] > 0, xy, -1).T
        with torch.no_grad():
            pt_map = torch.from_numpy(_joint_maps(pose).transpose(2, 0, 1)[None].copy())
            _parse_and_render(aa, ct, s0, i0, pt_map)
        times.append(time.perf_counter() - started)
    return times


# -- poserender ----------------------------------------------------------------------------------------------

def ours_layout(model, data: Path, batch: int) -> List[float]:
    """Seconds per output image of the reference-layout mode, everything included but file writes."""
    from poserender.families.psc_modes import read_reference_layout

    times = []
    started = time.perf_counter()
    samples = read_reference_layout(data, model.height, model.width, model.classes, lambda s: None)
    reading = time.perf_counter() - started
    for sample in samples:
        started = time.perf_counter()
        source = model.source(sample.image, sample.labels)
        inner = [t for t in TS if t < 1]
        kp, kv = model.interpolate(sample.p0, sample.p1, inner)
        kp = np.concatenate([kp, sample.p1[0][None]]).astype(np.float32)
        kv = np.concatenate([kv, sample.p1[1][None]]).astype(np.float32)
        model.render(source, kp, kv, batch)
        per_image = (time.perf_counter() - started + reading / len(samples)) / len(TS)
        times.extend([per_image] * len(TS))
    return times


def ours_stream(model, data: Path, batch: int, frames: int) -> List[float]:
    """Seconds per frame of a pose stream (source cached): parsing + frame stages at ``batch``."""
    from poserender.families.psc_modes import read_reference_layout

    sample = read_reference_layout(data, model.height, model.width, model.classes, lambda s: None)[0]
    source = model.source(sample.image, sample.labels)
    _, kp, kv = stream_poses(data, frames)
    times = []
    for i in range(0, frames, batch):
        started = time.perf_counter()
        model.render(source, kp[i:i + batch], kv[i:i + batch], batch)
        times.extend([(time.perf_counter() - started) / len(kp[i:i + batch])] * len(kp[i:i + batch]))
    return times


def stream_quality(models: Dict[str, Any], data: Path, frames: int) -> Dict[str, Any]:
    """Each other model's stream frames against ORT FP32's (PSNR, SSIM on uint8 BGR, and the share
    of pixels whose parsing label differs): these weights are the fixtures' random ones, which
    flatter a lower precision less than they would a trained model's smooth activations."""
    from poserender.export.quality import psnr, ssim
    from poserender.families.psc_modes import read_reference_layout

    ref_model = models["ort"]
    sample = read_reference_layout(data, ref_model.height, ref_model.width, ref_model.classes, lambda s: None)[0]
    _, kp, kv = stream_poses(data, frames)
    ref_frames, ref_labels = ref_model.render(ref_model.source(sample.image, sample.labels), kp, kv, 4)
    quality = {}
    for name, model in models.items():
        if name == "ort":
            continue
        got, labels = model.render(model.source(sample.image, sample.labels), kp, kv, 4)
        quality[name] = {"psnr_db": round(psnr(ref_frames, got, 255.0), 2),
                         "ssim": round(ssim(ref_frames, got), 4),
                         "labels_differ_percent": round(100 * float(np.mean(labels != ref_labels)), 3)}
    return quality


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 8 stream frames")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the data per path (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/cpu_psc_256.json)")
    parser.add_argument("--ov-precision", default="auto",
                        help="the ov-cpu cells' precisions, comma-separated (fp32, bf16), or auto: fp32, and bf16 "
                             "where this CPU has it; 'none' leaves OpenVINO out (default auto)")
    args = parser.parse_args(argv)
    import torch

    from poserender.bench import environment, summarise
    from poserender.engines import registry
    from poserender.engines.machine import Facts
    from poserender.engines.select import stage_engines
    from poserender import families
    from poserender.export.exporter import export_checkpoint
    from poserender.manifest import read_manifest
    from poserender.models.psc.checkpoint import load_psc_nets
    from poserender.families.psc_modes import PSCModel

    torch.set_num_threads(args.threads)
    repeats, stream_frames = (1, 8) if args.quick else (args.repeats, 32)
    out = args.json or RESULTS / ("cpu_psc_quick.json" if args.quick else "cpu_psc_256.json")
    ov_precisions = [] if args.ov_precision == "none" else args.ov_precision.split(",")
    usable, why_not = registry.BACKENDS["ov-cpu"].probe(Facts())
    if ov_precisions and not usable:
        print(f"ov-cpu cells left out: {why_not}")
        ov_precisions = []
    if ov_precisions == ["auto"]:
        ov_precisions = ["fp32"] + (["bf16"] if {"avx512_bf16", "amx_bf16"} & Facts().cpu_flags else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ckpt").mkdir()
        weights = write_checkpoint(work / "ckpt")
        data = layout_folder(work)
        export_checkpoint(families.get("psc"), work / "ckpt", work / "art", {"aa_norm": "authors"})
        pm, aa, ct, _ = load_psc_nets(work / "ckpt", "batch")   # literal train-mode BatchNorm, batch 1
        manifest = read_manifest(work / "art")
        models = {}
        for backend, precision in [("ort-cpu", None)] + [("ov-cpu", p) for p in ov_precisions]:
            _, engines = stage_engines(work / "art", manifest, backend, threads=args.threads, precision=precision)
            for engine in engines:
                engine.activate()
            name = "ort" if backend == "ort-cpu" else f"ov_{precision}"
            models[name] = PSCModel({e.spec.name: e for e in engines}, manifest)
        reference_loop((pm, aa, ct), data)            # warm-up (allocators, oneDNN primitives)
        for model in models.values():
            ours_layout(model, data, 5)
        cells: Dict[str, Any] = {}
        cells["reference_loop"] = summarise(sum((reference_loop((pm, aa, ct), data) for _ in range(repeats)), []), 1)
        for name, model in models.items():
            cells[f"ours_layout_{name}_batched"] = summarise(sum((ours_layout(model, data, 5)
                                                                  for _ in range(repeats)), []), 1)
        cells["reference_stream"] = summarise(reference_stream((pm, aa, ct), data, stream_frames), 1)
        for name, model in models.items():
            for batch in (1, 4):
                cells[f"ours_stream_{name}_batch{batch}"] = summarise(ours_stream(model, data, batch, stream_frames), 1)
        quality = stream_quality(models, data, stream_frames)
    work_done = {"reference_loop": "per sample: dataset step, then per t PM-Net (t < 1), peaks, AA-Net, CT-Net",
                 "ours_layout": "per sample: source stage once, PM-Net batched over t, parsing + frame stages",
                 "reference_stream": "per pose of a stream for one source: joint maps, AA-Net, CT-Net (re-encodes "
                                     "the source), batch 1",
                 "ours_stream": "per pose of the same stream: parsing + frame stages (source stage cached)"}
    for name, cell in cells.items():
        cell["work"] = next(text for key, text in work_done.items() if name.startswith(key))
        cell["compare_with"] = "reference_stream" if "stream" in name else "reference_loop"
    for name, cell in cells.items():
        ref = cells[cell["compare_with"]]["per_frame_ms"]["median"]
        cell["speedup_vs_reference"] = round(ref / cell["per_frame_ms"]["median"], 3)
    result = {"benchmark": "psc 256x256 CPU: batched ORT and OpenVINO vs the reference-style loop", "quick": args.quick,
              "weights": weights, "data": str(data), "t_values": list(TS), "repeats": repeats,
              "environment": environment(["python", "benchmarks/bench_cpu_psc.py", *(argv or sys.argv[1:])],
                                         args.threads),
              "note": "per_frame_ms = per output image; the reference loop includes its dataset step "
                      "(amortised over the t values of a sample), ours includes reading and checking inputs; "
                      "each cell's speed-up is against the reference cell doing the same work (compare_with)",
              "ov_precisions": ov_precisions,
              "quality_vs_ort_fp32": quality,
              "cells": cells}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'path':32s} {'ms/image (median)':>18s} {'speed-up':>9s}  vs")
    for name, cell in cells.items():
        print(f"{name:32s} {cell['per_frame_ms']['median']:18.1f} {cell['speedup_vs_reference']:8.2f}x  "
              f"{cell['compare_with']}")
    for name, q in quality.items():
        print(f"{name} vs ORT FP32 on the stream: PSNR {q['psnr_db']} dB, SSIM {q['ssim']}, "
              f"labels differ on {q['labels_differ_percent']}% of pixels")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
