"""Fold a separate bias ``Add`` into the Conv, ConvTranspose or Gemm before it.

``Add(Conv(x, W, b), c)`` with a constant ``c`` that is constant along every axis but the channel
axis equals ``Conv(x, W, b + c)``: ``y_k = sum_j x_j w_jk + b_k + c_k``. LRP rules treat a bias as
part of the layer (it takes its share of the relevance), so the bias must sit inside the layer.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.graph.passes._util import constant_array, replace_output, set_constant_input, sole_consumer

_LAYERS = ("Conv", "ConvTranspose", "Gemm")


def _channel_vector(c: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """``c`` as a per-channel vector, if it broadcasts along axis 1 of a rank-``out_rank`` output only."""
    shape = (1,) * (out_rank - c.ndim) + c.shape
    if len(shape) != out_rank or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    if shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).copy()


def _channels(layer: ir.Node, weight: np.ndarray) -> int:
    if layer.op_type == "Conv":
        return weight.shape[0]
    if layer.op_type == "ConvTranspose":
        return weight.shape[1] * layer.attributes.get_int("group", 1)
    trans_b = layer.attributes.get_int("transB", 0)
    return weight.shape[0] if trans_b else weight.shape[1]


def fold_bias_add(model: ir.Model) -> None:
    """Fold ``Add(layer_output, constant)`` into the layer's bias, in place."""
    graph = model.graph
    for layer in list(graph):
        if layer.op_type not in _LAYERS:
            continue
        weight = constant_array(layer.inputs[1])
        add = sole_consumer(layer.outputs[0])
        if weight is None or add is None or add.op_type != "Add":
            continue
        other = add.inputs[1] if add.inputs[0] is layer.outputs[0] else add.inputs[0]
        c = constant_array(other)
        if c is None:
            continue
        if layer.op_type == "Gemm" and layer.attributes.get_float("beta", 1.0) != 1.0:
            continue
        out_rank = weight.ndim if layer.op_type != "Gemm" else 2
        channels = _channels(layer, weight)
        vector = _channel_vector(c, out_rank, channels)
        if vector is None:
            continue
        bias = constant_array(layer.inputs[2]) if len(layer.inputs) > 2 else None
        if bias is not None and bias.shape != (channels,):
            continue
        new_bias = (vector if bias is None else bias + vector).astype(weight.dtype)
        set_constant_input(graph, layer, 2, new_bias, f"{layer.name}/folded_bias")
        result = add.outputs[0]
        if result.is_graph_output():
            layer.outputs[0].name, result.name = result.name, f"{result.name}/unused"
            index = graph.outputs.index(result)
            graph.outputs[index] = layer.outputs[0]
        replace_output(result, layer.outputs[0])
        graph.remove(add, safe=True)
