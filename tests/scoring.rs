//! End to end: register the example models through the CLI, serve them with the real binary on
//! 127.0.0.1:0, score every payload format, and compare with predictions computed by Python
//! onnxruntime (models/reference/); then every bad input, with its status and error code.

mod common;

use std::time::Duration;

use common::{close, repo, Registry, Server};
use serde_json::{json, Value};

/// Serve the four example models from one process, each as version 1 of its own name.
async fn serve_examples() -> (Registry, Server) {
    let reg = Registry::new();
    for dir in ["iris-v1", "iris-v2", "iris-columns", "mlp"] {
        reg.register(dir, dir, &[]);
    }
    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris-v1/1,models:/iris-v2/1,models:/iris-columns/1,models:/mlp/1",
        "--max-body-size",
        "64KiB",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    (reg, server)
}

/// The answer regserve should give for a reference case, shaped from onnxruntime's raw outputs:
/// one record per row for table-shaped input, a dictionary of outputs for tensor input.
fn expected(case: &str, model: &str, raw: &Value) -> Value {
    let tensor_input = model == "mlp" || case == "instances_2rows" || case == "inputs_list";
    let raw = raw.as_object().unwrap();
    if tensor_input {
        return json!({ "predictions": raw });
    }
    let rows = raw.values().next().unwrap().as_array().unwrap().len();
    let records: Vec<Value> =
        (0..rows).map(|i| Value::Object(raw.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect())).collect();
    json!({ "predictions": records })
}

