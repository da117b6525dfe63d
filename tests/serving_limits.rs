//! End to end: what an anonymous client cannot make `serve` or `server` do.
//!
//! - pinned versions (`/v2/models/{name}/versions/{v}/...`): only the version in service unless
//!   `--pinned-versions any`; with it, loaded versions and their session threads stay within the
//!   cache's bounds (counted in `/proc/<pid>/task`), idle ones are unloaded and come back on
//!   demand;
//! - a model whose warm-up never ends (`tests/fixtures/slow_loop`, a `Loop` of 2^62
//!   iterations): REST create, CLI register, `serve` and a restart of `server` all give up at
//!   `--load-timeout`, and SIGTERM stops the process within its grace period;
//! - `/health`, the status page and scoring errors show no local paths to anonymous readers.

mod common;

use std::time::{Duration, Instant};

use common::{repo, Registry};
use regserve::registry::{NewVersion, Stage, Store, VersionStatus};
use reqwest::Client;
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn sigterm(pid: u32) {
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
}

fn store(reg: &Registry) -> Store {
    Store::open(&reg.data_dir().join("registry.db")).unwrap()
}

/// Copy `tests/fixtures/slow_loop` under the artifact root; returns its `mlflow-artifacts:` URI.
fn install_slow_loop(reg: &Registry, folder: &str) -> String {
    let dest = reg.data_dir().join("artifacts").join(folder);
    std::fs::create_dir_all(&dest).unwrap();
    for f in ["MLmodel", "model.onnx", "serving_input_example.json"] {
        std::fs::copy(repo().join("tests/fixtures/slow_loop").join(f), dest.join(f)).unwrap();
    }
    format!("mlflow-artifacts:/{folder}")
}

/// A version created straight in the store (as an older regserve or another writer could).
fn add_version(store: &Store, name: &str, location: &str, status: VersionStatus, message: &str) -> u64 {
    let v = store
        .create_model_version(&NewVersion {
            name: name.into(),
            source: location.into(),
            storage_location: location.into(),
            status: Some(status),
            ..Default::default()
        })
        .unwrap();
    if !message.is_empty() {
        store.set_version_status(name, v.version, status, message).unwrap();
    }
    v.version
}

