"""Reading inputs from files: ``.npy`` arrays and images shaped to a model input.

Shared by the command line (``onnxlrp explain``) and batch jobs (``onnxlrp batch``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxlrp.errors import OnnxLrpError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class InputFileError(OnnxLrpError):
    """An input file is missing, unreadable or does not fit the model input."""


def check_file(path: str | os.PathLike, what: str, error: type[Exception] = InputFileError) -> None:
    """Raise ``error`` unless ``path`` is an existing regular file; ``what`` names it in the message."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise error(f"{what} {path!r}: no such file")
    if not os.path.isfile(path):
        raise error(f"{what} {path!r}: not a file")


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image file suffix (:data:`IMAGE_SUFFIXES`)."""
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def load_input(path: str | os.PathLike, input_shape: Sequence[Any]) -> np.ndarray:
    """Read ``path`` as a batch for a model input of shape ``input_shape`` (dims int, str or None).

    ``.npy``: a batch, or one sample (the batch axis is then added); cast to float32 unless it is
    float16/float32 (the caller casts to the model's input type where it knows it).
    Images: see :func:`load_image`.
    """
    path = os.fspath(path)
    check_file(path, "input")
    rank = len(input_shape)
    if path.lower().endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputFileError(f"input {path!r}: not a readable .npy file ({error})") from error
        if array.ndim == rank - 1:
            array = array[None]
        if array.ndim != rank:
            raise InputFileError(
                f"input {path!r} has shape {list(array.shape)}; the model input has shape "
                f"{list(input_shape)} (a batch or one sample is expected)"
            )
        if array.dtype not in (np.float16, np.float32):
            array = array.astype(np.float32)
        return np.ascontiguousarray(array)
    if is_image(path):
        return load_image(path, input_shape)
    raise InputFileError(
        f"input {path!r}: unknown file type; use .npy or an image ({', '.join(IMAGE_SUFFIXES)})"
    )


def load_image(path: str | os.PathLike, input_shape: Sequence[Any], resize: bool = True) -> np.ndarray:
    """Read image ``path`` as a batch of one for a 4-D model input of shape ``input_shape``.

    Converted to greyscale or RGB after the input's channel count, resized to its height and width
    when static (area average when shrinking, bilinear when enlarging; with ``resize=False`` an
    image of another size is an error), scaled to [0, 1]; NCHW, or NHWC when the model's last axis
    looks like channels and the second does not.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if len(input_shape) != 4:
        raise InputFileError(
            f"an image input needs a 4-D (NCHW) model input, but it has shape {list(input_shape)}"
        )
    dims = [_static(d) for d in input_shape]
    channels_last = dims[3] in (1, 3) and dims[1] not in (1, 3)
    channels, height, width = (dims[3], dims[1], dims[2]) if channels_last else (dims[1], dims[2], dims[3])
    if channels not in (None, 1, 3):
        raise InputFileError(
            f"an image input needs 1 or 3 channels, but the model input has shape {list(input_shape)}"
        )
    try:
        with Image.open(path) as image:
            if channels is None:
                channels = 1 if image.mode in ("1", "L", "I", "I;16", "F") else 3
            if not resize and height and width and image.size != (width, height):
                raise InputFileError(
                    f"input {path!r}: image is {image.size[0]}x{image.size[1]}, model input {width}x{height}"
                )
            image = image.convert("L" if channels == 1 else "RGB")
            if height and width and image.size != (width, height):
                # shrinking: area average (exact for integer factors); enlarging: bilinear
                shrink = image.size[0] >= width and image.size[1] >= height
                image = image.resize(
                    (width, height), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
                )
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as error:
        raise InputFileError(f"input {path!r}: not a readable image ({error})") from error
    array = array.reshape(array.shape[0], array.shape[1], channels)
    if not channels_last:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array[None])


__all__ = ["IMAGE_SUFFIXES", "InputFileError", "check_file", "is_image", "load_image", "load_input"]
