"""fuse_hard_sigmoid: ``Clip(x + 3, 0, 6) * (1/6)`` -> HardSigmoid, ``x * that`` -> HardSwish."""

from __future__ import annotations

import numpy as np
from graph_helpers import assert_same_function, op_types, parse

RNG = np.random.default_rng(3)
X = (4 * RNG.normal(size=(2, 4, 3, 3))).astype(np.float32)  # values on both kinks
CONSTS = {
    "three": np.array(3.0, np.float32),
    "zero": np.array(0.0, np.float32),
    "six": np.array(6.0, np.float32),
    "sixth": np.array(1 / 6, np.float32),
}


def test_keras_hard_swish_is_fused():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 3, 3] x) => (float[N, 4, 3, 3] y) {
            a = Add(x, three)
            c = Clip(a, zero, six)
            h = Mul(c, sixth)
            y = Mul(x, h)
        }
        """,
        **CONSTS,
    )
    result = assert_same_function(model, x=X)
    assert op_types(result) == ["HardSwish"]


def test_hard_sigmoid_gate_is_fused():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 3, 3] x, float[N, 4, 3, 3] s) => (float[N, 4, 3, 3] y) {
            a = Add(x, three)
            c = Clip(a, zero, six)
            h = Div(c, six)
            y = Mul(s, h)
        }
        """,
        **CONSTS,
    )
    result = assert_same_function(model, x=X, s=X[::-1].copy())
    assert op_types(result) == ["HardSigmoid", "Mul"]


def test_clip_to_other_bounds_is_not_a_hard_sigmoid():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 3, 3] x) => (float[N, 4, 3, 3] y) {
            a = Add(x, three)
            c = Clip(a, zero, three)
            y = Mul(c, sixth)
        }
        """,
        **CONSTS,
    )
    result = assert_same_function(model, x=X)
    assert "HardSigmoid" not in op_types(result)
