"""The transposed product of stride-1 convolutions as a plain Conv (onnxlrp.ops.convgrad)."""

from __future__ import annotations

import random

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from onnxlrp.builder import Builder
from onnxlrp.ops import convgrad

CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


def _case(seed: int) -> dict:
    r = random.Random(seed)
    n = r.choice([1, 2, 2, 3])
    kernel = [r.choice([1, 2, 3, 5]) for _ in range(n)]
    dilations = [r.choice([1, 1, 2]) for _ in range(n)]
    pads = [r.randint(0, (kernel[i % n] - 1) * dilations[i % n]) for i in range(2 * n)]
    group = r.choice([1, 2, 3])
    return {
        "geometry": {
            "kernel": kernel,
            "strides": [1] * n,
            "dilations": dilations,
            "pads": pads,
            "group": group,
        },
        "channels": group * r.choice([1, 2]),
        "outputs": group * r.choice([1, 3]),
        "size": [r.randint(k * d, k * d + 5) for k, d in zip(kernel, dilations)],
    }


@pytest.mark.parametrize("seed", range(40))
def test_conv_equals_the_gradient_of_the_convolution(seed):
    case = _case(seed)
    geometry, n = case["geometry"], len(case["size"])
    plan = convgrad.plan(geometry)
    assert plan is not None
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal(
        (case["outputs"], case["channels"] // geometry["group"], *geometry["kernel"])
    )
    weight = weight.astype(np.float32)
    x = torch.tensor(rng.standard_normal((2, case["channels"], *case["size"])), dtype=torch.float32)
    x.requires_grad_(True)
    pads = [p for i in reversed(range(n)) for p in (geometry["pads"][i], geometry["pads"][n + i])]
    y = CONV[n](
        torch.nn.functional.pad(x, pads),
        torch.from_numpy(weight),
        dilation=geometry["dilations"],
        groups=geometry["group"],
    )
    g = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.from_numpy(g))

    graph = ir.Graph([], [], nodes=[], opset_imports={"": 17})
    value = ir.Value(name="g", shape=ir.Shape(list(g.shape)), type=ir.TensorType(ir.DataType.FLOAT))
    graph.inputs.append(value)
    graph.outputs.append(plan.emit(Builder(graph), value, weight))
    model = ir.serde.serialize_model(ir.Model(graph, ir_version=8))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"g": g})
    np.testing.assert_allclose(got, x.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def test_strided_or_overpadded_convolutions_keep_conv_transpose():
    base = {"kernel": [3, 3], "dilations": [1, 1], "group": 1}
    assert convgrad.plan({**base, "strides": [2, 2], "pads": [1, 1, 1, 1]}) is None
    assert convgrad.plan({**base, "strides": [1, 1], "pads": [3, 1, 1, 1]}) is None
    assert convgrad.plan({**base, "strides": [1, 1], "pads": [2, 2, 2, 2]}) is not None
