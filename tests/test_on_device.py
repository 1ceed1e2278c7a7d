"""``Explainer.explain_on_device``: inputs and results as onnxruntime OrtValues (I/O binding).

Run on the CPU device everywhere, and on CUDA where onnxruntime's CUDA provider works (skipped
elsewhere).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from test_rules import TARGET, B, W, X, dense_model, reference

import onnxlrp
from onnxlrp.errors import InputError
from onnxlrp.runtime import cuda_works

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
NEEDS_CUDA = pytest.mark.skipif(not cuda_works(), reason="no working CUDA provider")


@pytest.fixture(scope="module")
def explainer():
    return onnxlrp.Explainer(dense_model(relu_first=False), "epsilon", providers=PROVIDERS["cpu"])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def test_relevance_stays_an_ortvalue(device):
    """The relevance of ``x -> Gemm`` with the epsilon rule, against the slow reference; inputs
    and results on ``device``."""
    explainer = onnxlrp.Explainer(dense_model(relu_first=False), "epsilon", providers=PROVIDERS[device])
    out = explainer.explain_on_device(ort.OrtValue.ortvalue_from_numpy(X, device, 0), target=TARGET)
    assert all(isinstance(v, ort.OrtValue) for v in out.values())
    assert all(v.device_name().lower() == device for v in out.values())
    y = X.astype(np.float64) @ W + B
    r_out = np.zeros_like(y)
    r_out[np.arange(len(X)), TARGET] = y[np.arange(len(X)), TARGET]
    np.testing.assert_allclose(out["relevance:x"].numpy(), reference("epsilon", X, W, B, r_out), rtol=1e-5)
    np.testing.assert_array_equal(out["lrp_target_used"].numpy(), TARGET)
    np.testing.assert_allclose(out["y"].numpy(), y, rtol=1e-5)


def test_bad_device_inputs(explainer):
    with pytest.raises(InputError, match="explain_on_device takes onnxruntime OrtValues"):
        explainer.explain_on_device(X)
    with pytest.raises(InputError, match=r"input 'x': expected shape \['N', 5\], got \[3, 4\]"):
        explainer.explain_on_device(ort.OrtValue.ortvalue_from_numpy(X[:, :4].copy()))
    with pytest.raises(InputError, match="input 'x': expected dtype float32, got float64"):
        explainer.explain_on_device(ort.OrtValue.ortvalue_from_numpy(X.astype(np.float64)))
