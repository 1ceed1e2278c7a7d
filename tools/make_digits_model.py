"""Train the tiny digits CNN shipped in ``models/`` and export it to ONNX.

Rerun (CPU, deterministic, a few seconds), from the repository root::

    . .venv/bin/activate
    pip install -e ".[test,tools]"               # torch and scikit-learn (its bundled digits)
    python tools/make_digits_model.py            # writes into models/
    python tools/make_digits_model.py --out DIR  # writes elsewhere

Data: scikit-learn's bundled ``load_digits`` (1797 8x8 greyscale digits, pixel values 0..16,
scaled here to [0, 1]); a stratified 75/25 train/test split with a fixed seed.

Model (one BatchNorm, so that BatchNorm folding is exercised)::

    Conv(1->8, 3x3, pad 1) - ReLU - MaxPool(2)          8x8 -> 4x4
    Conv(8->16, 3x3, pad 1) - BatchNorm - ReLU          4x4
    AdaptiveAvgPool(1) - Flatten - Linear(16->10)       -> logits

Outputs (all tiny):

* ``digits_cnn.onnx``     opset 17, input ``image`` [N,1,8,8] float32, output ``logits`` [N,10]
* ``digits_samples.npy``  float32 [16,1,8,8], the first 16 test images
* ``digits_labels.npy``   int64 [16], their labels
* ``digit_3.png``         8x8 greyscale PNG of a test image of a "3" (pixel = round(255 * x))

The test accuracy is printed; it must exceed 90 %.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn

SEED = 0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model() -> nn.Module:
    """The CNN; modules are registered in forward order (as Zennit's canonizers expect)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test); x float32 [N,1,8,8] in [0, 1], y int64."""
    from sklearn.datasets import load_digits  # only here: the tests import build_model without sklearn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 60) -> None:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "models"), help="output directory")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # bit-for-bit reproducible
    x_train, x_test, y_train, y_test = load_data()
    model = build_model()
    train(model, x_train, y_train, args.epochs)
    acc_train, acc_test = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
    print(f"train accuracy {acc_train:.4f}, test accuracy {acc_test:.4f} ({len(y_test)} test images)")
    if acc_test <= 0.9:
        print("error: test accuracy not above 90 %", file=sys.stderr)
        return 1

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "digits_cnn.onnx")
    torch.onnx.export(
        model,
        (torch.from_numpy(x_test[:1]),),
        onnx_path,
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        # PRESERVE (the model is in eval mode) keeps the BatchNorm node: the default EVAL mode
        # would fuse it into the Conv before export, and the compiler's own folding is the point.
        training=torch.onnx.TrainingMode.PRESERVE,
    )
    np.save(os.path.join(args.out, "digits_samples.npy"), x_test[:16])
    np.save(os.path.join(args.out, "digits_labels.npy"), y_test[:16])
    three = x_test[int(np.flatnonzero(y_test == 3)[0]), 0]
    Image.fromarray((three * 255.0).round().astype(np.uint8), mode="L").save(
        os.path.join(args.out, "digit_3.png")
    )

    # sanity check: onnxruntime agrees with torch
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x_test[:16]})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x_test[:16])).numpy()
    assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes) and samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
