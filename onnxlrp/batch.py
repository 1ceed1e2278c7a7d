"""Batch jobs: explain many inputs, resumably, one result file per item.

::

    onnxlrp batch MODEL DATA --out DIR [--composite NAME] [--target N] [--batch-size B] [--heatmaps]

``DATA`` is a folder of images (every file with an image suffix, in name order), a ``.npy`` file
(a batch of samples), a ``.npz`` file (its one array, or the one named like the model input), or
a text file listing image paths, one a line (relative to the list's folder; blank lines and lines
starting with ``#`` are skipped).

``DIR`` receives:

- ``manifest.json``: what the job is (model, composite, rule parameters, target, data, items);
  a restarted job must match it;
- ``items/<item>.npz`` per explained item: ``relevance`` (shaped like one input sample),
  ``output`` (the explained output of the sample), ``target`` (the class explained) and
  ``source``; items are named after the image file (``cat.jpg``), or by index (``000042``, and
  ``000042-cat.jpg`` for list files);
- ``heatmaps/<item>.png`` with ``--heatmaps``;
- ``failed/<item>.json`` per item that could not be explained (unreadable image, wrong size, ...),
  with the reason; the job goes on;
- ``summary.json``: counts, and every failed item with its reason; rewritten after every chunk.

Every file is written to a temporary name and moved into place (``os.replace``), an item's
``.npz`` last, so a job killed at any point leaves only complete files. Run the same command
again and it skips the items that are done or failed and explains the rest: nothing is lost and
nothing is written twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from onnxlrp.errors import InputError, OnnxLrpError
from onnxlrp.io import IMAGE_SUFFIXES, is_image, load_image

if TYPE_CHECKING:
    from onnxlrp.runtime import Provider

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
_TMP = ".tmp-"


@dataclass(frozen=True)
class Item:
    """One input of a batch job: its name (the result file's stem) and where it comes from."""

    name: str
    source: str
    index: int | None = None  # row of an array file; None for an image


class Progress:
    """A minimal progress bar on a stream (stderr): count, items/s and ETA.

    On a terminal the line is redrawn in place at most every 0.2 s; elsewhere (a log file) a line
    is written at most every 10 s and at the end.
    """

    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None, label: str = ""):
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = self.last = time.monotonic()
        self.last_done = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= (0.2 if self.tty else 10.0) or self.done >= self.total:
            self.last = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        if self.done == self.last_done:
            return
        self.last_done = self.done
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 else "?"
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        text = (
            f"{self.label}[{bar}] {self.done}/{self.total} {rate:.1f} items/s "
            f"elapsed {_clock(elapsed)} ETA {eta}"
        )
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# ------------------------------------------------------------------------------------------------
# data sources


def _digits(n: int) -> int:
    return max(6, len(str(max(n - 1, 0))))


def _array_file(path: Path, input_name: str) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable .npy file ({error})") from error
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable .npz file ({error})") from error
    keys = list(archive.files)
    if len(keys) == 1:
        return archive[keys[0]]
    if input_name in keys:
        return archive[input_name]
    raise InputError(
        f"{path}: holds arrays {', '.join(keys)}; give a file with one array, or one named {input_name!r}"
    )


def list_items(data: str | os.PathLike, input_name: str = "input") -> tuple[list[Item], np.ndarray | None]:
    """The items of ``data`` (see the module docstring), and the array they index for array files."""
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image(p))
        if not files:
            raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return [Item(p.name, str(p)) for p in files], None
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".npy", ".npz"):
        array = _array_file(path, input_name)
        if array.ndim < 1 or len(array) == 0:
            raise InputError(f"{path}: holds no samples (shape {list(array.shape)})")
        width = _digits(len(array))
        return [Item(f"{i:0{width}d}", str(path), i) for i in range(len(array))], array
    if is_image(path):
        return [Item(path.name, str(path))], None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable list of image paths ({error})") from error
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise InputError(f"{path}: lists no image paths")
    width = _digits(len(entries))
    items = []
    for i, entry in enumerate(entries):
        source = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        items.append(Item(f"{i:0{width}d}-{Path(entry).name}", str(source)))
    return items, None


