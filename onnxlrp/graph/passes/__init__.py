"""onnxlrp's own canonical passes: only those that no library provides. One pass a module."""

from __future__ import annotations

import onnx_ir as ir

from onnxlrp.graph.passes.explicit_gemm_transpose import explicit_gemm_transpose
from onnxlrp.graph.passes.fold_bias_add import fold_bias_add
from onnxlrp.graph.passes.fold_channel_affine import fold_channel_affine
from onnxlrp.graph.passes.fuse_hard_sigmoid import fuse_hard_sigmoid
from onnxlrp.graph.passes.fuse_prelu import fuse_prelu
from onnxlrp.graph.passes.sink_transposes import sink_transposes

PASSES = (
    explicit_gemm_transpose,
    fuse_prelu,
    fuse_hard_sigmoid,
    sink_transposes,
    fold_channel_affine,
    fold_bias_add,
)


def run_all(model: ir.Model) -> None:
    """Run every pass of this package on ``model`` in place."""
    for run in PASSES:
        run(model)
