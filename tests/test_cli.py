"""The ``onnxlrp`` command line, on the shipped digits model (models/, see tools/make_digits_model.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxlrp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
MODEL = os.path.join(MODELS, "digits_cnn.onnx")
SAMPLES = os.path.join(MODELS, "digits_samples.npy")
LABELS = os.path.join(MODELS, "digits_labels.npy")
DIGIT_3 = os.path.join(MODELS, "digit_3.png")

SAMPLE_LINE = re.compile(
    r"sample (\d+): top-1 (\d+) \(logit (\S+)\), target (\d+) \(logit (\S+)\), relevance sum (\S+)"
)


def sample_lines(text: str) -> list[tuple[int, int, float, int, float, float]]:
    """(index, top-1, top-1 logit, target, target logit, relevance sum) per printed sample."""
    return [
        (int(i), int(top), float(top_logit), int(t), float(t_logit), float(rsum))
        for i, top, top_logit, t, t_logit, rsum in SAMPLE_LINE.findall(text)
    ]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def bias_free_model(tmp_path_factory) -> str:
    """The digits model with every bias and the BatchNorm shift set to zero: a bias-free ReLU
    network, for which LRP-epsilon conserves the target logit exactly (up to epsilon)."""
    model = onnx.load(MODEL)
    inits = {init.name: init for init in model.graph.initializer}
    zero: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2:
            zero.append(node.input[2])
        elif node.op_type == "BatchNormalization":
            zero += [node.input[2], node.input[3]]  # B (shift) and the running mean
    for name in zero:
        array = onnx.numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(array), name))
    path = str(tmp_path_factory.mktemp("cli") / "digits_bias_free.onnx")
    onnx.save(model, path)
    return path


# ------------------------------------------------------------------------------------------
# shipped files


def test_shipped_files_are_consistent():
    import onnxruntime as ort

    x, y = np.load(SAMPLES), np.load(LABELS)
    assert x.dtype == np.float32 and x.shape == (16, 1, 8, 8) and x.min() >= 0.0 and x.max() <= 1.0
    assert y.dtype == np.int64 and y.shape == (16,)
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": x})[0]
    assert logits.shape == (16, 10)
    assert (logits.argmax(1) == y).mean() >= 0.9
    ops = {node.op_type for node in onnx.load(MODEL).graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "GlobalAveragePool", "Gemm"} <= ops
    with Image.open(DIGIT_3) as image:
        assert image.size == (8, 8) and image.mode == "L"
        pixels = np.asarray(image, dtype=np.float32)[None, None] / 255.0
    assert session.run(None, {"image": pixels})[0].argmax() == 3


# ------------------------------------------------------------------------------------------
# compile


def test_compile_writes_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "compiled.onnx"
    code, stdout, stderr = run(
        capsys, "compile", MODEL, "-o", str(out), "--composite", "epsilon", "--epsilon", "0.01"
    )
    assert code == 0, stderr
    assert "compiled" in stdout and str(out) in stdout and len(stdout.strip().splitlines()) == 1
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()][0] == "image"
    assert len(session.get_outputs()) >= 2  # at least the logits and the relevance


def test_compile_with_layers(tmp_path, capsys):
    plain, layers = tmp_path / "plain.onnx", tmp_path / "layers.onnx"
    assert run(capsys, "compile", MODEL, "-o", str(plain))[0] == 0
    assert run(capsys, "compile", MODEL, "-o", str(layers), "--layers")[0] == 0
    assert len(onnx.load(str(layers)).graph.output) > len(onnx.load(str(plain)).graph.output)


# ------------------------------------------------------------------------------------------
# explain


def test_explain_writes_heatmaps_and_relevance(tmp_path, capsys):
    heat, over, rel = tmp_path / "heat.png", tmp_path / "overlay.png", tmp_path / "rel.npy"
    code, stdout, stderr = run(
        capsys,
        "explain", MODEL, SAMPLES, "--composite", "epsilon",
        "--out", str(heat), "--overlay", str(over), "--save-relevance", str(rel), "--cmap", "coldnhot",
    )  # fmt: skip
    assert code == 0, stderr
    for path in (heat, over):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (256, 256)  # 8x8 upscaled by 32 (nearest neighbour)
    relevance = np.load(rel)
    assert relevance.shape == (16, 1, 8, 8)
    lines = sample_lines(stdout)
    assert [line[0] for line in lines] == list(range(16))
    labels = np.load(LABELS)
    assert np.mean([line[1] == label for line, label in zip(lines, labels, strict=True)]) >= 0.9
    for i, top, top_logit, target, target_logit, rsum in lines:
        assert target == top and target_logit == top_logit  # default target: the top-1 class
        assert rsum == pytest.approx(float(relevance[i].sum()), rel=1e-4, abs=1e-5)


def test_explain_relevance_sum_is_the_target_logit_for_epsilon(bias_free_model, capsys):
    """LRP-epsilon on a bias-free ReLU network conserves the target logit."""
    code, stdout, stderr = run(
        capsys, "explain", bias_free_model, SAMPLES, "--composite", "epsilon", "--target", "3"
    )
    assert code == 0, stderr
    lines = sample_lines(stdout)
    assert len(lines) == 16
    for _, _, _, target, target_logit, rsum in lines:
        assert target == 3
        assert rsum == pytest.approx(target_logit, rel=1e-3, abs=1e-4)


def test_explain_png_input_and_single_sample_npy(tmp_path, capsys):
    code, stdout, stderr = run(capsys, "explain", MODEL, DIGIT_3, "--out", str(tmp_path / "h.png"))
    assert code == 0, stderr
    (line,) = sample_lines(stdout)
    assert line[1] == 3
    # an upscaled RGB copy of the digit is read back as 1x1x8x8 too
    with Image.open(DIGIT_3) as image:
        image.convert("RGB").resize((64, 64), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    code, stdout, stderr = run(capsys, "explain", MODEL, str(tmp_path / "big.png"))
    assert code == 0, stderr
    assert sample_lines(stdout)[0][1] == 3
    # one sample without its batch axis
    np.save(tmp_path / "one.npy", np.load(SAMPLES)[5])
    code, stdout, stderr = run(capsys, "explain", MODEL, str(tmp_path / "one.npy"), "--target", "7")
    assert code == 0, stderr
    (line,) = sample_lines(stdout)
    assert line[3] == 7


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_explain_matches_zennit(precision, tmp_path, capsys):
    """The CLI's relevance for epsilon-plus-flat equals Zennit's on the same weights (in float16
    to tests/test_float16.py's tolerance, as onnxruntime's CPU provider computes it)."""
    torch = pytest.importorskip("torch")
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        from make_digits_model import build_model
    finally:
        sys.path.pop(0)
    net = build_model().eval()
    weights = {
        i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy())
        for i in onnx.load(MODEL).graph.initializer
    }
    missing, unexpected = net.load_state_dict(weights, strict=False)
    assert not unexpected and all(name.endswith("num_batches_tracked") for name in missing)

    rel_path = tmp_path / "rel.npy"
    code, stdout, stderr = run(
        capsys, "explain", MODEL, SAMPLES, "--save-relevance", str(rel_path), "--precision", precision
    )
    assert code == 0, stderr
    assert f"composite epsilon-plus-flat, {precision}, providers" in stdout
    x = torch.from_numpy(np.load(SAMPLES))
    with Gradient(net, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        out = net(x)
        # onnxlrp seeds the relevance with one_hot(target) * output (Zennit's Gradient: as given)
        _, expected = attributor(x, torch.eye(10)[out.argmax(1)] * out.detach())
    expected = expected.detach().numpy()
    if precision == "float16":
        error = np.linalg.norm(np.load(rel_path) - expected) / np.linalg.norm(expected)
        assert error <= 2e-2
    else:
        np.testing.assert_allclose(np.load(rel_path), expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())


def test_explain_rejects_wrong_input_shape(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), dtype=np.float32))
    code, _, stderr = run(capsys, "explain", MODEL, str(tmp_path / "bad.npy"))
    assert code == 2
    assert stderr.startswith("onnxlrp: error:") and "shape" in stderr


# ------------------------------------------------------------------------------------------
# info


def test_info_lists_ops_and_rules(capsys):
    code, stdout, stderr = run(capsys, "info", MODEL, "--composite", "epsilon-plus-flat")
    assert code == 0, stderr
    assert "image" in stdout and "logits" in stdout
    rows: dict[str, str] = {}  # op type -> its table rows (one per rule), lower case
    for line in stdout.splitlines():
        if line.strip():
            rows[line.split()[0]] = rows.get(line.split()[0], "") + line.lower() + "\n"
    for op in ("Conv", "Relu", "MaxPool", "GlobalAveragePool", "Gemm"):
        assert op in rows, stdout
    assert "flat" in rows["Conv"] and "zplus" in rows["Conv"]  # first convolution: flat, then z+
    assert "pass" in rows["Relu"]
    assert "epsilon" in rows["Gemm"]
    assert "all nodes supported" in stdout


def test_info_lists_unsupported_nodes(tmp_path, capsys):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Sin", ["x"], ["s"], name="the_sine"),
            helper.make_node("Gemm", ["s", "W"], ["y"], transB=1, name="fc"),
        ],
        "sine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [onnx.numpy_helper.from_array(np.ones((3, 4), np.float32), "W")],
    )
    path = str(tmp_path / "sine.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, stdout, stderr = run(capsys, "info", path)
    assert code == 0, stderr
    assert "x: float [?, 4]" in stdout
    assert "unsupported nodes (1):" in stdout and "the_sine (Sin)" in stdout
    assert re.search(r"^Sin\s+1\s+.*\bno$", stdout, re.MULTILINE), stdout
    # explaining it fails with the library's message and exit status 2
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    code, _, stderr = run(capsys, "explain", path, str(tmp_path / "x.npy"))
    assert code == 2 and stderr.startswith("onnxlrp: error:") and "the_sine" in stderr


# ------------------------------------------------------------------------------------------
# errors and the module entry point


@pytest.mark.parametrize(
    "argv",
    [
        ["info", "no/such/model.onnx"],
        ["compile", "no/such/model.onnx", "-o", "out.onnx"],
        ["explain", "no/such/model.onnx", SAMPLES],
        ["explain", MODEL, "no/such/input.npy"],
    ],
)
def test_missing_file_is_a_clear_error(argv, capsys):
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2
    assert stderr.startswith("onnxlrp: error:")
    assert "no/such/" in stderr and "no such file" in stderr


def test_unknown_composite_and_bad_arguments(capsys):
    code, _, stderr = run(capsys, "info", MODEL, "--composite", "no-such-composite")
    assert code == 2 and "onnxlrp: error:" in stderr and "no-such-composite" in stderr
    code, _, stderr = run(capsys, "explain", MODEL)  # INPUT missing: argparse's usage error
    assert code == 2 and "usage:" in stderr


def test_python_dash_m(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "onnxlrp", "explain", MODEL, SAMPLES, "--out", str(tmp_path / "h.png")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(sample_lines(done.stdout)) == 16
    assert (tmp_path / "h.png").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "onnxlrp", "info", str(tmp_path / "missing.onnx")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("onnxlrp: error:") and "no such file" in done.stderr
