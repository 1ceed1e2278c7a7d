"""Attention: products of two activations (``Q K^T``, ``P V``, gated MLPs) and Softmax.

``ProductUnit`` (kind ``"product"``, category ``"Product"``): ``z = a * b`` elementwise (``Mul``)
or ``z = a @ b`` (``MatMul``), both operands activations. ``transposed(g, i)`` is the gradient of z
w.r.t. operand i given ``g``: ``g b`` / ``g a`` (summed over broadcast axes) for Mul, ``g b^T`` /
``a^T g`` for MatMul. ``roles[i]`` tells what operand i is: ``"probabilities"`` (it comes from a
Softmax, the P of ``P V``), ``"gate"`` (it comes from a nonlinear activation, the gate of a gated
MLP) or None; CP-LRP detaches the operands that have a role.

``SoftmaxUnit`` (kind ``"softmax"``, category ``"Softmax"``): ``s = softmax(x)`` along ``axis``;
its gradient is ``s * (g - sum(s * g))``.

Both kinds are new to the rules: the gradient (Zennit's composites, which do not map them), AttnLRP's
uniform and softmax rules and CP-LRP's detaching rules are in ``onnxlrp.rules``.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxlrp.builder import Builder, static_shape
from onnxlrp.ops.base import GraphContext, Unit, Unsupported, register
from onnxlrp.ops.fusion import activation_family

# ops that only move, relabel or re-type entries: a role is looked up through them
_ROUTING = frozenset(
    {"Cast", "Identity", "Dropout", "Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Flatten"}
)
_GATE_OPS = frozenset(
    {"Sigmoid", "HardSigmoid", "Tanh", "Relu", "LeakyRelu", "Elu", "Gelu", "Erf", "Softplus", "HardSwish"}
)


def sum_to(b: Builder, g: ir.Value, target: ir.Value, output: ir.Value) -> ir.Value:
    """Sum ``g`` (shaped like ``output``) down to the shape of ``target``, which broadcast to it.

    Needs the ranks; a dimension is summed over where ``target`` has a static 1 and ``output``
    does not, and leading dimensions that ``target`` lacks are summed away.
    """
    t_shape, o_shape = static_shape(target), static_shape(output)
    if t_shape is None or o_shape is None:
        raise Unsupported(f"the ranks of {target.name!r} and {output.name!r} must be known")
    lead = len(o_shape) - len(t_shape)
    if lead < 0:
        raise Unsupported(f"{target.name!r} has a higher rank than {output.name!r}")
    axes = list(range(lead)) + [
        lead + i for i, (t, o) in enumerate(zip(t_shape, o_shape[lead:])) if t == 1 and o != 1
    ]
    if not axes:
        return g
    g = b.op("ReduceSum", g, b.int64(axes), keepdims=1)
    if lead:
        g = b.op("Reshape", g, b.shape(target))
    return g


def same_shape(a: ir.Value, b: ir.Value) -> bool:
    """Whether ``a`` and ``b`` provably have the same shape (equal static or equally named dims)."""
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    for x, y in zip(a.shape, b.shape):
        if isinstance(x, int) or isinstance(y, int):
            if x != y:
                return False
        elif x.value is None or x.value != y.value:
            return False
    return True


def _swap_last(b: Builder, value: ir.Value, rank: int) -> ir.Value:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return b.op("Transpose", value, perm=perm)


def role(value: ir.Value, ctx: GraphContext) -> str | None:
    """``"probabilities"`` (from a Softmax), ``"gate"`` (from a nonlinear activation) or None."""
    producer = value.producer()
    while producer is not None and producer.op_type in _ROUTING:
        value = producer.inputs[0]
        producer = value.producer()
    if producer is None:
        return None
    if producer.op_type == "Softmax":
        return "probabilities"
    if producer.op_type in _GATE_OPS:
        return "gate"
    if activation_family(value, ctx) is not None:  # a written-out GELU, SiLU, ...
        return "gate"
    return None


class ProductUnit(Unit):
    """``z = a * b`` or ``z = a @ b`` of two activations (see the module docstring)."""

    kind = "product"

    def __init__(self, node: ir.Node, roles: list[str | None]):
        super().__init__([node], list(node.inputs), [node.outputs[0]], "Product")
        self.output = node.outputs[0]
        self.roles = roles
        self.matmul = node.op_type == "MatMul"
        shapes = [static_shape(v) for v in node.inputs]
        out = static_shape(self.output)
        if any(s is None for s in shapes) or out is None:
            raise Unsupported("the ranks of both operands must be known")
        if self.matmul and any(len(s) < 2 for s in shapes):
            raise Unsupported("MatMul of activations needs operands of rank 2 or more")
        self.ranks = [len(s) for s in shapes]
        # a Mul whose operands both have the output's shape (no broadcasting)
        self.same_shapes = not self.matmul and all(same_shape(v, self.output) for v in node.inputs)

    def transposed(self, b: Builder, g: ir.Value, index: int) -> ir.Value:
        """The gradient of the product w.r.t. operand ``index``, given ``g`` at the output."""
        a, c = self.inputs
        if not self.matmul:
            other = c if index == 0 else a
            return sum_to(b, b.op("Mul", g, other), self.inputs[index], self.output)
        if index == 0:
            grad = b.op("MatMul", g, _swap_last(b, c, self.ranks[1]))
        else:
            grad = b.op("MatMul", _swap_last(b, a, self.ranks[0]), g)
        return sum_to(b, grad, self.inputs[index], self.output)


def product_unit(node: ir.Node, ctx: GraphContext) -> ProductUnit:
    """The unit of a ``Mul``/``MatMul`` of two activations."""
    if len(node.inputs) != 2 or not all(v is not None and ctx.is_activation(v) for v in node.inputs):
        raise Unsupported("a product needs two activation operands")
    roles = [role(v, ctx) for v in node.inputs]
    return ProductUnit(node, roles)


class SoftmaxUnit(Unit):
    """``s = softmax(x, axis)`` inside the model (attention probabilities)."""

    kind = "softmax"

    def __init__(self, node: ir.Node, axis: int):
        super().__init__([node], [node.inputs[0]], [node.outputs[0]], "Softmax")
        self.x = node.inputs[0]
        self.output = node.outputs[0]
        self.axis = axis

    def sum(self, b: Builder, value: ir.Value) -> ir.Value:
        """``value`` summed along the softmax axis (kept)."""
        return b.op("ReduceSum", value, b.int64([self.axis]), keepdims=1)

    def gradient(self, b: Builder, g: ir.Value) -> ir.Value:
        s = self.output
        return b.op("Mul", s, b.op("Sub", g, self.sum(b, b.op("Mul", s, g))))


@register("Softmax")
def softmax(node: ir.Node, ctx: GraphContext) -> SoftmaxUnit:
    x = node.inputs[0]
    shape = static_shape(x)
    axis = node.attributes.get_int("axis", -1)
    if shape is None:
        raise Unsupported(f"the rank of {x.name!r} must be known")
    return SoftmaxUnit(node, axis % len(shape))


__all__ = ["ProductUnit", "SoftmaxUnit", "product_unit", "role", "same_shape", "sum_to"]
