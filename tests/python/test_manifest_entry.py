"""The containers of deploy/ run as the manifests spell them, against the RELEASE binary.

From the serve Deployment (and its ConfigMap and Secret) and from the KServe runtime and storage
container, this test takes each container's command (the Dockerfile's ENTRYPOINT unless the
container sets `command`), args, env (over the Dockerfile's ENV, as a container gets it), ports,
probes, volume mounts and the ConfigMap's config file exactly as written, and substitutes only
what must differ on this machine:

- host 0.0.0.0 → 127.0.0.1, and each container port → a free local port (in the config file,
  in `--…port…` arguments and in `…_PORT` variables whose value is that container port);
- each mount path → a temporary directory holding the same files (the ConfigMap's keys, the
  Secret's items; an emptyDir is empty); the library path of the image → this machine's;
- the Secrets' values → a real `regserve server` (with a token) started here;
- KServe's template `{{.Name}}` → the InferenceService's name; `/mnt/models` → a directory.

Then it exercises the probes as spelled (path, port name, timeout): readiness 503 while the model
is not loaded and 200 after, liveness and startup 200; scoring; SIGTERM with requests in flight
(answers stay 200, the process exits 0 within --shutdown-grace, and preStop + grace fits in
terminationGracePeriodSeconds); the KServe pair: `regserve pull` as the storage initializer,
then the runtime serving the pulled version and following the alias.

REGSERVE_RELEASE_BIN (default target/release/regserve; scripts/test builds it).
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
import yaml

from conftest import MODELS, REPO, RegserveServer, child_env, stop_process
from test_follow import ROW, free_port

RELEASE_BIN = os.environ.get("REGSERVE_RELEASE_BIN") or str(REPO / "target" / "release" / "regserve")
ORT_LIB = os.environ.get("ORT_DYLIB_PATH") or str(REPO / ".ort" / "lib" / "libonnxruntime.so")
DEPLOY = REPO / "deploy"
TOKEN = "entry-test-token-0123456789"
BODY = {"inputs": [ROW]}


@pytest.fixture(scope="module")
def release_bin():
    if not os.path.isfile(RELEASE_BIN):
        pytest.fail(f"no release binary at {RELEASE_BIN}: run `cargo build --release` (scripts/test does)")
    return RELEASE_BIN


def require_grpc(binary):
    """The manifests serve gRPC on 8081 (`grpc_port` in serve.toml, `--grpc_port` in the KServe
    runtime): a binary without the gRPC listener cannot run them as written."""
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
    if "--grpc-port" not in out.stdout:
        pytest.skip("this build has no `serve --grpc-port` (the gRPC listener): the manifests need it")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(directory, kind, name=None):
    found = [
        d
        for p in sorted(directory.glob("*.yaml"))
        for d in docs(p)
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


# ---------------------------------------------------------------------------------------------
# The image, as the Dockerfile builds it


def dockerfile_final_stage():
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text.split("\nFROM ")[-1]
    return stage


def image_env():
    env = {}
    for line in dockerfile_final_stage().splitlines():
        if line.startswith("ENV "):
            for k, v in re.findall(r"(\w+)=(\S+)", line[4:]):
                env[k] = v
    return env


def image_entrypoint():
    (line,) = [line for line in dockerfile_final_stage().splitlines() if line.startswith("ENTRYPOINT ")]
    return json.loads(line[len("ENTRYPOINT ") :])


# ---------------------------------------------------------------------------------------------
# A container of a manifest, run here


class Container:
    """One container spec turned into a local process (see the module docs for what changes)."""

    def __init__(self, spec, tmp, volumes=(), configmaps=None, secrets=None, template=None, extra_mounts=None):
        self.spec = spec
        self.secrets = secrets or {}
        self.template = template or {}
        self.ports = {p["containerPort"]: free_port() for p in spec.get("ports", [])}
        self.port_names = {p["name"]: p["containerPort"] for p in spec.get("ports", [])}
        self.mounts = dict(extra_mounts or {})
        self.config_files = {}
        volumes = {v["name"]: v for v in volumes}
        for i, m in enumerate(spec.get("volumeMounts", [])):
            local = tmp / f"mount{i}"
            local.mkdir(parents=True)
            v = volumes[m["name"]]
            if "configMap" in v:
                for key, text in configmaps[v["configMap"]["name"]].items():
                    (local / key).write_text(self.config_text(text))
                    self.config_files[f"{m['mountPath']}/{key}"] = (text, (local / key).read_text())
            elif "secret" in v:
                for item in v["secret"]["items"]:
                    (local / item["path"]).write_text(self.secrets[v["secret"]["secretName"]][item["key"]])
            else:
                assert "emptyDir" in v, v
            self.mounts[m["mountPath"]] = str(local)
        # The image's writable scratch space: TMPDIR points where /tmp is mounted.
        self.tmpdir = self.mounts.get("/tmp")

    def local_port(self, port):
        if isinstance(port, str):
            port = self.port_names[port]
        return self.ports[port]

    def config_text(self, text):
        """A config file with the bind address and the container ports made local."""
        out = []
        for line in text.splitlines(keepends=True):
            m = re.match(r'(\s*)(host|port|grpc_port)(\s*=\s*)("?)([^"\s#]+)("?)(.*)', line, re.S)
            if m and m.group(2) == "host" and m.group(5) == "0.0.0.0":
                line = f"{m.group(1)}host{m.group(3)}\"127.0.0.1\"{m.group(7)}"
            elif m and m.group(2) in ("port", "grpc_port") and int(m.group(5)) in self.ports:
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{self.ports[int(m.group(5))]}{m.group(7)}"
            out.append(line)
        return "".join(out)

    def path(self, value):
        for mount, local in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return local + value[len(mount.rstrip("/")) :]
        return value

    def value(self, name, value):
        value = value.replace("{{.Name}}", self.template.get("Name", "{{.Name}}"))
        if value == "0.0.0.0":
            return "127.0.0.1"
        if value == image_env().get("ORT_DYLIB_PATH"):
            return ORT_LIB
        if name.endswith("_PORT") and value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        return self.path(value)

    def arg(self, arg):
        arg = arg.replace("{{.Name}}", self.template.get("Name", "{{.Name}}"))
        m = re.fullmatch(r"(--[\w-]*port[\w-]*=)(\d+)", arg)
        if m and int(m.group(2)) in self.ports:
            return m.group(1) + str(self.ports[int(m.group(2))])
        if "=" in arg and arg.startswith("--"):
            flag, v = arg.split("=", 1)
            return f"{flag}={self.path(v)}"
        return self.path(arg)

    def command(self, binary, extra_args=()):
        command = self.spec.get("command") or image_entrypoint()
        args = list(self.spec.get("args", [])) + list(extra_args)
        assert command[0] == "regserve", command
        out = [binary, *[self.arg(a) for a in command[1:]]]
        # A port given as a separate argument (`--port 8080`).
        for a in args:
            prev = out[-1] if len(out) > 1 else ""
            if re.fullmatch(r"--[\w-]*port[\w-]*", prev) and a.isdigit() and int(a) in self.ports:
                out.append(str(self.ports[int(a)]))
            else:
                out.append(self.arg(a))
        return out

    def environment(self):
        env = {k: self.value(k, v) for k, v in image_env().items()}
        for e in self.spec.get("env", []):
            if "value" in e:
                env[e["name"]] = self.value(e["name"], e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                secret = self.secrets.get(ref["name"], {})
                if ref["key"] in secret:
                    env[e["name"]] = secret[ref["key"]]
                else:
                    assert ref.get("optional"), f"Secret {ref['name']} key {ref['key']} is missing"
        full = child_env(**env)
        if self.tmpdir:
            full["TMPDIR"] = self.tmpdir
        full.setdefault("RUST_LOG", "info")
        return full

    def start(self, binary, extra_args=()):
        self.log = []
        self.proc = subprocess.Popen(
            self.command(binary, extra_args),
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)

        threading.Thread(target=drain, daemon=True).start()
        return self

    def run(self, binary, extra_args=(), timeout=120):
        return subprocess.run(self.command(binary, extra_args), env=self.environment(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def url(self, port, path=""):
        return f"http://127.0.0.1:{self.local_port(port)}{path}"

    def probe(self, name):
        """The probe as spelled: (status or None when nothing answers)."""
        spec = self.spec[name]["httpGet"]
        try:
            r = requests.get(self.url(spec["port"], spec["path"]), timeout=self.spec[name].get("timeoutSeconds", 1))
            return r.status_code
        except requests.RequestException:
            return None

    def wait_probe(self, name, status, timeout):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            got = self.probe(name)
            seen.append(got)
            if got == status:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"{name} never answered {status} (last {seen[-5:]}); log:\n{''.join(self.log)}")

    def stop(self):
        stop_process(self.proc)


# ---------------------------------------------------------------------------------------------
# A real registry in place of the Secret's


@pytest.fixture
def registry(release_bin, tmp_path):
    token_file = tmp_path / "registry-token"
    token_file.write_text(TOKEN + "\n")
    srv = RegserveServer(release_bin, tmp_path / "registry", extra_args=["--auth-token-file", str(token_file)])
    yield srv
    srv.stop()


def registry_cli(release_bin, registry, *args):
    env = child_env(MLFLOW_TRACKING_TOKEN=TOKEN)
    out = subprocess.run([release_bin, "--registry-uri", registry.url, *args], capture_output=True, text=True,
                         timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


def secrets_for(registry):
    """Every Secret of deploy/, its values those of the registry started here."""
    values = {"tracking-uri": registry.url, "token": TOKEN}
    out = {}
    for p in DEPLOY.rglob("*.yaml"):
        for d in docs(p):
            if d["kind"] == "Secret":
                out[d["metadata"]["name"]] = {k: values.get(k, v) for k, v in d["stringData"].items()}
    return out


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[m.group(2)]


# ---------------------------------------------------------------------------------------------
# The serve Deployment


def test_serve_deployment_entry_command_probes_and_drain(release_bin, registry, tmp_path):
    require_grpc(release_bin)
    k8s = DEPLOY / "kubernetes"
    dep = find(k8s, "Deployment", "regserve")
    pod = dep["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    configmaps = {find(k8s, "ConfigMap", v["configMap"]["name"])["metadata"]["name"]: find(
        k8s, "ConfigMap", v["configMap"]["name"])["data"] for v in pod["volumes"] if "configMap" in v}
    c = Container(spec, tmp_path / "pod", pod["volumes"], configmaps, secrets_for(registry))

    # The config file is the ConfigMap's, line for line, but for the bind address and ports.
    args = spec["args"]
    config_path = args[args.index("--config") + 1]
    original, local = c.config_files[config_path]
    changed = [(a, b) for a, b in zip(original.splitlines(), local.splitlines()) if a != b]
    assert len(original.splitlines()) == len(local.splitlines())
    assert all(re.match(r"\s*(host|port|grpc_port)\s*=", a) for a, _ in changed), changed

    # The effective configuration is the file's (--print-config, secrets redacted).
    printed = c.run(release_bin, ["--print-config"])
    assert printed.returncode == 0, printed.stderr
    assert TOKEN not in printed.stdout + printed.stderr
    grace = duration_s(re.search(r'shutdown_grace\s*=\s*"([^"]+)"', original).group(1))
    assert re.search(r"shutdown_grace\s*=\s*\"?%s" % re.escape(re.search(r'shutdown_grace\s*=\s*"([^"]+)"', original).group(1)),
                     printed.stdout), printed.stdout

    c.start(release_bin)
    try:
        startup = spec["startupProbe"]
        c.wait_probe("startupProbe", 200, startup["periodSeconds"] * startup["failureThreshold"])
        assert c.probe("livenessProbe") == 200
        # models:/fraud@champion does not exist yet: alive, not ready.
        for _ in range(5):
            assert c.probe("readinessProbe") == 503
            time.sleep(0.2)

        registry_cli(release_bin, registry, "models", "register", str(MODELS / "iris-v1"), "--name", "fraud",
                     "--alias", "champion")
        config = {k.strip(): v.strip() for k, v in (ln.split("=", 1) for ln in original.splitlines()
                                                   if "=" in ln and not ln.lstrip().startswith("#"))}
        poll = duration_s(config["poll_interval"].strip('"'))
        c.wait_probe("readinessProbe", 200, 3 * poll + 30)
        assert c.probe("livenessProbe") == 200

        # Scoring on the http port; the answer names the version.
        r = requests.post(c.url("http", "/invocations"), json=BODY, timeout=10)
        assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text
        # The gRPC port listens (the Service's grpc port).
        with socket.create_connection(("127.0.0.1", c.local_port("grpc")), timeout=5):
            pass
        # The scrape annotations point at the metrics, and the HPA's metric is there.
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        metrics = requests.get(c.url(int(ann["prometheus.io/port"]), ann["prometheus.io/path"]), timeout=5)
        assert metrics.status_code == 200 and 'regserve_saturation{model="fraud"}' in metrics.text
        # In-cluster clients name the Service in Host.
        r = requests.post(c.url("http", "/invocations"), json=BODY, timeout=10,
                          headers={"Host": f"regserve.default.svc.cluster.local:{8080}"})
        assert r.status_code == 200, r.text

        # Deletion: preStop sleeps while endpoints drop the pod, then SIGTERM drains. Clients
        # keep scoring through the SIGTERM.
        pre_stop = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + grace < pod["terminationGracePeriodSeconds"]
        statuses, errors, stop = [], [], threading.Event()

        def client():
            s = requests.Session()
            while not stop.is_set():
                try:
                    statuses.append(s.post(c.url("http", "/invocations"), json=BODY, timeout=10).status_code)
                except requests.RequestException as e:
                    errors.append(e)
                    time.sleep(0.02)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = len(statuses)
        sent = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        # Readiness fails at once (or nothing answers any more).
        time.sleep(0.3)
        assert c.probe("readinessProbe") in (503, None)
        code = c.proc.wait(timeout=grace + 5)
        took = time.monotonic() - sent
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert code == 0, "".join(c.log)
        assert took < grace, took
        assert pre_stop + took < pod["terminationGracePeriodSeconds"]
        assert before > 10, before
        # Every answer was a success or the drain's 503: nothing failed half-way.
        assert set(statuses) <= {200, 503}, set(statuses)
        assert statuses[:before].count(200) == before
    finally:
        c.stop()


# ---------------------------------------------------------------------------------------------
# KServe: the storage container, then the runtime


def test_kserve_storage_initializer_then_runtime(release_bin, registry, tmp_path):
    require_grpc(release_bin)
    kserve = DEPLOY / "kserve"
    isvc = find(kserve, "InferenceService")
    runtime = find(kserve, "ClusterServingRuntime")
    csc = find(kserve, "ClusterStorageContainer")
    secrets = secrets_for(registry)
    model = isvc["spec"]["predictor"]["model"]
    storage_uri = model["storageUri"]
    name = re.fullmatch(r"models:/([^@/]+)@([\w-]+)", storage_uri)
    registry_cli(release_bin, registry, "models", "register", str(MODELS / "iris-v1"), "--name", name.group(1),
                 "--alias", name.group(2))
    registry_cli(release_bin, registry, "models", "register", str(MODELS / "iris-v2"), "--name", name.group(1))

    # /mnt/models: the emptyDir KServe shares between the init container and the predictor.
    models_dir = tmp_path / "mnt-models"
    models_dir.mkdir()
    init = Container(csc["spec"]["container"], tmp_path / "init", secrets=secrets,
                     extra_mounts={"/mnt/models": str(models_dir)})
    # KServe runs the storage container with the args [storageUri, /mnt/models].
    out = init.run(release_bin, [storage_uri, "/mnt/models"])
    assert out.returncode == 0, out.stderr
    assert (models_dir / "regserve-source.json").is_file()

    (spec,) = runtime["spec"]["containers"]
    predictor = Container(spec, tmp_path / "predictor", runtime["spec"].get("volumes", []), secrets=secrets,
                          template={"Name": isvc["metadata"]["name"]},
                          extra_mounts={"/mnt/models": str(models_dir)})
    predictor.start(release_bin)
    try:
        predictor.wait_probe("readinessProbe", 200, 60)
        assert predictor.probe("livenessProbe") == 200
        infer = {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
        served = isvc["metadata"]["name"]
        r = requests.post(predictor.url(8080, f"/v2/models/{served}/infer"), json=infer, timeout=10)
        assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
        # The gRPC port KServe exposes (h2c) listens.
        with socket.create_connection(("127.0.0.1", predictor.local_port(8081)), timeout=5):
            pass
        # The registry is reachable: the alias moves, the predictor follows (no rollout).
        registry_cli(release_bin, registry, "models", "alias", "set", name.group(1), name.group(2), "2")
        deadline = time.monotonic() + 30
        while True:
            r = requests.post(predictor.url(8080, f"/v2/models/{served}/infer"), json=infer, timeout=10)
            assert r.status_code == 200, r.text
            if r.json()["model_version"] == "2":
                break
            assert time.monotonic() < deadline, "the predictor did not follow the alias; log:\n" + "".join(
                predictor.log)
            time.sleep(0.2)
        predictor.proc.send_signal(signal.SIGTERM)
        assert predictor.proc.wait(timeout=35) == 0
    finally:
        predictor.stop()
