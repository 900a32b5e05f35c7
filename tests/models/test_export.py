"""ONNX export of the two Pose2Img stages (width-8 generator, 64 x 64): checker-clean single files
with a dynamic batch, and ONNX Runtime agreeing with torch."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx.external_data_helper import uses_external_data  # noqa: E402

from poserender.export.onnx_export import export_stage  # noqa: E402
from poserender.families.pose2img import stage_specs  # noqa: E402
from poserender.export.verify import compare_outputs, passes, run_onnx, run_torch  # noqa: E402
from poserender.keypoints.template import gesture_sequence, template_pose  # noqa: E402
from poserender.models.pose2img import FrameStage, Pose2ImgGeometry, SourceStage  # noqa: E402

H = W = 64


def target_feed(batch: int, source_feed, source_out, seed: int = 0):
    kp = gesture_sequence(batch, H, W, seed=seed).astype(np.float32)
    valid = np.ones((batch, 122), np.float32)
    if batch > 1:
        valid[1, [4, 7, 110]] = 0
    return {"target_keypoints": kp, "target_valid": valid,
            "source_keypoints": source_feed["source_keypoints"], "source_valid": source_feed["source_valid"],
            "source_parts": source_out["source_parts"], "background": source_out["background"]}


@pytest.fixture(scope="module", params=["legacy", "exact"])
def exported(request, tmp_path_factory, make_small_generator, default_config, smooth_image):
    out = tmp_path_factory.mktemp(f"onnx_{request.param}")
    geometry = Pose2ImgGeometry(H, W, tuple(default_config.kp_var_root), tuple(default_config.mask_sigma_perp),
                                request.param)
    generator = make_small_generator(width=8, seed=21).eval()
    source_spec, frame_spec = stage_specs(H, W)
    source, frame = SourceStage(generator, geometry).eval(), FrameStage(generator, geometry).eval()
    source_feed = {"source_image": smooth_image(1, H, W, seed=2),
                   "source_keypoints": template_pose(H, W).astype(np.float32)[None],
                   "source_valid": np.ones((1, 122), np.float32)}
    export_stage(source, source_spec, out / "source.onnx", source_feed)
    source_out = run_torch(source, source_spec, source_feed)
    export_stage(frame, frame_spec, out / "frame.onnx", target_feed(1, source_feed, source_out))
    return dict(dir=out, source=source, frame=frame, source_spec=source_spec, frame_spec=frame_spec,
                source_feed=source_feed, source_out=source_out)


def test_files_are_single_checker_clean_onnx(exported):
    assert sorted(p.name for p in exported["dir"].iterdir()) == ["frame.onnx", "source.onnx"]   # no temp, no data
    for name, spec in (("source.onnx", exported["source_spec"]), ("frame.onnx", exported["frame_spec"])):
        model = onnx.load(str(exported["dir"] / name))
        onnx.checker.check_model(model, full_check=True)
        assert not any(uses_external_data(t) for t in model.graph.initializer), name
        assert [i.name for i in model.graph.input] == spec.input_names
        assert [o.name for o in model.graph.output] == spec.output_names
        assert len(model.graph.initializer) > 0


def test_batch_dimension_is_dynamic_in_the_graph(exported):
    model = onnx.load(str(exported["dir"] / "frame.onnx"))
    first_dims = {v.name: v.type.tensor_type.shape.dim[0] for v in list(model.graph.input) + list(model.graph.output)}
    for name in ("target_keypoints", "target_valid", "frames"):
        assert first_dims[name].dim_param == "batch", name
    assert first_dims["source_parts"].dim_value == 1


def test_source_stage_onnx_matches_torch(exported):
    got = run_onnx(exported["dir"] / "source.onnx", exported["source_feed"])
    report = compare_outputs(exported["source_out"], got)
    assert passes(report), report
    assert report["source_parts"]["max_abs_error"] <= 1e-4 and report["background"]["max_abs_error"] <= 1e-4
    assert got["source_parts"].shape == (1, 8, 3, H, W)


@pytest.mark.parametrize("batch", [1, 5])
def test_frame_stage_onnx_matches_torch_at_any_batch(exported, batch):
    feed = target_feed(batch, exported["source_feed"], exported["source_out"], seed=batch)
    ref = run_torch(exported["frame"], exported["frame_spec"], feed)
    got = run_onnx(exported["dir"] / "frame.onnx", feed)
    assert got["frames"].shape == (batch, H, W, 3) and got["frames"].dtype == np.uint8
    report = compare_outputs(ref, got)
    assert passes(report), report
    assert report["frames"]["max_abs_error"] <= 2
    assert np.ptp(got["frames"]) > 20                      # not a constant image


def test_source_stage_accepts_a_batch_of_identities(exported):
    feed = {"source_image": np.concatenate([exported["source_feed"]["source_image"]] * 2),
            "source_keypoints": np.concatenate([exported["source_feed"]["source_keypoints"]] * 2),
            "source_valid": np.ones((2, 122), np.float32)}
    feed["source_keypoints"][1] += 1.5
    got = run_onnx(exported["dir"] / "source.onnx", feed)
    assert got["source_parts"].shape == (2, 8, 3, H, W) and got["background"].shape == (2, 3, H, W)
    assert passes(compare_outputs(run_torch(exported["source"], exported["source_spec"], feed), got))


def test_passes_rejects_bad_reports():
    """The verdict used above can fail: too large float errors, too many off frames, non-finite."""
    ok = {"x": np.zeros((4, 4), np.float32)}
    assert passes(compare_outputs(ok, {"x": np.full((4, 4), 1e-4, np.float32)}))
    assert not passes(compare_outputs(ok, {"x": np.full((4, 4), 1e-2, np.float32)}))
    assert not passes(compare_outputs(ok, {"x": np.full((4, 4), np.nan, np.float32)}))
    frames = np.zeros((1, 100, 100, 3), np.uint8)
    off = frames.copy()
    off[0, :2, :2] = 9                                     # 12 of 30000 values 9 levels off: 0.04 %
    assert passes(compare_outputs({"f": frames}, {"f": off}))
    off[0, :10] = 9                                        # 10 %
    assert not passes(compare_outputs({"f": frames}, {"f": off}))
