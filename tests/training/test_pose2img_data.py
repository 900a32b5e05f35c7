"""Training data: config parsing, whole-dataset validation at start, reference pairing."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from poserender.errors import UserError
from poserender.training.config import load_train_config
from poserender.training.pose2img_data import (DatasetError, PairSampler, load_frames, split,
                                               validation_pairs)


def test_config_paths_are_relative_to_the_yaml_and_overrides_win(write_config, tiny_dataset):
    cfg = load_train_config(write_config(), {"steps": 9, "batch_size": None})
    assert cfg.steps == 9 and cfg.batch_size == 2
    assert cfg.data.frames == str(tiny_dataset / "frames")
    assert cfg.geometry.canvas_hw == (64, 64)
    assert cfg.lr_discriminator == 0.0005


def test_unknown_config_key_names_the_near_miss(write_config):
    with pytest.raises(UserError, match=r"unknown key TRAINING\.optim\.'step'.*did you mean 'steps'"):
        load_train_config(write_config("typo.yaml", optim={"step": 3}))


def test_bad_config_values_are_listed(write_config):
    with pytest.raises(UserError, match="warp_mode.*expected one of legacy, exact"):
        load_train_config(write_config("bad.yaml", model={"warp_mode": "nearest"}))
    with pytest.raises(UserError, match="batch_size = 1.5; expected an integer"):
        load_train_config(write_config("bad2.yaml", optim={"batch_size": 1.5}))


def test_dataset_loads_in_canvas_space(write_config):
    cfg = load_train_config(write_config())
    table = load_frames(cfg.data, cfg.geometry)
    assert len(table) == 12 and table.keypoints.shape == (12, 122, 2) and table.valid.all()
    image = table.image(3)
    assert image.shape == (3, 64, 64) and image.dtype == np.float32
    assert -1.0 <= image.min() < image.max() <= 1.0
    train, val = split(table, cfg.data.val_frames, "x")
    assert len(train) == 10 and len(val) == 2
    item = train[(0, 1)]
    assert item["source_keypoints"].shape == (122, 2) and item["target_image"].shape == (3, 64, 64)
    assert np.allclose(item["source_keypoints"].numpy(), table.keypoints[2])   # train starts after val


def test_every_problem_is_listed_at_start(tmp_path, tiny_dataset, write_config):
    data = tmp_path / "broken"
    shutil.copytree(tiny_dataset / "frames", data / "frames")
    shutil.copytree(tiny_dataset / "keypoints", data / "keypoints")
    (data / "frames" / "0003.png").unlink()                                  # missing image
    np.save(data / "keypoints" / "0005.npy", np.zeros((5, 7)))                # wrong shape
    cv2.imwrite(str(data / "frames" / "0007.png"), np.zeros((20, 30, 3), np.uint8))   # too small
    bad = np.load(data / "keypoints" / "0009.npy")
    bad[4] = np.nan
    np.save(data / "keypoints" / "0009.npy", bad)                             # NaN
    (data / "frames" / "0010.png").write_bytes(b"not an image")               # undecodable
    cfg = load_train_config(write_config(), {"frames": data / "frames", "keypoints": data / "keypoints"})
    with pytest.raises(DatasetError) as info:
        load_frames(cfg.data, cfg.geometry)
    problems = info.value.problems
    assert len(problems) == 5, problems
    text = str(info.value)
    for needle in ("0003.png: missing", "0005.npy", "(5, 7)", "0007.png: frame is 30 x 20", "0009.npy",
                   "NaN", "0010.png: cannot decode"):
        assert needle in text
    assert text.count("\n") == 5                                               # one line per problem


def test_video_frames_and_pose_count_must_match(tmp_path, write_config):
    import av

    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=15)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    from poserender.keypoints.template import gesture_sequence
    np.save(tmp_path / "poses.npy", gesture_sequence(7, 64, 64))
    cfg = load_train_config(write_config(), {"frames": video, "keypoints": tmp_path / "poses.npy"})
    with pytest.raises(DatasetError, match="has 5 frames but .*poses.npy has 7 poses"):
        load_frames(cfg.data, cfg.geometry)
    np.save(tmp_path / "poses.npy", gesture_sequence(5, 64, 64))
    table = load_frames(cfg.data, cfg.geometry)
    assert len(table) == 5 and table.images.shape == (5, 3, 64, 64)
    assert table.images[4].mean() > table.images[1].mean()                  # frames stay in order


def test_pair_sampler_is_seeded_sharded_and_resumable():
    a = list(PairSampler(10, seed=3, epoch=1))
    assert a == list(PairSampler(10, seed=3, epoch=1))
    assert a != list(PairSampler(10, seed=3, epoch=2))
    assert sorted(s for s, _ in a) == list(range(10))
    assert all(s != t and 0 <= t < 10 for s, t in a)                           # a different frame
    assert list(PairSampler(10, seed=3, epoch=1, start=4)) == a[4:]
    shards = [list(PairSampler(10, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert not {s for s, _ in shards[0]} & {s for s, _ in shards[1]}
    assert {p for shard in shards for p in shard} == set(a)                    # same pairs, dealt out
    assert validation_pairs(3) == [(0, 0), (0, 1), (0, 2)]
