"""The OpenVINO backend (ov-cpu) through the registry: every stage of both families against ONNX
Runtime FP32, per precision; BF16 refused on a CPU without it (machine facts simulated);
compiled-model caching; the throughput hint; the BF16 trunk cut; the CLI (render --backend
ov-cpu, --replicate, one-line errors); the base install without openvino."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from poserender.engines import machine, ov_engine, registry
from poserender.engines.machine import Facts
from poserender.errors import UserError

SIZE = 64
NO_BF16 = frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


needs_openvino = pytest.mark.skipif(not _has_openvino(), reason="openvino not installed (pip install "
                                                                  "'poserender[openvino]')")
BF16_CPU = ov_engine.bf16_support(machine.cpu_flag_set())[0]
needs_bf16 = pytest.mark.skipif(not BF16_CPU, reason="this CPU has neither AVX512_BF16 nor AMX-BF16")
#: per precision: (max abs error of float outputs relative to their range, min PSNR of uint8 frames in dB,
#: share of argmax labels allowed to differ)
TOLERANCE = {"fp32": (1e-4, 60.0, 1e-3), "bf16": (5e-2, 30.0, 0.05)}


def run(*args):
    from poserender.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("poserender: error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def psnr(a, b):
    from poserender.export.quality import psnr as _psnr
    return _psnr(a, b, 255.0)


@pytest.fixture(scope="module")
def tiny_psc_model(tmp_path_factory, tiny_psc_builders):
    from poserender import families
    from poserender.export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("ov_psc") / "art"
    export_checkpoint(families.get("psc"), tiny_psc_builders.checkpoint(7), out, {"size": SIZE})
    return out


def stage_feeds(manifest, ort):
    """{stage: feed} for every stage of any family: its verification inputs (export.verify), each
    stage fed ONNX Runtime's outputs of the stages before it."""
    from poserender.export.verify import stage_feeds as verification_feeds

    feeds, outputs = {}, {}
    for i, spec in enumerate(manifest.stages):
        feeds[spec.name] = verification_feeds(manifest, i, outputs, seed=3)
        outputs.update(ort[spec.name].infer(feeds[spec.name]))
    return feeds


def compare_stage(name, ref, got, precision, family):
    rel, min_psnr, flips = TOLERANCE[precision]
    for key, want in ref.items():
        have = got[key]
        assert have.shape == want.shape and have.dtype == want.dtype, (name, key)
        if want.dtype == np.uint8 and key == "frames":
            value = psnr(want, have)
            assert value >= min_psnr, f"{family} {name}.{key} {precision}: PSNR {value:.1f} dB < {min_psnr}"
        elif want.dtype.kind == "f":
            scale = max(float(np.abs(want).max()), 1.0)
            err = float(np.abs(want - have).max()) / scale
            assert err <= rel, f"{family} {name}.{key} {precision}: max error {err:.2e} of range > {rel}"
        elif want.ndim >= 3:                # an argmax (labels): near-tied ones may flip
            assert (want != have).mean() <= flips, (name, key)
        else:
            assert np.array_equal(want, have), (name, key)


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16)])
@pytest.mark.parametrize("family", ["pose2img", "psc"])
def test_every_stage_matches_onnxruntime_fp32(family, precision, tiny_model, tiny_psc_model):
    """Each stage built by the registry's ov-cpu factory against ort-cpu FP32, on the same inputs;
    reduced precision only in the stage the export recorded a trunk for."""
    from poserender.engines.select import stage_engines
    from poserender.manifest import read_manifest

    model = tiny_model if family == "pose2img" else tiny_psc_model
    manifest = read_manifest(model)
    _, ort = stage_engines(model, manifest, "ort-cpu")
    backend, ov = stage_engines(model, manifest, "ov-cpu", precision=precision)
    assert backend == "ov-cpu" and all(isinstance(e, ov_engine.OvEngine) for e in ov)
    ort = {e.spec.name: e.activate() for e in ort}
    feeds = stage_feeds(manifest, ort)
    for engine in ov:
        with engine:
            compare_stage(engine.spec.name, ort[engine.spec.name].infer(feeds[engine.spec.name]),
                          engine.infer(feeds[engine.spec.name]), engine.precision, family)
    trunk = {s["name"] for s in manifest["stages"] if s.get("trunk")}
    assert trunk == {"frame"}
    assert {e.spec.name for e in ov if e.precision == precision} == (trunk if precision != "fp32" else set(ort))
    if precision == "bf16":         # pose2img's trunk is one region (cut out); PSC's CT-Net several: whole stage
        frame = {e.spec.name: e for e in ov}["frame"]
        assert frame.bf16_trunk == ("/unet_stageC/" if family == "pose2img" else None)


