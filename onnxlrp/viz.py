"""Relevance heatmaps and overlays (numpy + Pillow only).

The colour maps and the normalisation follow Zennit's conventions (``zennit.image.imgify``), so a
heatmap written here looks like the one Zennit would draw for the same relevance:

* a colour map is a list of colour nodes along an 8-bit axis ``0..255`` and is written in a tiny
  source language, e.g. ``"00f,80:fff,f00"``: comma-separated RGB colours (3 or 6 hex digits; a
  3-digit colour doubles each digit), each optionally preceded by ``IDX:`` where ``IDX`` is a 1- or
  2-digit hex position (1 digit is doubled: ``8`` -> ``0x88``).  Colours without a position are
  spread evenly between their positioned neighbours; the first and last default to ``0`` and
  ``255``.  Between nodes the colour is interpolated linearly.
* ``symmetric=True`` divides the relevance by ``max|r|`` so that ``[-1, 1]`` maps to ``[0, 1]``
  and zero lands exactly at the centre of the palette; ``symmetric=False`` maps ``[min, max]``
  to ``[0, 1]``.  ``vmin``/``vmax`` override either bound.
* ``level`` stretches the palette: ``level > 1`` saturates earlier, ``level < 1`` uses only the
  middle part of the colour range.

This is an independent implementation; only the colour-map definitions (data) match Zennit's.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

__all__ = [
    "CMAP_SOURCES",
    "COLORMAPS",
    "colormap_palette",
    "heatmap",
    "normalize",
    "overlay",
    "parse_colormap",
    "save_heatmap",
    "save_overlay",
    "save_text_heatmap",
    "text_heatmap",
    "text_heatmap_terminal",
    "upscale",
]

#: Colour-map source strings (same colour nodes as Zennit's built-in maps).
CMAP_SOURCES: dict[str, str] = {
    "gray": "000,fff",  # black -> white
    "wred": "fff,f00",  # white -> red
    "wblue": "fff,00f",  # white -> blue
    "hot": "000,f00,ff0,fff",  # black -> red -> yellow -> white
    "cold": "000,00f,0ff",  # black -> blue -> cyan
    "coldnhot": "0ff,00f,80:000,f00,ff0,fff",  # reversed cold + hot, black at the centre
    "bwr": "00f,80:fff,f00",  # blue -> white -> red
    "france": "0055a4,80:fff,ef4135",  # the French flag's blue/white/red
    "seismic": "0000d0,80:d0d0d0,d00000",  # blue -> light grey -> red, brightness 0xd0
    "coolio": "00d0d0,80:d0d0d0,d000d0",  # cyan -> light grey -> magenta
    "coleus": "00d000,80:d0d0d0,d000d0",  # green -> light grey -> magenta
}

_ENTRY = re.compile(r"^\s*(?:([0-9a-fA-F]{1,2})\s*:\s*)?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})\s*$")


def parse_colormap(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a colour-map source string into node positions (0..255) and RGB colours (0..255).

    Returns ``(positions, colours)`` with shapes ``(K,)`` and ``(K, 3)``, positions ascending.
    """
    raw: list[tuple[int | None, np.ndarray]] = []
    for entry in source.split(","):
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(f"bad colour-map entry {entry!r} in {source!r}")
        idx, colour = match.groups()
        pos = None if idx is None else int(idx * 2 if len(idx) == 1 else idx, 16)
        hexes = [c * 2 for c in colour] if len(colour) == 3 else [colour[i : i + 2] for i in (0, 2, 4)]
        raw.append((pos, np.array([int(h, 16) for h in hexes], dtype=np.float64)))
    if len(raw) < 2:
        raise ValueError(f"a colour map needs at least 2 colours: {source!r}")

    # the ends default to 0 and 255; an explicit first position > 0 keeps its colour down to 0
    first_pos, first_col = raw[0]
    nodes: list[tuple[int, np.ndarray]] = [(0, first_col)]
    if first_pos is not None and first_pos > 0:
        nodes.append((first_pos, first_col))
    pending: list[np.ndarray] = []
    for n, (pos, col) in enumerate(raw[1:], start=1):
        if pos is None and n < len(raw) - 1:
            pending.append(col)
            continue
        pos = 255 if pos is None else pos
        lo = nodes[-1][0]
        if pos < lo:
            raise ValueError(f"colour-map positions must ascend: {source!r}")
        # unpositioned colours: evenly spaced between the neighbours, positions truncated to int
        for k, mid in enumerate(pending, start=1):
            t = k / (len(pending) + 1)
            nodes.append((int(lo * (1.0 - t) + pos * t), mid))
        pending.clear()
        nodes.append((pos, col))
    positions = np.array([p for p, _ in nodes], dtype=np.float64)
    colours = np.stack([c for _, c in nodes])
    return positions, colours


