"""The LRP compiler: one ONNX graph with the forward pass and the relevance backward pass.

``compile`` canonicalises the model, cuts it into units (``onnxlrp.ops``), asks the composite for
each unit's rule, then walks the units in reverse topological order: the relevance arriving at a
value from all its readers is summed (fan-out), and the unit's rule hands it to its inputs.

The compiled model's interface (plain ONNX, no onnxlrp needed to run it):

- inputs: the model's inputs, ``lrp_target`` (int64, one per sample: a class index on axis 1 of
  the explained output, ``-1`` for the top-1 class, ``-2`` for none) and ``lrp_seed`` (shaped like
  the explained output). The output relevance is ``lrp_seed + one_hot(target) * output``.
- outputs: the model's outputs, the explained output (when it is not one of them, e.g. the logits
  before a final Softmax), ``lrp_target_used`` and ``relevance:<input>`` for every float input;
  with ``layers=True`` also ``relevance:<tensor>`` for every intermediate tensor.
- token-id inputs (int64 inputs read through an embedding ``Gather``, see ``onnxlrp.embeddings``):
  the relevance stops at the embedding's output; ``relevance:<ids input>`` is its sum over the
  hidden size, shaped like the ids. Other integer inputs (masks) are passed through.
- (batch, position, class) outputs (language-model logits; ``has_positions``): the class is on
  the last axis, at the position given per sample by the extra input ``lrp_position`` (int64,
  negative from the end, -1 the last); ``lrp_seed`` may then have 1 on the position axis (it
  broadcasts), and ``lrp_position_used`` gives the positions explained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxlrp import ops
from onnxlrp.analysis import activation_values, nonnegative_values
from onnxlrp.builder import Builder
from onnxlrp.composites import Composite, get_composite
from onnxlrp.embeddings import token_embeddings, vocabulary_size
from onnxlrp.errors import InputError, UnsupportedModelError
from onnxlrp.graph import canonicalize, load_model
from onnxlrp.graph.load import ModelSource, model_label, save_model
from onnxlrp.graph.precision import check_precision, to_float16
from onnxlrp.ops import fusion
from onnxlrp.rules import Gradient, Pass, Rule

TARGET_INPUT = "lrp_target"
SEED_INPUT = "lrp_seed"
TARGET_OUTPUT = "lrp_target_used"
POSITION_INPUT = "lrp_position"
POSITION_OUTPUT = "lrp_position_used"
RELEVANCE_PREFIX = "relevance:"
MAX_SEED_OCTAVES = 8  # the float16 mode scales its output relevance by at most 2**8 (_scale_seed)
_LINEAR = frozenset({"Convolution", "Dense"})
_FINAL_NORMALIZERS = ("Softmax", "LogSoftmax")
# ops between a final Softmax and the output: the opset converter's Reshape(Softmax(Flatten(x)))
# for opset-9 Softmax, and the float16 mode's Cast back to float32
_AFTER_NORMALIZER = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast")
# routing ops whose every output entry is a copy of an input entry, relevance going back to it
_COPYING = frozenset(
    ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout")
    + ("Concat", "Split", "Slice", "MaxPool", "Pad")
)


def relevance_output(name: str) -> str:
    """The compiled model's output name for the relevance of tensor ``name``."""
    return RELEVANCE_PREFIX + name


@dataclass
class PlannedUnit:
    """A unit with the rule it gets (None: the gradient) and why it cannot be explained, if so."""

    unit: ops.Unit | None
    node: ir.Node
    rule: Rule | None = None
    problem: str | None = None
    is_first: bool = False

    @property
    def rule_label(self) -> str:
        if self.unit is None:
            return "-"
        if self.unit.kind == "routing":
            return "Gradient (routing)"
        return repr(self.rule or Gradient())


@dataclass
class Plan:
    """The canonical model, the explained output and each unit's rule."""

    model: ir.Model
    label: str
    output: ir.Value
    explained: ir.Value
    stripped: str | None
    units: list[PlannedUnit] = field(default_factory=list)
    active: set[ir.Value] = field(default_factory=set)
    tokens: dict[ir.Value, ir.Value] = field(default_factory=dict)  # embedding output -> id input

    @property
    def problems(self) -> list[tuple[str, str, str]]:
        return [(p.node.name, p.node.op_type, p.problem) for p in self.units if p.problem]


