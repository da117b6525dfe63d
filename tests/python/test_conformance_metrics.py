"""Issue 12, metrics: the same calls against a real `mlflow server` and regserve, answers compared.

Items: 3 (`metrics/get-history` pages), 4 (±Infinity), 5 (metric dataset fields on a logged
model's metrics), 6 (required metric fields), 10 (NaN metrics are stored), 9 (the UI's
`metrics/get-history-bulk` and `metrics/get-history-bulk-interval`).
"""

import math
import uuid

import pytest
import requests
from mlflow.entities import Metric

API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
MAX_DOUBLE = 1.7976931348623157e308


def new_runs(pair, n=1):
    """A fresh experiment on each server with `n` runs: clients, experiment ids, run ids.

    Each is a (reference, regserve) pair; the run lists are in the same order on both.
    """
    ref_c, our_c = pair.clients()
    name = f"metrics-{uuid.uuid4().hex[:10]}"
    ref_exp, our_exp = ref_c.create_experiment(name), our_c.create_experiment(name)
    ref_runs = [ref_c.create_run(ref_exp).info.run_id for _ in range(n)]
    our_runs = [our_c.create_run(our_exp).info.run_id for _ in range(n)]
    return (ref_c, our_c), (ref_exp, our_exp), (ref_runs, our_runs)


def shown(v):
    """A metric value comparable across servers (NaN != NaN)."""
    return "NaN" if isinstance(v, float) and math.isnan(v) else v


def entities(metrics):
    return [(m.key, shown(m.value), m.timestamp, m.step) for m in metrics]


def rows(body, run_names=None):
    """A REST answer's metrics as tuples; `run_names` maps run ids to names both servers share."""
    out = []
    for m in body.get("metrics", []):
        row = (m["key"], m["value"], m["timestamp"], m["step"])
        if run_names is not None:
            row += (run_names[m["run_id"]],)
        out.append(row)
    return out


def by_key(metrics):
    """A run's latest metrics (a dict for the client; their order in the JSON carries nothing)."""
    return sorted(metrics, key=lambda m: m["key"])


def get_both(pair, path, ref_params, our_params):
    ref = requests.get(pair.ref_url + path, params=ref_params, timeout=60)
    ours = requests.get(pair.our_url + path, params=our_params, timeout=60)
    return ref, ours


def log_both(clients, runs, key, values):
    """Log (value, timestamp, step) triples under `key` to the matching runs of both servers."""
    for client, run in zip(clients, runs):
        client.log_batch(run, metrics=[Metric(key, v, ts, step) for v, ts, step in values])


def assert_same_error(ref, ours, message=True):
    assert ref.status_code >= 400, ref.text
    assert (ours.status_code, ours.json()["error_code"]) == (ref.status_code, ref.json()["error_code"]), (
        ref.text,
        ours.text,
    )
    if message:
        assert ours.json()["message"] == ref.json()["message"]


# ---------------------------------------------------------------- item 4: ±Infinity


def test_infinity_is_stored_as_the_largest_double_like_mlflow(pair):
    clients, (ref_exp, our_exp), (ref_runs, our_runs) = new_runs(pair)
    ref_c, our_c = clients
    for client, run in zip(clients, (ref_runs[0], our_runs[0])):
        client.log_metric(run, "up", 2.5, timestamp=9, step=0)
        client.log_metric(run, "up", float("inf"), timestamp=10, step=0)
        client.log_metric(run, "down", float("-inf"), timestamp=11, step=0)
    for key in ("up", "down"):
        ref = entities(ref_c.get_metric_history(ref_runs[0], key))
        assert entities(our_c.get_metric_history(our_runs[0], key)) == ref
    assert [m.value for m in our_c.get_metric_history(our_runs[0], "up")] == [2.5, MAX_DOUBLE]
    assert our_c.get_run(our_runs[0]).data.metrics == ref_c.get_run(ref_runs[0]).data.metrics
    assert our_c.get_run(our_runs[0]).data.metrics["down"] == -MAX_DOUBLE
    ref_found = ref_c.search_runs([ref_exp], "metrics.up > 1e300")
    our_found = our_c.search_runs([our_exp], "metrics.up > 1e300")
    assert [r.data.metrics for r in our_found] == [r.data.metrics for r in ref_found] != []
    # The raw JSON holds a number, never null (which the client reads as 0.0).
    ref, ours = get_both(
        pair,
        API + "/metrics/get-history",
        {"run_id": ref_runs[0], "metric_key": "down"},
        {"run_id": our_runs[0], "metric_key": "down"},
    )
    assert rows(ours.json()) == rows(ref.json()) == [("down", -MAX_DOUBLE, 11, 0)]