@needs_openvino
@needs_bf16
def test_psc_parsing_in_bf16_flips_labels_so_it_stays_fp32(tiny_psc_model):
    """Why AA-Net (the parsing stage, an argmax) runs FP32 at --precision bf16."""
    from poserender.engines.select import stage_engines
    from poserender.manifest import read_manifest

    manifest = read_manifest(tiny_psc_model)
    ort = {e.spec.name: e.activate() for e in stage_engines(tiny_psc_model, manifest, "ort-cpu")[1]}
    feed = stage_feeds(manifest, ort)["parsing"]
    spec = ort["parsing"].spec
    with ov_engine.OvEngine(spec, tiny_psc_model / spec.file, "bf16") as bf16:
        flipped = (bf16.infer(feed)["target_labels"] != ort["parsing"].infer(feed)["target_labels"]).mean()
    assert flipped > 0.05


def test_bf16_is_refused_from_the_machine_facts(tiny_model):
    """A simulated CPU with AVX-512 and VNNI but no BF16: one clear line from the registry, before
    anything is built; fp32 and int8 stay allowed; the probe says bf16 no."""
    from poserender.engines import select
    from poserender.manifest import read_manifest

    facts = Facts(cpu_flags=NO_BF16)
    for precision in ("bf16", "int8-bf16"):
        why = registry.refusal("ov-cpu", precision, facts)
        assert "needs BF16 arithmetic: this CPU has neither AVX512_BF16 nor AMX-BF16" in why
        with pytest.raises(UserError, match="needs BF16 arithmetic"):
            select.check_request(tiny_model, read_manifest(tiny_model), "ov-cpu", precision, facts=facts)
        with pytest.raises(UserError, match="needs BF16 arithmetic"):
            select.stage_engines(tiny_model, read_manifest(tiny_model), "ov-cpu", precision=precision, facts=facts)
    assert registry.refusal("ov-cpu", "int8", facts) is None and registry.refusal("ov-cpu", "fp32", facts) is None
    assert registry.refusal("ov-cpu", "bf16", Facts(cpu_flags={"amx_bf16"})) is None
    assert registry.refusal("ov-cpu", "bf16", Facts(cpu_flags={"avx512_bf16"})) is None
    if _has_openvino():
        ok, reason = registry.BACKENDS["ov-cpu"].probe(facts)
        assert ok and "bf16 no" in reason and "avx512_vnni" in reason


