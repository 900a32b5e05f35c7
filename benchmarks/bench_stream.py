"""Streaming runtime on CPU: memory over a long stream, and pipelined vs sequential fps in one run.

Two measurements on one exported model (default: the demo model, slim width-8 Pose2Img at
256 x 256, built into the poserender cache on first use, as by `poserender demo`; or --model DIR):

1. **Memory flatness** (run first, in a fresh process). A synthetic stream of --frames poses
   (default 10,000; a procedural gesture, generated on the fly, never held in memory) goes
   through the pipeline into an mp4 (H.264, in a temporary folder). A sampler thread records the
   process RSS every 0.25 s against frames written, while frames stream (setup included,
   teardown not). Reported: RSS at 10 % of the frames and at the end, the maximum, and the
   slope of a line fitted to the last 80 % of samples (MiB per 1,000 frames); the curve is
   plotted.
2. **Pipelined vs sequential.** The same --compare-frames poses (an .npy) rendered to mp4 by
   the old sequential loop (benchmarks/sequential_loop.py render_sequence: batch -> frame stage -> encode, one
   after another) and by the pipeline (same batch, same engines, same sink), alternating
   A B A B ... for --repeats rounds; fps = frames / wall time after setup (session creation and
   the source stage excluded from both). Reported: median fps of each and their ratio.
   A third cell runs the pipeline with two CPU frame workers (--devices cpu,cpu --replicate),
   each ONNX Runtime session capped to half the cores (--no-replicate leaves it out).

Results: benchmarks/results/<name>.json (the command, commit, machine, settings, numbers) and
<name>.png (the RSS curve). Run from the repository root:

    python benchmarks/bench_stream.py                      # the full measurement (~15-60 min on 2 cores)
    python benchmarks/bench_stream.py --quick              # smoke run: 300 frames, numbers mean little
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def model_and_inputs(model: str | None):
    from poserender.commands.common import cache_root
    from poserender.demo import demo_model, write_demo_inputs

    work = cache_root() / "demo"          # the same cache as `poserender demo`
    model_dir = Path(model) if model else demo_model(work, lambda m: print(m, file=sys.stderr))
    image, source_kp, _ = write_demo_inputs(work / "inputs", 1, 0)
    return model_dir, image, source_kp


def gesture_stream(n: int, height: int, width: int, chunk: int = 500):
    """n poses, generated chunk by chunk (a 10,000-frame stream is never in memory at once)."""
    from poserender.keypoints.template import gesture_sequence

    cycle = gesture_sequence(chunk, height, width, seed=1)
    for t in range(n):
        yield cycle[t % chunk]


def engines_for(model_dir, manifest):
    from poserender.engines.select import stage_engines

    def factory(device, threads):
        _, engines = stage_engines(model_dir, manifest, "ort-cpu", device=device, threads=threads)
        return {e.spec.name: e for e in engines}
    return factory


def run_pipeline(model_dir, manifest, image, source_kp, source, out, batch, devices=("cpu",), replicate=False,
                 progress=lambda done, total, fps: None):
    from poserender import families
    from poserender.runtime.pipeline import StreamOptions, StreamPipeline
    from poserender.runtime.sinks import open_sink

    adapter = families.of(manifest).adapter(manifest, {"source": image, "source_keypoints": source_kp})
    options = StreamOptions(batch=batch, fps=25.0, devices=devices, replicate=replicate)
    pipeline = StreamPipeline(adapter, engines_for(model_dir, manifest), source, open_sink(out, fps=25.0), options,
                              progress=progress)
    return pipeline.run()


def memory_run(model_dir, manifest, image, source_kp, frames, batch, tmp) -> dict:
    from poserender.runtime.metrics import current_rss_mb
    from poserender.runtime.sources import ArraySource

    h, w = manifest["canvas"]
    done = {"frames": 0}
    samples, stop = [], threading.Event()

    def sampler():
        started = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - started, done["frames"], current_rss_mb()))
            stop.wait(0.25)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    source = ArraySource(gesture_stream(frames, h, w), 25.0, length=frames, description="synthetic gesture")
    report = run_pipeline(model_dir, manifest, image, source_kp, source, tmp / "memory.mp4", batch,
                          progress=lambda n, total, fps: done.__setitem__("frames", n))
    stop.set()
    thread.join()
    # while streaming only: the workers free their sessions once the last frame is through
    samples = [s for s in samples if s[1] < report.counts.frames_out]
    frames_axis = np.array([s[1] for s in samples], float)
    rss = np.array([s[2] for s in samples], float)
    tail = frames_axis >= 0.2 * frames
    slope = float(np.polyfit(frames_axis[tail], rss[tail], 1)[0] * 1000) if tail.sum() >= 3 else None
    at_10 = float(rss[np.searchsorted(frames_axis, 0.1 * frames).clip(0, len(rss) - 1)])
    return {"frames": report.counts.frames_out, "fps": round(report.fps, 2), "seconds": round(report.seconds, 1),
            "rss_mb_at_10pct": at_10, "rss_mb_end": float(rss[-1]), "rss_mb_max": float(rss.max()),
            "slope_mb_per_1000_frames_last_80pct": None if slope is None else round(slope, 3),
            "samples": [[round(t, 2), int(f), r] for t, f, r in samples], "stages": report.metrics.to_dict()}


def sequential_fps(model_dir, manifest, image, source_kp, poses_path, out, batch) -> float:
    from poserender.config import Pose2ImgConfig
    from poserender.engines.select import stage_engines
    from sequential_loop import render_sequence

    _, engines = stage_engines(model_dir, manifest, "ort-cpu")
    stats, _ = render_sequence(engines, Pose2ImgConfig.from_dict(manifest["config"]), image, source_kp, poses_path,
                               out, fps=25.0, batch=batch)
    return stats.frames_out / (stats.seconds - stats.source_seconds)


def compare_run(model_dir, manifest, image, source_kp, frames, batch, repeats, replicate_too, tmp) -> dict:
    from poserender.families.pose2img import Pose2ImgAdapter  # noqa: F401  (import cost outside the timing)
    from poserender.runtime.sources import ArraySource

    h, w = manifest["canvas"]
    poses = np.stack(list(gesture_stream(frames, h, w)))
    poses_path = tmp / "poses.npy"
    np.save(poses_path, poses)
    cells = {"sequential": [], "pipelined": []} | ({"pipelined_replicate_2": []} if replicate_too else {})
    for round_ in range(repeats):
        cells["sequential"].append(sequential_fps(model_dir, manifest, image, source_kp, poses_path,
                                                  tmp / f"seq{round_}.mp4", batch))
        report = run_pipeline(model_dir, manifest, image, source_kp, ArraySource(poses, 25.0, length=frames),
                              tmp / f"pipe{round_}.mp4", batch)
        cells["pipelined"].append(report.fps)
        if replicate_too:
            report = run_pipeline(model_dir, manifest, image, source_kp, ArraySource(poses, 25.0, length=frames),
                                  tmp / f"rep{round_}.mp4", batch, devices=("cpu", "cpu"), replicate=True)
            cells["pipelined_replicate_2"].append(report.fps)
        print(f"round {round_ + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f} fps" for k, v in cells.items()),
              file=sys.stderr)
    result = {k: {"fps_runs": [round(x, 3) for x in v], "fps_median": round(statistics.median(v), 3)}
              for k, v in cells.items()}
    base = result["sequential"]["fps_median"]
    result["ratio_pipelined_vs_sequential"] = round(result["pipelined"]["fps_median"] / base, 3)
    if replicate_too:
        result["ratio_replicate_2_vs_sequential"] = round(result["pipelined_replicate_2"]["fps_median"] / base, 3)
    return result


def plot(memory: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [s[1] for s in memory["samples"]]
    rss = [s[2] for s in memory["samples"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(frames, rss, lw=1.2)
    ax.set_xlabel("frames written")
    ax.set_ylabel("process RSS (MiB)")
    ax.set_ylim(0, max(rss) * 1.15)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="exported model folder (default: the demo model, built on first use)")
    parser.add_argument("--frames", type=int, default=10_000, help="length of the memory-flatness stream")
    parser.add_argument("--compare-frames", type=int, default=300, help="frames per fps-comparison run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of the fps comparison")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-replicate", dest="replicate_too", action="store_false",
                        help="leave out the --devices cpu,cpu --replicate cell")
    parser.add_argument("--name", default="stream_cpu", help="result file stem in benchmarks/results/")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300-frame stream, 40-frame comparison, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.compare_frames, args.repeats = 300, 40, 1
        args.name = args.name if args.name != "stream_cpu" else "stream_cpu_quick"
    if os.getloadavg()[0] > 0.5:
        print(f"warning: 1-minute load average {os.getloadavg()[0]:.2f}; results will be noisy", file=sys.stderr)

    from poserender.bench.environment import environment, model_identity
    from poserender.manifest import read_manifest

    env = environment(["python", "benchmarks/bench_stream.py", *(sys.argv[1:] if argv is None else argv)],
                      os.cpu_count() or 1)
    model_dir, image, source_kp = model_and_inputs(args.model)
    manifest = read_manifest(model_dir)
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        tmp = Path(tmp)
        # memory first, in a process that has run nothing else yet
        print(f"memory: {args.frames}-frame synthetic stream", file=sys.stderr)
        memory = memory_run(model_dir, manifest, image, source_kp, args.frames, args.batch, tmp)
        print(f"fps comparison: {args.compare_frames} frames x {args.repeats} rounds", file=sys.stderr)
        compare = compare_run(model_dir, manifest, image, source_kp, args.compare_frames, args.batch, args.repeats,
                              args.replicate_too, tmp)
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"{args.name}.png"   # the RSS curve
    h, w = manifest["canvas"]
    plot(memory, png, f"poserender stream, {Path(model_dir).name} {h}x{w}, batch {args.batch}, "
                      f"{memory['frames']} frames, mp4 sink; slope {memory['slope_mb_per_1000_frames_last_80pct']} "
                      "MiB/1000 frames")
    env["load_average_end"] = list(os.getloadavg())
    result = {"benchmark": "stream_cpu", "command": env["command_line"], "environment": env,
              "model": model_identity(Path(model_dir)),
              "settings": {"model": str(model_dir), "canvas": [h, w], "batch": args.batch, "backend": "ort-cpu",
                           "sink": "mp4 libx264 crf 18", "frames": args.frames,
                           "compare_frames": args.compare_frames, "repeats": args.repeats, "quick": args.quick},
              "compare": compare, "memory": memory, "plot": str(png.relative_to(REPO_ROOT))}
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pipelined {compare['pipelined']['fps_median']:.2f} fps vs sequential "
          f"{compare['sequential']['fps_median']:.2f} fps: {compare['ratio_pipelined_vs_sequential']:.2f}x")
    print(f"memory over {memory['frames']} frames: RSS {memory['rss_mb_at_10pct']:.0f} MiB at 10 % -> "
          f"{memory['rss_mb_end']:.0f} MiB at the end (max {memory['rss_mb_max']:.0f}), slope "
          f"{memory['slope_mb_per_1000_frames_last_80pct']} MiB per 1000 frames")
    print(f"wrote {out.relative_to(REPO_ROOT)} and {png.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