# ------------------------------------------------------------------------------------------------
# atomic files


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary name beside ``path``, then move it into place."""
    tmp = path.with_name(f"{path.name}{_TMP}{os.getpid()}")  # no longer matches *.npz, *.png
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, value: Any) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1, default=_jsonable) + "\n"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _save_npz(path: Path, **arrays) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    _atomic_write(path, write)


def _remove_stale(folder: Path) -> None:
    """Temporary files a killed job left behind."""
    for path in folder.glob(f"*{_TMP}*"):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# the job


def _chunks(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def run(
    model: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    composite: str = "epsilon-plus-flat",
    *,
    target: int | None = None,
    batch_size: int = 16,
    heatmaps: bool = False,
    resize: bool = True,
    providers: Sequence[Provider] | None = None,
    threads: int | None = None,
    progress: bool | TextIO = True,
    cmap: str = "bwr",
    **params,
) -> dict:
    """Explain every item of ``data`` into folder ``out`` (see the module docstring); resumes a job
    that was stopped. Returns the summary (also written to ``out/summary.json``).

    ``target``: the class to explain for every item (default: each item's top-1); ``resize``:
    whether images of another size than the model input are resized (else they fail);
    ``params``: the composite's rule parameters.
    """
    from onnxlrp.runtime import Explainer

    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    out = Path(out)
    explainer = Explainer(model, composite=composite, providers=providers, threads=threads, **params)
    if len(explainer.inputs) != 1:
        raise InputError(f"batch jobs explain one-input models; {model} has {len(explainer.inputs)} inputs")
    spec = explainer.inputs[0]
    classes = explainer.num_classes
    if target is not None and classes is not None and not 0 <= target < classes:
        raise InputError(f"target {target} is out of range for {classes} classes (valid: 0..{classes - 1})")
    items, array = list_items(data, spec.name)
    if array is not None:
        sample = [d if isinstance(d, int) else None for d in spec.shape[1:]]
        if array.ndim != len(spec.shape) or any(
            d is not None and d != s for d, s in zip(sample, array.shape[1:])
        ):
            raise InputError(
                f"{data}: samples of shape {list(array.shape[1:])} do not fit the model input {spec.shape}"
            )
    manifest = {
        "model": str(Path(model).resolve()),
        "data": str(Path(data).resolve()),
        "composite": composite,
        "params": json.loads(json.dumps(params, default=_jsonable)),
        "target": target,
        "resize": resize,
        "heatmaps": heatmaps,
        "items": len(items),
        "explained": explainer.compiled.explained,
    }
    for folder in ("items", "failed") + (("heatmaps",) if heatmaps else ()):
        (out / folder).mkdir(parents=True, exist_ok=True)
        _remove_stale(out / folder)
    _remove_stale(out)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        different = sorted(k for k in manifest if previous.get(k) != json.loads(json.dumps(manifest[k])))
        if different:
            raise InputError(
                f"{out} holds a different job ({', '.join(different)} differ); use another --out folder"
            )
    else:
        _write_json(manifest_path, manifest)

    done = {p.name[: -len(".npz")] for p in (out / "items").glob("*.npz")}
    failures = {}
    for path in sorted((out / "failed").glob("*.json")):
        record = json.loads(path.read_text())
        failures[record["item"]] = record
    pending = [item for item in items if item.name not in done and item.name not in failures]
    started = time.monotonic()
    stream = progress if not isinstance(progress, bool) else sys.stderr if progress else None
    bar = Progress(len(items), len(items) - len(pending), stream) if stream else None

    def summary(complete: bool) -> dict:
        summary = _summary(manifest, len(items), len(done), failures, time.monotonic() - started, complete)
        _write_json(out / SUMMARY, summary)
        return summary

    def fail(item: Item, reason: str) -> None:
        record = {"item": item.name, "source": item.source, "reason": reason}
        if item.index is not None:
            record["index"] = item.index
        _write_json(out / "failed" / f"{item.name}.json", record)
        failures[item.name] = record

    def load(item: Item) -> np.ndarray:
        if item.index is not None:
            return np.asarray(array[item.index], dtype=spec.dtype)[None]
        return load_image(item.source, spec.shape, resize=resize).astype(spec.dtype)

    def write(item: Item, relevance: np.ndarray, output: np.ndarray, used: np.ndarray) -> None:
        if heatmaps:
            from PIL import Image

            from onnxlrp import viz

            image = Image.fromarray(viz.heatmap(relevance, cmap), mode="RGB")
            _atomic_write(out / "heatmaps" / f"{item.name}.png", lambda tmp: image.save(tmp, format="PNG"))
        _save_npz(  # last: its presence marks the item as done
            out / "items" / f"{item.name}.npz",
            relevance=relevance,
            output=output,
            target=np.asarray(used, dtype=np.int64),
            source=np.asarray(item.source if item.index is None else f"{item.source}[{item.index}]"),
        )
        done.add(item.name)

    def explain(chunk: list[Item], xs: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        result = explainer.explain(np.concatenate(xs), target=target)
        relevance, output = np.asarray(result.relevance), np.asarray(result.output)
        return [(relevance[i], output[i], np.asarray(result.target)[i]) for i in range(len(chunk))]

    for chunk in _chunks(pending, batch_size):
        loaded, xs = [], []
        for item in chunk:
            try:
                xs.append(load(item))
                loaded.append(item)
            except (OnnxLrpError, OSError, ValueError) as error:
                fail(item, str(error))
        results: list = []
        if loaded:
            try:
                results = list(zip(loaded, explain(loaded, xs)))
            except Exception:  # noqa: BLE001 - find the item(s) at fault, one by one
                for item, x in zip(loaded, xs):
                    try:
                        results.append((item, explain([item], [x])[0]))
                    except Exception as error:  # noqa: BLE001 - recorded as the item's failure
                        fail(item, f"{type(error).__name__}: {error}")
        for item, values in results:
            write(item, *values)
        summary(complete=False)
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return summary(complete=True)


def _summary(manifest: dict, items: int, done: int, failures: dict, elapsed: float, complete: bool) -> dict:
    return {
        **{k: manifest[k] for k in ("model", "data", "composite", "target")},
        "items": items,
        "done": done,
        "failed": len(failures),
        "pending": items - done - len(failures),
        "complete": complete,
        "seconds_this_run": round(elapsed, 3),
        "failures": [failures[name] for name in sorted(failures)],
    }


def load_results(out: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Every finished item of the job in ``out``: name -> its arrays (relevance, output, target)."""
    results = {}
    for path in sorted((Path(out) / "items").glob("*.npz")):
        if _TMP in path.name:
            continue
        with np.load(path, allow_pickle=False) as archive:
            results[path.name[: -len(".npz")]] = {k: archive[k] for k in archive.files}
    return results


__all__ = ["Item", "Progress", "list_items", "load_results", "run"]
