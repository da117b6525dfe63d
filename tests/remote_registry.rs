//! The remote registry client, artifact downloads and `RemoteSource` against a real HTTP server
//! on 127.0.0.1:0 that answers like `mlflow server` 3.17 (the JSON shapes of
//! shared/reference/mlflow-rest-exchanges.txt; files from a temporary folder). The server is
//! a stand-in for the network peer only: everything on regserve's side is the real code.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use regserve::artifact::cache::ArtifactCache;
use regserve::artifact::fetch::{ArtifactFetcher, DownloadError};
use regserve::artifact::FetchError;
use regserve::manager::{ManagerOptions, ModelManager, ModelSource, RemoteSource, SourceError};
use regserve::mlflow::{Auth, HttpSettings, RestRegistry, RetryPolicy, Secret};
use regserve::registry::{RegistryError, Stage};
use regserve::runtime::{LoadedModel, RuntimeOptions};
use regserve::uri::ModelUri;
use serde_json::{json, Value};

// ------------------------------------------------------------------------ the fake peer

/// What the fake MLflow server holds and saw.
#[derive(Default)]
struct Fake {
    /// Path prefix the server is mounted under ("" or "/mlflow").
    prefix: String,
    /// Model version objects, in MLflow's JSON shape.
    versions: Mutex<Vec<Value>>,
    aliases: Mutex<HashMap<(String, String), u64>>,
    download_uris: Mutex<HashMap<(String, u64), String>>,
    runs: HashMap<String, String>,
    logged_models: HashMap<String, String>,
    /// Served at /api/2.0/mlflow-artifacts/artifacts and /files.
    artifacts: PathBuf,
    /// Answer this many requests with 503 first.
    fail_next: AtomicUsize,
    /// Answer this many requests whose URL contains the string with 503.
    fail_matching: Mutex<Option<(String, usize)>>,
    /// Answer get-latest-versions with Flask's HTML 404 (a server without the endpoint).
    no_latest_endpoint: bool,
    /// "GET /path?query" of every request.
    log: Mutex<Vec<String>>,
    /// The Authorization header of every request.
    auth: Mutex<Vec<Option<String>>>,
}

impl Fake {
    fn new(artifacts: &Path) -> Fake {
        Fake { artifacts: artifacts.to_path_buf(), ..Fake::default() }
    }

    fn add_version(&self, name: &str, version: u64, stage: &str, download_uri: &str) {
        self.versions.lock().unwrap().push(json!({
            "name": name, "version": version.to_string(),
            "creation_timestamp": 1795879839674i64 + version as i64,
            "last_updated_timestamp": 1795879847784i64,
            "current_stage": stage, "description": "",
            "source": format!("models:/m-{version:032}"),
            "run_id": "9a3a90ee79e64529abe5cf2c5a3421b1", "status": "READY", "run_link": ""
        }));
        self.download_uris.lock().unwrap().insert((name.into(), version), download_uri.into());
    }

    fn set_stage(&self, name: &str, version: u64, stage: &str) {
        let version = version.to_string();
        for v in self.versions.lock().unwrap().iter_mut() {
            if v["name"] == name && v["version"] == version.as_str() {
                v["current_stage"] = json!(stage);
            }
        }
    }

    fn requests(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|r| r.contains(needle)).count()
    }

    fn version(&self, name: &str, version: &str) -> Option<Value> {
        self.versions.lock().unwrap().iter().find(|v| v["name"] == name && v["version"] == version).cloned()
    }

    fn of_model(&self, name: &str) -> Vec<Value> {
        self.versions.lock().unwrap().iter().filter(|v| v["name"] == name).cloned().collect()
    }
}

fn mlflow_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error_code": code, "message": message, "sqlstate": "KAM00", "error_class": code});
    (status, axum::Json(body)).into_response()
}

fn ok(body: Value) -> Response {
    axum::Json(body).into_response()
}

fn flask_404() -> Response {
    let html = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n";
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn model_missing(name: &str) -> Response {
    mlflow_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("Registered Model with name={name} not found"),
    )
}

