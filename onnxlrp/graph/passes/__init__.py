"""onnxlrp's own canonical passes: only those that no library provides. One pass a module."""

from __future__ import annotations

import onnx_ir as ir

from onnxlrp.graph.passes.fold_bias_add import fold_bias_add

PASSES = (fold_bias_add,)


def run_all(model: ir.Model) -> None:
    """Run every pass of this package on ``model`` in place."""
    for run in PASSES:
        run(model)
