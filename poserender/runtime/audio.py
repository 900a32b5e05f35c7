"""Audio for mp4 sinks: decode any file PyAV reads, re-encode as AAC in step with the video.

The track is opened (and every check on the file made) before any output exists; samples are
encoded as video frames arrive so the muxer interleaves audio and video, and the audio is cut
at the video's duration.
"""
from __future__ import annotations

import collections
from fractions import Fraction
from pathlib import Path
from typing import Deque

import av
import numpy as np

from poserender.errors import UserError

# Sample rates the AAC encoder accepts; other input rates are resampled to 48 kHz.
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def reason(error: Exception) -> str:
    """The short cause of an OS/FFmpeg error (its strerror when it has one)."""
    return str(getattr(error, "strerror", None) or error)


class AudioTrack:
    """An audio file, decoded lazily and re-encoded to AAC; its t=0 is the video's frame 0."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise UserError("audio file not found", path)
        try:
            self._input = av.open(str(path))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise UserError(f"cannot open as audio ({reason(e)})", path) from None
        if not self._input.streams.audio:
            self._input.close()
            raise UserError("has no audio stream; expected e.g. a .wav or an .mp4 with audio", path)
        stream = self._input.streams.audio[0]
        self.rate = stream.rate if stream.rate in _AAC_RATES else 48000
        self.layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        self._decoded = self._input.decode(stream)
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self._pending: Deque[np.ndarray] = collections.deque()  # (channels, samples) float32
        self._flushed = False
        self._stream = None
        self.samples_sent = 0
        # Decode the first chunk now, so an undecodable stream fails before any output exists.
        if not self._refill():
            self.close()
            raise UserError("has an audio stream but no decodable audio", path)

    def add_stream_to(self, container) -> None:
        self._stream = container.add_stream("aac", rate=self.rate)
        self._stream.layout = self.layout
        self._stream.format = "fltp"

    def _refill(self) -> bool:
        """Decode until a resampled chunk is pending; False at the end of the audio."""
        while not self._pending:
            try:
                decoded = next(self._decoded, None)
            except av.FFmpegError as e:
                self.close()
                raise UserError(f"audio decoding failed ({reason(e)})", self.path) from None
            if decoded is None:
                if self._flushed:
                    return False
                self._flushed = True  # resample(None) below drains the resampler
            for chunk in self._resampler.resample(decoded):
                if chunk.samples:
                    self._pending.append(chunk.to_ndarray())
        return True

    def encode_until(self, container, total_samples: int) -> None:
        """Encode and mux audio up to ``total_samples`` from its start, or to its end."""
        while self.samples_sent < total_samples and (self._pending or self._refill()):
            chunk = self._pending.popleft()
            n = min(chunk.shape[1], total_samples - self.samples_sent)
            if n < chunk.shape[1]:
                self._pending.appendleft(chunk[:, n:])
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk[:, :n]), format="fltp",
                                               layout=self.layout)
            frame.sample_rate, frame.time_base = self.rate, Fraction(1, self.rate)
            frame.pts = self.samples_sent
            self.samples_sent += n
            container.mux(self._stream.encode(frame))

    def finish(self, container) -> None:
        container.mux(self._stream.encode(None))
        self.close()

    def close(self) -> None:
        self._input.close()
