"""Tests for poserender.runtime.sinks: mp4 (with and without audio) and image-folder sinks."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from poserender.errors import UserError
from poserender.runtime.sinks import SinkSummary, open_sink

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
OLIVER_VIDEO = SHARED / "data" / "oliver" / "varying_tmplt.mp4"

BLUE, GREEN, RED = (255, 0, 0), (0, 255, 0), (0, 0, 255)  # BGR


def colour_frames(n: int, size: int = 64) -> np.ndarray:
    """n BGR frames cycling pure blue, green, red, with a white square in the top-left corner."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = (BLUE, GREEN, RED)[i % 3]
        frames[i, :16, :16] = 255
    return frames


def make_tone(path: Path, seconds: float = 2.0, rate: int = 44100) -> Path:
    """A 440 Hz stereo sine tone, encoded by PyAV (wav -> pcm_s16le, mp4/m4a -> aac)."""
    codec = "pcm_s16le" if path.suffix == ".wav" else "aac"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(tone), 4096):
            chunk = tone[start:start + 4096]
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def probe(path: Path) -> dict:
    """Stream count, video frames/size/fps, decoded BGR frames and per-stream durations (s)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        durations = {s.type: float(s.duration * s.time_base) for s in container.streams}
        return {"streams": len(container.streams), "types": sorted(s.type for s in container.streams),
                "fps": video.average_rate, "size": (video.height, video.width),
                "frames": np.stack(frames), "durations": durations}


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_mp4_frames_size_fps_and_bgr_colours(tmp_path):
    out = tmp_path / "out.mp4"
    frames = colour_frames(30)
    with open_sink(out, fps=15) as sink:
        sink.write(frames[:7])
        sink.write(frames[7:])
        assert sink.frames_written == 30
        assert not out.exists(), "the final name must not exist before close"
    summary = sink.close()
    assert isinstance(summary, SinkSummary)
    assert (summary.path, summary.frames_written, summary.format) == (out, 30, "mp4")
    assert summary.seconds == pytest.approx(2.0)
    info = probe(out)
    assert info["types"] == ["video"]
    assert info["frames"].shape == (30, 64, 64, 3)
    assert info["fps"] == 15
    assert info["durations"]["video"] == pytest.approx(2.0, abs=0.07)
    centre = info["frames"][:, 40, 40].astype(int)
    for i, expected in enumerate((BLUE, GREEN, RED) * 10):
        assert np.abs(centre[i] - expected).max() < 12, (i, centre[i], expected)
    assert info["frames"][:, 4, 4].min() > 240  # the white corner
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fps, expected", [(25, Fraction(25)), (29.97, Fraction(30000, 1001)),
                                           (12.5, Fraction(25, 2))])
def test_mp4_frame_rates(tmp_path, fps, expected):
    out = tmp_path / "rate.mp4"
    with open_sink(out, fps=fps) as sink:
        sink.write(colour_frames(10, size=32))
    info = probe(out)
    assert info["fps"] == expected
    assert info["durations"]["video"] == pytest.approx(10 / float(expected), abs=0.05)


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])
def test_mp4_with_audio_is_cut_to_video_duration(tmp_path, suffix):
    tone = make_tone(tmp_path / f"tone{suffix}", seconds=2.0)
    out = tmp_path / "talk.mp4"
    with open_sink(out, fps=15, audio=tone) as sink:
        for start in range(0, 15, 4):  # 1 s of video in uneven batches
            sink.write(colour_frames(15)[start:start + 4])
    assert sink.close().audio_seconds == pytest.approx(1.0, abs=0.01)
    info = probe(out)
    assert info["types"] == ["audio", "video"]
    assert len(info["frames"]) == 15
    assert info["durations"]["audio"] == pytest.approx(info["durations"]["video"], abs=0.1)
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate) == ("aac", 44100)
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert np.abs(samples).max() > 0.3, "the tone must survive re-encoding"


def test_audio_shorter_than_video(tmp_path):
    tone = make_tone(tmp_path / "short.wav", seconds=0.5, rate=16000)
    out = tmp_path / "long.mp4"
    with open_sink(out, fps=15, audio=tone) as sink:
        sink.write(colour_frames(30))  # 2 s of video
    assert sink.close().audio_seconds == pytest.approx(0.5, abs=0.01)
    info = probe(out)
    assert len(info["frames"]) == 30
    assert info["durations"]["audio"] == pytest.approx(0.5, abs=0.1)


@pytest.mark.skipif(not OLIVER_VIDEO.exists(), reason=f"shared data not found: {OLIVER_VIDEO} "
                    "(../shared beside the repository)")
def test_audio_from_the_oliver_clip(tmp_path):
    out = tmp_path / "oliver.mp4"
    with open_sink(out, fps=15, audio=OLIVER_VIDEO) as sink:
        sink.write(colour_frames(45))  # 3 s of a ~20 s soundtrack
    info = probe(out)
    assert info["types"] == ["audio", "video"]
    assert info["durations"]["video"] == pytest.approx(3.0, abs=0.07)
    assert info["durations"]["audio"] == pytest.approx(3.0, abs=0.1)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].rate == 16000


def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "broken.mp4"
    tone = make_tone(tmp_path / "tone.wav", seconds=1.0)
    with pytest.raises(KeyboardInterrupt):
        with open_sink(out, audio=tone) as sink:
            sink.write(colour_frames(5))
            assert len(leftovers(tmp_path)) == 1  # the temporary file exists while writing
            raise KeyboardInterrupt
    assert not out.exists()
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        sink.write(colour_frames(1))


def test_abort_removes_partial_folder_and_close_after_abort_fails(tmp_path):
    out = tmp_path / "frames"
    sink = open_sink(out, fmt="png")
    sink.write(colour_frames(3))
    sink.abort()
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        sink.close()


def test_replaces_an_existing_mp4_only_at_close(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    with open_sink(out) as sink:
        sink.write(colour_frames(4))
        assert out.read_bytes() == b"old"
    assert len(probe(out)["frames"]) == 4


def test_png_folder_exact_pixels(tmp_path):
    out = tmp_path / "frames"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 24, 40, 3), dtype=np.uint8)
    with open_sink(out) as sink:  # no suffix -> png folder
        sink.write(frames[:2])
        sink.write(frames[2:])
    assert sink.close().frames_written == 5
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    for i in range(5):
        np.testing.assert_array_equal(cv2.imread(str(out / f"{i:06d}.png")), frames[i])
    assert leftovers(tmp_path) == []


def test_jpg_folder(tmp_path):
    out = tmp_path / "frames"
    out.mkdir()  # an existing empty folder is replaced
    with open_sink(str(out) + "/", fmt="jpg") as sink:
        sink.write(colour_frames(4))
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.jpg" for i in range(4)]
    image = cv2.imread(str(out / "000002.jpg"))
    assert np.abs(image[40, 40].astype(int) - RED).max() < 8


def test_an_earlier_frame_folder_is_replaced_and_a_foreign_one_refused(tmp_path):
    out = tmp_path / "frames"
    out.mkdir()
    (out / "000000.png").write_bytes(b"x")
    (out / "000007.png").write_bytes(b"x")
    sink = open_sink(out, fmt="png")
    sink.write(colour_frames(2))
    summary = sink.close()
    assert summary.replaced and "(replaced)" in str(summary)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]      # no stale frame 7
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other than numbered frames"):
        open_sink(out, fmt="png")
    assert (out / "notes.txt").read_text() == "mine" and leftovers(tmp_path) == []


def test_an_earlier_mp4_is_replaced_and_the_summary_says_so(tmp_path):
    out = tmp_path / "o.mp4"
    for replaced in (False, True):
        sink = open_sink(out)
        sink.write(colour_frames(2))
        assert sink.close().replaced is replaced


@pytest.mark.parametrize("make_audio, message", [
    (lambda d: d / "missing.wav", "not found"),
    (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "cannot open as audio"),
    (lambda d: (d / "noise.wav").write_bytes(b"RIFF" + bytes(200)) and d / "noise.wav",
     "cannot open as audio"),
])
def test_bad_audio_is_a_user_error_naming_the_file_before_output(tmp_path, make_audio, message):
    audio = make_audio(tmp_path)
    out = tmp_path / "out.mp4"
    with pytest.raises(UserError, match=message) as caught:
        open_sink(out, audio=audio)
    assert audio.name in str(caught.value)
    assert not out.exists() and leftovers(tmp_path) == []


def test_video_without_audio_is_refused_as_audio(tmp_path):
    silent = tmp_path / "silent.mp4"
    with open_sink(silent) as sink:
        sink.write(colour_frames(2))
    with pytest.raises(UserError, match="silent.mp4: has no audio stream"):
        open_sink(tmp_path / "out.mp4", audio=silent)


@pytest.mark.parametrize("path, fmt, message", [
    ("out.avi", None, "unknown output suffix '.avi'.*mp4, png, jpg"),
    ("out.mp4", "gif", "unknown output format 'gif'; expected one of: mp4, png, jpg"),
    ("still.png", None, "folder of numbered frames"),
])
def test_unknown_format_lists_the_valid_ones(tmp_path, path, fmt, message):
    with pytest.raises(UserError, match=message):
        open_sink(tmp_path / path, fmt=fmt)


def test_format_inference(tmp_path):
    for path, expected in [("a.mp4", "mp4"), ("b", "png"), ("c.frames/", "png")]:
        sink = open_sink(str(tmp_path / path) if not path.endswith("/")
                         else str(tmp_path / path[:-1]) + "/")
        assert sink.format == expected
        sink.abort()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"fps": 0}, "fps must be a positive number"),
    ({"fps": float("nan")}, "fps must be a positive number"),
    ({"codec": "mpeg4"}, "expected one of: libx264, h264_nvenc"),
    ({"crf": 60}, "crf must be between 0 and 51"),
])
def test_bad_options_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        open_sink(tmp_path / "out.mp4", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_audio_needs_mp4(tmp_path):
    tone = make_tone(tmp_path / "tone.wav", seconds=0.2)
    with pytest.raises(UserError, match="audio can only be muxed into mp4"):
        open_sink(tmp_path / "frames", fmt="png", audio=tone)


@pytest.mark.parametrize("batch", [
    np.zeros((2, 8, 8, 3), np.float32),
    np.zeros((8, 8, 3), np.uint8),
    np.zeros((2, 8, 8, 4), np.uint8),
    [[0]],
])
def test_bad_batches_are_value_errors(tmp_path, batch):
    with open_sink(tmp_path / "frames", fmt="png") as sink:
        with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
            sink.write(batch)
        sink.write(colour_frames(1, size=8))


def test_frame_size_must_stay_constant(tmp_path):
    sink = open_sink(tmp_path / "out.mp4")
    sink.write(colour_frames(2, size=32))
    with pytest.raises(ValueError, match="frame size changed"):
        sink.write(colour_frames(2, size=16))
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_odd_size_mp4_and_empty_mp4(tmp_path):
    sink = open_sink(tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match="even frame size"):
        sink.write(np.zeros((1, 33, 32, 3), np.uint8))
    sink.abort()
    with pytest.raises(UserError, match="no frames were written"):
        with open_sink(tmp_path / "empty.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_crf_changes_quality(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)
    sizes = {}
    for crf in (10, 40):
        with open_sink(tmp_path / f"crf{crf}.mp4", crf=crf) as sink:
            sink.write(frames)
        sizes[crf] = (tmp_path / f"crf{crf}.mp4").stat().st_size
    assert sizes[10] > 2 * sizes[40]
