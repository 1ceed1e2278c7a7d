"""Backward emitters, one module per op family; importing this package registers them all."""

from onnxlrp.ops import activations, linear, merges, pooling, shape  # noqa: F401  (registration)
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