def _interpolate(positions: np.ndarray, colours: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour lookup of ``x`` in ``[0, 255]``; returns float RGB in ``[0, 255]``."""
    x = np.clip(x, 0.0, 255.0)
    # right neighbour: first node strictly after x (ties go right, i.e. to the later segment)
    right = np.clip(np.searchsorted(positions, x, side="right"), 1, len(positions) - 1)
    left = right - 1
    span = positions[right] - positions[left]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(span > 0, (x - positions[left]) / np.where(span > 0, span, 1.0), 0.0)
    t = np.clip(t, 0.0, 1.0)[..., None]
    return colours[left] * (1.0 - t) + colours[right] * t


def colormap_palette(cmap: str, level: float = 1.0) -> np.ndarray:
    """A ``(256, 3)`` uint8 palette for a colour-map name (see :data:`CMAP_SOURCES`) or source string.

    Palette entry ``i`` shows the value ``(2 i / 255 - 1) * level`` of the normalised range
    ``[-1, 1]``; ``level`` other than 1 stretches or squeezes the colour range around the centre.
    """
    source = CMAP_SOURCES.get(cmap, cmap)
    positions, colours = parse_colormap(source)
    x = ((np.linspace(-1.0, 1.0, 256) * level + 1.0) / 2.0).clip(0.0, 1.0) * 255.0
    rgb = _interpolate(positions, colours, x)
    # round away float noise before truncating, so that e.g. 127.99999999 becomes 128
    return rgb.round(9).clip(0.0, 255.0).astype(np.uint8)


#: Built-in palettes at ``level=1``: name -> ``(256, 3)`` uint8.
COLORMAPS: dict[str, np.ndarray] = {name: colormap_palette(name) for name in CMAP_SOURCES}


def _palette(cmap: str | np.ndarray, level: float) -> np.ndarray:
    if isinstance(cmap, np.ndarray):
        if cmap.shape != (256, 3):
            raise ValueError(f"a palette array must have shape (256, 3), got {cmap.shape}")
        return cmap.astype(np.uint8)
    if level == 1.0 and cmap in COLORMAPS:
        return COLORMAPS[cmap]
    return colormap_palette(cmap, level)


def _as_2d(relevance: np.ndarray) -> np.ndarray:
    """2-D relevance map: HxW as is, CxHxW (or 1xCxHxW) summed over channels, a vector as one row."""
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim == 4 and r.shape[0] == 1:
        r = r[0]
    if r.ndim == 3:
        r = r.sum(axis=0)
    elif r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2:
        raise ValueError(f"relevance must be HxW, CxHxW or 1xCxHxW, got shape {np.shape(relevance)}")
    return r


def normalize(
    relevance: np.ndarray,
    symmetric: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Map values linearly to ``[0, 1]`` (clipped), as Zennit's ``imgify`` does.

    ``symmetric=True``: bounds ``[-max|r|, max|r|]`` (zero -> 0.5); otherwise ``[min r, max r]``.
    ``vmin``/``vmax`` override the computed bounds.  A constant input maps to 0.5 (symmetric) or 0.
    """
    r = np.asarray(relevance, dtype=np.float64)
    if symmetric:
        amax = float(np.abs(r).max()) if r.size else 0.0
        lo, hi = -amax, amax
    else:
        lo, hi = (float(r.min()), float(r.max())) if r.size else (0.0, 0.0)
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if not hi > lo:
        return np.full(r.shape, 0.5 if symmetric else 0.0)
    return ((r - lo) / (hi - lo)).clip(0.0, 1.0)


def upscale(image: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor until the shorter side is >= ``min_size``."""
    h, w = image.shape[:2]
    factor = max(1, -(-int(min_size) // max(1, min(h, w))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def heatmap(
    relevance: np.ndarray,
    cmap: str | np.ndarray = "bwr",
    symmetric: bool = True,
    level: float = 1.0,
    vmin: float | None = None,
    vmax: float | None = None,
    grid: bool | tuple[int, int] = False,
    min_size: int = 0,
) -> np.ndarray:
    """Colour a relevance map; returns an ``HxWx3`` uint8 image.

    ``relevance`` is HxW, or CxHxW (summed over channels).  With ``grid`` the first axis is a batch
    (NxHxW or NxCxHxW): every sample is normalised on its own and the samples are tiled into a
    square grid (``True``) or a ``(rows, cols)`` grid.  ``cmap`` is a name from
    :data:`CMAP_SOURCES`, a colour-map source string or a ``(256, 3)`` palette.  ``min_size``
    upscales (nearest neighbour, integer factor) so that tiny inputs stay visible.
    """
    palette = _palette(cmap, level)
    if grid is not False:
        batch = np.asarray(relevance)
        if batch.ndim not in (3, 4):
            raise ValueError(f"a grid needs NxHxW or NxCxHxW relevance, got shape {batch.shape}")
        tiles = [heatmap(sample, palette, symmetric, 1.0, vmin, vmax) for sample in batch]
        return upscale(_tile(tiles, None if grid is True else grid), min_size)
    values = normalize(_as_2d(relevance), symmetric=symmetric, vmin=vmin, vmax=vmax)
    index = (values * 255.0).clip(0, 255).astype(np.uint8)  # truncation, as in Zennit
    return upscale(palette[index], min_size)


def _tile(tiles: list[np.ndarray], shape: tuple[int, int] | None) -> np.ndarray:
    """Tile equally sized HxWx3 images row by row; empty cells are black."""
    n = len(tiles)
    if shape is None:
        cols = max(1, int(n**0.5))
        rows = -(-n // cols)
    else:
        rows, cols = shape
    h, w, c = tiles[0].shape
    out = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, tile in enumerate(tiles[: rows * cols]):
        r, q = divmod(i, cols)
        out[r * h : (r + 1) * h, q * w : (q + 1) * w] = tile
    return out


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Any HxW / HxWx{1,3,4} / {1,3}xHxW image, uint8 or float in [0, 1], as HxWx3 uint8."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] not in (1, 3, 4) and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be HxW, HxWx3 or 3xHxW, got shape {np.shape(image)}")
    if img.dtype != np.uint8:
        img = (np.asarray(img, dtype=np.float64).clip(0.0, 1.0) * 255.0).round().astype(np.uint8)
    return img


def overlay(
    image: np.ndarray,
    relevance: np.ndarray,
    alpha: float = 0.5,
    cmap: str | np.ndarray = "bwr",
    symmetric: bool = True,
    level: float = 1.0,
    vmin: float | None = None,
    vmax: float | None = None,
    min_size: int = 0,
) -> np.ndarray:
    """Blend a relevance heatmap over an image; returns ``HxWx3`` uint8 at the image's size.

    ``image`` is uint8 (0..255) or float in ``[0, 1]``, HxW (grey), HxWx3 or 3xHxW.  The heatmap
    is resized to the image with nearest neighbour if their sizes differ; ``alpha`` is the
    heatmap's weight.  ``min_size`` upscales the result as in :func:`heatmap`.
    """
    base = _as_rgb(image)
    heat = heatmap(relevance, cmap=cmap, symmetric=symmetric, level=level, vmin=vmin, vmax=vmax)
    if heat.shape[:2] != base.shape[:2]:
        size = (base.shape[1], base.shape[0])
        heat = np.asarray(Image.fromarray(heat).resize(size, Image.Resampling.NEAREST))
    mixed = (1.0 - alpha) * base.astype(np.float64) + alpha * heat.astype(np.float64)
    return upscale(mixed.round().clip(0, 255).astype(np.uint8), min_size)


def save_heatmap(
    relevance: np.ndarray,
    path: str | os.PathLike[str],
    cmap: str | np.ndarray = "bwr",
    symmetric: bool = True,
    level: float = 1.0,
    vmin: float | None = None,
    vmax: float | None = None,
    grid: bool | tuple[int, int] = False,
    min_size: int = 0,
) -> np.ndarray:
    """Write :func:`heatmap` to ``path`` (format from the suffix, e.g. PNG); returns the image array."""
    img = heatmap(relevance, cmap, symmetric, level, vmin, vmax, grid=grid, min_size=min_size)
    Image.fromarray(img, mode="RGB").save(path)
    return img


def save_overlay(
    image: np.ndarray,
    relevance: np.ndarray,
    path: str | os.PathLike[str],
    alpha: float = 0.5,
    cmap: str | np.ndarray = "bwr",
    symmetric: bool = True,
    level: float = 1.0,
    vmin: float | None = None,
    vmax: float | None = None,
    min_size: int = 0,
) -> np.ndarray:
    """Write :func:`overlay` to ``path``; returns the image array."""
    img = overlay(image, relevance, alpha, cmap, symmetric, level, vmin, vmax, min_size=min_size)
    Image.fromarray(img, mode="RGB").save(path)
    return img


# text: one coloured box per token (HTML and terminal), see onnxlrp.textviz
from onnxlrp.textviz import save_text_heatmap, text_heatmap, text_heatmap_terminal  # noqa: E402
