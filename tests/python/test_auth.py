"""Authentication on `regserve server`, with the real MLflow client and a `serve` following it.

With a token set (REGSERVE_AUTH_TOKEN), every write needs `Authorization: Bearer <token>`;
with `--auth-reads` every read too; `/health` and `/version` stay open. The MLflow client
sends the token from MLFLOW_TRACKING_TOKEN, and so does `regserve serve --registry-uri`.
"""

import os
import subprocess
import time

import numpy as np
import onnx
import pytest
import requests

from conftest import MODELS, child_env
from test_follow import Serve, free_port, wait_http

TOKEN = "t0ken-for-tests-4f2a"


class ProtectedServer:
    def __init__(self, binary, data_dir, auth_reads):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [binary, "--data-dir", str(data_dir), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        if auth_reads:
            args.append("--auth-reads")
        env = child_env(REGSERVE_AUTH_TOKEN=TOKEN, RUST_LOG="debug")
        self.log_path = data_dir / "server.log"
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"), stdin=subprocess.DEVNULL)
        wait_http(self.url + "/health")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def token_env():
    """Set MLFLOW_TRACKING_TOKEN for the client; restore afterwards."""
    old = os.environ.get("MLFLOW_TRACKING_TOKEN")

    def set_token(value):
        if value is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = value

    yield set_token
    set_token(old)


@pytest.mark.parametrize("auth_reads", [False, True])
def test_mlflow_client_and_serve_with_a_token(regserve_bin, tmp_path, token_env, auth_reads):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    srv = ProtectedServer(regserve_bin, tmp_path, auth_reads)
    try:
        client = MlflowClient(tracking_uri=srv.url, registry_uri=srv.url)
        # Open whatever the policy.
        assert requests.get(srv.url + "/health").status_code == 200
        assert requests.get(srv.url + "/version").status_code == 200

        # Writes without the token: 401 with a WWW-Authenticate challenge.
        token_env(None)
        r = requests.post(srv.url + "/api/2.0/mlflow/registered-models/create", json={"name": "x"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        with pytest.raises(MlflowException):
            client.create_registered_model("iris")
        token_env("wrong")
        with pytest.raises(MlflowException):
            client.create_registered_model("iris")

        # With MLFLOW_TRACKING_TOKEN the client's whole workflow works.
        token_env(TOKEN)
        mlflow.set_tracking_uri(srv.url)
        mlflow.set_registry_uri(srv.url)
        with mlflow.start_run():
            mlflow.onnx.log_model(onnx.load(str(MODELS / "iris-v1" / "model.onnx")), name="model", registered_model_name="iris",
                                  input_example=np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
        client.transition_model_version_stage("iris", "1", "Production")
        assert client.get_registered_model("iris").name == "iris"

        # Reads without the token: open unless --auth-reads.
        token_env(None)
        r = requests.get(srv.url + "/api/2.0/mlflow/registered-models/get", params={"name": "iris"})
        assert r.status_code == (401 if auth_reads else 200), r.text

        # `serve` against the protected registry uses MLFLOW_TRACKING_TOKEN too.
        token_env(TOKEN)
        serve = Serve(regserve_bin, tmp_path / "serve-data", srv.url)
        try:
            body = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
            assert requests.post(serve.url + "/invocations", json=body).json()["predictions"]["label"] == [0]
        finally:
            serve.stop()
        if auth_reads:
            # Without the token, a follower cannot read the registry: not ready, and says why.
            token_env(None)
            port = free_port()
            env = child_env()
            p = subprocess.Popen([regserve_bin, "--data-dir", str(tmp_path / "serve2"), "serve", "-m", "models:/iris/Production",
                                  "--port", str(port), "--registry-uri", srv.url], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_http(f"http://127.0.0.1:{port}/version")
                time.sleep(1.5)
                assert requests.get(f"http://127.0.0.1:{port}/ping").status_code == 503
                h = requests.get(f"http://127.0.0.1:{port}/health", headers={"Accept": "application/json"}).json()
                assert h["models"][0].get("last_error"), h
            finally:
                p.terminate()
                p.wait(20)
    finally:
        srv.stop()
    assert TOKEN not in srv.log_path.read_text(), "the token must never appear in the server log"
