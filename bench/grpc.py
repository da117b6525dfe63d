"""gRPC vs HTTP V2 on regserve, and regserve vs MLServer over gRPC, with the Triton clients.

One run, side by side, on the small example MLP (models/mlp: 64 float inputs → 10, batch-1
requests):

  - regserve `serve --grpc-port`: tritonclient.grpc (raw_input_contents) vs tritonclient.http
    with binary tensor data and with JSON data, at concurrency 1 and 64;
  - tritonclient.grpc against regserve vs against MLServer's gRPC server (MLServer from PyPI,
    running the same model.onnx through bench/mlserver/onnx_runtime.py: onnxruntime, one
    intra-op thread per session, two inference workers as regserve has two sessions on 2 cores).

The load comes from client PROCESSES (not threads: the Python clients hold the GIL while they
encode and decode), c/4 threads in each of 4 processes at c=64, one process at c=1; every
thread has its own client and connection. Each point runs BENCH_SECONDS (10) after a 1 s
warm-up; throughput counts answers in the window, latencies are each request's. The server's
and the clients' CPU use over the window are reported: on this 2-core machine the clients share
the cores with the server, so at c=64 the numbers are of the pair, not of the server alone.

  cargo build --release --bin regserve
  .venv/bin/python bench/grpc.py            # the test venv (tritonclient[http,grpc])

MLServer's virtualenv (MLSERVER_VENV, default target/bench-mlserver-venv) is made on the first
run: `python3 -m venv $MLSERVER_VENV && $MLSERVER_VENV/bin/pip install -r
scripts/requirements-bench-mlserver.txt`.
"""

import os
import sys

# This file is named grpc.py: out of the import path, or `import grpc` (in tritonclient) finds it.
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

import json  # noqa: E402
import multiprocessing  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(REPO, "tests", "python"))
from test_follow import free_port  # noqa: E402
REGSERVE = os.environ.get("REGSERVE_BIN", os.path.join(REPO, "target/release/regserve"))
MLSERVER_VENV = os.environ.get("MLSERVER_VENV", os.path.join(REPO, "target/bench-mlserver-venv"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = 1.0
MODEL = os.path.join(REPO, "models/mlp")
X = (np.arange(64, dtype=np.float32) * 0.01).reshape(1, 64)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_ok(url, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def cpu_seconds(pids):
    """User + system CPU seconds of `pids` and their children (MLServer's workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    seen = set()
    todo = list(pids)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


# ------------------------------------------------------------------ load generator (one process)

def client_process(kind, target, model, threads, start_at, end_at, out):
    """`threads` threads, each with its own client, scoring X until `end_at`; sends back
    (answers in the window, latencies in the window, errors, this process's CPU seconds)."""
    import threading

    def make():
        if kind == "grpc":
            import tritonclient.grpc as g

            client = g.InferenceServerClient(target)
            inp = g.InferInput("input", list(X.shape), "FP32")
            inp.set_data_from_numpy(X)
        else:
            import tritonclient.http as h

            client = h.InferenceServerClient(target, connection_timeout=30, network_timeout=30)
            inp = h.InferInput("input", list(X.shape), "FP32")
            inp.set_data_from_numpy(X, binary_data=(kind == "http-binary"))
        return client, inp

    lat, errors, lock = [], [0], threading.Lock()

    def run():
        client, inp = make()
        mine, err = [], 0
        while True:
            t0 = time.time()
            if t0 >= end_at:
                break
            try:
                r = client.infer(model, [inp])
                ok = r.as_numpy(OUTPUT).shape == (1, 10)
            except Exception:
                ok = False
            t1 = time.time()
            if t0 >= start_at:
                if ok:
                    mine.append(t1 - t0)
                else:
                    err += 1
        with lock:
            lat.extend(mine)
            errors[0] += err
        client.close()

    c0 = time.process_time()
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, errors[0], time.process_time() - c0))


OUTPUT = "variable"


def point(kind, target, concurrency, server_pids, model="mlp"):
    processes = 1 if concurrency == 1 else 4
    per = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    now = time.time()
    start_at = now + 2.0 + WARMUP  # spawning the processes takes about a second
    end_at = start_at + SECONDS
    procs = [ctx.Process(target=client_process, args=(kind, target, model, n, start_at, end_at, out)) for n in per]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at - time.time()))
    s0 = cpu_seconds(server_pids)
    time.sleep(max(0.0, end_at - time.time()))
    s1 = cpu_seconds(server_pids)
    lat, errors, client_cpu = [], 0, 0.0
    for _ in procs:
        l, e, c = out.get(timeout=SECONDS + 60)
        lat += l
        errors += e
        client_cpu += c
    for p in procs:
        p.join(30)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {
        "rps": len(lat) / SECONDS,
        "p50": q(0.50),
        "p99": q(0.99),
        "errors": errors,
        "server_cpu": (s1 - s0) / SECONDS,
        # The clients' CPU includes their warm-up second: an upper bound for the window.
        "client_cpu": client_cpu / (SECONDS + WARMUP),
    }


