"""Compatibility manifest of TensorRT plans, decided on a CPU with made-up machines.

Each test takes a manifest that agrees with "this machine" and changes one fact, then checks
that loading is refused with one line naming exactly that difference and the rebuild command
(or, for the deliberately tolerated cases, that it loads).
"""
from __future__ import annotations

import dataclasses

import pytest

from poserender.engines import compat
from poserender.engines.compat import EngineMismatch, MachineFacts, check_engine, engine_record
from poserender.errors import UserError
from poserender.manifest import sha256_file

H100 = MachineFacts(tensorrt="10.3.0", cuda="12.4", driver="550.54.15", gpu_name="NVIDIA H100 80GB HBM3",
                    compute_capability="9.0")


@pytest.fixture
def model(tmp_path):
    """A model folder with one fp16 plan for stage 'frame' on GPU 0, built on H100."""
    (tmp_path / "frame.fp16.gpu0.plan").write_bytes(b"plan bytes")
    stage = {"name": "frame", "file": "frame.onnx", "sha256": "a" * 64, "batch": {"min": 1, "opt": 4, "max": 16}}
    record = engine_record("frame", 0, "frame.fp16.gpu0.plan", sha256_file(tmp_path / "frame.fp16.gpu0.plan"),
                           stage["sha256"], "fp16", stage["batch"], ["/warp/MatMul"], H100)
    manifest = {"family": "pose2img", "stages": [stage], "engines": [record],
                "build": {"precision": "fp16", "devices": [0, 1], "replicate": True, "optimization_level": 4}}
    return tmp_path, manifest


def here(**changes):
    return lambda device: dataclasses.replace(H100, **changes)


def refused(model_dir, manifest, facts=here(), precision="fp16", device=0):
    with pytest.raises(EngineMismatch) as err:
        check_engine(model_dir, manifest, "frame", device, precision, facts)
    message = str(err.value)
    assert "\n" not in message
    return err.value, message


REBUILD = "rebuild: poserender build {dir} --precision fp16 --devices 0,1 --replicate --optimization-level 4"


def test_matching_machine_and_model_loads(model):
    model_dir, manifest = model
    record = check_engine(model_dir, manifest, "frame", 0, "fp16", here())
    assert record["file"] == "frame.fp16.gpu0.plan" and record["fp32_layers"] == ["/warp/MatMul"]
    assert check_engine(model_dir, manifest, "frame", 0, None, here())["precision"] == "fp16"


@pytest.mark.parametrize("field, value, fragment", [
    ("tensorrt", "10.8.0", "TensorRT 10.3.0 (built) vs 10.8.0 (here)"),
    ("gpu_name", "NVIDIA A100-SXM4-80GB", "GPU NVIDIA H100 80GB HBM3 (built) vs NVIDIA A100-SXM4-80GB (here)"),
    ("compute_capability", "8.0", "compute capability 9.0 (built) vs 8.0 (here)"),
    ("cuda", "13.0", "CUDA 12.4 (built) vs 13.0 (here)"),
    ("driver", "535.104.05", "driver 550.54.15 (built) vs 535.104.05 (here)"),
])
def test_each_machine_fact_that_differs_is_named(model, field, value, fragment):
    model_dir, manifest = model
    error, message = refused(model_dir, manifest, here(**{field: value}))
    assert [m.field for m in error.mismatches] == [field]
    assert fragment in message
    assert REBUILD.format(dir=model_dir) in message and "--rebuild-if-needed" in message
    assert message.startswith(str(model_dir / "frame.fp16.gpu0.plan"))


@pytest.mark.parametrize("field, value", [("cuda", "12.8"), ("driver", "560.28.03")])
def test_a_newer_driver_or_cuda_minor_is_accepted(model, field, value):
    model_dir, manifest = model
    check_engine(model_dir, manifest, "frame", 0, "fp16", here(**{field: value}))


def test_several_differences_are_all_on_one_line(model):
    model_dir, manifest = model
    error, message = refused(model_dir, manifest, here(tensorrt="10.8.0", compute_capability="8.9"))
    assert [m.field for m in error.mismatches] == ["tensorrt", "compute_capability"]
    assert "TensorRT 10.3.0" in message and "compute capability 9.0" in message


