//! End to end: small requests of fast models run on the async worker that read them
//! (`--inline-max-run`, counted in `regserve_inline_runs_total`), and that never costs the
//! health checks.
//!
//! - iris: one-row requests one after another run inline (none with `--inline-max-run 0`, none
//!   of 17 rows, more than the inline limit of 16);
//! - `tests/fixtures/counted_loop`, a `Loop` whose trip count is the request's input: fast on
//!   `n = 1` (measured, so it runs inline), never ending on `n = 2^62`. Two such requests hold a
//!   session each, one of them on an async worker, yet `/ping` answers at once, a small request
//!   is still answered by the third session, and SIGTERM stops the process within its grace.
//!
//! The inline slots are one async worker fewer than the runtime has (one per core by default),
//! so on a one-core machine nothing runs inline: the expected counts follow the cores.

mod common;

use std::time::{Duration, Instant};

use common::{repo, Registry};
use reqwest::Client;
use serde_json::{json, Value};

/// Inline runs allowed at once in the server (its runtime has one worker per core).
fn inline_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1)
}

async fn inline_runs(c: &Client, server: &common::Server, model: &str) -> u64 {
    let text = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("regserve_inline_runs_total{{model=\"{model}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

fn iris_rows(n: usize) -> Value {
    json!({"inputs": vec![[5.1, 3.5, 1.4, 0.2]; n]})
}

async fn score(c: &Client, server: &common::Server, body: &Value) -> Value {
    let r = c.post(server.url("/invocations")).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn small_requests_of_a_fast_model_run_inline_unless_turned_off_or_too_many_rows() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--alias", "live"]);
    let c = Client::new();
    // A debug build converts slowly: iris' one-row run must count as fast here.
    let fast = ["--inline-max-run", "20ms"];
    for (flags, rows, expect_inline) in
        [(&fast[..], 1, inline_slots() > 0), (&["--inline-max-run", "0"][..], 1, false), (&fast[..], 17, false)]
    {
        let mut args = vec!["serve", "-m", "models:/iris@live"];
        args.extend_from_slice(flags);
        let server = reg.spawn(&args);
        server.wait_ready("/ping", Duration::from_secs(30)).await;
        let single = score(&c, &server, &iris_rows(rows)).await;
        for _ in 0..19 {
            assert_eq!(score(&c, &server, &iris_rows(rows)).await, single);
        }
        let ran = inline_runs(&c, &server, "iris").await;
        println!("{flags:?}, {rows} rows: {ran} of 20 inline");
        // One after another, nothing is ever queued: every request runs inline, or none.
        assert_eq!(ran, if expect_inline { 20 } else { 0 }, "{flags:?}, {rows} rows");
        assert_eq!(single["predictions"]["label"].as_array().unwrap().len(), rows);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_model_turned_slow_by_a_request_never_holds_up_health_checks_or_shutdown() {
    let reg = Registry::new();
    let model = repo().join("tests/fixtures/counted_loop");
    reg.ok(&["models", "register", model.to_str().unwrap(), "--name", "counted", "--alias", "live"]);
    let mut server = reg.spawn(&[
        "serve",
        "-m",
        "models:/counted@live",
        "--sessions",
        "3",
        // A debug build converts slowly: the model's one-trip run must count as fast here.
        "--inline-max-run",
        "20ms",
        "--shutdown-grace",
        "1s",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    // Every request is bounded: a runtime stalled by the endless run fails the test, not hangs it.
    let c = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for _ in 0..5 {
        assert_eq!(score(&c, &server, &json!({"inputs": {"n": [1]}})).await, json!({"predictions": {"y": [2.0]}}));
    }
    let fast = inline_runs(&c, &server, "counted").await;
    assert_eq!(fast, if inline_slots() > 0 { 5 } else { 0 });

    // Two requests that never end: each holds a session (the first on an async worker when
    // the machine has a spare one), the third session stays for everyone else.
    let endless = json!({"inputs": {"n": [1i64 << 62]}});
    let mut hostile = Vec::new();
    for _ in 0..2 {
        let (c, url, body) = (c.clone(), server.url("/invocations"), endless.clone());
        hostile.push(tokio::spawn(async move { c.post(url).json(&body).send().await }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ran = inline_runs(&c, &server, "counted").await;
    assert!(ran - fast <= inline_slots().min(2) as u64, "{} endless runs went inline", ran - fast);
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = c.get(server.url("/ping")).timeout(Duration::from_secs(5)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let r = c
        .post(server.url("/invocations"))
        .json(&json!({"inputs": {"n": [3]}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"predictions": {"y": [6.0]}}));
    let small = t.elapsed();
    println!("inline: {fast} fast, {} endless; /ping worst {worst:?}; a small request {small:?}", ran - fast);
    assert!(worst < Duration::from_secs(1), "/ping took {worst:?} while a model run never ends");

    let t = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap().success());
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "serve did not stop within 15 s of SIGTERM with runs that never end");
    println!("stopped {:?} after SIGTERM (grace 1 s)", t.elapsed());
    for h in hostile {
        // The endless requests end with the process: an error or a 503, never an answer.
        if let Ok(Ok(r)) = h.await {
            assert_ne!(r.status(), 200);
        }
    }
}
