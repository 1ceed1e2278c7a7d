"""Move layout Transposes down through elementwise ops, and cancel the pairs that then meet.

NHWC models (Keras through tf2onnx without its optimizer, onnx2torch round trips, TFLite
converters) wrap every Conv in a Transpose pair: ``Conv -> T(0,2,3,1) -> Mul -> Add -> Relu ->
T(0,3,1,2) -> Conv``. Relevance already follows a Transpose exactly (its backward is the inverse
permutation), but the BatchNorm written as ``Mul``/``Add`` is then not next to its Conv, so it
cannot be folded into it (``fold_channel_affine``). For ``T = Transpose(x, p)``:

- a unary elementwise op commutes with it: ``f(T(x)) = T(f(x))``;
- a binary elementwise op with a constant ``c`` (broadcast to the rank first):
  ``T(x) (op) c = T(x (op) c')`` with ``c' = transpose(c, argsort(p))``, since
  ``T(c')`` has ``T(c')[i] = c'[.. argsort(p) ..] = c[i]``;
- two Transposes compose: ``T_q(T_p(x)) = T_r(x)`` with ``r[i] = p[q[i]]``; an identity ``r``
  removes both.

A Transpose moves only when its output has a single reader and is no graph output, so nothing is
duplicated. Relevance and values are unchanged; the Transposes that remain sit at the model's
edges (input in NHWC: the relevance comes back in NHWC) or before ops that are not elementwise.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.graph.passes._util import constant_array, sole_consumer

_UNARY = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Softplus",
        "Neg",
        "Abs",
        "Erf",
        "Gelu",
        "Identity",
        "Cast",
    }
)
_BINARY = frozenset({"Mul", "Add", "Sub", "Div", "PRelu", "Max", "Min"})


def _perm(node: ir.Node, rank: int | None) -> list[int] | None:
    perm = node.attributes.get_ints("perm", None)
    if perm is not None:
        return [int(p) for p in perm]
    return None if rank is None else list(reversed(range(rank)))


def _permuted_shape(shape: ir.Shape | None, perm: list[int]) -> ir.Shape | None:
    if shape is None or len(shape) != len(perm):
        return None
    return ir.Shape([shape[p] for p in perm])


def _inverse_shape(shape: ir.Shape | None, perm: list[int]) -> ir.Shape | None:
    return _permuted_shape(shape, [int(i) for i in np.argsort(perm)])


def _clip_inputs_constant(node: ir.Node) -> bool:
    return all(v is None or v.const_value is not None for v in node.inputs[1:])


def _sink_once(graph: ir.Graph, t: ir.Node) -> bool:
    x = t.inputs[0]
    perm = _perm(t, len(x.shape) if x.shape is not None else None)
    op = sole_consumer(t.outputs[0])
    if perm is None or op is None or op.domain not in ("", "ai.onnx") or len(op.outputs) != 1:
        return False
    rank = len(perm)
    if op.op_type == "Transpose":
        inner = _perm(op, rank)
        composed = [perm[q] for q in inner]
        if composed == list(range(rank)):
            out = op.outputs[0]
            if out.is_graph_output():
                return False
            ir.convenience.replace_all_uses_with(out, x)
            graph.remove([op, t], safe=True)
        else:
            op.replace_input_with(0, x)
            op.attributes["perm"] = ir.AttrInt64s("perm", composed)
            graph.remove(t, safe=True)
        return True
    out = op.outputs[0]
    if (
        out.is_graph_output()
        or out.shape is not None
        and t.outputs[0].shape is not None
        and list(out.shape) != list(t.outputs[0].shape)
    ):
        return False  # the op broadcasts the transposed value to a larger shape
    if op.op_type in _UNARY or op.op_type == "Clip" and _clip_inputs_constant(op):
        if op.inputs[0] is not t.outputs[0]:
            return False
    elif op.op_type in _BINARY and len(op.inputs) == 2:
        index = 0 if op.inputs[0] is t.outputs[0] else 1
        other = op.inputs[1 - index]
        c = constant_array(other)
        if c is None or c.ndim > rank or op.inputs[index] is other:
            return False
        full = c.reshape((1,) * (rank - c.ndim) + c.shape)
        moved = np.ascontiguousarray(full.transpose([int(i) for i in np.argsort(perm)]))
        value = ir.Value(
            name=f"{other.name}/transposed_{t.name or 'T'}",
            const_value=ir.tensor(moved),
            shape=ir.Shape(moved.shape),
            type=ir.TensorType(ir.DataType.from_numpy(moved.dtype)),
        )
        graph.register_initializer(value)
        op.replace_input_with(1 - index, value)
    else:
        return False
    op.replace_input_with(0 if op.inputs[0] is t.outputs[0] else 1, x)
    new_t = ir.node("Transpose", [], {"perm": perm}, num_outputs=1, name=f"{t.name or 'Transpose'}/sunk")
    new_out = new_t.outputs[0]
    new_out.name = f"{out.name}/nhwc"
    new_out.shape, new_out.type = out.shape, out.type
    for consumer, index in list(out.uses()):
        consumer.replace_input_with(index, new_out)
    new_t.resize_inputs(1)
    new_t.replace_input_with(0, out)
    out.shape = x.shape if op.op_type in _UNARY or op.op_type == "Clip" else _inverse_shape(out.shape, perm)
    graph.insert_after(op, new_t)
    graph.remove(t, safe=True)
    return True


def sink_transposes(model: ir.Model) -> None:
    """Sink every Transpose through elementwise ops and cancel the pairs that meet, in place."""
    graph = model.graph
    changed = True
    while changed:
        changed = False
        for node in list(graph):
            is_transpose = node.op_type == "Transpose" and node.domain in ("", "ai.onnx")
            if is_transpose and node.graph is graph and _sink_once(graph, node):
                changed = True
