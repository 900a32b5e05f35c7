"""Per-frame glass-to-glass latency on stand-in engines with known delays (the split adds up, each
part lands where the delay is), the sender's "t" stamp, and --late latest (the newest pose wins,
latency stays bounded when the renderer is too slow, a bad frame never costs a good one)."""
from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest

from poserender.errors import BadFrame
from poserender.runtime.latency import PARTS, LatencyMeter, origin_of
from poserender.runtime.sources import ArraySource, Frame, FrameSource

from .test_pipeline import ListSink, SlowLiveSource, adapter, factory, good, poses, run  # noqa: F401 (fixture)

ENGINE_S, SINK_S = 0.03, 0.02


def per_frame_sums(meter: LatencyMeter):
    n = meter.frames
    total = meter.total.values[:n]
    parts = sum(meter.parts[name].values[:n] for name in PARTS)
    return total, parts


def test_split_adds_up_and_each_known_delay_lands_in_its_part(adapter):
    report, sink = run(adapter, ArraySource(poses(10), 25), sink=ListSink(delay=SINK_S),
                       make=factory(delay=ENGINE_S), batch=1)
    meter = report.latency
    assert meter.frames == 10 == sink.frames_written
    total, parts = per_frame_sums(meter)
    np.testing.assert_allclose(parts, total, rtol=0, atol=1e-9)       # every frame, exactly
    d = report.to_dict()["latency"]
    assert abs(d["split_mean_sum_ms"] - d["total_ms"]["mean"]) < 0.01
    split = d["split_ms"]
    assert split["compute"]["p50"] >= ENGINE_S * 1e3          # the engine's sleep is compute
    assert split["write"]["p50"] >= SINK_S * 1e3              # the sink's sleep is writing
    assert split["input"]["max"] == 0.0 and split["pacing"]["max"] == 0.0   # no stamps, no clock
    # a file is read at once: later frames wait behind the renderer, and that is queueing
    assert split["queue"]["max"] >= 5 * ENGINE_S * 1e3
    assert d["total_ms"]["max"] >= d["total_ms"]["p99"] >= d["total_ms"]["p50"] > 0
    assert d["from"] == {"sender_stamp": 0, "read": 10}


def test_a_frame_waiting_for_its_batch_to_fill_is_batching_wait(adapter):
    """Frames arrive every 50 ms; a batch of 4 is sent after --max-wait-ms 120: its first frame
    waited at least 120 ms for the batch (or the whole 150 ms it took to fill)."""
    report, sink = run(adapter, SlowLiveSource(8, 0.05), batch=4, max_wait_ms=120)
    d = report.latency.to_dict()
    assert sink.frames_written == 8 and d["frames"] == 8
    assert d["split_ms"]["batch"]["max"] >= 120
    total, parts = per_frame_sums(report.latency)
    np.testing.assert_allclose(parts, total, rtol=0, atol=1e-9)


def test_realtime_waits_for_ticks_are_pacing(adapter):
    report, _ = run(adapter, ArraySource(poses(10), 25), batch=2, fps=25, realtime=True, late="queue")
    d = report.latency.to_dict()
    assert d["frames"] == 10 and d["split_ms"]["pacing"]["max"] > 0
    total, parts = per_frame_sums(report.latency)
    np.testing.assert_allclose(parts, total, rtol=0, atol=1e-9)


def stamped_lines(n, t):
    return "\n".join(json.dumps({"frame": i, "t": t(i), "keypoints": [[x, y, 1.0] for x, y in xy]})
                     for i, xy in enumerate(poses(n)))


def test_the_senders_t_on_the_epoch_clock_starts_the_latency(adapter):
    from poserender.runtime.live import JsonLinesSource

    sent = time.time() - 0.5              # the sender took the poses half a second ago
    report, sink = run(adapter, JsonLinesSource(io.StringIO(stamped_lines(5, lambda i: sent))), batch=4)
    d = report.latency.to_dict()
    assert sink.frames_written == 5 and d["from"] == {"sender_stamp": 5, "read": 0}
    assert d["split_ms"]["input"]["p50"] >= 500 and d["total_ms"]["p50"] >= 500
    assert d["stamps_ignored"] == 0


