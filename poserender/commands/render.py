"""`poserender render`: a keypoint file or live stream -> video, frames, or raw frames on stdout.

The model's family (manifest ``family``; none = pose2img) picks the inputs: pose2img takes
--source/--source-keypoints, PSC --source/--source-parsing (or --psc-data, or --key-poses). Pose
streams of both families run through the streaming pipeline (runtime.stream)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from ..errors import UserError
from .common import WARP_CHOICES, log, model_dir_for, user_errors
from .render_psc import psc_mode, psc_model_dir, psc_render_options, render_psc


class StreamProgress:
    """frames, fps (and percent when the length is known) on one stderr line, only on a terminal,
    at most 4 times a second; never on stdout, which may carry the frames."""

    def __init__(self, label: str = "rendering"):
        self.label, self.enabled, self.shown, self._last = label, sys.stderr.isatty(), False, 0.0

    def __call__(self, done: int, total: Optional[int], fps: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        if total:
            filled = int(30 * min(done, total) / total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        else:
            bar = f"{done} frames"
        sys.stderr.write(f"\r{self.label} {bar} {fps:5.1f} fps ")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def summary_lines(result, output: str, precision: Optional[str] = None) -> list:
    """The final report: one headline (frames, time, fps, backend, canvas), then details."""
    report, counts = result.report, result.report.counts
    extra = "".join(f", {n} {k}" for k, n in (("held", counts.held), ("skipped", counts.skipped),
                                              ("dropped", counts.dropped)) if n)
    if report.interrupted:
        extra += ", interrupted"
    h, w = result.canvas_hw
    where = "stdout" if output == "-" else report.sink.path
    precision = f" {precision}" if precision not in (None, "fp32") else ""
    lines = [f"rendered {counts.frames_out}/{counts.frames_in} frames{extra} to {where} in {report.seconds:.1f} s "
             f"({report.fps:.1f} fps after {report.setup_seconds:.2f} s setup), backend {result.backend}{precision}, "
             f"{h}x{w}"]
    reconciled = "=" if counts.reconciles() else "!= (MISMATCH)"
    lines.append(f"frames: in {counts.frames_in} {reconciled} out {counts.frames_out} + dropped {counts.dropped} "
                 f"+ skipped {counts.skipped}; workers: {', '.join(report.workers)}")
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
    if result.preview is not None:
        lines.append(f"preview: {result.preview}")
    return lines


def render_model(model_dir: Path, backend: str, *, source_image, source_keypoints, keypoints, output,
                 source_parsing=None, fmt: Optional[str] = None, fps: float = 15.0, audio=None, batch: int = 4,
                 on_bad_frame: str = "hold", max_frames: Optional[int] = None, max_wait_ms: float = 50.0,
                 devices: Optional[str] = None, replicate: bool = False, realtime: bool = False,
                 late: str = "hold", follow: bool = False, follow_timeout: float = 10.0, preview=None,
                 preview_every: int = 25, metrics=None, codec: str = "auto", precision: Optional[str] = None,
                 max_gap: Optional[int] = None, idle_timeout: float = 30.0):
    """Render through the streaming pipeline and print the summary (stderr when stdout has frames).
    ``precision``: fp16/bf16 on the GPU backends, int8 on ort-cpu (the model's INT8 graphs)."""
    from ..runtime.pipeline import StreamOptions
    from ..runtime.stream import parse_devices, render_stream

    if precision == "int8":     # no INT8 graphs, or a backend that cannot run them: one line, before any output
        from ..engines.select import stage_engines
        from ..manifest import read_manifest

        stage_engines(Path(model_dir), read_manifest(model_dir), backend, precision=precision)
    options = StreamOptions(batch=batch, max_wait_ms=max_wait_ms, on_bad_frame=on_bad_frame,
                            devices=parse_devices(devices), replicate=replicate, fps=fps, realtime=realtime,
                            late=late, max_frames=max_frames, max_gap=max_gap)
    progress = StreamProgress()
    try:
        result = render_stream(model_dir, backend, source_image=source_image, source_keypoints=source_keypoints,
                               source_parsing=source_parsing, keypoints=keypoints, output=output, fmt=fmt, fps=fps, audio=audio, codec=codec,
                               options=options, follow=follow, follow_timeout=follow_timeout, preview=preview,
                               preview_every=preview_every, metrics_path=metrics, log=log, progress=progress,
                               precision=None if precision == "fp32" else precision, idle_timeout=idle_timeout)
    finally:
        progress.finish()
    to_stdout = str(output) == "-"
    for line in summary_lines(result, str(output), precision):
        click.echo(line, err=to_stdout)
    for line in result.report.metrics.table():
        click.echo(line, err=True)
    if to_stdout and getattr(result.report.sink, "format", None) == "raw":
        _quiet_stdout()
    if result.report.interrupted:
        sys.exit(result.report.exit_code)
    return result


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
              "or .json); required for pose2img models.")
