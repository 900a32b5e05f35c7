"""Quality of the shipped demo model on held-out generated frames -> benchmarks/results/demo_quality.json

    python benchmarks/eval_demo.py [DATA] [--model poserender/demo/model]

DATA is a `poserender demo-data` folder; without it the held-out set is generated first, as
`poserender demo-data --frames 250 --seed 1` (seed 0 is training's), into a temporary folder.

Renders the held-out poses with `poserender render` (ONNX Runtime on the CPU, the same source the
demo uses: the puppet at rest) and compares every frame with the puppet drawn at that pose (the
ground truth): PSNR and SSIM (on the BGR uint8 frames, SSIM with an 11 x 11 gaussian, sigma 1.5,
averaged over channels). For scale, the same numbers for two trivial predictions: the source
frame itself (the puppet at rest) and the empty background.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poserender.bench.environment import environment, model_identity  # noqa: E402
from poserender.demo import DEMO_SIZE, MODEL_DIR, puppet_inputs  # noqa: E402
from poserender.demo.puppet import background  # noqa: E402
from poserender.export.quality import ssim  # noqa: E402
from poserender.export.quality import psnr  # noqa: E402


def summary(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(v.mean()), 3), "median": round(float(np.median(v)), 3),
            "p10": round(float(np.percentile(v, 10)), 3), "min": round(float(v.min()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="a demo-data folder (images/, poses.npy) not used in training "
                                            "(default: generate 250 frames with seed 1)")
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results" / "demo_quality.json"))
    ap.add_argument("--sheet", help="also write a side-by-side strip (truth | model) of every 25th frame")
    args = ap.parse_args(argv)
    env = environment(["python", "benchmarks/eval_demo.py", *(sys.argv[1:] if argv is None else argv)],
                      os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as generated:
        if args.data is None:
            data = Path(generated) / "demo_val"
            subprocess.run([sys.executable, "-m", "poserender.cli", "demo-data", "-o", str(data), "--frames", "250",
                            "--seed", "1"], check=True, capture_output=True)
        else:
            data = Path(args.data)
        return evaluate(args, data, env)


def evaluate(args, data: Path, env) -> int:
    truth_files = sorted((data / "images").glob("*.png"))
    info = json.loads((data / "info.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        image, source_kp, _ = puppet_inputs(Path(tmp) / "in")
        out = Path(tmp) / "frames"
        cmd = [sys.executable, "-m", "poserender.cli", "render", args.model, "--source", str(image),
               "--source-keypoints", str(source_kp), "--keypoints", str(data / "poses.npy"), "-o", str(out),
               "--format", "png", "--backend", "ort-cpu"]
        subprocess.run(cmd, check=True, capture_output=True)
        rendered = sorted(out.glob("*.png"))
        if len(rendered) != len(truth_files):
            raise SystemExit(f"rendered {len(rendered)} frames for {len(truth_files)} truth frames")
        source = cv2.imread(str(image))
        empty = np.ascontiguousarray(background(DEMO_SIZE))
        rows = {"model": ([], []), "source_frame": ([], []), "background": ([], [])}
        strip = []
        for i, (r, t) in enumerate(zip(rendered, truth_files)):
            pred, truth = cv2.imread(str(r)), cv2.imread(str(t))
            for name, guess in (("model", pred), ("source_frame", source), ("background", empty)):
                rows[name][0].append(psnr(truth.astype(np.float64), guess.astype(np.float64), 255.0))
                rows[name][1].append(ssim(truth, guess))
            if args.sheet and i % 25 == 0:
                strip.append(np.concatenate([truth, pred], 0))
        if args.sheet and strip:
            cv2.imwrite(args.sheet, np.concatenate(strip, 1))
    manifest = json.loads((Path(args.model) / "manifest.json").read_text())
    result = {
        "command": env["command_line"], "environment": env,
        "held_out": {"folder": str(data) if args.data else "generated: poserender demo-data --frames 250 --seed 1",
                     "seed": info["seed"], "frames": len(truth_files),
                     "note": "generated with a seed not used in training (configs/demo.yaml trains on seed 0)"},
        "model": {**model_identity(Path(args.model)), "training": manifest.get("demo_training"),
                  "canvas": manifest.get("canvas")},
        "source": "the puppet at rest (as `poserender demo`)",
        "metrics": {name: {"psnr_db": summary(p), "ssim": summary(s)} for name, (p, s) in rows.items()},
    }
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    for name, m in result["metrics"].items():
        print(f"{name:13s} PSNR mean {m['psnr_db']['mean']:6.2f} dB (p10 {m['psnr_db']['p10']:6.2f})  "
              f"SSIM mean {m['ssim']['mean']:.4f}")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
