"""Loading ONNX models and rewriting them into the canonical form that the compiler expects."""

from onnxlrp.graph.canonical import canonicalize
from onnxlrp.graph.load import load_model

__all__ = ["canonicalize", "load_model"]
