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
from onnxlrp.ops.base import GraphContext, LinearUnit, Unsupported, constant, register


def _conv_geometry(node: ir.Node, weight: np.ndarray, in_spatial: list[int | None]) -> dict:
    """Strides, dilations and explicit pads of a Conv (auto_pad resolved on static input sizes)."""
    n = weight.ndim - 2
    attrs = node.attributes
    kernel = list(weight.shape[2:])
    strides = list(attrs.get_ints("strides", [1] * n))
    dilations = list(attrs.get_ints("dilations", [1] * n))
    pads = list(attrs.get_ints("pads", [0] * (2 * n)))
    auto_pad = attrs.get_string("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if None in in_spatial:
            raise Unsupported("auto_pad SAME needs static spatial input sizes")
        begins, ends = [], []
        for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begins + ends
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    return {
        "kernel": kernel,
        "strides": strides,
        "dilations": dilations,
        "pads": pads,
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
        if shape is None or None in shape[2:]:
            raise Unsupported(f"input {x.name!r} needs static spatial dimensions, got {shape}")
        super().__init__([node], x, node.outputs[0], weight, bias, "Convolution", ctx)
        self.geometry = _conv_geometry(node, weight, shape[2:])
        g = self.geometry
        self.output_padding = []
        for size, k, s, d, pb, pe in zip(
            shape[2:],
            g["kernel"],
            g["strides"],
            g["dilations"],
            g["pads"][: len(g["kernel"])],
            g["pads"][len(g["kernel"]) :],
        ):
            out = (size + pb + pe - ((k - 1) * d + 1)) // s + 1
            self.output_padding.append(size - ((out - 1) * s + (k - 1) * d + 1 - pb - pe))

    def _attrs(self) -> dict:
        g = self.geometry
        return {"strides": g["strides"], "dilations": g["dilations"], "pads": g["pads"], "group": g["group"]}

    def forward(self, b: Builder, x, weight, bias):
        inputs = [x, b.const(weight, hint="w")]
        if bias is not None:
            inputs.append(b.const(bias, hint="b"))
        return b.op("Conv", *inputs, **self._attrs())

    def transposed(self, b: Builder, g, weight):
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

    The weight is held as a (in, out) matrix: ``z = x @ W + b``.
    """

    def forward(self, b: Builder, x, weight, bias):
        z = b.op("MatMul", x, b.const(weight, hint="w"))
        return z if bias is None else b.op("Add", z, b.const(bias, hint="b"))

    def transposed(self, b: Builder, g, weight):
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
    if attrs.get_int("transB", 0):
        weight = weight.T
    weight = attrs.get_float("alpha", 1.0) * weight
    bias = constant(c)
    if c is not None and bias is None:
        raise Unsupported("the bias C must be a constant")
    if bias is not None:
        bias = attrs.get_float("beta", 1.0) * bias
        if bias.size not in (1, weight.shape[1]):
            raise Unsupported(f"bias C of shape {bias.shape} is not per output feature")
        bias = np.broadcast_to(bias.reshape(-1), (weight.shape[1],)).astype(weight.dtype)
    return DenseUnit([node], a, node.outputs[0], weight.astype(weight.dtype), bias, "Dense", ctx)


@register("MatMul")
def matmul_unit(node: ir.Node, ctx: GraphContext) -> LinearUnit:
    x, w = node.inputs
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
    return DenseUnit(nodes, x, output, weight, bias, "Dense", ctx)
