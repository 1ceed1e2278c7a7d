"""A zoo of small torch models to check the ONNX LRP compiler against Zennit.

Every builder in :data:`ZOO` returns ``(model, example_input)``: the model is randomly initialised
from a fixed seed and put in eval mode; every BatchNorm gets *random* running statistics and
affine parameters so that BatchNorm folding is really exercised.  Inputs are tiny (batch 2) so
the whole agreement suite stays fast.

Conventions that keep Zennit's view of a model identical to the ONNX graph's:

* Modules are registered in forward (topological) order.  Zennit's ``SequentialMergeBatchNorm``
  merges a BatchNorm into the Linear/Conv registered right before it, and the
  ``SpecialFirstLayerMapComposite``\\ s pick "the first layer" by registration order.
* Every BatchNorm directly follows a Conv/Linear in the data flow *and* in registration order, so
  that Zennit merges all of them (the compiler folds them in the graph).
* Activations are modules (not functionals) so that Zennit can attach its ``Pass`` rules.
* Residual additions are plain ``a + b`` (an ONNX ``Add``) unless ``zennit_sum`` is set to a
  :class:`zennit.layer.Sum`, in which case they are computed as ``Sum(stack([a, b], -1))`` which
  is the only form to which Zennit applies its ``Norm`` rule.  ``tests.reference`` switches that
  on via :func:`enable_zennit_sums`; the two forms are numerically the same function.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

# --------------------------------------------------------------------------------------------
# helpers


class ResidualAdd(nn.Module):
    """``a + b``; with ``zennit_sum`` set, ``zennit_sum(stack([a, b], -1))`` (Zennit's Norm rule)."""

    def __init__(self):
        super().__init__()
        self.zennit_sum = None

    def forward(self, a, b):
        if self.zennit_sum is None:
            return a + b
        return self.zennit_sum(torch.stack([a, b], dim=-1))


def enable_zennit_sums(model: nn.Module) -> nn.Module:
    """Switch every :class:`ResidualAdd` of ``model`` to a ``zennit.layer.Sum`` (in place)."""
    from zennit.layer import Sum

    for module in model.modules():
        if isinstance(module, ResidualAdd):
            module.zennit_sum = Sum(dim=-1)
    return model


def randomize_batchnorms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm random (but well-conditioned) statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))


def _finish(model: nn.Module, input_shape: tuple[int, ...], seed: int):
    randomize_batchnorms(model, seed + 1)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(*input_shape, generator=gen)
    return model, x


