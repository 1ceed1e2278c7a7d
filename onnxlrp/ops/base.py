"""What the backward emitters share: the unit kinds that rules act on, and the op registry.

A *unit* is one forward node (or a few fused nodes, such as MatMul + bias Add) seen by the
compiler as one layer. Its kind says which rules apply:

- ``LinearUnit``: a layer with constant weights, ``z_k = sum_j x_j w_jk + b_k`` (Conv, Gemm, ...).
  Rules modify the weights and call ``forward`` / ``transposed``.
- ``ElementwiseUnit``: a pointwise map of one activation (ReLU, Tanh, a constant scale, an
  unfolded BatchNorm). Rules either pass relevance through or multiply by ``derivative()``.
- ``SummationUnit``: a sum of activations or of their entries (residual Add, average pools),
  ``z = sum_i x_i``. Rules split relevance through ``transposed``.
- ``RoutingUnit``: ops that only move entries (Reshape, Concat, MaxPool, ...). Relevance follows
  the gradient, whatever the composite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape


class Unsupported(Exception):
    """Raised by a unit factory when it cannot handle a node; the message is the reason."""


@dataclass
class GraphContext:
    """What unit factories may ask about the graph."""

    is_activation: Callable[[ir.Value], bool]
    is_nonnegative: Callable[[ir.Value], bool]
    builder: Builder | None = None
    cpu: bool = False  # the graph is for onnxruntime's CPU provider (see compiler.compile)


@dataclass
class Unit:
    """One layer as the compiler sees it.

    ``rectifier``, set by the compiler on linear and summation units: the rectifier (a ReLU, or a
    Clip from 0) that alone reads the unit's output ``z``, when the relevance reaching ``z`` is
    provably 0 wherever ``z <= 0``; rules may then read ``relu(z)`` where they would guard signs.
    """

    nodes: list[ir.Node]
    inputs: list[ir.Value]  # the activation inputs that receive relevance
    outputs: list[ir.Value]
    category: str  # the layer kind composites map rules to (see composites.CATEGORIES)
    kind: str = field(init=False, default="")
    rectifier: ir.Node | None = field(init=False, default=None)

    @property
    def node(self) -> ir.Node:
        """The main node of the unit."""
        return self.nodes[0]

    @property
    def name(self) -> str:
        return self.node.name or self.outputs[0].name

    @property
    def op_type(self) -> str:
        return self.node.op_type


class LinearUnit(Unit):
    """A layer with constant weight and bias: subclasses emit its forward and transposed product."""

    kind = "linear"

    def __init__(self, nodes, x, output, weight: np.ndarray, bias: np.ndarray | None, category: str, ctx):
        super().__init__(nodes, [x], [output], category)
        self.x = x
        self.output = output
        self.weight = weight
        self.bias = bias
        self.x_nonnegative = ctx.is_nonnegative(x)

    @property
    def dtype(self) -> np.dtype:
        return dtype_of(self.x) or np.dtype(np.float32)

    def forward(self, b: Builder, x: ir.Value, weight: np.ndarray, bias: np.ndarray | None) -> ir.Value:
        """Emit the layer applied to ``x`` with the given (modified) weight and bias."""
        raise NotImplementedError

    def transposed(self, b: Builder, g: ir.Value, weight: np.ndarray) -> ir.Value:
        """Emit the transposed product: the gradient of ``forward(x, weight)`` w.r.t. x, given ``g``."""
        raise NotImplementedError

    def input_constant(self, b: Builder, array: np.ndarray | float) -> ir.Value:
        """A constant input of one sample's shape, from a scalar, a per-channel vector or a full array.

        Per-channel vectors of length C are laid along axis 1 (the channel axis of NC... inputs).
        """
        shape = static_shape(self.x)
        sample = [1] + (shape[1:] if shape else [])
        if shape is None:
            raise Unsupported(f"the rank of input {self.x.name!r} must be known")
        array = np.asarray(array, dtype=self.dtype)
        if array.ndim == 1 and len(sample) > 2 and array.shape[0] == sample[1]:
            array = array.reshape([1, -1] + [1] * (len(sample) - 2))
        if any(d is None for d in sample):  # symbolic sizes: expanded to the input's run-time shape
            if array.ndim > len(sample) or any(
                a not in (1, d) for a, d in zip(array.shape[::-1], sample[::-1]) if d is not None
            ):
                raise Unsupported(
                    f"cannot broadcast an array of shape {array.shape} to input {self.x.name!r}"
                )
            return b.op("Expand", b.const(array, hint="input_const"), b.shape(self.x))
        try:
            return b.const(np.broadcast_to(array, sample).copy(), hint="input_const")
        except ValueError as error:
            raise Unsupported(
                f"cannot broadcast an array of shape {array.shape} to input {self.x.name!r} of shape {shape}"
            ) from error

    def ones(self, b: Builder) -> ir.Value:
        """One sample of ones shaped like the input."""
        return self.input_constant(b, 1.0)


class ElementwiseUnit(Unit):
    """A pointwise map of one activation; ``derivative`` emits f'(x). ``zero_below``: f(x) = 0
    exactly where x <= 0 (ReLU, ReLU6)."""

    kind = "elementwise"
    zero_below = False

    def __init__(self, nodes, x, output, category: str, derivative: Callable[[Builder], ir.Value]):
        super().__init__(nodes, [x], [output], category)
        self.x = x
        self.output = output
        self._derivative = derivative

    def derivative(self, b: Builder) -> ir.Value:
        return self._derivative(b)


class SummationUnit(Unit):
    """``z = sum_i x_i`` (over inputs or over entries); ``transposed(g, i)`` spreads ``g`` back to input i."""

    kind = "summation"

    def __init__(
        self, nodes, inputs, output, category: str, transposed: Callable[[Builder, ir.Value, int], ir.Value]
    ):
        super().__init__(nodes, list(inputs), [output], category)
        self.output = output
        self._transposed = transposed

    def transposed(self, b: Builder, g: ir.Value, index: int) -> ir.Value:
        return self._transposed(b, g, index)


class RoutingUnit(Unit):
    """An op that only moves entries; ``backward`` maps output relevances to input relevances."""

    kind = "routing"

    def __init__(self, nodes, inputs, outputs, backward: Callable[[Builder, list], list]):
        super().__init__(nodes, list(inputs), list(outputs), "Routing")
        self._backward = backward

    def backward(self, b: Builder, relevances: list[ir.Value | None]) -> list[ir.Value | None]:
        """Relevance of each input, given the relevance of each output (None where none arrived)."""
        return self._backward(b, relevances)


UnitFactory = Callable[[ir.Node, GraphContext], Unit]
REGISTRY: dict[str, UnitFactory] = {}


def register(*op_types: str) -> Callable[[UnitFactory], UnitFactory]:
    """Register a unit factory for the given op types."""

    def wrap(factory: UnitFactory) -> UnitFactory:
        for op_type in op_types:
            REGISTRY[op_type] = factory
        return factory

    return wrap


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant input, or None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def activation_inputs(node: ir.Node, ctx: GraphContext) -> list[ir.Value]:
    return [v for v in node.inputs if v is not None and ctx.is_activation(v)]


def unbroadcast(b: Builder, g: ir.Value, target: ir.Value, output: ir.Value) -> ir.Value:
    """Sum ``g`` (shaped like ``output``) over the axes along which ``target`` was broadcast."""
    out_shape, in_shape = static_shape(output), static_shape(target)
    if out_shape is not None and in_shape is not None and out_shape == in_shape and None not in out_shape:
        return g
    if out_shape is None or in_shape is None:
        raise Unsupported(f"shapes of {target.name!r} and {output.name!r} must be known")
    lead = len(out_shape) - len(in_shape)
    padded = [1] * lead + in_shape
    axes = [i for i, (o, t) in enumerate(zip(out_shape, padded)) if t == 1 and o != 1]
    if any(t is None and o is not None for o, t in zip(out_shape, padded)):
        raise Unsupported(f"cannot tell how {target.name!r} broadcasts to {output.name!r}")
    if axes:
        g = b.op("ReduceSum", g, b.int64(axes), keepdims=1)
    if lead:
        g = b.op("Reshape", g, b.shape(target))
    return g
