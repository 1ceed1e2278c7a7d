"""``onnxlrp batch``: per-item results, failures with reasons, and kill-and-resume for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxlrp
from onnxlrp import batch

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
SAMPLES = ROOT / "models" / "digits_samples.npy"


def _save_png(path: Path, sample: np.ndarray) -> None:
    Image.fromarray(np.round(sample[0] * 255).astype(np.uint8), mode="L").save(path)


@pytest.fixture
def image_folder(tmp_path):
    """Four good 8x8 digits, a corrupt .png, a 16x16 image and a non-image file."""
    folder = tmp_path / "images"
    folder.mkdir()
    samples = np.load(SAMPLES)[:4]
    for i, sample in enumerate(samples):
        _save_png(folder / f"digit{i}.png", sample)
    (folder / "broken.png").write_bytes(b"this is not a PNG file")
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(folder / "large.png")
    (folder / "notes.txt").write_text("ignored: not an image")
    return folder


def _expected(images: list[Path], composite: str = "epsilon-plus-flat"):
    from onnxlrp.io import load_image

    x = np.concatenate([load_image(p, [None, 1, 8, 8]) for p in images])
    return onnxlrp.Explainer(MODEL, composite=composite).explain(x)


def test_folder_good_and_bad_images(image_folder, tmp_path):
    out = tmp_path / "out"
    summary = batch.run(MODEL, image_folder, out, batch_size=3, resize=False, heatmaps=True, progress=False)

    assert summary["items"] == 6 and summary["done"] == 4 and summary["failed"] == 2
    assert summary["pending"] == 0 and summary["complete"]
    reasons = {f["item"]: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"broken.png", "large.png"}
    assert "not a readable image" in reasons["broken.png"]
    assert "16x16" in reasons["large.png"] and "8x8" in reasons["large.png"]
    assert json.loads((out / "summary.json").read_text()) == summary

    good = sorted(image_folder.glob("digit*.png"))
    expected = _expected(good)
    results = batch.load_results(out)
    assert sorted(results) == [p.name for p in good]
    for i, path in enumerate(good):
        item = results[path.name]
        np.testing.assert_allclose(item["relevance"], expected.relevance[i], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(item["output"], expected.output[i], rtol=1e-5, atol=1e-6)
        assert int(item["target"]) == int(expected.target[i])
        assert (out / "heatmaps" / f"{path.name}.png").is_file()
    assert not list(out.rglob("*.tmp-*"))


def test_list_file_and_resize(image_folder, tmp_path):
    """A text list of paths (relative to the list); resizing on by default, target fixed."""
    listing = tmp_path / "list.txt"
    listing.write_text("# digits\nimages/digit0.png\n\nimages/large.png\nimages/missing.png\n")
    out = tmp_path / "out"
    summary = batch.run(MODEL, listing, out, "epsilon", target=3, batch_size=2, progress=False)
    assert summary["done"] == 2 and summary["failed"] == 1
    (failure,) = summary["failures"]
    assert failure["item"] == "000002-missing.png" and "not a readable image" in failure["reason"]
    results = batch.load_results(out)
    assert sorted(results) == ["000000-digit0.png", "000001-large.png"]
    assert all(int(r["target"]) == 3 for r in results.values())


def test_other_job_in_same_folder_is_refused(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.load(SAMPLES)[:2])
    batch.run(MODEL, data, tmp_path / "out", "epsilon", progress=False)
    with pytest.raises(onnxlrp.OnnxLrpError, match="different job"):
        batch.run(MODEL, data, tmp_path / "out", "epsilon-plus-flat", progress=False)


def _cli(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "onnxlrp", "batch", str(MODEL), str(data), "--out", str(out)] + [
        "--composite",
        "epsilon",
        "--batch-size",
        "3",
    ]


def _item_files(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "items").glob("*.npz")}


def test_kill_and_resume(tmp_path):
    """SIGKILL a running ``onnxlrp batch`` mid-job, run it again: every item is there exactly once,
    the items written before the kill are untouched, and all equal a clean run's results."""
    rng = np.random.default_rng(0)
    base = np.load(SAMPLES)
    n = 3000
    x = np.clip(base[rng.integers(0, len(base), n)] + 0.1 * rng.standard_normal((n, 1, 8, 8)), 0, 1)
    data = tmp_path / "data.npy"
    np.save(data, x.astype(np.float32))
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    proc = subprocess.Popen(
        _cli(data, out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "items").is_dir() and len(os.listdir(out / "items")) >= 60:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job ended before it could be killed; give it more items"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    before = _item_files(out)
    assert 0 < len(before) < n, f"{len(before)} items done when killed"
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"] and summary["done"] <= len(before)

    resumed = subprocess.run(_cli(data, out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = _item_files(out)
    assert len(after) == n
    assert {name: after[name] for name in before} == before, "items done before the kill were rewritten"
    assert not list(out.rglob("*.tmp-*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["done"] == n and summary["failed"] == 0

    clean = tmp_path / "clean"
    batch.run(MODEL, data, clean, "epsilon", batch_size=3, progress=False)
    got, want = batch.load_results(out), batch.load_results(clean)
    assert sorted(got) == sorted(want) == [f"{i:06d}" for i in range(n)]
    for name in want:
        np.testing.assert_allclose(got[name]["relevance"], want[name]["relevance"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got[name]["target"], want[name]["target"])


def test_progress_bar_writes_rate_and_eta():
    class Stream:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    stream = Stream()
    bar = batch.Progress(10, 2, stream)
    bar.update(8)
    bar.close()
    assert "10/10" in stream.text and "items/s" in stream.text and "ETA" in stream.text
