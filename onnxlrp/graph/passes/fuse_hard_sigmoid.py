"""Fuse written-out hard sigmoids and hard swishes into ``HardSigmoid`` / ``HardSwish`` nodes.

Keras' ``hard_sigmoid``/``hard_swish`` (through tf2onnx) and MobileNetV3-style code write
``relu6(x + 3) / 6`` as ``Mul(Clip(Add(x, b), 0, m), s)`` (or ``Div(..., d)``, ``s = 1 / d``). With
``s * m = 1`` this is ``min(1, max(0, s x + s b))`` = ``HardSigmoid(x, alpha=s, beta=s b)``;
multiplied by ``x`` itself it is a hard swish (``HardSwish`` when ``alpha = 1/6, beta = 1/2``).
onnxscript's ``fuse_hardswish_rules`` only match the ``Div`` by 6 form and not the reciprocal
``Mul``, hence this pass. Fused, each is one activation unit: LRP composites pass relevance through
it (as Zennit does for ``nn.Hardsigmoid``/``nn.Hardswish``), and a hard-sigmoid gate is recognised
by ``ops.gates``; left apart, ``x * hard_sigmoid(x)`` would be a product of two activations.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxlrp.graph.passes._util import constant_array, sole_consumer


def _scalar(value: ir.Value | None) -> float | None:
    c = constant_array(value)
    return None if c is None or c.size != 1 else float(c.reshape(-1)[0])


def _clip_bounds(clip: ir.Node) -> tuple[float | None, float | None]:
    if len(clip.inputs) > 1:
        low = _scalar(clip.inputs[1]) if clip.inputs[1] is not None else None
        high = _scalar(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2] is not None else None
        return low, high
    return clip.attributes.get_float("min", None), clip.attributes.get_float("max", None)


def _match(scale_node: ir.Node) -> tuple[ir.Value, float, float, list[ir.Node]] | None:
    """``(x, alpha, beta, nodes)`` if ``scale_node`` computes ``Clip(x + b, 0, m) * s`` with ``s m = 1``."""
    if scale_node.op_type not in ("Mul", "Div") or len(scale_node.inputs) != 2:
        return None
    for index in (0, 1) if scale_node.op_type == "Mul" else (0,):
        clip = scale_node.inputs[index].producer()
        s = _scalar(scale_node.inputs[1 - index])
        if clip is None or clip.op_type != "Clip" or s is None or s == 0.0:
            continue
        s = s if scale_node.op_type == "Mul" else 1.0 / s
        low, high = _clip_bounds(clip)
        add = clip.inputs[0].producer()
        if low != 0.0 or high is None or abs(s * high - 1.0) > 1e-5 or sole_consumer(clip.outputs[0]) is None:
            continue
        if add is None or add.op_type != "Add" or sole_consumer(add.outputs[0]) is None:
            continue
        for k in (0, 1):
            b = _scalar(add.inputs[1 - k])
            if b is not None and constant_array(add.inputs[k]) is None:
                return add.inputs[k], s, s * b, [clip, add]
    return None


def _replace(graph: ir.Graph, old_node: ir.Node, new_node: ir.Node) -> None:
    old, new = old_node.outputs[0], new_node.outputs[0]
    new.shape, new.type = old.shape, old.type
    graph.insert_before(old_node, new_node)
    if old.is_graph_output():
        new.name, old.name = old.name, f"{old.name}/unused"
        graph.outputs[graph.outputs.index(old)] = new
    ir.convenience.replace_all_uses_with(old, new)


def fuse_hard_sigmoid(model: ir.Model) -> None:
    """Fuse ``Clip(x + b, 0, m) * (1/m)`` into HardSigmoid and ``x * HardSigmoid(x)`` into HardSwish."""
    graph = model.graph
    for node in list(graph):
        if node.graph is not graph:
            continue
        found = _match(node)
        if found is None:
            continue
        x, alpha, beta, nodes = found
        hard = ir.node("HardSigmoid", [x], {"alpha": alpha, "beta": beta}, name=f"{node.name}/hard_sigmoid")
        _replace(graph, node, hard)
        graph.remove([node, *nodes], safe=True)
    for node in list(graph):
        if node.graph is not graph or node.op_type != "Mul" or len(node.inputs) != 2:
            continue
        for index in (0, 1):
            hard = node.inputs[index].producer()
            x = node.inputs[1 - index]
            if (
                hard is None
                or hard.op_type != "HardSigmoid"
                or hard.inputs[0] is not x
                or sole_consumer(hard.outputs[0]) is not node
                or abs(hard.attributes.get_float("alpha", 0.2) - 1 / 6) > 1e-6
                or abs(hard.attributes.get_float("beta", 0.5) - 0.5) > 1e-6
            ):
                continue
            swish = ir.node("HardSwish", [x], name=f"{node.name}/hard_swish")
            _replace(graph, node, swish)
            graph.remove([node, hard], safe=True)
            break
