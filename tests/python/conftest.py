"""Fixtures for running the real MLflow client against `regserve server`.

The `server` fixture starts `$REGSERVE_BIN server --port 0 --data-dir <tmp>` (ORT_DYLIB_PATH is
inherited), reads the bound address from the "listening on http://ADDR" line of its stderr,
waits until it answers, and stops it at the end of the session.

REGSERVE_TEST_BACKEND picks the registry database of that server: `sqlite` (the default, the
data directory's registry.db) or `postgres` (a fresh database on the session's throwaway
PostgreSQL cluster, the `postgres` fixture, passed as --backend-store-uri to the server and to
every CLI run on its registry).
"""

import os
import shlex
import pathlib
import signal
import subprocess
import threading
import time

# Before mlflow is imported: no telemetry (no network here), fail fast instead of retrying.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]

# `mlflow.set_tracking_uri` puts MLFLOW_TRACKING_URI into this process's environment; regserve
# honours it (as MLflow does), so a child meant for an embedded store must not inherit it.
MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def child_env(**extra):
    """This process's environment for a regserve child, without the MLflow registry URIs."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_URI_VARS}
    env.update(extra)
    return env
MODELS = REPO / "models"
START_TIMEOUT_S = 30


def stop_process(proc, grace_s=10):
    """SIGTERM `proc`, SIGKILL after `grace_s` if it is still there; waits for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stop_group(proc, grace_s=20):
    """SIGTERM the process group `proc` leads (started with `start_new_session=True`: a server
    and its workers), SIGKILL after `grace_s` if it is still there; waits for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class RegserveServer:
    """`regserve server` on a free port. `extra_args` are added to its command line; by default
    those of $REGSERVE_TEST_SERVER_ARGS (empty unless set: test_object_store_write.py sets it to
    re-run a suite with the artifacts in a bucket)."""

    def __init__(self, binary, data_dir, extra_args=None, env=None, backend_store_uri=None):
        self.data_dir = pathlib.Path(data_dir)
        self.binary = binary
        self.backend_store_uri = backend_store_uri
        if extra_args is None:
            extra_args = shlex.split(os.environ.get("REGSERVE_TEST_SERVER_ARGS", ""))
        env = child_env(**(env or {}))
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [*self.base_args(), "server", "--host", "127.0.0.1", "--port", "0", *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.log = []
        self.url = None
        found = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                if self.url is None and "listening on http://" in line:
                    self.url = "http://" + line.split("listening on http://", 1)[1].split()[0]
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("regserve server did not report its address:\n" + "".join(self.log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("regserve server did not answer /health:\n" + "".join(self.log))
            time.sleep(0.05)

    def base_args(self):
        """`regserve` and the global flags that open this server's registry (data directory, and
        its database when that is not the directory's registry.db)."""
        args = [self.binary, "--data-dir", str(self.data_dir)]
        if self.backend_store_uri:
            args += ["--backend-store-uri", self.backend_store_uri]
        return args

    def cli(self, *args):
        """Run the regserve CLI on the same registry (data directory and database)."""
        return subprocess.run(
            [*self.base_args(), *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )

    def stop(self):
        stop_process(self.proc)


@pytest.fixture(autouse=True)
def mlflow_uris_kept():
    """A test that points the MLflow client's global URIs at a server of its own
    (`mlflow.set_tracking_uri` / `set_registry_uri`) does not leave them pointing there for the
    tests after it, whose fluent calls would then reach a stopped server. (A virtualenv without
    MLflow, such as .venv-kserve, has none to keep.)"""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        yield
        return
    import mlflow.tracking._model_registry.utils as registry_uris
    import mlflow.tracking._tracking_service.utils as tracking_uris

    saved = (tracking_uris._tracking_uri, registry_uris._registry_uri, {k: os.environ.get(k) for k in MLFLOW_URI_VARS})
    yield
    tracking, registry, env = saved
    if tracking_uris._tracking_uri != tracking:
        tracking_uris.set_tracking_uri(tracking)
    registry_uris._registry_uri = registry
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def regserve_bin():
    binary = os.environ.get("REGSERVE_BIN") or str(REPO / "target" / "debug" / "regserve")
    if not os.path.isfile(binary):
        pytest.fail(f"regserve binary not found at {binary}: run `cargo build` or set REGSERVE_BIN")
    return binary


BACKENDS = ("sqlite", "postgres")


def selected_backend():
    """The registry database the `server` fixture runs on: $REGSERVE_TEST_BACKEND."""
    backend = os.environ.get("REGSERVE_TEST_BACKEND", "").strip() or "sqlite"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"REGSERVE_TEST_BACKEND={backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


@pytest.fixture(scope="session")
def server(regserve_bin, tmp_path_factory, request):
    backend_store_uri = None
    if selected_backend() == "postgres":
        backend_store_uri = request.getfixturevalue("postgres").new_database("session_server")
    srv = RegserveServer(regserve_bin, tmp_path_factory.mktemp("regserve-data"), backend_store_uri=backend_store_uri)
    try:
        if backend_store_uri:
            # The switch took: the registry lives in that database, not in the data directory.
            from pg import query

            assert query(backend_store_uri, "SELECT version FROM regserve_schema"), "no regserve schema in the database"
            assert not (srv.data_dir / "registry.db").exists(), "a PostgreSQL-backed server wrote registry.db"
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


@pytest.fixture(scope="session")
def iris_v1():
    return onnx.load(str(MODELS / "iris-v1" / "model.onnx"))


@pytest.fixture(scope="session")
def iris_v2():
    return onnx.load(str(MODELS / "iris-v2" / "model.onnx"))


@pytest.fixture(scope="session")
def X():
    return np.array(
        [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]],
        dtype=np.float32,
    )