/// Files of a folder as the artifact proxy lists them: names relative to the folder.
fn list_dir(dir: &Path) -> Value {
    let Ok(entries) = std::fs::read_dir(dir) else { return json!({}) };
    let mut files: Vec<Value> = entries
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            let mut f = json!({"path": e.file_name().to_string_lossy(), "is_dir": meta.is_dir()});
            if meta.is_file() {
                f["file_size"] = json!(meta.len());
            }
            f
        })
        .collect();
    files.sort_by_key(|f| f["path"].as_str().unwrap_or_default().to_string());
    if files.is_empty() {
        json!({})
    } else {
        json!({ "files": files })
    }
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let method = req.method().clone();
    let full = req.uri().to_string();
    fake.log.lock().unwrap().push(format!("{method} {full}"));
    fake.auth.lock().unwrap().push(header_value(req.headers(), header::AUTHORIZATION));
    if fake.fail_next.load(Ordering::SeqCst) > 0 {
        fake.fail_next.fetch_sub(1, Ordering::SeqCst);
        return mlflow_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE", "try later");
    }
    if let Some((needle, n)) = fake.fail_matching.lock().unwrap().as_mut() {
        if *n > 0 && full.contains(needle.as_str()) {
            *n -= 1;
            return (StatusCode::BAD_GATEWAY, "upstream hiccup").into_response();
        }
    }
    let url = reqwest::Url::parse(&format!("http://fake{full}")).unwrap();
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let q = |k: &str| query.get(k).cloned().unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy().into_owned();
    let Some(path) = decoded.strip_prefix(fake.prefix.as_str()) else { return flask_404() };
    let body: Value = if method == Method::POST {
        let bytes = to_bytes(req.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    } else {
        Value::Null
    };

    if let Some(rel) = path.strip_prefix("/api/2.0/mlflow-artifacts/artifacts/") {
        return match std::fs::read(fake.artifacts.join(rel)) {
            Ok(bytes) => (StatusCode::OK, Body::from(bytes)).into_response(),
            Err(_) => mlflow_error(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "no such file"),
        };
    }
    if let Some(rel) = path.strip_prefix("/files/") {
        return match std::fs::read(fake.artifacts.join(rel)) {
            Ok(bytes) => (StatusCode::OK, Body::from(bytes)).into_response(),
            Err(_) => flask_404(),
        };
    }
    match (method.as_str(), path) {
        ("GET", "/api/2.0/mlflow-artifacts/artifacts") => ok(list_dir(&fake.artifacts.join(q("path")))),
        ("GET", "/api/2.0/mlflow/registered-models/get") => {
            let name = q("name");
            if fake.of_model(&name).is_empty() {
                return model_missing(&name);
            }
            ok(json!({"registered_model": {"name": name, "creation_timestamp": 1, "last_updated_timestamp": 2}}))
        }
        ("POST", "/api/2.0/mlflow/registered-models/get-latest-versions") => {
            if fake.no_latest_endpoint {
                return flask_404();
            }
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let versions = fake.of_model(&name);
            if versions.is_empty() {
                return model_missing(&name);
            }
            let stages: Vec<String> = body["stages"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str()).map(|s| s.to_ascii_lowercase()).collect())
                .unwrap_or_default();
            let mut latest: HashMap<String, Value> = HashMap::new();
            for v in versions {
                let stage = v["current_stage"].as_str().unwrap().to_string();
                if !stages.is_empty() && !stages.contains(&stage.to_ascii_lowercase()) {
                    continue;
                }
                let n = |v: &Value| v["version"].as_str().unwrap().parse::<u64>().unwrap();
                if latest.get(&stage).is_none_or(|old| n(old) < n(&v)) {
                    latest.insert(stage, v);
                }
            }
            if latest.is_empty() {
                ok(json!({}))
            } else {
                ok(json!({"model_versions": latest.into_values().collect::<Vec<_>>()}))
            }
        }
        ("GET", "/api/2.0/mlflow/registered-models/alias") => {
            let (name, alias) = (q("name"), q("alias"));
            let found = fake.aliases.lock().unwrap().get(&(name.clone(), alias.clone())).copied();
            match found.and_then(|v| fake.version(&name, &v.to_string())) {
                Some(mut v) => {
                    v["aliases"] = json!([alias]);
                    ok(json!({ "model_version": v }))
                }
                None => mlflow_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER_VALUE",
                    &format!("Registered model alias {alias} not found."),
                ),
            }
        }
        ("GET", "/api/2.0/mlflow/model-versions/get") => match fake.version(&q("name"), &q("version")) {
            Some(v) => ok(json!({ "model_version": v })),
            None => mlflow_error(
                StatusCode::NOT_FOUND,
                "RESOURCE_DOES_NOT_EXIST",
                &format!("Model Version (name={}, version={}) not found", q("name"), q("version")),
            ),
        },
        ("GET", "/api/2.0/mlflow/model-versions/search") => {
            let filter = q("filter");
            let name = filter.trim_start_matches("name=").trim_matches('\'');
            let versions = fake.of_model(name);
            if versions.is_empty() {
                ok(json!({}))
            } else {
                ok(json!({ "model_versions": versions }))
            }
        }
        ("GET", "/api/2.0/mlflow/model-versions/get-download-uri") => {
            let key = (q("name"), q("version").parse::<u64>().unwrap_or(0));
            match fake.download_uris.lock().unwrap().get(&key) {
                Some(uri) => ok(json!({ "artifact_uri": uri })),
                None => mlflow_error(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "no such version"),
            }
        }
        ("GET", "/api/2.0/mlflow/runs/get") => match fake.runs.get(&q("run_id")) {
            Some(root) => ok(json!({"run": {"info": {"run_id": q("run_id"), "artifact_uri": root}, "data": {}}})),
            None => mlflow_error(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "Run not found"),
        },
        ("GET", p) if p.starts_with("/api/2.0/mlflow/logged-models/") => {
            let id = p.trim_start_matches("/api/2.0/mlflow/logged-models/");
            match fake.logged_models.get(id) {
                Some(root) => ok(json!({"model": {"info": {"model_id": id, "artifact_uri": root}}})),
                None => mlflow_error(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "Logged model not found"),
            }
        }
        _ => flask_404(),
    }
}

