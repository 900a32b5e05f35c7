"""What every frame sink is: the summary of a closed output and the base class that checks
batches, counts frames and gives close/abort/``with`` semantics (runtime/sinks.py: files, folders,
stdout; runtime/netsink.py: live outputs); and the H.264 stream both video sinks open."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import av
import numpy as np

from ..errors import UserError
from .audio import AudioTrack, reason


@dataclass(frozen=True)
class SinkSummary:
    """What a closed sink wrote; ``seconds`` = frames / fps (None for image folders)."""

    path: Path
    format: str
    frames_written: int
    seconds: Optional[float] = None
    audio_seconds: Optional[float] = None
    replaced: bool = False          # an earlier output of that name was replaced
    note: Optional[str] = None      # what the summary should say about it (a live output: where it went)

    def __str__(self) -> str:
        if self.note:
            return self.note
        extra = "" if self.seconds is None else f", {self.seconds:.2f} s"
        if self.audio_seconds is not None:
            extra += f", audio {self.audio_seconds:.2f} s"
        return f"wrote {self.frames_written} frames{extra} to {self.path}" + (" (replaced)" if self.replaced else "")


class FrameSink(abc.ABC):
    """Base sink: checks batches, counts frames, and gives close/abort/``with`` semantics."""

    format = ""

    def __init__(self, path: Path):
        self.path = path
        self.frames_written = 0
        self._frame_size: Optional[Tuple[int, int]] = None  # (H, W) of the first batch
        self._state = "open"  # open -> closed | aborted
        self._summary: Optional[SinkSummary] = None

    def write(self, frames: np.ndarray) -> None:
        """Append a batch of frames: uint8, (B, H, W, 3), BGR; H x W constant over the output."""
        if self._state != "open":
            raise RuntimeError(f"write() on a {self._state} sink ({self.path})")
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
                or frames.shape[-1] != 3 or 0 in frames.shape[1:3]:
            got = (f"{frames.dtype} array of shape {frames.shape}" if isinstance(frames, np.ndarray)
                   else type(frames).__name__)
            raise ValueError(f"frames must be a uint8 array shaped (B, H, W, 3), BGR; got {got}")
        size = (int(frames.shape[1]), int(frames.shape[2]))
        if self._frame_size is None:
            self._frame_size = size
        elif size != self._frame_size:
            raise ValueError("frame size changed within one output from "
                             "{}x{} to {}x{} (H x W)".format(*self._frame_size, *size))
        if len(frames):
            self._write_impl(frames)

    def close(self) -> SinkSummary:
        """Finish the output and rename it onto its final name; calling it again is a no-op."""
        if self._summary is not None:
            return self._summary
        if self._state != "open":
            raise RuntimeError(f"close() on an {self._state} sink ({self.path})")
        try:
            self._summary = self._close_impl()
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self._summary

    def abort(self) -> None:
        """Discard the partial output (temporary file or folder); a no-op once closed."""
        if self._state == "open":
            self._state = "aborted"
            self._abort_impl()

    def __enter__(self) -> "FrameSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @abc.abstractmethod
    def _write_impl(self, frames: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _close_impl(self) -> SinkSummary: ...

    @abc.abstractmethod
    def _abort_impl(self) -> None: ...


def add_h264_streams(container: Any, codec: str, fps: Fraction, height: int, width: int,
                     options: Mapping[str, str], audio: Optional[AudioTrack], where: Any) -> Any:
    """Add the yuv420p video stream (opened, so a bad encoder setting fails here) and the audio
    stream, if any, to ``container``; every stream must exist before the first packet is muxed.
    ``where``: the output, for the error line. Returns the video stream."""
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size; got {height}x{width} (H x W)")
    video = container.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.time_base = 1 / fps
    video.codec_context.options = dict(options)
    try:
        video.codec_context.open()
    except av.FFmpegError as exc:
        raise UserError(f"cannot open the {codec} encoder for {width}x{height} frames ({reason(exc)})",
                        where) from None
    if audio is not None:
        audio.add_stream_to(container)
    return video
