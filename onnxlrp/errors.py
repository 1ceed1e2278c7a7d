"""Errors raised by onnxlrp. Every message names the problem and the place."""

from __future__ import annotations


class OnnxLrpError(Exception):
    """Base class of every error that onnxlrp raises on purpose."""


class ModelLoadError(OnnxLrpError):
    """The model file is missing, unreadable or not a valid ONNX model."""


class UnsupportedModelError(OnnxLrpError):
    """The model holds nodes that the compiler cannot propagate relevance through.

    ``problems`` lists every offending node as ``(node name, op type, reason)``.
    """

    def __init__(self, model_name: str, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"  - node {name!r} ({op_type}): {reason}" for name, op_type, reason in problems]
        super().__init__(f"{model_name}: {len(problems)} node(s) cannot be explained:\n" + "\n".join(lines))


class InputError(OnnxLrpError):
    """An input given to ``explain`` does not fit the model."""


class CompositeError(OnnxLrpError):
    """Unknown composite, or rule parameters that do not fit it."""
