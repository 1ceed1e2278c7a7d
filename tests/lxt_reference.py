"""LXT 2.1's relevance for the tiny transformers of ``transformer_zoo``, in float64.

Run as a script, in its own process: LXT patches the transformers classes (and ``torch.nn.LayerNorm``)
for good, so a process that has patched them can neither export to ONNX nor switch between AttnLRP
and CP-LRP::

    python tests/lxt_reference.py --composite attnlrp --weights DIR --out refs.npz [--models bert,gpt2]

``DIR`` holds ``<model>.pt`` state dicts written by the test (so the weights are the exported
ones). For every model the script patches with LXT's efficient mode, converts to float64, runs the
example batch (``inputs_embeds`` looked up from the model's own table, or ``pixel_values``),
backpropagates the target logit (each sample's top-1; language models: at the last position) and
stores ``inputs * grad``: LXT's relevance.

Patch maps: GPT-2 and LLaMA use LXT's own (``lxt.efficient.models.{gpt2,llama}.{attnLRP,cp_LRP}``);
BERT uses LXT's ``attnLRP`` (LXT's copy of ``modeling_bert``) and, for CP-LRP, the same with the
self-attention's query and key detached and no uniform rule at ``P V``; HF's ViT, which LXT has no
map for, is patched with LXT's building blocks: ``layer_norm_forward``, the identity rule on the
MLP's GELU and ``patch_attention`` / ``patch_cp_attention`` on ``modeling_vit``.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import math
import sys
import types
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _shim_torchvision() -> None:
    """LXT imports torchvision's ResNet blocks (through zennit) and its vision transformer; the
    CPU torch build here has no torchvision, and neither is used."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception:
        pass

    def stub(name):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return module

    tv, models = stub("torchvision"), stub("torchvision.models")
    resnet, vit = stub("torchvision.models.resnet"), stub("torchvision.models.vision_transformer")

    class Block(torch.nn.Module):  # never instantiated
        pass

    resnet.Bottleneck = resnet.BasicBlock = Block
    vit.nn = torch.nn
    tv.models, models.resnet, models.vision_transformer = models, resnet, vit
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.models": models,
            "torchvision.models.resnet": resnet,
            "torchvision.models.vision_transformer": vit,
        }
    )


def _bert_cp_self_attention(
    self,
    hidden_states,
    attention_mask=None,
    head_mask=None,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
    past_key_value=None,
    output_attentions=False,
):
    """LXT's BertSelfAttention (eager, absolute positions) in CP-LRP form: Q and K detached."""
    query = self.transpose_for_scores(self.query(hidden_states)).detach()
    key = self.transpose_for_scores(self.key(hidden_states)).detach()
    value = self.transpose_for_scores(self.value(hidden_states))
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.nn.functional.softmax(scores, dim=-1)
    context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
    context = context.view(context.size()[:-2] + (self.all_head_size,))
    return (context, probs) if output_attentions else (context,)


def patch(name: str, composite: str) -> None:
    """Apply LXT's patches for model ``name`` and ``composite`` ("attnlrp" or "cp-lrp")."""
    from lxt.efficient import monkey_patch
    from lxt.efficient.patches import (
        dropout_forward,
        layer_norm_forward,
        patch_attention,
        patch_cp_attention,
        patch_method,
    )
    from lxt.efficient.rules import identity_rule_implicit

    cp = composite == "cp-lrp"
    if name == "bert":
        import lxt.efficient.models.bert as lxt_bert

        monkey_patch(lxt_bert.modeling_bert, lxt_bert.attnLRP)
        if cp:
            lxt_bert.modeling_bert.BertSelfAttention.forward = _bert_cp_self_attention
    elif name == "gpt2":
        import lxt.efficient.models.gpt2 as lxt_gpt2

        monkey_patch(lxt_gpt2.modeling_gpt2, lxt_gpt2.cp_LRP if cp else lxt_gpt2.attnLRP)
    elif name == "llama":
        import lxt.efficient.models.llama as lxt_llama

        monkey_patch(lxt_llama.modeling_llama, lxt_llama.cp_LRP if cp else lxt_llama.attnLRP)
    elif name == "vit":
        from transformers.models.vit import modeling_vit

        def intermediate_forward(self, hidden_states):
            return identity_rule_implicit(self.intermediate_act_fn, self.dense(hidden_states))

        monkey_patch(
            modeling_vit,
            {
                modeling_vit.ViTIntermediate: partial(patch_method, intermediate_forward),
                torch.nn.LayerNorm: partial(patch_method, layer_norm_forward),
                torch.nn.Dropout: partial(patch_method, dropout_forward),
                modeling_vit: patch_cp_attention if cp else patch_attention,
            },
        )
    else:
        raise KeyError(name)


