"""Preprocessing behaviour beyond the reference fixtures: missing joints (validity mask), the
least-squares limb fits against numpy, degenerate limbs, and batch invariance. No fixtures needed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poserender.keypoints.layout import CLUSTERS, LIMBS
from poserender.keypoints.template import gesture_sequence, template_pose
from poserender.models.preprocess import ClusterHeatmaps, LimbMaskPrior, LimbTransforms

H, W = 96, 128          # not square, so a swapped axis shows
OFF_CANVAS = (-1000.0, -1000.0)


@pytest.fixture(scope="module")
def heatmaps(default_config):
    return ClusterHeatmaps(H, W, default_config.kp_var_root)


@pytest.fixture(scope="module")
def prior(default_config):
    return LimbMaskPrior(H, W, default_config.mask_sigma_perp)


def pose(seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(1, 122, 2): the template pose, jittered a little."""
    rng = np.random.default_rng(seed)
    kp = template_pose(H, W) + rng.normal(0, 1.5, size=(122, 2))
    return torch.from_numpy(kp).to(dtype)[None]


def cluster_of(joint: int) -> int:
    (channel,) = [c for c, members in enumerate(CLUSTERS) if joint in members]
    return channel


# ---------------------------------------------------------------------------------------------
# (a) heat maps
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("joint", [4, 60, 110, 9])   # single-joint cluster, mouth, right hand, eye
def test_invalid_joint_is_left_out_of_its_heatmap(heatmaps, default_config, joint):
    kp = pose(1)
    valid = torch.ones(1, 122)
    full = heatmaps(kp, valid)
    invalid = valid.clone()
    invalid[0, joint] = 0
    without = heatmaps(kp, invalid)
    # the same map with the joint valid but far off the canvas (a window that misses paints nothing)
    moved = kp.clone()
    moved[0, joint] = torch.tensor(OFF_CANVAS)
    reference = heatmaps(moved, valid)
    assert torch.allclose(without, reference, rtol=0, atol=1e-6)
    channel = cluster_of(joint)
    # the joint did contribute when valid, and only to its own cluster
    single = ClusterHeatmaps(H, W, [default_config.kp_var_root[channel]], clusters=((joint,),))(kp, valid)[0, 0]
    assert float(single.max()) > 0.5
    assert torch.allclose(full[0, channel] - without[0, channel], single, rtol=0, atol=1e-5)
    others = [c for c in range(len(CLUSTERS)) if c != channel]
    assert torch.equal(full[0, others], without[0, others])


def test_invalid_joint_position_is_irrelevant_to_heatmaps(heatmaps):
    kp = pose(2)
    valid = torch.ones(1, 122)
    valid[0, [3, 30, 90]] = 0
    moved = kp.clone()
    moved[0, [3, 30, 90]] = torch.tensor([[50.0, 40.0], [1.0, 1.0], [W - 3.0, H - 3.0]])
    assert torch.allclose(heatmaps(kp, valid), heatmaps(moved, valid), rtol=0, atol=1e-6)


