"""The transformer building blocks one by one: written-out activations, LayerNorm and RMSNorm.

Each block sits between two linear layers of a tiny torch model exported to ONNX (TorchScript,
opset 17). Two checks per block:

- the ``gradient`` composite gives the exact gradient (relevance ``logit * d logit / dx``), which
  checks the fused unit's derivative or vector-Jacobian product against torch's autograd;
- ``attnlrp`` gives LXT's gradient x input with its local changes: the activation's gradient
  replaced by ``f(z) / z`` (identity rule), the normalisation's statistics detached.

And the plan holds one unit for the whole pattern, of the expected category.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import pytest

import onnxlrp
from onnxlrp.compiler import plan

torch = pytest.importorskip("torch")
nn = torch.nn
PROVIDERS = ["CPUExecutionProvider"]
EPS = 1e-5


def _layer_norm(x, detach):
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    std = torch.sqrt((centred**2).mean(-1, keepdim=True) + EPS)
    return centred / (std.detach() if detach else std)


def _rms_rsqrt(x, detach):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
    return x * (r.detach() if detach else r)


def _rms_div(x, detach):
    root = torch.sqrt((x * x).mean(-1, keepdim=True) + EPS)
    return x / (root.detach() if detach else root)


def _torch_layer_norm(x, detach, module):
    if not detach:
        return module(x)
    return _layer_norm(x, True) * module.weight + module.bias


BLOCKS = {  # name: (function of z, LXT's version: detach=True, unit category, node count)
    "gelu_erf": (lambda z, d: nn.functional.gelu(z), "Activation", 5),
    "gelu_erf_other_order": (lambda z, d: z * 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))), "Activation", 5),
    "gelu_tanh": (lambda z, d: nn.functional.gelu(z, approximate="tanh"), "Activation", None),
    "gelu_new": (
        lambda z, d: (
            0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * torch.pow(z, 3.0))))
        ),
        "Activation",
        8,
    ),
    "silu": (lambda z, d: nn.functional.silu(z), "Activation", 2),
    "quick_gelu": (lambda z, d: z * torch.sigmoid(1.702 * z), "Activation", 3),
    "layer_norm_written_out": (_layer_norm, "LayerNorm", 7),
    "layer_norm_op": (_torch_layer_norm, "LayerNorm", 1),
    "rms_norm_rsqrt": (_rms_rsqrt, "RMSNorm", 6),
    "rms_norm_div": (_rms_div, "RMSNorm", 5),
}


class Block(nn.Module):
    def __init__(self, f, lxt=False):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second, self.norm = nn.Linear(6, 8), nn.Linear(8, 3), nn.LayerNorm(8)
        with torch.no_grad():
            self.norm.weight.add_(0.3 * torch.randn(8))
            self.norm.bias.add_(0.3 * torch.randn(8))
        self.f, self.lxt = f, lxt

    def forward(self, x):
        z = self.first(x)
        if self.lxt and self.category == "Activation":  # LXT's identity rule: gradient f(z) / z
            h = z * (self.f(z, True) / z).detach()
        elif self.f is _torch_layer_norm:
            h = self.f(z, self.lxt, self.norm)
        else:
            h = self.f(z, self.lxt)
        return self.second(h)


def _model(name: str, tmp_path, lxt: bool = False):
    f, category, _ = BLOCKS[name]
    model = Block(f, lxt).double() if lxt else Block(f)
    model.category = category
    return model.eval()


def _export(model, path) -> str:
    x = torch.randn(2, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )  # fmt: skip
    return str(path)


X = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32) * 2.0


def _gradient_x_input(model, x, target):
    x = torch.from_numpy(x).double().requires_grad_(True)
    y = model(x)
    picked = y[torch.arange(len(target)), torch.as_tensor(target)]
    picked.sum().backward()
    return x.grad.numpy(), picked.detach().numpy(), (x * x.grad).detach().numpy()


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block(name, tmp_path):
    path = _export(_model(name, tmp_path), tmp_path / f"{name}.onnx")
    _, category, count = BLOCKS[name]
    units = [e.unit for e in plan(path, "attnlrp").units if e.unit.category == category]
    assert len(units) == 1, [e.unit.category for e in plan(path, "attnlrp").units]
    if count is not None:
        assert len(units[0].nodes) == count
    target = np.array([0, 2])
    exact = _model(name, tmp_path).double()
    exact.load_state_dict(_model(name, tmp_path).state_dict())
    grad, logits, _ = _gradient_x_input(exact, X, target)
    result = onnxlrp.Explainer(path, "gradient", providers=PROVIDERS).explain(X, target=target)
    np.testing.assert_allclose(result.relevance, logits[:, None] * grad, rtol=1e-4, atol=1e-5)
    lxt = _model(name, tmp_path, lxt=True)
    lxt.load_state_dict(_model(name, tmp_path).state_dict())
    _, _, expected = _gradient_x_input(lxt, X, target)
    result = onnxlrp.Explainer(path, "attnlrp", providers=PROVIDERS).explain(X, target=target)
    error = np.linalg.norm(result.relevance - expected) / np.linalg.norm(expected)
    assert error < 1e-5


def test_gelu_op_opset20(tmp_path):
    """The opset-20 ``Gelu`` op: the identity rule in AttnLRP, its derivative for the gradient."""
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "w1"], ["z"]), oh.make_node("Gelu", ["z"], ["h"]),
         oh.make_node("MatMul", ["h", "w2"], ["y"])],
        "gelu20",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
        [onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 20)], ir_version=9)
    x = torch.from_numpy(X).double().requires_grad_(True)
    z = x @ torch.from_numpy(w1).double()
    y = nn.functional.gelu(z) @ torch.from_numpy(w2).double()
    y[:, 1].sum().backward()
    grad = x.grad.numpy()
    result = onnxlrp.Explainer(model, "gradient", providers=PROVIDERS).explain(X, target=1)
    np.testing.assert_allclose(result.relevance, y[:, 1:2].detach().numpy() * grad, rtol=1e-4, atol=1e-5)
    result = onnxlrp.Explainer(model, "attnlrp", providers=PROVIDERS).explain(X, target=1)
    np.testing.assert_allclose(result.relevance.sum(1), y[:, 1].detach().numpy(), rtol=1e-5)  # no biases


def test_product_rules(tmp_path):
    """``Mul`` of two activations: the gradient, AttnLRP's uniform rule (half each), CP-LRP's gate."""

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.gate, self.up, self.down = (
                nn.Linear(6, 8, bias=False),
                nn.Linear(6, 8, bias=False),
                nn.Linear(8, 3, bias=False),
            )

        def forward(self, x, mode=""):
            gate = nn.functional.silu(self.gate(x))
            if mode == "detach":
                gate = gate.detach()
            elif mode == "uniform":
                gate = self.gate(x) * (gate / self.gate(x)).detach()  # identity rule on SiLU
            product = gate * self.up(x)
            if mode == "uniform":
                product = 0.5 * product + (0.5 * product).detach()  # LXT's divide_gradient(., 2)
            return self.down(product)

    model = Gated().eval()
    path = _export(model, tmp_path / "gated.onnx")
    target = np.array([1, 1])
    x = torch.from_numpy(X).double()
    model = model.double()
    for composite, mode in (("attnlrp", "uniform"), ("cp-lrp", "detach"), ("gradient", "")):
        xr = x.clone().requires_grad_(True)
        out = model(xr, mode)[:, 1]
        out.sum().backward()
        expected = (
            (xr * xr.grad).detach().numpy() if mode else out.detach().numpy()[:, None] * xr.grad.numpy()
        )
        result = onnxlrp.Explainer(path, composite, providers=PROVIDERS).explain(X, target=target)
        np.testing.assert_allclose(result.relevance, expected, rtol=1e-4, atol=1e-6, err_msg=composite)
    # bias-free and CP-LRP: conservation
    result = onnxlrp.Explainer(path, "cp-lrp", providers=PROVIDERS).explain(X, target=target)
    np.testing.assert_allclose(result.relevance.sum(1), result.output[:, 1], rtol=1e-5)
