"""The real-world graph corpus: model-zoo topologies shipped with the ``onnx`` wheel, with weights.

``onnx/backend/test/data/light/`` holds the old ONNX model zoo's graphs (Caffe2 exports at opset 9,
IR version 3: every initializer is also a graph input) with their weights stripped: each weight is
a ``ConstantOfShape`` of its shape.  :func:`zoo_model` puts seeded random weights back as
initializers, with scales that keep activations O(1): He-normal convolution and dense weights,
BatchNorm statistics near the identity with a positive variance, small biases.  The graph is left
exactly as the converter wrote it otherwise (opset 9, initializers listed as inputs, unfolded
BatchNorm, Caffe2's BatchNorm + ``Mul``/``Add`` scale layers, ``Sum`` of residuals, LRN, Dropout).
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import onnx
import onnx.numpy_helper

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
ZOO_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def zoo_path(name: str) -> str:
    return os.path.join(LIGHT_DIR, f"light_{name}.onnx")


def _value(role: tuple[str, int], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    op, index = role
    if op in ("Conv", "Gemm") and index == 1:
        fan_in = int(np.prod(shape[1:]))  # Conv: C/group x kernel; Caffe2's Gemm has transB=1
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    if op in ("Conv", "Gemm") and index == 2:
        return rng.normal(0.0, 0.05, size=shape)
    if op == "BatchNormalization":
        return {
            1: rng.uniform(0.5, 1.5, size=shape),  # scale
            2: rng.normal(0.0, 0.1, size=shape),  # bias
            3: rng.normal(0.0, 0.1, size=shape),  # mean
            4: rng.uniform(0.5, 1.5, size=shape),  # variance
        }[index]
    if op == "Mul":  # Caffe2 scale layer after a BatchNorm
        return rng.uniform(0.5, 1.5, size=shape)
    return rng.normal(0.0, 0.1, size=shape)  # Add: the scale layer's shift


def zoo_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light model ``name`` with seeded random weights in place of its ConstantOfShape nodes."""
    model = onnx.load(zoo_path(name))
    graph = model.graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for node in graph.node:
        for i, name_ in enumerate(node.input):
            consumers[name_].append((node.op_type, i))
    rng = np.random.default_rng(seed)
    kept, new_inits = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            kept.append(node)
            continue
        out = node.output[0]
        shape = tuple(int(d) for d in inits[node.input[0]])
        role, value_name = consumers[out][0], out
        while role[0] in ("Unsqueeze", "Reshape"):  # Caffe2 scale layer, Gemm weight reshaped
            (layout,) = [n for n in graph.node if n.op_type == role[0] and n.input[0] == value_name]
            value_name = layout.output[0]
            role = consumers[value_name][0]
        value = _value(role, shape, rng)
        if role == ("BatchNormalization", 1):
            (bn,) = [n for n in graph.node if n.op_type == role[0] and n.input[1] == out]
            if any(op in ("Sum", "Add") for op, _ in consumers[bn.output[0]]):
                value = value * 0.2  # the last BatchNorm of a residual branch: keep the sum O(1)
        new_inits.append(onnx.numpy_helper.from_array(value.astype(np.float32), out))
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    # IR 3 lists every initializer as a graph input too: keep that style for the new ones
    listed = {i.name for i in graph.input}
    for t in new_inits:
        if t.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    used = {i for n in graph.node for i in n.input}
    for i in [i for i in graph.input if i.name.endswith("__SHAPE") and i.name not in used]:
        graph.input.remove(i)
    for t in [t for t in graph.initializer if t.name.endswith("__SHAPE") and t.name not in used]:
        graph.initializer.remove(t)
    return model


def data_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one graph input that is no initializer."""
    inits = {t.name for t in model.graph.initializer}
    (x,) = [i for i in model.graph.input if i.name not in inits]
    return x


def input_shape(model: onnx.ModelProto) -> list[int]:
    return [d.dim_value for d in data_input(model).type.tensor_type.shape.dim]
