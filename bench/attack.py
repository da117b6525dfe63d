"""Replay the hostile-input classes of docs/security.md against a regserve binary and print a table:
attack, body size, peak RSS, /ping p99 and worst latency, outcome, how the process stopped.

Every attack starts a fresh server on 127.0.0.1 (port 0) with default settings unless the row says
otherwise, runs a pinger on its own connection every 20 ms, samples RSS every 10 ms (and kills the
server past --rss-cap so a regression cannot take the machine down), and stops it with SIGTERM
(SIGKILL only if it is still alive 3 s after its grace period: reported as 'needed SIGKILL').

Loopback only; every loop is bounded in count and time. Standard library only.

    bench/attack                 # full sizes (release build)
    bench/attack --short         # the short form `make test` runs (exit 1 if a target is missed)
    bench/attack --only records  # one attack (substring match)
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# bench/grpc.py is in this folder: out of the import path, or `import grpc` finds it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
GRACE_S = 5


# --------------------------------------------------------------------------------------------
# the server under attack


class Server:
    def __init__(self, binary, data_dir, args, rss_cap, env=None):
        self.binary = binary
        self.data_dir = data_dir
        self.rss_cap = rss_cap
        cmd = [binary, "--data-dir", data_dir] + args + [
            "--host", "127.0.0.1", "--port", "0", "--shutdown-grace", f"{GRACE_S}s"]
        e = dict(os.environ, RUST_LOG="info")
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=e, text=True)
        self.log = []
        self.addr = None
        self.grpc_addr = None
        got = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                g = re.search(r"grpc listening on (\S+)", line)
                if g:
                    self.grpc_addr = g.group(1)
                m = re.search(r"listening on http://(\S+)", line)
                if m and not got.is_set():
                    self.addr = m.group(1)
                    got.set()
            got.set()

        threading.Thread(target=read, daemon=True).start()
        if not got.wait(30) or not self.addr:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log[-20:]))
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)
        self.peak_rss = 0
        self.capped = False
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _status(self, key):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def threads(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/task"))
        except OSError:
            return 0

    def rss(self):
        return self._status("VmRSS") or 0

    def _sample(self):
        while not self._stop.is_set() and self.proc.poll() is None:
            hwm = self._status("VmHWM") or 0
            self.peak_rss = max(self.peak_rss, hwm)
            if hwm > self.rss_cap:
                self.capped = True
                self.proc.kill()
                return
            time.sleep(0.01)

    def wait_ready(self, path="/ping", timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            try:
                status, _ = request(self, "GET", path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{path} never answered 200:\n" + "".join(self.log[-20:]))

    def stop(self):
        """SIGTERM; returns how it ended."""
        if self.proc.poll() is not None:
            self._stop.set()
            return "killed at RSS cap" if self.capped else f"had exited ({self.proc.returncode})"
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(GRACE_S + 3)
            how = f"SIGTERM, {time.time() - t0:.1f} s"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            how = "needed SIGKILL"
        self._stop.set()
        hwm = self.peak_rss
        self.peak_rss = max(hwm, 0)
        return how


def request(srv, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Pinger:
    """GET /ping on a new connection every 20 ms; latencies in seconds (a failure counts as its
    time to fail, at most the 5 s timeout)."""

    def __init__(self, srv, path="/ping"):
        self.srv, self.path = srv, path
        self.lat, self.failed = [], 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                status, _ = request(self.srv, "GET", self.path, timeout=5)
                if status != 200:
                    self.failed += 1
            except OSError:
                self.failed += 1
            self.lat.append(time.perf_counter() - t0)
            self._stop.wait(0.02)

    def stop(self):
        self._stop.set()
        self.t.join(10)
        lat = sorted(self.lat) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return p99, lat[-1], self.failed


# --------------------------------------------------------------------------------------------
# bodies


def distinct_keys(field, size):
    rows, n, i = [], 2, 0
    while n < size:
        r = '{"k%d": 1}' % i
        rows.append(r)
        n += len(r) + 1
        i += 1
    return ('{"%s": [%s]}' % (field, ",".join(rows))).encode()


def numeric_split(size):
    row = "[5.1,3.5,1.4,0.2]"
    n = max(1, size // (len(row) + 1))
    cols = '["sepal_length","sepal_width","petal_length","petal_width"]'
    return ('{"dataframe_split": {"columns": %s, "data": [%s]}}' % (cols, ",".join([row] * n))).encode()


def numeric_instances(size):
    row = "[5.1,3.5,1.4,0.2]"
    n = max(1, size // (len(row) + 1))
    return ('{"instances": [%s]}' % ",".join([row] * n)).encode()


def tiny_numbers(size):
    """The densest number text there is ("1,1,1,..."), as one instances row per 4 numbers."""
    n = max(1, size // 10)
    return ('{"instances": [%s]}' % ",".join(["[1,1,1,1]"] * n)).encode()


def csv_body(size):
    head = "sepal_length,sepal_width,petal_length,petal_width\n"
    row = "5.1,3.5,1.4,0.2\n"
    return (head + row * max(1, size // len(row))).encode()


def deep_nesting(size):
    d = size // 2
    return ('{"instances": ' + "[" * d + "1" + "]" * d + "}").encode()


# --------------------------------------------------------------------------------------------
# attacks: each returns (body_bytes, outcome) and may use the server


def send(srv, body, ctype="application/json", path="/invocations", timeout=120):
    t0 = time.time()
    try:
        status, data = request(srv, "POST", path, body, {"Content-Type": ctype}, timeout=timeout)
        msg = data[:80].decode("utf-8", "replace").replace("\n", " ")
        return f"{status} in {time.time() - t0:.1f} s", status, msg
    except socket.timeout:
        return f"no answer in {timeout} s", None, ""
    except OSError as e:
        return f"connection error ({e.__class__.__name__}) after {time.time() - t0:.1f} s", None, ""


def one_body(make, ctype="application/json"):
    def attack(srv, size):
        body = make(size)
        outcome, _, msg = send(srv, body, ctype)
        return len(body), f"{outcome} {msg[:60]}"
    return attack


def parallel_bodies(srv, size):
    body = distinct_keys("dataframe_records", size)
    results = [None, None]

    def go(i):
        results[i] = send(srv, body)[0]

    ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(150)
    return len(body), "2 × " + " / ".join(str(r) for r in results)


def grpc_typed_messages(srv, size):
    """Two clients at once send a ModelInfer whose FP32 input is `size` bytes of typed
    `contents` (the form protobuf decodes value by value), serialized beforehand so the
    client's work does not share the pinger's interpreter lock."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2

    rows = size // 16
    req = service_pb2.ModelInferRequest(model_name="iris")
    inp = req.inputs.add()
    inp.name, inp.datatype = "float_input", "FP32"
    inp.shape.extend([rows, 4])
    inp.contents.fp32_contents.extend(np.full(rows * 4, 5.1, dtype=np.float32))
    wire = req.SerializeToString()
    results = [None, None]

    def go(i):
        opts = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
        with grpc.insecure_channel(srv.grpc_addr, options=opts) as ch:
            infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            try:
                answer = infer(wire, timeout=120)
                results[i] = f"OK {len(answer) // 1000} KB"
            except grpc.RpcError as e:
                results[i] = e.code().name

    ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(150)
    if not all(r and r.startswith("OK") for r in results):
        raise RuntimeError(f"the messages were not answered: {results}")
    # Both messages are in memory at once: the RSS target is against their sum.
    return 2 * len(wire), "2 × " + " / ".join(str(r) for r in results)


