"""Zennit 0.5.1 reference relevances for the onnxlrp agreement tests.

:func:`zennit_relevance` runs Zennit on a deep copy of a torch model (by default in float64) with

* ``canonizers=[SequentialMergeBatchNorm()]`` for every composite (BatchNorms directly after a
  Linear/Conv are merged into it, as the compiler folds them in the graph), with one fix, see
  :class:`ExactSequentialMergeBatchNorm`;
* residual additions switched to ``zennit.layer.Sum`` (see :mod:`zoo`), so Zennit applies its
  ``Norm`` rule to them;
* the output relevance seed ``one_hot(target) * output`` (``Gradient`` attributor), i.e. the
  explained logit itself is the relevance that is distributed.

Composite names are onnxlrp's (with dashes).  All but two map to the Zennit class of the same
name; ``epsilon`` is our own ``LayerMapComposite`` (``layer_map_base(stabilizer)`` + the Epsilon
rule on every ``zennit.types.Linear``, i.e. Linear and all convolutions) and ``gradient`` is the
plain gradient without a composite (so, with the seed above, ``d out_t / d x * out_t``).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from conftest import install_torchvision_shim
from zoo import enable_zennit_sums

# already done by pytest's conftest import; needed when a script imports this module directly
install_torchvision_shim()

from zennit import composites as zc  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.rules import Epsilon  # noqa: E402
from zennit.types import Linear  # noqa: E402

COMPOSITES = (
    "epsilon",
    "epsilon-plus",
    "epsilon-plus-flat",
    "epsilon-gamma-box",
    "epsilon-alpha2-beta1",
    "epsilon-alpha2-beta1-flat",
    "excitation-backprop",
    "guided-backprop",
    "gradient",
)
"""All composite names understood by :func:`zennit_relevance` (onnxlrp's names)."""

_ZENNIT_CLASSES = {
    "epsilon-plus": zc.EpsilonPlus,
    "epsilon-plus-flat": zc.EpsilonPlusFlat,
    "epsilon-gamma-box": zc.EpsilonGammaBox,
    "epsilon-alpha2-beta1": zc.EpsilonAlpha2Beta1,
    "epsilon-alpha2-beta1-flat": zc.EpsilonAlpha2Beta1Flat,
    "excitation-backprop": zc.ExcitationBackprop,
    "guided-backprop": zc.GuidedBackprop,
}


class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
    """Zennit's ``SequentialMergeBatchNorm``, but the merged BatchNorm becomes the exact identity.

    Zennit 0.5.1 folds the BatchNorm into the preceding layer and then sets it to mean 0, var 1,
    weight 1, bias 0 -- but leaves its ``eps``, so the "identity" still computes
    ``x / sqrt(1 + eps)``: with torch's default ``eps = 1e-5`` every merged BatchNorm scales the
    activations by ``1 - 5e-6`` and the canonized model no longer computes the original function
    (the explained logit, hence the relevance, is off by ~5e-6 relative per BatchNorm on the path;
    observed 1.2e-5 - 2.6e-5 on our zoo, 100x float32 noise).  An exact fold, as a graph compiler
    does, has no such factor, so we also set the merged BatchNorm's ``eps`` to 0 (restored on
    removal).  Everything else is Zennit's code.
    """

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self.batch_norm_eps = batch_norm.eps
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps


class EpsilonComposite(zc.LayerMapComposite):
    """The epsilon rule on every Linear/Conv, Zennit's base map for the rest."""

    def __init__(self, epsilon=1e-6, stabilizer=1e-6, canonizers=None):
        layer_map = zc.layer_map_base(stabilizer) + [(Linear, Epsilon(epsilon=epsilon))]
        super().__init__(layer_map=layer_map, canonizers=canonizers)


def make_composite(name: str, dtype: torch.dtype = torch.float64, **params):
    """The Zennit composite for onnxlrp composite ``name`` (``None`` for ``gradient``).

    ``params`` (``epsilon``, ``gamma``, ``stabilizer``, ``low``, ``high``) go to the composite;
    unknown ones raise ``TypeError``.  Array-valued ``low``/``high`` must broadcast against the
    input (e.g. shape ``(1, C, 1, 1)`` for per-channel bounds).
    """
    if name == "gradient":
        if params:
            raise TypeError(f"gradient takes no parameters, got {sorted(params)}")
        return None
    params = dict(params)
    for key in ("low", "high"):
        if key in params and not np.isscalar(params[key]):
            params[key] = torch.as_tensor(np.asarray(params[key]), dtype=dtype)
    canonizers = [ExactSequentialMergeBatchNorm()]
    if name == "epsilon":
        return EpsilonComposite(canonizers=canonizers, **params)
    try:
        cls = _ZENNIT_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown composite {name!r}; known: {COMPOSITES}") from None
    return cls(canonizers=canonizers, **params)


def resolve_target(output: np.ndarray, target) -> np.ndarray:
    """Per-sample int64 targets: ``None`` -> top-1 of ``output``; int -> repeated; else as given."""
    batch = output.shape[0]
    if target is None:
        return np.argmax(output.reshape(batch, -1), axis=1).astype(np.int64)
    target = np.asarray(target, dtype=np.int64)
    if target.ndim == 0:
        return np.full(batch, int(target), dtype=np.int64)
    if target.shape != (batch,):
        raise ValueError(f"target must be an int or have shape ({batch},), got {target.shape}")
    return target


class Reference(NamedTuple):
    relevance: np.ndarray  # same shape as x, in the requested dtype
    output: np.ndarray  # model output (logits) in the requested dtype
    target: np.ndarray  # int64 per-sample targets


def zennit_explain(
    model: torch.nn.Module,
    x: np.ndarray,
    composite: str,
    target=None,
    dtype=np.float64,
    **params,
) -> Reference:
    """Zennit's relevance, output and targets for ``model`` at ``x`` (see module docstring)."""
    torch_dtype = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]
    model = enable_zennit_sums(copy.deepcopy(model)).to(torch_dtype).eval()
    comp = make_composite(composite, dtype=torch_dtype, **params)
    xt = torch.as_tensor(np.asarray(x), dtype=torch_dtype).clone()
    used = {}

    def seed(out):
        t = resolve_target(out.detach().cpu().numpy(), target)
        used["target"] = t
        onehot = torch.zeros_like(out)
        onehot[torch.arange(out.shape[0]), torch.as_tensor(t)] = 1
        return onehot * out

    # the models are tiny: one thread is fastest, and far faster than two on a busy 2-core box
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Gradient(model=model, composite=comp) as attributor:
            out, relevance = attributor(xt, seed)
    finally:
        torch.set_num_threads(threads)
    return Reference(relevance.detach().cpu().numpy(), out.detach().cpu().numpy(), used["target"])


def zennit_relevance(
    model: torch.nn.Module,
    x: np.ndarray,
    composite: str,
    target=None,
    dtype=np.float64,
    **params,
) -> np.ndarray:
    """Zennit's input relevance for ``model`` at ``x`` (float64 by default, see module docstring)."""
    return zennit_explain(model, x, composite, target, dtype=dtype, **params).relevance


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 error ``||a - b|| / ||b||`` in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def zennit_f32_error(model, x, composite, target=None, **params) -> float:
    """Zennit's own float32 error: ``rel_err(zennit_f32, zennit_f64)``."""
    r64 = zennit_relevance(model, x, composite, target, dtype=np.float64, **params)
    r32 = zennit_relevance(model, x, composite, target, dtype=np.float32, **params)
    return rel_err(r32, r64)
