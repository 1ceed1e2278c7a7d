"""Ops that pick, mask or broadcast entries of an activation, as transformers use them.

All are ``RoutingUnit``\\ s (relevance follows the gradient, whatever the composite), except Neg:

- ``Gather(x, indices)`` (``hidden[:, 0]``, the last token): the relevance is scattered back with
  ``ScatterElements(reduction="add")``, so repeated indices add up.
- ``Where(cond, a, b)`` with a condition that is no activation (causal and padding masks): each
  activation operand gets the relevance where it was chosen (summed over broadcast axes).
- ``Expand(x, shape)`` (grouped KV heads: ``repeat_kv``): summed over the broadcast axes.
- ``Slice`` whose starts/ends are computed at run time (``x[..., : x.shape[-1] // 2]`` in rotary
  embeddings): zero-padded back with pads computed at run time.
- ``Neg``: an ``ElementwiseUnit`` of category ``"Affine"`` (derivative -1), like a scaling by -1.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.ops.attention import sum_to
from onnxlrp.ops.base import ElementwiseUnit, GraphContext, RoutingUnit, Unsupported, constant, register


def _zeros_like(b: Builder, x: ir.Value) -> ir.Value:
    return b.op("ConstantOfShape", b.shape(x), value=ir.tensor(np.zeros(1, dtype=dtype_of(x))))


def _rank(x: ir.Value) -> int:
    shape = static_shape(x)
    if shape is None:
        raise Unsupported(f"the rank of {x.name!r} must be known")
    return len(shape)


@register("Gather")
def gather(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x, indices = node.inputs[0], node.inputs[1]
    if not ctx.is_activation(x) or ctx.is_activation(indices):
        raise Unsupported("only Gather from an activation by indices that are no activation is supported")
    rank = _rank(x)
    axis = node.attributes.get_int("axis", 0) % rank

    def backward(b: Builder, relevances):
        (r,) = relevances
        flat = b.op("Reshape", indices, b.int64([-1]))
        before = b.op("Shape", x, start=0, end=axis) if axis else None
        after = b.op("Shape", x, start=axis + 1) if axis + 1 < rank else None
        parts = [p for p in (before, b.int64([-1]), after) if p is not None]
        target = b.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0]
        r = b.op("Reshape", r, target)
        index_shape = [1] * axis + [-1] + [1] * (rank - axis - 1)
        spread = b.op("Expand", b.op("Reshape", flat, b.int64(index_shape)), b.shape(r))
        return [b.scatter_add(_zeros_like(b, x), spread, r, axis=axis)]

    return RoutingUnit([node], [x], [node.outputs[0]], backward)


@register("Where")
def where(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    cond, a, c = node.inputs
    if ctx.is_activation(cond):
        raise Unsupported("the condition must not depend on the explained inputs")
    y = node.outputs[0]
    picks = [(i, v) for i, v in ((0, a), (1, c)) if ctx.is_activation(v)]

    def backward(b: Builder, relevances):
        (r,) = relevances
        zero = b.const(0.0, dtype_of(r))
        out = []
        for i, v in picks:
            chosen = b.op("Where", cond, r, zero) if i == 0 else b.op("Where", cond, zero, r)
            out.append(sum_to(b, chosen, v, y))
        return out

    return RoutingUnit([node], [v for _, v in picks], [y], backward)


@register("Expand")
def expand(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x, y = node.inputs[0], node.outputs[0]
    _rank(x)
    return RoutingUnit([node], [x], [y], lambda b, r: [sum_to(b, r[0], x, y)])


@register("Neg")
def neg(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit:
    x = node.inputs[0]
    return ElementwiseUnit([node], x, node.outputs[0], "Affine", lambda b: b.const(-1.0, dtype_of(x)))


def dynamic_slice_unit(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    """A ``Slice`` (steps 1, constant axes) whose starts/ends are computed at run time."""
    x = node.inputs[0]
    rank = _rank(x)
    inputs = list(node.inputs[1:5]) + [None] * 4
    starts, ends, axes_value, steps_value = inputs[:4]
    if any(v is not None and ctx.is_activation(v) for v in (starts, ends)):
        raise Unsupported("starts and ends must not depend on the explained inputs")
    axes = constant(axes_value) if axes_value is not None else None
    steps = constant(steps_value) if steps_value is not None else None
    if axes_value is not None and axes is None:
        raise Unsupported("the axes must be a constant")
    if steps_value is not None and (steps is None or np.any(steps != 1)):
        raise Unsupported("only Slice with steps 1 is supported")
    if axes is None:
        count = static_shape(starts)
        if count is None or count[0] is None:
            raise Unsupported("the number of sliced axes must be known")
        axes = list(range(count[0]))
    axes = [int(a) % rank for a in np.asarray(axes).reshape(-1)]

    def backward(b: Builder, relevances):
        (r,) = relevances
        sizes = b.op("Gather", b.shape(x), b.int64(axes), axis=0)
        zero = b.int64([0])

        def clamp(v):
            v = b.op("Where", b.op("Less", v, zero), b.op("Add", v, sizes), v)
            return b.op("Min", b.op("Max", v, zero), sizes)

        begin = clamp(b.op("Cast", starts, to=ir.DataType.INT64))
        end = b.op("Max", clamp(b.op("Cast", ends, to=ir.DataType.INT64)), begin)
        after = b.op("Sub", sizes, end)
        pads = []
        for part in (begin, after):
            for d in range(rank):
                if d in axes:
                    pads.append(b.op("Gather", part, b.int64([axes.index(d)]), axis=0))
                else:
                    pads.append(zero)
        return [b.op("Pad", r, b.op("Concat", *pads, axis=0))]

    return RoutingUnit([node], [x], [node.outputs[0]], backward)


__all__ = ["dynamic_slice_unit"]
