"""Multi-node patterns that the compiler sees as one unit, and the written-out activations.

Exporters write some layers as several nodes: GELU as ``Div, Erf, Add, Mul, Mul`` (or, in its
tanh form, ``Pow, Mul, Add, Mul, Tanh, Add, Mul, Mul``), SiLU as ``Sigmoid`` then
``Mul(x, sigmoid(x))``, LayerNorm and RMSNorm as reductions and divisions. A *matcher* (registered
with ``register_fusion``) looks at a node and, if the node is the first of such a pattern, returns
the unit of the whole pattern; the compiler asks the matchers before the op registry.

Activations are matched by value, not by shape: from the node's activation input ``x``, the
*cluster* is every node that computes a pointwise function of ``x`` alone (``Mul, Add, Sub, Div,
Pow, Erf, Tanh, Sigmoid, Sqrt, Exp, Neg, Reciprocal`` with scalar constants). Each value of the
cluster whose sub-graph is closed (its inner values are read by no one else) is evaluated on test
points in float64 and compared with the known activations:

=============  ===========================================  ===========================================
name           f(x)                                          f'(x)
=============  ===========================================  ===========================================
gelu           x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2  Phi(x) + x phi(x), phi the normal density
gelu_tanh      x (1 + tanh(c (x + 0.044715 x^3))) / 2        (1 + t) / 2 + x (1 - t^2) c (1 + 3 0.044715
               with c = sqrt(2 / pi)                         x^2) / 2, t = tanh(c (x + 0.044715 x^3))
silu           x sigmoid(x)                                  s (1 + x (1 - s)), s = sigmoid(x)
quick_gelu     x sigmoid(1.702 x)                            s (1 + 1.702 x (1 - s)), s = sigmoid(1.702 x)
=============  ===========================================  ===========================================

so every association order and constant layout an exporter picks is recognised. The largest match
is one ``ElementwiseUnit`` of category ``"Activation"`` (LRP composites pass relevance through it,
as Zennit does for ``nn.GELU``/``nn.SiLU``; AttnLRP's identity rule); ``derivative`` is f'(x).
Clusters that match nothing are left to the per-op units.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of
from onnxlrp.ops.base import ElementwiseUnit, GraphContext, Unit, constant

Matcher = Callable[[ir.Node, GraphContext], Unit | None]
MATCHERS: list[Matcher] = []


def register_fusion(matcher: Matcher) -> Matcher:
    """Register a pattern matcher: ``matcher(node, ctx)`` returns the pattern's unit or None."""
    MATCHERS.append(matcher)
    return matcher


def match(node: ir.Node, ctx: GraphContext) -> Unit | None:
    """The unit of the multi-node pattern that starts at ``node``, if any."""
    if node.domain not in ("", "ai.onnx"):
        return None
    for matcher in MATCHERS:
        unit = matcher(node, ctx)
        if unit is not None:
            return unit
    return None


# ------------------------------------------------------------------------------------------------
# written-out activations

_POINTWISE = frozenset(
    {"Mul", "Add", "Sub", "Div", "Pow", "Erf", "Tanh", "Sigmoid", "Sqrt", "Exp", "Neg", "Reciprocal"}
)
_NONLINEAR = frozenset({"Pow", "Erf", "Tanh", "Sigmoid", "Sqrt", "Exp", "Reciprocal"})
_POINTS = np.linspace(-6.0, 6.0, 49)
_erf = np.vectorize(math.erf)
_C = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


FAMILIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(_C * (x + 0.044715 * x**3))),
    "silu": lambda x: x * _sigmoid(x),
    "quick_gelu": lambda x: x * _sigmoid(1.702 * x),
}


def derivative(b: Builder, family: str, x: ir.Value) -> ir.Value:
    """Emit f'(x) for activation ``family``."""
    dt = dtype_of(x)

    def c(value):
        return b.const(value, dt)

    if family == "gelu":
        cdf = b.op("Mul", b.op("Add", b.op("Erf", b.op("Mul", x, c(1.0 / math.sqrt(2.0)))), c(1.0)), c(0.5))
        pdf = b.op(
            "Mul", b.op("Exp", b.op("Mul", b.op("Mul", x, x), c(-0.5))), c(1.0 / math.sqrt(2 * math.pi))
        )
        return b.op("Add", cdf, b.op("Mul", x, pdf))
    if family == "gelu_tanh":
        x2 = b.op("Mul", x, x)
        inner = b.op("Mul", b.op("Add", x, b.op("Mul", b.op("Mul", x2, x), c(0.044715))), c(_C))
        t = b.op("Tanh", inner)
        left = b.op("Mul", b.op("Add", t, c(1.0)), c(0.5))
        slope = b.op("Mul", b.op("Add", b.op("Mul", x2, c(3 * 0.044715)), c(1.0)), c(_C))
        right = b.op(
            "Mul", b.op("Mul", b.op("Mul", x, b.op("Sub", c(1.0), b.op("Mul", t, t))), slope), c(0.5)
        )
        return b.op("Add", left, right)
    scale = 1.0 if family == "silu" else 1.702
    sx = x if scale == 1.0 else b.op("Mul", x, c(scale))
    s = b.op("Sigmoid", sx)
    return b.op("Mul", s, b.op("Add", c(1.0), b.op("Mul", sx, b.op("Sub", c(1.0), s))))


def _scalar(value: ir.Value | None) -> bool:
    array = constant(value)
    return array is not None and array.size == 1


