"""Smooth activations that converters emit as single ops: ``Erf`` (inside written-out GELU) and
``Gelu`` (opset 20). Like every activation, LRP composites pass relevance through them; the
derivative is for the gradient-based rules.

- ``Erf``: ``erf'(x) = 2 / sqrt(pi) * exp(-x^2)``.
- ``Gelu``: ``x Phi(x)`` with ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``; ``Gelu'(x) = Phi(x) + x phi(x)``,
  ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)`` (also used for ``approximate="tanh"``, which differs from
  it by less than 1e-3).
"""

from __future__ import annotations

import math

import onnx_ir as ir

from onnxlrp.builder import dtype_of
from onnxlrp.ops.base import ElementwiseUnit, GraphContext, register


@register("Erf")
def erf(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit:
    x = node.inputs[0]

    def derivative(b):
        dt = dtype_of(x)
        return b.op("Mul", b.op("Exp", b.op("Neg", b.op("Mul", x, x))), b.const(2.0 / math.sqrt(math.pi), dt))

    return ElementwiseUnit([node], x, node.outputs[0], "Activation", derivative)


@register("Gelu")
def gelu(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit:
    x = node.inputs[0]

    def derivative(b):
        dt = dtype_of(x)
        cdf = b.op("Erf", b.op("Mul", x, b.const(1.0 / math.sqrt(2.0), dt)))
        cdf = b.op("Mul", b.op("Add", cdf, b.const(1.0, dt)), b.const(0.5, dt))
        pdf = b.op("Exp", b.op("Mul", b.op("Mul", x, x), b.const(-0.5, dt)))
        pdf = b.op("Mul", pdf, b.const(1.0 / math.sqrt(2.0 * math.pi), dt))
        return b.op("Add", cdf, b.op("Mul", x, pdf))

    return ElementwiseUnit([node], x, node.outputs[0], "Activation", derivative)
