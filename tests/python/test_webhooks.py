"""Registry webhooks on `regserve server` with the real MLflow client (issue 15, item 1).

A receiver (http.server on 127.0.0.1, in this process) records every delivery and checks its
signature with Python's `hmac` exactly as MLflow's `_generate_hmac_signature` makes it:
`v1,` + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")). The server under test
allows http and private destinations (MLflow's variables), so it may deliver to 127.0.0.1; a
second server with the defaults refuses them.
"""

import base64
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from conftest import RegserveServer, error_code

DELIVERY_WAIT_S = 20


class Receiver:
    """An HTTP receiver on 127.0.0.1. `statuses` is a list of statuses to answer in turn (then
    200); `delay` seconds are slept before answering."""

    def __init__(self, port=0, statuses=None, delay=0.0, on_delivery=None):
        self.requests = []
        self.on_delivery = on_delivery
        self.statuses = list(statuses or [])
        self.delay = delay
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
                with receiver.lock:
                    receiver.requests.append((self.headers, body))  # case-insensitive
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.on_delivery:
                    receiver.on_delivery(json.loads(body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def deliveries(self, entity=None, action=None):
        with self.lock:
            out = [(h, json.loads(b), b) for h, b in self.requests]
        return [d for d in out if (entity is None or d[1]["entity"] == entity) and (action is None or d[1]["action"] == action)]

    def wait_for(self, n, entity=None, action=None, timeout=DELIVERY_WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.deliveries(entity, action)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {n} deliveries of {entity}.{action}, got {self.deliveries()}")


def verify_signature(headers, body, secret):
    """MLflow's documented receiver check."""
    delivery_id = headers["X-MLflow-Delivery-Id"]
    timestamp = headers["X-MLflow-Timestamp"]
    signature = headers["X-MLflow-Signature"]
    assert signature.startswith("v1,"), signature
    expected = base64.b64encode(
        hmac.new(secret.encode("utf-8"), f"{delivery_id}.{timestamp}.{body}".encode("utf-8"), hashlib.sha256).digest()
    ).decode("utf-8")
    assert hmac.compare_digest(signature[3:], expected), "bad signature"
    assert abs(time.time() - int(timestamp)) < 300


@pytest.fixture(scope="module")
def hook_server(regserve_bin, tmp_path_factory):
    srv = RegserveServer(
        regserve_bin,
        tmp_path_factory.mktemp("webhooks"),
        extra_args=["--webhook-timeout", "2", "--webhook-max-retries", "5"],
        env={"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"},
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def mc(hook_server):
    return MlflowClient(tracking_uri=hook_server.url, registry_uri=hook_server.url)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def unique(prefix):
    return f"{prefix}-{time.monotonic_ns()}"


def metric(server, outcome):
    text = requests.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'regserve_webhook_delivery_attempts_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_crud_with_the_mlflow_client(mc, hook_server):
    hook = mc.create_webhook(
        name="crud-hook",
        url="https://example.com/hook",
        events=["model_version.created", "model_version_alias.created"],
        description="first",
        secret="s3cret",
    )
    assert hook.name == "crud-hook" and hook.status == "ACTIVE" and hook.description == "first"
    assert [str(e) for e in hook.events] == ["model_version.created", "model_version_alias.created"]
    got = mc.get_webhook(hook.webhook_id)
    assert got.webhook_id == hook.webhook_id and got.url == "https://example.com/hook"
    # The secret is stored, never returned.
    raw = requests.get(f"{hook_server.url}/api/2.0/mlflow/webhooks/{hook.webhook_id}", timeout=10).json()
    assert "secret" not in raw["webhook"] and "s3cret" not in json.dumps(raw)

    updated = mc.update_webhook(hook.webhook_id, name="crud-hook-2", status="DISABLED", events=["registered_model.created"])
    assert updated.name == "crud-hook-2" and updated.status == "DISABLED"
    assert [str(e) for e in updated.events] == ["registered_model.created"]
    assert updated.description == "first" and updated.last_updated_timestamp >= hook.last_updated_timestamp

    # Paging: 2 per page, newest first, every hook once.
    extra = [mc.create_webhook(name=f"page-{i}", url="https://example.com/p", events=["prompt.created"]) for i in range(3)]
    seen, token = [], None
    for _ in range(10):
        page = mc.list_webhooks(max_results=2, page_token=token)
        assert len(page) <= 2
        seen += [w.webhook_id for w in page]
        token = page.token
        if not token:
            break
    assert set(seen) >= {hook.webhook_id, *[w.webhook_id for w in extra]}
    assert len(seen) == len(set(seen))
    assert seen.index(extra[2].webhook_id) < seen.index(extra[0].webhook_id)

    mc.delete_webhook(hook.webhook_id)
    with pytest.raises(MlflowException) as e:
        mc.get_webhook(hook.webhook_id)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert hook.webhook_id not in [w.webhook_id for w in mc.list_webhooks(max_results=1000)]
    for w in extra:
        mc.delete_webhook(w.webhook_id)


def test_bad_requests_are_refused_clearly(mc, hook_server):
    url = hook_server.url + "/api/2.0/mlflow/webhooks"
    cases = [
        ({"name": "x", "url": "https://example.com", "events": []}, "non-empty"),
        ({"name": "x", "url": "https://example.com"}, "events"),
        ({"name": "-bad", "url": "https://example.com", "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}]}, "name"),
        ({"name": "x", "url": "ftp://example.com", "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}]}, "scheme"),
        ({"name": "x", "url": "https://example.com", "events": [{"entity": "MODEL_VERSION", "action": "DELETED"}]}, "Invalid action"),
        ({"name": "x", "url": "https://example.com", "events": [{"entity": "MODEL_VERSION", "action": "STAGE_TRANSITIONED"}]}, "regserve_extension_events"),
    ]
    for body, words in cases:
        r = requests.post(url, json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert error_code(r) == "INVALID_PARAMETER_VALUE" and words in r.json()["message"], (body, r.text)
    r = requests.get(url, params={"max_results": 1001}, timeout=10)
    assert r.status_code == 400 and "max_results" in r.json()["message"]
    r = requests.patch(url + "/no-such-hook", json={"name": "y"}, timeout=10)
    assert r.status_code == 404 and error_code(r) == "RESOURCE_DOES_NOT_EXIST"


def test_registry_events_are_delivered_signed_with_mlflow_payloads(mc, hook_server, receiver):
    secret = "whsec-test"
    events = [
        "registered_model.created",
        "model_version.created",
        "model_version_tag.set",
        "model_version_tag.deleted",
        "model_version_alias.created",
        "model_version_alias.deleted",
    ]
    hook = mc.create_webhook(name=unique("signed"), url=receiver.url, events=events, secret=secret)
    try:
        name = unique("wh-model")
        mc.create_registered_model(name, tags={"team": "a"}, description="d")
        mv = mc.create_model_version(name, source="s3://regserve-webhooks-test/model", run_id=None, tags={"k": "v"}, description="vd")
        mc.set_model_version_tag(name, mv.version, "stage", "qa")
        mc.delete_model_version_tag(name, mv.version, "stage")
        mc.set_registered_model_alias(name, "champion", mv.version)
        mc.delete_registered_model_alias(name, "champion")
        got = receiver.wait_for(6)
        by_event = {(p["entity"], p["action"]): (h, p, b) for h, p, b in got if p["data"].get("name") == name}
        assert by_event[("registered_model", "created")][1]["data"] == {"name": name, "tags": {"team": "a"}, "description": "d"}
        assert by_event[("model_version", "created")][1]["data"] == {
            "name": name, "version": "1", "source": "s3://regserve-webhooks-test/model", "run_id": None, "tags": {"k": "v"}, "description": "vd",
        }
        assert by_event[("model_version_tag", "set")][1]["data"] == {"name": name, "version": "1", "key": "stage", "value": "qa"}
        assert by_event[("model_version_tag", "deleted")][1]["data"] == {"name": name, "version": "1", "key": "stage"}
        assert by_event[("model_version_alias", "created")][1]["data"] == {"name": name, "alias": "champion", "version": "1"}
        assert by_event[("model_version_alias", "deleted")][1]["data"] == {"name": name, "alias": "champion"}
        ids = set()
        for headers, payload, body in by_event.values():
            verify_signature(headers, body, secret)
            assert headers["Content-Type"] == "application/json"
            assert payload["timestamp"].endswith("+00:00")
            ids.add(headers["X-MLflow-Delivery-Id"])
        assert len(ids) == 6
        # A tampered body fails the same check.
        h, _, b = by_event[("model_version", "created")]
        with pytest.raises(AssertionError):
            verify_signature(h, b.replace('"1"', '"2"'), secret)
        # A registered model's tag is no MLflow event.
        mc.set_registered_model_tag(name, "x", "y")
        time.sleep(0.5)
        assert len(receiver.deliveries()) == 6
        assert metric(hook_server, "delivered") >= 6
    finally:
        mc.delete_webhook(hook.webhook_id)


def test_test_webhook_sends_the_example_payload(mc, receiver):
    hook = mc.create_webhook(
        name=unique("tester"), url=receiver.url, events=["model_version_alias.created", "registered_model.created"], secret="t"
    )
    try:
        result = mc.test_webhook(hook.webhook_id)
        assert result.success and result.response_status == 200 and result.response_body == "received"
        headers, payload, body = receiver.wait_for(1)[0]
        verify_signature(headers, body, "t")
        assert (payload["entity"], payload["action"]) == ("model_version_alias", "created")
        assert payload["data"] == {"name": "example_model", "alias": "example_alias", "version": "1"}
        result = mc.test_webhook(hook.webhook_id, event="registered_model.created")
        assert result.success
        assert receiver.wait_for(2)[1][1]["entity"] == "registered_model"
        # A receiver that answers 500: reported, not raised.
        receiver.statuses = [500]
        result = mc.test_webhook(hook.webhook_id)
        assert not result.success and result.response_status == 500
    finally:
        mc.delete_webhook(hook.webhook_id)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_receiver_down_then_up_gets_the_delivery(mc, hook_server):
    port = free_port()
    hook = mc.create_webhook(name=unique("down"), url=f"http://127.0.0.1:{port}/hook", events=["model_version_tag.set"], secret="d")
    name = unique("down-model")
    mc.create_registered_model(name)
    mv = mc.create_model_version(name, source="s3://regserve-webhooks-test/model")
    retried_before = metric(hook_server, "retried")
    started = time.monotonic()
    mc.set_model_version_tag(name, mv.version, "k", "v")
    # The write did not wait for the dead receiver.
    assert time.monotonic() - started < 2
    time.sleep(1.5)
    receiver = Receiver(port=port, statuses=[503])
    try:
        got = receiver.wait_for(2)
        first, second = got[0], got[1]
        # The same delivery, retried after the 503: one id, signed each time.
        assert first[0]["X-MLflow-Delivery-Id"] == second[0]["X-MLflow-Delivery-Id"]
        for h, p, b in got:
            verify_signature(h, b, "d")
            assert p["data"] == {"name": name, "version": str(mv.version), "key": "k", "value": "v"}
        assert metric(hook_server, "retried") >= retried_before + 2  # refused connection(s), then the 503
    finally:
        receiver.stop()
        mc.delete_webhook(hook.webhook_id)


def test_a_slow_receiver_never_slows_a_registry_write(mc, hook_server):
    receiver = Receiver(delay=4)
    hook = mc.create_webhook(name=unique("slow"), url=receiver.url, events=["model_version_alias.created"])
    try:
        name = unique("slow-model")
        mc.create_registered_model(name)
        mv = mc.create_model_version(name, source="s3://regserve-webhooks-test/model")
        for i in range(3):
            started = time.monotonic()
            mc.set_registered_model_alias(name, f"a{i}", mv.version)
            assert time.monotonic() - started < 1.0
        receiver.wait_for(3)
    finally:
        mc.delete_webhook(hook.webhook_id)
        receiver.stop()


def test_stage_transitions_are_an_extension_only_for_hooks_that_ask(mc, hook_server, receiver):
    other = Receiver()
    url = hook_server.url + "/api/2.0/mlflow/webhooks"
    r = requests.post(
        url,
        json={
            "name": unique("stages"),
            "url": receiver.url,
            "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}],
            "regserve_extension_events": ["model_version.stage_transitioned"],
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    with_ext = r.json()["webhook"]
    assert with_ext["regserve_extension_events"] == ["model_version.stage_transitioned"]
    assert with_ext["events"] == [{"entity": "MODEL_VERSION", "action": "CREATED"}]
    plain = mc.create_webhook(name=unique("nostages"), url=other.url, events=["model_version.created"])
    try:
        # The MLflow client still reads the hook (the extension is not in `events`).
        assert [str(e) for e in mc.get_webhook(with_ext["webhook_id"]).events] == ["model_version.created"]
        assert with_ext["webhook_id"] in [w.webhook_id for w in mc.list_webhooks(max_results=1000)]
        name = unique("stage-model")
        mc.create_registered_model(name)
        mv = mc.create_model_version(name, source="s3://regserve-webhooks-test/model")
        mc.transition_model_version_stage(name, mv.version, "Production", archive_existing_versions=True)
        got = receiver.wait_for(1, "model_version", "stage_transitioned")
        assert got[0][1]["data"] == {"name": name, "version": "1", "stage": "Production", "archive_existing_versions": True}
        other.wait_for(1, "model_version", "created")
        time.sleep(0.5)
        assert other.deliveries("model_version", "stage_transitioned") == []
        # An update of `events` by the MLflow client keeps the extension subscription.
        mc.update_webhook(with_ext["webhook_id"], events=["model_version_tag.set"])
        raw = requests.get(f"{url}/{with_ext['webhook_id']}", timeout=10).json()["webhook"]
        assert raw["regserve_extension_events"] == ["model_version.stage_transitioned"]
        assert raw["events"] == [{"entity": "MODEL_VERSION_TAG", "action": "SET"}]
    finally:
        mc.delete_webhook(with_ext["webhook_id"])
        mc.delete_webhook(plain.webhook_id)
        other.stop()


def test_disabled_or_deleted_hooks_get_nothing(mc, receiver):
    hook = mc.create_webhook(name=unique("off"), url=receiver.url, events=["registered_model.created"], status="DISABLED")
    mc.create_registered_model(unique("off-model"))
    time.sleep(0.7)
    assert receiver.deliveries() == []
    mc.update_webhook(hook.webhook_id, status="ACTIVE")
    mc.create_registered_model(unique("on-model"))
    receiver.wait_for(1)
    mc.delete_webhook(hook.webhook_id)
    mc.create_registered_model(unique("gone-model"))
    time.sleep(0.7)
    assert len(receiver.deliveries()) == 1


def test_private_and_plain_http_destinations_refused_by_default(client, server):
    """The session server runs with MLflow's defaults: https only, public addresses only."""
    events = ["model_version.created"]
    for url, words in [
        ("http://127.0.0.1:9/hook", "Invalid webhook URL scheme: 'http'"),
        ("https://127.0.0.1:9/hook", "non-public IP address"),
        ("https://10.1.2.3/hook", "non-public IP address"),
        ("https://[::1]/hook", "non-public IP address"),
        ("https://localhost/hook", "non-public IP address"),
        ("https://169.254.169.254/latest", "non-public IP address"),
    ]:
        with pytest.raises(MlflowException) as e:
            client.create_webhook(name="refused", url=url, events=events)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", url
        assert words in e.value.message, (url, e.value.message)


def test_conformance_with_a_real_mlflow_server(pair):
    """The same calls against `mlflow server` (default webhook settings) and regserve."""
    base = "/api/2.0/mlflow/webhooks"
    ev = [{"entity": "MODEL_VERSION", "action": "CREATED"}]
    pair.same_status("GET", base + "/00000000-0000-0000-0000-000000000000")
    pair.same_status("POST", base, json={"name": "c", "url": "http://example.com/h", "events": ev})
    pair.same_status("POST", base, json={"name": "c", "url": "https://127.0.0.1/h", "events": ev})
    pair.same_status("POST", base, json={"name": "c", "url": "https://example.com/h", "events": [{"entity": "MODEL_VERSION", "action": "SET"}]})
    ref, ours = pair.same_status("GET", base, params={"max_results": 0})
    # A public address literal: no DNS needed (this sandbox resolves no public name).
    ref, ours = pair.same_status("POST", base, json={"name": "conf", "url": "https://192.0.2.1.nip.invalid/h", "events": ev})
    ref, ours = pair.same_status("POST", base, json={"name": "conf", "url": "https://8.8.8.8/h", "events": ev, "secret": "x"})
    r, o = ref.json()["webhook"], ours.json()["webhook"]
    assert set(o) == set(r), (r, o)
    assert o["events"] == r["events"] and o["status"] == r["status"] == "ACTIVE"
    for resp, hook in ((pair.ref_url, r), (pair.our_url, o)):
        requests.delete(f"{resp}{base}/{hook['webhook_id']}", timeout=10)


def test_two_servers_on_one_postgres_database_deliver_each_event_once(regserve_bin, tmp_path, postgres):
    """Replicas share the outbox: every event reaches the receiver once, whichever server sent
    it; the other server's worker is woken by LISTEN/NOTIFY, not by polling."""
    uri = postgres.new_database("webhooks_replicas")
    env = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"}
    servers = [
        RegserveServer(regserve_bin, tmp_path / f"r{i}", extra_args=[], env=env, backend_store_uri=uri) for i in range(2)
    ]
    receiver = Receiver(delay=0.05)
    try:
        a, b = (MlflowClient(tracking_uri=s.url, registry_uri=s.url) for s in servers)
        a.create_webhook(name="replicas", url=receiver.url, events=["model_version_alias.created"], secret="r")
        a.create_registered_model("rep")
        mv = b.create_model_version("rep", source="s3://regserve-webhooks-test/model")
        n = 20
        for i in range(n):
            (a if i % 2 else b).set_registered_model_alias("rep", f"x{i}", mv.version)
        got = receiver.wait_for(n)
        time.sleep(1.0)
        got = receiver.deliveries()
        ids = [h["X-MLflow-Delivery-Id"] for h, _, _ in got]
        assert len(ids) == n and len(set(ids)) == n, ids
        assert sorted(p["data"]["alias"] for _, p, _ in got) == sorted(f"x{i}" for i in range(n))
        for h, _, body in got:
            verify_signature(h, body, "r")
        delivered = [metric(s, "delivered") for s in servers]
        assert sum(delivered) == n, delivered
    finally:
        receiver.stop()
        for s in servers:
            s.stop()


def test_a_test_loaded_version_is_announced_once_ready(mc, hook_server, iris_v1, X):
    """`model_version.created` of a version that regserve test-loads goes out when the version is
    READY (in the transaction that makes it so), so a receiver resolving it finds it servable."""
    import mlflow

    statuses = []

    def resolve_now(payload):
        # What the registry says at the moment the delivery arrives.
        d = payload["data"]
        statuses.append(requests.get(
            f"{hook_server.url}/api/2.0/mlflow/model-versions/get",
            params={"name": d["name"], "version": d["version"]},
            timeout=10,
        ).json()["model_version"]["status"])

    receiver = Receiver(on_delivery=resolve_now)
    hook = mc.create_webhook(name=unique("ready"), url=receiver.url, events=["model_version.created"])
    try:
        mlflow.set_tracking_uri(hook_server.url)
        mlflow.set_registry_uri(hook_server.url)
        name = unique("iris-ready")
        with mlflow.start_run() as run:
            info = mlflow.onnx.log_model(iris_v1, name="model", registered_model_name=name, input_example=X)
        _, payload, _ = receiver.wait_for(1, "model_version", "created")[0]
        assert statuses == ["READY"]
        assert payload["data"]["name"] == name and payload["data"]["version"] == info.registered_model_version
        assert payload["data"]["run_id"] == run.info.run_id
    finally:
        mc.delete_webhook(hook.webhook_id)
        receiver.stop()


def test_a_server_killed_with_deliveries_pending_loses_none(regserve_bin, tmp_path):
    """The outbox is in the database: a server killed (SIGKILL) while its receiver is down
    leaves the delivery there, and the next server on the registry sends it."""
    env = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"}
    data = tmp_path / "data"
    port = free_port()
    first = RegserveServer(regserve_bin, data, extra_args=[], env=env)
    try:
        c = MlflowClient(tracking_uri=first.url, registry_uri=first.url)
        c.create_webhook(name="crash", url=f"http://127.0.0.1:{port}/hook", events=["registered_model.created"], secret="c")
        c.create_registered_model("crash-model")
        time.sleep(0.5)  # the first attempt is refused; the retry waits in the outbox
    finally:
        first.proc.kill()
        first.proc.wait(timeout=10)
    receiver = Receiver(port=port)
    second = RegserveServer(regserve_bin, data, extra_args=[], env=env)
    try:
        (headers, payload, body), = receiver.wait_for(1)
        verify_signature(headers, body, "c")
        assert payload["data"]["name"] == "crash-model"
    finally:
        second.stop()
        receiver.stop()
