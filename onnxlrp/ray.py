"""Ray Data integration: explain a dataset with one onnxlrp Explainer per actor.

::

    import ray
    from onnxlrp.ray import OnnxLrpExplainer

    ds = ray.data.from_numpy(images)                      # column "data", shape (N, C, H, W)
    ds = ds.map_batches(
        OnnxLrpExplainer,
        fn_constructor_kwargs={"model": "model.onnx", "composite": "epsilon-plus-flat"},
        concurrency=4,                                    # actors, each compiles the model once
        num_gpus=1,                                       # per actor; CUDA is used when it works
        batch_size=32,
        batch_format="numpy",
    )
    ds.write_parquet("relevance/")                         # or .take(), .iter_batches(), ...

Each actor builds one :class:`onnxlrp.Explainer`; every batch gets the columns ``relevance``
(shaped like the input column), ``target`` (the explained class) and, with ``output_column``, the
explained output. :func:`explain_dataset` is the same call in one line.

Ray is an optional dependency (``pip install "onnxlrp[ray]"``); nothing else in onnxlrp imports it,
and this module only needs it in :func:`explain_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxlrp.errors import InputError

if TYPE_CHECKING:
    from onnxlrp.runtime import Provider


class OnnxLrpExplainer:
    """A callable class for ``Dataset.map_batches``: explains the ``input_column`` of each batch.

    ``model``, ``composite``, ``providers``, ``threads`` and rule ``params`` go to
    :class:`onnxlrp.Explainer`. ``target``: an int (every row), None (each row's top-1) or the name
    of a column holding each row's class. The results go to ``relevance_column`` and
    ``target_column`` (and ``output_column`` if given); the input columns are kept unless
    ``keep_input`` is False.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        composite: str = "epsilon-plus-flat",
        *,
        input_column: str = "data",
        target: int | str | None = None,
        relevance_column: str = "relevance",
        target_column: str = "target",
        output_column: str | None = None,
        keep_input: bool = True,
        providers: Sequence[Provider] | None = None,
        threads: int | None = None,
        **params: Any,
    ):
        from onnxlrp.runtime import Explainer

        self.explainer = Explainer(model, composite=composite, providers=providers, threads=threads, **params)
        if len(self.explainer.inputs) != 1:
            raise InputError(f"OnnxLrpExplainer explains one-input models; {model} has several inputs")
        self.dtype = self.explainer.inputs[0].dtype
        self.input_column = input_column
        self.target = target
        self.relevance_column = relevance_column
        self.target_column = target_column
        self.output_column = output_column
        self.keep_input = keep_input

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.input_column not in batch:
            raise InputError(
                f"no column {self.input_column!r} in the batch (columns: {', '.join(batch)}); "
                "set input_column="
            )
        column = batch[self.input_column]
        if column.dtype == object:  # a column of per-row arrays
            column = np.stack([np.asarray(row) for row in column])
        x = np.ascontiguousarray(column, dtype=self.dtype)
        target = self.target
        if isinstance(target, str):
            target = np.asarray(batch[target]).astype(np.int64)
        result = self.explainer.explain(x, target=target)
        out = dict(batch) if self.keep_input else {k: v for k, v in batch.items() if k != self.input_column}
        out[self.relevance_column] = np.asarray(result.relevance)
        out[self.target_column] = np.asarray(result.target)
        if self.output_column:
            out[self.output_column] = np.asarray(result.output)
        return out


def explain_dataset(
    dataset,
    model: str | os.PathLike,
    composite: str = "epsilon-plus-flat",
    *,
    concurrency: int = 1,
    num_gpus: float | None = None,
    batch_size: int | None = 32,
    **kwargs: Any,
):
    """``dataset.map_batches(OnnxLrpExplainer, ...)``: the dataset with relevance and target columns.

    ``kwargs`` go to :class:`OnnxLrpExplainer` (input_column, target, rule parameters, ...).
    """
    import ray.data  # noqa: F401  (a clear ImportError when the extra is not installed)

    options: dict[str, Any] = {"concurrency": concurrency, "batch_size": batch_size, "batch_format": "numpy"}
    if num_gpus:
        options["num_gpus"] = num_gpus
    return dataset.map_batches(
        OnnxLrpExplainer,
        fn_constructor_kwargs={"model": os.fspath(model), "composite": composite, **kwargs},
        **options,
    )


__all__ = ["OnnxLrpExplainer", "explain_dataset"]
