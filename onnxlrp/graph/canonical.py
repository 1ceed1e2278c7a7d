"""The canonical form that the compiler works on, built from well-kept library passes.

onnxscript's optimizer inlines ONNX functions (dynamo exports), folds constants (weights held in
``Constant`` nodes, shape arithmetic on static dimensions) and removes Identity nodes; its rewriter
folds BatchNormalization into the Conv/ConvTranspose/Gemm before it and removes inference Dropout.
onnx_ir's passes lift constants to initializers, drop initializers listed as graph inputs (old IR
versions) and infer shapes. Only what no library does lives in ``onnxlrp.graph.passes``.
"""

from __future__ import annotations

import onnx
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxscript.optimizer
from onnxscript import rewriter
from onnxscript.rewriter.rules import common as rules

from onnxlrp.errors import ModelLoadError
from onnxlrp.graph import passes
from onnxlrp.graph.shapes import infer_symbolic_shapes

MIN_OPSET = 17
_LIBRARY_RULES = [
    rules.fuse_batchnorm_into_conv_rule,
    rules.fuse_batchnorm_into_conv_transpose_rule,
    rules.fuse_batchnorm_into_gemm_rule,
    rules.dropout_inference_rule,
    rules.dropout_zero_rule,
    rules.no_op_cast_rule,
    rules.cast_cast_rule,
]


# Ops that only re-lay or re-type a weight (tf2onnx transposes Keras kernels, Caffe2 reshapes its
# Gemm weights): folded whatever the weight's size, so that the layer sees a constant weight.
_WEIGHT_LAYOUT_OPS = frozenset(
    {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Cast", "Identity"}
)


def _fold_weight_layout(node: ir.Node) -> bool | None:
    """``should_fold`` for the constant folder: always fold layout ops on constants."""
    layout = node.op_type in _WEIGHT_LAYOUT_OPS and node.domain in ("", "ai.onnx") and node.inputs
    if layout and all(v is None or v.const_value is not None for v in node.inputs):
        return True
    return None


def _convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """``onnx.version_converter`` with the large weights set aside: it serialises the whole model
    (seconds for old 500 MB model-zoo files, impossible over 2 GB), and no adapter reads a weight."""
    held = {t.name: t.raw_data for t in model.graph.initializer if len(t.raw_data) > _SET_ASIDE_BYTES}
    for t in model.graph.initializer:
        if t.name in held:
            t.ClearField("raw_data")
    try:
        converted = onnx.version_converter.convert_version(model, target)
    finally:
        for t in model.graph.initializer:
            if t.name in held:
                t.raw_data = held[t.name]
    for t in converted.graph.initializer:
        if t.name in held:
            t.raw_data = held[t.name]
    return converted


_SET_ASIDE_BYTES = 1 << 16


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def canonicalize(model: onnx.ModelProto, label: str) -> ir.Model:
    """Return the canonical ``ir.Model`` of ``model`` (the argument is left untouched)."""
    if _opset(model) < MIN_OPSET:
        try:
            model = _convert_opset(model, MIN_OPSET)
        except Exception as error:
            raise ModelLoadError(
                f"{label}: cannot convert opset {_opset(model)} to {MIN_OPSET}: {error}"
            ) from error
    ir_model = ir.serde.deserialize_model(infer_symbolic_shapes(model))
    # opset 17 needs IR >= 8; old files (IR 3) keep their version through the opset converter, and
    # onnxruntime then treats initializers as overridable inputs (no constant shape inference)
    ir_model.ir_version = max(ir_model.ir_version, 8)
    common_passes.RemoveInitializersFromInputsPass()(ir_model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(ir_model)
    onnxscript.optimizer.optimize(ir_model)
    onnxscript.optimizer.fold_constants(ir_model, should_fold=_fold_weight_layout)
    ir_model = rewriter.rewrite(ir_model, pattern_rewrite_rules=_LIBRARY_RULES)
    passes.run_all(ir_model)
    onnxscript.optimizer.optimize(ir_model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(ir_model)
    common_passes.TopologicalSortPass()(ir_model)
    return ir_model
