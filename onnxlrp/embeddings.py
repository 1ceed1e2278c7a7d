"""Token-id inputs: where their relevance ends.

An integer input such as ``input_ids`` is not differentiable; language models read it through an
embedding lookup ``Gather(table, ids)`` with a constant float table. That lookup's output is the
relevance end point of the ids: the compiler treats it as an input (an activation source) and
reports the relevance that reaches it summed over the hidden size, one value per token, shaped
like the ids (``relevance:<ids input>``).

A lookup counts when its indices come from an int model input through ops that only move or
re-type entries (Cast, Reshape, Unsqueeze, Squeeze, Flatten, Identity, Expand, Slice,
Transpose), i.e. the indices *are* the ids. Position ids computed from shapes (``Range``) or by
arithmetic on a mask (``cumsum(mask) - 1``) do not count: their embeddings are constants that take
their share of the relevance like a bias.
"""

from __future__ import annotations

import onnx_ir as ir

_ROUTING = frozenset(
    {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice", "Transpose"}
)


def _is_int(value: ir.Value) -> bool:
    return value.dtype is not None and value.dtype in (ir.DataType.INT64, ir.DataType.INT32)


def _id_input(value: ir.Value, inputs: set[ir.Value]) -> ir.Value | None:
    """The int model input that ``value`` is a routed copy of, or None."""
    while value not in inputs:
        producer = value.producer()
        if producer is None or producer.op_type not in _ROUTING or not producer.inputs:
            return None
        value = producer.inputs[0]
    return value


def token_embeddings(graph: ir.Graph) -> dict[ir.Value, ir.Value]:
    """``{embedding lookup output: id input}`` for every lookup of an int model input."""
    inputs = {v for v in graph.inputs if _is_int(v)}
    found: dict[ir.Value, ir.Value] = {}
    if not inputs:
        return found
    for node in graph:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        table, indices = node.inputs
        if table is None or table.const_value is None or not table.dtype.is_floating_point():
            continue
        if node.attributes.get_int("axis", 0) != 0:
            continue
        source = _id_input(indices, inputs)
        if source is not None:
            found[node.outputs[0]] = source
    return found


def vocabulary_size(lookup: ir.Value) -> int:
    """The number of rows of the table that embedding ``lookup`` reads."""
    return int(lookup.producer().inputs[0].shape[0])


__all__ = ["token_embeddings", "vocabulary_size"]
