"""How much of the forward pass an LRP graph must keep for its backward pass.

The backward pass reads forward tensors (a layer's input and output, MaxPool's indices); they
stay alive from the forward pass until the backward pass has used them, so their total size is a
floor under the explain call's peak memory that no schedule avoids, short of recomputing them.
This prints that total per model and batch size, next to the largest single forward tensor::

    python tools/stored_activations.py --models resnet18,vgg16_bn,mobilenet_v2 --batches 1,8,32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench import BOX, COMPOSITES, MODELS  # noqa: E402
from bench_models import export, make_model  # noqa: E402

import onnxlrp  # noqa: E402
from onnxlrp.compiler import POSITION_INPUT, SEED_INPUT, TARGET_INPUT  # noqa: E402


def stored_bytes(compiled: onnx.ModelProto, batch: int) -> tuple[int, int]:
    """(bytes of the forward tensors that backward nodes read, bytes of the largest forward tensor)
    at ``batch``; the compiler names its backward nodes ``lrp/...``."""
    graph = compiled.graph
    sizes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in info.type.tensor_type.shape.dim]
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).itemsize
        sizes[info.name] = int(np.prod(dims)) * itemsize
    constants = {t.name for t in graph.initializer} | {TARGET_INPUT, SEED_INPUT, POSITION_INPUT}
    forward = [n for n in graph.node if not n.name.startswith("lrp/")]
    produced = {o for n in forward for o in n.output} | {i.name for i in graph.input}
    read = {
        name
        for n in graph.node
        if n.name.startswith("lrp/")
        for name in n.input
        if name in produced and name not in constants
    }
    largest = max(sizes.get(o, 0) for n in forward for o in n.output)
    return sum(sizes.get(name, 0) for name in read), largest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--composites", default=",".join(COMPOSITES))
    parser.add_argument("--workdir", default=str(HERE.parent / "out" / "bench"))
    args = parser.parse_args()
    print("| model | composite | batch | stored MB | largest tensor MB |\n|---|---|---|---|---|")
    for model in args.models.split(","):
        path = Path(args.workdir) / f"{model}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            export(make_model(model), str(path))
        for composite in args.composites.split(","):
            params = BOX if composite == "epsilon-gamma-box" else {}
            compiled = onnxlrp.compile(str(path), composite, **params).model
            inferred = onnx.shape_inference.infer_shapes(compiled)
            for batch in (int(b) for b in args.batches.split(",")):
                stored, largest = stored_bytes(inferred, batch)
                print(f"| {model} | {composite} | {batch} | {stored / 2**20:.0f} | {largest / 2**20:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
