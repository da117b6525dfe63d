"""The registry half (issue 17, item 5): `regserve server` beside a real `mlflow server`, reads with
wrk and writes from concurrent clients, on the same seeded registry.

    /path/to/.venv/bin/python bench/registry.py [--binary target/release/regserve] [--seconds 10]
        [--models 50] [--versions 4] [--connections 8] [--skip-mlflow] [--json FILE]
        [--baseline OTHER_REGSERVE_BINARY]

With --baseline, a second regserve binary (say, one built from main before a change) is measured
in the same run, right after the first, on a registry seeded the same way, and the table gains
its columns and the ratio: before/after numbers from one run on one machine.

Both servers start on 127.0.0.1 with a fresh SQLite store (`mlflow server` with its defaults and
`--backend-store-uri sqlite:///…`). Each is seeded over REST with MODELS registered models ×
VERSIONS versions (a description and a tag each; versions 1..4 in Archived, Staging, Production
and None, so every model lists four latest versions; the alias `champion` on version 3); the
versions' source is an `s3://` location neither server reads, so no model is loaded.

Reads (wrk, CONNECTIONS connections, 2 threads, SECONDS each, after a 2 s warm-up):
  - `registered-models/search?max_results=10` (10 models with their latest versions),
  - `registered-models/get?name=…`, `model-versions/get?name=…&version=3`,
  - `model-versions/search?filter=name='…'` (the 4 versions of one model).
Every endpoint is checked to answer 200 with the expected number of items before it is measured.

Writes: CONNECTIONS threads, each with its own HTTP session, create versions of one fresh model
for SECONDS; versions per second, and the version numbers are checked to be exactly 1..N.

Prints a markdown table (req/s, p50, p99; the regserve / MLflow ratio) and writes JSON.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import requests

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from conftest import RegserveServer  # noqa: E402
from test_follow import MlflowServer  # noqa: E402

API = "/api/2.0/mlflow"
STAGES = ["Archived", "Staging", "Production", "None"]


def post(session, url, path, body):
    r = session.post(url + API + path, json=body, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return r.json()


def seed(url, models, versions):
    s = requests.Session()
    for i in range(models):
        name = f"model-{i:03d}"
        post(s, url, "/registered-models/create",
             {"name": name, "description": f"model {i}", "tags": [{"key": "team", "value": f"t{i % 5}"}]})
        for v in range(1, versions + 1):
            mv = post(s, url, "/model-versions/create",
                      {"name": name, "source": f"s3://bench-not-read/{name}/{v}", "tags": [{"key": "k", "value": str(v)}]})
            assert mv["model_version"]["version"] == str(v)
            stage = STAGES[(v - 1) % len(STAGES)]
            if stage != "None":
                post(s, url, "/model-versions/transition-stage",
                     {"name": name, "version": str(v), "stage": stage, "archive_existing_versions": False})
        post(s, url, "/registered-models/alias", {"name": name, "alias": "champion", "version": str(min(3, versions))})


def reads(models, versions):
    mid = f"model-{models // 2:03d}"
    return [
        ("registered-models/search (10)", f"{API}/registered-models/search?max_results=10",
         lambda b: len(b["registered_models"]) == 10 and all(len(m["latest_versions"]) == min(versions, 4) for m in b["registered_models"])),
        ("registered-models/get", f"{API}/registered-models/get?name={mid}",
         lambda b: b["registered_model"]["name"] == mid),
        ("model-versions/get", f"{API}/model-versions/get?name={mid}&version={min(3, versions)}",
         lambda b: b["model_version"]["name"] == mid),
        ("model-versions/search (1 model)", f"{API}/model-versions/search?filter=name%3D%27{mid}%27",
         lambda b: len(b["model_versions"]) == versions),
    ]


def wrk(url, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    pct = {}
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        val, unit = float(m.group(1)), m.group(2)
        pct[p] = val / 1000 if unit == "us" else val * 1000 if unit == "s" else val
    return {"rps": rps, "p50_ms": pct["50"], "p99_ms": pct["99"], "errors": int(errors.group(1)) if errors else 0}


def writes(url, seconds, clients):
    name = f"writes-{time.monotonic_ns()}"
    post(requests.Session(), url, "/registered-models/create", {"name": name})
    numbers, failures = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run():
        s = requests.Session()
        while time.monotonic() < deadline:
            try:
                v = post(s, url, "/model-versions/create", {"name": name, "source": "s3://bench-not-read/w"})
                with lock:
                    numbers.append(int(v["model_version"]["version"]))
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    failures.append(str(e)[:200])

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.monotonic() - started
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), "version numbers are not 1..N"
    return {"versions_per_s": len(numbers) / elapsed, "created": len(numbers), "failures": len(failures),
            "first_failure": failures[0] if failures else None}


def measure(label, url, args):
    print(f"# {label}: seeding {args.models} x {args.versions}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    seed(url, args.models, args.versions)
    print(f"# {label}: seeded in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    out = {}
    for what, path, check in reads(args.models, args.versions):
        r = requests.get(url + path, timeout=30)
        assert r.status_code == 200 and check(r.json()), f"{label} {what}: {r.status_code} {r.text[:300]}"
        wrk(url + path, 2, args.connections)
        out[what] = wrk(url + path, args.seconds, args.connections)
        print(f"# {label} {what}: {out[what]}", file=sys.stderr, flush=True)
    out["writes"] = writes(url, args.seconds, args.connections)
    print(f"# {label} writes: {out['writes']}", file=sys.stderr, flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=str(REPO / "target" / "release" / "regserve"))
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--versions", type=int, default=4)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--skip-mlflow", action="store_true")
    p.add_argument("--baseline", help="another regserve binary to measure in the same run (before/after)")
    p.add_argument("--json", default=str(REPO / "target" / "bench-results" / "registry.json"))
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (Debian's `wrk` package; bench/run installs it)")
    binary = pathlib.Path(args.binary)
    print(f"# binary {binary} built {time.ctime(binary.stat().st_mtime)}; {os.cpu_count()} cores", file=sys.stderr)
    results = {}
    with tempfile.TemporaryDirectory(prefix="regserve-bench-registry-") as work:
        work = pathlib.Path(work)
        runs = [("regserve", binary)] + ([("baseline", pathlib.Path(args.baseline))] if args.baseline else [])
        for label, path in runs:
            server = RegserveServer(str(path), work / label, extra_args=[], env={"RUST_LOG": "warn,regserve::cli=info"})
            try:
                results[label] = measure(f"{label} server ({path})", server.url, args)
            finally:
                server.stop()
        if not args.skip_mlflow:
            (work / "mlflow").mkdir()
            mlflow = MlflowServer(work / "mlflow")
            mlflow.start()
            try:
                results["mlflow"] = measure("mlflow server", mlflow.url, args)
            finally:
                mlflow.stop()
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    r, m = results["regserve"], results.get("mlflow")
    print(f"\nRegistry, {args.models} models x {args.versions} versions, wrk c={args.connections}, {args.seconds} s per point\n")
    print("| endpoint | regserve req/s | p50 ms | p99 ms | mlflow req/s | p50 ms | p99 ms | regserve / mlflow |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for what, _, _ in reads(args.models, args.versions):
        a = r[what]
        b = m[what] if m else None
        cells = [f"{a['rps']:,.0f}", f"{a['p50_ms']:.2f}", f"{a['p99_ms']:.2f}"]
        cells += [f"{b['rps']:,.0f}", f"{b['p50_ms']:.2f}", f"{b['p99_ms']:.2f}", f"{a['rps'] / b['rps']:.0f}x"] if b else ["–"] * 4
        print(f"| {what} | " + " | ".join(cells) + " |")
    w = r["writes"]
    mw = m["writes"] if m else None
    print(f"| versions created/s ({args.connections} clients) | {w['versions_per_s']:,.0f} | | | "
          + (f"{mw['versions_per_s']:,.0f} | | | {w['versions_per_s'] / mw['versions_per_s']:.0f}x |" if mw else "– | | | – |"))
    if "baseline" in results:
        base = results["baseline"]
        print(f"\nThe same run: {binary} against the baseline {args.baseline}\n")
        print("| endpoint | regserve req/s | p50 ms | p99 ms | baseline req/s | p50 ms | p99 ms | regserve / baseline |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for what, _, _ in reads(args.models, args.versions):
            a, b = r[what], base[what]
            print(f"| {what} | {a['rps']:,.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {b['rps']:,.0f} | "
                  f"{b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {a['rps'] / b['rps']:.2f} |")
        bw = base["writes"]["versions_per_s"]
        print(f"| versions created/s ({args.connections} clients) | {w['versions_per_s']:,.0f} | | | {bw:,.0f} | | | "
              f"{w['versions_per_s'] / bw:.2f} |")
    for label, res in results.items():
        errs = sum(v.get("errors", 0) for v in res.values()) + res["writes"]["failures"]
        if errs:
            print(f"\n{label}: {errs} failed requests (first write failure: {res['writes']['first_failure']})")


if __name__ == "__main__":
    main()