def _cluster(x: ir.Value) -> list[ir.Node]:
    """Nodes computing pointwise functions of ``x`` alone (with scalar constants)."""
    values, nodes, queue = {x}, [], [x]
    while queue:
        value = queue.pop(0)
        for node in value.consumers():
            if node in nodes or node.op_type not in _POINTWISE or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.outputs) != 1 or not all(v is None or v in values or _scalar(v) for v in node.inputs):
                continue
            nodes.append(node)
            values.add(node.outputs[0])
            queue.append(node.outputs[0])
    return nodes


def _within(exit_value: ir.Value, nodes: list[ir.Node], x: ir.Value) -> list[ir.Node] | None:
    """The cluster nodes that ``exit_value`` depends on, if its inner values are read only there."""
    chosen: list[ir.Node] = []
    stack = [exit_value.producer()]
    while stack:
        node = stack.pop()
        if node is None or node in chosen or node not in nodes:
            continue
        chosen.append(node)
        stack.extend(v.producer() for v in node.inputs if v is not None and v is not x)
    for node in chosen:
        out = node.outputs[0]
        if out is exit_value:
            continue
        if out.is_graph_output() or any(c not in chosen for c in out.consumers()):
            return None
    return chosen


def _evaluate(
    nodes: list[ir.Node], x: ir.Value, exit_value: ir.Value, points: np.ndarray
) -> np.ndarray | None:
    values: dict[ir.Value, np.ndarray] = {x: points}

    def get(value):
        if value in values:
            return values[value]
        return constant(value).astype(np.float64).reshape(())

    remaining = list(nodes)
    with np.errstate(all="ignore"):
        while remaining:
            progressed = False
            for node in list(remaining):
                if not all(v in values or _scalar(v) for v in node.inputs if v is not None):
                    continue
                args = [get(v) for v in node.inputs if v is not None]
                values[node.outputs[0]] = _apply(node.op_type, args)
                remaining.remove(node)
                progressed = True
            if not progressed:
                return None
    return values.get(exit_value)


def _apply(op: str, args: list[np.ndarray]) -> np.ndarray:
    if op == "Mul":
        return args[0] * args[1]
    if op == "Add":
        return args[0] + args[1]
    if op == "Sub":
        return args[0] - args[1]
    if op == "Div":
        return args[0] / args[1]
    if op == "Pow":
        return np.power(args[0], args[1])
    if op == "Erf":
        return _erf(args[0])
    if op == "Tanh":
        return np.tanh(args[0])
    if op == "Sigmoid":
        return _sigmoid(args[0])
    if op == "Sqrt":
        return np.sqrt(args[0])
    if op == "Exp":
        return np.exp(args[0])
    if op == "Neg":
        return -args[0]
    return 1.0 / args[0]  # Reciprocal


def _family(values: np.ndarray | None, tolerance: float) -> str | None:
    """The family closest to ``values`` on ``_POINTS``, if within ``tolerance`` (relative)."""
    if values is None or values.shape != _POINTS.shape or not np.all(np.isfinite(values)):
        return None
    errors = {}
    for name, f in FAMILIES.items():
        expected = f(_POINTS)
        errors[name] = float(np.max(np.abs(values - expected) / (1.0 + np.abs(expected))))
    best = min(errors, key=errors.get)
    return best if errors[best] <= tolerance else None


def _tolerance(x: ir.Value) -> float:
    """How closely a written-out activation must match its family: 1e-5, or four float16 roundings
    for float16 graphs (whose constants, such as GELU's 0.044715, are rounded to float16)."""
    return 4 * float(np.finfo(np.float16).eps) if x.dtype is not None and x.dtype.itemsize < 4 else 1e-5


def activation_matches(x: ir.Value) -> list[tuple[str, ir.Value, list[ir.Node]]]:
    """Every ``(family, exit value, nodes)`` written-out activation of ``x``, largest first."""
    nodes = _cluster(x)
    found = []
    for node in nodes:
        exit_value = node.outputs[0]
        chosen = _within(exit_value, nodes, x)
        if chosen is None or len(chosen) < 2 or not any(n.op_type in _NONLINEAR for n in chosen):
            continue
        family = _family(_evaluate(chosen, x, exit_value, _POINTS), _tolerance(x))
        if family is not None:
            found.append((family, exit_value, chosen))
    found.sort(key=lambda item: -len(item[2]))
    return found


def activation_family(value: ir.Value, ctx: GraphContext) -> str | None:
    """The activation whose written-out form produces ``value``, or None."""
    producer = value.producer()
    if producer is None or producer.op_type not in _POINTWISE:
        return None
    roots = set()
    stack, seen = [producer], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for v in node.inputs:
            if v is None or not ctx.is_activation(v):
                continue
            p = v.producer()
            if p is not None and p.op_type in _POINTWISE:
                stack.append(p)
            else:
                roots.add(v)
    if len(roots) != 1:
        return None
    for family, exit_value, _ in activation_matches(roots.pop()):
        if exit_value is value:
            return family
    return None


@register_fusion
def written_out_activation(node: ir.Node, ctx: GraphContext) -> ElementwiseUnit | None:
    """GELU (erf and tanh forms), SiLU and QuickGELU written out as several pointwise nodes."""
    if node.op_type not in _POINTWISE:
        return None
    acts = [v for v in node.inputs if v is not None and ctx.is_activation(v)]
    if not acts or any(v is not acts[0] for v in acts):
        return None
    x = acts[0]
    for family, exit_value, chosen in activation_matches(x):
        if node in chosen:
            nodes = [node] + [n for n in chosen if n is not node]
            return ElementwiseUnit(
                nodes, x, exit_value, "Activation", lambda b, family=family: derivative(b, family, x)
            )
    return None


__all__ = ["FAMILIES", "MATCHERS", "activation_family", "activation_matches", "match", "register_fusion"]
