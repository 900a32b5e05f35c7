"""INT8 (QDQ) export of the pose2img frame stage on a tiny model (width 8, 64 x 64): frame splits,
which nodes stay FP32, the CLI end to end with its manifest record, the refusal below the gate,
and `render`/engine selection at --precision int8."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.engines import select
from poserender.errors import UserError
from poserender.export.quality import QualityGate
from poserender import families
from poserender.export.calibration import CalibrationData, calibration_data, split_frames
from poserender.export.int8 import add_int8, add_int8_targets
from poserender.export.quantize import quantization_plan
from poserender.keypoints.template import gesture_sequence, template_pose
from poserender.manifest import read_manifest

FAST_INT8 = ["--precision", "int8", "--calibration-method", "minmax", "--frames", "8", "--gate-frames", "4"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("poserender: error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def calibration_files(tmp_path_factory):
    """A smooth 64 x 64 source image, its keypoints (.npy 2 x 122) and 24 target poses (.npy)."""
    folder = tmp_path_factory.mktemp("int8_inputs")
    noise = np.random.default_rng(7).uniform(0, 255, (6, 6, 3)).astype(np.float32)
    cv2.imwrite(str(folder / "source.png"), cv2.resize(noise, (64, 64), interpolation=cv2.INTER_CUBIC).clip(0, 255)
                .astype(np.uint8))
    np.save(folder / "source.npy", template_pose(64, 64).T.copy())
    np.save(folder / "targets.npy", gesture_sequence(24, 64, 64, seed=4))
    return folder


def int8_args(files):
    return ["--calibrate", files / "targets.npy", "--source", files / "source.png",
            "--source-keypoints", files / "source.npy"]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, tiny_checkpoint, calibration_files):
    out = tmp_path_factory.mktemp("int8") / "tiny"
    result = run("export", tiny_checkpoint, "-o", out, *FAST_INT8, *int8_args(calibration_files))
    assert result.exit_code == 0, result.output
    return out, result


def test_frame_splits_are_disjoint_and_hold_out_the_tail():
    split = split_frames(304, 32, 16, 8)
    sets = [set(split.calibration), set(split.selection), set(split.gate)]
    assert [len(s) for s in sets] == [32, 8, 16]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert max(split.calibration) < min(split.gate + split.selection)       # held-out poses come after
    assert split.calibration[0] == 0 and split.gate[-1] == 303
    assert split_frames(24, 8, 4).selection == [] and len(split_frames(24, 8, 4).gate) == 4
    with pytest.raises(UserError, match="has 10 usable frames.*need 12"):
        split_frames(10, 8, 4)


def test_plan_keeps_head_warps_and_heat_maps_fp32(int8_model):
    model = onnx.load(str(int8_model[0] / "frame.onnx"))
    plan = quantization_plan(model, ("/unet_stageC/",))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert convs[-1] == "/unet_stageC/model/model/model.6/Conv"            # the U-Net's output conv
    assert convs[-1] in plan.nodes_to_exclude and convs[-1] in plan.excluded["output_head"]
    assert not any(c in plan.nodes_to_exclude for c in convs[:-1])         # every other conv is INT8
    assert {"warp", "heatmaps", "transforms"} <= set(plan.excluded)
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(m in plan.nodes_to_exclude for m in matmuls)    # heat maps and warps stay FP32
    assert plan.trunk_nodes > len(convs) - 1
    with pytest.raises(ValueError, match="no Conv under"):
        quantization_plan(model, ("/no_such_net/",))


def test_cli_writes_int8_graph_and_manifest_record(int8_model):
    out, result = int8_model
    assert "INT8 frame.int8.onnx (minmax calibration, 8 frames)" in result.stdout and "gate PSNR >= 35 dB passed" \
        in result.stdout
    manifest = read_manifest(out)
    entry = manifest["int8"]
    assert manifest["precision"] == "fp32" and [s["file"] for s in manifest["stages"]] == ["source.onnx", "frame.onnx"]
    stage = entry["stages"][0]
    assert stage["name"] == "frame" and stage["file"] == "frame.int8.onnx" and (out / "frame.int8.onnx").is_file()
    assert "/unet_stageC/model/model/model.6/Conv" in stage["excluded_nodes"]["output_head"]
    assert entry["fp32_stages"] == ["source"]
    cal = entry["calibration"]
    assert cal["method"] == "minmax" and cal["frames"] == 8 and len(cal["frame_indices"]) == 8
    assert cal["inputs"]["keypoints"].endswith("targets.npy") and cal["inputs"]["source_image"].endswith("source.png")
    quality = entry["quality"]
    assert set(quality["frame_indices"]).isdisjoint(cal["frame_indices"]) and quality["frames"] == 4
    assert quality["psnr_db"] is None or quality["psnr_db"] >= 35
    assert 0.9 < quality["ssim"] <= 1 and quality["nonfinite"] == 0
    assert entry["gate"] == {"min_psnr_db": 35.0, "min_ssim": None, "passed": True}
    graph = onnx.load(str(out / "frame.int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    head = next(n for n in graph.graph.node if n.name == "/unet_stageC/model/model/model.6/Conv")
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    assert producers.get(head.input[1]) != "DequantizeLinear"               # the head's weights stay float
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_gate_failure_is_refused_and_writes_nothing(tiny_checkpoint, calibration_files, fp32_only):
    before = {p.name: p.read_bytes() for p in fp32_only.iterdir()}
    result = run("export", tiny_checkpoint, "-o", fp32_only, *FAST_INT8, *int8_args(calibration_files),
                 "--gate-psnr", "200")
    assert "reusing the FP32 export" in result.stdout                     # same checkpoint: not re-exported
    line = one_error_line(result)
    assert "INT8 frame stage (minmax calibration) vs FP32: PSNR" in line and "SSIM" in line
    assert "gate PSNR >= 200 dB: FAILED" in line and "INT8 graphs not written" in line
    assert {p.name: p.read_bytes() for p in fp32_only.iterdir()} == before    # FP32 export untouched, no int8
    assert sorted(p.name for p in fp32_only.parent.iterdir()) == ["fp32_only"]   # no temp folders


def test_auto_method_keeps_the_best_measured_psnr(int8_model, tmp_path):
    """auto calibrates with each method and keeps the best PSNR on the selection frames. The
    calibrations are stood in for by known graphs (fast): the FP32 graph itself for percentile
    (identical frames, infinite PSNR), the INT8 graph for the others."""
    import poserender.export.quantize as quantize

    model = tmp_path / "copy"
    shutil.copytree(int8_model[0], model)
    int8_graph = shutil.copy(model / "frame.int8.onnx", tmp_path / "int8.onnx")   # add_int8 replaces the model's
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((64, 64, 3), 128, np.uint8))
    np.save(tmp_path / "source.npy", template_pose(64, 64))
    manifest = read_manifest(model)
    adapter = families.of(manifest).adapter(manifest, {"source": tmp_path / "grey.png",
                                                       "source_keypoints": tmp_path / "source.npy"})
    data = CalibrationData(adapter, [(pose.astype(np.float32), np.ones(122, np.float32))
                                     for pose in gesture_sequence(20, 64, 64, seed=9)], {"note": "test"})
    calls = []

    def stand_in(fp32_path, out_path, plan, feeds, method, per_channel=False, target="ort", calibration_cache=None):
        assert target == "ort" and calibration_cache is None         # one target: nothing to share
        calls.append((method, len(feeds)))
        shutil.copy(fp32_path if method == "percentile" else int8_graph, out_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize, "quantize_graph", stand_in)
        entry = add_int8(model, data, "auto", frames=6, gate_frames=3, selection_frames=2, batch=4)
        assert calls == [("minmax", 2), ("entropy", 2), ("percentile", 2)]          # 6 frames in batches of 4
        tried = {t["method"]: t for t in entry["calibration"]["tried"]}
        assert list(tried) == ["minmax", "entropy", "percentile"]
        assert tried["percentile"]["selection_psnr_db"] is None and tried["percentile"]["selection_ssim"] == 1.0
        assert entry["calibration"]["method"] == "percentile" and entry["calibration"]["requested"] == "auto"
        assert len(entry["quality"]["selection_frame_indices"]) == 2 and entry["quality"]["frames"] == 3
        before = (model / "manifest.json").read_text()
        with pytest.raises(UserError, match="gate PSNR >= 500 dB: FAILED"):
            add_int8(model, data, "minmax", frames=6, gate_frames=3, gate=QualityGate(500.0))
    assert (model / "manifest.json").read_text() == before                      # the refused run changed nothing


def test_int8_options_are_checked_first(tmp_path, tiny_checkpoint, calibration_files):
    line = one_error_line(run("export", tiny_checkpoint, "-o", tmp_path / "a", "--precision", "int8"))
    assert "missing --calibrate, --source, --source-keypoints" in line
    line = one_error_line(run("export", tiny_checkpoint, "-o", tmp_path / "b", "--calibrate",
                              calibration_files / "targets.npy"))
    assert "--calibrate apply to --precision int8" in line
    line = one_error_line(run("export", tiny_checkpoint, "-o", tmp_path / "c", *FAST_INT8, "--calibrate",
                              tmp_path / "nope.npz", "--source", calibration_files / "source.png",
                              "--source-keypoints", calibration_files / "source.npy"))
    assert "nope.npz" in line and "not found" in line
    assert not list(tmp_path.iterdir())                                       # nothing exported


@pytest.fixture()
def fp32_only(int8_model, tmp_path):
    """The INT8 model's folder without its INT8 graphs and manifest record (an FP32 export)."""
    folder = tmp_path / "fp32_only"
    shutil.copytree(int8_model[0], folder, ignore=shutil.ignore_patterns("*.int8.onnx"))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["int8"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_engines_pick_the_int8_graphs_only_where_they_run(int8_model, fp32_only):
    out, _ = int8_model
    manifest = read_manifest(out)
    _, engines = select.stage_engines(out, manifest, "ort-cpu", precision="int8")
    assert [e.onnx_path.name for e in engines] == ["source.onnx", "frame.int8.onnx"]
    _, engines = select.stage_engines(out, manifest, "ort-cpu")
    assert [e.onnx_path.name for e in engines] == ["source.onnx", "frame.onnx"]
    with pytest.raises(UserError, match="has no INT8 graphs; export with --precision int8 --calibrate"):
        select.stage_engines(fp32_only, read_manifest(fp32_only), "ort-cpu", precision="int8")
    with pytest.raises(UserError, match="on ort-cpu, ov-cpu; backend torch cannot"):
        select.stage_engines(out, manifest, "torch", precision="int8")
    with pytest.raises(UserError, match="backend ort-cpu runs fp32, int8; --precision fp16 needs one of torch-cuda"):
        select.stage_engines(out, manifest, "ort-cpu", precision="fp16")


def _render_fp32_and_int8(model, common, tmp_path):
    """`render MODEL ... --precision fp32|int8` to png folders; {precision: (N, H, W, 3) frames}."""
    frames = {}
    for precision in ("fp32", "int8"):
        result = run("render", model, *common, "-o", tmp_path / precision, "--precision", precision)
        assert result.exit_code == 0, result.output
        assert ("backend ort-cpu int8," in result.stdout) == (precision == "int8")
        frames[precision] = np.stack([cv2.imread(str(p)) for p in sorted((tmp_path / precision).glob("*.png"))])
    return frames


def test_render_precision_int8(int8_model, fp32_only, calibration_files, tmp_path):
    out, _ = int8_model
    files = calibration_files
    common = ["--source", files / "source.png", "--source-keypoints", files / "source.npy",
              "--keypoints", files / "targets.npy", "--max-frames", "6", "--backend", "ort-cpu"]
    frames = _render_fp32_and_int8(out, common, tmp_path)
    assert frames["int8"].shape == frames["fp32"].shape == (6, 64, 64, 3)
    diff = np.abs(frames["int8"].astype(int) - frames["fp32"])
    assert diff.max() > 0 and (diff > 2).mean() < 0.01                       # INT8 ran, and is close
    line = one_error_line(run("render", fp32_only, *common, "-o", tmp_path / "none.mp4", "--precision", "int8"))
    assert "has no INT8 graphs; export with --precision int8 --calibrate" in line
    assert not (tmp_path / "none.mp4").exists()


def test_an_export_is_reused_only_when_current(int8_model, tiny_checkpoint, tmp_path):
    """Reused when the folder holds an export of the same family, checkpoint content, export options
    and poserender version (the manifest's export_key), never otherwise."""
    from poserender.commands.export import _current_export

    out, _ = int8_model
    manifest = read_manifest(out)
    pose2img = families.get("pose2img")
    assert _current_export(out, pose2img, tiny_checkpoint, {})["checkpoint"] == manifest["checkpoint"]
    other_mode = "legacy" if manifest["warp_mode"] == "exact" else "exact"
    assert _current_export(out, pose2img, tiny_checkpoint, {"warp_mode": other_mode}) is None
    assert _current_export(out, pose2img, tiny_checkpoint, {"scale": 2.0}) is None
    assert _current_export(out, families.get("psc"), tiny_checkpoint, {}) is None
    changed = tmp_path / "other.pth"
    changed.write_bytes(tiny_checkpoint.read_bytes() + b"\0")
    assert _current_export(out, pose2img, changed, {}) is None
    assert _current_export(tmp_path / "nothing", pose2img, tiny_checkpoint, {}) is None


# -- PSC: CT-Net's frame stage, InstanceNorm kept FP32 -------------------------------------------
PSC_SIZE = 64
PSC_INT8 = FAST_INT8 + ["--gate-psnr", "25"]     # random-weight tiny nets reach ~34 dB: a gate they pass


@pytest.fixture(scope="module")
def psc_files(tmp_path_factory, tiny_psc_builders):
    """Random-weight PSC nets (authors' layout), I0/S0 of a drawn figure, 14 poses in one csv."""
    from poserender.keypoints.coco18 import template_pose as coco_template
    from poserender.keypoints.coco18 import write_psc_csv

    root = tmp_path_factory.mktemp("psc_int8")
    shutil.copytree(tiny_psc_builders.checkpoint(11), root / "ckpt")
    tiny_psc_builders.identity(root / "I0.jpg", root / "S0.png", PSC_SIZE)
    poses = root / "poses"
    poses.mkdir()
    rng = np.random.default_rng(3)
    xy = [coco_template(PSC_SIZE, PSC_SIZE) + [3 * np.sin(t / 2), np.cos(t / 3)] + rng.normal(0, 0.7, (18, 2))
          for t in range(14)]          # a sway with jitter: real-looking, varied poses
    write_psc_csv(poses / "0001.csv", np.stack(xy))
    return root


def psc_args(files):
    return ["--calibrate", files / "poses", "--source", files / "I0.jpg", "--source-parsing", files / "S0.png"]


@pytest.fixture(scope="module")
def psc_int8_model(psc_files):
    out = psc_files / "art"
    result = run("export", psc_files / "ckpt", "-o", out, "--size", PSC_SIZE, *PSC_INT8, *psc_args(psc_files))
    assert result.exit_code == 0, result.output
    return out, result


def test_psc_int8_export_keeps_instance_norm_fp32(psc_int8_model):
    out, result = psc_int8_model
    assert "INT8 frame.int8.onnx (minmax calibration, 8 frames)" in result.stdout
    entry = read_manifest(out)["int8"]
    stage = entry["stages"][0]
    assert stage["name"] == "frame" and (out / "frame.int8.onnx").is_file()
    assert entry["fp32_stages"] == ["source", "interp", "parsing"]
    assert entry["calibration"]["inputs"]["source_parsing"].endswith("S0.png")
    assert entry["calibration"]["inputs"]["usable_frames"] == 14
    fp32 = onnx.load(str(out / "frame.onnx"))
    norms = [n.name for n in fp32.graph.node if n.op_type == "InstanceNormalization"]
    excluded = [name for group in stage["excluded_nodes"].values() for name in group]
    assert norms and set(norms) <= set(excluded)                       # every InstanceNorm is named FP32
    assert len(stage["excluded_nodes"]["instance_norm"]) >= len(norms) - 2   # most sit inside the trunk
    assert {"output", "flow_out", "occ_mask"} <= set(stage["excluded_nodes"])   # CT-Net's heads stay FP32
    graph = onnx.load(str(out / "frame.int8.onnx"))
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    assert sum(n.op_type == "DequantizeLinear" for n in graph.graph.node) > 10
    ins = [n for n in graph.graph.node if n.op_type == "InstanceNormalization"]
    assert len(ins) == len(norms)
    assert all(producers.get(i) != "DequantizeLinear" for n in ins for i in n.input[1:])   # FP32 scale/bias
    quality = entry["quality"]
    assert quality["psnr_db"] is None or quality["psnr_db"] >= 25
    assert quality["nonfinite"] == 0 and entry["gate"]["passed"] is True


def test_psc_gate_failure_is_refused_with_the_numbers(psc_int8_model, psc_files, tmp_path):

    model = tmp_path / "fp32"
    shutil.copytree(psc_int8_model[0], model, ignore=shutil.ignore_patterns("*.int8.onnx"))
    manifest = json.loads((model / "manifest.json").read_text())
    del manifest["int8"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    data = calibration_data(families.get("psc"), read_manifest(model), psc_files / "poses",
                            {"source": psc_files / "I0.jpg", "source_parsing": psc_files / "S0.png"})
    with pytest.raises(UserError) as info:
        add_int8(model, data, "minmax", frames=8, gate_frames=4, gate=QualityGate(200.0))
    message = str(info.value)
    assert "INT8 frame stage (minmax calibration) vs FP32: PSNR" in message and "SSIM" in message
    assert "gate PSNR >= 200 dB: FAILED" in message and "INT8 graphs not written" in message
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32"]             # no temp folders


def test_psc_int8_options_are_checked_first(psc_files, tmp_path):
    line = one_error_line(run("export", psc_files / "ckpt", "-o", tmp_path / "a", "--precision", "int8",
                              "--calibrate", psc_files / "poses", "--source", psc_files / "I0.jpg"))
    assert "--source-parsing (S0 label PNG); missing --source-parsing" in line
    line = one_error_line(run("export", psc_files / "ckpt", "-o", tmp_path / "b", *PSC_INT8, *psc_args(psc_files),
                              "--source-keypoints", psc_files / "I0.jpg"))
    assert "--source-keypoints is for pose2img models" in line
    assert not list(tmp_path.iterdir())


def test_psc_render_precision_int8(psc_int8_model, psc_files, tmp_path):
    out, _ = psc_int8_model
    common = ["--source", psc_files / "I0.jpg", "--source-parsing", psc_files / "S0.png",
              "--keypoints", psc_files / "poses", "--max-frames", "5", "--backend", "ort-cpu"]
    frames = _render_fp32_and_int8(out, common, tmp_path)
    assert frames["int8"].shape == frames["fp32"].shape == (5, PSC_SIZE, PSC_SIZE, 3)
    diff = np.abs(frames["int8"].astype(int) - frames["fp32"])
    assert diff.max() > 0                                                   # the INT8 graph ran
    mse = (diff.astype(float) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / mse) > 25                                # and is close (the export's gate)


# -- --int8-target trt|both: symmetric INT8 Q/DQ for TensorRT, gated on ONNX Runtime CPU ---------
@pytest.fixture(scope="module")
def both_model(tmp_path_factory, tiny_checkpoint, calibration_files):
    out = tmp_path_factory.mktemp("int8_both") / "tiny"
    result = run("export", tiny_checkpoint, "-o", out, *FAST_INT8, *int8_args(calibration_files),
                 "--int8-target", "both")
    assert result.exit_code == 0, result.output
    return out, result


def test_both_writes_the_ort_graph_unchanged_and_a_tensorrt_graph(both_model, int8_model):
    from poserender.export.qdq_check import check_qdq

    out, result = both_model
    assert "INT8 frame.int8.onnx (minmax calibration, 8 frames)" in result.stdout
    assert "INT8 frame.int8.trt.onnx (minmax calibration, 8 frames)" in result.stdout
    assert "TensorRT Q/DQ rules ok; measured on ONNX Runtime CPU" in result.stdout
    # the ORT graph is the one --int8-target ort (the default) writes, byte for byte
    assert (out / "frame.int8.onnx").read_bytes() == (int8_model[0] / "frame.int8.onnx").read_bytes()
    manifest = read_manifest(out)
    ort_entry, trt_entry = manifest["int8"], manifest["int8_trt"]
    assert "target" not in ort_entry and ort_entry["activations"] == "uint8 (asymmetric, per tensor)"
    assert set(ort_entry) <= set(trt_entry)                                 # the same record, and more
    assert trt_entry["stages"][0]["file"] == "frame.int8.trt.onnx"
    assert trt_entry["activations"] == "int8 (symmetric, zero point 0, per tensor)"
    assert trt_entry["weights"] == "int8 (symmetric, per channel)" and "TensorRT" in trt_entry["target"]
    assert trt_entry["quantize_options"]["QuantizeBias"] is False
    assert trt_entry["qdq_check"]["ok"] is True and trt_entry["qdq_check"]["per_channel"] > 10
    assert trt_entry["stages"][0]["excluded_counts"]["batch_norm"] >= 1     # unfolded BatchNorm stays FP32
    assert "batch_norm" not in ort_entry["stages"][0]["excluded_counts"]
    assert trt_entry["calibration"]["tried"][0]["ranges"].startswith("reused")   # calibrated once
    quality = trt_entry["quality"]
    assert quality["psnr_db"] is None or quality["psnr_db"] >= 35
    assert quality["frame_indices"] == ort_entry["quality"]["frame_indices"] and quality["nonfinite"] == 0
    assert check_qdq(out / "frame.int8.trt.onnx").ok
    assert not check_qdq(out / "frame.int8.onnx").ok                        # uint8 activations, int32 biases
    graph = onnx.load(str(out / "frame.int8.trt.onnx"))
    inits = {i.name: i for i in graph.graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and {z.data_type for z in zero_points} == {onnx.TensorProto.INT8}
    fp32 = onnx.load(str(out / "frame.onnx"))
    relus = sum(n.op_type == "Relu" for n in fp32.graph.node)
    assert sum(n.op_type == "Relu" for n in graph.graph.node) == relus      # kept: symmetric ranges don't absorb them


def test_render_int8_keeps_running_the_ort_graph(both_model):
    out, _ = both_model
    _, engines = select.stage_engines(out, read_manifest(out), "ort-cpu", precision="int8")
    assert [e.onnx_path.name for e in engines] == ["source.onnx", "frame.int8.onnx"]


def test_both_calibrates_once_and_a_failed_gate_writes_neither(fp32_only, calibration_files):
    """One calibration run serves both graphs; when the gate refuses, nothing is written."""
    import importlib

    from poserender.export.quantize import calibration_cache_supported

    if not calibration_cache_supported():
        pytest.skip("this onnxruntime's quantize_static has no calibration_cache_path: both calibrates twice")
    before = {p.name: p.read_bytes() for p in fp32_only.iterdir()}
    data = calibration_data(families.get("pose2img"), read_manifest(fp32_only), calibration_files / "targets.npy",
                            {"source": calibration_files / "source.png",
                             "source_keypoints": calibration_files / "source.npy"})
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")   # the module, not the function
    calibrators = []
    real = ort_quantize.create_calibrator
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: calibrators.append(a) or real(*a, **k))
        with pytest.raises(UserError) as info:
            add_int8_targets(fp32_only, data, "minmax", frames=8, gate_frames=4, gate=QualityGate(200.0),
                             target="both")
    assert len(calibrators) == 1
    message = str(info.value)
    assert "INT8 frame stage (minmax calibration) vs FP32: PSNR" in message
    assert "INT8 (TensorRT Q/DQ) frame stage (minmax calibration) vs FP32: PSNR" in message
    assert "INT8 graphs not written" in message
    assert {p.name: p.read_bytes() for p in fp32_only.iterdir()} == before
    assert sorted(p.name for p in fp32_only.parent.iterdir()) == ["fp32_only"]


def test_a_graph_breaking_tensorrt_rules_is_refused(fp32_only, int8_model, calibration_files, tmp_path):
    """If the quantizer ever wrote asymmetric Q/DQ for the trt target, the export refuses it
    (stood in for by the ORT graph, uint8 activations) and writes nothing."""
    import poserender.export.quantize as quantize

    ort_graph = shutil.copy(int8_model[0] / "frame.int8.onnx", tmp_path / "asymmetric.onnx")
    before = {p.name: p.read_bytes() for p in fp32_only.iterdir()}
    data = calibration_data(families.get("pose2img"), read_manifest(fp32_only), calibration_files / "targets.npy",
                            {"source": calibration_files / "source.png",
                             "source_keypoints": calibration_files / "source.npy"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize, "quantize_graph", lambda fp32, out, *a, **k: shutil.copy(ort_graph, out))
        with pytest.raises(UserError, match=r"frame.int8.trt.onnx: TensorRT INT8 Q/DQ rules \d+ error\(s\).*"
                                            r"INT8 graphs not written"):
            add_int8(fp32_only, data, "minmax", frames=8, gate_frames=4, target="trt")
    assert {p.name: p.read_bytes() for p in fp32_only.iterdir()} == before


def test_int8_target_needs_precision_int8(tmp_path, tiny_checkpoint):
    line = one_error_line(run("export", tiny_checkpoint, "-o", tmp_path / "a", "--int8-target", "trt"))
    assert "--int8-target apply to --precision int8" in line
    assert not list(tmp_path.iterdir())


def test_psc_tensorrt_target_keeps_instance_norm_fp32(psc_int8_model, psc_files, tmp_path):
    from poserender.export.qdq_check import check_qdq

    model = tmp_path / "psc"
    shutil.copytree(psc_int8_model[0], model)
    before = (model / "frame.int8.onnx").read_bytes()
    data = calibration_data(families.get("psc"), read_manifest(model), psc_files / "poses",
                            {"source": psc_files / "I0.jpg", "source_parsing": psc_files / "S0.png"})
    entry = add_int8_targets(model, data, "minmax", frames=8, gate_frames=4, gate=QualityGate(25.0),
                             target="trt")["trt"]
    assert (model / "frame.int8.onnx").read_bytes() == before                # the ORT graph is left as it was
    manifest = read_manifest(model)
    assert manifest["int8_trt"] == entry and "int8" in manifest
    assert entry["stages"][0]["file"] == "frame.int8.trt.onnx" and check_qdq(model / "frame.int8.trt.onnx").ok
    assert entry["stages"][0]["excluded_counts"]["instance_norm"] >= 1
    graph = onnx.load(str(model / "frame.int8.trt.onnx"))
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    ins = [n for n in graph.graph.node if n.op_type == "InstanceNormalization"]
    assert ins and all(producers.get(i) != "DequantizeLinear" for n in ins for i in n.input[1:])
    assert entry["quality"]["psnr_db"] is None or entry["quality"]["psnr_db"] >= 25
