"""``render_stream``: an exported model + a family adapter + a :class:`RenderRequest` -> a sink.

Everything the user gave is checked first (backend, precision and devices together, the
keypoint source, the output, preview and metrics locations, the audio), so bad input ends with one
error line and no output; then :class:`~poserender.runtime.pipeline.StreamPipeline` runs the
stream on the placement plan every command shares (engines.placement).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import IO, Callable, Dict, Optional

from ..engines.base import Engine
from ..engines.placement import parse_devices, plan_placement
from ..engines.registry import is_gpu
from ..engines.select import check_request, device_index, stage_engines
from ..errors import UserError
from ..fileio import check_writable, write_json_atomic
from .pipeline import StreamPipeline
from .report import StreamOptions, StreamReport
from .preview import ContactSheet
from .sinks import VIDEO_CODECS, open_sink, pick_video_codec
from .live import open_source
from .sources import FrameSource


@dataclasses.dataclass
class RenderRequest:
    """One render, as the user asked for it (the CLI's options, checked here)."""

    keypoints: str                      # a file or folder, "-" (stdin) or tcp://127.0.0.1:PORT
    output: str                         # out.mp4, a frames folder, or "-" (raw frames on stdout)
    backend: str = "auto"
    precision: Optional[str] = None
    fmt: Optional[str] = None
    audio: Optional[Path] = None
    codec: str = "auto"
    devices: Optional[str] = None       # --devices as given (None: one worker on the backend's kind)
    stream: StreamOptions = dataclasses.field(default_factory=StreamOptions)
    follow: bool = False
    follow_timeout: float = 10.0
    idle_timeout: float = 30.0
    preview: Optional[Path] = None
    preview_every: int = 25
    metrics: Optional[Path] = None
    serve: Optional[str] = None         # --serve HOST:PORT: the browser preview (runtime/serve.py)


@dataclasses.dataclass
class StreamResult:
    report: StreamReport
    backend: str
    canvas_hw: tuple
    preview: Optional[Path] = None
    backend_choice: Optional[str] = None    # what auto picked and why
    precision: Optional[str] = None         # what ran (auto may pick one it measured)
    served: Optional[str] = None            # the browser preview: where it was and what it showed


def render_stream(manifest, adapter, request: RenderRequest, *, torch_stages=None,
                  source: Optional[FrameSource] = None, log: Callable[[str], None] = lambda message: None,
                  progress=lambda done, total, fps: None, stdin: Optional[IO] = None) -> StreamResult:
    """Render ``request`` with the exported model ``manifest`` (engines.select builds its engines,
    ``torch_stages`` for the torch backends) through ``adapter`` (the family's, identity loaded).
    ``source`` replaces the request's keypoints (e.g. poses computed by a family's own mode)."""
    options = request.stream
    if options.batch < 1 or options.max_wait_ms < 0:
        raise UserError(f"--batch {options.batch} must be >= 1 and --max-wait-ms {options.max_wait_ms:g} >= 0")
    if request.codec not in VIDEO_CODECS + ("auto",):
        raise UserError(f"unknown video codec {request.codec!r}; expected auto or one of: {', '.join(VIDEO_CODECS)}")
    model_dir = Path(manifest.dir)
    backend, precision, why = check_request(model_dir, manifest, request.backend, request.precision)
    devices = parse_devices(request.devices, default="0" if is_gpu(backend) else "cpu")
    for device in dict.fromkeys(devices):
        device_index(backend, device)
    placement = plan_placement(manifest["stages"], devices, options.replicate)
    max_batch = min(manifest.stage(name).max_batch for name in adapter.frame_stages)
    options = dataclasses.replace(options, devices=devices, batch=max(1, min(options.batch, max_batch)))
    codec = pick_video_codec(request.codec)

    def engine_factory(device: str, threads: Optional[int]) -> Dict[str, Engine]:
        _, engines = stage_engines(model_dir, manifest, backend, device=device, threads=threads,
                                   precision=precision, torch_stages=torch_stages)
        return {engine.spec.name: engine for engine in engines}

    sheet = None if request.preview is None else ContactSheet(Path(request.preview), request.preview_every)
    if sheet is not None:
        check_writable(sheet.path, "the preview")
    if request.metrics is not None:
        check_writable(request.metrics, "the metrics")
    if source is None:
        source = open_source(str(request.keypoints), adapter.open_file, options.fps, follow=request.follow,
                             idle_seconds=request.follow_timeout, log=log, stdin=stdin,
                             idle_timeout=request.idle_timeout)
    server = None
    try:
        sink = open_sink(request.output, request.fmt, fps=options.fps, audio=request.audio, codec=codec,
                         frame_size=tuple(adapter.canvas_hw))
        try:
            if request.serve is not None:
                from .serve import PreviewServer

                server = PreviewServer(request.serve, log=log)
            pipeline = StreamPipeline(adapter, engine_factory, source, sink, options, log=log, progress=progress,
                                      preview=sheet, placement=placement, live=server)
            if server is not None:
                server.figures = pipeline.latency.live
            report = pipeline.run()
        except BaseException:
            sink.abort()        # a no-op once the pipeline closed it
            raise
    finally:
        if server is not None:
            server.close()
        source.close()
    if request.metrics is not None:
        write_json_atomic(request.metrics, {"model": str(model_dir), "backend": backend,
                                            "precision": precision or "fp32",
                                            "canvas": list(adapter.canvas_hw), "batch": options.batch,
                                            "devices": list(options.devices), "replicate": options.replicate,
                                            "placement": placement.to_dict(), **report.to_dict()},
                          what="the metrics")
    return StreamResult(report, backend, tuple(adapter.canvas_hw), None if sheet is None else sheet.path, why,
                        precision, served=None if server is None else server.note())
