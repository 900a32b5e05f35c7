"""`--backend auto` from a measured probe, and INT8's second route: `export --int8-target ov` (the
QDQ and NNCF routes from the same calibration, gated on the same held-out frames), `poserender
tune` recording every candidate for this host in probe.json, `render --backend auto` saying what it
picked and running it; the registry's one rule on made-up records (no openvino needed): the
fastest that passed, the asked precision, a pick this machine cannot run, another host's record."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.engines import autopick, registry
from poserender.engines.machine import Facts


def run(*args):
    from poserender.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def write_record(model, candidates, batch=4):
    """A probe.json entry for this host with the given (backend, precision, ms, passed)."""
    record = {"host": autopick.host_info(), "measured": "2026-01-01T00:00:00+00:00", "batch": batch,
              "reference": "ort-cpu fp32",
              "candidates": [{"backend": b, "precision": p, "status": "ok", "ms_per_frame": ms,
                              "quality": {"psnr_db": 50.0}, "gate": {"passed": ok}} for b, p, ms, ok in candidates]}
    autopick.write_record(model, record)


def test_auto_rule_on_a_recorded_probe(tmp_path):
    """Fastest that passed the gate; at the asked precision; one this machine cannot run is passed
    over (a simulated CPU without BF16); no record: AUTO_ORDER and how to measure."""
    model = tmp_path / "m"
    model.mkdir()
    choice = registry.pick_auto(model_dir=model)
    assert choice.backend in registry.AUTO_ORDER and "poserender tune" in choice.why
    write_record(model, [("ort-cpu", "fp32", 300.0, True), ("ort-cpu", "int8", 150.0, True),
                         ("ov-cpu", "bf16", 100.0, True), ("ov-cpu", "int8-bf16", 50.0, False)])
    usable = Facts(cpu_flags={"avx512_bf16"})
    usable._packages["openvino"] = {"version": "2026.4.1", "error": None, "devices": ["CPU"]}
    choice = registry.pick_auto(usable, model)
    assert (choice.backend, choice.precision) == ("ov-cpu", "bf16") and "100.0 ms/frame at batch 4" in choice.why
    assert registry.pick_auto(usable, model, "int8")[:2] == ("ort-cpu", "int8")
    no_bf16 = Facts(cpu_flags={"avx2"})
    no_bf16._packages["openvino"] = usable._packages["openvino"]
    assert registry.pick_auto(no_bf16, model)[:2] == ("ort-cpu", "int8")
    fallback = registry.pick_auto(usable, model, "fp16")          # nothing measured at fp16: the order, as asked
    assert fallback.backend in registry.AUTO_ORDER and fallback.precision == "fp16"
    assert "passed the gate" in fallback.why


def test_a_record_of_another_host_is_not_used(tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    write_record(model, [("ort-cpu", "int8", 1.0, True)])
    assert autopick.read_record(model) is not None
    monkeypatch.setattr(autopick, "host_key", lambda info=None: "another-cpu")
    assert autopick.read_record(model) is None
    assert registry.pick_auto(model_dir=model).precision is None
    (model / autopick.PROBE_FILE).write_text("{not json")            # damaged: measured again, not a crash
    assert autopick.read_record(model) is None


def test_tune_without_inputs_is_one_line(tiny_model):
    result = run("tune", tiny_model)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "tune measures on real poses and an identity" in result.output and "--keypoints" in result.output


# -- with OpenVINO and NNCF ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ov_int8_model(tmp_path_factory, tiny_checkpoint):
    """The tiny model with both INT8 routes, and its calibration inputs."""
    pytest.importorskip("openvino", reason="openvino not installed (pip install 'poserender[openvino]')")
    pytest.importorskip("nncf", reason="nncf not installed (pip install 'poserender[openvino]')")
    from poserender.keypoints.template import gesture_sequence, template_pose

    folder = tmp_path_factory.mktemp("ov_inputs")
    noise = np.random.default_rng(7).uniform(0, 255, (6, 6, 3)).astype(np.float32)
    cv2.imwrite(str(folder / "source.png"), cv2.resize(noise, (64, 64), interpolation=cv2.INTER_CUBIC)
                .clip(0, 255).astype(np.uint8))
    np.save(folder / "source.npy", template_pose(64, 64).T.copy())
    np.save(folder / "targets.npy", gesture_sequence(24, 64, 64, seed=4))
    out = tmp_path_factory.mktemp("ov_int8") / "tiny"
    result = run("export", tiny_checkpoint, "-o", out, "--precision", "int8", "--int8-target", "ov",
                 "--calibration-method", "minmax", "--frames", "8", "--gate-frames", "8",
                 "--calibrate", folder / "targets.npy", "--source", folder / "source.png",
                 "--source-keypoints", folder / "source.npy")
    assert result.exit_code == 0, result.output
    return out, folder, result.output


def test_export_writes_both_routes_from_one_calibration(ov_int8_model):
    from poserender.engines.ov_engine import int8_key, stage_files
    from poserender.manifest import read_manifest

    model, _, output = ov_int8_model
    manifest = read_manifest(model)            # the IR and its weights are checked like every graph
    qdq, nncf = manifest["int8"], manifest["int8_nncf"]
    assert (model / "frame.int8.nncf.xml").is_file() and (model / "frame.int8.nncf.bin").is_file()
    assert nncf["stages"][0]["weights_file"] == "frame.int8.nncf.bin" and nncf["stages"][0]["weights_sha256"]
    assert nncf["gate"]["passed"] and nncf["quality"]["psnr_db"] >= 35
    # the same calibration frames and held-out gate frames as the QDQ route; the same entry shape
    assert nncf["calibration"]["frame_indices"] == qdq["calibration"]["frame_indices"]
    assert nncf["quality"]["frame_indices"] == qdq["quality"]["frame_indices"]
    assert not set(nncf["quality"]["frame_indices"]) & set(nncf["calibration"]["frame_indices"])
    assert set(qdq) - {"ov_route"} <= set(nncf) and nncf["stages"][0]["trunk"] == qdq["stages"][0]["trunk"]
    assert nncf["quality"]["measured_on"].startswith("OpenVINO")
    route = nncf["ov_route"]
    assert route["chosen"] in ("qdq", "nncf") and set(route["ms_per_frame"]) == {"qdq", "nncf"}
    assert f"ov-cpu --precision int8 runs the {route['chosen']} graph" in output
    assert int8_key(manifest) == ("int8_nncf" if route["chosen"] == "nncf" else "int8")
    files = stage_files(model, manifest, "int8")
    assert files["frame"] == ("frame.int8.nncf.xml" if route["chosen"] == "nncf" else "frame.int8.onnx")
    assert files["source"] == "source.onnx"
    assert stage_files(model, manifest, "int8-bf16")["frame"] == "frame.int8.nncf.xml"


def test_nncf_scope_leaves_only_the_trunk(ov_int8_model):
    import re

    import onnx

    from poserender import families
    from poserender.export.nncf_route import ignored_scope
    from poserender.export.quantize import quantization_plan

    plan = families.get("pose2img").int8
    quant = quantization_plan(onnx.load(str(ov_int8_model[0] / "frame.onnx")), plan.trunk)
    patterns = [re.compile(p) for p in ignored_scope(quant, plan.fp32_ops)["patterns"]]
    ignored = lambda name: any(p.match(name) for p in patterns)  # noqa: E731
    head = quant.excluded["output_head"][0]
    assert ignored("/warp/Gather_4") and ignored("/heatmaps/MatMul") and ignored(head)
    assert ignored(head + "/WithoutBiases")
    assert not ignored("/unet_stageC/model/model/model.0/Conv")
    psc = families.get("psc").int8
    assert ignored_scope(quant, psc.fp32_ops)["types"] == ["MVN"]       # InstanceNormalization stays FP32


def test_int8_on_ov_cpu_against_onnxruntime_fp32(ov_int8_model):
    """ov-cpu int8 and int8-bf16 frames within the gate of ORT FP32's, on the export's held-out frames."""
    from poserender.bench.inputs import load_inputs
    from poserender.engines.select import stage_engines
    from poserender.export.quality import frame_quality
    from poserender.manifest import read_manifest

    model, inputs_dir, _ = ov_int8_model
    manifest = read_manifest(model)
    inputs = load_inputs(manifest, {"source": inputs_dir / "source.png", "source_keypoints": inputs_dir / "source.npy"},
                         inputs_dir / "targets.npy")
    held = manifest["int8"]["quality"]["frame_indices"]
    frames = {}
    for backend, precision in (("ort-cpu", "fp32"), ("ov-cpu", "int8"), ("ov-cpu", "int8-bf16")):
        engines = {e.spec.name: e.activate() for e in stage_engines(model, manifest, backend, precision=precision)[1]}
        adapter = inputs.new_adapter()
        adapter.run_identity(engines)
        feed = adapter.prepare([inputs.frames[i] for i in held])
        frames[precision] = engines["frame"].infer(feed)["frames"]
        if backend == "ov-cpu":
            assert engines["frame"].precision == precision and engines["source"].precision == "fp32"
    for precision in ("int8", "int8-bf16"):
        assert frame_quality(frames["fp32"], frames[precision])["psnr_db"] >= 35


def test_tune_records_every_candidate_and_render_auto_runs_the_pick(ov_int8_model, tmp_path):
    model, inputs, _ = ov_int8_model
    result = run("tune", model, "--frames", "4", "--batch", "2", "--rounds", "2", "--threads", "1",
                 "--backend", "ort-cpu,ov-cpu")
    assert result.exit_code == 0, result.output
    record = autopick.read_record(model)
    seen = {(c["backend"], c["precision"]) for c in record["candidates"]}
    assert seen == {("ort-cpu", p) for p in registry.BACKENDS["ort-cpu"].precisions} | \
        {("ov-cpu", p) for p in registry.BACKENDS["ov-cpu"].precisions}
    ok = [c for c in record["candidates"] if c["status"] == "ok"]
    assert ("ort-cpu", "fp32") in {(c["backend"], c["precision"]) for c in ok}
    for c in ok:
        assert c["ms_per_frame"] > 0 and len(c["calls_ms_per_frame"]) == 2 and "passed" in c["gate"]
    assert record["frame_indices"] == json.loads((model / "manifest.json").read_text())["int8"]["quality"][
        "frame_indices"][:4]                                  # the export's held-out frames, not calibration ones
    assert record["host"]["flags"] == sorted(record["host"]["flags"]) and record["batch"] == 2
    quality = json.loads((model / "manifest.json").read_text())["precision_quality"]
    assert set(quality) == {f"{c['backend']} {c['precision']}" for c in ok}
    best = min((c for c in ok if c["gate"]["passed"]), key=lambda c: c["ms_per_frame"])
    choice = registry.pick_auto(model_dir=model)
    assert (choice.backend, choice.precision) == (best["backend"], best["precision"])
    assert f"render --backend auto picks {choice.backend} {choice.precision}" in result.output

    out = tmp_path / "auto.mp4"
    rendered = run("render", model, "--source", inputs / "source.png", "--source-keypoints", inputs / "source.npy",
                   "--keypoints", inputs / "targets.npy", "-o", out)
    assert rendered.exit_code == 0, rendered.output
    assert f"backend auto: {choice.backend} {choice.precision}: fastest that passed the gate on this host" \
        in rendered.output
    assert f"backend {choice.backend}" in rendered.output and out.is_file()
