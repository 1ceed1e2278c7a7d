"""Local response normalisation (AlexNet, GoogLeNet, ZFNet): ``y_c = x_c * g_c``,
``g_c = (bias + alpha / size * sum_{c' in window(c)} x_c'^2) ^ -beta``.

LRP practice (Binder et al. 2016, "Layer-wise relevance propagation for neural networks with local
renormalization layers") passes the relevance through such a layer (the identity rule): the
normaliser ``g`` is treated as a constant scaling of each entry, as a multiplicative gate is (see
``ops.gates``). The unit is an ``ElementwiseUnit`` of category ``"BatchNorm"`` (a normalisation
layer; LRP composites give it ``Pass``, as Zennit does for BatchNorm) whose derivative is ``g``, the
gradient with the normaliser held constant (gradient-based composites: not the full gradient,
which also has the cross-channel terms ``-2 beta alpha / size * x_c x_c' g_c / (...)``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of
from onnxlrp.ops.base import ElementwiseUnit, GraphContext, register


@register("LRN")
def lrn(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit:
    x, y = node.inputs[0], node.outputs[0]
    attrs = node.attributes
    size = attrs.get_int("size")
    alpha = attrs.get_float("alpha", 1e-4)
    beta = attrs.get_float("beta", 0.75)
    bias = attrs.get_float("bias", 1.0)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2

    def normaliser(b: Builder) -> ir.Value:
        dt = dtype_of(x)
        # sum of squares over the channel window: a 3-d convolution of x^2 with ones along channels
        squares = b.op("Unsqueeze", b.op("Mul", x, x), b.int64([1]))  # N, 1, C, spatial...
        rank = len(x.shape) if x.shape is not None else 4
        spatial = rank - 2
        kernel = np.ones([1, 1, size] + [1] * spatial, dtype=dt)
        pads = [before] + [0] * spatial + [after] + [0] * spatial
        window = b.op("Conv", squares, b.const(kernel, hint="lrn_window"), pads=pads)
        window = b.op("Squeeze", window, b.int64([1]))
        base = b.op("Add", b.op("Mul", window, b.const(alpha / size, dt)), b.const(bias, dt))
        return b.op("Pow", base, b.const(-beta, dt))

    return ElementwiseUnit([node], x, y, "BatchNorm", normaliser)
