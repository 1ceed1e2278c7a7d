"""``onnxlrp explain MODEL --text "..." --tokenizer DIR``: explain a text model on a sentence.

The tokenizer is a Hugging Face ``tokenizer.json`` (in ``DIR``, or the file itself) read with the
optional ``tokenizers`` package (``pip install tokenizers``). The encoded sentence feeds the
model's inputs by name first: an input whose name contains ``mask`` gets the attention mask, one
with ``type`` the type ids, one with ``position`` the positions 0, 1, ...; the token-id input
(read through an embedding table) gets the ids. The per-token relevance is printed (with a
terminal heatmap when stdout is a terminal), written as an HTML heatmap (``--out``, default
``heatmap.html``) and, with ``--save-relevance``, as a ``.npy`` array.

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


def _role(name: str) -> str | None:
    """What an input named ``name`` holds besides the token ids: mask, type or position ids."""
    lowered = name.lower()
    return next((role for role in ("mask", "type", "position") if role in lowered), None)


def ids_input(explainer) -> str:
    """The model's token-id input: read through an embedding table, and no mask, type or position
    ids (which are read through embedding tables too)."""
    names = [name for name in explainer.compiled.token_inputs if _role(name) is None]
    if len(names) != 1:
        found = ", ".join(explainer.compiled.token_inputs) or "none"
        raise OnnxLrpError(
            "--text needs a model with one token-id input (an int64 input read through an embedding "
            f"table, not named like a mask, type or position ids); embedding inputs: {found}"
        )
    return names[0]


def text_feeds(explainer, encoding) -> dict[str, np.ndarray]:
    """The model's inputs for one encoded text (batch of 1)."""
    ids = ids_input(explainer)
    by_role = {
        "mask": encoding.attention_mask,
        "type": encoding.type_ids,
        "position": list(range(len(encoding.ids))),
    }
    feeds = {}
    for spec in explainer.inputs:
        role = _role(spec.name)
        if spec.name == ids:
            values = encoding.ids
        elif role is not None:
            values = by_role[role]
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
    relevance = np.asarray(result.relevance[ids_input(explainer)])[0]
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
    if args.save_relevance:
        np.save(args.save_relevance, relevance)
        print(f"wrote relevance {list(relevance.shape)} (one value per token) to {args.save_relevance}")
    return 0


__all__ = ["explain_text", "ids_input", "load_tokenizer", "text_feeds"]