def conv_bn(cin, cout, k=3, stride=1, padding=None, groups=1, dilation=1, bias=True, act=nn.ReLU):
    """Conv2d -> BatchNorm2d -> activation (``act=None`` for none)."""
    if padding is None:
        padding = dilation * (k // 2)
    layers = [
        nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=bias),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# models


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    return _finish(model, (2, 20), 0)


def mlp_bn():
    """Linear -> BatchNorm1d -> LeakyReLU, Linear -> Tanh, Linear."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(20, 32),
        nn.BatchNorm1d(32),
        nn.LeakyReLU(0.1),
        nn.Linear(32, 24),
        nn.Tanh(),
        nn.Linear(24, 10),
    )
    return _finish(model, (2, 20), 1)


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8),
            conv_bn(8, 8),
            nn.MaxPool2d(2),
            conv_bn(8, 16),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg():
    torch.manual_seed(2)
    return _finish(VGG(), (2, 3, 16, 16), 2)


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 strided conv + BN shortcut when the shape changes."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = None
        self.add = ResidualAdd()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(self.add(out, identity))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # overlapping windows, as torchvision's ResNets
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.maxpool(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet():
    torch.manual_seed(3)
    return _finish(ResNet(), (2, 3, 16, 16), 3)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ residual add)."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1, act=nn.ReLU6),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        )
        self.use_res = stride == 1 and cin == cout
        self.add = ResidualAdd() if self.use_res else None

    def forward(self, x):
        out = self.block(x)
        return self.add(out, x) if self.use_res else out


class MobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, stride=2, bias=False, act=nn.ReLU6)
        self.block1 = InvertedResidual(8, 8, 1, 2)
        self.block2 = InvertedResidual(8, 16, 2, 2)
        self.block3 = InvertedResidual(16, 16, 1, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def mobilenet():
    torch.manual_seed(4)
    return _finish(MobileNet(), (2, 3, 16, 16), 4)


class DenseNet(nn.Module):
    """Dense connectivity via torch.cat, a 1x1 transition conv and AvgPool2d."""

    def __init__(self, growth=4):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.dense1 = conv_bn(8, growth)
        self.dense2 = conv_bn(8 + growth, growth)
        self.transition = conv_bn(8 + 2 * growth, 8, 1)
        self.avg = nn.AvgPool2d(2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.dense1(x)], dim=1)
        x = torch.cat([x, self.dense2(x)], dim=1)
        x = self.avg(self.transition(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def densenet():
    torch.manual_seed(5)
    return _finish(DenseNet(), (2, 3, 16, 16), 5)


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8, dilation=2),
            nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2),
            nn.ReLU(),
            conv_bn(8, 8, dilation=3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def dilated():
    torch.manual_seed(6)
    return _finish(Dilated(), (2, 3, 16, 16), 6)


class TwoStem(nn.Module):
    """An Inception-like stem: two convolutions read the input. Zennit's first-layer rule goes to
    the first one only (the first registered Linear module); the second gets the conv rule."""

    def __init__(self):
        super().__init__()
        self.a = conv_bn(3, 4, k=3)
        self.b = conv_bn(3, 4, k=5)
        self.c = conv_bn(8, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.cat([self.a(x), self.b(x)], 1)
        return self.fc(torch.flatten(self.pool(self.c(x)), 1))


def two_stem():
    torch.manual_seed(11)
    return _finish(TwoStem(), (2, 3, 12, 12), 11)


class RoutingOps(nn.Module):
    """The ops of common exports that the other zoo models lack: PReLU, Hardsigmoid, Dropout,
    Identity, split and cat, F.pad, slicing, permute, ``padding="same"``, ReLU6, squeeze,
    unsqueeze and a ``view`` flatten."""

    def __init__(self):
        super().__init__()
        self.b1 = conv_bn(3, 8, act=lambda: nn.PReLU(8))
        self.b2 = conv_bn(8, 8, groups=8, act=nn.Hardsigmoid)
        self.drop = nn.Dropout(0.3)
        self.ident = nn.Identity()
        self.c3 = nn.Conv2d(8, 8, 3)
        self.a3 = nn.LeakyReLU(0.1)
        self.c4 = nn.Conv2d(4, 6, 3, padding="same")
        self.a4 = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(6, 12)
        self.a5 = nn.Tanh()
        self.fc2 = nn.Linear(12, 10)

    def forward(self, x):
        x = self.drop(self.ident(self.b2(self.b1(x))))
        a, b = torch.split(x, 4, dim=1)
        x = torch.nn.functional.pad(torch.cat([b, a], 1), (1, 1, 2, 0))
        x = self.a3(self.c3(x[:, :, 1:, :].permute(0, 1, 3, 2)))
        x = self.pool(self.a4(self.c4(x[:, 2:6]))).squeeze(3).unsqueeze(1)
        return self.fc2(self.a5(self.fc1(x.view(x.size(0), -1))))


def routing_ops():
    torch.manual_seed(12)
    return _finish(RoutingOps(), (2, 3, 12, 12), 12)


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(4, 8, 5, padding=2),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(8, 16, 3, stride=2),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def conv1d():
    torch.manual_seed(7)
    return _finish(Conv1dNet(), (2, 4, 32), 7)


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(2, 4, 3, padding=1),
            nn.BatchNorm3d(4),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(4, 8, 3),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def conv3d():
    torch.manual_seed(8)
    return _finish(Conv3dNet(), (2, 2, 8, 8, 8), 8)


class ConvTransposeNet(nn.Module):
    """Downsample with a strided conv, upsample with ConvTranspose2d (+ BN merged into it)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def convtranspose():
    torch.manual_seed(9)
    return _finish(ConvTransposeNet(), (2, 3, 16, 16), 9)


class SmoothActs(nn.Module):
    """Non-ReLU activations: Hardswish, ELU, Softplus, Sigmoid (all ``Pass`` in Zennit's LRP)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8, act=nn.Hardswish),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Softplus(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 10))

    def forward(self, x):
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(x)


def smooth_acts():
    torch.manual_seed(10)
    return _finish(SmoothActs(), (2, 3, 16, 16), 10)


# bias-free models without BatchNorm: the epsilon rule conserves relevance exactly (up to eps)


def mlp_nobias():
    torch.manual_seed(11)
    model = nn.Sequential(
        nn.Linear(20, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 10, bias=False),
    )
    return _finish(model, (2, 20), 11)


class CNNNoBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10, bias=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def cnn_nobias():
    torch.manual_seed(12)
    return _finish(CNNNoBias(), (2, 3, 16, 16), 12)


ZOO: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "mlp": mlp,
    "mlp_bn": mlp_bn,
    "vgg": vgg,
    "resnet": resnet,
    "mobilenet": mobilenet,
    "densenet": densenet,
    "dilated": dilated,
    "two_stem": two_stem,
    "routing_ops": routing_ops,
    "conv1d": conv1d,
    "conv3d": conv3d,
    "convtranspose": convtranspose,
    "smooth_acts": smooth_acts,
}
"""Models for the Zennit agreement matrix."""

CONSERVATION_ZOO: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "mlp_nobias": mlp_nobias,
    "cnn_nobias": cnn_nobias,
}
"""Bias-free, BatchNorm-free models for the conservation test."""

EXPORTERS = ("torchscript", "torchscript-nofold", "dynamo")
"""Export flavours (:func:`export_as`).  Both default exporters fold most BatchNorms themselves
(TorchScript: every Conv+BN; dynamo's optimizer: all of them, also after Linear and
ConvTranspose), so ``torchscript-nofold`` (``do_constant_folding=False``) keeps every BatchNorm as
a ``BatchNormalization`` node for the compiler to fold."""
TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 18


# --------------------------------------------------------------------------------------------
# export


def export_as(model: nn.Module, x: torch.Tensor, path: str | os.PathLike, exporter: str) -> str:
    """:func:`export` by flavour name, one of :data:`EXPORTERS`."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; known: {EXPORTERS}")
    return export(
        model, x, path, dynamo=exporter == "dynamo", fold_constants=exporter != "torchscript-nofold"
    )