def relevance(name: str, weights: Path) -> dict[str, np.ndarray]:
    """LXT's relevance for the example batch of model ``name`` (patched already)."""
    import transformer_zoo as zoo

    model = zoo.build(name)
    model.load_state_dict(torch.load(weights / f"{name}.pt", weights_only=True), strict=True)
    model = model.double().eval()
    feeds = zoo.inputs_for(model, name, "embeds", dtype=torch.float64)
    x = feeds["pixel_values" if name == "vit" else "inputs_embeds"].detach().requires_grad_(True)
    feeds = {**feeds, ("pixel_values" if name == "vit" else "inputs_embeds"): x}
    kwargs = {} if name in ("bert", "vit") else {"use_cache": False}
    logits = model(**feeds, **kwargs).logits
    last = logits if logits.ndim == 2 else logits[:, -1]
    target = last.argmax(-1)
    picked = last[torch.arange(last.shape[0]), target]
    picked.sum().backward()
    return {
        f"{name}/relevance": (x * x.grad).detach().numpy(),
        f"{name}/target": target.numpy(),
        f"{name}/logit": picked.detach().numpy(),
        f"{name}/logits": logits.detach().numpy(),
    }


def minilm_relevance(inputs: Path) -> dict[str, np.ndarray]:
    """LXT's relevance for two sentences through MiniLM (``tools/export_minilm.py``'s graph): each
    sentence's embedding is backpropagated with the other's (held constant) as its gradient, so
    ``inputs_embeds * grad`` sums (up to the biases' shares) to the dot product."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import export_minilm

    model = export_minilm.load(torch.float64)
    data = np.load(inputs)
    embeddings, feeds = [], []
    for side in ("a", "b"):
        ids = torch.from_numpy(data[f"ids_{side}"])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            embeds = model.bert.embeddings.word_embeddings(ids)
        feeds.append((embeds, mask))
    for embeds, mask in feeds:
        with torch.no_grad():
            embeddings.append(_minilm_forward(model, embeds, mask))
    results = {}
    for i, (side, (embeds, mask)) in enumerate(zip(("a", "b"), feeds)):
        x = embeds.clone().requires_grad_(True)
        out = _minilm_forward(model, x, mask)
        out.backward(embeddings[1 - i])
        results[f"minilm/relevance_{side}"] = (x * x.grad).sum(-1).detach().numpy()
        results[f"minilm/embedding_{side}"] = embeddings[i].numpy()
    return results


def _minilm_forward(model, embeds, mask):
    hidden = model.bert(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / torch.clamp(weights.sum(1), min=1e-9)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--composite", choices=("attnlrp", "cp-lrp"), required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="bert,vit,gpt2,llama")
    parser.add_argument("--minilm", type=Path, help="npz with ids_a, ids_b: also explain MiniLM's similarity")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    _shim_torchvision()
    torch.set_num_threads(1)
    results = {}
    names = [n for n in args.models.split(",") if n]
    for name in names + (["bert"] if args.minilm and "bert" not in names else []):
        patch(name, args.composite)
    for name in names:
        results.update(relevance(name, args.weights))
    if args.minilm:
        results.update(minilm_relevance(args.minilm))
    np.savez(args.out, **results)


if __name__ == "__main__":
    main()