@click.option("--keypoints",
              help="Target poses: .npz, .npy, an OpenPose JSON folder, '-' (JSON lines on stdin) or "
                   "tcp://127.0.0.1:PORT (a listener; one JSON object per line). PSC: also a csv or a folder "
                   "of csv files, COCO-18 in canvas pixels.")
@click.option("-o", "--output", required=True, type=click.Path(allow_dash=True),
              help="out.mp4, a folder for png/jpg frames, or '-' for raw BGR frames on stdout.")
@click.option("--config", type=click.Path(), help="Pose2Img YAML when MODEL is a checkpoint.")
@click.option("--scale", type=float, help="Canvas scale when MODEL is a checkpoint (640 / scale).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler when MODEL is a checkpoint.")
@click.option("--backend", default="auto", show_default=True, help="auto, ort-cpu, torch (see `poserender doctor`).")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="int8: the model's calibrated INT8 graphs on ort-cpu (export --precision int8); fp16/bf16: "
                   "reduced precision on the GPU backends (torch-cuda, ort-trt, trt).")
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
@click.option("--devices", help="Where the stages run, e.g. cpu (default), 0, 0,1; with --replicate "
                                "cpu,cpu gives two CPU frame workers.")
@click.option("--replicate", is_flag=True, help="One frame-stage worker per listed device (frames dealt out, "
                                                "put back in order) instead of placing stages across devices.")
@click.option("--realtime", is_flag=True, help="Pace output to the clock at --fps (files are read at --fps too).")
@click.option("--late", default="hold", show_default=True, type=click.Choice(["drop", "hold", "queue"]),
              help="Real time, a frame not ready at its tick: drop it, drop it and repeat the previous "
                   "frame, or write it late.")
@click.option("--follow", is_flag=True, help="KEYPOINTS is a folder OpenPose is writing to: render files as "
                                             "they appear.")
@click.option("--follow-timeout", default=10.0, show_default=True,
              help="With --follow, end when no new file appeared for this many seconds.")
