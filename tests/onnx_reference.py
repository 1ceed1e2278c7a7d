"""An independent reference for ONNX files nobody exported from torch: onnx2torch + Zennit 0.5.1.

:func:`to_torch` converts an ONNX model with onnx2torch (a ``torch.fx.GraphModule``) and rewrites
the few things Zennit's rule matching needs to see the layers as onnxlrp's composites do:

* the final Softmax is cut (onnxlrp explains the logits before it); Identity modules are removed
  (Zennit merges a BatchNorm only into the module registered right before it);
* sums of two or more activations (``Add``/``Sum`` modules, residual connections) become a
  ``zennit.layer.Sum`` of the stacked operands, so they get Zennit's ``Norm`` rule;
* ``GlobalAveragePool`` becomes ``nn.AdaptiveAvgPool`` and ``ReduceMean`` an ``AvgPool2d`` subclass
  (Zennit's ``AvgPool``, hence ``Norm``, as onnxlrp's pooling units);
  asymmetrically padded average pools (which onnx2torch refuses) become an ``nn.AvgPool2d``
  subclass computing ONNX's exact average, so Zennit's ``Norm`` applies to them as well;
* ``Mul``/``Div``/``Add``/``Sub`` by a per-channel constant right after a ``BatchNorm2d`` (Caffe2's
  scale layer), a ``Conv`` or a ``Linear`` (tf2onnx's BatchNorm) are folded into its parameters, as
  torch would have written the layer (Zennit then merges a BatchNorm into the Conv before it, or
  passes relevance through it);
* ``MatMul`` by a constant (+ ``Add`` of a constant bias) and ``Gemm`` with constant B/C become
  ``nn.Linear`` (Keras' Dense, jax2onnx's dot); a per-channel ``Add`` behind the NHWC Transposes
  of a Conv is folded into its bias (permuted back to the Conv's layout);
* onnx2torch's own single-input activation modules (HardSigmoid, Clip, Erf) and PReLU (made a
  single-input module holding its slope) get Zennit's ``Pass``, as its ``Activation`` types do;
* a ``Mul`` of a signal by a gate (an operand produced, through reshapes and scalings, by a
  Sigmoid/HardSigmoid/Clip module) becomes ``signal * gate.detach()`` through a single-input
  module with ``Pass``: the gate is a constant and the relevance flows to the signal;
* at the ONNX level, written-out PReLU ``Relu(x) + c Relu(-x)`` and hard swish
  ``x * Clip(x + 3, 0, 6) / 6`` are replaced by ``PRelu`` / ``HardSwish`` nodes.

:func:`reference` then runs Zennit with the composites of :mod:`reference` and the extra layer
map ``LocalResponseNorm -> Pass`` (onnxlrp's documented LRN treatment).  Opset < 11 models are
upgraded with ``onnx.version_converter`` first (onnx2torch has no Dropout-7 converter).
"""

from __future__ import annotations

import copy
import importlib.machinery
import sys
import types

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.version_converter
import torch
import torch.nn.functional as F
from conftest import install_torchvision_shim
from torch import fx, nn

install_torchvision_shim()


def _install_torchvision_ops_stub() -> None:
    """onnx2torch imports ``torchvision.ops`` (only for its NMS/RoIAlign converters)."""
    tv = sys.modules.get("torchvision")
    if tv is None or hasattr(tv, "ops") or getattr(tv, "__file__", None):
        return
    ops = types.ModuleType("torchvision.ops")
    ops.__spec__ = importlib.machinery.ModuleSpec("torchvision.ops", None)
    ops.roi_align = ops.nms = ops.box_convert = None
    tv.ops = ops
    sys.modules["torchvision.ops"] = ops


_install_torchvision_ops_stub()

