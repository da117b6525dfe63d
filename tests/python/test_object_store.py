"""`regserve serve` follows a production-style MLflow server whose artifacts live in object storage.

A real `mlflow server` runs with `--default-artifact-root s3://…` (or `wasbs://…`) and
`--no-serve-artifacts`, so the MLflow client uploads straight to the bucket and every version's
download URI is a bucket URI; regserve must read the bucket itself, with its own credentials.

Servers, all started here on 127.0.0.1 from the packages the test setup installs:
- moto's S3 server (PyPI `moto[server]`, as MLflow's own tests use), with IAM authentication on,
  so a wrong secret key is refused as by AWS;
- a relay between regserve and moto (a plain TCP forwarder of this file) that slows the link, so
  a download is surely under way when the test stops the S3 server, and counts concurrent
  connections, so the concurrent downloads are seen from outside;
- Azurite (npm `azurite`, installed into tests/objectstore/node_modules with `npm ci`).

GCS: `object_store` lists with GCS's XML API (`GET /<bucket>?list-type=2`), which
`gcp-storage-emulator` (PyPI) answers with 501, so gs:// is covered by the Rust unit tests of
src/artifact/store.rs (URL, configuration, errors) only.
"""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, REPO, child_env, stop_group
from test_follow import MlflowServer, free_port, wait_http

BUCKET = "regserve-models"
ROW = [6.0, 2.2, 5.0, 1.5]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_BODY = {"dataframe_split": {"columns": COLUMNS, "data": [ROW]}}
AZURITE_DIR = REPO / "tests" / "objectstore"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# --- servers ---------------------------------------------------------------------------------


class Moto:
    """moto's S3 server with IAM authentication; `keys` are a user's real access keys."""

    def __init__(self, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(pathlib.Path(workdir) / "moto.log", "a")
        # The first three calls (creating the user, its key and its policy) are unauthenticated;
        # every later one is checked against IAM, signature included.
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/moto-api/", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        import boto3

        iam = boto3.client("iam", endpoint_url=self.url, aws_access_key_id="setup", aws_secret_access_key="setup",
                           region_name="us-east-1")
        iam.create_user(UserName="regserve")
        key = iam.create_access_key(UserName="regserve")["AccessKey"]
        iam.put_user_policy(UserName="regserve", PolicyName="all", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'))
        self.keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                     "AWS_DEFAULT_REGION": "us-east-1"}
        self.s3().create_bucket(Bucket=BUCKET)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.keys["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def pause(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused server must hear the SIGTERM
        stop_group(self.proc)


class Relay:
    """A TCP forwarder to `target_port` that sends at most `rate` bytes/s per connection towards
    the client, counts the most connections sending answers at once (`max_busy`: sent within the
    last 0.5 s), and can drop every connection."""

    def __init__(self, target_port, rate=None):
        self.target_port, self.rate = target_port, rate
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.conns = set()
        self.last_sent = {}  # answer pipe -> when it last sent
        self.max_busy = 0
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.update([client, upstream])
            threading.Thread(target=self.pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client, self.rate), daemon=True).start()

    def pipe(self, src, dst, rate):
        started, sent = time.monotonic(), 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if rate:
                    now = time.monotonic()
                    with self.lock:
                        self.last_sent[src] = now
                        busy = sum(1 for t in self.last_sent.values() if now - t < 0.5)
                        self.max_busy = max(self.max_busy, busy)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                self.last_sent.pop(src, None)
                self.conns.discard(src)
                self.conns.discard(dst)

    def drop_all(self):
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset_max(self):
        with self.lock:
            self.max_busy = 0

    def close(self):
        self.closed = True
        self.sock.close()
        self.drop_all()


class Serve:
    """`regserve serve -m <uri> --registry-uri <mlflow>` with an environment of its own."""

    def __init__(self, binary, data_dir, registry_url, model_uri, env, poll="1s"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = pathlib.Path(data_dir) / "serve.log"
        self.log = open(self.log_path, "a")
        args = [binary, "--data-dir", str(data_dir), "serve", "-m", model_uri, "--registry-uri", registry_url,
                "--port", str(self.port), "--poll-interval", poll]
        full_env = {k: v for k, v in child_env(RUST_LOG="info").items()
                    if not k.startswith(("AWS_", "AZURE_", "MLFLOW_S3_"))}
        full_env.update(env)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=full_env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code in (200, 503):
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, self.output()
            time.sleep(0.1)
        raise RuntimeError(f"serve did not start: {self.output()}")

    def health(self):
        return requests.get(self.url + "/health", headers={"Accept": "application/json"}, timeout=5).json()["models"][0]

    def metric(self, name):
        text = requests.get(self.url + "/metrics", timeout=5).text
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def wait_version(self, version, timeout=60):
        deadline = time.monotonic() + timeout
        h = None
        while time.monotonic() < deadline:
            h = self.health()
            if h.get("version") == version:
                return h
            time.sleep(0.2)
        raise AssertionError(f"version {version} not in service after {timeout} s: {h}\n{self.output()}")

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


# --- models ----------------------------------------------------------------------------------


def weights_model(offset, n):
    """y = x + W1[0:4] + W2[0:4], with W1 and W2 of `n` floats each (large: external data);
    W1[0:4] = offset, so versions answer differently."""
    rng = np.random.default_rng(int(offset * 10) + n)
    w1 = rng.random(n, dtype=np.float32)
    w2 = rng.random(n, dtype=np.float32)
    w1[:4] = offset
    w2[:4] = 0.5
    idx = np.arange(4, dtype=np.int64)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["W1", "idx"], ["g1"], axis=0),
         helper.make_node("Gather", ["W2", "idx"], ["g2"], axis=0),
         helper.make_node("Add", ["x", "g1"], ["s"]),
         helper.make_node("Add", ["s", "g2"], ["y"])],
        "weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(idx, "idx")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def expected_weights_answer(offset):
    return [v + offset + 0.5 for v in ROW]


