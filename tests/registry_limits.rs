//! End to end, issue 10's registry findings attacked on the real binary (`regserve server` on
//! 127.0.0.1:0, the CLI, `predict` against the server): description sizes at every write path
//! and pages that render the worst Markdown fast; version sources naming another host refused,
//! and a registry token that never reaches another host even when a stored URI names one;
//! `MLmodel` nesting refused at all three registration paths and on the version page; finalized
//! logged models read-only under nested experiment locations; `file:` sources in any case; model
//! names that are path segments or padded with whitespace.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{repo, Registry, Server};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";
const LIMIT: usize = 5000;

async fn call(s: &Server, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Client::new().request(method, s.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
}

async fn api(s: &Server, method: Method, endpoint: &str, body: Value) -> (StatusCode, Value) {
    let body = if method == Method::GET { None } else { Some(body) };
    call(s, method, &format!("{API}/{endpoint}"), body).await
}

fn assert_refused(got: &(StatusCode, Value), message: &str) {
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{got:?}");
    assert_eq!(got.1["error_code"], "INVALID_PARAMETER_VALUE", "{got:?}");
    let m = got.1["message"].as_str().unwrap_or_default();
    assert!(m.contains(message), "message {m:?} does not contain {message:?}");
}

/// A version whose files are elsewhere (accepted, not test-loaded).
async fn remote_version(s: &Server, name: &str) -> u64 {
    let (st, v) =
        api(s, Method::POST, "model-versions/create", json!({"name": name, "source": "s3://bucket/models/iris"})).await;
    assert_eq!(st, 200, "{v}");
    v["model_version"]["version"].as_str().unwrap().parse().unwrap()
}

/// Post a form from a page of this server, then follow the redirect with its flash cookie:
/// the page the browser would show.
async fn ui_submit(s: &Server, path: &str, form: &[(&str, &str)]) -> String {
    let client = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = client.post(s.url(path)).header("Origin", &s.base).form(form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "POST {path}");
    let to = resp.headers().get("location").unwrap().to_str().unwrap().to_string();
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    client.get(s.url(&to)).header("Cookie", cookies.join("; ")).send().await.unwrap().text().await.unwrap()
}

fn cli_fails(reg: &Registry, args: &[&str], want: &str) -> Duration {
    let started = Instant::now();
    let out = reg.run(args);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "regserve {args:?} succeeded");
    assert!(err.contains(want), "regserve {args:?}: {err}");
    took
}

