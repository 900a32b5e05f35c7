"""Keypoint readers: reference parity on the Oliver data, every accepted format, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from poserender.config import Pose2ImgConfig, load_pose2img_config
from poserender.errors import BadFrame, UserError
from poserender.keypoints import (CLUSTERS, LIMBS, N_JOINTS, NECK, NPZ_TO_122, OPENPOSE_TO_122, canvas_transform,
                                  openpose137_to_122,
                                  read_keypoints, read_npy, read_npz, read_openpose_json, validate_frame)

ROOT = (822.07040391, 357.76986784)
CONFIG = Pose2ImgConfig(w_bias=500.0, h_bias=40.0, scale=1.0, root_node=ROOT)
#: reference cases that are plain npz frames (the adversarial/border cases edit the keypoints)
PARITY_CASES = ["full128_f000", "full128_f060", "full128_f150", "full128_f303", "pre320_f000", "pre320_f150"]


def _case(shared_dir: Path, name: str):
    fixtures = shared_dir / "fixtures" / "pose2img"
    case = json.loads((fixtures / "manifest.json").read_text())["cases"][name]
    config = load_pose2img_config(shared_dir / "data" / "oliver" / "Oliver.yaml", scale=case["scale"])
    return case, config, np.load(fixtures / case["file"])


# ---- reference parity (exact, float64) -------------------------------------------------------

@pytest.mark.parametrize("name", PARITY_CASES)
def test_source_keypoints_match_reference_exactly(shared_dir, oliver_source_npy, name):
    case, config, ref = _case(shared_dir, name)
    source = read_keypoints(oliver_source_npy, config)
    assert len(source) == 1 and source.valid.all()
    canvas = canvas_transform(source.xy[0], config)
    assert canvas.dtype == np.float64
    np.testing.assert_array_equal(canvas, ref["kp_src_f64"])
    np.testing.assert_array_equal(canvas.astype(np.float32), ref["kp_src"])


@pytest.mark.parametrize("name", PARITY_CASES)
def test_npz_target_keypoints_match_reference_exactly(shared_dir, oliver_dir, name):
    case, config, ref = _case(shared_dir, name)
    target = read_keypoints(oliver_dir / "varying_tmplt.npz", config)
    assert len(target) == 304 and target.valid.all() and not target.bad.any()
    canvas = target.canvas_xy(config)[case["frame"]]
    np.testing.assert_array_equal(canvas, ref["kp_tgt_f64"])
    np.testing.assert_array_equal(canvas.astype(np.float32), ref["kp_tgt"])


def test_npz_neck_sits_exactly_on_root_node(oliver_dir):
    target = read_npz(oliver_dir / "varying_tmplt.npz", CONFIG)
    np.testing.assert_array_equal(target.xy[:, NECK], np.broadcast_to(ROOT, (304, 2)))


def test_layouts_match_reference_manifest(shared_dir):
    config = json.loads((shared_dir / "fixtures" / "pose2img" / "manifest.json").read_text())["config"]
    assert [list(c) for c in CLUSTERS] == config["clusters_122"]
    assert [list(limb) for limb in LIMBS] == config["limbs_122"]


# ---- layout ----------------------------------------------------------------------------------

def test_137_to_122_map(tmp_path):
    assert len(OPENPOSE_TO_122) == N_JOINTS
    assert OPENPOSE_TO_122[:10] == (0, 1, 2, 3, 4, 5, 6, 7, 15, 16)
    assert OPENPOSE_TO_122[10:] == tuple(range(25, 137))
    assert NPZ_TO_122 == (0,) + tuple(range(2, 122))
    # a (3, 137) frame whose x is the column number reads back as the map itself
    frame = np.stack([np.arange(137.0), np.arange(137.0) + 1000, np.ones(137)])
    seq = _read_array(frame, tmp_path)
    np.testing.assert_array_equal(seq.xy[0, :, 0], OPENPOSE_TO_122)
    np.testing.assert_array_equal(seq.xy[0, :, 1], np.array(OPENPOSE_TO_122) + 1000)


def test_openpose137_to_122_single_frame_and_batch():
    rows = np.stack([np.arange(137.0), np.arange(137.0) + 1000, np.ones(137)])
    rows[2, 2] = 0.0  # right shoulder not found
    xy, valid = openpose137_to_122(rows)
    assert xy.shape == (N_JOINTS, 2) and xy.dtype == np.float64
    np.testing.assert_array_equal(xy[:, 0], OPENPOSE_TO_122)
    assert np.flatnonzero(~valid).tolist() == [2]  # joint 0 is at (0, 1000): only x is 0, so valid
    batch_xy, batch_valid = openpose137_to_122(np.stack([rows, rows]))
    assert batch_xy.shape == (2, N_JOINTS, 2) and (batch_valid == valid).all()


def test_clusters_and_limbs():
    assert len(CLUSTERS) == 13 and len(LIMBS) == 8
    members = [j for c in CLUSTERS for j in c]
    assert len(members) == len(set(members))  # no joint is in two clusters
    assert set(range(N_JOINTS)) - set(members) == {0, 27, 36, 46, 57}
    assert CLUSTERS[8][:4] == (8, 9, 78, 79) and LIMBS[6] == tuple(range(101, 122))


# ---- .npy ------------------------------------------------------------------------------------

def _read_array(array: np.ndarray, folder: Path, name: str = "kp.npy"):
    np.save(folder / name, array)
    return read_npy(folder / name)


def _xy122(t: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(1, 700, size=(t, N_JOINTS, 2))


def test_npy_variants_agree(tmp_path):
    xy = _xy122(3)
    rows137 = np.zeros((3, 3, 137))
    rows137[:, :2, list(OPENPOSE_TO_122)] = xy.transpose(0, 2, 1)
    rows137[:, 2] = 0.9
    variants = {"T122x2": xy, "T2x122": xy.transpose(0, 2, 1), "T3x137": rows137}
    for name, array in variants.items():
        seq = _read_array(array, tmp_path, f"{name}.npy")
        np.testing.assert_array_equal(seq.xy, xy, err_msg=name)
        assert seq.valid.all() and seq.xy.dtype == np.float64, name
    for single in (xy[0], xy[0].T, rows137[0]):
        seq = _read_array(single, tmp_path)
        assert len(seq) == 1
        np.testing.assert_array_equal(seq.xy[0], xy[0])


def test_npy_validity_rules(tmp_path):
    rows = np.ones((3, 137)) * 50.0
    rows[:, 3] = (0.0, 0.0, 0.8)    # joint 3: at (0, 0)
    rows[2, 4] = 0.0                # joint 4: confidence 0 with coordinates
    rows[0, 5] = -1.0               # joint 5: x == -1 marker
    rows[1, 16] = -1.0              # 122-joint 9 (BODY_25 16): y == -1 marker
    rows[:2, 10] = 0.0              # BODY_25 10 is not in the 122 layout: no effect
    seq = _read_array(rows, tmp_path)
    assert sorted(np.flatnonzero(~seq.valid[0])) == [3, 4, 5, 9]
    two_rows = _xy122()[0]
    two_rows[7] = 0.0
    two_rows[8, 1] = -1.0
    seq = _read_array(two_rows, tmp_path)
    assert sorted(np.flatnonzero(~seq.valid[0])) == [7, 8]


# ---- OpenPose JSON ---------------------------------------------------------------------------

def _person(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    points = {"pose_keypoints_2d": 25, "face_keypoints_2d": 70, "hand_left_keypoints_2d": 21,
              "hand_right_keypoints_2d": 21}
    person = {}
    for key, n in points.items():
        values = np.column_stack([rng.uniform(1, 1000, (n, 2)), rng.uniform(0.1, 1, n)])
        person[key] = values.ravel().tolist()
    return person


def _write_frame(path: Path, people: list) -> None:
    path.write_text(json.dumps({"version": 1.3, "people": people}))


def _expected_xy(person: dict) -> np.ndarray:
    rows = np.concatenate([np.reshape(person[k], (-1, 3)) for k in
                           ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                            "hand_right_keypoints_2d")])
    return rows[list(OPENPOSE_TO_122), :2]


def test_openpose_folder_order_missing_people_and_joints(tmp_path):
    people = {f: _person(f) for f in (0, 1, 2, 10)}
    people[1]["pose_keypoints_2d"][3 * 4 + 2] = 0.0   # right wrist: confidence 0
    people[2]["hand_left_keypoints_2d"][0:2] = [-1, -1]  # left-hand point 0 (122-joint 80)
    for f in (10, 2, 0, 1):  # the numeric part decides the order, not the write order
        _write_frame(tmp_path / f"clip_{f:012d}_keypoints.json", [people[f], _person(99)])
    _write_frame(tmp_path / "clip_000000000003_keypoints.json", [])  # nobody in frame 3
    (tmp_path / "notes.txt").write_text("ignored")
    seq = read_keypoints(tmp_path, CONFIG)
    assert len(seq) == 5 and seq.path == str(tmp_path)
    # frames 4..9 have no file: the rows keep their frame numbers, so the stream's gap policy
    # fills (or, past --max-gap, skips) them and frame 10 keeps its time
    assert seq.index.tolist() == [0, 1, 2, 3, 10]
    for frame, row in ((0, 0), (1, 1), (2, 2), (10, 4)):
        np.testing.assert_array_equal(seq.xy[row], _expected_xy(people[frame]))
    assert np.flatnonzero(~seq.valid[1]).tolist() == [4]
    assert np.flatnonzero(~seq.valid[2]).tolist() == [80]
    assert not seq.valid[3].any() and not seq.bad[3]          # no people: invalid, not bad
    assert not seq.bad.any()


def test_openpose_folder_natural_sort_fallback(tmp_path):
    people = [_person(i) for i in range(3)]
    for name, person in zip(("take2.json", "take10.json", "take1.json"), (people[1], people[2], people[0])):
        _write_frame(tmp_path / name, [person])
    seq = read_openpose_json(tmp_path)
    assert len(seq) == 3 and not seq.bad.any()
    for i in range(3):
        np.testing.assert_array_equal(seq.xy[i], _expected_xy(people[i]))


def test_openpose_single_json(tmp_path):
    person = _person(5)
    _write_frame(tmp_path / "one.json", [person])
    seq = read_keypoints(tmp_path / "one.json", CONFIG)
    assert len(seq) == 1 and seq.valid.all()
    np.testing.assert_array_equal(seq.xy[0], _expected_xy(person))


# ---- .npz ------------------------------------------------------------------------------------

def test_npz_batch_index(tmp_path):
    batch = np.stack([np.full((4, 2, 121), 10.0), np.full((4, 2, 121), -20.0)])
    np.savez(tmp_path / "poses.npz", poses_pred_batch=batch)
    config = Pose2ImgConfig(root_node=(100.0, 200.0), infer_scale=2.0)
    second = read_npz(tmp_path / "poses.npz", config, batch_index=1)
    np.testing.assert_array_equal(second.xy[:, 0], np.broadcast_to((90.0, 190.0), (4, 2)))
    np.testing.assert_array_equal(second.xy[:, NECK], np.broadcast_to((100.0, 200.0), (4, 2)))
    first = read_keypoints(tmp_path / "poses.npz", config)
    np.testing.assert_array_equal(first.xy[:, 0], np.broadcast_to((105.0, 205.0), (4, 2)))
    with pytest.raises(UserError, match=r"poses\.npz: .*2 sequence\(s\); batch index 2"):
        read_npz(tmp_path / "poses.npz", config, batch_index=2)


# ---- bad frames (not fatal) ------------------------------------------------------------------

def test_nan_frames_are_marked_bad_not_fatal(tmp_path):
    batch = np.ones((1, 5, 2, 121))
    batch[0, 2, 0, 7] = np.nan
    batch[0, 4, 1, 0] = np.inf
    np.savez(tmp_path / "poses.npz", poses_pred_batch=batch)
    seq = read_npz(tmp_path / "poses.npz", CONFIG)
    assert seq.bad.tolist() == [False, False, True, False, True]
    assert "joints 8" in seq.bad_reasons[2]  # npz joint 7 is 122-joint 8 (after the neck)
    assert np.isfinite(seq.xy).all() and not seq.xy[2].any() and not seq.valid[[2, 4]].any()
    assert seq.valid[[0, 1, 3]].all()

    rows = np.ones((3, 3, 137)) * 5
    rows[1, 2, 30] = np.nan  # a NaN confidence makes the frame bad as well
    seq = _read_array(rows, tmp_path)
    assert seq.bad.tolist() == [False, True, False] and list(seq.bad_reasons) == [1]

    person = _person(1)
    person["face_keypoints_2d"][0] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps({"people": [person]}))  # json writes NaN
    seq = read_openpose_json(tmp_path / "nan.json")
    assert seq.bad.tolist() == [True] and not seq.valid.any()


def test_validate_frame():
    xy = _xy122()[0]
    validate_frame(xy, np.ones(N_JOINTS, bool), 7)  # a good frame passes
    xy[3, 1] = np.inf
    with pytest.raises(BadFrame) as info:
        validate_frame(xy, np.ones(N_JOINTS, bool), 7, path="live")
    assert info.value.kind == "nan" and info.value.frame == 7 and "joints 3" in str(info.value)
    with pytest.raises(BadFrame) as info:
        validate_frame(np.zeros((121, 2)), np.ones(121, bool), 8)
    assert info.value.kind == "shape" and "(121, 2)" in str(info.value)


def test_canvas_transform_units():
    config = Pose2ImgConfig(w_bias=500.0, h_bias=40.0, scale=2.5)
    xy = np.array([[[500.0, 40.0], [1140.0, 680.0]]])
    np.testing.assert_array_equal(canvas_transform(xy, config), [[[0.0, 0.0], [256.0, 256.0]]])
    with pytest.raises(ValueError):
        canvas_transform(np.zeros((122, 3)), config)


# ---- fatal problems: one line, naming the file -----------------------------------------------

def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _json(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _short_hand(tmp: Path) -> Path:
    person = _person(0)
    person["hand_right_keypoints_2d"] = person["hand_right_keypoints_2d"][:60]
    return _json(tmp / "short.json", json.dumps({"people": [person]}))


def _no_face(tmp: Path) -> Path:
    person = _person(0)
    person["face_keypoints_2d"] = []
    return _json(tmp / "noface.json", json.dumps({"people": [person]}))


def _empty_folder(tmp: Path) -> Path:
    (tmp / "frames").mkdir()
    (tmp / "frames" / "readme.txt").write_text("no json here")
    return tmp / "frames"


FATAL = {
    "missing npz": (lambda t: t / "nope.npz", "nope.npz", "not found"),
    "missing npy": (lambda t: t / "nope.npy", "nope.npy", "not found"),
    "missing json": (lambda t: t / "nope.json", "nope.json", "not found"),
    "missing, no suffix": (lambda t: t / "nope", "nope", "not found"),
    "wrong npz key": (lambda t: _npz(t / "k.npz", poses=np.zeros((1, 3, 2, 121))), "k.npz",
                      r"has keys \['poses'\], no poses_pred_batch"),
    "wrong npz shape": (lambda t: _npz(t / "poses.npz", poses_pred_batch=np.zeros((1, 304, 3, 121))), "poses.npz",
                        r"poses\.npz: poses_pred_batch has shape \(1, 304, 3, 121\); expected \(N, T, 2, 121\)"),
    "zero npz frames": (lambda t: _npz(t / "z.npz", poses_pred_batch=np.zeros((1, 0, 2, 121))), "z.npz",
                        "zero frames"),
    "corrupt npz": (lambda t: _json(t / "bad.npz", "PK not a zip"), "bad.npz", "cannot read"),
    "wrong npy shape": (lambda t: (np.save(t / "s.npy", np.zeros((3, 136))), t / "s.npy")[1], "s.npy",
                        r"shape \(3, 136\); expected \(3, 137\)"),
    "zero npy frames": (lambda t: (np.save(t / "e.npy", np.zeros((0, 2, 122))), t / "e.npy")[1], "e.npy",
                        "zero frames"),
    "unknown suffix": (lambda t: _json(t / "poses.csv", "1,2"), "poses.csv", r"unknown keypoint format '\.csv'.*\.npz"),
    "corrupt json": (lambda t: _json(t / "c.json", '{"people": [{"pose_'), "c.json", "cannot read as JSON"),
    "json wrong count": (_short_hand, "short.json", r"hand_right_keypoints_2d has 60 values; expected 63"),
    "json without face": (_no_face, "noface.json", "--face --hand"),
    "json not openpose": (lambda t: _json(t / "list.json", "[1, 2]"), "list.json", "no 'people' list"),
    "empty folder": (_empty_folder, "frames", "no .json files"),
}


@pytest.mark.parametrize("case", list(FATAL))
def test_fatal_input_is_one_line_user_error_naming_the_file(tmp_path, case):
    make, name, pattern = FATAL[case]
    path = make(tmp_path)
    with pytest.raises(UserError, match=pattern) as info:
        read_keypoints(path, CONFIG)
    message = str(info.value)
    assert name in message and "\n" not in message and info.value.exit_code == 2
    assert not isinstance(info.value, BadFrame)


def test_corrupt_json_inside_folder_names_that_file(tmp_path):
    _write_frame(tmp_path / "clip_000000000000_keypoints.json", [_person(0)])
    _json(tmp_path / "clip_000000000001_keypoints.json", "{truncated")
    with pytest.raises(UserError, match=r"clip_000000000001_keypoints\.json: cannot read as JSON"):
        read_openpose_json(tmp_path)
