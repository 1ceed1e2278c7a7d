"""Invariance: one network written in the styles converters use gives the same relevance.

The reference style is a clean torch-like export (initializers, BatchNormalization, Flatten,
Gemm with transB=1). Each variant rewrites one aspect as some converter does:

- weights in ``Constant`` nodes behind ``Identity`` chains (paddle2onnx);
- initializers also listed as graph inputs (IR version 3, the old model zoo);
- BatchNorm written out as ``Sub``/``Mul``/``Add`` by constants (tf2onnx, hand-folded statistics),
  and as ``Mul``/``Add`` only;
- a Conv without bias followed by a separate bias ``Add``;
- Flatten as ``Shape``/``Gather``/``Concat``/``Reshape`` arithmetic;
- the dense layer as ``MatMul`` + ``Add``, and as ``Gemm`` with alpha/beta or with transA on a
  transposed input;
- the Conv's padding as ``auto_pad = SAME_UPPER``;
- NCHW vs NHWC input with Transposes around every Conv (Keras through tf2onnx without its
  optimizer, onnx2torch round trips): the relevance comes back in NHWC, equal to the NCHW one
  transposed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graph_helpers import parse
from reference import rel_err

import onnxlrp

RNG = np.random.default_rng(8)
W1 = RNG.normal(0, 0.4, size=(6, 3, 3, 3)).astype(np.float32)
B1 = RNG.normal(0, 0.1, size=6).astype(np.float32)
GAMMA = RNG.uniform(0.5, 1.5, 6).astype(np.float32)
BETA = RNG.normal(0, 0.1, 6).astype(np.float32)
MEAN = RNG.normal(0, 0.1, 6).astype(np.float32)
VAR = RNG.uniform(0.5, 1.5, 6).astype(np.float32)
EPS = 1e-5
WD = RNG.normal(0, 0.3, size=(5, 6 * 4 * 4)).astype(np.float32)  # (out, in): Gemm transB=1
BD = RNG.normal(0, 0.1, size=5).astype(np.float32)
X = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
SCALE = (GAMMA / np.sqrt(VAR + EPS)).astype(np.float32)
SHIFT = (BETA - MEAN * SCALE).astype(np.float32)

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'
CLEAN = (
    HEAD
    + """
net (float[N, 3, 8, 8] x) => (float[N, 5] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    n = BatchNormalization <epsilon = 1e-5> (c, GAMMA, BETA, MEAN, VAR)
    r = Relu(n)
    p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
    f = Flatten(p)
    y = Gemm <transB = 1> (f, WD, BD)
}
"""
)
WEIGHTS = {"W1": W1, "B1": B1, "GAMMA": GAMMA, "BETA": BETA, "MEAN": MEAN, "VAR": VAR, "WD": WD, "BD": BD}


def _constant_weights() -> onnx.ModelProto:
    model = parse(CLEAN, **WEIGHTS)
    nodes = []
    for init in model.graph.initializer:
        nodes.append(onnx.helper.make_node("Constant", [], [init.name + "_c"], value=init))
        nodes.append(onnx.helper.make_node("Identity", [init.name + "_c"], [init.name + "_i"]))
        nodes.append(onnx.helper.make_node("Identity", [init.name + "_i"], [init.name]))
    del model.graph.initializer[:]
    old = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + old)
    return model


def _initializers_as_inputs() -> onnx.ModelProto:
    model = parse(CLEAN, **WEIGHTS)
    for init in model.graph.initializer:
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )
    model.ir_version = 3
    return model


def _variant(name: str) -> onnx.ModelProto:
    per_channel = {k: v.reshape(1, 6, 1, 1) for k, v in {"M": MEAN, "S": SCALE, "T": SHIFT}.items()}
    if name == "clean":
        return parse(CLEAN, **WEIGHTS)
    if name == "constant_weights":
        return _constant_weights()
    if name == "initializers_as_inputs":
        return _initializers_as_inputs()
    if name == "split_batchnorm_sub_mul_add":
        text = CLEAN.replace(
            "n = BatchNormalization <epsilon = 1e-5> (c, GAMMA, BETA, MEAN, VAR)",
            "d = Sub(c, M)\n m = Mul(d, G)\n n = Add(m, BETA4)",
        )
        g = (GAMMA / np.sqrt(VAR + EPS)).reshape(1, 6, 1, 1).astype(np.float32)
        return parse(
            text, W1=W1, B1=B1, M=per_channel["M"], G=g, BETA4=BETA.reshape(1, 6, 1, 1), WD=WD, BD=BD
        )
    if name == "split_batchnorm_mul_add_and_bias_add":
        text = CLEAN.replace(
            "c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)",
            "c0 = Conv <pads = [1, 1, 1, 1]> (x, W1)\n c = Add(c0, B1)",
        )
        text = text.replace(
            "n = BatchNormalization <epsilon = 1e-5> (c, GAMMA, BETA, MEAN, VAR)",
            "m = Mul(c, S)\n n = Add(m, T)",
        )
        return parse(
            text, W1=W1, B1=B1.reshape(6, 1, 1), S=per_channel["S"], T=per_channel["T"], WD=WD, BD=BD
        )
    if name == "flatten_as_shape_arithmetic":
        text = CLEAN.replace(
            "f = Flatten(p)",
            "s = Shape(p)\n b = Gather <axis = 0> (s, zero)\n bu = Unsqueeze(b, zero1)\n"
            " shp = Concat <axis = 0> (bu, minus1)\n f = Reshape(p, shp)",
        )
        extra = {
            "zero": np.array(0, np.int64),
            "zero1": np.array([0], np.int64),
            "minus1": np.array([-1], np.int64),
        }
        return parse(text, **WEIGHTS, **extra)
    if name == "matmul_add":
        text = CLEAN.replace("y = Gemm <transB = 1> (f, WD, BD)", "z = MatMul(f, WDT)\n y = Add(z, BD)")
        return parse(text, **{**WEIGHTS, "WDT": np.ascontiguousarray(WD.T)})
    if name == "gemm_alpha_beta":
        text = CLEAN.replace(
            "y = Gemm <transB = 1> (f, WD, BD)",
            "y = Gemm <transB = 1, alpha = 2.0, beta = 0.5> (f, WD2, BD2)",
        )
        return parse(text, **{**WEIGHTS, "WD2": WD / 2, "BD2": BD * 2})
    if name == "auto_pad":  # tf2onnx writes "same" padding as auto_pad
        text = CLEAN.replace(
            "c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)", 'c = Conv <auto_pad = "SAME_UPPER"> (x, W1, B1)'
        )
        return parse(text, **WEIGHTS)
    if name == "gemm_trans_a":
        text = CLEAN.replace(
            "y = Gemm <transB = 1> (f, WD, BD)",
            "ft = Transpose <perm = [1, 0]> (f)\n y = Gemm <transA = 1, transB = 1> (ft, WD, BD)",
        )
        return parse(text, **WEIGHTS)
    raise KeyError(name)


VARIANTS = (
    "constant_weights",
    "initializers_as_inputs",
    "split_batchnorm_sub_mul_add",
    "split_batchnorm_mul_add_and_bias_add",
    "flatten_as_shape_arithmetic",
    "matmul_add",
    "gemm_alpha_beta",
    "gemm_trans_a",
    "auto_pad",
)
COMPOSITES = ("epsilon", "epsilon-plus-flat", "epsilon-gamma-box")


def _explain(model, composite, x=X):
    params = {"low": -4.0, "high": 4.0} if composite == "epsilon-gamma-box" else {}
    return onnxlrp.Explainer(model, composite, providers=["CPUExecutionProvider"], **params).explain(
        x, target=3
    )


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_network_same_relevance(variant, composite):
    expected = _explain(_variant("clean"), composite)
    got = _explain(_variant(variant), composite)
    np.testing.assert_allclose(got.output, expected.output, rtol=1e-5, atol=1e-5)
    assert rel_err(got.relevance, expected.relevance) < 1e-5


@pytest.mark.parametrize("composite", COMPOSITES)
def test_nhwc_with_transposes_equals_nchw(composite):
    text = (
        HEAD
        + """
