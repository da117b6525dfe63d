"""The workflows of MLflow's Model Registry documentation, run unchanged with the real MLflow
client against `regserve server`, for ONNX models. Every check looks at returned fields, and
every loaded model is compared with onnxruntime on the same input."""

import concurrent.futures
import json
import pathlib
import shutil

import mlflow
import numpy as np
import onnx
import pytest
import requests
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from conftest import MODELS, assert_predicts_like, ort_outputs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def log_onnx(model, X, registered_model_name=None):
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", "0.5")
        mlflow.log_metric("accuracy", 0.97)
        info = mlflow.onnx.log_model(
            model, name="model", registered_model_name=registered_model_name, input_example=X
        )
    return run, info


def error_code(excinfo):
    return excinfo.value.error_code


def test_log_and_register_a_model_during_a_run(client, iris_v1, X):
    run, info = log_onnx(iris_v1, X, registered_model_name="doc-run-model")
    assert info.registered_model_version == "1"
    assert info.model_uri == f"models:/{info.model_id}"

    mv = client.get_model_version("doc-run-model", "1")
    assert (mv.name, mv.version, mv.status, mv.current_stage) == ("doc-run-model", "1", "READY", "None")
    assert mv.run_id == run.info.run_id
    assert mv.source == f"models:/{info.model_id}"
    exp_id = run.info.experiment_id
    assert client.get_model_version_download_uri("doc-run-model", "1") == (
        f"mlflow-artifacts:/{exp_id}/models/{info.model_id}/artifacts"
    )

    # The run holds what was logged during it, and the logged model is linked to it.
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"alpha": "0.5"}
    assert got.data.metrics == {"accuracy": 0.97}
    assert [o.model_id for o in got.outputs.model_outputs] == [info.model_id]
    lm = client.get_logged_model(info.model_id)
    assert (lm.status, lm.source_run_id, lm.name) == (LoggedModelStatus.READY, run.info.run_id, "model")

    loaded = mlflow.pyfunc.load_model("models:/doc-run-model/1")
    assert_predicts_like(loaded, iris_v1, X)


def test_register_model_from_a_run_uri_and_a_model_uri(client, iris_v1, X):
    run, info = log_onnx(iris_v1, X)
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", "doc-register")
    assert (mv.version, mv.status) == ("1", "READY")
    # MLflow 3 logs models as logged models: the client registers the run's logged model.
    assert mv.source == f"models:/{info.model_id}"
    assert mv.run_id == run.info.run_id
    mv2 = mlflow.register_model(info.model_uri, "doc-register")
    assert (mv2.version, mv2.source) == ("2", info.model_uri)
    assert_predicts_like(mlflow.pyfunc.load_model("models:/doc-register/2"), iris_v1, X)


def test_create_registered_model_and_its_duplicate(client):
    rm = client.create_registered_model("doc-create", tags={"team": "vision"}, description="first model")
    assert (rm.name, rm.description, rm.tags) == ("doc-create", "first model", {"team": "vision"})
    assert rm.creation_timestamp > 0 and rm.last_updated_timestamp >= rm.creation_timestamp
    assert rm.latest_versions == []
    with pytest.raises(MlflowException) as e:
        client.create_registered_model("doc-create")
    assert error_code(e) == "RESOURCE_ALREADY_EXISTS"
    assert "Registered Model (name=doc-create) already exists." in e.value.message


@pytest.fixture(scope="module")
def two_versions(client, iris_v1, iris_v2, X):
    """`doc-fetch` with version 1 = iris-v1 and version 2 = iris-v2, created with create_model_version."""
    client.create_registered_model("doc-fetch")
    run1, info1 = log_onnx(iris_v1, X)
    run2, info2 = log_onnx(iris_v2, X)
    mv1 = client.create_model_version(
        "doc-fetch", info1.model_uri, run_id=run1.info.run_id, description="v1", model_id=info1.model_id
    )
    mv2 = client.create_model_version(
        "doc-fetch", f"runs:/{run2.info.run_id}/model", run_id=run2.info.run_id, tags={"algo": "v2"}
    )
    return mv1, mv2, (run1, info1), (run2, info2)


def test_create_model_version_fields(two_versions):
    mv1, mv2, (run1, info1), (run2, _) = two_versions
    assert (mv1.version, mv1.status, mv1.description, mv1.run_id) == ("1", "READY", "v1", run1.info.run_id)
    assert mv1.source == info1.model_uri
    assert (mv2.version, mv2.status, mv2.tags) == ("2", "READY", {"algo": "v2"})
    assert mv2.source == f"runs:/{run2.info.run_id}/model"


