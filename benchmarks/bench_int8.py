"""INT8 vs FP32 on the CPU: Pose2Img frame stage at 256 x 256 with the full-size nets.

A thin wrapper around two commands. It writes the random-weight full-size checkpoint once
(``make_random_checkpoint.py``, into benchmarks/work/), then runs

    poserender export CKPT -o benchmarks/work/int8_w64_256 --precision int8
        --calibrate varying_tmplt.npz --source OLIVER.jpg --source-keypoints OLIVER.npy
        --calibration-method auto
    poserender bench benchmarks/work/int8_w64_256 --backend ort-cpu --precision fp32,int8
        --batch 1,4 --stage frame,stream --baseline reference --frames 64
        [--source/--source-keypoints/--keypoints Oliver data]
        --json/--csv/--plot benchmarks/results/cpu_int8_256.{json,csv,png}

and adds the export command and the manifest's INT8 record (calibration, excluded-node counts,
gate numbers on held-out frames) to the JSON. The bench puts each INT8 row beside the FP32 row
of the same batch and stage: speed-up, and PSNR/SSIM/max error of the frames both rendered in
that run; every row also has its speed-up over the reference baseline of the same run (the
authors' full forward per frame, from the checkpoint the export recorded), so the frame stage,
the whole stream (keypoints file -> pipeline -> H.264 mp4) and both precisions compare within
one run.
The export is reused when benchmarks/work already holds a current one (same checkpoint).

Needs ../shared/data/oliver (real poses and source frame: calibration never uses random
tensors). Extra arguments go to `poserender bench` (e.g. --min-seconds 20).
--calibration-method M: minmax, entropy, percentile or auto (default; about 5 minutes on 2
cores). --quick: width 8 at 64 x 64, 0.5 s per cell, results to cpu_int8_quick.*, numbers that
mean nothing. --results-dir DIR: write the results elsewhere (e.g. a smoke run on a busy machine).

--target trt: the TensorRT-ready graph instead. The export runs with ``--int8-target both``
(one calibration, both graphs) into benchmarks/work/int8trt_w64_256, then the frame stage's
FP32, ORT-target (``frame.int8.onnx``, uint8 activations) and TensorRT-target
(``frame.int8.trt.onnx``, symmetric int8 Q/DQ) graphs are timed on ONNX Runtime CPU at batch 1
and 4, round robin on the same real feeds (the export's held-out gate frames), with PSNR/SSIM vs
the FP32 frames, to benchmarks/results/cpu_int8_trt_target_256.json (--quick:
cpu_int8_trt_target_quick.json). ``poserender bench --precision int8`` keeps timing the ORT
graph; this is the only place the TensorRT-target graph is timed on the CPU (a stand-in: its
speed on ORT CPU says nothing about TensorRT's). --min-seconds S (default 10) per graph and batch.

    python benchmarks/bench_int8.py
    python benchmarks/bench_int8.py --quick
    python benchmarks/bench_int8.py --target trt --calibration-method minmax
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
             "--stage", "frame,stream", "--baseline", "reference", "--frames", "64", *oliver,
             "--keypoints", str(OLIVER / "varying_tmplt.npz")]
    if quick:
        export += ["--frames", "8", "--gate-frames", "4"]
        bench += ["--min-seconds", "0.5", "--min-runs", "3", "--peak-seconds", "0.5"]
    bench += ["--json", str(results / f"{name}.json"), "--csv", str(results / f"{name}.csv"),
              "--plot", str(results / f"{name}.png")]
    return export, bench + list(extra), results / f"{name}.json"


def trt_target_export(quick: bool, method: str, results: Path) -> Tuple[List[str], Path, Path]:
    """(export args with --int8-target both, model folder, JSON path) for --target trt."""
    export, _, _ = commands(quick, method, results, [])
    width, size = (8, 64) if quick else (64, 256)
    model = WORK / f"int8trt_w{width}_{size}"
    export[export.index("-o") + 1] = str(model)
    return export + ["--int8-target", "both"], model, \
        results / f"cpu_int8_trt_target_{'quick' if quick else size}.json"


def compare_targets(model: Path, batches: Sequence[int], min_seconds: float, min_runs: int) -> dict:
    """Time the frame stage's FP32, ORT-target and TensorRT-target graphs on ONNX Runtime CPU
    (default threads), round robin per batch on the export's gate frames; quality vs FP32."""
    import time

    import numpy as np

    from poserender import families
    from poserender.bench import summarise
    from poserender.export.calibration import calibration_data, stage_feeds
    from poserender.export.quality import frame_quality
    from poserender.export.quantize import _session
    from poserender.manifest import INT8_KEY, INT8_TRT_KEY, read_manifest

    manifest = read_manifest(model)
    stages = {s["name"]: s for s in manifest["stages"]}
    entries = {"ort_target": manifest[INT8_KEY], "trt_target": manifest[INT8_TRT_KEY]}
    inputs = entries["ort_target"]["calibration"]["inputs"]
    data = calibration_data(families.get("pose2img"), manifest, Path(inputs["keypoints"]),
                            {"source": Path(inputs["source_image"]), "source_keypoints": Path(inputs["source_keypoints"])})
    make_feed = stage_feeds(model, manifest, data, "frame")
    gate = entries["trt_target"]["quality"]["frame_indices"]
    graphs = {"fp32": stages["frame"]["file"], "ort_target": entries["ort_target"]["stages"][0]["file"],
              "trt_target": entries["trt_target"]["stages"][0]["file"]}
    sessions = {name: _session(model / file) for name, file in graphs.items()}
    cells, quality = [], {}
    for batch in batches:
        feeds = [make_feed(gate[i:i + batch]) for i in range(0, len(gate) - batch + 1, batch)]
        frames = {name: np.concatenate([s.run(["frames"], f)[0] for f in feeds]) for name, s in sessions.items()}
        if batch == batches[0]:
            quality = {name: frame_quality(frames["fp32"], frames[name]) for name in ("ort_target", "trt_target")}
        times = {name: [] for name in sessions}
        for s in sessions.values():                     # warm-up
            s.run(["frames"], feeds[0])
        k = 0
        while min(sum(t) for t in times.values()) < min_seconds or min(len(t) for t in times.values()) < min_runs:
            feed = feeds[k % len(feeds)]
            for name, s in sessions.items():            # round robin: load changes hit all three alike
                t0 = time.perf_counter()
                s.run(["frames"], feed)
                times[name].append(time.perf_counter() - t0)
            k += 1
        stats = {name: summarise(t, batch) for name, t in times.items()}
        for name in sessions:
            cell = {"graph": name, "file": graphs[name], "batch": batch, **stats[name]}
            if name != "fp32":
                cell["speedup_vs_fp32"] = round(stats[name]["fps"] / stats["fp32"]["fps"], 3)
            if name == "trt_target":
                cell["speed_vs_ort_target"] = round(stats[name]["fps"] / stats["ort_target"]["fps"], 3)
            cells.append(cell)
            print(f"batch {batch} {name:10s} {stats[name]['fps']:8.2f} fps  median "
                  f"{stats[name]['latency_ms']['p50']:.1f} ms  ({stats[name]['runs']} runs)", file=sys.stderr)
    return {"frame_stage_on_ort_cpu": cells,
            "quality_vs_fp32_gate_frames": {"frame_indices": gate, **quality},
            "export_gate_quality": {name: e["quality"] for name, e in entries.items()},
            "calibration": {name: {k: e["calibration"][k] for k in ("method", "requested", "frames", "tried")}
                            for name, e in entries.items()},
            "excluded_counts": {name: e["stages"][0]["excluded_counts"] for name, e in entries.items()},
            "trt_qdq_check": entries["trt_target"]["qdq_check"],
            "graph_settings": {name: {k: e.get(k) for k in ("activations", "weights", "bias", "quantize_options")}
                               for name, e in entries.items()}}


