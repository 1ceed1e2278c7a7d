"""Compile time, and explain time against the forward pass, for transformers (AttnLRP).

Models: the tiny test transformers (``tests/transformer_zoo.py``, batch 2, 7 tokens) and, when
``build/minilm/minilm.onnx`` exists (``tools/export_minilm.py``), MiniLM at batch 1 x 16 tokens and
batch 8 x 128 tokens. Forward: the original model in onnxruntime; explain: the compiled model
(forward + relevance), same providers and threads; medians over repeated runs::

    python tools/bench_transformers.py [--threads 2] [--repeat 20] [--minilm build/minilm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxlrp

ROOT = Path(__file__).resolve().parent.parent


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(path, feeds: dict, composite: str, threads: int, repeat: int) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    forward = _median_time(lambda: session.run(None, feeds), repeat)
    explainer = onnxlrp.Explainer(path, composite, providers=["CPUExecutionProvider"], threads=threads)
    explain = _median_time(lambda: explainer.explain(feeds), repeat)
    return {"compile": explainer.compiled.compile_seconds, "forward": forward, "explain": explain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--composite", default="attnlrp")
    parser.add_argument("--minilm", type=Path, default=ROOT / "build" / "minilm")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    import transformer_zoo as zoo

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in zoo.MODELS:
            model = zoo.build(name)
            for kind in ("embeds",) if name == "vit" else ("ids", "embeds"):
                path = zoo.export(model, name, kind, Path(tmp) / f"{name}_{kind}.onnx")
                feeds = {k: v.numpy() for k, v in zoo.inputs_for(model, name, kind).items()}
                rows.append(
                    (f"{name} ({kind})", bench(path, feeds, args.composite, args.threads, args.repeat))
                )
        minilm = args.minilm / "minilm.onnx"
        if minilm.is_file():
            rng = np.random.default_rng(0)
            for batch, length in ((1, 16), (8, 128)):
                ids = rng.integers(1000, 20000, size=(batch, length)).astype(np.int64)
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
                repeat = args.repeat if batch == 1 else max(3, args.repeat // 4)
                rows.append(
                    (f"MiniLM {batch}x{length}", bench(minilm, feeds, args.composite, args.threads, repeat))
                )
    del torch
    print(f"composite {args.composite}, CPU, {args.threads} threads, medians")
    print(f"{'model':<22} {'compile s':>9} {'forward ms':>10} {'explain ms':>10} {'ratio':>6}")
    for label, t in rows:
        ratio = t["explain"] / t["forward"]
        times = f"{t['compile']:9.2f} {1e3 * t['forward']:10.2f} {1e3 * t['explain']:10.2f}"
        print(f"{label:<22} {times} {ratio:6.1f}")


if __name__ == "__main__":
    main()