def test_fetch_by_version_stage_alias_and_latest(client, two_versions, iris_v1, iris_v2, X):
    # The two models must disagree, or fetching the wrong one would go unnoticed.
    p1, p2 = ort_outputs(iris_v1, X), ort_outputs(iris_v2, X)
    assert not np.allclose(p1["probabilities"], p2["probabilities"], atol=1e-3)

    client.transition_model_version_stage("doc-fetch", "1", "staging")
    client.transition_model_version_stage("doc-fetch", "2", "Production")
    client.set_registered_model_alias("doc-fetch", "champion", "1")
    for uri, model in [
        ("models:/doc-fetch/1", iris_v1),
        ("models:/doc-fetch/2", iris_v2),
        ("models:/doc-fetch/Staging", iris_v1),
        ("models:/doc-fetch/Production", iris_v2),
        ("models:/doc-fetch@champion", iris_v1),
        ("models:/doc-fetch/latest", iris_v2),
    ]:
        assert_predicts_like(mlflow.pyfunc.load_model(uri), model, X)
    client.delete_registered_model_alias("doc-fetch", "champion")


def test_transition_stages_and_archive_existing_versions(client, two_versions):
    mv = client.transition_model_version_stage("doc-fetch", "2", "production")
    assert mv.current_stage == "Production"  # canonical, whatever the input case
    mv = client.transition_model_version_stage("doc-fetch", "1", "Production", archive_existing_versions=True)
    assert mv.current_stage == "Production"
    assert client.get_model_version("doc-fetch", "2").current_stage == "Archived"
    latest = client.get_latest_versions("doc-fetch", stages=["Production"])
    assert [(v.version, v.current_stage) for v in latest] == [("1", "Production")]
    per_stage = {v.current_stage: v.version for v in client.get_latest_versions("doc-fetch")}
    assert per_stage == {"Production": "1", "Archived": "2"}
    assert client.get_latest_versions("doc-fetch", stages=["Staging"]) == []
    with pytest.raises(MlflowException) as e:
        client.transition_model_version_stage("doc-fetch", "1", "Foo")
    assert error_code(e) == "INVALID_PARAMETER_VALUE"
    assert "Invalid Model Version stage: Foo" in e.value.message


def test_aliases(client, two_versions):
    client.set_registered_model_alias("doc-fetch", "champion", "1")
    client.set_registered_model_alias("doc-fetch", "challenger", 2)
    assert client.get_registered_model("doc-fetch").aliases == {"champion": "1", "challenger": "2"}
    mv = client.get_model_version_by_alias("doc-fetch", "challenger")
    assert (mv.version, mv.aliases) == ("2", ["challenger"])
    client.set_registered_model_alias("doc-fetch", "challenger", "1")  # move it
    assert client.get_model_version_by_alias("doc-fetch", "challenger").version == "1"
    assert sorted(client.get_model_version("doc-fetch", "1").aliases) == ["challenger", "champion"]
    client.delete_registered_model_alias("doc-fetch", "challenger")
    client.delete_registered_model_alias("doc-fetch", "champion")
    assert client.get_registered_model("doc-fetch").aliases == {}
    with pytest.raises(MlflowException) as e:
        client.get_model_version_by_alias("doc-fetch", "champion")
    assert error_code(e) == "INVALID_PARAMETER_VALUE"


def test_descriptions_tags_and_rename(client, iris_v1, X):
    log_onnx(iris_v1, X, registered_model_name="doc-edit")
    rm = client.update_registered_model("doc-edit", description="classifies irises")
    assert rm.description == "classifies irises"
    mv = client.update_model_version("doc-edit", "1", description="trained on all data")
    assert mv.description == "trained on all data"

    client.set_registered_model_tag("doc-edit", "task", "classification")
    client.set_model_version_tag("doc-edit", "1", "validation_status", "approved")
    assert client.get_registered_model("doc-edit").tags == {"task": "classification"}
    assert client.get_model_version("doc-edit", "1").tags == {"validation_status": "approved"}
    client.delete_registered_model_tag("doc-edit", "task")
    client.delete_model_version_tag("doc-edit", "1", "validation_status")
    assert client.get_registered_model("doc-edit").tags == {}
    assert client.get_model_version("doc-edit", "1").tags == {}

    client.rename_registered_model("doc-edit", "doc-edited")
    renamed = client.get_registered_model("doc-edited")
    assert renamed.name == "doc-edited"
    assert [v.name for v in renamed.latest_versions] == ["doc-edited"]
    assert client.get_model_version("doc-edited", "1").description == "trained on all data"
    with pytest.raises(MlflowException) as e:
        client.get_registered_model("doc-edit")
    assert error_code(e) == "RESOURCE_DOES_NOT_EXIST"


