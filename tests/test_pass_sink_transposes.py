"""sink_transposes: NHWC Transpose pairs around Convs vanish; written-out BatchNorm then folds."""

from __future__ import annotations

import numpy as np
from graph_helpers import assert_same_function, op_types, parse

RNG = np.random.default_rng(1)
X = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)  # NHWC
W1 = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
W2 = RNG.normal(size=(5, 4, 1, 1)).astype(np.float32)
S = RNG.uniform(0.5, 1.5, size=4).astype(np.float32)  # NHWC per-channel: along the last axis
T = RNG.normal(size=4).astype(np.float32)

NHWC = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6, 6, 3] x) => (float[N, 6, 6, 5] y) {
    xt = Transpose <perm = [0, 3, 1, 2]> (x)
    c = Conv <pads = [1, 1, 1, 1]> (xt, W1)
    ct = Transpose <perm = [0, 2, 3, 1]> (c)
    m = Mul(ct, S)
    a = Add(m, T)
    r = Relu(a)
    rt = Transpose <perm = [0, 3, 1, 2]> (r)
    c2 = Conv(rt, W2)
    y = Transpose <perm = [0, 2, 3, 1]> (c2)
}
"""


def test_transpose_pairs_cancel_and_the_batchnorm_folds():
    result = assert_same_function(parse(NHWC, W1=W1, W2=W2, S=S, T=T), x=X)
    # only the model's own layout changes remain, at its edges
    assert op_types(result) == ["Transpose", "Conv", "Relu", "Conv", "Transpose"]


def test_a_transpose_read_twice_stays():
    text = NHWC.replace(
        "y = Transpose <perm = [0, 2, 3, 1]> (c2)", "y = Transpose <perm = [0, 2, 3, 1]> (c2)\n z = Neg(ct)"
    ).replace("=> (float[N, 6, 6, 5] y)", "=> (float[N, 6, 6, 5] y, float[N, 6, 6, 4] z)")
    result = assert_same_function(parse(text, W1=W1, W2=W2, S=S, T=T), x=X)
    assert "Mul" in op_types(result)  # the BatchNorm cannot move next to its Conv


def test_composed_transposes_become_one():
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2, 3, 4] x) => (float[N, 3, 2, 4] y) {
            a = Transpose <perm = [0, 2, 3, 1]> (x)
            s = Sigmoid(a)
            y = Transpose <perm = [0, 1, 3, 2]> (s)
        }
        """
    )
    result = assert_same_function(model, x=RNG.normal(size=(2, 2, 3, 4)).astype(np.float32))
    assert op_types(result) == ["Sigmoid", "Transpose"]
