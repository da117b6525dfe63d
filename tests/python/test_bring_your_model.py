"""Bring your model (issue 12, item 12): models that are not ONNX yet.

- A version logged with `mlflow.sklearn.log_model(..., registered_model_name=...)` registers as it
  does on a real `mlflow server` (READY, its files load back with `mlflow.pyfunc.load_model`);
  regserve's `status_message` and `regserve serve`'s `/health` name the fix (skl2onnx,
  `mlflow.onnx.log_model`, README "Bring your model"). `serve` following it logs the failure
  once and does not load it again at every poll, on a remote registry and on the embedded store;
  when the alias moves to an ONNX version, that one is served at once.
- The recipes of README "Bring your model" (scikit-learn, XGBoost, LightGBM) run as written
  there, against `regserve server`; `regserve serve` answers as the framework predicts, within
  1e-5. (The PyTorch recipe is not run: see the README for why.)
"""

import re
import subprocess
import threading
import time

import numpy as np
import pytest
import requests

from conftest import REPO, child_env
from test_follow import free_port

README = REPO / "README.md"
POLL = "200ms"
# How long `serve` follows the unservable version: checks every 0.2 s, 0.4, 0.8, then 1.6 s (a
# failing URI is re-resolved a little faster than the poll, then backs off to 8 polls), so about
# 9 checks; and past the 5 s after which a failed load used to be tried again (it was also
# logged at every check).
FOLLOW_S = 9.0


