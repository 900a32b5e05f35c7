"""Put a trained demo checkpoint into the package: poserender/demo/model/ + poserender/demo/clip.npy.

    python tools/ship_demo.py runs/demo/ckpt_final.pth --train-log runs/demo/metrics.jsonl

Exports the checkpoint (verified against torch with ONNX Runtime, as `poserender export` does),
records where it came from in the manifest (repository-relative checkpoint path, the training
config, steps and time from metrics.jsonl), writes a generated gesture clip, and checks that the
package data stays within the 25 MB budget. Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poserender.demo import CLIP_PATH, DEMO_SIZE, MODEL_DIR  # noqa: E402
from poserender.demo.gestures import gesture_sequence, pose122_to_openpose  # noqa: E402
from poserender import families  # noqa: E402
from poserender.export.exporter import export_checkpoint  # noqa: E402

BUDGET_MB = 25.0
CLIP_FRAMES, CLIP_SEED = 250, 7


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--train-log", help="metrics.jsonl of the run (steps, it/s) for the manifest")
    ap.add_argument("--note", default="", help="free text for the manifest (hardware, wall time)")
    args = ap.parse_args()
    tmp = MODEL_DIR.with_name("model.new")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = export_checkpoint(families.get("pose2img"), args.checkpoint, tmp, {}, log=print)
    ckpt = Path(args.checkpoint).resolve()
    try:
        manifest["checkpoint"]["path"] = str(ckpt.relative_to(Path.cwd()))
    except ValueError:
        manifest["checkpoint"]["path"] = ckpt.name
    training = {"config": "configs/demo.yaml", "note": args.note}
    if args.train_log:
        rows = [json.loads(line) for line in Path(args.train_log).read_text().splitlines() if line.strip()]
        train_rows = [r for r in rows if r.get("split") == "train"]
        if train_rows:
            training["steps"] = train_rows[-1]["step"]
            training["final_l1"] = train_rows[-1].get("l1")
    manifest["demo_training"] = training
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    tmp.rename(MODEL_DIR)
    clip = np.stack([pose122_to_openpose(p) for p in gesture_sequence(CLIP_FRAMES, DEMO_SIZE, CLIP_SEED)])
    np.save(CLIP_PATH, clip.astype(np.float32))
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir()) + CLIP_PATH.stat().st_size
    print(f"shipped {MODEL_DIR} and {CLIP_PATH}: {total / 1e6:.1f} MB (budget {BUDGET_MB:g} MB)")
    return 0 if total <= BUDGET_MB * 1e6 else 1


if __name__ == "__main__":
    sys.exit(main())