def held_bodies(conns, each, chunked=False):
    """`conns` connections each send all but the last byte of an `each`-byte body (or, chunked,
    `each` bytes of a body that never ends) and hold it."""

    def attack(srv, size):
        socks, refused = [], 0
        chunk = b"x" * (1 << 16)
        for _ in range(conns):
            s = socket.create_connection((srv.host, srv.port), timeout=10)
            if chunked:
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
            else:
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % each)
            socks.append(s)
        deadline = time.time() + 30
        for s in socks:
            sent = 0
            try:
                while sent < each - 1 and time.time() < deadline:
                    n = min(len(chunk), each - 1 - sent)
                    if chunked:
                        s.sendall(b"%x\r\n" % n + chunk[:n] + b"\r\n")
                    else:
                        s.sendall(chunk[:n])
                    sent += n
            except OSError:
                refused += 1
        time.sleep(2)  # hold everything; the pinger keeps pinging
        answered = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 "):
                    answered += 1
            except OSError:
                pass
            s.close()
        total = conns * each
        return total, f"{conns} × {each // MiB} MiB held; {answered} answered early, {refused} cut off"
    return attack


def slots_held(srv, size):
    """`--max-connections 64`: 64 connections that send half a request head and stall."""
    socks = []
    for _ in range(64):
        s = socket.create_connection((srv.host, srv.port), timeout=10)
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        socks.append(s)
    time.sleep(3)
    for s in socks:
        s.close()
    return 0, "64 connections hold a partial body"


