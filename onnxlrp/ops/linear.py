"""Layers with constant weights: Conv, ConvTranspose, Gemm, and MatMul by a constant (+ bias Add).

Each unit knows its forward product ``z = x * W + b`` and the transposed product ``W^T g`` (the
gradient of z w.r.t. x), so that a rule can run both with modified weights: for a Conv the
transposed product is a ConvTranspose with the same weight, strides, pads, dilations and groups.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, static_shape
from onnxlrp.ops import convgrad
from onnxlrp.ops.attention import product_unit
from onnxlrp.ops.base import GraphContext, LinearUnit, Unsupported, constant, register


def explicit_pads(attrs, in_spatial, kernel, strides, dilations) -> list[int]:
    """The pads of a Conv or pool, ``auto_pad`` resolved (SAME on static input sizes)."""
    auto_pad = attrs.get_string("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * (2 * len(kernel))
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return list(attrs.get_ints("pads", [0] * (2 * len(kernel))))
    if None in in_spatial:
        raise Unsupported("auto_pad SAME needs static spatial input sizes")
    begins, ends = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _conv_geometry(node: ir.Node, weight: np.ndarray, in_spatial: list[int | None]) -> dict:
    """Strides, dilations and explicit pads of a Conv (auto_pad resolved on static input sizes)."""
    n = weight.ndim - 2
    attrs = node.attributes
    kernel = list(weight.shape[2:])
    strides = list(attrs.get_ints("strides", [1] * n))
    dilations = list(attrs.get_ints("dilations", [1] * n))
    return {
        "kernel": kernel,
        "strides": strides,
        "dilations": dilations,
        "pads": explicit_pads(attrs, in_spatial, kernel, strides, dilations),
        "group": attrs.get_int("group", 1),
    }


class ConvUnit(LinearUnit):
    """``Conv``; its transposed product is a ``ConvTranspose`` sized to the input."""

    def __init__(self, node: ir.Node, ctx: GraphContext):
        x, w, b = (list(node.inputs) + [None])[:3]
        weight, bias = constant(w), constant(b)
        if weight is None:
            raise Unsupported("the weight must be a constant")
        shape = static_shape(x)
        if shape is None:
            raise Unsupported(f"the rank of input {x.name!r} must be known")
        super().__init__([node], x, node.outputs[0], weight, bias, "Convolution", ctx)
        self.geometry = _conv_geometry(node, weight, shape[2:])
        g = self.geometry
        # symbolic spatial sizes (fully convolutional models): the transposed product is sized at
        # run time instead (see ``transposed``)
        self.output_padding = [] if None not in shape[2:] else None
        for size, k, s, d, pb, pe in zip(
            shape[2:] if self.output_padding is not None else (),
            g["kernel"],
            g["strides"],
            g["dilations"],
            g["pads"][: len(g["kernel"])],
            g["pads"][len(g["kernel"]) :],
        ):
            out = (size + pb + pe - ((k - 1) * d + 1)) // s + 1
            self.output_padding.append(size - ((out - 1) * s + (k - 1) * d + 1 - pb - pe))
        self.as_conv = convgrad.plan(g)  # stride 1: the transposed product as a Conv

    def _attrs(self) -> dict:
        g = self.geometry
        return {"strides": g["strides"], "dilations": g["dilations"], "pads": g["pads"], "group": g["group"]}

    def forward(self, b: Builder, x, weight, bias):
        inputs = [x, b.const(weight, hint="w")]
        if bias is not None:
            inputs.append(b.const(bias, hint="b"))
        return b.op("Conv", *inputs, **self._attrs())

    def transposed(self, b: Builder, g, weight):
        if self.as_conv is not None:  # a Conv: onnxruntime's ConvTranspose kernel is much slower
            return self.as_conv.emit(b, g, weight)
        if self.output_padding is None:
            # The input size is known at run time only. ``in = (out - 1) s + (k - 1) d + 1 - pads + r``
            # with ``0 <= r < s``: the ConvTranspose with output_padding ``s - 1`` (it only appends
            # rows at the end) covers it, and the slice to the input's run-time size is exact.
            strides = self.geometry["strides"]
            n = len(strides)
            full = b.op(
                "ConvTranspose",
                g,
                b.const(weight, hint="w"),
                output_padding=[s - 1 for s in strides],
                **self._attrs(),
            )
            sizes = b.op("Slice", b.shape(self.x), b.int64([2]), b.int64([2 + n]))
            return b.op("Slice", full, b.int64([0] * n), sizes, b.int64(list(range(2, 2 + n))))
        return b.op(
            "ConvTranspose", g, b.const(weight, hint="w"), output_padding=self.output_padding, **self._attrs()
        )


class ConvTransposeUnit(LinearUnit):
    """``ConvTranspose``; its transposed product is a ``Conv`` with the same weight."""

    def __init__(self, node: ir.Node, ctx: GraphContext):
        x, w, b = (list(node.inputs) + [None])[:3]
        weight, bias = constant(w), constant(b)
        if weight is None:
            raise Unsupported("the weight must be a constant")
        attrs = node.attributes
        if attrs.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or "output_shape" in attrs:
            raise Unsupported("auto_pad SAME and output_shape are not supported; give explicit pads")
        super().__init__([node], x, node.outputs[0], weight, bias, "Convolution", ctx)
        n = weight.ndim - 2
        self.attrs = {
            "strides": list(attrs.get_ints("strides", [1] * n)),
            "dilations": list(attrs.get_ints("dilations", [1] * n)),
            "pads": list(attrs.get_ints("pads", [0] * (2 * n))),
            "group": attrs.get_int("group", 1),
        }
        self.output_padding = list(attrs.get_ints("output_padding", [0] * n))

    def forward(self, b: Builder, x, weight, bias):
        inputs = [x, b.const(weight, hint="w")]
        if bias is not None:
            inputs.append(b.const(bias, hint="b"))
        return b.op("ConvTranspose", *inputs, output_padding=self.output_padding, **self.attrs)

    def transposed(self, b: Builder, g, weight):
        return b.op("Conv", g, b.const(weight, hint="w"), **self.attrs)


class DenseUnit(LinearUnit):
    """``Gemm`` or ``MatMul`` by a constant matrix (with a following bias ``Add`` folded in).

    The weight is held as a (in, out) matrix: ``z = x @ W + b``. ``source`` is the model's own
    initializer holding the weight (unscaled), ``source_transposed`` whether it holds ``W^T``: the
    transposed product with the unmodified weight reads it instead of a transposed copy (VGG-16's
    first dense layer alone is 411 MB).
    """

    source: ir.Value | None = None
    source_transposed: bool = False

    def forward(self, b: Builder, x, weight, bias):
        z = b.op("MatMul", x, b.const(weight, hint="w"))
        return z if bias is None else b.op("Add", z, b.const(bias, hint="b"))

    def transposed(self, b: Builder, g, weight):
        if weight is self.weight and self.source is not None:
            if self.source_transposed:
                return b.op("MatMul", g, self.source)
            shape = static_shape(g)
            if shape is not None and len(shape) == 2:
                return b.op("Gemm", g, self.source, transB=1)
        return b.op("MatMul", g, b.const(np.ascontiguousarray(weight.T), hint="wt"))


@register("Conv")
def conv_unit(node: ir.Node, ctx: GraphContext) -> LinearUnit:
    return ConvUnit(node, ctx)


@register("ConvTranspose")
def conv_transpose_unit(node: ir.Node, ctx: GraphContext) -> LinearUnit:
    return ConvTransposeUnit(node, ctx)


@register("Gemm")
def gemm_unit(node: ir.Node, ctx: GraphContext) -> LinearUnit:
    a, w, c = (list(node.inputs) + [None])[:3]
    attrs = node.attributes
    weight = constant(w)
    if weight is None or not ctx.is_activation(a):
        raise Unsupported("only Gemm(activation, constant weight) is supported")
    if attrs.get_int("transA", 0):
        raise Unsupported("transA=1 on an activation is not supported")
    transposed = bool(attrs.get_int("transB", 0))
    if transposed:
        weight = weight.T
    alpha = attrs.get_float("alpha", 1.0)
    weight = alpha * weight
    bias = constant(c)
    if c is not None and bias is None:
        raise Unsupported("the bias C must be a constant")
    if bias is not None:
        bias = attrs.get_float("beta", 1.0) * bias
        if bias.size not in (1, weight.shape[1]):
            raise Unsupported(f"bias C of shape {bias.shape} is not per output feature")
        bias = np.broadcast_to(bias.reshape(-1), (weight.shape[1],)).astype(weight.dtype)
    unit = DenseUnit([node], a, node.outputs[0], weight.astype(weight.dtype), bias, "Dense", ctx)
    if alpha == 1.0:
        unit.source, unit.source_transposed = w, transposed
    return unit


@register("MatMul")
def matmul_unit(node: ir.Node, ctx: GraphContext) -> LinearUnit:
    x, w = node.inputs
    if ctx.is_activation(x) and ctx.is_activation(w):
        return product_unit(node, ctx)  # Q K^T, P V: see ops.attention
    weight = constant(w)
    if weight is None or not ctx.is_activation(x) or weight.ndim != 2:
        raise Unsupported("only MatMul(activation, constant 2-d weight) is supported here")
    nodes, output, bias = [node], node.outputs[0], None
    consumers = output.consumers()
    if len(consumers) == 1 and consumers[0].op_type == "Add" and not output.is_graph_output():
        add = consumers[0]
        other = add.inputs[1] if add.inputs[0] is output else add.inputs[0]
        c = constant(other)
        if c is not None and c.size in (1, weight.shape[1]) and c.ndim <= 2 and c.shape[:-1] in ((), (1,)):
            nodes, output = [node, add], add.outputs[0]
            bias = np.broadcast_to(c.reshape(-1), (weight.shape[1],)).astype(weight.dtype)
    unit = DenseUnit(nodes, x, output, weight, bias, "Dense", ctx)
    unit.source = w
    return unit
