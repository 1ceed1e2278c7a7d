"""A small node builder that appends the backward pass to an ``onnx_ir`` graph."""

from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir


class Builder:
    """Appends nodes and initializers to ``graph``, naming everything under ``prefix``.

    ``op("Mul", a, b)`` returns the output value; numpy arrays and Python scalars given as inputs
    become initializers in the dtype of the first value input.
    """

    def __init__(self, graph: ir.Graph, prefix: str = "lrp"):
        self.graph = graph
        self.prefix = prefix
        self._counter = itertools.count()
        self._scalars: dict[tuple, ir.Value] = {}
        self.scope = ""

    def _name(self, hint: str) -> str:
        scope = f"{self.scope}/" if self.scope else ""
        return f"{self.prefix}/{scope}{hint}_{next(self._counter)}"

    def const(
        self, array: np.ndarray | float | int, dtype: np.dtype | None = None, hint: str = "c"
    ) -> ir.Value:
        """An initializer holding ``array`` (cast to ``dtype`` if given); scalars are shared."""
        array = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
        key = None
        if array.size == 1 and array.ndim <= 1:
            key = (array.dtype.str, array.shape, array.item())
            if key in self._scalars:
                return self._scalars[key]
        tensor = ir.tensor(np.ascontiguousarray(array).reshape(array.shape))  # keep 0-d as 0-d
        value = ir.Value(
            name=self._name(hint), const_value=tensor, shape=tensor.shape, type=ir.TensorType(tensor.dtype)
        )
        self.graph.register_initializer(value)
        if key is not None:
            self._scalars[key] = value
        return value

    def _as_value(self, item, dtype: np.dtype | None) -> ir.Value | None:
        if item is None or isinstance(item, ir.Value):
            return item
        return self.const(item, dtype=dtype)

    def ops(self, op_type: str, *inputs, num_outputs: int = 1, **attributes) -> tuple[ir.Value, ...]:
        """Append one ``op_type`` node and return its outputs."""
        typed = inputs[1:] if op_type == "Where" else inputs  # Where's condition is bool
        dtype = next((dtype_of(v) for v in typed if isinstance(v, ir.Value) and v.dtype), None)
        values = [self._as_value(item, dtype) for item in inputs]
        attributes = {k: v for k, v in attributes.items() if v is not None}
        node = ir.node(op_type, values, attributes, num_outputs=num_outputs, name=self._name(op_type))
        dtype = _output_dtype(op_type, values, attributes)
        for index, output in enumerate(node.outputs):
            output.name = self._name(op_type.lower())
            if op_type == "MaxPool" and index == 1:
                output.dtype = ir.DataType.INT64
            elif dtype is not None:
                output.dtype = dtype
        self.graph.append(node)
        return tuple(node.outputs)

    def op(self, op_type: str, *inputs, **attributes) -> ir.Value:
        """Append one single-output ``op_type`` node and return its output."""
        return self.ops(op_type, *inputs, **attributes)[0]

    def shape(self, value: ir.Value) -> ir.Value:
        """The run-time shape of ``value`` (int64 vector)."""
        return self.op("Shape", value)

    def int64(self, values) -> ir.Value:
        """An int64 vector initializer."""
        return self.const(np.asarray(values, dtype=np.int64), hint="i")

    def in_float32(self, op_type: str, *inputs: ir.Value, **attrs) -> ir.Value:
        """``op_type`` on ``inputs``, with float inputs narrower than float32 cast to float32 and
        the result cast back: for onnxruntime CPU kernels that have no float16 form."""
        narrow = [v for v in inputs if v.dtype and v.dtype.is_floating_point() and v.dtype.itemsize < 4]
        if not narrow:
            return self.op(op_type, *inputs, **attrs)
        wide = [self.op("Cast", v, to=ir.DataType.FLOAT) if v in narrow else v for v in inputs]
        return self.op("Cast", self.op(op_type, *wide, **attrs), to=narrow[0].dtype)

    def scatter_add(self, data: ir.Value, indices: ir.Value, updates: ir.Value, axis: int) -> ir.Value:
        """``ScatterElements(data, indices, updates, reduction="add")``, in float32 for float16
        (onnxruntime's CPU kernel does not add float16)."""
        return self.in_float32("ScatterElements", data, indices, updates, axis=axis, reduction="add")

    def sum(self, values: list[ir.Value]) -> ir.Value:
        """The elementwise sum of ``values`` (the value itself when there is one)."""
        if len(values) == 1:
            return values[0]
        return self.op("Sum", *values)


_BOOL_OPS = frozenset({"Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Not"})
_INT64_OPS = frozenset({"Shape", "Size", "ArgMax", "ArgMin"})


def _output_dtype(op_type: str, inputs: list, attributes: dict) -> ir.DataType | None:
    """The element type of a built node's (first) output, so later constants can match it."""
    if op_type in _BOOL_OPS:
        return ir.DataType.BOOL
    if op_type in _INT64_OPS:
        return ir.DataType.INT64
    if op_type == "Cast":
        return ir.DataType(attributes["to"])
    if op_type == "ConstantOfShape":
        return attributes["value"].dtype
    first = 1 if op_type == "Where" else 0
    return next((v.dtype for v in inputs[first:] if v is not None and v.dtype is not None), None)


def dtype_of(value: ir.Value) -> np.dtype | None:
    """The numpy dtype of ``value``, if known."""
    return value.dtype.numpy() if value.dtype is not None else None


def static_shape(value: ir.Value) -> list[int | None] | None:
    """The shape of ``value`` with None for symbolic dimensions, or None if the rank is unknown."""
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape]
