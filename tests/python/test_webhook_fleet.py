"""A fleet that follows one alias through webhooks (issue 15): three `regserve serve` replicas
behind Debian's haproxy (round-robin), each with its own webhook on the registry pointing at its
`/hooks/mlflow`, `--poll-interval 60s` (so only a delivery explains a fast swap), 16 clients
scoring through haproxy in a loop during 20 alias moves:

- 0 failed requests;
- every answer's `X-Model-Version` is the version whose output it carries (checked against
  onnxruntime's reference outputs), and is the old or the new version of the move in progress;
- once every replica answers with the new version (probed on each replica directly), no request
  sent after that moment is answered by the old one.

Run against a real `mlflow server` (from the virtualenv) and against `regserve server`, both
with private http destinations allowed. `bench/webhooks.py` runs the same fleet for the latency
numbers (webhooks vs polling at 1 s).
"""

import statistics
import time

import pytest
import requests

from conftest import RegserveServer
from test_follow import MlflowServer, Workers, reference_probabilities
from test_postgres_replicas import Haproxy
from test_serve_webhooks import BODY, SECRET, Load, Serve, log_iris_versions

REPLICAS = 3
CLIENTS = 16
MOVES = 20
CONVERGE_TIMEOUT_S = 10.0


def answering_version(replica_url):
    r = requests.post(replica_url + "/invocations", json=BODY, timeout=10)
    r.raise_for_status()
    return int(r.headers["X-Model-Version"])


def wait_converged(replicas, version, since, timeout=CONVERGE_TIMEOUT_S):
    """Seconds from `since` until every replica answers with `version` (each probed directly),
    or None."""
    pending = {r.url for r in replicas}
    deadline = since + timeout
    while pending and time.monotonic() < deadline:
        for url in list(pending):
            if answering_version(url) == version:
                pending.discard(url)
        if pending:
            time.sleep(0.002)
    return None if pending else time.monotonic() - since


def run_moves(move, replicas, load, moves=MOVES):
    """`moves` alias moves alternating 2, 1, 2, …: `move(version)` makes one (returns when the
    registry acknowledged it). Returns per-move (target, converged after s, converged at, move
    started at)."""
    out = []
    for i in range(moves):
        target = 2 if i % 2 == 0 else 1
        started = time.monotonic()
        move(target)
        since = time.monotonic()
        after = wait_converged(replicas, target, since)
        assert after is not None, f"move {i} to v{target}: not every replica answered v{target} within {CONVERGE_TIMEOUT_S} s"
        out.append((target, after, since + after, started))
        time.sleep(0.15)
    return out


class Watch(Workers):
    """Each replica probed directly in a loop: (time, replica, version answering) at every change."""

    def __init__(self, replicas):
        self.replicas = replicas
        self.flips = []
        super().__init__([(self.run, ())], join_s=10)

    def run(self):
        last = {}
        while not self.stop_flag.is_set():
            for i, r in enumerate(self.replicas):
                try:
                    v = answering_version(r.url)
                except Exception:
                    continue
                if last.get(i) != v:
                    last[i] = v
                    self.flips.append((time.monotonic(), i, v))
            time.sleep(0.003)


def check_answers(load, results):
    """Every answer names the version that computed it; during a move only the old or the new
    version answers, and after the fleet converged the old one never does."""
    with load.lock:
        answers = list(load.answers)
    wrong_header = [(h, v) for _, _, h, v in answers if h != str(v)]
    assert wrong_header == [], f"{len(wrong_header)} answers whose X-Model-Version is not the computing version: {wrong_header[:5]}"
    for k, (target, _, converged_at, _) in enumerate(results):
        old = 1 if target == 2 else 2
        # Until the next move began (the registry may deliver it before its call returns).
        window_end = results[k + 1][3] if k + 1 < len(results) else float("inf")
        late_old = [a for a in answers if converged_at < a[0] < window_end and a[3] != target]
        assert late_old == [], f"move {k} to v{target} converged at {converged_at}: {len(late_old)} requests sent after the fleet converged answered v{old}: {late_old[:5]}"


