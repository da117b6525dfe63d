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
  or a real `mlflow server`'s) hands out.

The S3 server is moto's (PyPI `moto[server]`), started here on 127.0.0.1 with IAM
authentication on (see test_object_store.py's `Moto`).
"""

import os
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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite),
         # The one test that runs `regserve predict` on the server's --data-dir (the embedded
         # store, in the CLI's process): that reads the data dir's own artifact root, not the
         # server's bucket (documented; against the server, `--registry-uri` reads through it).
         "-k", "not test_the_cli_sees_the_same_registry"],
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
