"""Multiplicative gates: ``Mul(signal, gate)`` where the gate is a [0, 1] value computed by a gate op.

Squeeze-and-excitation blocks, spatial/channel attention (CBAM), GLU-like and LSTM-style gates
multiply an activation (the *signal*) by a *gate* computed from the same or another activation:
``y = s * g`` with ``g = sigmoid(...)``. The common LRP practice (Arras et al. 2017 for LSTM gates;
Montavon et al. 2019) treats the gate as a constant: ``y`` is then a pointwise scaling of ``s``, so
all the relevance of ``y`` flows to the signal, ``R_s = R_y``, and the gate branch gets none.
This module builds that unit: an ``ElementwiseUnit`` on the signal, category ``"Activation"``
(LRP composites pass relevance through it, as through any activation), whose derivative is the
gate value ``g`` (the gradient with the gate held constant, used by gradient-based composites;
note that it is not the full gradient, which also flows into the gate branch).

The criterion (``gate_of``): one operand of a ``Mul`` of two activations is a *gate* when, looking
through ops that only broadcast or relabel it (Reshape, Unsqueeze, Squeeze, Flatten, Expand,
Identity, Cast, Transpose), it is produced by

- ``Sigmoid`` or ``HardSigmoid``, or
- ``Clip(t, 0, m)`` with constant ``0 <= min`` and ``max <= 1``, or that Clip (or ``Relu6``-style
  ``Clip(t, 0, 6)``) divided by (or multiplied by the reciprocal of) its constant max: the
  piecewise-linear hard sigmoids that converters write out,

and that gate op's input is not the other operand itself (``x * sigmoid(x)`` is SiLU/Swish, an
activation function, not a gate; it is left to the product-of-activations rules). Exactly one
operand may be a gate, and the product must have the signal's shape (the gate broadcasts over the
signal, never the reverse). Anything else returns ``None``.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxlrp.ops.base import ElementwiseUnit, GraphContext, constant

_BROADCAST_ONLY = frozenset(
    {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Identity", "Cast", "Transpose"}
)
_SIGMOIDS = frozenset({"Sigmoid", "HardSigmoid"})


def _through_broadcasts(value: ir.Value) -> ir.Value:
    producer = value.producer()
    while producer is not None and producer.op_type in _BROADCAST_ONLY:
        value = producer.inputs[0]
        producer = value.producer()
    return value


def _clip_bounds(node: ir.Node) -> tuple[float | None, float | None] | None:
    """Constant (min, max) of a Clip (inputs or opset-6 attributes), or None when not constant."""
    if len(node.inputs) > 1:
        bounds = []
        for v in list(node.inputs[1:3]) + [None] * (3 - len(node.inputs)):
            if v is None:
                bounds.append(None)
                continue
            c = constant(v)
            if c is None:
                return None
            bounds.append(float(c.reshape(-1)[0]))
        return bounds[0], bounds[1]
    return node.attributes.get_float("min", None), node.attributes.get_float("max", None)


def _gate_input(value: ir.Value) -> ir.Value | None:
    """The input of the gate op that produces ``value`` (a value in [0, 1]), or None if it is no gate."""
    node = _through_broadcasts(value).producer()
    if node is None:
        return None
    if node.op_type in _SIGMOIDS:
        return node.inputs[0]
    divisor = 1.0
    if node.op_type in ("Div", "Mul"):
        c = constant(node.inputs[1])
        if c is None or c.size != 1 or float(c.reshape(-1)[0]) == 0.0:
            return None
        value = float(c.reshape(-1)[0])
        divisor = value if node.op_type == "Div" else 1.0 / value
        node = node.inputs[0].producer()
        if node is None:
            return None
    if node.op_type == "Clip":
        bounds = _clip_bounds(node)
        if bounds is None or bounds[0] is None or bounds[1] is None:
            return None
        low, high = bounds[0] / divisor, bounds[1] / divisor
        if divisor > 0 and low >= 0.0 and high <= 1.0 + 1e-6:
            return node.inputs[0]
    return None


def _is_from(gate_input: ir.Value, other: ir.Value) -> bool:
    """Whether the gate op reads ``other`` directly (through at most an affine-by-constant op)."""
    if gate_input is other:
        return True
    producer = gate_input.producer()
    return (
        producer is not None
        and producer.op_type in ("Add", "Sub", "Mul", "Div")
        and other in producer.inputs
        and any(v is not None and v is not other and v.const_value is not None for v in producer.inputs)
    )


def gate_of(node: ir.Node) -> tuple[int, int] | None:
    """``(signal index, gate index)`` of a gating ``Mul``, or None (see the module docstring)."""
    if node.op_type != "Mul" or len(node.inputs) != 2 or node.inputs[0] is node.inputs[1]:
        return None
    gates = []
    for index in (0, 1):
        gate_input = _gate_input(node.inputs[index])
        if gate_input is not None and not _is_from(gate_input, node.inputs[1 - index]):
            gates.append(index)
    if len(gates) != 1:
        return None
    gate = gates[0]
    signal = 1 - gate
    out_shape, signal_shape = node.outputs[0].shape, node.inputs[signal].shape
    if out_shape is None or signal_shape is None or list(out_shape) != list(signal_shape):
        return None
    return signal, gate


def gate_unit(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit | None:
    """The unit of a gating ``Mul`` (relevance to the signal only), or None if ``node`` is no gate."""
    found = gate_of(node)
    if found is None:
        return None
    signal, gate = found
    x, g = node.inputs[signal], node.inputs[gate]
    if not (ctx.is_activation(x) and ctx.is_activation(g)):
        return None
    unit = ElementwiseUnit([node], x, node.outputs[0], "Activation", lambda b: g)
    unit.note = "gate held constant: relevance to the signal"  # shown by `onnxlrp info`
    return unit


__all__ = ["gate_of", "gate_unit"]