def test_reexported_onnx_makes_the_plan_stale(model):
    model_dir, manifest = model
    manifest["stages"][0]["sha256"] = "b" * 64
    error, message = refused(model_dir, manifest)
    assert [m.field for m in error.mismatches] == ["onnx_sha256"]
    assert "ONNX graph sha256 aaaaaaaaaaaa recorded, bbbbbbbbbbbb now" in message


def test_changed_batch_range_is_a_profile_mismatch(model):
    model_dir, manifest = model
    manifest["stages"][0]["batch"] = {"min": 1, "opt": 8, "max": 32}
    error, message = refused(model_dir, manifest)
    assert [m.field for m in error.mismatches] == ["profile"] and "batch profile 1/4/16 (built) vs 1/8/32 (here)" in message


def test_asking_for_another_precision_is_named(model):
    model_dir, manifest = model
    _, message = refused(model_dir, manifest, precision="bf16")
    assert "no bf16 TensorRT engine for stage 'frame' on GPU 0; build it: poserender build" in message
    assert "--precision bf16" in message
    record = manifest["engines"][0]
    found = compat.model_mismatches(record, manifest["stages"][0], model_dir / record["file"], "fp32")
    assert [(m.field, m.recorded, m.current) for m in found] == [("precision", "fp16", "fp32")]


def test_replaced_or_missing_plan_file(model):
    model_dir, manifest = model
    (model_dir / "frame.fp16.gpu0.plan").write_bytes(b"another plan")
    error, message = refused(model_dir, manifest)
    assert [m.field for m in error.mismatches] == ["plan_sha256"] and "plan sha256" in message
    (model_dir / "frame.fp16.gpu0.plan").unlink()
    error, _ = refused(model_dir, manifest)
    assert [m.field for m in error.mismatches] == ["plan_file"]


def test_no_engine_for_that_device(model):
    model_dir, manifest = model
    _, message = refused(model_dir, manifest, device=1)
    assert "no fp16 TensorRT engine for stage 'frame' on GPU 1" in message


def test_mismatch_is_a_user_error_with_exit_code_2(model):
    model_dir, manifest = model
    error, _ = refused(model_dir, manifest, here(tensorrt="11.0.0"))
    assert isinstance(error, UserError) and error.exit_code == 2


def test_rebuild_command_quotes_paths():
    command = compat.rebuild_command("art/my model", {"precision": "bf16", "devices": [0, 0]})
    assert command == "poserender build 'art/my model' --precision bf16 --devices 0,0"


def test_newest_record_wins():
    manifest = {"engines": [{"stage": "frame", "device": 0, "precision": "fp16", "file": "old"},
                            {"stage": "frame", "device": 0, "precision": "fp16", "file": "new"},
                            {"stage": "frame", "device": 1, "precision": "fp16", "file": "other"}]}
    assert compat.find_record(manifest, "frame", 0, "fp16")["file"] == "new"
    assert compat.find_record(manifest, "frame", 0, "fp32") is None


def test_an_int8_plan_goes_stale_when_its_qdq_graph_is_recalibrated(model):
    model_dir, manifest = model
    (model_dir / "frame.int8.trt.onnx").write_bytes(b"calibrated graph")
    record = dict(manifest["engines"][0], precision="int8", graph="frame.int8.trt.onnx",
                  graph_sha256=sha256_file(model_dir / "frame.int8.trt.onnx"))
    manifest = {**manifest, "engines": [record], "build": {**manifest["build"], "precision": "int8"}}
    assert check_engine(model_dir, manifest, "frame", 0, "int8", here())["graph"] == "frame.int8.trt.onnx"
    (model_dir / "frame.int8.trt.onnx").write_bytes(b"calibrated again")
    error, message = refused(model_dir, manifest, precision="int8")
    assert [m.field for m in error.mismatches] == ["graph_sha256"] and "INT8 graph sha256" in message
    assert "--precision int8" in message
    (model_dir / "frame.int8.trt.onnx").unlink()
    error, _ = refused(model_dir, manifest, precision="int8")
    assert [(m.field, m.current) for m in error.mismatches] == [("graph_sha256", "missing")]
