"""``onnxlrp explain MODEL --text "..." --tokenizer DIR``: explain a text model on a sentence.

The tokenizer is a Hugging Face ``tokenizer.json`` (in ``DIR``, or the file itself) read with the
optional ``tokenizers`` package (``pip install tokenizers``). The encoded sentence feeds the
model's inputs by kind: the token-id input (the one read through an embedding table) gets the ids,
an input whose name contains ``mask`` gets ones, one whose name contains ``type`` gets the type
ids. The per-token relevance is printed (with a terminal heatmap when stdout is a terminal) and
written as an HTML heatmap (``--out``, default ``heatmap.html``).

For (batch, position, class) outputs (language models) the explained class is ``--target`` (a
token id; default: the top-1 next token) at ``--position`` (default: the last).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from onnxlrp.errors import OnnxLrpError

TEXT_COMPOSITE = "attnlrp"


def load_tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from ``path`` (a directory with tokenizer.json, or the file)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as error:
        raise OnnxLrpError(
            "--text needs the optional 'tokenizers' package: pip install tokenizers "
            "(or pip install 'onnxlrp[transformers]')"
        ) from error
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise OnnxLrpError(f"--tokenizer {path!r}: no tokenizer.json there")
    try:
        tokenizer = Tokenizer.from_file(file)
    except Exception as error:  # tokenizers raises its own Exception type
        raise OnnxLrpError(f"--tokenizer {path!r}: not a tokenizers file ({error})") from error
    tokenizer.no_padding()  # one text at a time: no padding to a fixed length
    return tokenizer


def text_feeds(explainer, encoding) -> dict[str, np.ndarray]:
    """The model's inputs for one encoded text (batch of 1)."""
    token_inputs = explainer.compiled.token_inputs
    if not token_inputs:
        raise OnnxLrpError(
            "--text needs a model with a token-id input (an int64 input read through an embedding table)"
        )
    feeds = {}
    for spec in explainer.inputs:
        name = spec.name.lower()
        if spec.name in token_inputs:
            values = encoding.ids
        elif "mask" in name:
            values = encoding.attention_mask
        elif "type" in name:
            values = encoding.type_ids
        elif "position" in name:
            values = list(range(len(encoding.ids)))
        else:
            raise OnnxLrpError(f"--text: cannot tell what to feed model input {spec.name!r}")
        feeds[spec.name] = np.asarray([values], dtype=spec.dtype)
    return feeds


def explain_text(args: argparse.Namespace, composite: str, params: dict) -> int:
    import onnxlrp
    from onnxlrp import viz

    tokenizer = load_tokenizer(args.tokenizer)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    explainer = onnxlrp.Explainer(args.model, composite=composite, providers=providers, **params)
    encoding = tokenizer.encode(args.text)
    feeds = text_feeds(explainer, encoding)
    kwargs = {"position": args.position} if explainer.compiled.positions else {}
    if args.position is not None and not explainer.compiled.positions:
        raise OnnxLrpError("--position applies to models with (batch, position, class) outputs")
    result = explainer.explain(feeds, target=args.target, **kwargs)
    name = next(iter(explainer.compiled.token_inputs))
    relevance = np.asarray(result.relevance[name])[0]
    tokens = encoding.tokens
    target = int(result.target[0])
    output = np.asarray(result.output)[0]
    if result.position is not None:
        position = int(result.position[0])
        logit = float(output[position, target])
        label = tokenizer.id_to_token(target)
        what = f"token {target} ({label!r}) at position {position} (after {tokens[position]!r})"
    else:
        logit = float(output.reshape(-1)[target])
        what = f"class {target}"
    print(f"model {args.model}, composite {composite}, providers {', '.join(explainer.providers)}")
    print(f"text: {args.text!r} -> {len(tokens)} tokens")
    print(f"explained: {what}, logit {logit:.6g}; relevance sum {relevance.sum():.6g}")
    width = max(len(t) for t in tokens)
    for token, value in zip(tokens, relevance):
        print(f"  {token:<{width}}  {value:+.6f}")
    if sys.stdout.isatty():
        print(viz.text_heatmap_terminal(tokens, relevance, cmap=args.cmap))
    out = args.out or "heatmap.html"
    viz.save_text_heatmap(tokens, relevance, out, cmap=args.cmap, title=f"{args.text} -> {what}")
    print(f"wrote text heatmap to {out}")
    return 0


__all__ = ["explain_text", "load_tokenizer", "text_feeds"]
