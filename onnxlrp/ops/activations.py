"""Pointwise maps of one activation: ReLU and friends, unfolded BatchNorm, scaling by constants.

Each factory gives the derivative f'(x) with PyTorch's conventions at the kinks (ReLU'(0) = 0,
Clip passes the open interval), which the gradient-based rules and composites use. LRP composites
pass relevance through activations unchanged (Zennit's ``Pass`` rule).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.ops.base import ElementwiseUnit, GraphContext, Unsupported, activation_inputs, constant, register


def _float(b: Builder, mask: ir.Value, like: ir.Value) -> ir.Value:
    return b.op("Cast", mask, to=like.dtype)


def _unit(
    node: ir.Node, derivative, category: str = "Activation", x: ir.Value | None = None
) -> ElementwiseUnit:
    x = node.inputs[0] if x is None else x
    return ElementwiseUnit([node], x, node.outputs[0], category, lambda b: derivative(b, x, node.outputs[0]))


@register("Relu")
def relu(node, ctx):
    unit = _unit(node, lambda b, x, y: _float(b, b.op("Greater", x, 0.0), x))
    unit.zero_below = True
    return unit


@register("LeakyRelu")
def leaky_relu(node, ctx):
    alpha = node.attributes.get_float("alpha", 0.01)
    return _unit(
        node, lambda b, x, y: b.op("Where", b.op("Greater", x, 0.0), 1.0, b.const(alpha, dtype_of(x)))
    )


@register("PRelu")
def prelu(node, ctx):
    slope = constant(node.inputs[1])
    if slope is None:
        raise Unsupported("the slope must be a constant")
    return _unit(
        node, lambda b, x, y: b.op("Where", b.op("Greater", x, 0.0), 1.0, b.const(slope, dtype_of(x)))
    )


@register("Elu")
def elu(node, ctx):
    alpha = node.attributes.get_float("alpha", 1.0)
    return _unit(
        node,
        lambda b, x, y: b.op(
            "Where", b.op("Greater", x, 0.0), 1.0, b.op("Add", y, b.const(alpha, dtype_of(x)))
        ),
    )


def _bounds(node: ir.Node) -> tuple[float | None, float | None]:
    if len(node.inputs) > 1 or "min" not in node.attributes and "max" not in node.attributes:
        values = [constant(v) if v is not None else None for v in list(node.inputs[1:3]) + [None, None]][:2]
        for v, given in zip(values, node.inputs[1:3]):
            if given is not None and v is None:
                raise Unsupported("min and max must be constants")
        return tuple(None if v is None else float(v) for v in values)
    attrs = node.attributes
    return attrs.get_float("min", None), attrs.get_float("max", None)


@register("Clip")
def clip(node, ctx):
    low, high = _bounds(node)

    def derivative(b, x, y):
        inside = None
        for op, bound in (("Greater", low), ("Less", high)):
            if bound is not None:
                cond = b.op(op, x, b.const(bound, dtype_of(x)))
                inside = cond if inside is None else b.op("And", inside, cond)
        return _float(b, inside, x) if inside is not None else b.const(1.0, dtype_of(x))

    unit = _unit(node, derivative)
    unit.zero_below = low == 0.0  # ReLU6 and other rectifiers with a cap
    return unit


@register("Sigmoid")
def sigmoid(node, ctx):
    return _unit(node, lambda b, x, y: b.op("Mul", y, b.op("Sub", 1.0, y)))


@register("Tanh")
def tanh(node, ctx):
    return _unit(node, lambda b, x, y: b.op("Sub", 1.0, b.op("Mul", y, y)))


@register("HardSigmoid")
def hard_sigmoid(node, ctx):
    alpha = node.attributes.get_float("alpha", 0.2)
    beta = node.attributes.get_float("beta", 0.5)

    def derivative(b, x, y):
        t = b.op("Add", b.op("Mul", x, b.const(alpha, dtype_of(x))), b.const(beta, dtype_of(x)))
        inside = b.op("And", b.op("Greater", t, 0.0), b.op("Less", t, 1.0))
        return b.op("Mul", _float(b, inside, x), b.const(alpha, dtype_of(x)))

    return _unit(node, derivative)


@register("HardSwish")
def hard_swish(node, ctx):
    def derivative(b, x, y):
        dt = dtype_of(x)
        middle = b.op("Add", b.op("Div", x, b.const(3.0, dt)), b.const(0.5, dt))
        d = b.op("Where", b.op("Greater", x, b.const(3.0, dt)), b.const(1.0, dt), middle)
        return b.op("Where", b.op("Less", x, b.const(-3.0, dt)), b.const(0.0, dt), d)

    return _unit(node, derivative)


@register("Softplus")
def softplus(node, ctx):
    return _unit(node, lambda b, x, y: b.op("Sigmoid", x))


@register("BatchNormalization")
def batch_norm(node, ctx):
    """An unfolded BatchNorm (e.g. after a Concat): ``y = (x - mean) * scale / std + beta``."""
    params = [constant(v) for v in node.inputs[1:5]]
    if (
        any(p is None for p in params)
        or len(node.outputs) > 1
        and any(o.consumers() for o in node.outputs[1:])
    ):
        raise Unsupported("only inference-mode BatchNormalization with constant statistics is supported")
    scale, _, _, var = params
    eps = node.attributes.get_float("epsilon", 1e-5)
    factor = scale / np.sqrt(var + eps)
    shape = static_shape(node.inputs[0])
    rank = len(shape) if shape is not None else 4
    factor = factor.reshape([-1] + [1] * (rank - 2)).astype(scale.dtype)
    return _unit(node, lambda b, x, y: b.const(factor, dtype_of(x)), category="BatchNorm")


def _scaling(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit:
    """``Mul``/``Div``/``Add``/``Sub`` of one activation and a constant: an affine map of x.

    Relevance follows the gradient (as Zennit does for such unhooked functional ops).
    """
    (x,) = activation_inputs(node, ctx)
    other = node.inputs[1] if node.inputs[0] is x else node.inputs[0]
    c = constant(other)
    if c is None:
        if other is None or ctx.is_activation(other):
            raise Unsupported("the other operand must be a constant or an activation")
        c = other  # computed from shapes, masks and weights only (attention masks, cos/sin tables)
    if static_shape(node.outputs[0]) != static_shape(x):
        raise Unsupported("the constant must not broadcast the activation to a larger shape")
    op = node.op_type
    if op in ("Add", "Sub"):
        sign = -1.0 if op == "Sub" and node.inputs[1] is x else 1.0
        return _unit(node, lambda b, x, y: b.const(sign, dtype_of(x)), category="Affine", x=x)
    if isinstance(c, ir.Value):  # a run-time constant
        if op == "Mul":
            return _unit(node, lambda b, x, y: c, category="Affine", x=x)
        if node.inputs[0] is x:
            return _unit(node, lambda b, x, y: b.op("Reciprocal", c), category="Affine", x=x)
    elif op == "Mul":
        return _unit(node, lambda b, x, y: b.const(c, dtype_of(x)), category="Affine", x=x)
    elif node.inputs[0] is x:  # Div(x, c)
        return _unit(node, lambda b, x, y: b.const(1.0 / c, dtype_of(x)), category="Affine", x=x)
    raise Unsupported("division of a constant by an activation is not supported")


def affine_unit(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit:
    """Entry point used by the Add/Sub/Mul/Div factories when one operand is constant."""
    return _scaling(node, ctx)
