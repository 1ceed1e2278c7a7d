"""LayerNorm and RMSNorm: the ``LayerNormalization`` op and both written out as several nodes.

A ``NormUnit`` (kind ``"normalization"``) normalises ``x`` over its last axes ``A`` (n entries):

- LayerNorm (category ``"LayerNorm"``): ``y = (x - mean(x)) * inv * gamma + beta`` with
  ``inv = 1 / sqrt(var(x) + eps)``. Written out: ``ReduceMean, Sub, Pow (or Mul), ReduceMean, Add,
  Sqrt, Div``, gamma and beta then being separate ``Mul``/``Add`` by constants (units of their own).
- RMSNorm (category ``"RMSNorm"``): ``y = x * r``, ``r = 1 / sqrt(mean(x^2) + eps)``, written out
  as ``Pow (or Mul), ReduceMean, Add, Sqrt, Div(1, .) (or Reciprocal), Mul(x, r)`` or as
  ``Div(x, sqrt(...))``; the weight is a separate ``Mul``. The ``r`` branch is part of the unit, not
  a second input.

Each unit emits two vector-Jacobian products (``g`` given at ``y``, mean over ``A``):

- ``gradient(g)``, the true one: LayerNorm ``inv * (g' - mean(g') - xhat * mean(g' xhat))`` with
  ``g' = g * gamma``, ``xhat = (x - mean) * inv``; RMSNorm ``r g - x r^3 mean(x g)``.
- ``frozen(g)``, with the statistics (``inv``, ``r``) held constant, as LXT does with
  ``stop_gradient(std)``: LayerNorm ``g' inv - mean(g' inv)``; RMSNorm ``r g``.

AttnLRP takes gradient x input with the statistics frozen (``InputXGradient``: relevance flows
through ``(x - mean) * gamma / sigma + beta``, beta keeping its share) and the identity on RMSNorm.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.ops.base import GraphContext, Unit, Unsupported, constant, register
from onnxlrp.ops.fusion import register_fusion


class NormUnit(Unit):
    """A normalisation of ``x`` over ``axes`` (see the module docstring)."""

    kind = "normalization"

    def __init__(self, nodes: list[ir.Node], x: ir.Value, output: ir.Value, category: str, axes: list[int]):
        super().__init__(nodes, [x], [output], category)
        self.x = x
        self.output = output
        self.axes = axes

    def mean(self, b: Builder, value: ir.Value) -> ir.Value:
        """``value`` averaged over the normalised axes (kept); ReduceSum takes its axes as an input
        in every opset from 13 on, ReduceMean only from 18."""
        total = b.op("ReduceSum", value, b.int64(self.axes), keepdims=1)
        dims = static_shape(self.x)
        sizes = [dims[a] for a in self.axes] if dims is not None else [None]
        if None not in sizes:
            return b.op("Div", total, b.const(float(np.prod(sizes)), dtype_of(self.x)))
        count = b.op("ReduceProd", b.op("Gather", b.shape(self.x), b.int64(self.axes), axis=0), keepdims=1)
        return b.op("Div", total, b.op("Cast", count, to=self.x.dtype))

    def gradient(self, b: Builder, g: ir.Value) -> ir.Value:
        raise NotImplementedError

    def frozen(self, b: Builder, g: ir.Value) -> ir.Value:
        raise NotImplementedError


class LayerNormUnit(NormUnit):
    """``(x - mean) * inv * gamma + beta``; ``inv`` comes from the forward graph when it has it."""

    def __init__(
        self, nodes, x, output, axes, epsilon: float, gamma=None, forward: tuple = (None, None, None)
    ):
        super().__init__(nodes, x, output, "LayerNorm", axes)
        self.epsilon = epsilon
        self.gamma = gamma  # a constant array, or None (1)
        self._centred, self._root, self._inv = forward  # x - mean, sigma, 1 / sigma where known

    def _stats(self, b: Builder) -> tuple[ir.Value, ir.Value]:
        dt = dtype_of(self.x)
        centred = self._centred or b.op("Sub", self.x, self.mean(b, self.x))
        inv = self._inv
        if inv is None and self._root is not None:
            inv = b.op("Reciprocal", self._root)
        if inv is None:
            var = self.mean(b, b.op("Mul", centred, centred))
            inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.const(self.epsilon, dt))))
        return centred, inv

    def _scaled(self, b: Builder, g: ir.Value) -> ir.Value:
        return (
            g if self.gamma is None else b.op("Mul", g, b.const(self.gamma, dtype_of(self.x), hint="gamma"))
        )

    def gradient(self, b, g):
        centred, inv = self._stats(b)
        gs = self._scaled(b, g)
        xhat = b.op("Mul", centred, inv)
        inner = b.op(
            "Sub", b.op("Sub", gs, self.mean(b, gs)), b.op("Mul", xhat, self.mean(b, b.op("Mul", gs, xhat)))
        )
        return b.op("Mul", inv, inner)

    def frozen(self, b, g):
        _, inv = self._stats(b)
        gs = b.op("Mul", self._scaled(b, g), inv)
        return b.op("Sub", gs, self.mean(b, gs))


class RMSNormUnit(NormUnit):
    """``x * r``, ``r = 1 / sqrt(mean(x^2) + eps)`` (``r`` taken from the forward graph)."""

    def __init__(self, nodes, x, output, axes, r: ir.Value | None, root: ir.Value):
        super().__init__(nodes, x, output, "RMSNorm", axes)
        self._r = r
        self._root = root  # sqrt(mean(x^2) + eps)

    def _factor(self, b: Builder) -> ir.Value:
        return self._r if self._r is not None else b.op("Reciprocal", self._root)

    def gradient(self, b, g):
        r = self._factor(b)
        r3 = b.op("Mul", b.op("Mul", r, r), r)
        return b.op(
            "Sub",
            b.op("Mul", r, g),
            b.op("Mul", b.op("Mul", self.x, r3), self.mean(b, b.op("Mul", self.x, g))),
        )

    def frozen(self, b, g):
        return b.op("Mul", g, self._factor(b))


@register("LayerNormalization")
def layer_normalization(node: ir.Node, ctx: GraphContext) -> LayerNormUnit:
    x = node.inputs[0]
    shape = static_shape(x)
    if shape is None:
        raise Unsupported(f"the rank of {x.name!r} must be known")
    if any(o.consumers() or o.is_graph_output() for o in node.outputs[1:] if o is not None):
        raise Unsupported("the Mean and InvStdDev outputs must be unused")
    gamma = constant(node.inputs[1])
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if gamma is None or (bias is not None and constant(bias) is None):
        raise Unsupported("scale and bias must be constants")
    axis = node.attributes.get_int("axis", -1) % len(shape)
    axes = list(range(axis, len(shape)))
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    return LayerNormUnit([node], x, node.outputs[0], axes, epsilon, gamma=gamma)


# ------------------------------------------------------------------------------------------------
# written-out forms


def _only_consumer(value: ir.Value, op_types: tuple[str, ...]) -> ir.Node | None:
    consumers = value.consumers()
    if len(consumers) != 1 or value.is_graph_output() or consumers[0].op_type not in op_types:
        return None
    return consumers[0]


def _square_of(node: ir.Node, value: ir.Value) -> bool:
    """Whether ``node`` computes ``value ** 2`` (``Pow(v, 2)`` or ``Mul(v, v)``)."""
    if node.op_type == "Pow":
        exponent = constant(node.inputs[1])
        return (
            node.inputs[0] is value and exponent is not None and exponent.size == 1 and float(exponent) == 2.0
        )
    return node.op_type == "Mul" and node.inputs[0] is value and node.inputs[1] is value


def _reduce_axes(node: ir.Node, rank: int) -> list[int] | None:
    if node.op_type != "ReduceMean" or not node.attributes.get_int("keepdims", 1):
        return None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = constant(node.inputs[1])
        if axes is None:
            return None
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    else:
        axes = list(node.attributes.get_ints("axes", []))
    if not axes:
        return None
    axes = sorted(a % rank for a in axes)
    return axes if axes == list(range(axes[0], rank)) else None


def _root_of_mean(mean: ir.Node) -> tuple[list[ir.Node], ir.Value, float] | None:
    """``Add(mean, eps) -> Sqrt``: the nodes, the root value and eps."""
    add = _only_consumer(mean.outputs[0], ("Add",))
    if add is None:
        return None
    eps = add.inputs[1] if add.inputs[0] is mean.outputs[0] else add.inputs[0]
    value = constant(eps)
    if value is None or value.size != 1:
        return None
    sqrt = _only_consumer(add.outputs[0], ("Sqrt",))
    if sqrt is None:
        return None
    return [add, sqrt], sqrt.outputs[0], float(value.reshape(()))


def _divide_by(root: ir.Value, numerator: ir.Value) -> tuple[list[ir.Node], ir.Value, ir.Value | None] | None:
    """``numerator / root`` as ``Div(n, root)`` or ``Mul(n, r)`` with ``r = 1 / root``.

    Returns the nodes, the result and ``r`` (None for the Div form).
    """
    consumers = root.consumers()
    if len(consumers) != 1 or root.is_graph_output():
        return None
    node = consumers[0]
    if node.op_type == "Div" and node.inputs[1] is root and node.inputs[0] is numerator:
        return [node], node.outputs[0], None
    one = constant(node.inputs[0]) if node.op_type == "Div" and node.inputs[1] is root else None
    if node.op_type == "Reciprocal" or (one is not None and one.size == 1 and float(one) == 1.0):
        r = node.outputs[0]
        mul = _only_consumer(r, ("Mul",))
        if mul is None or numerator not in mul.inputs:
            return None
        return [node, mul], mul.outputs[0], r
    return None


@register_fusion
def written_out_layer_norm(node: ir.Node, ctx: GraphContext) -> LayerNormUnit | None:
    """``d = x - mean(x); y = d / sqrt(mean(d^2) + eps)`` starting at ``ReduceMean(x)``."""
    if node.op_type != "ReduceMean" or not ctx.is_activation(node.inputs[0]):
        return None
    x = node.inputs[0]
    shape = static_shape(x)
    axes = None if shape is None else _reduce_axes(node, len(shape))
    if axes is None:
        return None
    mean = node.outputs[0]
    subs = [c for c in mean.consumers() if c.op_type == "Sub" and c.inputs[0] is x and c.inputs[1] is mean]
    if len(subs) != 1 or len(mean.consumers()) != 1:
        return None
    sub = subs[0]
    centred = sub.outputs[0]
    squares = [c for c in centred.consumers() if _square_of(c, centred)]
    if len(squares) != 1 or len(centred.consumers()) != 2:
        return None
    square = squares[0]
    var = _only_consumer(square.outputs[0], ("ReduceMean",))
    if var is None or _reduce_axes(var, len(shape)) != axes:
        return None
    root = _root_of_mean(var)
    if root is None:
        return None
    root_nodes, sigma, eps = root
    division = _divide_by(sigma, centred)
    if division is None:
        return None
    div_nodes, y, inv = division
    nodes = [node, sub, square, var, *root_nodes, *div_nodes]
    return LayerNormUnit(nodes, x, y, axes, eps, forward=(centred, sigma, inv))


@register_fusion
def written_out_rms_norm(node: ir.Node, ctx: GraphContext) -> RMSNormUnit | None:
    """``y = x * rsqrt(mean(x^2) + eps)`` (or ``x / sqrt(...)``) starting at the square of x."""
    if node.op_type not in ("Pow", "Mul") or not ctx.is_activation(node.inputs[0]):
        return None
    x = node.inputs[0]
    if not _square_of(node, x):
        return None
    shape = static_shape(x)
    mean = _only_consumer(node.outputs[0], ("ReduceMean",))
    axes = None if mean is None or shape is None else _reduce_axes(mean, len(shape))
    if axes is None:
        return None
    root = _root_of_mean(mean)
    if root is None:
        return None
    root_nodes, root_value, _ = root
    division = _divide_by(root_value, x)
    if division is None:
        return None
    div_nodes, y, r = division
    return RMSNormUnit([node, mean, *root_nodes, *div_nodes], x, y, axes, r, root_value)


__all__ = ["LayerNormUnit", "NormUnit", "RMSNormUnit"]
