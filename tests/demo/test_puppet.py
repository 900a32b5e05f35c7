"""The puppet renderer and `poserender demo-data`."""
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.demo import gestures as g
from poserender.demo.puppet import background, draw_puppet


def test_drawing_is_deterministic_and_follows_the_pose():
    pose = g.rest_pose(256)
    a, b = draw_puppet(pose), draw_puppet(pose)
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert np.abs(a.astype(int) - background(256)).max() > 100       # something is drawn
    params = g.rest_params()
    params[g.P["mouth"]] = 1.0
    talking = draw_puppet(g.pose_from_params(params))
    mouth = g.pose_from_params(params)[10 + 48:10 + 60]
    x0, y0 = np.floor(mouth.min(0)).astype(int)
    x1, y1 = np.ceil(mouth.max(0)).astype(int)
    changed = np.abs(talking.astype(int) - a.astype(int)).max(axis=2) > 30
    assert changed[y0:y1, x0:x1].mean() > 0.1                        # the mouth opened
    assert changed[:, :x0 - 10].sum() == 0                           # and nothing else moved
    params = g.rest_params()
    params[g.P["r_abduct"]] = 0.8
    raised = draw_puppet(g.pose_from_params(params))
    wrist = g.pose_from_params(params)[4].astype(int)
    assert np.abs(raised[wrist[1] - 3:wrist[1] + 3, wrist[0] - 3:wrist[0] + 3].astype(int)
                  - background(256)[wrist[1] - 3:wrist[1] + 3, wrist[0] - 3:wrist[0] + 3]).max() > 40


def test_wrong_pose_shape():
    with pytest.raises(ValueError):
        draw_puppet(np.zeros((137, 2)))


def test_demo_data_writes_the_training_layout(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo-data", "-o", str(out), "--frames", "6", "--seed", "2", "--size", "128"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    assert len(list((out / "keypoints").glob("*.npy"))) == 6
    clip = np.load(out / "poses.npy")
    assert clip.shape == (6, 3, 137)
    np.testing.assert_array_equal(np.load(out / "keypoints" / "000003.npy"), clip[3])
    frame = cv2.imread(str(out / "images" / "000003.png"))
    pose = g.gesture_sequence(6, 128, seed=2)[3]
    np.testing.assert_array_equal(frame, draw_puppet(pose, 128))
    info = json.loads((out / "info.json").read_text())
    assert info["seed"] == 2 and info["frames"] == 6
    # an existing folder is refused unless --overwrite
    again = CliRunner().invoke(main, ["demo-data", "-o", str(out), "--frames", "2"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert CliRunner().invoke(main, ["demo-data", "-o", str(out), "--frames", "2", "--overwrite"]).exit_code == 0
    assert len(np.load(out / "poses.npy")) == 2
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_demo_data_is_read_by_the_trainer(tmp_path):
    pytest.importorskip("torch")
    from poserender.config import Pose2ImgConfig
    from poserender.training.config import DataConfig
    from poserender.training.pose2img_data import load_frame_folder

    out = tmp_path / "d"
    assert CliRunner().invoke(main, ["demo-data", "-o", str(out), "--frames", "4", "--size", "128"]).exit_code == 0
    geometry = Pose2ImgConfig(img_h=128, img_w=128, scale=1.0)
    table = load_frame_folder(out / "images", out / "keypoints", DataConfig(img_extension=".png"), geometry)
    assert len(table) == 4
    np.testing.assert_allclose(table.keypoints[1], g.gesture_sequence(4, 128, seed=0)[1], atol=1e-3)
    assert table.valid[0].all()


@pytest.mark.parametrize("args, words", [(["--frames", "0"], "--frames 0"), (["--size", "100"], "--size 100")])
def test_demo_data_bad_arguments(tmp_path, args, words):
    result = CliRunner().invoke(main, ["demo-data", "-o", str(tmp_path / "x")] + args)
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_committed_demo_config_trains_on_demo_data(tmp_path):
    """configs/demo.yaml as committed (only the data paths and the step count overridden)."""
    pytest.importorskip("torch")
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    data = tmp_path / "demo"
    assert CliRunner().invoke(main, ["demo-data", "-o", str(data), "--frames", "20"]).exit_code == 0
    result = CliRunner().invoke(main, ["train", "pose2img", "--config", str(config), "--frames", str(data / "images"),
                                       "--keypoints", str(data / "keypoints"), "--steps", "2",
                                       "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "ckpt_final.pth").is_file()