class Serving:
    """`regserve serve -m URI` with its log collected (it may never become ready)."""

    def __init__(self, binary, uri, data_dir, registry_uri=None):
        self.url = f"http://127.0.0.1:{free_port()}"
        args = [binary, "--data-dir", str(data_dir), "serve", "-m", uri, "--host", "127.0.0.1",
                "--port", self.url.rsplit(":", 1)[1], "--poll-interval", POLL, "--sessions", "1"]
        if registry_uri:
            args += ["--registry-uri", registry_uri]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=child_env(RUST_LOG="info"))
        self.lines = []
        self.listening = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.lines.append(line)
                if "listening on http://" in line:
                    self.listening.set()

        threading.Thread(target=drain, daemon=True).start()
        if not self.listening.wait(60):
            self.stop()
            raise RuntimeError("regserve serve did not start:\n" + self.log())

    def log(self):
        return "".join(self.lines)

    def health(self):
        r = requests.get(self.url + "/health", headers={"Accept": "application/json"}, timeout=10)
        return r.status_code, r.json()["models"][0]

    def wait_health(self, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, model = self.health()
            if pred(status, model):
                return model
            time.sleep(0.1)
        raise AssertionError(f"/health never got there: {self.health()}\n{self.log()}")

    def failed_loads(self, name):
        text = requests.get(self.url + "/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("regserve_model_loads_total{") and f'model="{name}"' in line and 'outcome="failure"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


def test_a_model_that_is_not_onnx_registers_as_in_mlflow_and_serve_says_what_to_do(
        pair, server, regserve_bin, iris_v1, tmp_path):
    import mlflow
    import mlflow.onnx
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    model = LogisticRegression(max_iter=300).fit(X, y)
    name = "byom-sklearn"
    versions = {}
    try:
        for url in (pair.ref_url, pair.our_url):
            mlflow.set_tracking_uri(url)
            mlflow.set_registry_uri(url)
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
            versions[url] = info.registered_model_version
    finally:
        mlflow.set_tracking_uri(server.url)
        mlflow.set_registry_uri(server.url)
    ref_client, our_client = pair.clients()
    ref_mv = ref_client.get_model_version(name, versions[pair.ref_url])
    our_mv = our_client.get_model_version(name, versions[pair.our_url])
    # Registered as MLflow registers it: READY; the files load back as the sklearn model.
    assert (our_mv.status, our_mv.version) == (ref_mv.status, ref_mv.version) == ("READY", "1")
    assert not ref_mv.status_message
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    np.testing.assert_array_equal(loaded.predict(X[:5]), model.predict(X[:5]))
    # regserve says, in the version, why it is not served and what to do.
    msg = our_mv.status_message
    assert msg.startswith("not test-loaded: not an ONNX model (MLmodel flavors: python_function, sklearn)"), msg
    for hint in ("skl2onnx", "mlflow.onnx.log_model", '"Bring your model"'):
        assert hint in msg, msg

    our_client.set_registered_model_alias(name, "champion", "1")
    uri = f"models:/{name}@champion"
    # Followed on the remote registry (REST + download cache) and on the embedded store (the
    # same SQLite file, files read in place), both at a 200 ms poll.
    remote = Serving(regserve_bin, uri, tmp_path / "remote", registry_uri=server.url)
    embedded = Serving(regserve_bin, uri, server.data_dir)
    try:
        for serving in (remote, embedded):
            model_status = serving.wait_health(lambda st, m: m.get("last_error"))
            assert model_status["ready"] is False
            public = model_status["last_error"]
            assert "not an ONNX model (MLmodel flavors: python_function, sklearn)" in public, public
            assert "skl2onnx" in public and "mlflow.onnx.log_model" in public, public
            assert "/" not in public.split("ONNX model")[0], "no local paths in /health: " + public
        time.sleep(FOLLOW_S)
        for label, serving in (("remote", remote), ("embedded", embedded)):
            status, model_status = serving.health()
            assert status == 503 and "skl2onnx" in model_status["last_error"], (label, model_status)
            # Checks later: loaded (fetched, MLmodel read) once, logged once.
            warnings = [ln for ln in serving.lines if "model check failed" in ln]
            assert len(warnings) == 1, (label, serving.log())
            assert "skl2onnx" in warnings[0], warnings[0]
            assert serving.failed_loads(name) == 1, (label, serving.log())

        # Converted and logged as the error says: the alias moves, and the new version is
        # served at once (the wait on the sklearn version does not hold it back).
        info = mlflow.onnx.log_model(iris_v1, name="model", registered_model_name=name)
        assert info.registered_model_version == "2"
        our_client.set_registered_model_alias(name, "champion", "2")
        for label, serving in (("remote", remote), ("embedded", embedded)):
            started = time.monotonic()
            model_status = serving.wait_health(lambda st, m: st == 200 and m.get("version") == 2, timeout=30)
            assert time.monotonic() - started < 10, label
            assert "last_error" not in model_status, model_status
            r = requests.post(serving.url + "/invocations", json={"inputs": X[:3].tolist()}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["predictions"]["label"] == model.predict(X[:3]).tolist()
    finally:
        remote.stop()
        embedded.stop()


# --- The README's recipes ---------------------------------------------------------------------

RECIPES = {"scikit-learn": "iris-sklearn", "XGBoost": "iris-xgboost", "LightGBM": "iris-lightgbm"}


def readme_section():
    text = README.read_text()
    start = text.index("\n## Bring your model\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def python_blocks(section):
    """(the paragraph before it, code) for each ```python block of the section."""
    out = []
    for m in re.finditer(r"```python\n(.*?)```", section, re.S):
        before = section[: m.start()].rstrip().rsplit("\n\n", 1)[-1]
        out.append((before, m.group(1)))
    return out


def recipe(framework):
    section = readme_section()
    blocks = python_blocks(section)
    check = next(code for before, code in blocks if "requests.post" in code)
    train = [code for before, code in blocks if before.startswith(f"**{framework}**")]
    assert len(train) == 1, f"README 'Bring your model' has no single {framework} recipe"
    serve = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert "regserve serve -m models:/iris-sklearn@champion --registry-uri http://127.0.0.1:5000" in serve
    return train[0], check


@pytest.mark.parametrize("framework", list(RECIPES))
def test_readme_recipe_logs_promotes_and_serves_as_the_framework_predicts(
        framework, server, regserve_bin, tmp_path, monkeypatch):
    import mlflow

    train, check = recipe(framework)
    name = RECIPES[framework]
    assert f'registered_model_name="{name}"' in train
    monkeypatch.chdir(tmp_path)
    namespace = {}
    try:
        exec(compile(train.replace("http://127.0.0.1:5000", server.url), f"README {framework}", "exec"), namespace)
    finally:
        mlflow.set_tracking_uri(server.url)
    serving = Serving(regserve_bin, f"models:/{name}@champion", tmp_path / "serve", registry_uri=server.url)
    try:
        serving.wait_health(lambda st, m: st == 200 or m.get("last_error"))
        status, model_status = serving.health()
        assert status == 200, (model_status, serving.log())
        exec(compile(check.replace("http://127.0.0.1:5001", serving.url), "README check", "exec"), namespace)
        # And the labels: the framework's own, row for row, on the whole data set.
        X, model = namespace["X"], namespace["model"]
        r = requests.post(serving.url + "/invocations", json={"inputs": X.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert predictions["label"] == model.predict(X).tolist()
        np.testing.assert_allclose(predictions["probabilities"], model.predict_proba(X), atol=1e-5, rtol=0)
    finally:
        serving.stop()
