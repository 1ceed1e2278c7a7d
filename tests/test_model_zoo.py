"""The old ONNX model zoo's topologies (shipped in the ``onnx`` wheel, opset 9, IR 3) against
onnx2torch + Zennit.

Each graph gets seeded random weights (``corpus.zoo_model``) and is explained at its native
224 x 224 input by onnxlrp and, independently, by Zennit on the onnx2torch conversion of the same
file (``onnx_reference``). As in ``test_zennit_agreement``, the tolerance is float32 noise:
``max(3 * e32, 1e-5)`` with ``e32`` Zennit's own float32-vs-float64 error on that model.
The large ones are marked ``slow`` (seconds to minutes each on two cores, VGG-19's reference
needs ~9 GB); squeezenet and inception_v1 (LRN, asymmetric AveragePool, Dropout, Caffe2's
reshaped Gemm weight) run always. The test is skipped where onnx2torch is not installed
(``pip install --no-deps onnx2torch``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("onnx2torch") is None:  # a test-only tool: pip install --no-deps onnx2torch
    pytest.skip("onnx2torch is not installed", allow_module_level=True)

from corpus import ZOO_MODELS, input_shape, zoo_model  # noqa: E402
from onnx_reference import reference, to_torch  # noqa: E402
from reference import rel_err  # noqa: E402

import onnxlrp  # noqa: E402

FACTOR, FLOOR = 3.0, 1e-5
FAST = ("squeezenet", "inception_v1")
COMPOSITES = ("epsilon", "epsilon-plus-flat")


def _params():
    for name in ZOO_MODELS:
        marks = () if name in FAST else (pytest.mark.slow,)
        yield pytest.param(name, marks=marks, id=name)


@pytest.fixture(scope="module")
def converted():
    cache = {}

    def get(name):
        if name not in cache:
            model = zoo_model(name)
            x = np.random.default_rng(0).normal(size=input_shape(model)).astype(np.float32)
            cache.clear()  # keep one model in memory at a time
            cache[name] = (model, x, to_torch(model, x))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(_params()))
def test_zoo_model_matches_zennit(name, converted):
    model, x, torch_model = converted(name)
    for composite in COMPOSITES:
        result = onnxlrp.Explainer(model, composite, providers=["CPUExecutionProvider"]).explain(x)
        assert np.all(np.isfinite(result.relevance))
        r64 = reference(torch_model, x, composite, target=result.target)
        r32 = reference(torch_model, x, composite, target=result.target, dtype=np.float32)
        np.testing.assert_allclose(
            result.output.reshape(r64.output.shape),
            r64.output,
            rtol=1e-4,
            atol=1e-4 * np.abs(r64.output).max(),
        )
        tol = max(FACTOR * rel_err(r32.relevance, r64.relevance), FLOOR)
        err = rel_err(result.relevance, r64.relevance)
        assert err <= tol, f"{name} {composite}: relative error {err:.3g} > {tol:.3g}"


def test_zoo_graph_styles_are_kept():
    """The corpus really is the old style: opset 9, IR 3, initializers listed as inputs, LRN."""
    model = zoo_model("inception_v1")
    assert model.opset_import[0].version == 9 and model.ir_version == 3
    inits = {t.name for t in model.graph.initializer}
    assert inits <= {i.name for i in model.graph.input}
    assert {"LRN", "Dropout", "AveragePool"} <= {n.op_type for n in model.graph.node}
