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
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.errors import CompositeError
from onnxlrp.ops.base import ElementwiseUnit, LinearUnit, SummationUnit
from onnxlrp.ops.linear import ConvUnit, DenseUnit


def stabilize(b: Builder, z: ir.Value, epsilon: float) -> ir.Value:
    """``z + epsilon * sign(z)``, where zeros count as positive.

    Without ``Where`` and comparisons where that is exact, as onnxruntime's CPU kernels for them
    run several times slower than arithmetic: with a large ``K``, ``t = clip(K z, -2 epsilon, 0)``
    is ``-2 epsilon`` where ``z < 0`` and ``0`` where ``z >= 0``, so ``z + (t + epsilon)`` is
    Zennit's ``z + epsilon * sign(z)`` bit for bit wherever ``|z| >= 4 epsilon / K``, with
    ``K = min(4 epsilon / s, max)`` (``s`` the smallest subnormal). That covers every normal float
    for float32 and float64 with epsilon up to 1 (a negative subnormal may get a smaller shift);
    other cases (float16, whose subnormals are common, or a larger epsilon) use ``Where``.
    """
    if not epsilon:
        return z
    dt = dtype_of(z)
    info = np.finfo(dt)
    scale = min(4 * epsilon / float(info.smallest_subnormal), float(info.max))
    if info.bits < 32 or 4 * epsilon / scale > info.tiny:
        sign = b.op("GreaterOrEqual", z, b.const(0.0, dt))
        return b.op("Add", z, b.op("Where", sign, b.const(epsilon, dt), b.const(-epsilon, dt)))
    t = b.op("Clip", b.op("Mul", z, b.const(scale, dt)), b.const(-2 * epsilon, dt), b.const(0.0, dt))
    return b.op("Add", z, b.op("Add", t, b.const(epsilon, dt)))


def stabilize_nonnegative(b: Builder, z: ir.Value, epsilon: float) -> ir.Value:
    """``stabilize`` for a ``z`` that is never negative (sums of non-negative terms): ``z + epsilon``.

    One op instead of three, with the same result: ``sign(z) = +1`` on ``z >= 0`` (-0.0 included).
    """
    return b.op("Add", z, b.const(epsilon, dtype_of(z)))


def rectified(b: Builder, unit) -> ir.Value:
    """``relu(z)`` of a rectified unit's output ``z`` (see ``Unit.rectifier``): the ReLU's own output."""
    if unit.rectifier.op_type == "Relu":
        return unit.rectifier.outputs[0]
    return b.op("Relu", unit.output)


def stabilize_output(b: Builder, unit, epsilon: float) -> ir.Value:
    """``stabilize(z)`` of the unit's output. For a rectified unit ``relu(z) + epsilon``: the same
    where ``z >= 0``, and where ``z < 0`` the relevance it divides is 0 either way; one op instead
    of four, and ``z`` keeps the ReLU as its only reader (onnxruntime fuses the two)."""
    if unit.rectifier is None:
        return stabilize(b, unit.output, epsilon)
    return stabilize_nonnegative(b, rectified(b, unit), epsilon)


