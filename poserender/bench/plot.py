"""The PNG of a bench result: fps and p99 latency against batch, and the speed-up over the baseline."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List


def write_plot(result: Dict[str, Any], path: Path) -> None:
    """fps and p99 latency against batch per backend, and the speed-up over the baseline."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..fileio import temp_file_beside

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    base = [r for r in rows if r.get("is_baseline")]
    series: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        if not row.get("is_baseline"):
            label = f"{row['backend']} {row['stage']}" + (f" {row['precision']}" if row["precision"] != "fp32" else "") \
                + (f" {row['layout']}" if row["layout"] != "default" else "") + f" {row['canvas']}"
            series.setdefault(label, []).append(row)
    fig, (ax_fps, ax_p99, ax_up) = plt.subplots(1, 3, figsize=(17, 5.2))
    colours: Dict[str, Any] = {}
    for index, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["batch"])
        batches = [p["batch"] for p in points]
        colour = colours[label] = f"C{index % 10}"
        ax_fps.plot(batches, [p["fps"] for p in points], marker="o", label=label, color=colour)
        if all(p["latency_ms"].get("p99") is not None for p in points):
            ax_p99.plot(batches, [p["latency_ms"]["p99"] for p in points], marker="o", label=label, color=colour)
        for p in points:
            p["_colour"] = colour
    for b in base:
        ax_fps.axhline(b["fps"], color="black", linestyle="--", label=f"reference baseline {b['canvas']} (batch 1)")
        ax_p99.axhline(b["latency_ms"]["p99"], color="black", linestyle="--", label=f"reference baseline {b['canvas']}")
    for ax, title, unit in ((ax_fps, "throughput", "frames / s"), (ax_p99, "p99 latency per call", "ms")):
        ax.set(title=title, xlabel="batch size", ylabel=unit)
        ax.set_xticks(sorted({r["batch"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_fps.legend(fontsize=7)
    ups = [r for r in rows if r.get("speedup") is not None and not r.get("is_baseline")]
    if ups:
        labels = [f"{r['backend']} {r['stage']} b{r['batch']}" + (f" {r['layout']}" if r["layout"] != "default" else "")
                  for r in ups]
        bars = ax_up.bar(range(len(ups)), [r["speedup"] for r in ups], color=[r.pop("_colour") for r in ups])
        ax_up.bar_label(bars, labels=[f"{r['speedup']:.2f}x" for r in ups], fontsize=8)
        ax_up.set_xticks(range(len(ups)), labels, fontsize=8, rotation=35, ha="right")
        ax_up.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax_up.set(title="speed-up over the reference baseline", ylabel="x (frames/s ratio)")
    else:
        ax_up.text(0.5, 0.5, "no baseline in this run\n(--baseline reference)", ha="center", va="center")
        ax_up.set_axis_off()
    env = result["environment"]
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "CPU only"
    fig.suptitle(f"poserender bench: {env['cpu_model']}, {env['threads']} threads, {gpus}; "
                 f"{env['timestamp'][:10]}, commit {(env['git'].get('commit') or 'unknown')[:9]}", fontsize=10)
    for row in rows:
        row.pop("_colour", None)
    fig.tight_layout()
    fd, tmp = temp_file_beside(path, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)