# ---------------------------------------------------------------- item 10: NaN


def test_nan_metrics_are_stored_and_read_back_like_mlflow(pair):
    clients, (ref_exp, our_exp), (ref_runs, our_runs) = new_runs(pair, 4)
    ref_c, our_c = clients
    # run 0: loss went NaN at the last step; run 1: 0.5; run 2: 2.0; run 3: no loss at all.
    for client, runs in zip(clients, (ref_runs, our_runs)):
        client.log_metric(runs[0], "loss", 0.7, timestamp=1, step=0)
        client.log_batch(runs[0], metrics=[Metric("loss", float("nan"), 2, 1), Metric("acc", 0.9, 2, 1)])
        client.log_metric(runs[1], "loss", 0.5, timestamp=1, step=0)
        client.log_metric(runs[2], "loss", 2.0, timestamp=1, step=0)
        client.log_metric(runs[3], "acc", 0.1, timestamp=1, step=0)
    ref_hist, our_hist = ref_c.get_metric_history(ref_runs[0], "loss"), our_c.get_metric_history(our_runs[0], "loss")
    assert entities(our_hist) == entities(ref_hist) == [("loss", 0.7, 1, 0), ("loss", "NaN", 2, 1)]
    assert math.isnan(our_c.get_run(our_runs[0]).data.metrics["loss"])
    ref, ours = get_both(pair, API + "/runs/get", {"run_id": ref_runs[0]}, {"run_id": our_runs[0]})
    assert by_key(ours.json()["run"]["data"]["metrics"]) == by_key(ref.json()["run"]["data"]["metrics"])
    assert {"key": "loss", "value": "NaN", "timestamp": 2, "step": 1} in ours.json()["run"]["data"]["metrics"]
    # Filters: every comparison with NaN is false except `!=`; order: numbers, then NaN, then missing.
    index = {r: i for i, r in enumerate(ref_runs)} | {r: i for i, r in enumerate(our_runs)}
    for flt in ("metrics.loss > 0", "metrics.loss < 1", "metrics.loss = 0", "metrics.loss != 0.5"):
        ref = sorted(index[r.info.run_id] for r in ref_c.search_runs([ref_exp], flt))
        assert sorted(index[r.info.run_id] for r in our_c.search_runs([our_exp], flt)) == ref, flt
    for order in ("metrics.loss ASC", "metrics.loss DESC"):
        ref = [index[r.info.run_id] for r in ref_c.search_runs([ref_exp], "", order_by=[order])]
        assert [index[r.info.run_id] for r in our_c.search_runs([our_exp], "", order_by=[order])] == ref, order


# ---------------------------------------------------------------- item 3: get-history pages


def test_metric_history_pages_as_mlflow_pages_it(pair):
    clients, _, (ref_runs, our_runs) = new_runs(pair)
    # Timestamps out of step order: MLflow orders a history by timestamp, then step, then value.
    values = [(i * 0.5, 100 + (i % 3), i) for i in range(7)]
    log_both(clients, (ref_runs[0], our_runs[0]), "p", values)

    def pages(url, run):
        got, token, n = [], None, 0
        for _ in range(10):
            params = {"run_id": run, "metric_key": "p", "max_results": 3}
            if token:
                params["page_token"] = token
            body = requests.get(url + API + "/metrics/get-history", params=params, timeout=60).json()
            got.append(rows(body))
            token, n = body.get("next_page_token"), n + 1
            if not token:
                return got
        raise AssertionError("get-history did not stop paging")

    ref_pages = pages(pair.ref_url, ref_runs[0])
    assert pages(pair.our_url, our_runs[0]) == ref_pages
    assert [len(p) for p in ref_pages] == [3, 3, 1]
    # Without max_results: one answer with every value (up to regserve's page limit), no token.
    ref, ours = get_both(
        pair, API + "/metrics/get-history", {"run_id": ref_runs[0], "metric_key": "p"}, {"run_id": our_runs[0], "metric_key": "p"}
    )
    assert ours.json() == {"metrics": ref.json()["metrics"]} and "next_page_token" not in ref.json()
    ref_c, our_c = clients
    assert entities(our_c.get_metric_history(our_runs[0], "p")) == entities(ref_c.get_metric_history(ref_runs[0], "p"))


