"""The Explainer: compiles once, then runs the compiled model with onnxruntime."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxlrp.compiler import (
    POSITION_INPUT,
    POSITION_OUTPUT,
    SEED_INPUT,
    TARGET_INPUT,
    TARGET_OUTPUT,
    CompiledModel,
    compile,
)
from onnxlrp.composites import Composite
from onnxlrp.errors import InputError
from onnxlrp.graph.load import ModelSource, is_large, save_model

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}
NO_TARGET = -2


@functools.cache
def cuda_works() -> bool:
    """Whether onnxruntime's CUDA provider loads here (checked once, on a one-node model)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [x],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CUDAExecutionProvider"])
        return "CUDAExecutionProvider" in session.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(2)


def default_providers() -> list[str]:
    """CUDA when its provider works here, then the CPU."""
    return (["CUDAExecutionProvider"] if cuda_works() else []) + ["CPUExecutionProvider"]


Provider = str | tuple[str, dict]  # a name, or (name, provider options), as onnxruntime takes them
# onnxruntime's CUDA provider runs float32 convolutions and GEMMs in TF32 (10-bit mantissa) on
# Ampere and later GPUs unless told not to: about 5e-4 relative per product, not float32 noise
CUDA_FLOAT32 = {"use_tf32": "0"}


def provider_name(provider: Provider) -> str:
    """The provider's name, whether given alone or with options."""
    return provider if isinstance(provider, str) else provider[0]


def exact_float32(providers: Sequence[Provider]) -> list[Provider]:
    """``providers`` with the CUDA provider, where named without options, set to real float32
    arithmetic (``CUDA_FLOAT32``); a ``(name, options)`` pair is kept as given."""
    return [
        ("CUDAExecutionProvider", dict(CUDA_FLOAT32)) if p == "CUDAExecutionProvider" else p
        for p in providers
    ]


