"""Conformance of the tracking API's experiments and logged models (issue 12, items 5, 7, 9, 10):
each test does the same thing against a real `mlflow server` (the `pair` fixture) and against
regserve, and asserts regserve answers what mlflow answers. Ids and timestamps differ between
the two servers; names, statuses, error codes and the fields a client reads are compared."""

import uuid

import pytest
import requests
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

API = "/api/2.0/mlflow"


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def body(resp):
    return resp.json()


def create_experiment(pair, name, **extra):
    """Create `name` on both servers; return (ref id, our id)."""
    ref, ours = pair.same_status("POST", API + "/experiments/create", json={"name": name, **extra})
    return body(ref)["experiment_id"], body(ours)["experiment_id"]


def get_experiment(pair, ids):
    ref, ours = (pair.call("GET", API + "/experiments/get", params={"experiment_id": i}) for i in ids)
    return ref[0], ours[1]


def call_each(pair, method, path, ref_kw, our_kw):
    """The same call with server-specific arguments (ids differ): (ref, ours)."""
    ref = requests.request(method, pair.ref_url + path, timeout=60, **ref_kw)
    ours = requests.request(method, pair.our_url + path, timeout=60, **our_kw)
    return ref, ours


def same(ref, ours):
    """Same status and, for errors, the same error_code."""
    assert ours.status_code == ref.status_code, (ref.status_code, ref.text, ours.status_code, ours.text)
    if ref.status_code >= 400:
        assert ours.json().get("error_code") == ref.json().get("error_code"), (ref.text, ours.text)
    return ref, ours


def each(pair, method, path, ids, make):
    """`make(id)` → request kwargs, applied with each server's id; asserts `same`."""
    return same(*call_each(pair, method, path, make(ids[0]), make(ids[1])))


# -------------------------------------------------------------------- experiments: delete, restore


def test_delete_and_restore_an_experiment_with_its_runs(pair):
    name = unique("exp-del")
    ids = create_experiment(pair, name)
    runs = [
        body(r)["run"]["info"]["run_id"]
        for r in call_each(pair, "POST", API + "/runs/create",
                           {"json": {"experiment_id": ids[0]}}, {"json": {"experiment_id": ids[1]}})
    ]

    each(pair, "POST", API + "/experiments/delete", ids, lambda i: {"json": {"experiment_id": i}})
    # A deleted experiment: `get` and `get-by-name` still find it, marked deleted; its runs too.
    ref, ours = get_experiment(pair, ids)
    assert ref.json()["experiment"]["lifecycle_stage"] == ours.json()["experiment"]["lifecycle_stage"] == "deleted"
    assert ours.json()["experiment"]["name"] == name
    ref, ours = pair.same_status("GET", API + "/experiments/get-by-name", params={"experiment_name": name})
    assert ref.json()["experiment"]["lifecycle_stage"] == ours.json()["experiment"]["lifecycle_stage"] == "deleted"
    ref, ours = each(pair, "GET", API + "/runs/get", runs, lambda r: {"params": {"run_id": r}})
    assert ref.json()["run"]["info"]["lifecycle_stage"] == ours.json()["run"]["info"]["lifecycle_stage"] == "deleted"

    # Deleting it again: it is not an active experiment any more (404).
    ref, ours = each(pair, "POST", API + "/experiments/delete", ids, lambda i: {"json": {"experiment_id": i}})
    assert ref.status_code == 404
    # Nothing new in it: runs, logged models, tags (400 INVALID_PARAMETER_VALUE).
    for path, make in [
        ("/runs/create", lambda i: {"json": {"experiment_id": i}}),
        ("/logged-models", lambda i: {"json": {"experiment_id": i}}),
        ("/experiments/set-experiment-tag", lambda i: {"json": {"experiment_id": i, "key": "k", "value": "v"}}),
        ("/experiments/delete-experiment-tag", lambda i: {"json": {"experiment_id": i, "key": "k"}}),
    ]:
        ref, ours = each(pair, "POST", API + path, ids, make)
        assert ref.status_code == 400, (path, ref.text)
        assert ours.json()["message"] == ref.json()["message"].replace(ids[0], ids[1]), path
    # Its runs take no writes.
    ref, ours = each(pair, "POST", API + "/runs/log-batch", runs,
                     lambda r: {"json": {"run_id": r, "params": [{"key": "a", "value": "1"}]}})
    assert ref.status_code == 400
    # Its name stays taken.
    ref, ours = pair.same_status("POST", API + "/experiments/create", json={"name": name})
    assert ref.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"

    # Searches see it by view_type only.
    for view_type, found in [("ACTIVE_ONLY", False), ("DELETED_ONLY", True), ("ALL", True), (2, True)]:
        ref, ours = pair.same_status("POST", API + "/experiments/search",
                                     json={"max_results": 10, "view_type": view_type, "filter": f"name = '{name}'"})
        assert bool(ref.json().get("experiments")) is found, (view_type, ref.text)
        assert bool(ours.json().get("experiments")) is found, (view_type, ours.text)

    # Restore: the experiment and its runs are active again; restoring twice is a 404.
    each(pair, "POST", API + "/experiments/restore", ids, lambda i: {"json": {"experiment_id": i}})
    ref, ours = get_experiment(pair, ids)
    assert ref.json()["experiment"]["lifecycle_stage"] == ours.json()["experiment"]["lifecycle_stage"] == "active"
    ref, ours = each(pair, "GET", API + "/runs/get", runs, lambda r: {"params": {"run_id": r}})
    assert ref.json()["run"]["info"]["lifecycle_stage"] == ours.json()["run"]["info"]["lifecycle_stage"] == "active"
    ref, ours = each(pair, "POST", API + "/experiments/restore", ids, lambda i: {"json": {"experiment_id": i}})
    assert ref.status_code == 404
    each(pair, "POST", API + "/runs/create", ids, lambda i: {"json": {"experiment_id": i}})


