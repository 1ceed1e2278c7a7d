"""Pools. Average pools are sums of entries (``SummationUnit``: Zennit's Norm rule applies);
MaxPool routes relevance to the winning entry through MaxPool's own indices.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.ops.base import GraphContext, RoutingUnit, SummationUnit, Unsupported, constant, register
from onnxlrp.ops.linear import explicit_pads


def _valid_counts(size: int, out: int, k: int, s: int, pb: int) -> np.ndarray:
    """For each window along one axis, how many of its k taps fall inside the input."""
    starts = np.arange(out) * s - pb
    taps = starts[:, None] + np.arange(k)[None, :]
    return ((taps >= 0) & (taps < size)).sum(axis=1)


@register("AveragePool")
def average_pool(node: ir.Node, ctx: GraphContext) -> SummationUnit:
    x, y = node.inputs[0], node.outputs[0]
    attrs = node.attributes
    shape, out_shape = static_shape(x), static_shape(y)
    if shape is None or None in shape[1:] or out_shape is None or None in out_shape[1:]:
        raise Unsupported(f"input {x.name!r} needs static non-batch dimensions, got {shape}")
    kernel = list(attrs.get_ints("kernel_shape"))
    n = len(kernel)
    strides = list(attrs.get_ints("strides", [1] * n))
    if list(attrs.get_ints("dilations", [1] * n)) != [1] * n:
        raise Unsupported("dilated average pooling is not supported")
    spatial, out_spatial = shape[2:], out_shape[2:]
    pads = explicit_pads(attrs, spatial, kernel, strides, [1] * n)
    for size, out, k, s, pb, pe in zip(spatial, out_spatial, kernel, strides, pads[:n], pads[n:]):
        if (out - 1) * s + k > size + pb + pe:
            raise Unsupported("ceil_mode windows that run past the padded input are not supported")
    if attrs.get_int("count_include_pad", 0):
        divisor = np.full(out_spatial, float(np.prod(kernel)))
    else:
        divisor = np.ones(out_spatial)
        for axis, args in enumerate(zip(spatial, out_spatial, kernel, strides, pads[:n])):
            counts = _valid_counts(*args).reshape([-1 if i == axis else 1 for i in range(n)])
            divisor = divisor * counts
    channels = shape[1]
    dtype = dtype_of(x)
    output_padding = [
        size - ((out - 1) * s + k - pb - pe)
        for size, out, k, s, pb, pe in zip(spatial, out_spatial, kernel, strides, pads[:n], pads[n:])
    ]

    def transposed(b: Builder, g: ir.Value, index: int) -> ir.Value:
        g = b.op("Mul", g, b.const((1.0 / divisor)[None, None], dtype))
        ones = b.const(np.ones([channels, 1] + kernel), dtype, hint="ones_kernel")
        return b.op(
            "ConvTranspose",
            g,
            ones,
            strides=strides,
            pads=pads,
            group=channels,
            output_padding=output_padding,
        )

    return SummationUnit([node], [x], y, "AvgPool", transposed)


def _mean_unit(node: ir.Node, axes: list[int], keepdims: bool, divide: bool, category: str) -> SummationUnit:
    x, y = node.inputs[0], node.outputs[0]
    shape = static_shape(x)
    if shape is None:
        raise Unsupported(f"the rank of {x.name!r} must be known")
    axes = [a % len(shape) for a in (axes if axes else range(len(shape)))]
    sizes = [shape[a] for a in axes]
    count = float(np.prod(sizes)) if divide and None not in sizes else None  # None: counted at run time

    def transposed(b: Builder, g: ir.Value, index: int) -> ir.Value:
        if not keepdims:
            g = b.op("Unsqueeze", g, b.int64(axes))
        if divide and count is None:  # symbolic sizes (fully convolutional models)
            n = b.op("ReduceProd", b.op("Gather", b.shape(x), b.int64(axes), axis=0), keepdims=0)
            g = b.op("Div", g, b.op("Cast", n, to=x.dtype))
        elif divide:
            g = b.op("Div", g, b.const(count, dtype_of(x)))
        return b.op("Expand", g, b.shape(x))

    return SummationUnit([node], [x], y, category, transposed)


@register("GlobalAveragePool")
def global_average_pool(node: ir.Node, ctx: GraphContext) -> SummationUnit:
    shape = static_shape(node.inputs[0])
    rank = len(shape) if shape is not None else 4
    return _mean_unit(node, list(range(2, rank)), True, True, "AvgPool")


def _reduce_axes(node: ir.Node) -> list[int]:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = constant(node.inputs[1])
        if axes is None:
            raise Unsupported("the axes must be a constant")
        return [int(a) for a in axes.reshape(-1)]
    if node.attributes.get_int("noop_with_empty_axes", 0):
        raise Unsupported("noop_with_empty_axes is not supported")
    return list(node.attributes.get_ints("axes", []))


@register("ReduceMean")
def reduce_mean(node: ir.Node, ctx: GraphContext) -> SummationUnit:
    """ReduceMean, used as a pool (``x.mean((2, 3))``): the Norm rule applies as for AvgPool."""
    return _mean_unit(node, _reduce_axes(node), bool(node.attributes.get_int("keepdims", 1)), True, "AvgPool")


@register("ReduceSum")
def reduce_sum(node: ir.Node, ctx: GraphContext) -> SummationUnit:
    return _mean_unit(node, _reduce_axes(node), bool(node.attributes.get_int("keepdims", 1)), False, "Sum")


def _windows_overlap(node: ir.Node) -> bool:
    """Whether two of the MaxPool's windows can share an entry (a stride below the dilated kernel)."""
    kernel = list(node.attributes.get_ints("kernel_shape"))
    n = len(kernel)
    strides = node.attributes.get_ints("strides", [1] * n)
    dilations = node.attributes.get_ints("dilations", [1] * n)
    return any(s < (k - 1) * d + 1 for k, s, d in zip(kernel, strides, dilations))


