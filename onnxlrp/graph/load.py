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
            # tensors stored as external data (files over 2 GB) are read from the model's folder
            model = onnx.load(str(path), load_external_data=True)
        except (FileNotFoundError, onnx.checker.ValidationError) as error:  # its external data file
            first_line = str(error).strip().splitlines()[0]
            raise ModelLoadError(f"{label}: cannot read its external data: {first_line}") from error
        except Exception as error:  # onnx raises DecodeError, OSError, ValueError, ...
            raise ModelLoadError(f"{label}: not an ONNX model ({type(error).__name__}: {error})") from error
    if not model.graph.node:
        raise ModelLoadError(f"{label}: not an ONNX model (the graph has no nodes)")
    try:
        # a file is checked from the file: the checker would serialise an in-memory model again
        # (twice the time, and impossible over protobuf's 2 GB cap; onnx's way for large models)
        onnx.checker.check_model(model if isinstance(source, onnx.ModelProto) else str(path))
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelLoadError(f"{label}: invalid ONNX model: {first_line}") from error
    return model


LARGE_MODEL_BYTES = 1_800_000_000
"""Above this serialized size a model is written with its tensors as external data (protobuf
cannot serialize a message of 2 GB or more)."""


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def tensor_bytes(model: onnx.ModelProto) -> int:
    """The size of the tensor data in ``model``'s main graph (initializers and ``Constant`` values),
    from their shapes: what decides whether it fits in one protobuf message. ``ByteSize()`` walks
    the whole message, a tenth of a second for a ResNet-50."""
    graph = model.graph
    constants = (a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t"))
    return sum(_tensor_bytes(t) for t in [*graph.initializer, *constants])


def is_large(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is too large to serialize as one protobuf message."""
    return tensor_bytes(model) > LARGE_MODEL_BYTES


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Save ``model`` to ``path``; a large one with its tensors in ``<name>.data`` beside it.

    The in-memory ``model`` keeps its tensors (onnx moves them out while saving; they are read
    back).
    """
    path = Path(path)
    if not is_large(model):
        onnx.save(model, str(path))
        return path
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )
    onnx.load_external_data_for_model(model, str(path.parent))
    return path
