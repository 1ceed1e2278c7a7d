"""onnxlrp vs Zennit 0.5.1 on the model zoo, for all torch ONNX export flavours and composites.

Tolerance rule
--------------
onnxlrp computes in float32, the reference is Zennit in float64.  For every case we also run
Zennit in float32 and take its own error ``e32 = ||zennit_f32 - zennit_f64|| / ||zennit_f64||``
as the scale of what float32 arithmetic alone costs on that model/composite/input.  onnxlrp's
relevance ``R`` must satisfy

    ||R - zennit_f64|| / ||zennit_f64||  <=  max(3 * e32, 1e-5).

(The floor keeps cases where Zennit's float32 happens to be almost exact from being stricter than
float32 accumulation-order noise.)
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
from reference import COMPOSITES, rel_err, zennit_explain
from zoo import CONSERVATION_ZOO, EXPORTERS, ZOO, export_as

FLOOR = 1e-5
FACTOR = 3.0

# per-channel ZBox bounds (shape (1, C, 1, 1)) for these 3-channel image models, scalars elsewhere
PER_CHANNEL_BOX = {"vgg", "resnet", "densenet"}
TARGETS = (None, 3, [1, 7])  # cycled over the composites: top-1, one class, per-sample classes


@functools.cache
def build(name: str):
    """(model, x as float32 numpy, torch output as numpy); built once per session."""
    model, x = {**ZOO, **CONSERVATION_ZOO}[name]()
    with torch.no_grad():
        y = model(x).numpy()
    return model, x.numpy().astype(np.float32), y


def composite_params(composite: str, model_name: str, x: np.ndarray) -> dict:
    if composite != "epsilon-gamma-box":
        return {}
    if model_name in PER_CHANNEL_BOX:
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        low = np.linspace(-3.0, -2.0, x.shape[1], dtype=np.float32).reshape(shape)
        return {"low": low, "high": -low}
    return {"low": -3.0, "high": 3.0}


def expected_target(target, y: np.ndarray) -> np.ndarray:
    if target is None:
        return y.argmax(axis=1).astype(np.int64)
    return np.broadcast_to(np.asarray(target, dtype=np.int64), (y.shape[0],)).copy()


@functools.cache
def reference(name: str, composite: str, target_index: int):
    """(float64 reference relevance, Zennit's own float32 error, targets, params); cached."""
    model, x, y = build(name)
    target = expected_target(TARGETS[target_index], y)
    params = composite_params(composite, name, x)
    r64 = zennit_explain(model, x, composite, target, dtype=np.float64, **params)
    r32 = zennit_explain(model, x, composite, target, dtype=np.float32, **params)
    np.testing.assert_array_equal(r64.target, target)
    return r64.relevance, rel_err(r32.relevance, r64.relevance), target, params


@pytest.fixture(scope="session")
def onnx_path(tmp_models):
    """``onnx_path(model_name, exporter)``: the exported file, exported once per session."""
    cache = {}

    def get(name: str, exporter: str) -> str:
        if (name, exporter) not in cache:
            model, x, _ = build(name)
            path = tmp_models / f"{name}-{exporter}.onnx"
            cache[name, exporter] = export_as(model, torch.from_numpy(x), path, exporter)
        return cache[name, exporter]

    return get


@pytest.fixture(scope="session")
def onnxlrp():
    import onnxlrp

    if not hasattr(onnxlrp, "Explainer"):
        pytest.skip("onnxlrp.Explainer is not implemented yet")
    return onnxlrp


# ---------------------------------------------------------------------------------------------
# the exports themselves (independent of onnxlrp)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", [*ZOO, *CONSERVATION_ZOO])
def test_export_runs_in_onnxruntime(name, exporter, onnx_path):
    model, x, _ = build(name)
    path = onnx_path(name, exporter)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    xb = np.concatenate([x, -x, 2 * x])  # another batch size: the batch dimension is dynamic
    (out,) = sess.run(None, {"input": xb})
    with torch.no_grad():
        expected = model(torch.from_numpy(xb)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# agreement with Zennit


CASES = [
    pytest.param(name, exporter, composite, i % len(TARGETS), id=f"{name}-{exporter}-{composite}")
    for name in ZOO
    for exporter in EXPORTERS
    for i, composite in enumerate(COMPOSITES)
]


@pytest.mark.parametrize(("name", "exporter", "composite", "target_index"), CASES)
def test_matches_zennit(name, exporter, composite, target_index, onnx_path, onnxlrp):
    """Relevance within ``max(3 * zennit_f32_err, 1e-5)`` of Zennit float64 (module docstring)."""
    _, x, y = build(name)
    ref, e32, target, params = reference(name, composite, target_index)
    explainer = onnxlrp.Explainer(onnx_path(name, exporter), composite=composite, **params)
    res = explainer.explain(x, target=TARGETS[target_index])

    np.testing.assert_allclose(np.asarray(res.output), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(res.target), target)
    assert np.asarray(res.target).dtype.kind == "i"
    relevance = np.asarray(res.relevance)
    assert relevance.shape == x.shape
    assert relevance.dtype == np.float32
    assert np.all(np.isfinite(relevance))
    tol = max(FACTOR * e32, FLOOR)
    err = rel_err(relevance, ref)
    if os.environ.get("ONNXLRP_AGREEMENT_LOG"):  # for the agreement table of the closing note
        with open(os.environ["ONNXLRP_AGREEMENT_LOG"], "a") as log:
            log.write(
                json.dumps(
                    {
                        "model": name,
                        "exporter": exporter,
                        "composite": composite,
                        "error": err,
                        "zennit_f32": e32,
                    }
                )
                + "\n"
            )
    assert err <= tol, f"relative L2 error {err:.3g} > {tol:.3g} (zennit f32 error {e32:.3g})"


# non-default rule parameters must reach the rules (one case each, TorchScript export only)
PARAM_CASES = [
    ("vgg", "epsilon", {"epsilon": 0.05}),
    ("resnet", "epsilon-plus", {"epsilon": 0.1, "stabilizer": 1e-3}),
    ("resnet", "epsilon-gamma-box", {"low": -2.0, "high": 2.5, "gamma": 1.0}),
    ("densenet", "epsilon-alpha2-beta1-flat", {"epsilon": 0.01, "stabilizer": 0.01}),
    ("mobilenet", "excitation-backprop", {"stabilizer": 0.05}),
]


@pytest.mark.parametrize(
    ("name", "composite", "params"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in PARAM_CASES],
)
def test_rule_params_pass_through(name, composite, params, onnx_path, onnxlrp):
    model, x, y = build(name)
    target = expected_target(None, y)
    r64 = zennit_explain(model, x, composite, target, dtype=np.float64, **params).relevance
    r32 = zennit_explain(model, x, composite, target, dtype=np.float32, **params).relevance
    tol = max(FACTOR * rel_err(r32, r64), FLOOR)
    res = onnxlrp.Explainer(onnx_path(name, "torchscript"), composite=composite, **params).explain(x)
    np.testing.assert_array_equal(np.asarray(res.target), target)
    err = rel_err(np.asarray(res.relevance), r64)
    assert err <= tol, f"relative L2 error {err:.3g} > {tol:.3g}"


# ---------------------------------------------------------------------------------------------
# conservation


# The epsilon rule's own leak is ~eps / |z| per layer: with the default eps = 1e-6 it reaches
# 1.5e-4 relative for a logit of -0.007 (mlp_nobias, class 0), hence eps = 1e-9 here.  What
# remains (< 2e-5) is the Norm rule's stabilizer (1e-6) at the average pooling.
CONSERVATION_EPSILON = 1e-9
CONSERVATION_TARGETS = pytest.mark.parametrize("target", [None, 5, [0, 9]], ids=["top1", "int", "per-sample"])


@CONSERVATION_TARGETS
@pytest.mark.parametrize("name", list(CONSERVATION_ZOO))
def test_reference_conserves(name, target):
    """Sanity check of the reference itself: bias-free epsilon LRP conserves the target logit."""
    model, x, y = build(name)
    expected = expected_target(target, y)
    for dtype in (np.float64, np.float32):
        ref = zennit_explain(model, x, "epsilon", expected, dtype=dtype, epsilon=CONSERVATION_EPSILON)
        sums = ref.relevance.astype(np.float64).reshape(len(x), -1).sum(1)
        np.testing.assert_allclose(sums, y[np.arange(len(x)), expected], rtol=1e-4)


@CONSERVATION_TARGETS
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(CONSERVATION_ZOO))
def test_epsilon_conserves(name, exporter, target, onnx_path, onnxlrp):
    """Bias-free, BatchNorm-free models with the epsilon composite: per sample, the input
    relevance sums to the explained logit, whatever its sign (rtol 1e-4).  ReLU-killed units
    carry no relevance; max pooling (gradient) and average pooling (Norm rule) conserve."""
    _, x, y = build(name)
    explainer = onnxlrp.Explainer(
        onnx_path(name, exporter), composite="epsilon", epsilon=CONSERVATION_EPSILON
    )
    res = explainer.explain(x, target=target)
    expected = expected_target(target, y)
    np.testing.assert_array_equal(np.asarray(res.target), expected)
    sums = np.asarray(res.relevance, dtype=np.float64).reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(sums, y[np.arange(len(x)), expected], rtol=1e-4)


@pytest.mark.parametrize("name", ["vgg", "conv1d", "conv3d"])
def test_portable_graph_matches_zennit(name, onnx_path, onnxlrp):
    """``onnxlrp.compile`` without ``cpu=True`` (the graph for any provider) routes MaxPool
    relevance with ScatterElements where the Explainer's CPU graph uses MaxUnpool; run in a bare
    onnxruntime session, it agrees with Zennit as well."""
    _, x, _ = build(name)
    ref, e32, target, params = reference(name, "epsilon-plus-flat", 0)
    compiled = onnxlrp.compile(onnx_path(name, "torchscript"), "epsilon-plus-flat", **params)
    ops = {n.op_type for n in compiled.model.graph.node}
    assert "ScatterElements" in ops and "MaxUnpool" not in ops
    session = ort.InferenceSession(compiled.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input": x, "lrp_target": target, "lrp_seed": np.zeros((len(x), 10), np.float32)}
    (relevance,) = session.run(["relevance:input"], feeds)
    assert rel_err(relevance, ref) <= max(FACTOR * e32, FLOOR)
