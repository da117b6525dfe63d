//! End to end: the Open Inference Protocol, Prometheus metrics, and dynamic batching against
//! the real binary on 127.0.0.1:0, checked against the Python onnxruntime references.

mod common;

use std::time::Duration;

use common::{close, repo, Registry};
use serde_json::{json, Value};

fn reference(model: &str, case: &str) -> Value {
    let path = repo().join("models/reference").join(model).join(format!("{case}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.clone()],
    }
}

#[tokio::test]
async fn open_inference_protocol_metadata_infer_and_errors() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    reg.register("iris-v2", "iris", &[]);
    let server = reg.spawn(&["serve", "-m", "models:/iris/Production", "--pinned-versions", "any"]);
    server.wait_ready("/v2/health/ready", Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    let get = |p: &str| c.get(server.url(p)).send();

    assert_eq!(get("/v2/health/live").await.unwrap().status(), 200);
    let meta: Value = get("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(meta["name"], "regserve");
    let m: Value = get("/v2/models/iris").await.unwrap().json().await.unwrap();
    assert_eq!(m["versions"], json!(["1"]));
    assert_eq!(m["inputs"], json!([{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]));
    assert_eq!(m["outputs"][0], json!({"name": "label", "datatype": "INT64", "shape": [-1]}));
    assert_eq!(m["outputs"][1], json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}));
    assert_eq!(get("/v2/models/iris/ready").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/nope/ready").await.unwrap().status(), 404);

    // The reference rows, sent flat (row-major) and nested; `id` echoed; outputs selected.
    let r = reference("iris-v1", "instances_2rows");
    let rows = &r["request"]["instances"];
    for data in [Value::Array(flat(rows)), rows.clone()] {
        let body = json!({"id": "req-7", "inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": data}]});
        let resp: Value =
            c.post(server.url("/v2/models/iris/infer")).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (resp["model_name"].as_str(), resp["model_version"].as_str(), resp["id"].as_str()),
            (Some("iris"), Some("1"), Some("req-7"))
        );
        let outs = resp["outputs"].as_array().unwrap();
        assert_eq!(outs[0]["name"], "label");
        assert_eq!(outs[0]["datatype"], "INT64");
        assert_eq!(outs[0]["shape"], json!([2]));
        close(&outs[0]["data"], &Value::Array(flat(&r["raw_outputs"]["label"])), 0.0, "label").unwrap();
        assert_eq!(outs[1]["shape"], json!([2, 3]));
        close(&outs[1]["data"], &Value::Array(flat(&r["raw_outputs"]["probabilities"])), 1e-5, "probabilities")
            .unwrap();
    }
    let body = json!({"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": flat(rows)}], "outputs": [{"name": "probabilities"}]});
    let resp: Value =
        c.post(server.url("/v2/models/iris/infer")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(resp["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(resp["outputs"][0]["name"], "probabilities");

    // A pinned version answers even though the stage points elsewhere.
    let v2ref = reference("iris-v2", "instances_2rows");
    let body = json!({"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": flat(rows)}]});
    let resp: Value =
        c.post(server.url("/v2/models/iris/versions/2/infer")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(resp["model_version"], "2");
    close(&resp["outputs"][1]["data"], &Value::Array(flat(&v2ref["raw_outputs"]["probabilities"])), 1e-5, "v2")
        .unwrap();
    assert_eq!(get("/v2/models/iris/versions/2/ready").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/iris/versions/99/ready").await.unwrap().status(), 404);

    // Errors: {"error": ...} with 400 / 404.
    let cases = [
        (
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
            400,
            "datatype FP64",
        ),
        (
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}),
            400,
            "3 values",
        ),
        (
            json!({"inputs": [{"name": "float_input", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}),
            400,
            "shape [1, 5]",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            400,
            "Unexpected input 'x'",
        ),
        (json!({"inputs": []}), 400, "Missing input 'float_input'"),
        (
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
            400,
            "Unknown output 'nope'",
        ),
        (json!({"inputs": "x"}), 400, "Invalid inference request"),
    ];
    for (body, status, text) in cases {
        let resp = c.post(server.url("/v2/models/iris/infer")).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains(text), "{body}: {err}");
    }
    let resp = c.post(server.url("/v2/models/nope/infer")).json(&json!({"inputs": []})).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("not served"));
    let resp = c.post(server.url("/v2/models/iris/versions/99/infer")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// Concurrent 1-row requests are merged into batches, and every answer is still its own row.
#[tokio::test]
async fn dynamic_batching_merges_requests_and_splits_answers_back() {
    let reg = Registry::new();
    reg.register("mlp", "mlp", &[]);
    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/mlp/1",
        "--sessions",
        "1",
        "--max-batch-size",
        "32",
        "--max-batch-delay",
        "20ms",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let r = reference("mlp", "inputs_8rows");
    let rows = r["request"]["inputs"].as_array().unwrap().clone();
    let want = r["raw_outputs"]["variable"].as_array().unwrap().clone();
    let c = reqwest::Client::new();
    let rounds = 10;
    for _ in 0..rounds {
        let mut tasks = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let (c, url, row) = (c.clone(), server.url("/invocations"), row.clone());
            tasks.push(tokio::spawn(async move {
                let resp: Value =
                    c.post(url).json(&json!({"inputs": [row]})).send().await.unwrap().json().await.unwrap();
                (i, resp)
            }));
        }
        for t in tasks {
            let (i, resp) = t.await.unwrap();
            close(&resp["predictions"]["variable"][0], &want[i], 1e-5, &format!("row {i}")).unwrap();
        }
    }
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} not in\n{text}"))
    };
    let runs = value("regserve_batch_size_count{model=\"mlp\"}");
    let rows_run = value("regserve_batch_size_sum{model=\"mlp\"}");
    let requests = (rounds * rows.len()) as f64;
    // The warm-up run on the input example is counted too.
    assert!(rows_run >= requests, "{rows_run} rows for {requests} requests");
    assert!(runs < requests / 2.0, "{runs} session runs for {requests} concurrent requests: batching did not merge");
}

#[tokio::test]
async fn metrics_count_requests_loads_and_swaps() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    reg.register("iris-v2", "iris", &[]);
    let server = reg.spawn(&["serve", "-m", "models:/iris/Production", "--poll-interval", "200ms"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    let good = json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]});
    for _ in 0..3 {
        assert_eq!(c.post(server.url("/invocations")).json(&good).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.post(server.url("/invocations")).json(&json!({})).send().await.unwrap().status(), 400);
    reg.ok(&["models", "transition", "iris", "2", "Production", "--archive-existing"]);
    let start = std::time::Instant::now();
    loop {
        let text = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains("regserve_model_version_in_service{model=\"iris\"} 2") {
            assert!(
                text.contains(
                    "regserve_requests_total{model=\"iris\",version=\"1\",protocol=\"invocations\",status=\"200\"} 3"
                ),
                "{text}"
            );
            assert!(
                text.contains(
                    "regserve_requests_total{model=\"iris\",version=\"1\",protocol=\"invocations\",status=\"400\"} 1"
                ),
                "{text}"
            );
            assert!(text.contains("regserve_model_loads_total{model=\"iris\",outcome=\"success\"} 2"), "{text}");
            assert!(text.contains("regserve_model_swaps_total{model=\"iris\"} 1"), "{text}");
            assert!(text.contains("regserve_request_duration_seconds_bucket{"), "{text}");
            assert!(text.contains("regserve_queue_depth{model=\"iris\"} 0"), "{text}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no swap seen in metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