def test_delete_restore_and_update_check_their_parameters(pair):
    for path, extra in [("/experiments/delete", {}), ("/experiments/restore", {}),
                        ("/experiments/update", {"new_name": unique("n")}),
                        ("/experiments/delete-experiment-tag", {"key": "k"})]:
        for bad in [{}, {"experiment_id": 5}, {"experiment_id": "abc"}, {"experiment_id": ""},
                    {"experiment_id": "424242"}]:
            ref, ours = pair.same_status("POST", API + path, json={**bad, **extra})
            assert ours.json()["message"] == ref.json()["message"], (path, bad)
        # MLflow's methods: POST only.
        ref, ours = pair.call("GET", API + path, params={"experiment_id": "0", **extra})
        assert ours.status_code == ref.status_code == 405, path


def test_the_mlflow_client_deletes_and_restores_experiments(pair):
    ref_client, our_client = pair.clients()
    for client in (ref_client, our_client):
        name = unique("client-del")
        eid = client.create_experiment(name)
        client.delete_experiment(eid)
        assert client.get_experiment(eid).lifecycle_stage == "deleted"
        assert client.get_experiment_by_name(name).lifecycle_stage == "deleted"
        deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=f"name = '{name}'")
        assert [e.experiment_id for e in deleted] == [eid]
        with pytest.raises(MlflowException) as e:
            client.create_run(eid)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        client.restore_experiment(eid)
        assert client.get_experiment(eid).lifecycle_stage == "active"
        assert client.create_run(eid).info.lifecycle_stage == "active"


def test_deleting_the_default_experiment(pair):
    """MLflow's SQL store lets the Default experiment be deleted (runs then cannot be created
    without an experiment) and restored."""
    try:
        ref, ours = pair.same_status("POST", API + "/experiments/delete", json={"experiment_id": "0"})
        ref, ours = pair.same_status("GET", API + "/experiments/get", params={"experiment_id": "0"})
        assert ref.json()["experiment"]["lifecycle_stage"] == ours.json()["experiment"]["lifecycle_stage"] == "deleted"
        for payload in ({}, {"experiment_id": "0"}):
            ref, ours = pair.same_status("POST", API + "/runs/create", json=payload)
            assert ref.status_code == 400
            assert ours.json()["message"] == ref.json()["message"]
    finally:
        pair.call("POST", API + "/experiments/restore", json={"experiment_id": "0"})
    ref, ours = pair.same_status("GET", API + "/experiments/get", params={"experiment_id": "0"})
    assert ref.json()["experiment"]["lifecycle_stage"] == ours.json()["experiment"]["lifecycle_stage"] == "active"


