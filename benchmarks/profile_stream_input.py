"""What checking live input costs on a clean stream -> benchmarks/results/stream_input_cost.json

    python benchmarks/profile_stream_input.py [--frames 500]

Two measurements, one process:

1. per record, in microseconds (median of 5 rounds over the shipped demo clip's OpenPose records,
   137 points each): the JSON decode + record parse + value check (`live.parse_record`), and
   the value check alone (`keypoints.validate.frame_problem`);
2. a whole clean stream: the shipped demo model (256 x 256) rendering the clip as JSON lines on a
   stdin-like stream into an mp4, through `render_stream`, with the value check, the record parse
   and the bad-frame/gap policy wrapped in timers; reported: their summed time as a share of the
   stream's time.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def records(frames: int) -> list:
    from poserender.demo import CLIP_PATH

    clip = np.load(CLIP_PATH)                                  # (T, 3, 137) OpenPose x/y/confidence
    return [json.dumps({"frame": t, "keypoints": clip[t % len(clip)].T.tolist()}) for t in range(frames)]


def per_record_us(lines: list) -> dict:
    from poserender.keypoints.validate import frame_problem
    from poserender.runtime.live import parse_record

    frames = [parse_record(line, 0, 0.0) for line in lines]
    xy = [(f.xy, np.ones(len(f.xy))) for f in frames]
    parse, check = [], []
    for _ in range(5):
        t = time.perf_counter()
        for line in lines:
            parse_record(line, 0, 0.0)
        parse.append((time.perf_counter() - t) / len(lines) * 1e6)
        t = time.perf_counter()
        for points, confidence in xy:
            frame_problem(points, confidence)
        check.append((time.perf_counter() - t) / len(lines) * 1e6)
    return {"parse_record_us": round(statistics.median(parse), 2), "frame_problem_us": round(statistics.median(check), 2)}


def timed_stream(lines: list) -> dict:
    """Render the lines through the real pipeline with the input steps wrapped in timers (they run on
    the reader and batcher threads, beside the model stage; a wrapper sees every call)."""
    from poserender.demo import puppet_inputs, shipped_model
    from poserender.runtime import live, policy, sources
    from poserender import families
    from poserender.manifest import read_manifest
    from poserender.runtime.report import StreamOptions
    from poserender.runtime.stream import RenderRequest, render_stream

    spent = {"value check (keypoints.validate.frame_problem)": 0.0,
             "record parse incl. JSON decode and value check (live.parse_record)": 0.0,
             "bad-frame and gap policy (policy.BadFramePolicy.feed)": 0.0}
    keys = list(spent)

    def timing(fn, key, generator=False):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return list(fn(*args, **kwargs)) if generator else fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t
        return wrapper

    originals = (sources.frame_problem, live.parse_record, policy.BadFramePolicy.feed)
    sources.frame_problem = timing(sources.frame_problem, keys[0])
    live.parse_record = timing(live.parse_record, keys[1])
    policy.BadFramePolicy.feed = timing(policy.BadFramePolicy.feed, keys[2], generator=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image, source_kp, _ = puppet_inputs(Path(tmp) / "inputs")
            stdin = io.BytesIO(("\n".join(lines) + "\n").encode())
            manifest = read_manifest(shipped_model())
            adapter = families.of(manifest).adapter(manifest, {"source": image, "source_keypoints": source_kp})
            request = RenderRequest(keypoints="-", output=str(Path(tmp) / "o.mp4"), backend="ort-cpu",
                                    stream=StreamOptions(fps=25.0))
            result = render_stream(manifest, adapter, request, stdin=stdin)
    finally:
        sources.frame_problem, live.parse_record, policy.BadFramePolicy.feed = originals
    report = result.report
    return {"frames_out": report.counts.frames_out, "fps": round(report.fps, 2), "stream_s": round(report.seconds, 3),
            "seconds": {k: round(v, 4) for k, v in spent.items()},
            "share_of_stream_percent": {k: round(100 * v / report.seconds, 3) for k, v in spent.items()},
            "note": "the record parse includes the value check; both run on the reader thread, the policy on the "
                    "batcher thread, while the model stage runs on its own"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results" / "stream_input_cost.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from poserender.bench.environment import environment

    env = environment(["python", "benchmarks/profile_stream_input.py", *sys.argv[1:]], os.cpu_count() or 1)
    lines = records(args.frames)
    result = {"command": env["command_line"], "environment": env, "frames": args.frames,
              "per_record": per_record_us(lines)}
    result["stream"] = timed_stream(lines)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
