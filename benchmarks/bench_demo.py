"""Frame rate of `poserender demo` end to end (the shipped trained model, 256 x 256, the shipped
250-frame clip, ONNX Runtime on the CPU, mp4 + contact sheet written) -> benchmarks/results/demo_cpu.json

    python benchmarks/bench_demo.py [--runs 5]

Each run is a fresh `poserender demo` process. Reported per run: the pipeline's fps (frames /
time from the first frame read to the last written, the number `demo` prints), its setup time
(loading the ONNX sessions, the source stage), and the wall time of the whole process (Python
start and imports included) as frames / wall seconds. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from poserender.bench.environment import environment, model_identity
    from poserender.demo import MODEL_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results" / "demo_cpu.json"))
    args = ap.parse_args(argv)
    env = environment(["python", "benchmarks/bench_demo.py", *(sys.argv[1:] if argv is None else argv)],
                      os.cpu_count() or 1)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            metrics = Path(tmp) / f"m{i}.json"
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "poserender.cli", "demo", "-o", f"{tmp}/demo.mp4",
                                   "--sheet", f"{tmp}/demo.png", "--backend", "ort-cpu", "--metrics", str(metrics)],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
            if proc.returncode:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            m = json.loads(metrics.read_text())
            frames = m["frames"]["out"]
            runs.append({"fps": round(m["fps"], 2), "setup_s": round(m.get("setup_seconds", 0.0), 3),
                         "frames": frames, "wall_s": round(wall, 2), "wall_fps": round(frames / wall, 2),
                         "backend": m.get("backend"), "canvas": m.get("canvas"), "batch": m.get("batch")})
            print(f"run {i + 1}: {runs[-1]}")
    env["load_average_end"] = list(os.getloadavg())
    result = {
        "command": env["command_line"],
        "what": "poserender demo end to end: shipped trained model, shipped clip, mp4 + contact sheet",
        "environment": env, "model": model_identity(MODEL_DIR),
        "runs": runs,
        "median_fps": sorted(r["fps"] for r in runs)[len(runs) // 2],
        "median_wall_fps": sorted(r["wall_fps"] for r in runs)[len(runs) // 2],
        "target_fps": 25.0,
    }
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"median {result['median_fps']} fps (pipeline), {result['median_wall_fps']} fps (whole process) "
          f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
