"""Graphs written by real converters (committed fixtures, see tools/make_converter_fixtures.py).

``tests/fixtures/converters/`` holds tiny models with seeded random weights, converted by real
converters: Keras 3 through tf2onnx (NHWC inputs), each twice: with tf2onnx's optimizers
(Transposes pushed to the input, BatchNorm as Mul/Add after the Conv) and without
(``*_unoptimized``: every Conv in its NHWC <-> NCHW Transpose pair, BatchNorm, PReLU, hard swish and
hard sigmoid written out as elementwise ops, Flatten as Reshape); a JAX function through jax2onnx
(NHWC convolutions between Transposes, Gemm with ``beta = 0`` and separate bias Adds, GELU written
out with Erf); a PaddlePaddle network through paddle2onnx (Conv + separate bias Add, BatchNorm
nodes, Identity chains, hard swish as ``x * HardSigmoid(x)``, an SE block with a HardSigmoid gate,
Flatten as Shape/Slice/Concat/Reshape). Each file but the ``_unoptimized`` ones has a reference
computed by Zennit on its onnx2torch conversion (``tests/onnx_reference.py``): relevance in
float64 and Zennit's own float32 error ``e32``.

- agreement: onnxlrp's relevance is within ``max(6 * e32, 1e-5)`` of the reference, for every
  output (a softmax face probability, a box regression, a per-pixel NHWC mask), and for a region
  seed on the per-pixel output (``Explainer.explain_region``);
- invariance: the unoptimized file (another graph style of the same network) gives the same
  relevance as the optimized one;
- the relevance comes back in the input's layout (NHWC for Keras/JAX) and the forward outputs
  match the source framework's (saved at conversion).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from reference import rel_err

import onnxlrp

FIXTURES = Path(__file__).parent / "fixtures" / "converters"
MODELS = sorted(p.stem for p in FIXTURES.glob("*.onnx") if not p.stem.endswith("_unoptimized"))
COMPOSITES = ("epsilon", "epsilon-plus-flat")
FACTOR, FLOOR = 6.0, 1e-5  # keras_se's epsilon case is at 5 e32
REGION_CHANNEL = 1  # as in tools/make_converter_fixtures.py


def _region_mask(size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[4:12, 4:12] = 1.0
    return mask


def _cases():
    for name in MODELS:
        ref = np.load(FIXTURES / f"{name}.npz")
        for key in ref.files:
            if key.startswith("relevance|"):
                _, output, composite, *region = key.split("|")
                yield pytest.param(
                    name, output, composite, bool(region), id=key[len("relevance|") :] + f"-{name}"
                )


@pytest.fixture(scope="module")
def explainers():
    cache = {}

    def get(path, composite, output):
        key = (path, composite, output)
        if key not in cache:
            cache[key] = onnxlrp.Explainer(
                str(path), composite, output=output, providers=["CPUExecutionProvider"]
            )
        return cache[key]

    return get


def test_the_corpus_is_there():
    assert {"keras_cnn", "keras_se", "keras_heads", "jax_cnn", "paddle_cnn"} <= set(MODELS)


@pytest.mark.parametrize("name, output, composite, region", list(_cases()))
def test_matches_zennit_on_onnx2torch(name, output, composite, region, explainers):
    ref = np.load(FIXTURES / f"{name}.npz")
    x = ref["x"]
    key = f"{output}|{composite}" + ("|region" if region else "")
    explainer = explainers(FIXTURES / f"{name}.onnx", composite, output)
    if region:
        result = explainer.explain_region(x, REGION_CHANNEL, _region_mask(x.shape[1]), axis=-1)
    else:
        result = explainer.explain(x, target=ref[f"target|{key}"])
    assert result.relevance.shape == x.shape  # in the input's layout (NHWC in, NHWC out)
    tol = max(FACTOR * float(ref[f"e32|{key}"]), FLOOR)
    err = rel_err(result.relevance, ref[f"relevance|{key}"])
    assert err <= tol, f"{name} {key}: relative error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name", MODELS)
def test_graph_styles_give_the_same_relevance(name, explainers):
    """NHWC Transpose pairs, written-out BatchNorm/PReLU/hard-swish vs tf2onnx's optimized graph."""
    unoptimized = FIXTURES / f"{name}_unoptimized.onnx"
    if not unoptimized.exists():
        pytest.skip("no second graph style for this model")
    ref = np.load(FIXTURES / f"{name}.npz")
    x = ref["x"]
    outputs = [o.name for o in onnx.load(str(FIXTURES / f"{name}.onnx")).graph.output]
    for output in outputs:
        for composite in COMPOSITES:
            a = explainers(FIXTURES / f"{name}.onnx", composite, output).explain(x, target=0)
            b = explainers(unoptimized, composite, output).explain(x, target=0)
            np.testing.assert_allclose(b.output, a.output, rtol=1e-5, atol=1e-6)
            tol = max(FACTOR * float(ref[f"e32|{output}|{composite}"]), FLOOR)  # float32 noise
            assert rel_err(b.relevance, a.relevance) <= tol, (output, composite)


@pytest.mark.parametrize("name", MODELS)
def test_forward_matches_the_source_framework(name):
    """The converted file computes what Keras/JAX computed (outputs saved at conversion)."""
    saved = np.load(FIXTURES / f"{name}.keras_out.npz")
    x = saved["x"]
    session = ort.InferenceSession(str(FIXTURES / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    values = session.run(None, {session.get_inputs()[0].name: x})
    keys = [k for k in saved.files if k != "x"]
    expected = [saved[k] for k in sorted(keys, key=lambda k: int(k[4:]) if k.startswith("arr_") else 0)]
    for got, want in zip(values, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
