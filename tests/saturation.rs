//! End to end: `regserve_saturation{model}` and `regserve_queue_wait_seconds` on `/metrics` of the
//! real binary, under load.
//!
//! - A model whose run never ends (`tests/fixtures/slow_loop` without its warm-up example) on one
//!   session: three requests hold the session and the queue, so the gauge climbs towards 3
//!   ("above 1 = queueing") and passes 1 within a few seconds.
//! - The mlp model on one session under 8 clients scoring 256-row requests: the gauge leaves 0
//!   and decays when the load stops, and requests' queue waits are observed.

mod common;

use std::time::{Duration, Instant};

use common::{repo, Registry};
use serde_json::json;

async fn metric(c: &reqwest::Client, server: &common::Server, line_prefix: &str) -> Option<f64> {
    let text = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(line_prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn saturation_climbs_past_one_when_requests_queue() {
    let reg = Registry::new();
    // The slow model without its serving example (which would make the warm-up never end).
    let model = tempfile::tempdir().unwrap();
    let src = repo().join("tests/fixtures/slow_loop");
    std::fs::copy(src.join("model.onnx"), model.path().join("model.onnx")).unwrap();
    let mlmodel = std::fs::read_to_string(src.join("MLmodel")).unwrap();
    let mlmodel: String =
        mlmodel.lines().take_while(|l| !l.starts_with("saved_input_example_info")).map(|l| format!("{l}\n")).collect();
    std::fs::write(model.path().join("MLmodel"), mlmodel).unwrap();
    reg.ok(&["models", "register", model.path().to_str().unwrap(), "--name", "slow", "--alias", "live"]);

    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/slow@live",
        "--sessions",
        "1",
        "--max-batch-size",
        "1",
        "--request-timeout",
        "2s",
    ]);
    server.wait_ready("/v2/health/ready", Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    let gauge = "regserve_saturation{model=\"slow\"} ";
    let idle = metric(&c, &server, gauge).await.expect("regserve_saturation{model=\"slow\"} on /metrics");
    assert!(idle < 0.01, "{idle}");

    // One runs for ever, two wait behind it; each client gives up after --request-timeout, but
    // the session stays busy and the queued jobs stay queued: 3 requests on 1 session.
    let body = json!({"inputs": [[1.0, 2.0]]});
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (c, url, body) = (c.clone(), server.url("/invocations"), body.clone());
        clients.push(tokio::spawn(async move { c.post(url).json(&body).send().await.map(|r| r.status().as_u16()) }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let v = metric(&c, &server, gauge).await.unwrap();
        seen.push(v);
        if v > 1.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "saturation stayed below 1: {seen:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // It climbs smoothly (a moving average), never beyond the 3 requests per session.
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    assert!(seen.iter().all(|v| *v <= 3.0), "{seen:?}");
    // A tick after the first one moved it, the average is still below the instantaneous 3.
    assert!(seen.len() >= 2 && seen[seen.len() - 1] < 3.0, "{seen:?}");
    for client in clients {
        assert_eq!(client.await.unwrap().unwrap(), 503, "each client got the request timeout");
    }
}

#[tokio::test]
async fn saturation_rises_under_load_and_queue_waits_are_observed() {
    let reg = Registry::new();
    reg.register("mlp", "mlp", &["--alias", "live"]);
    let server = reg.spawn(&["serve", "-m", "models:/mlp@live", "--sessions", "1", "--max-batch-size", "1"]);
    server.wait_ready("/v2/health/ready", Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    let gauge = "regserve_saturation{model=\"mlp\"} ";
    // Only the warm-up run has been in the pool so far.
    let idle = metric(&c, &server, gauge).await.expect("regserve_saturation{model=\"mlp\"} on /metrics");
    assert!(idle < 0.01, "{idle}");

    let rows: Vec<Vec<f32>> = (0..256).map(|r| (0..64).map(|i| ((r * 64 + i) % 17) as f32 / 17.0).collect()).collect();
    let body = serde_json::to_vec(&json!({ "inputs": rows })).unwrap();
    let stop = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (c, url, body) = (c.clone(), server.url("/invocations"), body.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop {
                let r =
                    c.post(&url).header("Content-Type", "application/json").body(body.clone()).send().await.unwrap();
                assert_eq!(r.status(), 200);
                n += 1;
            }
            n
        }));
    }
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    // Two ticks later: the first may still fold in the load's last second, the second is idle.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let loaded = metric(&c, &server, gauge).await.unwrap();
    // The model runs in far less time than the HTTP and JSON work around it (debug build), so
    // the session is busy a small fraction of the time; but it is busy.
    assert!(loaded > 0.001, "saturation after 4 s of 8 clients on one session: {loaded} ({answered} answers)");
    let waits = metric(&c, &server, "regserve_queue_wait_seconds_count{model=\"mlp\"} ").await.unwrap();
    // Every answered request was observed once it left the queue (plus the warm-up run).
    assert!(waits >= answered as f64, "{waits} queue waits for {answered} answers");
    eprintln!("mlp, 1 session, 8 clients × 256 rows for 4 s: {answered} answers, regserve_saturation {loaded:.4}");
    // Idle: it decays (10 s time constant), it does not drop to 0 at once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = metric(&c, &server, gauge).await.unwrap();
    assert!(later < loaded && later > 0.0, "{loaded} → {later}");
}
