"""Ops that merge or split activations: Add/Sum/Sub of activations, Concat, Split.

A sum of activations ``z = a + b`` (a residual connection) is a ``SummationUnit``: the Norm rule
splits relevance in proportion, ``R_a = a / z * R``. An Add/Sub/Mul/Div with a constant operand is
an affine map of one activation (see ``activations``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, static_shape
from onnxlrp.ops.activations import affine_unit
from onnxlrp.ops.attention import product_unit
from onnxlrp.ops.base import (
    GraphContext,
    RoutingUnit,
    SummationUnit,
    Unit,
    Unsupported,
    activation_inputs,
    register,
    unbroadcast,
)
from onnxlrp.ops.gates import gate_unit


@register("Add", "Sub", "Sum")
def add(node: ir.Node, ctx: GraphContext) -> Unit:
    acts = activation_inputs(node, ctx)
    if len(acts) == 1 and node.op_type != "Sum":
        return affine_unit(node, ctx)
    if len(acts) != len(node.inputs):
        raise Unsupported("a sum of activations and constants is not supported")
    y = node.outputs[0]
    sign = -1.0 if node.op_type == "Sub" else 1.0

    def transposed(b: Builder, g: ir.Value, index: int) -> ir.Value:
        g = unbroadcast(b, g, node.inputs[index], y)
        return b.op("Neg", g) if index == 1 and sign < 0 else g

    return SummationUnit([node], list(node.inputs), y, "Sum", transposed)


@register("Mul", "Div")
def scale(node: ir.Node, ctx: GraphContext) -> Unit:
    if len(activation_inputs(node, ctx)) != 1:
        gated = gate_unit(node, ctx)  # a signal times a sigmoid-like gate (SE blocks): see ops.gates
        if gated is not None:
            return gated
        if node.op_type == "Mul":
            return product_unit(node, ctx)  # attention, gated MLPs: see ops.attention
        raise Unsupported("a quotient of two activations is not supported")
    return affine_unit(node, ctx)


@register("Concat")
def concat(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    axis = node.attributes.get_int("axis")
    shapes = [static_shape(v) for v in node.inputs]
    if any(s is None for s in shapes):
        raise Unsupported("the ranks of the inputs must be known")
    static = all(s[axis] is not None for s in shapes)
    sizes = [s[axis] for s in shapes]
    start = axis % len(shapes[0])

    activations = [v for v in node.inputs if ctx.is_activation(v)]

    def backward(b: Builder, relevances):
        split = (  # sizes along the axis, read at run time when they are not static
            b.int64(sizes)
            if static
            else b.op("Concat", *[b.op("Shape", v, start=start, end=start + 1) for v in node.inputs], axis=0)
        )
        parts = b.ops("Split", relevances[0], split, axis=axis, num_outputs=len(sizes))
        return [p for p, v in zip(parts, node.inputs) if ctx.is_activation(v)]

    return RoutingUnit([node], activations, [node.outputs[0]], backward)


@register("Split")
def split(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    axis = node.attributes.get_int("axis", 0)

    def backward(b: Builder, relevances):
        parts = [
            r
            if r is not None
            else b.op("ConstantOfShape", b.shape(out), value=ir.tensor(np.zeros(1, dtype=out.dtype.numpy())))
            for r, out in zip(relevances, node.outputs)
        ]
        return [b.op("Concat", *parts, axis=axis)]

    return RoutingUnit([node], [node.inputs[0]], list(node.outputs), backward)
