"""The TensorRT build's policy pieces (no TensorRT needed) and `poserender build`/`verify` on a CPU."""
from __future__ import annotations

import io
import shutil
import sys

import pytest

onnx = pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402

from poserender.cli import main  # noqa: E402
from poserender.errors import UserError  # noqa: E402
from poserender.export import trt_build, trt_precision  # noqa: E402
from poserender.families.pose2img import stage_specs as pose2img_stage_specs  # noqa: E402

try:
    import tensorrt  # noqa: F401
    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False


def test_fp32_nodes_keep_preprocessing_and_unsafe_ops_and_free_the_unet(tiny_model):
    model = onnx.load(str(tiny_model / "frame.onnx"))
    pinned = trt_precision.fp32_nodes(model)
    assert pinned["/warp/MatMul"] == "pre/post-processing (warp)"
    assert pinned["/heatmaps/Exp"] == "exp/log/pow/div"
    assert pinned["/transforms/ReduceSum"] == "reduction"
    assert pinned["/Round"] == "pre/post-processing (top level)"
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert convs and not any(name in pinned for name in convs)            # the U-Net runs reduced
    assert not any(n.startswith("/unet_stageC/") and n.endswith("/Relu") for n in pinned)
    assert "/Cast" not in pinned                                            # uint8 output: no precision choice
    source = trt_precision.fp32_nodes(onnx.load(str(tiny_model / "source.onnx")))
    assert [name for name, why in source.items() if why == "softmax"] == ["/Softmax"]


def test_profile_shapes_come_from_the_stage_spec():
    source, frame = pose2img_stage_specs(64, 64)
    shapes = trt_build.profile_shapes(frame)
    assert shapes["target_keypoints"] == ((1, 122, 2), (4, 122, 2), (16, 122, 2))
    assert "source_parts" not in shapes                                     # static (1, 8, 3, H, W)
    assert trt_build.profile_shapes(source)["source_image"] == ((1, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64))


def test_timing_cache_is_per_gpu_model_and_tensorrt_version(tmp_path):
    path = trt_build.timing_cache_file(tmp_path, "NVIDIA H100 80GB HBM3", "9.0", "10.3.0")
    assert path == tmp_path / "nvidia-h100-80gb-hbm3-sm90-trt10.3.0.timing"
    assert path != trt_build.timing_cache_file(tmp_path, "NVIDIA H100 PCIe", "9.0", "10.3.0")
    assert trt_build.plan_file("frame", "fp16", 1) == "frame.fp16.gpu1.plan"


@pytest.mark.parametrize("culprits", [{"c3"}, {"c0", "c47"}, {"c2", "c3", "c59"}])
def test_bisection_finds_the_layers_that_need_fp32(culprits):
    candidates = [f"c{i}" for i in range(64)]
    calls = []

    def nonfinite(pinned):
        calls.append(pinned)
        return not culprits <= pinned
    found = trt_precision.find_nonfinite_layers(candidates, nonfinite)
    assert set(found) == culprits
    assert len(calls) <= 1 + 2 * len(culprits) * 6       # ~2 log2(64) builds per culprit, not one per layer


def test_bisection_reports_nothing_when_fp32_everywhere_is_still_bad():
    assert trt_precision.find_nonfinite_layers(["a", "b"], lambda pinned: True) == []


def test_bisection_gives_up_with_a_clear_message():
    with pytest.raises(UserError, match="gave up after 3 builds"):
        trt_precision.find_nonfinite_layers([f"c{i}" for i in range(64)], lambda p: not {"c1", "c60"} <= p, max_checks=3)


def test_elapsed_line_always_ends_with_the_total():
    stream = io.StringIO()
    with trt_build.ElapsedLine("building frame (fp16) on GPU 0", stream) as line:
        pass
    assert stream.getvalue().startswith("building frame (fp16) on GPU 0 ...")
    assert stream.getvalue().endswith(f"done in {line.seconds:.1f} s\n")
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with trt_build.ElapsedLine("building", stream):
            raise RuntimeError("boom")
    assert "failed in" in stream.getvalue()


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_require_tensorrt_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UserError, match="pip install tensorrt pycuda"):
        trt_build.require_tensorrt()


def test_build_command_without_tensorrt_is_one_line(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(main, ["build", str(tiny_model), "--precision", "fp16"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("poserender: error: TensorRT is not installed")
    assert "pip install tensorrt pycuda" in lines[0] and "Traceback" not in result.output


def test_build_command_checks_its_options_first(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(main, ["build", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "expected an exported model folder" in result.stderr
    result = CliRunner().invoke(main, ["build", str(tiny_model), "--devices", "0,x"])
    assert result.exit_code == 2 and "--devices '0,x'" in result.stderr
    result = CliRunner().invoke(main, ["build", str(tiny_model), "--precision", "int4"])
    assert result.exit_code == 2 and "int4" in result.output


def test_verify_command_compares_backends_and_writes_the_manifest(tiny_model, tmp_path):
    import json

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    result = CliRunner().invoke(main, ["verify", str(model), "--backends", "ort-cpu"])
    assert result.exit_code == 0, result.output
    assert "verified ort-cpu against torch" in result.stdout
    record = json.loads((model / "manifest.json").read_text())["verification_backends"]
    assert record["reference"] == "torch"
    ort = record["backends"]["ort-cpu"]
    assert ort["passed"] is True and set(ort["stages"]) == {"source", "frame"}
    frames = ort["end_to_end"]["frames"]
    assert frames["nonfinite"] == 0 and frames["max_abs_error"] <= 2 and frames["psnr_db"] > 40
    assert ort["stages"]["source"]["background"]["max_abs_error"] < 1e-3


def test_verify_command_rejects_an_unknown_backend_before_any_work(tiny_model):
    result = CliRunner().invoke(main, ["verify", str(tiny_model), "--backends", "trt-typo"])
    assert result.exit_code == 2 and "unknown backend 'trt-typo'" in result.stderr
