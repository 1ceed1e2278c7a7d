"""Ops that converters emit and torch exports rarely do, checked against torch autograd.

Under the ``gradient`` composite the relevance of the input is ``J^T seed`` (the vector-Jacobian
product of the explained output with the seed), so each op (Pad in reflect/edge mode and with
run-time pads, Resize nearest/linear and opset-9 Upsample, Tile, Clip with opset-6 attributes,
per-channel PRelu, Erf, Dropout with its mask output, Split heads, LRN) is compared with
``torch.autograd.grad`` of the same function written in torch. The LRP composites pass relevance
through activations and normalisations, which test_model_zoo / test_converters check against
Zennit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graph_helpers import parse

import onnxlrp

RNG = np.random.default_rng(4)
X = RNG.normal(size=(2, 3, 5, 6)).astype(np.float32)


def _relevance(model, x, composite="gradient"):
    explainer = onnxlrp.Explainer(model, composite, providers=["CPUExecutionProvider"])
    out_shape = [x.shape[0]] + [d if isinstance(d, int) else None for d in explainer.output_shape[1:]]
    probe = (
        explainer.explain(x, seed=np.zeros([s or 1 for s in out_shape], np.float32))
        if None in out_shape
        else None
    )
    shape = probe.output.shape if probe is not None else out_shape
    seed = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    result = explainer.explain(x, seed=seed)
    return result, seed


def _torch_vjp(fn, x, seed):
    xt = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    out = fn(xt)
    (grad,) = torch.autograd.grad(out, xt, torch.as_tensor(seed, dtype=torch.float64))
    return out.detach().numpy(), grad.numpy()


def _check(text, fn, x=X, **initializers):
    model = parse(text, **initializers)
    result, seed = _relevance(model, x)
    out, grad = _torch_vjp(fn, x, seed)
    np.testing.assert_allclose(result.output, out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.relevance, grad, rtol=1e-4, atol=1e-5)
    return result


HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
NEAREST = 'mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"'


@pytest.mark.parametrize("mode, torch_mode", [("reflect", "reflect"), ("edge", "replicate")])
def test_pad_modes(mode, torch_mode):
    text = (
        HEADER
        + f"""
    g (float[N, 3, 5, 6] x) => (float[N, 3, 8, 9] y) {{
        y = Pad <mode = "{mode}"> (x, pads)
    }}"""
    )
    # ONNX pads: begins then ends per axis; torch: (w_begin, w_end, h_begin, h_end)
    _check(text, lambda t: F.pad(t, (2, 1, 1, 2), mode=torch_mode), pads=np.array([0, 0, 1, 2, 0, 0, 2, 1]))


def test_pad_from_run_time_shape_arithmetic():
    """ "Same" padding computed from Shape/Gather/Div/Concat of a symbolic size, as converters write it."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, H, W] x) => (float[N, 3, H2, W2] y) {
        s = Shape(x)
        h = Gather <axis = 0> (s, two)
        q = Div(h, four)
        z = ConstantOfShape <value = int64[1] {0}> (three)
        pads = Concat <axis = 0> (z, q, q, z, q, zero1)
        y = Pad(x, pads)
    }"""
    consts = {
        "two": np.array(2, np.int64),
        "four": np.array([4], np.int64),
        "three": np.array([2], np.int64),
        "zero1": np.array([0], np.int64),
    }
    x = RNG.normal(size=(2, 3, 9, 6)).astype(np.float32)  # H = 9: pads 2 on H and W
    _check(text, lambda t: F.pad(t, (2, 0, 2, 2)), x=x, **consts)


def test_resize_nearest_and_linear_and_opset9_upsample():
    nearest = (
        HEADER
        + """
    g (float[N, 3, 5, 6] x) => (float[N, 3, 10, 12] y) {
        y = Resize <NEAREST> (x, , scales)
    }"""
    ).replace("NEAREST", NEAREST)
    scales = np.array([1, 1, 2, 2], np.float32)
    _check(nearest, lambda t: F.interpolate(t, scale_factor=2, mode="nearest"), scales=scales)
    linear = nearest.replace(NEAREST, 'mode = "linear"')
    _check(
        linear,
        lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False),
        scales=scales,
    )
    sizes = (
        HEADER
        + """
    g (float[2, 3, 5, 6] x) => (float[2, 3, 7, 4] y) {
        y = Resize <NEAREST> (x, , , sizes)
    }"""
    ).replace("NEAREST", NEAREST)
    _check(
        sizes, lambda t: F.interpolate(t, size=(7, 4), mode="nearest"), sizes=np.array([2, 3, 7, 4], np.int64)
    )
    upsample = """
    <ir_version: 4, opset_import: ["" : 9]>
    g (float[2, 3, 5, 6] x) => (float[2, 3, 10, 18] y) {
        y = Upsample <mode = "nearest"> (x, scales)
    }"""
    _check(
        upsample,
        lambda t: F.interpolate(t, scale_factor=(2, 3), mode="nearest"),
        scales=np.array([1, 1, 2, 3], np.float32),
    )


def test_tile():
    text = (
        HEADER
        + """
    g (float[N, 3, 5, 6] x) => (float[N, 3, 10, 18] y) {
        y = Tile(x, reps)
    }"""
    )
    _check(text, lambda t: t.repeat(1, 1, 2, 3), reps=np.array([1, 1, 2, 3], np.int64))


def test_clip_with_opset6_attributes_and_prelu_per_channel():
    clip = """
    <ir_version: 4, opset_import: ["" : 6]>
    g (float[2, 3, 5, 6] x) => (float[2, 3, 5, 6] y) {
        y = Clip <min = -0.5, max = 0.7> (x)
    }"""
    _check(clip, lambda t: torch.clamp(t, -0.5, 0.7))
    slope = RNG.uniform(0.05, 0.3, size=(3, 1, 1)).astype(np.float32)
    prelu = (
        HEADER
        + """
    g (float[N, 3, 5, 6] x) => (float[N, 3, 5, 6] y) {
        y = PRelu(x, slope)
    }"""
    )
    _check(prelu, lambda t: torch.where(t > 0, t, t * torch.as_tensor(slope, dtype=t.dtype)), slope=slope)


def test_erf():
    text = (
        HEADER
        + """
    g (float[N, 3, 5, 6] x) => (float[N, 3, 5, 6] y) {
        y = Erf(x)
    }"""
    )
    _check(text, torch.erf)


def test_dropout_with_mask_output_and_split_heads():
    text = (
        HEADER
        + """
    g (float[N, 3, 5, 6] x) => (float[N, 2, 5, 6] y, bool[N, 3, 5, 6] mask) {
        d, mask = Dropout(x, ratio)
        a, b = Split <axis = 1> (d, split)
        y = Mul(b, two)
    }"""
    )
    _check(
        text,
        lambda t: t[:, 1:] * 2,
        ratio=np.array(0.3, np.float32),
        split=np.array([1, 2], np.int64),
        two=np.array(2.0, np.float32),
    )


def test_lrn_gradient_with_the_normaliser_held_constant():
    """LRN's unit: ``y = x * g(x)`` with ``g`` treated as a constant (documented in ops.normalization)."""
    text = (
        HEADER
        + """
    g (float[N, 3, 5, 6] x) => (float[N, 3, 5, 6] y) {
        y = LRN <size = 3, alpha = 0.5, beta = 0.75, bias = 2.0> (x)
    }"""
    )
    model = parse(text)
    result, seed = _relevance(model, X)
    xt = torch.as_tensor(X, dtype=torch.float64)
    y = F.local_response_norm(xt, 3, alpha=0.5, beta=0.75, k=2.0).numpy()
    np.testing.assert_allclose(result.output, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.relevance, seed * y / X, rtol=1e-4, atol=1e-5)
    # LRP composites pass the relevance through it unchanged
    passed = onnxlrp.Explainer(model, "epsilon", providers=["CPUExecutionProvider"]).explain(X, seed=seed)
    np.testing.assert_allclose(passed.relevance, seed, rtol=1e-6)


def test_erf_derivative_constant():
    assert math.isclose(2 / math.sqrt(math.pi), 1.1283791670955126)


def test_opset9_sum_of_three_tensors():
    """The opset-9 ``Sum`` of several tensors (Caffe2 residuals): gradient, and the Norm rule's
    proportional split ``R_i = x_i / sum_j x_j * R`` under LRP composites."""
    text = """
    <ir_version: 4, opset_import: ["" : 9]>
    g (float[2, 3, 5, 6] x) => (float[2, 3, 5, 6] y) {
        a = Relu(x)
        b = Sigmoid(x)
        y = Sum(a, b, x)
    }"""
    _check(text, lambda t: torch.relu(t) + torch.sigmoid(t) + t)
    model = parse(text)
    seed = np.random.default_rng(9).normal(size=X.shape).astype(np.float32)
    result = onnxlrp.Explainer(model, "epsilon", providers=["CPUExecutionProvider"]).explain(X, seed=seed)
    a, b = np.maximum(X, 0), 1 / (1 + np.exp(-X))
    z = a + b + X
    share = seed / (z + 1e-6 * np.where(z >= 0, 1, -1))
    np.testing.assert_allclose(result.relevance, share * (a + b + X), rtol=1e-4, atol=1e-5)