def _pick_output(graph: ir.Graph, output: str | None, label: str) -> ir.Value:
    names = [v.name for v in graph.outputs]
    if output is None:
        return graph.outputs[0]
    if output not in names:
        raise InputError(f"{label}: no output named {output!r}; the outputs are: {', '.join(names)}")
    return graph.outputs[names.index(output)]


def _strip_normalizer(value: ir.Value) -> tuple[ir.Value, str | None]:
    """The input of a final Softmax/LogSoftmax (the logits), and a note saying what was stripped."""
    producer = value.producer()
    while producer is not None and producer.op_type in _AFTER_NORMALIZER:
        producer = producer.inputs[0].producer()
    if producer is not None and producer.op_type in _FINAL_NORMALIZERS:
        return producer.inputs[
            0
        ], f"explained from the input of the final {producer.op_type} ({producer.name!r})"
    return value, None


def _ancestors(value: ir.Value) -> set[ir.Node]:
    seen: set[ir.Node] = set()
    stack = [value.producer()]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(v.producer() for v in node.inputs if v is not None)
    return seen


def plan(
    model: ModelSource,
    composite: str | Composite = "epsilon-plus-flat",
    *,
    output: str | None = None,
    precision: str = "float32",
    cpu: bool = False,
    **params,
) -> Plan:
    """Canonicalise ``model`` and decide each unit's rule, without building anything."""
    composite = get_composite(composite, **params)
    check_precision(precision)
    label = model_label(model)
    ir_model = canonicalize(load_model(model), label)
    if precision == "float16":
        ir_model = to_float16(ir_model)
    graph = ir_model.graph
    chosen = _pick_output(graph, output, label)
    explained, stripped = _strip_normalizer(chosen)
    tokens = token_embeddings(graph)  # embedding lookups of int64 id inputs: relevance ends there
    active = activation_values(graph, tokens)
    if explained not in active:
        raise InputError(f"{label}: output {chosen.name!r} does not depend on any float input")
    nonneg = nonnegative_values(graph, active)
    ctx = ops.GraphContext(is_activation=active.__contains__, is_nonnegative=nonneg.__contains__, cpu=cpu)
    needed = _ancestors(explained)
    result = Plan(ir_model, label, chosen, explained, stripped, active=active, tokens=tokens)
    absorbed: set[ir.Node] = set()
    first_found = False  # Zennit's first layer: the first Linear module, here in graph order
    for node in graph:
        if (
            node in absorbed
            or node not in needed
            or not any(v in active for v in node.inputs if v is not None)
            or not any(v in active for v in node.outputs)  # Shape, masks: no relevance path
        ):
            continue
        entry = PlannedUnit(None, node)
        result.units.append(entry)
        fused = fusion.match(node, ctx)  # multi-node patterns: GELU, SiLU, LayerNorm, RMSNorm
        factory = ops.REGISTRY.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if factory is None and fused is None:
            entry.problem = (
                f"op type {node.domain + '.' if node.domain else ''}{node.op_type} is not supported"
            )
            continue
        try:
            unit = fused or factory(node, ctx)
        except ops.Unsupported as error:
            entry.problem = str(error)
            continue
        entry.unit = unit
        absorbed.update(unit.nodes[1:])
        entry.is_first = not first_found and unit.category in _LINEAR
        first_found = first_found or entry.is_first
        if unit.kind != "routing":
            entry.rule = composite.rule_for(unit, entry.is_first)
            if entry.rule is not None and not entry.rule.applies_to(unit.kind):
                entry.problem = f"rule {entry.rule!r} does not apply to a {unit.kind} layer"
    if not result.problems:
        _mark_rectified(result)
    return result