def make_session(
    compiled: CompiledModel,
    providers: Sequence[Provider],
    threads: int | None = None,
    options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session for the compiled model: with ``options`` as given, else with all
    graph optimizations on; ``threads`` sets the intra-op thread count either way. CUDA computes
    in real float32 unless its options say otherwise (``exact_float32``)."""
    if options is None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    providers = exact_float32(providers)
    if is_large(compiled.model):  # over protobuf's 2 GB: through a file with external data
        with tempfile.TemporaryDirectory(prefix="onnxlrp-") as folder:
            path = save_model(compiled.model, Path(folder) / "compiled.onnx")
            return ort.InferenceSession(str(path), options, providers=providers)
    return ort.InferenceSession(compiled.model.SerializeToString(), options, providers=providers)


@dataclass
class Result:
    """What ``Explainer.explain`` returns.

    ``relevance``: an array shaped like the input; a dict by input name when the inputs were
    given as a dict or the model has several explained inputs (token-id inputs such as
    ``input_ids`` get one value per token, the relevance of their embeddings summed over the
    hidden size; masks and other integer inputs get none);
    ``output``: the explained output (the logits when a final Softmax was stripped);
    ``target``: the class index explained for each sample (-2 where a seed was given);
    ``position``: for (batch, position, class) outputs such as language-model logits, the
    position explained for each sample (None otherwise);
    ``layers``: the relevance of every intermediate tensor when the Explainer has ``layers=True``.
    """

    relevance: np.ndarray | dict[str, np.ndarray]
    output: np.ndarray
    target: np.ndarray
    explained: str
    note: str | None = None
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    position: np.ndarray | None = None


_Request = tuple[list[str], np.ndarray | None, int | None]  # output names, positions, length


@dataclass(frozen=True)
class _OnDevice:
    """An input given as an ``ort.OrtValue`` (possibly in GPU memory), seen through the array
    attributes that the input checks read; its data stays where it is."""

    value: ort.OrtValue

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_TYPES.get(self.value.data_type(), object))


@dataclass
class _InputSpec:
    name: str
    shape: list
    dtype: type


class Explainer:
    """Compile ``model`` with ``composite`` once; ``explain`` runs forward and LRP in one call.

    ``providers`` overrides onnxruntime's execution providers (default: CUDA if it works, else
    CPU): names, or ``(name, options)`` pairs as onnxruntime takes them. CUDA named alone runs
    in real float32 (TF32 off); ``("CUDAExecutionProvider", {"use_tf32": "1"})`` trades that
    for speed. ``providers`` on the instance tells which are in use. ``threads`` sets onnxruntime's
    intra-op thread count. ``precision="float16"`` computes in float16 (for GPUs; inputs and
    relevance stay float32). ``session_options`` (an ``onnxruntime.SessionOptions``) replaces the
    default options (all graph optimizations on), for settings such as profiling, the memory
    arena or the execution mode. Other keyword arguments are rule parameters of the composite.
    """

    def __init__(
        self,
        model: ModelSource,
        composite: str | Composite = "epsilon-plus-flat",
        *,
        output: str | None = None,
        layers: bool = False,
        providers: Sequence[Provider] | None = None,
        threads: int | None = None,
        precision: str = "float32",
        session_options: ort.SessionOptions | None = None,
        **params,
    ):
        providers = list(providers or default_providers())
        self.compiled = compile(
            model,
            composite,
            output=output,
            layers=layers,
            precision=precision,
            cpu=provider_name(providers[0]) == "CPUExecutionProvider",
            **params,
        )
        self.session = make_session(self.compiled, providers, threads, session_options)
        self.providers: list[str] = self.session.get_providers()
        extra = {TARGET_INPUT, SEED_INPUT, POSITION_INPUT}
        self.inputs = [
            _InputSpec(i.name, list(i.shape), _NUMPY_TYPES.get(i.type, np.float32))
            for i in self.session.get_inputs()
            if i.name not in extra
        ]
        explained = next(o for o in self.session.get_outputs() if o.name == self.compiled.explained)
        self.output_shape = list(explained.shape)
        self.output_dtype = _NUMPY_TYPES.get(explained.type, np.float32)

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def input_shape(self) -> list:
        return self.inputs[0].shape

    @property
    def num_classes(self) -> int | None:
        axis = -1 if self.compiled.positions else 1  # (batch, position, class): the last axis
        dim = self.output_shape[axis] if len(self.output_shape) > 1 else None
        return dim if isinstance(dim, int) else None

    def _feeds(self, inputs) -> dict[str, np.ndarray | _OnDevice]:
        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                names = ", ".join(i.name for i in self.inputs)
                raise InputError(
                    f"the model has {len(self.inputs)} inputs ({names}); pass a dict by input name"
                )
            inputs = {self.inputs[0].name: inputs}
        known = {i.name for i in self.inputs}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise InputError(
                f"unknown input(s) {', '.join(unknown)}; the model's inputs are: {', '.join(sorted(known))}"
            )
        feeds = {}
        batch = None
        for spec in self.inputs:
            if spec.name not in inputs:
                raise InputError(f"missing input {spec.name!r} (expected shape {spec.shape})")
            given = inputs[spec.name]
            array = _OnDevice(given) if isinstance(given, ort.OrtValue) else np.asarray(given)
            if array.dtype != spec.dtype:
                raise InputError(
                    f"input {spec.name!r}: expected dtype {np.dtype(spec.dtype).name}, got {array.dtype.name}"
                )
            if array.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.shape, array.shape)
            ):
                raise InputError(f"input {spec.name!r}: expected shape {spec.shape}, got {list(array.shape)}")
            if batch is not None and array.shape[0] != batch:
                raise InputError(f"input {spec.name!r}: batch size {array.shape[0]} differs from {batch}")
            batch = array.shape[0]
            feeds[spec.name] = array
        self._check_dims(feeds)
        self._check_tokens(feeds)
        return feeds

    def _check_dims(self, feeds: dict[str, np.ndarray | _OnDevice]) -> None:
        """Inputs that share a named dimension (``sequence``) must agree on its size."""
        seen: dict[str, tuple[str, int]] = {}
        for spec in self.inputs:
            for axis, (dim, size) in enumerate(zip(spec.shape, feeds[spec.name].shape)):
                if not isinstance(dim, str) or not dim:
                    continue
                if dim in seen and seen[dim][1] != size:
                    other, expected = seen[dim]
                    raise InputError(
                        f"input {spec.name!r}: axis {axis} ({dim!r}) has size {size}, but {other!r} has "
                        f"{expected} (expected shape {spec.shape}, got {list(feeds[spec.name].shape)})"
                    )
                seen.setdefault(dim, (spec.name, size))

    def _check_tokens(self, feeds: dict[str, np.ndarray | _OnDevice]) -> None:
        """Token ids must index the embedding table: 0 <= id < vocabulary size."""
        for name, size in self.compiled.token_inputs.items():
            ids = feeds[name].value.numpy() if isinstance(feeds[name], _OnDevice) else feeds[name]
            bad = ids[(ids < 0) | (ids >= size)]
            if bad.size:
                raise InputError(
                    f"input {name!r}: token id {int(bad[0])} is out of the vocabulary range 0..{size - 1}"
                )

    def _positions(self, position, batch: int, length: int) -> np.ndarray:
        if not self.compiled.positions:
            if position is not None:
                raise InputError(
                    f"position= applies to (batch, position, class) outputs; {self.compiled.explained!r} "
                    f"has shape {self.output_shape}"
                )
            return None
        array = np.asarray(-1 if position is None else position)
        if array.dtype.kind not in "iu" or array.ndim > 1:
            raise InputError(f"position must be an int, a sequence of ints or None, got {position!r}")
        array = (
            np.broadcast_to(array.astype(np.int64), (batch,)) if array.ndim == 0 else array.astype(np.int64)
        )
        if array.shape != (batch,):
            raise InputError(f"position has {array.shape[0]} entries for a batch of {batch}")
        bad = array[(array < -length) | (array >= length)]
        if bad.size:
            raise InputError(f"position {int(bad[0])} is out of range for a sequence of {length}")
        return np.ascontiguousarray(array)

    def _targets(self, target, batch: int) -> np.ndarray:
        if target is None:
            return np.full(batch, -1, dtype=np.int64)
        array = np.asarray(target)
        if array.dtype.kind not in "iu" or array.ndim > 1:
            raise InputError(f"target must be an int, a sequence of ints or None, got {target!r}")
        array = (
            np.broadcast_to(array.astype(np.int64), (batch,)) if array.ndim == 0 else array.astype(np.int64)
        )
        if array.shape != (batch,):
            raise InputError(f"target has {array.shape[0]} entries for a batch of {batch}")
        classes = self.num_classes
        bad = array[(array < 0) | (classes is not None and array >= classes)]
        if bad.size:
            raise InputError(
                f"target {int(bad[0])} is out of range for output {self.compiled.explained!r} "
                f"with {classes} classes (valid: 0..{classes - 1 if classes else '?'})"
            )
        return np.ascontiguousarray(array)

    def _seed(self, seed, batch: int) -> np.ndarray:
        shape = [batch] + [d if isinstance(d, int) else None for d in self.output_shape[1:]]
        if seed is None and self.compiled.positions:  # broadcasts over the positions
            return np.zeros([batch, 1, shape[2]], dtype=self.output_dtype)
        if seed is None:
            if None in shape:
                raise InputError(
                    f"output {self.compiled.explained!r} has a dynamic shape {self.output_shape}; give seed="
                )
            return np.zeros(shape, dtype=self.output_dtype)
        seed = np.asarray(seed, dtype=self.output_dtype)
        if seed.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, seed.shape)):
            raise InputError(
                f"seed: expected shape {shape} (the explained output {self.compiled.explained!r}), "
                f"got {list(seed.shape)}"
            )
        return seed

    def _length(self, feeds: dict[str, np.ndarray | _OnDevice]) -> int | None:
        """The run-time size of the explained output's position axis, from an input sharing its name."""
        dim = self.output_shape[1] if len(self.output_shape) > 1 else None
        for spec in self.inputs:
            if isinstance(dim, str) and dim in spec.shape:
                return feeds[spec.name].shape[spec.shape.index(dim)]
        return None

    def explain(self, inputs, target=None, seed=None, position=None) -> Result:
        """Explain ``inputs`` (an array, or a dict by input name) for ``target``.

        ``inputs`` holds every model input; integer inputs (token ids, attention masks) are passed
        through, never explained. ``target``: an int (every sample), a sequence of ints (one per
        sample) or None (each sample's top-1). ``seed``: the relevance at the explained output,
        instead of ``one_hot(target) * output``. ``position``: for (batch, position, class)
        outputs such as language-model logits, the position whose class ``target`` is explained
        (an int or one per sample, negative from the end; default -1, the last: the next token).
        """
        feeds = self._feeds(inputs)
        names, positions, length = self._request(feeds, target, seed, position)
        feeds = {name: v.value if isinstance(v, _OnDevice) else v for name, v in feeds.items()}
        values = dict(zip(names, self.session.run(names, feeds)))
        if positions is not None and length is None:  # checked now that the output's length is known
            self._positions(position, len(positions), values[self.compiled.explained].shape[1])
        relevance = {name: values[out] for name, out in self.compiled.relevance_outputs.items()}
        as_dict = isinstance(inputs, dict) or len(relevance) != 1
        return Result(
            relevance=relevance if as_dict else next(iter(relevance.values())),
            output=values[self.compiled.explained],
            target=values[TARGET_OUTPUT],
            explained=self.compiled.explained,
            note=self.compiled.explained_note,
            layers={name: values[out] for name, out in self.compiled.layer_outputs.items()},
            position=values.get(POSITION_OUTPUT),
        )

    def explain_on_device(
        self, inputs, target=None, seed=None, position=None, device_id: int = 0
    ) -> dict[str, ort.OrtValue]:
        """``explain`` with onnxruntime's I/O binding, for inputs that live on the device.

        ``inputs`` are ``ort.OrtValue`` s (one, or a dict by input name), e.g.
        ``ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)``: they are read where they are, and the
        results stay on the same device (``device_id``), so a loop over a dataset copies nothing
        big between host and GPU. Returns OrtValues by output name: the explained output,
        ``lrp_target_used`` (and ``lrp_position_used``), ``relevance:<input>`` and, with
        ``layers=True``, every layer's; ``.numpy()`` copies one to the host. ``target``, ``seed``
        and ``position`` are as for ``explain`` (host arrays; they are small).
        """
        feeds = self._feeds(inputs)
        on_device = [v.value for v in feeds.values() if isinstance(v, _OnDevice)]
        if not on_device:
            raise InputError("explain_on_device takes onnxruntime OrtValues; use explain for numpy arrays")
        device = on_device[0].device_name().lower()
        names, positions, length = self._request(feeds, target, seed, position)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, _OnDevice):
                binding.bind_ortvalue_input(name, value.value)
            else:  # the target, seed and position arrays, and inputs given on the host
                array = np.ascontiguousarray(value)
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, device_id))
        for name in names:
            binding.bind_output(name, device, device_id)
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        outputs = dict(zip(names, binding.get_outputs()))
        if positions is not None and length is None:  # as in explain
            self._positions(position, len(positions), outputs[self.compiled.explained].shape()[1])
        return outputs

    def _request(self, feeds: dict, target, seed, position) -> _Request:
        """Add the target, seed (and position) inputs to ``feeds``; return the output names to
        fetch, the positions (None for outputs without) and the sequence length if known."""
        batch = next(iter(feeds.values())).shape[0]
        if seed is not None and target is not None:
            raise InputError("give either target or seed, not both")
        length = self._length(feeds)
        positions = self._positions(position, batch, length if length is not None else 2**62)
        feeds[TARGET_INPUT] = (
            np.full(batch, NO_TARGET, dtype=np.int64) if seed is not None else self._targets(target, batch)
        )
        feeds[SEED_INPUT] = self._seed(seed, batch)
        names = [self.compiled.explained, TARGET_OUTPUT]
        if positions is not None:
            feeds[POSITION_INPUT] = positions
            names.append(POSITION_OUTPUT)
        names += [*self.compiled.relevance_outputs.values(), *self.compiled.layer_outputs.values()]
        return names, positions, length

    def explain_region(self, inputs, channel: int, mask=None, axis: int = 1) -> Result:
        """Explain "these pixels of this channel" of a per-pixel output (segmentation, text or
        face-detection maps): the seed is the output on channel ``channel`` (along ``axis``: 1 for
        NCHW outputs, -1 for NHWC ones) times ``mask``, zero elsewhere (see ``region_seed``).

        Runs the model twice: forward only, to read the output, then forward and LRP with the seed.
        Pick the per-pixel output with ``Explainer(model, output=NAME)``.
        """
        if self.compiled.positions:
            raise InputError("explain_region is for per-pixel outputs; use position= for sequence outputs")
        feeds = self._feeds(inputs)
        batch = next(iter(feeds.values())).shape[0]
        feeds[TARGET_INPUT] = np.full(batch, NO_TARGET, dtype=np.int64)
        dims = [d if isinstance(d, int) else 1 for d in self.output_shape[1:]]
        feeds[SEED_INPUT] = np.zeros([batch, *dims], dtype=self.output_dtype)
        (output,) = self.session.run([self.compiled.explained], feeds)
        return self.explain(inputs, seed=region_seed(output, channel, mask, axis))


def region_seed(output: np.ndarray, channel: int, mask=None, axis: int = 1) -> np.ndarray:
    """The seed ``mask * output`` on channel ``channel`` along ``axis``, zero on the other channels.

    ``mask`` (None: every pixel) is shaped like ``output`` without its channel axis, with or
    without the batch axis (e.g. ``(H, W)`` for an ``(N, C, H, W)`` output); 0/1 selects pixels,
    other values weight them.
    """
    output = np.asarray(output)
    axis = axis % output.ndim
    if not 0 <= channel < output.shape[axis]:
        raise InputError(
            f"channel {channel} is out of range for {output.shape[axis]} channels on axis {axis}"
        )
    picked = np.take(output, channel, axis=axis)
    if mask is not None:
        mask = np.asarray(mask, dtype=output.dtype)
        if mask.shape not in (picked.shape, picked.shape[1:]):
            raise InputError(
                f"mask: expected shape {list(picked.shape[1:])} or {list(picked.shape)} "
                f"(the output without its channel axis), got {list(mask.shape)}"
            )
        picked = picked * mask
    seed = np.zeros_like(output)
    index = [slice(None)] * output.ndim
    index[axis] = channel
    seed[tuple(index)] = picked
    return seed
