"""onnxlrp: Layer-wise Relevance Propagation for any ONNX model.

``onnxlrp.compile`` turns an ONNX model into a second ONNX model that computes the forward pass
and the LRP relevance in one graph; ``onnxlrp.Explainer`` runs it with onnxruntime.
"""

from onnxlrp import rules
from onnxlrp.compiler import CompiledModel, compile
from onnxlrp.composites import COMPOSITES, Composite
from onnxlrp.errors import CompositeError, InputError, ModelLoadError, OnnxLrpError, UnsupportedModelError
from onnxlrp.report import ModelReport, NodeReport, inspect
from onnxlrp.runtime import Explainer, Result, region_seed

__version__ = "0.1.0"
__all__ = [
    "COMPOSITES",
    "CompiledModel",
    "Composite",
    "CompositeError",
    "Explainer",
    "InputError",
    "ModelReport",
    "NodeReport",
    "ModelLoadError",
    "OnnxLrpError",
    "Result",
    "UnsupportedModelError",
    "compile",
    "inspect",
    "region_seed",
    "rules",
]
