"""Make a Gemm's ``transA=1`` on a computed input an explicit ``Transpose``.

``Gemm(A, B, C, transA=1) = Gemm(Transpose(A, perm=[1, 0]), B, C)``: ``z = A^T B + C``. The layer
then reads its input as (samples, features), as every linear rule expects, and the Transpose hands
the relevance back like any op that only moves entries. A constant ``A`` (a weight on the left,
``z = W^T x``) is left alone.
"""

from __future__ import annotations

import onnx_ir as ir


def explicit_gemm_transpose(model: ir.Model) -> None:
    """Rewrite every ``Gemm`` with ``transA=1`` on a computed ``A``, in place."""
    graph = model.graph
    for node in list(graph):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
            continue
        a = node.inputs[0]
        if not node.attributes.get_int("transA", 0) or a.const_value is not None:
            continue
        transpose = ir.node("Transpose", [a], attributes={"perm": [1, 0]}, name=f"{node.name}/transpose_a")
        if a.shape is not None and len(a.shape) == 2:
            transpose.outputs[0].shape = ir.Shape([a.shape[1], a.shape[0]])
        transpose.outputs[0].type = a.type
        graph.insert_before(node, transpose)
        node.replace_input_with(0, transpose.outputs[0])
        node.attributes["transA"] = ir.AttrInt64("transA", 0)