def test_render_bf16_refusal_is_one_line(tiny_model, tiny_inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flag_set", lambda: NO_BF16)
    out = tmp_path / "o.mp4"
    line = one_error_line(run("render", tiny_model, "--backend", "ov-cpu", "--precision", "bf16",
                              "--source", tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy",
                              "--keypoints", tiny_inputs / "targets.npy", "-o", out))
    assert "--precision bf16 on ov-cpu needs BF16 arithmetic" in line and "use --precision fp32" in line
    assert not list(tmp_path.iterdir())


@needs_openvino
def test_second_compile_hits_the_cache(tiny_model, tmp_path, monkeypatch):
    from poserender.manifest import read_manifest

    spec = read_manifest(tiny_model).stage("frame")
    first = ov_engine.OvEngine(spec, tiny_model / spec.file, threads=1, cache_dir=tmp_path / "c").activate()
    assert first.cache_hit is False and list((tmp_path / "c").glob("*.blob"))
    second = ov_engine.OvEngine(spec, tiny_model / spec.file, threads=1, cache_dir=tmp_path / "c").activate()
    assert second.cache_hit is True
    other = ov_engine.OvEngine(spec, tiny_model / spec.file, threads=1, cache_dir=tmp_path / "other").activate()
    assert other.cache_hit is False
    for engine in (first, second, other):
        engine.deactivate()
    monkeypatch.setenv("POSERENDER_CACHE", str(tmp_path / "user"))     # the default: the user cache
    assert ov_engine.OvEngine(spec, tiny_model / spec.file).cache_dir == tmp_path / "user" / "openvino"


@needs_openvino
def test_threads_and_hints_reach_openvino(tiny_model):
    from poserender.engines.select import stage_engines
    from poserender.manifest import read_manifest

    manifest = read_manifest(tiny_model)
    spec = manifest.stage("frame")
    latency = ov_engine.OvEngine(spec, tiny_model / spec.file, threads=1)
    assert latency.compile_config() == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                        "INFERENCE_NUM_THREADS": "1"}
    throughput = ov_engine.OvEngine(spec, tiny_model / spec.file, threads=2, hint="throughput")
    ort = {e.spec.name: e.activate() for e in stage_engines(tiny_model, manifest, "ort-cpu")[1]}
    feed = stage_feeds(manifest, ort)["frame"]
    feed = {k: np.repeat(v, 3, axis=0) if k in ("target_keypoints", "target_valid") else v for k, v in feed.items()}
    with latency, throughput:
        assert int(latency.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        a, b = latency.infer(feed)["frames"], throughput.infer(feed)["frames"]
        assert a.shape == b.shape and a.shape[0] == len(feed["target_keypoints"])   # split and put back
        assert psnr(a, b) >= 60
    with pytest.raises(UserError, match="hint 'fast'"):
        ov_engine.OvEngine(spec, tiny_model / spec.file, hint="fast")


@needs_openvino
def test_render_on_ov_cpu_with_replicated_workers(tiny_model, tiny_inputs, tmp_path):
    """--devices cpu,cpu --replicate: two frame workers, each an ov-cpu engine with its share of threads."""
    import av

    out = tmp_path / "o.mp4"
    result = run("render", tiny_model, "--backend", "ov-cpu", "--devices", "cpu,cpu", "--replicate", "--batch", "2",
                 "--source", tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy",
                 "--keypoints", tiny_inputs / "targets.npy", "-o", out, "--verbose")
    assert result.exit_code == 0, result.output
    assert "backend ov-cpu" in result.output and "frame@cpu#0" in result.output and "frame@cpu#1" in result.output
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


def test_option_errors_are_one_line(tiny_model, tiny_inputs, tmp_path):
    common = ["--source", tiny_inputs / "source.png", "--source-keypoints", tiny_inputs / "source.npy",
              "--keypoints", tiny_inputs / "targets.npy", "-o", tmp_path / "o.mp4"]
    if _has_openvino():
        line = one_error_line(run("render", tiny_model, "--backend", "ov-cpu", "--precision", "int8", *common))
        assert "has no INT8 graphs" in line and "--int8-target ov" in line
        line = one_error_line(run("render", tiny_model, "--backend", "ov-cpu", "--precision", "int8-bf16", *common))
        assert "has no NNCF INT8 graph" in line
        line = one_error_line(run("render", tiny_model, "--backend", "ov-cpu", "--precision", "fp16", *common))
        assert "backend ov-cpu runs fp32, bf16, int8, int8-bf16" in line
    line = one_error_line(run("render", tiny_model, "--backend", "ort-cpu", "--precision", "int8-bf16", *common))
    assert "--precision int8-bf16 needs one of ov-cpu" in line
    assert not list(tmp_path.iterdir())


@needs_openvino
def test_doctor_names_the_backend_and_its_precisions():
    from poserender.doctor import backend_availability, collect, format_report

    usable, reason = backend_availability()["ov-cpu"]
    assert usable and reason.startswith("OpenVINO ") and "int8" in reason
    report = format_report(collect())
    assert "[fp32, bf16, int8, int8-bf16]" in report and "devices: CPU" in report


def test_without_openvino_the_backend_says_how_to_install_and_the_rest_runs(tiny_model):
    """The base install: openvino missing -> ov-cpu unusable with the install line, nothing else changes."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.modules["openvino"] = None
        sys.modules["nncf"] = None
        from poserender.engines import registry, select
        from poserender.manifest import read_manifest
        ok, reason = registry.availability()["ov-cpu"]
        print(ok, reason)
        print(select.stage_engines({str(tiny_model)!r}, read_manifest({str(tiny_model)!r}), "ort-cpu")[0])
        try:
            select.resolve_backend("ov-cpu")
        except Exception as exc:
            print(exc)
    """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("False openvino not installed") and "poserender[openvino]" in lines[0]
    assert lines[1] == "ort-cpu"
    assert "backend ov-cpu is not usable here: openvino not installed" in lines[2]


@needs_openvino
def test_bf16_runs_only_the_trunk_in_bf16(tiny_model):
    """The frame graph is cut at the U-Net's boundary: before and after it f32, the U-Net bf16,
    every convolution in the middle part and none outside; the pieces in f32 give the whole
    graph's result bit for bit."""
    import openvino as ov

    from poserender.engines.ov_split import split_at_trunk
    from poserender.engines.select import stage_engines
    from poserender.manifest import read_manifest

    manifest = read_manifest(tiny_model)
    graph = ov.Core().read_model(str(tiny_model / "frame.onnx"))
    parts = split_at_trunk(graph, "/unet_stageC/")
    assert [bf16 for _, bf16, _ in parts] == [False, True, False]
    assert len(parts[1][0].get_parameters()) == 1                  # one tensor goes in: the U-Net's input
    convs = sum(op.get_type_name() == "Convolution" for op in graph.get_ordered_ops())
    core = ov.Core()
    runtime = [core.compile_model(model, "CPU").get_runtime_model() for model, _, _ in parts]
    kinds = [[op.get_rt_info()["layerType"].astype(str) for op in m.get_ordered_ops()] for m in runtime]
    assert [k.count("Convolution") for k in kinds] == [0, convs, 0]   # every conv in the trunk, none twice
    spec = manifest.stage("frame")
    whole = ov_engine.OvEngine(spec, tiny_model / spec.file, "fp32")
    cut = ov_engine.OvEngine(spec, tiny_model / spec.file, "bf16", bf16_trunk="/unet_stageC/")
    cut.compile_config = lambda bf16=None: whole.compile_config()  # the cut in f32 must be exact
    ort = {e.spec.name: e.activate() for e in stage_engines(tiny_model, manifest, "ort-cpu")[1]}
    feed = stage_feeds(manifest, ort)["frame"]
    with whole, cut:
        assert len(cut._parts) == 3
        assert np.array_equal(whole.infer(feed)["frames"], cut.infer(feed)["frames"])
    with pytest.raises(UserError, match="has no trunk '/nowhere/'"):
        ov_engine.OvEngine(spec, tiny_model / spec.file, "bf16", bf16_trunk="/nowhere/").activate()


@needs_openvino
def test_bench_puts_backends_and_precisions_side_by_side_with_their_floors(tiny_model, tmp_path):
    import json

    precisions = "fp32,bf16" if BF16_CPU else "fp32"
    out = tmp_path / "r.json"
    result = run("bench", tiny_model, "--backend", "ort-cpu,ov-cpu", "--precision", precisions, "--batch", "2",
                 "--frames", "4", "--min-seconds", "0", "--min-runs", "3", "--warmup", "1", "--peak-seconds", "0.2",
                 "--json", out, "--csv", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    ok = {(r["backend"], r["stage"], r["precision"]): r for r in report["rows"] if r["status"] == "ok"}
    assert ("ort-cpu", "frame", "fp32") in ok and ("ov-cpu", "frame", "fp32") in ok
    for row in ok.values():
        assert row["floor_ms_per_frame"] > 0 and row["ratio_to_floor"] > 0
    assert "compute floors" in result.output and "ratio_to_floor" in (tmp_path / "r.csv").read_text()
    skipped = [r for r in report["rows"] if r["backend"] == "ort-cpu" and r["precision"] == "bf16"]
    if BF16_CPU:
        assert skipped and skipped[0]["status"] == "skipped" and "ov-cpu" in skipped[0]["reason"]
        bf16 = ok[("ov-cpu", "frame", "bf16")]
        assert bf16["speedup_vs_fp32"] > 0 and bf16["quality_vs_fp32"]["frames"] >= 1
        peaks = report["precision_peaks"]
        assert peaks["bf16"]["gflops"] > 0 and peaks["fp32"]["gflops"] > 0
        assert bf16["floor_peak"] == {"precision": "bf16", "gflops": peaks["bf16"]["gflops"]}


def test_floors_per_precision_from_the_measured_peaks():
    """fp32 rows against the best fp32 peak, int8-bf16 against the int8 peak, GPU rows none."""
    from poserender.bench.floors import apply_floors

    rows = [{"backend": b, "precision": p, "status": "ok", "flops_per_frame": 50e9, "fps": 10.0, "stage": "frame",
             "batch": 4} for b, p in (("ort-cpu", "fp32"), ("ov-cpu", "int8-bf16"), ("ort-cuda", "fp32"))]
    apply_floors(rows, 500.0, {"fp32": {"gflops": 400.0}, "int8": {"gflops": 2000.0}})
    assert rows[0]["floor_ms_per_frame"] == 100.0 and rows[0]["ratio_to_floor"] == 1.0
    assert rows[1]["floor_ms_per_frame"] == 25.0 and rows[1]["ratio_to_floor"] == 4.0
    assert "floor_ms_per_frame" not in rows[2]
