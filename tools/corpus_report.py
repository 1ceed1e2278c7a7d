"""The real-world corpus table: every model, its source, opset, node count, compile time and the
worst relative error of onnxlrp's relevance against its independent reference.

    python tools/corpus_report.py [--skip-zoo] [--only NAME ...] [--json out.json]

- model-zoo graphs (``tests/corpus.py``, from the onnx wheel): reference = Zennit on the
  onnx2torch conversion of the same file (``tests/onnx_reference.py``, needs ``onnx2torch``),
  computed here (minutes for VGG-19/ZFNet on two cores);
- converter fixtures (``tests/fixtures/converters``): reference = the committed ``.npz``; the
  ``*_unoptimized`` graph styles are compared with their optimized twin's reference.

The error is ``||R - R_ref|| / ||R_ref||`` (float64 reference) for each of the composites epsilon
and epsilon-plus-flat (the worst output for models with several), beside ``e32``, Zennit's own
float32 error on that model and composite (the scale of float32 noise; the tests allow
``max(3 * e32, 1e-5)`` on the model zoo, ``max(6 * e32, 1e-5)`` on the converter fixtures).
Compile time: ``compile`` alone (canonicalisation, planning, building the graph), without the
onnxruntime session.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import onnxlrp  # noqa: E402

COMPOSITES = ("epsilon", "epsilon-plus-flat")
PROVIDERS = ["CPUExecutionProvider"]


# the converter of a fixture whose file names no producer, by the fixture's name prefix
CONVERTERS = {"jax": "jax2onnx", "paddle": "paddle2onnx", "keras": "tf2onnx"}


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def zoo_rows(only):
    from corpus import ZOO_MODELS, input_shape, zoo_model
    from onnx_reference import reference, to_torch
    from reference import rel_err

    for name in ZOO_MODELS:
        if only and name not in only:
            continue
        model = zoo_model(name)
        x = np.random.default_rng(0).normal(size=input_shape(model)).astype(np.float32)
        torch_model = to_torch(model, x)
        errors, compile_s = {}, []
        for composite in COMPOSITES:
            explainer = onnxlrp.Explainer(model, composite, providers=PROVIDERS)
            compile_s.append(explainer.compiled.compile_seconds)
            result = explainer.explain(x)
            r64 = reference(torch_model, x, composite, target=result.target)
            r32 = reference(torch_model, x, composite, target=result.target, dtype=np.float32)
            errors[composite] = (
                rel_err(result.relevance, r64.relevance),
                rel_err(r32.relevance, r64.relevance),
            )
        yield {
            "model": name,
            "source": "onnx model zoo (Caffe2), onnx wheel light/ + random weights",
            "opset": _opset(model),
            "nodes": len(model.graph.node),
            "compile_s": float(np.mean(compile_s)),
            "errors": errors,
            "reference": "onnx2torch + Zennit",
        }
        del torch_model


def converter_rows(only):
    from reference import rel_err

    folder = ROOT / "tests" / "fixtures" / "converters"
    for path in sorted(folder.glob("*.onnx")):
        if only and path.stem not in only:
            continue
        twin = path.stem.removesuffix("_unoptimized")
        ref = np.load(folder / f"{twin}.npz")
        model = onnx.load(str(path))
        errors, compile_s = {}, []
        for key in ref.files:
            if not key.startswith("relevance|") or key.endswith("|region"):
                continue
            _, output, composite = key.split("|")
            explainer = onnxlrp.Explainer(str(path), composite, output=output, providers=PROVIDERS)
            compile_s.append(explainer.compiled.compile_seconds)
            result = explainer.explain(ref["x"], target=ref[f"target|{output}|{composite}"])
            err, e32 = rel_err(result.relevance, ref[key]), float(ref[f"e32|{output}|{composite}"])
            if composite not in errors or err / max(e32, 1e-6) > errors[composite][0] / max(
                errors[composite][1], 1e-6
            ):
                errors[composite] = (err, e32)  # the worst output, relative to float32 noise
        producer = model.producer_name.split(" (")[0] or CONVERTERS.get(path.stem.split("_")[0], "unknown")
        yield {
            "model": path.stem,
            "source": producer
            + (" (no optimizers: NHWC Transpose pairs)" if path.stem.endswith("_unoptimized") else ""),
            "opset": _opset(model),
            "nodes": len(model.graph.node),
            "compile_s": float(np.mean(compile_s)),
            "errors": errors,
            "reference": "onnx2torch + Zennit" + (" (of the optimized twin)" if twin != path.stem else ""),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-zoo", action="store_true")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = list(converter_rows(args.only))
    if not args.skip_zoo:
        import conftest  # noqa: F401  (the torchvision shim before zennit)

        rows += list(zoo_rows(args.only))
    heads = " | ".join(f"{c}: error (Zennit f32)" for c in COMPOSITES)
    print(f"| model | source | opset | nodes | compile (s) | {heads} |")
    print("|---|---|---|---|---|" + "---|" * len(COMPOSITES))
    for r in rows:
        cells = " | ".join(f"{r['errors'][c][0]:.1e} ({r['errors'][c][1]:.1e})" for c in COMPOSITES)
        print(
            f"| {r['model']} | {r['source']} | {r['opset']} | {r['nodes']} | {r['compile_s']:.2f} | {cells} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
