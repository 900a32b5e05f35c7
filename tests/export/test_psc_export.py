"""PSC export: four verified graphs with a dynamic batch, a "psc" manifest naming the InstanceNorm
layers, auto-detection of a pm.pth/aa.pth/ct.pth folder in `poserender export`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from poserender import families
from poserender.cli import main
from poserender.errors import UserError

SIZE = 64   # the nets are fully convolutional; a 64 x 64 canvas keeps these tests fast


@pytest.fixture(scope="module")
def psc_checkpoint(tmp_path_factory):
    """Random-weight nets in the authors' file layout (plain state dicts)."""
    from poserender.models.psc import AANet, CTNet, PMNet

    folder = tmp_path_factory.mktemp("psc_ckpt")
    torch.manual_seed(5)
    for name, net in (("pm.pth", PMNet()), ("aa.pth", AANet()), ("ct.pth", CTNet())):
        torch.save(net.state_dict(), folder / name)
    return folder


@pytest.fixture(scope="module")
def psc_export(tmp_path_factory, psc_checkpoint):
    out = tmp_path_factory.mktemp("art") / "psc"
    result = CliRunner().invoke(main, ["export", str(psc_checkpoint), "-o", str(out), "--size", str(SIZE)])
    assert result.exit_code == 0, result.output
    assert "psc stages source, interp, parsing, frame" in result.output
    return out


def test_manifest_describes_four_verified_stages_and_fp32_layers(psc_export, psc_checkpoint):
    manifest = json.loads((psc_export / "manifest.json").read_text())
    assert manifest["family"] == "psc" and manifest["canvas"] == [SIZE, SIZE]
    assert manifest["config"]["aa_norm"] == "authors" and manifest["bn_stats"] == "sample"
    assert [s["name"] for s in manifest["stages"]] == ["source", "interp", "parsing", "frame"]
    for stage in manifest["stages"]:
        assert (psc_export / stage["file"]).is_file() and stage["verification"]["batch"] == 2
        # AA-Net's BatchNorm in the authors' mode is an InstanceNormalization too: all must be pinnable
        assert len(manifest["fp32_layers"]["nodes"][stage["name"]]) > 0
    assert set(manifest["checkpoint"]["sha256"]) == {"pm.pth", "aa.pth", "ct.pth"}
    assert manifest["checkpoint"]["path"] == str(psc_checkpoint.resolve())


def test_every_psc_graph_passes_the_tensorrt_readiness_check(psc_export):
    """Recorded at export, and re-checked here on the files: all four graphs are TensorRT-10 ready."""
    from poserender.export.trt_check import check_onnx
    from poserender.specs import StageSpec

    manifest = json.loads((psc_export / "manifest.json").read_text())
    for stage in manifest["stages"]:
        assert stage["tensorrt_readiness"]["ok"] is True, stage["tensorrt_readiness"]
        report = check_onnx(psc_export / stage["file"], StageSpec.from_dict(stage))
        assert report.ok, [str(f) for f in report.findings]
        assert report.op_counts.get("InstanceNormalization", 0) > 0


def test_every_graph_runs_any_batch_on_ort_like_torch(psc_export, psc_checkpoint):
    """Batch 3 (not the exported 1 nor the verified 2) through ORT and through the torch engine."""
    from poserender.engines.select import stage_engines
    from poserender.families.psc_io import verification_feeds
    from poserender.manifest import read_manifest

    manifest = read_manifest(psc_export)
    feeds = verification_feeds(SIZE, SIZE, seed=3)
    results, shared_labels = {}, None
    for backend in ("ort-cpu", "torch"):
        _, engines = stage_engines(psc_export, manifest, backend, torch_stages=families.of(manifest).torch_stage)
        stage = {e.spec.name: e.activate() for e in engines}
        source = stage["source"].infer(feeds["source"])
        kp = np.concatenate([feeds["parsing"]["target_keypoints"]] * 2)[:3]
        kv = np.concatenate([feeds["parsing"]["target_valid"]] * 2)[:3]
        pose = stage["interp"].infer({**feeds["interp"], "t": np.array([0.1, 0.5, 0.9], np.float32)})
        labels = stage["parsing"].infer({"target_keypoints": kp, "target_valid": kv,
                                         "parsing_code": source["parsing_code"]})["target_labels"]
        # the same labels into both frame stages: the authors' train-mode AA-Net flips a few
        # near-tied labels between backends, and one flipped label moves CT-Net's whole image
        shared_labels = labels if shared_labels is None else shared_labels
        frames = stage["frame"].infer({"target_labels": shared_labels,
                                       **{k: v for k, v in source.items() if k != "parsing_code"}})["frames"]
        assert frames.shape == (3, SIZE, SIZE, 3) and frames.dtype == np.uint8
        assert pose["keypoints"].shape == (3, 18, 2)
        results[backend] = (pose["valid"], labels, frames)
        for e in engines:
            e.deactivate()
    (v_ort, l_ort, f_ort), (v_torch, l_torch, f_torch) = results["ort-cpu"], results["torch"]
    assert np.array_equal(v_ort, v_torch)
    assert (l_ort != l_torch).mean() <= 2e-3
    assert (np.abs(f_ort.astype(int) - f_torch.astype(int)).max(-1) > 2).mean() <= 1e-3


def test_option_errors_write_nothing(tmp_path, psc_checkpoint):
    from poserender import families
    from poserender.export.exporter import export_checkpoint

    runner = CliRunner()
    result = runner.invoke(main, ["export", str(psc_checkpoint), "--config", "x.yaml", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--config apply to pose2img models; this is a psc model" in result.output
    result = runner.invoke(main, ["export", str(tmp_path), "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "expected a Pose2Img .pth file or a PSC folder" in result.output
    result = runner.invoke(main, ["export", str(psc_checkpoint), "--size", "70", "-o", str(tmp_path / "z")])
    assert result.exit_code == 2 and "multiples of 16" in result.output and not (tmp_path / "z").exists()
    with pytest.raises(UserError, match="--aa-norm 'train'"):
        export_checkpoint(families.get("psc"), psc_checkpoint, tmp_path / "w", {"aa_norm": "train"})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_eval_mode_export(tmp_path, psc_checkpoint):
    from poserender import families
    from poserender.export.exporter import export_checkpoint

    manifest = export_checkpoint(families.get("psc"), psc_checkpoint, tmp_path / "eval", {"aa_norm": "eval", "size": SIZE})
    assert manifest["bn_stats"] == "running" and manifest["config"]["aa_norm"] == "eval"
    assert manifest["stages"][2]["verification"]["labels"]["changed"] == 0   # no chaos in eval mode