def _mark_rectified(the_plan: Plan) -> None:
    """Set ``Unit.rectifier`` where the relevance reaching a unit's output is 0 wherever it is <= 0.

    A value's relevance *vanishes with it* (is 0 wherever the value is 0) when every reader hands
    it such a share: rules proportional to their input (epsilon, z+, gamma, alpha-beta, ...),
    routing ops that copy entries whose own outputs vanish, and rectifiers (ReLU, ReLU6: 0 exactly
    where their input is <= 0) passing relevance or the gradient, whose outputs vanish. A linear or
    summation unit whose output ``z`` is read by such a rectifier only then gets no relevance where
    ``z <= 0``. The walk is in reverse order, so that every reader is decided before the value it
    reads.
    """
    readers: dict[ir.Value, list[PlannedUnit]] = {}
    for planned in the_plan.units:
        for x in planned.unit.inputs:
            readers.setdefault(x, []).append(planned)
    vanishing: set[ir.Value] = set()

    def keeps_zeros(reader: PlannedUnit) -> bool:
        unit, rule = reader.unit, reader.rule
        if unit.kind == "routing":
            return unit.op_type in _COPYING and all(o in vanishing for o in unit.outputs)
        if unit.kind == "elementwise":
            passes = rule is None or isinstance(rule, (Pass, Gradient))
            return passes and unit.zero_below and unit.output in vanishing
        return rule is not None and rule.proportional_to_input

    for planned in reversed(the_plan.units):
        unit = planned.unit
        for z in unit.outputs:
            if z is not the_plan.explained and all(keeps_zeros(r) for r in readers.get(z, [])):
                vanishing.add(z)
        if unit.kind not in ("linear", "summation") or unit.output is the_plan.explained:
            continue
        only = readers.get(unit.output, [])
        if len(only) == 1 and only[0].unit.kind == "elementwise" and keeps_zeros(only[0]):
            unit.rectifier = only[0].unit.node


def _split_capped_rectifiers(the_plan: Plan) -> None:
    """Give each unit rectified by a capped Clip (a ReLU6) a ReLU of its own.

    ``Clip(z, 0, c)`` then reads ``Relu(z)``, the same values: the unit's output ``z`` has one
    reader, which onnxruntime fuses into the layer (with ReLU6 read directly it cannot: the Clip
    and the rules' ``relu(z)`` are two readers), and the rules read ``relu(z)`` from it
    (``rules.rectified``) instead of computing it again in the backward pass.
    """
    graph = the_plan.model.graph
    for planned in the_plan.units:
        unit = planned.unit
        clip = unit.rectifier
        if clip is None or clip.op_type != "Clip":
            continue
        relu = ir.node("Relu", [unit.output], name=f"{clip.name}/relu")
        relu.outputs[0].name = f"{unit.output.name}/relu"
        relu.outputs[0].shape, relu.outputs[0].type = unit.output.shape, unit.output.type
        graph.insert_before(clip, relu)
        clip.replace_input_with(0, relu.outputs[0])
        unit.rectifier = relu


@dataclass
class CompiledModel:
    """The compiled ONNX model and what its inputs and outputs mean."""

    model: onnx.ModelProto
    composite: str
    inputs: list[str]
    explained: str
    explained_note: str | None
    relevance_outputs: dict[str, str]
    layer_outputs: dict[str, str]
    compile_seconds: float
    token_inputs: dict[str, int] = field(default_factory=dict)  # id input -> vocabulary size
    positions: bool = False  # the explained output is (batch, position, class): see POSITION_INPUT
    precision: str = "float32"

    def save(self, path: str | Path) -> Path:
        """Write the compiled model to ``path``: one self-contained file, or for models over 2 GB
        the graph in ``path`` and the tensors in ``<name>.data`` beside it (ONNX external data)."""
        return save_model(self.model, path)


def has_positions(explained: ir.Value) -> bool:
    """Whether ``explained`` is laid out (batch, position, class): rank 3, a dynamic axis 1 and a
    static last axis (language-model logits, token classification)."""
    shape = explained.shape
    return (
        shape is not None and len(shape) == 3 and not isinstance(shape[1], int) and isinstance(shape[2], int)
    )