def iris_reference(version_dir):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(MODELS / version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"float_input": np.array([ROW], dtype=np.float32)})[1][0]


def iris_probabilities(serve):
    r = requests.post(serve.url + "/invocations", json=IRIS_BODY, timeout=10)
    assert r.status_code == 200, r.text
    return np.array(r.json()["predictions"][0]["probabilities"])


def weights_answer(serve):
    r = requests.post(serve.url + "/invocations", json={"inputs": [ROW]}, timeout=10)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    if isinstance(predictions, dict):  # named outputs, as MLflow answers tensor input
        predictions = predictions["y"]
    return np.array(predictions[0])


def forget_s3_clients():
    """Make the MLflow client read the credentials in the environment again. boto3's default
    session keeps the credentials it first found in the environment, and MLflow caches one boto3
    client per endpoint (`_cached_get_s3_client`): without this, a test's client would sign with
    the keys of an earlier test's moto (each moto makes its own), which the new one refuses."""
    import boto3
    from mlflow.store.artifact.s3_artifact_repo import _cached_get_s3_client

    boto3.DEFAULT_SESSION = None
    _cached_get_s3_client.cache_clear()


class EnvPatch:
    """Set variables in this process (the MLflow client reads them) and restore them."""

    def __init__(self, **env):
        self.env, self.saved = env, {}

    def __enter__(self):
        for k, v in self.env.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v
        forget_s3_clients()
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        forget_s3_clients()


def log_versions(mlflow_url, name, models, artifact_location=None, **save_args):
    """Log each ONNX model with the real MLflow client (uploads go straight to the bucket) and
    register it as the next version of `name`; returns the client."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_registry_uri(mlflow_url)
    try:
        exp = client.create_experiment(f"{name}-{uuid.uuid4().hex[:8]}", artifact_location=artifact_location)
        for model in models:
            with mlflow.start_run(experiment_id=exp):
                mlflow.onnx.log_model(model, name="model", registered_model_name=name,
                                      input_example=np.array([ROW], dtype=np.float32),
                                      pip_requirements=["onnxruntime"],  # no slow requirement inference
                                      **save_args)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
    return client


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def s3_mlflow(moto, tmp_path_factory):
    """A real `mlflow server` handing out s3:// artifact URIs (--no-serve-artifacts)."""
    work = tmp_path_factory.mktemp("mlflow-s3")
    env = dict(moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url)
    with EnvPatch(**env):  # the server and the client (this process) upload with these
        srv = MlflowServer(work)
        srv.extra_args = ["--default-artifact-root", f"s3://{BUCKET}/mlruns", "--no-serve-artifacts"]
        start_mlflow(srv)
        try:
            yield srv
        finally:
            srv.stop()


