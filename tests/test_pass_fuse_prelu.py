"""fuse_prelu: tf2onnx's written-out PReLU ``Relu(x) + c * Relu(-x)`` becomes one PRelu."""

from __future__ import annotations

import numpy as np
from graph_helpers import assert_same_function, op_types, parse

RNG = np.random.default_rng(2)


def test_keras_prelu_is_fused():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 3, 3] x) => (float[N, 4, 3, 3] y) {
            p = Relu(x)
            n = Neg(x)
            q = Relu(n)
            m = Mul(q, C)
            y = Add(p, m)
        }
        """,
        C=-RNG.uniform(0.05, 0.3, size=(4, 1, 1)).astype(np.float32),
    )
    result = assert_same_function(model, x=RNG.normal(size=(2, 4, 3, 3)).astype(np.float32))
    assert op_types(result) == ["PRelu"]


def test_sub_form_is_fused():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            p = Relu(x)
            n = Neg(x)
            q = Relu(n)
            m = Mul(A, q)
            y = Sub(p, m)
        }
        """,
        A=np.array([0.1], np.float32),
    )
    result = assert_same_function(model, x=RNG.normal(size=(3, 4)).astype(np.float32))
    assert op_types(result) == ["PRelu"]


def test_other_sums_of_relus_are_left_alone():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, float[N, 4] z) => (float[N, 4] y) {
            p = Relu(x)
            n = Neg(z)
            q = Relu(n)
            m = Mul(q, A)
            y = Add(p, m)
        }
        """,
        A=np.array([-0.1], np.float32),
    )
    feeds = {k: RNG.normal(size=(3, 4)).astype(np.float32) for k in ("x", "z")}
    result = assert_same_function(model, **feeds)
    assert "PRelu" not in op_types(result)
