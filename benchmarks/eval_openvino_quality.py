"""Quality of every CPU precision on trained weights: PSNR/SSIM against ONNX Runtime FP32 on held-out frames.

Random weights make smooth, saturated frames that flatter low precision, so this measures two
trained models:

- ``demo``: the shipped demo model (poserender/demo/model, width 8, 256 x 256, trained by
  poserender on its puppet), calibrated on the shipped clip with the puppet at rest as the source;
- ``oliver``: full-size nets (width 64) trained a few hundred steps on the real Oliver frames
  (``configs/pose2img_oliver_w64_64.yaml``, 64 x 64, frames 0-223; the gate frames come from
  the tail, never seen in training nor calibration), calibrated on the Oliver poses.

For each: ``export --precision int8 --int8-target ov`` through the Python API (the QDQ graph and
the NNCF graph from the same calibration frames, the same gate on the same held-out frames), then
``poserender tune``'s measurement of ort-cpu and ov-cpu at every precision on the gate frames
(quality and speed, alternating calls) -- recorded in the model's manifest (``int8``,
``int8_nncf``, ``precision_quality``) and in benchmarks/results/cpu_openvino_quality.json -- and,
for the record, the whole frame graph in BF16 (what ov-cpu's trunk cut avoids).

    poserender train pose2img --config configs/pose2img_oliver_w64_64.yaml -o runs/oliver_w64_64   # ~17 min
    python benchmarks/eval_openvino_quality.py [--oliver-checkpoint runs/oliver_w64_64/ckpt_final.pth]
    python benchmarks/eval_openvino_quality.py --quick     # the demo model only, minmax, 8 frames: a smoke run
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_pose2img import OLIVER, OLIVER_STEM, REPO_ROOT, RESULTS  # noqa: E402

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
WORK = REPO_ROOT / "benchmarks" / "work"


def evaluate(model: Path, keypoints: Path, identity: Dict[str, Path], method: str, threads: int, quick: bool,
             log) -> Dict[str, Any]:
    from poserender import families
    from poserender.bench.inputs import load_inputs
    from poserender.bench.tune import held_out, measure
    from poserender.engines import registry
    from poserender.errors import UserError
    from poserender.export.calibration import calibration_data
    from poserender.export.int8 import add_int8_targets
    from poserender.export.quality import QualityGate
    from poserender.manifest import read_manifest

    started = time.perf_counter()
    gate = QualityGate()
    family = families.of(read_manifest(model))
    data = calibration_data(family, read_manifest(model), keypoints, identity)
    outcome: Dict[str, Any] = {}
    sizes = {"frames": 8, "gate_frames": 8} if quick else {}
    try:
        add_int8_targets(model, data, method=method, gate=gate, target="ov", log=log, **sizes)
    except UserError as exc:        # a refused export is a result
        outcome["int8_refused"] = str(exc)
    manifest = read_manifest(model)
    inputs = load_inputs(manifest, identity, keypoints)
    held = held_out(manifest, len(inputs.frames), 16)
    record = measure(model, manifest, inputs, held, 4, gate, rounds=3, threads=threads, backends=["ort-cpu", "ov-cpu"],
                     log=log)
    manifest = read_manifest(model)
    choice = registry.pick_auto(model_dir=model)
    return {"model": str(model), "canvas": manifest["canvas"], "width": manifest.get("width"),
            "gate_frames": held, "int8": (manifest.get("int8") or {}).get("quality"),
            "int8_calibration": ((manifest.get("int8") or {}).get("calibration") or {}).get("method"),
            "int8_nncf": (manifest.get("int8_nncf") or {}).get("quality"),
            "ov_int8_route": (manifest.get("int8_nncf") or {}).get("ov_route"),
            "candidates": record["candidates"], "auto_pick": choice._asdict(), **outcome,
            "bf16_whole_frame_graph": bf16_whole_frame_graph(model, manifest, inputs, held),
            "seconds": round(time.perf_counter() - started, 1)}


def bf16_whole_frame_graph(model: Path, manifest, inputs, held) -> Dict[str, Any]:
    """Why ov-cpu's bf16 runs only the trunk in BF16: the whole frame graph in BF16 (one compiled
    model, INFERENCE_PRECISION_HINT=bf16) against ORT FP32 on the same frames."""
    import numpy as np

    from poserender.engines import machine, ov_engine
    from poserender.engines.select import stage_engines
    from poserender.export.quality import frame_quality

    if not ov_engine.bf16_support(machine.cpu_flag_set())[0]:
        return {"skipped": "no BF16 on this CPU"}
    ort = {e.spec.name: e.activate() for e in stage_engines(model, manifest, "ort-cpu")[1]}
    adapter = inputs.new_adapter()
    adapter.run_identity(ort)
    spec = manifest.stage("frame")
    with ov_engine.OvEngine(spec, model / spec.file, "bf16") as whole:
        ref, got = [], []
        for i in range(0, len(held), 4):
            feed = adapter.prepare([inputs.frames[j] for j in held[i:i + 4]])
            ref.append(ort["frame"].infer(feed)["frames"])
            got.append(whole.infer(feed)["frames"])
    return {**frame_quality(np.concatenate(ref), np.concatenate(got)),
            "how": "ov-cpu bf16 without the trunk cut (OvEngine bf16_trunk=None)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oliver-checkpoint", type=Path, default=REPO_ROOT / "runs" / "oliver_w64_64" / "ckpt_final.pth")
    parser.add_argument("--calibration-method", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the demo model only, minmax, 8 calibration frames")
    args = parser.parse_args(argv)
    from poserender import families
    from poserender.bench import environment
    from poserender.demo import MODEL_DIR, puppet_inputs
    from poserender.export.exporter import export_checkpoint

    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    env = environment(["python", "benchmarks/eval_openvino_quality.py", *(argv if argv is not None else sys.argv[1:])],
                      args.threads)
    method = "minmax" if args.quick else args.calibration_method
    results: Dict[str, Any] = {}
    demo = WORK / "quality_demo"
    shutil.rmtree(demo, ignore_errors=True)
    shutil.copytree(MODEL_DIR, demo)
    image, source_kp, clip = puppet_inputs(WORK / "quality_demo_inputs")
    results["demo"] = evaluate(demo, clip, {"source": image, "source_keypoints": source_kp}, method, args.threads,
                               args.quick, log)
    if args.quick:
        results["oliver"] = {"skipped": "--quick"}
    elif args.oliver_checkpoint.is_file():
        oliver = WORK / "quality_oliver_w64_64"
        shutil.rmtree(oliver, ignore_errors=True)
        manifest = export_checkpoint(families.get("pose2img"), args.oliver_checkpoint, oliver, {}, log=log)
        results["oliver"] = {"checkpoint": str(args.oliver_checkpoint),
                             "checkpoint_meta": (manifest.get("checkpoint") or {}).get("meta"),
                             **evaluate(oliver, OLIVER / "varying_tmplt.npz",
                                        {"source": OLIVER / f"{OLIVER_STEM}.jpg",
                                         "source_keypoints": OLIVER / f"{OLIVER_STEM}.npy"},
                                        method, args.threads, False, log)}
    else:
        results["oliver"] = {"skipped": f"{args.oliver_checkpoint} not found (train it: poserender train pose2img "
                                        "--config configs/pose2img_oliver_w64_64.yaml -o runs/oliver_w64_64)"}
    out = RESULTS / ("cpu_openvino_quality_quick.json" if args.quick else "cpu_openvino_quality.json")
    out.write_text(json.dumps({"benchmark": "quality of each CPU precision on trained weights vs ORT FP32",
                               "quick": args.quick, "environment": env, "models": results}, indent=2, default=str)
                   + "\n")
    for name, r in results.items():
        for c in r.get("candidates", []):
            if c["status"] == "ok":
                q = c["quality"]
                print(f"{name:7s} {c['backend']:8s} {c['precision']:10s} PSNR {q['psnr_db']} dB SSIM {q['ssim']} "
                      f"max {q['max_abs_error']:g}  {c['ms_per_frame']} ms/frame  gate "
                      f"{'passed' if c['gate']['passed'] else 'FAILED'}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
