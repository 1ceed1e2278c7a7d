"""Small helpers shared by the passes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant (initializer) input, or None if it is computed at run time."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def sole_consumer(value: ir.Value) -> ir.Node | None:
    """The one node that reads ``value``, if exactly one does and it is no graph output."""
    consumers = value.consumers()
    if len(consumers) != 1 or value.is_graph_output():
        return None
    return consumers[0]


def replace_output(old: ir.Value, new: ir.Value) -> None:
    """Make every reader of ``old`` read ``new`` instead."""
    ir.convenience.replace_all_uses_with(old, new)


def set_constant_input(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, name: str) -> None:
    """Set input ``index`` of ``node`` to a new initializer holding ``array``."""
    value = ir.Value(name=name, const_value=ir.tensor(array))
    graph.register_initializer(value)
    if index < len(node.inputs):
        node.replace_input_with(index, value)
    else:
        node.resize_inputs(index + 1)
        node.replace_input_with(index, value)