def unknown_labels(srv, size):
    n = size
    for i in range(n):
        request(srv, "POST", f"/v2/models/nope-{i}/infer", b"{}", {"Content-Type": "application/json"})
        request(srv, "POST", f"/models/nope-{i}/invocations", b"{}", {"Content-Type": "application/json"})
    status, text = request(srv, "GET", "/metrics")
    return 0, f"{n} unknown names → /metrics {len(text) // 1024} KiB"


def pinned_versions(srv, size):
    loaded, codes = 0, {}
    body = json.dumps({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
    for v in range(1, size + 1):
        status, _ = request(srv, "POST", f"/v2/models/iris/versions/{v}/infer", body,
                            {"Content-Type": "application/json"})
        codes[status] = codes.get(status, 0) + 1
        loaded += status == 200
    time.sleep(1)
    return 0, f"{size} versions asked: {codes}; {srv.threads()} threads, RSS {srv.rss() // MiB} MiB after"


def markdown_nesting(srv, size):
    desc = ">" * size
    status, data = request(srv, "PATCH", "/api/2.0/mlflow/registered-models/update",
                           json.dumps({"name": "iris", "description": desc}).encode(),
                           {"Content-Type": "application/json"})
    if status != 200:
        return len(desc), f"description refused: {status} {data[:70].decode('utf-8', 'replace')}"
    times = []
    for _ in range(2):
        t0 = time.time()
        request(srv, "GET", "/models/iris", timeout=120)
        times.append(time.time() - t0)
    return len(desc), "description stored; page views " + ", ".join(f"{t:.1f} s" for t in times)


def create_version(srv, files, wait=60):
    """Log `files` (name → bytes) as a run's model through the artifact proxy, create a version of
    'iris' from it over REST, and wait up to `wait` s for it to leave PENDING_REGISTRATION.
    Returns (outcome text, version or None)."""
    api = "/api/2.0/mlflow"
    _, e = request(srv, "POST", api + "/experiments/create", json.dumps({"name": "attack"}).encode(),
                   {"Content-Type": "application/json"})
    exp = json.loads(e)["experiment_id"]
    _, r = request(srv, "POST", api + "/runs/create", json.dumps({"experiment_id": exp}).encode(),
                   {"Content-Type": "application/json"})
    run = json.loads(r)["run"]["info"]
    source = run["artifact_uri"].rstrip("/") + "/model"
    base = "/api/2.0/mlflow-artifacts/artifacts/" + source.split(":", 1)[1].lstrip("/")
    for name, data in files.items():
        request(srv, "PUT", base + "/" + name, data, {"Content-Type": "application/octet-stream"})
    t0 = time.time()
    status, data = request(srv, "POST", api + "/model-versions/create",
                           json.dumps({"name": "iris", "source": source, "run_id": run["run_id"]}).encode(),
                           {"Content-Type": "application/json"}, timeout=120)
    out = f"create {status} in {time.time() - t0:.1f} s"
    if status != 200:
        return out + " " + data[:60].decode("utf-8", "replace"), None
    v = json.loads(data)["model_version"]["version"]
    end = time.time() + wait
    st = ""
    while time.time() < end:
        _, d2 = request(srv, "GET", f"{api}/model-versions/get?name=iris&version={v}")
        st = json.loads(d2)["model_version"].get("status", "")
        if st != "PENDING_REGISTRATION":
            break
        time.sleep(0.2)
    return out + f", {st} after {time.time() - t0:.1f} s", v


def mlmodel_nesting(srv, size):
    d = size
    mlmodel = "flavors:\n  onnx:\n    onnx_version: 1.17.0\n    data: model.onnx\n" \
              "nest: " + "[" * d + "]" * d + "\n"
    onnx = open(os.path.join(REPO, "models", "iris-v1", "model.onnx"), "rb").read()
    out, v = create_version(srv, {"MLmodel": mlmodel.encode(), "model.onnx": onnx})
    if v is not None:
        t1 = time.time()
        request(srv, "GET", f"/models/iris/versions/{v}", timeout=120)
        out += f", page view {time.time() - t1:.1f} s"
    return len(mlmodel), out


def looping_model(srv, size):
    """A model whose warm-up never ends (an ONNX Loop of 2^62 iterations): the test load must
    stop at its deadline; SIGTERM right after must not wait for it."""
    d = os.path.join(REPO, "tests", "fixtures", "slow_loop")
    files = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d) if os.path.isfile(os.path.join(d, n))}
    out, _ = create_version(srv, files, wait=size)
    return 0, out