#[tokio::test]
async fn every_payload_format_matches_python_onnxruntime() {
    let (_reg, server) = serve_examples().await;
    let client = reqwest::Client::new();
    let mut checked = 0;
    for model in ["iris-v1", "iris-v2", "iris-columns", "mlp"] {
        let dir = repo().join("models/reference").join(model);
        let mut cases: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        cases.sort();
        for path in cases {
            let case = path.file_stem().unwrap().to_str().unwrap().to_string();
            let reference: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let url = server.url(&format!("/models/{model}/invocations"));
            let req = match reference["csv"].as_str() {
                Some(csv) => client.post(&url).header("Content-Type", "text/csv").body(csv.to_string()),
                None => client.post(&url).json(&reference["request"]),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{model}/{case}: {body}");
            let want = expected(&case, model, &reference["raw_outputs"]);
            if let Err(e) = close(&body, &want, 1e-5, &format!("{model}/{case}")) {
                panic!("{e}\n got: {body}\nwant: {want}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 26, "every committed reference case was scored");
}

#[tokio::test]
async fn default_model_answers_invocations_and_health_reports_versions() {
    let (_reg, server) = serve_examples().await;
    let client = reqwest::Client::new();
    let body = json!({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[5.1, 3.5, 1.4, 0.2]]}});
    let r: Value = client.post(server.url("/invocations")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["predictions"][0]["label"], 0);
    let h: Value = server.health_json().await;
    assert_eq!(h["status"], "ready");
    assert_eq!(h["models"].as_array().unwrap().len(), 4);
    assert_eq!(h["models"][0]["version"], 1);
    let v = client.get(server.url("/version")).send().await.unwrap().text().await.unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let r = client.post(server.url("/models/nope/invocations")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// (body, content type, expected status, expected error_code, text the message must contain)
fn bad_inputs() -> Vec<(Vec<u8>, &'static str, u16, &'static str, &'static str)> {
    let cols = r#"["sepal_length", "sepal_width", "petal_length", "petal_width"]"#;
    let split = |data: &str| format!(r#"{{"dataframe_split": {{"columns": {cols}, "data": {data}}}}}"#).into_bytes();
    let json = "application/json";
    vec![
        (b"{\"dataframe_split\": ".to_vec(), json, 400, "BAD_REQUEST", "Malformed JSON"),
        (b"".to_vec(), json, 400, "BAD_REQUEST", "empty"),
        (b"{}".to_vec(), json, 400, "BAD_REQUEST", "exactly one of the input fields"),
        (br#"{"inputs": [[1,2,3,4]], "instances": [[1,2,3,4]]}"#.to_vec(), json, 400, "BAD_REQUEST", "exactly one of the input fields"),
        (b"[[5.1, 3.5, 1.4, 0.2]]".to_vec(), json, 400, "BAD_REQUEST", "exactly one of the input fields"),
        (
            br#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length"], "data": [[5.1, 3.5, 1.4]]}}"#.to_vec(),
            json,
            400,
            "SCHEMA_ENFORCEMENT_FAILED",
            "missing inputs [\"petal_width\"]",
        ),
        (split("[[5.1, 3.5, 1.4]]"), json, 400, "BAD_REQUEST", "row 0 has 3 values but 4 columns"),
        (split(r#"[["abc", 3.5, 1.4, 0.2]]"#), json, 400, "SCHEMA_ENFORCEMENT_FAILED", "column sepal_length at row 0 to type 'float32'"),
        (split("[[5.1, null, 1.4, 0.2]]"), json, 400, "SCHEMA_ENFORCEMENT_FAILED", "sepal_width at row 0 is null"),
        (br#"{"inputs": [[5.1, 3.5, 1.4]]}"#.to_vec(), json, 400, "SCHEMA_ENFORCEMENT_FAILED", "Shape of input 'float_input' (1, 3)"),
        (br#"{"inputs": [[5.1, 3.5, 1.4, 0.2], [1, 2]]}"#.to_vec(), json, 400, "SCHEMA_ENFORCEMENT_FAILED", "ragged"),
        (split("[[5.1, 3.5, 1.4, 0.2]]"), "text/plain", 415, "BAD_REQUEST", "content types"),
        (split("[[5.1, 3.5, 1.4, 0.2]]"), "application/json; charset=latin-1", 415, "BAD_REQUEST", "charset"),
        (b"sepal_length,sepal_width\n5.1,3.5\n".to_vec(), "text/csv", 400, "SCHEMA_ENFORCEMENT_FAILED", "petal_length"),
        (vec![b' '; 70 * 1024], json, 413, "REQUEST_LIMIT_EXCEEDED", "larger than the limit"),
    ]
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_with_the_right_status() {
    let (_reg, server) = serve_examples().await;
    let client = reqwest::Client::new();
    for (body, ct, status, code, text) in bad_inputs() {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let resp = client
            .post(server.url("/models/iris-v1/invocations"))
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{shown} ({ct})");
        let raw = resp.text().await.unwrap();
        let err: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {raw}"));
        assert_eq!(err["error_code"], code, "{shown}: {err}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(text), "{shown}: message {msg:?} should contain {text:?}");
    }
    // Still serving after all of that.
    let ok = client
        .post(server.url("/models/iris-v1/invocations"))
        .json(&json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn not_ready_until_the_model_exists_then_serves_and_follows_the_stage() {
    let reg = Registry::new();
    let server = reg.spawn(&["serve", "-m", "models:/iris/Production", "--poll-interval", "200ms"]);
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.get(server.url("/ping")).send().await.unwrap().status(), 503);
    let health = client.get(server.url("/health")).send().await.unwrap().text().await.unwrap();
    assert!(health.contains("Registered Model with name=iris not found"), "{health}");
    let body = json!({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[6.0, 2.2, 5.0, 1.5]]}});
    let r = client.post(server.url("/invocations")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    reg.register("iris-v2", "iris", &[]);
    server.wait_ready("/ping", Duration::from_secs(10)).await;
    let v1: Value = client.post(server.url("/invocations")).json(&body).send().await.unwrap().json().await.unwrap();

    // Promote v2: the answers change within the poll interval.
    reg.ok(&["models", "transition", "iris", "2", "Production", "--archive-existing"]);
    let start = std::time::Instant::now();
    loop {
        let h: Value = server.health_json().await;
        if h["models"][0]["version"] == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no swap: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v2: Value = client.post(server.url("/invocations")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_ne!(v1, v2, "iris v1 and v2 answer this row differently");
}