def test_search_registered_models_filters_paging_and_order(client):
    names = [f"doc-search-{i:02d}" for i in range(25)]
    for i, name in enumerate(names):
        client.create_registered_model(name, tags={"parity": "even" if i % 2 == 0 else "odd"})

    seen, token, pages = [], None, 0
    while True:
        page = client.search_registered_models(
            filter_string="name LIKE 'doc-search-%'", max_results=10, order_by=["name ASC"], page_token=token
        )
        pages += 1
        seen.extend(m.name for m in page)
        token = page.token
        if not token:
            break
    assert pages == 3
    assert seen == names  # every model once, in order

    desc = client.search_registered_models(filter_string="name LIKE 'doc-search-%'", order_by=["name DESC"])
    assert [m.name for m in desc] == names[::-1]
    even = client.search_registered_models(filter_string="name LIKE 'doc-search-%' AND tags.parity = 'even'")
    assert sorted(m.name for m in even) == names[::2]
    exact = client.search_registered_models(filter_string="name = 'doc-search-07'")
    assert [(m.name, m.tags) for m in exact] == [("doc-search-07", {"parity": "odd"})]
    assert client.search_registered_models(filter_string="name = 'no-such-model'") == []
    with pytest.raises(MlflowException) as e:
        client.search_registered_models(filter_string="name LIKE")
    assert error_code(e) == "INVALID_PARAMETER_VALUE"


def test_search_model_versions(client, two_versions):
    _, _, (run1, info1), (run2, _) = two_versions
    by_name = client.search_model_versions("name = 'doc-fetch'")
    assert sorted(v.version for v in by_name) == ["1", "2"]
    by_run = client.search_model_versions(f"run_id = '{run1.info.run_id}'")
    assert [(v.name, v.version) for v in by_run] == [("doc-fetch", "1")]
    by_number = client.search_model_versions("name = 'doc-fetch' AND version_number > 1")
    assert [v.version for v in by_number] == ["2"]
    by_source = client.search_model_versions(f"source_path = 'runs:/{run2.info.run_id}/model'")
    assert [v.version for v in by_source] == ["2"]
    by_like = client.search_model_versions(f"source_path LIKE 'models:/{info1.model_id}%'")
    assert [(v.name, v.version) for v in by_like] == [("doc-fetch", "1")]
    with pytest.raises(MlflowException) as e:
        client.search_model_versions("bogus filter")
    assert error_code(e) == "INVALID_PARAMETER_VALUE"


def test_download_uri_and_artifacts(client, two_versions, iris_v1, tmp_path):
    _, _, (run1, info1), _ = two_versions
    uri = client.get_model_version_download_uri("doc-fetch", "1")
    assert uri == f"mlflow-artifacts:/{run1.info.experiment_id}/models/{info1.model_id}/artifacts"
    local = pathlib.Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/doc-fetch/1", dst_path=str(tmp_path)))
    assert {"MLmodel", "model.onnx", "serving_input_example.json"} <= {p.name for p in local.iterdir()}
    assert onnx.load(str(local / "model.onnx")).graph == iris_v1.graph


def test_a_model_that_does_not_load_fails_registration(client, tmp_path):
    # An MLflow ONNX model directory whose model.onnx is not a model.
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(MODELS / "iris-v1" / "MLmodel", broken / "MLmodel")
    (broken / "model.onnx").write_bytes(b"this is not an onnx graph")
    lm = client.create_logged_model(experiment_id="0", name="broken")
    client.log_model_artifacts(lm.model_id, str(broken))
    client.finalize_logged_model(lm.model_id, "READY")
    client.create_registered_model("doc-broken")
    with pytest.raises(MlflowException) as e:
        client.create_model_version("doc-broken", f"models:/{lm.model_id}", model_id=lm.model_id)
    assert "FAILED_REGISTRATION" in e.value.message
    mv = client.get_model_version("doc-broken", "1")
    assert mv.status == "FAILED_REGISTRATION"
    assert "failed its test load" in mv.status_message
    # Never served: `latest` skips it.
    with pytest.raises(Exception):
        mlflow.pyfunc.load_model("models:/doc-broken/latest")


