"""The procedural gesture generator: deterministic, anatomically bounded, smooth, varied."""
import numpy as np
import pytest

from poserender.demo import gestures as g
from poserender.keypoints.layout import LEFT_HAND, RIGHT_HAND


def test_same_seed_same_sequence_and_different_seed_differs():
    a = g.gesture_sequence(60, 256, seed=3)
    b = g.gesture_sequence(60, 256, seed=3)
    c = g.gesture_sequence(60, 256, seed=4)
    assert a.shape == (60, 122, 2) and np.array_equal(a, b)
    assert np.abs(a - c).max() > 5.0


def test_parameters_stay_within_joint_limits():
    params, schedule = g.gesture_params(400, seed=1)
    for i, name in enumerate(g.PARAMS):
        lo, hi = g.LIMITS[name]
        assert params[:, i].min() >= lo - 1e-9 and params[:, i].max() <= hi + 1e-9, name
    assert schedule[0][0] == 0 and len({name for _, name in schedule}) >= 4


def test_bone_lengths_are_fixed_and_scale_with_the_canvas():
    for size in (256, 512):
        seq = g.gesture_sequence(200, size, seed=2)
        unit = size / 256
        for a, b, length in ((2, 3, g.UPPER_ARM), (5, 6, g.UPPER_ARM)):
            bone = np.linalg.norm(seq[:, b] - seq[:, a], axis=1)
            np.testing.assert_allclose(bone, length * unit, rtol=1e-6)
        forearm = np.linalg.norm(seq[:, 4] - seq[:, 3], axis=1)
        assert forearm.max() <= g.FOREARM * unit + 1e-6 and forearm.min() >= 0.65 * g.FOREARM * unit


def test_motion_is_smooth():
    seq = g.gesture_sequence(300, 256, seed=5)
    body_step = np.linalg.norm(np.diff(seq[:, :8], axis=0), axis=2)
    assert body_step.max() < 35.0          # pixels per frame at 25 fps (fast beats reach ~30)
    assert np.median(body_step) < 3.0


def test_hands_follow_the_wrists_and_the_mouth_opens():
    params, _ = g.gesture_params(300, seed=6)
    seq = np.stack([g.pose_from_params(p) for p in params])
    np.testing.assert_allclose(seq[:, RIGHT_HAND[0]], seq[:, 4])
    np.testing.assert_allclose(seq[:, LEFT_HAND[0]], seq[:, 7])
    inner_gap = np.linalg.norm(seq[:, 10 + 66] - seq[:, 10 + 62], axis=1)
    mouth = params[:, g.P["mouth"]]
    assert np.corrcoef(inner_gap, mouth)[0, 1] > 0.9


def test_openpose_layout_marks_missing_points():
    pose = g.rest_pose(256)
    op = g.pose122_to_openpose(pose)
    assert op.shape == (3, 137) and op.dtype == np.float32
    assert op[2, 8] == 0 and op[2, 10] == 0          # mid hip, knee: not part of the puppet
    assert op[2, 0] == 1 and op[2, 15] == 1
    np.testing.assert_allclose(op[:2, 1], pose[1], rtol=1e-6)


def test_bad_frame_count():
    with pytest.raises(ValueError):
        g.gesture_params(0)
