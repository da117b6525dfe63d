"""`regserve serve` following a PostgreSQL registry hears changes through LISTEN/NOTIFY (issue 14).

Every `serve` here polls only every 60 s (`--poll-interval 60s`), so a swap seen within a few
seconds can only have been started by a notification, or by the re-check the listener makes after
it reconnects. The registry is written with the embedded CLI on the same database
(`--backend-store-uri`); the replicas share its --data-dir, where the CLI put the model files.

- three replicas converge on a newly promoted version, for an alias move and for a stage
  transition with archive_existing, each within CONVERGE_S, checked by scoring a row that
  iris-v1 and iris-v2 answer differently;
- the database goes away while serve follows it: every request still answers 200 from the last
  good version, /health of a replica that checks names the error, and once the database is back
  and the listener has reconnected (within the reconnect backoff), an alias move is heard at once;
- a promotion written while no listener is connected (just after the database came back, before
  serve reconnected: checked in pg_stat_activity) is still picked up, by the re-check after the
  reconnect, within the backoff bound.

The outage tests run on a cluster of their own (a failed test must not leave the session's shared
`postgres` cluster stopped for the tests after it).
"""

import concurrent.futures
import json
import subprocess
import time

import numpy as np
import pytest
import requests

from conftest import MODELS, REPO, child_env, stop_process
from pg import PgCluster, query
from test_follow import BODY, Workers, free_port, reference_probabilities, wait_http

SCRIPT = REPO / "scripts" / "pg-cluster"
LONG_POLL = "60s"
# A notification reaches serve within milliseconds (13-43 ms measured by hand on an idle machine);
# serve then waits 20 ms for a burst to settle, resolves the URI (one query) and loads the new
# iris version (a few KB of ONNX, one session per core, a warm-up run): tens of ms. 2 s leaves
# room for a 2-core machine busy with three replicas and other builds, and is 30 times shorter
# than the poll interval, so a swap within it was not made by a poll.
CONVERGE_S = 2.0
# serve's listener (src/db/postgres.rs `listen`) retries 1 s after losing its connection and then
# doubles the wait up to 30 s: retries at 1, 3, 7, 15, 31 ... s after the loss. The database
# coming back `down_s` after the loss is therefore heard at the next retry, at most
# min(down_s + 1, 30) s later; SLACK_S covers a slow connect and the re-check after it.
BACKOFF_CAP_S = 30.0
SLACK_S = 3.0
REPLICAS = 3
LISTEN_QUERY = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"


def reconnect_bound(down_s):
    return min(down_s + 1.0, BACKOFF_CAP_S) + SLACK_S


@pytest.fixture(scope="module")
def refs():
    r = {1: reference_probabilities("iris-v1"), 2: reference_probabilities("iris-v2")}
    assert not np.allclose(r[1], r[2], atol=1e-3), "the test row must tell iris-v1 and iris-v2 apart"
    return r


def which(refs, probs):
    for v, ref in refs.items():
        if np.allclose(probs, ref, atol=1e-5):
            return v
    return None


class Registry:
    """The embedded CLI on one PostgreSQL database, with its files in `data`."""

    def __init__(self, binary, data, db_url):
        self.binary, self.data, self.db_url = binary, data, db_url

    def cli(self, *args):
        out = subprocess.run(
            [self.binary, "--data-dir", str(self.data), "--backend-store-uri", self.db_url, *args],
            capture_output=True, text=True, timeout=120, env=child_env(), stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, f"regserve {' '.join(args)} failed:\n{out.stderr}"
        return out.stdout

    def register(self, name, version_dir):
        self.cli("models", "register", str(MODELS / version_dir), "--name", name)

    def listeners(self):
        """Connections that have run LISTEN on this database (serve's listeners)."""
        return int(query(self.db_url, LISTEN_QUERY)[0][0])

    def wait_listeners(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listeners() >= n:
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"{n} listener(s) not connected within {timeout:.1f} s (have {self.listeners()})")


class Replica:
    """`regserve serve` on the registry database, sharing the CLI's --data-dir."""

    def __init__(self, binary, registry, uris, poll=LONG_POLL):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = registry.data.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(registry.data), "serve", "--registry-uri", registry.db_url,
             "-m", ",".join(uris), "--port", str(self.port), "--poll-interval", poll, "--sessions", "1"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), stdin=subprocess.DEVNULL,
            env=child_env(RUST_LOG="info"),
        )
        try:
            wait_http(self.url + "/ping", timeout=120)
        except Exception:
            self.stop()
            raise RuntimeError(f"serve did not start:\n{self.log.read_text()}")

    def health(self, name):
        models = requests.get(self.url + "/health", headers={"Accept": "application/json"}, timeout=5).json()["models"]
        return next(m for m in models if m["uri"].startswith(f"models:/{name}"))

    def score(self, refs, name, timeout=5):
        """(status, version that answered or None)."""
        r = requests.post(f"{self.url}/models/{name}/invocations", json=BODY, timeout=timeout)
        if r.status_code != 200:
            return r.status_code, None
        return 200, which(refs, r.json()["predictions"][0]["probabilities"])

    def stop(self):
        stop_process(self.proc, grace_s=20)


