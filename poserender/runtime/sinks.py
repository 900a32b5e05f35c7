"""Frame sinks: batches of finished frames -> an .mp4 file or a folder of numbered images.

Frames are numpy uint8 arrays shaped (B, H, W, 3) in BGR channel order (OpenCV convention), as
the frame stage outputs them. Output is written under a temporary name beside the target and
renamed onto it when complete, so a file or folder with the final name is always whole;
``abort()`` (or an exception inside ``with``) removes the partial output.

The rule for an output that exists already, the same for every output poserender writes: it is
replaced when the new one is complete, and the summary says so (``SinkSummary.replaced``); a
frame folder holding anything but numbered frames is never replaced (those files are not
poserender's to delete).
"""
from __future__ import annotations

import math
import numbers
import os
import re
import shutil
import sys
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Dict, Mapping, Optional, Tuple, Union

import av
import cv2
import numpy as np

from poserender.errors import UserError
from poserender.fileio import temp_dir_beside, temp_file_beside
from poserender.runtime.audio import AudioTrack, reason
from poserender.runtime.sinkbase import FrameSink, SinkSummary, add_h264_streams

PathLike = Union[str, Path]

SINK_FORMATS: Dict[str, str] = {
    "mp4": "H.264 video file",
    "png": "folder of numbered PNG files (000000.png, ...)",
    "jpg": "folder of numbered JPEG files (000000.jpg, ..., quality 95)",
    "raw": "raw BGR24 frames on stdout (-o -), e.g. for ffmpeg -f rawvideo -pix_fmt bgr24",
    "none": "nothing written: the frames are only shown (render --serve without -o)",
    "live": "H.264 sent live to a receiver, chosen by the -o URL: udp:// tcp:// (MPEG-TS), rtmp://, rtsp://",
}
STDOUT = "-"
VIDEO_CODECS: Tuple[str, ...] = ("libx264", "h264_nvenc")
# Sample rates the AAC encoder accepts; other input rates are resampled to 48 kHz.
_FRAME_FILE = re.compile(r"^\d{6,}\.(png|jpg)$")


