"""`poserender bench` and poserender.bench / poserender.flops on the tiny model: grid, method,
FLOP counting, outputs, skipped backends, and the reference baseline's frames."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from poserender import families  # noqa: E402
from poserender import bench
from poserender.cli import main
from poserender.bench.report import CSV_COLUMNS
from poserender.errors import UserError
from poserender.flops import onnx_graph_flops

FAST = ["--min-seconds", "0", "--min-runs", "3", "--warmup", "1", "--frames", "4", "--threads", "1"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("poserender: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- grid ---------------------------------------------------------------------------------------
def test_grid_parsing():
    assert bench.parse_ints("1,4,8", "--batch") == [1, 4, 8]
    assert bench.parse_ints("8,1,8", "--batch") == [8, 1]
    for bad in ("0", "a,b", "", "1,-2"):
        with pytest.raises(UserError, match="--batch"):
            bench.parse_ints(bad, "--batch")
    assert bench.parse_names("frame,stream", "--stage", bench.STAGES) == ["frame", "stream"]
    with pytest.raises(UserError, match="did you mean frame"):
        bench.parse_names("frmae", "--stage", bench.STAGES)
    stages = [{"name": "source", "runs": "per_identity"}, {"name": "frame", "runs": "per_frame"}]
    default = bench.layout([], False, stages)
    assert default.label == "default" and default.slots("source") == default.slots("frame") == (None,)
    split = bench.layout(["0", "1"], False, stages)
    assert split.label == "split 0>1" and split.slots("source") == ("0",) and split.slots("frame") == ("1",)
    replicated = bench.layout(["0", "1"], True, stages)
    assert replicated.label == "replicate 0,1"
    assert replicated.slots("source") == ("0",) and replicated.slots("frame") == ("0", "1")
    with pytest.raises(UserError, match="at most one device per stage"):      # a split of 2 stages over 3
        bench.layout(["0", "1", "2"], False, stages)


def test_bad_options_are_one_line_errors(tiny_model):
    assert_user_error(run("bench", tiny_model, "--batch", "0"), "--batch")
    assert_user_error(run("bench", tiny_model, "--stage", "frmae"), "did you mean frame")
    assert_user_error(run("bench", tiny_model, "--replicate"), "--replicate needs --devices")
    assert_user_error(run("bench", tiny_model, "--min-runs", "1"), "--min-runs")


def test_backend_status_names_why_each_is_skipped(monkeypatch):
    import poserender.doctor as doctor

    monkeypatch.setattr(doctor, "backend_availability", lambda: {
        "torch": (True, "torch on CPU"), "ort-cpu": (True, "CPUExecutionProvider"),
        "ort-cuda": (False, "no CUDA device"), "trt": (False, "tensorrt not installed"),
        "torch-cuda": (False, "CPU-only build"), "ort-trt": (False, "no CUDA device")})
    status = bench.backend_status(["ort-cpu", "trt", "ort-cuda"])
    assert status["ort-cpu"] == (True, "CPUExecutionProvider")
    for name in ("trt", "ort-cuda"):
        usable, reason = status[name]
        assert not usable and reason   # the machine's reason, or that this build has no engine for it
    assert "tensorrt not installed" in status["trt"][1]
    with pytest.raises(UserError, match=r"unknown backend; known: torch.*\(did you mean (ort|ov)-cpu\?\)"):
        bench.parse_backends("ort-cpu,onnx-cpu")          # a typo is an error, not a row
    assert bench.parse_backends("all") == list(bench.known_backends())
    assert set(bench.known_backends()) >= {"torch", "ort-cpu", "ort-cuda", "ort-trt", "trt", "torch-cuda"}


# -- statistics ---------------------------------------------------------------------------------
def test_summarise_percentiles_and_throughput():
    times = np.linspace(0.100, 0.199, 100)               # 100 calls of batch 4, no outliers
    stats = bench.summarise(times, batch=4)
    assert stats["runs"] == 100 and stats["clipped"] == 0
    assert stats["latency_ms"]["p50"] == pytest.approx(np.percentile(times, 50) * 1e3, abs=1e-3)
    assert stats["latency_ms"]["p99"] == pytest.approx(np.percentile(times, 99) * 1e3, abs=1e-3)
    assert stats["latency_ms"]["p90"] < stats["latency_ms"]["p95"] < stats["latency_ms"]["p99"]
    assert stats["fps"] == pytest.approx(4 * 100 / times.sum(), rel=1e-4)
    assert stats["per_frame_ms"]["min"] == pytest.approx(25.0) and stats["per_frame_ms"]["max"] == pytest.approx(49.75)


def test_outliers_are_clipped_and_counted():
    rng = np.random.default_rng(0)
    times = np.concatenate([rng.normal(0.050, 0.001, 40), [0.500, 0.300]])   # two calls hit by noise
    kept, fence = bench.clip_outliers(times)
    assert kept.sum() == 40 and not kept[-2:].any() and 0.05 < fence < 0.3
    stats = bench.summarise(times, batch=1)
    assert stats["clipped"] == 2
    assert stats["latency_ms"]["max"] < 60 and stats["latency_raw_ms"]["max"] == pytest.approx(500.0)
    # a steady run loses nothing: the fence is at least 1.2 x the median
    steady = np.full(20, 0.010)
    steady[3] = 0.0115
    assert bench.clip_outliers(steady)[0].all()


# -- FLOPs --------------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flops_of_a_conv_counted_by_hand():
    # 1 x 3 x 8 x 8 -> 4 channels, 3 x 3 kernel, padding 1: 4*8*8 outputs x 3*3*3 MACs = 6912 MACs
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["y"], ["z"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [weight])
    one = onnx_graph_flops(model, batch=1)
    assert one["flops"] == 2 * 6912 and one["by_op"] == {"Conv": 2 * 6912}
    assert one["elementwise_flops"] == 4 * 8 * 8 and not one["unresolved_nodes"]
    three = onnx_graph_flops(model, batch=3)
    assert three["flops"] == 3 * 2 * 6912 and three["flops_per_item"] == 2 * 6912


def test_flops_of_conv_transpose_grouped_conv_and_matmul():
    wt = helper.make_tensor("wt", TensorProto.FLOAT, [4, 2, 2, 2], np.zeros(32, np.float32))   # Cin 4 -> Cout 2
    wg = helper.make_tensor("wg", TensorProto.FLOAT, [4, 2, 3, 3], np.zeros(72, np.float32))   # groups 2
    m = helper.make_tensor("m", TensorProto.FLOAT, [5, 7], np.zeros(35, np.float32))
    model = _model([helper.make_node("ConvTranspose", ["x", "wt"], ["t"], strides=[2, 2]),      # -> 1x2x8x8
                    helper.make_node("Conv", ["x", "wg"], ["g"], group=2, pads=[1, 1, 1, 1]),   # -> 1x4x4x4
                    helper.make_node("MatMul", ["a", "m"], ["p"])],                          # (2,6,5)@(5,7)
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4]),
                    helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 6, 5])],
                   [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "tgp"], [wt, wg, m])
    counted = onnx_graph_flops(model)["by_op"]
    assert counted["ConvTranspose"] == 2 * (4 * 4 * 4) * (2 * 2 * 2)     # each input element x Cout x k x k
    assert counted["Conv"] == 2 * (4 * 4 * 4) * (2 * 3 * 3)              # outputs x Cin/groups x k x k
    assert counted["MatMul"] == 2 * (2 * 6 * 7) * 5


def test_onnx_count_of_the_tiny_frame_stage_equals_torch_flop_counter(tiny_model, tiny_checkpoint):
    import torch

    from poserender.config import Pose2ImgConfig
    from poserender.flops import torch_call_flops
    from poserender.manifest import read_manifest
    from poserender.models.checkpoint import load_generator
    from poserender.models.fuse import fuse_upsample_convs
    from poserender.models.pose2img import FrameStage, Pose2ImgGeometry
    from poserender.specs import StageSpec

    manifest = read_manifest(tiny_model)
    spec = StageSpec.from_dict(manifest["stages"][1])
    generator = fuse_upsample_convs(load_generator(tiny_checkpoint)[0])   # the exported graph is the fused one
    stage = FrameStage(generator, Pose2ImgGeometry.from_config(Pose2ImgConfig.from_dict(manifest["config"]),
                                                               manifest["warp_mode"])).eval()
    feed = spec.sample_inputs(batch=2)
    with torch.no_grad():
        _, torch_flops = torch_call_flops(lambda: stage(*(torch.from_numpy(feed[n]) for n in spec.input_names)))
    counted = onnx_graph_flops(tiny_model / "frame.onnx", batch=2)
    assert not counted["unresolved_nodes"]
    assert counted["flops"] == torch_flops > 0


# -- the command, end to end --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as patch:   # module scope: the autouse cache fixture is per test
        patch.setenv("POSERENDER_CACHE", str(out / "cache"))
        result = run("bench", tiny_checkpoint, "--backend", "ort-cpu,torch,trt", "--batch", "1,2",
                     "--stage", "frame,source", "--precision", "fp32,fp16", "--baseline", "reference",
                     "--peak-seconds", "0.2", *FAST, "--json", out / "r.json", "--csv", out / "r.csv",
                     "--plot", out / "r.png")
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "r.json").read_text()), out


def test_json_has_environment_method_flops_and_rows(bench_run):
    _, result, _ = bench_run
    assert result["schema"] == "poserender-bench/1"
    env = result["environment"]
    for key in ("cpu_model", "cores", "usable_cores", "gpus", "versions", "git", "command_line", "timestamp"):
        assert key in env, key
    assert "onnxruntime" in env["versions"] and "commit" in env["git"]
    assert "outliers" in result["method"] and result["machine_peak"]["gflops"] > 0
    counted = result["flops"]["per_stage_at_batch_1"]["64x64"]
    assert counted["frame"]["flops"] > 0 and counted["source"]["flops"] > 0
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    assert {(r["backend"], r["stage"], r["batch"]) for r in ok} >= {
        ("ort-cpu", "frame", 1), ("ort-cpu", "frame", 2), ("ort-cpu", "source", 1), ("torch", "frame", 2)}
    for row in ok:
        assert row["runs"] >= 3 and row["fps"] > 0 and row["peak_rss_mib"] > 0
        assert set(row["latency_ms"]) >= {"p50", "p90", "p95", "p99"}
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert row["achieved_gflops"] == pytest.approx(row["flops_per_frame"] * row["fps"] / 1e9, abs=0.01)
        assert row["peak_fraction"] is not None
    ort_frame = next(r for r in ok if (r["backend"], r["stage"], r["batch"]) == ("ort-cpu", "frame", 1))
    assert ort_frame["flops_per_frame"] == counted["frame"]["flops"] and ort_frame["compute_ms"]["frame"] > 0


def test_unusable_backends_and_precisions_are_skipped_with_reasons(bench_run):
    text, result, _ = bench_run
    skipped = {(r["backend"], r["precision"]): r["reason"] for r in result["rows"] if r["status"] == "skipped"}
    assert skipped[("trt", "*")]
    assert "fp32" in skipped[("ort-cpu", "fp16")]          # the model is fp32; no fp16 engine on this build
    assert "skipped trt" in text.stdout


def test_an_unknown_backend_is_a_user_error(tiny_model):
    result = run("bench", tiny_model, "--backend", "ort-cpu,no-such", *FAST)
    assert_user_error(result, "--backend 'no-such': unknown backend; known: torch", "ort-cpu", "trt")
    assert_user_error(run("bench", tiny_model, "--backend", "ort-cpux", *FAST), "did you mean ort-cpu?")


def test_baseline_row_and_speedups(bench_run):
    _, result, _ = bench_run
    base = [r for r in result["rows"] if r.get("is_baseline")]
    assert len(base) == 1 and base[0]["status"] == "ok" and base[0]["speedup"] == 1.0
    assert base[0]["backend"] == "reference" and base[0]["batch"] == 1 and base[0]["flops_per_frame"] > 0
    for row in result["rows"]:
        if row["status"] == "ok" and row["stage"] == "frame":
            assert row["speedup"] == pytest.approx(row["fps"] / base[0]["fps"], rel=1e-2)
            assert row["frames_vs_baseline"]["passed"] and row["frames_vs_baseline"]["max_abs_diff"] <= 2
        if row["status"] == "ok" and row["stage"] == "source":
            assert row["speedup"] is None            # identities/s is not comparable with frames/s


def test_csv_and_plot_are_written(bench_run):
    _, result, out = bench_run
    with open(out / "r.csv") as f:
        lines = list(csv.DictReader(f))
    assert tuple(lines[0].keys()) == CSV_COLUMNS and len(lines) == len(result["rows"])
    first_ok = next(line for line in lines if line["status"] == "ok")
    assert float(first_ok["fps"]) > 0 and float(first_ok["p99_ms"]) > 0
    png = (out / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_reference_baseline_makes_the_fast_paths_frames(tiny_model, tiny_checkpoint):
    """The baseline (full forward per frame) and the deployed frame stage render the same frames."""
    from poserender.engines.select import stage_engines
    from poserender.manifest import read_manifest

    manifest = read_manifest(tiny_model)
    inputs = bench.load_inputs(manifest, frames=3)
    baseline = bench.ReferenceBaseline(manifest, inputs, threads=1)
    _, reference = baseline.step(np.arange(3))
    assert reference.shape == (3, 64, 64, 3) and reference.dtype == np.uint8 and reference.std() > 5
    for backend in ("ort-cpu", "torch"):
        _, (source, frame) = stage_engines(tiny_model, manifest, backend, torch_stages=families.of(manifest).torch_stage)
        with source, frame:
            inputs.adapter.run_identity({"source": source})
            fast = frame.infer(inputs.adapter.prepare(inputs.frames[:3]))["frames"]
        check = bench.frame_agreement(dict(enumerate(reference)), dict(enumerate(fast)))
        assert check["passed"] and check["max_abs_diff"] <= 1, (backend, check)


def test_replicated_frame_stage_on_two_cpu_workers(tiny_model):
    from poserender.manifest import read_manifest

    result = bench.run_bench([(tiny_model, read_manifest(tiny_model))],
                             bench.Grid(backends=["ort-cpu"], stages=["frame", "all"], batches=[2],
                                        devices=["cpu", "cpu"], replicate=True),
                             bench.Method(warmup=1, min_seconds=0, min_runs=4, threads=2),
                             inputs_from={"frames": 4}, peak_seconds=0)
    rows = {r["stage"]: r for r in result["rows"]}
    assert rows["frame"]["status"] == "ok" and rows["frame"]["layout"] == "replicate cpu,cpu"
    assert rows["frame"]["runs"] >= 4 and rows["frame"]["fps"] > 0
    assert rows["all"]["status"] == "skipped" and "frame stage" in rows["all"]["reason"]
    assert result["machine_peak"]["gflops"] is None


def test_resolutions_of_an_exported_folder_and_of_a_checkpoint(tiny_model, tiny_checkpoint):
    result = run("bench", tiny_model, "--backend", "ort-cpu", "--batch", "1", "--resolution", "64,128",
                 "--peak-seconds", "0", *FAST)
    assert result.exit_code == 0, result.output
    assert "skipped 128x128" in result.stdout and "pass the checkpoint" in result.stdout
    assert_user_error(run("bench", tiny_checkpoint, "--resolution", "50", *FAST), "--resolution 50", "multiple of 32")


def test_an_existing_result_file_is_replaced_and_said(tiny_model, tmp_path):
    """The one output rule: an existing --json is replaced once the new result is complete."""
    out = tmp_path / "r.json"
    out.write_text("old")
    result = run("bench", tiny_model, "--backend", "ort-cpu", "--batch", "1", "--peak-seconds", "0", *FAST,
                 "--json", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (replaced)" in result.stdout
    assert json.loads(out.read_text())["rows"]


@pytest.mark.skipif(importlib.util.find_spec("poserender.runtime.stream") is None,
                    reason="the streaming runtime (poserender.runtime.stream) is not in this build")
def test_stream_cell_runs_the_streaming_runtime(tiny_model, tmp_path):
    out = tmp_path / "r.json"
    result = run("bench", tiny_model, "--backend", "ort-cpu", "--batch", "2", "--stage", "stream",
                 "--peak-seconds", "0", *FAST, "--json", out)
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(out.read_text())["rows"] if r["stage"] == "stream")
    assert row["status"] == "ok", row
    assert row["runs"] >= 3 and row["frames_per_stream"] == 4 and row["fps"] > 0
    assert row["first_frame_s"]["median"] > 0 and "frame" in row["compute_ms"]
    assert "first frame" in result.stdout


# -- reduced precision beside fp32 ----------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_tiny_model(tmp_path_factory, tiny_model):
    """The tiny export with INT8 graphs (minmax calibration on synthetic poses: fast)."""
    import shutil

    import cv2

    from poserender.export.calibration import CalibrationData
    from poserender.export.int8 import add_int8
    from poserender.keypoints.template import gesture_sequence, template_pose
    from poserender.manifest import read_manifest

    out = tmp_path_factory.mktemp("int8_bench") / "tiny"
    shutil.copytree(tiny_model, out)
    coarse = np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(out.parent / "source.png"), np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1))
    np.save(out.parent / "source.npy", template_pose(64, 64))
    manifest = read_manifest(out)
    adapter = families.of(manifest).adapter(manifest, {"source": out.parent / "source.png",
                                                       "source_keypoints": out.parent / "source.npy"})
    data = CalibrationData(adapter, [(pose.astype(np.float32), np.ones(122, np.float32))
                                     for pose in gesture_sequence(16, 64, 64, seed=2)],
                           {"note": "synthetic, for the bench test"})
    add_int8(out, data, "minmax", frames=6, gate_frames=3)
    return out


def test_int8_rows_report_speedup_and_quality_beside_fp32(int8_tiny_model, tmp_path):
    result = run("bench", int8_tiny_model, "--backend", "ort-cpu,torch", "--batch", "1", "--stage", "frame",
                 "--precision", "fp32,int8", "--peak-seconds", "0", *FAST, "--json", tmp_path / "r.json",
                 "--csv", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    ok = {(r["backend"], r["precision"]): r for r in rows if r["status"] == "ok"}
    fp32, int8 = ok[("ort-cpu", "fp32")], ok[("ort-cpu", "int8")]
    assert int8["speedup_vs_fp32"] == pytest.approx(int8["fps"] / fp32["fps"], rel=1e-2)
    quality = int8["quality_vs_fp32"]
    assert quality["frame_indices"] == [0, 1, 2, 3] and quality["frames"] == 4   # same targets, both precisions
    assert quality["psnr_db"] is None or quality["psnr_db"] > 30
    assert 0.9 < quality["ssim"] <= 1.0 and quality["max_abs_error"] >= 0
    assert int8["int8_gate"]["method"] == "minmax" and int8["int8_gate"]["passed"] is True
    assert "speedup_vs_fp32" not in fp32
    skipped = {(r["backend"], r["precision"]): r["reason"] for r in rows if r["status"] == "skipped"}
    assert "runs the calibrated INT8 graphs" in skipped[("torch", "int8")]
    assert "int8 vs fp32, ort-cpu frame batch 1: " in result.stdout and "SSIM" in result.stdout
    with open(tmp_path / "r.csv") as f:
        line = next(row for row in csv.DictReader(f) if row["precision"] == "int8" and row["status"] == "ok")
    assert float(line["speedup_vs_fp32"]) > 0 and float(line["ssim_vs_fp32"]) > 0.9


# -- inputs given as files, as render takes them ----------------------------------------------------
def test_pose2img_inputs_from_files_go_through_the_adapter(tiny_model, tiny_inputs, tmp_path):
    identity = ["--source", tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy"]
    result = run("bench", tiny_model, "--backend", "ort-cpu", "--batch", "2", "--stage", "frame", *identity,
                 "--keypoints", tiny_inputs / "targets.npy", "--peak-seconds", "0", *FAST, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["inputs"]["source_keypoints"] == str(tiny_inputs / "source.npy")
    assert saved["inputs"]["target_frames"] == 4 and "0 bad frames" in saved["inputs"]["targets"]
    assert [r["status"] for r in saved["rows"]] == ["ok"]
    # the identity and the targets go together, checked by the family (render's messages)
    assert_user_error(run("bench", tiny_model, *identity, *FAST), "--keypoints (the target poses) goes with "
                      "--source, --source-keypoints")
    assert_user_error(run("bench", tiny_model, "--keypoints", tiny_inputs / "targets.npy", *FAST),
                      "a pose2img model needs --source", "missing --source, --source-keypoints")
    assert_user_error(run("bench", tiny_model, *identity, "--source-parsing", tiny_inputs / "source.png",
                          "--keypoints", tiny_inputs / "targets.npy", *FAST), "--source-parsing is for psc models")


# -- another family: PSC (identity stage source; per-frame stages parsing, then frame) --------------
@pytest.fixture(scope="module")
def psc_model(tmp_path_factory, tiny_psc_builders):
    """A 64 x 64 PSC export of random-weight nets, an I0 image, an S0 parsing and 5 csv poses."""
    from poserender.export.exporter import export_checkpoint
    from poserender.keypoints.coco18 import template_pose, write_psc_csv

    root = tmp_path_factory.mktemp("bench_psc")
    export_checkpoint(families.get("psc"), tiny_psc_builders.checkpoint(11), root / "art", {"size": 64})
    tiny_psc_builders.identity(root / "i0.png", root / "s0.png", 64)
    (root / "poses").mkdir()
    for i in range(5):
        write_psc_csv(root / "poses" / f"{i}.csv", template_pose(64, 64) + [i, -i])
    return root


def test_psc_frame_and_stream_cells_from_files(psc_model, tmp_path):
    result = run("bench", psc_model / "art", "--backend", "ort-cpu", "--batch", "2", "--stage", "frame,stream",
                 "--source", psc_model / "i0.png", "--source-parsing", psc_model / "s0.png",
                 "--keypoints", psc_model / "poses", "--peak-seconds", "0", *FAST, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["models"][0]["family"] == "psc" and saved["inputs"]["source_parsing"] == str(psc_model / "s0.png")
    rows = {r["stage"]: r for r in saved["rows"]}
    assert rows["frame"]["status"] == rows["stream"]["status"] == "ok", saved["rows"]
    frame = rows["frame"]
    assert list(frame["compute_ms"]) == ["parsing", "frame"] and min(frame["compute_ms"].values()) > 0
    counted = saved["flops"]["per_stage_at_batch_1"]["64x64"]
    assert set(counted) == {"source", "interp", "parsing", "frame"}
    assert frame["flops_per_frame"] > max(counted["parsing"]["flops"], counted["frame"]["flops"])  # both stages
    stream = rows["stream"]
    assert stream["frames_per_stream"] == 4 and stream["runs"] >= 3 and stream["fps"] > 0
    assert {"parsing", "frame"} <= set(stream["compute_ms"])


def test_psc_default_inputs_source_cells_and_no_baseline(psc_model, tmp_path):
    result = run("bench", psc_model / "art", "--backend", "ort-cpu", "--batch", "1", "--stage", "source,all,stream",
                 "--baseline", "reference", "--peak-seconds", "0", *FAST, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["inputs"]["source_parsing"].startswith("synthetic") and saved["inputs"]["target_frames"] == 4
    rows = {r["stage"]: r for r in saved["rows"]}
    base = rows["full"]
    assert base["status"] == "skipped" and base["is_baseline"] and "no reference forward for psc models" in base["reason"]
    assert rows["source"]["status"] == "ok" and list(rows["source"]["compute_ms"]) == ["source"]
    assert rows["all"]["status"] == "ok" and list(rows["all"]["compute_ms"]) == ["source", "parsing", "frame"]
    assert rows["stream"]["status"] == "ok" and rows["stream"]["frames_per_stream"] == 4
    assert rows["source"]["speedup"] is None and rows["all"]["speedup"] is None        # no baseline ran


def test_environment_records_the_cpu_flags_that_decide_the_kernels():
    """Which of AVX-512, VNNI, BF16 and AMX this CPU has: a CPU result's provenance."""
    from poserender.bench import environment
    from poserender.engines.machine import NOTABLE_CPU_FLAGS, cpu_flag_set

    env = environment(["bench"], 1)
    assert env["cpu_flags"] == [f for f in NOTABLE_CPU_FLAGS if f in cpu_flag_set()]
    assert {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"} <= set(NOTABLE_CPU_FLAGS)
    assert env["git"]["commit"] and env["cpu_model"]