@click.option("--preview", type=click.Path(), help="Also write a contact sheet PNG of every Nth frame, e.g. sheet.png.")
@click.option("--preview-every", default=25, show_default=True, help="N for --preview.")
@click.option("--metrics", type=click.Path(), help="Write per-stage timings, counts and fps as JSON, e.g. m.json.")
@psc_render_options
@user_errors
def render(model, source, source_keypoints, keypoints, output, config, scale, warp_mode, backend, precision, fmt, fps,
           audio, codec, batch, max_wait_ms, on_bad_frame, max_frames, max_gap, idle_timeout, devices, replicate,
           realtime, late,
           follow, follow_timeout, preview, preview_every, metrics, psc_data, t_values, panels, source_parsing,
           key_poses, frames, aa_norm) -> None:
    """Render KEYPOINTS with the appearance of SOURCE, through the streaming pipeline.

    MODEL is a folder from `poserender export`, a pose2img checkpoint (.pth) with --config, or a
    PSC checkpoint folder (pm.pth, aa.pth, ct.pth); checkpoints are exported to a cache on first
    use. The model's family picks the inputs: pose2img needs --source-keypoints, PSC
    --source-parsing. Stages overlap (reading, batching, rendering, encoding), bad frames follow
    --on-bad-frame, Ctrl-C finishes the frames in flight and closes the output.

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
    if fps <= 0 or batch < 1:
        raise UserError(f"--fps {fps:g} and --batch {batch} must be positive")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames {max_frames}; expected at least 1")
    if max_gap is not None and max_gap < 0:
        raise UserError(f"--max-gap {max_gap}; expected a number of frames >= 0")
    if not idle_timeout > 0:
        raise UserError(f"--idle-timeout {idle_timeout:g}; expected a positive number of seconds")
    for option, value in (("--source", source), ("--source-keypoints", source_keypoints),
                          ("--source-parsing", source_parsing), ("--psc-data", psc_data),
                          ("--keypoints", keypoints), ("--audio", audio)):
        if value is not None and value != "-" and not str(value).startswith("tcp://") and not Path(value).exists():
            raise UserError(f"{option} not found", value)
    model_dir, family = _resolve_model(model, config, scale, warp_mode, aa_norm)
    stream = dict(output=output, fmt=fmt, fps=fps, audio=Path(audio) if audio else None, batch=batch,
                  on_bad_frame=on_bad_frame, max_frames=max_frames, max_wait_ms=max_wait_ms, devices=devices,
                  replicate=replicate, realtime=realtime, late=late, follow=follow, follow_timeout=follow_timeout,
                  preview=preview, preview_every=preview_every, metrics=metrics, codec=codec, precision=precision,
                  max_gap=max_gap, idle_timeout=idle_timeout)
    if family == "psc":
        if source_keypoints:
            raise UserError("--source-keypoints is for pose2img models; a PSC model takes --source-parsing "
                            "(the S0 label PNG of --source)", model)
        mode = psc_mode(psc_data, keypoints, key_poses, source, source_parsing, frames, audio, max_frames)
        if mode == "sequence":
            render_model(model_dir, backend, source_image=Path(source), source_keypoints=None,
                         source_parsing=Path(source_parsing), keypoints=keypoints, **stream)
            return
        stream_only = [name for name, given in (("-o -", output == "-"), ("--realtime", realtime),
                                                (f"--precision {precision}", precision != "fp32"),
                                                ("--follow", follow), ("--preview", preview),
                                                ("--metrics", metrics), ("--devices", devices),
                                                ("--replicate", replicate)) if given]
        if stream_only:
            raise UserError(f"{', '.join(stream_only)} apply to pose streams (--keypoints); not to "
                            f"{'--psc-data' if mode == 'layout' else '--key-poses'}")
        render_psc(model_dir, backend, output, fmt, fps, audio, batch, source, psc_data, t_values, panels,
                   source_parsing, key_poses or None, frames)
        sys.stdout.flush()
        return
    psc_only = [name for name, given in (("--psc-data", psc_data), ("--key-poses", key_poses),
                                         ("--frames", frames), ("--panels", panels),
                                         ("--source-parsing", source_parsing)) if given]
    if psc_only:
        raise UserError(f"{', '.join(psc_only)} apply to PSC models; this is a {family} model", model_dir)
    missing = [name for name, given in (("--source", source), ("--source-keypoints", source_keypoints),
                                        ("--keypoints", keypoints)) if not given]
    if missing:
        raise UserError(f"a {family} model needs --source (image), --source-keypoints and --keypoints; "
                        f"missing {', '.join(missing)}")
    render_model(model_dir, backend, source_image=Path(source), source_keypoints=Path(source_keypoints),
                 keypoints=keypoints, **stream)


def _resolve_model(model: str, config, scale, warp_mode, aa_norm):
    """(exported model folder, family): an exported folder as is; a pose2img checkpoint (.pth) or a
    PSC checkpoint folder (pm.pth, aa.pth, ct.pth) exported once into the cache."""
    from ..manifest import read_manifest

    path = Path(model)
    psc_checkpoint = path.is_dir() and not (path / "manifest.json").is_file() and \
        all((path / n).is_file() for n in ("pm.pth", "aa.pth", "ct.pth"))
    if psc_checkpoint or aa_norm:
        if config or scale or warp_mode:
            raise UserError("--config/--scale/--warp-mode apply to a pose2img checkpoint; this is a PSC model", path)
        model_dir = psc_model_dir(model, aa_norm)
    else:
        model_dir = model_dir_for(model, config, scale, warp_mode)
    family = read_manifest(model_dir).get("family", "pose2img")
    if aa_norm and family != "psc":
        raise UserError(f"--aa-norm applies to PSC models; this is a {family} model", model_dir)
    return model_dir, family
