"""explicit_gemm_transpose: ``Gemm(A, B, transA=1)`` on an activation reads ``Transpose(A)``."""

from __future__ import annotations

import numpy as np
from graph_helpers import assert_same_function, op_types, parse

import onnxlrp

RNG = np.random.default_rng(4)
W = RNG.normal(size=(5, 3)).astype(np.float32)
C = RNG.normal(size=3).astype(np.float32)
X = RNG.normal(size=(2, 5)).astype(np.float32)


def model():
    """``y = 0.5 * relu(x) W + C`` with the Gemm reading ``relu(x)^T`` through ``transA=1``."""
    return parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 5] x) => (float[N, 3] y) {
            h = Relu(x)
            t = Transpose<perm = [1, 0]>(h)
            y = Gemm<transA = 1, alpha = 0.5>(t, W, C)
        }
        """,
        W=W,
        C=C,
    )


def test_transpose_is_made_explicit():
    result = assert_same_function(model(), x=X)
    gemm = next(n for n in result.graph if n.op_type == "Gemm")
    assert gemm.attributes.get_int("transA", 0) == 0
    assert op_types(result).count("Transpose") in (0, 2)  # the pair may cancel


def test_relevance_through_trans_a():
    """Epsilon LRP against a slow numpy rule."""
    h = np.maximum(X, 0).astype(np.float64)
    y = 0.5 * h @ W + C
    target = y.argmax(1)
    r_y = np.zeros_like(y)
    r_y[np.arange(2), target] = y[np.arange(2), target]
    z = y + 1e-6 * np.where(y >= 0, 1.0, -1.0)
    r_h = h * ((r_y / z) @ (0.5 * W).T)
    result = onnxlrp.Explainer(model(), "epsilon").explain(X)
    np.testing.assert_allclose(result.relevance, r_h, rtol=1e-5, atol=1e-7)