import onnx2torch  # noqa: E402
from onnx2torch.node_converters import average_pool as _o2t_avg  # noqa: E402
from onnx2torch.node_converters.activations import OnnxErf, OnnxHardSigmoid, OnnxPReLU  # noqa: E402
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation  # noqa: E402
from onnx2torch.node_converters.clip import OnnxClip  # noqa: E402
from onnx2torch.node_converters.expand import OnnxExpand  # noqa: E402
from onnx2torch.node_converters.flatten import OnnxFlatten  # noqa: E402
from onnx2torch.node_converters.gemm import OnnxGemm  # noqa: E402
from onnx2torch.node_converters.global_average_pool import (  # noqa: E402
    OnnxGlobalAveragePool,
    OnnxGlobalAveragePoolWithKnownInputShape,
)
from onnx2torch.node_converters.identity import OnnxCopyIdentity  # noqa: E402
from onnx2torch.node_converters.matmul import OnnxMatMul  # noqa: E402
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes  # noqa: E402
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, add_converter  # noqa: E402
from onnx2torch.node_converters.reshape import OnnxReshape  # noqa: E402
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes  # noqa: E402
from onnx2torch.node_converters.sum import OnnxSum  # noqa: E402
from onnx2torch.node_converters.transpose import OnnxTranspose  # noqa: E402
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes  # noqa: E402
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node  # noqa: E402
from reference import Reference, make_composite, resolve_target  # noqa: E402
from zennit import composites as zc  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.core import Composite  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.rules import Pass  # noqa: E402

# --------------------------------------------------------------------------------------------
# modules the rewritten graph uses


class ExactAvgPool2d(nn.AvgPool2d):
    """ONNX AveragePool with asymmetric pads, ``count_include_pad`` 0 or 1 (linear in x)."""

    def __init__(self, kernel, stride, pads, count_include_pad):
        super().__init__(kernel, stride)
        self.pads = (pads[1], pads[3], pads[0], pads[2])  # F.pad order: w_begin, w_end, h_begin, h_end
        self.include = count_include_pad

    def forward(self, x):
        total = F.avg_pool2d(F.pad(x, self.pads), self.kernel_size, self.stride) * np.prod(self.kernel_size)
        if self.include:
            return total / float(np.prod(self.kernel_size))
        ones = torch.ones_like(x[:1, :1])
        count = F.avg_pool2d(F.pad(ones, self.pads), self.kernel_size, self.stride) * np.prod(
            self.kernel_size
        )
        return total / count


def _avg_pool_converter(original):
    def convert(node, graph):
        attrs = node.attributes
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        kernel = list(attrs["kernel_shape"])
        if len(kernel) == 2 and pads[:2] != pads[2:] and not attrs.get("ceil_mode", 0):
            module = ExactAvgPool2d(
                kernel, list(attrs.get("strides", [1, 1])), pads, attrs.get("count_include_pad", 0)
            )
            return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))
        return original(node, graph)

    return convert


for _key, _conv in list(_CONVERTER_REGISTRY.items()):
    if _key.operation_type == "AveragePool" and not getattr(_conv, "_exact", False):
        _CONVERTER_REGISTRY[_key] = _avg_pool_converter(_conv)
        _CONVERTER_REGISTRY[_key]._exact = True
del _o2t_avg


class Scale(nn.Module):
    """``x * self.gate`` (the gate set by :class:`GateMul` right before the call)."""

    def forward(self, x):
        return x * self.gate


class GateMul(nn.Module):
    """``signal * gate`` with the gate detached (a constant): Zennit passes relevance to the signal."""

    def __init__(self, signal_index: int):
        super().__init__()
        self.signal_index = signal_index
        self.scale = Scale()

    def forward(self, a, b):
        signal, gate = (a, b) if self.signal_index == 0 else (b, a)
        self.scale.gate = gate.detach()
        return self.scale(signal)


class ConstPReLU(nn.Module):
    """PReLU with its slope held by the module (single input, so Zennit's Pass applies)."""

    def __init__(self, slope: torch.Tensor):
        super().__init__()
        self.register_buffer("slope", slope.clone())

    def forward(self, x):
        return torch.where(x >= 0, x, x * self.slope)


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """ONNX ConvTranspose with asymmetric pads (TF "same"): the full transposed conv, then cropped."""

    def __init__(self, weight, bias, stride, pads, output_padding, dilation, groups):
        cin, cout = weight.shape[0], weight.shape[1] * groups
        super().__init__(
            cin, cout, weight.shape[2:], stride, 0, output_padding, groups, bias is not None, dilation
        )
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(weight))
            if bias is not None:
                self.bias.copy_(torch.as_tensor(bias))
        self.pads = pads

    def forward(self, x):
        y = F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, 0, self.output_padding, self.groups, self.dilation
        )
        top, left, bottom, right = self.pads
        return y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]