def _cast(array: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    return None if array is None else np.asarray(array, dtype=dtype)


def _forward_plus(
    b: Builder, unit: LinearUnit, x: ir.Value, weight: np.ndarray, bias: np.ndarray | None, epsilon: float
) -> ir.Value:
    """``unit.forward(x, weight, bias) + epsilon``, the epsilon folded into the bias when there is one
    (for a forward product known to be non-negative this is ``stabilize``, in no extra op)."""
    if bias is None:
        return b.op("Add", unit.forward(b, x, weight, None), b.const(epsilon, unit.dtype))
    return unit.forward(b, x, weight.astype(unit.weight.dtype), _cast(bias + epsilon, unit.weight.dtype))


def _positive(b: Builder, x: ir.Value) -> ir.Value:
    return b.op("Relu", x)


def _negative(b: Builder, x: ir.Value) -> ir.Value:
    return b.op("Min", x, b.const(0.0, dtype_of(x)))


def _plus(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.maximum(a, 0)


def _minus(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.minimum(a, 0)


def _per_channel(unit: LinearUnit, bound: float | np.ndarray) -> np.ndarray | None:
    """``bound`` as one value per input channel of a Conv (or input feature of a 2-d Dense), when
    it is constant over every other axis of one input sample; else None."""
    shape = static_shape(unit.x)
    if shape is None or None in shape[1:]:
        return None
    if isinstance(unit, ConvUnit) and len(shape) > 2 or isinstance(unit, DenseUnit) and len(shape) == 2:
        array = np.asarray(bound, dtype=unit.dtype)
        if array.ndim == 1 and len(shape) > 2 and array.shape[0] == shape[1]:
            array = array.reshape([-1] + [1] * (len(shape) - 2))
        try:
            sample = np.broadcast_to(array, [1, *shape[1:]])
        except ValueError:
            return None
        first = sample[(0, slice(None)) + (slice(0, 1),) * (len(shape) - 2)]
        if np.array_equal(sample[0], np.broadcast_to(first, sample.shape[1:])):
            return first.reshape(-1)
    return None


def _scale_input_channels(unit: LinearUnit, weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``weight`` with the entries that read input channel ``c`` multiplied by ``scale[c]``."""
    if isinstance(unit, DenseUnit):  # (in, out)
        return (weight * scale[:, None]).astype(weight.dtype)
    m, c_g, *kernel = weight.shape  # Conv: (M, C/g, k...)
    g = unit.geometry["group"]
    scaled = weight.reshape(g, m // g, c_g, *kernel) * scale.reshape(g, 1, c_g, *[1] * len(kernel))
    return scaled.reshape(weight.shape).astype(weight.dtype)


class Rule:
    """Base class: a rule implements the unit kinds it applies to.

    ``proportional_to_input``: the relevance the rule hands to a linear or summation input is 0
    wherever that input is 0 (``R_j = x_j * ...``); the compiler's sign analysis relies on it.
    """

    proportional_to_input: ClassVar[bool] = False

    def applies_to(self, kind: str) -> bool:
        """Whether the rule implements unit kind ``kind`` ("linear", "elementwise", "summation")."""
        return getattr(type(self), kind) is not getattr(Rule, kind)

    def linear(self, b: Builder, unit: LinearUnit, relevance: ir.Value) -> ir.Value:
        raise NotImplementedError

    def elementwise(self, b: Builder, unit: ElementwiseUnit, relevance: ir.Value) -> ir.Value:
        raise NotImplementedError

    def summation(self, b: Builder, unit: SummationUnit, relevance: ir.Value) -> list[ir.Value]:
        raise NotImplementedError

    # transformer units (onnxlrp.ops.attention, onnxlrp.ops.layernorm); each returns one relevance
    # (or None: nothing flows) per unit input
    def product(self, b: Builder, unit, relevance: ir.Value) -> list[ir.Value | None]:
        raise NotImplementedError

    def softmax(self, b: Builder, unit, relevance: ir.Value) -> list[ir.Value | None]:
        raise NotImplementedError

    def normalization(self, b: Builder, unit, relevance: ir.Value) -> list[ir.Value | None]:
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

    def product(self, b, unit, relevance):
        return [unit.transposed(b, relevance, i) for i in range(len(unit.inputs))]

    def softmax(self, b, unit, relevance):
        return [unit.gradient(b, relevance)]

    def normalization(self, b, unit, relevance):
        return [unit.gradient(b, relevance)]


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
    proportional_to_input: ClassVar[bool] = True

    def linear(self, b, unit, relevance):
        s = b.op("Div", relevance, stabilize_output(b, unit, self.epsilon))
        return b.op("Mul", unit.x, unit.transposed(b, s, unit.weight))

    def summation(self, b, unit, relevance):
        s = b.op("Div", relevance, stabilize_output(b, unit, self.epsilon))
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
    proportional_to_input: ClassVar[bool] = True

    def linear(self, b, unit, relevance):
        wp, wn, bp = _plus(unit.weight), _minus(unit.weight), _plus(unit.bias)
        if unit.x_nonnegative:
            s = b.op("Div", relevance, _forward_plus(b, unit, unit.x, wp, bp, self.stabilizer))
            return b.op("Mul", unit.x, unit.transposed(b, s, wp))
        xp, xn = _positive(b, unit.x), _negative(b, unit.x)
        z = b.op("Add", unit.forward(b, xp, wp, bp), unit.forward(b, xn, wn, None))
        s = b.op("Div", relevance, stabilize_nonnegative(b, z, self.stabilizer))
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
    proportional_to_input: ClassVar[bool] = True

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
            sp = b.op("Div", relevance, _forward_plus(b, unit, unit.x, wp, bp, eps))
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
        sp = b.op("Div", relevance, stabilize_nonnegative(b, zp, eps))
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
    proportional_to_input: ClassVar[bool] = True

    def linear(self, b, unit, relevance):
        # With z = x W + b the layer's own output and q = x+ W+ + x- W- + b+, the modified outputs
        # are zp = z + gamma q and zn = z + gamma (z - q) (as b = b+ + b-): one extra forward
        # product instead of two (four for signed inputs). gp = R / stab(zp) where z > 0 and
        # gn = R / stab(zn) where z < 0 (0 elsewhere). As q >= 0, zp > 0 where z > 0 and zn < 0
        # where z < 0. When the unit is rectified (R is 0 wherever z <= 0), gn is 0 and gp needs
        # no guard: R / (relu(z) + gamma q + eps), the denominator >= eps.
        if unit.x_nonnegative:
            return self._nonnegative(b, unit, relevance)
        return self._signed(b, unit, relevance)

    def _nonnegative(self, b, unit, relevance):
        # x- = 0: stab(zp) = zp + eps and stab(zn) = zn - eps, the epsilon in the bias of gamma q
        w, bias, g, z = unit.weight, unit.bias, self.gamma, unit.output
        gq = _forward_plus(
            b, unit, unit.x, g * _plus(w), None if bias is None else g * _plus(bias), self.stabilizer
        )
        w1 = w + g * _plus(w)
        if unit.rectifier is not None:
            s = b.op("Div", relevance, b.op("Add", rectified(b, unit), gq))
            return b.op("Mul", unit.x, unit.transposed(b, s, w1))
        zn = b.op("Sub", b.op("Mul", z, b.const(1.0 + g, dtype_of(z))), gq)
        gp, gn = _branches(b, z, relevance, b.op("Add", z, gq), zn)
        return b.op(
            "Mul", unit.x, b.op("Add", unit.transposed(b, gp, w1), unit.transposed(b, gn, w + g * _minus(w)))
        )

    def _signed(self, b, unit, relevance):
        # q = (x W + |x| |W|) / 2 + b+, and the backward pass
        #   x+ (T(gp, W1) + T(gn, W2)) + x- (T(gp, W2) + T(gn, W1))
        #   = x T(gp + gn, (1 + gamma/2) W) + |x| T(gp - gn, gamma/2 |W|)
        # takes two transposed products instead of four.
        w, bias, g, eps, z = unit.weight, unit.bias, self.gamma, self.stabilizer, unit.output
        dt = dtype_of(z)
        magnitude = b.op("Abs", unit.x)
        half_w = (g / 2 * np.abs(w)).astype(w.dtype)
        half_bias = None if bias is None else g * (_plus(bias) - bias / 2)
        half_z = b.op("Mul", z, b.const(g / 2, dt))
        if unit.rectifier is not None:  # gamma q + eps, at least eps also where q rounds below 0
            gq = b.op("Add", half_z, _forward_plus(b, unit, magnitude, half_w, half_bias, eps))
            gq = b.op("Max", gq, b.const(eps, dt))
            both = split = b.op("Div", relevance, b.op("Add", rectified(b, unit), gq))
        else:
            gq = b.op("Add", half_z, unit.forward(b, magnitude, half_w, _cast(half_bias, w.dtype)))
            zp = stabilize(b, b.op("Add", z, gq), eps)
            zn = stabilize(b, b.op("Sub", b.op("Mul", z, b.const(1.0 + g, dt)), gq), eps)
            gp, gn = _branches(b, z, relevance, zp, zn)
            both, split = b.op("Add", gp, gn), b.op("Sub", gp, gn)
        signed = b.op("Mul", unit.x, unit.transposed(b, both, ((1.0 + g / 2) * w).astype(w.dtype)))
        return b.op("Add", signed, b.op("Mul", magnitude, unit.transposed(b, split, half_w)))


def _branches(
    b: Builder, z: ir.Value, relevance: ir.Value, zp: ir.Value, zn: ir.Value
) -> tuple[ir.Value, ir.Value]:
    """``R / zp`` where ``z > 0`` and ``R / zn`` where ``z < 0``, each 0 elsewhere."""
    zero = b.const(0.0, dtype_of(z))
    gp = b.op("Where", b.op("Greater", z, zero), b.op("Div", relevance, zp), zero)
    gn = b.op("Where", b.op("Less", z, zero), b.op("Div", relevance, zn), zero)
    return gp, gn


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
        low, high = _per_channel(unit, self.low), _per_channel(unit, self.high)
        if low is not None and high is not None:
            # bounds constant per input channel fold into the weight: l W+ + h W- (one transposed
            # product instead of two; the constant part of z is one product of ones)
            w_box = _scale_input_channels(unit, _plus(w), low) + _scale_input_channels(unit, _minus(w), high)
            z = b.op("Sub", unit.output, unit.forward(b, unit.ones(b), w_box, bias))
            s = b.op("Div", relevance, stabilize(b, z, self.stabilizer))
            return b.op("Sub", b.op("Mul", unit.x, unit.transposed(b, s, w)), unit.transposed(b, s, w_box))
        low, high = unit.input_constant(b, self.low), unit.input_constant(b, self.high)
        constant = b.op(
            "Add", unit.forward(b, low, _plus(w), _plus(bias)), unit.forward(b, high, _minus(w), _minus(bias))
        )
        z = b.op("Sub", unit.output, constant)  # onnxruntime folds ``constant`` when the session loads
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
        if isinstance(unit, ConvUnit) and unit.geometry["group"] == 1:
            # every output channel has the same z and every input channel gets the same relevance:
            # sum R over the output channels, spread it through one channel, broadcast the result
            kernel = unit.weight.shape[2:]
            ones = np.ones((1, unit.weight.shape[1], *kernel), dtype=unit.weight.dtype)
            z = unit.forward(b, unit.ones(b), ones, None)  # (1, 1, ...): folded at session load
            total = b.op("ReduceSum", relevance, b.int64([1]), keepdims=1)
            s = b.op("Div", total, stabilize_nonnegative(b, z, self.stabilizer))
            spread = unit.transposed(b, s, np.ones((1, 1, *kernel), dtype=unit.weight.dtype))
            return b.op("Expand", spread, b.shape(unit.x))
        ones = np.ones_like(unit.weight)
        z = unit.forward(b, unit.ones(b), ones, None)
        return unit.transposed(b, b.op("Div", relevance, stabilize_nonnegative(b, z, self.stabilizer)), ones)


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w^2 (Montavon et al. 2017): relevance spread in proportion to squared weights
    (Zennit squares the bias too)."""

    stabilizer: float = 1e-6

    def linear(self, b, unit, relevance):
        w2 = unit.weight**2
        z = unit.forward(b, unit.ones(b), w2, None if unit.bias is None else unit.bias**2)
        return unit.transposed(b, b.op("Div", relevance, stabilize_nonnegative(b, z, self.stabilizer)), w2)


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


# ------------------------------------------------------------------------------------------------
# AttnLRP (Achtibat et al., ICML 2024) as LXT 2.1's efficient mode computes it: gradient x input,
# with the identity rule on activations and normalisations, the uniform rule on products of two
# activations and the softmax rule. Written in relevance form: where LXT's gradient is ``g``, the
# relevance is ``R = x * g``, so a local gradient-x-input step reads ``R_x = x * J^T (R_y / y)``.


def ratio(b: Builder, relevance: ir.Value, z: ir.Value, epsilon: float) -> ir.Value:
    """``R / stab(z)``; with ``epsilon=0`` an exact ``R / z`` that is 0 where ``z`` is 0 (0/0 = 0)."""
    if epsilon:
        return b.op("Div", relevance, stabilize(b, z, epsilon))
    dt = dtype_of(z)
    zero = b.const(0.0, dt)
    return b.op("Where", b.op("Equal", z, zero), zero, b.op("Div", relevance, z))


@dataclass(frozen=True)
class InputXGradient(Rule):
    """Local gradient x input (LRP-0, or LRP-epsilon with ``epsilon > 0``): ``R_x = x * J^T (R / y)``.

    On linear layers and sums this is the epsilon rule (biases and constant offsets keep their
    share); on a pointwise map ``R_x = x f'(x) R / f(x)`` (a constant scaling passes R through); on a
    normalisation the statistics are held constant (LayerNorm: ``(x - mean) * gamma / sigma + beta``
    with sigma constant). It is what LXT's gradient x input computes at every layer it leaves alone.
    """

    epsilon: float = 0.0
    proportional_to_input: ClassVar[bool] = True

    def linear(self, b, unit, relevance):
        return b.op(
            "Mul", unit.x, unit.transposed(b, ratio(b, relevance, unit.output, self.epsilon), unit.weight)
        )

    def elementwise(self, b, unit, relevance):
        s = ratio(b, relevance, unit.output, self.epsilon)
        return b.op("Mul", b.op("Mul", unit.x, unit.derivative(b)), s)

    def summation(self, b, unit, relevance):
        s = ratio(b, relevance, unit.output, self.epsilon)
        return [b.op("Mul", x, unit.transposed(b, s, i)) for i, x in enumerate(unit.inputs)]

    def normalization(self, b, unit, relevance):
        return [b.op("Mul", unit.x, unit.frozen(b, ratio(b, relevance, unit.output, self.epsilon)))]


@dataclass(frozen=True)
class Identity(Pass):
    """AttnLRP's identity rule: relevance passes unchanged through activations (GELU, SiLU, Tanh)
    and through RMSNorm (its ``rsqrt(mean(x^2) + eps)`` held constant)."""

    def normalization(self, b, unit, relevance):
        return [relevance]


def _product_share(b: Builder, unit, relevance: ir.Value, epsilon: float, keep: list[int]) -> list:
    """Gradient x input of a product for the operands in ``keep``, the others held constant."""
    shares: list[ir.Value | None] = [None] * len(unit.inputs)
    if unit.same_shapes and len(keep) == 1 and not epsilon:  # a Mul by a constant-held operand
        shares[keep[0]] = relevance
        return shares
    s = ratio(b, relevance, unit.output, epsilon)
    for i in keep:
        shares[i] = b.op("Mul", unit.inputs[i], unit.transposed(b, s, i))
    return shares


@dataclass(frozen=True)
class Uniform(Rule):
    """AttnLRP's uniform rule on a product of two activations (``Q K^T``, ``P V``, ``gate * up``):
    each operand gets half, ``R_a = a * T_a(R / z) / 2`` (for an elementwise product: ``R / 2``)."""

    epsilon: float = 0.0

    def product(self, b, unit, relevance):
        if unit.same_shapes and not self.epsilon:
            half = b.op("Mul", relevance, b.const(0.5, dtype_of(relevance)))
            return [half, half]
        shares = _product_share(b, unit, relevance, self.epsilon, list(range(len(unit.inputs))))
        return [b.op("Mul", r, b.const(0.5, dtype_of(r))) for r in shares]


@dataclass(frozen=True)
class Detach(Rule):
    """CP-LRP (Ali et al., ICML 2022) on products: operands with a role (attention probabilities,
    gates) are held constant, so all the relevance goes to the other operand (V, the up
    projection). Products where both or neither operand has a role take the uniform rule."""

    epsilon: float = 0.0

    def product(self, b, unit, relevance):
        keep = [i for i, role in enumerate(unit.roles) if role is None]
        if len(keep) in (0, len(unit.inputs)):
            return Uniform(self.epsilon).product(b, unit, relevance)
        return _product_share(b, unit, relevance, self.epsilon, keep)

    def softmax(self, b, unit, relevance):
        return [None]


@dataclass(frozen=True)
class SoftmaxRule(Rule):
    """AttnLRP's softmax rule: ``R_x = x * (R - s * sum(R))``, x the (scaled, masked) scores.

    It is gradient x input of the softmax. Where the probability ``s`` is exactly 0 (masked
    positions, ``x = -inf`` or a large negative) the relevance is 0, not ``-inf * 0 = NaN``.
    """

    def softmax(self, b, unit, relevance):
        s, x = unit.output, unit.x
        dt = dtype_of(s)
        inner = b.op("Sub", relevance, b.op("Mul", s, unit.sum(b, relevance)))
        zero = b.const(0.0, dt)
        return [b.op("Where", b.op("Equal", s, zero), zero, b.op("Mul", x, inner))]
