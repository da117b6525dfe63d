"""A fleet following one alias (issue 15): webhooks vs polling at 1 s, on `regserve server` and on
a real `mlflow server`.

    /path/to/.venv/bin/python bench/webhooks.py [--binary target/debug/regserve] [--moves 20]

For each registry (a real `mlflow server` from the virtualenv; `regserve server`), and each mode
(webhooks: one webhook per replica to its /hooks/mlflow, `--poll-interval 60s`; polling:
no webhook, `--poll-interval 1s`), runs the fleet of tests/python/test_webhook_fleet.py: iris v1
and v2 logged with the MLflow client, three `regserve serve` replicas behind Debian's haproxy,
16 clients scoring through haproxy, MOVES alias moves. Latency per move = the alias call
returning → every replica answering with the new version (each probed directly). Prints the
median and max, the answers and the failed requests, as a markdown table. The first move of a
run also downloads and loads v2 on every replica (it is in the max).
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class Env:
    """What pytest's monkeypatch.setenv does, for a script."""

    def setenv(self, key, value):
        os.environ[key] = value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(REPO / "target" / "debug" / "regserve"))
    ap.add_argument("--moves", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("ORT_DYLIB_PATH", str(REPO / ".ort" / "lib" / "libonnxruntime.so"))
    from test_webhook_fleet import REPLICAS, MlflowRegistry, RegserveRegistry, run_fleet

    rows = []
    for kind in (RegserveRegistry, MlflowRegistry):
        for webhooks in (True, False):
            with tempfile.TemporaryDirectory(prefix="regserve-bench-webhooks-") as tmp:
                tmp = pathlib.Path(tmp)
                registry = kind(tmp, args.binary, Env())
                try:
                    results, load, _, logged = run_fleet(registry, tmp, args.binary, moves=args.moves,
                                                         webhooks=webhooks, poll="60s" if webhooks else "1s")
                finally:
                    registry.stop()
            lat = [after for _, after, _, _ in results]
            later = lat[1:]  # without the first move (download + load of v2)
            server_errors = sum(1 for line in logged if line[0] >= 500 or line[0] < 0)
            rows.append((registry.name, "webhooks (poll 60 s)" if webhooks else "polling 1 s",
                         statistics.median(lat), max(lat), max(later), len(load.answers),
                         len(load.failures) + server_errors))
            print(f"{rows[-1][0]}, {rows[-1][1]}: median {rows[-1][2] * 1000:.0f} ms, max {rows[-1][3] * 1000:.0f} ms",
                  file=sys.stderr)
    print(f"\nregserve: {args.binary}; {REPLICAS} replicas behind haproxy; {args.moves} alias moves each\n")
    print("| registry | how replicas hear a move | median | max | max without the first move | answers | failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, mode, med, mx, mx_later, answers, failed in rows:
        print(f"| {name} | {mode} | {med * 1000:.0f} ms | {mx * 1000:.0f} ms | {mx_later * 1000:.0f} ms | {answers} | {failed} |")


if __name__ == "__main__":
    main()
