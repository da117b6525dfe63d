//! End to end: bearer-token auth on scoring, graceful shutdown with requests in flight, and
//! connection limits (slow-loris, oversized heads) against the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Registry;
use serde_json::{json, Value};

fn iris_body() -> Value {
    json!({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[5.1, 3.5, 1.4, 0.2]]}})
}

#[tokio::test]
async fn scoring_requires_the_token_while_health_and_metrics_stay_open() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let token_file = reg.data_dir().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server =
        reg.spawn(&["serve", "-m", "models:/iris/Production", "--auth-token-file", token_file.to_str().unwrap()]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    for open in ["/ping", "/health", "/version", "/metrics", "/v2", "/v2/health/ready", "/v2/health/live"] {
        assert_eq!(c.get(server.url(open)).send().await.unwrap().status(), 200, "{open}");
    }
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Basic czNjcmV0LXRva2Vu"), 401),
        (Some("Bearer s3cret-token"), 200),
    ] {
        let mut req = c.post(server.url("/invocations")).json(&iris_body());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{auth:?}");
        if status == 401 {
            assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"regserve\"");
            assert_eq!(resp.json::<Value>().await.unwrap()["error_code"], "UNAUTHENTICATED");
        }
    }
    assert_eq!(c.get(server.url("/v2/models/iris")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(server.url("/v2/models/iris")).bearer_auth("s3cret-token").send().await.unwrap().status(), 200);
    assert!(!server.log().contains("s3cret-token"), "the token must never be logged");
}

#[tokio::test]
async fn sigterm_fails_readiness_and_lets_in_flight_requests_finish() {
    let reg = Registry::new();
    reg.register("mlp", "mlp", &[]);
    // A 500 ms batch delay keeps requests in flight long enough to send SIGTERM among them.
    let mut server = reg.spawn(&[
        "serve",
        "-m",
        "models:/mlp/1",
        "--sessions",
        "1",
        "--max-batch-size",
        "64",
        "--max-batch-delay",
        "500ms",
        "--shutdown-grace",
        "10s",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    let body = json!({"inputs": [vec![0.5f32; 64]]});
    let mut in_flight = Vec::new();
    for _ in 0..16 {
        let (c, url, body) = (c.clone(), server.url("/invocations"), body.clone());
        in_flight.push(tokio::spawn(async move { c.post(url).json(&body).send().await.map(|r| r.status().as_u16()) }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = server.pid();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(50)).await;
    for t in in_flight {
        assert_eq!(t.await.unwrap().expect("in-flight request completed"), 200);
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = server.wait_exit(Duration::from_secs(15));
        (s, server.log())
    })
    .await
    .unwrap();
    let (exit, log) = status;
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "exit 0 after draining; log:\n{log}");
    assert!(log.contains("stopped accepting"), "{log}");
}

#[tokio::test]
async fn slow_clients_and_oversized_heads_are_cut_off() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &[]);
    let server =
        reg.spawn(&["serve", "-m", "models:/iris/1", "--header-read-timeout", "500ms", "--max-header-size", "16KiB"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let addr = server.base.trim_start_matches("http://").to_string();

    // Slow-loris: a request head that never ends is dropped after the header timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /invocations HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "the server kept a slow client for {waited:?}");

    // An oversized head is refused; the server keeps serving.
    let mut big = TcpStream::connect(&addr).unwrap();
    let head = format!("GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = big.write_all(head.as_bytes());
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    let ok = reqwest::Client::new().post(server.url("/invocations")).json(&iris_body()).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// Read one HTTP/1.1 response (head and a `Content-Length` body) off `s`; its status code.
fn read_response(s: &mut TcpStream) -> u16 {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the connection closed mid-head: {}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_head_deadline_but_not_their_own() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &[]);
    let server =
        reg.spawn(&["serve", "-m", "models:/iris/1", "--header-read-timeout", "500ms", "--keep-alive-timeout", "3s"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";

    // Idle three times as long as the head deadline, then reused: the same connection answers.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(ping).unwrap();
    assert_eq!(read_response(&mut s), 200);
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(ping).unwrap();
    assert_eq!(read_response(&mut s), 200, "an idle keep-alive connection was closed at the head deadline");

    // Idle past the keep-alive timeout: the server closes it (by 3 s, well before 6).
    let idle = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut byte = [0u8; 1];
    let eof = s.read(&mut byte);
    let waited = idle.elapsed();
    assert!(matches!(eof, Ok(0)), "{eof:?} after {waited:?}");
    assert!(waited >= Duration::from_millis(2500) && waited < Duration::from_secs(5), "closed after {waited:?}");

    // A head begun on a kept-alive connection must still end within the head deadline.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(ping).unwrap();
    assert_eq!(read_response(&mut s), 200);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    s.write_all(b"POST /invocations HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "a half-sent head was kept {waited:?} (head deadline 500 ms)");
}
