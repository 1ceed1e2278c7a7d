"""The compiled model as a plain ONNX file, the Explainer's API, and its error messages."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnxruntime as ort
import pytest

import onnxlrp
from onnxlrp.runtime import exact_float32

RNG = np.random.default_rng(1)


def small_cnn(extra: str = "", outputs: str = "float[N, 3] y") -> onnx.ModelProto:
    """x -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax, as parser text."""
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    small (float[N, 2, 6, 6] x) => ({outputs}) {{
        c = Conv <pads = [1, 1, 1, 1]> (x, W1, b1)
        r = Relu(c)
        p = GlobalAveragePool(r)
        f = Flatten(p)
        logits = Gemm(f, W2, b2)
        {extra}
        y = Softmax <axis = 1> (logits)
    }}
    """
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(RNG.normal(size=(4, 2, 3, 3)).astype(np.float32), "W1"),
            onnx.numpy_helper.from_array(RNG.normal(size=4).astype(np.float32), "b1"),
            onnx.numpy_helper.from_array(RNG.normal(size=(4, 3)).astype(np.float32), "W2"),
            onnx.numpy_helper.from_array(RNG.normal(size=3).astype(np.float32), "b2"),
        ]
    )
    return model


X = RNG.normal(size=(2, 2, 6, 6)).astype(np.float32)


def test_compiled_model_is_plain_onnx(tmp_path):
    """The saved file passes the full checker and runs in a bare onnxruntime session."""
    path = onnxlrp.compile(small_cnn(), composite="epsilon-plus-flat").save(tmp_path / "m.lrp.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["y", "logits", "lrp_target_used", "relevance:x"]
    feeds = {
        "x": X,
        "lrp_target": np.array([-1, 2], dtype=np.int64),
        "lrp_seed": np.zeros((2, 3), np.float32),
    }
    y, logits, target, relevance = session.run(None, feeds)
    np.testing.assert_array_equal(target, [logits[0].argmax(), 2])
    assert relevance.shape == X.shape
    np.testing.assert_allclose(y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("final", ["Softmax", "LogSoftmax"])
def test_softmax_is_stripped_and_said(final):
    model = small_cnn()
    next(n for n in model.graph.node if n.op_type == "Softmax").op_type = final
    result = onnxlrp.Explainer(model, "epsilon").explain(X)
    assert result.explained == "logits"
    assert re.fullmatch(rf"explained from the input of the final {final} \('[^']*'\)", result.note)
    np.testing.assert_array_equal(result.target, result.output.argmax(1))


def test_seed_replaces_the_one_hot_start():
    ex = onnxlrp.Explainer(small_cnn(), "epsilon", epsilon=0.0)
    by_target = ex.explain(X, target=1)
    seed = np.zeros((2, 3), np.float32)
    seed[:, 1] = by_target.output[:, 1]
    by_seed = ex.explain(X, seed=seed)
    np.testing.assert_allclose(by_seed.relevance, by_target.relevance, rtol=1e-6)
    np.testing.assert_array_equal(by_seed.target, [-2, -2])


def test_layers_give_relevance_per_tensor():
    result = onnxlrp.Explainer(small_cnn(), "epsilon", layers=True).explain(X, target=0)
    assert {"logits", "r", "c", "f"} <= set(result.layers)
    for name in ("logits", "f"):  # the Gemm's epsilon rule loses only the bias' share
        assert result.layers[name].shape[0] == 2


def test_providers_are_visible_and_overridable():
    ex = onnxlrp.Explainer(small_cnn(), "epsilon", providers=["CPUExecutionProvider"])
    assert ex.providers == ["CPUExecutionProvider"]


def test_providers_with_options():
    """A ``(name, options)`` pair is taken as onnxruntime takes it, and still counts as the CPU
    provider: the CPU graph routes non-overlapping MaxPool windows through MaxUnpool."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    pooled (float[N, 2, 4, 4] x) => (float[N, 3] y) {
        p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (x)
        f = Flatten(p)
        y = Gemm(f, W, b)
    }
    """
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(RNG.normal(size=(8, 3)).astype(np.float32), "W"),
            onnx.numpy_helper.from_array(RNG.normal(size=3).astype(np.float32), "b"),
        ]
    )
    ex = onnxlrp.Explainer(model, "epsilon", providers=[("CPUExecutionProvider", {})])
    assert ex.providers == ["CPUExecutionProvider"]
    assert "MaxUnpool" in {n.op_type for n in ex.compiled.model.graph.node}


