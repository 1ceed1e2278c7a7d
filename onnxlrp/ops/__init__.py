"""Backward emitters, one module per op family; importing this package registers them all."""

from onnxlrp.ops import (  # noqa: F401  (registration)
    activations,
    attention,
    fusion,
    indexing,
    layernorm,
    linear,
    merges,
    normalization,
    pooling,
    resize,
    shape,
    smooth,
)
from onnxlrp.ops.base import (
    REGISTRY,
    ElementwiseUnit,
    GraphContext,
    LinearUnit,
    RoutingUnit,
    SummationUnit,
    Unit,
    Unsupported,
)

__all__ = [
    "REGISTRY",
    "ElementwiseUnit",
    "GraphContext",
    "LinearUnit",
    "RoutingUnit",
    "SummationUnit",
    "Unit",
    "Unsupported",
]
