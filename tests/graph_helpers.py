"""Helpers for the canonical-pass tests: tiny graphs in onnx.parser text, run before and after."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_ir as ir
import onnxruntime as ort

from onnxlrp.graph import canonicalize


def parse(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """A model from parser text plus the given initializers (by name)."""
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()
    )
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto | ir.Model, **feeds: np.ndarray) -> list[np.ndarray]:
    if isinstance(model, ir.Model):
        model = ir.serde.serialize_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def canonical(model: onnx.ModelProto) -> ir.Model:
    return canonicalize(model, "test")


def op_types(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def assert_same_function(model: onnx.ModelProto, **feeds: np.ndarray) -> ir.Model:
    """Canonicalise ``model``, check that it computes the same outputs, return the canonical form."""
    result = canonical(model)
    for got, want in zip(run(result, **feeds), run(model, **feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return result