def fleet(tmp_path, regserve_bin, registry_url, poll="60s"):
    """Three replicas of `serve` following `registry_url`, and haproxy in front of them."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    replicas = []
    for i in range(REPLICAS):
        data = tmp_path / f"replica-{i}"
        data.mkdir()
        replicas.append(Serve(regserve_bin, data, registry_uri=registry_url, poll=poll,
                              extra=["--webhook-secret-file", str(secret_file)]))
    return replicas, Haproxy([r.url for r in replicas], tmp_path)


class MlflowRegistry:
    """A real `mlflow server` from the virtualenv, private http destinations allowed."""

    name = "mlflow server"

    def __init__(self, tmp_path, regserve_bin, monkeypatch):
        monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http")
        monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
        # MLflow caches each event's hook list for 60 s: the alias set before the hooks exist
        # would hide them from alias events for a minute.
        monkeypatch.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "1")
        self.server = MlflowServer(tmp_path)
        self.server.start()
        self.url = self.server.url
        self.settle_s = 1.5  # the cached (empty) hook list of alias events expires

    def stop(self):
        self.server.stop()


class RegserveRegistry:
    """`regserve server`, private http destinations allowed (its flags take MLflow's variables)."""

    name = "regserve server"

    def __init__(self, tmp_path, regserve_bin, monkeypatch):
        env = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"}
        self.server = RegserveServer(regserve_bin, tmp_path / "registry", extra_args=[], env=env)
        self.url = self.server.url
        self.settle_s = 0.0

    def stop(self):
        self.server.stop()


def run_fleet(registry, tmp_path, regserve_bin, moves=MOVES, webhooks=True, poll="60s"):
    """Register iris v1 and v2 with the MLflow client, start three replicas behind haproxy (with
    a webhook each, or polling), make `moves` alias moves under load. Returns (per-move results,
    load, watch, proxy)."""
    client = log_iris_versions(registry.url)
    replicas, proxy = fleet(tmp_path, regserve_bin, registry.url, poll=poll)
    try:
        if webhooks:
            for i, r in enumerate(replicas):
                client.create_webhook(name=f"replica-{i}", url=r.url + "/hooks/mlflow",
                                      events=["model_version_alias.created", "model_version_alias.deleted"],
                                      secret=SECRET)
            time.sleep(registry.settle_s)
        refs = {1: reference_probabilities("iris-v1"), 2: reference_probabilities("iris-v2")}
        with Load(proxy.url, refs, clients=CLIENTS) as load, Watch(replicas) as watch:
            time.sleep(0.3)
            results = run_moves(lambda v: client.set_registered_model_alias("iris", "champion", str(v)), replicas,
                                load, moves=moves)
        return results, load, watch, proxy.requests_logged()
    finally:
        proxy.stop()
        for r in replicas:
            r.stop()


@pytest.mark.parametrize("kind", [MlflowRegistry, RegserveRegistry], ids=["mlflow-server", "regserve-server"])
def test_three_replicas_follow_a_registry_through_webhooks(kind, regserve_bin, tmp_path, monkeypatch, capsys):
    registry = kind(tmp_path, regserve_bin, monkeypatch)
    try:
        results, load, watch, logged = run_fleet(registry, tmp_path, regserve_bin)
    finally:
        registry.stop()
    assert load.failures == [], load.failures[:10]
    check_answers(load, results)
    # No replica ever went back to the old version after taking the new one.
    for i in range(REPLICAS):
        seen = [v for _, r, v in watch.flips if r == i]
        assert all(a != b for a, b in zip(seen, seen[1:])) and len(seen) <= MOVES + 1, (i, seen)
    bad = [line for line in logged if line[0] >= 500 or line[0] < 0]
    assert bad == [], bad[:5]
    lat = [after for _, after, _, _ in results]
    # The first move to v2 also downloads and loads it on every replica.
    assert statistics.median(lat) < 1.0, lat
    with capsys.disabled():
        print(f"\n[fleet, {registry.name} webhooks] {REPLICAS} replicas converged after each of {MOVES} moves: "
              f"median {statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms; "
              f"{len(load.answers)} answers through haproxy, 0 failed")