# -------------------------------------------------------------------- experiments: rename, tags


def test_rename_an_experiment(pair):
    name, new_name = unique("exp-ren"), unique("exp-renamed")
    ids = create_experiment(pair, name)
    each(pair, "POST", API + "/experiments/update", ids, lambda i: {"json": {"experiment_id": i, "new_name": new_name}})
    ref, ours = get_experiment(pair, ids)
    assert ref.json()["experiment"]["name"] == ours.json()["experiment"]["name"] == new_name
    ref, ours = pair.same_status("GET", API + "/experiments/get-by-name", params={"experiment_name": new_name})
    ref, ours = pair.same_status("GET", API + "/experiments/get-by-name", params={"experiment_name": name})
    assert ref.status_code == 404
    # The old name is free again.
    create_experiment(pair, name)

    for bad in [{}, {"new_name": ""}, {"new_name": 5}, {"new_name": "x" * 501}]:
        ref, ours = each(pair, "POST", API + "/experiments/update", ids, lambda i: {"json": {"experiment_id": i, **bad}})
        assert ref.status_code == 400
        assert ours.json()["message"] == ref.json()["message"], bad

    # A name in use: 400 in both. MLflow's error is its database's (BAD_REQUEST with the SQL
    # text); regserve answers RESOURCE_ALREADY_EXISTS, as `experiments/create` does.
    ref, ours = call_each(pair, "POST", API + "/experiments/update",
                          {"json": {"experiment_id": ids[0], "new_name": "Default"}},
                          {"json": {"experiment_id": ids[1], "new_name": "Default"}})
    assert (ref.status_code, ref.json()["error_code"]) == (400, "BAD_REQUEST")
    assert (ours.status_code, ours.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")

    # A deleted experiment cannot be renamed: INVALID_STATE in both. MLflow answers it with 500,
    # which its client retries as a server fault; regserve answers 400.
    each(pair, "POST", API + "/experiments/delete", ids, lambda i: {"json": {"experiment_id": i}})
    ref, ours = call_each(pair, "POST", API + "/experiments/update",
                          {"json": {"experiment_id": ids[0], "new_name": unique("x")}},
                          {"json": {"experiment_id": ids[1], "new_name": unique("x")}})
    assert (ref.status_code, ref.json()["error_code"]) == (500, "INVALID_STATE")
    assert (ours.status_code, ours.json()["error_code"]) == (400, "INVALID_STATE")
    assert ours.json()["message"] == ref.json()["message"]


def test_the_mlflow_client_renames_and_deletes_experiment_tags(pair):
    for client in pair.clients():
        eid = client.create_experiment(unique("client-tags"), tags={"team": "a", "keep": "b"})
        client.rename_experiment(eid, unique("client-renamed"))
        client.delete_experiment_tag(eid, "team")
        assert client.get_experiment(eid).tags == {"keep": "b"}
        with pytest.raises(MlflowException) as e:
            client.delete_experiment_tag(eid, "team")
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_delete_experiment_tag(pair):
    ids = create_experiment(pair, unique("exp-tag"), tags=[{"key": "k", "value": "v"}, {"key": "k2", "value": "v2"}])
    each(pair, "POST", API + "/experiments/delete-experiment-tag", ids, lambda i: {"json": {"experiment_id": i, "key": "k"}})
    ref, ours = get_experiment(pair, ids)
    assert ref.json()["experiment"]["tags"] == ours.json()["experiment"]["tags"] == [{"key": "k2", "value": "v2"}]
    for bad in [{"key": "k"}, {}, {"key": 5}]:
        ref, ours = each(pair, "POST", API + "/experiments/delete-experiment-tag", ids,
                         lambda i: {"json": {"experiment_id": i, **bad}})
        assert ref.status_code in (400, 404)
        assert ours.json()["message"] == ref.json()["message"].replace(ids[0], ids[1]), bad


# -------------------------------------------------------------------- logged models


def create_logged_model(pair, ids, **extra):
    ref, ours = each(pair, "POST", API + "/logged-models", ids, lambda i: {"json": {"experiment_id": i, **extra}})
    return ref.json()["model"]["info"]["model_id"], ours.json()["model"]["info"]["model_id"]


def on_models(pair, method, path, mids, **kw):
    """`path` with `{}` for the model id, filled with each server's id; asserts `same`.
    `json` may be a function of the model id."""
    return same(*call_raw(pair, method, path, mids, **kw))


def call_raw(pair, method, path, mids, **kw):
    """As `on_models`, without the assertion."""
    make = kw.pop("json", None)
    ref_kw, our_kw = dict(kw), dict(kw)
    if make is not None:
        ref_kw["json"], our_kw["json"] = (make(m) if callable(make) else make for m in mids)
    ref = requests.request(method, pair.ref_url + API + path.format(mids[0]), timeout=60, **ref_kw)
    ours = requests.request(method, pair.our_url + API + path.format(mids[1]), timeout=60, **our_kw)
    return ref, ours


def test_logged_model_with_an_unknown_source_run_is_stored_as_given(pair):
    ids = create_experiment(pair, unique("exp-lm-run"))
    mids = create_logged_model(pair, ids, source_run_id="no-such-run", name="m")
    ref, ours = on_models(pair, "GET", "/logged-models/{}", mids)
    assert ref.json()["model"]["info"]["source_run_id"] == ours.json()["model"]["info"]["source_run_id"] == "no-such-run"
    # And the MLflow client's way: a logged model outside any run of this server.
    for client, eid in zip(pair.clients(), ids):
        lm = client.create_logged_model(eid, source_run_id="0123456789abcdef0123456789abcdef")
        assert client.get_logged_model(lm.model_id).source_run_id == "0123456789abcdef0123456789abcdef"


def test_log_params_on_a_logged_model(pair):
    ids = create_experiment(pair, unique("exp-lm-params"))
    mids = create_logged_model(pair, ids, params=[{"key": "a", "value": "1"}])
    path = "/logged-models/{}/params"
    on_models(pair, "POST", path, mids, json=lambda m: {"model_id": m, "params": [{"key": "b", "value": "2"},
                                                                                   {"key": "c", "value": "3"}]})
    on_models(pair, "POST", path, mids, json=lambda m: {"model_id": m})  # no params: nothing to do
    # The path names the model; the body's model_id is required but not used (as in MLflow).
    on_models(pair, "POST", path, mids, json={"model_id": "m-other", "params": [{"key": "d", "value": "4"}]})
    ref, ours = on_models(pair, "GET", "/logged-models/{}", mids)
    assert ref.json()["model"]["data"]["params"] == ours.json()["model"]["data"]["params"] == [
        {"key": k, "value": v} for k, v in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]]

    for bad in [{"params": [{"key": "e", "value": "5"}]},  # model_id is required
                {"model_id": "m-x", "params": {"e": "5"}},
                {"model_id": 5, "params": []}]:
        ref, ours = on_models(pair, "POST", path, mids, json=bad)
        assert ref.status_code == 400
        assert ours.json()["message"] == ref.json()["message"], bad
    ref, ours = pair.same_status("POST", API + "/logged-models/m-nope/params",
                                 json={"model_id": "m-nope", "params": [{"key": "a", "value": "1"}]})
    assert ref.status_code == 404 and ours.json()["message"] == ref.json()["message"]

    # Another value for a logged key: 400 in both. MLflow's error is its database's
    # (BAD_REQUEST, SQL text); regserve answers as for a run's param.
    ref, ours = call_raw(pair, "POST", path, mids, json=lambda m: {"model_id": m, "params": [{"key": "a", "value": "2"}]})
    assert (ref.status_code, ref.json()["error_code"]) == (400, "BAD_REQUEST")
    assert (ours.status_code, ours.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "Changing param values is not allowed" in ours.json()["message"]


def test_the_mlflow_client_logs_params_on_logged_models(pair):
    for client in pair.clients():
        eid = client.create_experiment(unique("client-lm-params"))
        lm = client.create_logged_model(eid, params={"a": "1"})
        client.log_model_params(lm.model_id, {f"p{i}": str(i) for i in range(150)})  # two requests of 100
        assert client.get_logged_model(lm.model_id).params == {"a": "1", **{f"p{i}": str(i) for i in range(150)}}


def test_delete_a_logged_model(pair):
    ids = create_experiment(pair, unique("exp-lm-del"))
    mids = create_logged_model(pair, ids, name="doomed")
    keep = create_logged_model(pair, ids, name="kept")
    on_models(pair, "DELETE", "/logged-models/{}", mids)
    # Hidden from get (unless allow_deleted=true) and from searches.
    ref, ours = on_models(pair, "GET", "/logged-models/{}", mids)
    assert ref.status_code == 404 and ours.json()["message"] == ref.json()["message"].replace(mids[0], mids[1])
    for value in ("false", "yes", "TRUE"):
        on_models(pair, "GET", "/logged-models/{}", mids, params={"allow_deleted": value})
    ref, ours = on_models(pair, "GET", "/logged-models/{}", mids, params={"allow_deleted": "true"})
    assert ref.json()["model"]["info"]["name"] == ours.json()["model"]["info"]["name"] == "doomed"
    ref, ours = each(pair, "POST", API + "/logged-models/search", ids, lambda i: {"json": {"experiment_ids": [i]}})
    assert [m["info"]["model_id"] for m in ref.json()["models"]] == [keep[0]]
    assert [m["info"]["model_id"] for m in ours.json()["models"]] == [keep[1]]
    # Deleting again is no error; an unknown one is a 404. Writes still reach a deleted model.
    on_models(pair, "DELETE", "/logged-models/{}", mids)
    ref, ours = pair.same_status("DELETE", API + "/logged-models/m-nope")
    assert ref.status_code == 404
    on_models(pair, "PATCH", "/logged-models/{}/tags", mids, json={"tags": [{"key": "t", "value": "1"}]})
    on_models(pair, "DELETE", "/logged-models/{}/tags/t", mids)
    ref, ours = on_models(pair, "PATCH", "/logged-models/{}", mids,
                          json=lambda m: {"model_id": m, "status": "LOGGED_MODEL_READY"})
    assert ref.json()["model"]["info"]["status"] == ours.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"


def test_the_mlflow_client_deletes_logged_models(pair):
    for client in pair.clients():
        eid = client.create_experiment(unique("client-lm-del"))
        lm = client.create_logged_model(eid)
        client.delete_logged_model(lm.model_id)
        with pytest.raises(MlflowException) as e:
            client.get_logged_model(lm.model_id)
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        # What the client's store sends for a deleted model (`?allow_deleted=true`).
        assert client._tracking_client.store.get_logged_model(lm.model_id, allow_deleted=True).model_id == lm.model_id
        assert client.search_logged_models(experiment_ids=[eid]) == []


# -------------------------------------------------------------------- artifact locations


def strip_ids(uri, *ids):
    for i in ids:
        uri = uri.replace(i, "<id>")
    return uri


@pytest.mark.parametrize("location", [
    "s3://bucket/path", "s3://bucket/path/", "S3://bucket/upper", "gs://bucket/p",
    "wasbs://container@account.blob.core.windows.net/p", "mlflow-artifacts:/custom/place",
])
def test_artifact_locations_stored_as_given(pair, location):
    """Object stores and places under the artifact root: stored as MLflow stores them, and the
    runs and logged models under them get MLflow's artifact URIs."""
    ids = create_experiment(pair, unique("exp-loc"), artifact_location=location)
    ref, ours = get_experiment(pair, ids)
    assert ours.json()["experiment"]["artifact_location"].lower() == ref.json()["experiment"]["artifact_location"].lower()
    ref, ours = each(pair, "POST", API + "/runs/create", ids, lambda i: {"json": {"experiment_id": i}})
    r, o = ref.json()["run"]["info"], ours.json()["run"]["info"]
    assert strip_ids(o["artifact_uri"], o["run_id"]) == strip_ids(r["artifact_uri"], r["run_id"])
    ref, ours = each(pair, "POST", API + "/logged-models", ids, lambda i: {"json": {"experiment_id": i}})
    r, o = ref.json()["model"]["info"], ours.json()["model"]["info"]
    assert strip_ids(o["artifact_uri"], o["model_id"]) == strip_ids(r["artifact_uri"], r["model_id"])


@pytest.mark.parametrize("location", [
    "runs:/0123/model", "http://example.com/x", "https://example.com/x", "mlflow-artifacts://elsewhere:5000/x",
    "ftp://host/x", "sftp://host/x", "hdfs://host/x", "s3://bucket/p#fragment", "s3://bucket/" + "a" * 2050,
])
def test_artifact_locations_mlflow_refuses(pair, location):
    ref, ours = pair.same_status("POST", API + "/experiments/create",
                                 json={"name": unique("exp-bad-loc"), "artifact_location": location})
    assert ref.status_code == 400, ref.text
    if location.startswith("runs:") or "#" in location:
        assert ours.json()["message"] == ref.json()["message"]


@pytest.mark.parametrize("location", [
    "file:///tmp/x", "/tmp/abs", "relative/path", "dbfs:/x", "foo://x/y", "s3://bucket/p?versionId=1",
    "s3://bucket/../other", "s3:/no-bucket",
])
def test_artifact_locations_regserve_refuses(pair, location):
    """Deliberate differences (docs/mlflow-compatibility.md): MLflow stores these; regserve
    answers 400 naming what it accepts."""
    ref, ours = pair.call("POST", API + "/experiments/create",
                          json={"name": unique("exp-strict-loc"), "artifact_location": location})
    assert ref.status_code == 200, ref.text
    assert (ours.status_code, ours.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), ours.text
    assert "Invalid artifact_location" in ours.json()["message"]


def test_create_experiment_checks_parameter_types_before_the_location(pair):
    for payload in [
        {"name": 5, "artifact_location": "runs:/x"},
        {"name": "", "artifact_location": 7},
        {"name": unique("t"), "artifact_location": 7, "tags": 5},
        {"name": unique("t"), "artifact_location": "runs:/x", "tags": "not-a-list"},
        {"name": unique("t"), "artifact_location": "file:///x", "tags": "not-a-list"},
    ]:
        ref, ours = pair.same_status("POST", API + "/experiments/create", json=payload)
        assert ref.status_code == 400
        assert ours.json()["message"] == ref.json()["message"], payload


def test_an_object_store_experiment_on_regserve(pair, server, tmp_path):
    """An s3:// experiment's model is registered as a version that is "not test-loaded" (the
    server reads only its own artifact destination), and `regserve models register` uploads to
    the bucket itself (here one that cannot be reached: a clear error naming the bucket, no
    local files; test_object_store_write.py uploads to a real S3 server)."""
    import os
    import subprocess

    from conftest import MODELS, child_env

    ids = create_experiment(pair, unique("exp-s3"), artifact_location="s3://bucket/regserve")
    mids = create_logged_model(pair, ids, name="model")
    name = unique("s3-model")
    pair.same_status("POST", API + "/registered-models/create", json={"name": name})
    ref, ours = call_raw(pair, "POST", "/model-versions/create", mids,
                         json=lambda m: {"name": name, "source": f"models:/{m}", "model_id": m})
    same(ref, ours)
    v = ours.json()["model_version"]
    assert v["status"] == ref.json()["model_version"]["status"] == "READY"
    assert v["status_message"].startswith("not test-loaded: ")
    ref, ours = pair.same_status("GET", API + "/model-versions/get-download-uri", params={"name": name, "version": "1"})
    assert strip_ids(ours.json()["artifact_uri"], mids[1]) == strip_ids(ref.json()["artifact_uri"], mids[0])
    assert ours.json()["artifact_uri"].startswith("s3://bucket/regserve/models/")

    # An endpoint nobody listens on: the upload fails at once (no instance-metadata wait).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = child_env(MLFLOW_EXPERIMENT_ID=ids[1], MLFLOW_S3_ENDPOINT_URL=closed, AWS_ACCESS_KEY_ID="test-key-id",
                    AWS_SECRET_ACCESS_KEY="not-a-real-secret", AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run(
        [server.binary, "--data-dir", str(tmp_path), "models", "register", str(MODELS / "iris-v1"),
         "--name", unique("cli-s3"), "--registry-uri", server.url],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, env=env,
    )
    assert done.returncode != 0, done.stdout
    assert "s3://bucket" in done.stderr and "not-a-real-secret" not in done.stderr, done.stderr
    assert not any(p.name == "bucket" for p in (server.data_dir).rglob("bucket")), "nothing written locally"
    assert os.path.isdir(server.data_dir)


# -------------------------------------------------------------------- logged-models/search: datasets


def model_scenario(pair, with_datasets):
    """On each server: an experiment, a run, and logged models A..D with metrics logged on them
    (on datasets when `with_datasets`). Returns a function running one search on both servers
    and giving (ref names, our names) or the two responses of an error."""
    ids = create_experiment(pair, unique("exp-ds"))
    runs = [body(r)["run"]["info"]["run_id"] for r in
            call_each(pair, "POST", API + "/runs/create", {"json": {"experiment_id": ids[0]}},
                      {"json": {"experiment_id": ids[1]}})]
    train = {"dataset_name": "train", "dataset_digest": "d1"} if with_datasets else {}
    test = {"dataset_name": "test", "dataset_digest": "d2"} if with_datasets else {}
    plan = {"A": [("acc", 0.9, 0, 100, train), ("acc", 0.2, 1, 200, train)],
            "B": [("acc", 0.5, 0, 100, test)],
            "C": [("acc", 0.1, 5, 50, test)],
            "D": [("loss", 1.0, 0, 100, {})]}
    names = {}
    for name, metrics in plan.items():
        mids = create_logged_model(pair, ids, name=name)
        names.update({mids[0]: name, mids[1]: name})
        for run, mid, url in zip(runs, mids, (pair.ref_url, pair.our_url)):
            batch = [{"key": k, "value": v, "step": s, "timestamp": t, "model_id": mid, **d} for k, v, s, t, d in metrics]
            r = requests.post(url + API + "/runs/log-batch", json={"run_id": run, "metrics": batch}, timeout=60)
            assert r.status_code == 200, r.text

    def search(**kw):
        ref, ours = each(pair, "POST", API + "/logged-models/search", ids,
                         lambda i: {"json": {"experiment_ids": [i], **kw}})
        if ref.status_code != 200:
            return ref, ours
        return ([names[m["info"]["model_id"]] for m in ref.json().get("models", [])],
                [names[m["info"]["model_id"]] for m in ours.json().get("models", [])])

    return search, ids


def test_logged_model_search_checks_datasets_and_order_by(pair):
    search, _ = model_scenario(pair, with_datasets=False)
    for kw in [{"datasets": [{"dataset_digest": "d2"}]}, {"datasets": [{}]}, {"datasets": "x"},
               {"datasets": [{"dataset_name": 5}]}, {"order_by": [{"field_name": "params.x"}]},
               {"order_by": [{"field_name": "tags.t", "ascending": False}]}]:
        ref, ours = search(**kw)
        assert ref.status_code == 400
        assert ours.json()["message"] == ref.json()["message"], kw
    for payload in [{}, {"experiment_ids": "0"}, {"experiment_ids": None}]:
        ref, ours = pair.same_status("POST", API + "/logged-models/search", json=payload)
        assert ref.status_code == 400
        assert ours.json()["message"] == ref.json()["message"], payload
    ref, ours = pair.same_status("POST", API + "/logged-models/search", json={"experiment_ids": []})
    assert ref.json() == ours.json() == {}


def test_a_datasets_criterion_is_never_ignored(pair):
    """Metrics logged without a dataset: a `datasets` criterion keeps no model (regserve used to
    return every one); metric comparisons hold on any logged value, as in MLflow's SQL store, and
    ordering by a metric uses its latest value by timestamp."""
    search, _ = model_scenario(pair, with_datasets=False)
    for kw in [{}, {"datasets": [{"dataset_name": "train", "dataset_digest": "d1"}]},
               {"datasets": [{"dataset_name": "train"}]},
               {"filter": "metrics.acc > 0.8"}, {"filter": "metrics.acc < 0.3"},
               {"filter": "metrics.acc > 0", "datasets": [{"dataset_name": "test", "dataset_digest": "d2"}]},
               {"order_by": [{"field_name": "metrics.acc", "ascending": True}]},
               {"order_by": [{"field_name": "metrics.acc", "ascending": False}]},
               {"order_by": [{"field_name": "metrics.acc", "dataset_name": "test"}]},
               {"order_by": [{"field_name": "name", "ascending": False}]}]:
        ref, ours = search(**kw)
        assert ours == ref, kw
    assert search(datasets=[{"dataset_name": "train", "dataset_digest": "d1"}]) == ([], [])


def test_logged_model_search_by_datasets(pair):
    """The same search with metrics logged on datasets (what `mlflow.log_metric(..., model_id=,
    dataset=)` sends)."""
    search, ids = model_scenario(pair, with_datasets=True)
    models = requests.post(pair.our_url + API + "/logged-models/search",
                           json={"experiment_ids": [ids[1]], "filter": "name = 'A'"}, timeout=60).json()["models"]
    if not any("dataset_name" in m for m in models[0]["data"]["metrics"]):
        pytest.skip("this build does not keep metric datasets (the metric half of issue 12 item 5)")
    for kw in [{}, {"filter": "metrics.acc > 0.8"}, {"filter": "metrics.acc < 0.3"},
               {"datasets": [{"dataset_name": "train"}]},
               {"datasets": [{"dataset_name": "train", "dataset_digest": "d1"}]},
               {"datasets": [{"dataset_name": "test", "dataset_digest": "d2"}]},
               {"datasets": [{"dataset_name": "train", "dataset_digest": "d1"},
                             {"dataset_name": "test", "dataset_digest": "d2"}]},
               {"datasets": [{"dataset_name": "train", "dataset_digest": "d1"}], "filter": "metrics.acc < 0.5"},
               {"datasets": [{"dataset_name": "test", "dataset_digest": "d2"}], "filter": "metrics.acc > 0.4"},
               {"datasets": [{"dataset_name": "train", "dataset_digest": "d1"}], "filter": "metrics.loss = 1"},
               {"datasets": [{"dataset_name": "train", "dataset_digest": "d1"}], "filter": "name = 'A'"},
               {"datasets": [{"dataset_name": "test", "dataset_digest": "d2"}], "filter": "name = 'A'"},
               {"order_by": [{"field_name": "metrics.acc", "ascending": True}]},
               {"order_by": [{"field_name": "metrics.acc", "ascending": False}]},
               {"order_by": [{"field_name": "metrics.acc", "ascending": True, "dataset_name": "test"}]},
               {"order_by": [{"field_name": "metrics.acc", "ascending": True, "dataset_name": "train",
                              "dataset_digest": "d1"}]},
               {"order_by": [{"field_name": "metrics.acc", "ascending": True, "dataset_digest": "d2"}]}]:
        ref, ours = search(**kw)
        assert ours == ref, kw
    # The MLflow client's form of the criterion.
    for client, eid in zip(pair.clients(), ids):
        found = client.search_logged_models(experiment_ids=[eid],
                                            datasets=[{"dataset_name": "train", "dataset_digest": "d1"}])
        assert [m.name for m in found] == ["A"]