fn header_value(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Serve `fake` on 127.0.0.1:0; returns its base URL (with the prefix).
async fn start(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prefix = fake.prefix.clone();
    let app = axum::Router::new().fallback(handle).with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}{prefix}")
}

// ------------------------------------------------------------------------ helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fast retries, so failure tests take milliseconds.
fn quick() -> HttpSettings {
    HttpSettings {
        timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            jitter: Duration::ZERO,
        },
        ..HttpSettings::default()
    }
}

fn uri(s: &str) -> ModelUri {
    s.parse().unwrap()
}

/// Copy an example model (`models/<name>`) into the fake's artifact store at `rel`.
fn put_model(artifacts: &Path, example: &str, rel: &str) {
    let dest = artifacts.join(rel);
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(repo().join("models").join(example)).unwrap().flatten() {
        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
}

fn load(path: &Path) -> LoadedModel {
    let options = RuntimeOptions { sessions: 1, ..RuntimeOptions::default() };
    LoadedModel::load(path, &options, None).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// A registry with model `iris`: v1 Production, v2 Staging, v3 Archived, v4 None; alias
/// champion → 1. Each version's files are an example model behind the artifact proxy.
fn iris_fake(artifacts: &Path) -> Fake {
    let fake = Fake::new(artifacts);
    for (v, stage, example) in
        [(1, "Production", "iris-v1"), (2, "Staging", "iris-v2"), (3, "Archived", "iris-v1"), (4, "None", "iris-v2")]
    {
        let rel = format!("1/models/m-{v:032}/artifacts");
        put_model(artifacts, example, &rel);
        fake.add_version("iris", v, stage, &format!("mlflow-artifacts:/{rel}"));
    }
    fake.aliases.lock().unwrap().insert(("iris".into(), "champion".into()), 1);
    fake
}

// ------------------------------------------------------------------------ tests

#[tokio::test]
async fn resolves_versions_stages_aliases_and_latest_like_mlflow() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Arc::new(iris_fake(tmp.path()));
    let base = start(fake.clone()).await;
    let registry = RestRegistry::new(&base, quick()).unwrap();

    let version = |s: &'static str| {
        let registry = registry.clone();
        async move { registry.resolve(&uri(s)).await.map(|v| v.version) }
    };
    assert_eq!(version("models:/iris/3").await.unwrap(), 3);
    assert_eq!(version("models:/iris/Production").await.unwrap(), 1);
    assert_eq!(version("models:/iris/staging").await.unwrap(), 2);
    assert_eq!(version("models:/iris@champion").await.unwrap(), 1);
    // `latest` is the highest version of any stage, Archived and None included.
    assert_eq!(version("models:/iris/latest").await.unwrap(), 4);

    let v = registry.resolve(&uri("models:/iris/Production")).await.unwrap();
    assert_eq!((v.name.as_str(), v.current_stage), ("iris", Stage::Production));
    assert_eq!(v.creation_timestamp, 1795879839675);
    assert!(fake.requests("POST /api/2.0/mlflow/registered-models/get-latest-versions") >= 1);

    // Errors keep MLflow's classification and messages.
    match version("models:/iris/99").await {
        Err(RegistryError::NotFound(m)) => assert_eq!(m, "Model Version (name=iris, version=99) not found"),
        other => panic!("{other:?}"),
    }
    match version("models:/nope/Production").await {
        Err(RegistryError::NotFound(m)) => assert_eq!(m, "Registered Model with name=nope not found"),
        other => panic!("{other:?}"),
    }
    match version("models:/iris@nope").await {
        Err(RegistryError::InvalidParameter(m)) => assert_eq!(m, "Registered model alias nope not found."),
        other => panic!("{other:?}"),
    }
    fake.set_stage("iris", 2, "Production");
    assert_eq!(version("models:/iris/Production").await.unwrap(), 2, "highest version in the stage");
    match version("models:/iris/Staging").await {
        Err(RegistryError::NotFound(m)) => {
            assert_eq!(m, "No versions of model with name 'iris' and stage 'Staging' found")
        }
        other => panic!("{other:?}"),
    }

    // The other read methods.
    assert_eq!(registry.get_registered_model("iris").await.unwrap().name, "iris");
    assert_eq!(registry.get_model_version("iris", 2).await.unwrap().current_stage, Stage::Production);
    let all = registry.search_model_versions("name='iris'").await.unwrap();
    assert_eq!(all.len(), 4);
    let latest = registry.get_latest_versions("iris", &[Stage::Archived]).await.unwrap();
    assert_eq!(latest.iter().map(|v| v.version).collect::<Vec<_>>(), [3]);
    assert_eq!(
        registry.get_model_version_download_uri("iris", 1).await.unwrap(),
        format!("mlflow-artifacts:/1/models/m-{:032}/artifacts", 1)
    );
}

