"""The compiler's sign analysis of relevance (``compiler._mark_rectified``).

A layer whose output ``z`` is read only by a ReLU whose relevance vanishes with it gets no
relevance where ``z <= 0``; its rules then read ``relu(z)`` instead of guarding signs. These tests
check which layers are marked, and the numbers of the marked path against a slow numpy epsilon rule.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_helpers import parse

import onnxlrp
from onnxlrp import rules
from onnxlrp.compiler import plan

RNG = np.random.default_rng(5)
W1 = RNG.normal(size=(4, 6)).astype(np.float32)
B1 = RNG.normal(size=6).astype(np.float32)
W2 = RNG.normal(size=(6, 3)).astype(np.float32)
B2 = RNG.normal(size=3).astype(np.float32)
MLP = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 3] y) {
        z = Gemm(x, W1, B1)
        a = Relu(z)
        y = Gemm(a, W2, B2)
    }
"""


def mlp():
    return parse(MLP, W1=W1, B1=B1, W2=W2, B2=B2)


def rectified(model, composite) -> list[str]:
    """The op types of the units marked as rectified, in graph order."""
    return [p.unit.op_type for p in plan(model, composite).units if p.unit.rectifier is not None]


def test_layer_before_relu_is_rectified_under_epsilon():
    assert rectified(mlp(), "epsilon") == ["Gemm"]


def test_gradient_readers_do_not_vanish():
    """The gradient hands relevance to inputs that are 0: nothing is rectified."""
    assert rectified(mlp(), "gradient") == []


def test_flat_reader_does_not_vanish():
    composite = onnxlrp.Composite({"Linear": rules.Flat(), "Activation": rules.Pass()})
    assert rectified(mlp(), composite) == []


def test_explained_relu_output_is_not_rectified():
    """A seed may put relevance anywhere on the explained output."""
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 6] a) {
            z = Gemm(x, W1, B1)
            a = Relu(z)
        }
        """,
        W1=W1,
        B1=B1,
    )
    assert rectified(model, "epsilon") == []


def test_routing_ops_carry_the_analysis():
    """Conv -> ReLU -> MaxPool -> Flatten -> Gemm: the MaxPool and Flatten copy entries."""
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2, 4, 4] x) => (float[N, 3] y) {
            z = Conv<pads = [1, 1, 1, 1]>(x, K, C)
            a = Relu(z)
            p = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(a)
            f = Flatten(p)
            y = Gemm(f, W, B)
        }
        """,
        K=RNG.normal(size=(2, 2, 3, 3)).astype(np.float32),
        C=RNG.normal(size=2).astype(np.float32),
        W=RNG.normal(size=(8, 3)).astype(np.float32),
        B=B2,
    )
    assert rectified(model, "epsilon") == ["Conv"]


def stabilize(z: np.ndarray, epsilon: float) -> np.ndarray:
    return z + epsilon * np.where(z >= 0, 1.0, -1.0)


@pytest.mark.parametrize("epsilon", [1e-6, 0.5])
def test_rectified_epsilon_matches_the_slow_rule(epsilon):
    """Epsilon LRP through Gemm -> ReLU -> Gemm, half the pre-activations negative."""
    x = RNG.normal(size=(5, 4)).astype(np.float64)
    z = x @ W1 + B1
    assert 0.2 < (z < 0).mean() < 0.8
    a = np.maximum(z, 0)
    y = a @ W2 + B2
    target = y.argmax(1)
    r_y = np.zeros_like(y)
    r_y[np.arange(len(x)), target] = y[np.arange(len(x)), target]
    r_a = a * ((r_y / stabilize(y, epsilon)) @ W2.T)
    r_x = x * ((r_a / stabilize(z, epsilon)) @ W1.T)
    result = onnxlrp.Explainer(mlp(), "epsilon", epsilon=epsilon).explain(x.astype(np.float32))
    np.testing.assert_allclose(result.relevance, r_x, rtol=1e-4, atol=1e-6)


def test_capped_rectifier_gets_a_fusable_relu():
    """Gemm -> ReLU6: the compiled Clip reads a ReLU of the Gemm's output, the Gemm's only reader
    (onnxruntime fuses the two), and the relevance is still the slow epsilon rule's."""
    six = np.array(6.0, np.float32)
    zero = np.array(0.0, np.float32)
    model = parse(
        MLP.replace("a = Relu(z)", "a = Clip(z, zero, six)"), W1=W1, B1=B1, W2=W2, B2=B2, zero=zero, six=six
    )
    explainer = onnxlrp.Explainer(model, "epsilon")
    graph = explainer.compiled.model.graph
    readers = [n for n in graph.node if "z" in n.input]
    assert [n.op_type for n in readers] == ["Relu"]
    clip = next(n for n in graph.node if n.op_type == "Clip" and n.output[0] == "a")
    assert clip.input[0] == readers[0].output[0]

    x = 3 * RNG.normal(size=(5, 4))
    z = x @ W1 + B1
    assert (z > 6).any() and (z < 0).any()
    a = np.clip(z, 0, 6)
    y = a @ W2 + B2
    r_y = np.zeros_like(y)
    r_y[np.arange(len(x)), y.argmax(1)] = y.max(1)
    r_a = a * ((r_y / stabilize(y, 1e-6)) @ W2.T)  # ReLU6 passes relevance through, also above 6
    r_x = x * ((r_a / stabilize(z, 1e-6)) @ W1.T)
    result = explainer.explain(x.astype(np.float32))
    np.testing.assert_allclose(result.relevance, r_x, rtol=1e-4, atol=1e-6)
