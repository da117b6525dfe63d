"""Side-by-side benchmark driver (run through bench/run).

Every server runs on 127.0.0.1 on a free port and is stopped at the end (also on error); wrk
runs bounded in time. Each point is measured BENCH_REPEATS times for BENCH_SECONDS seconds and
the median is reported, so the servers are compared in one run on the same (shared, noisy)
machine: compare only numbers from the same run.

Servers, all on the same model files:
  - regserve `serve` (release build): /invocations and the V2 endpoint;
  - the floor (examples/floor.rs): a bare hyper server that parses the JSON body;
  - `mlflow models serve` 3.17.2 (the test venv; its default workers, one per core);
  - MLServer 1.7.1 with mlserver-mlflow (MLSERVER_VENV, made by bench/run): its V2 endpoint,
    two inference workers (one per core), adaptive batching off, and on (max_batch_size 64,
    max_batch_time 2 ms).

Points:
  - iris, 1 row at concurrency 1, 8, 64 and 100 rows at concurrency 8: `dataframe_split` on
    /invocations (regserve, floor, mlflow) and a V2 JSON body (regserve, MLServer);
  - mlp-large (the compute-bound model: models/make_models.py --large, BENCH_LARGE_DIR), one
    row per request at concurrency 64: regserve with batching off (--max-batch-size 1) and on
    (--max-batch-size 64, --max-batch-delay 0 and 2ms), on /invocations and V2; floor,
    mlflow, MLServer with batching off and on;
  - start to ready and resident memory (the process and its children) after the runs.

The V2 bodies follow each server's own model metadata: for iris, regserve takes the ONNX
input `float_input` [N,4] and MLServer's MLflow runtime the signature's four columns, [N,1]
each (it refuses `float_input`); for mlp-large both take the same body.

The iris model is models/iris-v1 with only its `label` output kept: MLflow's onnx pyfunc cannot
answer a DataFrame request for a model with a 2-D output (probabilities). Its MLmodel, like
mlp-large's, asks onnxruntime for one intra-op thread per session (`onnx_session_options`),
which MLflow and MLServer's MLflow runtime honour: each of their worker processes then runs
one thread, as each of regserve's sessions does.

`--cores [LIST]` (or BENCH_CORES=1,2): the per-core mode instead. For each N, the server runs
under `taskset -c 0..N-1` (regserve with --sessions N) and wrk on the remaining cores, or on
all of them when none remain (said in the output); it reports req/s and the server's CPU time
per request at the 1-row c=64 point and the mlp-large point (see docs/scaling.md).
"""

