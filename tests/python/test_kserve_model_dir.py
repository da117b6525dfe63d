"""KServe's conventions on `regserve serve`, with the real binary:

- `regserve pull models:/iris@champion DIR` (the storage initializer of a `models:/` storageUri)
  against `regserve server`, then `serve --model_name=… --model_dir=DIR --http_port=…` as the
  KServe runtime spells it: the pulled version answers under the InferenceService's name, then
  the alias moves and serve swaps with no failed request; the registry goes away and serving
  goes on; a pod starting while the registry is away serves what was pulled.
- without a registry named, the pulled version only;
- a directory some other storage initializer filled (an MLflow model folder, a bare .onnx, a
  folder one level down) is served as version 1; a directory with no model, or no name, is a
  clear error at start;
- `pull` refuses a directory it did not write, replaces its own earlier pull, and leaves nothing
  behind when the URI names nothing.
"""

import json
import shutil
import subprocess

import numpy as np
import requests

from conftest import MODELS, child_env, stop_process
from test_follow import ROW, RegserveRegistry, Workers, free_port, reference_probabilities

V2_BODY = {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def cli(regserve_bin, data, *args, env=None, timeout=120):
    return subprocess.run([regserve_bin, "--data-dir", str(data), *args], capture_output=True, text=True,
                          timeout=timeout, env=env or child_env(), stdin=subprocess.DEVNULL)


def register_iris(regserve_bin, data):
    for d in ("iris-v1", "iris-v2"):
        out = cli(regserve_bin, data, "models", "register", str(MODELS / d), "--name", "iris")
        assert out.returncode == 0, out.stderr
    out = cli(regserve_bin, data, "models", "alias", "set", "iris", "champion", "1")
    assert out.returncode == 0, out.stderr


class KServePredictor:
    """`regserve serve` with the arguments of deploy/kserve's runtime: --model_name, --model_dir,
    --http_port (a free port here), on `data` as its own (empty) data dir."""

    def __init__(self, regserve_bin, data, model_dir, name="iris-isvc", registry=None, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        env = child_env(RUST_LOG="info")
        if registry:
            env["MLFLOW_TRACKING_URI"] = registry
        args = [regserve_bin, "--data-dir", str(data), "serve", f"--model_dir={model_dir}",
                f"--http_port={self.port}", "--poll-interval", "500ms", *extra]
        if name:
            args.insert(5, f"--model_name={name}")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=env, text=True)

    def wait_ready(self, timeout=60):
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError("serve never became ready")

    def infer(self):
        r = requests.post(f"{self.url}/v2/models/{self.name}/infer", json=V2_BODY, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        probs = next(o for o in body["outputs"] if o["datatype"] == "FP32")["data"]
        return int(body["model_version"]), np.array(probs, dtype=np.float32)

    def stop(self):
        stop_process(self.proc)


class V2Load(Workers):
    """4 threads scoring /v2/models/{name}/infer in a loop; records failures and versions."""

    def __init__(self, pred, clients=4):
        self.pred, self.failures, self.versions = pred, [], set()
        super().__init__([(self.run, ())] * clients)

    def run(self):
        url = f"{self.pred.url}/v2/models/{self.pred.name}/infer"
        while not self.stop_flag.is_set():
            try:
                r = requests.post(url, json=V2_BODY, timeout=10)
                with self.lock:
                    if r.status_code == 200:
                        self.versions.add(r.json()["model_version"])
                    else:
                        self.failures.append((r.status_code, r.text[:200]))
            except requests.RequestException as e:
                with self.lock:
                    self.failures.append(str(e))


def wait_version(pred, want, timeout=30):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred.infer()[0] == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"version {want} never came into service")


def test_pulled_alias_is_served_under_the_isvc_name_and_followed(regserve_bin, tmp_path):
    data = tmp_path / "registry"
    register_iris(regserve_bin, data)
    registry = RegserveRegistry(regserve_bin, data)
    registry.start()
    pod = tmp_path / "pod"
    models = pod / "mnt-models"
    try:
        out = cli(regserve_bin, pod / "init-data", "--registry-uri", registry.url, "pull", "models:/iris@champion", str(models))
        assert out.returncode == 0, out.stderr
        assert "Pulled version 1 of 'iris'" in out.stdout, out.stdout
        record = json.loads((models / "regserve-source.json").read_text())
        assert record["uri"] == "models:/iris@champion" and record["model_version"]["version"] == "1"
        assert record["registry"] == registry.url
        assert (models / "MLmodel").is_file() and not (models / ".regserve-pull").exists()

        pred = KServePredictor(regserve_bin, pod / "data", models, registry=registry.url)
        try:
            pred.wait_ready()
            v, probs = pred.infer()
            assert v == 1
            np.testing.assert_allclose(probs, reference_probabilities("iris-v1"), rtol=1e-5)
            assert requests.get(f"{pred.url}/v2/models/{pred.name}/ready", timeout=5).status_code == 200
            assert requests.get(f"{pred.url}/v2/models/iris/ready", timeout=5).status_code == 404, "served under the ISVC name only"
            meta = requests.get(f"{pred.url}/v2/models/{pred.name}", timeout=5).json()
            assert meta["name"] == pred.name and meta["versions"] == ["1"]

            # The alias moves while 4 clients score: the pod follows it, nothing fails.
            with V2Load(pred) as load:
                out = cli(regserve_bin, data, "--registry-uri", registry.url, "models", "alias", "set", "iris", "champion", "2")
                assert out.returncode == 0, out.stderr
                wait_version(pred, 2)
            failures, versions = load.failures, load.versions
            assert failures == [], failures[:5]
            assert versions <= {"1", "2"} and "2" in versions
            np.testing.assert_allclose(pred.infer()[1], reference_probabilities("iris-v2"), rtol=1e-5)

            # The registry goes away: the pod keeps serving v2.
            registry.stop()
            for _ in range(5):
                assert pred.infer()[0] == 2
        finally:
            pred.stop()

        # A pod starting while the registry is away serves what was pulled (v1), and is ready.
        late = KServePredictor(regserve_bin, pod / "data2", models, registry=registry.url)
        try:
            late.wait_ready()
            assert late.infer()[0] == 1
            # The registry is back: the pod catches up with the alias (v2).
            registry.start()
            wait_version(late, 2)
        finally:
            late.stop()
    finally:
        registry.stop()


def test_without_a_registry_the_pulled_version_is_served(regserve_bin, tmp_path):
    data = tmp_path / "registry"
    register_iris(regserve_bin, data)
    models = tmp_path / "models"
    # The embedded registry: the files are copied, not moved out of the registry's artifacts.
    out = cli(regserve_bin, data, "pull", "models:/iris/2", str(models))
    assert out.returncode == 0, out.stderr
    assert json.loads((models / "regserve-source.json").read_text())["registry"].startswith("sqlite:///")
    pred = KServePredictor(regserve_bin, tmp_path / "serve-data", models, name=None)
    try:
        pred.name = "iris"  # no --model_name: the registered model's name
        pred.wait_ready()
        assert pred.infer()[0] == 2
        r = requests.get(f"{pred.url}/v2/models/iris/versions/1/ready", timeout=5)
        assert r.status_code == 404
    finally:
        pred.stop()
    # Pulling again replaces the earlier pull.
    out = cli(regserve_bin, data, "pull", "models:/iris@champion", str(models))
    assert out.returncode == 0, out.stderr
    assert json.loads((models / "regserve-source.json").read_text())["model_version"]["version"] == "1"


def test_a_directory_from_another_storage_initializer_is_served_as_version_1(regserve_bin, tmp_path):
    layouts = {
        "mlflow-dir": lambda d: shutil.copytree(MODELS / "iris-v1", d),
        "bare-onnx": lambda d: (d.mkdir(), shutil.copy(MODELS / "iris-v1" / "model.onnx", d / "iris.onnx")),
        "one-level-down": lambda d: (d.mkdir(), shutil.copytree(MODELS / "iris-v1", d / "model")),
    }
    for label, make in layouts.items():
        d = tmp_path / label
        make(d)
        pred = KServePredictor(regserve_bin, tmp_path / f"data-{label}", d, name="fraud")
        try:
            pred.wait_ready()
            v, probs = pred.infer()
            assert v == 1, label
            np.testing.assert_allclose(probs, reference_probabilities("iris-v1"), rtol=1e-5)
        finally:
            pred.stop()


def test_bad_model_dirs_and_pulls_are_clear_errors(regserve_bin, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = cli(regserve_bin, tmp_path / "d", "serve", f"--model_dir={empty}", "--model_name=m", "--port", "0", timeout=30)
    assert out.returncode != 0 and "no model in" in out.stderr, out.stderr
    out = cli(regserve_bin, tmp_path / "d", "serve", f"--model_dir={MODELS / 'iris-v1'}", "--port", "0", timeout=30)
    assert out.returncode != 0 and "needs --model-name" in out.stderr, out.stderr
    out = cli(regserve_bin, tmp_path / "d", "serve", f"--model_dir={MODELS / 'iris-v1'}", "--model_name=a/b", "--port", "0", timeout=30)
    assert out.returncode != 0 and "not a model name" in out.stderr, out.stderr
    out = cli(regserve_bin, tmp_path / "d", "serve", "-m", "models:/a/1", "-m", "models:/b/1", "--model-name", "x", "--port", "0", timeout=30)
    assert out.returncode != 0 and "one model" in out.stderr, out.stderr

    data = tmp_path / "registry"
    register_iris(regserve_bin, data)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    out = cli(regserve_bin, data, "pull", "models:/iris/1", str(busy))
    assert out.returncode != 0 and "not empty" in out.stderr and "notes.txt" in out.stderr, out.stderr
    assert (busy / "notes.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    out = cli(regserve_bin, data, "pull", "models:/nope@champion", str(fresh))
    assert out.returncode != 0 and "nope" in out.stderr, out.stderr
    assert list(fresh.iterdir()) == [], "nothing left behind"


def test_pull_from_a_real_mlflow_server_then_follow_it(regserve_bin, tmp_path):
    """The storage initializer and the predictor against `mlflow server` (from the test
    virtualenv): versions logged with the MLflow client, files through MLflow's artifact proxy."""
    from test_follow import MlflowServer
    from test_serve_webhooks import log_iris_versions

    registry = MlflowServer(tmp_path)
    registry.start()
    try:
        client = log_iris_versions(registry.url)
        models = tmp_path / "mnt-models"
        out = cli(regserve_bin, tmp_path / "init", "--registry-uri", registry.url, "pull", "models:/iris@champion", str(models))
        assert out.returncode == 0, out.stderr
        assert json.loads((models / "regserve-source.json").read_text())["model_version"]["version"] == "1"
        pred = KServePredictor(regserve_bin, tmp_path / "data", models, name="iris-isvc", registry=registry.url)
        try:
            pred.wait_ready()
            assert pred.infer()[0] == 1
            client.set_registered_model_alias("iris", "champion", "2")
            wait_version(pred, 2)
            np.testing.assert_allclose(pred.infer()[1], reference_probabilities("iris-v2"), rtol=1e-5)
        finally:
            pred.stop()
    finally:
        registry.stop()


def test_kserve_v1_data_plane(regserve_bin, tmp_path):
    """KServe's V1 protocol (its default when an InferenceService names none) on the predictor:
    list, ready, `:predict` answering what `/models/{name}/invocations` answers for the same
    body, `:explain` 501, unknown models and verbs 404."""
    d = tmp_path / "model"
    shutil.copytree(MODELS / "iris-v1", d)
    pred = KServePredictor(regserve_bin, tmp_path / "data", d, name="iris-isvc")
    try:
        pred.wait_ready()
        assert requests.get(f"{pred.url}/v1/models", timeout=5).json() == {"models": ["iris-isvc"]}
        r = requests.get(f"{pred.url}/v1/models/iris-isvc", timeout=5)
        assert (r.status_code, r.json()) == (200, {"name": "iris-isvc", "ready": True})
        body = {"instances": [ROW, [5.1, 3.5, 1.4, 0.2]]}
        v1 = requests.post(f"{pred.url}/v1/models/iris-isvc:predict", json=body, timeout=10)
        mlflow = requests.post(f"{pred.url}/models/iris-isvc/invocations", json=body, timeout=10)
        assert v1.status_code == 200, v1.text
        assert v1.content == mlflow.content and "predictions" in v1.json()
        assert v1.headers["x-model-version"] == "1"
        # A client that sends no Content-Type means JSON.
        bare = requests.post(f"{pred.url}/v1/models/iris-isvc:predict", data=json.dumps(body), timeout=10,
                             headers={"Content-Type": ""})
        assert bare.status_code == 200 and bare.content == v1.content, bare.text
        assert requests.post(f"{pred.url}/v1/models/iris-isvc:explain", json=body, timeout=5).status_code == 501
        assert requests.post(f"{pred.url}/v1/models/iris-isvc:train", json=body, timeout=5).status_code == 404
        assert requests.post(f"{pred.url}/v1/models/other:predict", json=body, timeout=5).status_code == 404
        assert requests.get(f"{pred.url}/v1/models/other", timeout=5).status_code == 404
        bad = requests.post(f"{pred.url}/v1/models/iris-isvc:predict", json={"instances": [[1, 2]]}, timeout=5)
        assert bad.status_code == 400, bad.text
        metrics = requests.get(f"{pred.url}/metrics", timeout=5).text
        assert 'protocol="v1",status="200"' in metrics
    finally:
        pred.stop()
