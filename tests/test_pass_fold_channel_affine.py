"""fold_channel_affine: per-channel Mul/Div/Add/Sub after Conv, Gemm or BatchNorm fold into it."""

from __future__ import annotations

import numpy as np
from graph_helpers import assert_same_function, op_types, parse

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 5, 5)).astype(np.float32)
W = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
B = RNG.normal(size=4).astype(np.float32)
C = RNG.uniform(0.5, 1.5, size=(4, 1, 1)).astype(np.float32)
D = RNG.normal(size=(1, 4, 1, 1)).astype(np.float32)


def test_written_out_batchnorm_after_conv_folds_into_it():
    """``(z - m) * s + t`` after a Conv: one Conv with scaled weight and shifted bias."""
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 5, 5] x) => (float[N, 4, 3, 3] y) {
            z = Conv(x, W, B)
            a = Sub(z, D)
            m = Mul(a, C)
            y = Add(m, D)
        }
        """,
        W=W,
        B=B,
        C=C,
        D=D,
    )
    result = assert_same_function(model, x=X)
    assert op_types(result) == ["Conv"]


def test_reversed_sub_and_div_fold():
    """``c - z`` negates the layer; ``z / c`` scales by ``1 / c``."""
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 5, 5] x) => (float[N, 4, 3, 3] y) {
            z = Conv(x, W)
            a = Sub(D, z)
            y = Div(a, C)
        }
        """,
        W=W,
        C=C,
        D=D,
    )
    result = assert_same_function(model, x=X)
    assert op_types(result) == ["Conv"]


def test_scale_layer_merges_into_an_unfolded_batchnorm():
    """Caffe2's BatchNorm + scale layer after a ReLU (pre-activation): one BatchNormalization."""
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 5, 5] x) => (float[N, 4, 3, 3] y) {
            z = Conv(x, W, B)
            r = Relu(z)
            n = BatchNormalization(r, S, T, M, V)
            m = Mul(n, C)
            y = Add(m, D)
        }
        """,
        W=W,
        B=B,
        C=C,
        D=D,
        S=RNG.uniform(0.5, 1.5, 4).astype(np.float32),
        T=RNG.normal(size=4).astype(np.float32),
        M=RNG.normal(size=4).astype(np.float32),
        V=RNG.uniform(0.5, 1.5, 4).astype(np.float32),
    )
    result = assert_same_function(model, x=X)
    assert op_types(result) == ["Conv", "Relu", "BatchNormalization"]


def test_gemm_with_beta_zero_and_a_separate_bias():
    """jax2onnx: ``Gemm(beta=0)`` then ``Add(bias)`` then a scale: one Gemm."""
    w = RNG.normal(size=(3, 4)).astype(np.float32)
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 4] y) {
            z = Gemm <beta = 0.0> (x, Wg, Cg)
            a = Add(z, Bg)
            y = Mul(a, Sg)
        }
        """,
        Wg=w,
        Cg=np.full(4, 100.0, np.float32),
        Bg=B,
        Sg=RNG.uniform(0.5, 1.5, 4).astype(np.float32),
    )
    result = assert_same_function(model, x=RNG.normal(size=(2, 3)).astype(np.float32))
    assert op_types(result) == ["Gemm"]


def test_no_fold_when_the_constant_varies_along_space_or_the_layer_output_is_shared():
    spatial = RNG.normal(size=(1, 1, 3, 3)).astype(np.float32)
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 5, 5] x) => (float[N, 4, 3, 3] y, float[N, 4, 3, 3] z2) {
            z = Conv(x, W, B)
            y = Mul(z, P)
            z2 = Add(z, D)
        }
        """,
        W=W,
        B=B,
        P=spatial,
        D=D,
    )
    result = assert_same_function(model, x=X)
    assert sorted(op_types(result)) == ["Add", "Conv", "Mul"]
