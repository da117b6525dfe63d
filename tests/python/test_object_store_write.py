"""`regserve server` keeping the registry's artifacts in object storage (issue 13, the write side).

- `--artifacts-destination s3://bucket/prefix`: the artifact proxy (`mlflow-artifacts:/`) writes
  to, lists and serves from the bucket; the MLflow client's whole registry workflow suite
  (test_model_registry_workflows.py) is re-run unchanged against such a server;
- two replicas, each with its own data dir, on one bucket: a model logged through one is
  downloaded through the other;
- `--no-serve-artifacts --default-artifact-root s3://…`: the proxy answers 503, experiments get
  s3:// locations, the MLflow client uploads to the bucket itself, and `regserve serve` follows
  the version from the bucket;
- the remote `regserve models register` uploads straight to the bucket such a server (regserve's
  or a real `mlflow server`'s) hands out;
- the embedded CLI and `serve` on the server's registry read `mlflow-artifacts:/` from the
  bucket the server recorded in it (`server_settings`); wrong credentials give a clear error
  naming the bucket and no secret; `--artifacts-destination` overrides the recorded bucket; a
  server started with another destination says so loudly and its destination wins.

The S3 server is moto's (PyPI `moto[server]`), started here on 127.0.0.1 with IAM
authentication on (see test_object_store.py's `Moto`).
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import mlflow
import numpy as np
import onnx
import pytest
import requests
from mlflow import MlflowClient

from conftest import MODELS, REPO, RegserveServer, child_env
from test_object_store import (  # noqa: F401 (s3_mlflow, azurite: fixtures)
    BUCKET,
    ROW,
    EnvPatch,
    Moto,
    Serve,
    azurite,
    iris_probabilities,
    iris_reference,
    s3_mlflow,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto-write"))
    try:
        yield m
    finally:
        m.stop()


def s3_env(moto):
    return dict(moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url)


def keys_under(moto, prefix):
    s3 = moto.s3()
    keys, token = [], None
    for _ in range(100):
        kw = {"Bucket": BUCKET, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            break
    return keys


def test_the_registry_workflow_suite_passes_with_artifacts_in_s3(regserve_bin, moto):
    """test_model_registry_workflows.py, unchanged, against `regserve server
    --artifacts-destination s3://…` (in a child pytest: its fixtures are session-wide)."""
    prefix = "suite"
    env = dict(os.environ, **s3_env(moto), REGSERVE_BIN=regserve_bin,
               REGSERVE_TEST_SERVER_ARGS=f"--artifacts-destination s3://{BUCKET}/{prefix}")
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(k, None)
    suite = REPO / "tests" / "python" / "test_model_registry_workflows.py"
    out = subprocess.run(
        # All of it, test_the_cli_sees_the_same_registry included: `regserve predict` on the
        # server's --data-dir reads the bucket the server recorded in the registry.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout, out.stdout[-2000:]
    # The models the suite logged are in the bucket, under the prefix.
    keys = keys_under(moto, prefix + "/")
    assert any(k.endswith("/MLmodel") for k in keys), keys[:20]
    assert any(k.endswith("/model.onnx") for k in keys), keys[:20]


@pytest.fixture(scope="module")
def replicas(regserve_bin, moto, tmp_path_factory):
    dest = f"s3://{BUCKET}/shared"
    started = []
    try:
        for name in ("a", "b"):
            started.append(RegserveServer(regserve_bin, tmp_path_factory.mktemp(f"replica-{name}"),
                                          extra_args=["--artifacts-destination", dest], env=s3_env(moto)))
        yield started
    finally:
        for srv in started:
            srv.stop()


def test_two_replicas_share_one_bucket(replicas, moto, tmp_path):
    a, b = replicas
    # A file written through replica a's proxy (large enough for a multipart upload) ...
    rng = np.random.default_rng(7)
    blob = rng.bytes(12 * 1024 * 1024 + 123)
    url = "/api/2.0/mlflow-artifacts/artifacts/x/y/weights.bin"
    r = requests.put(a.url + url, data=blob, timeout=120)
    assert r.status_code == 200, r.text
    assert moto.s3().head_object(Bucket=BUCKET, Key="shared/x/y/weights.bin")["ContentLength"] == len(blob)
    # ... is served by replica b, with MLflow's headers, and listed there.
    r = requests.get(b.url + url, timeout=120)
    assert r.status_code == 200, r.text
    assert r.content == blob
    assert r.headers["Content-Disposition"] == "attachment; filename=weights.bin"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    listing = requests.get(b.url + "/api/2.0/mlflow-artifacts/artifacts", params={"path": "x"}, timeout=30).json()
    assert listing == {"files": [{"path": "y", "is_dir": True}]}
    listing = requests.get(b.url + "/api/2.0/mlflow-artifacts/artifacts", params={"path": "x/y"}, timeout=30).json()
    assert listing == {"files": [{"path": "weights.bin", "is_dir": False, "file_size": len(blob)}]}

    # The same path rules as on disk.
    for bad in ("x/..%2F..%2Fetc", "%2e%2e/x", "a%5Cb"):
        assert requests.put(a.url + "/api/2.0/mlflow-artifacts/artifacts/" + bad, data=b"z", timeout=10).status_code == 400, bad
    assert requests.get(b.url + "/api/2.0/mlflow-artifacts/artifacts/.hidden", timeout=10).status_code == 404
    assert requests.put(a.url + "/api/2.0/mlflow-artifacts/artifacts/registry/x", data=b"z", timeout=10).status_code == 400
    r = requests.get(b.url + "/api/2.0/mlflow-artifacts/artifacts/x/y", timeout=10)
    assert r.status_code == 400 and "directory" in r.json()["message"], r.text
    r = requests.get(b.url + "/api/2.0/mlflow-artifacts/artifacts/x/none.bin", timeout=10)
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.text

    # A model logged with the MLflow client through replica a, downloaded through replica b.
    model = onnx.load(str(MODELS / "iris-v1" / "model.onnx"))
    ca = MlflowClient(tracking_uri=a.url, registry_uri=a.url)
    mlflow.set_tracking_uri(a.url)
    try:
        exp = ca.create_experiment("replicas")
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.onnx.log_model(model, name="model", pip_requirements=["onnxruntime"])
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    location = ca.get_logged_model(info.model_id).artifact_location
    assert location.startswith("mlflow-artifacts:/"), location
    got = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path / "dl"), tracking_uri=b.url)
    assert (open(os.path.join(got, "model.onnx"), "rb").read()
            == open(MODELS / "iris-v1" / "model.onnx", "rb").read())
    assert os.path.isfile(os.path.join(got, "MLmodel"))
    # Nothing went to either replica's local artifact root.
    for srv in (a, b):
        local = srv.data_dir / "artifacts"
        assert not [p for p in local.rglob("*") if p.is_file()], list(local.rglob("*"))


def test_no_serve_artifacts_hands_out_the_bucket_and_serve_follows(regserve_bin, moto, tmp_path):
    root = f"s3://{BUCKET}/nsa"
    srv = RegserveServer(regserve_bin, tmp_path / "server",
                         extra_args=["--no-serve-artifacts", "--default-artifact-root", root], env=s3_env(moto))
    serve = None
    try:
        r = requests.get(srv.url + "/api/2.0/mlflow-artifacts/artifacts", timeout=10)
        assert r.status_code == 503 and "--no-serve-artifacts" in r.text, r.text
        client = MlflowClient(tracking_uri=srv.url, registry_uri=srv.url)
        exp_id = client.create_experiment("nsa")
        assert client.get_experiment(exp_id).artifact_location == f"{root}/{exp_id}"
        assert client.get_experiment("0").artifact_location == f"{root}/0"  # as MLflow's Default
        model = onnx.load(str(MODELS / "iris-v1" / "model.onnx"))
        with EnvPatch(**s3_env(moto)):  # the MLflow client uploads to moto itself
            mlflow.set_tracking_uri(srv.url)
            mlflow.set_registry_uri(srv.url)
            try:
                with mlflow.start_run(experiment_id=exp_id):
                    info = mlflow.onnx.log_model(model, name="model", registered_model_name="nsa-iris",
                                                 input_example=np.array([ROW], dtype=np.float32),
                                                 pip_requirements=["onnxruntime"])
            finally:
                mlflow.set_tracking_uri(None)
                mlflow.set_registry_uri(None)
                os.environ.pop("MLFLOW_TRACKING_URI", None)
                os.environ.pop("MLFLOW_REGISTRY_URI", None)
        assert info.registered_model_version == "1"
        uri = client.get_model_version_download_uri("nsa-iris", "1")
        assert uri.startswith(f"{root}/{exp_id}/"), uri
        keys = keys_under(moto, f"nsa/{exp_id}/")
        assert any(k.endswith("/model.onnx") for k in keys), keys
        assert not [p for p in (srv.data_dir / "artifacts").rglob("*") if p.is_file()]
        client.set_registered_model_alias("nsa-iris", "champion", "1")

        serve = Serve(regserve_bin, tmp_path / "serve", srv.url, "models:/nsa-iris@champion", s3_env(moto))
        serve.wait_version(1)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v1"), atol=1e-5)

        # The remote CLI registers the next version: its files go straight to the bucket.
        done = register_with_cli(regserve_bin, tmp_path / "cli", srv.url, "nsa-iris", MODELS / "iris-v2",
                                 dict(s3_env(moto), MLFLOW_EXPERIMENT_ID=exp_id))
        assert done.returncode == 0, done.stderr
        uri = client.get_model_version_download_uri("nsa-iris", "2")
        assert uri.startswith(f"{root}/{exp_id}/models/"), uri
        assert "MLmodel" in [k.rsplit("/", 1)[-1] for k in keys_under(moto, uri.split(f"s3://{BUCKET}/", 1)[1])]
        assert not [p for p in (srv.data_dir / "artifacts").rglob("*") if p.is_file()]
        client.set_registered_model_alias("nsa-iris", "champion", "2")
        serve.wait_version(2, timeout=30)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v2"), atol=1e-5)
    finally:
        if serve:
            serve.stop()
        srv.stop()


def register_with_cli(binary, data_dir, registry_url, name, model_dir, env):
    child = {k: v for k, v in child_env(RUST_LOG="warn").items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}
    child.update(env)
    return subprocess.run(
        [binary, "--data-dir", str(data_dir), "models", "register", str(model_dir), "--name", name,
         "--registry-uri", registry_url],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, env=child,
    )


def test_the_remote_cli_uploads_to_the_bucket_an_mlflow_server_hands_out(regserve_bin, moto, s3_mlflow, tmp_path):
    """`mlflow server --default-artifact-root s3://… --no-serve-artifacts`: `regserve models
    register --registry-uri` uploads to the bucket as MLflow's client does, and MLflow's client
    reads the version back from there."""
    done = register_with_cli(regserve_bin, tmp_path / "cli", s3_mlflow.url, "cli-s3", MODELS / "iris-v1",
                             s3_env(moto))
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_uri=s3_mlflow.url, registry_uri=s3_mlflow.url)
    v = client.get_model_version("cli-s3", "1")
    assert v.status == "READY", v
    uri = client.get_model_version_download_uri("cli-s3", "1")
    assert uri.startswith(f"s3://{BUCKET}/mlruns/"), uri
    with EnvPatch(**s3_env(moto)):
        got = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl"))
    assert (open(os.path.join(got, "model.onnx"), "rb").read()
            == open(MODELS / "iris-v1" / "model.onnx", "rb").read())
    assert os.path.isfile(os.path.join(got, "MLmodel"))


def test_an_azure_blob_destination(regserve_bin, azurite, tmp_path):
    """`--artifacts-destination wasbs://…` (Azurite): a model logged through the proxy lands in
    the container, is test-loaded from there, and reads back through the proxy."""
    dest = "wasbs://models@devstoreaccount1.blob.core.windows.net/proxy"
    srv = RegserveServer(regserve_bin, tmp_path / "server", extra_args=["--artifacts-destination", dest],
                         env={"AZURE_STORAGE_CONNECTION_STRING": azurite})
    try:
        client = MlflowClient(tracking_uri=srv.url, registry_uri=srv.url)
        exp_id = client.create_experiment("azure")
        mlflow.set_tracking_uri(srv.url)
        mlflow.set_registry_uri(srv.url)
        try:
            with mlflow.start_run(experiment_id=exp_id):
                info = mlflow.onnx.log_model(onnx.load(str(MODELS / "iris-v2" / "model.onnx")), name="model",
                                             registered_model_name="az-iris", pip_requirements=["onnxruntime"])
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
        v = client.get_model_version("az-iris", info.registered_model_version)
        assert (v.status, v.status_message or "") == ("READY", ""), v  # test-loaded, not skipped
        from azure.storage.blob import BlobServiceClient

        names = [b.name for b in BlobServiceClient.from_connection_string(azurite)
                 .get_container_client("models").list_blobs(name_starts_with=f"proxy/{exp_id}/")]
        assert any(n.endswith("/model.onnx") for n in names), names
        got = mlflow.artifacts.download_artifacts(artifact_uri=client.get_model_version_download_uri(
            "az-iris", v.version), dst_path=str(tmp_path / "dl"), tracking_uri=srv.url)
        assert (open(os.path.join(got, "model.onnx"), "rb").read()
                == open(MODELS / "iris-v2" / "model.onnx", "rb").read())
        assert not [p for p in (srv.data_dir / "artifacts").rglob("*") if p.is_file()]
    finally:
        srv.stop()


# --- the embedded registry of a server whose artifacts are in a bucket ------------------------

RECORDED = f"s3://{BUCKET}/recorded"


@pytest.fixture(scope="module")
def recorded(regserve_bin, moto, tmp_path_factory):
    """A `regserve server --artifacts-destination s3://…/recorded` on data dir D, stopped after
    the MLflow client logged and registered `rec-iris` version 1 through its proxy: the version
    is only in the bucket. Yields D."""
    data_dir = tmp_path_factory.mktemp("recorded")
    srv = RegserveServer(regserve_bin, data_dir, extra_args=["--artifacts-destination", RECORDED], env=s3_env(moto))
    try:
        mlflow.set_tracking_uri(srv.url)
        mlflow.set_registry_uri(srv.url)
        try:
            with mlflow.start_run():
                info = mlflow.onnx.log_model(onnx.load(str(MODELS / "iris-v1" / "model.onnx")), name="model",
                                             registered_model_name="rec-iris", pip_requirements=["onnxruntime"])
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
        assert info.registered_model_version == "1"
    finally:
        srv.stop()
    yield data_dir


def recorded_destination(data_dir):
    with sqlite3.connect(data_dir / "registry.db") as db:
        row = db.execute("SELECT value FROM server_settings WHERE key = 'artifacts_destination'").fetchone()
    return row and row[0]


def embedded_cli(binary, data_dir, *args, env):
    """`regserve --data-dir D ARGS` with only `env`'s cloud credentials."""
    child = {k: v for k, v in child_env(RUST_LOG="warn").items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}
    child.update(env)
    return subprocess.run([binary, "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL, env=child)


def local_files(data_dir):
    return [p for p in (data_dir / "artifacts").rglob("*") if p.is_file()]


def test_the_embedded_cli_and_serve_read_the_bucket_the_server_recorded(regserve_bin, moto, recorded, tmp_path):
    assert recorded_destination(recorded) == RECORDED
    keys = keys_under(moto, "recorded/")
    assert any(k.endswith("/model.onnx") for k in keys), keys
    assert not local_files(recorded), local_files(recorded)  # no local copy to fall back on
    shutil.rmtree(recorded / "cache", ignore_errors=True)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"inputs": [ROW]}))

    out = embedded_cli(regserve_bin, recorded, "predict", "-m", "models:/rec-iris/1", "--input", str(payload),
                       env=s3_env(moto))
    assert out.returncode == 0, out.stderr
    got = np.array(json.loads(out.stdout)["predictions"]["probabilities"][0])
    np.testing.assert_allclose(got, iris_reference("iris-v1"), atol=1e-5)
    # Downloaded into the data dir's cache, not into the artifact root.
    assert [p.name for p in (recorded / "cache").rglob("model.onnx")] == ["model.onnx"]
    assert not local_files(recorded)

    # `serve` on the same registry (sqlite:///…), with a cache of its own.
    serve = Serve(regserve_bin, tmp_path / "serve", f"sqlite:///{recorded / 'registry.db'}", "models:/rec-iris/1",
                  s3_env(moto))
    try:
        serve.wait_version(1)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v1"), atol=1e-5)
    finally:
        serve.stop()
    assert list((tmp_path / "serve" / "cache").rglob("model.onnx"))


