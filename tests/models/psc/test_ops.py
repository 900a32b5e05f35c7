"""The in-graph between-stage steps against the fixtures and the reference's numpy code paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poserender.keypoints.coco18 import read_psc_pose
from poserender.models.psc.ops import PoseHeatmaps, argmax_labels, extract_peaks, one_hot, to_uint8_bgr

from .conftest import PSC_DATA, T, one_case


def reference_render(xy: np.ndarray, size: int = 256, sigma: float = 100) -> np.ndarray:
    """The dataset's joint2map, as the fixture README writes it (float64 exp, stored float32)."""
    rows, cols = np.mgrid[0:size, 0:size]
    out = np.zeros((1, xy.shape[1], size, size), np.float32)
    for j in range(xy.shape[1]):
        x, y = xy[0, j], xy[1, j]
        if x == -1 or y == -1:
            continue
        out[0, j] = np.exp(-((rows - int(y)) ** 2 + (cols - int(x)) ** 2) / (2 * sigma ** 2))
    return out


def reference_peaks(maps: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """joint2transfer's peak search on (18, H, W): np.where over (H, W, 18), first hit per joint."""
    pose_map = maps.transpose(1, 2, 0)
    y, x, z = np.where(np.logical_and(pose_map == pose_map.max(axis=(0, 1)), pose_map > threshold))
    out = -np.ones((2, maps.shape[0]))
    for xi, yi, zi in zip(x, y, z):
        if out[0, zi] == -1:
            out[:, zi] = (xi, yi)
    return out


def _kp(xy_2xj: np.ndarray):
    xy = torch.from_numpy(np.ascontiguousarray(xy_2xj.T[None], dtype=np.float32))
    return xy, ((xy[..., 0] != -1) & (xy[..., 1] != -1)).float()


def test_heatmaps_from_the_csv_equal_the_dataset_tensors_exactly(psc_manifest):
    render = PoseHeatmaps(256, 256)
    for sid in ("0001", "0002"):
        sample = np.load(PSC_DATA.parents[2] / "fixtures" / "psc" / f"sample_{sid}.npz")
        for folder, key in (("P0", "p0"), ("P1", "p1")):
            xy, valid = read_psc_pose(PSC_DATA / folder / f"{sid}.csv")
            maps = render(T(xy[None].astype(np.float32)), T(valid[None].astype(np.float32)))
            assert np.array_equal(maps.numpy(), sample[key]), (sid, key)


def test_heatmaps_match_the_reference_off_canvas_and_with_truncation():
    """Quirks pose-int-truncation (toward zero) and pose-csv (only -1 means missing)."""
    xy = np.array([[-0.7, 255.9, 300.0, -1.0, -60.2, 10.0, 700.0, -1.5],
                   [5.5, -0.2, 128.0, 40.0, 300.0, -1.0, -400.0, 3.0]])
    got = PoseHeatmaps(256, 256)(*_kp(xy)).numpy()
    want = reference_render(xy)
    assert np.abs(got - want).max() <= 2.5e-7                      # off-canvas joints: separable float32
    inside = [0, 1]
    assert np.array_equal(got[0, inside], want[0, inside])         # table lookup: exact
    assert not got[0, 3].any() and not got[0, 5].any()              # -1 in x or y: missing


def test_peaks_of_the_fixture_pt_and_p1_and_their_rendering(psc_manifest):
    render = PoseHeatmaps(256, 256)
    case, sample, arrays = one_case(psc_manifest, 0)
    xy, valid = extract_peaks(T(arrays["pt"]))
    assert np.array_equal(xy[0].numpy().T, arrays["pt_peaks_xy"])
    assert np.array_equal(render(xy, valid).numpy(), arrays["pt_map"])
    for i in (2, 5):                                                # t = 1: peaks of P1's own maps
        case, sample, arrays = one_case(psc_manifest, i)
        xy, valid = extract_peaks(T(sample["p1"]))
        assert np.array_equal(xy[0].numpy().T, arrays["pt_peaks_xy"])
        assert valid.sum() == case["diagnostics"]["pt_joints_found"]
        csv_xy, csv_valid = read_psc_pose(PSC_DATA / "P1" / f"{case['sample']}.csv")
        snapped, kept = render.snap(T(csv_xy[None].astype(np.float32)), T(csv_valid[None].astype(np.float32)))
        assert np.array_equal(snapped[0].numpy().T, arrays["pt_peaks_xy"])   # without rendering P1


def test_peak_ties_take_the_first_row_major_maximum_and_low_maps_are_missing():
    maps = np.zeros((3, 8, 8), np.float32)
    maps[0, 5, 1] = maps[0, 2, 6] = maps[0, 2, 7] = 0.9             # tie: row 2 comes first, then col 6
    maps[1, 4, 4] = 0.5                                             # not > 0.5: missing
    maps[2] = 0.7                                                   # flat map: first pixel
    xy, valid = extract_peaks(T(maps[None]))
    assert xy[0].numpy().T.tolist() == reference_peaks(maps).tolist() == [[6, -1, 0], [2, -1, 0]]
    assert valid[0].tolist() == [1, 0, 1]


def test_snap_equals_peaks_of_the_rendered_map_for_any_coordinates():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-200, 450, size=(2, 18))
    xy[:, :3] = [[-1, 30.4, 255.99], [17, -1, -0.99]]
    render = PoseHeatmaps(256, 256)
    kp, valid = _kp(xy)
    snapped, kept = render.snap(kp, valid)
    want = reference_peaks(reference_render(xy)[0])
    assert np.array_equal(snapped[0].numpy().T, want)
    assert kept[0].tolist() == (want[0] != -1).astype(float).tolist()


def test_argmax_one_hot_equals_st_map_for_both_modes(psc_manifest):
    case, sample, arrays = one_case(psc_manifest, 0)
    for probs, target in (("st", "st_map"), ("st_trainmode", "st_map_trainmode")):
        labels = argmax_labels(T(arrays[probs]))
        assert labels.dtype == torch.uint8
        assert np.array_equal(one_hot(labels, 7).numpy(), arrays[target])
    ties = torch.tensor([[[[0.3]], [[0.3]], [[0.4]], [[0.4]]]])     # first max on ties
    assert argmax_labels(ties).item() == 2


def test_to_uint8_bgr_rounds_half_to_even_clips_and_flips_to_bgr():
    x = torch.tensor([-1.5, -1.0, 0.0, 1 / 255, 1.0, 1.2]).view(1, 1, 1, 6).repeat(1, 3, 1, 1)
    x[0, 0] += 0.0   # red channel equals the others here; channel order checked below
    u8 = to_uint8_bgr(x)
    assert u8.shape == (1, 1, 6, 3) and u8.dtype == torch.uint8
    assert u8[0, 0, :, 0].tolist() == [0, 0, 128, 128, 255, 255]    # 127.5 -> 128 (even), 128.0 -> 128
    rgb = torch.zeros(1, 3, 1, 1)
    rgb[0, 0] = 1.0                                                  # pure red
    assert to_uint8_bgr(rgb)[0, 0, 0].tolist() == [128, 128, 255]
