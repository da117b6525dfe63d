"""`regserve serve` acts on registry webhooks (`POST /hooks/mlflow`) and says which version
answered.

- Deliveries signed here with Python's `hmac` exactly as MLflow signs them
  (`mlflow/webhooks/delivery.py`: `v1,` + base64 of HMAC-SHA256(secret,
  "<delivery id>.<timestamp>.<payload>")): a good one is accepted and wakes the served URI; a bad or
  missing signature, a replayed delivery id, a stale or future timestamp get 401; a signed body
  that is not a webhook payload 400; an oversized body 413; without --webhook-secret-file 404.
  The hook is reachable when scoring needs a bearer token. Health checks keep answering
  throughout.
- A real `mlflow server` (from this virtualenv, private http destinations allowed) with a webhook
  registered by the MLflow client pointing at serve's /hooks/mlflow: with --poll-interval 60s,
  every alias move is served within 10 s and their median within 1 s, and every answer's `X-Model-Version` is the version whose
  output it carries (checked against onnxruntime's reference outputs).
- `/metrics` shows the version in service per URI (`regserve_model_version{uri=...}`) and counts
  deliveries by outcome.
"""

import base64
import hashlib
import hmac
import json
import statistics
import subprocess
import threading
import time
import uuid

import numpy as np
import requests

from conftest import MODELS, child_env
from test_follow import COLUMNS, ROW, MlflowServer, Workers, free_port, reference_probabilities, wait_http

SECRET = "webhook-secret-for-tests"
BODY = {"dataframe_split": {"columns": COLUMNS, "data": [ROW]}}
URI = "models:/iris@champion"
MOVES = 10
CLIENTS = 4


