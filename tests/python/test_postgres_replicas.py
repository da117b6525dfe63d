"""`regserve server` as stateless replicas on one PostgreSQL database (issue 14).

- Two servers on ONE fresh database behind Debian's haproxy (round-robin, `mode http`, a config
  generated here, `haproxy -f cfg -db` as a child process on a free port): 8 concurrent MLflow
  clients create versions of one model and move aliases on it. Version numbers are distinct and
  gap-free, no answer is a 5xx (each client call, and haproxy's log of every request), both
  replicas took writes, and no alias move is lost: a shared alias ends on a version whose move
  no other move started after, each writer's own alias on its last version, and both replicas
  agree.
- Two servers started at the same moment on one FRESH database both come up (the migration
  runs under an advisory lock); a server on a database whose schema is newer than it knows
  exits with a clear message.
- The database password never appears in any server's log (stderr), also when it is refused.

The versions' source is an `s3://` location, which regserve records without a test load (it
test-loads only files under its own artifact root), so the writes race on the database alone.
"""

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from conftest import RegserveServer, child_env, stop_process
from pg import query
from test_follow import free_port

WRITERS = 8
VERSIONS_PER_WRITER = 6
SOURCE = "s3://regserve-replicas-test/model"
START_TIMEOUT_S = 30


def haproxy_binary():
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if not found:
        pytest.fail("no haproxy: install Debian's 'haproxy' package (scripts/test does)")
    return found


def password_of(url):
    return urllib.parse.urlsplit(url).password


