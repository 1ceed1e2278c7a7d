"""Shared pytest setup.

torchvision shim
----------------
Zennit 0.5.1 unconditionally runs ``from torchvision.models.resnet import Bottleneck, BasicBlock``
(in ``zennit/torchvision.py``, imported by ``zennit/__init__.py``), only to define its torchvision
ResNet canonizers.  torchvision has no CPU build matching our pinned torch, so it is not installed
in the test environment.  If (and only if) ``import torchvision`` fails, we register three stub
modules whose only content is two dummy ``nn.Module`` classes.  Nothing in our tests uses them;
they merely let ``import zennit`` succeed.  This must run before anything imports zennit, which
is why it lives at the top of conftest.py (pytest imports conftest before the test modules).
"""

from __future__ import annotations

import importlib.machinery
import sys
import types


def install_torchvision_shim() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:
        import torch

        class Bottleneck(torch.nn.Module):  # stub, never instantiated
            pass

        class BasicBlock(torch.nn.Module):  # stub, never instantiated
            pass

        def stub(name):
            module = types.ModuleType(name)
            # a real spec, so importlib.util.find_spec("torchvision") (torch.onnx asks) does not raise
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


install_torchvision_shim()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tmp_models(tmp_path_factory):
    """A session-wide directory for exported ONNX models."""
    return tmp_path_factory.mktemp("models")
