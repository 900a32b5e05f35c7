"""Pose2Img checkpoints: our format round-trips, the reference format (``{'G': ...}`` with the
DataParallel ``module.`` prefix) loads, and every kind of bad file is a UserError naming the file."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from poserender.errors import UserError
from poserender.models.checkpoint import load_checkpoint, load_generator, save_checkpoint


@pytest.fixture(scope="module")
def generator(make_small_generator):
    return make_small_generator(width=8, seed=11)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_with_metadata(tmp_path, generator):
    path = tmp_path / "ckpt" / "g.pth"                    # parent is created
    meta = {"warp_mode": "exact", "config": {"scale": 5.0, "kp_var_root": [10] * 13}, "step": 1234}
    save_checkpoint(path, generator, meta=meta, extra={"epoch": 7})
    assert path.is_file()
    loaded, got_meta = load_generator(path)
    assert loaded.width == 8 and not loaded.training
    assert_same_state(generator, loaded)
    assert got_meta["family"] == "pose2img" and got_meta["width"] == 8
    for key, value in meta.items():
        assert got_meta[key] == value
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"G", "poserender", "epoch"} and raw["epoch"] == 7
    # same outputs, not just same tensors
    x = torch.rand(1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(generator.unet_stageA(x), loaded.unet_stageA(x))


def test_reference_style_checkpoint_loads(tmp_path, generator):
    path = tmp_path / "reference.pth"
    torch.save({"G": {f"module.{k}": v for k, v in generator.state_dict().items()}, "epoch": 3}, path)
    loaded, meta = load_generator(path)
    assert meta == {}
    assert loaded.width == 8
    assert_same_state(generator, loaded)
    state, _ = load_checkpoint(path)
    assert not any(k.startswith("module.") for k in state)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, generator):
    path = tmp_path / "g.pth"
    save_checkpoint(path, generator)
    save_checkpoint(path, generator, meta={"step": 2})          # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["g.pth"]
    assert load_checkpoint(path)[1]["step"] == 2
    before = path.read_bytes()
    # a save that fails before writing anything (meta cannot be pickled) keeps the old file and
    # leaves no temp file
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint(path, generator, meta={"bad": lambda: None})
    assert sorted(os.listdir(tmp_path)) == ["g.pth"]
    assert path.read_bytes() == before


def test_save_interrupted_mid_write_keeps_the_old_file(tmp_path, generator, monkeypatch):
    """torch.save dies after writing half a file: the destination must still hold the previous
    checkpoint (the bytes went to a temp file in the same folder), and the temp file is removed."""
    path = tmp_path / "g.pth"
    save_checkpoint(path, generator, meta={"step": 1})
    before = path.read_bytes()
    written_to = []

    def broken_save(obj, f, *args, **kwargs):
        written_to.append(os.fspath(f))
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, generator, meta={"step": 2})
    monkeypatch.undo()
    assert len(written_to) == 1 and os.path.dirname(written_to[0]) == str(tmp_path)
    assert os.path.abspath(written_to[0]) != str(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["g.pth"]
    assert load_checkpoint(path)[1]["step"] == 1


# ---------------------------------------------------------------------------------------------
# bad checkpoints
# ---------------------------------------------------------------------------------------------
def _state(generator):
    return {k: v.clone() for k, v in generator.state_dict().items()}


def _renamed(generator):
    state = _state(generator)
    state["unet_stageC.model.model.0.weight_renamed"] = state.pop("unet_stageC.model.model.0.weight")
    return {"G": state}


def _missing(generator):
    state = _state(generator)
    del state["unet_stageD.model.model.2.block.1.running_var"]
    return {"G": state}


def _wrong_shape(generator):
    state = _state(generator)
    state["unet_stageC.model.model.2.block.1.weight"] = torch.ones(7)
    return {"G": state}


def _no_first_conv(generator):
    state = _state(generator)
    del state["unet_stageA.model.model.0.weight"]
    return {"G": state}


def _no_g(generator):
    return {"model": _state(generator)}


def _g_not_a_dict(generator):
    return {"G": torch.zeros(3)}


@pytest.mark.parametrize("make,words", [
    (_renamed, "unexpected"),
    (_missing, "missing"),
    (_wrong_shape, "shape"),
    (_no_first_conv, "unet_stageA.model.model.0.weight"),
    (_no_g, "'G'"),
    (_g_not_a_dict, "'G'"),
], ids=["renamed-key", "missing-key", "wrong-shape", "no-first-conv", "no-G", "G-not-a-dict"])
def test_bad_checkpoint_is_a_user_error_naming_the_file(tmp_path, generator, make, words):
    path = tmp_path / "bad.pth"
    torch.save(make(generator), path)
    with pytest.raises(UserError) as info:
        load_generator(path)
    message = str(info.value)
    assert str(path) in message
    assert words in message


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as info:
        load_generator(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)                   # one line for the CLI


def test_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "nope" / "missing.pth"
    with pytest.raises(UserError) as info:
        load_generator(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError) as info:
        load_generator(tmp_path)
    assert str(tmp_path) in str(info.value)