fn db(reg: &Registry) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(reg.data_dir().join("registry.db")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

// ------------------------------------------------------------------------ finding 4

#[tokio::test]
async fn descriptions_are_limited_on_every_write_path() {
    let reg = Registry::new();
    let s = reg.spawn(&["server"]);
    let ok = "d".repeat(LIMIT);
    let long = "d".repeat(LIMIT + 1);
    let want = "Description is 5001 characters long; the limit is 5000.";

    // REST: create and update, models and versions. Exactly the limit is fine.
    assert_refused(
        &api(&s, Method::POST, "registered-models/create", json!({"name": "m", "description": long})).await,
        want,
    );
    let (st, _) = api(&s, Method::POST, "registered-models/create", json!({"name": "m", "description": ok})).await;
    assert_eq!(st, 200);
    assert_refused(
        &api(&s, Method::PATCH, "registered-models/update", json!({"name": "m", "description": long})).await,
        want,
    );
    let create = json!({"name": "m", "source": "s3://b/m", "description": long});
    assert_refused(&api(&s, Method::POST, "model-versions/create", create).await, want);
    let v = remote_version(&s, "m").await.to_string();
    let update = json!({"name": "m", "version": v, "description": long});
    assert_refused(&api(&s, Method::PATCH, "model-versions/update", update).await, want);
    let (st, got) =
        api(&s, Method::PATCH, "model-versions/update", json!({"name": "m", "version": v, "description": ok})).await;
    assert_eq!((st, got["model_version"]["description"].as_str().map(str::len)), (StatusCode::OK, Some(LIMIT)));
    // Characters, not bytes: 5,000 two-byte characters are allowed.
    let accents = "é".repeat(LIMIT);
    let (st, _) =
        api(&s, Method::PATCH, "registered-models/update", json!({"name": "m", "description": accents})).await;
    assert_eq!(st, 200);

    // The CLI, on the embedded store and against the server.
    cli_fails(&reg, &["models", "describe", "m", &long], want);
    cli_fails(&reg, &["models", "describe", "m", &long, "--version", &v], want);
    let iris = repo().join("models/iris-v1");
    cli_fails(&reg, &["models", "register", iris.to_str().unwrap(), "--name", "m2", "--description", &long], want);
    let remote = Registry::new();
    cli_fails(&remote, &["--registry-uri", &s.base, "models", "describe", "m", &long], want);

    // The UI's forms show the registry's refusal, and change nothing.
    let page = ui_submit(&s, "/models/m/description", &[("description", &long)]).await;
    assert!(page.contains(want), "{page}");
    let page = ui_submit(&s, &format!("/models/m/versions/{v}/description"), &[("description", &long)]).await;
    assert!(page.contains(want), "{page}");
    let page = ui_submit(&s, "/models", &[("name", "m3"), ("description", &long)]).await;
    assert!(page.contains(want), "{page}");
    let (_, got) = api(&s, Method::GET, "registered-models/get?name=m", json!({})).await;
    assert_eq!(got["registered_model"]["description"].as_str().unwrap().chars().count(), LIMIT);
    assert_eq!(api(&s, Method::GET, "registered-models/get?name=m3", json!({})).await.0, 404);
    assert_eq!(api(&s, Method::GET, "registered-models/get?name=m2", json!({})).await.0, 404);
}

/// The worst Markdown shapes, stored at the largest allowed size (and, written straight into
/// the database as an older registry could hold them, 30,000 nested `>`), render fast; while
/// anonymous clients keep viewing them, the registry API and /health keep answering.
#[tokio::test]
async fn the_worst_descriptions_render_fast_and_never_stall_the_api() {
    let reg = Registry::new();
    let s = reg.spawn(&["server"]);
    let n = LIMIT;
    let shapes: Vec<(&str, String)> = vec![
        ("nested-gt", ">".repeat(n)),
        ("nested-gt-spaced", "> ".repeat(n / 2)),
        ("emphasis", "*a".repeat(n / 2)),
        ("links", "[a](".repeat(n / 4)),
        ("html-nesting", "<div>".repeat(n / 5)),
        ("ref-table", (0..n / 24).map(|i| format!("[{i}]: /u\n")).collect::<String>() + &"[1] ".repeat(n / 8)),
        ("wide-table", "|a".repeat(600) + "\n" + &"|-".repeat(600) + "\n" + &"x\n".repeat(n / 2 - 1300)),
    ];
    for (name, text) in &shapes {
        assert!(text.chars().count() <= LIMIT, "{name}");
        let (st, body) =
            api(&s, Method::POST, "registered-models/create", json!({"name": name, "description": text})).await;
        assert_eq!(st, 200, "{name}: {body}");
        let v = remote_version(&s, name).await;
        let update = json!({"name": name, "version": v.to_string(), "description": text});
        assert_eq!(api(&s, Method::PATCH, "model-versions/update", update).await.0, 200);
    }
    // Older data: far over today's limit, written around the store.
    let (st, _) = api(&s, Method::POST, "registered-models/create", json!({"name": "legacy"})).await;
    assert_eq!(st, 200);
    db(&reg)
        .execute("UPDATE registered_models SET description = ?1 WHERE name = 'legacy'", [">".repeat(30_000)])
        .unwrap();

    let client = Client::new();
    let mut pages: Vec<String> = shapes.iter().map(|(name, _)| format!("/models/{name}")).collect();
    pages.extend(shapes.iter().map(|(name, _)| format!("/models/{name}/versions/1")));
    pages.push("/models/legacy".into());
    let mut slowest = (Duration::ZERO, String::new());
    for page in &pages {
        let started = Instant::now();
        let resp = client.get(s.url(page)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{page}");
        let body = resp.text().await.unwrap();
        let took = started.elapsed();
        assert!(body.contains("class=\"markdown\""), "{page}");
        assert!(body.len() < 1 << 20, "{page}: {} bytes", body.len());
        if took > slowest.0 {
            slowest = (took, page.clone());
        }
    }
    eprintln!("slowest description page: {:?} ({})", slowest.0, slowest.1);
    assert!(slowest.0 < Duration::from_secs(5), "{} took {:?}", slowest.1, slowest.0);

    // Eight anonymous viewers loop over the worst pages for a few seconds; meanwhile the
    // registry API and the health check are timed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut viewers = Vec::new();
    for i in 0..8 {
        let (client, base, pages, stop) = (client.clone(), s.base.clone(), pages.clone(), stop.clone());
        viewers.push(tokio::spawn(async move {
            let mut k = i;
            let mut views = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && views < 200 {
                let _ = client.get(format!("{base}{}", pages[k % pages.len()])).send().await.map(|r| r.bytes());
                k += 1;
                views += 1;
            }
            views
        }));
    }
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for path in [format!("{API}/registered-models/get?name=legacy"), "/health".to_string()] {
            let started = Instant::now();
            let resp = client.get(s.url(&path)).send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            worst = worst.max(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut views = 0;
    for v in viewers {
        views += v.await.unwrap();
    }
    eprintln!("during {views} page views: slowest registry API / health answer {worst:?}");
    assert!(worst < Duration::from_secs(1), "the API waited {worst:?} behind page views");
}

// ------------------------------------------------------------------------ finding 6

/// A request line and the `Authorization` header sent with it, if any.
type Seen = (String, Option<String>);

/// A listener playing another host: it records the `Authorization` header of every request
/// and answers 404.
struct OtherHost {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl OtherHost {
    fn start() -> OtherHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(1000) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = Some(v.trim().to_string());
                        }
                    }
                }
                seen2.lock().unwrap().push((request_line.trim().to_string(), auth));
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        OtherHost { port, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn sources_on_other_hosts_are_refused_at_creation() {
    let reg = Registry::new();
    let s = reg.spawn(&["server"]);
    let this = s.base.strip_prefix("http://").unwrap().to_string();
    let (_, run) = api(&s, Method::POST, "runs/create", json!({"experiment_id": "0"})).await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let run_root = run["run"]["info"]["artifact_uri"].as_str().unwrap().strip_prefix("mlflow-artifacts:/").unwrap();
    api(&s, Method::POST, "registered-models/create", json!({"name": "m"})).await;

    for foreign in [
        format!("mlflow-artifacts://attacker.example/{run_root}/model"),
        format!("mlflow-artifacts://attacker.example:5000/{run_root}/model"),
        format!("MLFLOW-ARTIFACTS://attacker.example/{run_root}/model"),
        format!("mlflow-artifacts://{}/{run_root}/model", this.replace("127.0.0.1", "127.0.0.2")),
        format!("mlflow-artifacts://user@{this}/{run_root}/model"),
        format!("http://attacker.example/api/2.0/mlflow-artifacts/artifacts/{run_root}/model"),
        "https://attacker.example/model.onnx".to_string(),
        format!("HTTP://{}/model.onnx", this.replace("127.0.0.1", "localhost")),
    ] {
        let body = json!({"name": "m", "source": foreign, "run_id": run_id});
        assert_refused(&api(&s, Method::POST, "model-versions/create", body).await, "which is not this server");
    }
    // This server, named as the client reaches it, is fine.
    let here = format!("mlflow-artifacts://{this}/{run_root}/model");
    let (st, v) =
        api(&s, Method::POST, "model-versions/create", json!({"name": "m", "source": here, "run_id": run_id})).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) =
        api(&s, Method::POST, "model-versions/create", json!({"name": "m", "source": format!("http://{this}/x.onnx")}))
            .await;
    assert_eq!(st, 200, "{v}");
    // An experiment cannot put its runs' and models' files on another host either.
    let body = json!({"name": "e", "artifact_location": "mlflow-artifacts://attacker.example/e"});
    assert_refused(&api(&s, Method::POST, "experiments/create", body).await, "which is not this server");
    let versions = api(&s, Method::GET, "model-versions/search?filter=name%3D%27m%27", json!({})).await.1;
    assert_eq!(versions["model_versions"].as_array().unwrap().len(), 2);
}

/// Versions that point at another host (written before the check above, or by another tool):
/// a `predict` following a registry that requires a token sends it to the registry — reads
/// work — and never to the other host.
#[tokio::test]
async fn the_registry_token_never_reaches_another_host() {
    let reg = Registry::new();
    let token = "s3cret-registry-token";
    let token_file = reg.data_dir().join("token");
    std::fs::write(&token_file, token).unwrap();
    reg.register("iris-v1", "iris", &[]);
    let s = reg.spawn(&["server", "--auth-token-file", token_file.to_str().unwrap(), "--auth-reads"]);
    let other = OtherHost::start();
    let o = format!("127.0.0.1:{}", other.port);
    let uris = [
        format!("mlflow-artifacts://{o}/0/models/m-1/artifacts"),
        format!("http://{o}/api/2.0/mlflow-artifacts/artifacts/0/models/m-2/artifacts"),
        format!("HTTP://{o}/files/model.onnx"),
    ];
    {
        let db = db(&reg);
        for (i, uri) in uris.iter().enumerate() {
            let version = i as i64 + 2;
            db.execute(
                "INSERT INTO model_versions (model_id, version, creation_timestamp, last_updated_timestamp, \
                 description, user_id, current_stage, source, run_id, run_link, status, storage_location, logged_model_id) \
                 SELECT id, ?1, 0, 0, '', '', 'None', ?2, '', '', 'READY', ?2, '' FROM registered_models WHERE name = 'iris'",
                rusqlite::params![version, uri],
            )
            .unwrap();
        }
    }
    let csv = reg.data_dir().join("rows.csv");
    std::fs::write(&csv, "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n").unwrap();
    let cli = Registry::new();
    let predict = |version: usize| {
        cli.cmd()
            .args(["--registry-uri", &s.base, "predict", "-m", &format!("models:/iris/{version}")])
            .args(["--input", csv.to_str().unwrap()])
            .env("MLFLOW_TRACKING_TOKEN", token)
            .output()
            .unwrap()
    };
    // The token is sent to the registry: reads (and the artifact proxy) require it.
    let out = predict(1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (i, uri) in uris.iter().enumerate() {
        let before = other.requests().len();
        let out = predict(i + 2);
        assert!(!out.status.success(), "{uri}");
        let seen = other.requests();
        assert!(
            seen.len() > before,
            "{uri}: the other host was never asked ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        for (line, auth) in &seen[before..] {
            assert_eq!(auth, &None, "{uri}: '{line}' carried credentials to another host");
        }
    }
    eprintln!("the other host saw {} requests, none with credentials", other.requests().len());
}

// ------------------------------------------------------------------------ finding 10

/// A model folder: iris-v1's model.onnx with an MLmodel whose flavors nest `depth` flow
/// sequences (and the onnx flavor after them, so only the nesting is at fault).
fn deep_model(dir: &Path, depth: usize) -> std::path::PathBuf {
    let m = dir.join(format!("deep-{depth}"));
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(repo().join("models/iris-v1/model.onnx"), m.join("model.onnx")).unwrap();
    let yaml = format!("junk: {}{}\nflavors:\n  onnx:\n    data: model.onnx\n", "[".repeat(depth), "]".repeat(depth));
    std::fs::write(m.join("MLmodel"), yaml).unwrap();
    m
}

#[tokio::test]
async fn deeply_nested_mlmodels_are_refused_at_every_registration_path() {
    let reg = Registry::new();
    let work = tempfile::tempdir().unwrap();
    let deep = deep_model(work.path(), 60_000);
    let want = "levels deep";

    // 1. The CLI into the embedded store: refused, nothing created.
    let took = cli_fails(&reg, &["models", "register", deep.to_str().unwrap(), "--name", "deep"], want);
    eprintln!("CLI register refused the nesting in {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let s = reg.spawn(&["server"]);
    assert_eq!(api(&s, Method::GET, "registered-models/get?name=deep", json!({})).await.0, 404);

    // 2. The REST API: a logged model uploaded with that MLmodel is refused at create.
    let (_, lm) = api(&s, Method::POST, "logged-models", json!({"experiment_id": "0", "name": "deep"})).await;
    let id = lm["model"]["info"]["model_id"].as_str().unwrap().to_string();
    for file in ["MLmodel", "model.onnx"] {
        let resp = Client::new()
            .put(s.url(&format!("{ARTIFACTS}/0/models/{id}/artifacts/{file}")))
            .body(std::fs::read(deep.join(file)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let fin =
        call(&s, Method::PATCH, &format!("{API}/logged-models/{id}"), Some(json!({"status": "LOGGED_MODEL_READY"})))
            .await;
    assert_eq!(fin.0, 200);
    api(&s, Method::POST, "registered-models/create", json!({"name": "deep"})).await;
    let started = Instant::now();
    let create = json!({"name": "deep", "source": format!("models:/{id}"), "model_id": id});
    assert_refused(&api(&s, Method::POST, "model-versions/create", create).await, want);
    eprintln!("REST create refused the nesting in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(20));

    // 3. A remote registration: refused by the local test load, before anything is created.
    let cli = Registry::new();
    let took = cli_fails(
        &cli,
        &["--registry-uri", &s.base, "models", "register", deep.to_str().unwrap(), "--name", "deep2"],
        want,
    );
    eprintln!("remote register refused the nesting in {took:?}");
    assert_eq!(api(&s, Method::GET, "registered-models/get?name=deep2", json!({})).await.0, 404);

    // Nesting within the bound (as MLflow writes it, and a little more) registers fine.
    let shallow = deep_model(work.path(), 8);
    let out = reg.run(&["models", "register", shallow.to_str().unwrap(), "--name", "shallow"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The version page parses an MLmodel with the same bounds, once: one made deep after
/// registration (files changed behind the registry's back) shows "not available" quickly.
#[tokio::test]
async fn the_version_page_shows_a_hostile_mlmodel_as_not_available_quickly() {
    let reg = Registry::new();
    let v = reg.register("iris-v1", "iris", &[]);
    let s = reg.spawn(&["server"]);
    let page = Client::new().get(s.url("/models/iris/versions/1")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("sepal_length"), "the signature shows");

    let location = v["storage_location"].as_str().or(v["source"].as_str()).unwrap().to_string();
    let rel = location.strip_prefix("mlflow-artifacts:/").unwrap();
    let mlmodel = reg.data_dir().join("artifacts").join(rel).join("MLmodel");
    std::fs::write(&mlmodel, format!("flavors: {}", "{a: ".repeat(200_000))).unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let resp = Client::new().get(s.url("/models/iris/versions/1")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let page = resp.text().await.unwrap();
        slowest = slowest.max(started.elapsed());
        assert!(page.contains("Not available") && page.contains("levels deep"), "{page}");
    }
    eprintln!("slowest version page with an 800 KB nested MLmodel: {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
}

// ------------------------------------------------------------------------ finding 11

#[tokio::test]
async fn finalized_logged_models_are_read_only_under_nested_experiment_locations() {
    let reg = Registry::new();
    let s = reg.spawn(&["server"]);
    for (name, location) in [
        ("nested", "mlflow-artifacts:/a/b"),
        ("deeper", "mlflow-artifacts:/x/y/z/w"),
        ("spelled", "MLflow-Artifacts:/p//q/"),
        ("models-in-path", "mlflow-artifacts:/team/models"),
    ] {
        let (st, e) =
            api(&s, Method::POST, "experiments/create", json!({"name": name, "artifact_location": location})).await;
        assert_eq!(st, 200, "{e}");
        let exp = e["experiment_id"].as_str().unwrap();
        let (_, lm) = api(&s, Method::POST, "logged-models", json!({"experiment_id": exp, "name": "m"})).await;
        let id = lm["model"]["info"]["model_id"].as_str().unwrap().to_string();
        let uri = lm["model"]["info"]["artifact_uri"].as_str().unwrap().to_string();
        assert!(uri.ends_with(&format!("/models/{id}/artifacts")), "{uri}");
        let rel = uri.split_once(":/").unwrap().1.trim_start_matches('/').to_string();
        let put = |file: &str, body: &'static str| {
            let url = s.url(&format!("{ARTIFACTS}/{rel}/{file}"));
            async move { Client::new().put(url).body(body).send().await.unwrap() }
        };
        assert_eq!(put("MLmodel", "before").await.status(), 200, "{name}: writable while pending");
        let fin = call(
            &s,
            Method::PATCH,
            &format!("{API}/logged-models/{id}"),
            Some(json!({"status": "LOGGED_MODEL_READY"})),
        )
        .await;
        assert_eq!(fin.0, 200);
        for file in ["MLmodel", "new-file.txt", "sub/dir/f"] {
            let resp = put(file, "after").await;
            assert_eq!(resp.status(), 400, "{name}: {file} overwritten in a finalized model");
            let body: Value = resp.json().await.unwrap();
            assert!(body["message"].as_str().unwrap().contains("is finalized"), "{body}");
        }
        let got = Client::new().get(s.url(&format!("{ARTIFACTS}/{rel}/MLmodel"))).send().await.unwrap();
        assert_eq!(got.text().await.unwrap(), "before", "{name}");
        // The experiment's other folders stay writable (runs keep logging files).
        let run_file = s.url(&format!("{ARTIFACTS}/{}/run-files/x.txt", rel.split("/models/").next().unwrap()));
        assert_eq!(Client::new().put(run_file).body("x").send().await.unwrap().status(), 200, "{name}");
    }
}

// ------------------------------------------------------------------------ finding 12

#[tokio::test]
async fn local_sources_are_refused_in_any_spelling_of_the_scheme() {
    let reg = Registry::new();
    let s = reg.spawn(&["server"]);
    let (_, run) = api(&s, Method::POST, "runs/create", json!({"experiment_id": "0"})).await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    api(&s, Method::POST, "registered-models/create", json!({"name": "m"})).await;
    for source in [
        "file:///etc",
        "FILE:///etc",
        "File:///etc/passwd",
        "fIlE://localhost/etc",
        "file:/etc",
        "FILE:etc",
        "/etc",
        "etc/passwd",
        "C:\\Windows",
        " FILE:///etc",
    ] {
        for run in ["", run_id.as_str()] {
            let body = json!({"name": "m", "source": source, "run_id": run});
            assert_refused(&api(&s, Method::POST, "model-versions/create", body).await, "local path");
        }
    }
    // Other schemes in any case follow their own rules: an artifact URI must be inside the run.
    let body = json!({"name": "m", "source": "MLFLOW-ARTIFACTS:/registry/x", "run_id": run_id});
    assert_refused(&api(&s, Method::POST, "model-versions/create", body).await, "must identify the resource");
    let (_, versions) = api(&s, Method::GET, "model-versions/search", json!({})).await;
    assert_eq!(versions["model_versions"].as_array().map_or(0, Vec::len), 0, "{versions}");
}

#[tokio::test]
async fn model_names_that_are_path_segments_or_padded_are_refused_everywhere() {
    let reg = Registry::new();
    let s = reg.spawn(&["server"]);
    api(&s, Method::POST, "registered-models/create", json!({"name": "ok"})).await;
    let bad = [".", "..", " iris", "iris ", "\tiris", "iris\n", "ir\u{7}is", "\u{a0}iris", " ", ""];
    for name in bad {
        let got = api(&s, Method::POST, "registered-models/create", json!({"name": name})).await;
        assert_eq!(got.0, 400, "create {name:?}: {got:?}");
        assert_eq!(got.1["error_code"], "INVALID_PARAMETER_VALUE", "{got:?}");
        let got = api(&s, Method::POST, "registered-models/rename", json!({"name": "ok", "new_name": name})).await;
        assert_eq!(got.0, 400, "rename to {name:?}: {got:?}");
    }
    let iris = repo().join("models/iris-v1");
    for name in [".", "..", " iris", "iris "] {
        cli_fails(
            &reg,
            &["models", "register", iris.to_str().unwrap(), "--name", name],
            "Invalid registered model name",
        );
        cli_fails(&reg, &["models", "rename", "ok", name], "Invalid registered model name");
        let remote = Registry::new();
        cli_fails(
            &remote,
            &["--registry-uri", &s.base, "models", "rename", "ok", name],
            "Invalid registered model name",
        );
    }
    // The UI trims what is typed; what is left must still be a valid name.
    for name in [".", ".."] {
        let page = ui_submit(&s, "/models", &[("name", name)]).await;
        assert!(page.contains("reserved path segments"), "{page}");
        let page = ui_submit(&s, "/models/ok/rename", &[("new_name", name)]).await;
        assert!(page.contains("reserved path segments"), "{page}");
    }
    let (_, all) = api(&s, Method::GET, "registered-models/search", json!({})).await;
    let names: Vec<&str> =
        all["registered_models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ok"]);
    // A name with dots that is not a path segment is fine.
    assert_eq!(api(&s, Method::POST, "registered-models/create", json!({"name": "..."})).await.0, 200);
}
