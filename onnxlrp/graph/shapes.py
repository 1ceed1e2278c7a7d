"""Symbolic shape inference: static and named dimensions through run-time shape arithmetic.

Exporters compute reshape targets from ``Shape`` ops (``x.view(b, s, heads, head_dim)``), which
ONNX's own shape inference cannot follow: every dimension after such a Reshape is unknown.
onnxruntime's symbolic shape inference (``onnxruntime.tools.symbolic_shape_infer``, which needs
``sympy``) evaluates that arithmetic symbolically, so the canonical graph knows that a tensor is
``[batch, 4, sequence, 8]``. Without sympy, or where it fails, the model is left as it is.
"""

from __future__ import annotations

import logging

import onnx


def infer_symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with symbolic shapes inferred where onnxruntime's tool can; else ``model``."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except Exception:  # sympy missing, or an onnxruntime build without the tool
        return model
    logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:
        return model
    finally:
        logger.setLevel(level)
    # the model's interface keeps its own shapes (the tool names unnamed dimensions "unk__0", ...)
    for new, old in ((inferred.graph.input, model.graph.input), (inferred.graph.output, model.graph.output)):
        originals = {v.name: v for v in old}
        for value in new:
            if value.name in originals:
                value.type.CopyFrom(originals[value.name].type)
    return inferred