fn iris_infer_body() -> Value {
    json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn pinned_versions_other_than_the_one_in_service_are_refused_by_default() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &[]);
    reg.register("iris-v2", "iris", &["--stage", "Production"]);
    let server = reg.spawn(&["serve", "-m", "models:/iris/Production", "--sessions", "1"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = Client::new();
    let before = threads(server.pid());
    let infer =
        |v: u64| c.post(server.url(&format!("/v2/models/iris/versions/{v}/infer"))).json(&iris_infer_body()).send();
    // The version in service answers pinned.
    let r = infer(2).await.unwrap();
    assert_eq!(r.status(), 200);
    // An archived or never-promoted version is not loaded for a client: 404 saying why.
    let r = infer(1).await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("not in service") && msg.contains("version 2 is") && msg.contains("--pinned-versions"),
        "{msg}"
    );
    for path in ["/v2/models/iris/versions/1", "/v2/models/iris/versions/1/ready"] {
        assert_eq!(c.get(server.url(path)).send().await.unwrap().status(), 404, "{path}");
    }
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "regserve_model_loads_total{"), 1.0, "only the version in service was loaded");
    assert!(threads(server.pid()) <= before + 1, "no sessions started for refused versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_loads_stay_within_the_cache_bounds_and_idle_versions_are_unloaded() {
    const VERSIONS: u64 = 60;
    const BOUND: u64 = 4;
    let reg = Registry::new();
    let v1 = reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let location = v1["source"].as_str().unwrap().to_string();
    let st = store(&reg);
    for _ in 2..=VERSIONS {
        add_version(&st, "iris", &location, VersionStatus::Ready, "");
    }
    drop(st);
    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--sessions",
        "1",
        "--pinned-versions",
        "any",
        "--model-cache-versions",
        &BOUND.to_string(),
        "--model-cache-idle",
        "2s",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = Client::new();
    let pid = server.pid();
    // Settle the runtime's own threads (async workers, one blocking thread) before measuring.
    for _ in 0..3 {
        c.post(server.url("/v2/models/iris/infer")).json(&iris_infer_body()).send().await.unwrap();
    }
    let (base_threads, base_rss) = (threads(pid), rss_mib(pid));
    let (mut max_threads, mut max_rss) = (base_threads, base_rss);
    let started = Instant::now();
    // Two passes over every version: each pinned version is loaded, and reloaded after eviction.
    for round in 0..2 {
        for v in 1..=VERSIONS {
            let r = c
                .post(server.url(&format!("/v2/models/iris/versions/{v}/infer")))
                .json(&iris_infer_body())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "round {round} v{v}: {}", r.text().await.unwrap());
            max_threads = max_threads.max(threads(pid));
            max_rss = max_rss.max(rss_mib(pid));
        }
    }
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let loads = metric(&metrics, "regserve_model_loads_total{");
    println!(
        "{} pinned requests over {VERSIONS} versions in {:.1?}: threads {base_threads} -> max {max_threads}; RSS {base_rss:.0} -> max {max_rss:.0} MiB; {loads} loads",
        2 * VERSIONS,
        started.elapsed()
    );
    // One session thread per cached version, plus the blocking threads that load (two loads
    // at a time) — without the bound, 60 versions would hold 60+ threads.
    assert!(
        max_threads <= base_threads + BOUND as usize + 6,
        "threads grew from {base_threads} to {max_threads} with at most {BOUND} cached versions"
    );
    assert!(max_rss <= base_rss + 200.0, "RSS grew from {base_rss:.0} to {max_rss:.0} MiB");
    // Evicted versions were loaded again on demand.
    assert!(loads >= (2 * (VERSIONS - 1) - BOUND) as f64, "{loads} loads");

    // Idle versions are unloaded: their session threads exit.
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads(pid) > base_threads + 1 {
        assert!(
            Instant::now() < deadline,
            "idle versions kept their threads: {} threads, {base_threads} at the start",
            threads(pid)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and come back on demand.
    let r = c.post(server.url("/v2/models/iris/versions/7/infer")).json(&iris_infer_body()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Versions that cannot be served are refused without loading anything.
    let st = store(&reg);
    let failed = add_version(&st, "iris", &location, VersionStatus::FailedRegistration, "broken");
    let r = c
        .post(server.url(&format!("/v2/models/iris/versions/{failed}/infer")))
        .json(&iris_infer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("FAILED_REGISTRATION"));
}

/// Log the slow-loop model as a logged model over REST and create a version from it.
async fn rest_create_slow_loop(c: &Client, base: &str) -> (Value, Duration) {
    let (api, artifacts) = (format!("{base}{API}"), format!("{base}/api/2.0/mlflow-artifacts/artifacts"));
    let lm: Value = c
        .post(format!("{api}/logged-models"))
        .json(&json!({"experiment_id": "0", "name": "model"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = lm["model"]["info"]["model_id"].as_str().unwrap().to_string();
    for f in ["MLmodel", "model.onnx", "serving_input_example.json"] {
        let bytes = std::fs::read(repo().join("tests/fixtures/slow_loop").join(f)).unwrap();
        let r = c.put(format!("{artifacts}/0/models/{id}/artifacts/{f}")).body(bytes).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .patch(format!("{api}/logged-models/{id}"))
        .json(&json!({"status": "LOGGED_MODEL_READY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.post(format!("{api}/registered-models/create")).json(&json!({"name": "slow"})).send().await.unwrap();
    let started = Instant::now();
    let body = json!({"name": "slow", "source": format!("models:/{id}"), "model_id": id});
    let mv: Value =
        c.post(format!("{api}/model-versions/create")).json(&body).send().await.unwrap().json().await.unwrap();
    (mv["model_version"].clone(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_model_fails_its_rest_test_load_at_the_deadline() {
    let reg = Registry::new();
    let server = reg.spawn(&["server", "--load-timeout", "2s"]);
    server.wait_ready("/health", Duration::from_secs(30)).await;
    let c = Client::new();
    let create = tokio::spawn({
        let c = c.clone();
        let base = server.url("");
        async move { rest_create_slow_loop(&c, &base).await }
    });
    // The server keeps answering while the test load spins.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(c.get(server.url("/health")).send().await.unwrap().status(), 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mv, took) = create.await.unwrap();
    println!("create answered in {took:.1?} (deadline 2 s); /health worst {worst:?} meanwhile");
    assert!(worst < Duration::from_secs(1), "/health took {worst:?} during a test load");
    assert_eq!(mv["status"], "FAILED_REGISTRATION", "{mv}");
    let msg = mv["status_message"].as_str().unwrap();
    assert!(
        msg.contains("failed its test load") && msg.contains("did not finish within 2 s (--load-timeout)"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(15), "the test load took {took:?} with a 2 s deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_looping_version_is_no_poison_pill_after_restarts_and_never_blocks_shutdown() {
    let reg = Registry::new();
    reg.ok(&["models", "list"]); // creates the store
    let st = store(&reg);
    st.create_registered_model("slow", "", &[]).unwrap();
    let location = install_slow_loop(&reg, "slow");
    // Left pending by a server that stopped during the test load.
    let v1 = add_version(&st, "slow", &location, VersionStatus::PendingRegistration, "");
    let v2 = add_version(&st, "slow", &location, VersionStatus::PendingRegistration, "");

    // A start resumes both test loads with a long deadline; SIGTERM during them stops the
    // process within the grace period (the loads are stopped, not awaited).
    let mut server = reg.spawn(&["server", "--load-timeout", "60s", "--shutdown-grace", "2s"]);
    server.wait_ready("/health", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stop = Instant::now();
    sigterm(server.pid());
    let exited = server.wait_exit(Duration::from_secs(15));
    println!("server stopped {:.1?} after SIGTERM during two test loads", stop.elapsed());
    assert!(exited.is_some(), "server did not stop within 15 s of SIGTERM:\n{}", server.log());
    let get = |v: u64| st.get_model_version("slow", v).unwrap();
    let mv = get(v1);
    assert_eq!(mv.status, VersionStatus::PendingRegistration, "stopped by shutdown: still pending");
    assert_eq!(mv.status_message, "test load resumed after a restart (attempt 1)");

    // Two more starts each stopped during the resumed loads...
    for attempt in 2..=3 {
        let mut server = reg.spawn(&["server", "--load-timeout", "60s", "--shutdown-grace", "2s"]);
        server.wait_ready("/health", Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sigterm(server.pid());
        assert!(server.wait_exit(Duration::from_secs(15)).is_some(), "{}", server.log());
        assert_eq!(get(v2).status_message, format!("test load resumed after a restart (attempt {attempt})"));
    }
    // ... and the next start does not load them again: no poison pill.
    let server = reg.spawn(&["server", "--load-timeout", "60s"]);
    server.wait_ready("/health", Duration::from_secs(30)).await;
    for v in [v1, v2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(v).status == VersionStatus::PendingRegistration {
            assert!(Instant::now() < deadline, "version {v} still pending:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mv = get(v);
        assert_eq!(mv.status, VersionStatus::FailedRegistration, "{mv:?}");
        assert!(mv.status_message.contains("stopped during it 4 times; not trying again"), "{}", mv.status_message);
    }
    drop(server);

    // A version pending once more is test-loaded under the deadline: FAILED soon after it.
    let v3 = add_version(&st, "slow", &location, VersionStatus::PendingRegistration, "");
    let started = Instant::now();
    let server = reg.spawn(&["server", "--load-timeout", "2s"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(v3).status == VersionStatus::PendingRegistration {
        assert!(Instant::now() < deadline, "still pending:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("resumed test load settled {:.1?} after start (deadline 2 s)", started.elapsed());
    let mv = get(v3);
    assert_eq!(mv.status, VersionStatus::FailedRegistration, "{mv:?}");
    assert!(mv.status_message.contains("did not finish within 2 s"), "{}", mv.status_message);
}

#[test]
fn cli_registration_of_a_looping_model_fails_at_the_deadline_with_a_clear_error() {
    let reg = Registry::new();
    let path = repo().join("tests/fixtures/slow_loop");
    let started = Instant::now();
    let out = reg.run(&["--load-timeout", "2s", "models", "register", path.to_str().unwrap(), "--name", "slow"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("register failed in {took:.1?}: {stderr}");
    assert!(!out.status.success());
    assert!(
        stderr.contains("failed its test load") && stderr.contains("did not finish within 2 s (--load-timeout)"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Nothing was registered.
    let listed = reg.ok(&["models", "list", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_the_old_version_when_a_new_one_loops_says_why_without_paths_and_stops_on_sigterm() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let st = store(&reg);
    let location = install_slow_loop(&reg, "slow");
    let slow = add_version(&st, "iris", &location, VersionStatus::Ready, "");
    // A served model whose files are missing: its error names a local path, in the log only.
    st.create_registered_model("gone", "", &[]).unwrap();
    add_version(&st, "gone", "mlflow-artifacts:/nowhere/model", VersionStatus::Ready, "");
    let mut server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production,models:/gone/1",
        "--sessions",
        "1",
        "--load-timeout",
        "2s",
        "--poll-interval",
        "200ms",
        "--shutdown-grace",
        "2s",
    ]);
    let c = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = server.health_json().await;
        if h["models"][0]["version"] == 1 && h["models"][1]["last_error"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{h}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    st.transition_stage("iris", slow, Stage::Production, true).unwrap();
    let promoted = Instant::now();
    let h = loop {
        let h = server.health_json().await;
        if h["models"][0]["last_error"].as_str().is_some_and(|e| e.contains("did not finish within 2 s")) {
            break h;
        }
        assert!(promoted.elapsed() < Duration::from_secs(20), "{h}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the looping version failed {:.1?} after promotion: {h}", promoted.elapsed());
    assert_eq!(h["models"][0]["version"], 1, "the old version keeps serving: {h}");
    let example = std::fs::read(repo().join("models/iris-v1/serving_input_example.json")).unwrap();
    let r = c
        .post(server.url("/models/iris/invocations"))
        .header("content-type", "application/json")
        .body(example)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Backoff: the looping version is not loaded again at every 200 ms check.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let failures = metric(&metrics, "regserve_model_loads_total{model=\"iris\",outcome=\"failure\"}");
    assert!(failures <= 1.0, "{failures} failed loads of the looping version in ~5 s");

    // Anonymous readers see short reasons; no local path, in /health (JSON and text), the
    // status page or a scoring error. The log has the details.
    let data_dir = reg.data_dir().to_str().unwrap().to_string();
    let h = server.health_json().await;
    assert_eq!(h["registry"], "embedded SQLite registry", "{h}");
    let gone = h["models"][1]["last_error"].as_str().unwrap();
    assert!(gone.contains("files could not be fetched"), "{gone}");
    let text = c.get(server.url("/health")).send().await.unwrap().text().await.unwrap();
    let page = c.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    let scoring = c
        .post(server.url("/models/gone/invocations"))
        .header("content-type", "application/json")
        .body(r#"{"inputs": [[1.0]]}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (what, body) in
        [("health json", h.to_string()), ("health text", text), ("status page", page), ("scoring", scoring)]
    {
        assert!(!body.contains(&data_dir) && !body.contains("/tmp"), "{what} shows a local path: {body}");
    }
    assert!(server.log().contains(&data_dir), "the log keeps the full error");

    let stop = Instant::now();
    sigterm(server.pid());
    assert!(server.wait_exit(Duration::from_secs(15)).is_some(), "serve did not stop:\n{}", server.log());
    println!("serve stopped {:.1?} after SIGTERM", stop.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_while_a_load_is_still_running() {
    let reg = Registry::new();
    reg.ok(&["models", "list"]);
    let st = store(&reg);
    st.create_registered_model("slow", "", &[]).unwrap();
    let location = install_slow_loop(&reg, "slow");
    add_version(&st, "slow", &location, VersionStatus::Ready, "");
    let mut server = reg.spawn(&[
        "serve",
        "-m",
        "models:/slow/1",
        "--sessions",
        "1",
        "--load-timeout",
        "120s",
        "--shutdown-grace",
        "2s",
    ]);
    // The load is under way (the warm-up spins) and nothing is ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(Client::new().get(server.url("/ping")).send().await.unwrap().status(), 503);
    let stop = Instant::now();
    sigterm(server.pid());
    let exited = server.wait_exit(Duration::from_secs(15));
    println!("serve stopped {:.1?} after SIGTERM during a load", stop.elapsed());
    assert!(exited.is_some(), "serve waited for the load past its grace period:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_that_loops_fails_at_the_deadline_and_is_not_reloaded_at_every_request() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let st = store(&reg);
    let location = install_slow_loop(&reg, "slow");
    let slow = add_version(&st, "iris", &location, VersionStatus::Ready, "");
    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--sessions",
        "1",
        "--pinned-versions",
        "any",
        "--load-timeout",
        "2s",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = Client::new();
    let url = server.url(&format!("/v2/models/iris/versions/{slow}/infer"));
    let body = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]});
    let pinned = tokio::spawn({
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        async move {
            let t = Instant::now();
            let r = c.post(url).json(&body).send().await.unwrap();
            (r.status(), r.text().await.unwrap(), t.elapsed())
        }
    });
    // /ping keeps answering while the pinned load spins.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(c.get(server.url("/ping")).send().await.unwrap().status(), 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, text, took) = pinned.await.unwrap();
    println!("pinned looping version refused after {took:.1?}: {status} {text}; /ping worst {worst:?}");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("did not finish within 2 s"), "{text}");
    assert!(!text.contains(reg.data_dir().to_str().unwrap()), "{text}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(worst < Duration::from_secs(1), "/ping took {worst:?} during a pinned load");
    // Asked again: refused at once, without another load.
    let t = Instant::now();
    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "regserve_model_loads_total{model=\"iris\",outcome=\"failure\"}"), 1.0);
}