def mlflow_signature(secret, delivery_id, timestamp, payload):
    """`mlflow.webhooks.delivery._generate_hmac_signature`, written out."""
    signed = f"{delivery_id}.{timestamp}.{payload}"
    digest = hmac.new(secret.encode("utf-8"), signed.encode("utf-8"), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("utf-8")


def delivery(payload, secret=SECRET, delivery_id=None, timestamp=None):
    """Headers and body of one delivery, as `_send_webhook_request` builds them."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": mlflow_signature(secret, delivery_id, timestamp, body),
    }
    return headers, body.encode("utf-8")


def alias_event(name="iris", alias="champion", version="2"):
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "data": {"name": name, "alias": alias, "version": version},
    }


class Serve:
    def __init__(self, binary, data_dir, extra=(), registry_uri=None, poll="60s"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [binary, "--data-dir", str(data_dir), "serve", "-m", URI, "--port", str(self.port),
                "--poll-interval", poll, *extra]
        if registry_uri:
            args += ["--registry-uri", registry_uri]
        self.log = open(data_dir / "serve.log", "a")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=child_env(RUST_LOG="info"))
        wait_http(self.url + "/ping", timeout=120)

    def post_hook(self, headers, body):
        return requests.post(self.url + "/hooks/mlflow", data=body, headers=headers, timeout=10)

    def health(self):
        return requests.get(self.url + "/health", headers={"Accept": "application/json"}, timeout=5).json()["models"][0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()


def cli(binary, data, *args):
    out = subprocess.run([binary, "--data-dir", str(data), *args], capture_output=True, text=True, timeout=120,
                         env=child_env(), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


def metric(url, name, **labels):
    text = requests.get(url + "/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in /metrics:\n{text}")


def test_deliveries_are_verified_as_mlflow_signs_them(regserve_bin, tmp_path):
    data = tmp_path / "data"
    cli(regserve_bin, data, "models", "register", str(MODELS / "iris-v1"), "--name", "iris")
    cli(regserve_bin, data, "models", "alias", "set", "iris", "champion", "1")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")

    plain = Serve(regserve_bin, data)
    try:
        headers, body = delivery(alias_event())
        r = plain.post_hook(headers, body)
        assert r.status_code == 404 and "--webhook-secret-file" in r.json()["message"], r.text
    finally:
        plain.stop()

    # Behind a scoring token: the hook is not (its signature authenticates it).
    token_file = tmp_path / "token"
    token_file.write_text("scoring-token")
    auth = {"Authorization": "Bearer scoring-token"}
    serve = Serve(regserve_bin, data, extra=["--webhook-secret-file", str(secret_file), "--auth-token-file", str(token_file)])
    try:
        assert requests.post(serve.url + "/invocations", json=BODY, timeout=10).status_code == 401
        stop = threading.Event()
        health_statuses = []

        def probe():
            s = requests.Session()
            while not stop.is_set():
                health_statuses.append(s.get(serve.url + "/ping", timeout=5).status_code)
                time.sleep(0.01)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()

        headers, body = delivery(alias_event())
        r = serve.post_hook(headers, body)
        assert r.status_code == 200, r.text
        assert r.json() == {"event": "model_version_alias.created", "refreshed": [URI]}
        # The same delivery again: a replay.
        r = serve.post_hook(headers, body)
        assert r.status_code == 401 and "replay" in r.json()["message"], r.text
        # An event about a model not served here: acknowledged, nothing woken (MLflow's
        # test_webhook sends such an example payload).
        headers, body = delivery(alias_event(name="example_model"))
        assert serve.post_hook(headers, body).json()["refreshed"] == []

        refused = {
            "wrong secret": delivery(alias_event(), secret="not the secret"),
            "stale": delivery(alias_event(), timestamp=int(time.time()) - 301),
            "future": delivery(alias_event(), timestamp=int(time.time()) + 301),
        }
        h, b = delivery(alias_event())
        refused["tampered body"] = (h, b.replace(b'"2"', b'"1"'))
        h, b = delivery(alias_event())
        refused["no signature"] = ({k: v for k, v in h.items() if k != "X-MLflow-Signature"}, b)
        h, b = delivery(alias_event())
        refused["no timestamp"] = ({k: v for k, v in h.items() if k != "X-MLflow-Timestamp"}, b)
        for why, (h, b) in refused.items():
            r = serve.post_hook(h, b)
            assert r.status_code == 401, (why, r.status_code, r.text)
            assert r.json()["error_code"] == "UNAUTHENTICATED", (why, r.text)

        # Signed, but not a webhook payload: 400 once the signature checks out.
        for payload in ("not json", json.dumps({"entity": "model_version_alias", "action": "created"})):
            r = serve.post_hook(*delivery(payload))
            assert r.status_code == 400 and "data" in r.json()["message"], r.text
        # Bodies are bounded (1 MiB).
        r = serve.post_hook(*delivery("x" * (2 << 20)))
        assert r.status_code == 413, r.status_code

        stop.set()
        prober.join(10)
        assert health_statuses and set(health_statuses) == {200}, set(health_statuses)

        # Fleet visibility: the version on every answer, in /health and /metrics.
        r = requests.post(serve.url + "/invocations", json=BODY, headers=auth, timeout=10)
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1", (r.status_code, r.headers)
        r = requests.post(serve.url + "/models/iris/invocations", json=BODY, headers=auth, timeout=10)
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1", (r.status_code, r.headers)
        r = requests.post(serve.url + "/invocations", json={"nonsense": 1}, headers=auth, timeout=10)
        assert r.status_code == 400 and r.headers["X-Model-Version"] == "1", (r.status_code, r.headers)
        v2 = {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
        r = requests.post(serve.url + "/v2/models/iris/infer", json=v2, headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1" and r.headers["X-Model-Version"] == "1"
        assert serve.health()["version"] == 1
        assert metric(serve.url, "regserve_model_version", uri=URI, model="iris") == 1
        assert metric(serve.url, "regserve_webhook_deliveries_total", outcome="accepted") == 2
        assert metric(serve.url, "regserve_webhook_deliveries_total", outcome="replayed") == 1
        assert metric(serve.url, "regserve_webhook_deliveries_total", outcome="bad_signature") == 4
        assert metric(serve.url, "regserve_webhook_deliveries_total", outcome="stale") == 2
        assert metric(serve.url, "regserve_webhook_deliveries_total", outcome="malformed") == 2
    finally:
        serve.stop()


class Load(Workers):
    """`clients` threads scoring `url` in a loop; each answer kept as (sent at, answered at,
    X-Model-Version, version whose output it is)."""

    def __init__(self, url, refs, clients=CLIENTS):
        self.url, self.refs = url, refs
        self.answers = []
        self.failures = []
        super().__init__([(self.run, ())] * clients)

    def computed_by(self, probs):
        for v, ref in self.refs.items():
            if np.allclose(probs, ref, atol=1e-5):
                return v
        return None

    def run(self):
        s = requests.Session()
        while not self.stop_flag.is_set():
            sent = time.monotonic()
            try:
                r = s.post(self.url + "/invocations", json=BODY, timeout=10)
            except requests.RequestException as e:
                with self.lock:
                    self.failures.append(type(e).__name__)
                continue
            answered = time.monotonic()
            if r.status_code != 200:
                with self.lock:
                    self.failures.append((r.status_code, r.text[:200]))
                continue
            computed = self.computed_by(r.json()["predictions"][0]["probabilities"])
            with self.lock:
                self.answers.append((sent, answered, r.headers.get("X-Model-Version"), computed))

    def first_answer_from(self, version, since, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for _, t, _, v in self.answers:
                    if t >= since and v == version:
                        return t - since
            time.sleep(0.005)
        return None


def log_iris_versions(url):
    """iris v1 and v2 logged with the MLflow client to the registry at `url` (versions 1 and 2
    of `iris`), `champion` on 1; the client."""
    import mlflow
    import onnx
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    example = np.array([ROW], dtype=np.float32)
    for d in ("iris-v1", "iris-v2"):
        with mlflow.start_run():
            mlflow.onnx.log_model(onnx.load(str(MODELS / d / "model.onnx")), name="model",
                                  registered_model_name="iris", input_example=example)
    client.set_registered_model_alias("iris", "champion", "1")
    return client


def test_a_real_mlflow_server_moves_an_alias_within_a_bound_far_below_the_poll(regserve_bin, tmp_path, monkeypatch, capsys):
    # MLflow refuses http:// and loopback destinations unless told otherwise (its SSRF rules).
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    # MLflow caches each event's hook list for MLFLOW_WEBHOOK_CACHE_TTL (60 s): the alias set
    # below, before the hook exists, would otherwise hide the hook from alias events for a minute.
    monkeypatch.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "1")
    registry = MlflowServer(tmp_path)
    registry.start()
    serve = None
    try:
        client = log_iris_versions(registry.url)

        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET)
        data = tmp_path / "serve-data"
        data.mkdir()
        serve = Serve(regserve_bin, data, extra=["--webhook-secret-file", str(secret_file)], registry_uri=registry.url)
        assert serve.health()["version"] == 1

        hook = client.create_webhook(
            name="regserve-serve",
            url=serve.url + "/hooks/mlflow",
            events=["model_version_alias.created", "model_version_alias.deleted", "model_version.created"],
            secret=SECRET,
        )
        # MLflow's own test delivery (an example payload for another model) is accepted.
        result = client.test_webhook(hook.webhook_id)
        assert result.success and result.response_status == 200, result
        time.sleep(1.5)  # the cached (empty) hook list of alias events expires

        refs = {1: reference_probabilities("iris-v1"), 2: reference_probabilities("iris-v2")}
        latencies = []
        with Load(serve.url, refs) as load:
            time.sleep(0.3)
            for i in range(MOVES):
                target = 2 if i % 2 == 0 else 1
                client.set_registered_model_alias("iris", "champion", str(target))
                since = time.monotonic()
                latency = load.first_answer_from(target, since, timeout=10)
                assert latency is not None, f"move {i} to v{target} not served within 10 s (poll is 60 s); health: {serve.health()}"
                latencies.append(latency)
                time.sleep(0.2)
        assert load.failures == [], load.failures
        assert len(load.answers) > MOVES
        # Every answer names the version that computed it.
        wrong = [(h, v) for _, _, h, v in load.answers if h != str(v)]
        assert wrong == [], f"{len(wrong)} answers whose X-Model-Version is not the version that computed them: {wrong[:5]}"
        # The first move to v2 also downloads and loads it; later moves swap between loaded versions.
        assert statistics.median(latencies) < 1.0, f"alias moves served after {latencies} s with a 60 s poll"
        assert metric(serve.url, "regserve_model_version", uri=URI, model="iris") == (2 if MOVES % 2 else 1)
        assert metric(serve.url, "regserve_webhook_deliveries_total", outcome="accepted") >= MOVES + 1
        with capsys.disabled():
            print(f"\n[mlflow server webhooks] alias move → first answer from the new version over {MOVES} moves: "
                  f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
                  f"(poll 60 s); {len(load.answers)} answers, 0 failed")
    finally:
        if serve is not None:
            serve.stop()
        registry.stop()
