"""The Ray Data integration on a local Ray instance (skipped when ray is not installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import onnxlrp  # noqa: E402
from onnxlrp.ray import OnnxLrpExplainer, explain_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "digits_cnn.onnx")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def samples():
    return np.load(ROOT / "models" / "digits_samples.npy")


def test_callable_class_without_ray(samples):
    """The class is an ordinary callable: one batch in, the batch plus relevance/target out."""
    explain = OnnxLrpExplainer(MODEL, "epsilon", input_column="image", output_column="logits")
    batch = {"image": samples[:5], "id": np.arange(5)}
    out = explain(batch)
    expected = onnxlrp.Explainer(MODEL, composite="epsilon").explain(samples[:5])
    np.testing.assert_allclose(out["relevance"], expected.relevance, rtol=1e-6)
    np.testing.assert_array_equal(out["target"], expected.target)
    np.testing.assert_allclose(out["logits"], expected.output, rtol=1e-6)
    np.testing.assert_array_equal(out["id"], np.arange(5))


def test_map_batches_on_local_ray(local_ray, samples):
    labels = np.load(ROOT / "models" / "digits_labels.npy")
    ds = ray.data.from_items(
        [{"data": x, "label": int(y), "id": i} for i, (x, y) in enumerate(zip(samples, labels))]
    )
    result = ds.map_batches(
        OnnxLrpExplainer,
        fn_constructor_kwargs={"model": MODEL, "composite": "epsilon-plus-flat", "target": "label"},
        concurrency=1,
        batch_size=5,
        batch_format="numpy",
    )
    rows = sorted(result.take_all(), key=lambda row: row["id"])
    assert len(rows) == len(samples)
    expected = onnxlrp.Explainer(MODEL, composite="epsilon-plus-flat").explain(samples, target=labels)
    for row in rows:
        i = row["id"]
        assert int(row["target"]) == int(labels[i])
        np.testing.assert_allclose(row["relevance"], expected.relevance[i], rtol=1e-5, atol=1e-7)


def test_explain_dataset_helper(local_ray, samples):
    ds = ray.data.from_numpy(samples)  # one tensor column "data"
    rows = explain_dataset(ds, MODEL, "epsilon", batch_size=8, keep_input=False).take_all()
    expected = onnxlrp.Explainer(MODEL, composite="epsilon").explain(samples)
    got = np.stack([row["relevance"] for row in rows])
    order = np.argsort([float(np.abs(r).sum()) for r in got])  # row order is not guaranteed
    want = np.stack(expected.relevance)[np.argsort([float(np.abs(r).sum()) for r in expected.relevance])]
    np.testing.assert_allclose(got[order], want, rtol=1e-5, atol=1e-7)
    assert set(rows[0]) == {"relevance", "target"}
