"""``onnxlrp info``: the coverage report of a converter's file, before running anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from graph_helpers import parse

import onnxlrp
from onnxlrp.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "converters"


def test_info_on_a_tf2onnx_file(capsys):
    assert main(["info", str(FIXTURES / "keras_se_unoptimized.onnx"), "--composite", "epsilon"]) == 0
    out = capsys.readouterr().out
    assert "source graph: 73 nodes" in out  # the file as tf2onnx wrote it
    assert "nodes (after canonicalisation)" in out
    assert "gate held constant" in out  # the squeeze-and-excitation product
    assert "HardSwish" in out and "all nodes supported" in out


def test_info_lists_unsupported_nodes(capsys, tmp_path):
    model = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            r = Relu(x)
            s = Mod <fmod = 1> (r, two)
            y = MatMul(s, W)
        }
        """,
        two=np.array(2.0, np.float32),
        W=np.eye(4, dtype=np.float32),
    )
    report = onnxlrp.inspect(model)
    assert [(n.op_type, n.supported) for n in report.unsupported] == [("Mod", False)]
    assert report.source_ops == {"Relu": 1, "Mod": 1, "MatMul": 1}
    path = tmp_path / "mod.onnx"
    import onnx

    onnx.save(model, str(path))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "unsupported nodes (1)" in out and "Mod" in out