def _position_relevance(b: Builder, explained: ir.Value, graph: ir.Graph) -> tuple[ir.Value, ...]:
    """As ``_output_relevance`` for (batch, position, class) outputs: the class is picked at the
    position given per sample by ``lrp_position`` (negative: from the end, -1 the last)."""
    int64 = ir.TensorType(ir.DataType.INT64)
    target = ir.Value(name=TARGET_INPUT, shape=ir.Shape(["batch"]), type=int64)
    position = ir.Value(name=POSITION_INPUT, shape=ir.Shape(["batch"]), type=int64)
    dims = explained.shape
    seed = ir.Value(
        name=SEED_INPUT, shape=ir.Shape([dims[0], "lrp_seed_positions", dims[2]]), type=explained.type
    )
    graph.inputs.extend([target, seed, position])
    length = b.op("Gather", b.shape(explained), b.int64([1]), axis=0)
    used_position = b.op("Where", b.op("Less", position, b.int64(0)), b.op("Add", position, length), position)
    positions = b.op("Range", b.int64(0), b.op("Squeeze", length, b.int64([0])), b.int64(1))
    at = b.op(
        "Cast", b.op("Equal", b.op("Unsqueeze", used_position, b.int64([1])), positions), to=explained.dtype
    )
    at = b.op("Unsqueeze", at, b.int64([2]))  # (batch, position, 1)
    scores = b.op("ReduceSum", b.op("Mul", explained, at), b.int64([1]), keepdims=0)
    top1 = b.op("ArgMax", scores, axis=1, keepdims=0)
    used = b.op("Where", b.op("Equal", target, b.int64(-1)), top1, target)
    classes = b.op("Range", b.int64(0), b.op("Gather", b.shape(explained), b.int64(2), axis=0), b.int64(1))
    one_hot = b.op("Cast", b.op("Equal", b.op("Unsqueeze", used, b.int64([1])), classes), to=explained.dtype)
    one_hot = b.op("Mul", at, b.op("Unsqueeze", one_hot, b.int64([1])))
    relevance = b.op("Add", seed, b.op("Mul", one_hot, explained))
    return relevance, used, used_position


def _output_relevance(b: Builder, explained: ir.Value, graph: ir.Graph) -> tuple[ir.Value, ...]:
    """Add the seed inputs; return the relevance at the explained output and the targets used."""
    if has_positions(explained):
        return _position_relevance(b, explained, graph)
    target = ir.Value(name=TARGET_INPUT, shape=ir.Shape(["batch"]), type=ir.TensorType(ir.DataType.INT64))
    seed = ir.Value(name=SEED_INPUT, shape=explained.shape, type=explained.type)
    graph.inputs.extend([target, seed])
    rank = len(explained.shape) if explained.shape is not None else 2
    scores = (
        explained if rank == 2 else b.op("ReduceSum", explained, b.int64(list(range(2, rank))), keepdims=0)
    )
    top1 = b.op("ArgMax", scores, axis=1, keepdims=0)
    used = b.op("Where", b.op("Equal", target, b.int64(-1)), top1, target)
    classes = b.op("Range", b.int64(0), b.op("Gather", b.shape(explained), b.int64(1), axis=0), b.int64(1))
    one_hot = b.op("Equal", b.op("Unsqueeze", used, b.int64([1])), classes)
    if rank > 2:
        one_hot = b.op("Unsqueeze", one_hot, b.int64(list(range(2, rank))))
    one_hot = b.op("Cast", one_hot, to=explained.dtype)
    relevance = b.op("Add", seed, b.op("Mul", one_hot, explained))
    return relevance, used


def _propagate(b: Builder, planned: PlannedUnit, relevances: list[ir.Value | None]) -> list[ir.Value | None]:
    unit = planned.unit
    if unit.kind == "routing":
        return unit.backward(b, relevances)
    rule = planned.rule or Gradient()
    relevance = relevances[0]
    if unit.kind == "linear":
        return [rule.linear(b, unit, relevance)]
    if unit.kind == "elementwise":
        return [rule.elementwise(b, unit, relevance)]
    if unit.kind == "summation":
        return rule.summation(b, unit, relevance)
    return getattr(rule, unit.kind)(b, unit, relevance)  # product, softmax, normalization: a list