def _conv_transpose_converter(original):
    def convert(node, graph):
        attrs = node.attributes
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) == 4 and pads[:2] != pads[2:] and "output_shape" not in attrs:
            weight = graph.initializers[node.input_values[1]].to_torch()
            bias = graph.initializers[node.input_values[2]].to_torch() if len(node.input_values) > 2 else None
            module = CroppedConvTranspose2d(
                weight,
                bias,
                list(attrs.get("strides", [1, 1])),
                pads,
                list(attrs.get("output_padding", [0, 0])),
                list(attrs.get("dilations", [1, 1])),
                attrs.get("group", 1),
            )
            mapping = onnx_mapping_from_node(node)
            mapping = type(mapping)(inputs=mapping.inputs[:1], outputs=mapping.outputs)
            return OperationConverterResult(torch_module=module, onnx_mapping=mapping)
        return original(node, graph)

    return convert


for _key, _conv in list(_CONVERTER_REGISTRY.items()):
    if _key.operation_type == "ConvTranspose" and not getattr(_conv, "_exact", False):
        _CONVERTER_REGISTRY[_key] = _conv_transpose_converter(_conv)
        _CONVERTER_REGISTRY[_key]._exact = True


_TEST_DOMAIN = "onnxlrp_test"


@add_converter(operation_type="Gelu", version=1, domain=_TEST_DOMAIN)
def _gelu(node, graph):
    return OperationConverterResult(torch_module=nn.GELU(), onnx_mapping=onnx_mapping_from_node(node))


class MeanPool(nn.AvgPool2d):
    """``ReduceMean`` over spatial axes, typed as an average pool so that Zennit's Norm applies
    (onnxlrp's ReduceMean unit is an "AvgPool")."""

    def __init__(self, axes, keepdim):
        super().__init__(1)
        self.axes, self.keepdim = list(axes), keepdim

    def forward(self, x):
        return x.mean(dim=self.axes, keepdim=self.keepdim)


class StackSum(nn.Module):
    """``a + b + ...`` as ``zennit.layer.Sum(stack(broadcast(a, b, ...)))`` (Zennit's Norm rule)."""

    def __init__(self):
        super().__init__()
        self.sum = Sum(dim=-1)

    def forward(self, *xs):
        return self.sum(torch.stack(torch.broadcast_tensors(*xs), dim=-1))


# --------------------------------------------------------------------------------------------
# conversion


def _strip_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    graph = model.graph
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        if node.op_type in ("Softmax", "LogSoftmax") and node.output[0] in outputs:
            (index,) = [i for i, o in enumerate(graph.output) if o.name == node.output[0]]
            graph.node.remove(node)
            elem_type = graph.output[index].type.tensor_type.elem_type
            graph.output[index].CopyFrom(onnx.helper.make_tensor_value_info(node.input[0], elem_type, None))
    return model