def first_answer(replica, refs, name, version, since, timeout):
    """Seconds from `since` to the first answer of `replica` computed by `version`; None if none
    came within `timeout`. Scores in a loop; any non-200 answer fails."""
    deadline = since + timeout
    while time.monotonic() < deadline:
        status, v = replica.score(refs, name)
        assert status == 200, f"{replica.url} answered {status}"
        if v == version:
            return time.monotonic() - since
        time.sleep(0.005)
    return None


def converge(replicas, refs, name, version, since, timeout):
    """first_answer on every replica at once: their latencies, in replica order."""
    with concurrent.futures.ThreadPoolExecutor(len(replicas)) as pool:
        futures = [pool.submit(first_answer, r, refs, name, version, since, timeout) for r in replicas]
        return [f.result() for f in futures]


class Load(Workers):
    """Two client threads per replica scoring `name` in a loop; counts statuses and versions."""

    def __init__(self, replicas, refs, name):
        self.replicas, self.refs, self.name = replicas, refs, name
        self.statuses = {}
        self.versions = {}
        super().__init__([(self.run, (r,)) for r in replicas for _ in range(2)])

    def run(self, replica):
        while not self.stop_flag.is_set():
            try:
                status, v = replica.score(self.refs, self.name)
            except requests.RequestException as e:
                status, v = f"error: {type(e).__name__}", None
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.versions[v] = self.versions.get(v, 0) + 1
            time.sleep(0.01)

    def snapshot(self):
        with self.lock:
            return dict(self.statuses), dict(self.versions)


