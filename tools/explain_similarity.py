"""Which words make two sentences similar? AttnLRP on a sentence-embedding model (MiniLM).

The similarity of sentences A and B is the dot product of their embeddings, ``a . b =
sum_k a_k b_k``. To explain A's side, the relevance at A's embedding is seeded with ``a * b``
(entry by entry, B's embedding held constant), so the seed sums to the dot product; AttnLRP takes
it back to A's tokens. The tokens' relevance sums to less (about 2/3 of it for the example below,
as in LXT): biases and LayerNorm offsets keep their share, and the softmax rule does not conserve.
B's side likewise with ``b * a``. Tokens with positive relevance make the sentences similar,
negative ones pull them apart. Writes one HTML heatmap with both sentences::

    python tools/export_minilm.py --out build/minilm
    python tools/explain_similarity.py "A man is eating food." "A man eats a piece of bread." \
        [--model build/minilm] [--out similarity.html]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import onnxlrp
from onnxlrp import viz
from onnxlrp.cli_text import load_tokenizer


def explain_pair(explainer: onnxlrp.Explainer, tokenizer, a: str, b: str, normalise: bool = False):
    """Per-token relevance of both sentences and their embeddings.

    ``normalise=True`` explains the cosine similarity (the embeddings' norms held constant)."""
    encodings = [tokenizer.encode(text) for text in (a, b)]
    embeddings, feeds = [], []
    for enc in encodings:
        feed = {
            "input_ids": np.asarray([enc.ids], dtype=np.int64),
            "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
        }
        feeds.append(feed)
        embeddings.append(explainer.explain(feed, target=0).output[0])
    scale = 1.0
    if normalise:
        scale = 1.0 / (np.linalg.norm(embeddings[0]) * np.linalg.norm(embeddings[1]))
    results = []
    for i, (enc, feed) in enumerate(zip(encodings, feeds)):
        seed = (embeddings[i] * embeddings[1 - i] * scale)[None]
        relevance = explainer.explain(feed, seed=seed).relevance["input_ids"][0]
        results.append((enc.tokens, relevance))
    return results, embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--model", type=Path, default=Path("build/minilm"), help="export_minilm.py's output")
    parser.add_argument("--out", default="similarity.html")
    parser.add_argument("--cosine", action="store_true", help="explain the cosine similarity")
    args = parser.parse_args()
    explainer = onnxlrp.Explainer(args.model / "minilm.onnx", "attnlrp")
    tokenizer = load_tokenizer(str(args.model))
    results, (ea, eb) = explain_pair(explainer, tokenizer, args.a, args.b, normalise=args.cosine)
    dot = float(ea @ eb)
    cosine = dot / float(np.linalg.norm(ea) * np.linalg.norm(eb))
    print(f"dot product {dot:.6g}, cosine similarity {cosine:.4f}")
    pages = []
    for text, (tokens, relevance) in zip((args.a, args.b), results):
        print(f"{text!r}: relevance sum {relevance.sum():.6g}")
        for token, value in zip(tokens, relevance):
            print(f"  {token:<15} {value:+.5f}")
        if sys.stdout.isatty():
            print(viz.text_heatmap_terminal(tokens, relevance))
        page = viz.text_heatmap(tokens, relevance, title=text)
        pages.append(page[page.index("<body") : page.index("</body>")].split(">", 1)[1])
    what = "cosine similarity" if args.cosine else "dot product"
    html = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>similarity</title></head>\n"
        f"<body style='font-family: sans-serif; line-height: 2'><h2>{what}: "
        f"{cosine if args.cosine else dot:.4g}</h2>\n" + "<hr>".join(pages) + "</body></html>\n"
    )
    Path(args.out).write_text(html, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
