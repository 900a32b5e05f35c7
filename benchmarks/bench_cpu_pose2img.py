"""The committed CPU result: Pose2Img at 256 x 256 with the full-size nets, `poserender bench`.

A thin wrapper: it writes the random-weight full-size checkpoint once
(``make_random_checkpoint.py``, into benchmarks/work/), then runs

    poserender bench CKPT --backend torch,ort-cpu --batch 1,4,8 --stage frame,stream
        --baseline reference --frames 64 [--source/--source-keypoints/--keypoints Oliver data]
        --json/--csv/--plot benchmarks/results/cpu_pose2img_256.{json,csv,png}

All measuring code is poserender.bench; extra arguments are passed on to `poserender bench`
(e.g. --min-seconds 20). --quick: a smoke run (width 8 at 64 x 64, 0.5 s per cell, results
to benchmarks/results/cpu_pose2img_quick.*), whose numbers mean nothing.

    python benchmarks/bench_cpu_pose2img.py
    python benchmarks/bench_cpu_pose2img.py --quick
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_random_checkpoint import write_checkpoint  # noqa: E402

OLIVER = REPO_ROOT.parent / "shared" / "data" / "oliver"
OLIVER_STEM = "Auto_Lending_-_Last_Week_Tonight_with_John_Oliver_HBO-4U2eDJnwz_s_58_000_0_00_05.405405"
RESULTS = REPO_ROOT / "benchmarks" / "results"


def asked_for_help(argv: Sequence[str], doc: str) -> bool:
    """-h/--help prints the script's doc: a benchmark script never starts a long run by accident."""
    if "-h" in argv or "--help" in argv:
        print(doc)
        return True
    return False


def bench_args(quick: bool, extra: Sequence[str]) -> List[str]:
    width, scale, name = (8, 10.0, "cpu_pose2img_quick") if quick else (64, 2.5, "cpu_pose2img_256")
    checkpoint = REPO_ROOT / "benchmarks" / "work" / f"pose2img_w{width}_seed0_scale{scale:g}.pth"
    if not checkpoint.is_file():
        print(f"writing the random-weight checkpoint {checkpoint}", file=sys.stderr)
        write_checkpoint(checkpoint, width=width, seed=0, scale=scale)
    args = ["bench", str(checkpoint), "--backend", "torch,ort-cpu", "--batch", "1,4,8", "--stage", "frame,stream",
            "--baseline", "reference", "--frames", "64"]
    if (OLIVER / "Oliver.yaml").is_file():
        args += ["--source", str(OLIVER / f"{OLIVER_STEM}.jpg"), "--source-keypoints", str(OLIVER / f"{OLIVER_STEM}.npy"),
                 "--keypoints", str(OLIVER / "varying_tmplt.npz")]
    if quick:
        args += ["--min-seconds", "0.5", "--min-runs", "3", "--peak-seconds", "0.5"]
    args += ["--json", str(RESULTS / f"{name}.json"), "--csv", str(RESULTS / f"{name}.csv"),
             "--plot", str(RESULTS / f"{name}.png")]
    return args + list(extra)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from poserender.cli import main as cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if asked_for_help(argv, __doc__):
        return 0
    quick = "--quick" in argv
    args = bench_args(quick, [a for a in argv if a != "--quick"])
    sys.argv = ["poserender", *args]   # what the result file records as the command line
    print("+ poserender " + shlex.join(args), file=sys.stderr)
    return cli.main(args, prog_name="poserender", standalone_mode=False) or 0


if __name__ == "__main__":
    sys.exit(main())