def _drop_dropout(model: onnx.ModelProto) -> None:
    """Inference Dropout is the identity (onnx2torch mis-converts Dropout with a mask output)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Dropout" and not any(o in used for o in node.output[1:]):
            model.graph.node[index].CopyFrom(
                onnx.helper.make_node("Identity", node.input[:1], node.output[:1])
            )


def _fold_weight_layout(model: onnx.ModelProto) -> None:
    """Evaluate layout ops on initializers (Caffe2 reshapes its Gemm weights), so that onnx2torch
    sees a constant weight and builds an ``nn.Linear``/``nn.Conv`` that Zennit recognises."""
    import onnx.reference

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in list(graph.node):
        if node.op_type not in _LAYOUT or not all(i in inits for i in node.input if i):
            continue
        sub = onnx.helper.make_model(
            onnx.helper.make_graph(
                [node],
                "fold",
                [],
                [onnx.helper.make_tensor_value_info(node.output[0], 0, None)],
                [inits[i] for i in node.input if i],
            ),
            opset_imports=model.opset_import,
        )
        (value,) = onnx.reference.ReferenceEvaluator(sub).run(None, {})
        tensor = onnx.numpy_helper.from_array(np.asarray(value), node.output[0])
        graph.initializer.append(tensor)
        inits[tensor.name] = tensor
        graph.node.remove(node)


_LAYOUT = ("Reshape", "Transpose", "Unsqueeze", "Squeeze", "Cast", "Identity", "Flatten")


def _reduce_axes_as_attributes(model: onnx.ModelProto) -> None:
    """onnx2torch has no opset-18 Reduce* converters: write constant axes as the opset-13 attribute
    (only for models whose other ops are the same at opset 17, as the corpus' are)."""
    opset = model.opset_import[0]
    if opset.version < 18:
        return
    for node in model.graph.node:
        if node.op_type.startswith("Reduce") and len(node.input) > 1 and node.input[1]:
            axes = _const(model, node.input[1])
            del node.input[1:]
            node.attribute.append(onnx.helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))
    opset.version = 17


