"""Fold per-channel ``Mul``/``Div``/``Add``/``Sub`` by constants into the layer or BatchNorm before.

Converters write BatchNorm (or Caffe2's "scale" layer, or a Keras BatchNorm whose statistics were
folded by hand) as elementwise ops after a Conv/Gemm: ``(z - m) * s + t``. With ``c`` a constant
that varies along the channel axis only (axis 1; every other axis of ``c`` broadcast):

- after a layer ``z_k = sum_j x_j w_jk + b_k`` (Conv, ConvTranspose, Gemm):
  ``z * c = sum_j x_j (w_jk c_k) + b_k c_k``, ``z / c`` likewise with ``1 / c``,
  ``z + c = ... + (b_k + c_k)``, ``z - c = ... + (b_k - c_k)``, and ``c - z`` negates ``w`` and ``b``
  then adds ``c``. The weight is scaled along its output-channel axis (axis 0 for Conv, axis 1 for
  ConvTranspose with ``group`` = 1, the output axis of Gemm's B). A Gemm with ``beta = 0``
  (jax2onnx writes its bias as a separate Add) has no bias: it becomes ``beta = 1`` with the
  folded one.
- after an inference BatchNormalization ``y = g_k (x - m_k) / sqrt(v_k + eps) + beta_k``:
  ``y * c`` has ``g_k c_k`` and ``beta_k c_k``; ``y + c`` has ``beta_k + c_k``; ``y - c`` has
  ``beta_k - c_k``, so the chain stays one BatchNorm (one "BatchNorm" unit for the composites).

LRP rules treat the bias as part of the layer, and Zennit merges BatchNorms into the layer before,
so the affine chain must live inside the layer for the relevance to match. The op is folded only
when the layer's output has no other reader and is no graph output. Repeats until nothing changes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.graph.passes._util import constant_array, replace_output, set_constant_input, sole_consumer

_LAYERS = ("Conv", "ConvTranspose", "Gemm", "BatchNormalization")
_OPS = ("Mul", "Div", "Add", "Sub")


def _channel_vector(c: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """``c`` as a length-``channels`` vector, if it only varies along axis 1 of a rank-``out_rank`` output."""
    if c.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)


def _layer_params(layer: ir.Node) -> tuple[np.ndarray | None, int | None, int]:
    """(weight, output-channel axis, number of output channels) of the layer, or (None, None, 0)."""
    weight = constant_array(layer.inputs[1]) if len(layer.inputs) > 1 else None
    if weight is None:
        return None, None, 0
    op = layer.op_type
    if op == "BatchNormalization":
        return weight, 0, weight.shape[0]
    if op == "Conv":
        return weight, 0, weight.shape[0]
    if op == "ConvTranspose":
        if layer.attributes.get_int("group", 1) != 1:
            return None, None, 0
        return weight, 1, weight.shape[1]
    if layer.attributes.get_float("alpha", 1.0) != 1.0 or layer.attributes.get_float("beta", 1.0) not in (
        0.0,
        1.0,
    ):
        return None, None, 0
    axis = 0 if layer.attributes.get_int("transB", 0) else 1
    return weight, axis, weight.shape[axis]


def _out_rank(layer: ir.Node, weight: np.ndarray) -> int | None:
    if layer.op_type == "Gemm":
        return 2
    if layer.op_type == "BatchNormalization":
        shape = layer.outputs[0].shape
        return None if shape is None else len(shape)
    return weight.ndim


def _fresh(graph: ir.Graph, name: str) -> str:
    """``name``, or ``name_1``, ``name_2``, ... if an initializer already has it."""
    candidate, index = name, 0
    while candidate in graph.initializers:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


def _fold_one(graph: ir.Graph, layer: ir.Node) -> bool:
    if layer.op_type == "BatchNormalization" and (
        len(layer.outputs) > 1
        and any(o.consumers() for o in layer.outputs[1:])
        or any(constant_array(v) is None for v in layer.inputs[1:5])
    ):
        return False
    weight, axis, channels = _layer_params(layer)
    op = sole_consumer(layer.outputs[0])
    if weight is None or op is None or op.op_type not in _OPS or op.inputs[0] is op.inputs[1]:
        return False
    first = op.inputs[0] is layer.outputs[0]
    c = constant_array(op.inputs[1] if first else op.inputs[0])
    rank = _out_rank(layer, weight)
    if c is None or rank is None or not np.issubdtype(c.dtype, np.floating):
        return False
    vector = _channel_vector(c, rank, channels)
    if vector is None or op.op_type == "Div" and (not first or np.any(vector == 0)):
        return False
    dtype = weight.dtype
    if layer.op_type == "BatchNormalization":
        scale, shift = constant_array(layer.inputs[1]).astype(np.float64), constant_array(layer.inputs[2])
        shift = shift.astype(np.float64)
        index_w, index_b = 1, 2
    else:
        scale = weight.astype(np.float64)
        bias = constant_array(layer.inputs[2]) if len(layer.inputs) > 2 else None
        if len(layer.inputs) > 2 and layer.inputs[2] is not None and bias is None:
            return False
        if layer.op_type == "Gemm" and layer.attributes.get_float("beta", 1.0) == 0.0:
            bias = None  # beta = 0 (jax2onnx): C is ignored; the folded bias is used with beta = 1
            layer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        if bias is not None and bias.size not in (1, channels):
            return False
        shift = np.zeros(channels) if bias is None else np.broadcast_to(bias.reshape(-1), (channels,))
        shift = shift.astype(np.float64)
        index_w, index_b = 1, 2
    shape = [1] * scale.ndim
    shape[axis] = channels
    if op.op_type in ("Mul", "Div"):
        factor = vector if op.op_type == "Mul" else 1.0 / vector
        scale, shift = scale * factor.reshape(shape), shift * factor
    elif op.op_type == "Add" or first:  # z + c, z - c
        shift = shift + (vector if op.op_type == "Add" else -vector)
    else:  # c - z
        scale, shift = -scale, vector - shift
    name = f"{layer.name or layer.outputs[0].name}/folded_{op.name or op.outputs[0].name}"
    set_constant_input(graph, layer, index_w, scale.astype(dtype), _fresh(graph, f"{name}/weight"))
    set_constant_input(graph, layer, index_b, shift.astype(dtype), _fresh(graph, f"{name}/bias"))
    result = op.outputs[0]
    if result.is_graph_output():
        layer.outputs[0].name, result.name = result.name, f"{result.name}/unused"
        graph.outputs[graph.outputs.index(result)] = layer.outputs[0]
    replace_output(result, layer.outputs[0])
    graph.remove(op, safe=True)
    return True


def fold_channel_affine(model: ir.Model) -> None:
    """Fold per-channel affine ops by constants into the Conv/ConvTranspose/Gemm/BatchNorm before them."""
    graph = model.graph
    changed = True
    while changed:
        changed = False
        for layer in list(graph):
            if layer.op_type in _LAYERS and layer.graph is graph:
                while _fold_one(graph, layer):
                    changed = True
