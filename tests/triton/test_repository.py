"""`poserender triton`: the repository for both families (layout, configs parsed with Triton's
schema, contracts equal to the ONNX graphs), options, plan selection, and bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from poserender.cli import main
from poserender.triton.validate import dtype_name

SIZE = 64


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def configs(repo: Path):
    from poserender.triton.validate import load_config

    return {p.name: load_config(p / "config.pbtxt") for p in repo.iterdir() if p.is_dir()}


def kind_name(kind: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelInstanceGroup.Kind.Name(kind)


def dims(tensors):
    return {t.name: list(t.dims) for t in tensors}


def test_pose2img_repository_on_two_gpus(tiny_model, tmp_path):
    out = tmp_path / "repo"
    result = run("triton", tiny_model, "-o", out, "--devices", "0,1,0", "--max-batch", "8",
                 "--preferred-batch", "4", "--queue-delay-us", "250")
    assert result.exit_code == 0, result.output
    assert "checked: 3 models" in result.output and "ensemble 'pose2img' (source -> frame)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["pose2img", "pose2img_frame", "pose2img_source",
                                                     "poserender_triton.json"]
    assert (out / "pose2img" / "1").is_dir() and not any((out / "pose2img" / "1").iterdir())
    for stage in ("source", "frame"):     # the exported graphs, byte for byte
        assert (out / f"pose2img_{stage}" / "1" / "model.onnx").read_bytes() == (tiny_model / f"{stage}.onnx").read_bytes()
    c = configs(out)
    source, frame, ensemble = c["pose2img_source"], c["pose2img_frame"], c["pose2img"]
    # the source stage carries the batch axis on every tensor: a batching model (capped at its range, 4)
    assert source.platform == "onnxruntime_onnx" and source.max_batch_size == 4
    assert list(source.dynamic_batching.preferred_batch_size) == [4]
    assert source.dynamic_batching.max_queue_delay_microseconds == 250
    assert dims(source.input) == {"source_image": [3, SIZE, SIZE], "source_keypoints": [122, 2], "source_valid": [122]}
    assert dims(source.output) == {"source_parts": [8, 3, SIZE, SIZE], "background": [3, SIZE, SIZE]}
    # the frame stage takes one identity with a batch of frames: not batched by Triton
    assert frame.max_batch_size == 0 and not frame.HasField("dynamic_batching")
    assert dims(frame.input) == {"target_keypoints": [-1, 122, 2], "target_valid": [-1, 122],
                                 "source_keypoints": [1, 122, 2], "source_valid": [1, 122],
                                 "source_parts": [1, 8, 3, SIZE, SIZE], "background": [1, 3, SIZE, SIZE]}
    assert dims(frame.output) == {"frames": [-1, SIZE, SIZE, 3]}
    assert dtype_name(frame.output[0].data_type) == "TYPE_UINT8"
    assert all(dtype_name(t.data_type) == "TYPE_FP32" for t in frame.input)
    for model in (source, frame):
        groups = [(g.count, kind_name(g.kind), list(g.gpus)) for g in model.instance_group]
        assert groups == [(2, "KIND_GPU", [0]), (1, "KIND_GPU", [1])]
    # the ensemble: identity + keypoints in, frames out, wired by tensor name
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0 and not ensemble.instance_group
    assert dims(ensemble.input) == {"source_image": [1, 3, SIZE, SIZE], "source_keypoints": [1, 122, 2],
                                    "source_valid": [1, 122], "target_keypoints": [-1, 122, 2], "target_valid": [-1, 122]}
    assert dims(ensemble.output) == {"frames": [-1, SIZE, SIZE, 3]}
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["pose2img_source", "pose2img_frame"]
    assert dict(steps[0].output_map) == {"source_parts": "source_parts", "background": "background"}
    assert set(steps[1].input_map) == {t.name for t in frame.input}
    meta = json.loads(ensemble.parameters["poserender"].string_value)
    assert meta["family"] == "pose2img" and meta["canvas"] == [SIZE, SIZE] and meta["frame_max_batch"] == 16
    written = json.loads((out / "poserender_triton.json").read_text())
    assert written["options"]["devices"] == ["0", "1", "0"] and written["ensemble"] == "pose2img"


def test_psc_repository_wires_source_parsing_frame(psc_export, tmp_path):
    out = tmp_path / "repo"
    result = run("triton", psc_export / "art", "-o", out, "--devices", "cpu,cpu", "--name", "person")
    assert result.exit_code == 0, result.output
    c = configs(out)
    assert sorted(c) == ["person", "person_frame", "person_interp", "person_parsing", "person_source"]
    ensemble = c["person"]
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["person_source", "person_parsing",
                                                                         "person_frame"]
    assert dims(ensemble.input) == {"source_image": [1, 3, SIZE, SIZE], "source_labels": [1, SIZE, SIZE],
                                    "target_keypoints": [-1, 18, 2], "target_valid": [-1, 18]}
    assert c["person_source"].max_batch_size == 4 and c["person_source"].HasField("dynamic_batching")
    for name in ("person_parsing", "person_frame", "person_interp"):
        assert c[name].max_batch_size == 0 and not c[name].HasField("dynamic_batching")
    assert dims(c["person_parsing"].output) == {"target_labels": [-1, SIZE, SIZE]}
    for config in c.values():
        if config.platform != "ensemble":
            assert [(g.count, kind_name(g.kind), list(g.gpus)) for g in config.instance_group] == [(2, "KIND_CPU", [])]
    # parsing_code goes source -> parsing; the CT-Net features source -> frame
    source_step = ensemble.ensemble_scheduling.step[0]
    assert "parsing_code" in source_step.output_map and "style_code" in source_step.output_map


def test_both_repositories_match_their_onnx_graphs(pose2img_repo, psc_repo):
    """Every stage model's config equals its graph (names, element types, dims) and StageSpec."""
    from poserender.triton.validate import onnx_io, validate_repository

    for repo, n_stages in ((pose2img_repo, 2), (psc_repo, 4)):
        report = validate_repository(repo)
        assert report.ok and len(report.against_onnx) == n_stages
        for name, config in configs(repo).items():
            if config.platform == "ensemble":
                continue
            graph_in, graph_out = onnx_io(repo / name / "1" / "model.onnx")
            lead = [-1] if config.max_batch_size else []
            for tensors, graph in ((config.input, graph_in), (config.output, graph_out)):
                assert {t.name for t in tensors} == set(graph)
                for t in tensors:
                    assert dtype_name(t.data_type) == graph[t.name][0]
                    full = lead + list(t.dims)
                    assert all(g in (-1, d) for g, d in zip(graph[t.name][1], full)) and len(full) == len(graph[t.name][1])


