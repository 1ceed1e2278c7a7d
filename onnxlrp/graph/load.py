"""Reading an ONNX model from a path or a ``ModelProto``, with clear errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from onnxlrp.errors import ModelLoadError

ModelSource = str | os.PathLike | onnx.ModelProto


def model_label(source: ModelSource) -> str:
    """A short name for error messages: the file name, or the graph name of an in-memory model."""
    if isinstance(source, onnx.ModelProto):
        return f"<model {source.graph.name or 'unnamed'}>"
    return str(source)


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load ``source`` (a path or a ``ModelProto``) and check that it is a well-formed ONNX model."""
    label = model_label(source)
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelLoadError(f"{label}: no such file")
        try:
            model = onnx.load(str(path))
        except Exception as error:  # onnx raises DecodeError, OSError, ValueError, ...
            raise ModelLoadError(f"{label}: not an ONNX model ({type(error).__name__}: {error})") from error
    if not model.graph.node:
        raise ModelLoadError(f"{label}: not an ONNX model (the graph has no nodes)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelLoadError(f"{label}: invalid ONNX model: {first_line}") from error
    return model
