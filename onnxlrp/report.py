"""What a user wants to know before running: the model's inputs and outputs, and for every node
whether it can be explained and which rule it gets under a composite."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
import onnx_ir as ir

from onnxlrp.compiler import plan
from onnxlrp.composites import Composite
from onnxlrp.graph.load import ModelSource


@dataclass(frozen=True)
class NodeReport:
    name: str
    op_type: str
    rule: str | None  # None when the node is unsupported, "-" when it carries no relevance
    supported: bool
    reason: str | None = None


@dataclass
class ModelReport:
    inputs: list[tuple[str, str, list]]
    outputs: list[tuple[str, str, list]]
    explained: str
    note: str | None
    nodes: list[NodeReport] = field(default_factory=list)
    source_ops: dict[str, int] = field(default_factory=dict)  # op types of the file, before canonicalisation

    @property
    def unsupported(self) -> list[NodeReport]:
        return [n for n in self.nodes if not n.supported]

    def op_table(self) -> list[tuple[str, int, str, bool]]:
        """One row per (op type, rule): count, rule label, supported."""
        counts = Counter((n.op_type, n.rule or "unsupported", n.supported) for n in self.nodes)
        return [(op, count, rule, ok) for (op, rule, ok), count in sorted(counts.items())]


def _describe(value: ir.Value) -> tuple[str, str, list]:
    dtype = value.dtype.name.lower() if value.dtype is not None else "?"
    shape = [d if isinstance(d, int) else d.value for d in value.shape] if value.shape is not None else []
    return value.name, dtype, shape


def inspect(
    model: ModelSource,
    composite: str | Composite = "epsilon-plus-flat",
    *,
    output: str | None = None,
    **params,
) -> ModelReport:
    """Report every node of the canonical model with the rule it gets under ``composite``."""
    the_plan = plan(model, composite, output=output, **params)
    graph = the_plan.model.graph
    planned = {p.node: p for p in the_plan.units}
    absorbed = {n: p for p in the_plan.units if p.unit for n in p.unit.nodes[1:]}
    report = ModelReport(
        inputs=[_describe(v) for v in graph.inputs],
        outputs=[_describe(v) for v in graph.outputs],
        explained=the_plan.explained.name,
        note=the_plan.stripped,
    )
    for node in graph:
        entry = planned.get(node)
        if entry is None and node in absorbed:
            report.nodes.append(
                NodeReport(node.name, node.op_type, f"(part of {absorbed[node].node.name})", True)
            )
        elif entry is None:
            report.nodes.append(NodeReport(node.name, node.op_type, "-", True))
        elif entry.problem:
            report.nodes.append(NodeReport(node.name, node.op_type, None, False, entry.problem))
        else:
            label = entry.rule_label + (" [first layer]" if entry.is_first and entry.rule else "")
            if getattr(entry.unit, "note", None):  # e.g. a gate: relevance to the signal only
                label += f" [{entry.unit.note}]"
            report.nodes.append(NodeReport(node.name, node.op_type, label, True))
    report.source_ops = _source_ops(model)
    return report


def _source_ops(model: ModelSource) -> dict[str, int]:
    """How many nodes of each op type the file has, as its converter wrote it (weights not read)."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    return dict(Counter(node.op_type for node in proto.graph.node))