class Haproxy:
    """haproxy in front of `backends` (base URLs), round-robin, logging one line per request to
    its stderr: `REQ <status> <server name> <method> <path>`."""

    def __init__(self, backends, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"    server r{i} {urllib.parse.urlsplit(b).netloc}" for i, b in enumerate(backends)
        )
        cfg = pathlib.Path(workdir) / "haproxy.cfg"
        cfg.write_text(
            f"""global
    log stderr format raw local0 info

defaults
    mode http
    log global
    log-format "REQ %ST %s %HM %HU"
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend registry
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
{servers}
"""
        )
        self.proc = subprocess.Popen(
            [haproxy_binary(), "-f", str(cfg), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("haproxy did not come up:\n" + "".join(self.log))
            time.sleep(0.05)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def requests_logged(self):
        """(status, server, method, path) of every request haproxy logged."""
        out = []
        for line in self.log:
            if "REQ " in line:
                status, server, method, path = line.split("REQ ", 1)[1].split()[:4]
                out.append((int(status), server, method, path))
        return out

    def stop(self):
        stop_process(self.proc)


def start_together(regserve_bin, tmp_path, db_url, n):
    """n `regserve server`s on `db_url`, spawned at the same moment (each waits for the others'
    spawn before its own), each with its own data directory."""
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(timeout=START_TIMEOUT_S)
        return RegserveServer(regserve_bin, tmp_path / f"replica-{i}", extra_args=[], backend_store_uri=db_url)

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        servers, errors = [], []
        for f in futures:
            try:
                servers.append(f.result(timeout=2 * START_TIMEOUT_S))
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                errors.append(e)
    if errors:
        for s in servers:
            s.stop()
        raise AssertionError(f"{len(errors)} of {n} servers started together did not come up: {errors}")
    return servers


def assert_no_password(logs, password, what):
    assert password and len(password) >= 8
    for i, log in enumerate(logs):
        assert password not in log, f"{what}: the database password appears in server {i}'s log"


def test_eight_writers_through_a_load_balancer(postgres, regserve_bin, tmp_path):
    from mlflow import MlflowClient

    db = postgres.new_database("replicas_writers")
    replicas = start_together(regserve_bin, tmp_path, db, 2)
    lb = None
    try:
        lb = Haproxy([r.url for r in replicas], tmp_path)
        name = "replicated"
        MlflowClient(tracking_uri=lb.url, registry_uri=lb.url).create_registered_model(name)
        moves = []  # (start, end, version) of every acknowledged move of the shared alias
        moves_lock = threading.Lock()

        def writer(w):
            client = MlflowClient(tracking_uri=lb.url, registry_uri=lb.url)
            created = []
            for _ in range(VERSIONS_PER_WRITER):
                mv = client.create_model_version(name, source=SOURCE, description=f"writer {w}")
                assert mv.status == "READY", mv
                created.append(int(mv.version))
                client.set_registered_model_alias(name, f"writer-{w}", mv.version)
                start = time.monotonic()
                client.set_registered_model_alias(name, "champion", mv.version)
                end = time.monotonic()
                with moves_lock:
                    moves.append((start, end, int(mv.version)))
            return created

        with concurrent.futures.ThreadPoolExecutor(max_workers=WRITERS) as pool:
            per_writer = list(pool.map(writer, range(WRITERS)))  # re-raises a writer's error

        total = WRITERS * VERSIONS_PER_WRITER
        numbers = sorted(v for created in per_writer for v in created)
        assert numbers == list(range(1, total + 1)), f"version numbers not distinct and gap-free: {numbers}"

        # Read back from each replica directly, not through the balancer.
        for r in replicas:
            client = MlflowClient(tracking_uri=r.url, registry_uri=r.url)
            found = client.search_model_versions(f"name = '{name}'", max_results=1000)
            assert sorted(int(v.version) for v in found) == numbers, r.url
            for w, created in enumerate(per_writer):
                got = client.get_model_version_by_alias(name, f"writer-{w}")
                assert int(got.version) == created[-1], (r.url, w, got.version, created)
            champion = int(client.get_model_version_by_alias(name, "champion").version)
            # The last write wins: the alias is on a version whose move no other move started
            # after (a move that began after it had ended would have overwritten it).
            winners = [m for m in moves if m[2] == champion]
            assert winners, f"champion is on v{champion}, which no writer set"
            latest_end = max(end for _, end, _ in winners)
            later = [m for m in moves if m[0] > latest_end]
            assert not later, f"moves after the one to v{champion} were lost: {later}"
            assert len(client.get_registered_model(name).aliases) == WRITERS + 1

        logged = lb.requests_logged()
        writes = [x for x in logged if x[2] == "POST"]
        assert len(writes) >= total * 3, f"haproxy logged {len(writes)} writes: {lb.log}"
        assert not [x for x in logged if x[0] >= 500 or x[0] < 0], [x for x in logged if x[0] >= 500 or x[0] < 0]
        by_server = {s for _, s, _, _ in writes}
        assert by_server == {"r0", "r1"}, f"round-robin reached {by_server}"
        for r in replicas:
            r.stop()
        assert_no_password(["".join(r.log) for r in replicas], password_of(db), "two replicas")
    finally:
        if lb:
            lb.stop()
        for r in replicas:
            r.stop()


def test_servers_started_together_on_a_fresh_database_both_come_up(postgres, regserve_bin, tmp_path):
    db = postgres.new_database("replicas_race")
    servers = start_together(regserve_bin, tmp_path, db, 2)
    try:
        for i, s in enumerate(servers):
            r = requests.post(s.url + "/api/2.0/mlflow/registered-models/create", json={"name": f"race-{i}"}, timeout=30)
            assert r.status_code == 200, r.text
        for s in servers:
            r = requests.get(s.url + "/api/2.0/mlflow/registered-models/search", params={"max_results": 10}, timeout=30)
            assert sorted(m["name"] for m in r.json()["registered_models"]) == ["race-0", "race-1"]
        # One schema record: the migration ran once.
        assert len(query(db, "SELECT version FROM regserve_schema")) == 1
        migrated = [s for s in servers if any("migrated the PostgreSQL registry schema" in line for line in s.log)]
        assert len(migrated) == 1, [s.log for s in servers]
    finally:
        for s in servers:
            s.stop()
    assert_no_password(["".join(s.log) for s in servers], password_of(db), "servers started together")


def run_server_expecting_failure(regserve_bin, data_dir, db_url):
    res = subprocess.run(
        [regserve_bin, "--data-dir", str(data_dir), "--backend-store-uri", db_url, "server", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(RUST_LOG="info"),
    )
    assert res.returncode != 0, f"the server started:\n{res.stderr}"
    return res.stderr


def test_a_newer_schema_is_refused_clearly(postgres, regserve_bin, tmp_path):
    db = postgres.new_database("replicas_newer")
    s = RegserveServer(regserve_bin, tmp_path / "first", extra_args=[], backend_store_uri=db)
    s.stop()
    ((known,),) = query(db, "SELECT version FROM regserve_schema")
    query(db, f"UPDATE regserve_schema SET version = {int(known) + 1} RETURNING version")
    err = run_server_expecting_failure(regserve_bin, tmp_path / "second", db)
    assert f"schema version {int(known) + 1}, newer than this regserve knows ({known})" in err, err
    assert_no_password(["".join(s.log), err], password_of(db), "newer schema")


def test_a_refused_password_is_not_logged(postgres, regserve_bin, tmp_path):
    db = postgres.new_database("replicas_wrong_password")
    parts = urllib.parse.urlsplit(db)
    wrong = "not-the-password-" + "5" * 16
    bad = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:{wrong}@{parts.hostname}:{parts.port}"))
    err = run_server_expecting_failure(regserve_bin, tmp_path, bad)
    assert "password authentication failed" in err, err
    assert parts.username in err and f"{parts.hostname}:{parts.port}" in err, err
    assert_no_password([err], wrong, "refused password")
