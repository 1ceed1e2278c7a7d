"""``Pad`` in every mode, and with pads computed at run time: relevance follows the gradient.

- ``constant`` mode: the padded entries are constants, so the relevance of the input is the
  central slice of the output's, ``R_x = R_y[p_begin : p_begin + shape(x)]``. When the pads are a
  run-time value (converters build "same" padding from ``Shape``/``Gather``/``Concat``/``Cast``
  arithmetic on dynamic sizes) the slice bounds are computed from that value at run time.
- ``reflect`` and ``edge`` modes: every output entry is a copy of one input entry,
  ``y_i = x_{s(i)}`` along each padded axis, so ``y = x x_a S_a`` with a 0/1 selection matrix
  ``S_a`` (``n_out x n_in``) per axis, and the gradient is ``R_x = R_y x_a S_a^T``: each input entry
  gathers the relevance of all its copies (relevance is conserved). ``S_a`` is built at compile
  time, so the padded axes need static sizes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.ops.base import GraphContext, RoutingUnit, Unsupported, constant

_BIG = np.iinfo(np.int64).max


def _source_index(i: int, n: int, mode: str) -> int:
    """The input index that output position ``i`` (in input coordinates, may be outside) copies."""
    if mode == "edge":
        return min(max(i, 0), n - 1)
    if n == 1:
        return 0
    period = 2 * (n - 1)  # reflect without repeating the edge: 0 1 2 1 0 1 2 ...
    i = i % period
    return i if i < n else period - i


def selection_matrix(n: int, begin: int, end: int, mode: str) -> np.ndarray:
    """``S`` (``n + begin + end`` x ``n``): row ``i`` selects the input entry output ``i`` copies."""
    rows = n + begin + end
    matrix = np.zeros((rows, n))
    for i in range(rows):
        matrix[i, _source_index(i - begin, n, mode)] = 1.0
    return matrix


def _axes(node: ir.Node, rank: int) -> list[int]:
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    if axes_value is None:
        return list(range(rank))
    axes = constant(axes_value)
    if axes is None:
        raise Unsupported("the axes of Pad must be a constant")
    return [int(a) % rank for a in axes.reshape(-1)]


def _move_axis_last(b: Builder, r: ir.Value, axis: int, rank: int) -> tuple[ir.Value, list[int]]:
    perm = [a for a in range(rank) if a != axis] + [axis]
    return b.op("Transpose", r, perm=perm), [int(i) for i in np.argsort(perm)]


def pad_unit(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    """The routing unit of any ``Pad`` (see the module docstring)."""
    x, y = node.inputs[0], node.outputs[0]
    mode = node.attributes.get_string("mode", "constant")
    shape = static_shape(x)
    if shape is None:
        raise Unsupported("the input rank must be known")
    if mode not in ("constant", "reflect", "edge"):
        raise Unsupported(f"Pad mode {mode!r} is not supported")
    rank = len(shape)
    axes = _axes(node, rank)
    n = len(axes)
    pads_value = node.inputs[1] if len(node.inputs) > 1 else None
    if pads_value is None:  # opset < 11: pads as an attribute (the version converter moves it)
        raise Unsupported("Pad without a pads input is not supported")
    pads = constant(pads_value)
    if pads is not None and np.any(pads < 0):
        raise Unsupported("negative pads are not supported")

    if mode == "constant" and pads is not None:
        starts = [int(p) for p in pads[:n]]
        ends = [-int(p) if p > 0 else _BIG for p in pads[n:]]

        def backward(b: Builder, relevances):
            return [b.op("Slice", relevances[0], b.int64(starts), b.int64(ends), b.int64(axes))]

    elif mode == "constant":  # pads known at run time only: slice [begin, begin + size)

        def backward(b: Builder, relevances):
            pads64 = b.op("Cast", pads_value, to=ir.DataType.INT64)
            begins = b.op("Slice", pads64, b.int64([0]), b.int64([n]))
            sizes = b.op("Gather", b.shape(x), b.int64(axes), axis=0)
            ends_ = b.op("Add", begins, sizes)
            return [b.op("Slice", relevances[0], begins, ends_, b.int64(axes))]

    else:
        if pads is None:
            raise Unsupported(f"Pad mode {mode!r} needs constant pads")
        matrices = {}
        for k, axis in enumerate(axes):
            begin, end = int(pads[k]), int(pads[n + k])
            if begin == 0 and end == 0:
                continue
            if shape[axis] is None:
                raise Unsupported(f"axis {axis} of {x.name!r} must be static for {mode}-mode Pad")
            if mode == "reflect" and (begin >= shape[axis] or end >= shape[axis]):
                raise Unsupported("reflect pads must be smaller than the padded axis")
            matrices[axis] = selection_matrix(shape[axis], begin, end, mode)

        def backward(b: Builder, relevances):
            r = relevances[0]
            for axis, matrix in matrices.items():
                moved, inverse = _move_axis_last(b, r, axis, rank)
                moved = b.op("MatMul", moved, b.const(matrix, dtype_of(x), hint="pad_select"))
                r = b.op("Transpose", moved, perm=inverse)
            return [r]

    return RoutingUnit([node], [x], [y], backward)
