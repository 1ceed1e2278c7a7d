"""Compile time: ``onnxlrp.compile`` alone, and an ``Explainer`` (compile plus onnxruntime's session,
with its graph optimizations), best of ``--repeat``, for the benchmark's models and ResNet-50.

::

    python tools/bench_compile.py [--models resnet18,resnet50] [--composites epsilon,...]

The models are exported by ``tools/bench.py``'s export worker into ``--workdir`` (shared with
``bench.py``); ``epsilon-gamma-box`` uses the bounds ``[-3, 3]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import BOX, COMPOSITES, ROOT, model_path

import onnxlrp

MODELS = ("resnet18", "resnet50", "vgg16_bn", "mobilenet_v2")


def best_of(repeat: int, make, *args, **kwargs) -> tuple[float, object]:
    """The fastest of ``repeat`` calls of ``make(*args, **kwargs)`` (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = make(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--composites", default=",".join(COMPOSITES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=str(ROOT / "out" / "bench"))
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print("| model | composite | compile s | Explainer s (compile + session) | compiled nodes |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        path = model_path(args, model)
        onnxlrp.compile(path, "epsilon")  # imports and first-call set-up out of the timings
        for composite in args.composites.split(","):
            params = BOX if composite == "epsilon-gamma-box" else {}
            seconds, compiled = best_of(args.repeat, onnxlrp.compile, path, composite, **params)
            session = {"threads": args.threads, "providers": ["CPUExecutionProvider"]}
            explainer_s, _ = best_of(args.repeat, onnxlrp.Explainer, path, composite, **session, **params)
            nodes = len(compiled.model.graph.node)
            print(f"| {model} | {composite} | {seconds:.2f} | {explainer_s:.2f} | {nodes} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