@pytest.mark.parametrize(
    "extra, same_message",
    [
        ({"max_results": 0}, True),
        ({"max_results": -2}, True),
        ({"page_token": "zzz"}, False),
        ({"page_token": "!!"}, False),
        ({"metric_key": None}, True),
    ],
)
def test_metric_history_bad_parameters(pair, extra, same_message):
    _, _, (ref_runs, our_runs) = new_runs(pair)
    base = {"metric_key": "p"}
    params = {k: v for k, v in {**base, **extra}.items() if v is not None}
    ref, ours = get_both(pair, API + "/metrics/get-history", {**params, "run_id": ref_runs[0]}, {**params, "run_id": our_runs[0]})
    assert_same_error(ref, ours, message=same_message)


def test_the_client_reads_a_history_longer_than_one_page(server):
    """regserve bounds a page at 25000 values (the client's own page size) and the client follows
    the token: every value comes back, in order (only regserve: 25001 values on both is slow)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url)
    run = client.create_run(client.create_experiment(f"long-{uuid.uuid4().hex[:8]}")).info.run_id
    n = 25_001
    for start in range(0, n, 1000):
        client.log_batch(run, metrics=[Metric("long", float(i), 1000 + i, i) for i in range(start, min(n, start + 1000))])
    history = client.get_metric_history(run, "long")
    assert [m.step for m in history] == list(range(n))
    body = requests.get(server.url + API + "/metrics/get-history", params={"run_id": run, "metric_key": "long"}, timeout=60).json()
    assert len(body["metrics"]) == 25_000 and body["next_page_token"]
    rest = requests.get(
        server.url + API + "/metrics/get-history",
        params={"run_id": run, "metric_key": "long", "page_token": body["next_page_token"], "max_results": 100_000},
        timeout=60,
    ).json()
    assert [m["step"] for m in rest["metrics"]] == [25_000] and "next_page_token" not in rest


# ---------------------------------------------------------------- item 6: required fields


LOG_METRIC_CASES = [
    {"key": "a", "value": 1},
    {"key": "a", "value": 1, "timestamp": None},
    {"key": "a", "timestamp": 1},
    {"value": 1, "timestamp": 1},
    {},
    {"key": "a", "value": "abc", "timestamp": 1},
    {"key": "a", "value": 1, "timestamp": "x"},
    {"key": "a", "value": 1, "timestamp": -5},
    {"key": "a", "value": 1, "timestamp": 1, "step": "x"},
    {"key": "a;b", "value": 1, "timestamp": 1},
    {"key": "a/../b", "value": 1, "timestamp": 1},
    {"key": "/abs", "value": 1, "timestamp": 1},
    {"key": "k" * 251, "value": 1, "timestamp": 1},
]


@pytest.mark.parametrize("body", LOG_METRIC_CASES)
def test_log_metric_refuses_what_mlflow_refuses(pair, body):
    _, _, (ref_runs, our_runs) = new_runs(pair)
    ref = requests.post(pair.ref_url + API + "/runs/log-metric", json={"run_id": ref_runs[0], **body}, timeout=60)
    ours = requests.post(pair.our_url + API + "/runs/log-metric", json={"run_id": our_runs[0], **body}, timeout=60)
    assert_same_error(ref, ours)


LOG_BATCH_CASES = [
    [{"key": "b", "value": 1, "timestamp": 1}, {"key": "b", "value": 1}],
    [{"key": "b", "timestamp": 1}],
    [{"value": 1, "timestamp": 1}],
    [{"key": "", "value": 1, "timestamp": 1}],
    [{"key": "b", "value": 1, "timestamp": -1}],
    [{"key": "b", "value": i, "timestamp": 1} for i in range(1001)],
]


@pytest.mark.parametrize("metrics", LOG_BATCH_CASES, ids=lambda m: f"{len(m)}-metrics-{sorted(m[-1])}")
def test_log_batch_refuses_what_mlflow_refuses_and_stores_nothing(pair, metrics):
    (ref_c, our_c), _, (ref_runs, our_runs) = new_runs(pair)
    ref = requests.post(pair.ref_url + API + "/runs/log-batch", json={"run_id": ref_runs[0], "metrics": metrics}, timeout=60)
    ours = requests.post(pair.our_url + API + "/runs/log-batch", json={"run_id": our_runs[0], "metrics": metrics}, timeout=60)
    assert_same_error(ref, ours)
    assert our_c.get_run(our_runs[0]).data.metrics == ref_c.get_run(ref_runs[0]).data.metrics == {}


@pytest.mark.parametrize(
    "body",
    [
        {"params": [{"key": "a", "value": "1"}, {"value": "1"}]},
        {"tags": [{"key": ""}]},
        {"metrics": [{"key": "m", "value": 1, "timestamp": 1}], "params": [{"key": f"p{i}"} for i in range(101)]},
    ],
    ids=["param-without-key", "tag-without-key", "101-params"],
)
def test_log_batch_params_and_tags_checked_like_mlflow(pair, body):
    (ref_c, our_c), _, (ref_runs, our_runs) = new_runs(pair)
    ref = requests.post(pair.ref_url + API + "/runs/log-batch", json={"run_id": ref_runs[0], **body}, timeout=60)
    ours = requests.post(pair.our_url + API + "/runs/log-batch", json={"run_id": our_runs[0], **body}, timeout=60)
    assert_same_error(ref, ours)
    assert our_c.get_run(our_runs[0]).data.params == ref_c.get_run(ref_runs[0]).data.params == {}


def test_the_metric_value_forms_the_client_sends_are_accepted(pair):
    """MLflow's client sends NaN and ±Infinity as the strings protobuf's JSON uses."""
    (ref_c, our_c), _, (ref_runs, our_runs) = new_runs(pair)
    for url, run in ((pair.ref_url, ref_runs[0]), (pair.our_url, our_runs[0])):
        for i, value in enumerate(("NaN", "Infinity", "-Infinity", "2.5", 3)):
            r = requests.post(
                url + API + "/runs/log-metric",
                json={"run_id": run, "key": "v", "value": value, "timestamp": 10 + i},
                timeout=60,
            )
            assert r.status_code == 200, r.text
    assert entities(our_c.get_metric_history(our_runs[0], "v")) == entities(ref_c.get_metric_history(ref_runs[0], "v"))


# ---------------------------------------------------------------- item 5: dataset fields


def test_logged_model_metrics_keep_their_dataset_like_mlflow(pair):
    clients, (ref_exp, our_exp), (ref_runs, our_runs) = new_runs(pair)
    models = []
    for client, exp, run in zip(clients, (ref_exp, our_exp), (ref_runs[0], our_runs[0])):
        model = client.create_logged_model(exp, source_run_id=run, name="clf")
        models.append(model.model_id)
        client.log_batch(
            run,
            metrics=[
                Metric("acc", 0.5, 10, 0, model_id=model.model_id, dataset_name="iris-train", dataset_digest="abc123", run_id=run),
                Metric("acc", float("inf"), 12, 2, model_id=model.model_id, run_id=run),
            ],
        )
        client.log_metric(run, "loss", 0.25, timestamp=20, step=3, model_id=model.model_id, dataset_name="iris-test", dataset_digest="d2")

    def view(client, model_id, run):
        return sorted(
            (m.key, shown(m.value), m.timestamp, m.step, m.dataset_name, m.dataset_digest, m.model_id == model_id, m.run_id == run)
            for m in client.get_logged_model(model_id).metrics
        )

    ref_c, our_c = clients
    ref = view(ref_c, models[0], ref_runs[0])
    assert view(our_c, models[1], our_runs[0]) == ref
    assert ("acc", 0.5, 10, 0, "iris-train", "abc123", True, True) in ref
    # A run's own metrics do not carry them, in MLflow either.
    ref, ours = get_both(pair, API + "/runs/get", {"run_id": ref_runs[0]}, {"run_id": our_runs[0]})
    assert by_key(ours.json()["run"]["data"]["metrics"]) == by_key(ref.json()["run"]["data"]["metrics"])


def test_a_metric_naming_an_unknown_logged_model_is_refused(pair):
    """MLflow refuses it with 400 (an SQL foreign-key error); regserve with a 400 saying why."""
    _, _, (ref_runs, our_runs) = new_runs(pair)
    body = {"key": "z", "value": 1, "timestamp": 1, "model_id": "m-0123456789abcdef0123456789abcdef"}
    ref = requests.post(pair.ref_url + API + "/runs/log-metric", json={"run_id": ref_runs[0], **body}, timeout=60)
    ours = requests.post(pair.our_url + API + "/runs/log-metric", json={"run_id": our_runs[0], **body}, timeout=60)
    assert ours.status_code == ref.status_code == 400, (ref.text, ours.text)
    assert "does not exist" in ours.json()["message"]


# ---------------------------------------------------------------- item 9: the UI's bulk histories


def two_runs_with_history(pair):
    clients, _, (ref_runs, our_runs) = new_runs(pair, 2)
    log_both(clients, (ref_runs[0], our_runs[0]), "x", [(i * 0.5, 1000 - i, i) for i in range(9)])
    log_both(clients, (ref_runs[1], our_runs[1]), "x", [(float("nan") if i == 4 else i * 1.0, 50 + i, 2 * i) for i in range(8)])
    names = {ref_runs[0]: "a", our_runs[0]: "a", ref_runs[1]: "b", our_runs[1]: "b"}
    return ref_runs, our_runs, names


def test_get_history_bulk_like_mlflow(pair):
    ref_runs, our_runs, names = two_runs_with_history(pair)
    missing = uuid.uuid4().hex
    for max_results in (None, 5, 12, 0):
        extra = {} if max_results is None else {"max_results": max_results}
        ref, ours = get_both(
            pair,
            AJAX + "/metrics/get-history-bulk",
            {"run_id": ref_runs + [missing], "metric_key": "x", **extra},
            {"run_id": our_runs + [missing], "metric_key": "x", **extra},
        )
        assert ours.status_code == ref.status_code == 200
        # MLflow orders by run id, which differ between the servers: compare per run, and the count.
        ref_rows, our_rows = rows(ref.json(), names), rows(ours.json(), names)
        assert len(our_rows) == len(ref_rows)
        if max_results is None:
            for run in "ab":
                # MLflow writes NaN here as a bare `NaN` (invalid JSON, read as float nan by requests).
                want = [tuple(shown(v) for v in r) for r in ref_rows if r[4] == run]
                assert [r for r in our_rows if r[4] == run][: len(want)] == want
    assert "metrics" in ours.json()


@pytest.mark.parametrize(
    "params",
    [
        {"metric_key": "x"},
        {"run_id": ["r"]},
        {"run_id": [f"r{i}" for i in range(101)], "metric_key": "x"},
    ],
)
def test_get_history_bulk_errors_like_mlflow(pair, params):
    ref, ours = pair.call("GET", AJAX + "/metrics/get-history-bulk", params=params)
    assert_same_error(ref, ours)


def test_get_history_bulk_is_the_ui_api_only(pair):
    ref, ours = pair.call("GET", API + "/metrics/get-history-bulk", params={"run_id": ["r"], "metric_key": "x"})
    assert ours.status_code == ref.status_code == 404


@pytest.mark.parametrize(
    "extra",
    [{}, {"max_results": 1}, {"max_results": 3}, {"max_results": 4}, {"max_results": 20}, {"start_step": 2, "end_step": 9}],
)
@pytest.mark.parametrize("prefix", [API, AJAX])
def test_get_history_bulk_interval_samples_like_mlflow(pair, extra, prefix):
    ref_runs, our_runs, names = two_runs_with_history(pair)
    missing = uuid.uuid4().hex
    ref, ours = get_both(
        pair,
        prefix + "/metrics/get-history-bulk-interval",
        {"run_ids": ref_runs + [missing], "metric_key": "x", **extra},
        {"run_ids": our_runs + [missing], "metric_key": "x", **extra},
    )
    assert ours.status_code == ref.status_code == 200, (ref.text, ours.text)
    assert rows(ours.json(), names) == rows(ref.json(), names) != []


@pytest.mark.parametrize(
    "params",
    [
        {"metric_key": "x"},
        {"run_ids": ["r"]},
        {"run_ids": [f"r{i}" for i in range(101)], "metric_key": "x"},
        {"run_ids": ["r"], "metric_key": "x", "max_results": 0},
        {"run_ids": ["r"], "metric_key": "x", "max_results": 2501},
        {"run_ids": ["r"], "metric_key": "x", "start_step": 2},
        {"run_ids": ["r"], "metric_key": "x", "start_step": 5, "end_step": 4},
    ],
)
def test_get_history_bulk_interval_errors_like_mlflow(pair, params):
    ref, ours = pair.call("GET", AJAX + "/metrics/get-history-bulk-interval", params=params)
    assert_same_error(ref, ours)


# ---------------------------------------------------------------- deliberate differences, shown


def test_a_nan_metric_of_a_logged_model_stays_nan(pair):
    """MLflow's SQL store keeps NaN in the run's history but answers 0.0 on the logged model;
    regserve keeps the user's NaN in both (docs/mlflow-compatibility.md)."""
    clients, (ref_exp, our_exp), (ref_runs, our_runs) = new_runs(pair)
    got = []
    for client, exp, run in zip(clients, (ref_exp, our_exp), (ref_runs[0], our_runs[0])):
        model = client.create_logged_model(exp, source_run_id=run, name="nan-model")
        client.log_metric(run, "loss", float("nan"), timestamp=5, step=0, model_id=model.model_id)
        history = client.get_metric_history(run, "loss")
        got.append((shown(history[0].value), [m.value for m in client.get_logged_model(model.model_id).metrics]))
    (ref_run_value, ref_model_values), (our_run_value, our_model_values) = got
    assert ref_run_value == our_run_value == "NaN"
    assert ref_model_values == [0.0]
    assert len(our_model_values) == 1 and math.isnan(our_model_values[0])


