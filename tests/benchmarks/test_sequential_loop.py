"""The sequential render loop (benchmarks/sequential_loop.py, the pipeline's baseline) with stand-in
engines: policies, batching, Ctrl-C, no partial output."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from poserender.config import Pose2ImgConfig
from poserender.errors import UserError
from poserender.keypoints.template import gesture_sequence, template_pose
from poserender.families.pose2img import load_source_image, stage_specs

_spec = importlib.util.spec_from_file_location(
    "sequential_loop", Path(__file__).resolve().parents[2] / "benchmarks" / "sequential_loop.py")
sequential_loop = importlib.util.module_from_spec(_spec)
sys.modules["sequential_loop"] = sequential_loop        # dataclasses look their module up there
_spec.loader.exec_module(sequential_loop)
RenderStats, render_sequence, target_batches = (sequential_loop.RenderStats, sequential_loop.render_sequence,
                                                sequential_loop.target_batches)

SIZE = 32
CONFIG = Pose2ImgConfig(img_h=SIZE, img_w=SIZE, scale=1.0)


class FakeEngine:
    """Engine stand-in: frame k of the output is filled with the target's x of joint 1 (so frames are
    traceable to the poses that made them); optionally raises KeyboardInterrupt on call N."""

    def __init__(self, spec, interrupt_on=None):
        self.spec, self.calls, self.interrupt_on = spec, 0, interrupt_on

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def infer(self, feed):
        self.calls += 1
        if self.spec.name == "source":
            return {"source_parts": np.zeros((1, 8, 3, SIZE, SIZE), np.float32),
                    "background": np.zeros((1, 3, SIZE, SIZE), np.float32)}
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        value = np.clip(feed["target_keypoints"][:, 1, 0], 0, 255).astype(np.uint8)
        return {"frames": np.broadcast_to(value[:, None, None, None], (len(value), SIZE, SIZE, 3)).copy()}


@pytest.fixture()
def inputs(tmp_path):
    cv2.imwrite(str(tmp_path / "src.png"), np.full((SIZE, SIZE, 3), 128, np.uint8))
    np.save(tmp_path / "src.npy", template_pose(SIZE, SIZE))
    targets = gesture_sequence(10, SIZE, SIZE)
    targets[:, 1, 0] = np.arange(10) * 10 + 5          # frame t shows value 10 t + 5
    targets[4, 3, 1] = np.inf                          # one bad frame
    np.save(tmp_path / "tgt.npy", targets)
    return tmp_path


def engines(interrupt_on=None):
    source, frame = stage_specs(SIZE, SIZE)
    return FakeEngine(source), FakeEngine(frame, interrupt_on)


def _render(inputs, out, **kw):
    return render_sequence(engines(kw.pop("interrupt_on", None)), CONFIG, inputs / "src.png", inputs / "src.npy",
                           inputs / "tgt.npy", out, **kw)


def test_hold_repeats_last_good_pose(inputs):
    stats, summary = _render(inputs, inputs / "out", fmt="png", batch=3)
    values = [int(cv2.imread(str(p))[0, 0, 0]) for p in sorted((inputs / "out").iterdir())]
    assert values == [5, 15, 25, 35, 35, 55, 65, 75, 85, 95]
    assert (stats.frames_in, stats.frames_out, stats.held, stats.skipped) == (10, 10, 1, 0)
    assert summary.frames_written == 10


def test_skip_drops_and_counts(inputs):
    stats, _ = _render(inputs, inputs / "out", fmt="png", batch=4, on_bad_frame="skip")
    assert stats.frames_in == stats.frames_out + stats.skipped == 10 and stats.skipped == 1


def test_error_policy_leaves_no_output(inputs):
    with pytest.raises(UserError, match="frame 4"):
        _render(inputs, inputs / "out.mp4", on_bad_frame="error", batch=2)
    assert not [p for p in inputs.iterdir() if p.name.startswith(("out", ".out"))]


def test_ctrl_c_keeps_a_valid_video(inputs):
    stats, summary = _render(inputs, inputs / "out.mp4", batch=2, interrupt_on=3)
    assert stats.interrupted and stats.frames_out == 4
    with av.open(str(inputs / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4


def test_first_frames_bad_hold_uses_first_good():
    from poserender.keypoints import KeypointSequence

    xy = np.zeros((3, 122, 2))
    xy[:, 1, 0] = [0, 0, 7]
    seq = KeypointSequence(xy=xy, valid=np.ones((3, 122), bool), path="x.npy",
                           bad=np.array([True, False, False]))
    batches = list(target_batches(seq, CONFIG, 8, "hold", RenderStats()))
    assert batches[0][0].shape == (3, 122, 2)
    assert np.array_equal(batches[0][0][0], batches[0][0][1])


def test_source_image_reference_preprocessing(tmp_path):
    """Crop by the biases, map to [-1, 1] in float64, bilinear resize, BGR kept."""
    image = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "im.png"), image)
    config = Pose2ImgConfig(img_h=32, img_w=32, w_bias=10, h_bias=5, scale=1.0)
    got = load_source_image(tmp_path / "im.png", config)
    expected = image[5:37, 10:42].astype(np.float64) / 255 * 2 - 1
    assert got.shape == (1, 3, 32, 32) and np.allclose(got[0].transpose(1, 2, 0), expected, atol=1e-6)
    half = load_source_image(tmp_path / "im.png", Pose2ImgConfig(img_h=48, img_w=64, scale=2.0))
    reference = cv2.resize(image[:48, :64].astype(np.float64) / 255 * 2 - 1, (32, 24), interpolation=cv2.INTER_LINEAR)
    assert half.shape == (1, 3, 24, 32) and np.allclose(half[0].transpose(1, 2, 0), reference, atol=1e-6)
    with pytest.raises(UserError, match="expected at least 74 x 69"):
        load_source_image(tmp_path / "im.png", Pose2ImgConfig(img_h=64, img_w=64, w_bias=10, h_bias=5))


def test_frame_without_any_joint_follows_the_bad_frame_policy():
    """OpenPose found nobody: every joint invalid. Held like a NaN frame, or refused with 'error'."""
    from poserender.keypoints import KeypointSequence

    xy = np.zeros((3, 122, 2))
    xy[:, 1, 0] = [3, 0, 9]
    valid = np.ones((3, 122), bool)
    valid[1] = False
    seq = KeypointSequence(xy=xy, valid=valid, path="people.json", bad=np.zeros(3, bool))
    stats = RenderStats()
    (poses, validity), = list(target_batches(seq, CONFIG, 8, "hold", stats))
    assert stats.held == 1 and poses[1, 1, 0] == 3 and validity[1].all()
    with pytest.raises(UserError, match="frame 1: no person detected"):
        list(target_batches(seq, CONFIG, 8, "error", RenderStats()))