import argparse
import importlib.util
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
MLSERVER_VENV = os.environ.get("MLSERVER_VENV", os.path.join(REPO, "target/bench-mlserver-venv"))
LARGE_DIR = os.environ.get("BENCH_LARGE_DIR", os.path.join(REPO, "target/bench-models/mlp-large"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
LUA = os.path.join(REPO, "bench/post.lua")
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BATCH_DELAY = "2ms"
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}
CPUS = os.cpu_count() or 1


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tree(pid):
    """`pid` and its descendants (MLflow's and MLServer's workers)."""
    seen, todo = [], [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return seen


def rss_kib(pid):
    """Resident memory of a process and its descendants, in KiB (shared pages counted in each)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its descendants."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


class Server:
    """A server process in its own process group; ready when `ready_path` answers 200. Every
    one started is in `Server.started`, which main() stops at the end, also on error."""

    started = []

    def __init__(self, name, argv, port, work, ready_path="/ping", env=None, body=None, cwd=None, cpus=None, timeout=180):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        if cpus is not None:
            argv = ["taskset", "-c", cpus] + argv
        self.log_path = os.path.join(work, re.sub(r"[^\w.-]+", "_", name) + ".log")
        t0 = time.perf_counter()
        with open(self.log_path, "w") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        Server.started.append(self)
        try:
            self._wait_ready(argv, ready_path, body, timeout)
        except BaseException:
            self.stop()  # not ready, or interrupted while starting: the caller never sees it
            raise
        self.startup_ms = (time.perf_counter() - t0) * 1000
        self.rss_start = rss_kib(self.proc.pid)

    def _wait_ready(self, argv, ready_path, body, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {' '.join(argv)}\n{self.log_tail()}")
            try:
                req = urllib.request.Request(self.url + ready_path, data=body, headers={"Content-Type": "application/json"})
                if urllib.request.urlopen(req, timeout=1).status == 200:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout} s\n{self.log_tail()}")
            time.sleep(0.002)

    def log_tail(self):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def stop(self):
        """SIGTERM to the process group, then SIGKILL to what is left of it (after 20 s, or a
        dead server's workers). The group's id is not reused while any member lives."""
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    pass
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def post(url, body):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def numbers(x):
    """The numbers of an answer's predictions (or V2 outputs' data), in order."""
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in numbers(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in numbers(item)]
    return [float(x)] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


class Answers:
    """What each server answered to the same request, checked to agree: the servers are
    compared on the same model doing the same work."""

    def __init__(self):
        self.seen = {}

    def check(self, point, server, url, body, key):
        answer = post(url, body)
        assert key in answer, answer
        got = numbers(answer["predictions"] if key == "predictions" else [o["data"] for o in answer["outputs"]])
        first = self.seen.setdefault(point, (server, got))
        scale = max([abs(v) for v in first[1]] + [1.0])
        if len(got) != len(first[1]) or any(abs(a - b) > 1e-4 * scale for a, b in zip(got, first[1])):
            raise RuntimeError(f"{point}: {server} answered {got[:10]}, {first[0]} {first[1][:10]}")
        return answer


def wrk(url, body_file, conns, cpus=None):
    threads = 1 if conns == 1 else 2
    env = dict(os.environ, BODY=body_file)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{SECONDS}s", "--latency", "-s", LUA, url]
    if cpus is not None:
        argv = ["taskset", "-c", cpus] + argv
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=SECONDS + 60).stdout
    m = re.search(r"BENCH requests=(\d+) non2xx=(\d+) errors=(\d+) p50_us=(\d+) p99_us=(\d+) rps=([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    requests, non2xx, errors, p50, p99, rps = m.groups()
    return {"rps": float(rps), "p50": int(p50) / 1000, "p99": int(p99) / 1000, "failed": int(non2xx) + int(errors), "requests": int(requests)}


def point(url, body_file, conns, server=None, cpus=None):
    """Median of REPEATS wrk runs; with `server`, also its CPU microseconds per request."""
    runs = []
    for _ in range(REPEATS):
        c0 = cpu_seconds(server.proc.pid) if server else 0.0
        r = wrk(url, body_file, conns, cpus)
        if server and r["requests"]:
            r["cpu_us"] = (cpu_seconds(server.proc.pid) - c0) * 1e6 / r["requests"]
        runs.append(r)
    out = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
    out["failed"] = sum(r["failed"] for r in runs)
    if server:
        out["cpu_us"] = statistics.median(r.get("cpu_us", 0.0) for r in runs)
    return out


def make_label_only_model(src, dst):
    """models/iris-v1 with only its `label` output, one intra-op thread (module docstring)."""
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
    mlmodel["flavors"]["onnx"]["onnx_session_options"] = {"inter_op_num_threads": 1, "intra_op_num_threads": 1}
    with open(os.path.join(dst, "MLmodel"), "w") as f:
        yaml.safe_dump(mlmodel, f, sort_keys=True)


def write_json(work, name, doc):
    path = os.path.join(work, name + ".json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def v2_tensor(name, rows):
    return {"name": name, "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": [v for r in rows for v in r]}


def make_bodies(work):
    """Body files: iris 1 and 100 rows as dataframe_split and as each server's V2 body; mlp-large."""
    iris = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.9, 5.6, 1.8]]
    bodies = {}
    for key, rows in (("1row", iris[:1]), ("100rows", [iris[i % 4] for i in range(100)])):
        bodies[key] = write_json(work, key, {"dataframe_split": {"columns": COLUMNS, "data": rows}})
        bodies[key + "-v2"] = write_json(work, key + "-v2", {"inputs": [v2_tensor("float_input", rows)]})
        columns = [v2_tensor(c, [[r[j]] for r in rows]) for j, c in enumerate(COLUMNS)]
        bodies[key + "-v2-columns"] = write_json(work, key + "-v2-columns", {"inputs": columns})
    with open(os.path.join(LARGE_DIR, "serving_input_example.json")) as f:
        large = json.load(f)["inputs"]
    bodies["large"] = write_json(work, "large", {"inputs": large})
    bodies["large-v2"] = write_json(work, "large-v2", {"inputs": [v2_tensor("input", large)]})
    return bodies


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------ servers

