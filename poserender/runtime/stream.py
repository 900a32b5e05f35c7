"""``render_stream``: an exported model + identity + keypoint source -> a sink, through the pipeline.

Everything the user gave is opened and checked first (model, backend, devices, identity, the
keypoint source, the output and audio), so bad input ends with one error line and no output;
then :class:`~poserender.runtime.pipeline.StreamPipeline` runs the stream.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, TextIO, Union

from ..engines.base import Engine
from ..engines.select import stage_engines
from ..errors import UserError
from ..fileio import check_writable, write_json_atomic
from ..manifest import read_manifest
from .adapters import adapter_for
from .pipeline import StreamOptions, StreamPipeline, StreamReport
from .preview import ContactSheet
from .sinks import VIDEO_CODECS, open_sink, pick_video_codec
from .sources import open_source

PathLike = Union[str, Path]


@dataclasses.dataclass
class StreamResult:
    report: StreamReport
    backend: str
    canvas_hw: tuple
    preview: Optional[Path] = None


def parse_devices(text: Union[str, Sequence[str], None]) -> Sequence[str]:
    """``"0,1"`` -> ("0", "1"); ``"cpu,cpu"`` -> two CPU workers (with --replicate)."""
    if text is None:
        return ("cpu",)
    items = [d.strip() for d in (text.split(",") if isinstance(text, str) else text)]
    if not items or any(not d for d in items):
        raise UserError(f"--devices {text!r}; expected a comma-separated list such as cpu, 0 or 0,1")
    return tuple(items)


def render_stream(model_dir: PathLike, backend: str, *, source_image: Optional[PathLike],
                  source_keypoints: Optional[PathLike], keypoints: PathLike, output: PathLike,
                  source_parsing: Optional[PathLike] = None,
                  fmt: Optional[str] = None, fps: float = 15.0, audio: Optional[PathLike] = None,
                  codec: str = "auto", options: Optional[StreamOptions] = None, follow: bool = False,
                  follow_timeout: float = 10.0, preview: Optional[PathLike] = None, preview_every: int = 25,
                  metrics_path: Optional[PathLike] = None, log: Callable[[str], None] = lambda message: None,
                  progress=lambda done, total, fps: None, stdin: Optional[TextIO] = None,
                  precision: Optional[str] = None, idle_timeout: float = 30.0) -> StreamResult:
    options = options or StreamOptions(fps=fps)
    options = dataclasses.replace(options, fps=fps)
    if options.batch < 1 or options.max_wait_ms < 0:
        raise UserError(f"--batch {options.batch} must be >= 1 and --max-wait-ms {options.max_wait_ms:g} >= 0")
    if codec not in VIDEO_CODECS + ("auto",):
        raise UserError(f"unknown video codec {codec!r}; expected auto or one of: {', '.join(VIDEO_CODECS)}")
    codec = pick_video_codec(codec)
    manifest = read_manifest(model_dir)
    adapter = adapter_for(manifest, None if source_image is None else Path(source_image),
                          None if source_keypoints is None else Path(source_keypoints),
                          None if source_parsing is None else Path(source_parsing),
                          warn=lambda message: log(f"poserender: warning: {message}"))
    names: Dict[str, str] = {}

    def engine_factory(device: str, threads: Optional[int]) -> Dict[str, Engine]:
        name, engines = stage_engines(Path(model_dir), manifest, backend, device=device, threads=threads,
                                      precision=precision)
        names["backend"] = name
        return {engine.spec.name: engine for engine in engines}

    max_batch = min(s["batch"]["max"] for s in manifest["stages"] if s["name"] in adapter.frame_stages)
    options = dataclasses.replace(options, batch=max(1, min(options.batch, max_batch)))
    sheet = None if preview is None else ContactSheet(Path(preview), preview_every)
    if sheet is not None:
        check_writable(sheet.path, "the preview")
    if metrics_path is not None:
        check_writable(metrics_path, "the metrics")
    source = open_source(str(keypoints), adapter.open_file, fps, follow=follow, idle_seconds=follow_timeout,
                         log=log, stdin=stdin, idle_timeout=idle_timeout)
    try:
        sink = open_sink(output, fmt, fps=fps, audio=audio, codec=codec)
        try:
            pipeline = StreamPipeline(adapter, engine_factory, source, sink, options, log=log, progress=progress,
                                      preview=sheet)
            report = pipeline.run()
        except BaseException:
            sink.abort()        # a no-op once the pipeline closed it
            raise
    finally:
        source.close()
    if metrics_path is not None:
        write_json_atomic(metrics_path, {"model": str(model_dir), "backend": names.get("backend"),
                                         "canvas": list(adapter.canvas_hw), "batch": options.batch,
                                         "devices": list(options.devices), "replicate": options.replicate,
                                         **report.to_dict()}, what="the metrics")
    return StreamResult(report, names.get("backend", backend), tuple(adapter.canvas_hw),
                        None if sheet is None else sheet.path)
