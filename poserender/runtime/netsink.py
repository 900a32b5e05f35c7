"""Live outputs: H.264 sent to a receiver while it renders, chosen by the ``-o`` URL (PyAV).

=================================  =============  ===========================================
``-o``                             container      the receiver
=================================  =============  ===========================================
``udp://127.0.0.1:5000``           MPEG-TS        anything listening there (``ffplay udp://127.0.0.1:5000``)
``tcp://127.0.0.1:5000``           MPEG-TS        a listener (``ffplay tcp://127.0.0.1:5000?listen``)
``rtmp://HOST/app/key``            FLV            a streaming server (nginx-rtmp, MediaMTX, OBS, a platform)
``rtsp://HOST:8554/path``          RTSP (RTP)     an RTSP server that accepts publishing (MediaMTX)
=================================  =============  ===========================================

Low-latency encoding: libx264 ``ultrafast`` with ``tune=zerolatency`` (no lookahead, no frame
threads), no B-frames, a keyframe every second (a viewer who joins late waits at most that
long); h264_nvenc ``p1``/``ull`` likewise. Each packet is sent as soon as it is encoded.
Timestamps follow the wall clock from the first frame (never two frames on one tick), so a
player shows frames at the pace they were made even when frames are dropped.

There is no file, so nothing is written under a temporary name: what was sent has been sent.
The address is the user's to name; one that is not loopback is allowed (the user named it) and
the summary says that the stream left the machine. A connection the receiver refuses is one
error line before any frame is rendered. A receiver that goes away later (a closed or reset
connection, or no progress for :data:`RW_TIMEOUT_S`) ends the stream as a counted end: the
frames not delivered are dropped (reason ``receiver-gone``), the summary says when and why, and
the exit code is 0, as when the reader of ``-o -`` goes away. UDP has no receiver to lose:
datagrams are sent whether or not anything listens.
"""
from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Optional, Tuple

import av
import numpy as np

from ..errors import UserError
from .live import is_loopback
from .audio import AudioTrack, reason
from .sinkbase import FrameSink, SinkSummary, add_h264_streams

#: scheme -> (container format, what it is)
LIVE_SCHEMES: Dict[str, Tuple[str, str]] = {
    "udp": ("mpegts", "MPEG-TS over UDP"),
    "tcp": ("mpegts", "MPEG-TS over a TCP connection to a listening receiver"),
    "rtmp": ("flv", "RTMP (FLV) to a streaming server"),
    "rtsp": ("rtsp", "RTSP publishing (RTP over TCP) to an RTSP server"),
}
#: a receiver that accepts nothing for this long is gone
RW_TIMEOUT_S = 5.0
UDP_PACKET = 1316       # 7 MPEG-TS packets: one datagram that fits an Ethernet MTU


def is_live_url(output: str) -> bool:
    return "://" in str(output)


@dataclass(frozen=True)
class LiveTarget:
    url: str            # as passed to FFmpeg
    shown: str          # as the user wrote it
    scheme: str
    host: str
    port: Optional[int]
    loopback: bool

    @property
    def format(self) -> str:
        return LIVE_SCHEMES[self.scheme][0]