def pg_cluster(command, cluster):
    """scripts/pg-cluster stop|start on `cluster`'s directory (start keeps the port while free)."""
    res = subprocess.run([str(SCRIPT), command, str(cluster.dir)], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"scripts/pg-cluster {command} failed:\n{res.stderr}"
    if command == "start":
        assert res.stdout.strip().splitlines()[-1] == cluster.url, "the cluster came back on another port"


@pytest.fixture
def stopped():
    """Stops every Replica appended to it at the end of the test."""
    replicas = []
    yield replicas
    for r in replicas:
        r.stop()


@pytest.fixture(scope="module")
def own_cluster():
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_three_replicas_converge_on_alias_moves_and_stage_transitions(postgres, regserve_bin, tmp_path, refs, stopped):
    reg = Registry(regserve_bin, tmp_path / "data", postgres.new_database("follow_converge"))
    # `iris` is followed by alias, `irisprod` by stage: one replica process serves both.
    for name in ("iris", "irisprod"):
        reg.register(name, "iris-v1")
        reg.register(name, "iris-v2")
    reg.cli("models", "alias", "set", "iris", "champion", "1")
    reg.cli("models", "transition", "irisprod", "1", "Production")
    for _ in range(REPLICAS):
        stopped.append(Replica(regserve_bin, reg, ["models:/iris@champion", "models:/irisprod/Production"]))
    replicas = list(stopped)
    reg.wait_listeners(REPLICAS, timeout=10)
    for r in replicas:
        assert r.score(refs, "iris") == (200, 1) and r.score(refs, "irisprod") == (200, 1)

    moves = [
        ("iris", 2, ("models", "alias", "set", "iris", "champion", "2")),
        ("irisprod", 2, ("models", "transition", "irisprod", "2", "Production", "--archive-existing")),
        ("iris", 1, ("models", "alias", "set", "iris", "champion", "1")),
        ("irisprod", 1, ("models", "transition", "irisprod", "1", "Production", "--archive-existing")),
    ]
    report = []
    for name, version, args in moves:
        reg.cli(*args)
        since = time.monotonic()  # the CLI returned: the write is committed
        latencies = converge(replicas, refs, name, version, since, CONVERGE_S)
        assert all(t is not None for t in latencies), (
            f"{' '.join(args)}: not every replica answered from v{version} within {CONVERGE_S} s "
            f"(poll interval {LONG_POLL}): {latencies}; health: {[r.health(name) for r in replicas]}")
        for r in replicas:
            h = r.health(name)
            assert h["version"] == version and not h.get("last_error"), h
        report.append(f"{' '.join(args[1:])}: " + ", ".join(f"{t * 1000:.0f} ms" for t in latencies))
    # archive_existing: the version that left Production was archived in the same write.
    stages = {int(v["version"]): v["current_stage"] for v in json.loads(reg.cli("models", "versions", "irisprod", "--json"))}
    assert stages == {1: "Production", 2: "Archived"}, stages
    print("\nconvergence of 3 replicas: " + "; ".join(report))


def test_database_restart_serving_continues_and_swaps_resume(own_cluster, regserve_bin, tmp_path, refs, stopped):
    reg = Registry(regserve_bin, tmp_path / "data", own_cluster.new_database("follow_restart"))
    reg.register("iris", "iris-v1")
    reg.register("iris", "iris-v2")
    reg.cli("models", "alias", "set", "iris", "champion", "1")
    # `listening` hears changes only by notification (and looks when its LISTEN connection is
    # lost); `polling` also checks every second.
    listening = Replica(regserve_bin, reg, ["models:/iris@champion"])
    stopped.append(listening)
    polling = Replica(regserve_bin, reg, ["models:/iris@champion"], poll="1s")
    stopped.append(polling)
    reg.wait_listeners(2, timeout=10)

    with Load([listening, polling], refs, "iris") as load:
        time.sleep(0.5)
        lost = time.monotonic()
        pg_cluster("stop", own_cluster)
        # Down: both keep answering from v1; the polling replica's /health names the failure.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            h = polling.health("iris")
            if h.get("last_error"):
                break
            time.sleep(0.2)
        assert h.get("last_error") and h["version"] == 1, h
        error = h["last_error"]
        # The listening replica (60 s poll) shows it too: its LISTEN connection's loss makes it
        # look at once.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not listening.health("iris").get("last_error"):
            time.sleep(0.2)
        lh = listening.health("iris")
        assert lh.get("last_error") and lh["version"] == 1, lh
        before, _ = load.snapshot()
        time.sleep(2.0)  # still down: requests go on
        during, versions = load.snapshot()
        assert during.get(200, 0) > before.get(200, 0), "no answer while the database was down"
        assert set(during) == {200} and set(versions) == {1}, (during, versions)

        pg_cluster("start", own_cluster)
        back = time.monotonic()
        down_s = back - lost
        bound = reconnect_bound(down_s)
        # The listeners reconnect at their next retry, then an alias move is heard at once.
        reconnected = reg.wait_listeners(2, timeout=bound)
        reg.cli("models", "alias", "set", "iris", "champion", "2")
        since = time.monotonic()
        latency = first_answer(listening, refs, "iris", 2, since, CONVERGE_S)
        assert latency is not None, f"alias move after the restart not heard within {CONVERGE_S} s: {listening.health('iris')}"
        assert first_answer(polling, refs, "iris", 2, time.monotonic(), CONVERGE_S + 1.0) is not None
        deadline = time.monotonic() + 5
        while polling.health("iris").get("last_error") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not polling.health("iris").get("last_error"), "the error stayed on /health after the database came back"
        statuses, _ = load.snapshot()
    assert set(statuses) == {200}, f"non-200 answers: {statuses}"
    print(f"\ndatabase down {down_s:.1f} s; /health said: {error!r}; listeners back {reconnected - back:.1f} s after "
          f"(bound {bound:.1f} s); alias move then served in {latency * 1000:.0f} ms; {sum(statuses.values())} requests, all 200")


def test_promotion_while_the_listener_is_down_is_picked_up_after_reconnect(own_cluster, regserve_bin, tmp_path, refs, stopped):
    reg = Registry(regserve_bin, tmp_path / "data", own_cluster.new_database("follow_missed"))
    reg.register("iris", "iris-v1")
    reg.register("iris", "iris-v2")
    reg.cli("models", "alias", "set", "iris", "champion", "1")
    replica = Replica(regserve_bin, reg, ["models:/iris@champion"])
    stopped.append(replica)
    reg.wait_listeners(1, timeout=10)

    lost = time.monotonic()
    pg_cluster("stop", own_cluster)
    # Down long enough that the listener's retries are 4 s apart (after those at 1, 3, 7 s the next
    # is at 15 s): the write below lands while the listener waits for its next retry.
    time.sleep(8.0)
    assert replica.score(refs, "iris") == (200, 1)
    pg_cluster("start", own_cluster)
    back = time.monotonic()
    reg.cli("models", "alias", "set", "iris", "champion", "2")
    since = time.monotonic()
    # Nobody was listening when that committed: its NOTIFY reached no serve.
    assert reg.listeners() == 0, "the listener reconnected before the write: the test could not miss a notification"
    assert replica.score(refs, "iris") == (200, 1), "served v2 before reconnecting: what told it?"
    bound = reconnect_bound(since - lost)
    latency = first_answer(replica, refs, "iris", 2, since, bound)
    assert latency is not None, (
        f"the move written while no listener was connected was not picked up within {bound:.1f} s "
        f"(poll interval {LONG_POLL}): {replica.health('iris')}")
    assert reg.listeners() == 1
    print(f"\nwritten {since - back:.1f} s after the database came back, with no listener; served after "
          f"{latency:.1f} s (bound {bound:.1f} s)")