def _const(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return onnx.numpy_helper.to_array(n.attribute[0].t)
    return None


def _fuse_written_out_activations(model: onnx.ModelProto) -> None:
    """``Relu(x) + Mul(Relu(Neg(x)), c)`` -> ``PRelu(x, -c)``; ``x * (Clip(x + 3, 0, 6) * s)`` with
    ``s = 1/6`` (or ``/ 6``) -> ``HardSwish(x)``. Dead nodes are left for onnx2torch to skip."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}

    def prod(name, op):
        n = producer.get(name)
        return n if n is not None and n.op_type == op else None

    replaced = []
    for node in graph.node:
        if node.op_type == "Add":
            for a, b in ((0, 1), (1, 0)):
                relu, mul = prod(node.input[a], "Relu"), prod(node.input[b], "Mul")
                if relu is None or mul is None:
                    continue
                for i in (0, 1):
                    relu2, c = prod(mul.input[i], "Relu"), _const(model, mul.input[1 - i])
                    neg = prod(relu2.input[0], "Neg") if relu2 is not None else None
                    if c is not None and neg is not None and neg.input[0] == relu.input[0]:
                        slope = onnx.numpy_helper.from_array(-c, node.output[0] + "_slope")
                        graph.initializer.append(slope)
                        replaced.append(
                            (node, onnx.helper.make_node("PRelu", [relu.input[0], slope.name], node.output))
                        )
                        break
                else:
                    continue
                break
        elif node.op_type == "Mul":
            for a in (0, 1):
                x, scaled = node.input[a], prod(node.input[1 - a], "Mul") or prod(node.input[1 - a], "Div")
                if scaled is None:
                    continue
                clip = prod(scaled.input[0], "Clip")
                s_ = _const(model, scaled.input[1])
                add = prod(clip.input[0], "Add") if clip is not None else None
                if add is None or s_ is None or x not in add.input:
                    continue
                s_ = float(s_.reshape(-1)[0]) if scaled.op_type == "Mul" else 1.0 / float(s_.reshape(-1)[0])
                bias = _const(model, add.input[1] if add.input[0] == x else add.input[0])
                low, high = (_const(model, clip.input[i]) for i in (1, 2))
                if bias is None or low is None or high is None:
                    continue
                if np.allclose([float(bias.reshape(-1)[0]), float(low), float(high), s_], [3, 0, 6, 1 / 6]):
                    replaced.append((node, onnx.helper.make_node("HardSwish", [x], node.output)))
                    break
    for node in graph.node:  # GELU as jax2onnx writes it: Mul(Mul(x, 0.5), Add(Erf(Mul(x, 1/sqrt 2)), 1))
        if node.op_type != "Mul":
            continue
        for a in (0, 1):
            half, add = prod(node.input[a], "Mul"), prod(node.input[1 - a], "Add")
            if half is None or add is None:
                continue
            erf = prod(add.input[0], "Erf") or prod(add.input[1], "Erf")
            scaled = prod(erf.input[0], "Mul") if erf is not None else None
            if scaled is None:
                continue
            x = half.input[0] if _const(model, half.input[1]) is not None else half.input[1]
            if x in scaled.input and x in half.input:
                replaced.append(
                    (
                        node,
                        onnx.helper.make_node(
                            "Gelu", [x], node.output, name="gelu_" + str(len(replaced)), domain=_TEST_DOMAIN
                        ),
                    )
                )
                break
    for old, new in replaced:
        graph.node[list(graph.node).index(old)].CopyFrom(new)
    if replaced:
        model.opset_import[0].version = max(model.opset_import[0].version, 14)
        model.opset_import.append(onnx.helper.make_opsetid(_TEST_DOMAIN, 1))


def _active_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    active: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if (
            node.op == "placeholder"
            or node.op in ("call_module", "call_function", "call_method")
            and any(isinstance(a, fx.Node) and a in active for a in node.all_input_nodes)
        ):
            active.add(node)
    return active


def _is_op(module, fn) -> bool:
    return isinstance(module, OnnxBinaryMathOperation) and module.math_op_function is fn


def _rewrite(gm: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    modules = dict(gm.named_modules())
    values: dict[fx.Node, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            values[n] = result
            return result

    with torch.no_grad():
        Recorder(gm).run(example)
    for node in list(gm.graph.nodes):  # Identity modules would split Conv -> BatchNorm pairs
        if node.op == "call_module" and isinstance(modules[node.target], OnnxCopyIdentity | nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    active = _active_nodes(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        args = [a for a in node.args if isinstance(a, fx.Node)]
        n_active = sum(a in active for a in args)
        if (isinstance(module, OnnxSum) or _is_op(module, torch.add)) and n_active >= 2:
            setattr(gm, node.target.replace(".", "_") + "_zsum", StackSum())
            node.target = node.target.replace(".", "_") + "_zsum"
        elif isinstance(module, OnnxGlobalAveragePool | OnnxGlobalAveragePoolWithKnownInputShape):
            rank = values[node.args[0]].dim()
            pool = {3: nn.AdaptiveAvgPool1d, 4: nn.AdaptiveAvgPool2d, 5: nn.AdaptiveAvgPool3d}[rank](1)
            setattr(gm, node.target.replace(".", "_") + "_gap", pool)
            node.target = node.target.replace(".", "_") + "_gap"
        elif isinstance(module, OnnxBinaryMathOperation) and n_active == 1 and len(node.args) == 2:
            _fold_into_layer(gm, modules, node, active, values)
        elif _is_op(module, torch.mul) and n_active == 2:
            gate = [i for i in (0, 1) if _is_gate(node.args[i], gm)]
            if len(gate) == 1:
                name = node.target.replace(".", "_") + "_gate"
                setattr(gm, name, GateMul(1 - gate[0]))
                node.target = name
        elif isinstance(module, OnnxMatMul) and n_active == 1 and node.args[1] not in active:
            _matmul_to_linear(gm, modules, node, values)
        elif isinstance(module, OnnxGemm) and n_active == 1 and node.args[0] in active:
            _gemm_to_linear(gm, modules, node, values)
        elif (
            isinstance(module, OnnxReduceStaticAxes) and module.operation_type == "ReduceMean" and module.axes
        ):
            name = node.target.replace(".", "_") + "_meanpool"
            setattr(gm, name, MeanPool(module.axes, module.keepdims))
            node.target = name
        elif isinstance(module, OnnxPReLU) and node.args[1] not in active:
            name = node.target.replace(".", "_") + "_prelu"
            setattr(gm, name, ConstPReLU(torch.as_tensor(values[node.args[1]])))
            node.target = name
            node.args = (node.args[0],)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    gm.delete_all_unused_submodules()
    if "initializers" in gm._modules:  # a leaf registered after the first layer: keep Conv -> BN adjacent
        gm._modules["initializers"] = gm._modules.pop("initializers")
    return gm


_ROUTES = (
    OnnxReshape,
    OnnxUnsqueezeStaticAxes,
    OnnxSqueezeStaticAxes,
    OnnxFlatten,
    OnnxTranspose,
    OnnxExpand,
)
_GATES = (nn.Sigmoid, nn.Hardsigmoid, OnnxHardSigmoid, OnnxClip, nn.ReLU6)


def _is_gate(arg, modules) -> bool:
    """Whether ``arg`` is produced by a sigmoid-like module, through reshapes and scalings."""
    while isinstance(arg, fx.Node) and arg.op == "call_module":
        module = modules.get_submodule(arg.target)
        if isinstance(module, _GATES):
            return True
        if not (isinstance(module, _ROUTES) or _is_op(module, torch.mul) or _is_op(module, torch.div)):
            return False
        arg = arg.args[0]
    return False


def _matmul_to_linear(gm, modules, node, values) -> None:
    weight = torch.as_tensor(values[node.args[1]])
    if weight.dim() != 2:
        return
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=True)
    with torch.no_grad():
        linear.weight.copy_(weight.T)
        linear.bias.zero_()
    name = node.target.replace(".", "_") + "_linear"
    setattr(gm, name, linear)
    node.target = name
    node.args = (node.args[0],)
    modules[name] = linear


def _gemm_to_linear(gm, modules, node, values) -> None:
    module = modules[node.target]
    if module.trans_a or any(isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args[1:]):
        return
    weight = torch.as_tensor(values[node.args[1]]) * module.alpha
    weight = weight if module.trans_b else weight.T  # nn.Linear holds (out, in)
    bias = torch.as_tensor(values[node.args[2]]) * module.beta if len(node.args) > 2 else None
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=True)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(
            torch.zeros(weight.shape[0]) if bias is None else bias.reshape(-1).expand(weight.shape[0])
        )
    name = node.target.replace(".", "_") + "_linear"
    setattr(gm, name, linear)
    node.target = name
    node.args = (node.args[0],)
    modules[name] = linear


def _fold_into_layer(gm, modules, node, active, values) -> None:
    x, c = node.args
    if x not in active or c in active or x.op != "call_module" or len(x.users) != 1:
        return
    bn = modules.get(x.target)
    src, perms = x, []
    while isinstance(modules.get(src.target), OnnxTranspose) and len(src.users) == 1:  # NHWC pairs
        perms.append(modules[src.target].perm)
        src = src.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            return
    layer = modules.get(src.target)
    if isinstance(layer, nn.Sequential) and len(layer) and isinstance(layer[-1], nn.Conv2d):
        layer = layer[-1]  # onnx2torch's (pad, conv) for asymmetric "SAME" padding
    if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
        value = torch.as_tensor(values[c], dtype=layer.weight.dtype)
        rank = values[x].dim()
        value = value.reshape([1] * (rank - value.dim()) + list(value.shape))
        for perm in perms:  # Add(T_p(y), c) = T_p(y + c') with c' = c permuted by argsort(p)
            value = value.permute([int(i) for i in np.argsort(perm)])
        return _fold_into_weights(gm, modules, node, layer, value, values[src])
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.affine:
        return
    value = torch.as_tensor(values[c], dtype=bn.weight.dtype)
    channels = bn.num_features
    if value.numel() not in (1, channels):
        return
    shape = [1] * max(value.dim(), values[x].dim())
    shape = list(value.reshape([1] * (len(shape) - value.dim()) + list(value.shape)).shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return
    vector = value.reshape(-1).expand(channels)
    module = modules[node.target]
    with torch.no_grad():
        if _is_op(module, torch.mul):
            bn.weight.mul_(vector)
            bn.bias.mul_(vector)
        elif _is_op(module, torch.add):
            bn.bias.add_(vector)
        elif _is_op(module, torch.sub):
            bn.bias.sub_(vector)
        else:  # Div
            bn.weight.div_(vector)
            bn.bias.div_(vector)
    node.replace_all_uses_with(x)
    gm.graph.erase_node(node)


def to_torch(model: onnx.ModelProto, example: np.ndarray) -> fx.GraphModule:
    """The ONNX ``model`` as a torch module that Zennit explains as onnxlrp does (see module doc)."""
    names = [o.name for o in model.graph.output]
    model = _strip_softmax(model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        model = onnx.version_converter.convert_version(model, 13)
    _drop_dropout(model)
    _fold_weight_layout(model)
    _reduce_axes_as_attributes(model)
    _fuse_written_out_activations(model)
    model.ir_version = max(model.ir_version, 7)
    gm = onnx2torch.convert(model).eval()
    gm = _rewrite(gm, torch.as_tensor(example))
    for p in gm.parameters():
        p.requires_grad_(False)
    gm.onnx_outputs = names
    return gm


class _Pick(nn.Module):
    def __init__(self, model, index):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x):
        return self.model(x)[self.index]


_PASS_TYPES = (nn.LocalResponseNorm, OnnxHardSigmoid, OnnxClip, OnnxErf, ConstPReLU, Scale)


class _WithPass(Composite):
    """A Zennit composite plus ``Pass`` for LocalResponseNorm, gates and onnx2torch's activations
    (tried first; not for the plain gradient)."""

    def __init__(self, inner):
        self.inner = inner
        self.lrn = zc.LayerMapComposite([(_PASS_TYPES, Pass())])
        super().__init__(module_map=self._map, canonizers=inner.canonizers if inner else None)

    def _map(self, ctx, name, module):
        if self.inner is None:
            return None
        rule = self.lrn.module_map(ctx, name, module)
        if rule is None and self.inner is not None:
            rule = self.inner.module_map(ctx, name, module)
        return rule


def reference(
    torch_model: nn.Module,
    x: np.ndarray,
    composite: str,
    target=None,
    dtype=np.float64,
    seed=None,
    output: str | None = None,
    **params,
) -> Reference:
    """Zennit's relevance for the converted model (``seed``: the output relevance, else one-hot;
    ``output``: the ONNX output name to explain, for models with several)."""
    torch_dtype = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]
    model = copy.deepcopy(torch_model).to(torch_dtype).eval()
    names = getattr(torch_model, "onnx_outputs", [None])
    if len(names) > 1:
        model = _Pick(model, names.index(output) if output is not None else 0)
    inner = make_composite(composite, dtype=torch_dtype, **params)
    comp = _WithPass(inner)
    xt = torch.as_tensor(np.asarray(x), dtype=torch_dtype).clone()
    used = {}

    def seed_fn(out):
        if seed is not None:
            used["target"] = np.full(out.shape[0], -2)
            return seed(out) if callable(seed) else torch.as_tensor(seed, dtype=out.dtype)
        t = resolve_target(out.detach().reshape(out.shape[0], out.shape[1], -1).sum(-1).numpy(), target)
        used["target"] = t
        onehot = torch.zeros_like(out)
        onehot[torch.arange(out.shape[0]), torch.as_tensor(t)] = 1
        return onehot * out

    with Gradient(model=model, composite=comp) as attributor:
        out, relevance = attributor(xt, seed_fn)
    return Reference(relevance.detach().numpy(), out.detach().numpy(), used["target"])


def _fold_into_weights(gm, modules, node, layer, value, out) -> None:
    """Fold ``layer(x) (op) c`` into a Linear/Conv (``c`` per output feature / channel)."""
    x = node.args[0]
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    axis = out.dim() - 1 if isinstance(layer, nn.Linear) else 1
    full = value.reshape([1] * (out.dim() - value.dim()) + list(value.shape))
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis) or full.shape[axis] not in (1, channels):
        return
    vector = full.reshape(-1).expand(channels)
    module = modules[node.target]
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(channels, dtype=layer.weight.dtype), requires_grad=False)
    shape = [-1] + [1] * (layer.weight.dim() - 1)
    with torch.no_grad():
        if _is_op(module, torch.mul):
            layer.weight.mul_(vector.reshape(shape))
            layer.bias.mul_(vector)
        elif _is_op(module, torch.add):
            layer.bias.add_(vector)
        elif _is_op(module, torch.sub):
            layer.bias.sub_(vector)
        else:
            layer.weight.div_(vector.reshape(shape))
            layer.bias.div_(vector)
    node.replace_all_uses_with(x)
    gm.graph.erase_node(node)
