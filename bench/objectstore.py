"""Fetch + load of a ~100 MB model version: from an S3-compatible server vs the mlflow-artifacts proxy.

    /path/to/.venv/bin/python bench/objectstore.py [--binary target/release/regserve] [--repeats 3]

Starts on 127.0.0.1: moto's S3 server, a real `mlflow server` with `--default-artifact-root
s3://… --no-serve-artifacts` and another with its artifact proxy (`--artifacts-destination`), logs
the same ONNX model with external weights (2 × 50 MB) to each with the MLflow client, then for each
runs `regserve serve -m models:/big/1` on an empty --data-dir and measures the time from start to
`/ping` answering 200 (list, download, load, warm-up) and the process's peak RSS (VmHWM). Prints a
markdown table. Uses the servers and helpers of tests/python/test_object_store.py.
"""

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import requests  # noqa: E402

from conftest import child_env  # noqa: E402
from test_follow import MlflowServer, free_port  # noqa: E402
from test_object_store import BUCKET, EnvPatch, Moto, log_versions, start_mlflow, weights_model  # noqa: E402


def rss_mib(pid, field="VmRSS:"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(binary, registry_url, env, workdir):
    port = free_port()
    data = pathlib.Path(tempfile.mkdtemp(dir=workdir))
    full_env = {k: v for k, v in child_env(RUST_LOG="warn").items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}
    full_env.update(env)
    started = time.monotonic()
    during = [0.0]  # peak RSS while a partial download folder exists (before the load)
    proc = subprocess.Popen([binary, "--data-dir", str(data), "serve", "-m", "models:/big/1", "--registry-uri",
                             registry_url, "--port", str(port)], env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if any((data / "cache").rglob(".partial-*")):
                    during[0] = max(during[0], rss_mib(proc.pid))
            except (OSError, ValueError):
                pass
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError("serve did not become ready")
            time.sleep(0.01)
        seconds = time.monotonic() - started
        rss = peak_rss_mib(proc.pid)
        cached = sum(p.stat().st_size for p in (data / "cache").rglob("*") if p.is_file())
    finally:
        proc.terminate()
        proc.wait(30)
    return seconds, rss, cached, during[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(REPO / "target" / "release" / "regserve"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="regserve-bench-objectstore-"))
    moto = Moto(workdir)
    s3 = MlflowServer(workdir / "s3")
    proxy = MlflowServer(workdir / "proxy")
    s3.workdir.mkdir()
    proxy.workdir.mkdir()
    try:
        with EnvPatch(**moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url):
            s3.extra_args = ["--default-artifact-root", f"s3://{BUCKET}/mlruns", "--no-serve-artifacts"]
            start_mlflow(s3)
            proxy.extra_args = ["--artifacts-destination", str(proxy.workdir / "artifacts")]
            start_mlflow(proxy)
            # A model each: MLflow's save moves the weights out of the proto it is given.
            log_versions(s3.url, "big", [weights_model(2.0, 12_500_000)])  # 2 x 50 MB of float32
            log_versions(proxy.url, "big", [weights_model(2.0, 12_500_000)])
        rows = []
        for label, url, env in [
            ("S3 (moto), s3:// download URI", s3.url, dict(moto.keys, MLFLOW_S3_ENDPOINT_URL=moto.url)),
            ("mlflow-artifacts proxy", proxy.url, {}),
        ]:
            runs = [one_run(args.binary, url, env, workdir) for _ in range(args.repeats)]
            rows.append((label, runs))
        print(f"\nregserve: {args.binary}; {args.repeats} runs each; model: 2 x 50 MB external weights\n")
        print("| source | fetch + load + warm-up, median | min | peak RSS during the download | peak RSS overall (loaded) | bytes cached |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, runs in rows:
            secs = [r[0] for r in runs]
            print(f"| {label} | {statistics.median(secs):.2f} s | {min(secs):.2f} s | "
                  f"{max(r[3] for r in runs):.0f} MiB | {max(r[1] for r in runs):.0f} MiB | {runs[0][2] / 1e6:.0f} MB |")
    finally:
        for srv in (s3, proxy):
            srv.stop()
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
