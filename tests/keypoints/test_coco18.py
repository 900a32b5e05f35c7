"""PSC csv poses (strict), OpenPose BODY_25 / 137 / COCO -> COCO-18, pose streams."""
from __future__ import annotations

import json

import numpy as np
import pytest

from poserender.errors import UserError
from poserender.keypoints.coco18 import (BODY25_TO_COCO18, body25_to_coco18, read_pose_stream, read_psc_csv,
                                         read_psc_pose)

ROW = ",".join(["0"] + [str(10 + j) for j in range(18)])


def _csv(tmp_path, text, name="p.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_the_reference_csv_layout_with_missing_joints(tmp_path):
    path = _csv(tmp_path, "0,1.5,-1,3,4,5,6,7,8,9,-1,-1,12,13,14,15,16,17,18\n"
                          "0,2.5,7,-1,4,5,6,7,8,9,10,-1,12,13,14,15,16,17,18\n")
    xy, valid = read_psc_pose(path)
    assert xy.shape == (18, 2) and xy[0].tolist() == [1.5, 2.5]
    assert valid.tolist() == [True, False, False] + [True] * 6 + [False, False] + [True] * 7
    assert xy[9].tolist() == [-1, 10] and not valid[9]        # x == -1 alone makes it missing


def test_reads_the_demo_data(psc_shared):
    xy, valid = read_psc_pose(psc_shared / "P1" / "0002.csv")
    assert xy[12].tolist() == pytest.approx([150.42671, 251.58093]) and valid.sum() == 15
    train = read_psc_csv(psc_shared.parent / "train" / "joint" / "0002.csv")[0]
    assert train.shape == (8, 18, 2)


@pytest.fixture
def psc_shared():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "psc" / "test"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: ../shared (reference data) is not in this checkout")
    return folder


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    (ROW + "\n", "has 1 rows; expected an even number"),
    (ROW + "\n" + ROW + ",5\n", "row 2 has 20 columns; expected 19"),
    (ROW + "\n" + ROW.replace("12", "abc") + "\n", "row 2, column 4: 'abc' is not a number"),
    (ROW + "\n" + ROW.replace("12", "nan") + "\n", "row 2, column 4: 'nan' is not finite"),
])
def test_malformed_csv_is_one_error_naming_the_file_and_place(tmp_path, text, message):
    path = _csv(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        read_psc_csv(path)
    assert str(info.value).startswith(str(path))


def test_p0_p1_files_must_hold_one_pose(tmp_path):
    path = _csv(tmp_path, "\n".join([ROW] * 4) + "\n\n")
    assert read_psc_csv(path)[0].shape == (2, 18, 2)             # trailing blank line tolerated
    with pytest.raises(UserError, match="holds 2 poses"):
        read_psc_pose(path)
    with pytest.raises(UserError, match="not found"):
        read_psc_pose(tmp_path / "none.csv")


def test_body25_and_openpose137_map_to_coco18():
    rows = np.zeros((137, 3))
    rows[:25, 0] = np.arange(25) * 10
    rows[:25, 1] = np.arange(25)
    rows[:25, 2] = 0.9
    rows[11, 2] = 0                                               # BODY_25 RAnkle undetected -> COCO 10 missing
    for n in (25, 137):
        xy, valid = body25_to_coco18(rows[:n])
        assert xy[:, 0].tolist()[:8] == [0, 10, 20, 30, 40, 50, 60, 70]
        assert xy[8].tolist() == [90, 9] and xy[17].tolist() == [180, 18]   # MidHip (8) skipped
        assert not valid[10] and xy[10].tolist() == [-1, -1] and valid.sum() == 17
    assert len(BODY25_TO_COCO18) == 18


def test_pose_streams_from_json_npy_and_csv_folders(tmp_path):
    frames = tmp_path / "json"
    frames.mkdir()
    body = np.zeros((25, 3))
    body[:, :2], body[:, 2] = 50, 1
    for i in range(3):
        people = [] if i == 1 else [{"pose_keypoints_2d": body.ravel().tolist()}]
        (frames / f"clip_{i:012d}_keypoints.json").write_text(json.dumps({"people": people}))
    seq = read_pose_stream(frames)
    assert len(seq) == 3 and seq.bad.tolist() == [False, True, False]
    assert seq.bad_reasons[1] == "no person detected" and seq.valid[0].all()
    coco = np.zeros((18, 3))
    coco[:, 2] = 1
    (tmp_path / "coco.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": coco.ravel().tolist()}]}))
    assert read_pose_stream(tmp_path / "coco.json").valid.all()
    arr = np.zeros((4, 18, 2))
    arr[2, 0, 0] = np.nan
    np.save(tmp_path / "poses.npy", arr)
    seq = read_pose_stream(tmp_path / "poses.npy")
    assert seq.bad.tolist() == [False, False, True, False]
    folder = tmp_path / "csv"
    folder.mkdir()
    for name in ("b10.csv", "b2.csv"):
        _csv(folder, ROW + "\n" + ROW + "\n", name)
    assert len(read_pose_stream(folder)) == 2
    with pytest.raises(UserError, match="unknown pose format"):
        read_pose_stream(_csv(tmp_path, "x", "poses.txt"))
    (tmp_path / "bad.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 3]}]}))
    with pytest.raises(UserError, match="has 3 values; expected 75"):
        read_pose_stream(tmp_path / "bad.json")


def test_write_psc_csv_round_trips_through_the_reader(tmp_path):
    from poserender.keypoints.coco18 import read_psc_csv, template_pose, write_psc_csv

    poses = np.stack([template_pose(64, 64), template_pose(64, 64) + [2.5, -1.25]])
    poses[1, 3] = -1                                       # a missing joint
    xy, valid = read_psc_csv(write_psc_csv(tmp_path / "p.csv", poses))
    np.testing.assert_allclose(xy, poses, atol=5e-4)
    assert valid[0].all() and not valid[1, 3] and valid[1].sum() == 17
    xy1, _ = read_psc_csv(write_psc_csv(tmp_path / "one.csv", poses[0]))
    assert xy1.shape == (1, 18, 2)


def test_stream_reader_marks_a_nonfinite_pose_bad_and_keeps_the_others(tmp_path):
    from poserender.keypoints.coco18 import read_psc_csv, read_psc_csv_stream, template_pose, write_psc_csv

    poses = np.stack([template_pose(64, 64) + i for i in range(3)])
    path = write_psc_csv(tmp_path / "p.csv", poses)
    rows = path.read_text().splitlines()
    cells = rows[3].split(",")                  # pose 1's y row
    cells[5] = "inf"
    rows[3] = ",".join(cells)
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"row 4, column 6: 'inf' is not finite"):
        read_psc_csv(path)                      # a single P0/P1 pose refuses it
    xy, valid, problems = read_psc_csv_stream(path)
    assert list(problems) == [1] and problems[1][0] == "nan"
    assert not valid[1].any() and valid[[0, 2]].all()
    np.testing.assert_allclose(xy[[0, 2]], poses[[0, 2]], atol=5e-4)
    rows[0] = rows[0] + ",7"                    # other defects are still refused
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match="row 1 has 20 columns"):
        read_psc_csv_stream(path)
