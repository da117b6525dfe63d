//! End to end, as an attacker would: bodies held just short of their last byte, chunked uploads
//! that never end, every connection slot held, and model names made up by the thousand — against
//! the real binary. Memory stays within the in-flight body budget, the excess gets 503, health
//! checks keep answering, and `/metrics` keeps one label for every unknown name.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Registry, Server};
use serde_json::{json, Value};

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// `GET path` on a new connection: the whole answer and how long it took.
fn get(addr: &str, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    (answer, started.elapsed())
}

/// Ask `/ping` `n` times on new connections; every answer must be 200. Returns the slowest.
fn ping_worst(addr: &str, path: &str, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        let (answer, took) = get(addr, path);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer:?}");
        worst = worst.max(took);
    }
    worst
}

/// Open a connection and send a request head declaring `len` body bytes, then `prefix` of them.
fn start_body(addr: &str, path: &str, len: usize, prefix: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![b' '; prefix]).unwrap();
    s
}

/// The answer on `s` if one comes within `wait` (`None`: the server is still reading the body).
fn answer_within(s: &mut TcpStream, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Some(format!("error: {e}")),
        }
    }
    (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
}

fn iris() -> (Registry, Value) {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &[]);
    let body = json!({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[5.1, 3.5, 1.4, 0.2]]}});
    (reg, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_held_before_their_last_byte_stay_within_the_budget() {
    const BODY: usize = 8_000_000;
    const BUDGET_MIB: u64 = 32;
    let (reg, iris_body) = iris();
    let server =
        reg.spawn(&["serve", "-m", "models:/iris/1", "--max-body-size", "8MiB", "--max-inflight-body-size", "32MiB"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let addr = addr(&server);
    let base = rss_mib(server.pid());

    // 30 clients each declare a body of 8 MB: the budget holds four; the others are refused
    // with 503 before they send it.
    let mut conns: Vec<TcpStream> = (0..30)
        .map(|i| start_body(&addr, if i % 2 == 0 { "/invocations" } else { "/v2/models/iris/infer" }, BODY, 1024))
        .collect();
    // The refused are answered at once; give a loaded machine time.
    std::thread::sleep(Duration::from_millis(1000));
    let mut held = Vec::new();
    let mut refused = 0;
    for (i, mut s) in conns.drain(..).enumerate() {
        match answer_within(&mut s, Duration::from_millis(300)) {
            None => held.push(s),
            Some(answer) => {
                assert!(answer.starts_with("HTTP/1.1 503"), "connection {i}: {answer}");
                assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
                let shape = if i % 2 == 0 { "\"error_code\":\"TEMPORARILY_UNAVAILABLE\"" } else { "{\"error\":" };
                assert!(answer.contains(shape), "connection {i}: {answer}");
                refused += 1;
            }
        }
    }
    assert_eq!(held.len(), 4, "32 MiB holds four bodies of 8 MB; {refused} refused");

    // The four send all but their last byte and hold it.
    let writers: Vec<_> = held
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                s.write_all(&vec![b' '; BODY - 1024 - 1]).unwrap();
                s
            })
        })
        .collect();
    let held: Vec<TcpStream> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss_mib(server.pid()).saturating_sub(base);
    let worst = ping_worst(&addr, "/ping", 20);
    println!("RSS grew {grown} MiB with four 8 MB bodies held (budget {BUDGET_MIB} MiB); slowest /ping {worst:?}");
    assert!(grown < BUDGET_MIB + 64, "RSS grew {grown} MiB");
    assert!(worst < Duration::from_secs(1), "/ping took {worst:?}");

    // While they are held another big body is refused at once; a small one still passes.
    let mut late = start_body(&addr, "/invocations", BODY, 0);
    let answer = answer_within(&mut late, Duration::from_secs(5)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let client = reqwest::Client::new();
    let small = client.post(server.url("/invocations")).json(&iris_body).send().await.unwrap();
    assert_eq!(small.status(), 200, "small bodies fit beside the held ones");

    // The holders go away: their share comes back.
    drop(held);
    let started = Instant::now();
    loop {
        let mut again = start_body(&addr, "/invocations", BODY, 0);
        if answer_within(&mut again, Duration::from_millis(300)).is_none() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the budget did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_that_never_end_are_bounded_and_cut() {
    const CHUNK: usize = 1 << 20;
    let (reg, iris_body) = iris();
    let server =
        reg.spawn(&["serve", "-m", "models:/iris/1", "--max-inflight-body-size", "16MiB", "--body-read-timeout", "3s"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let addr = addr(&server);
    let pid = server.pid();
    let base = rss_mib(pid);

    // 4 clients send two 1 MiB chunks and stall (8 MiB held until the body-read deadline);
    // then 16 stream chunks without end (at most 64 each) into the other half.
    let started = Instant::now();
    let client = |stall: bool| {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(s, "POST /invocations HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
            let chunk = [format!("{CHUNK:x}\r\n").into_bytes(), vec![b' '; CHUNK], b"\r\n".to_vec()].concat();
            for _ in 0..if stall { 2 } else { 64 } {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
            let answer = answer_within(&mut s, Duration::from_secs(15)).unwrap_or_default();
            (stall, answer, started.elapsed())
        })
    };
    let mut clients: Vec<_> = (0..4).map(|_| client(true)).collect();
    std::thread::sleep(Duration::from_millis(500));
    clients.extend((0..16).map(|_| client(false)));
    let mut peak = 0;
    let mut worst_ping = Duration::ZERO;
    while !clients.iter().all(|c| c.is_finished()) {
        peak = peak.max(rss_mib(pid).saturating_sub(base));
        worst_ping = worst_ping.max(ping_worst(&addr, "/ping", 1));
        assert!(started.elapsed() < Duration::from_secs(30), "the uploads were not cut");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut over_budget = 0;
    for c in clients {
        let (stall, answer, took) = c.join().unwrap();
        if stall {
            assert!(answer.starts_with("HTTP/1.1 408"), "a stalled upload: {answer:?}");
            assert!(took < Duration::from_secs(10), "cut after {took:?}");
        } else if answer.starts_with("HTTP/1.1 503") {
            over_budget += 1;
        } else {
            // The server stops reading a refused body, so the client may see its connection
            // reset before it reads the 503.
            assert!(answer.is_empty() || answer.starts_with("error:"), "an endless upload: {answer:?}");
        }
    }
    println!("RSS grew at most {peak} MiB (budget 16 MiB); {over_budget} of 16 endless uploads read their 503; slowest /ping {worst_ping:?}");
    assert!(peak < 16 + 64, "RSS grew {peak} MiB");
    assert!(worst_ping < Duration::from_secs(1), "/ping took {worst_ping:?}");
    let ok = reqwest::Client::new().post(server.url("/invocations")).json(&iris_body).send().await.unwrap();
    assert_eq!(ok.status(), 200, "the budget came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_in_odd_pieces_is_read_whole() {
    let (reg, _) = iris();
    let server = reg.spawn(&["serve", "-m", "models:/iris/1"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let addr = addr(&server);
    // ~1.3 MB of rows, sent as chunks of sizes that do not line up with any buffer.
    let rows = 40_000;
    let body = json!({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": vec![[5.1, 3.5, 1.4, 0.2]; rows]}}).to_string().into_bytes();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "POST /invocations HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let sizes = [1usize, 7, 4093, 65_537, 300_001, 13];
    let (mut at, mut i) = (0, 0);
    while at < body.len() {
        let n = sizes[i % sizes.len()].min(body.len() - at);
        s.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
        s.write_all(&body[at..at + n]).unwrap();
        s.write_all(b"\r\n").unwrap();
        (at, i) = (at + n, i + 1);
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..answer.len().min(500)]);
    let json_at = answer.find("\r\n\r\n").unwrap() + 4;
    let head = answer[..json_at].to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&answer[json_at..])
    } else {
        answer[json_at..].to_string()
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"].as_array().map(|p| p.len()), Some(rows), "one prediction per row sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_while_every_connection_slot_is_held() {
    let (reg, _) = iris();
    let server = reg.spawn(&["serve", "-m", "models:/iris/1", "--max-connections", "4"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    // The readiness probe's connection must be gone before four others fill every slot.
    std::thread::sleep(Duration::from_millis(500));
    let addr = addr(&server);
    // Four partial bodies hold every ordinary slot.
    let mut held: Vec<TcpStream> = (0..4).map(|_| start_body(&addr, "/invocations", 1000, 10)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut held {
        let answer = answer_within(s, Duration::from_millis(100));
        assert!(answer.is_none(), "the server should be waiting for the body: {answer:?}");
    }
    let mut worst = Duration::ZERO;
    for path in ["/ping", "/health", "/v2/health/ready", "/v2/health/live"] {
        worst = worst.max(ping_worst(&addr, path, 10));
    }
    println!("slowest health check with every slot held: {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    // Anything else on a health-only connection: 503 in the protocol's shape, not a hang.
    let mut scoring = start_body(&addr, "/invocations", 2, 2);
    let answer = answer_within(&mut scoring, Duration::from_secs(5)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("TEMPORARILY_UNAVAILABLE"), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");
    // A slot comes free: scoring is back.
    drop(held);
    let started = Instant::now();
    loop {
        let (answer, _) = get(&addr, "/v2/models/iris");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{answer}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The registry server: the same.
    let registry = reg.spawn(&["server", "--max-connections", "2", "--max-inflight-body-size", "3MiB"]);
    registry.wait_ready("/health", Duration::from_secs(30)).await;
    std::thread::sleep(Duration::from_millis(500));
    let raddr = registry.base.trim_start_matches("http://").to_string();
    let create = "/api/2.0/mlflow/registered-models/create";
    let mut held: Vec<TcpStream> = (0..2).map(|_| start_body(&raddr, create, 1_500_000, 10)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut held {
        let answer = answer_within(s, Duration::from_millis(100));
        assert!(answer.is_none(), "the server should be waiting for the body: {answer:?}");
    }
    let worst = ping_worst(&raddr, "/health", 10);
    println!("registry server: slowest /health with every slot held: {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_server_shares_the_budget_and_streams_uploads_past_it() {
    let reg = Registry::new();
    let server = reg.spawn(&["server", "--max-inflight-body-size", "3MiB"]);
    server.wait_ready("/health", Duration::from_secs(30)).await;
    let addr = addr(&server);
    let create = "/api/2.0/mlflow/registered-models/create";
    // Two JSON bodies of 1.5 MB fill the budget: a third is refused in MLflow's error shape.
    let mut held: Vec<TcpStream> = (0..2).map(|_| start_body(&addr, create, 1_500_000, 10)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut held {
        let answer = answer_within(s, Duration::from_millis(100));
        assert!(answer.is_none(), "the server should be waiting for the body: {answer:?}");
    }
    let mut third = start_body(&addr, create, 1_500_000, 10);
    let answer = answer_within(&mut third, Duration::from_secs(5)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"error_code\":\"TEMPORARILY_UNAVAILABLE\""), "{answer}");
    drop(held);

    // An artifact upload goes to disk as it arrives: 8 MiB passes a 3 MiB budget.
    let data = vec![7u8; 8 << 20];
    let resp = reqwest::Client::new()
        .put(server.url("/api/2.0/mlflow-artifacts/artifacts/0/abc/artifacts/big.bin"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let got = reqwest::get(server.url("/api/2.0/mlflow-artifacts/artifacts/0/abc/artifacts/big.bin")).await.unwrap();
    assert_eq!(got.bytes().await.unwrap().len(), data.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_model_names_share_one_metrics_label() {
    let (reg, iris_body) = iris();
    let server = reg.spawn(&["serve", "-m", "models:/iris/1"]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let _ = client.post(server.url("/invocations")).json(&iris_body).send().await.unwrap();
    let before = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();

    let paths: Vec<String> = (0..1000)
        .map(|i| match i % 4 {
            0 => format!("/v2/models/made-up-{i}/infer"),
            1 => format!("/v2/models/made-up-{i}/versions/{i}/infer"),
            2 => format!("/models/made-up-{i}/invocations"),
            _ => format!("/v2/models/made-up-{i}/ready"),
        })
        .collect();
    for batch in paths.chunks(50) {
        let sends = batch.iter().map(|p| {
            let req = if p.ends_with("/ready") {
                client.get(server.url(p))
            } else {
                client.post(server.url(p)).json(&iris_body)
            };
            req.send()
        });
        for r in futures_util::future::join_all(sends).await {
            assert_eq!(r.unwrap().status(), 404);
        }
    }
    let after = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    println!("/metrics: {} bytes before, {} after 1,000 made-up names", before.len(), after.len());
    assert!(!after.contains("made-up"), "a made-up name became a label");
    let unknown: Vec<&str> =
        after.lines().filter(|l| l.starts_with("regserve_requests_total{") && l.contains("__unknown__")).collect();
    assert_eq!(unknown.len(), 1, "one series for every unknown name: {unknown:?}");
    assert!(unknown[0].contains("status=\"404\""), "{unknown:?}");
    assert!(after.len() < before.len() + 8 * 1024, "/metrics grew from {} to {} bytes", before.len(), after.len());
}

/// The payload of a `Transfer-Encoding: chunked` body (the answer streams in chunks when large).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}
