"""`poserender render`: a keypoint file or live stream -> video, frames, or raw frames on stdout.

The model's family (poserender.families) says which identity inputs it takes (pose2img: --source
and --source-keypoints; psc: --source and --source-parsing) and whether it has render modes of its
own (psc: --psc-data, --key-poses); everything else is one path for every family: a
:class:`~poserender.runtime.stream.RenderRequest` through the streaming pipeline."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import click

from ..engines import registry
from ..errors import UserError
from .common import WARP_CHOICES, Progress, log, model_dir_for, user_errors

#: identity options every family may take (each family says which it uses)
IDENTITY_OPTIONS = ("source", "source_keypoints", "source_parsing")
#: options of the families' own render modes
FAMILY_RENDER_OPTIONS = ("psc_data", "t_values", "panels", "key_poses", "frames")
#: options that only make sense for a pose stream
STREAM_OPTIONS = (("-o -", "stdout"), ("--realtime", "realtime"), ("--precision", "precision"),
                  ("--follow", "follow"), ("--preview", "preview"), ("--metrics", "metrics"),
                  ("--devices", "devices"), ("--replicate", "replicate"), ("--serve", "serve"))


class StreamProgress:
    """frames, fps (and the bar and the time left when the length is known: the input's frames, or
    --max-frames) on one stderr line, only on a terminal, at most 4 times a second; never on
    stdout, which may carry the frames."""

    def __init__(self, label: str = "rendering", enabled: bool = True):
        self.label, self.enabled, self.shown, self._last = label, enabled and sys.stderr.isatty(), False, 0.0

    def __call__(self, done: int, total: Optional[int], fps: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        if total:
            filled = int(30 * min(done, total) / total)
            eta = f", {max(0, total - done) / fps:4.0f} s left" if fps > 0 else ""
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        else:
            bar, eta = f"{done} frames", ""
        sys.stderr.write(f"\r{self.label} {bar} {fps:5.1f} fps{eta} ")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def summary_lines(result, output: str, precision: Optional[str] = None) -> List[str]:
    """The final report: one headline (frames, time, fps, backend, canvas), then details."""
    report, counts = result.report, result.report.counts
    extra = "".join(f", {n} {k}" for k, n in (("held", counts.held), ("skipped", counts.skipped),
                                              ("dropped", counts.dropped)) if n)
    if report.interrupted:
        extra += ", interrupted"
    h, w = result.canvas_hw
    where = "stdout" if output == "-" else f"{report.sink.path}{' (replaced)' if report.sink.replaced else ''}"
    precision = f" {precision}" if precision not in (None, "fp32") else ""
    lines = [f"rendered {counts.frames_out}/{counts.frames_in} frames{extra} to {where} in {report.seconds:.1f} s "
             f"({report.fps:.1f} fps after {report.setup_seconds:.2f} s setup), backend {result.backend}{precision}, "
             f"{h}x{w}"]
    reconciled = "=" if counts.reconciles() else "!= (MISMATCH)"
    lines.append(f"frames: in {counts.frames_in} {reconciled} out {counts.frames_out} + dropped {counts.dropped} "
                 f"+ skipped {counts.skipped}; workers: {', '.join(report.workers)}")
    if counts.drop_reasons:
        lines.append("dropped: " + ", ".join(f"{why} {n}" for why, n in sorted(counts.drop_reasons.items())))
    if counts.bad:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.bad.items()))
        lines.append(f"bad frames: {kinds} (held {counts.held}, skipped {counts.skipped})")
    if counts.discontinuities:
        lines.append(f"discontinuities: {counts.discontinuities} (index jumps over --max-gap; "
                     f"{counts.unfilled} missing indices not filled)")
    if report.realtime is not None:
        rt = report.realtime
        first = "n/a" if rt["first_frame_delay_ms"] is None else f"{rt['first_frame_delay_ms']:.0f} ms"
        lines.append(f"real time {rt['fps']:g} fps (--late {rt['late_policy']}): first frame after {first}, "
                     f"jitter {rt['jitter_ms']:.1f} ms, {counts.dropped} dropped, {counts.late_held} held")
    if getattr(report.sink, "note", None):
        lines.append(f"output: {report.sink.note}")
    latency = report.latency.summary_line()
    if latency is not None:
        lines.append(latency)
    if result.preview is not None:
        lines.append(f"preview: {result.preview}")
    if getattr(result, "served", None):
        lines.append(result.served)
    if result.backend_choice:
        lines.append(f"backend {result.backend_choice}")
    return lines


def run_stream(manifest, family, identity: Dict[str, Any], request, source=None, note: Optional[str] = None,
               quiet: bool = False, verbose: bool = False):
    """Render ``request`` with the model ``manifest`` of ``family`` and print the summary (stderr
    when stdout carries the frames; none with ``quiet``, the per-stage table too with ``verbose``
    or --metrics); exits with 128 + the signal when a signal stopped it."""
    from .. import families
    from ..runtime.stream import render_stream

    adapter = family.adapter(manifest, family.check_identity(identity, families.others(family)),
                             warn=lambda message: log(f"poserender: warning: {message}"))
    progress = StreamProgress(enabled=not quiet)
    try:
        result = render_stream(manifest, adapter, request, torch_stages=family.torch_stage, source=source, log=log,
                               progress=progress)
    finally:
        progress.finish()
    to_stdout = str(request.output) == "-"
    if not quiet:
        for line in summary_lines(result, str(request.output), result.precision) + ([note] if note else []):
            click.echo(line, err=to_stdout)
    if verbose or (request.metrics is not None and not quiet):
        for line in result.report.metrics.table():
            click.echo(line, err=True)
    if to_stdout and getattr(result.report.sink, "format", None) == "raw":
        _quiet_stdout()
    if result.report.interrupted:
        sys.exit(result.report.exit_code)
    return result


def _family_of(model: Path):
    """The family of an exported folder (from its manifest) or of a checkpoint (detected)."""
    from .. import families
    from ..manifest import MANIFEST, read_manifest

    if (model / MANIFEST).is_file():
        return families.of(read_manifest(model, verify=False))
    if not model.exists():
        raise UserError("not found; expected an exported model folder or a checkpoint", model)
    return families.detect(model)


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@click.command()
@click.argument("model", type=click.Path())
@click.option("--source", "source", type=click.Path(), help="Source image (the identity), e.g. frame.jpg "
              "(PSC: I0/0001.jpg).")
@click.option("--source-keypoints", type=click.Path(), help="pose2img: the source's OpenPose keypoints (.npy 3x137 "
              "or .json).")
@click.option("--source-parsing", type=click.Path(), help="PSC: parsing label PNG of --source (S0).")
@click.option("--keypoints",
              help="Target poses: .npz, .npy, an OpenPose JSON folder, '-' (JSON lines on stdin) or "
                   "tcp://127.0.0.1:PORT (a listener; one JSON object per line). PSC: also a csv or a folder "
                   "of csv files, COCO-18 in canvas pixels.")
@click.option("-o", "--output", type=click.Path(allow_dash=True),
              help="out.mp4, a folder for png/jpg frames, '-' for raw BGR frames on stdout, or a live URL: "
                   "udp://127.0.0.1:5000 (MPEG-TS; watch with ffplay), tcp://HOST:PORT, rtmp://HOST/app/key, "
                   "rtsp://HOST:PORT/path. Optional with --serve.")
@click.option("--config", type=click.Path(), help="Pose2Img YAML when MODEL is a checkpoint.")
@click.option("--scale", type=float, help="Canvas scale when MODEL is a checkpoint (640 / scale).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler when MODEL is a checkpoint.")
@click.option("--aa-norm", type=click.Choice(["authors", "eval"]), default=None,
              help="When MODEL is a PSC checkpoint folder: AA-Net BatchNorm statistics; authors (default: "
                   "per-sample batch statistics, what the reference computes) or eval (running stats).")
@click.option("--backend", default="auto", show_default=True,
              help="auto: the fastest backend and precision that passed the quality gate in this host's "
                   "`poserender tune` record of MODEL, else ONNX Runtime on CUDA when usable, else on the CPU, else "
                   "torch; or a name from `poserender doctor`: " + ", ".join(registry.names()) + ".")
@click.option("--precision", type=click.Choice(registry.all_precisions()),
              help="Default fp32 (with --backend auto: what tune measured best). int8: the model's calibrated INT8 "
                   "graphs (export --precision int8) on ort-cpu or ov-cpu; bf16: ov-cpu on a CPU with "
                   "AVX512_BF16/AMX, or the GPU backends; int8-bf16: ov-cpu, INT8 trunk + BF16 rest; fp16: the GPU "
                   "backends (torch-cuda, ort-trt, trt). `poserender doctor` lists each backend's precisions.")
@click.option("--format", "fmt", type=click.Choice(["mp4", "png", "jpg", "raw"]),
              help="Default: from -o (.mp4 -> mp4, '-' -> raw, otherwise a png folder).")
@click.option("--fps", default=15.0, show_default=True, help="Output frame rate (the reference renders at 15).")
@click.option("--audio", type=click.Path(), help="Audio to mux into the mp4 (any file PyAV decodes), e.g. speech.wav.")
@click.option("--codec", default="auto", show_default=True, type=click.Choice(["auto", "libx264", "h264_nvenc"]),
              help="H.264 encoder for mp4; auto = h264_nvenc when an NVIDIA GPU and an FFmpeg built with it "
                   "are there, else libx264.")
@click.option("--batch", default=4, show_default=True, help="Frames per frame-stage call.")
@click.option("--max-wait-ms", default=50.0, show_default=True,
              help="Send a partial batch once its first frame has waited this long (live inputs).")
@click.option("--on-bad-frame", default="hold", show_default=True, type=click.Choice(["hold", "skip", "error"]),
              help="NaN/inf, wrong joint count, undecodable or missing frames: repeat the last good pose, "
                   "drop the frame, or stop.")
@click.option("--max-frames", type=int, help="Render only the first N input frames.")
@click.option("--max-gap", type=int, help="Fill at most this many missing frame indices with bad frames; a longer "
                                          "jump is a discontinuity: counted, not filled. Default: 5 s of frames "
                                          "at --fps (75 at 15 fps).")
@click.option("--idle-timeout", default=30.0, show_default=True,
              help="TCP input: end the stream when the client sends nothing for this many seconds (and drop a "
                   "connection that sends no record for that long).")
@click.option("--devices", help="Where the stages run: cpu (the default on CPU backends), 0 (on GPU backends), 0,1 "
                                "(stages split across GPUs); with --replicate cpu,cpu gives two CPU frame workers.")
@click.option("--replicate", is_flag=True, help="One frame-stage worker per listed device (frames dealt out, "
                                                "put back in order) instead of placing stages across devices.")
@click.option("--realtime", is_flag=True, help="Pace output to the clock at --fps (files are read at --fps too).")
@click.option("--late", default="hold", show_default=True, type=click.Choice(["drop", "hold", "queue", "latest"]),
              help="Real time, a frame not ready at its tick: drop it, drop it and repeat the previous "
                   "frame, or write it late; latest: no ticks, the newest pose is rendered as soon as the "
                   "renderer is free and older pending ones are dropped (bounded latency, one frame a call).")
@click.option("--follow", is_flag=True, help="KEYPOINTS is a folder OpenPose is writing to: render files as "
                                             "they appear.")
@click.option("--follow-timeout", default=10.0, show_default=True,
              help="With --follow, end when no new file appeared for this many seconds.")
@click.option("--serve", metavar="HOST:PORT",
              help="Show the live frames and fps/latency in a browser at http://HOST:PORT/ while rendering, "
                   "e.g. 127.0.0.1:8080 (port 0: a free one). Listens only where named: 127.0.0.1 keeps it on "
                   "this machine.")
@click.option("--preview", type=click.Path(), help="Also write a contact sheet PNG of every Nth frame, e.g. sheet.png.")
@click.option("--preview-every", default=25, show_default=True, help="N for --preview.")
@click.option("--metrics", type=click.Path(), help="Write per-stage timings, counts and fps as JSON, e.g. m.json "
              "(the per-stage table is printed too).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but warnings and errors (no progress, no summary).")
@click.option("--verbose", "-v", is_flag=True, help="Also print the per-stage table (compute and queue times).")
@click.option("--psc-data", type=click.Path(), help="PSC: reference layout folder with I0/ S0/ P0/ P1/ (e.g. "
              "psc/data/test): one image per sample and --t value, written into -o FOLDER.")
@click.option("--t", "t_values", help="PSC, with --psc-data: interpolation values (default 0.2,0.4,0.6,0.8,1); "
              "1 uses P1 itself, as the reference.")
@click.option("--panels", is_flag=True, help="PSC, with --psc-data: also write the reference's process strip "
              "(P0, P1, S0, I0, Pt, St, output) per image into FOLDER/process/.")
@click.option("--key-poses", nargs=2, type=click.Path(), help="PSC interpolation: two key pose csv files, e.g. "
              "P0/0001.csv P1/0001.csv; with --frames.")
@click.option("--frames", type=int, help="PSC interpolation: in-between frames (PM-Net) between the key poses.")
@user_errors
def render(model, keypoints, output, config, scale, warp_mode, aa_norm, backend, precision, fmt, fps, audio, codec,
           batch, max_wait_ms, on_bad_frame, max_frames, max_gap, idle_timeout, devices, replicate, realtime, late,
           follow, follow_timeout, serve, preview, preview_every, metrics, quiet, verbose, **family_options) -> None:
    """Render KEYPOINTS with the appearance of SOURCE, through the streaming pipeline.

    MODEL is a folder from `poserender export`, a pose2img checkpoint (.pth) with --config, or a
    PSC checkpoint folder (pm.pth, aa.pth, ct.pth); checkpoints are exported to a cache on first
    use. The model's family picks the inputs: pose2img needs --source-keypoints, PSC
    --source-parsing. Stages overlap (reading, batching, rendering, encoding), bad frames follow
    --on-bad-frame, a signal (Ctrl-C, SIGTERM, SIGHUP) finishes the frames being rendered and
    closes the output.

    \b
    poserender render art/oliver --source img.jpg --source-keypoints kp.npy \\
        --keypoints poses.npz --audio speech.mp4 -o out.mp4 --batch 4
    openpose_to_jsonl | poserender render art/oliver ... --keypoints - -o - --realtime --fps 25 \\
        | ffmpeg -f rawvideo -pix_fmt bgr24 -s 256x256 -r 25 -i - stream.mp4
    poserender render art/psc --source I0/0001.jpg --source-parsing S0/0001.png \\
        --keypoints poses/ -o out.mp4
    poserender render art/psc --psc-data data/test --t 0.2,0.6,1 --panels -o out/test
    poserender render art/psc --source I0/0001.jpg --source-parsing S0/0001.png \\
        --key-poses P0/0001.csv P1/0001.csv --frames 30 -o interp.mp4
    """
    from .. import families
    from ..manifest import read_manifest
    from ..runtime.report import StreamOptions
    from ..runtime.stream import RenderRequest

    if fps <= 0 or batch < 1:
        raise UserError(f"--fps {fps:g} and --batch {batch} must be positive")
    if output is None and serve is None:
        raise UserError("no output: give -o (a video, a folder, '-', or a udp:// URL) or --serve HOST:PORT")
    if output is None and fmt is not None:
        raise UserError(f"--format {fmt} needs -o")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames {max_frames}; expected at least 1")
    if max_gap is not None and max_gap < 0:
        raise UserError(f"--max-gap {max_gap}; expected a number of frames >= 0")
    if not idle_timeout > 0:
        raise UserError(f"--idle-timeout {idle_timeout:g}; expected a positive number of seconds")
    identity = {key: family_options.pop(key) for key in IDENTITY_OPTIONS}
    for option, value in (*((f"--{k.replace('_', '-')}", v) for k, v in identity.items()),
                          ("--psc-data", family_options.get("psc_data")), ("--keypoints", keypoints),
                          ("--audio", audio)):
        if value is not None and value != "-" and not str(value).startswith("tcp://") and not Path(value).exists():
            raise UserError(f"{option} not found", value)
    # Everything is checked against the model's family before a checkpoint is exported (which takes
    # minutes for the published nets): the family of an exported folder, or of the checkpoint.
    family = _family_of(Path(model))
    export_options = {"config": config, "scale": scale, "warp_mode": warp_mode, "aa_norm": aa_norm}
    mode = family.render_mode({k: v for k, v in family_options.items() if v not in (None, False, ())}, Path(model))
    given = {"stdout": output == "-", "realtime": realtime, "precision": precision is not None, "follow": follow,
             "preview": preview, "metrics": metrics, "devices": devices, "replicate": replicate,
             "serve": serve}
    if mode is None:
        if not keypoints:
            raise UserError(f"a {family.name} model needs --keypoints (the target poses) besides "
                            f"{', '.join(i.option for i in family.identity_inputs)}")
        family.check_identity(identity, families.others(family))
    else:
        conflicts = [name if name != "--precision" else f"--precision {precision}"
                     for name, key in STREAM_OPTIONS if given[key] and key not in mode.stream_options]
        if conflicts:
            raise UserError(f"{', '.join(conflicts)} apply to pose streams (--keypoints); not to {mode.option}")
    model_dir = model_dir_for(model, export_options)
    manifest = read_manifest(model_dir)
    request = RenderRequest(
        keypoints=keypoints, output="(no output)" if output is None else output, backend=backend,
        precision=precision, fmt="none" if output is None else fmt, audio=Path(audio) if audio else None,
        codec=codec, devices=devices,
        stream=StreamOptions(batch=batch, max_wait_ms=max_wait_ms, on_bad_frame=on_bad_frame, replicate=replicate,
                             fps=fps, realtime=realtime, late=late, max_frames=max_frames, max_gap=max_gap),
        follow=follow, follow_timeout=follow_timeout, idle_timeout=idle_timeout,
        preview=Path(preview) if preview else None, preview_every=preview_every,
        metrics=Path(metrics) if metrics else None, serve=serve)
    if quiet and verbose:
        raise UserError("--quiet and --verbose contradict each other; give one")
    if mode is None:
        run_stream(manifest, family, identity, request, quiet=quiet, verbose=verbose)
        return
    if mode.source is None:                   # a mode of its own (not a stream)
        progress = Progress("rendering")
        try:
            lines = mode.run(manifest, identity, request, log, progress)
        finally:
            progress.finish()
        for line in lines if not quiet else ():
            click.echo(line)
        sys.stdout.flush()
        return
    source, note = mode.source(manifest, identity, request, log)
    run_stream(manifest, family, identity, request, source=source, note=note, quiet=quiet, verbose=verbose)