def regserve(work, env, model, flags=(), cpus=None, name="regserve"):
    port = free_port()
    argv = [REGSERVE, "serve", "-m", f"models:/{model}/Production", "--port", str(port), *flags]
    return Server(name, argv, port, work, env=env, cpus=cpus)


def mlflow_serve(work, model_dir, name):
    port = free_port()
    # mlflow starts uvicorn by name: the venv's bin folder must be on PATH.
    venv_bin = os.path.dirname(sys.executable)
    env = dict(os.environ, MLFLOW_TRACKING_URI="file://" + os.path.join(work, "mlruns"), PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_dir, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return Server(name, argv, port, work, env=env)


def mlserver(work, model, model_dir, batching):
    """MLServer with its MLflow runtime serving `model_dir` as `model`, two inference workers."""
    root = os.path.join(work, f"mlserver-{model}-{'on' if batching else 'off'}")
    os.makedirs(os.path.join(root, model))
    http, grpc, metrics = free_port(), free_port(), free_port()
    with open(os.path.join(root, "settings.json"), "w") as f:
        json.dump({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": 2, "debug": False}, f)
    settings = {"name": model, "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": model_dir}}
    if batching:
        settings.update(MLSERVER_BATCH)
    with open(os.path.join(root, model, "model-settings.json"), "w") as f:
        json.dump(settings, f)
    env = dict(os.environ, MLFLOW_TRACKING_URI="file://" + os.path.join(work, "mlruns"))
    env.pop("ORT_DYLIB_PATH", None)
    argv = [os.path.join(MLSERVER_VENV, "bin", "mlserver"), "start", root]
    return Server(f"MLServer {model} batching {'on' if batching else 'off'}", argv, http, work, ready_path=f"/v2/models/{model}/ready", env=env, cwd=root)


# ------------------------------------------------------------------ output

LOAD_AT_START = os.getloadavg()[0]


def versions():
    """The peers' versions, as installed."""
    out = []
    for python, packages in ((sys.executable, ("mlflow",)), (os.path.join(MLSERVER_VENV, "bin", "python"), ("mlserver", "mlserver-mlflow"))):
        code = "import importlib.metadata as m, sys; print(' '.join(m.version(p) for p in sys.argv[1:]))"
        try:
            got = subprocess.run([python, "-c", code, *packages], capture_output=True, text=True, timeout=60).stdout.split()
        except OSError:
            got = []
        out += [f"{p} {v}" for p, v in zip(packages, got)]
    return ", ".join(out)


def cell(p):
    if p is None:
        return "–"
    fail = f", {p['failed']:,} failed" if p["failed"] else ""
    return f"{p['rps']:,.0f} ({p['p50']:.2f} / {p['p99']:.2f}{fail})"


def ratio(a, b):
    if a is None or b is None or not b["rps"]:
        return "–"
    r = a["rps"] / b["rps"]
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def mib(kib):
    return f"{kib / 1024:,.0f}" if kib else "–"


def ms(x):
    return "–" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


# ------------------------------------------------------------------ the main run

def main_run(work, env):
    """The main table's measurements."""
    r, starts, rss, answers = {}, {}, {}, Answers()

    def run(server, key, url, body, conns):
        log(f"{server.name}: {key}")
        r[key] = point(server.url + url, body, conns)

    def stop(server, label):
        rss[label] = rss_kib(server.proc.pid)
        server.stop()

    bodies = make_bodies(work)
    iris_dir = os.path.join(work, "iris-label")

    # regserve: start to ready (median of 5) with the model registered locally, then the points.
    times, idle = [], []
    for _ in range(5):
        s = regserve(work, env, "iris")
        times.append(s.startup_ms)
        idle.append(s.rss_start)
        s.stop()
    starts["regserve", "iris"] = statistics.median(times)
    rss["regserve", "iris", "idle"] = statistics.median(idle)
    s = regserve(work, env, "iris")
    answers.check("iris", "regserve", s.url + "/invocations", read(bodies["1row"]), "predictions")
    answers.check("iris", "regserve V2", s.url + "/v2/models/iris/infer", read(bodies["1row-v2"]), "outputs")
    for c in (1, 8, 64):
        run(s, ("regserve", "split", f"1row-c{c}"), "/invocations", bodies["1row"], c)
        run(s, ("regserve", "v2", f"1row-c{c}"), "/v2/models/iris/infer", bodies["1row-v2"], c)
    run(s, ("regserve", "split", "100rows-c8"), "/invocations", bodies["100rows"], 8)
    run(s, ("regserve", "v2", "100rows-c8"), "/v2/models/iris/infer", bodies["100rows-v2"], 8)
    stop(s, ("regserve", "iris"))

    for setting, flags in (("off", ["--max-batch-size", "1"]), ("on-0", ["--max-batch-size", "64", "--max-batch-delay", "0ms"]),
                           ("on-delay", ["--max-batch-size", "64", "--max-batch-delay", BATCH_DELAY])):
        s = regserve(work, env, "mlp-large", flags, name=f"regserve mlp-large batching {setting}")
        starts["regserve", "large"] = starts.get(("regserve", "large"), s.startup_ms)
        answers.check("large", s.name, s.url + "/invocations", read(bodies["large"]), "predictions")
        answers.check("large", s.name + " V2", s.url + "/v2/models/mlp-large/infer", read(bodies["large-v2"]), "outputs")
        run(s, ("regserve", "split", f"large-{setting}"), "/invocations", bodies["large"], 64)
        run(s, ("regserve", "v2", f"large-{setting}"), "/v2/models/mlp-large/infer", bodies["large-v2"], 64)
        stop(s, ("regserve", "large", setting))

    # the floor: same bodies as regserve's /invocations
    port = free_port()
    s = Server("floor", [FLOOR, str(port)], port, work, ready_path="/", body=b"{}")
    starts["floor", "iris"] = s.startup_ms
    for c in (1, 8, 64):
        run(s, ("floor", "split", f"1row-c{c}"), "/", bodies["1row"], c)
    run(s, ("floor", "split", "100rows-c8"), "/", bodies["100rows"], 8)
    run(s, ("floor", "split", "large"), "/", bodies["large"], 64)
    stop(s, ("floor", "iris"))

    # mlflow models serve, same model files, local env manager
    if importlib.util.find_spec("mlflow") is None:
        log("mlflow is not installed in the venv: its column stays empty")
    else:
        s = mlflow_serve(work, iris_dir, "mlflow iris")
        starts["mlflow", "iris"] = s.startup_ms
        answers.check("iris", s.name, s.url + "/invocations", read(bodies["1row"]), "predictions")
        for c in (1, 8, 64):
            run(s, ("mlflow", "split", f"1row-c{c}"), "/invocations", bodies["1row"], c)
        run(s, ("mlflow", "split", "100rows-c8"), "/invocations", bodies["100rows"], 8)
        stop(s, ("mlflow", "iris"))
        s = mlflow_serve(work, LARGE_DIR, "mlflow mlp-large")
        starts["mlflow", "large"] = s.startup_ms
        answers.check("large", s.name, s.url + "/invocations", read(bodies["large"]), "predictions")
        run(s, ("mlflow", "split", "large"), "/invocations", bodies["large"], 64)
        stop(s, ("mlflow", "large"))

    # MLServer with its MLflow runtime, adaptive batching off and on
    if not os.path.exists(os.path.join(MLSERVER_VENV, "bin", "mlserver")):
        log(f"no MLServer in {MLSERVER_VENV} (bench/run makes it): its columns stay empty")
    else:
        for batching in (False, True):
            b = "on" if batching else "off"
            s = mlserver(work, "iris", iris_dir, batching)
            starts.setdefault(("mlserver", "iris"), s.startup_ms)
            answers.check("iris", s.name, s.url + "/v2/models/iris/infer", read(bodies["1row-v2-columns"]), "outputs")
            for c in (1, 8, 64):
                run(s, ("mlserver", b, f"1row-c{c}"), "/v2/models/iris/infer", bodies["1row-v2-columns"], c)
            run(s, ("mlserver", b, "100rows-c8"), "/v2/models/iris/infer", bodies["100rows-v2-columns"], 8)
            stop(s, ("mlserver", "iris", b))
            s = mlserver(work, "mlp-large", LARGE_DIR, batching)
            starts.setdefault(("mlserver", "large"), s.startup_ms)
            answers.check("large", s.name, s.url + "/v2/models/mlp-large/infer", read(bodies["large-v2"]), "outputs")
            run(s, ("mlserver", b, "large"), "/v2/models/mlp-large/infer", bodies["large-v2"], 64)
            stop(s, ("mlserver", "large", b))
    return r, starts, rss


def print_main(r, starts, rss):
    g = r.get
    print(f"\nOne run, {REPEATS} x {SECONDS} s per point, medians; wrk on loopback; {CPUS} cores shared by the servers and wrk; "
          f"{versions()}; load average {LOAD_AT_START:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    print("Each cell: req/s (p50 / p99 ms). Ratios are regserve's req/s over the other's.\n")
    print("| point | body | regserve | floor | mlflow | MLServer, batching off | MLServer, batching on | regserve / floor | regserve / mlflow | regserve / MLServer (off, on) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    points = [("1row-c1", "iris 1 row, c=1"), ("1row-c8", "iris 1 row, c=8"), ("1row-c64", "iris 1 row, c=64"), ("100rows-c8", "iris 100 rows, c=8")]
    for key, label in points:
        rs, fl, mf = g(("regserve", "split", key)), g(("floor", "split", key)), g(("mlflow", "split", key))
        print(f"| {label} | dataframe_split | {cell(rs)} | {cell(fl)} | {cell(mf)} | | | {ratio(rs, fl)} | {ratio(rs, mf)} | |")
        rv, off, on = g(("regserve", "v2", key)), g(("mlserver", "off", key)), g(("mlserver", "on", key))
        print(f"| {label} | V2 JSON | {cell(rv)} | | | {cell(off)} | {cell(on)} | | | {ratio(rv, off)}, {ratio(rv, on)} |")
    # mlp-large: the floor and mlflow (no batching) once; MLServer off beside regserve off, on beside on.
    fl, mf = g(("floor", "split", "large")), g(("mlflow", "split", "large"))
    off, on = g(("mlserver", "off", "large")), g(("mlserver", "on", "large"))
    for i, (setting, label) in enumerate((("off", "batching off (--max-batch-size 1)"), ("on-0", "batching on (64, delay 0)"),
                                          ("on-delay", f"batching on (64, delay {BATCH_DELAY})"))):
        rs, rv = g(("regserve", "split", f"large-{setting}")), g(("regserve", "v2", f"large-{setting}"))
        same = "(as above)"
        print(f"| mlp-large 1 row, c=64, regserve {label} | inputs | {cell(rs)} | {cell(fl) if i == 0 else same} | "
              f"{cell(mf) if i == 0 else same} | | | {ratio(rs, fl)} | {ratio(rs, mf)} | |")
        ms_off, ms_on = (cell(off), "") if setting == "off" else ("", cell(on))
        vs = ratio(rv, off) if setting == "off" else ratio(rv, on)
        print(f"| mlp-large 1 row, c=64, regserve {label} | V2 JSON | {cell(rv)} | | | {ms_off} | {ms_on} | | | {vs} |")
    base_s, base_v = g(("regserve", "split", "large-off")), g(("regserve", "v2", "large-off"))
    on_s = [ratio(g(("regserve", "split", f"large-{k}")), base_s) for k in ("on-0", "on-delay")]
    on_v = [ratio(g(("regserve", "v2", f"large-{k}")), base_v) for k in ("on-0", "on-delay")]
    print(f"\nBatching on / off, mlp-large, c=64: regserve /invocations {on_s[0]} (delay 0), {on_s[1]} (delay {BATCH_DELAY}); "
          f"regserve V2 {on_v[0]} (delay 0), {on_v[1]} (delay {BATCH_DELAY}); MLServer V2 {ratio(on, off)} "
          f"(max_batch_size {MLSERVER_BATCH['max_batch_size']}, max_batch_time {MLSERVER_BATCH['max_batch_time'] * 1000:g} ms).\n")

    def starts_of(server):
        return f"{ms(starts.get((server, 'iris')))} / {ms(starts.get((server, 'large')))}"

    def rss_of(server, *settings):
        return " / ".join(mib(rss.get((server, *s))) for s in settings)

    print("| | regserve | floor | mlflow models serve | MLServer |")
    print("|---|---:|---:|---:|---:|")
    print(f"| start to ready, ms: iris / mlp-large (regserve iris: median of 5) | {starts_of('regserve')} | {ms(starts.get(('floor', 'iris')))} | "
          f"{starts_of('mlflow')} | {starts_of('mlserver')} |")
    print(f"| resident memory after the runs, MiB, iris (idle at start) | {mib(rss.get(('regserve', 'iris')))} ({mib(rss.get(('regserve', 'iris', 'idle')))}) | "
          f"{mib(rss.get(('floor', 'iris')))} | {mib(rss.get(('mlflow', 'iris')))} | {rss_of('mlserver', ('iris', 'off'), ('iris', 'on'))} (batching off / on) |")
    print(f"| resident memory after the runs, MiB, mlp-large | {rss_of('regserve', ('large', 'off'), ('large', 'on-0'), ('large', 'on-delay'))} "
          f"(batching off / on / on {BATCH_DELAY}) | | {mib(rss.get(('mlflow', 'large')))} | {rss_of('mlserver', ('large', 'off'), ('large', 'on'))} (batching off / on) |")
    print("\nResident memory is the sum over the process and its children (MLflow's and MLServer's worker processes).")

    # Issue 17's targets, read off the tables above.
    def mark(ok):
        return "met" if ok else "NOT met"

    floors = []
    for key in ("1row-c1", "1row-c8", "1row-c64", "100rows-c8"):
        a, b = g(("regserve", "split", key)), g(("floor", "split", key))
        if a and b and b["rps"]:
            floors.append((key, a["rps"] / b["rps"]))
    on, off = g(("regserve", "split", "large-on-0")), g(("regserve", "split", "large-off"))
    batching = on["rps"] / off["rps"] if on and off and off["rps"] else None
    p99 = g(("regserve", "split", "1row-c64"))
    rss_iris, start = rss.get(("regserve", "iris")), starts.get(("regserve", "iris"))
    lines = [f"regserve / floor ≥ 0.8: {', '.join(f'{k} {v:.2f}' for k, v in floors)} ({mark(floors and min(v for _, v in floors) >= 0.8)})"]
    if batching is not None:
        lines.append(f"batching on / off on mlp-large at c=64 ≥ 3x: {batching:.1f}x ({mark(batching >= 3)})")
    if p99:
        lines.append(f"p99 at c=64, 1 row ≤ 5 ms: {p99['p99']:.2f} ms ({mark(p99['p99'] <= 5)})")
    if rss_iris:
        lines.append(f"RSS serving iris ≤ 64 MiB: {rss_iris / 1024:.0f} MiB ({mark(rss_iris <= 64 * 1024)})")
    if start is not None:
        lines.append(f"start to ready ≤ 100 ms: {start:.1f} ms ({mark(start <= 100)})")
    print("\nTargets (issue 17): " + "; ".join(lines) + ".")


# ------------------------------------------------------------------ per-core mode

def cores_run(work, env, counts):
    rows = []
    bodies = make_bodies(work)
    for n in counts:
        if n < 1 or n > CPUS:
            raise SystemExit(f"--cores: {n} is not between 1 and the {CPUS} cores here")
        server_cpus = ",".join(str(i) for i in range(n))
        rest = list(range(n, CPUS))
        wrk_cpus = ",".join(str(i) for i in rest) if rest else ",".join(str(i) for i in range(CPUS))
        where = f"cores {wrk_cpus}" + ("" if rest else " (shared with the server)")
        row = {"n": n, "server": server_cpus, "wrk": where}
        s = regserve(work, env, "iris", ["--sessions", str(n)], cpus=server_cpus)
        log(f"regserve on {n} core(s): iris 1 row c=64")
        row["iris"] = point(s.url + "/invocations", bodies["1row"], 64, server=s, cpus=wrk_cpus)
        s.stop()
        port = free_port()
        s = Server("floor", [FLOOR, str(port)], port, work, ready_path="/", body=b"{}", cpus=server_cpus)
        log(f"floor on {n} core(s): 1 row c=64")
        row["floor"] = point(s.url + "/", bodies["1row"], 64, server=s, cpus=wrk_cpus)
        s.stop()
        for setting, flags in (("off", ["--max-batch-size", "1"]), ("on", ["--max-batch-size", "64"])):
            s = regserve(work, env, "mlp-large", ["--sessions", str(n), *flags], cpus=server_cpus)
            log(f"regserve on {n} core(s): mlp-large c=64, batching {setting}")
            row[f"large-{setting}"] = point(s.url + "/invocations", bodies["large"], 64, server=s, cpus=wrk_cpus)
            s.stop()
        rows.append(row)
    return rows


def print_cores(rows):
    print(f"\nPer-core mode: one run, {REPEATS} x {SECONDS} s per point, medians; the server under taskset (regserve with "
          f"--sessions N), wrk (2 threads, c=64) where the table says; {CPUS} cores on this machine.")
    print(f"Load average {LOAD_AT_START:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. Each cell: req/s (p50 / p99 ms), the "
          "server's CPU time per request (all its threads), and the cores it kept busy (req/s × CPU per request): below N, "
          "it waited on the client, or on other work on its cores.\n")
    print("| server cores | wrk on | regserve, iris 1 row | floor, 1 row | regserve, mlp-large, batching off | regserve, mlp-large, batching on (64, delay 0) |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        cells = [f"{cell(row[k])}, {row[k]['cpu_us']:,.0f} µs, {row[k]['cpu_us'] * row[k]['rps'] / 1e6:.2f} cores"
                 for k in ("iris", "floor", "large-off", "large-on")]
        print(f"| {row['n']} ({row['server']}) | {row['wrk']} | {' | '.join(cells)} |")


def main():
    ap = argparse.ArgumentParser(description="regserve beside its peers; see the module docstring")
    ap.add_argument("--cores", nargs="?", const="1,2", default=os.environ.get("BENCH_CORES"),
                    help="per-core mode: comma-separated core counts (default 1,2; or BENCH_CORES)")
    args = ap.parse_args()
    # The servers run in sessions of their own: on SIGTERM too, unwind through `finally` and stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.path.exists(os.path.join(LARGE_DIR, "model.onnx")):
        raise SystemExit(f"{LARGE_DIR} is missing: bench/run makes it (models/make_models.py --large DIR)")
    work = tempfile.mkdtemp(prefix="regserve-bench-")
    try:
        model_dir = os.path.join(work, "iris-label")
        make_label_only_model(os.path.join(REPO, "models/iris-v1"), model_dir)
        env = dict(os.environ, REGSERVE_DATA_DIR=os.path.join(work, "data"), RUST_LOG="warn")
        for path, name in ((model_dir, "iris"), (LARGE_DIR, "mlp-large")):
            subprocess.run([REGSERVE, "models", "register", path, "--name", name, "--stage", "Production"], env=env, check=True, stdout=subprocess.DEVNULL)
        if args.cores:
            rows = cores_run(work, env, [int(n) for n in args.cores.split(",") if n.strip()])
            print_cores(rows)
        else:
            r, starts, rss = main_run(work, env)
            print_main(r, starts, rss)
    finally:
        for s in Server.started:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