def export(
    model: nn.Module,
    x: torch.Tensor,
    path: str | os.PathLike,
    dynamo: bool,
    fold_constants: bool = True,
) -> str:
    """Export ``model`` to a single self-contained ONNX file (input ``input``, output ``logits``,
    dynamic batch dimension ``batch``).

    ``dynamo=False`` uses the TorchScript exporter at opset 17.  ``dynamo=True`` uses
    ``torch.export`` + onnxscript at opset 18 (:data:`DYNAMO_OPSET`): torch 2.13's dynamo exporter
    only implements opset >= 18 and asked for 17 it down-converts with the ONNX C API, which fails
    for ``ReduceMean`` (axes input -> attribute) on every model with adaptive average pooling and
    then silently keeps opset 18 anyway.  Both exporters write all weights inline
    (``external_data=False``): the models are tiny.  ``fold_constants=False`` (TorchScript only)
    turns off its constant folding, which otherwise also fuses Conv+BatchNorm.
    """
    path = os.fspath(path)
    model = model.eval()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated (DeprecationWarning); torch.export emits pytree
        # FutureWarnings.  Neither concerns the exported graph.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        _export(model, x, path, dynamo, fold_constants)
    return path


def _export(model, x, path, dynamo, fold_constants):
    if dynamo:
        if not fold_constants:
            raise ValueError("fold_constants=False is only supported by the TorchScript exporter")
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            opset_version=DYNAMO_OPSET,
            verbose=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )
        program.save(path, external_data=False)
    else:
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=fold_constants,
            external_data=False,
        )