def test_batch_options_are_capped_per_stage(tiny_model, tmp_path):
    out = tmp_path / "repo"
    assert run("triton", tiny_model, "-o", out, "--devices", "cpu", "--max-batch", "2", "--preferred-batch", "2",
               "--engine", "onnx").exit_code == 0
    source = configs(out)["pose2img_source"]
    assert source.max_batch_size == 2 and list(source.dynamic_batching.preferred_batch_size) == [2]
    # a second run replaces the earlier repository
    assert run("triton", tiny_model, "-o", out, "--devices", "cpu", "--max-batch", "3", "--preferred-batch", "1").exit_code == 0
    assert configs(out)["pose2img_source"].max_batch_size == 3


def _with_plans(model_dir: Path, dest: Path, gpus, sha_ok=True) -> Path:
    """A copy of an export with fake plan files and `poserender build` records for ``gpus``
    [(device, gpu_name, compute capability)]: plan selection is plain logic, tested without TensorRT."""
    from poserender.engines.compat import MachineFacts, engine_record
    from poserender.manifest import sha256_file

    shutil.copytree(model_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    records = []
    for stage in manifest["stages"]:
        for device, gpu, cc in gpus:
            name = f"{stage['name']}.fp16.gpu{device}.plan"
            (dest / name).write_bytes(f"plan {stage['name']} {device}".encode())
            facts = MachineFacts("10.8.0", "12.8", "570.1", gpu, cc)
            records.append(engine_record(stage["name"], device, name, sha256_file(dest / name) if sha_ok else "0" * 64,
                                         stage["sha256"], "fp16", stage["batch"], [], facts))
    manifest["engines"] = records
    manifest["build"] = {"precision": "fp16", "devices": [g[0] for g in gpus]}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_plans_are_served_with_the_tensorrt_backend(tiny_model, tmp_path):
    art = _with_plans(tiny_model, tmp_path / "art", [(0, "NVIDIA H100", "9.0"), (1, "NVIDIA H100", "9.0")])
    out = tmp_path / "repo"
    result = run("triton", art, "-o", out, "--devices", "0,1", "--engine", "plan")
    assert result.exit_code == 0, result.output
    c = configs(out)
    assert c["pose2img_frame"].platform == "tensorrt_plan" and c["pose2img_frame"].default_model_filename == "model.plan"
    assert (out / "pose2img_frame" / "1" / "model.plan").read_bytes() == b"plan frame 0"
    from poserender.triton.validate import validate_repository
    # plan models are checked against their StageSpec, and against the ONNX graph given the export
    assert validate_repository(out, onnx_dir=art).against_onnx == ["pose2img_frame", "pose2img_source"]
    # GPUs of two compute capabilities: one plan per capability (cc_model_filenames)
    art2 = _with_plans(tiny_model, tmp_path / "art2", [(0, "NVIDIA H100", "9.0"), (1, "NVIDIA A10", "8.6")])
    assert run("triton", art2, "-o", tmp_path / "repo2", "--devices", "0,1").exit_code == 0   # auto picks the plans
    frame = configs(tmp_path / "repo2")["pose2img_frame"]
    assert dict(frame.cc_model_filenames) == {"9.0": "model.sm90.plan", "8.6": "model.sm86.plan"}
    assert (tmp_path / "repo2" / "pose2img_frame" / "1" / "model.sm86.plan").read_bytes() == b"plan frame 1"


def test_stale_or_missing_plans(tiny_model, tmp_path):
    art = _with_plans(tiny_model, tmp_path / "art", [(0, "NVIDIA H100", "9.0")], sha_ok=False)
    result = run("triton", art, "-o", tmp_path / "auto", "--devices", "0")       # auto: falls back to ONNX
    assert result.exit_code == 0 and configs(tmp_path / "auto")["pose2img_frame"].platform == "onnxruntime_onnx"
    result = run("triton", art, "-o", tmp_path / "plan", "--devices", "0", "--engine", "plan")
    assert result.exit_code == 2 and "stale" in result.output and "plan sha256" in result.output
    result = run("triton", tiny_model, "-o", tmp_path / "plan", "--devices", "0,1", "--engine", "plan")
    assert result.exit_code == 2 and "no plan for stage 'source' on GPU 0" in result.output
    assert "poserender build" in result.output and "--devices 0,1" in result.output
    assert not (tmp_path / "plan").exists()


@pytest.mark.parametrize("args, message", [
    (["--devices", "0,cpu"], "the CPU and GPUs cannot be mixed"),
    (["--devices", "gpu0"], "expected cpu"),
    (["--devices", ""], "expected cpu"),
    (["--preferred-batch", "9"], "--preferred-batch 9; expected 1 to --max-batch (8)"),
    (["--max-batch", "0"], "--max-batch 0"),
    (["--queue-delay-us", "-1"], "--queue-delay-us -1"),
    (["--backend", "tensorrt", "--devices", "cpu"], "--backend tensorrt needs GPU --devices"),
    (["--engine", "plan", "--devices", "cpu"], "--backend tensorrt needs GPU --devices"),      # the earlier name
    (["--engine", "onnx", "--backend", "python"], "contradicts --backend python"),
    (["--backend", "python", "--devices", "0"], "use --devices cpu"),
    (["--backend", "python", "--threads", "-1"], "--threads -1"),
    (["--name", "../x"], "--name '../x'"),
])
def test_bad_options_are_one_line_and_write_nothing(tiny_model, tmp_path, args, message):
    out = tmp_path / "repo"
    result = run("triton", tiny_model, "-o", out, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.startswith("poserender: error:")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_bad_model_folders(tiny_model, tmp_path):
    result = run("triton", tmp_path / "nope", "-o", tmp_path / "r1")
    assert result.exit_code == 2 and "expected an exported model folder" in result.output
    (tmp_path / "empty").mkdir()
    result = run("triton", tmp_path / "empty", "-o", tmp_path / "r2")
    assert result.exit_code == 2 and "no manifest.json" in result.output
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "frame.onnx").unlink()
    result = run("triton", broken, "-o", tmp_path / "r3")
    assert result.exit_code == 2 and "'frame.onnx' is missing" in result.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = run("triton", tiny_model, "-o", busy)
    assert result.exit_code == 2 and "not a repository written by `poserender triton`" in result.output
    assert (busy / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "busy", "empty"]


def test_devices_follow_the_machine(tiny_model, tmp_path, monkeypatch):
    """Without --devices: KIND_CPU where nvidia-smi lists no GPU, GPU 0 where it lists one, and
    always the CPU for --backend python."""
    import poserender.engines.machine as machine

    def groups(out):
        return {name: [(g.count, kind_name(g.kind), list(g.gpus)) for g in c.instance_group]
                for name, c in configs(out).items() if c.platform != "ensemble"}

    monkeypatch.setattr(machine, "nvidia_smi", lambda: {"gpus": [], "error": "nvidia-smi not found"})
    assert run("triton", tiny_model, "-o", tmp_path / "cpu").exit_code == 0
    assert set(map(str, groups(tmp_path / "cpu").values())) == {"[(1, 'KIND_CPU', [])]"}
    monkeypatch.setattr(machine, "nvidia_smi", lambda: {"gpus": [{"name": "NVIDIA H100"}], "error": None})
    assert run("triton", tiny_model, "-o", tmp_path / "gpu").exit_code == 0
    assert set(map(str, groups(tmp_path / "gpu").values())) == {"[(1, 'KIND_GPU', [0])]"}
    assert run("triton", tiny_model, "-o", tmp_path / "py", "--backend", "python").exit_code == 0
    assert set(map(str, groups(tmp_path / "py").values())) == {"[(1, 'KIND_CPU', [])]"}
