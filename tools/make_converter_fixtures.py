"""Build the converter corpus in ``tests/fixtures/converters/``: ONNX files written by real
converters from tiny models with seeded random weights, and their reference relevances.

Two steps, in two environments (tensorflow and jax are far too heavy for CI, which only loads
the committed files):

1. ``python tools/make_converter_fixtures.py convert-keras`` in an environment with
   ``tensorflow-cpu`` and ``tf2onnx`` (``pip install tensorflow-cpu tf2onnx``): Keras 3 models in
   NHWC, converted by tf2onnx twice, once with tf2onnx's graph optimizers (the Transposes pushed
   to the input) and once without (every Conv wrapped in its NHWC <-> NCHW Transpose pair, each
   BatchNorm a separate node).
   ``python tools/make_converter_fixtures.py convert-jax`` with ``jax`` and ``jax2onnx``;
   ``python tools/make_converter_fixtures.py convert-paddle`` with ``paddlepaddle`` and
   ``paddle2onnx`` (weights in ``Constant`` nodes or initializers, as paddle2onnx writes them).
2. ``python tools/make_converter_fixtures.py reference`` in the project's test environment with
   ``onnx2torch`` (``pip install --no-deps onnx2torch``): for every ``*.onnx`` of the folder, an input,
   and Zennit's relevance on the onnx2torch conversion of the file (see ``tests/onnx_reference.py``)
   for each composite in float64 and float32 (its own float32 noise sets the test's tolerance),
   written to ``<name>.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "converters"
COMPOSITES = ("epsilon", "epsilon-plus-flat")
SIZE = 16


# --------------------------------------------------------------------------------------------
# Keras -> tf2onnx


def _keras_models(seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)

    def bn():
        return layers.BatchNormalization(epsilon=1e-3)

    def cnn():
        """Conv + BN + ReLU, depthwise + BN + ReLU6, MaxPool, ZeroPadding, PReLU, Dense + softmax."""
        x = inp = keras.Input((SIZE, SIZE, 3), name="image")
        x = layers.Conv2D(8, 3, padding="same")(x)
        x = layers.ReLU()(bn()(x))
        x = layers.DepthwiseConv2D(3, padding="same")(x)
        x = layers.ReLU(max_value=6.0)(bn()(x))
        x = layers.MaxPooling2D(2)(x)
        x = layers.ZeroPadding2D(1)(x)
        x = layers.Conv2D(12, 3, padding="valid", strides=2)(x)
        x = layers.PReLU(shared_axes=[1, 2])(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(16, activation="relu")(x)
        out = layers.Dense(5, activation="softmax", name="probs")(x)
        return keras.Model(inp, out, name="keras_cnn")

    def se():
        """Hard-swish stem, a squeeze-and-excitation block, a hard-sigmoid spatial gate,
        Conv2DTranspose, UpSampling (nearest and bilinear), AveragePooling."""
        x = inp = keras.Input((SIZE, SIZE, 3), name="image")
        x = layers.Conv2D(8, 3, padding="same")(x)
        x = layers.Activation("hard_swish")(bn()(x))
        s = layers.GlobalAveragePooling2D(keepdims=True)(x)
        s = layers.Conv2D(4, 1, activation="relu")(s)
        s = layers.Conv2D(8, 1, activation="sigmoid")(s)
        x = layers.Multiply()([x, s])
        g = layers.Conv2D(1, 1, activation="hard_sigmoid")(x)
        x = layers.Multiply()([x, g])
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.Conv2DTranspose(6, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.UpSampling2D(2, interpolation="nearest")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        out = layers.Dense(5, name="logits")(x)
        return keras.Model(inp, out, name="keras_se")

    def heads():
        """A detector-style pair of outputs (face probability, box) and a per-pixel head (NHWC)."""
        x = inp = keras.Input((SIZE, SIZE, 3), name="image")
        x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(8, 3, padding="same")(x)
        x = layers.ReLU()(bn()(x))
        pooled = layers.GlobalAveragePooling2D()(x)
        face = layers.Dense(2, activation="softmax", name="face")(pooled)
        box = layers.Dense(4, name="box")(pooled)
        mask = layers.Conv2D(3, 1, name="mask")(x)
        return keras.Model(inp, [face, box, mask], name="keras_heads")

    models = [cnn(), se(), heads()]
    rng = np.random.default_rng(seed)
    for model in models:
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
                layer.beta.assign(rng.normal(0.0, 0.1, n).astype("float32"))
                layer.moving_mean.assign(rng.normal(0.0, 0.1, n).astype("float32"))
                layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            elif hasattr(layer, "bias") and layer.bias is not None:
                layer.bias.assign(rng.normal(0.0, 0.05, layer.bias.shape).astype("float32"))
            if isinstance(layer, layers.PReLU):
                layer.alpha.assign(rng.uniform(0.05, 0.3, layer.alpha.shape).astype("float32"))
    return models


def convert_keras(opset: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnx
    import tensorflow as tf
    import tf2onnx

    FIXTURES.mkdir(parents=True, exist_ok=True)
    for model in _keras_models():
        spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),)
        for style, optimizers in (("", None), ("_unoptimized", {})):
            proto, _ = tf2onnx.convert.from_keras(
                model, input_signature=spec, opset=opset, optimizers=optimizers
            )
            proto.producer_name = f"tf2onnx {tf2onnx.__version__} (keras {model.name})"
            path = FIXTURES / f"{model.name}{style}.onnx"
            onnx.save(proto, str(path))
            x = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
            keras_out = model(x)
            keras_out = [np.asarray(o) for o in (keras_out if isinstance(keras_out, list) else [keras_out])]
            np.savez(path.with_suffix(".keras_out.npz"), *keras_out, x=x)
            print(path.name, len(proto.graph.node), "nodes", sorted({n.op_type for n in proto.graph.node}))


# --------------------------------------------------------------------------------------------
# JAX -> jax2onnx


def convert_jax(opset: int) -> None:
    import jax
    import jax.numpy as jnp
    import onnx
    from jax2onnx import to_onnx

    FIXTURES.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)

    def he(*shape):
        fan_in = int(np.prod(shape[:-1]))
        return jnp.asarray(rng.normal(0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32))

    # NHWC convolutions (HWIO kernels), a gelu MLP head, layer-norm-free: what a Flax CNN lowers to
    k1, b1 = he(3, 3, 3, 8), jnp.asarray(rng.normal(0, 0.05, 8).astype(np.float32))
    k2, b2 = he(3, 3, 8, 8), jnp.asarray(rng.normal(0, 0.05, 8).astype(np.float32))
    w1, c1 = he(8, 16), jnp.asarray(rng.normal(0, 0.05, 16).astype(np.float32))
    w2, c2 = he(16, 5), jnp.asarray(rng.normal(0, 0.05, 5).astype(np.float32))
    dims = ("NHWC", "HWIO", "NHWC")

    def model(x):
        y = jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME", dimension_numbers=dims) + b1
        y = jax.nn.relu(y)
        y = jax.lax.conv_general_dilated(y, k2, (2, 2), "SAME", dimension_numbers=dims) + b2
        y = jax.nn.relu(y)
        y = jnp.mean(y, axis=(1, 2))
        y = jax.nn.gelu(y @ w1 + c1, approximate=False)
        return y @ w2 + c2

    proto = to_onnx(model, [("B", SIZE, SIZE, 3)], opset=opset)
    if not isinstance(proto, onnx.ModelProto):
        proto = onnx.load_from_string(proto.SerializeToString())
    path = FIXTURES / "jax_cnn.onnx"
    onnx.save(proto, str(path))
    x = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.savez(path.with_suffix(".keras_out.npz"), x=x, out=np.asarray(model(x)))
    print(path.name, len(proto.graph.node), "nodes", sorted({n.op_type for n in proto.graph.node}))


# --------------------------------------------------------------------------------------------
# PaddlePaddle -> paddle2onnx


def convert_paddle(opset: int) -> None:
    """A small Paddle CNN (NCHW; BatchNorm, depthwise conv, hardswish, SE block, adaptive pool)."""
    import onnx
    import paddle
    from paddle import nn

    paddle.seed(3)
    FIXTURES.mkdir(parents=True, exist_ok=True)

    class SE(nn.Layer):
        def __init__(self, c):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.fc1 = nn.Conv2D(c, c // 2, 1)
            self.fc2 = nn.Conv2D(c // 2, c, 1)

        def forward(self, x):
            s = nn.functional.relu(self.fc1(self.pool(x)))
            return x * nn.functional.hardsigmoid(self.fc2(s))

    class Net(nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2D(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2D(8)
            self.dw = nn.Conv2D(8, 8, 3, padding=1, groups=8, bias_attr=False)
            self.bn2 = nn.BatchNorm2D(8)
            self.se = SE(8)
            self.pool = nn.MaxPool2D(2)
            self.conv2 = nn.Conv2D(8, 12, 3, stride=2, padding=1)
            self.gap = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            x = nn.functional.relu(self.bn1(self.conv1(x)))
            x = nn.functional.hardswish(self.bn2(self.dw(x)))
            x = self.pool(self.se(x))
            x = nn.functional.relu(self.conv2(x))
            return self.fc(paddle.flatten(self.gap(x), 1))

    net = Net()
    rng = np.random.default_rng(3)
    for layer in net.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            n = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.bias.set_value(rng.normal(0, 0.1, n).astype("float32"))
            layer._mean.set_value(rng.normal(0, 0.1, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
    net.eval()
    prefix = str(FIXTURES / "paddle_cnn")
    spec = [paddle.static.InputSpec([None, 3, SIZE, SIZE], "float32", "image")]
    paddle.onnx.export(net, prefix, input_spec=spec, opset_version=opset)
    path = FIXTURES / "paddle_cnn.onnx"
    proto = onnx.load(str(path))
    x = np.random.default_rng(1).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    np.savez(path.with_suffix(".keras_out.npz"), np.asarray(net(paddle.to_tensor(x))), x=x)
    print(path.name, len(proto.graph.node), "nodes", sorted({n.op_type for n in proto.graph.node}))


# --------------------------------------------------------------------------------------------
# references


REGION = (slice(4, 12), slice(4, 12))  # rows, columns of the per-pixel seed
REGION_CHANNEL = 1


def region_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[REGION] = 1.0
    return mask


def region_seed(out):
    """Seed for a per-pixel NHWC output: channel ``REGION_CHANNEL`` of the pixels in ``REGION``."""
    import torch

    seed = torch.zeros_like(out)
    mask = torch.as_tensor(region_mask(), dtype=out.dtype)
    seed[..., REGION_CHANNEL] = out[..., REGION_CHANNEL] * mask
    return seed


def make_references() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import onnx
    from onnx_reference import reference, to_torch
    from reference import rel_err

    summary = {}
    for path in sorted(FIXTURES.glob("*.onnx")):
        if path.stem.endswith("_unoptimized"):
            continue  # the same network in another graph style: tests check it gives the same relevance
        model = onnx.load(str(path))
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
        x = np.random.default_rng(1).normal(size=(2, *dims)).astype(np.float32)
        torch_model = to_torch(model, x)
        arrays = {"x": x}
        outputs = [o.name for o in model.graph.output]
        for output in outputs:
            for composite in COMPOSITES:
                runs = [("", {})]
                rank = len(model.graph.output[outputs.index(output)].type.tensor_type.shape.dim)
                if rank == 4:  # per-pixel (NHWC) output: also a region of one channel as the seed
                    runs.append(("|region", {"seed": region_seed}))
                for suffix, kwargs in runs:
                    r64 = reference(torch_model, x, composite, output=output, **kwargs)
                    kwargs32 = kwargs or {"target": r64.target}
                    r32 = reference(torch_model, x, composite, output=output, dtype=np.float32, **kwargs32)
                    key = f"{output}|{composite}{suffix}"
                    arrays[f"relevance|{key}"] = r64.relevance.astype(np.float32)
                    arrays[f"target|{key}"] = r64.target
                    arrays[f"e32|{key}"] = np.float64(rel_err(r32.relevance, r64.relevance))
                    summary[f"{path.stem}|{key}"] = float(arrays[f"e32|{key}"])
        np.savez_compressed(path.with_suffix(".npz"), **arrays)
        print(path.name, "reference written")
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("convert-keras", "convert-jax", "convert-paddle", "reference"))
    parser.add_argument("--opset", type=int, default=13)
    args = parser.parse_args()
    if args.step == "convert-keras":
        convert_keras(args.opset)
    elif args.step == "convert-jax":
        convert_jax(args.opset)
    elif args.step == "convert-paddle":
        convert_paddle(args.opset)
    else:
        make_references()


if __name__ == "__main__":
    main()
