//! End to end: the real `regserve server` on 127.0.0.1:0 with a temporary `--data-dir`, driven
//! over HTTP like the MLflow client drives `mlflow server` — registry shapes and errors, the
//! logged-model upload → finalize → register flow with its test load, the artifact proxy and
//! its refusal of paths leaving the root, concurrent version creation, and one registry shared
//! with the CLI.

mod common;

use std::time::Duration;

use common::{repo, Registry, Server};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";

async fn call(c: &Client, s: &Server, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = c.request(method, s.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, v)
}

async fn post(c: &Client, s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    call(c, s, Method::POST, &format!("{API}/{path}"), Some(body)).await
}

async fn get(c: &Client, s: &Server, path_and_query: &str) -> (StatusCode, Value) {
    call(c, s, Method::GET, &format!("{API}/{path_and_query}"), None).await
}

fn assert_error(got: &(StatusCode, Value), status: u16, code: &str, message: &str) {
    assert_eq!(got.0.as_u16(), status, "{got:?}");
    assert_eq!(got.1["error_code"], code, "{got:?}");
    let m = got.1["message"].as_str().unwrap_or_default();
    assert!(m.contains(message), "message {m:?} does not contain {message:?}");
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

fn start(reg: &Registry) -> Server {
    reg.spawn(&["server"])
}

/// Log `models/<dir>` as a logged model of experiment 0 the way `mlflow.onnx.log_model` does:
/// create, upload every file, finalize. Returns the model id.
async fn log_model(c: &Client, s: &Server, dir: &str, run_id: Option<&str>) -> String {
    let mut body = json!({"experiment_id": "0", "name": "model"});
    if let Some(r) = run_id {
        body["source_run_id"] = json!(r);
    }
    let (st, lm) = post(c, s, "logged-models", body).await;
    assert_eq!(st, 200, "{lm}");
    let id = lm["model"]["info"]["model_id"].as_str().unwrap().to_string();
    assert_eq!(lm["model"]["info"]["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(lm["model"]["info"]["artifact_uri"], format!("mlflow-artifacts:/0/models/{id}/artifacts"));
    upload_dir(c, s, &repo().join("models").join(dir), &format!("0/models/{id}/artifacts")).await;
    let (st, fin) =
        call(c, s, Method::PATCH, &format!("{API}/logged-models/{id}"), Some(json!({"status": "LOGGED_MODEL_READY"})))
            .await;
    assert_eq!(st, 200, "{fin}");
    assert_eq!(fin["model"]["info"]["status"], "LOGGED_MODEL_READY");
    id
}

async fn upload_dir(c: &Client, s: &Server, dir: &std::path::Path, rel: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let r =
            c.put(s.url(&format!("{ARTIFACTS}/{rel}/{name}"))).body(std::fs::read(&p).unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 200, "upload {name}: {}", r.text().await.unwrap());
    }
}

async fn create_version(c: &Client, s: &Server, name: &str, model_id: &str) -> (StatusCode, Value) {
    post(
        c,
        s,
        "model-versions/create",
        json!({"name": name, "source": format!("models:/{model_id}"), "model_id": model_id}),
    )
    .await
}

#[tokio::test]
async fn registry_shapes_and_errors_match_mlflow() {
    let reg = Registry::new();
    let s = start(&reg);
    let c = Client::new();

    let created = post(&c, &s, "registered-models/create", json!({"name": "m"})).await;
    assert_eq!(created.0, 200);
    assert_eq!(keys(&created.1["registered_model"]), ["creation_timestamp", "last_updated_timestamp", "name"]);
    assert_error(
        &post(&c, &s, "registered-models/create", json!({"name": "m"})).await,
        400,
        "RESOURCE_ALREADY_EXISTS",
        "Registered Model (name=m) already exists.",
    );
    assert_error(
        &post(&c, &s, "registered-models/create", json!({})).await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'name'. See the API docs",
    );
    assert_error(
        &post(&c, &s, "registered-models/create", json!({"name": 5})).await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Hint: Value was of type 'int'",
    );
    assert_error(
        &get(&c, &s, "registered-models/get?name=nope").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Registered Model with name=nope not found",
    );
    assert_error(
        &get(&c, &s, "registered-models/get").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'name'",
    );
    assert_error(
        &get(&c, &s, "model-versions/get?name=m&version=abc").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Parameter 'version' must be an integer, got 'abc'.",
    );
    assert_error(
        &get(&c, &s, "model-versions/get?name=m&version=99").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Model Version (name=m, version=99) not found",
    );
    assert_error(
        &get(&c, &s, "model-versions/search?filter=bogus+filter").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Invalid clause(s) in filter string: bogus filter",
    );
    assert_error(
        &get(&c, &s, "registered-models/search?max_results=1001").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "max_results",
    );
    assert_error(
        &get(&c, &s, "model-versions/search?max_results=200001").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "max_results",
    );
    assert_error(
        &get(&c, &s, "registered-models/get-latest-versions?name=m&stages=Foo").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Invalid Model Version stage: Foo. Value must be one of None, Staging, Production, Archived.",
    );
    assert_error(
        &get(&c, &s, "registered-models/alias?name=m&alias=nope").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "Registered model alias nope not found.",
    );
    assert_error(
        &get(&c, &s, "registered-models/get-latest-versions?name=zz").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Registered Model with name=zz not found",
    );

    // Empty results are `{}`; the same API answers under /ajax-api.
    assert_eq!(get(&c, &s, "registered-models/get-latest-versions?name=m").await, (StatusCode::OK, json!({})));
    assert_eq!(get(&c, &s, "model-versions/search?filter=name%3D%27m%27").await, (StatusCode::OK, json!({})));
    let (st, v) = call(&c, &s, Method::GET, "/ajax-api/2.0/mlflow/registered-models/get?name=m", None).await;
    assert_eq!((st.as_u16(), v["registered_model"]["name"].as_str()), (200, Some("m")));
    assert_eq!(call(&c, &s, Method::GET, "/api/2.0/mlflow/registered-models/nope", None).await.0, 404);

    // Tags, description, rename, update: MLflow's methods, `{}` for empty answers.
    assert_eq!(
        post(&c, &s, "registered-models/set-tag", json!({"name": "m", "key": "team", "value": "a"})).await.1,
        json!({})
    );
    let (st, upd) = call(
        &c,
        &s,
        Method::PATCH,
        &format!("{API}/registered-models/update"),
        Some(json!({"name": "m", "description": "d"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(upd["registered_model"]["description"], "d");
    assert_eq!(upd["registered_model"]["tags"], json!([{"key": "team", "value": "a"}]));
    let (st, _) = call(
        &c,
        &s,
        Method::DELETE,
        &format!("{API}/registered-models/delete-tag"),
        Some(json!({"name": "m", "key": "team"})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, got) = get(&c, &s, "registered-models/get?name=m").await;
    assert!(got["registered_model"].get("tags").is_none(), "{got}");
    let (st, ren) = post(&c, &s, "registered-models/rename", json!({"name": "m", "new_name": "m2"})).await;
    assert_eq!((st.as_u16(), ren["registered_model"]["name"].as_str()), (200, Some("m2")));

    // Wrong methods are refused; a DELETE carries a JSON body.
    assert_eq!(call(&c, &s, Method::GET, &format!("{API}/registered-models/delete?name=m2"), None).await.0, 405);
    assert_eq!(
        call(&c, &s, Method::DELETE, &format!("{API}/registered-models/delete"), Some(json!({"name": "m2"}))).await,
        (StatusCode::OK, json!({}))
    );
    assert_error(&get(&c, &s, "registered-models/get?name=m2").await, 404, "RESOURCE_DOES_NOT_EXIST", "m2");

    // Tracking basics the client needs.
    let (_, e) = get(&c, &s, "experiments/get?experiment_id=0").await;
    assert_eq!(
        (e["experiment"]["name"].as_str(), e["experiment"]["artifact_location"].as_str()),
        (Some("Default"), Some("mlflow-artifacts:/0"))
    );
    assert_error(
        &get(&c, &s, "experiments/get-by-name?experiment_name=x").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Could not find experiment with name 'x'",
    );
    assert_eq!(post(&c, &s, "experiments/create", json!({"name": "x"})).await.1, json!({"experiment_id": "1"}));
    let (_, info) = call(&c, &s, Method::GET, "/api/3.0/mlflow/server-info", None).await;
    assert_eq!(info["store_type"], "SqlStore");
}

#[tokio::test]
async fn logged_model_registration_is_test_loaded_and_served_through_the_proxy() {
    let reg = Registry::new();
    let s = start(&reg);
    let c = Client::new();
    let (_, run) = post(&c, &s, "runs/create", json!({"experiment_id": "0", "user_id": "u"})).await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let model_id = log_model(&c, &s, "iris-v1", Some(&run_id)).await;

    // Uploads into a finalized model are refused.
    let r = c
        .put(s.url(&format!("{ARTIFACTS}/0/models/{model_id}/artifacts/model.onnx")))
        .body("junk")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    post(&c, &s, "registered-models/create", json!({"name": "iris"})).await;
    assert_error(
        &post(
            &c,
            &s,
            "model-versions/create",
            json!({"name": "iris", "source": format!("models:/{model_id}"), "run_id": run_id}),
        )
        .await,
        400,
        "INVALID_PARAMETER_VALUE",
        "The model_id request parameter must identify the resource that contains the source.",
    );
    assert_error(
        &post(&c, &s, "model-versions/create", json!({"name": "iris", "source": "/etc"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
        "To use a local path as a model version source",
    );
    let (st, mv) = create_version(&c, &s, "iris", &model_id).await;
    assert_eq!(st, 200, "{mv}");
    let mv = &mv["model_version"];
    assert_eq!(
        keys(mv),
        [
            "creation_timestamp",
            "current_stage",
            "description",
            "last_updated_timestamp",
            "name",
            "run_id",
            "run_link",
            "source",
            "status",
            "version"
        ]
    );
    assert_eq!(
        (mv["version"].as_str(), mv["status"].as_str(), mv["run_id"].as_str()),
        (Some("1"), Some("READY"), Some(run_id.as_str()))
    );

    // runs:/<run>/model resolves to the run's logged model of that name.
    let (st, mv2) = post(
        &c,
        &s,
        "model-versions/create",
        json!({"name": "iris", "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
    )
    .await;
    assert_eq!((st.as_u16(), mv2["model_version"]["status"].as_str()), (200, Some("READY")), "{mv2}");
    assert_eq!(mv2["model_version"]["source"], format!("runs:/{run_id}/model"));

    let expected_uri = format!("mlflow-artifacts:/0/models/{model_id}/artifacts");
    for v in ["1", "2"] {
        let (_, uri) = get(&c, &s, &format!("model-versions/get-download-uri?name=iris&version={v}")).await;
        assert_eq!(uri, json!({"artifact_uri": expected_uri}));
    }
    let (_, listing) =
        call(&c, &s, Method::GET, &format!("{ARTIFACTS}?path=0%2Fmodels%2F{model_id}%2Fartifacts"), None).await;
    let files = listing["files"].as_array().unwrap();
    assert_eq!(files.len(), 7, "{listing}");
    let onnx = files.iter().find(|f| f["path"] == "model.onnx").unwrap();
    assert_eq!(onnx["is_dir"], false);
    assert_eq!(
        onnx["file_size"].as_u64(),
        Some(std::fs::metadata(repo().join("models/iris-v1/model.onnx")).unwrap().len())
    );
    let bytes = c
        .get(s.url(&format!("{ARTIFACTS}/0/models/{model_id}/artifacts/model.onnx")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &std::fs::read(repo().join("models/iris-v1/model.onnx")).unwrap()[..]);
    let (_, dirs) = call(&c, &s, Method::GET, &format!("{ARTIFACTS}?path=0"), None).await;
    assert_eq!(dirs, json!({"files": [{"path": "models", "is_dir": true}]}));
    assert_eq!(call(&c, &s, Method::GET, &format!("{ARTIFACTS}?path=0%2Fnothing"), None).await.1, json!({}));
    assert_eq!(call(&c, &s, Method::GET, &format!("{ARTIFACTS}/0/nothing"), None).await.0, 404);

    // Stages, aliases and the registered model's view of them.
    let (_, t) = post(
        &c,
        &s,
        "model-versions/transition-stage",
        json!({"name": "iris", "version": "1", "stage": "production", "archive_existing_versions": true}),
    )
    .await;
    assert_eq!(t["model_version"]["current_stage"], "Production");
    assert_eq!(
        post(&c, &s, "registered-models/alias", json!({"name": "iris", "alias": "champion", "version": "2"})).await.1,
        json!({})
    );
    let (_, by_alias) = get(&c, &s, "registered-models/alias?name=iris&alias=champion").await;
    assert_eq!(
        (by_alias["model_version"]["version"].as_str(), by_alias["model_version"]["aliases"].clone()),
        (Some("2"), json!(["champion"]))
    );
    let (_, rm) = get(&c, &s, "registered-models/get?name=iris").await;
    assert_eq!(rm["registered_model"]["aliases"], json!([{"alias": "champion", "version": "2"}]));
    let latest = rm["registered_model"]["latest_versions"].as_array().unwrap();
    assert_eq!(latest.len(), 2);
    assert!(latest.iter().all(|v| v.get("aliases").is_none()), "MLflow lists latest versions without aliases");
    let (_, lv) = get(&c, &s, "registered-models/get-latest-versions?name=iris&stages=Production&stages=None").await;
    assert_eq!(lv["model_versions"].as_array().unwrap().len(), 2);
    let (_, lv) =
        post(&c, &s, "registered-models/get-latest-versions", json!({"name": "iris", "stages": ["production"]})).await;
    assert_eq!(lv["model_versions"][0]["version"], "1");

    // Deleting a version keeps the logged model's files (they are the logged model's).
    let (st, _) = call(
        &c,
        &s,
        Method::DELETE,
        &format!("{API}/model-versions/delete"),
        Some(json!({"name": "iris", "version": "2"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        c.get(s.url(&format!("{ARTIFACTS}/0/models/{model_id}/artifacts/MLmodel"))).send().await.unwrap().status(),
        200
    );
}

/// Uploads `files` (name, bytes) as a finalized logged model and registers it.
async fn register_files(c: &Client, s: &Server, name: &str, files: &[(&str, &[u8])]) -> Value {
    let (_, lm) = post(c, s, "logged-models", json!({"experiment_id": "0", "name": "m"})).await;
    let id = lm["model"]["info"]["model_id"].as_str().unwrap().to_string();
    for (f, data) in files {
        let r =
            c.put(s.url(&format!("{ARTIFACTS}/0/models/{id}/artifacts/{f}"))).body(data.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    post(c, s, "registered-models/create", json!({"name": name})).await;
    let (st, mv) = create_version(c, s, name, &id).await;
    assert_eq!(st, 200, "{mv}");
    mv["model_version"].clone()
}

#[tokio::test]
async fn a_version_that_does_not_load_is_failed_registration_and_others_are_not_test_loaded() {
    let reg = Registry::new();
    let s = start(&reg);
    let c = Client::new();
    let mlmodel = std::fs::read(repo().join("models/iris-v1/MLmodel")).unwrap();
    let broken = register_files(&c, &s, "broken", &[("MLmodel", &mlmodel), ("model.onnx", b"not an onnx model")]).await;
    assert_eq!(broken["status"], "FAILED_REGISTRATION", "{broken}");
    assert!(broken["status_message"].as_str().unwrap().contains("failed its test load"), "{broken}");
    // A failed version is never what a stage or `latest` resolves to, but it is listed.
    let (_, rm) = get(&c, &s, "registered-models/get?name=broken").await;
    assert_eq!(rm["registered_model"]["latest_versions"][0]["status"], "FAILED_REGISTRATION");

    let sklearn = b"flavors:\n  sklearn:\n    pickled_model: model.pkl\n";
    let other = register_files(&c, &s, "other", &[("MLmodel", sklearn), ("model.pkl", b"x")]).await;
    assert_eq!(other["status"], "READY");
    assert!(other["status_message"].as_str().unwrap().starts_with("not test-loaded: not an ONNX model"), "{other}");

    let (st, remote) =
        post(&c, &s, "model-versions/create", json!({"name": "other", "source": "s3://bucket/model"})).await;
    assert_eq!(st, 200);
    assert_eq!(remote["model_version"]["status"], "READY");
    assert!(remote["model_version"]["status_message"].as_str().unwrap().contains("not test-loaded"));
    assert_error(
        &post(&c, &s, "model-versions/create", json!({"name": "other", "source": "s3://bucket/../x"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
        "without relative path references",
    );
}

#[tokio::test]
async fn without_onnx_runtime_versions_fail_registration_with_the_fix_named() {
    let reg = Registry::new();
    let mut cmd = reg.cmd();
    cmd.args(["server", "--port", "0"]).env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so").env("RUST_LOG", "info");
    let s = Server::start(cmd);
    let c = Client::new();
    let model_id = log_model(&c, &s, "iris-v1", None).await;
    post(&c, &s, "registered-models/create", json!({"name": "iris"})).await;
    let (st, mv) = create_version(&c, &s, "iris", &model_id).await;
    assert_eq!(st, 200);
    assert_eq!(mv["model_version"]["status"], "FAILED_REGISTRATION", "{mv}");
    let msg = mv["model_version"]["status_message"].as_str().unwrap();
    assert!(msg.contains("ONNX Runtime library not found"), "{msg}");
}

/// Send one raw request (reqwest would normalize `..` away) and return the status code.
async fn raw_status(s: &Server, request_line: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!("{request_line} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn artifact_paths_cannot_leave_the_root() {
    let reg = Registry::new();
    let s = start(&reg);
    let c = Client::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s3cr3t").unwrap();
    let root = reg.data_dir().join("artifacts");
    std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();

    for path in [
        format!("{ARTIFACTS}/../../../etc/passwd"),
        format!("{ARTIFACTS}/0/../../secret"),
        format!("{ARTIFACTS}/%2e%2e/%2e%2e/etc/passwd"),
        format!("{ARTIFACTS}/0/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
        format!("{ARTIFACTS}/%2Fetc%2Fpasswd"),
        format!("{ARTIFACTS}//etc/passwd"),
        format!("{ARTIFACTS}/link/secret"),
    ] {
        assert_eq!(raw_status(&s, &format!("GET {path}")).await, 400, "GET {path}");
        assert_eq!(raw_status(&s, &format!("PUT {path}x")).await, 400, "PUT {path}x");
    }
    for q in ["..", "..%2F..", "%2e%2e", "%2Fetc", "link", "0/../.."] {
        let (st, v) = call(&c, &s, Method::GET, &format!("{ARTIFACTS}?path={q}"), None).await;
        assert_eq!(st, 400, "?path={q}: {v}");
        assert_eq!(v["error_code"], "INVALID_PARAMETER_VALUE");
    }
    // Nothing was written outside, and the link's target is untouched.
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(!std::path::Path::new("/etc/passwdx").exists());
    // Inside the root all is fine, and an upload is visible only whole.
    let r = c.put(s.url(&format!("{ARTIFACTS}/5/a/b.txt"))).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(std::fs::read_to_string(root.join("5/a/b.txt")).unwrap(), "hello");
    assert_eq!(std::fs::read_dir(root.join("5/a")).unwrap().count(), 1, "no temporary file is left");
    // The CLI's registered copies are read-only through the proxy.
    assert_eq!(
        c.put(s.url(&format!("{ARTIFACTS}/registry/x/model.onnx"))).body("x").send().await.unwrap().status(),
        400
    );
}

#[tokio::test]
async fn eight_concurrent_creators_get_distinct_consecutive_versions() {
    let reg = Registry::new();
    let s = start(&reg);
    let c = Client::new();
    let model_id = log_model(&c, &s, "iris-v1", None).await;
    post(&c, &s, "registered-models/create", json!({"name": "busy"})).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), s.url(&format!("{API}/model-versions/create")));
        let body = json!({"name": "busy", "source": format!("models:/{model_id}"), "model_id": model_id});
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(v["model_version"]["status"], "READY", "{v}");
        versions.push(v["model_version"]["version"].as_str().unwrap().parse::<u64>().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let (_, found) = get(&c, &s, "model-versions/search?filter=name%3D%27busy%27").await;
    assert_eq!(found["model_versions"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn cli_and_server_share_one_registry() {
    let reg = Registry::new();
    let s = start(&reg);
    let c = Client::new();
    reg.register("iris-v1", "from-cli", &["--stage", "Staging"]);
    let (st, rm) = get(&c, &s, "registered-models/get?name=from-cli").await;
    assert_eq!(st, 200, "{rm}");
    assert_eq!(rm["registered_model"]["latest_versions"][0]["current_stage"], "Staging");
    let (_, uri) = get(&c, &s, "model-versions/get-download-uri?name=from-cli&version=1").await;
    let uri = uri["artifact_uri"].as_str().unwrap().to_string();
    let rel = uri.strip_prefix("mlflow-artifacts:/").unwrap();
    let (_, listing) = call(&c, &s, Method::GET, &format!("{ARTIFACTS}?path={rel}"), None).await;
    assert!(listing["files"].as_array().unwrap().iter().any(|f| f["path"] == "model.onnx"), "{listing}");

    // And what the server registers, the CLI sees.
    post(&c, &s, "registered-models/create", json!({"name": "from-rest"})).await;
    let out = reg.ok(&["models", "list", "--json"]);
    assert!(out.contains("from-rest") && out.contains("from-cli"), "{out}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
