"""Compiled float16 graphs run in true float16 arithmetic: ONNX's reference evaluator computes every
op in its tensors' type (numpy), as a GPU would, where onnxruntime's CPU provider runs many float16
ops in float32 behind casts of its own (which would hide float16's rounding and range)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from onnxlrp.compiler import POSITION_INPUT, SEED_INPUT, TARGET_INPUT, CompiledModel, relevance_output


def run_float16(compiled: CompiledModel, feeds: dict[str, np.ndarray], target: np.ndarray) -> tuple:
    """(output explained, {input name: relevance}) for ``target`` (one class per sample); language
    models are explained at their last position."""
    graph = compiled.model.graph
    batch = len(target)
    seed_info = next(i for i in graph.input if i.name == SEED_INPUT)
    explained = next(o for o in graph.output if o.name == compiled.explained)
    classes = explained.type.tensor_type.shape.dim[-1].dim_value
    shape = [batch, 1, classes] if compiled.positions else [batch, classes]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(seed_info.type.tensor_type.elem_type)
    request = {**feeds, TARGET_INPUT: np.asarray(target, np.int64), SEED_INPUT: np.zeros(shape, dtype)}
    if compiled.positions:
        request[POSITION_INPUT] = np.full(batch, -1, np.int64)
    names = [compiled.explained, *(relevance_output(name) for name in compiled.relevance_outputs)]
    output, *relevance = ReferenceEvaluator(compiled.model).run(names, request)
    return output, dict(zip(compiled.relevance_outputs, relevance))