def ort_outputs(model, X):
    """The reference: onnxruntime on the same model and input, as {output name: array}."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: X})))


def assert_predicts_like(pyfunc_model, onnx_model, X):
    got = pyfunc_model.predict(X)
    want = ort_outputs(onnx_model, X)
    assert set(got) == set(want), (got, want)
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.shape == expected.shape, name
        if np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
        else:
            np.testing.assert_array_equal(actual, expected)


# --- Conformance: the same call against a real `mlflow server` and against regserve ------------
#
# Tests of MLflow conformance (issue 12) assert what a real `mlflow server` (the one in this
# virtualenv, started here on a free port with its own SQLite store and artifact folder) answers,
# side by side with regserve: the reference is recorded live, not hand-copied.


@pytest.fixture(scope="session")
def mlflow_ref(tmp_path_factory):
    """A real `mlflow server` (SQL store, artifact proxy), shared by the session."""
    from test_follow import MlflowServer

    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-reference"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Pair:
    """Send one REST call to the reference `mlflow server` and to regserve; compare the answers.

    `call(method, path, json=..., params=..., headers=...)` returns `(ref, ours)`, two
    `requests.Response`s. `path` is relative to the server root, e.g.
    "/api/2.0/mlflow/model-versions/search".
    """

    def __init__(self, ref_url, our_url):
        self.ref_url, self.our_url = ref_url, our_url

    def call(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        ref = requests.request(method, self.ref_url + path, **kw)
        ours = requests.request(method, self.our_url + path, **kw)
        return ref, ours

    def same_status(self, method, path, **kw):
        """The call on both; assert the same status and error_code; return (ref, ours)."""
        ref, ours = self.call(method, path, **kw)
        assert ours.status_code == ref.status_code, (path, ref.status_code, ref.text, ours.status_code, ours.text)
        if ref.status_code >= 400:
            assert error_code(ours) == error_code(ref), (path, ref.text, ours.text)
        return ref, ours

    def clients(self):
        """(reference MlflowClient, regserve MlflowClient)."""
        from mlflow import MlflowClient

        return (
            MlflowClient(tracking_uri=self.ref_url, registry_uri=self.ref_url),
            MlflowClient(tracking_uri=self.our_url, registry_uri=self.our_url),
        )


def error_code(resp):
    try:
        return resp.json().get("error_code")
    except ValueError:
        return None


@pytest.fixture(scope="session")
def pair(mlflow_ref, server):
    return Pair(mlflow_ref.url, server.url)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (tests/python/pg.py over scripts/pg-cluster), started the
    first time a test asks for it; stopped and removed at the end of the session, also when a test
    failed. `postgres.new_database(name)` gives each test a fresh database."""
    from pg import PgCluster

    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