net (float[N, 8, 8, 3] x) => (float[N, 5] y) {
    xt = Transpose <perm = [0, 3, 1, 2]> (x)
    c0 = Conv <pads = [1, 1, 1, 1]> (xt, W1)
    c = Transpose <perm = [0, 2, 3, 1]> (c0)
    b = Add(c, B1)
    m = Mul(b, S)
    n = Add(m, T)
    r = Relu(n)
    rt = Transpose <perm = [0, 3, 1, 2]> (r)
    p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (rt)
    f = Flatten(p)
    y = Gemm <transB = 1> (f, WD, BD)
}
"""
    )
    nhwc = parse(text, W1=W1, B1=B1, S=SCALE, T=SHIFT, WD=WD, BD=BD)
    expected = _explain(_variant("clean"), composite)
    got = _explain(nhwc, composite, x=np.ascontiguousarray(X.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got.output, expected.output, rtol=1e-5, atol=1e-5)
    assert got.relevance.shape == (2, 8, 8, 3)
    assert rel_err(got.relevance.transpose(0, 3, 1, 2), expected.relevance) < 1e-5


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_average_pool_auto_pad_equals_explicit_pads(mode):
    """AveragePool 3x3 stride 2 on 8x8: SAME pads 1 in total per axis, at the end (UPPER) or the
    beginning (LOWER); the relevance equals that of the explicit pads."""
    pads = "[0, 0, 1, 1]" if mode == "SAME_UPPER" else "[1, 1, 0, 0]"

    def net(pool: str) -> onnx.ModelProto:
        text = (
            HEAD
            + f"""
net (float[N, 3, 8, 8] x) => (float[N, 5] y) {{
    c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    r = Relu(c)
    p = AveragePool <kernel_shape = [3, 3], strides = [2, 2], {pool}> (r)
    f = Flatten(p)
    y = Gemm <transB = 1> (f, WD, BD)
}}
"""
        )
        return parse(text, W1=W1, B1=B1, WD=WD, BD=BD)

    for composite in COMPOSITES:
        expected = _explain(net(f"pads = {pads}"), composite)
        got = _explain(net(f'auto_pad = "{mode}"'), composite)
        np.testing.assert_allclose(got.output, expected.output, rtol=1e-6)
        assert rel_err(got.relevance, expected.relevance) < 1e-6
