"""TensorRT's INT8 Q/DQ rules (export/qdq_check.py) on small hand-built graphs: a graph that follows
them passes (and runs on ONNX Runtime CPU), and each damaged copy (non-zero or uint8 zero point,
zero/inf/non-constant scale, wrong per-channel axis, per-channel activations, int32 bias DQ,
contrib domain, quantized constants outside a linear layer) gives the finding it should."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from poserender.export.qdq_check import check_qdq, check_qdq_model


def _graph(conv_axis=0, deconv_axis=1, act_scale=0.05, act_zp=0, zp_type=np.int8, weight_scale=None,
           extra_nodes=(), extra_inits=(), q_domain=""):
    """x (1,2,4,4) -> Q/DQ (per tensor) -> Conv (int8 weights, per channel, 3 outputs) -> Q/DQ ->
    ConvTranspose (int8 weights, per channel, 2 outputs) -> y."""
    rng = np.random.default_rng(0)
    w1 = rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)
    w2 = rng.integers(-127, 128, (3, 2, 2, 2)).astype(np.int8)        # ConvTranspose: (C_in, C_out, kh, kw)
    ws1 = np.full(3, 0.01, np.float32) if weight_scale is None else weight_scale
    inits = [
        numpy_helper.from_array(np.array(act_scale, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(act_zp, zp_type), "a_zp"),
        numpy_helper.from_array(w1, "w1_q"), numpy_helper.from_array(ws1, "w1_scale"),
        numpy_helper.from_array(np.zeros(3, np.int8), "w1_zp"),
        numpy_helper.from_array(w2, "w2_q"), numpy_helper.from_array(np.full(2, 0.02, np.float32), "w2_scale"),
        numpy_helper.from_array(np.zeros(2, np.int8), "w2_zp"),
        numpy_helper.from_array(np.array(0.1, np.float32), "h_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "h_zp"),
        *extra_inits,
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["x_q"], name="x_Q", domain=q_domain),
        helper.make_node("DequantizeLinear", ["x_q", "a_scale", "a_zp"], ["x_dq"], name="x_DQ", domain=q_domain),
        helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zp"], ["w1"], name="w1_DQ", axis=conv_axis),
        helper.make_node("Conv", ["x_dq", "w1"], ["h"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["h", "h_scale", "h_zp"], ["h_q"], name="h_Q"),
        helper.make_node("DequantizeLinear", ["h_q", "h_scale", "h_zp"], ["h_dq"], name="h_DQ"),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_scale", "w2_zp"], ["w2"], name="w2_DQ", axis=deconv_axis),
        helper.make_node("ConvTranspose", ["h_dq", "w2"], ["y"], name="deconv", strides=[2, 2]),
        *extra_nodes,
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8                  # readable by every onnxruntime this package supports
    return model


def _messages(model):
    return [str(f) for f in check_qdq_model(model).findings]


def test_a_graph_that_follows_the_rules_passes_and_runs(tmp_path):
    import onnxruntime as ort

    model = _graph()
    onnx.checker.check_model(model)
    report = check_qdq_model(model, "good")
    assert report.ok and report.findings == []
    assert (report.quantize, report.dequantize, report.per_channel) == (2, 4, 2)
    assert report.summary() == "good: TensorRT INT8 Q/DQ rules ok (2 Q, 4 DQ, 2 per-channel)"
    assert report.to_dict()["ok"] is True
    path = tmp_path / "good.onnx"
    onnx.save(model, str(path))
    assert check_qdq(path).ok
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["y"], {"x": np.random.default_rng(1).normal(size=(1, 2, 4, 4)).astype(np.float32)})[0]
    assert y.shape == (1, 2, 8, 8) and np.isfinite(y).all()


def test_non_zero_zero_point_is_refused():
    messages = _messages(_graph(act_zp=3))
    assert len(messages) == 2                                        # the activation's Q and its DQ
    assert all("zero point 'a_zp' has 1 non-zero value(s) (first 3)" in m and "symmetric" in m for m in messages)
    assert messages[0].startswith("error: QuantizeLinear x_Q:")


def test_uint8_zero_point_is_refused():
    messages = _messages(_graph(act_zp=0, zp_type=np.uint8))
    assert any("zero point 'a_zp' is uint8; TensorRT quantizes to INT8" in m for m in messages)
    assert any("dequantizes 'x_q' of type UINT8" in m for m in messages)
    assert check_qdq_model(_graph(act_zp=128, zp_type=np.uint8)).summary().startswith(
        "graph: TensorRT INT8 Q/DQ rules ")


@pytest.mark.parametrize("scale,why", [(0.0, "first 0.0"), (-0.5, "first -0.5"), (np.inf, "first inf"),
                                       (np.nan, "first nan")])
def test_scale_must_be_finite_and_positive(scale, why):
    messages = _messages(_graph(act_scale=scale))
    assert len(messages) == 2 and all("scale 'a_scale': 1 of 1 value(s) not finite and > 0" in m for m in messages)
    assert why in messages[0]


def test_per_channel_weight_scale_zero_in_one_channel():
    messages = _messages(_graph(weight_scale=np.array([0.01, 0.0, 0.01], np.float32)))
    assert messages == ["error: DequantizeLinear w1_DQ: scale 'w1_scale': 1 of 3 value(s) not finite and > 0 "
                        "(first 0.0)"]


def test_per_channel_axis_must_be_the_output_channels():
    conv = _messages(_graph(conv_axis=1))
    assert any("axis 1 of 'w1_q' has 2 channels but the scale has 3 values" in m for m in conv)
    assert any("axis 1 for Conv 'conv' weights; expected 0 (output channels)" in m for m in conv)
    deconv = _messages(_graph(deconv_axis=0))
    assert deconv == ["error: DequantizeLinear w2_DQ: axis 0 of 'w2_q' has 3 channels but the scale has 2 values",
                      "error: DequantizeLinear w2_DQ: axis 0 for ConvTranspose 'deconv' weights; expected 1 "
                      "(output channels)"]
    assert any("axis 7 is out of range for the rank-4 weight" in m for m in _messages(_graph(conv_axis=7)))


def test_activation_scales_are_per_tensor_only():
    model = _graph()
    scale = next(i for i in model.graph.initializer if i.name == "h_scale")
    zp = next(i for i in model.graph.initializer if i.name == "h_zp")
    scale.CopyFrom(numpy_helper.from_array(np.full(3, 0.1, np.float32), "h_scale"))
    zp.CopyFrom(numpy_helper.from_array(np.zeros(3, np.int8), "h_zp"))
    messages = _messages(model)
    assert len(messages) == 2 and all("per-channel scale (3 values) on the activation" in m for m in messages)


def test_missing_zero_point_and_non_constant_scale():
    model = _graph()
    q = next(n for n in model.graph.node if n.name == "h_Q")
    del q.input[2]                                                     # ONNX default: uint8 output
    messages = _messages(model)
    assert any(m.startswith("error: QuantizeLinear h_Q: no zero point: ONNX then quantizes to UINT8") for m in messages)
    model = _graph(extra_nodes=[helper.make_node("Identity", ["a_scale"], ["a_scale_dyn"], name="dyn")])
    model.graph.node[0].input[1] = "a_scale_dyn"
    assert _messages(model) == ["error: QuantizeLinear x_Q: scale 'a_scale_dyn' is not a build-time constant "
                                "(initializer or Constant)"]


def test_int32_bias_dequantize_and_contrib_domain_are_refused():
    bias = [numpy_helper.from_array(np.arange(3, dtype=np.int32), "b_q"),
            numpy_helper.from_array(np.full(3, 0.001, np.float32), "b_scale"),
            numpy_helper.from_array(np.zeros(3, np.int32), "b_zp")]
    model = _graph(extra_inits=bias, extra_nodes=[
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="b_DQ", axis=0)])
    conv = next(n for n in model.graph.node if n.name == "conv")
    conv.input.append("b")
    messages = _messages(model)
    assert any("b_DQ: zero point 'b_zp' is int32" in m for m in messages)
    assert any("b_DQ: dequantizes 'b_q' of type INT32; TensorRT dequantizes INT8" in m for m in messages)
    assert any("quantized constant 'b_q' feeds Conv 'conv' (input 2)" in m for m in messages)
    contrib = _messages(_graph(q_domain="com.microsoft"))
    assert len(contrib) == 2 and all("domain 'com.microsoft'" in m for m in contrib)


def test_quantized_constants_feed_linear_layers_only():
    """An int8 constant dequantized into a BatchNormalization (what ONNX Runtime's QDQ quantizer
    makes of an unfolded BatchNorm) is refused; the export keeps BatchNorm FP32 for TensorRT."""
    extra = [numpy_helper.from_array(np.ones(2, np.float32), "bn_b"),
             numpy_helper.from_array(np.array([100, 90], np.int8), "bn_s_q"),
             numpy_helper.from_array(np.array(0.01, np.float32), "bn_s_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "bn_s_zp")]
    model = _graph(extra_inits=extra, extra_nodes=[
        helper.make_node("DequantizeLinear", ["bn_s_q", "bn_s_scale", "bn_s_zp"], ["bn_s"], name="bn_DQ"),
        helper.make_node("BatchNormalization", ["y", "bn_s", "bn_b", "bn_b", "bn_s"], ["z"], name="bn")])
    messages = _messages(model)
    assert len(messages) == 1
    assert "quantized constant 'bn_s_q' feeds BatchNormalization 'bn' (input 1, 4)" in messages[0]


def test_a_graph_without_qdq_is_not_an_int8_graph():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    report = check_qdq_model(helper.make_model(graph))
    assert not report.ok and "no QuantizeLinear/DequantizeLinear" in report.summary()
