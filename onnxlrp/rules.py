"""LRP rules, one small class each, with the semantics of Zennit 0.5.1's rules.

A rule maps the relevance ``R`` at a unit's output to the relevance of its inputs. Each rule
implements the unit kinds it applies to (see ``onnxlrp.ops.base``):

- ``linear(b, unit, R)``: layers with weights, ``z_k = sum_j x_j w_jk + b_k``. The generic form is
  ``R_j = sum_k x_j w'_jk / stab(z'_k) R_k``, computed as ``x * T(R / stab(z'), W')`` with ``T`` the
  transposed product, so no rule ever materialises the (input x output) contribution matrix.
- ``elementwise(b, unit, R)``: pointwise maps of one activation.
- ``summation(b, unit, R)``: sums of activations or of entries (residual Add, average pools).

``stab(z) = z + epsilon * sign(z)`` with ``sign(0) = +1``, as Zennit's ``Stabilizer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of
from onnxlrp.errors import CompositeError
from onnxlrp.ops.base import ElementwiseUnit, LinearUnit, SummationUnit


def stabilize(b: Builder, z: ir.Value, epsilon: float) -> ir.Value:
    """``z + epsilon * sign(z)``, where zeros count as positive."""
    dt = dtype_of(z)
    shift = b.op(
        "Where", b.op("GreaterOrEqual", z, b.const(0.0, dt)), b.const(epsilon, dt), b.const(-epsilon, dt)
    )
    return b.op("Add", z, shift)


def _positive(b: Builder, x: ir.Value) -> ir.Value:
    return b.op("Relu", x)


def _negative(b: Builder, x: ir.Value) -> ir.Value:
    return b.op("Min", x, b.const(0.0, dtype_of(x)))


def _plus(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.maximum(a, 0)


def _minus(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.minimum(a, 0)


class Rule:
    """Base class: a rule implements the unit kinds it applies to."""

    def applies_to(self, kind: str) -> bool:
        """Whether the rule implements unit kind ``kind`` ("linear", "elementwise", "summation")."""
        return getattr(type(self), kind) is not getattr(Rule, kind)

    def linear(self, b: Builder, unit: LinearUnit, relevance: ir.Value) -> ir.Value:
        raise NotImplementedError

    def elementwise(self, b: Builder, unit: ElementwiseUnit, relevance: ir.Value) -> ir.Value:
        raise NotImplementedError

    def summation(self, b: Builder, unit: SummationUnit, relevance: ir.Value) -> list[ir.Value]:
        raise NotImplementedError


@dataclass(frozen=True)
class Gradient(Rule):
    """The plain gradient (vanilla backpropagation); the default for units no composite maps."""

    def linear(self, b, unit, relevance):
        return unit.transposed(b, relevance, unit.weight)

    def elementwise(self, b, unit, relevance):
        return b.op("Mul", relevance, unit.derivative(b))

    def summation(self, b, unit, relevance):
        return [unit.transposed(b, relevance, i) for i in range(len(unit.inputs))]


@dataclass(frozen=True)
class Pass(Rule):
    """Pass the relevance through unchanged (Zennit's ``Pass``, used for activations)."""

    def elementwise(self, b, unit, relevance):
        return relevance


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_j = x_j sum_k w_jk R_k / stab(z_k)``, bias included in z.

    ``epsilon=0`` gives LRP-0. On sums it is the Norm rule with ``epsilon`` as stabilizer.
    """

    epsilon: float = 1e-6

    def linear(self, b, unit, relevance):
        s = b.op("Div", relevance, stabilize(b, unit.output, self.epsilon))
        return b.op("Mul", unit.x, unit.transposed(b, s, unit.weight))

    def summation(self, b, unit, relevance):
        s = b.op("Div", relevance, stabilize(b, unit.output, self.epsilon))
        return [b.op("Mul", x, unit.transposed(b, s, i)) for i, x in enumerate(unit.inputs)]


@dataclass(frozen=True)
class Norm(Epsilon):
    """Norm rule (Zennit's ``Norm``): relevance split in proportion to each summand, ``R_i = x_i / z R``."""

    epsilon: float = 1e-6


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z+ (Bach et al. 2015; Montavon et al. 2017), as alpha=1, beta=0 over signed inputs.

    ``z+ = x+ W+ + b+ + x- W-``; ``R = x+ T(R/z+, W+) + x- T(R/z+, W-)``. When the input is proven
    non-negative, the x- terms are zero and are not computed.
    """

    stabilizer: float = 1e-6

    def linear(self, b, unit, relevance):
        wp, wn, bp = _plus(unit.weight), _minus(unit.weight), _plus(unit.bias)
        if unit.x_nonnegative:
            z = unit.forward(b, unit.x, wp, bp)
            s = b.op("Div", relevance, stabilize(b, z, self.stabilizer))
            return b.op("Mul", unit.x, unit.transposed(b, s, wp))
        xp, xn = _positive(b, unit.x), _negative(b, unit.x)
        z = b.op("Add", unit.forward(b, xp, wp, bp), unit.forward(b, xn, wn, None))
        s = b.op("Div", relevance, stabilize(b, z, self.stabilizer))
        return b.op(
            "Add", b.op("Mul", xp, unit.transposed(b, s, wp)), b.op("Mul", xn, unit.transposed(b, s, wn))
        )


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015): ``alpha`` times the positive, minus ``beta`` times the
    negative contributions, each normalised by its own sum (biases split by sign)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0 or self.alpha - self.beta != 1:
            raise CompositeError(
                f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {self.alpha}, {self.beta}"
            )

    def linear(self, b, unit, relevance):
        wp, wn = _plus(unit.weight), _minus(unit.weight)
        bp, bn = _plus(unit.bias), _minus(unit.bias)
        eps = self.stabilizer
        if unit.x_nonnegative:
            sp = b.op("Div", relevance, stabilize(b, unit.forward(b, unit.x, wp, bp), eps))
            sn = b.op("Div", relevance, stabilize(b, unit.forward(b, unit.x, wn, bn), eps))
            back = b.op(
                "Sub",
                b.op("Mul", unit.transposed(b, sp, wp), self.alpha),
                b.op("Mul", unit.transposed(b, sn, wn), self.beta),
            )
            return b.op("Mul", unit.x, back)
        xp, xn = _positive(b, unit.x), _negative(b, unit.x)
        zp = b.op("Add", unit.forward(b, xp, wp, bp), unit.forward(b, xn, wn, None))
        zn = b.op("Add", unit.forward(b, xp, wn, bn), unit.forward(b, xn, wp, None))
        sp = b.op("Div", relevance, stabilize(b, zp, eps))
        sn = b.op("Div", relevance, stabilize(b, zn, eps))
        positive = b.op(
            "Add", b.op("Mul", xp, unit.transposed(b, sp, wp)), b.op("Mul", xn, unit.transposed(b, sp, wn))
        )
        negative = b.op(
            "Add", b.op("Mul", xp, unit.transposed(b, sn, wn)), b.op("Mul", xn, unit.transposed(b, sn, wp))
        )
        return b.op("Sub", b.op("Mul", positive, self.alpha), b.op("Mul", negative, self.beta))


@dataclass(frozen=True)
class Gamma(Rule):
    """Generalised LRP-gamma (Montavon et al. 2019; Andeol et al. 2021), as Zennit 0.5.1.

    Where ``z > 0`` the relevance follows ``x+ (W + gamma W+) + x- (W + gamma W-)`` (bias
    ``b + gamma b+``); where ``z < 0`` it follows ``x+ (W + gamma W-) + x- (W + gamma W+)`` (bias
    ``b + gamma b-``). Non-negative inputs skip the x- terms.
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def linear(self, b, unit, relevance):
        w, bias, g = unit.weight, unit.bias, self.gamma
        w1, w2 = w + g * _plus(w), w + g * _minus(w)
        b1 = None if bias is None else bias + g * _plus(bias)
        b3 = None if bias is None else bias + g * _minus(bias)
        z = unit.output
        dt = dtype_of(z)
        positive = b.op("Cast", b.op("Greater", z, b.const(0.0, dt)), to=z.dtype)
        negative = b.op("Cast", b.op("Less", z, b.const(0.0, dt)), to=z.dtype)
        eps = self.stabilizer
        if unit.x_nonnegative:
            zp, zn = unit.forward(b, unit.x, w1, b1), unit.forward(b, unit.x, w2, b3)
        else:
            xp, xn = _positive(b, unit.x), _negative(b, unit.x)
            zp = b.op("Add", unit.forward(b, xp, w1, b1), unit.forward(b, xn, w2, None))
            zn = b.op("Add", unit.forward(b, xp, w2, b3), unit.forward(b, xn, w1, None))
        gp = b.op("Mul", positive, b.op("Div", relevance, stabilize(b, zp, eps)))
        gn = b.op("Mul", negative, b.op("Div", relevance, stabilize(b, zn, eps)))
        if unit.x_nonnegative:
            return b.op("Mul", unit.x, b.op("Add", unit.transposed(b, gp, w1), unit.transposed(b, gn, w2)))
        via_plus = b.op("Add", unit.transposed(b, gp, w1), unit.transposed(b, gn, w2))
        via_minus = b.op("Add", unit.transposed(b, gp, w2), unit.transposed(b, gn, w1))
        return b.op("Add", b.op("Mul", xp, via_plus), b.op("Mul", xn, via_minus))


@dataclass(frozen=True, eq=False)
class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for inputs bounded by ``low <= x <= high``.

    ``z = x W + b - (l W+ + b+) - (h W- + b-)``; ``R = x T(s, W) - l T(s, W+) - h T(s, W-)``,
    ``s = R / stab(z)``. ``low``/``high`` are scalars, per-channel vectors or arrays shaped like one
    input sample.
    """

    low: float | np.ndarray = 0.0
    high: float | np.ndarray = 1.0
    stabilizer: float = 1e-6

    def linear(self, b, unit, relevance):
        w, bias = unit.weight, unit.bias
        low, high = unit.input_constant(b, self.low), unit.input_constant(b, self.high)
        z = b.op(
            "Sub",
            b.op("Sub", unit.output, unit.forward(b, low, _plus(w), _plus(bias))),
            unit.forward(b, high, _minus(w), _minus(bias)),
        )
        s = b.op("Div", relevance, stabilize(b, z, self.stabilizer))
        r = b.op(
            "Sub",
            b.op("Mul", unit.x, unit.transposed(b, s, w)),
            b.op("Mul", low, unit.transposed(b, s, _plus(w))),
        )
        return b.op("Sub", r, b.op("Mul", high, unit.transposed(b, s, _minus(w))))


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): all weights one, no bias, inputs one: relevance spreads
    uniformly over each output's receptive field."""

    stabilizer: float = 1e-6

    def linear(self, b, unit, relevance):
        ones = np.ones_like(unit.weight)
        z = unit.forward(b, unit.ones(b), ones, None)
        return unit.transposed(b, b.op("Div", relevance, stabilize(b, z, self.stabilizer)), ones)


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w^2 (Montavon et al. 2017): relevance spread in proportion to squared weights
    (Zennit squares the bias too)."""

    stabilizer: float = 1e-6

    def linear(self, b, unit, relevance):
        w2 = unit.weight**2
        z = unit.forward(b, unit.ones(b), w2, None if unit.bias is None else unit.bias**2)
        return unit.transposed(b, b.op("Div", relevance, stabilize(b, z, self.stabilizer)), w2)


@dataclass(frozen=True)
class GuidedBackprop(Rule):
    """Guided backpropagation at ReLUs (Springenberg et al. 2015): the gradient, where it is positive."""

    def elementwise(self, b, unit, relevance):
        grad = b.op("Mul", relevance, unit.derivative(b))
        dt = dtype_of(relevance)
        return b.op(
            "Mul", grad, b.op("Cast", b.op("Greater", relevance, b.const(0.0, dt)), to=relevance.dtype)
        )


@dataclass(frozen=True)
class DeconvNet(Rule):
    """DeconvNet at ReLUs (Zeiler & Fergus 2014): the positive part of the upper gradient."""

    def elementwise(self, b, unit, relevance):
        return b.op("Relu", relevance)
