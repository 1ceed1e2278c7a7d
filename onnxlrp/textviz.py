"""Relevance over text: one coloured box per token, as HTML or in a 24-bit-colour terminal.

The tokens come from the caller (whatever tokenizer the model uses), so onnxlrp needs no
tokenizer. Colours are ``onnxlrp.viz``'s colour maps with its symmetric normalisation: ``bwr``
(the default) shows negative relevance blue, zero white and positive red, each text scaled by its
own ``max |r|`` unless ``vmax`` is given.

Tokens are shown as the tokenizer wrote them, with the usual markers turned into text: GPT-2's
``Ġ`` (a leading space) and ``Ċ`` (a newline), SentencePiece's ``▁`` (a leading space) and
WordPiece's ``##`` (glued to the token before). Without such markers tokens are separated by
spaces.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

_SPACE_MARKERS = ("Ġ", "▁")


def _pieces(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """(separator before, text) for every token."""
    tokens = [str(t) for t in tokens]
    marked = any(t.startswith(_SPACE_MARKERS) or "Ċ" in t for t in tokens)
    pieces = []
    for i, token in enumerate(tokens):
        if marked:
            text = token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
            stripped = text.lstrip(" ")
            sep, text = text[: len(text) - len(stripped)], stripped or text
        elif token.startswith("##"):
            text, sep = token[2:], ""
        else:
            text, sep = token, (" " if i else "")
        pieces.append((sep, text))
    return pieces


def _colours(relevance, cmap: str, vmax: float | None, level: float) -> tuple[np.ndarray, np.ndarray]:
    from onnxlrp.viz import _palette, normalize

    values = np.asarray(relevance, dtype=np.float64).reshape(-1)
    scale = normalize(values, symmetric=True, vmin=None if vmax is None else -vmax, vmax=vmax)
    index = (scale * 255.0).clip(0, 255).astype(np.uint8)
    return _palette(cmap, level)[index], values


def _check(tokens: Sequence[str], relevance) -> None:
    if np.asarray(relevance).size != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {np.asarray(relevance).size} relevance values")


def _foreground(rgb: np.ndarray) -> tuple[int, int, int]:
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return (0, 0, 0) if luminance > 110 else (255, 255, 255)


def text_heatmap(
    tokens: Sequence[str],
    relevance,
    cmap: str = "bwr",
    vmax: float | None = None,
    level: float = 1.0,
    title: str | None = None,
) -> str:
    """A standalone HTML page showing ``tokens`` coloured by ``relevance`` (one value per token).

    Hovering a token shows its relevance. ``vmax`` fixes the value shown at full colour (default:
    ``max |relevance|``); ``title`` adds a heading.
    """
    _check(tokens, relevance)
    colours, values = _colours(relevance, cmap, vmax, level)
    spans = []
    for (sep, text), rgb, value in zip(_pieces(tokens), colours, values):
        fg = _foreground(rgb)
        style = (
            f"background: rgb({rgb[0]}, {rgb[1]}, {rgb[2]}); color: rgb{fg}; "
            "padding: 0.1em 0.05em; border-radius: 0.2em; white-space: pre-wrap"
        )
        spans.append(
            f'{html.escape(sep)}<span title="{value:.6g}" style="{style}">{html.escape(text)}</span>'
        )
    heading = f"<h3>{html.escape(title)}</h3>\n" if title else ""
    total = f"<p style='color: #666'>relevance sum {values.sum():.6g}, max |r| {np.abs(values).max():.6g}</p>"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
        + html.escape(title or "relevance")
        + "</title></head>\n<body style='font-family: sans-serif; line-height: 2'>\n"
        + heading
        + "<p>"
        + "".join(spans)
        + "</p>\n"
        + total
        + "\n</body></html>\n"
    )


def text_heatmap_terminal(
    tokens: Sequence[str], relevance, cmap: str = "bwr", vmax: float | None = None, level: float = 1.0
) -> str:
    """The same heatmap for a terminal: ANSI 24-bit background colours, one line of text."""
    _check(tokens, relevance)
    colours, _ = _colours(relevance, cmap, vmax, level)
    out = []
    for (sep, text), rgb in zip(_pieces(tokens), colours):
        fg = _foreground(rgb)
        out.append(
            f"{sep}\x1b[48;2;{rgb[0]};{rgb[1]};{rgb[2]}m\x1b[38;2;{fg[0]};{fg[1]};{fg[2]}m{text}\x1b[0m"
        )
    return "".join(out)


def save_text_heatmap(tokens: Sequence[str], relevance, path, **options) -> str:
    """Write ``text_heatmap(tokens, relevance, **options)`` to ``path``; returns the HTML."""
    page = text_heatmap(tokens, relevance, **options)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return page


__all__ = ["save_text_heatmap", "text_heatmap", "text_heatmap_terminal"]