def test_a_batch_with_a_mistyped_value_is_refused_whole(pair):
    """MLflow 3.17 answers 200, stores the mistyped value as 0 and drops the rest of the batch;
    regserve answers 400 naming the field and stores nothing."""
    (ref_c, our_c), _, (ref_runs, our_runs) = new_runs(pair)
    body = {"metrics": [{"key": "b", "value": "abc", "timestamp": 1}, {"key": "c", "value": 1, "timestamp": 1}]}
    ref = requests.post(pair.ref_url + API + "/runs/log-batch", json={"run_id": ref_runs[0], **body}, timeout=60)
    ours = requests.post(pair.our_url + API + "/runs/log-batch", json={"run_id": our_runs[0], **body}, timeout=60)
    assert ref.status_code == 200 and ref_c.get_run(ref_runs[0]).data.metrics == {"b": 0.0}
    assert ours.status_code == 400 and ours.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'value'" in ours.json()["message"] and our_c.get_run(our_runs[0]).data.metrics == {}


def test_the_history_of_an_unknown_run_is_a_404(pair):
    """MLflow answers an empty history; regserve says the run does not exist, as runs/get does."""
    params = {"run_id": uuid.uuid4().hex, "metric_key": "loss"}
    ref, ours = pair.call("GET", API + "/metrics/get-history", params=params)
    assert (ref.status_code, ref.json()) == (200, {})
    assert (ours.status_code, ours.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