def _scale_seed(b: Builder, relevance: ir.Value) -> tuple[ir.Value, ir.Value]:
    """The output relevance times a power of two ``S`` (a float32 scalar), and ``S``.

    For the float16 mode, where small output relevance (small logits) would leave the relevance
    of the inputs below float16's smallest numbers (6e-8): ``S`` brings the batch's largest output
    relevance up to about 1, by at most ``2**MAX_SEED_OCTAVES`` (the ratios of relevance to
    activation, ``R / z``, grow by ``S`` too and must stay below float16's largest number). Every
    rule is linear in the relevance, and the relevance outputs are divided by ``S`` again in
    float32, exactly, as ``S`` is a power of two.
    """
    f32 = np.float32
    wide = b.op("Cast", relevance, to=ir.DataType.FLOAT)
    largest = b.op("Max", b.op("ReduceMax", b.op("Abs", wide), keepdims=0), b.const(2.0**-60, f32))
    octaves = b.op("Floor", b.op("Div", b.op("Neg", b.op("Log", largest)), b.const(np.log(2.0), f32)))
    octaves = b.op("Clip", octaves, b.const(0.0, f32), b.const(float(MAX_SEED_OCTAVES), f32))
    scale = b.op("Pow", b.const(2.0, f32), octaves)
    return b.op("Cast", b.op("Mul", wide, scale), to=relevance.dtype), scale


def _name_output(
    b: Builder, graph: ir.Graph, value: ir.Value, name: str, like: ir.Value, scale: ir.Value | None = None
) -> None:
    """Add ``value`` as graph output ``name``, shaped like ``like``; with a seed ``scale``, the
    relevance ``value`` is divided by it in float32 (see ``_scale_seed``)."""
    if scale is not None:
        if value.dtype != ir.DataType.FLOAT:
            value = b.op("Cast", value, to=ir.DataType.FLOAT)
        value = b.op("Div", value, scale)
    named = b.op("Identity", value)
    named.name = name
    named.shape = like.shape
    graph.outputs.append(named)


