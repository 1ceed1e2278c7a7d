"""The ``onnxlrp`` command line: compile, explain and inspect ONNX models.

::

    onnxlrp compile MODEL -o OUT [--composite NAME] [rule params] [--layers]
    onnxlrp explain MODEL INPUT [--target N] [--composite NAME] [rule params]
                    [--out heatmap.png] [--overlay overlay.png] [--cmap bwr]
                    [--save-relevance rel.npy] [--providers CPUExecutionProvider,...]
    onnxlrp explain MODEL --text "..." --tokenizer DIR [--target N] [--position P] [--out heat.html]
    onnxlrp info MODEL [--composite NAME]
    onnxlrp batch MODEL DATA --out DIR [--composite NAME] [--target N] [--batch-size B] [--heatmaps]

Rule parameters: ``--epsilon``, ``--gamma``, ``--stabilizer``, ``--low``, ``--high`` (the last two
take a number or comma-separated per-channel numbers).  Only the ones given are passed on, so each
composite keeps its own defaults.  Exit status: 0 on success, 2 on any error (bad arguments,
missing files, models or inputs that onnxlrp cannot handle); errors are printed to stderr as
``onnxlrp: error: <message>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxlrp.errors import OnnxLrpError
from onnxlrp.graph.precision import PRECISIONS
from onnxlrp.io import IMAGE_SUFFIXES, load_input  # noqa: F401  (re-exported)

PROG = "onnxlrp"
DEFAULT_COMPOSITE = "epsilon-plus-flat"
MIN_IMAGE_SIZE = 256  # heatmaps of tiny inputs are upscaled (nearest neighbour) to at least this
MAX_SAMPLE_LINES = 20


class CliError(OnnxLrpError):
    """A problem with the command line's own inputs (files, shapes, arguments)."""


# ------------------------------------------------------------------------------------------
# argument parsing


