"""ResNet-18, VGG-16 (with BatchNorm) and MobileNetV2 for the benchmark, defined in plain torch
(and ResNet-50, for the compile time of a large graph).

torchvision cannot be installed next to our torch build, so these are compact re-definitions with
torchvision's layer structure (same layers, shapes, strides and module registration order, so that
Zennit's ``SequentialMergeBatchNorm`` and its "first layer" rules see what they would see on the
torchvision models). Weights are random (fixed seed) and every BatchNorm gets random running
statistics and affine parameters, so that BatchNorm folding is really exercised.

Residual additions are plain ``a + b`` (an ONNX ``Add``); :func:`enable_zennit_sums` switches them to
``zennit.layer.Sum`` over ``torch.stack([a, b], -1)``, the form to which Zennit applies its Norm
rule (numerically the same function). The pattern is the one of ``tests/zoo.py``.

::

    from bench_models import MODELS, build, export
    model, x = build("resnet18", batch=8)
    export(model, "resnet18.onnx")
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
import warnings
from collections.abc import Callable

import torch
from torch import nn

INPUT_SHAPE = (3, 224, 224)
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def install_torchvision_shim() -> None:
    """Let ``import zennit`` work without torchvision (as ``tests/conftest.py`` does).

    Zennit 0.5.1 imports ``torchvision.models.resnet`` only to define canonizers we do not use.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:

        class Bottleneck(nn.Module):  # stub, never instantiated
            pass

        class BasicBlock(nn.Module):  # stub, never instantiated
            pass

        def stub(name):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            return module

        tv, models, resnet = (
            stub("torchvision"),
            stub("torchvision.models"),
            stub("torchvision.models.resnet"),
        )
        resnet.Bottleneck, resnet.BasicBlock = Bottleneck, BasicBlock
        tv.models, models.resnet = models, resnet
        sys.modules.update(
            {"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet}
        )


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
    install_torchvision_shim()
    from zennit.layer import Sum

    for module in model.modules():
        if isinstance(module, ResidualAdd):
            module.zennit_sum = Sum(dim=-1)
    return model


# ------------------------------------------------------------------------------------------------
# ResNet-18 (torchvision.models.resnet18)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.add = ResidualAdd()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.add(out, identity))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin = (64, 128, 256, 512), 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(
                self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width))
            )
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a projection shortcut."""

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.add = ResidualAdd()
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(self.add(self.bn3(self.conv3(out)), identity))


class ResNet50(ResNet18):
    """torchvision.models.resnet50: ResNet18's stem and head around [3, 4, 6, 3] bottlenecks."""

    def __init__(self, num_classes: int = 1000):
        super().__init__(num_classes)
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            stride = 1 if i == 0 else 2
            layer = [Bottleneck(cin, width, stride)] + [
                Bottleneck(4 * width, width) for _ in range(blocks - 1)
            ]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            cin = 4 * width
        self.fc = nn.Linear(cin, num_classes)


# ------------------------------------------------------------------------------------------------
# VGG-16 with BatchNorm (torchvision.models.vgg16_bn)

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                cin = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------------------------------------
# MobileNetV2 (torchvision.models.mobilenet_v2)


def conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.add = ResidualAdd() if stride == 1 and cin == cout else None

    def forward(self, x):
        out = self.conv(x)
        return out if self.add is None else self.add(x, out)


MOBILENET_V2_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [conv_bn_relu6(3, cin, stride=2)]
        for t, c, n, s in MOBILENET_V2_CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ------------------------------------------------------------------------------------------------

MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "vgg16_bn": VGG16BN,
    "mobilenet_v2": MobileNetV2,
}


def randomize_batchnorms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm random (well-conditioned) running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))


def make_model(name: str, seed: int = 0) -> nn.Module:
    """Model ``name`` with random weights (deterministic for a given seed), in eval mode."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    torch.manual_seed(seed)
    model = MODELS[name]()
    for module in model.modules():  # torchvision's initialisation: keeps activations in range
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
    randomize_batchnorms(model, seed + 1)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_input(batch: int, seed: int = 0) -> torch.Tensor:
    """A batch of normalised-image-like inputs: standard normal, clipped to [-3, 3]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *INPUT_SHAPE, generator=gen).clamp_(-3.0, 3.0)


def build(name: str, batch: int = 1, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``(model, input batch)``."""
    return make_model(name, seed), make_input(batch, seed + 2)


def export(model: nn.Module, path: str | os.PathLike, batch: int = 1) -> str:
    """Export ``model`` with the TorchScript exporter (opset 17) to one self-contained ONNX file:
    input ``input`` and output ``logits`` with a dynamic batch dimension ``batch``."""
    path = os.fspath(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            model.eval(),
            (make_input(batch),),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            external_data=False,
        )
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="export the benchmark models to ONNX")
    parser.add_argument("--out", default="out/bench", help="directory for the .onnx files")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name in args.models.split(","):
        path = export(make_model(name), os.path.join(args.out, f"{name}.onnx"))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