class Mp4Sink(FrameSink):
    """H.264 (yuv420p) in an .mp4, optionally with an audio track re-encoded to AAC.

    Written to ``.<name>.partial-XXXX.mp4`` beside the target and renamed onto it by close() (an
    existing file of that name is replaced then). Audio is encoded as frames arrive, up to the
    video's duration (frames_written / fps), so the muxer can interleave the two.
    """

    format = "mp4"

    def __init__(self, path: Path, fps: Fraction, audio: Optional[AudioTrack] = None,
                 codec: str = "libx264", codec_options: Optional[Mapping[str, str]] = None):
        super().__init__(path)
        self.fps, self.codec, self._audio = fps, codec, audio
        self._codec_options = dict(codec_options or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_beside(path, suffix=".mp4")
        os.close(fd)
        self._tmp_path = Path(tmp)
        try:
            self._container = av.open(tmp, mode="w", format="mp4")
        except BaseException:
            self._tmp_path.unlink()
            raise
        self._video = None

    def _write_impl(self, frames: np.ndarray) -> None:
        if self._video is None:
            self._video = add_h264_streams(self._container, self.codec, self.fps, frames.shape[1], frames.shape[2],
                                           self._codec_options, self._audio, self.path)
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            frame.time_base, frame.pts = 1 / self.fps, self.frames_written
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1
        if self._audio is not None:
            self._audio.encode_until(self._container, self._audio_samples_due())

    def _audio_samples_due(self) -> int:
        return int(Fraction(self.frames_written * self._audio.rate) / self.fps)

    def _close_impl(self) -> SinkSummary:
        if self._video is None:
            raise UserError("no frames were written, so no video was created", self.path)
        audio_seconds = None
        if self._audio is not None:
            self._audio.encode_until(self._container, self._audio_samples_due())
            self._audio.finish(self._container)
            audio_seconds = self._audio.samples_sent / self._audio.rate
        self._container.mux(self._video.encode(None))
        self._container.close()
        replaced = self.path.exists()
        os.replace(self._tmp_path, self.path)
        return SinkSummary(self.path, self.format, self.frames_written,
                           float(self.frames_written / self.fps), audio_seconds, replaced)

    def _abort_impl(self) -> None:
        try:
            self._container.close()
        except Exception:  # a half-written container may fail to write its trailer; it goes anyway
            pass
        if self._audio is not None:
            self._audio.close()
        self._tmp_path.unlink(missing_ok=True)


class NullSink(FrameSink):
    """Counts the frames and keeps none (the browser preview shows them: ``--serve`` without ``-o``)."""

    format = "none"

    def __init__(self):
        super().__init__(Path("(no output)"))

    def _write_impl(self, frames: np.ndarray) -> None:
        self.frames_written += len(frames)

    def _close_impl(self) -> SinkSummary:
        return SinkSummary(self.path, self.format, self.frames_written,
                           note=f"no output written ({self.frames_written} frames shown only)")

    def _abort_impl(self) -> None:
        pass


class RawStdoutSink(FrameSink):
    """Raw frames, H x W x 3 bytes each in BGR order, on stdout (``-o -``), nothing else.

    For piping into a player, ffmpeg (``-f rawvideo -pix_fmt bgr24 -s WxH -r FPS -i -``) or a
    streaming server. When the reader goes away (broken pipe) writing stops quietly and
    ``reader_gone`` is set, so the stream can end instead of failing.
    """

    format = "raw"

    def __init__(self, stream: Optional[BinaryIO] = None):
        super().__init__(Path("<stdout>"))
        self._stream = stream if stream is not None else sys.stdout.buffer
        self.reader_gone = False

    def _write_impl(self, frames: np.ndarray) -> None:
        if self.reader_gone:
            return
        try:
            self._stream.write(np.ascontiguousarray(frames).tobytes())
            self._stream.flush()
        except BrokenPipeError:
            self.reader_gone = True
            return
        self.frames_written += len(frames)

    def _close_impl(self) -> SinkSummary:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self.reader_gone = True
        note = (f"the reader of stdout went away after {self.frames_written} frames: the stream ended there"
                if self.reader_gone else None)
        return SinkSummary(self.path, self.format, self.frames_written, note=note)

    def _abort_impl(self) -> None:
        pass    # bytes already sent cannot be taken back


class ImageFolderSink(FrameSink):
    """A folder of numbered images (``000000.png``, ...), built in ``<out>.partial-XXXX/``."""

    def __init__(self, path: Path, fmt: str):
        super().__init__(path)
        self.format = fmt
        _check_folder_target(path)
        self._params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpg" else []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = temp_dir_beside(path)

    def _write_impl(self, frames: np.ndarray) -> None:
        for image in frames:
            name = self._tmp_dir / f"{self.frames_written:06d}.{self.format}"
            if not cv2.imwrite(str(name), np.ascontiguousarray(image), self._params):
                raise UserError("could not write frame image (disk full?)", name)
            self.frames_written += 1

    def _close_impl(self) -> SinkSummary:
        _check_folder_target(self.path)  # it may have changed since open
        replaced = self.path.is_dir() and any(self.path.iterdir())
        if self.path.is_dir():
            shutil.rmtree(self.path)  # empty, or holding only numbered frames
        os.replace(self._tmp_dir, self.path)
        return SinkSummary(self.path, self.format, self.frames_written, replaced=replaced)

    def _abort_impl(self) -> None:
        shutil.rmtree(self._tmp_dir, ignore_errors=True)


def _check_folder_target(path: Path) -> None:
    """Refuse a file, or a folder holding anything but numbered frames (an earlier render's frames
    are replaced)."""
    if path.is_dir():
        entries = list(path.iterdir())
        if not all(_FRAME_FILE.match(e.name) and e.is_file() for e in entries):
            raise UserError("output folder holds files other than numbered frames (000000.png, ...); refusing "
                            "to replace it: choose a new or empty folder", path)
    elif path.exists():
        raise UserError("output exists and is not a folder; expected a folder for image frames", path)


def pick_video_codec(codec: str = "auto") -> str:
    """``auto``: h264_nvenc when this FFmpeg has it and an NVIDIA GPU lets it open, else libx264."""
    if codec != "auto":
        return codec
    try:
        context = av.CodecContext.create("h264_nvenc", "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()      # freed with the object; opening is the test
        return "h264_nvenc"
    except Exception:  # not in this build, no GPU, no driver: any failure means "not usable here"
        return "libx264"


def _frame_rate(fps: float) -> Fraction:
    """fps as an exact Fraction; 23.976, 29.97 and 59.94 mean the NTSC rates n*1000/1001."""
    if not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise UserError(f"fps must be a positive number; got {fps!r}")
    for n in (24, 30, 60):
        if abs(fps - n * 1000 / 1001) < 0.005:
            return Fraction(n * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def _resolve_format(path: PathLike, fmt: Optional[str]) -> str:
    valid = ", ".join(SINK_FORMATS)
    if fmt is not None:
        key = fmt.lower().lstrip(".").replace("jpeg", "jpg")
        if key not in SINK_FORMATS:
            raise UserError(f"unknown output format {fmt!r}; expected one of: {valid}")
        return key
    text, target = str(path), Path(path)
    suffix = target.suffix.lower()
    if suffix == ".mp4" and not text.endswith(("/", os.sep)):
        return "mp4"
    if text.endswith(("/", os.sep)) or target.is_dir() or not suffix:
        return "png"
    if suffix in (".png", ".jpg", ".jpeg"):
        raise UserError(f"{suffix} output is a folder of numbered frames, not one image; give a "
                        "folder path (e.g. frames/) and the format png or jpg", path)
    raise UserError(f"unknown output suffix {target.suffix!r}; expected .mp4 or a folder path "
                    f"(formats: {valid})", path)


def open_sink(path: PathLike, fmt: Optional[str] = None, fps: float = 15.0,
              audio: Optional[PathLike] = None, *, codec: str = "libx264", crf: int = 18,
              codec_options: Optional[Mapping[str, str]] = None,
              frame_size: Optional[Tuple[int, int]] = None) -> FrameSink:
    """Open a sink for BGR uint8 frames at ``path``; use it as a context manager.

    fmt: "mp4" | "png" | "jpg" | "raw" | "live"; None infers it (``.mp4`` -> mp4; ``-`` -> raw; a
    URL ``udp://``, ``tcp://``, ``rtmp://``, ``rtsp://`` -> live, runtime/netsink.py, which needs
    ``frame_size`` (H, W) to connect before the first frame; no suffix, a trailing ``/`` or an
    existing folder -> png). png/jpg write a folder of numbered files. fps: video frame rate,
    also used to keep the audio in sync. audio: a file with an audio stream, muxed into the mp4
    as AAC and cut to the video's duration. crf: H.264 quality, 0-51, lower is better (``cq``
    for h264_nvenc); codec_options go to the encoder and override these defaults. An existing
    output is replaced when the new one is complete (see the module doc). Every check on the
    user's input, the audio file included, happens here, before any output is created.
    """
    if fmt == "none":
        return NullSink()
    if "://" in str(path) or fmt == "live":      # a live receiver (runtime/netsink.py)
        from .netsink import open_live_sink

        if "://" not in str(path) or fmt not in (None, "live"):
            raise UserError(f"live output goes to a URL (udp://HOST:PORT, tcp://, rtmp://, rtsp://); got -o {path} "
                            f"with format {fmt}")
        if codec not in VIDEO_CODECS:
            raise UserError(f"unknown video codec {codec!r}; expected one of: {', '.join(VIDEO_CODECS)}")
        if frame_size is None:
            raise ValueError("a live output needs the frame size (H, W) to connect before the first frame")
        track = None if audio is None else AudioTrack(Path(audio))
        try:
            return open_live_sink(str(path), _frame_rate(fps), frame_size, track, codec)
        except BaseException:
            if track is not None:
                track.close()
            raise
    if str(path) == STDOUT or fmt == "raw":
        if str(path) != STDOUT or fmt not in (None, "raw"):
            raise UserError(f"raw frames go to stdout only: use -o - (got -o {path} with format {fmt})")
        if audio is not None:
            raise UserError("audio can only be muxed into mp4 output; -o - writes raw video frames")
        _frame_rate(fps)
        return RawStdoutSink()
    fmt = _resolve_format(path, fmt)
    rate = _frame_rate(fps)
    target = Path(path)
    if fmt != "mp4" and audio is not None:
        raise UserError(f"audio can only be muxed into mp4 output; the output format is {fmt}", path)
    if fmt == "mp4":
        if codec not in VIDEO_CODECS:
            raise UserError(f"unknown video codec {codec!r}; expected one of: "
                            f"{', '.join(VIDEO_CODECS)}")
        try:
            av.codec.Codec(codec, "w")
        except (ValueError, av.FFmpegError):
            raise UserError(f"the {codec} encoder is not in this PyAV/FFmpeg build") from None
        if not isinstance(crf, numbers.Real) or not 0 <= crf <= 51:
            raise UserError(f"crf must be between 0 and 51 (lower is better quality); got {crf!r}")
        if target.is_dir():
            raise UserError("output is an existing folder; expected a video file name", path)
    track = None if audio is None else AudioTrack(Path(audio))
    try:
        if fmt != "mp4":
            return ImageFolderSink(target, fmt)
        options = {"crf": str(crf)} if codec == "libx264" else {"rc": "vbr", "cq": str(int(crf))}
        options.update(codec_options or {})
        return Mp4Sink(target, rate, audio=track, codec=codec, codec_options=options)
    except BaseException as e:
        if track is not None:
            track.close()
        if isinstance(e, OSError):  # no permission, read-only disk, ...
            raise UserError(f"cannot create the output ({reason(e)})", path) from None
        raise
