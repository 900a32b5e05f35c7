"""INT8 vs FP32 on the CPU: Pose2Img frame stage at 256 x 256 with the full-size nets.

A thin wrapper around two commands. It writes the random-weight full-size checkpoint once
(``make_random_checkpoint.py``, into benchmarks/work/), then runs

    poserender export CKPT -o benchmarks/work/int8_w64_256 --precision int8
        --calibrate varying_tmplt.npz --source OLIVER.jpg --source-keypoints OLIVER.npy
        --calibration-method auto
    poserender bench benchmarks/work/int8_w64_256 --backend ort-cpu --precision fp32,int8
        --batch 1,4 --stage frame --frames 64 [--source/--source-keypoints/--keypoints Oliver data]
        --json/--csv/--plot benchmarks/results/cpu_int8_256.{json,csv,png}

and adds the export command and the manifest's INT8 record (calibration, excluded-node counts,
gate numbers on held-out frames) to the JSON. The bench puts each INT8 row beside the FP32 row
of the same batch: speed-up, and PSNR/SSIM/max error of the frames both rendered in that run.
The export is reused when benchmarks/work already holds a current one (same checkpoint).

Needs ../shared/data/oliver (real poses and source frame: calibration never uses random
tensors). Extra arguments go to `poserender bench` (e.g. --min-seconds 20).
--calibration-method M: minmax, entropy, percentile or auto (default; about 5 minutes on 2
cores). --quick: width 8 at 64 x 64, 0.5 s per cell, results to cpu_int8_quick.*, numbers that
mean nothing. --results-dir DIR: write the results elsewhere (e.g. a smoke run on a busy machine).

    python benchmarks/bench_int8.py
    python benchmarks/bench_int8.py --quick
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu_pose2img import OLIVER, OLIVER_STEM, REPO_ROOT, RESULTS, asked_for_help  # noqa: E402  (same data, same results folder)
from make_random_checkpoint import write_checkpoint  # noqa: E402

WORK = REPO_ROOT / "benchmarks" / "work"


def _option(argv: List[str], name: str, default: Optional[str]) -> Tuple[Optional[str], List[str]]:
    """Take ``--name VALUE`` out of ``argv``."""
    if name not in argv:
        return default, argv
    i = argv.index(name)
    if i + 1 >= len(argv):
        raise SystemExit(f"{name} needs a value")
    return argv[i + 1], argv[:i] + argv[i + 2:]


def commands(quick: bool, method: str, results: Path, extra: Sequence[str]) -> Tuple[List[str], List[str], Path]:
    """(export args, bench args, JSON path)."""
    if not (OLIVER / "varying_tmplt.npz").is_file():
        raise SystemExit(f"{OLIVER} not found: the INT8 benchmark calibrates on the real Oliver poses")
    width, scale, name = (8, 10.0, "cpu_int8_quick") if quick else (64, 2.5, "cpu_int8_256")
    checkpoint = WORK / f"pose2img_w{width}_seed0_scale{scale:g}.pth"
    if not checkpoint.is_file():
        print(f"writing the random-weight checkpoint {checkpoint}", file=sys.stderr)
        write_checkpoint(checkpoint, width=width, seed=0, scale=scale)
    model = WORK / f"int8_w{width}_{int(round(640 / scale))}"
    oliver = ["--source", str(OLIVER / f"{OLIVER_STEM}.jpg"), "--source-keypoints", str(OLIVER / f"{OLIVER_STEM}.npy")]
    export = ["export", str(checkpoint), "-o", str(model), "--precision", "int8", "--calibrate",
              str(OLIVER / "varying_tmplt.npz"), *oliver, "--calibration-method", method]
    bench = ["bench", str(model), "--backend", "ort-cpu", "--precision", "fp32,int8", "--batch", "1,4",
             "--stage", "frame", "--frames", "64", *oliver, "--keypoints", str(OLIVER / "varying_tmplt.npz")]
    if quick:
        export += ["--frames", "8", "--gate-frames", "4"]
        bench += ["--min-seconds", "0.5", "--min-runs", "3", "--peak-seconds", "0.5"]
    bench += ["--json", str(results / f"{name}.json"), "--csv", str(results / f"{name}.csv"),
              "--plot", str(results / f"{name}.png")]
    return export, bench + list(extra), results / f"{name}.json"


def _run(cli, args: List[str]) -> None:
    sys.argv = ["poserender", *args]   # what the result file records as the command line
    print("+ poserender " + shlex.join(args), file=sys.stderr)
    cli.main(args, prog_name="poserender", standalone_mode=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from poserender.cli import main as cli
    from poserender.manifest import read_manifest

    argv = list(sys.argv[1:] if argv is None else argv)
    if asked_for_help(argv, __doc__):
        return 0
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    method, argv = _option(argv, "--calibration-method", "auto")
    results, argv = _option(argv, "--results-dir", str(RESULTS))
    export, bench, json_path = commands(quick, method, Path(results), argv)
    _run(cli, export)
    _run(cli, bench)
    result = json.loads(json_path.read_text())
    int8 = read_manifest(Path(export[export.index("-o") + 1]))["int8"]
    stages = [{k: v for k, v in s.items() if k != "excluded_nodes"} for s in int8["stages"]]
    result["int8_export"] = {"command_line": "poserender " + shlex.join(export),
                             "manifest_int8": {**int8, "stages": stages}}
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path} (+ the INT8 export record)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