def _scatter_add(b: Builder, relevance: ir.Value, indices: ir.Value, x: ir.Value) -> ir.Value:
    """``relevance`` added into zeros shaped like ``x`` at the flat ``indices``."""
    flat = b.int64([-1])
    zeros = b.op(
        "ConstantOfShape",
        b.op("Reshape", b.op("Size", x), flat),
        value=ir.tensor(np.zeros(1, dtype=dtype_of(relevance))),
    )
    scattered = b.scatter_add(zeros, b.op("Reshape", indices, flat), b.op("Reshape", relevance, flat), axis=0)
    return b.op("Reshape", scattered, b.shape(x))


@register("MaxPool")
def max_pool(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    """MaxPool: relevance goes to the entry that won each window (the gradient).

    The forward node is replaced by one that also outputs its indices (flat over the whole input
    tensor), and the relevance is scattered back with ``ScatterElements(reduction="add")``, so
    overlapping windows that share a winner add up. For onnxruntime's CPU provider (``ctx.cpu``),
    windows that do not overlap (VGG's 2x2, stride 2) use ``MaxUnpool``, about 40% faster there;
    the CUDA provider has no ``MaxUnpool`` kernel.
    """
    x, y = node.inputs[0], node.outputs[0]
    if node.attributes.get_int("storage_order", 0):
        raise Unsupported("storage_order=1 is not supported")
    unpool = ctx.cpu and not _windows_overlap(node)

    def backward(b: Builder, relevances):
        (relevance,) = relevances
        indices = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1].consumers() else None
        if indices is None:
            indices = b.ops("MaxPool", x, num_outputs=2, **{k: a.value for k, a in node.attributes.items()})[
                1
            ]
        if not unpool:
            return [_scatter_add(b, relevance, indices, x)]
        kernel = list(node.attributes.get_ints("kernel_shape"))
        strides = list(node.attributes.get_ints("strides", [1] * len(kernel)))
        shape = b.shape(x)  # onnxruntime's CPU MaxUnpool is float32 only
        return [b.in_float32("MaxUnpool", relevance, indices, shape, kernel_shape=kernel, strides=strides)]

    return RoutingUnit([node], [x], [y], backward)