def _to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialize, keeping only complete value_info (built values carry a type but no shape)."""
    proto = ir.serde.serialize_model(model)
    complete = [v for v in proto.graph.value_info if v.type.tensor_type.HasField("shape")]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(complete)
    if not all(v.type.tensor_type.HasField("shape") for v in proto.graph.output):
        proto = onnx.shape_inference.infer_shapes(proto)
    proto.producer_name = "onnxlrp"
    return proto


def _release_tensors(graph: ir.Graph) -> None:
    """Drop the weights of the built graph once it is serialized: onnxscript's rewrite rules keep
    the last node they matched, and through it the whole graph (for VGG-16 some 600 MB)."""
    for value in graph.initializers.values():
        value.const_value = None


def compile(
    model: ModelSource,
    composite: str | Composite = "epsilon-plus-flat",
    *,
    output: str | None = None,
    layers: bool = False,
    precision: str = "float32",
    cpu: bool = False,
    **params,
) -> CompiledModel:
    """Compile ``model`` into one ONNX model computing its outputs and their LRP relevance.

    ``composite`` is a name (see ``onnxlrp.composites.COMPOSITES``) or a ``Composite``; ``params``
    are its rule parameters (``epsilon``, ``gamma``, ``low``, ``high``, ``stabilizer``).
    ``output`` picks the explained output (default: the first); ``layers=True`` adds the relevance
    of every intermediate tensor as outputs. ``precision="float16"`` computes in float16 (see
    ``onnxlrp.graph.precision``), the inputs, outputs and relevance staying float32. ``cpu=True``
    makes the graph for onnxruntime's CPU provider: where an op that is faster there has no kernel
    in the CUDA provider (``MaxUnpool``), it is used; the default graph runs well everywhere.
    """
    start = time.perf_counter()
    composite_obj = get_composite(composite, **params)
    the_plan = plan(model, composite_obj, output=output, precision=precision, cpu=cpu)
    if the_plan.problems:
        raise UnsupportedModelError(the_plan.label, the_plan.problems)
    _split_capped_rectifiers(the_plan)
    graph = the_plan.model.graph
    b = Builder(graph)
    model_inputs = [v for v in graph.inputs]
    originals = {v.name for v in graph.outputs}
    relevance, used, *position = _output_relevance(b, the_plan.explained, graph)
    scale = None
    if precision == "float16":
        relevance, scale = _scale_seed(b, relevance)
    arrived: dict[ir.Value, list[ir.Value]] = {the_plan.explained: [relevance]}
    for planned in reversed(the_plan.units):
        unit = planned.unit
        if not any(o in arrived for o in unit.outputs):
            continue
        b.scope = unit.name
        incoming = [b.sum(arrived[o]) if o in arrived else None for o in unit.outputs]
        for o, r in zip(unit.outputs, incoming):
            if r is not None:
                arrived[o] = [r]
        try:
            shares = _propagate(b, planned, incoming)
        except ops.Unsupported as error:  # found only while emitting (e.g. unknown broadcast shapes)
            raise UnsupportedModelError(the_plan.label, [(unit.name, unit.op_type, str(error))]) from error
        for x, r in zip(unit.inputs, shares):
            if r is not None:
                arrived.setdefault(x, []).append(r)
    b.scope = ""
    if the_plan.explained.name not in originals:
        graph.outputs.append(the_plan.explained)
    used.name = TARGET_OUTPUT
    used.shape = ir.Shape([the_plan.explained.shape[0] if the_plan.explained.shape else "batch"])
    graph.outputs.append(used)
    if position:
        position[0].name = POSITION_OUTPUT
        position[0].shape = ir.Shape([the_plan.explained.shape[0]])
        graph.outputs.append(position[0])
    relevance_outputs = {}
    for x in model_inputs:
        if x not in the_plan.active:
            continue
        parts = arrived.get(x)
        r = b.sum(parts) if parts else b.op("Mul", x, b.const(0.0, x.dtype.numpy()))
        relevance_outputs[x.name] = relevance_output(x.name)
        _name_output(b, graph, r, relevance_output(x.name), like=x, scale=scale)
    token_inputs = {}
    for x in model_inputs:  # id inputs: the relevance of their embeddings, summed over the hidden size
        lookups = [v for v, source in the_plan.tokens.items() if source is x]
        if not lookups:
            continue
        b.scope = f"tokens/{x.name}"
        per_token = [
            b.op("ReduceSum", b.sum(arrived[v]), b.int64([-1]), keepdims=0) for v in lookups if v in arrived
        ]
        zeros = b.op(
            "ConstantOfShape",
            b.shape(x),
            value=ir.tensor(np.zeros(1, dtype=the_plan.explained.dtype.numpy())),
        )
        r = b.sum(per_token) if per_token else zeros
        relevance_outputs[x.name] = relevance_output(x.name)
        token_inputs[x.name] = min(vocabulary_size(v) for v in lookups)
        _name_output(b, graph, r, relevance_output(x.name), like=x, scale=scale)
    b.scope = ""
    layer_outputs = {}
    if layers:
        for value, parts in arrived.items():
            if value in model_inputs or len(parts) != 1:
                continue
            layer_outputs[value.name] = relevance_output(value.name)
            _name_output(b, graph, parts[0], relevance_output(value.name), like=value, scale=scale)
    proto = _to_proto(the_plan.model)
    _release_tensors(the_plan.model.graph)
    return CompiledModel(
        model=proto,
        composite=composite_obj.name,
        inputs=[v.name for v in model_inputs],
        explained=the_plan.explained.name,
        explained_note=the_plan.stripped,
        relevance_outputs=relevance_outputs,
        layer_outputs=layer_outputs,
        compile_seconds=time.perf_counter() - start,
        token_inputs=token_inputs,
        positions=bool(position),
        precision=precision,
    )


__all__ = ["CompiledModel", "Plan", "compile", "plan"]