# ------------------------------------------------------------------ servers

def start_regserve(work):
    data = os.path.join(work, "data")
    env = dict(os.environ, REGSERVE_DATA_DIR=data, RUST_LOG="warn")
    subprocess.run([REGSERVE, "models", "register", MODEL, "--name", "mlp", "--stage", "Production"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([REGSERVE, "serve", "-m", "models:/mlp/Production", "--port", str(http), "--grpc-port", str(grpc)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wait_ok(f"http://127.0.0.1:{http}/v2/health/ready", proc)
    return proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"


def start_mlserver(work):
    mlserver = os.path.join(MLSERVER_VENV, "bin", "mlserver")
    if not os.path.exists(mlserver):
        log(f"making MLServer's virtualenv {MLSERVER_VENV} (scripts/requirements-bench-mlserver.txt)")
        subprocess.run(["python3", "-m", "venv", MLSERVER_VENV], check=True)
        subprocess.run([os.path.join(MLSERVER_VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check", "-r",
                        os.path.join(REPO, "scripts", "requirements-bench-mlserver.txt")], check=True)
    root = os.path.join(work, "mlserver")
    os.makedirs(os.path.join(root, "mlp"))
    http, grpc, metrics = free_port(), free_port(), free_port()
    with open(os.path.join(root, "settings.json"), "w") as f:
        json.dump({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
                   "parallel_workers": 2, "debug": False}, f)
    with open(os.path.join(root, "mlp", "model-settings.json"), "w") as f:
        json.dump({"name": "mlp", "implementation": "onnx_runtime.OnnxRuntime",
                   "parameters": {"uri": os.path.join(MODEL, "model.onnx")}}, f)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "bench", "mlserver"))
    env.pop("ORT_DYLIB_PATH", None)
    proc = subprocess.Popen([mlserver, "start", root], env=env, cwd=root, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "mlserver.log"), "w"), stdin=subprocess.DEVNULL,
                            start_new_session=True)
    wait_ok(f"http://127.0.0.1:{http}/v2/models/mlp/ready", proc, timeout=180)
    return proc, f"127.0.0.1:{grpc}"


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15) if os.getpgid(proc.pid) == proc.pid else proc.terminate()
        except OSError:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def answer(kind, target):
    if kind == "grpc":
        import tritonclient.grpc as g

        c = g.InferenceServerClient(target)
        i = g.InferInput("input", [1, 64], "FP32")
    else:
        import tritonclient.http as h

        c = h.InferenceServerClient(target)
        i = h.InferInput("input", [1, 64], "FP32")
    i.set_data_from_numpy(X)
    out = c.infer("mlp", [i]).as_numpy(OUTPUT)
    c.close()
    return out


def main():
    import onnxruntime as ort

    reference = ort.InferenceSession(os.path.join(MODEL, "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]
    work = tempfile.mkdtemp(prefix="regserve-grpc-bench-")
    results = {}
    rs, http, grpc = start_regserve(work)
    try:
        np.testing.assert_allclose(answer("grpc", grpc), reference, rtol=1e-5, atol=1e-6)
        assert answer("grpc", grpc).tobytes() == answer("http", http).tobytes()
        for c in (1, 64):
            for kind, target in (("grpc", grpc), ("http-binary", http), ("http-json", http)):
                log(f"regserve {kind} c={c}")
                results[("regserve", kind, c)] = point(kind, target, c, [rs.pid])
    finally:
        stop(rs)
    proc, target = start_mlserver(work)
    try:
        np.testing.assert_allclose(answer("grpc", target), reference, rtol=1e-5, atol=1e-6)
        for c in (1, 64):
            log(f"MLServer grpc c={c}")
            results[("MLServer 1.7.1", "grpc", c)] = point("grpc", target, c, [proc.pid])
    finally:
        stop(proc)

    cores = os.cpu_count()
    print(f"\nmlp (1×64 → 1×10 FP32), batch-1 requests; {SECONDS:.0f} s per point after a {WARMUP:.0f} s warm-up; "
          f"{cores} cores shared by server and clients; client processes: 1 at c=1, 4 at c=64 (threads within)\n")
    print("| server | protocol (tritonclient) | c | req/s | p50 ms | p99 ms | errors | server CPU (cores) | clients' CPU (cores) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (server, kind, c), r in results.items():
        label = {"grpc": "gRPC, raw contents", "http-binary": "HTTP V2, binary data", "http-json": "HTTP V2, JSON"}[kind]
        print(f"| {server} | {label} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{r['server_cpu']:.2f} | {r['client_cpu']:.2f} |")


if __name__ == "__main__":
    main()
