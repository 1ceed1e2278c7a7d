"""Composites: which rule each layer gets. The named ones have Zennit 0.5.1's names and semantics.

A layer is matched by, in this order: a node-name pattern (``"name:features.0*"``, shell-style),
its op type (``"Conv"``), or its layer kind, Zennit's types in ONNX terms:

=============  ====================================================================
kind           units
=============  ====================================================================
Convolution    Conv, ConvTranspose
Dense          Gemm, MatMul by a constant (torch.nn.Linear)
Linear         Convolution and Dense
Activation     Relu, LeakyRelu, PRelu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, ...
BatchNorm      a BatchNormalization that could not be folded into the layer before it
Sum            Add/Sum/Sub of activations (residual connections), ReduceSum
AvgPool        AveragePool, GlobalAveragePool, ReduceMean
Affine         an activation scaled or shifted by a constant (or by a mask, a rotary table)
Product        Mul/MatMul of two activations (attention ``Q K^T``, ``P V``, gated MLPs)
Softmax        a Softmax inside the model (attention probabilities)
LayerNorm      LayerNormalization, also written out (RMSNorm: ``RMSNorm``; both: Normalization)
=============  ====================================================================

Units that no entry matches follow the gradient (MaxPool, reshapes, ...), as in Zennit.
The ``first`` rule goes to the first Linear layer in graph order: Zennit's "first layer", the
first Linear module (in a torch export, the first in the graph).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping

import numpy as np

from onnxlrp.errors import CompositeError
from onnxlrp.ops.base import Unit
from onnxlrp.rules import (
    AlphaBeta,
    DeconvNet,
    Detach,
    Epsilon,
    Flat,
    Gamma,
    GuidedBackprop,
    Identity,
    InputXGradient,
    Norm,
    Pass,
    Rule,
    SoftmaxRule,
    Uniform,
    ZBox,
    ZPlus,
)

KINDS: dict[str, frozenset[str]] = {
    "Convolution": frozenset({"Convolution"}),
    "Dense": frozenset({"Dense"}),
    "Linear": frozenset({"Convolution", "Dense"}),
    "Activation": frozenset({"Activation"}),
    "BatchNorm": frozenset({"BatchNorm"}),
    "Sum": frozenset({"Sum"}),
    "AvgPool": frozenset({"AvgPool"}),
    "Affine": frozenset({"Affine"}),
    "Product": frozenset({"Product"}),
    "Softmax": frozenset({"Softmax"}),
    "LayerNorm": frozenset({"LayerNorm"}),
    "RMSNorm": frozenset({"RMSNorm"}),
    "Normalization": frozenset({"LayerNorm", "RMSNorm"}),
}
RuleMap = Mapping[str, Rule]


def _matches(key: str, unit: Unit) -> int | None:
    """The priority with which ``key`` matches ``unit`` (lower is stronger), or None."""
    if key.startswith("name:"):
        return 0 if fnmatch.fnmatchcase(unit.name, key[5:]) else None
    if key == unit.op_type:
        return 1
    if key in KINDS and unit.category in KINDS[key]:
        return 2
    return None


def _lookup(rule_map: RuleMap, unit: Unit) -> Rule | None:
    best = None
    for key, rule in rule_map.items():
        priority = _matches(key, unit)
        if priority is not None and (best is None or priority < best[0]):
            best = (priority, rule)
    return None if best is None else best[1]


class Composite:
    """A mapping of layers to rules, with an optional special rule for the first layer.

    >>> Composite({"Conv": Gamma(0.25), "Gemm": Epsilon(1e-6)}, first=Flat())
    """

    def __init__(self, layer_map: RuleMap, first: Rule | RuleMap | None = None, name: str = "custom"):
        for key, rule in layer_map.items():
            if not isinstance(rule, Rule):
                raise CompositeError(f"composite {name!r}: the value for {key!r} is not a rule: {rule!r}")
        self.layer_map = dict(layer_map)
        self.first_map = {"Linear": first} if isinstance(first, Rule) else dict(first or {})
        self.name = name

    def rule_for(self, unit: Unit, is_first: bool) -> Rule | None:
        """The rule for ``unit``; None means the gradient."""
        if is_first:
            rule = _lookup(self.first_map, unit)
            if rule is not None:
                return rule
        return _lookup(self.layer_map, unit)

    def __repr__(self) -> str:
        return f"Composite({self.name!r})"


def _base(stabilizer: float) -> dict[str, Rule]:
    """Zennit's ``layer_map_base``: activations pass, sums and average pools take the Norm rule."""
    return {"Activation": Pass(), "Sum": Norm(stabilizer), "AvgPool": Norm(stabilizer), "BatchNorm": Pass()}


def gradient() -> Composite:
    """The plain gradient (Zennit's ``Gradient`` attributor without a composite)."""
    return Composite({}, name="gradient")


def epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Epsilon rule on every Conv/Gemm/MatMul; activations pass; sums and average pools: Norm."""
    return Composite({**_base(stabilizer), "Linear": Epsilon(epsilon)}, name="epsilon")


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """z+ on convolutions, epsilon on dense layers (Zennit's ``EpsilonPlus``)."""
    return Composite(
        {**_base(stabilizer), "Convolution": ZPlus(stabilizer), "Dense": Epsilon(epsilon)},
        name="epsilon-plus",
    )


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """As epsilon-plus, with the flat rule on the first linear layer (Zennit's ``EpsilonPlusFlat``)."""
    layers = epsilon_plus(epsilon, stabilizer).layer_map
    return Composite(layers, first={"Linear": Flat(stabilizer)}, name="epsilon-plus-flat")


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """alpha2-beta1 on convolutions, epsilon on dense layers (Zennit's ``EpsilonAlpha2Beta1``)."""
    return Composite(
        {**_base(stabilizer), "Convolution": AlphaBeta(2.0, 1.0, stabilizer), "Dense": Epsilon(epsilon)},
        name="epsilon-alpha2-beta1",
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """As epsilon-alpha2-beta1, with the flat rule on the first linear layer."""
    layers = epsilon_alpha2_beta1(epsilon, stabilizer).layer_map
    return Composite(layers, first={"Linear": Flat(stabilizer)}, name="epsilon-alpha2-beta1-flat")


def epsilon_gamma_box(
    low: float | np.ndarray | None = None,
    high: float | np.ndarray | None = None,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
) -> Composite:
    """gamma on convolutions, epsilon on dense layers, z^B on the first convolution
    (Zennit's ``EpsilonGammaBox``). ``low``/``high``: the lowest and highest possible input values."""
    if low is None or high is None:
        raise CompositeError(
            "composite 'epsilon-gamma-box' needs the input bounds low and high for its box rule "
            "(the lowest and highest possible input values, scalars or per-channel arrays, "
            "e.g. low=-3.0, high=3.0)"
        )
    layers = {**_base(stabilizer), "Convolution": Gamma(gamma, stabilizer), "Dense": Epsilon(epsilon)}
    return Composite(layers, first={"Convolution": ZBox(low, high, stabilizer)}, name="epsilon-gamma-box")


def excitation_backprop(stabilizer: float = 1e-6) -> Composite:
    """z+ on every linear layer, Norm on sums and pools, gradient elsewhere (Zhang et al. 2016)."""
    return Composite(
        {"Sum": Norm(stabilizer), "AvgPool": Norm(stabilizer), "Linear": ZPlus(stabilizer)},
        name="excitation-backprop",
    )


def guided_backprop() -> Composite:
    """The gradient, with guided backpropagation at every ReLU (Springenberg et al. 2015)."""
    return Composite({"Relu": GuidedBackprop()}, name="guided-backprop")


def deconvnet() -> Composite:
    """The gradient, with DeconvNet's rule at every ReLU (Zeiler & Fergus 2014)."""
    return Composite({"Relu": DeconvNet()}, name="deconvnet")


def attnlrp(epsilon: float = 0.0) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024) as LXT 2.1's efficient mode: gradient x input (LRP-0,
    or epsilon) on every layer, biases and constant offsets keeping their share; the identity rule
    on activations and RMSNorm; LayerNorm with its standard deviation held constant; the uniform
    rule on products of two activations (``Q K^T``, ``P V``, gated MLPs); the softmax rule
    ``R_x = x (R - s sum(R))`` on attention probabilities."""
    local = InputXGradient(epsilon)
    return Composite(
        {
            "Linear": local,
            "Sum": local,
            "AvgPool": local,
            "Affine": local,
            "BatchNorm": local,
            "LayerNorm": local,
            "Activation": Identity(),
            "RMSNorm": Identity(),
            "Product": Uniform(epsilon),
            "Softmax": SoftmaxRule(),
        },
        name="attnlrp",
    )


def cp_lrp(epsilon: float = 0.0) -> Composite:
    """CP-LRP (Ali et al., ICML 2022) in LXT 2.1's form: as ``attnlrp``, but nothing flows through
    the softmax into Q and K, all of ``P V``'s relevance goes to V, and gates are held constant."""
    layers = dict(attnlrp(epsilon).layer_map)
    layers.update({"Product": Detach(epsilon), "Softmax": Detach(epsilon)})
    return Composite(layers, name="cp-lrp")


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "gradient": gradient,
    "epsilon": epsilon,
    "epsilon-plus": epsilon_plus,
    "epsilon-plus-flat": epsilon_plus_flat,
    "epsilon-gamma-box": epsilon_gamma_box,
    "epsilon-alpha2-beta1": epsilon_alpha2_beta1,
    "epsilon-alpha2-beta1-flat": epsilon_alpha2_beta1_flat,
    "excitation-backprop": excitation_backprop,
    "guided-backprop": guided_backprop,
    "deconvnet": deconvnet,
    "attnlrp": attnlrp,
    "cp-lrp": cp_lrp,
}


def get_composite(composite: str | Composite, **params) -> Composite:
    """Resolve a composite name (Zennit's underscores also accepted) with its rule parameters."""
    if isinstance(composite, Composite):
        if params:
            raise CompositeError(f"rule parameters {sorted(params)} only apply to named composites")
        return composite
    name = str(composite).replace("_", "-")
    if name not in COMPOSITES:
        raise CompositeError(f"unknown composite {composite!r}; choose one of: {', '.join(COMPOSITES)}")
    factory = COMPOSITES[name]
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise CompositeError(
            f"composite {name!r} takes no parameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        )
    return factory(**params)
