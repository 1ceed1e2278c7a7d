"""Symbolic shape inference: static and named dimensions through run-time shape arithmetic.

Exporters compute reshape targets from ``Shape`` ops (``x.view(b, s, heads, head_dim)``), which
ONNX's own shape inference cannot follow: every dimension after such a Reshape is unknown.
onnxruntime's symbolic shape inference (``onnxruntime.tools.symbolic_shape_infer``, which needs
``sympy``) evaluates that arithmetic symbolically, so the canonical graph knows that a tensor is
``[batch, 4, sequence, 8]``. Without sympy, or where it fails, the model is left as it is.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import onnx


@functools.cache
def _tool() -> ModuleType:
    """onnxruntime's ``tools/symbolic_shape_infer.py``, loaded from its file: imported by its name,
    ``onnxruntime/tools/__init__.py`` would run first, and it imports torch wherever torch is
    installed (a second or more, and some 300 MB, for nothing here)."""
    package = importlib.util.find_spec("onnxruntime")
    path = Path(package.origin).parent / "tools" / "symbolic_shape_infer.py"
    spec = importlib.util.spec_from_file_location("onnxlrp._symbolic_shape_infer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def infer_symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with symbolic shapes inferred where onnxruntime's tool can; else ``model``.

    The tool's own ``SymbolicShapeInference.infer_shapes`` is not called: where its inference is
    incomplete it saves the whole model (its weights as external data) as
    ``sym_shape_infer_temp.onnx`` in the current directory before it raises. Its steps are run
    here instead, the same ones without that save.
    """
    try:
        tool = _tool()
    except Exception:  # sympy missing, or an onnxruntime build without the tool
        return model
    logger = tool.logger
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        inference = tool.SymbolicShapeInference(
            int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0
        )
        inference._preprocess(model)
        complete = False
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
    except Exception:
        return model
    finally:
        logger.setLevel(level)
    if not complete:
        return model
    inferred = inference.out_mp_
    # the model's interface keeps its own shapes (the tool names unnamed dimensions "unk__0", ...)
    for new, old in ((inferred.graph.input, model.graph.input), (inferred.graph.output, model.graph.output)):
        originals = {v.name: v for v in old}
        for value in new:
            if value.name in originals:
                value.type.CopyFrom(originals[value.name].type)
    return inferred
