"""GPU engines: what can be checked on a CPU (IO binding, provider errors, reduced-precision
trunks, backend selection), and the GPU paths themselves, marked gpu/trt/multi_gpu and skipped
with the reason `poserender doctor` gives when the machine cannot run them."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from poserender import families  # noqa: E402
from poserender.doctor import backend_availability
from poserender.engines import ort_engine, registry, select, torch_engine
from poserender.errors import UserError
from poserender.export.verify import compare_outputs
from poserender.specs import StageSpec

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

_AVAILABLE = backend_availability()


def needs(backend: str):
    usable, reason = _AVAILABLE[backend]
    return pytest.mark.skipif(not usable, reason=f"{backend} not usable here: {reason}")


def manifest_of(model_dir):
    return json.loads((model_dir / "manifest.json").read_text())


def feeds(model_dir):
    """Verification inputs of both stages (frame fed from the torch source stage)."""
    from poserender.export.verify import stage_feeds

    manifest = manifest_of(model_dir)
    _, engines = select.stage_engines(model_dir, manifest, "torch", torch_stages=families.of(manifest).torch_stage)
    with engines[0] as source:
        source_feed = stage_feeds(manifest, 0, {})
        frame_feed = stage_feeds(manifest, 1, source.infer(source_feed))
    return manifest, source_feed, frame_feed


@pytest.fixture(scope="module")
def stage_feeds_tiny(tiny_model):
    return feeds(tiny_model)


def test_ort_io_binding_gives_the_same_frames_as_a_plain_run(tiny_model, stage_feeds_tiny):
    manifest, _, frame_feed = stage_feeds_tiny
    spec = StageSpec.from_dict(manifest["stages"][1])
    with ort_engine.OrtEngine(spec, tiny_model / spec.file) as plain, \
            ort_engine.OrtEngine(spec, tiny_model / spec.file, io_binding=True) as bound:
        expected = plain.infer(frame_feed)["frames"]
        got = bound.infer(frame_feed)["frames"]
        values = bound.run_bound(frame_feed)
    np.testing.assert_array_equal(got, expected)
    assert type(values["frames"]).__name__ == "OrtValue" and values["frames"].device_name() == "cpu"


def test_asking_for_a_missing_provider_lists_the_available_ones(tiny_model, stage_feeds_tiny):
    import onnxruntime as ort

    manifest = stage_feeds_tiny[0]
    spec = StageSpec.from_dict(manifest["stages"][1])
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    engine = ort_engine.OrtEngine(spec, tiny_model / spec.file, providers=ort_engine.cuda_providers(0), device_id=0)
    assert engine.backend == "ort-cuda"
    with pytest.raises(UserError) as err:
        engine.activate()
    message = str(err.value)
    assert "has no CUDAExecutionProvider" in message and "CPUExecutionProvider" in message


def test_tensorrt_provider_options_carry_caches_precision_and_profile(tmp_path):
    from poserender.families.pose2img import stage_specs as pose2img_stage_specs

    _, frame = pose2img_stage_specs(64, 64)
    providers = ort_engine.tensorrt_providers(1, tmp_path, "fp16", frame)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider" and [p if isinstance(p, str) else p[0] for p in providers[1:]] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["device_id"] == 1 and options["trt_fp16_enable"] and "trt_bf16_enable" not in options
    assert options["trt_engine_cache_path"] == str(tmp_path / "ort_trt_cache")
    assert options["trt_profile_max_shapes"].startswith("target_keypoints:16x122x2,target_valid:16x122,")
    assert "source_parts:1x8x3x64x64" in options["trt_profile_min_shapes"]
    with pytest.raises(UserError, match="int8"):
        ort_engine.tensorrt_providers(0, tmp_path, "int8")


def test_cpu_backends_refuse_a_gpu_device_and_reduced_precision(tiny_model):
    manifest = manifest_of(tiny_model)
    with pytest.raises(UserError, match="needs a GPU backend"):
        select.stage_engines(tiny_model, manifest, "ort-cpu", device="0")
    with pytest.raises(UserError, match="backend torch runs fp32; --precision fp16 needs one of torch-cuda, ort-trt, trt"):
        select.stage_engines(tiny_model, manifest, "torch", precision="fp16")


@pytest.mark.parametrize("backend", registry.gpu_names())
def test_unusable_gpu_backend_says_why(backend):
    usable, reason = _AVAILABLE[backend]
    if usable:
        assert select.resolve_backend(backend) == backend
    else:
        with pytest.raises(UserError, match=f"backend {backend} is not usable here: "):
            select.resolve_backend(backend)


def test_reduced_precision_casts_only_the_unet_and_stays_close(tiny_model, stage_feeds_tiny):
    """bf16 on the CPU exercises the same trunk casting the CUDA engine uses."""
    manifest, _, frame_feed = stage_feeds_tiny
    spec = StageSpec.from_dict(manifest["stages"][1])
    loader = lambda: families.of(manifest).torch_stage(manifest, "frame")  # noqa: E731
    with torch_engine.TorchEngine(spec, loader) as fp32, torch_engine.TorchEngine(spec, loader, precision="bf16") as bf16:
        ref, got = fp32.infer(frame_feed), bf16.infer(frame_feed)
        import torch

        assert bf16.trunks == ["generator.unet_stageC"] and fp32.trunks == []
        params = dict(bf16.module.named_parameters())
        assert params["generator.unet_stageC.model.model.0.weight"].dtype == torch.bfloat16
        assert all(p.dtype == torch.float32 for n, p in params.items() if not n.startswith("generator.unet_stageC"))
    report = compare_outputs(ref, got)["frames"]
    assert report["psnr_db"] >= 30 and report["max_abs_error"] > 0       # it did change precision


# ---------------------------------------------------------------------------------------------
# GPU paths (run by a session with a lent GPU; benchmarks/gpu_checks.py records the numbers)
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs("torch-cuda")
@pytest.mark.parametrize("precision, min_psnr", [("fp32", 50.0), ("fp16", 35.0), ("bf16", 35.0)])
def test_torch_cuda_matches_cpu(tiny_model, stage_feeds_tiny, precision, min_psnr):
    manifest, _, frame_feed = stage_feeds_tiny
    spec = StageSpec.from_dict(manifest["stages"][1])
    loader = lambda: families.of(manifest).torch_stage(manifest, "frame")  # noqa: E731
    with torch_engine.TorchEngine(spec, loader) as cpu, \
            torch_engine.TorchEngine(spec, loader, device="cuda:0", precision=precision) as gpu:
        report = compare_outputs(cpu.infer(frame_feed), gpu.infer(frame_feed))["frames"]
    assert report["nonfinite"] == 0 and report["psnr_db"] >= min_psnr, report


@pytest.mark.gpu
@needs("torch-cuda")
def test_torch_cuda_graph_replay_equals_eager(tiny_model, stage_feeds_tiny):
    manifest, _, frame_feed = stage_feeds_tiny
    spec = StageSpec.from_dict(manifest["stages"][1])
    loader = lambda: families.of(manifest).torch_stage(manifest, "frame")  # noqa: E731
    with torch_engine.TorchEngine(spec, loader, device="cuda:0") as eager, \
            torch_engine.TorchEngine(spec, loader, device="cuda:0", cuda_graphs=True) as graphed:
        expected = eager.infer(frame_feed)["frames"]
        for _ in range(3):                                   # capture, then replays
            np.testing.assert_array_equal(graphed.infer(frame_feed)["frames"], expected)
        assert len(graphed._graphs) == 1


@pytest.mark.gpu
@needs("ort-cuda")
def test_ort_cuda_matches_ort_cpu(tiny_model, stage_feeds_tiny):
    manifest, _, frame_feed = stage_feeds_tiny
    _, cpu = select.stage_engines(tiny_model, manifest, "ort-cpu")
    _, gpu = select.stage_engines(tiny_model, manifest, "ort-cuda", device="0")
    with cpu[1] as c, gpu[1] as g:
        report = compare_outputs(c.infer(frame_feed), g.infer(frame_feed))["frames"]
    assert report["fraction_over_2_levels"] < 1e-3 and report["nonfinite"] == 0


@pytest.mark.gpu
@pytest.mark.trt
@needs("trt")
def test_trt_build_load_and_match_ort(tiny_model, tmp_path):
    from click.testing import CliRunner

    from poserender.cli import main
    from poserender.engines.trt_engine import TrtEngine

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    result = CliRunner().invoke(main, ["build", str(model), "--precision", "fp16", "--devices", "0,0",
                                       "--timing-cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    manifest, source_feed, frame_feed = feeds(model)
    records = manifest["engines"]
    assert {r["stage"] for r in records} == {"source", "frame"} and all(r["fp32_layers"] for r in records)
    assert list((tmp_path / "cache").glob("*.timing"))
    spec = StageSpec.from_dict(manifest["stages"][1])
    for graphs in (False, True):
        with TrtEngine(spec, model, manifest, 0, "fp16", cuda_graphs=graphs) as engine:
            got = engine.infer(frame_feed)
            assert engine.last_gpu_ms is not None and engine.last_gpu_ms > 0
        _, cpu = select.stage_engines(model, manifest, "ort-cpu")
        with cpu[1] as reference:
            report = compare_outputs(reference.infer(frame_feed), got)["frames"]
        assert report["nonfinite"] == 0 and report["psnr_db"] >= 35 and not math.isnan(report["psnr_db"])


@pytest.mark.gpu
@pytest.mark.multi_gpu
@needs("trt")
def test_build_on_two_gpus(tiny_model, tmp_path):
    from click.testing import CliRunner

    from poserender.cli import main
    from poserender.engines.placement import visible_device_count

    if visible_device_count() < 2:
        pytest.skip(f"needs two CUDA devices; {visible_device_count()} visible")
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    result = CliRunner().invoke(main, ["build", str(model), "--devices", "0,1", "--replicate"])
    assert result.exit_code == 0, result.output
    engines = {(r["stage"], r["device"]) for r in manifest_of(model)["engines"]}
    assert engines == {("source", 0), ("frame", 0), ("frame", 1)}
