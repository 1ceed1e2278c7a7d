"""What real files bring besides their graph: symbolic batch/height/width (fully convolutional
models), float16 weights and inputs, external data (files over 2 GB), several outputs and
per-pixel outputs explained over a region (``Explainer.explain_region``)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from graph_helpers import parse

import onnxlrp
import onnxlrp.graph.load as load
from onnxlrp import region_seed
from onnxlrp.errors import InputError, ModelLoadError

ROOT = Path(__file__).resolve().parent.parent

RNG = np.random.default_rng(7)
SHAPES = {"W1": (8, 3, 3, 3), "b1": (8,), "W2": (4, 8, 3, 3), "b2": (4,), "W3": (4, 5), "b3": (5,)}
FCN = """
<ir_version: 8, opset_import: ["" : 17]>
fcn (float[N, 3, H, W] x) => (float[N, 5] y, float[N, 4, H2, W2] seg) {
    c = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (x, W1, b1)
    r = Relu(c)
    seg = Conv <pads = [1, 1, 1, 1]> (r, W2, b2)
    r2 = Relu(seg)
    p = GlobalAveragePool(r2)
    f = Flatten(p)
    y = Gemm(f, W3, b3)
}
"""
PROVIDERS = ["CPUExecutionProvider"]


def _fcn(dtype=np.float32, text=FCN) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.5, size=s).astype(dtype) for k, s in SHAPES.items()}
    return parse(text if dtype == np.float32 else text.replace("float[", "float16["), **weights)


def _static(model: onnx.ModelProto, height: int, width: int) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[2:], (height, width)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    return model


@pytest.mark.parametrize("composite", ["epsilon", "epsilon-plus-flat"])
def test_symbolic_height_and_width(composite):
    """One compiled model explains every input size, as the same model with the sizes fixed does
    (strided Conv: its transposed product is sized at run time; Flat's ones and the pool's count
    too)."""
    explainer = onnxlrp.Explainer(_fcn(), composite, providers=PROVIDERS)
    for height, width in ((9, 11), (16, 16)):
        x = RNG.normal(size=(2, 3, height, width)).astype(np.float32)
        dynamic = explainer.explain(x, target=1)
        fixed = onnxlrp.Explainer(_static(_fcn(), height, width), composite, providers=PROVIDERS)
        expected = fixed.explain(x, target=1)
        assert dynamic.relevance.shape == x.shape
        np.testing.assert_allclose(dynamic.relevance, expected.relevance, rtol=1e-5, atol=1e-7)


def test_float16_model():
    x = RNG.normal(size=(2, 3, 9, 11)).astype(np.float16)
    half = onnxlrp.Explainer(_fcn(np.float16), "epsilon-plus-flat", providers=PROVIDERS).explain(x, target=1)
    single = onnxlrp.Explainer(_fcn(), "epsilon-plus-flat", providers=PROVIDERS)
    expected = single.explain(x.astype(np.float32), target=1).relevance
    assert half.relevance.dtype == np.float16
    err = np.linalg.norm(half.relevance.astype(np.float32) - expected) / np.linalg.norm(expected)
    assert err < 1e-2  # float16 precision


def test_external_data(tmp_path):
    """Weights in a separate file (how files over 2 GB are stored): read from the model's folder."""
    path = tmp_path / "fcn.onnx"
    onnx.save_model(_fcn(), str(path), save_as_external_data=True, location="fcn.weights", size_threshold=0)
    assert (tmp_path / "fcn.weights").exists()
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    from_file = onnxlrp.Explainer(str(path), "epsilon", providers=PROVIDERS).explain(x, target=0)
    in_memory = onnxlrp.Explainer(_fcn(), "epsilon", providers=PROVIDERS).explain(x, target=0)
    np.testing.assert_array_equal(from_file.relevance, in_memory.relevance)
    (tmp_path / "fcn.weights").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        onnxlrp.compile(str(path))


def test_large_compiled_models_go_through_external_data(tmp_path, monkeypatch):
    """Over protobuf's 2 GB limit the compiled model is saved and opened with external data
    (the limit is lowered here so that a tiny model takes that path)."""
    monkeypatch.setattr(load, "LARGE_MODEL_BYTES", 1000)
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    explainer = onnxlrp.Explainer(_fcn(), "epsilon", providers=PROVIDERS)
    result = explainer.explain(x, target=0)
    path = explainer.compiled.save(tmp_path / "big.lrp.onnx")
    assert (tmp_path / "big.lrp.onnx.data").exists()
    assert explainer.compiled.model.graph.initializer[0].raw_data  # the in-memory model keeps its data
    monkeypatch.setattr(load, "LARGE_MODEL_BYTES", 10**12)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=PROVIDERS)
    feeds = {"x": x, "lrp_target": np.array([0]), "lrp_seed": np.zeros((1, 5), np.float32)}
    relevance = session.run(["relevance:x"], feeds)[0]
    np.testing.assert_allclose(relevance, result.relevance, rtol=1e-6)


def test_several_outputs_and_a_region_of_a_per_pixel_output():
    """The face-probability / box / mask case: pick the output, seed "these pixels of this channel"."""
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
    explainer = onnxlrp.Explainer(_fcn(), "epsilon", output="seg", providers=PROVIDERS)
    mask = np.zeros((4, 4), np.float32)
    mask[1:3, 2:4] = 1.0
    result = explainer.explain_region(x, channel=2, mask=mask)
    seed = np.zeros_like(result.output)
    seed[:, 2] = result.output[:, 2] * mask
    expected = explainer.explain(x, seed=seed)
    np.testing.assert_allclose(result.relevance, expected.relevance, rtol=1e-6)
    # epsilon on bias-free... here with biases: at least the relevance is where the mask's
    # receptive field is (the stride-2 conv then the 3x3 conv: rows/cols 0..7 reachable from 1..2)
    assert np.all(np.isfinite(result.relevance))
    np.testing.assert_array_equal(region_seed(result.output, 2, mask), seed)
    nhwc = np.moveaxis(result.output, 1, -1)
    np.testing.assert_array_equal(region_seed(nhwc, 2, mask, axis=-1), np.moveaxis(seed, 1, -1))
    with pytest.raises(InputError, match="mask"):
        region_seed(result.output, 2, np.ones((3, 3)))
    with pytest.raises(InputError, match="channel"):
        region_seed(result.output, 4)


def test_incomplete_shape_inference_writes_no_file(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape tool saves the model into the current directory when its
    inference is incomplete; onnxlrp runs its steps without that save and keeps the model as it is."""
    from onnxlrp.graph.shapes import infer_symbolic_shapes

    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
        g (float[N, 4] x) => (float[N, 4] y) {
            h = com.example.Mystery(x)
            y = Relu(h)
        }
        """
    )
    monkeypatch.chdir(tmp_path)
    assert infer_symbolic_shapes(model) is model
    assert list(tmp_path.iterdir()) == []


def test_compile_does_not_import_torch():
    """onnxruntime's symbolic shape inference is loaded from its file: its package's __init__
    imports torch wherever torch is installed (seconds of start-up, hundreds of MB)."""
    pytest.importorskip("torch")
    code = (
        "import sys, onnxlrp\n"
        "onnxlrp.compile('models/digits_cnn.onnx', 'epsilon')\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