def parse_live_url(output: str) -> LiveTarget:
    """Check a live ``-o`` URL: a known scheme this FFmpeg supports, a host, a port where the
    scheme needs one. Whether the host is a loopback address is recorded, not refused."""
    parts = urllib.parse.urlsplit(output)
    scheme = parts.scheme.lower()
    expected = ", ".join(f"{s}://" for s in LIVE_SCHEMES)
    if scheme not in LIVE_SCHEMES:
        raise UserError(f"-o {output}: unknown live output scheme {parts.scheme + '://'!r}; expected one of {expected} "
                        "(or a file name, a folder, or '-')")
    fmt = LIVE_SCHEMES[scheme][0]
    if fmt not in av.formats_available:
        raise UserError(f"-o {output}: this PyAV/FFmpeg build has no {fmt} muxer, needed for {scheme}://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, -1
    if not host or port == -1 or (scheme in ("udp", "tcp") and not port):
        raise UserError(f"-o {output}: expected {scheme}://HOST:PORT" + ("/PATH" if scheme in ("rtmp", "rtsp") else "")
                        + (", e.g. udp://127.0.0.1:5000" if scheme == "udp" else ""))
    url = output
    # FFmpeg reads these protocols' options from the URL (its udp:// and tcp:// take a query)
    extra = {"udp": {"pkt_size": str(UDP_PACKET)},
             "tcp": {"timeout": str(int(RW_TIMEOUT_S * 1e6)), "tcp_nodelay": "1"}}.get(scheme, {})
    given = urllib.parse.parse_qs(parts.query)
    added = "&".join(f"{k}={v}" for k, v in extra.items() if k not in given)
    if added:
        url += ("&" if parts.query else "?") + added
    return LiveTarget(url, output, scheme, host, port, is_loopback(host))


def encoder_options(codec: str, fps: float) -> Dict[str, str]:
    """Low-latency H.264 settings: no B-frames, no lookahead, a keyframe each second."""
    gop = str(max(1, round(fps)))
    if codec == "h264_nvenc":
        return {"preset": "p1", "tune": "ull", "zerolatency": "1", "bf": "0", "g": gop, "rc": "cbr"}
    return {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "g": gop, "keyint_min": gop, "sc_threshold": "0",
            "crf": "23"}


class LiveStreamSink(FrameSink):
    """H.264 frames to a live receiver (``udp://``, ``tcp://``, ``rtmp://``, ``rtsp://``).

    ``reader_gone`` is set when the receiver goes away (as :class:`RawStdoutSink` does for a
    closed pipe): writing stops, the pipeline ends the stream and counts what was not sent.
    """

    format = "live"

    def __init__(self, target: LiveTarget, fps: Fraction, frame_size: Tuple[int, int],
                 audio: Optional[AudioTrack] = None, codec: str = "libx264"):
        """``frame_size`` (H, W): the streams are set up and the receiver connected now, so a
        receiver that is not there is one error line before any frame is rendered."""
        super().__init__(target.shown)
        self.target, self.fps, self.codec, self._audio = target, fps, codec, audio
        self.reader_gone, self.gone_reason = False, None
        self._video = None
        self._t0: Optional[float] = None
        self._pts = -1
        options = {"flush_packets": "1"}
        if target.scheme == "rtsp":
            options.update(rtsp_transport="tcp", timeout=str(int(RW_TIMEOUT_S * 1e6)))
        try:
            self._container = av.open(target.url, mode="w", format=target.format, container_options=options)
        except (av.FFmpegError, OSError) as exc:
            raise UserError(f"-o {target.shown}: cannot open the {target.format} output ({reason(exc)})") from None
        try:
            self._video = add_h264_streams(self._container, codec, fps, *frame_size,
                                           encoder_options(codec, float(fps)), audio, self.path)
            self._container.start_encoding()    # connects (tcp, rtmp, rtsp) and sends the header
        except UserError:
            self._quiet_close()
            raise
        except (av.FFmpegError, OSError) as exc:
            self._quiet_close()
            raise UserError(f"-o {target.shown}: cannot reach the receiver ({reason(exc)}); expected "
                            f"{_expected(target)}") from None

    def _write_impl(self, frames: np.ndarray) -> None:
        if self.reader_gone:
            return
        try:
            for image in frames:
                now = time.perf_counter()
                self._t0 = now if self._t0 is None else self._t0
                # the wall clock from the first frame, never two frames on one tick
                self._pts = max(self._pts + 1, round((now - self._t0) * float(self.fps)))
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
                frame.time_base, frame.pts = 1 / self.fps, self._pts
                self._container.mux(self._video.encode(frame))
                self.frames_written += 1
            if self._audio is not None:
                self._audio.encode_until(self._container, int(Fraction((self._pts + 1) * self._audio.rate) / self.fps))
        except (av.FFmpegError, OSError) as exc:
            self.reader_gone, self.gone_reason = True, reason(exc)

    def _close_impl(self) -> SinkSummary:
        if not self.reader_gone:
            try:
                if self._audio is not None:
                    self._audio.finish(self._container)
                self._container.mux(self._video.encode(None))
            except (av.FFmpegError, OSError) as exc:
                self.reader_gone, self.gone_reason = True, reason(exc)
        self._quiet_close()
        seconds = None if self._pts < 0 else (self._pts + 1) / float(self.fps)
        return SinkSummary(self.path, self.format, self.frames_written, seconds, note=self.note())

    def note(self) -> str:
        where = "" if self.target.loopback else f" (not loopback: the stream left this machine for {self.target.host})"
        gone = (f"; the receiver went away after {self.frames_written} frames ({self.gone_reason}): the stream ended "
                "there") if self.reader_gone else ""
        return f"sent {self.frames_written} frames as {LIVE_SCHEMES[self.target.scheme][1]} to {self.path}{where}{gone}"

    def _quiet_close(self) -> None:
        try:
            self._container.close()
        except Exception:       # the receiver is gone: the trailer cannot be sent, nothing to keep
            pass
        if self._audio is not None:
            self._audio.close()

    def _abort_impl(self) -> None:
        self._quiet_close()


def _expected(target: LiveTarget) -> str:
    return {"udp": "a host and port to send datagrams to",
            "tcp": f"a receiver listening on {target.host}:{target.port} (e.g. ffplay tcp://{target.host}:"
                   f"{target.port}?listen)",
            "rtmp": "an RTMP server accepting the stream at that path (nginx-rtmp, MediaMTX, ...)",
            "rtsp": "an RTSP server accepting publishing at that path (e.g. MediaMTX)"}[target.scheme]


def open_live_sink(output: str, fps: Fraction, frame_size: Tuple[int, int], audio: Optional[AudioTrack],
                   codec: str) -> LiveStreamSink:
    return LiveStreamSink(parse_live_url(output), fps, frame_size, audio=audio, codec=codec)
