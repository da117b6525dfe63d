"""`regserve models ... --registry-uri <mlflow server>`: the CLI registers into, manages and
predicts from a real `mlflow server` (from PyPI, started here on a free port), and what it
registers is a model the MLflow client loads with `mlflow.pyfunc.load_model` and that predicts
like onnxruntime on the same input."""

import json
import os
import subprocess

import mlflow
import numpy as np
import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, ort_outputs
from test_follow import MlflowServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mlflow_uris(mlflow_server):
    """Point the MLflow client at the mlflow server for one test, then back."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    try:
        yield MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def regserve(binary, data_dir, url, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return subprocess.run(
        [binary, "--data-dir", str(data_dir), *args, "--registry-uri", url],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, env=env,
    )


def ok(result):
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def assert_same_outputs(got, want):
    assert set(got) == set(want), (got, want)
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.shape == expected.shape, name
        if np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
        else:
            np.testing.assert_array_equal(actual, expected)


def test_registered_directory_loads_with_mlflow_pyfunc(regserve_bin, mlflow_server, mlflow_uris, tmp_path, X):
    client = mlflow_uris
    out = ok(regserve(regserve_bin, tmp_path, mlflow_server.url, "models", "register", str(MODELS / "iris-v1"),
                      "--name", "iris", "--json"))
    v = json.loads(out)
    assert (v["version"], v["status"]) == ("1", "READY")
    assert v["source"].startswith("models:/m-")

    mv = client.get_model_version("iris", "1")
    assert mv.status == "READY" and mv.source == v["source"]
    logged = client.get_logged_model(v["source"].removeprefix("models:/"))
    assert logged.status.to_proto() == 2  # LOGGED_MODEL_READY

    model = mlflow.pyfunc.load_model("models:/iris/1")
    assert model.metadata.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    # Scored by MLflow's own ONNX wrapper. (Not through `model.predict`: for this model, whose
    # signature names four columns and which has a 2-D output, MLflow's pyfunc fails even when
    # it is loaded from the local directory — "All arrays must be of the same length", see
    # REFERENCE.md — so that call cannot tell anything about the registration.)
    got = model._model_impl.predict(X)
    assert_same_outputs(got, ort_outputs(onnx.load(str(MODELS / "iris-v1" / "model.onnx")), X))

    # And regserve's own predict, downloading from the mlflow server, answers the same.
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"dataframe_split": {"columns": COLUMNS, "data": X.tolist()}}))
    pred = json.loads(ok(regserve(regserve_bin, tmp_path, mlflow_server.url, "predict", "-m", "models:/iris/1",
                                  "--input", str(rows))))["predictions"]
    want = ort_outputs(onnx.load(str(MODELS / "iris-v1" / "model.onnx")), X)
    np.testing.assert_array_equal([p["label"] for p in pred], want["label"])
    np.testing.assert_allclose([p["probabilities"] for p in pred], want["probabilities"], atol=1e-5)


def large_model(path, width=750_000):
    """A valid ONNX model over 8 MiB: Y = X · W with W of shape [4, width]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, width)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "big",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, width])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return model


def test_bare_onnx_file_gets_an_mlmodel_and_streams_with_progress(
        regserve_bin, mlflow_server, mlflow_uris, tmp_path, X):
    client = mlflow_uris
    path = tmp_path / "big.onnx"
    model = large_model(path)
    assert path.stat().st_size > 8 << 20
    result = regserve(regserve_bin, tmp_path, mlflow_server.url, "models", "register", str(path), "--name", "big",
                      "--stage", "Staging", "--alias", "champion", "--tag", "size=large", "--json")
    ok(result)
    assert "uploaded model.onnx" in result.stderr, result.stderr

    mv = client.get_model_version_by_alias("big", "champion")
    assert (mv.version, mv.current_stage, mv.tags) == ("1", "Staging", {"size": "large"})
    listed = mlflow.artifacts.list_artifacts(artifact_uri=client.get_model_version_download_uri("big", "1"))
    files = sorted(f.path.rsplit("/", 1)[-1] for f in listed)
    assert files == ["MLmodel", "model.onnx"]

    loaded = mlflow.pyfunc.load_model("models:/big@champion")
    got = loaded.predict(X)
    assert_same_outputs(got, ort_outputs(model, X))


def test_every_models_command_speaks_mlflow_request_shapes(regserve_bin, mlflow_server, mlflow_uris, tmp_path):
    client = mlflow_uris

    def run(*args):
        return ok(regserve(regserve_bin, tmp_path, mlflow_server.url, "models", *args))

    run("register", str(MODELS / "iris-v1"), "--name", "flow", "--description", "first")
    run("register", str(MODELS / "iris-v2"), "--name", "flow", "--stage", "Production")
    assert [m["name"] for m in json.loads(run("list", "--json"))].count("flow") == 1
    assert [v["version"] for v in json.loads(run("versions", "flow", "--json"))] == ["2", "1"]

    run("transition", "flow", "1", "Production", "--archive-existing")
    assert client.get_model_version("flow", "2").current_stage == "Archived"
    run("alias", "set", "flow", "champion", "1")
    assert client.get_model_version_by_alias("flow", "champion").version == "1"
    run("alias", "delete", "flow", "champion")
    assert client.get_registered_model("flow").aliases == {}
    run("describe", "flow", "the flow model")
    run("describe", "flow", "second", "--version", "2")
    assert client.get_registered_model("flow").description == "the flow model"
    assert client.get_model_version("flow", "2").description == "second"
    run("tag", "flow", "team=ml")
    run("tag", "flow", "checked=yes", "--version", "1")
    assert client.get_registered_model("flow").tags == {"team": "ml"}
    assert client.get_model_version("flow", "1").tags == {"checked": "yes"}
    run("tag", "flow", "--delete", "team")
    run("tag", "flow", "--delete", "checked", "--version", "1")
    assert client.get_registered_model("flow").tags == {}
    assert client.get_model_version("flow", "1").tags == {}
    run("rename", "flow", "stream")
    shown = json.loads(run("show", "stream", "--json"))
    assert shown["registered_model"]["name"] == "stream"
    assert [v["version"] for v in shown["model_versions"]] == ["2", "1"]
    run("delete", "stream", "--version", "2", "--yes")
    assert [v.version for v in client.search_model_versions("name='stream'")] == ["1"]
    run("delete", "stream", "--yes")
    assert "stream" not in [m.name for m in client.search_registered_models()]