def test_a_recorded_bucket_with_wrong_credentials_is_a_clear_error(regserve_bin, moto, recorded, tmp_path):
    shutil.rmtree(recorded / "cache", ignore_errors=True)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"inputs": [ROW]}))
    secret = "wrongSecretKey0123456789abcdefXYZ"
    env = dict(s3_env(moto), AWS_SECRET_ACCESS_KEY=secret)
    out = embedded_cli(regserve_bin, recorded, "predict", "-m", "models:/rec-iris/1", "--input", str(payload),
                       env=env)
    assert out.returncode != 0, out.stdout
    assert f"s3://{BUCKET}" in out.stderr, out.stderr
    assert "AWS_ACCESS_KEY_ID" in out.stderr and "AWS_SECRET_ACCESS_KEY" in out.stderr, out.stderr
    assert "recorded in the registry" in out.stderr, out.stderr
    for leaked in (secret, moto.keys["AWS_SECRET_ACCESS_KEY"]):
        assert leaked not in out.stderr + out.stdout
    # Commands that need no files are not held up by the bucket.
    out = embedded_cli(regserve_bin, recorded, "models", "show", "rec-iris", "--json", env=env)
    assert out.returncode == 0, out.stderr


def test_the_flag_overrides_the_recorded_bucket_and_the_last_server_started_wins(regserve_bin, moto, recorded,
                                                                                 tmp_path):
    shutil.rmtree(recorded / "cache", ignore_errors=True)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"inputs": [ROW]}))
    other = f"s3://{BUCKET}/other"
    out = embedded_cli(regserve_bin, recorded, "predict", "-m", "models:/rec-iris/1", "--input", str(payload),
                       "--artifacts-destination", other, env=s3_env(moto))
    assert out.returncode != 0, out.stdout
    assert other in out.stderr and "not found" in out.stderr.lower(), out.stderr
    out = embedded_cli(regserve_bin, recorded, "predict", "-m", "models:/rec-iris/1", "--input", str(payload),
                       "--artifacts-destination", "/tmp/somewhere", env=s3_env(moto))
    assert out.returncode != 0 and "takes a bucket" in out.stderr and "/tmp/somewhere" in out.stderr, out.stderr

    # A server started on the same registry with another destination warns, and records its own.
    srv = RegserveServer(regserve_bin, recorded, extra_args=["--artifacts-destination", other], env=s3_env(moto))
    srv.stop()
    log = "".join(srv.log)
    assert "ARTIFACTS DESTINATION CHANGED" in log and RECORDED in log and other in log, log[-3000:]
    assert recorded_destination(recorded) == other
    # Started with the data dir's own root, it records that root.
    srv = RegserveServer(regserve_bin, recorded, extra_args=[], env=s3_env(moto))
    srv.stop()
    assert recorded_destination(recorded) == f"file://{(recorded / 'artifacts').resolve()}"
    # Then the CLI reads the local root again (where this version is not).
    out = embedded_cli(regserve_bin, recorded, "predict", "-m", "models:/rec-iris/1", "--input", str(payload),
                       env=s3_env(moto))
    assert out.returncode != 0 and "not found" in out.stderr.lower(), out.stderr
    srv = RegserveServer(regserve_bin, recorded, extra_args=["--artifacts-destination", RECORDED], env=s3_env(moto))
    srv.stop()
    assert recorded_destination(recorded) == RECORDED