def test_all_joints_invalid_gives_empty_heatmaps(heatmaps):
    assert float(heatmaps(pose(3), torch.zeros(1, 122)).abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------
# (b) limb transforms against the reference's least-squares formulation
# ---------------------------------------------------------------------------------------------
def lstsq_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The reference fit, written from its definition: the similarity X = a0 + a1 x - b1 y,
    Y = b0 + b1 x + a1 y taking TARGET joints (x, y) to SOURCE joints (X, Y), solved by
    ``np.linalg.lstsq`` (minimum-norm when rank deficient). Returns [[a1, -b1, a0], [b1, a1, b0]]."""
    x, y = target[:, 0], target[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    # unknowns (a0, a1, b0, b1)
    rows_x = np.stack([one, x, zero, -y], axis=1)
    rows_y = np.stack([zero, y, one, x], axis=1)
    A = np.concatenate([rows_x, rows_y])
    b = np.concatenate([source[:, 0], source[:, 1]])
    a0, a1, b0, b1 = np.linalg.lstsq(A, b, rcond=None)[0]
    return np.array([[a1, -b1, a0], [b1, a1, b0]])


def fit(source: np.ndarray, target: np.ndarray, source_valid=None, target_valid=None) -> np.ndarray:
    """LimbTransforms in float64 on one (122, 2) pair -> (8, 2, 3)."""
    sv = np.ones(122) if source_valid is None else source_valid
    tv = np.ones(122) if target_valid is None else target_valid
    out = LimbTransforms()(torch.from_numpy(source)[None], torch.from_numpy(np.asarray(sv, np.float64))[None],
                           torch.from_numpy(target)[None], torch.from_numpy(np.asarray(tv, np.float64))[None])
    assert out.shape == (1, 8, 2, 3) and out.dtype == torch.float64
    return out[0].numpy()


def random_pair(seed: int):
    rng = np.random.default_rng(seed)
    return rng.uniform(-10, W + 10, size=(122, 2)), rng.uniform(-10, W + 10, size=(122, 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_limb_transforms_equal_lstsq_on_random_poses(seed):
    source, target = random_pair(seed)
    got = fit(source, target)
    for k, limb in enumerate(LIMBS):
        expected = lstsq_similarity(source[list(limb)], target[list(limb)])
        np.testing.assert_allclose(got[k], expected, rtol=0, atol=1e-8, err_msg=f"limb {k}")


def test_limb_transforms_equal_lstsq_on_template_gesture():
    source = template_pose(H, W)
    targets = gesture_sequence(4, H, W, seed=7)
    for target in targets:
        got = fit(source, target)
        for k, limb in enumerate(LIMBS):
            np.testing.assert_allclose(got[k], lstsq_similarity(source[list(limb)], target[list(limb)]),
                                       rtol=0, atol=1e-8, err_msg=f"limb {k}")


def test_two_joint_limbs_map_their_joints_exactly():
    source, target = random_pair(4)
    got = fit(source, target)
    for k, limb in enumerate(LIMBS):
        if len(limb) != 2:
            continue
        for j in limb:
            mapped = got[k] @ np.array([target[j, 0], target[j, 1], 1.0])
            np.testing.assert_allclose(mapped, source[j], rtol=0, atol=1e-9, err_msg=f"limb {k} joint {j}")


def test_coincident_target_joints_give_the_minimum_norm_fit():
    """Right upper arm (joints 2, 3) and the left hand (80..100) with all target joints on one
    point: rank-deficient, the reference's lstsq returns the minimum-norm solution."""
    source, target = random_pair(5)
    target[3] = target[2]
    target[80:101] = target[80]
    got = fit(source, target)
    for k in (2, 7):
        limb = list(LIMBS[k])
        expected = lstsq_similarity(source[limb], target[limb])
        np.testing.assert_allclose(got[k], expected, rtol=0, atol=1e-8, err_msg=f"limb {k}")
    # not a degenerate "identity" answer: it still sends the target point onto the mean source point
    mapped = got[2] @ np.array([*target[2], 1.0])
    np.testing.assert_allclose(mapped, source[[2, 3]].mean(0), rtol=0, atol=1e-8)


@pytest.mark.parametrize("side", ["source", "target"])
def test_limb_with_one_valid_joint_is_a_translation(side):
    source, target = random_pair(6)
    valid = np.ones(122)
    valid[3] = 0                             # right upper arm (2, 3) keeps joint 2 only
    valid[[8, 9]] = 0                        # head (0, 8, 9) keeps the nose only
    kw = {"source_valid": valid} if side == "source" else {"target_valid": valid}
    got = fit(source, target, **kw)
    for k, joint in ((2, 2), (0, 0)):
        assert np.array_equal(got[k][:, :2], np.eye(2)), f"limb {k}"
        np.testing.assert_allclose(got[k] @ np.array([*target[joint], 1.0]), source[joint], rtol=0, atol=1e-9)


def test_limb_with_no_valid_joint_is_the_identity():
    source, target = random_pair(7)
    sv, tv = np.ones(122), np.ones(122)
    sv[6] = 0
    tv[7] = 0                                # left forearm (6, 7): no joint valid in both poses
    tv[80:101] = 0                           # left hand: all missing
    got = fit(source, target, sv, tv)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert np.array_equal(got[5], identity)
    assert np.array_equal(got[7], identity)
    # the other limbs are still fitted
    np.testing.assert_allclose(got[1], lstsq_similarity(source[[1, 2, 5]], target[[1, 2, 5]]), rtol=0, atol=1e-8)


def test_invalid_joints_do_not_influence_the_fit():
    source, target = random_pair(8)
    sv, tv = np.ones(122), np.ones(122)
    tv[[105, 109, 113]] = 0                  # right hand: missing in the target
    sv[117] = 0                              # ... and one missing in the source
    tv[8] = 0                                # head keeps nose + left eye (exact 2-point fit)
    got = fit(source, target, sv, tv)
    for k, used in ((6, [j for j in range(101, 122) if j not in (105, 109, 113, 117)]), (0, [0, 9])):
        np.testing.assert_allclose(got[k], lstsq_similarity(source[used], target[used]), rtol=0, atol=1e-8,
                                   err_msg=f"limb {k}")
    # move the invalid joints wildly: nothing changes
    rng = np.random.default_rng(9)
    s2, t2 = source.copy(), target.copy()
    for j in (105, 109, 113, 117, 8):
        s2[j] += rng.uniform(-1e5, 1e5, 2)
        t2[j] += rng.uniform(-1e5, 1e5, 2)
    np.testing.assert_allclose(fit(s2, t2, sv, tv), got, rtol=0, atol=1e-12)


def test_float32_transforms_follow_float64():
    source, target = random_pair(10)
    f64 = fit(source, target)
    f32 = LimbTransforms()(torch.from_numpy(source).float()[None], torch.ones(1, 122),
                           torch.from_numpy(target).float()[None], torch.ones(1, 122))
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32[0].double().numpy(), f64, rtol=0, atol=2e-4)


