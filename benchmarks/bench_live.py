"""Live glass-to-glass latency of the demo model from a stdin stream, per --late policy and per sink
-> benchmarks/results/live_cpu.json and live_cpu.png

    python benchmarks/bench_live.py [--seconds 20] [--fps 25] [--overload-fps 100] [--quick]

Each cell is a fresh `poserender render` process on the shipped demo model (ort-cpu, 256 x 256)
reading JSON lines on stdin: this script sends the demo clip's poses at --fps, each record
stamped with ``"t"`` (time.time() when sent), so a frame's latency runs from the moment its pose
was sent to the moment its frame was written or sent (runtime/latency.py), read from the render's
--metrics. Cells: every --late policy (drop, hold, queue, latest) on every sink (mp4 file, raw
frames on stdout read by this script, udp:// received by a socket here, --serve with one MJPEG
viewer here); then every policy with the renderer too slow for the stream: poses sent (and
ticks) at --overload-fps, a rate the demo model does not sustain on 2 cores, on the udp sink, to
show that `latest` bounds latency where `queue` lets it grow. Goals: p99 <= 120 ms with latest
at 25 fps; no frame lost with queue. Run it on a quiet machine;
--quick (a few seconds a cell) only checks that it works.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("drop", "hold", "queue", "latest")
SINKS = ("mp4", "raw", "udp", "serve")
GOAL_P99_MS = 120.0


def records(clip: np.ndarray, n: int):
    """(index, keypoints 137 x 3) for n frames, the clip looped."""
    for i in range(n):
        pose = clip[i % len(clip)]
        yield i, (pose.T if pose.shape[0] == 3 else pose).tolist()


def drain(stream, done: threading.Event) -> None:
    while not done.is_set():
        if not stream.read1(1 << 16):
            return


def udp_receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    return sock, stop, thread


def mjpeg_viewer(stderr_lines: list, stop: threading.Event) -> None:
    """Waits for the preview's URL in the render's log, then reads its MJPEG stream until stopped."""
    deadline = time.monotonic() + 60
    url = None
    while url is None and time.monotonic() < deadline and not stop.is_set():
        for line in list(stderr_lines):
            found = re.search(r"live preview: (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
        time.sleep(0.05)
    if url is None:
        return
    try:
        with urllib.request.urlopen(url + "stream.mjpg", timeout=10) as response:
            while not stop.is_set() and response.read1(1 << 16):
                pass
    except OSError:
        pass


def run_cell(inputs: Path, sink: str, policy: str, fps: float, seconds: float, clip: np.ndarray, tmp: Path) -> dict:
    metrics = tmp / f"m_{sink}_{policy}_{fps:g}.json"
    extra, udp = [], None
    if sink == "mp4":
        extra = ["-o", str(tmp / "out.mp4")]
    elif sink == "raw":
        extra = ["-o", "-"]
    elif sink == "udp":
        udp = udp_receiver()
        extra = ["-o", f"udp://127.0.0.1:{udp[0].getsockname()[1]}"]
    elif sink == "serve":
        extra = ["--serve", "127.0.0.1:0"]
    command = [sys.executable, "-m", "poserender.cli", "render", str(inputs / "model"),
               "--source", str(inputs / "puppet_source.png"), "--source-keypoints", str(inputs / "puppet_source.npy"),
               "--keypoints", "-", *extra, "--backend", "ort-cpu", "--realtime", "--fps", f"{fps:g}",
               "--late", policy, "--metrics", str(metrics)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done, stderr_lines = threading.Event(), []
    readers = [threading.Thread(target=drain, args=(process.stdout, done), daemon=True),
               threading.Thread(target=lambda: stderr_lines.extend(iter(
                   lambda: process.stderr.readline().decode(errors="replace"), "")), daemon=True)]
    if sink == "serve":
        readers.append(threading.Thread(target=mjpeg_viewer, args=(stderr_lines, done), daemon=True))
    for thread in readers:
        thread.start()
    try:
        # imports and model load: records sent before the pipeline is up would wait (and count as latency)
        deadline = time.monotonic() + 120
        while not any(line.startswith("ready:") for line in stderr_lines):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the render did not get ready: {''.join(stderr_lines)[-2000:]}")
            time.sleep(0.02)
        n = int(round(seconds * fps))
        start = time.perf_counter()
        for i, keypoints in records(clip, n):
            delay = start + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            process.stdin.write((json.dumps({"frame": i, "t": time.time(), "keypoints": keypoints}) + "\n").encode())
            process.stdin.flush()
        process.stdin.close()
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        done.set()
        if udp is not None:
            udp[1].set()
            udp[2].join(timeout=5)
            udp[0].close()
        for thread in readers:
            thread.join(timeout=5)
    if code != 0 or not metrics.exists():
        return {"sink": sink, "late": policy, "fps": fps, "status": f"failed (exit {code})",
                "log": "".join(stderr_lines)[-2000:]}
    m = json.loads(metrics.read_text())
    total = m["latency"]["total_ms"]
    frames = m["frames"]
    return {"sink": sink, "late": policy, "fps": fps, "status": "ok", "sent": n, "frames": frames,
            "lost": n - frames["out"], "latency_p50_ms": total["p50"], "latency_p99_ms": total["p99"],
            "latency_max_ms": total["max"], "split_p50_ms": {k: v["p50"] for k, v in m["latency"]["split_ms"].items()},
            "output_fps": round(m.get("fps", 0.0), 2)}


def write_plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = [("the stream's rate", [r for r in result["cells"] if not r["overload"]]),
              ("overloaded", [r for r in result["cells"] if r["overload"]])]
    fig, axes = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [4, 1.3]})
    for ax, (title, rows) in zip(axes, groups):
        rows = [r for r in rows if r["status"] == "ok"]
        labels = [f"{r['sink']}\n{r['late']}" for r in rows]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["latency_p50_ms"] for r in rows], 0.4, label="p50")
        ax.bar(x + 0.2, [r["latency_p99_ms"] for r in rows], 0.4, label="p99")
        ax.axhline(GOAL_P99_MS, color="red", linestyle="--", linewidth=1, label="p99 goal (latest)")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel("glass-to-glass latency (ms)")
        ax.set_title(f"{title} ({rows[0]['fps']:g} fps in)" if rows else title)
        if any(r["latency_p99_ms"] > 10 * GOAL_P99_MS for r in rows):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("poserender live: demo model from a stdin stream, per --late policy and sink")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="stream length of each cell")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--overload-fps", type=float, default=100.0,
                    help="pose and tick rate of the renderer-too-slow cells (above what the model sustains)")
    ap.add_argument("--quick", action="store_true", help="3 s a cell: checks that it works, not a measurement")
    ap.add_argument("-o", "--output", default=str(REPO / "benchmarks" / "results" / "live_cpu.json"))
    args = ap.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    sys.path.insert(0, str(REPO))
    from poserender.bench.environment import environment, model_identity
    from poserender.demo import shipped_model

    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "poserender.cli", "demo", "--inputs", str(tmp / "inputs")],
                       check=True, capture_output=True)
        clip = np.load(tmp / "inputs" / "clip.npy")
        plan = [(sink, policy, args.fps, False) for sink in SINKS for policy in POLICIES]
        plan += [("udp", policy, args.overload_fps, True) for policy in POLICIES]
        for sink, policy, fps, overload in plan:
            row = run_cell(tmp / "inputs", sink, policy, fps, seconds, clip, tmp)
            row["overload"] = overload
            cells.append(row)
            shown = (f"p50 {row['latency_p50_ms']:.1f} ms, p99 {row['latency_p99_ms']:.1f} ms, lost {row['lost']}"
                     if row["status"] == "ok" else row["status"])
            print(f"{sink:5s} {policy:6s} {fps:5g} fps{' (too slow)' if overload else ''}: {shown}", flush=True)
    command = ["python", "benchmarks/bench_live.py", *(sys.argv[1:] if argv is None else argv)]
    latest = [r for r in cells if r["status"] == "ok" and r["late"] == "latest" and not r["overload"]]
    queue = [r for r in cells if r["status"] == "ok" and r["late"] == "queue" and not r["overload"]]
    result = {
        "command": " ".join(command),
        "what": "glass-to-glass latency (pose sent with a 't' stamp -> frame written/sent) of the shipped demo "
                "model live from stdin, per --late policy and sink; renderer-too-slow cells at --overload-fps",
        "quick": args.quick, "seconds_per_cell": seconds,
        "model": model_identity(shipped_model()),
        "environment": environment(command, os.cpu_count() or 1),
        "goals": {"latest_p99_ms_at_most": GOAL_P99_MS, "queue_frames_lost": 0},
        "met": {"latest_p99": bool(latest) and all(r["latency_p99_ms"] <= GOAL_P99_MS for r in latest),
                "queue_lost_none": bool(queue) and all(r["lost"] == 0 for r in queue)},
        "cells": cells,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_plot(result, out.with_suffix(".png"))
    print(f"goals met: {result['met']} -> {out}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
