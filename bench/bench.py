"""Side-by-side benchmark driver (run through bench/run).

Every server runs on 127.0.0.1 and is stopped at the end; wrk runs bounded in time. Each point
is measured BENCH_REPEATS times for BENCH_SECONDS seconds and the median is reported, so the
servers are compared in one run on the same (shared, noisy) machine.

Points:
  - iris, 1-row dataframe_split at concurrency 1, 8, 64: regserve, mlflow models serve, floor
  - iris, 100-row dataframe_split at concurrency 8: regserve, mlflow models serve
  - mlp, batch-1 `inputs` at concurrency 64: regserve with dynamic batching on and off
  - startup to ready (model already registered / in the local cache) and resident memory

The iris model both servers load is models/iris-v1 with only its `label` output kept:
MLflow's onnx pyfunc cannot answer a DataFrame request for a model with a 2-D output
(probabilities), so the comparison uses the variant both can serve.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGSERVE = os.path.join(REPO, "target/release/regserve")
FLOOR = os.path.join(REPO, "target/release/examples/floor")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
LUA = os.path.join(REPO, "bench/post.lua")
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    """Resident memory of a process and its children, in KiB."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
        # grandchildren (uvicorn workers under mlflow)
        for p in list(pids[1:]):
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p)], capture_output=True, text=True).stdout
            pids += [int(q) for q in out.split()]
    except Exception:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    def __init__(self, name, argv, port, ready_path="/ping", env=None, body=None):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}: {' '.join(argv)}")
            try:
                if body is None:
                    ok = urllib.request.urlopen(self.url + ready_path, timeout=1).status == 200
                else:
                    req = urllib.request.Request(self.url + ready_path, data=body, headers={"Content-Type": "application/json"})
                    ok = urllib.request.urlopen(req, timeout=1).status == 200
                if ok:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after 180 s")
            time.sleep(0.002)
        self.startup_ms = (time.perf_counter() - t0) * 1000
        self.rss_start = rss_kib(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def check(url, body):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    assert "predictions" in answer, answer
    return answer


def wrk(url, body_file, conns):
    threads = 1 if conns == 1 else 2
    env = dict(os.environ, BODY=body_file)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{SECONDS}s", "--latency", "-s", LUA, url],
        env=env, capture_output=True, text=True, timeout=SECONDS + 60,
    ).stdout
    m = re.search(r"BENCH requests=(\d+) non2xx=(\d+) errors=(\d+) p50_us=(\d+) p99_us=(\d+) rps=([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    requests, non2xx, errors, p50, p99, rps = m.groups()
    return {"rps": float(rps), "p50": int(p50) / 1000, "p99": int(p99) / 1000, "failed": int(non2xx) + int(errors)}


def point(url, body_file, conns):
    runs = [wrk(url, body_file, conns) for _ in range(REPEATS)]
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50": statistics.median(r["p50"] for r in runs),
        "p99": statistics.median(r["p99"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
    }


def make_label_only_model(src, dst):
    """models/iris-v1 with only its `label` output (see the module docstring)."""
    import onnx
    import yaml

    shutil.copytree(src, dst)
    m = onnx.load(os.path.join(src, "model.onnx"))
    keep = [o for o in m.graph.output if o.name == "label"]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    onnx.save(m, os.path.join(dst, "model.onnx"))
    with open(os.path.join(dst, "MLmodel")) as f:
        mlmodel = yaml.safe_load(f)
    mlmodel["signature"]["outputs"] = json.dumps([{"type": "long", "name": "label", "required": True}])
    with open(os.path.join(dst, "MLmodel"), "w") as f:
        yaml.safe_dump(mlmodel, f, sort_keys=True)


def fmt(p):
    if p is None:
        return "–", "–", "–"
    fail = f" ({p['failed']} failed)" if p["failed"] else ""
    return f"{p['rps']:,.0f}{fail}", f"{p['p50']:.2f}", f"{p['p99']:.2f}"


def ratio(a, b):
    if a is None or b is None or b["rps"] == 0:
        return "–"
    return f"{a['rps'] / b['rps']:.1f}x"


def main():
    work = tempfile.mkdtemp(prefix="regserve-bench-")
    servers = []
    try:
        model_dir = os.path.join(work, "iris-label")
        make_label_only_model(os.path.join(REPO, "models/iris-v1"), model_dir)
        data = os.path.join(work, "data")
        env = dict(os.environ, REGSERVE_DATA_DIR=data, RUST_LOG="warn")
        for path, name in [(model_dir, "iris"), (os.path.join(REPO, "models/mlp"), "mlp")]:
            subprocess.run([REGSERVE, "models", "register", path, "--name", name, "--stage", "Production"], env=env, check=True, stdout=subprocess.DEVNULL)

        rows1 = [[5.1, 3.5, 1.4, 0.2]]
        iris = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]
        rows100 = [iris[i % 4] for i in range(100)]
        bodies = {}
        for key, rows in [("1row", rows1), ("100rows", rows100)]:
            bodies[key] = os.path.join(work, f"{key}.json")
            with open(bodies[key], "w") as f:
                json.dump({"dataframe_split": {"columns": COLUMNS, "data": rows}}, f)
        bodies["mlp"] = os.path.join(work, "mlp.json")
        with open(bodies["mlp"], "w") as f:
            json.dump({"inputs": [[round(0.01 * i, 2) for i in range(64)]]}, f)
        one = open(bodies["1row"], "rb").read()

        results = {}

        # regserve: startup to ready (5 starts, median) with the model registered locally.
        starts, rss_idle = [], []
        for _ in range(5):
            port = free_port()
            s = Server("regserve", [REGSERVE, "serve", "-m", "models:/iris/Production", "--port", str(port)], port, env=env)
            starts.append(s.startup_ms)
            rss_idle.append(s.rss_start)
            s.stop()
        log(f"regserve startup to ready: {statistics.median(starts):.1f} ms")

        port = free_port()
        rs = Server("regserve", [REGSERVE, "serve", "-m", "models:/iris/Production", "--port", str(port)], port, env=env)
        servers.append(rs)
        check(rs.url + "/invocations", one)
        for c in (1, 8, 64):
            log(f"regserve 1-row c={c}")
            results[("regserve", f"1row-c{c}")] = point(rs.url + "/invocations", bodies["1row"], c)
        log("regserve 100-row c=8")
        results[("regserve", "100rows-c8")] = point(rs.url + "/invocations", bodies["100rows"], 8)
        rs_rss = rss_kib(rs.proc.pid)
        rs.stop()

        for label, batch in [("on", "64"), ("off", "1")]:
            port = free_port()
            m = Server(f"regserve mlp batching {label}", [REGSERVE, "serve", "-m", "models:/mlp/Production", "--port", str(port), "--max-batch-size", batch], port, env=env)
            servers.append(m)
            check(m.url + "/invocations", open(bodies["mlp"], "rb").read())
            log(f"regserve mlp batch-1 c=64, batching {label}")
            results[("regserve", f"mlp-{label}")] = point(m.url + "/invocations", bodies["mlp"], 64)
            m.stop()

        # floor
        port = free_port()
        fl = Server("floor", [FLOOR, str(port)], port, ready_path="/", body=b"{}")
        servers.append(fl)
        for c in (1, 8, 64):
            log(f"floor 1-row c={c}")
            results[("floor", f"1row-c{c}")] = point(fl.url + "/", bodies["1row"], c)
        fl.stop()

        # mlflow models serve, same model files, local env manager
        mlflow_startup = mlflow_rss = None
        try:
            import mlflow  # noqa: F401

            port = free_port()
            # mlflow starts uvicorn by name: the venv's bin folder must be on PATH.
            venv_bin = os.path.dirname(sys.executable)
            mlenv = dict(os.environ, MLFLOW_TRACKING_URI="file://" + os.path.join(work, "mlruns"), PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))
            mf = Server("mlflow", [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_dir, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], port, env=mlenv)
            servers.append(mf)
            mlflow_startup = mf.startup_ms
            check(mf.url + "/invocations", one)
            for c in (1, 8, 64):
                log(f"mlflow 1-row c={c}")
                results[("mlflow", f"1row-c{c}")] = point(mf.url + "/invocations", bodies["1row"], c)
            log("mlflow 100-row c=8")
            results[("mlflow", "100rows-c8")] = point(mf.url + "/invocations", bodies["100rows"], 8)
            mlflow_rss = rss_kib(mf.proc.pid)
            mf.stop()
        except ImportError:
            log("mlflow is not installed in the venv: its column stays empty")

        g = results.get
        print(f"\nOne run, {REPEATS} x {SECONDS} s per point, medians; wrk on loopback; 2 cores shared by server and load generator.\n")
        print("| point | regserve req/s | p50 ms | p99 ms | mlflow req/s | p50 ms | p99 ms | floor req/s | regserve / mlflow | regserve / floor |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, label in [("1row-c1", "1-row split, c=1"), ("1row-c8", "1-row split, c=8"), ("1row-c64", "1-row split, c=64"), ("100rows-c8", "100-row split, c=8")]:
            r, m, f = g(("regserve", key)), g(("mlflow", key)), g(("floor", key))
            print(f"| {label} | {' | '.join(fmt(r))} | {' | '.join(fmt(m))} | {fmt(f)[0]} | {ratio(r, m)} | {ratio(r, f)} |")
        on, off = g(("regserve", "mlp-on")), g(("regserve", "mlp-off"))
        print(f"| mlp batch-1, c=64, batching on | {' | '.join(fmt(on))} | – | – | – | – | – | on / off: {ratio(on, off)} |")
        print(f"| mlp batch-1, c=64, batching off | {' | '.join(fmt(off))} | – | – | – | – | – | |")
        print()
        print("| | regserve | mlflow models serve |")
        print("|---|---:|---:|")
        ms = f"{mlflow_startup:,.0f}" if mlflow_startup else "–"
        print(f"| startup to ready, ms (median of 5 for regserve) | {statistics.median(starts):.1f} | {ms} |")
        mr = f"{mlflow_rss / 1024:.0f}" if mlflow_rss else "–"
        print(f"| resident memory after the runs, MiB | {rs_rss / 1024:.0f} (idle {statistics.median(rss_idle) / 1024:.0f}) | {mr} |")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