def start_mlflow(srv):
    """MlflowServer.start with `srv.extra_args` instead of its --artifacts-destination."""
    venv_bin = os.path.dirname(sys.executable)
    env = child_env(PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))
    srv.log = open(srv.workdir / "mlflow-server.log", "a")
    srv.proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(srv.port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{srv.workdir / 'mlflow.db'}", *srv.extra_args],
        stdout=srv.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    wait_http(srv.url + "/health", timeout=120)


# --- S3 --------------------------------------------------------------------------------------


def test_serve_follows_an_s3_registry_and_hot_swaps(regserve_bin, moto, s3_mlflow, tmp_path):
    with EnvPatch(**moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url):
        client = log_versions(s3_mlflow.url, "iris-s3", [onnx.load(str(MODELS / d / "model.onnx"))
                                                         for d in ("iris-v1", "iris-v2")])
    uri = client.get_model_version_download_uri("iris-s3", "1")
    assert uri.startswith(f"s3://{BUCKET}/mlruns/"), uri  # the client reads the bucket itself
    client.set_registered_model_alias("iris-s3", "champion", "1")

    serve = Serve(regserve_bin, tmp_path / "data", s3_mlflow.url, "models:/iris-s3@champion",
                  dict(moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url))
    try:
        serve.wait_version(1)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v1"), atol=1e-5)
        assert serve.metric("regserve_artifact_downloaded_bytes_total") > 0

        client.set_registered_model_alias("iris-s3", "champion", "2")
        serve.wait_version(2, timeout=30)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v2"), atol=1e-5)
        assert serve.health().get("last_error") is None
    finally:
        serve.stop()
    # Complete downloads only, each with its record.
    cached = [p for p in (tmp_path / "data" / "cache").rglob("entry.json")]
    assert len(cached) == 2, cached
    assert not list((tmp_path / "data" / "cache").rglob(".partial-*"))


def test_s3_cut_off_mid_download_keeps_the_old_version_and_swaps_when_back(regserve_bin, moto, s3_mlflow, tmp_path):
    """A multi-file model (ONNX with external weights, ~32 MB) fetched with concurrent downloads
    through a slowed link; the S3 server is stopped while the download runs."""
    small, big = weights_model(1.0, 512), weights_model(2.0, 4_000_000)
    with EnvPatch(**moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url):
        # One external data file per tensor (onnx.save_model's option): two large files.
        client = log_versions(s3_mlflow.url, "weights-s3", [small, big], all_tensors_to_one_file=False)
    client.set_registered_model_alias("weights-s3", "champion", "1")
    files = moto.s3().list_objects_v2(Bucket=BUCKET, Prefix="mlruns/")["Contents"]
    assert sum(o["Size"] > 10_000_000 for o in files) == 2, "the weights are not in two external data files"

    relay = Relay(moto.port, rate=4_000_000)
    env = dict(moto.keys, MLFLOW_S3_ENDPOINT_URL=relay.url,
               MLFLOW_HTTP_REQUEST_TIMEOUT="3", MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    serve = Serve(regserve_bin, tmp_path / "data", s3_mlflow.url, "models:/weights-s3@champion", env)
    try:
        serve.wait_version(1)
        np.testing.assert_allclose(weights_answer(serve), expected_weights_answer(1.0), atol=1e-6)
        before = serve.metric("regserve_artifact_downloaded_bytes_total")
        relay.reset_max()

        client.set_registered_model_alias("weights-s3", "champion", "2")
        deadline = time.monotonic() + 30
        while serve.metric("regserve_artifact_downloaded_bytes_total") < before + 4_000_000:
            assert time.monotonic() < deadline, serve.output()
            time.sleep(0.05)
        assert relay.max_busy >= 2, f"the weight files were not downloaded concurrently (max {relay.max_busy})"
        moto.pause()  # the S3 server stops answering, mid-download
        relay.drop_all()

        deadline = time.monotonic() + 45
        while True:
            h = serve.health()
            np.testing.assert_allclose(weights_answer(serve), expected_weights_answer(1.0), atol=1e-6)
            if h.get("last_error"):
                break
            assert time.monotonic() < deadline, f"no error in /health: {h}\n{serve.output()}"
            time.sleep(0.2)
        assert h["version"] == 1
        assert f"s3://{BUCKET}" in h["last_error"], h
        assert not list((tmp_path / "data" / "cache").rglob("2/entry.json")), "a partial download was kept"

        moto.resume()
        serve.wait_version(2, timeout=90)
        np.testing.assert_allclose(weights_answer(serve), expected_weights_answer(2.0), atol=1e-6)
        assert serve.health().get("last_error") is None
        assert "downloading" in serve.output()
    finally:
        moto.resume()
        serve.stop()
        relay.close()


def test_wrong_s3_credentials_name_the_bucket_and_the_fix_and_no_secret(regserve_bin, moto, s3_mlflow, tmp_path):
    with EnvPatch(**moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url):
        client = log_versions(s3_mlflow.url, "iris-denied", [onnx.load(str(MODELS / "iris-v1" / "model.onnx"))])
    client.set_registered_model_alias("iris-denied", "champion", "1")
    secret = "wrong-" + uuid.uuid4().hex
    env = dict(moto.keys, AWS_SECRET_ACCESS_KEY=secret, MLFLOW_S3_ENDPOINT_URL=moto.url,
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    serve = Serve(regserve_bin, tmp_path / "data", s3_mlflow.url, "models:/iris-denied@champion", env)
    try:
        deadline = time.monotonic() + 30
        while not (h := serve.health()).get("last_error"):
            assert time.monotonic() < deadline, serve.output()
            time.sleep(0.2)
        error = h["last_error"]
        assert f"s3://{BUCKET}" in error and "AWS_SECRET_ACCESS_KEY" in error, error
        r = requests.post(serve.url + "/invocations", json=IRIS_BODY, timeout=10)
        assert r.status_code == 503, r.text
        outputs = [error, r.text, requests.get(serve.url + "/health", timeout=5).text,
                   requests.get(serve.url + "/metrics", timeout=5).text, serve.output()]
        assert "denied" in serve.output() or "refused" in serve.output(), serve.output()
    finally:
        serve.stop()
    outputs.append(serve.output())
    # predict (the CLI) says the same on stderr, also without the secret.
    predict = subprocess.run(
        [regserve_bin, "--data-dir", str(tmp_path / "cli"), "predict", "-m", "models:/iris-denied/1",
         "-i", "-", "--registry-uri", s3_mlflow.url],
        input='{"dataframe_split": {"columns": %s, "data": [%s]}}' % (str(COLUMNS).replace("'", '"'), ROW),
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in child_env().items() if not k.startswith("AWS_")}, **env},
    )
    assert predict.returncode != 0
    assert f"s3://{BUCKET}" in predict.stderr, predict.stderr
    outputs += [predict.stdout, predict.stderr]
    for text in outputs:
        assert secret not in text


def test_s3_credentials_from_a_profile_file(regserve_bin, moto, s3_mlflow, tmp_path):
    """AWS_PROFILE and AWS_SHARED_CREDENTIALS_FILE, as boto3 reads them (static keys)."""
    with EnvPatch(**moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url):
        client = log_versions(s3_mlflow.url, "iris-profile", [onnx.load(str(MODELS / "iris-v2" / "model.onnx"))])
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n"
                     f"[models]\naws_access_key_id = {moto.keys['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {moto.keys['AWS_SECRET_ACCESS_KEY']}\n")
    env = {"AWS_PROFILE": "models", "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "MLFLOW_S3_ENDPOINT_URL": moto.url}
    serve = Serve(regserve_bin, tmp_path / "data", s3_mlflow.url, "models:/iris-profile/1", env)
    try:
        serve.wait_version(1)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v2"), atol=1e-5)
    finally:
        serve.stop()
    assert client.get_model_version("iris-profile", "1").status == "READY"


# --- Azure Blob (Azurite) --------------------------------------------------------------------


def azurite_bin():
    """tests/objectstore/node_modules/.bin/azurite-blob, installed with `npm ci` when missing."""
    exe = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists():
        if not shutil.which("npm"):
            pytest.fail("npm is needed to install Azurite (tests/objectstore/package-lock.json)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AZURITE_DIR, check=True,
                       timeout=600)
    return exe


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    exe = azurite_bin()
    work = tmp_path_factory.mktemp("azurite")
    port = free_port()
    log = open(work / "azurite.log", "a")
    proc = subprocess.Popen([str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(work),
                             "--skipApiVersionCheck", "--loose", "--silent"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    cs = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
          f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (work / "azurite.log").read_text()
            time.sleep(0.2)
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(cs).create_container("models")
    try:
        yield cs
    finally:
        # It waits for idle connections; its data is temporary: 5 s, then SIGKILL.
        stop_group(proc, grace_s=5)


def test_serve_follows_an_azure_blob_registry(regserve_bin, azurite, s3_mlflow, tmp_path):
    """An experiment whose artifact location is a wasbs:// container (the server's default root
    is S3; MLflow takes the experiment's)."""
    root = "wasbs://models@devstoreaccount1.blob.core.windows.net/mlruns"
    with EnvPatch(AZURE_STORAGE_CONNECTION_STRING=azurite):
        client = log_versions(s3_mlflow.url, "iris-az", [onnx.load(str(MODELS / d / "model.onnx"))
                                                         for d in ("iris-v1", "iris-v2")], artifact_location=root)
    assert client.get_model_version_download_uri("iris-az", "1").startswith(root)
    client.set_registered_model_alias("iris-az", "champion", "1")
    serve = Serve(regserve_bin, tmp_path / "data", s3_mlflow.url, "models:/iris-az@champion",
                  {"AZURE_STORAGE_CONNECTION_STRING": azurite})
    try:
        serve.wait_version(1)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v1"), atol=1e-5)
        client.set_registered_model_alias("iris-az", "champion", "2")
        serve.wait_version(2, timeout=30)
        np.testing.assert_allclose(iris_probabilities(serve), iris_reference("iris-v2"), atol=1e-5)
        key = re.search(r"AccountKey=([^;]+)", azurite).group(1)
        assert key not in serve.output()
    finally:
        serve.stop()