def test_a_t_that_is_not_on_the_epoch_clock_is_ignored_and_said_once(adapter):
    from poserender.runtime.live import JsonLinesSource

    log = []
    report, sink = run(adapter, JsonLinesSource(io.StringIO(stamped_lines(5, lambda i: i / 25))), log=log, batch=4)
    d = report.latency.to_dict()
    assert sink.frames_written == 5 and d["from"] == {"sender_stamp": 0, "read": 5} and d["stamps_ignored"] == 5
    assert d["split_ms"]["input"]["max"] == 0.0
    assert len([m for m in log if "Unix epoch" in m]) == 1
    assert "5 't' stamps not on this clock were ignored" in report.latency.summary_line()


def test_origin_of_accepts_only_stamps_that_can_be_on_the_clock():
    assert origin_of(None, 10.0) == (10.0, False)
    assert origin_of(1000.0 - 0.25, 10.0, now_epoch=1000.0) == (9.75, True)
    assert origin_of(1000.01, 10.0, now_epoch=1000.0) == (10.0, True)        # small skew: taken as now
    assert origin_of(1001.0, 10.0, now_epoch=1000.0) == (10.0, False)        # a second in the future
    assert origin_of(3.5, 10.0, now_epoch=1000.0) == (10.0, False)           # seconds since the sender started


def test_metrics_json_has_the_latency_block(adapter):
    report, _ = run(adapter, ArraySource(poses(6), 25), batch=2)
    data = json.loads(json.dumps(report.to_dict()))["latency"]
    assert set(data["total_ms"]) == {"p50", "p90", "p99", "max", "mean"}
    assert set(data["split_ms"]) == set(PARTS) and data["frames"] == 6


# -- --late latest -----------------------------------------------------------------------------------

SLOW_S = 0.1


class SenderClockSource(FrameSource):
    """A live sender on its own clock: pose i is sent at start + i * period whether or not the
    renderer has read the one before (a pipe or socket holds what is not read yet), stamped with
    its "t" on the epoch clock, so waiting unread counts in the latency."""

    live = True

    def __init__(self, n, period):
        self.n, self.period, self.stopped = n, period, threading.Event()

    def __iter__(self):
        start = time.time()
        for i, xy in enumerate(poses(self.n)):
            sent = start + i * self.period
            if self.stopped.wait(max(0.0, sent - time.time())):
                return
            yield Frame(i, i * self.period, xy, np.ones(122, bool), sent=sent)

    def close(self):
        self.stopped.set()


@pytest.mark.parametrize("late", ["queue", "latest"])
def test_latest_bounds_latency_when_the_renderer_is_too_slow(adapter, late):
    """Poses are sent at 100 fps, the renderer takes 100 ms a frame. With queue every frame is
    rendered and the backlog grows (the last frame waits for all before it: ~3.6 s); with latest
    the newest pending pose is rendered and the rest dropped as stale, so no frame waits for more
    than about two render times. The bounds are 10x apart, not timings: load cannot flip them."""
    n = 40
    report, sink = run(adapter, SenderClockSource(n, 0.01), make=factory(delay=SLOW_S), batch=1, fps=100,
                       realtime=True, late=late)
    counts, d = report.counts, report.latency.to_dict()
    assert counts.frames_in == n and counts.reconciles() and d["from"]["sender_stamp"] == counts.frames_out
    assert sink.values == sorted(sink.values) and len(set(sink.values)) == len(sink.values)
    assert d["frames"] == counts.frames_out
    if late == "queue":
        assert counts.dropped == 0 and sink.values == list(range(1, n + 1))
        assert d["total_ms"]["max"] > 20 * SLOW_S * 1e3
    else:
        assert d["total_ms"]["max"] < 10 * SLOW_S * 1e3
        assert counts.dropped == counts.drop_reasons["stale"] > 0 and counts.frames_out >= 3
        assert sink.values[-1] == n, "the newest pose is rendered last"
        assert report.metrics.stages["frame"].to_dict()["frames"] == counts.frames_out   # one frame per call
        assert report.realtime["late_policy"] == "latest"