def main_trt_target(quick: bool, method: str, results: Path, argv: List[str]) -> int:
    import os
    import platform
    import time

    from poserender.bench import environment
    from poserender.cli import main as cli

    min_seconds, argv = _option(argv, "--min-seconds", "0.5" if quick else "10")
    if argv:
        raise SystemExit(f"--target trt takes --calibration-method, --min-seconds, --quick, --results-dir; not {argv}")
    export, model, json_path = trt_target_export(quick, method, results)
    command = [sys.executable, "benchmarks/bench_int8.py", "--target", "trt", "--calibration-method", method,
               "--min-seconds", min_seconds] + (["--quick"] if quick else [])
    env = environment(command, os.cpu_count() or 1)
    t0 = time.perf_counter()
    _run(cli, export)
    export_s = round(time.perf_counter() - t0, 1)
    result = {"benchmark": "INT8 frame stage: TensorRT-target (symmetric int8 Q/DQ) vs ORT-target (uint8 "
                           "activations) graph, both on ONNX Runtime CPU",
              "command": " ".join(shlex.quote(c) for c in command),
              "export_command_line": "poserender " + shlex.join(export), "export_seconds": export_s,
              "environment": env, "machine_note": f"{platform.node()}: 2 cores shared with other engineers; "
                                                  "one run, default ONNX Runtime threads",
              **compare_targets(model, [1, 4], float(min_seconds), 3 if quick else 10)}
    result["environment"]["load_average_end"] = list(os.getloadavg())
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path}", file=sys.stderr)
    return 0


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
    target, argv = _option(argv, "--target", "ort")
    if target not in ("ort", "trt"):
        raise SystemExit(f"--target {target}; expected ort or trt")
    if target == "trt":
        return main_trt_target(quick, method, Path(results), argv)
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
