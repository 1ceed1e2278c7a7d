"""Multiplicative gates (squeeze-and-excitation, spatial attention): the gate is a constant and the
relevance of the product flows to the signal only (``onnxlrp.ops.gates``)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from graph_helpers import canonical, parse

import onnxlrp
from onnxlrp.ops.gates import gate_of

RNG = np.random.default_rng(6)
C = 4
WEIGHTS = {
    "W1": RNG.normal(0, 0.5, size=(C, 3, 3, 3)).astype(np.float32),
    "Wa": RNG.normal(0, 0.5, size=(2, C, 1, 1)).astype(np.float32),
    "Wb": RNG.normal(0, 0.5, size=(C, 2, 1, 1)).astype(np.float32),
    "W2": RNG.normal(0, 0.5, size=(C, C, 3, 3)).astype(np.float32),
    "Wf": RNG.normal(0, 0.5, size=(C, 5)).astype(np.float32),
    "shape": np.array([-1, C, 1, 1], np.int64),
}
SE = """
<ir_version: 8, opset_import: ["" : 17]>
se (float[N, 3, 8, 8] x) => (float[N, 5] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W1)
    a = Relu(c)
    p = GlobalAveragePool(a)
    f = Flatten(p)
    s = Reshape(f, shape)
    h = Conv(s, Wa)
    hr = Relu(h)
    g = Conv(hr, Wb)
    gate = GATE(g)
    m = Mul(a, gate)
    c2 = Conv <pads = [1, 1, 1, 1]> (m, W2)
    r2 = Relu(c2)
    p2 = GlobalAveragePool(r2)
    f2 = Flatten(p2)
    y = MatMul(f2, Wf)
}
"""
X = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)


def _mul(model: ir.Model) -> ir.Node:
    return next(n for n in model.graph if n.op_type == "Mul")


@pytest.mark.parametrize("gate", ["Sigmoid", "HardSigmoid"])
def test_se_gate_passes_relevance_to_the_signal_only(gate):
    model = parse(SE.replace("GATE", gate), **WEIGHTS)
    explainer = onnxlrp.Explainer(model, "epsilon", layers=True, providers=["CPUExecutionProvider"])
    result = explainer.explain(X, target=2)
    # bias-free layers, gates as constants: the epsilon rule conserves the explained logit
    np.testing.assert_allclose(result.relevance.sum(axis=(1, 2, 3)), result.output[:, 2], rtol=1e-4)
    np.testing.assert_allclose(result.layers["a"], result.layers["m"], rtol=1e-6)  # signal gets it all
    assert "gate" not in result.layers and "g" not in result.layers  # the gate branch gets none


def test_gate_criterion():
    se = canonical(parse(SE.replace("GATE", "Sigmoid"), **WEIGHTS))
    assert gate_of(_mul(se)) == (0, 1)
    silu = canonical(
        parse(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[N, 4] x) => (float[N, 4] y) {
                s = Sigmoid(x)
                y = Mul(x, s)
            }
            """
        )
    )
    assert gate_of(_mul(silu)) is None  # x * sigmoid(x) is SiLU, an activation, not a gate
    both = canonical(
        parse(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[N, 4] x, float[N, 4] z) => (float[N, 4] y) {
                s = Sigmoid(x)
                t = Sigmoid(z)
                y = Mul(s, t)
            }
            """
        )
    )
    assert gate_of(_mul(both)) is None  # which one is the signal? not a gate pattern
    relu6 = canonical(
        parse(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[N, 4, 3, 3] x, float[N, 1, 3, 3] z) => (float[N, 4, 3, 3] y) {
                c = Clip(z, zero, six)
                h = Div(c, six)
                y = Mul(x, h)
            }
            """,
            zero=np.array(0.0, np.float32),
            six=np.array(6.0, np.float32),
        )
    )
    assert gate_of(_mul(relu6)) == (0, 1)  # a spatial hard-sigmoid gate broadcast over channels
    bigger = canonical(
        parse(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[N, 1, 3, 3] x, float[N, 4, 3, 3] z) => (float[N, 4, 3, 3] y) {
                s = Sigmoid(z)
                y = Mul(x, s)
            }
            """
        )
    )
    assert gate_of(_mul(bigger)) is None  # the gate must not broadcast the signal
