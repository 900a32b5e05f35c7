"""Load on a real tritonserver: concurrent keypoint streams x frames/s x latency, with the server's
own queue and compute time per model -> benchmarks/results/triton_<device>_<model>.{json,png}

    python benchmarks/bench_triton.py --model demo                 # the shipped demo model, 256 x 256
    python benchmarks/bench_triton.py --model full --frames 8      # full-size nets (random weights), 256 x 256
    python benchmarks/bench_triton.py --model full --backend onnxruntime --devices 0 --server /opt/tritonserver/bin/tritonserver
                                                                   # a GPU machine with NVIDIA's server

The load is poserender's own client (not perf_analyzer): each stream is one identity (its own
source image) sending its keypoint clip in requests of --batch frames through the ensemble, one
request in flight per stream, as `poserender triton-client --concurrency 1` does, minus the
video encoding. One unmeasured request warms the server up; then for each number of streams
(--streams, default 1,2,4,8) all streams start together and send --frames frames each.
Reported per row: frames/s over the phase (all frames received / the time from the first send
to the last reply), request latency p50/p99 (send to reply, one request = --batch frames),
frames lost (sent but not received with the expected shape: must be 0), and from Triton's
statistics extension the queue and compute time per execution of each model in the phase.
Before the server starts, the same requests of one stream run in this process through the
repository's graphs with ONNX Runtime (``triton-client --local``): the in-process baseline of
the same run, so the cost of serving reads as a ratio even on a busy machine.

``--model full`` builds benchmarks/work/pose2img_w64_seed0.pth (make_random_checkpoint.py) and
exports it at 256 x 256 once (needs the export extra: torch, onnx); later runs reuse it.
Numbers depend on what else the machine does: the JSON records the load average at start and end.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def model_folder(name: str) -> Path:
    """demo: the shipped model; full: the full-size random-weight export (made once); else a path."""
    if name == "demo":
        from poserender.demo import shipped_model

        return Path(shipped_model())
    if name != "full":
        return Path(name)
    out = WORK / "pose2img_w64_256"
    if not (out / "manifest.json").is_file():
        sys.path.insert(0, str(REPO / "benchmarks"))
        from make_random_checkpoint import write_checkpoint

        from poserender import families
        from poserender.export.exporter import export_checkpoint

        checkpoint = WORK / "pose2img_w64_seed0.pth"
        if not checkpoint.is_file():
            write_checkpoint(checkpoint, 64, 0, 2.5, None, "legacy", "python benchmarks/make_random_checkpoint.py")
        export_checkpoint(families.get("pose2img"), checkpoint, out, {}, log=lambda m: print(m, file=sys.stderr))
    return out


def stream_inputs(model_dir: Path, model: str, streams: int, folder: Path):
    """Canvas-ready ensemble inputs, read as `poserender bench` reads them: the demo puppet for the
    demo model, the Oliver frame and keypoints from ../shared/data/oliver for others when present,
    else synthetic ones. Returns (per-stream identity inputs, each with its own source image made
    by shifting the picture, the frames' (target_keypoints, target_valid), what was used)."""
    from poserender.bench import load_inputs
    from poserender.demo import puppet_inputs
    from poserender.manifest import read_manifest

    manifest = read_manifest(model_dir)
    oliver = REPO.parent / "shared" / "data" / "oliver"
    if model == "demo":
        files = puppet_inputs(folder, None, None)
    elif (oliver / "varying_tmplt.npz").is_file():
        image = next(oliver.glob("*.jpg"))
        files = (image, image.with_name(image.name[:-len(".jpg")] + ".npy"), oliver / "varying_tmplt.npz")
    else:
        files = (None, None, None)
    source, source_keypoints, keypoints = files
    inputs = load_inputs(manifest, {"source": source, "source_keypoints": source_keypoints}, keypoints)
    identity, targets = inputs.adapter.identity_feed(), inputs.adapter.frame_feed(inputs.frames)
    identities = [{**identity, "source_image": np.ascontiguousarray(np.roll(identity["source_image"], 7 * i, axis=3))}
                  for i in range(streams)]
    return identities, (targets["target_keypoints"], targets["target_valid"]), inputs.described


def server_statistics(client) -> Dict[str, Dict[str, int]]:
    stats = client.get_inference_statistics(model_name="", as_json=True)
    out = {}
    for model in stats.get("model_stats", []):
        s = model["inference_stats"]
        out[model["name"]] = {"executions": int(model.get("execution_count", 0)),
                              "queue_ns": int(s["queue"].get("ns", 0)),
                              "compute_ns": sum(int(s[k].get("ns", 0)) for k in ("compute_input", "compute_infer",
                                                                                 "compute_output"))}
    return out


def statistics_delta(before, after) -> Dict[str, Dict[str, float]]:
    out = {}
    for name, a in after.items():
        b = before.get(name, {"executions": 0, "queue_ns": 0, "compute_ns": 0})
        n = a["executions"] - b["executions"]
        if n:
            out[name] = {"executions": n, "queue_ms": round((a["queue_ns"] - b["queue_ns"]) / n / 1e6, 2),
                         "compute_ms": round((a["compute_ns"] - b["compute_ns"]) / n / 1e6, 2)}
    return out


def run_phase(connect, config, identities, targets, batch: int, frames: int, height: int, width: int,
              warmup: bool, statistics=None) -> Dict[str, Any]:
    """All streams at once, each over its own ``connect()`` transport; per request latency;
    frames received with the right shape. ``warmup``: one unmeasured request first (the
    sessions' first run). ``statistics()``: the server's counters, read around the measured part."""
    from poserender.triton.client import build_request

    streams = len(identities)
    keypoints, valid = targets
    requests = []
    for identity in identities:
        own = []
        for start in range(0, frames, batch):
            index = [(start + k) % len(keypoints) for k in range(min(batch, frames - start))]
            own.append(build_request({**identity, "target_keypoints": keypoints[index],
                                      "target_valid": valid[index]}, config))
        requests.append(own)
    transports = [connect() for _ in range(streams)]
    if warmup:
        transports[0].infer(config.name, requests[0][0], ["frames"])
    latencies: List[float] = []
    received, errors = [0] * streams, []
    barrier = threading.Barrier(streams + 1)
    lock = threading.Lock()
    before = statistics() if statistics else None

    def stream(i: int) -> None:
        barrier.wait()
        for request in requests[i]:
            n = len(request[-1][1])
            started = time.perf_counter()
            try:
                out = transports[i].infer(config.name, request, ["frames"])["frames"]
            except Exception as exc:         # counted as lost frames, reported in the row
                errors.append(str(exc))
                continue
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
            if out.shape == (n, height, width, 3) and out.dtype == np.uint8:
                received[i] += n

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    total = sum(received)
    server = statistics_delta(before, statistics()) if statistics else None
    lat = np.array(latencies) * 1e3
    return {"streams": streams, "frames_per_stream": frames, "batch": batch, "requests": len(latencies),
            "seconds": round(seconds, 2), "fps": round(total / seconds, 2),
            "fps_per_stream": round(total / seconds / streams, 2),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "frames_lost": frames * streams - total, "errors": errors[:3], "server": server}


def plot(rows: List[Dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = [r["streams"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(streams, [r["fps"] for r in rows], "o-", label="all streams")
    left.plot(streams, [r["fps_per_stream"] for r in rows], "s--", label="per stream")
    left.set_xlabel("concurrent streams")
    left.set_ylabel("frames/s")
    left.legend()
    right.plot(streams, [r["latency_ms_p50"] for r in rows], "o-", label="p50")
    right.plot(streams, [r["latency_ms_p99"] for r in rows], "s--", label="p99")
    right.set_xlabel("concurrent streams")
    right.set_ylabel(f"request latency, ms ({rows[0]['batch']} frames)")
    right.legend()
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(streams, [str(s) for s in streams])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cpu_flags() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="demo, full, or an exported pose2img folder")
    ap.add_argument("--streams", default="1,2,4,8", help="numbers of concurrent streams")
    ap.add_argument("--frames", type=int, default=24, help="frames per stream and phase")
    ap.add_argument("--batch", type=int, default=4, help="frames per request")
    ap.add_argument("--backend", default="python", choices=("python", "onnxruntime", "tensorrt"),
                    help="Triton backend of the stage models (`poserender triton --backend`)")
    ap.add_argument("--devices", default="cpu", help="`poserender triton --devices` (cpu, 0, 0,1 ...)")
    ap.add_argument("--threads", type=int, default=0, help="--backend python: ONNX Runtime threads per model")
    ap.add_argument("--server", help="tritonserver to run (default: the nvidia-pytriton wheel's, else PATH)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one reply")
    ap.add_argument("-o", "--output", help="JSON path (default: benchmarks/results/triton_<cpu|gpu>_<model>.json)")
    args = ap.parse_args()

    from poserender.bench import environment
    from poserender.triton.client import GrpcTransport, client_metadata
    from poserender.engines.placement import parse_devices
    from poserender.triton.repository import TritonOptions, generate_repository
    from poserender.triton.server import TritonServer, free_port

    streams = [int(s) for s in args.streams.split(",")]
    model_dir = model_folder(args.model)
    device = "cpu" if args.devices.startswith("cpu") else "gpu"
    label = args.model if args.model in ("demo", "full") else Path(args.model).name
    output = Path(args.output or REPO / "benchmarks" / "results" / f"triton_{device}_{label}.json")
    argv = [sys.executable.rsplit("/", 1)[-1], "benchmarks/bench_triton.py", *sys.argv[1:]]
    env = environment(argv, args.threads)
    env["cpu_flags"] = cpu_flags()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_triton-") as tmp:
        tmp = Path(tmp)
        options = TritonOptions(devices=parse_devices(args.devices), backend=args.backend, threads=args.threads)
        metadata = generate_repository(model_dir, tmp / "repo", options)
        identities, targets, described = stream_inputs(model_dir, args.model, max(streams), tmp)
        height, width = (int(v) for v in metadata["canvas"])
        baseline = None
        if args.backend != "tensorrt":       # the same requests run in this process, one stream, no server
            from poserender.triton.local import LocalTriton

            local = LocalTriton(tmp / "repo")
            local_config = local.get_model_config(metadata["ensemble"])
            baseline = run_phase(lambda: local, local_config, identities[:1], targets, args.batch, args.frames,
                                 height, width, warmup=True)
            print(f"in-process baseline (ONNX Runtime, no server, 1 stream): {baseline['fps']} fps, request p50 "
                  f"{baseline['latency_ms_p50']} ms", flush=True)
        server = TritonServer([tmp / "repo"], http_port=free_port(), grpc_port=free_port(), server=args.server)
        with server:
            transport = GrpcTransport(server.grpc_url)
            config = transport.get_model_config(metadata["ensemble"])
            client_metadata(config)
            import tritonclient.grpc as grpcclient

            stats_client = grpcclient.InferenceServerClient(server.grpc_url)
            for n in streams:
                row = run_phase(lambda: GrpcTransport(server.grpc_url, timeout_s=args.timeout), config, identities[:n],
                                targets, args.batch, args.frames, height, width, warmup=not rows,
                                statistics=lambda: server_statistics(stats_client))
                rows.append(row)
                print(f"{n} streams: {row['fps']} fps ({row['fps_per_stream']} per stream), request p50 "
                      f"{row['latency_ms_p50']} ms p99 {row['latency_ms_p99']} ms, lost {row['frames_lost']}", flush=True)
            source = server.binary.source
    env["load_average_end"] = list(os.getloadavg())
    result = {"schema": "poserender-triton-bench/1", "command": " ".join(shlex.quote(a) for a in argv),
              "environment": env, "server": source,
              "model": {"name": label, "path": str(model_dir), "canvas": [height, width],
                        "manifest_sha256": metadata["export"]["manifest_sha256"]}, "inputs": described,
              "repository": {"backend": args.backend, "devices": args.devices, "threads": args.threads,
                             "models": {s["model"]: s["platform"] for s in metadata["stages"]}},
              "client": "poserender GrpcTransport, one request in flight per stream, no video encoding",
              "baseline_in_process": baseline, "rows": rows}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    title = (f"poserender on tritonserver ({args.backend} backend, {args.devices}), {label} model "
             f"{height}x{width}, {args.batch} frames/request; {env['cpu_model']} x{env['cores']}")
    plot(rows, title, output.with_suffix(".png"))
    print(f"| streams | frames/s (all) | frames/s per stream | p99 request latency (ms, {args.batch} frames) | lost |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['fps']} | {r['fps_per_stream']} | {r['latency_ms_p99']} | {r['frames_lost']} |")
    print(f"wrote {output} and {output.with_suffix('.png')}")
    return 0 if all(r["frames_lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