# --------------------------------------------------------------------------------------------


def registry(binary, models):
    d = tempfile.mkdtemp(prefix="regserve-attack-")
    for name, src, count in models:
        for _ in range(count):
            subprocess.run([binary, "--data-dir", d, "models", "register", os.path.join(REPO, "models", src),
                            "--name", name], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("REGSERVE_BIN", os.path.join(REPO, "target/release/regserve")))
    ap.add_argument("--short", action="store_true", help="small sizes; check the targets; exit 1 on a miss")
    ap.add_argument("--only", default="")
    ap.add_argument("--rss-cap", type=int, default=4096, help="MiB; the server is killed past it")
    a = ap.parse_args()
    short = a.short
    cap = a.rss_cap * MiB
    S = (lambda full, small: small if short else full)

    SERVE = ["serve", "-m", "models:/iris/1"]
    SERVER = ["server"]
    # the test-load deadline, where the binary has one (a build before it would refuse the flag)
    has_timeout = "--load-timeout" in subprocess.run([a.bin, "server", "--help"], capture_output=True, text=True).stdout
    LOAD_TIMEOUT = ["--load-timeout", S("10s", "5s")] if has_timeout else []
    attacks = [
        # name, command, registry models, size, attack, checks the single-request RSS target
        ("records: distinct key per row", SERVE, None, S(430_000, 47_000), one_body(lambda n: distinct_keys("dataframe_records", n)), True),
        ("instances: distinct key per row", SERVE, None, S(430_000, 47_000), one_body(lambda n: distinct_keys("instances", n)), True),
        ("inputs: distinct key per row", SERVE, None, S(430_000, 47_000), one_body(lambda n: distinct_keys("inputs", n)), True),
        ("records: 2 parallel bodies", SERVE, None, S(650_000, 200_000), parallel_bodies, True),
        ("split: numeric body", SERVE, None, S(60 * MiB, 8 * MiB), one_body(numeric_split), True),
        ("instances: numeric body", SERVE, None, S(60 * MiB, 8 * MiB), one_body(numeric_instances), True),
        ("instances: densest numbers", SERVE, None, S(60 * MiB, 8 * MiB), one_body(tiny_numbers), True),
        ("csv: numeric body", SERVE, None, S(60 * MiB, 8 * MiB), one_body(csv_body, "text/csv"), True),
        ("instances: deep nesting", SERVE, None, S(4 * MiB, 1 * MiB), one_body(deep_nesting), True),
        # Health checks are the target here; the RSS (about 4.6x the two messages: tonic's
        # receive buffer, the decoded values, the answer and its encoding) is reported, not
        # held to the 4x of HTTP bodies.
        ("gRPC: 2 typed FP32 messages", SERVE + ["--grpc-port", "0"], None, S(60 * MiB, 8 * MiB), grpc_typed_messages, False),
        ("held bodies (Content-Length)", SERVE, None, 0, held_bodies(S(30, 8), S(60 * MiB, 16 * MiB)), False),
        ("held bodies (chunked, no end)", SERVE, None, 0, held_bodies(S(100, 20), S(10 * MiB, 4 * MiB), True), False),
        ("all connection slots held", SERVE + ["--max-connections", "64"], None, 0, slots_held, False),
        ("unknown model names → labels", SERVE, None, S(5000, 500), unknown_labels, False),
        ("pinned versions on v2", SERVE, [("iris", "iris-v1", S(40, 10))], S(40, 10), pinned_versions, False),
        ("markdown: nested '>' description", SERVER, None, S(30_000, 30_000), markdown_nesting, False),
        ("MLmodel: deep YAML nesting", SERVER, None, S(60_000, 20_000), mlmodel_nesting, False),
        ("model that loops at test load (--load-timeout 10 s; 5 s short)", SERVER + LOAD_TIMEOUT, None, S(90, 20), looping_model, False),
    ]
    rows, misses = [], []
    for name, cmd, models, size, attack, single in attacks:
        if a.only and a.only not in name:
            continue
        d = registry(a.bin, models or [("iris", "iris-v1", 1)])
        try:
            srv = Server(a.bin, d, cmd, cap)
            srv.wait_ready("/ping" if cmd[0] == "serve" else "/health")
            idle = srv._status("VmHWM") or 0
            pinger = Pinger(srv, "/ping" if cmd[0] == "serve" else "/health")
            time.sleep(0.2)
            broke = None
            try:
                body, outcome = attack(srv, size)
            except Exception as e:  # the attack itself broke (e.g. the server died): that is the outcome
                body, outcome = size, f"{e.__class__.__name__}: {e}"
                broke = outcome
            time.sleep(0.3)
            p99, worst, ping_failed = pinger.stop()
            peak = srv.peak_rss
            how = srv.stop()
            peak = max(peak, srv.peak_rss)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        # The target: peak RSS ≤ 4 × body + 64 MiB (release build, idle ~44 MiB). The short form
        # runs the debug build, which idles ~15 MiB higher: there the request may add 4 × body
        # + 20 MiB to the idle RSS.
        limit = 4 * body + 64 * MiB if not short else idle + 4 * body + 20 * MiB
        row = (name, body, peak, p99, worst, ping_failed, outcome, how)
        rows.append(row)
        if single and body and peak > limit:
            misses.append(f"{name}: peak RSS {peak // MiB} MiB > its limit {limit // MiB} MiB")
        if worst > (1.0 if short else 0.1) or ping_failed:
            misses.append(f"{name}: /ping worst {worst * 1000:.0f} ms, {ping_failed} failed")
        if broke:
            misses.append(f"{name}: the attack could not run to its end: {broke[:200]}")
        if how in ("needed SIGKILL", "killed at RSS cap"):
            misses.append(f"{name}: {how}")
        print(f"  {name}: peak {peak // MiB} MiB, ping p99 {p99 * 1000:.0f} ms worst {worst * 1000:.0f} ms; {outcome}; {how}",
              file=sys.stderr, flush=True)

    print("| attack | body | peak RSS | /ping p99 | /ping worst | outcome | stop |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, body, peak, p99, worst, failed, outcome, how in rows:
        b = f"{body / MiB:.1f} MiB" if body >= MiB else (f"{body // 1000} KB" if body else "–")
        fail = f" ({failed} failed)" if failed else ""
        print(f"| {name} | {b} | {peak // MiB} MiB | {p99 * 1000:.0f} ms | {worst * 1000:.0f} ms{fail} | "
              f"{outcome.replace('|', '/')} | {how} |")
    if misses:
        print("\ntargets missed:\n- " + "\n- ".join(misses))
    if short and misses:
        sys.exit(1)


if __name__ == "__main__":
    main()
