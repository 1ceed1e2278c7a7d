"""onnxlrp.viz against Zennit's colour maps and imgify (zennit is imported through conftest's shim)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from zennit.image import CMAPS, imgify, palette

from onnxlrp import viz


@pytest.fixture
def zennit_imgify(monkeypatch):
    """zennit.image.imgify, made to work with Pillow >= 12: zennit passes the palette as a (256, 3)
    array to ``Image.putpalette``, which newer Pillow only accepts as bytes or a flat sequence."""
    original = Image.Image.putpalette

    def putpalette(self, data, rawmode="RGB"):
        if isinstance(data, np.ndarray):
            data = data.astype(np.uint8).tobytes()
        return original(self, data, rawmode)

    monkeypatch.setattr(Image.Image, "putpalette", putpalette)
    return lambda *args, **kwargs: np.asarray(imgify(*args, **kwargs).convert("RGB"))


@pytest.mark.parametrize("name", ["bwr", "coldnhot"])
def test_palette_matches_zennit_exactly(name):
    assert viz.COLORMAPS[name].shape == (256, 3)
    assert viz.COLORMAPS[name].dtype == np.uint8
    np.testing.assert_array_equal(viz.COLORMAPS[name], palette(name))


@pytest.mark.parametrize("name", sorted(CMAPS))
@pytest.mark.parametrize("level", [1.0, 0.5, 1.7])
def test_all_builtin_palettes_and_levels_match_zennit(name, level):
    np.testing.assert_array_equal(viz.colormap_palette(name, level), palette(name, level))


@pytest.mark.parametrize(
    "source", ["10:f00,fff", "f00,c0:0f0", "000,123,456,789,c0:abc,fff,def", "0ff,00f,8:000,f00"]
)
def test_source_strings_match_zennit(source):
    np.testing.assert_array_equal(viz.colormap_palette(source), palette(source))


def test_bad_source_string():
    with pytest.raises(ValueError):
        viz.colormap_palette("f00,nothex")
    with pytest.raises(ValueError):
        viz.colormap_palette("f00")


@pytest.mark.parametrize("cmap", ["bwr", "coldnhot", "seismic"])
def test_heatmap_matches_imgify(cmap, zennit_imgify):
    rel = np.random.default_rng(0).normal(size=(13, 17))
    expected = zennit_imgify(rel, symmetric=True, cmap=cmap)
    np.testing.assert_array_equal(viz.heatmap(rel, cmap=cmap), expected)
    expected = zennit_imgify(rel, symmetric=False, cmap=cmap, level=0.8)
    np.testing.assert_array_equal(viz.heatmap(rel, cmap=cmap, symmetric=False, level=0.8), expected)
    expected = zennit_imgify(rel, vmin=-0.5, vmax=2.0, cmap=cmap)
    np.testing.assert_array_equal(viz.heatmap(rel, cmap=cmap, vmin=-0.5, vmax=2.0), expected)


def test_symmetric_normalisation_puts_zero_at_the_centre():
    rel = np.array([[-2.0, 0.0, 1.0, 2.0]])
    values = viz.normalize(rel, symmetric=True)
    np.testing.assert_allclose(values, [[0.0, 0.5, 0.75, 1.0]])
    img = viz.heatmap(rel, cmap="bwr")
    pal = viz.COLORMAPS["bwr"]
    np.testing.assert_array_equal(img[0, 1], pal[127])  # 0.5 * 255 = 127.5, truncated as in Zennit
    assert (pal[127:129].astype(int) >= 253).all()  # white centre of bwr
    np.testing.assert_array_equal(img[0, 0], [0, 0, 255])  # -max|r| -> blue end
    np.testing.assert_array_equal(img[0, 3], [255, 0, 0])  # +max|r| -> red end
    # unsymmetric: min -> 0, max -> 1
    np.testing.assert_allclose(viz.normalize(np.array([1.0, 3.0, 2.0]), symmetric=False), [0.0, 1.0, 0.5])
    # all-zero relevance: the centre colour, no division by zero
    np.testing.assert_array_equal(viz.heatmap(np.zeros((2, 2)))[0, 0], pal[127])


def test_channels_are_summed():
    rel = np.random.default_rng(1).normal(size=(3, 5, 6))
    np.testing.assert_array_equal(viz.heatmap(rel), viz.heatmap(rel.sum(0)))
    np.testing.assert_array_equal(viz.heatmap(rel[None]), viz.heatmap(rel.sum(0)))
    with pytest.raises(ValueError):
        viz.heatmap(np.zeros((2, 2, 2, 2)))


def test_upscale_and_grid(zennit_imgify):
    rel = np.random.default_rng(2).normal(size=(8, 8))
    big = viz.heatmap(rel, min_size=256)
    assert big.shape == (256, 256, 3)
    np.testing.assert_array_equal(big[::32, ::32], viz.heatmap(rel))
    batch = np.random.default_rng(3).normal(size=(5, 1, 4, 6))
    grid = viz.heatmap(batch, grid=True)
    assert grid.shape == (3 * 4, 2 * 6, 3)  # 5 samples: 2 columns, 3 rows
    np.testing.assert_array_equal(grid[4:8, 6:12], viz.heatmap(batch[3]))
    expected = zennit_imgify(batch[:, 0], symmetric=True, grid=(2, 3), gridfill=0)
    np.testing.assert_array_equal(viz.heatmap(batch, grid=(2, 3))[:4], expected[:4])  # first grid row


def test_save_heatmap_writes_png_of_right_size(tmp_path):
    rel = np.random.default_rng(4).normal(size=(1, 8, 10))
    path = tmp_path / "heat.png"
    img = viz.save_heatmap(rel, path, cmap="coldnhot")
    with Image.open(path) as written:
        assert written.format == "PNG"
        assert written.size == (10, 8)
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), img)
    viz.save_heatmap(rel, tmp_path / "big.png", min_size=100)
    with Image.open(tmp_path / "big.png") as written:
        assert written.size == (130, 104)  # factor 13: the shorter side reaches 100


def test_overlay(tmp_path):
    rng = np.random.default_rng(5)
    rel = rng.normal(size=(4, 4))
    grey = rng.uniform(size=(8, 8))  # float in [0, 1], twice the relevance's size
    heat = np.asarray(Image.fromarray(viz.heatmap(rel)).resize((8, 8), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(viz.overlay(grey, rel, alpha=1.0), heat)
    base = (grey * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(viz.overlay(grey, rel, alpha=0.0), np.stack([base] * 3, -1))
    rgb = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    rel = rng.normal(size=(4, 6))
    mixed = viz.overlay(rgb, rel, alpha=0.5)
    expected = (0.5 * rgb + 0.5 * viz.heatmap(rel)).round().astype(np.uint8)
    np.testing.assert_array_equal(mixed, expected)
    np.testing.assert_array_equal(viz.overlay(rgb.transpose(2, 0, 1), rel), mixed)  # CHW accepted
    path = tmp_path / "overlay.png"
    viz.save_overlay(grey, rel, path, min_size=64)
    with Image.open(path) as written:
        assert written.size == (64, 64)
