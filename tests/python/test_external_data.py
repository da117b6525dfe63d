"""ONNX external-data references: a model whose initializers point outside its own folder
(`..`, an absolute path) is refused with a clear error and never registered; a model whose
weights sit beside it in its folder registers and predicts correctly."""

import json
import subprocess

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conftest import child_env

W = np.arange(4, dtype=np.float32)


def model_with_external_weights(folder, location, write_weights=False):
    folder.mkdir(parents=True, exist_ok=True)
    t = numpy_helper.from_array(W, name="W")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [t])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    (folder / "model.onnx").write_bytes(m.SerializeToString())
    if write_weights:
        (folder / location).write_bytes(W.tobytes())
    return folder


def register(binary, data, path):
    return subprocess.run([binary, "--data-dir", str(data), "models", "register", str(path), "--name", "ext", "--json"],
                          capture_output=True, text=True, timeout=120, env=child_env(), stdin=subprocess.DEVNULL)


def test_external_data_outside_the_model_folder_is_refused(regserve_bin, tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 16)
    data = tmp_path / "data"
    for location, expected in [("../secret.bin", "escapes model directory"), ("/etc/hostname", "Absolute path not allowed")]:
        folder = model_with_external_weights(tmp_path / f"m{len(location)}", location)
        out = register(regserve_bin, data, folder)
        assert out.returncode != 0
        assert "failed its test load" in out.stderr and expected in out.stderr, out.stderr
    listing = subprocess.run([regserve_bin, "--data-dir", str(data), "models", "list", "--json"], capture_output=True,
                             text=True, env=child_env(), stdin=subprocess.DEVNULL)
    assert json.loads(listing.stdout) == [], "nothing was registered"

    good = model_with_external_weights(tmp_path / "good", "weights.bin", write_weights=True)
    out = register(regserve_bin, data, good)
    assert out.returncode == 0, out.stderr
    payload = tmp_path / "x.json"
    payload.write_text(json.dumps({"inputs": [[1.0, 1.0, 1.0, 1.0]]}))
    pred = subprocess.run([regserve_bin, "--data-dir", str(data), "predict", "-m", "models:/ext/1", "--input", str(payload)],
                          capture_output=True, text=True, env=child_env(), stdin=subprocess.DEVNULL)
    assert pred.returncode == 0, pred.stderr
    assert json.loads(pred.stdout)["predictions"]["y"] == [[1.0, 2.0, 3.0, 4.0]]
