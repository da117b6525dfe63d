"""The PostgreSQL registry (issue 14): write throughput, and swap latency with LISTEN/NOTIFY vs polling.

    /path/to/.venv/bin/python bench/postgres.py [--binary target/release/regserve] [--versions 400]
        [--repeats 3] [--moves 20] [--skip-mlflow] [--json target/bench-results/postgres.json]

Starts a throwaway PostgreSQL cluster (scripts/pg-cluster, Debian's `postgresql`), everything on
127.0.0.1, and measures:

1. Registry write throughput: model versions created per second by WRITERS (8) threads, each with
   its own MLflow client (`MlflowClient.create_model_version`, await_creation_for=0: the write,
   not the client's READY polling), VERSIONS versions of one model per run, against
   (a) `regserve server` on SQLite (--data-dir), (b) `regserve server` on PostgreSQL
   (--backend-store-uri), (c) a real `mlflow server --backend-store-uri postgresql://…` on the
   same cluster (its own database; default 4 uvicorn workers; psycopg2-binary from
   scripts/requirements-bench-postgres.txt, pip-installed with --target into target/bench-pylib
   and put on that server's PYTHONPATH only). After one uncounted warm-up run per server, runs
   are interleaved (a, b, c, a, b, c, ...), each on a new model; the median of REPEATS runs is
   reported. The source of every version is an
   `s3://` location that is not in the artifact root, so neither server loads a model: the
   number is the registry's write path. Each run checks that the returned version numbers are
   exactly 1..VERSIONS.
2. Swap latency: 3 `regserve serve` replicas follow `models:/iris@champion` while a loopback load
   generator (LOAD_THREADS threads per replica) scores on each of them; MOVES alias moves
   alternate between iris-v1 and iris-v2 (which answer the load's row differently). Latency =
   the `regserve models alias set` CLI (on the PostgreSQL registry) returning → the first answer
   from the new version on EACH replica; median and max over all moves x replicas, and the
   median / max of the slowest replica per move. Modes:
   - notify: the replicas read the PostgreSQL registry (--registry-uri postgresql://…) with
     --poll-interval 60s, so they swap on NOTIFY;
   - poll 1s: the replicas follow the same database through a `regserve server` on it
     (--registry-uri http://…, the REST registry has no notifications) with --poll-interval 1s.
   Any non-200 answer is counted and reported.

Prints markdown tables and writes the raw numbers as JSON. Uses the release build by default
(prints which binary and its build time).
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"

import numpy as np  # noqa: E402
import requests  # noqa: E402

from conftest import MODELS, RegserveServer, child_env, stop_group  # noqa: E402
from pg import PgCluster  # noqa: E402
from test_follow import BODY, Workers, free_port, reference_probabilities, wait_http  # noqa: E402

WRITERS = 8
LOAD_THREADS = 2
REPLICAS = 3
PYLIB = REPO / "target" / "bench-pylib"
REQUIREMENTS = REPO / "scripts" / "requirements-bench-postgres.txt"
MOVE_TIMEOUT_S = 15


def psycopg2_path():
    """target/bench-pylib with psycopg2 in it (pip-installed there the first time)."""
    probe = subprocess.run([sys.executable, "-c", "import psycopg2"], env=dict(os.environ, PYTHONPATH=str(PYLIB)),
                           capture_output=True)
    if probe.returncode != 0:
        print(f"bench: installing {REQUIREMENTS.name} into {PYLIB}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                        str(PYLIB), "-r", str(REQUIREMENTS)], check=True, timeout=600)
    return str(PYLIB)


class MlflowPg:
    """A real `mlflow server` on a PostgreSQL database (default workers), with an artifact proxy."""

    def __init__(self, workdir, db_url):
        self.workdir, self.db_url = pathlib.Path(workdir), db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        venv_bin = os.path.dirname(sys.executable)
        env = child_env(PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=psycopg2_path())
        self.log = open(self.workdir / "mlflow-server.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.db_url, "--artifacts-destination", str(self.workdir / "mlartifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        try:
            wait_http(self.url + "/health", timeout=180)
        except RuntimeError:
            self.stop()
            raise RuntimeError("mlflow server did not start: " + (self.workdir / "mlflow-server.log").read_text()[-3000:])

    def stop(self):
        if self.proc:
            stop_group(self.proc)


# --- 1. write throughput ----------------------------------------------------------------------


def write_run(url, model, versions):
    """WRITERS threads create `versions` versions of `model`; returns versions per second."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=url, registry_uri=url).create_registered_model(model)
    per = [versions // WRITERS + (1 if i < versions % WRITERS else 0) for i in range(WRITERS)]
    start = threading.Barrier(WRITERS + 1)

    def writer(i):
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        start.wait()
        got = []
        for k in range(per[i]):
            mv = client.create_model_version(model, f"s3://bench-bucket/{model}/w{i}/{k}", await_creation_for=0)
            got.append(int(mv.version))
        return got

    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        futures = [pool.submit(writer, i) for i in range(WRITERS)]
        start.wait()
        t0 = time.monotonic()
        numbers = [n for f in futures for n in f.result()]
        elapsed = time.monotonic() - t0
    if sorted(numbers) != list(range(1, versions + 1)):
        raise RuntimeError(f"{url}: version numbers are not 1..{versions}: {sorted(numbers)[:20]}...")
    return versions / elapsed


def throughput(binary, cluster, workdir, versions, repeats, with_mlflow):
    servers = {}
    try:
        for d in ("sqlite", "pg"):
            (workdir / d).mkdir()
        servers["regserve server, SQLite"] = RegserveServer(binary, workdir / "sqlite", extra_args=[],
                                                             env=None)
        pg_db = cluster.new_database("bench_regserve")
        servers["regserve server, PostgreSQL"] = RegserveServer(
            binary, workdir / "pg", extra_args=[], env={"REGSERVE_BACKEND_STORE_URI": pg_db})
        if with_mlflow:
            # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3: name the driver installed here.
            mlflow_db = cluster.new_database("bench_mlflow").replace("postgresql://", "postgresql+psycopg2://", 1)
            mlflow = MlflowPg(workdir / "mlflow", mlflow_db)
            mlflow.start()
            servers["mlflow server, PostgreSQL"] = mlflow
        # Not counted: the first writes of a fresh server (connection pools, mlflow's workers).
        for srv in servers.values():
            write_run(srv.url, "bench_warmup", 4 * WRITERS)
        rates = {label: [] for label in servers}
        for run in range(repeats):
            for label, srv in servers.items():
                rate = write_run(srv.url, f"bench_run{run}", versions)
                rates[label].append(rate)
                print(f"  run {run + 1}: {label}: {rate:.0f} versions/s", file=sys.stderr)
        return rates
    finally:
        for srv in servers.values():
            srv.stop()


# --- 2. swap latency --------------------------------------------------------------------------


class Load(Workers):
    """LOAD_THREADS threads per replica scoring in a loop; keeps (time, replica, version)."""

    def __init__(self, urls, refs):
        self.urls, self.refs = urls, refs
        self.statuses = {}
        self.seen = [[] for _ in urls]  # per replica: (monotonic time answered, version)
        super().__init__([(self.run, (i,)) for i in range(len(urls)) for _ in range(LOAD_THREADS)])

    def which(self, probs):
        for v, ref in self.refs.items():
            if np.allclose(probs, ref, atol=1e-5):
                return v
        return None

    def run(self, i):
        s = requests.Session()
        while not self.stop_flag.is_set():
            try:
                r = s.post(self.urls[i] + "/invocations", json=BODY, timeout=10)
                status = r.status_code
                v = self.which(r.json()["predictions"][0]["probabilities"]) if status == 200 else None
            except requests.RequestException as e:
                status, v = f"error: {type(e).__name__}", None
            now = time.monotonic()
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if v is not None:
                    self.seen[i].append((now, v))

    def first(self, i, version, since):
        with self.lock:
            return next((t - since for t, v in self.seen[i] if t >= since and v == version), None)


class Replica:
    def __init__(self, binary, data, registry_uri, poll):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(data), "serve", "--registry-uri", registry_uri, "-m", "models:/iris@champion",
             "--port", str(self.port), "--poll-interval", poll, "--sessions", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=child_env(RUST_LOG="warn"))
        wait_http(self.url + "/ping", timeout=120)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def swap_latency(binary, cluster, workdir, moves):
    refs = {1: reference_probabilities("iris-v1"), 2: reference_probabilities("iris-v2")}
    data = workdir / "swap"
    db = cluster.new_database("bench_swap")

    def cli(*args):
        out = subprocess.run([binary, "--data-dir", str(data), "--backend-store-uri", db, *args], capture_output=True,
                             text=True, timeout=120, env=child_env(), stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"regserve {' '.join(args)}: {out.stderr}")

    cli("models", "register", str(MODELS / "iris-v1"), "--name", "iris")
    cli("models", "register", str(MODELS / "iris-v2"), "--name", "iris")
    cli("models", "alias", "set", "iris", "champion", "1")
    results = {}
    rest = RegserveServer(binary, data, extra_args=[], env={"REGSERVE_BACKEND_STORE_URI": db})
    try:
        for mode, registry_uri, poll in [("LISTEN/NOTIFY (poll 60 s)", db, "60s"),
                                         ("polling 1 s (via regserve server REST)", rest.url, "1s")]:
            cli("models", "alias", "set", "iris", "champion", "1")
            replicas = []
            try:
                for _ in range(REPLICAS):
                    replicas.append(Replica(binary, data, registry_uri, poll))
                per_move = []
                with Load([r.url for r in replicas], refs) as load:
                    time.sleep(1.0)
                    for i in range(moves):
                        target = 2 if i % 2 == 0 else 1
                        cli("models", "alias", "set", "iris", "champion", str(target))
                        since = time.monotonic()
                        deadline = since + MOVE_TIMEOUT_S
                        got = [None] * REPLICAS
                        while None in got and time.monotonic() < deadline:
                            time.sleep(0.01)
                            got = [load.first(k, target, since) for k in range(REPLICAS)]
                        if None in got:
                            raise RuntimeError(f"{mode}: move {i} to v{target} not served by every replica within "
                                               f"{MOVE_TIMEOUT_S} s: {got}")
                        per_move.append(got)
                        time.sleep(random.uniform(0.3, 0.8))  # not in step with the 1 s poll
                    statuses = dict(load.statuses)
                results[mode] = {"latencies_s": per_move, "statuses": {str(k): n for k, n in statuses.items()}}
                print(f"  {mode}: done", file=sys.stderr)
            finally:
                for r in replicas:
                    r.stop()
    finally:
        rest.stop()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=None, help="regserve binary (default: target/release, else target/debug)")
    ap.add_argument("--versions", type=int, default=400, help="versions created per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--skip-mlflow", action="store_true", help="no mlflow server column (no psycopg2 install)")
    ap.add_argument("--json", default=str(REPO / "target" / "bench-results" / "postgres.json"))
    args = ap.parse_args()
    binary = args.binary
    if binary is None:
        release = REPO / "target" / "release" / "regserve"
        binary = str(release if release.exists() else REPO / "target" / "debug" / "regserve")
    built = datetime.datetime.fromtimestamp(os.path.getmtime(binary), datetime.timezone.utc)
    profile = "release" if "/release/" in binary else "debug" if "/debug/" in binary else "?"
    print(f"bench: {binary} ({profile} build, {built:%Y-%m-%d %H:%M} UTC)", file=sys.stderr)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="regserve-bench-postgres-"))
    cluster = PgCluster()
    try:
        cluster.start()
        rates = throughput(binary, cluster, workdir, args.versions, args.repeats, not args.skip_mlflow)
        swaps = swap_latency(binary, cluster, workdir, args.moves)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nregserve: {binary} ({profile} build); {os.cpu_count()} cores; PostgreSQL: scripts/pg-cluster (fsync off)\n")
    print(f"Registry write throughput: {args.versions} versions of one model by {WRITERS} concurrent MLflow clients; "
          f"median of {args.repeats} interleaved runs\n")
    print("| registry | versions/s, median | min | max |")
    print("|---|---:|---:|---:|")
    for label, r in rates.items():
        print(f"| {label} | {statistics.median(r):.0f} | {min(r):.0f} | {max(r):.0f} |")
    print(f"\nSwap latency: alias move committed (CLI returned) → first answer from the new version on each of "
          f"{REPLICAS} replicas under load ({LOAD_THREADS} client threads per replica); {args.moves} moves\n")
    print("| mode | median, all replicas | max, all replicas | median of the slowest replica | requests | non-200 |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, res in swaps.items():
        flat = [t for move in res["latencies_s"] for t in move]
        slowest = [max(move) for move in res["latencies_s"]]
        total = sum(res["statuses"].values())
        bad = sum(n for k, n in res["statuses"].items() if k != "200")
        print(f"| {mode} | {statistics.median(flat) * 1000:.0f} ms | {max(flat) * 1000:.0f} ms | "
              f"{statistics.median(slowest) * 1000:.0f} ms | {total} | {bad} |")

    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "binary": binary, "profile": profile, "built_utc": built.isoformat(), "cores": os.cpu_count(),
        "writers": WRITERS, "versions_per_run": args.versions, "repeats": args.repeats,
        "throughput_versions_per_s": rates, "replicas": REPLICAS, "load_threads_per_replica": LOAD_THREADS,
        "swap": swaps,
    }, indent=1))
    print(f"\nraw numbers: {out}")


if __name__ == "__main__":
    main()
