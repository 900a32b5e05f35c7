"""TensorRT-readiness check: the exported pose2img graphs, and hand-made graphs that break a rule."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from poserender.export.trt_check import check_model, check_onnx  # noqa: E402
from poserender.specs import StageSpec, TensorSpec  # noqa: E402


def graph(nodes, inputs, outputs, opset=17, initializers=()):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", opset)])
    return model


def value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def errors(report):
    return [f for f in report.findings if f.severity == "error"]


@pytest.fixture(scope="module")
def specs(tiny_model):
    import json
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    return {s["name"]: StageSpec.from_dict(s) for s in manifest["stages"]}


def test_source_graph_is_tensorrt_ready(tiny_model, specs):
    report = check_onnx(tiny_model / "source.onnx", specs["source"])
    assert report.ok, [str(f) for f in report.findings]
    assert report.opset == 17 and report.op_counts["Conv"] > 0 and report.op_counts["Softmax"] == 1


def test_frame_graph_is_tensorrt_ready(tiny_model, specs):
    report = check_onnx(tiny_model / "frame.onnx", specs["frame"])
    assert report.ok, [str(f) for f in report.findings]


def test_export_records_readiness_in_the_manifest(tiny_model):
    import json
    stages = json.loads((tiny_model / "manifest.json").read_text())["stages"]
    readiness = {s["name"]: s["tensorrt_readiness"] for s in stages}
    assert readiness["source"]["ok"] is True and readiness["source"]["target"] == "TensorRT 10"
    assert readiness["frame"]["ok"] is True


def test_grid_sample_must_be_4d():
    x4, grid4 = value("x", TensorProto.FLOAT, [1, 3, 8, 8]), value("g", TensorProto.FLOAT, [1, 8, 8, 2])
    ok = check_model(graph([helper.make_node("GridSample", ["x", "g"], ["y"], name="warp")], [x4, grid4],
                           [value("y", TensorProto.FLOAT, [1, 3, 8, 8])], opset=20))
    assert ok.ok, ok.findings
    x5, grid5 = value("x", TensorProto.FLOAT, [1, 3, 4, 8, 8]), value("g", TensorProto.FLOAT, [1, 4, 8, 8, 3])
    bad = check_model(graph([helper.make_node("GridSample", ["x", "g"], ["y"], name="warp3d")], [x5, grid5],
                            [value("y", TensorProto.FLOAT, [1, 3, 4, 8, 8])], opset=20))
    assert [(f.op, f.node) for f in errors(bad)] == [("GridSample", "warp3d")]
    assert "rank 5" in errors(bad)[0].message and "4-D" in errors(bad)[0].message


def test_unsupported_op_and_custom_domain():
    x = value("x", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Unique", ["x"], ["u"], name="uniq"),
             helper.make_node("MyWarp", ["x"], ["y"], name="plugin", domain="com.example")]
    report = check_model(graph(nodes, [x], [value("y", TensorProto.FLOAT, [4])]))
    messages = {f.node: f.message for f in errors(report)}
    assert "not supported by the TensorRT 10 ONNX parser" in messages["uniq"]
    assert "custom domain 'com.example'" in messages["plugin"]
    assert "uniq" in report.summary() and not report.ok


@pytest.mark.parametrize("attrs, fragment", [
    ({"mode": "cubic"}, "mode 'cubic'"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
    ({"mode": "linear", "antialias": 1}, "antialias"),
])
def test_resize_restrictions(attrs, fragment):
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    report = check_model(graph([node], [value("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                               [value("y", TensorProto.FLOAT, [1, 3, 16, 16])], opset=18, initializers=[scales]))
    assert len(errors(report)) == 1 and fragment in errors(report)[0].message


def test_topk_needs_a_small_constant_k():
    k = helper.make_tensor("k", TensorProto.INT64, [1], [4000])
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")
    report = check_model(graph([node], [value("x", TensorProto.FLOAT, [1, 5000])],
                               [value("v", TensorProto.FLOAT, [1, 4000]), value("i", TensorProto.INT64, [1, 4000])],
                               initializers=[k]))
    assert [f.message for f in errors(report)] == ["K=4000; TensorRT supports K < 3840"]


def test_uint8_must_be_cast_last():
    x = value("x", TensorProto.FLOAT, [1, 3, 4, 4])
    good = graph([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1], name="nhwc"),
                  helper.make_node("Cast", ["t"], ["y"], to=TensorProto.UINT8, name="to_u8")],
                 [x], [value("y", TensorProto.UINT8, [1, 4, 4, 3])])
    assert check_model(good).ok
    bad = graph([helper.make_node("Cast", ["x"], ["c"], to=TensorProto.UINT8, name="to_u8"),
                 helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1], name="nhwc")],
                [x], [value("y", TensorProto.UINT8, [1, 4, 4, 3])])
    assert {f.node for f in errors(check_model(bad))} == {"to_u8", "nhwc"}


def test_unsupported_types_error_and_double_warns():
    x = value("x", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE, name="to_double"),
             helper.make_node("Cast", ["d"], ["y"], to=TensorProto.UINT16, name="to_u16")]
    report = check_model(graph(nodes, [x], [value("y", TensorProto.UINT16, [4])]))
    assert any(f.severity == "warning" and f.node == "to_double" for f in report.findings)
    assert any("UINT16" in f.message for f in errors(report))


@pytest.mark.parametrize("opset, severity", [(8, "error"), (21, "warning"), (25, "error")])
def test_opset_range(opset, severity):
    x = value("x", TensorProto.FLOAT, [4])
    report = check_model(graph([helper.make_node("Relu", ["x"], ["y"])], [x], [value("y", TensorProto.FLOAT, [4])],
                               opset=opset))
    assert [f.severity for f in report.findings if f.op == "opset"] == [severity]


def test_dynamic_axis_must_be_the_spec_batch_axis():
    spec = StageSpec("s", (TensorSpec("x", "float32", ("batch", 4)),), (TensorSpec("y", "float32", ("batch", 4)),))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])
    report = check_model(graph([helper.make_node("Relu", ["x"], ["y"])], [x],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])]), spec)
    assert [f.message for f in errors(report)] == [
        "axis 1 is dynamic but the StageSpec has no batch axis there, so no optimisation profile covers it"]


def test_nodes_inside_if_branches_are_checked():
    branch = helper.make_graph([helper.make_node("Unique", ["x"], ["u"], name="inner")], "b", [],
                               [value("u", TensorProto.FLOAT, [4])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="cond")
    report = check_model(graph([node], [value("c", TensorProto.BOOL, []), value("x", TensorProto.FLOAT, [4])],
                               [value("y", TensorProto.FLOAT, [4])]))
    assert [f.node for f in errors(report)] == ["inner", "inner"]


def test_report_is_plain_data():
    import json
    x = value("x", TensorProto.FLOAT, [4])
    report = check_model(graph([helper.make_node("Relu", ["x"], ["y"], name="r")], [x],
                               [value("y", TensorProto.FLOAT, [4])]))
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {"target": "TensorRT 10", "ok": True, "opset": 17, "findings": [], "ops": {"Relu": 1}}
    assert np.isscalar(report.op_counts["Relu"])


def test_topk_with_a_runtime_k_imports_since_tensorrt_8_6():
    """onnx-tensorrt Changelog 8.6 EA: "Added support for TopK operators with dynamic K values"."""
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")
    report = check_model(graph([node], [value("x", TensorProto.FLOAT, [1, 50]), value("k", TensorProto.INT64, [1])],
                               [value("v", TensorProto.FLOAT, [1, None]), value("i", TensorProto.INT64, [1, None])]))
    assert report.ok and [(f.severity, f.op) for f in report.findings] == [("warning", "TopK")]
    assert "3840" in report.findings[0].message


@pytest.mark.parametrize("op, since", [("HannWindow", "10.4"), ("BlackmanWindow", "10.4"), ("DeformConv", "10.1")])
def test_operators_added_during_tensorrt_10_warn_with_their_release(op, since):
    x = value("x", TensorProto.FLOAT, [4])
    report = check_model(graph([helper.make_node(op, ["x"], ["y"], name="n")], [x],
                               [value("y", TensorProto.FLOAT, [4])], opset=20))
    assert report.ok and [f.message for f in report.findings if f.op == op] == [
        f"imported only by TensorRT {since} and later"]


def test_resize_scales_must_cover_every_axis_in_order():
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [2], [2, 2])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear", axes=[2, 3])
    report = check_model(graph([node], [value("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                               [value("y", TensorProto.FLOAT, [1, 3, 16, 16])], opset=18, initializers=[scales]))
    assert [f.message for f in errors(report)] == ["axes [2, 3] with scales; TensorRT needs axes 0..3 in order"]
