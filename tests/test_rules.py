"""Each LRP rule against a slow, explicit re-implementation in numpy (float64).

The graphs are tiny, written in ``onnx.parser`` text: ``x -> [Relu] -> Gemm(W, b) -> y``. The
reference builds the contribution matrix ``x_j * w'_jk`` entry by entry from the rule's formula
(Zennit 0.5.1's definitions), so no code is shared with the compiler.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest

import onnxlrp
from onnxlrp import rules

IN, OUT, BATCH = 5, 4, 3
RNG = np.random.default_rng(0)
W = RNG.normal(size=(IN, OUT)).astype(np.float32)
B = RNG.normal(size=OUT).astype(np.float32)
X = RNG.normal(size=(BATCH, IN)).astype(np.float32)
TARGET = [0, 2, 3]


def dense_model(relu_first: bool) -> onnx.ModelProto:
    first = "h = Relu(x)" if relu_first else "h = Identity(x)"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    dense (float[N, {IN}] x) => (float[N, {OUT}] y) {{
        {first}
        y = Gemm(h, W, b)
    }}
    """
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(
        [onnx.numpy_helper.from_array(W, "W"), onnx.numpy_helper.from_array(B, "b")]
    )
    return model


def stab(z, eps=1e-6):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def contributions(x, w):
    """c[n, j, k] = x[n, j] * w[j, k], the explicit (input x output) contribution tensor."""
    return x[:, :, None] * w[None, :, :]


def reference(rule: str, x, w, b, r_out):
    x, w, b, r = (np.asarray(a, dtype=np.float64) for a in (x, w, b, r_out))
    wp, wn, bp, bn = np.maximum(w, 0), np.minimum(w, 0), np.maximum(b, 0), np.minimum(b, 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    if rule == "epsilon":
        c = contributions(x, w)
        z = c.sum(1) + b
        return (c * (r / stab(z))[:, None, :]).sum(2)
    if rule == "zplus":
        c = contributions(xp, wp) + contributions(xn, wn)
        z = c.sum(1) + bp
        return (c * (r / stab(z))[:, None, :]).sum(2)
    if rule == "alpha2beta1":
        cp = contributions(xp, wp) + contributions(xn, wn)
        cn = contributions(xp, wn) + contributions(xn, wp)
        rp = (cp * (r / stab(cp.sum(1) + bp))[:, None, :]).sum(2)
        rn = (cn * (r / stab(cn.sum(1) + bn))[:, None, :]).sum(2)
        return 2 * rp - rn
    if rule == "gamma":
        g = 0.25
        z = x @ w + b
        w1, w2 = w + g * wp, w + g * wn
        cp = contributions(xp, w1) + contributions(xn, w2)
        cn = contributions(xp, w2) + contributions(xn, w1)
        rp = (cp * ((z > 0) * r / stab(cp.sum(1) + b + g * bp))[:, None, :]).sum(2)
        rn = (cn * ((z < 0) * r / stab(cn.sum(1) + b + g * bn))[:, None, :]).sum(2)
        return rp + rn
    if rule == "zbox":
        low, high = -2.0, 2.0
        c = (
            contributions(x, w)
            - contributions(np.full_like(x, low), wp)
            - contributions(np.full_like(x, high), wn)
        )
        z = c.sum(1) + b - bp - bn
        return (c * (r / stab(z))[:, None, :]).sum(2)
    if rule == "flat":
        c = contributions(np.ones_like(x), np.ones_like(w))
        return (c * (r / stab(c.sum(1)))[:, None, :]).sum(2)
    if rule == "wsquare":
        c = contributions(np.ones_like(x), w**2)
        return (c * (r / stab(c.sum(1) + b**2))[:, None, :]).sum(2)
    raise ValueError(rule)


RULES = {
    "epsilon": rules.Epsilon(1e-6),
    "zplus": rules.ZPlus(),
    "alpha2beta1": rules.AlphaBeta(2.0, 1.0),
    "gamma": rules.Gamma(0.25),
    "zbox": rules.ZBox(-2.0, 2.0),
    "flat": rules.Flat(),
    "wsquare": rules.WSquare(),
}


@pytest.mark.parametrize("relu_first", [False, True], ids=["signed-input", "nonnegative-input"])
@pytest.mark.parametrize("name", list(RULES))
def test_rule_matches_slow_reference(name, relu_first):
    composite = onnxlrp.Composite({"Gemm": RULES[name], "Relu": rules.Pass()})
    result = onnxlrp.Explainer(dense_model(relu_first), composite).explain(X, target=TARGET)
    h = np.maximum(X, 0) if relu_first else X
    y = h.astype(np.float64) @ W + B
    r_out = np.eye(OUT)[TARGET] * y
    expected = reference(name, h, W, B, r_out)
    np.testing.assert_allclose(result.relevance, expected, rtol=2e-5, atol=1e-6)


def test_gradient_is_the_seeded_gradient():
    """The gradient composite returns the gradient of ``seed . y`` (seed = one_hot * y, as Zennit's
    attributor is called): for x -> Relu -> Gemm that is ``y_t * W[:, t] * (x > 0)``."""
    result = onnxlrp.Explainer(dense_model(True), "gradient").explain(X, target=TARGET)
    y_t = (np.maximum(X, 0) @ W + B)[np.arange(BATCH), TARGET]
    expected = y_t[:, None] * W[:, TARGET].T * (X > 0)
    np.testing.assert_allclose(result.relevance, expected, rtol=1e-6)


def test_epsilon_conserves_without_bias():
    """LRP-0 with no bias: the input relevance sums to the target logit."""
    global B
    saved, B = B, np.zeros_like(B)
    try:
        result = onnxlrp.Explainer(dense_model(False), "epsilon", epsilon=0.0).explain(X, target=TARGET)
    finally:
        B = saved
    logits = X @ W
    np.testing.assert_allclose(result.relevance.sum(1), logits[np.arange(BATCH), TARGET], rtol=1e-5)


def test_alpha_beta_checks_its_parameters():
    with pytest.raises(onnxlrp.CompositeError, match="alpha - beta = 1"):
        rules.AlphaBeta(alpha=1.0, beta=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("epsilon", [1e-6, 0.25, 3.0])
def test_stabilizer_is_zennits_bit_for_bit(dtype, epsilon):
    """``stabilize`` (arithmetic in place of ``Where`` where exact) against Zennit's formula
    ``z + ((z == 0) + sign(z)) * epsilon``, over zeros, the smallest normals and wide magnitudes."""
    import onnx_ir as ir
    import onnxruntime as ort

    from onnxlrp.builder import Builder

    z = ir.Value(
        name="z", shape=ir.Shape([None]), type=ir.TensorType(ir.DataType.from_numpy(np.dtype(dtype)))
    )
    graph = ir.Graph([z], [], nodes=[], opset_imports={"": 17})
    y = rules.stabilize(Builder(graph), z, epsilon)
    y.name = "y"
    graph.outputs.append(y)
    model = ir.serde.serialize_model(ir.Model(graph, ir_version=8))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    info = np.finfo(dtype)
    magnitudes = 10.0 ** RNG.uniform(np.log10(float(info.tiny)), np.log10(float(info.max)), 2000)
    values = np.concatenate(
        [magnitudes, -magnitudes, [0.0, -0.0, info.tiny, -info.tiny, info.max, -info.max]]
    )
    values = values.astype(dtype)
    expected = values + ((values == 0).astype(dtype) + np.sign(values)) * dtype(epsilon)
    np.testing.assert_array_equal(session.run(None, {"z": values})[0], expected)
