"""The transposed product of a stride-1 convolution, emitted as a plain ``Conv``.

Every LRP rule on a convolution needs ``W^T g``, the gradient of ``conv(x, W)`` with respect to
``x``. ONNX's ``ConvTranspose`` computes it, but onnxruntime's CPU kernel for it is a GEMM followed
by a single-threaded col2im, without the blocked (NCHWc) kernels its ``Conv`` has: with two threads
it runs about twice as slow as the forward convolution, depthwise ones up to ten times. For stride
1 the same product is a ``Conv`` of ``g`` with the kernel flipped in space and its input and output
channels swapped (per group), padded by ``(k - 1) * d - pad`` on each side, with the same dilation
and groups.

Strided convolutions keep ``ConvTranspose``: as a ``Conv`` they need one sub-kernel per output
residue and an interleave (``DepthToSpace``), which measured slower on onnxruntime's CPU provider.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder


@dataclass(frozen=True)
class TransposedConv:
    """``W^T g`` of one stride-1 convolution as a ``Conv`` with the flipped kernel."""

    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int

    def weight(self, weight: np.ndarray) -> np.ndarray:
        """The ``Conv`` weight for the layer's (possibly modified) forward weight ``weight``:
        ``(M, C/g, k...)`` becomes ``(C, M/g, k...)``, flipped along every spatial axis."""
        m, c_g, *kernel = weight.shape
        g = self.group
        flipped = weight.reshape(g, m // g, c_g, *kernel).swapaxes(1, 2).reshape(c_g * g, m // g, *kernel)
        flipped = flipped[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernel)]
        return np.ascontiguousarray(flipped, dtype=weight.dtype)

    def emit(self, b: Builder, g: ir.Value, weight: np.ndarray) -> ir.Value:
        """Emit ``W^T g`` for the forward weight ``weight``."""
        return b.op(
            "Conv",
            g,
            b.const(self.weight(weight), hint="wt"),
            pads=list(self.pads),
            dilations=list(self.dilations),
            group=self.group,
        )


def plan(geometry: dict) -> TransposedConv | None:
    """The plan for a convolution with ``geometry`` (kernel, strides, dilations, pads, group), or
    None where ``ConvTranspose`` is kept (a stride above 1, or pads beyond the dilated kernel)."""
    kernel, dilations, pads = geometry["kernel"], geometry["dilations"], geometry["pads"]
    n = len(kernel)
    if any(s != 1 for s in geometry["strides"]):
        return None
    begins = [(k - 1) * d - p for k, d, p in zip(kernel, dilations, pads[:n])]
    ends = [(k - 1) * d - p for k, d, p in zip(kernel, dilations, pads[n:])]
    if min(begins + ends) < 0:
        return None
    return TransposedConv(tuple(begins + ends), tuple(dilations), geometry["group"])