def _numbers(text: str) -> float | np.ndarray:
    """A float, or comma-separated floats as a float32 array (per-channel bounds)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else np.asarray(values, dtype=np.float32)


def _composite_help(default: str) -> str:
    try:
        from onnxlrp.composites import COMPOSITES
    except Exception:  # the help text must not depend on the library importing cleanly
        return f"composite name (default: {default})"
    return f"composite: {', '.join(COMPOSITES)} (default: {default})"


def _add_rule_options(parser: argparse.ArgumentParser, text_default: str | None = None) -> None:
    """The composite and its rule parameters. With ``text_default`` (explain), the composite's
    default depends on the input, so the option defaults to None and the command resolves it."""
    default = DEFAULT_COMPOSITE if text_default is None else None
    described = (
        DEFAULT_COMPOSITE if text_default is None else f"{DEFAULT_COMPOSITE}; {text_default} with --text"
    )
    parser.add_argument("--composite", default=default, metavar="NAME", help=_composite_help(described))
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="float16 computes in float16, for GPUs (inputs and relevance stay float32; default: float32)",
    )
    group = parser.add_argument_group("rule parameters (passed only when given)")
    group.add_argument("--epsilon", type=float, help="epsilon of the epsilon rule")
    group.add_argument("--gamma", type=float, help="gamma of the gamma rule")
    group.add_argument("--stabilizer", type=float, help="stabilizer of the other rules")
    group.add_argument(
        "--low", type=_numbers, help="lowest input value (box rule), or one per channel: a,b,c"
    )
    group.add_argument("--high", type=_numbers, help="highest input value (box rule), or one per channel")


def _rule_params(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments given for ``compile``/``Explainer``: rule parameters and precision."""
    names = ("epsilon", "gamma", "stabilizer", "low", "high", "precision")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``onnxlrp`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Layer-wise relevance propagation (LRP) for ONNX models."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="write an ONNX model that computes the output and the LRP relevance")
    p.add_argument("model", metavar="MODEL", help="input ONNX model")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the compiled model")
    p.add_argument("--layers", action="store_true", help="also output the relevance at every layer")
    _add_rule_options(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("explain", help="run a model on an input and draw the relevance as a heatmap")
    p.add_argument("model", metavar="MODEL", help="ONNX model")
    p.add_argument(
        "input",
        metavar="INPUT",
        nargs="?",
        help="input: a .npy array (batch or one sample) or an image file (not with --text)",
    )
    p.add_argument("--target", type=int, help="output index to explain (default: each sample's top-1)")
    p.add_argument("--text", help="explain a text model on this text (needs --tokenizer)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer.json (or its directory) for --text")
    p.add_argument("--position", type=int, help="--text on a language model: the position (default -1)")
    _add_rule_options(p, text_default="attnlrp")
    p.add_argument("--out", metavar="PNG", help="write the first sample's heatmap here (--text: HTML)")
    p.add_argument("--overlay", metavar="PNG", help="write the first sample's heatmap over its input here")
    p.add_argument("--cmap", default="bwr", help="heatmap colour map (default: bwr; see onnxlrp.viz)")
    p.add_argument("--save-relevance", metavar="NPY", help="write the relevance of all samples as .npy")
    p.add_argument(
        "--providers", help="comma-separated onnxruntime execution providers, in order of preference"
    )
    p.set_defaults(func=cmd_explain, usage=p.format_usage())

    p = sub.add_parser("info", help="list a model's inputs, outputs, op types and the rules they get")
    p.add_argument("model", metavar="MODEL", help="ONNX model")
    _add_rule_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "batch", help="explain a folder of images or an array file, resumably, one result file per item"
    )
    p.add_argument("model", metavar="MODEL", help="ONNX model")
    p.add_argument(
        "data", metavar="DATA", help="a folder of images, a .npy/.npz file, or a text file of image paths"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where results go (a stopped job resumes)")
    p.add_argument("--target", type=int, help="output index to explain (default: each item's top-1)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="items per run (default 16)")
    p.add_argument("--heatmaps", action="store_true", help="also write a heatmap PNG per item")
    p.add_argument("--no-resize", action="store_true", help="fail images not of the model's size")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--providers", help="comma-separated onnxruntime execution providers")
    _add_rule_options(p)
    p.set_defaults(func=cmd_batch)
    return parser


def _check_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CliError(f"{what} {path!r}: no such file")
    if not os.path.isfile(path):
        raise CliError(f"{what} {path!r}: not a file")


# ------------------------------------------------------------------------------------------
# inputs


def _display_image(sample: np.ndarray) -> np.ndarray | None:
    """An input sample as an image in [0, 1] (HxW or HxWx3), or None if it does not look like one."""
    img = np.asarray(sample, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        return None
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:  # e.g. mean/std-normalised input: stretch to [0, 1]
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


# ------------------------------------------------------------------------------------------
# commands


def cmd_compile(args: argparse.Namespace) -> int:
    import onnxlrp

    _check_file(args.model, "model")
    compiled = onnxlrp.compile(args.model, composite=args.composite, layers=args.layers, **_rule_params(args))
    compiled.save(args.output)
    graph = compiled.model.graph
    names = [o.name for o in graph.output]
    outputs = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
    print(
        f"compiled {args.model} ({args.composite}) -> {args.output}: "
        f"{len(graph.node)} nodes, outputs: {outputs}"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import onnxlrp

    _check_file(args.model, "model")
    if args.text is not None or args.tokenizer is not None:  # see onnxlrp.cli_text
        from onnxlrp.cli_text import TEXT_COMPOSITE, explain_text

        if args.text is None or args.tokenizer is None or args.input is not None:
            raise CliError("--text and --tokenizer go together, and replace INPUT")
        return explain_text(args, args.composite or TEXT_COMPOSITE, _rule_params(args))
    args.composite = args.composite or DEFAULT_COMPOSITE
    if args.input is None:
        usage = getattr(args, "usage", "").strip()
        raise CliError(f"the following arguments are required: INPUT (or --text and --tokenizer)\n{usage}")
    if args.out or args.overlay:  # check the colour map before the (slower) compilation
        from onnxlrp import viz

        try:
            viz.colormap_palette(args.cmap)
        except ValueError as error:
            raise CliError(f"--cmap {args.cmap!r}: not a colour map name or source ({error})") from error
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    explainer = onnxlrp.Explainer(
        args.model, composite=args.composite, providers=providers, **_rule_params(args)
    )
    specs = getattr(explainer, "inputs", None)
    if specs is not None and len(specs) != 1:
        names = ", ".join(spec.name for spec in specs)
        raise CliError(
            f"the model has {len(specs)} inputs ({names}); the command line explains one-input models"
        )
    x = load_input(args.input, explainer.input_shape)
    dtype = getattr(specs[0], "dtype", None) if specs else None
    if dtype is not None and x.dtype != dtype:
        x = x.astype(dtype)
    result = explainer.explain(x, target=args.target)

    relevance = result.relevance
    if isinstance(relevance, dict):  # one entry per model input; we have one input
        relevance = next(iter(relevance.values()))
    relevance = np.asarray(relevance)
    n = x.shape[0]
    logits = np.asarray(result.output).reshape(n, -1)
    targets = np.asarray(result.target).reshape(n, -1)[:, 0]
    sums = relevance.reshape(n, -1).astype(np.float64).sum(axis=1)
    print(
        f"model {args.model}, composite {args.composite}, {explainer.compiled.precision}, "
        f"providers {', '.join(explainer.providers)}"
    )
    print(f"input {args.input}: {explainer.input_name} {list(x.shape)} {x.dtype}")
    if getattr(result, "note", None):
        print(f"note: {result.note}")
    with np.printoptions(precision=4, suppress=True, linewidth=100):
        print(f"logits[0]: {logits[0]}")
    for i in range(min(n, MAX_SAMPLE_LINES)):
        top, t = int(logits[i].argmax()), int(targets[i])
        print(
            f"sample {i}: top-1 {top} (logit {logits[i, top]:.6g}), target {t} "
            f"(logit {logits[i, t]:.6g}), relevance sum {sums[i]:.6g}"
        )
    if n > MAX_SAMPLE_LINES:
        print(f"... {n - MAX_SAMPLE_LINES} more samples")

    if args.save_relevance:
        np.save(args.save_relevance, relevance)
        print(f"wrote relevance {list(relevance.shape)} to {args.save_relevance}")
    if args.out or args.overlay:
        from onnxlrp import viz

        sample = relevance[0]
        if sample.ndim == 3 and sample.shape[-1] in (1, 3) and sample.shape[0] not in (1, 3):
            sample = sample.transpose(2, 0, 1)  # channels-last (NHWC) model: heatmaps sum over C
        if args.out:
            img = viz.save_heatmap(sample, args.out, cmap=args.cmap, min_size=MIN_IMAGE_SIZE)
            print(f"wrote heatmap {img.shape[1]}x{img.shape[0]} to {args.out}")
        if args.overlay:
            image = _display_image(x[0])
            if image is None:
                raise CliError(f"--overlay: the input sample of shape {list(x.shape[1:])} is not an image")
            img = viz.save_overlay(image, sample, args.overlay, cmap=args.cmap, min_size=MIN_IMAGE_SIZE)
            print(f"wrote overlay {img.shape[1]}x{img.shape[0]} to {args.overlay}")
    return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None or d == "None" else str(d) for d in shape) + "]"


def cmd_batch(args: argparse.Namespace) -> int:
    from onnxlrp import batch

    _check_file(args.model, "model")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    summary = batch.run(
        args.model,
        args.data,
        args.out,
        args.composite,
        target=args.target,
        batch_size=args.batch_size,
        heatmaps=args.heatmaps,
        resize=not args.no_resize,
        providers=providers,
        threads=args.threads,
        **_rule_params(args),
    )
    print(
        f"{summary['done']} of {summary['items']} items explained, {summary['failed']} failed "
        f"-> {args.out} (summary.json)"
    )
    for failure in summary["failures"][:MAX_SAMPLE_LINES]:
        print(f"  failed {failure['item']}: {failure['reason']}")
    if summary["failed"] > MAX_SAMPLE_LINES:
        print(f"  ... {summary['failed'] - MAX_SAMPLE_LINES} more in summary.json")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import onnxlrp

    _check_file(args.model, "model")
    report = onnxlrp.inspect(args.model, composite=args.composite, **_rule_params(args))
    print(f"model {args.model}, composite {args.composite}")
    for title, values in (("inputs", report.inputs), ("outputs", report.outputs)):
        print(f"{title}:")
        for name, dtype, shape in values:
            print(f"  {name}: {dtype} {_shape_text(shape)}")
    explained = getattr(report, "explained", None)
    if explained:
        print(f"explained output: {explained}")
    if getattr(report, "note", None):
        print(f"note: {report.note}")

    # one row per (op type, rule, supported); op types in the order of first appearance
    groups: dict[tuple[str, str, bool], int] = {}
    for node in report.nodes:
        key = (node.op_type, node.rule or "-", bool(node.supported))
        groups[key] = groups.get(key, 0) + 1
    first_seen = {op: i for i, op in reversed(list(enumerate(node.op_type for node in report.nodes)))}
    ordered = sorted(
        groups.items(), key=lambda item: first_seen[item[0][0]]
    )  # stable: rules keep their order
    rows = [[op, str(count), rule, "yes" if ok else "no"] for (op, rule, ok), count in ordered]
    source = getattr(report, "source_ops", None)
    if source:
        listed = ", ".join(f"{op} {n}" for op, n in sorted(source.items(), key=lambda item: -item[1]))
        print(f"source graph: {sum(source.values())} nodes ({listed})")
    print(f"nodes (after canonicalisation): {len(report.nodes)}")
    print(_table(rows, ["op type", "count", "rule", "supported"]))

    unsupported = [node for node in report.nodes if not node.supported]
    if unsupported:
        print(f"unsupported nodes ({len(unsupported)}):")
        for node in unsupported:
            reason = getattr(node, "reason", None)
            print(f"  {node.name} ({node.op_type})" + (f": {reason}" if reason else ""))
    else:
        print("all nodes supported")
    return 0


# ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onnxlrp`` command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:  # argparse exits on --help (0) and on bad arguments (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.func(args)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail
        return 1
    except OnnxLrpError as error:
        message = str(error)
    except OSError as error:  # writing outputs: missing directory, permissions, ...
        message = f"{error.filename or ''}: {error.strerror or error}" if error.filename else str(error)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
