"""Ops that only move or relabel entries: relevance follows them back unchanged.

Reshape, Flatten, Squeeze, Unsqueeze: reshape the relevance to the input's run-time shape.
Transpose: the inverse permutation. Slice: zero-pad back. Pad (constant mode): slice back.
Identity, Dropout (inference), Cast: pass through (cast back to the input's type).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import static_shape
from onnxlrp.ops.base import GraphContext, RoutingUnit, Unsupported, constant, register
from onnxlrp.ops.indexing import dynamic_slice_unit
from onnxlrp.ops.padding import pad_unit

_BIG = np.iinfo(np.int64).max


def _single(node: ir.Node, backward) -> RoutingUnit:
    return RoutingUnit([node], [node.inputs[0]], [node.outputs[0]], lambda b, r: [backward(b, r[0])])


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x = node.inputs[0]
    return _single(node, lambda b, r: b.op("Reshape", r, b.shape(x)))


@register("Transpose")
def transpose(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    shape = static_shape(node.inputs[0])
    perm = node.attributes.get_ints("perm", None)
    if perm is None:
        if shape is None:
            raise Unsupported("the input rank must be known")
        perm = list(reversed(range(len(shape))))
    inverse = [int(i) for i in np.argsort(perm)]
    return _single(node, lambda b, r: b.op("Transpose", r, perm=inverse))


@register("Identity", "Dropout")
def identity(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    return _single(node, lambda b, r: r)


@register("Cast")
def cast(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x = node.inputs[0]
    return _single(node, lambda b, r: b.op("Cast", r, to=x.dtype))


@register("Slice")
def slice_(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x = node.inputs[0]
    shape = static_shape(x)
    if any(v is not None and constant(v) is None for v in node.inputs[1:3]):
        return dynamic_slice_unit(node, ctx)  # starts/ends computed at run time: see ops.indexing
    args = [constant(v) if v is not None else None for v in list(node.inputs[1:5]) + [None] * 4][:4]
    for value, arr, what in zip(node.inputs[1:5], args, ("starts", "ends", "axes", "steps")):
        if value is not None and arr is None:
            raise Unsupported(f"{what} must be a constant")
    starts, ends, axes, steps = args
    if shape is None:
        raise Unsupported("the input rank must be known")
    axes = [int(a) % len(shape) for a in (axes if axes is not None else range(len(starts)))]
    steps = [1] * len(axes) if steps is None else [int(s) for s in steps]
    if any(s != 1 for s in steps):
        raise Unsupported("Slice with steps other than 1 is not supported")
    pads = [0] * (2 * len(shape))
    for axis, start, end in zip(axes, starts, ends):
        size = shape[axis]
        if size is None:
            raise Unsupported(f"axis {axis} of {x.name!r} must be static to undo the slice")
        begin = int(np.clip(start + size if start < 0 else start, 0, size))
        stop = int(np.clip(end + size if end < 0 else end, 0, size))
        pads[axis], pads[len(shape) + axis] = begin, size - max(stop, begin)
    return _single(node, lambda b, r: b.op("Pad", r, b.int64(pads)))


@register("Pad")
def pad(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x = node.inputs[0]
    pads = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if node.attributes.get_string("mode", "constant") != "constant" or pads is None:
        return pad_unit(node, ctx)  # reflect/edge modes, run-time pads: see ops.padding
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    shape = static_shape(x)
    if shape is None:
        raise Unsupported("the input rank must be known")
    rank = len(shape)
    axes = list(range(rank)) if axes_value is None else [int(a) % rank for a in constant(axes_value)]
    n = len(axes)
    starts = [int(p) for p in pads[:n]]
    ends = [-int(p) if p > 0 else _BIG for p in pads[n:]]
    if any(p < 0 for p in pads):
        raise Unsupported("negative pads are not supported")
    return _single(node, lambda b, r: b.op("Slice", r, b.int64(starts), b.int64(ends), b.int64(axes)))
