"""Forward analyses of the canonical graph that the compiler needs.

- which values are *activations* (they depend on a float model input through data, not only
  through shapes), so that weights, masks and shape arithmetic never receive relevance;
- which activations are provably non-negative (after ReLU, pools of ReLUs, ...), so that rules
  such as z+ and gamma can drop terms that are exactly zero.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_SHAPE_OPS = frozenset({"Shape", "Size"})
_NONNEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "Softplus", "HardSigmoid", "Abs", "Exp", "Softmax"})
_ORDER_PRESERVING = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Identity",
        "Dropout",
        "Cast",
        "Slice",
        "Split",
        "Concat",
        "Resize",
        "Expand",
        "Add",
        "Sum",
        "Max",
        "Gather",
    }
)


def is_float(value: ir.Value) -> bool:
    return value.dtype is not None and value.dtype.is_floating_point()


def activation_values(graph: ir.Graph, sources=()) -> set[ir.Value]:
    """Float values computed from a float model input through data (not shape) dependencies.

    ``sources``: further values that count as inputs (the embedding lookups of token-id inputs).
    """
    active = {v for v in graph.inputs if is_float(v)} | set(sources)
    for node in graph:
        if node.op_type in _SHAPE_OPS:
            continue
        if any(v in active for v in node.inputs if v is not None):
            active.update(v for v in node.outputs if is_float(v))
    return active


def _constant_nonnegative(value: ir.Value) -> bool:
    return value.const_value is not None and bool(np.all(value.const_value.numpy() >= 0))


def nonnegative_values(graph: ir.Graph, active: set[ir.Value]) -> set[ir.Value]:
    """Activations that are >= 0 for every input (a conservative sign analysis)."""
    nonneg: set[ir.Value] = set()
    for node in graph:
        inputs = [v for v in node.inputs if v is not None and v in active]
        if not inputs:
            continue
        op = node.op_type
        if op in _NONNEGATIVE_OPS:
            ok = True
        elif op == "Clip":
            low = node.inputs[1] if len(node.inputs) > 1 else None
            ok = (low is not None and _constant_nonnegative(low)) or node.attributes.get_float(
                "min", -1.0
            ) >= 0
        elif op in _ORDER_PRESERVING:
            ok = all(v in nonneg for v in inputs) and all(
                v is None or v in active or v.const_value is None or _constant_nonnegative(v)
                for v in node.inputs
                if op in ("Add", "Sum", "Max")
            )
        elif op in ("Mul", "Div"):
            others = [v for v in node.inputs if v is not None and v not in active]
            ok = all(v in nonneg for v in inputs) and all(_constant_nonnegative(v) for v in others)
        elif op == "Pad":
            value = node.inputs[2] if len(node.inputs) > 2 else None
            ok = inputs[0] in nonneg and (value is None or _constant_nonnegative(value))
        else:
            ok = False
        if ok:
            nonneg.update(node.outputs[:1] if op != "Split" else node.outputs)
    return nonneg
