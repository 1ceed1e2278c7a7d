"""Fuse the written-out PReLU/LeakyReLU of converters back into one ``PRelu``.

tf2onnx writes Keras' ``PReLU`` (and some LeakyReLUs) as ``Relu(x) + c * Relu(-x)`` with a
constant ``c = -alpha``, and others write ``Relu(x) - alpha * Relu(-x)``. Since
``Relu(x) - alpha Relu(-x) = x`` for ``x > 0`` and ``alpha x`` for ``x <= 0``, both equal
``PRelu(x, alpha)``. Left apart, the sum of the two branches would be a sum of activations (the
Norm rule would split the relevance between them, and the negative branch would scale it by
``alpha^2``); fused, it is one activation, through which LRP composites pass the relevance,
exactly as Zennit does for ``torch.nn.PReLU``.

Matched: ``Add(Relu(x), Mul(Relu(Neg(x)), c))`` (operands of Add and Mul in either order) and
``Sub(Relu(x), Mul(Relu(Neg(x)), a))``, with constant ``c`` (slope ``-c``) or ``a`` (slope ``a``)
and every intermediate read only by the next op.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxlrp.graph.passes._util import constant_array, sole_consumer


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type else None


def _negative_branch(value: ir.Value) -> tuple[ir.Value, object, list[ir.Node]] | None:
    """``(x, c, nodes)`` if ``value = Mul(Relu(Neg(x)), c)`` with private intermediates."""
    mul = _producer(value, "Mul")
    if mul is None or sole_consumer(value) is None:
        return None
    for index in (0, 1):
        relu = _producer(mul.inputs[index], "Relu")
        c = constant_array(mul.inputs[1 - index])
        if relu is None or c is None or sole_consumer(relu.outputs[0]) is not mul:
            continue
        neg = _producer(relu.inputs[0], "Neg")
        if neg is None or sole_consumer(neg.outputs[0]) is not relu:
            continue
        return neg.inputs[0], c, [mul, relu, neg]
    return None


def fuse_prelu(model: ir.Model) -> None:
    """Replace written-out PReLUs by ``PRelu`` nodes, in place."""
    graph = model.graph
    for node in list(graph):
        if node.graph is not graph or node.op_type not in ("Add", "Sub") or len(node.inputs) != 2:
            continue
        orders = ((0, 1), (1, 0)) if node.op_type == "Add" else ((0, 1),)
        for pos, neg_index in orders:
            relu = _producer(node.inputs[pos], "Relu")
            branch = _negative_branch(node.inputs[neg_index])
            if relu is None or branch is None:
                continue
            x, c, nodes = branch
            if relu.inputs[0] is not x or sole_consumer(relu.outputs[0]) is not node:
                continue
            slope = -c if node.op_type == "Add" else c
            slope_value = ir.Value(
                name=f"{node.name or node.outputs[0].name}/prelu_slope",
                const_value=ir.tensor(slope.astype(c.dtype)),
                shape=ir.Shape(slope.shape),
                type=ir.TensorType(ir.DataType.from_numpy(c.dtype)),
            )
            graph.register_initializer(slope_value)
            prelu = ir.node("PRelu", [x, slope_value], name=f"{node.name or 'prelu'}/fused_prelu")
            out = prelu.outputs[0]
            out.shape, out.type = node.outputs[0].shape, node.outputs[0].type
            graph.insert_before(node, prelu)
            old = node.outputs[0]
            if old.is_graph_output():
                out.name, old.name = old.name, f"{old.name}/unused"
                graph.outputs[graph.outputs.index(old)] = out
            ir.convenience.replace_all_uses_with(old, out)
            graph.remove([node, relu, *nodes], safe=True)
            break