def test_delete_versions_and_models(client, iris_v1, X):
    log_onnx(iris_v1, X, registered_model_name="doc-delete")
    log_onnx(iris_v1, X, registered_model_name="doc-delete")
    client.delete_model_version("doc-delete", "1")
    with pytest.raises(MlflowException) as e:
        client.get_model_version("doc-delete", "1")
    assert error_code(e) == "RESOURCE_DOES_NOT_EXIST"
    assert [v.version for v in client.search_model_versions("name = 'doc-delete'")] == ["2"]
    client.delete_registered_model("doc-delete")
    with pytest.raises(MlflowException) as e:
        client.get_registered_model("doc-delete")
    assert error_code(e) == "RESOURCE_DOES_NOT_EXIST"
    assert client.search_model_versions("name = 'doc-delete'") == []


def test_errors_and_their_http_statuses(client, server):
    with pytest.raises(MlflowException) as e:
        client.get_registered_model("doc-missing")
    assert error_code(e) == "RESOURCE_DOES_NOT_EXIST"
    assert e.value.message.endswith("Registered Model with name=doc-missing not found")
    client.create_registered_model("doc-errors")
    with pytest.raises(MlflowException) as e:
        client.get_model_version("doc-errors", "99")
    assert error_code(e) == "RESOURCE_DOES_NOT_EXIST"

    api = server.url + "/api/2.0/mlflow"
    r = requests.get(f"{api}/model-versions/get", params={"name": "doc-errors", "version": "99"}, timeout=10)
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = requests.get(f"{api}/model-versions/get", params={"name": "doc-errors", "version": "abc"}, timeout=10)
    assert r.status_code == 400
    assert r.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Parameter 'version' must be an integer, got 'abc'.",
    }
    r = requests.post(
        f"{api}/model-versions/transition-stage",
        json={"name": "doc-errors", "version": "1", "stage": "Foo", "archive_existing_versions": False},
        timeout=10,
    )
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    r = requests.get(f"{api}/model-versions/search", params={"filter": "bogus filter"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["message"].startswith("Invalid clause(s) in filter string: bogus filter")
    r = requests.get(f"{api}/registered-models/get-latest-versions", params={"name": "doc-errors"}, timeout=10)
    assert (r.status_code, r.json()) == (200, {})


def test_eight_concurrent_creators_get_consecutive_versions(client, iris_v1, X):
    _, info = log_onnx(iris_v1, X)
    client.create_registered_model("doc-concurrent")

    def create(_):
        return client.create_model_version("doc-concurrent", info.model_uri, model_id=info.model_id)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(create, range(8)))
    assert sorted(int(v.version) for v in created) == list(range(1, 9))
    assert all(v.status == "READY" for v in created)
    found = client.search_model_versions("name = 'doc-concurrent'")
    assert sorted(int(v.version) for v in found) == list(range(1, 9))


def test_the_cli_sees_the_same_registry(client, server, iris_v1, X):
    log_onnx(iris_v1, X, registered_model_name="doc-shared")
    out = server.cli("models", "show", "doc-shared", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["registered_model"]["name"] == "doc-shared"
    assert [v["status"] for v in shown["model_versions"]] == ["READY"]
    # And the CLI can score the version the client registered.
    payload = pathlib.Path(server.data_dir) / "payload.json"
    payload.write_text(json.dumps({"inputs": X.tolist()}))
    out = server.cli("predict", "-m", "models:/doc-shared/1", "--input", str(payload))
    assert out.returncode == 0, out.stderr
    want = ort_outputs(iris_v1, X)
    got = json.loads(out.stdout)["predictions"]
    np.testing.assert_allclose(np.array(got["probabilities"]), want["probabilities"], atol=1e-5)


def test_a_named_experiment_keeps_its_own_artifact_location(client, iris_v2, X):
    exp = mlflow.set_experiment("doc-experiment")
    try:
        assert exp.experiment_id != "0"
        assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"
        assert client.get_experiment_by_name("doc-experiment").experiment_id == exp.experiment_id
        run, info = log_onnx(iris_v2, X, registered_model_name="doc-experiment-model")
        assert run.info.experiment_id == exp.experiment_id
        assert client.get_model_version_download_uri("doc-experiment-model", "1") == (
            f"mlflow-artifacts:/{exp.experiment_id}/models/{info.model_id}/artifacts"
        )
        runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string="params.alpha = '0.5'")
        assert list(runs["run_id"]) == [run.info.run_id]
        assert_predicts_like(mlflow.pyfunc.load_model("models:/doc-experiment-model/1"), iris_v2, X)
    finally:
        mlflow.set_experiment(experiment_id="0")