def test_cuda_computes_in_float32_unless_told_otherwise():
    """onnxruntime's CUDA provider defaults to TF32 for float32 convolutions and GEMMs; the
    Explainer's sessions turn it off where CUDA is named without options of its own."""
    assert exact_float32(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"use_tf32": "0"}),
        "CPUExecutionProvider",
    ]
    mine = ("CUDAExecutionProvider", {"use_tf32": "1", "device_id": "1"})
    assert exact_float32([mine]) == [mine]


def test_session_options_are_used(tmp_path):
    """Given options replace the defaults: here no graph optimization, and the optimized model
    that onnxruntime writes out then still has the compiled model's every node."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False
    options.optimized_model_filepath = str(tmp_path / "seen.onnx")
    ex = onnxlrp.Explainer(small_cnn(), "epsilon", session_options=options, threads=1)
    assert len(onnx.load(tmp_path / "seen.onnx").graph.node) == len(ex.compiled.model.graph.node)
    assert ex.explain(X, target=0).relevance.shape == X.shape


def test_not_onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(onnxlrp.ModelLoadError, match=r"model\.onnx: not an ONNX model"):
        onnxlrp.Explainer(path)


def test_missing_file(tmp_path):
    with pytest.raises(onnxlrp.ModelLoadError, match=r"nothere\.onnx: no such file"):
        onnxlrp.Explainer(tmp_path / "nothere.onnx")


def test_unknown_composite():
    with pytest.raises(
        onnxlrp.CompositeError, match="unknown composite 'epsilon-pluss'; choose one of: gradient"
    ):
        onnxlrp.Explainer(small_cnn(), "epsilon-pluss")


def test_gamma_box_needs_bounds():
    with pytest.raises(
        onnxlrp.CompositeError, match="'epsilon-gamma-box' needs the input bounds low and high"
    ):
        onnxlrp.compile(small_cnn(), "epsilon-gamma-box")


def test_unknown_rule_parameter():
    with pytest.raises(
        onnxlrp.CompositeError, match="composite 'epsilon' takes no parameter.s. gamma; it takes"
    ):
        onnxlrp.compile(small_cnn(), "epsilon", gamma=0.5)


def test_wrong_input_shape_and_dtype():
    ex = onnxlrp.Explainer(small_cnn(), "epsilon")
    with pytest.raises(
        onnxlrp.InputError, match=r"input 'x': expected shape \['N', 2, 6, 6\], got \[2, 2, 5, 6\]"
    ):
        ex.explain(X[:, :, :5])
    with pytest.raises(onnxlrp.InputError, match="input 'x': expected dtype float32, got float64"):
        ex.explain(X.astype(np.float64))


def test_target_out_of_range():
    ex = onnxlrp.Explainer(small_cnn(), "epsilon")
    with pytest.raises(
        onnxlrp.InputError, match=r"target 3 is out of range for output 'logits' with 3 classes"
    ):
        ex.explain(X, target=[0, 3])
    with pytest.raises(onnxlrp.InputError, match="target has 3 entries for a batch of 2"):
        ex.explain(X, target=[0, 1, 2])


def test_unsupported_ops_are_all_listed():
    model = small_cnn(extra="")
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    odd (float[N, 4] x) => (float[N, 4] y) {
        a = Sin(x)
        b = Cos(a)
        y = Div(b, a)
    }
    """
    model = onnx.parser.parse_model(text)
    with pytest.raises(onnxlrp.UnsupportedModelError) as info:
        onnxlrp.compile(model, "epsilon")
    message = str(info.value)
    assert "3 node(s) cannot be explained" in message
    assert "(Sin): op type Sin is not supported" in message
    assert "(Cos): op type Cos is not supported" in message
    assert "(Div): a quotient of two activations is not supported" in message


def test_unknown_output_name():
    with pytest.raises(onnxlrp.InputError, match="no output named 'probs'; the outputs are: y"):
        onnxlrp.compile(small_cnn(), "epsilon", output="probs")


def test_inspect_reports_rules():
    report = onnxlrp.inspect(small_cnn(), "epsilon-plus-flat")
    rows = {(n.op_type, n.rule) for n in report.nodes}
    assert ("Conv", "Flat(stabilizer=1e-06) [first layer]") in rows
    assert ("Gemm", "Epsilon(epsilon=1e-06)") in rows
    assert ("GlobalAveragePool", "Norm(epsilon=1e-06)") in rows
    assert not report.unsupported
