"""``Resize`` (and ``Upsample``, which the opset converter turns into Resize) and ``Tile`` (Keras'
nearest upsampling is a Reshape/Tile/Reshape): relevance follows the gradient, as in Zennit (an
interpolation has no weights for a rule to modify).

Nearest, linear and cubic resizing are separable: along each resized axis ``a`` the output is
``y = x x_a M_a`` with an interpolation matrix ``M_a`` (``n_out x n_in``; each row holds one 1, or
the linear/cubic weights, which sum to 1, so relevance is conserved). The gradient is
``R_x = R_y x_a M_a^T``. ``M_a`` is computed at compile time by running the node's own Resize
(same mode, coordinate transformation, rounding, scale) on an identity matrix with ONNX's
reference evaluator, so it matches the forward op exactly; the resized axes need static sizes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.reference
import onnx_ir as ir

from onnxlrp.builder import Builder, dtype_of, static_shape
from onnxlrp.ops.base import GraphContext, RoutingUnit, Unsupported, constant, register

_ATTRIBUTES = ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a", "exclude_outside")


def _matrix(node: ir.Node, rank: int, axis: int, n_in: int, scale: float | None, n_out: int) -> np.ndarray:
    """``M`` (``n_out x n_in``) of the node's interpolation along ``axis``."""
    other = next(a for a in range(rank) if a != axis)
    dims = [1] * rank
    dims[axis], dims[other] = n_in, n_in
    eye = np.eye(n_in, dtype=np.float64)  # eye[k along other, j along axis]
    x = eye.reshape(dims)  # symmetric, so the order of the two axes does not matter
    attrs = {k: node.attributes[k].value for k in _ATTRIBUTES if k in node.attributes}
    inputs = ["x", "", ""]
    tensors = []
    if scale is not None:
        scales = np.ones(rank, dtype=np.float32)
        scales[axis] = scale
        tensors.append(onnx.numpy_helper.from_array(scales, "scales"))
        inputs[2] = "scales"
    else:
        sizes = np.asarray(dims, dtype=np.int64)
        sizes[axis] = n_out
        tensors.append(onnx.numpy_helper.from_array(sizes, "sizes"))
        inputs.append("sizes")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Resize", inputs, ["y"], **attrs)],
        "resize_matrix",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, dims)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, None)],
        tensors,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    (y,) = onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})
    y = np.moveaxis(y, (other, axis), (0, 1)).reshape(n_in, -1)  # [k, i]: output i of basis vector k
    if y.shape[1] != n_out:
        raise Unsupported(f"cannot reproduce the Resize along axis {axis} ({y.shape[1]} != {n_out})")
    return y.T


@register("Resize")
def resize(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    x, y = node.inputs[0], node.outputs[0]
    attrs = node.attributes
    if attrs.get_string("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        raise Unsupported("Resize with tf_crop_and_resize is not supported")
    if attrs.get_int("antialias", 0) or "axes" in attrs:
        raise Unsupported("Resize with antialias or axes is not supported")
    if attrs.get_string("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported("Resize with keep_aspect_ratio_policy is not supported")
    shape, out_shape = static_shape(x), static_shape(y)
    if shape is None or out_shape is None or len(shape) < 2:
        raise Unsupported("the input and output ranks of Resize must be known")
    scales_value = node.inputs[2] if len(node.inputs) > 2 else None
    sizes_value = node.inputs[3] if len(node.inputs) > 3 else None
    scales = constant(scales_value) if scales_value is not None else None
    if scales is not None and scales.size == 0:
        scales = None
    if scales is None and (sizes_value is None or constant(sizes_value) is None):
        raise Unsupported("Resize needs constant scales or sizes")
    rank = len(shape)
    matrices = {}
    for axis in range(rank):
        scale = None if scales is None else float(scales[axis])
        if scale == 1.0 or scale is None and shape[axis] == out_shape[axis] and shape[axis] is not None:
            continue
        if shape[axis] is None or out_shape[axis] is None:
            raise Unsupported(f"axis {axis} of Resize needs static input and output sizes")
        matrices[axis] = _matrix(node, rank, axis, shape[axis], scale, out_shape[axis])

    def backward(b: Builder, relevances):
        r = relevances[0]
        for axis, matrix in matrices.items():
            perm = [a for a in range(rank) if a != axis] + [axis]
            moved = b.op("Transpose", r, perm=perm)
            moved = b.op("MatMul", moved, b.const(matrix, dtype_of(x), hint="resize_matrix"))
            r = b.op("Transpose", moved, perm=[int(i) for i in np.argsort(perm)])
        return [r]

    return RoutingUnit([node], [x], [y], backward)


@register("Tile")
def tile(node: ir.Node, ctx: GraphContext) -> RoutingUnit:
    """``Tile``: each input entry is copied ``r_a`` times along axis ``a``; the gradient sums the
    copies: along each tiled axis, ``R`` (``r * d`` long) is reshaped to ``(r, d)`` and summed over
    ``r``. The tiled axes need a static size ``d``; the others may be dynamic."""
    x, y = node.inputs[0], node.outputs[0]
    repeats = constant(node.inputs[1])
    shape = static_shape(x)
    if repeats is None or shape is None:
        raise Unsupported("Tile needs constant repeats and a known input rank")
    rank = len(shape)
    tiled = {a: int(r) for a, r in enumerate(repeats.reshape(-1)) if int(r) != 1}
    for axis in tiled:
        if shape[axis] is None:
            raise Unsupported(f"axis {axis} of {x.name!r} must be static to undo the Tile")

    def backward(b: Builder, relevances):
        r = relevances[0]
        for axis, count in tiled.items():
            perm = [a for a in range(rank) if a != axis] + [axis]
            moved = b.op("Transpose", r, perm=perm)
            lead = b.op("Slice", b.shape(moved), b.int64([0]), b.int64([-1]))
            split = b.op("Concat", lead, b.int64([count, shape[axis]]), axis=0)
            summed = b.op("ReduceSum", b.op("Reshape", moved, split), b.int64([-2]), keepdims=0)
            r = b.op("Transpose", summed, perm=[int(i) for i in np.argsort(perm)])
        return [r]

    return RoutingUnit([node], [x], [y], backward)