# ---------------------------------------------------------------------------------------------
# (c) limb-mask prior with missing joints
# ---------------------------------------------------------------------------------------------
def zero_length_mask(centre, var_perp: float) -> np.ndarray:
    """The zero-length limb shape: var 5 along x, var_perp along y, normalised like the model."""
    cols = np.arange(W)[None, :]
    rows = np.arange(H)[:, None]
    g = np.exp(-((cols - centre[0]) ** 2 / (2 * 5.0) + (rows - centre[1]) ** 2 / (2 * var_perp)))
    return g / (g.max() + 1e-6)


@pytest.mark.parametrize("limb,invalid", [(2, [2]),       # right upper arm, p0 missing
                                          (0, [0]),       # head, nose (p0) missing: centre = mean of eyes
                                          (1, [2])])      # torso, p1 (right shoulder) missing
def test_mask_with_missing_end_joint_falls_back_to_zero_length_shape(prior, default_config, limb, invalid):
    kp = pose(11)
    valid = torch.ones(1, 122)
    full = prior(kp, valid)
    valid[0, invalid] = 0
    got = prior(kp, valid)
    kept = [j for j in LIMBS[limb] if j not in invalid]
    centre = kp[0, kept].double().mean(0).numpy()
    expected = zero_length_mask(centre, float(default_config.mask_sigma_perp[limb]) ** 2)
    channel = got[0, limb + 1].double().exp().numpy() - 1e-10
    np.testing.assert_allclose(channel, expected, rtol=0, atol=2e-5)
    # and it is not the full-pose mask (the fallback did something)
    assert float((full[0, limb + 1] - got[0, limb + 1]).abs().max()) > 0.1


def test_limb_without_valid_joints_has_an_empty_mask(prior):
    kp = pose(12)
    valid = torch.ones(1, 122)
    full = prior(kp, valid)
    valid[0, [6, 7]] = 0                                       # left forearm (limb 5) gone
    got = prior(kp, valid)
    floor = float(np.log(np.float32(1e-10)))
    assert torch.allclose(got[0, 6], torch.full((H, W), floor), rtol=0, atol=1e-5)
    assert torch.allclose(full[0, 6].exp().amax(), torch.tensor(1.0), atol=1e-4)   # was a real mask
    # limbs not touching joints 6, 7 are unchanged (limb 4 = (5, 6) falls back, see above)
    for limb in (0, 1, 2, 3, 6, 7):
        assert torch.allclose(got[0, limb + 1], full[0, limb + 1], rtol=0, atol=1e-6), limb
    # the background channel is still 1 - max over the remaining limbs
    limbs = got[0, 1:].double().exp() - 1e-10
    background = got[0, 0].double().exp() - 1e-10
    assert torch.allclose(background, 1 - limbs.amax(0), rtol=0, atol=1e-5)


def test_all_joints_missing_gives_pure_background_prior(prior):
    got = prior(pose(13), torch.zeros(1, 122))
    assert torch.isfinite(got).all()
    assert torch.allclose(got[0, 0], torch.zeros(H, W), atol=1e-6)          # log(1 + 1e-10)
    assert float(got[0, 1:].max()) < -20                                     # log(1e-10) = -23.03


# ---------------------------------------------------------------------------------------------
# (d) batch invariance
# ---------------------------------------------------------------------------------------------
def random_batch(n: int, seed: int, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    kp = np.stack([template_pose(H, W) + rng.normal(0, 6, size=(122, 2)) for _ in range(n)])
    valid = (rng.uniform(size=(n, 122)) > 0.15).astype(np.float64)
    return torch.from_numpy(kp).to(dtype), torch.from_numpy(valid).to(dtype)


def test_heatmaps_and_prior_are_batch_invariant(heatmaps, prior):
    kp, valid = random_batch(4, 20)
    for module in (heatmaps, prior):
        batched = module(kp, valid)
        singles = torch.cat([module(kp[i:i + 1], valid[i:i + 1]) for i in range(4)])
        assert batched.shape == (4, module(kp[:1], valid[:1]).shape[1], H, W)
        assert torch.allclose(batched, singles, rtol=0, atol=1e-6), type(module).__name__
        assert not torch.allclose(batched[0], batched[1])          # the items really differ


def test_limb_transforms_are_batch_invariant_and_broadcast_the_source():
    transforms = LimbTransforms()
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        src, src_valid = random_batch(4, 21, dtype)
        tgt, tgt_valid = random_batch(4, 22, dtype)
        batched = transforms(src, src_valid, tgt, tgt_valid)
        singles = torch.cat([transforms(src[i:i + 1], src_valid[i:i + 1], tgt[i:i + 1], tgt_valid[i:i + 1])
                             for i in range(4)])
        assert batched.shape == (4, 8, 2, 3) and batched.dtype == dtype
        assert torch.allclose(batched, singles, rtol=0, atol=tol)
        # one source identity for a batch of targets (the frame stage's case)
        shared = transforms(src[:1], src_valid[:1], tgt, tgt_valid)
        repeated = transforms(src[:1].expand(4, -1, -1), src_valid[:1].expand(4, -1), tgt, tgt_valid)
        assert shared.shape == (4, 8, 2, 3)
        assert torch.allclose(shared, repeated, rtol=0, atol=tol)
