"""Tiny transformers built from configs with random seeded weights (no hub downloads).

Every builder returns a ``transformers`` model in eval mode, float32, with eager attention.
``export`` writes it to ONNX with ``torch.onnx.export(dynamo=False, opset_version=17)``, dynamic
batch and sequence axes, taking either ``inputs_embeds`` (float) or ``input_ids`` (int64), plus an
int64 ``attention_mask`` for the text models. ``example`` gives a fixed batch of inputs (the second
sample is padded: its mask ends in zeros).

Shared by ``tests/test_transformers.py`` and ``tests/lxt_reference.py`` (the LXT reference, which
runs in its own process because LXT's patches change the transformers classes for good).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

MODELS = ("bert", "vit", "gpt2", "llama")
TEXT_MODELS = ("bert", "gpt2", "llama")
VOCAB = 50
SEQ = 7
BATCH = 2
IMAGE = 8


def _config(name: str, attention: str = "eager"):
    import transformers as tf

    common = {"attn_implementation": attention}
    if name == "bert":
        return tf.BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
    if name == "vit":
        return tf.ViTConfig(
            image_size=IMAGE,
            patch_size=4,
            num_channels=3,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
    if name == "gpt2":
        return tf.GPT2Config(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=16,
            n_layer=2,
            n_head=2,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if name == "llama":
        return tf.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=4,
            max_position_embeddings=32,
            tie_word_embeddings=False,
            **common,
        )
    raise KeyError(name)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights, larger than the default init so that the outputs are far from 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lowered = name.lower()
            if "norm" in lowered or ".ln_" in lowered or lowered.startswith("ln_"):
                init = (1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=gen)
            elif p.ndim >= 2:
                fan_in = p.shape[1] if "embed" not in lowered and "wte" not in lowered else 1
                if p.ndim > 2:
                    fan_in = int(np.prod(p.shape[1:]))
                init = torch.randn(p.shape, generator=gen) / math.sqrt(max(fan_in, 1))
            else:
                init = 0.3 * torch.randn(p.shape, generator=gen)
            p.copy_(init)


def build(name: str, seed: int = 0, attention: str = "eager") -> torch.nn.Module:
    """The tiny model ``name`` (one of ``MODELS``), seeded, in eval mode; ``attention`` is the
    attention implementation ("eager" or "sdpa", same weights)."""
    from transformers.models.bert import modeling_bert
    from transformers.models.gpt2 import modeling_gpt2
    from transformers.models.llama import modeling_llama
    from transformers.models.vit import modeling_vit

    config = _config(name, attention)
    cls = {  # looked up in the modules at call time: LXT's BERT patch replaces the module's classes
        "bert": modeling_bert.BertForSequenceClassification,
        "vit": modeling_vit.ViTForImageClassification,
        "gpt2": modeling_gpt2.GPT2LMHeadModel,
        "llama": modeling_llama.LlamaForCausalLM,
    }[name]
    torch.manual_seed(seed)
    model = cls(config)
    _randomize(model, seed)
    return model.eval()


def embedding_layer(model: torch.nn.Module) -> torch.nn.Embedding:
    return model.get_input_embeddings()


def example(name: str, seed: int = 1) -> dict[str, np.ndarray]:
    """A fixed batch: ``input_ids`` and ``attention_mask`` (text) or ``pixel_values`` (ViT)."""
    rng = np.random.default_rng(seed)
    if name == "vit":
        return {"pixel_values": rng.standard_normal((BATCH, 3, IMAGE, IMAGE)).astype(np.float32)}
    ids = rng.integers(1, VOCAB, size=(BATCH, SEQ)).astype(np.int64)
    mask = np.ones((BATCH, SEQ), dtype=np.int64)
    mask[1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


class _Wrapper(torch.nn.Module):
    """Calls the model with named inputs and returns the logits only."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *args):
        kwargs = dict(zip(self.names, args))
        if type(self.model).__name__.startswith(("GPT2", "Llama")):
            kwargs["use_cache"] = False
        return self.model(**kwargs, return_dict=True).logits


def input_names(name: str, kind: str) -> list[str]:
    """The ONNX input names for input kind ``"ids"`` or ``"embeds"``."""
    if name == "vit":
        return ["pixel_values"]
    return ["input_ids" if kind == "ids" else "inputs_embeds", "attention_mask"]


def inputs_for(model: torch.nn.Module, name: str, kind: str, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The example batch as torch tensors for ``kind`` (embeds: looked up with the model's table)."""
    feeds = {k: torch.from_numpy(v) for k, v in example(name).items()}
    if name == "vit":
        return {"pixel_values": feeds["pixel_values"].to(dtype)}
    if kind == "embeds":
        with torch.no_grad():
            feeds["inputs_embeds"] = embedding_layer(model)(feeds.pop("input_ids")).to(dtype)
        feeds = {"inputs_embeds": feeds["inputs_embeds"], "attention_mask": feeds["attention_mask"]}
    return feeds


EXTRA_INPUTS = {
    "token_type_ids": lambda ids: torch.zeros_like(ids),
    "position_ids": lambda ids: torch.arange(ids.shape[1]).expand(ids.shape[0], -1).contiguous(),
}


def export(
    model: torch.nn.Module, name: str, kind: str, path: str | Path, extra: tuple[str, ...] = ()
) -> Path:
    """Export ``model`` to ONNX at ``path`` (opset 17, TorchScript exporter, dynamic batch/sequence).

    ``extra``: further id inputs, as Hugging Face exports often have (``token_type_ids`` zeros,
    ``position_ids`` 0, 1, ...; see ``EXTRA_INPUTS``)."""
    names = input_names(name, kind) + list(extra)
    feeds = inputs_for(model, name, kind)
    feeds.update({n: EXTRA_INPUTS[n](feeds["input_ids"]) for n in extra})
    axes = {}
    for n in names:
        axes[n] = {0: "batch"} if n == "pixel_values" else {0: "batch", 1: "sequence"}
    axes["logits"] = {0: "batch"} if name in ("bert", "vit") else {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Wrapper(model, names),
            tuple(feeds[n] for n in names),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
        )
    return Path(path)