@pytest.mark.parametrize("late", ["drop", "hold"])
def test_drop_and_hold_keep_the_renderers_pace_when_it_is_too_slow(adapter, late):
    """Poses at 50 fps for 1.2 s, the renderer takes 100 ms a frame: it can make about 12 frames
    in that time, and drop/hold must write a good share of them on their ticks (frames that
    cannot make their tick are dropped before rendering). Predicting lateness from the latency
    of written frames alone missed the wait for a free renderer: every frame was rendered late
    and thrown away, and 1 or 2 frames came out."""
    n, period = 60, 0.02
    report, sink = run(adapter, SenderClockSource(n, period), make=factory(delay=SLOW_S), batch=1, fps=50,
                       realtime=True, late=late)
    counts, d = report.counts, report.latency.to_dict()
    assert counts.frames_in == n and counts.reconciles()
    could = n * period / SLOW_S
    assert counts.frames_out >= 0.4 * could, f"{counts.drop_reasons} {report.realtime} {counts.frames_out} frames written of ~{could:.0f} the renderer could make"
    assert d["total_ms"]["max"] < 10 * SLOW_S * 1e3
    assert sink.values == sorted(sink.values)
    if late == "hold":
        assert sink.frames_written == counts.frames_out + counts.late_held


class TimedSource(FrameSource):
    """(seconds to wait, Frame) pairs, delivered live."""

    live = True

    def __init__(self, items):
        self.items, self.stopped = items, threading.Event()

    def __iter__(self):
        for wait, frame in self.items:
            if self.stopped.wait(wait):
                return
            yield frame

    def close(self):
        self.stopped.set()


def nan_frame(index):
    frame = good(index, 0)
    frame.xy = frame.xy.copy()
    frame.xy[3, 0] = np.nan
    return frame


def test_latest_a_held_bad_frame_never_replaces_a_waiting_good_one(adapter):
    """Frame 0 keeps the renderer busy; good frame 1 waits; bad frame 2 (held: frame 1's pose)
    arrives while it waits. Frame 1 is rendered, the held copy is dropped."""
    items = [(0, good(0, 10)), (0.01, good(1, 11)), (0.01, nan_frame(2))]
    report, sink = run(adapter, TimedSource(items), make=factory(delay=0.2), fps=25, realtime=True, late="latest")
    counts = report.counts
    assert sink.values == [10, 11]
    assert dict(counts.drop_reasons) == {"held-copy": 1} and dict(counts.bad) == {"nan": 1}
    assert counts.frames_in == 3 and counts.reconciles()


def test_latest_a_good_frame_replaces_a_waiting_held_one(adapter):
    items = [(0, good(0, 10)), (0.01, nan_frame(1)), (0.01, good(2, 12))]
    report, sink = run(adapter, TimedSource(items), make=factory(delay=0.2), fps=25, realtime=True, late="latest")
    assert sink.values == [10, 12] and dict(report.counts.drop_reasons) == {"stale": 1}
    assert report.counts.reconciles()


def test_latest_renders_every_frame_when_the_renderer_keeps_up(adapter):
    report, sink = run(adapter, SlowLiveSource(12, 0.04), fps=25, realtime=True, late="latest")
    assert sink.values == list(range(1, 13)) and report.counts.dropped == 0


def test_latest_with_skip_counts_bad_frames_as_skipped(adapter):
    items = [(0, good(0, 10)), (0.01, Frame(1, 0, bad=BadFrame("x", kind="decode", frame=1))), (0.01, good(2, 12))]
    report, sink = run(adapter, TimedSource(items), make=factory(delay=0.05), fps=25, realtime=True, late="latest",
                       on_bad_frame="skip")
    counts = report.counts
    assert sink.values[0] == 10 and sink.values[-1] == 12
    assert counts.skipped == 1 and counts.frames_in == 3 and counts.reconciles()
