"""The terminal table, the CSV and the verdict line of a bench result (the JSON is the result itself)."""
from __future__ import annotations

import csv
import io
from typing import Any, Dict, List

from .floors import floor_lines

CSV_COLUMNS = (
    "backend", "stage", "batch", "precision", "canvas", "layout", "status", "reason", "runs", "clipped", "fps",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "raw_p99_ms", "frame_ms_min",
    "frame_ms_median", "frame_ms_max", "compute_source_ms", "compute_frame_ms", "host_ms", "queue_ms",
    "peak_rss_mib", "gpu_memory_peak_mib", "flops_per_frame", "achieved_gflops", "peak_fraction", "speedup",
    "frames_max_abs_diff", "frames_within_2_levels", "speedup_vs_fp32", "psnr_vs_fp32_db", "ssim_vs_fp32",
    "max_abs_vs_fp32", "floor_ms_per_frame", "ratio_to_floor")



def _get(row: Dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def flat_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """One CSV line of a result row (CSV_COLUMNS)."""
    lat = row.get("latency_ms") or {}
    per = row.get("per_frame_ms") or {}
    return {**{k: row.get(k) for k in ("backend", "stage", "batch", "precision", "canvas", "layout", "status",
                                       "reason", "runs", "clipped", "fps", "host_ms", "queue_ms", "peak_rss_mib",
                                       "flops_per_frame", "achieved_gflops", "peak_fraction", "speedup",
                                       "floor_ms_per_frame", "ratio_to_floor")},
            **{f"{k}_ms": lat.get(k) for k in ("p50", "p90", "p95", "p99", "mean", "min", "max")},
            "raw_p99_ms": _get(row, "latency_raw_ms", "p99"), "frame_ms_min": per.get("min"),
            "frame_ms_median": per.get("median"), "frame_ms_max": per.get("max"),
            "compute_source_ms": _get(row, "compute_ms", "source"),
            "compute_frame_ms": _get(row, "compute_ms", "frame") or _get(row, "compute_ms", "full_forward"),
            "gpu_memory_peak_mib": row.get("gpu_memory_used_peak_mib"),
            "frames_max_abs_diff": _get(row, "frames_vs_baseline", "max_abs_diff"),
            "frames_within_2_levels": _get(row, "frames_vs_baseline", "fraction_within_2_levels"),
            "speedup_vs_fp32": row.get("speedup_vs_fp32"), "psnr_vs_fp32_db": _get(row, "quality_vs_fp32", "psnr_db"),
            "ssim_vs_fp32": _get(row, "quality_vs_fp32", "ssim"),
            "max_abs_vs_fp32": _get(row, "quality_vs_fp32", "max_abs_error")}


def to_csv(result: Dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result["rows"]:
        writer.writerow(flat_row(row))
    return out.getvalue()


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(result: Dict[str, Any]) -> str:
    env, peak = result["environment"], result["machine_peak"]
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "no GPU"
    lines = [f"poserender bench: {env['cpu_model']}, {env['usable_cores']} usable cores, {env['threads']} threads, "
             f"{gpus}; fp32 matmul peak {_num(peak.get('gflops'), '.1f')} GFLOP/s",
             f"{'backend':<10}{'stage':<7}{'batch':>5} {'prec':<5}{'canvas':<8}{'layout':<9}{'fps':>8}"
             f"{'p50':>9}{'p90':>9}{'p95':>9}{'p99':>9}  {'ms/frame min/med/max':<22}{'compute/host':>14}"
             f"{'RSS':>7}{'GFLOP/f':>9}{'GFLOP/s':>9}{'peak':>7}{'speed-up':>9}{'clip':>5}  frames"]
    skipped = []
    for row in result["rows"]:
        if row["status"] != "ok":
            what = " ".join(str(row[k]) for k in ("backend", "stage", "batch", "precision", "canvas", "layout")
                            if row.get(k) not in (None, "*"))
            skipped.append(f"  skipped {what or row.get('resolution', '')}: {row['reason']}")
            continue
        lat, per = row["latency_ms"], row["per_frame_ms"]
        compute = sum((row.get("compute_ms") or {}).values())
        check = row.get("frames_vs_baseline")
        frames = "-" if not check else (f"{'ok' if check['passed'] else 'DIFFER'} (max {check['max_abs_diff']})")
        lines.append(
            f"{row['backend']:<10}{row['stage']:<7}{row['batch']:>5} {row['precision']:<5}{row['canvas']:<8}"
            f"{row['layout'][:8]:<9}{row['fps']:>8.2f}"
            + "".join(f"{_num(lat.get(p), '.1f'):>9}" for p in ("p50", "p90", "p95", "p99"))
            + f"  {per['min']:>6.1f}/{per['median']:>6.1f}/{per['max']:>6.1f}   "
            f"{compute:>7.1f}/{_num(row.get('host_ms'), '.1f'):<6}{_num(row.get('peak_rss_mib'), '.0f'):>7}"
            f"{row['flops_per_frame'] / 1e9:>9.2f}{row['achieved_gflops']:>9.1f}"
            f"{_num(None if row['peak_fraction'] is None else 100 * row['peak_fraction'], '.1f'):>6}%"
            f"{_num(row['speedup'], '.2f'):>8}x{row['clipped']:>5}  {frames}")
    lines.append("latency in ms per call (one batch; stream: per stage below); ms/frame = call / batch "
                 "(min/median/max: machine noise); compute = engine calls, host = the rest; RSS in MiB; "
                 "clip = calls dropped as outliers")
    lines.extend(precision_lines(result["rows"]))
    lines.extend(floor_lines(result))
    for row in result["rows"]:
        if row["status"] == "ok" and row["stage"] == "stream":
            lines.append(f"stream {row['backend']} batch {row['batch']}: first frame {row['first_frame_s']['median']} s "
                         f"after the call (setup {row['setup_s']} s); queue {row['queue_ms']} ms, compute "
                         + ", ".join(f"{k} {v} ms" for k, v in row["compute_ms"].items()) + " (p50 per batch)")
    return "\n".join(lines + skipped)


def precision_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """Reduced precision beside FP32: speed-up and quality measured in this run, and the
    export's quality gate record for int8."""
    out = []
    for row in rows:
        if row["status"] != "ok" or row["precision"] in ("fp32", "*") or row.get("is_baseline"):
            continue
        what = f"{row['precision']} vs fp32, {row['backend']} {row['stage']} batch {row['batch']}"
        if row.get("speedup_vs_fp32") is None:
            out.append(f"{what}: {_get(row, 'quality_vs_fp32', 'note') or 'no fp32 cell to compare with'}")
            continue
        q = row.get("quality_vs_fp32") or {}
        psnr = "inf" if q.get("psnr_db") is None else f"{q['psnr_db']:.1f}"
        quality = q.get("note") or (f"PSNR {psnr} dB, "
                                    f"SSIM {_num(q.get('ssim'), '.4f')}, max |err| {_num(q.get('max_abs_error'), 'g')} "
                                    f"on {q.get('frames')} frames (this run)")
        gate = row.get("int8_gate")
        gate_text = "" if not gate else (f"; export gate: PSNR {_num(gate.get('psnr_db'), '.1f')} dB, SSIM "
                                         f"{_num(gate.get('ssim'), '.4f')} on {gate.get('frames')} held-out frames "
                                         f"({gate.get('method')} calibration)")
        out.append(f"{what}: {row['speedup_vs_fp32']:.2f}x fps; {quality}{gate_text}")
    return out


def verdict(result: Dict[str, Any], written: List[str]) -> str:
    """The run's last line: the best cell, how many ran and were skipped, the time, the files."""
    ok = [r for r in result["rows"] if r["status"] == "ok" and not r.get("is_baseline")]
    best = max(ok, key=lambda r: r["fps"], default=None)
    head = "no cell ran" if best is None else (
        f"best {best['fps']:.2f} fps: {best['backend']} {best['stage']} batch {best['batch']}"
        + (f", {best['speedup']:.2f}x the reference" if best.get("speedup") else ""))
    return (f"{head}; {len(ok)} cells timed, {sum(r['status'] != 'ok' for r in result['rows'])} skipped, "
            f"{result['wall_s']:.0f} s" + "".join(f"; wrote {p}" for p in written))
