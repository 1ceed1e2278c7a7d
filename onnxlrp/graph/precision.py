"""The float16 mode: the canonical model in float16, its inputs and outputs kept in float32.

The conversion is onnxruntime's own (``onnxruntime.transformers.float16``, the converter of
onnxconverter-common, shipped inside the onnxruntime wheels): every float32 initializer and
tensor becomes float16, ops that have no float16 form stay float32 behind casts, and with
``keep_io_types`` a ``Cast`` joins each float32 input and output to the float16 graph. It runs on
the canonical model, so BatchNorm and affine folding happen in float32 first. The rules then see
float16 values and pick their float16 forms (``rules.stabilize`` uses ``Where`` there).
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from onnxlrp.errors import InputError
from onnxlrp.graph.shapes import infer_symbolic_shapes

PRECISIONS = ("float32", "float16")


def check_precision(precision: str) -> None:
    """Raise ``InputError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")


def to_float16(model: ir.Model) -> ir.Model:
    """``model`` with its float32 computation in float16 and its float32 interface unchanged."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(ir.serde.serialize_model(model), keep_io_types=True)
    converted = ir.serde.deserialize_model(infer_symbolic_shapes(proto))
    common_passes.TopologicalSortPass()(converted)
    _name_float16_copies(converted.graph)
    return converted


def _name_float16_copies(graph: ir.Graph) -> None:
    """``<name>/float16`` for the float16 side of each interface Cast (the converter calls them
    ``graph_input_cast_0``, ``graph_output_cast_0``, ...), as ``layers=True`` reports them."""
    for node in graph:
        if node.op_type != "Cast":
            continue
        x, y = node.inputs[0], node.outputs[0]
        if x.is_graph_input() and y.name.startswith("graph_input_cast"):
            y.name = f"{x.name}/float16"
        elif y.is_graph_output() and x.name.startswith("graph_output_cast"):
            x.name = f"{y.name}/float16"