#[tokio::test]
async fn latest_and_stages_fall_back_to_search_without_get_latest_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake { no_latest_endpoint: true, ..iris_fake(tmp.path()) });
    let base = start(fake.clone()).await;
    let registry = RestRegistry::new(&base, quick()).unwrap();
    assert_eq!(registry.resolve(&uri("models:/iris/latest")).await.unwrap().version, 4);
    assert_eq!(registry.resolve(&uri("models:/iris/Staging")).await.unwrap().version, 2);
    assert!(fake.requests("GET /api/2.0/mlflow/model-versions/search?filter=name%3D%27iris%27") >= 2);
    match registry.resolve(&uri("models:/nope/latest")).await {
        Err(RegistryError::NotFound(m)) => assert_eq!(m, "Registered Model with name=nope not found"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn downloads_an_mlflow_model_through_the_artifact_proxy_and_loads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("server");
    let mut fake = iris_fake(&artifacts);
    fake.prefix = "/mlflow".into();
    // A nested folder, as some flavors write.
    let nested = artifacts.join(format!("1/models/m-{:032}/artifacts/extra/deeper", 1));
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("notes.txt"), "kept").unwrap();
    let fake = Arc::new(fake);
    let base = start(fake.clone()).await;
    assert!(base.ends_with("/mlflow"));
    let settings = HttpSettings { auth: Auth::Bearer(Secret::new("tok-123")), ..quick() };
    let cache_dir = tmp.path().join("data/cache");
    let source = RemoteSource::new(RestRegistry::new(&base, settings.clone()).unwrap(), &cache_dir);

    let version = source.resolve(&uri("models:/iris/Production")).await.unwrap();
    let path = source.fetch(&version).await.unwrap();

    // <cache>/<registry>/<model>/<version>/files, complete.
    let rel = path.strip_prefix(&cache_dir).unwrap().to_path_buf();
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    assert!(parts[0].starts_with("127.0.0.1_"), "{parts:?}");
    assert_eq!(parts[1..], ["iris", "1", "files"]);
    assert_eq!(std::fs::read_to_string(path.join("extra/deeper/notes.txt")).unwrap(), "kept");
    for f in ["MLmodel", "model.onnx", "serving_input_example.json"] {
        assert_eq!(
            std::fs::read(path.join(f)).unwrap(),
            std::fs::read(repo().join("models/iris-v1").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(path.parent().unwrap().join("entry.json").is_file());
    let model = tokio::task::spawn_blocking(move || load(&path)).await.unwrap();
    assert!(model.files.is_mlflow_model);

    // Through the proxy, with the credentials, as MLflow's client asks.
    assert!(fake.requests("GET /mlflow/api/2.0/mlflow-artifacts/artifacts?path=1%2Fmodels%2Fm-") >= 2);
    assert!(fake.requests("GET /mlflow/api/2.0/mlflow-artifacts/artifacts/1/models/m-") >= 7);
    assert!(fake.auth.lock().unwrap().iter().all(|a| a.as_deref() == Some("Bearer tok-123")));

    // A restarted daemon (a new source on the same cache) downloads nothing.
    let downloads = fake.requests("mlflow-artifacts/artifacts");
    let again = RemoteSource::new(RestRegistry::new(&base, settings).unwrap(), &cache_dir);
    let path_again = again.fetch(&version).await.unwrap();
    assert_eq!(path_again, cache_dir.join(rel));
    assert_eq!(fake.requests("mlflow-artifacts/artifacts"), downloads);

    // Another version gets its own folder.
    let v2 = source.resolve(&uri("models:/iris/Staging")).await.unwrap();
    let p2 = source.fetch(&v2).await.unwrap();
    assert!(p2.ends_with("iris/2/files"), "{}", p2.display());
    tokio::task::spawn_blocking(move || load(&p2)).await.unwrap();
}

#[tokio::test]
async fn follows_runs_and_logged_model_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("server");
    put_model(&artifacts, "iris-v1", "1/abc123/artifacts/model");
    put_model(&artifacts, "mlp", "1/models/m-feed/artifacts");
    let mut fake = Fake::new(&artifacts);
    fake.runs.insert("abc123".into(), "mlflow-artifacts:/1/abc123/artifacts".into());
    fake.logged_models.insert("m-feed".into(), "mlflow-artifacts:/1/models/m-feed/artifacts".into());
    fake.add_version("byrun", 1, "None", "runs:/abc123/model");
    fake.add_version("bylogged", 1, "None", "models:/m-feed");
    // A version whose download URI names another registered version.
    fake.add_version("alias-of", 1, "None", "models:/byrun/1");
    let fake = Arc::new(fake);
    let base = start(fake.clone()).await;
    let source = RemoteSource::new(RestRegistry::new(&base, quick()).unwrap(), tmp.path().join("cache"));

    for (name, expect_file) in [("byrun", "iris-v1"), ("bylogged", "mlp"), ("alias-of", "iris-v1")] {
        let v = source.resolve(&uri(&format!("models:/{name}/1"))).await.unwrap();
        let path = source.fetch(&v).await.unwrap();
        assert!(path.starts_with(tmp.path().join("cache")), "{}", path.display());
        assert_eq!(
            std::fs::read(path.join("model.onnx")).unwrap(),
            std::fs::read(repo().join("models").join(expect_file).join("model.onnx")).unwrap(),
            "{name}"
        );
    }
    assert_eq!(fake.requests("GET /api/2.0/mlflow/runs/get?run_id=abc123"), 2);
    assert_eq!(fake.requests("GET /api/2.0/mlflow/logged-models/m-feed"), 1);
    let path = source.fetch(&source.resolve(&uri("models:/bylogged/1")).await.unwrap()).await.unwrap();
    tokio::task::spawn_blocking(move || load(&path)).await.unwrap();
}

#[tokio::test]
async fn local_sources_are_used_in_place_and_single_onnx_files_fetched_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    put_model(&files, "iris-v2", "plain");
    // Another server holds the plain file: it must not see the registry's token.
    let file_server = Arc::new(Fake::new(&files));
    let file_base = start(file_server.clone()).await;

    let fake = Fake::new(tmp.path());
    let local = repo().join("models/iris-v1");
    fake.add_version("local", 1, "None", local.to_str().unwrap());
    fake.add_version("fileuri", 1, "None", &format!("file://{}", local.display()));
    fake.add_version("http", 1, "None", &format!("{file_base}/files/plain/model.onnx"));
    fake.add_version("httpdir", 1, "None", &format!("{file_base}/files/plain"));
    fake.add_version("gone", 1, "None", "/nonexistent/model");
    let fake = Arc::new(fake);
    let base = start(fake.clone()).await;
    let settings = HttpSettings { auth: Auth::Bearer(Secret::new("tok")), ..quick() };
    let cache = tmp.path().join("cache");
    let source = RemoteSource::new(RestRegistry::new(&base, settings).unwrap(), &cache);
    let fetch = |name: &'static str| {
        let source = &source;
        async move { source.fetch(&source.resolve(&uri(&format!("models:/{name}/1"))).await.unwrap()).await }
    };

    assert_eq!(fetch("local").await.unwrap(), local);
    assert_eq!(fetch("fileuri").await.unwrap(), local);
    let single = fetch("http").await.unwrap();
    assert!(single.starts_with(&cache) && single.ends_with("http/1/files/model.onnx"), "{}", single.display());
    assert_eq!(std::fs::read(&single).unwrap(), std::fs::read(repo().join("models/iris-v2/model.onnx")).unwrap());
    assert!(file_server.auth.lock().unwrap().iter().all(Option::is_none), "credentials leaked to another host");
    tokio::task::spawn_blocking(move || load(&single)).await.unwrap();

    match fetch("httpdir").await {
        Err(SourceError::Fetch(FetchError::NotFound(m))) => assert!(m.contains(".onnx"), "{m}"),
        other => panic!("{other:?}"),
    }
    match fetch("gone").await {
        Err(SourceError::Fetch(FetchError::NotFound(m))) => assert!(m.contains("--serve-artifacts"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_answering_503_twice_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Arc::new(iris_fake(tmp.path()));
    let base = start(fake.clone()).await;
    let source = RemoteSource::new(RestRegistry::new(&base, quick()).unwrap(), tmp.path().join("cache"));

    fake.fail_next.store(2, Ordering::SeqCst);
    let v = source.resolve(&uri("models:/iris/2")).await.unwrap();
    assert_eq!(v.version, 2);
    assert_eq!(fake.requests("GET /api/2.0/mlflow/model-versions/get?name=iris&version=2"), 3);

    // Downloads retry too: a file that fails twice in the middle of the list.
    *fake.fail_matching.lock().unwrap() = Some(("artifacts/model.onnx".into(), 2));
    let path = source.fetch(&v).await.unwrap();
    assert_eq!(fake.requests("artifacts/model.onnx"), 3);
    assert_eq!(
        std::fs::read(path.join("model.onnx")).unwrap(),
        std::fs::read(repo().join("models/iris-v2/model.onnx")).unwrap()
    );

    // More failures than retries: the registry is unavailable (503 for our own callers).
    fake.fail_next.store(10, Ordering::SeqCst);
    match source.resolve(&uri("models:/iris/1")).await {
        Err(SourceError::Registry(e @ RegistryError::Unavailable(_))) => {
            let msg = e.to_string();
            assert!(msg.contains("503") && msg.contains("gave up after 4 attempts"), "{msg}");
            let api = regserve::server::ApiError::from(e);
            assert_eq!(api.classify().0, StatusCode::SERVICE_UNAVAILABLE);
        }
        other => panic!("{other:?}"),
    }
    fake.fail_next.store(0, Ordering::SeqCst);
}

#[tokio::test]
async fn connection_refused_ends_in_unavailable() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let registry = RestRegistry::new(&format!("http://127.0.0.1:{port}"), quick()).unwrap();
    let started = std::time::Instant::now();
    match registry.resolve(&uri("models:/iris/Production")).await {
        Err(RegistryError::Unavailable(m)) => {
            assert!(m.contains("127.0.0.1") && m.contains("gave up after 4 attempts"), "{m}");
            assert!(m.to_lowercase().contains("connect"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = RegistryError::Unavailable("x".into());
    assert_eq!(e.error_code(), "TEMPORARILY_UNAVAILABLE");
}

#[tokio::test]
async fn a_corrupt_partial_cache_folder_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Arc::new(iris_fake(&tmp.path().join("server")));
    let base = start(fake.clone()).await;
    let registry = RestRegistry::new(&base, quick()).unwrap();
    let cache_root = tmp.path().join("cache");
    let fetcher = ArtifactFetcher::new(registry.clone(), ArtifactCache::new(&cache_root));
    let dir = fetcher.cache_dir("iris", 1);
    let parent = dir.parent().unwrap().to_path_buf();

    // What a crash leaves: a half-written partial folder (dead pid) and a final folder without
    // its entry.json holding a truncated model.
    let crashed = parent.join(".partial-1-4294967294-0123456789abcdef");
    std::fs::create_dir_all(crashed.join("files")).unwrap();
    std::fs::write(crashed.join("files/model.onnx"), b"\x08\x07half").unwrap();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/model.onnx"), b"\x08\x07trunc").unwrap();

    let uri1 = registry.get_model_version_download_uri("iris", 1).await.unwrap();
    let path = fetcher.fetch("iris", 1, &uri1).await.unwrap();
    assert_eq!(path, dir.join("files"));
    assert!(!crashed.exists(), "the crashed download is cleaned up");
    assert_eq!(
        std::fs::read(path.join("model.onnx")).unwrap(),
        std::fs::read(repo().join("models/iris-v1/model.onnx")).unwrap()
    );
    let leftovers: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    tokio::task::spawn_blocking(move || load(&path)).await.unwrap();

    // A file damaged after completion is noticed and downloaded again.
    std::fs::write(dir.join("files/model.onnx"), b"x").unwrap();
    let before = fake.requests("model.onnx");
    let path = fetcher.fetch("iris", 1, &uri1).await.unwrap();
    assert_eq!(fake.requests("model.onnx"), before + 1);
    tokio::task::spawn_blocking(move || load(&path)).await.unwrap();

    // A failed download leaves nothing behind and keeps no half folder under the final name.
    let dir3 = fetcher.cache_dir("iris", 3);
    *fake.fail_matching.lock().unwrap() = Some((format!("m-{:032}/artifacts/model.onnx", 3), 100));
    let uri3 = registry.get_model_version_download_uri("iris", 3).await.unwrap();
    match fetcher.fetch("iris", 3, &uri3).await {
        Err(DownloadError::Registry(RegistryError::Unavailable(m))) => assert!(m.contains("502"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!dir3.exists());
    assert!(std::fs::read_dir(&parent).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with('.')));
}

#[tokio::test]
async fn unsupported_schemes_and_escaping_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tmp.path().join("server");
    std::fs::create_dir_all(server.join("evil")).unwrap();
    let fake = Fake::new(&server);
    fake.add_version("hdfs", 1, "None", "hdfs://namenode/models/iris");
    fake.add_version("bucket-dots", 1, "None", "s3://bucket/models/../../etc");
    fake.add_version("dbfs", 1, "None", "dbfs:/databricks/mlflow/iris");
    fake.add_version("dots", 1, "None", "mlflow-artifacts:/1/../../etc");
    let fake = Arc::new(fake);
    let base = start(fake).await;
    let registry = RestRegistry::new(&base, quick()).unwrap();
    let fetcher = ArtifactFetcher::new(registry.clone(), ArtifactCache::new(tmp.path().join("cache")));
    for (name, scheme) in [("hdfs", "hdfs"), ("dbfs", "dbfs")] {
        let u = registry.get_model_version_download_uri(name, 1).await.unwrap();
        match fetcher.fetch(name, 1, &u).await {
            Err(DownloadError::Fetch(FetchError::UnsupportedScheme { scheme: s, .. })) => assert_eq!(s, scheme),
            other => panic!("{other:?}"),
        }
    }
    // Bucket URIs are read (tests/python/test_object_store.py), but never with a path out of the prefix.
    for name in ["dots", "bucket-dots"] {
        let u = registry.get_model_version_download_uri(name, 1).await.unwrap();
        assert!(matches!(fetcher.fetch(name, 1, &u).await, Err(DownloadError::Fetch(FetchError::PathEscapes(_)))));
    }
}

/// A server whose listing names a path leading out of the download folder.
#[tokio::test]
async fn a_listing_that_escapes_the_download_folder_is_refused() {
    async fn evil(req: Request) -> Response {
        let path = req.uri().path().to_string();
        if path == "/api/2.0/mlflow-artifacts/artifacts" {
            return ok(json!({"files": [
                {"path": "MLmodel", "is_dir": false, "file_size": 3},
                {"path": "../../../escaped.txt", "is_dir": false, "file_size": 3}
            ]}));
        }
        if path.starts_with("/api/2.0/mlflow-artifacts/artifacts/") {
            return "abc".into_response();
        }
        flask_404()
    }
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(evil)).await });
    let registry = RestRegistry::new(&format!("http://{addr}"), quick()).unwrap();
    let cache = tmp.path().join("a/b/c/cache");
    let fetcher = ArtifactFetcher::new(registry, ArtifactCache::new(&cache));
    match fetcher.fetch("m", 1, "mlflow-artifacts:/1/m").await {
        Err(DownloadError::Fetch(FetchError::PathEscapes(p))) => assert_eq!(p, "../../../escaped.txt"),
        other => panic!("{other:?}"),
    }
    let mut written = Vec::new();
    let mut stack = vec![tmp.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                written.push(e.path());
            }
        }
    }
    assert!(written.is_empty(), "{written:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_a_stage_on_a_remote_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Arc::new(iris_fake(&tmp.path().join("server")));
    let base = start(fake.clone()).await;
    let source: Arc<dyn ModelSource> =
        Arc::new(RemoteSource::new(RestRegistry::new(&base, quick()).unwrap(), tmp.path().join("cache")));
    assert_eq!(source.describe(), base);
    let options = ManagerOptions {
        runtime: RuntimeOptions { sessions: 1, ..RuntimeOptions::default() },
        poll_interval: Duration::from_millis(100),
        ..ManagerOptions::default()
    };
    let manager = ModelManager::start(vec![uri("models:/iris/Production").into()], 0, source, options);
    let version_in_service = || manager.default_slot().and_then(|s| s.active()).map(|a| a.version.version);
    let wait_for = |want: u64| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while version_in_service() != Some(want) {
            assert!(std::time::Instant::now() < deadline, "version {want} never came into service");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(1).await;
    // Promote version 2 on the remote registry: the watcher fetches and swaps it in.
    fake.set_stage("iris", 1, "Archived");
    fake.set_stage("iris", 2, "Production");
    wait_for(2).await;
    // The registry going away keeps the current version serving.
    fake.fail_next.store(usize::MAX / 2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(version_in_service(), Some(2));
    let status = manager.default_slot().unwrap().status();
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("503")), "{status:?}");
    fake.fail_next.store(0, Ordering::SeqCst);
}

/// End to end with both binaries: `regserve server` holds the registry; `regserve serve
/// --registry-uri http://…` (another data dir) follows a stage on it over REST, downloads the
/// files through its artifact proxy into its cache, serves them, and swaps on promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_a_stage_on_regserve_server_end_to_end() {
    let upstream = common::Registry::new();
    upstream.register("iris-v1", "iris", &["--stage", "Production"]);
    let server = upstream.spawn(&["server"]);
    server.wait_ready("/api/2.0/mlflow/registered-models/get?name=iris", Duration::from_secs(30)).await;

    let downstream = common::Registry::new();
    let serving = downstream.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--registry-uri",
        &server.base,
        "--poll-interval",
        "200ms",
        "--sessions",
        "1",
    ]);
    serving.wait_ready("/ping", Duration::from_secs(60)).await;
    let client = reqwest::Client::new();
    let health = |client: reqwest::Client, url: String| async move {
        let resp = client.get(url).header("accept", "application/json").send().await.unwrap();
        resp.json::<Value>().await.unwrap()
    };
    let h = health(client.clone(), serving.url("/health")).await;
    assert_eq!(h["registry"], server.base.as_str(), "{h}");
    assert_eq!(h["models"][0]["version"], 1, "{h}");

    let example = std::fs::read(repo().join("models/iris-v1/serving_input_example.json")).unwrap();
    let resp = client
        .post(serving.url("/invocations"))
        .header("content-type", "application/json")
        .body(example.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", serving.log());
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("predictions").is_some(), "{body}");
    // The files came into the serving side's own cache.
    let cached: Vec<PathBuf> = walk(&downstream.data_dir().join("cache"));
    assert!(cached.iter().any(|p| p.ends_with("iris/1/files/model.onnx")), "{cached:?}");

    // Promote a new version on the registry server: the serving side follows.
    upstream.register("iris-v2", "iris", &["--stage", "Production", "--archive-existing"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let h = health(client.clone(), serving.url("/health")).await;
        if h["models"][0]["version"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "version 2 never served: {h}\n{}", serving.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = client
        .post(serving.url("/invocations"))
        .header("content-type", "application/json")
        .body(example)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
