"""GPU checks for a session with a lent GPU: one command, results as JSON in benchmarks/results/.

    python benchmarks/gpu_checks.py [--width 64] [--size 256] [--batch 4] [--out benchmarks/results]

Checks (each recorded as passed/failed/skipped with its numbers, never silently dropped):
  torch_cuda_fp32   frame + source stage on CUDA vs the same modules on the CPU (FP32)
  torch_cuda_fp16   FP16 trunk on CUDA vs CPU FP32: finite, PSNR >= 35 dB on the uint8 frames
  torch_cuda_bf16   same for BF16
  cuda_graphs       CUDA-graph replay per batch size equals eager; ms/batch eager vs replay
  devices_0_0       --devices 0,0 placement: two workers on GPU 0 in two threads, same frames
  pycuda            import, device facts, pinned -> device -> pinned round trip on a stream, and as a replayed CUDA graph
  ort_cuda          ONNX Runtime CUDA EP (IO binding) vs ORT CPU, if onnxruntime-gpu is installed
  tensorrt          build fp16 plans, load through the compatibility check, compare, if TensorRT imports
Weights are random (seeded); the model is the published width at a size that runs in seconds.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poserender import families  # noqa: E402
from poserender.doctor import collect  # noqa: E402
from poserender.engines import select, torch_engine  # noqa: E402
from poserender.export.verify import stage_feeds  # noqa: E402
from poserender.export.verify import compare_outputs  # noqa: E402
from poserender.specs import StageSpec  # noqa: E402

MIN_PSNR_DB = 35.0


def export_model(folder: Path, width: int, size: int) -> Path:
    import torch

    from poserender.config import Pose2ImgConfig
    from poserender.export.exporter import export_model as export_plan
    from poserender.families.pose2img import generator_plan
    from poserender.models.pose2img import Pose2ImgGenerator

    torch.manual_seed(0)
    generator = Pose2ImgGenerator(width=width).eval()
    for module in generator.modules():          # non-trivial BN statistics, as a trained net has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ckpt = folder / "ckpt.pth"
    from poserender.models.checkpoint import save_checkpoint
    config = Pose2ImgConfig(img_h=size, img_w=size, scale=1.0)
    save_checkpoint(ckpt, generator, {"config": config.to_dict(), "warp_mode": "legacy"})
    out = folder / "model"
    export_plan(families.get("pose2img"), generator_plan(generator, config, "legacy", {"path": str(ckpt)}), out)
    return out


def stage_inputs(model: Path, batch: int):
    manifest = json.loads((model / "manifest.json").read_text())
    _, engines = select.stage_engines(model, manifest, "torch", torch_stages=families.of(manifest).torch_stage)
    with engines[0] as source:
        source_feed = stage_feeds(manifest, 0, {})
        frame_feed = stage_feeds(manifest, 1, source.infer(source_feed))
    frame_feed = {k: (np.repeat(v, batch // v.shape[0] + 1, 0)[:batch] if k.startswith("target") else v)
                  for k, v in frame_feed.items()}
    return manifest, source_feed, frame_feed


def torch_engine_for(manifest, stage: int, **kwargs):
    spec = StageSpec.from_dict(manifest["stages"][stage])
    return torch_engine.TorchEngine(spec, lambda: families.of(manifest).torch_stage(manifest, spec.name), **kwargs)


def timed(engine, feed, repeats: int = 20) -> float:
    import torch
    for _ in range(3):
        engine.infer(feed)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        engine.infer(feed)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000


def check_precision(manifest, feeds, precision):
    result = {"stages": {}}
    for stage, feed in enumerate(feeds):
        with torch_engine_for(manifest, stage) as cpu, \
                torch_engine_for(manifest, stage, device="cuda:0", precision=precision) as gpu:
            report = compare_outputs(cpu.infer(feed), gpu.infer(feed))
            result["stages"][cpu.spec.name] = {"report": report, "reduced_trunks": gpu.trunks}
    frames = result["stages"]["frame"]["report"]["frames"]
    finite = all(e["nonfinite"] == 0 for s in result["stages"].values() for e in s["report"].values())
    if precision == "fp32":
        result["passed"] = finite and frames["fraction_over_2_levels"] < 1e-3
    else:
        result["passed"] = finite and frames["psnr_db"] >= MIN_PSNR_DB
    return result


def check_cuda_graphs(manifest, frame_feed):
    with torch_engine_for(manifest, 1, device="cuda:0") as eager, \
            torch_engine_for(manifest, 1, device="cuda:0", cuda_graphs=True) as graphed:
        expected = eager.infer(frame_feed)["frames"]
        same = all(np.array_equal(graphed.infer(frame_feed)["frames"], expected) for _ in range(3))
        return {"passed": same, "graphs": len(graphed._graphs), "ms_per_batch_eager": timed(eager, frame_feed),
                "ms_per_batch_graph": timed(graphed, frame_feed), "batch": int(frame_feed["target_keypoints"].shape[0])}


def check_devices_0_0(manifest, frame_feed):
    from poserender.engines.placement import check_devices, plan_placement, visible_device_count

    check_devices((0, 0))
    plan = plan_placement(manifest["stages"], (0, 0), replicate=True)
    workers = [w for w in plan.workers() if w[0] == "frame"]
    outputs, errors = {}, []

    def work(replica: int, device: int):
        try:
            with torch_engine_for(manifest, 1, device=f"cuda:{device}") as engine:
                outputs[replica] = engine.infer(frame_feed)["frames"]
        except Exception as exc:  # noqa: BLE001 - recorded in the result
            errors.append(repr(exc))
    threads = [threading.Thread(target=work, args=(replica, device)) for _, device, replica in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = len(outputs) == 2 and np.array_equal(outputs[0], outputs[1])
    return {"passed": same and not errors, "placement": plan.to_dict(), "visible_devices": visible_device_count(),
            "errors": errors}


def check_pycuda():
    from poserender.engines import cuda_mem

    facts = cuda_mem.device_facts(0)
    with cuda_mem.DeviceContext(0):
        host = cuda_mem.pinned_empty((1024,), np.float32)
        host[:] = np.arange(1024, dtype=np.float32)
        back = cuda_mem.pinned_empty((1024,), np.float32)
        buffer, stream = cuda_mem.DeviceBuffer(host.nbytes), cuda_mem.Stream()
        start, end = cuda_mem.Event(), cuda_mem.Event()
        start.record(stream)
        stream.upload(buffer, host)
        stream.download(back, buffer)
        end.record(stream)
        stream.synchronize()
        ok = bool(np.array_equal(host, back))
        ms = end.elapsed_ms(start)
        # the same round trip captured once as a CUDA graph (driver API) and replayed with new data
        back[:] = 0
        stream.begin_capture()
        stream.upload(buffer, host)
        stream.download(back, buffer)
        graph = stream.end_capture()
        replays_ok = True
        for value in (1.0, 2.0):
            host[:] = value
            graph.launch()
            stream.synchronize()
            replays_ok &= bool(np.all(back == value))
        graph.free()
        buffer.free()
    return {"passed": ok and replays_ok, "device": facts, "roundtrip_ms": ms, "graph_replay_ok": replays_ok}


def check_ort_cuda(model, manifest, frame_feed):
    _, cpu = select.stage_engines(model, manifest, "ort-cpu")
    _, gpu = select.stage_engines(model, manifest, "ort-cuda", device="0")
    with cpu[1] as c, gpu[1] as g:
        report = compare_outputs(c.infer(frame_feed), g.infer(frame_feed))
    return {"passed": report["frames"]["fraction_over_2_levels"] < 1e-3, "report": report}


def check_tensorrt(model):
    from poserender.commands.verify import verify_model
    from poserender.engines.placement import plan_placement
    from poserender.export.trt_build import build_model
    from poserender.manifest import read_manifest, write_json_atomic

    manifest = read_manifest(model)
    plan = plan_placement(manifest["stages"], (0,))
    manifest = build_model(model, manifest, plan.engines(), "fp16", {"precision": "fp16", "devices": [0]},
                           model / "timing", 3, False, print)
    write_json_atomic(model / "manifest.json", manifest)
    result = verify_model(model, ("trt",), device="0", precision="fp16")
    return {"passed": True, "verification": result, "engines": manifest["engines"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="U-Net width (64 = published)")
    parser.add_argument("--size", type=int, default=256, help="canvas side, a multiple of 32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    info = collect()
    gpus = info["nvidia"]["gpus"]
    result = {"command": " ".join(["python"] + sys.argv), "date": datetime.datetime.now(
              datetime.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "device": gpus[0] if gpus else None, "packages": {k: v.get("version") for k, v in info["packages"].items()},
              "backends": info["backends"], "model": {"width": args.width, "size": args.size, "batch": args.batch,
                                                      "weights": "random, seed 0"}, "checks": {}}
    work = Path(tempfile.mkdtemp(prefix="poserender-gpu-checks-"))
    try:
        model = export_model(work, args.width, args.size)
        manifest, source_feed, frame_feed = stage_inputs(model, args.batch)
        checks = {
            "torch_cuda_fp32": lambda: check_precision(manifest, (source_feed, frame_feed), "fp32"),
            "torch_cuda_fp16": lambda: check_precision(manifest, (source_feed, frame_feed), "fp16"),
            "torch_cuda_bf16": lambda: check_precision(manifest, (source_feed, frame_feed), "bf16"),
            "cuda_graphs": lambda: check_cuda_graphs(manifest, frame_feed),
            "devices_0_0": lambda: check_devices_0_0(manifest, frame_feed),
            "pycuda": check_pycuda,
            "ort_cuda": lambda: check_ort_cuda(model, manifest, frame_feed),
            "tensorrt": lambda: check_tensorrt(model),
        }
        needs = {"torch_cuda_fp32": "torch-cuda", "torch_cuda_fp16": "torch-cuda", "torch_cuda_bf16": "torch-cuda",
                 "cuda_graphs": "torch-cuda", "devices_0_0": "torch-cuda", "ort_cuda": "ort-cuda", "tensorrt": "trt"}
        for name, run in checks.items():
            backend = needs.get(name)
            if backend and not info["backends"][backend]["usable"]:
                result["checks"][name] = {"skipped": info["backends"][backend]["reason"]}
            elif name == "pycuda" and info["packages"]["pycuda"]["version"] is None:
                result["checks"][name] = {"skipped": f"pycuda {info['packages']['pycuda']['error']}"}
            else:
                try:
                    result["checks"][name] = run()
                except Exception as exc:  # noqa: BLE001 - a failed check is a result, not a crash
                    result["checks"][name] = {"passed": False, "error": repr(exc), "traceback": traceback.format_exc()}
            print(f"{name:<16} {json.dumps({k: v for k, v in result['checks'][name].items() if k != 'traceback'})[:200]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    slug = (gpus[0]["name"] if gpus else "no-gpu").lower().replace(" ", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_checks_{slug}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0 if all(c.get("passed", True) for c in result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
