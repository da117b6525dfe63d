//! End to end, as an attacker would try it: scoring bodies of every JSON form and CSV, and the
//! Open Inference Protocol's JSON and binary forms, with adversarial key sets, deep nesting,
//! huge declared shapes and megabytes of numbers, against the real binary on 127.0.0.1:0
//! serving the example models. Each gets the right status and a clear message, and the
//! server's peak RSS (VmHWM) stays within 4 × body + 64 MiB; `/ping` keeps answering while
//! heavy bodies are parsed; SIGTERM during a heavy parse exits within the grace period.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{Registry, Server};
use serde_json::Value;

const MIB: usize = 1 << 20;
const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

fn status_kib(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a size in kB")
}

/// The server's peak resident memory since the last reset, in bytes.
fn peak_rss(pid: u32) -> usize {
    status_kib(pid, "VmHWM:") * 1024
}

/// A registry with iris-v1 (one stacked input, named columns), iris-columns (one input per
/// column) and mlp (one `[N, 64]` input, no column names).
fn registry() -> Registry {
    let reg = Registry::new();
    for dir in ["iris-v1", "iris-columns", "mlp"] {
        reg.register(dir, dir, &[]);
    }
    reg
}

/// Serve one model with the default body limit (64 MiB), under a watchdog.
async fn serve(reg: &Registry, model: &str, extra: &[&str]) -> Server {
    let uri = format!("models:/{model}/1");
    let mut args = vec!["serve", "-m", &uri];
    args.extend_from_slice(extra);
    let server = reg.spawn(&args);
    watchdog(server.pid());
    server.wait_ready("/ping", Duration::from_secs(60)).await;
    server
}

/// Kill the server past 1.5 GiB resident, so that a regression fails the test instead of taking
/// the machine's memory (the test then fails on the lost connection).
fn watchdog(pid: u32) {
    std::thread::spawn(move || {
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let rss_kib: usize = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if rss_kib > 1536 * 1024 {
                eprintln!("watchdog: server {pid} at {} MiB resident; killing it", rss_kib / 1024);
                let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Repeat `item(i)` joined by commas until the text reaches `size` bytes.
fn repeat(size: usize, mut item: impl FnMut(usize, &mut String)) -> (String, usize) {
    let mut s = String::with_capacity(size + 256);
    let mut i = 0;
    while s.len() < size {
        if i > 0 {
            s.push(',');
        }
        item(i, &mut s);
        i += 1;
    }
    (s, i)
}

fn iris_row(i: usize) -> [f32; 4] {
    let f = (i % 50) as f32 / 10.0;
    [4.3 + f, 2.0 + f / 3.0, 1.0 + f, 0.1 + f / 2.0]
}

/// One attack: where it goes, what it sends, what must come back.
struct Case {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// Text the answer must contain (the error message, or a check of a success).
    expect: String,
}

fn case(name: &'static str, path: &'static str, body: String, status: u16, expect: &str) -> Case {
    Case {
        name,
        path,
        content_type: "application/json",
        headers: Vec::new(),
        body: body.into_bytes(),
        status,
        expect: expect.to_string(),
    }
}

fn cases(size: usize) -> Vec<Case> {
    let cols = IRIS.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(",");
    let mut v = Vec::new();

    // dataframe_split: many rows of numbers (accepted), then a huge column list (refused).
    let (rows, n) = repeat(size, |i, s| {
        let r = iris_row(i);
        write!(s, "[{},{},{},{}]", r[0], r[1], r[2], r[3]).unwrap();
    });
    v.push(case(
        "dataframe_split, numbers",
        "/models/iris-v1/invocations",
        format!("{{\"dataframe_split\": {{\"columns\": [{cols}], \"data\": [{rows}]}}}}"),
        200,
        &format!("rows={n}"),
    ));
    v.push(case(
        "dataframe_split, a very long string",
        "/models/iris-v1/invocations",
        format!("{{\"dataframe_split\": {{\"columns\": [{cols}], \"data\": [[\"{}\", 1, 1, 1]]}}}}", "x".repeat(size)),
        400,
        "Failed to convert column sepal_length at row 0 to type 'float32'",
    ));
    // The tightest rows: ten bytes each, answered with several times that.
    let (rows, n) = repeat(size, |_, s| s.push_str("[1,1,1,1]"));
    v.push(case(
        "dataframe_split, the tightest rows",
        "/models/iris-v1/invocations",
        format!("{{\"dataframe_split\": {{\"columns\": [{cols}], \"data\": [{rows}]}}}}"),
        200,
        &format!("rows={n}"),
    ));
    let (rows, n) = repeat(size, |_, s| s.push_str("[1,1,1,1]"));
    v.push(case(
        "instances, the tightest rows (answered by output)",
        "/models/iris-v1/invocations",
        format!("{{\"instances\": [{rows}]}}"),
        200,
        &format!("label={n}"),
    ));
    let (names, _) = repeat(size, |i, s| write!(s, "\"c{i}\"").unwrap());
    v.push(case(
        "dataframe_split, huge column list",
        "/models/mlp/invocations",
        format!("{{\"dataframe_split\": {{\"columns\": [{names}], \"data\": [[1]]}}}}"),
        400,
        "more than 65536 columns",
    ));

    // dataframe_records: many rows (accepted); a different key on every row (the finding);
    // a model without column names; one row with a huge key count.
    let (rows, n) = repeat(size, |i, s| {
        let r = iris_row(i);
        write!(
            s,
            "{{\"sepal_length\":{},\"sepal_width\":{},\"petal_length\":{},\"petal_width\":{}}}",
            r[0], r[1], r[2], r[3]
        )
        .unwrap();
    });
    v.push(case(
        "dataframe_records, rows",
        "/models/iris-v1/invocations",
        format!("{{\"dataframe_records\": [{rows}]}}"),
        200,
        &format!("rows={n}"),
    ));
    let (distinct, _) = repeat(size, |i, s| write!(s, "{{\"k{i}\":1}}").unwrap());
    v.push(case(
        "dataframe_records, a distinct key per row",
        "/models/iris-v1/invocations",
        format!("{{\"dataframe_records\": [{distinct}]}}"),
        400,
        "item 0 has the key 'k0', which is not a column of this model",
    ));
    let (distinct64, _) = repeat(size, |i, s| {
        s.push('{');
        for c in 0..63 {
            write!(s, "\"c{c}\":1,").unwrap();
        }
        write!(s, "\"k{i}\":1}}").unwrap();
    });
    v.push(case(
        "dataframe_records, no column names, a new key per row",
        "/models/mlp/invocations",
        format!("{{\"dataframe_records\": [{distinct64}]}}"),
        400,
        "item 1 has the key 'k1', which item 0 does not have",
    ));
    let (keys, _) = repeat(size, |i, s| write!(s, "\"k{i}\":1").unwrap());
    v.push(case(
        "inputs, one row object with a huge key count",
        "/models/mlp/invocations",
        format!("{{\"inputs\": [{{{keys}}}]}}"),
        400,
        "more than 65536 columns",
    ));

    // instances / inputs: row objects with distinct keys, a column dictionary with a huge key
    // count, deep nesting, and big tensors and columns (accepted).
    v.push(case(
        "dataframe_records, a very long key",
        "/models/iris-v1/invocations",
        format!("{{\"dataframe_records\": [{{\"{}\": 1}}]}}", "k".repeat(size)),
        400,
        "which is not a column of this model",
    ));
    v.push(case(
        "instances, a distinct key per row",
        "/models/iris-columns/invocations",
        format!("{{\"instances\": [{distinct}]}}"),
        400,
        "item 0 has the key 'k0', which is not a column of this model",
    ));
    let (dict, _) = repeat(size, |i, s| write!(s, "\"k{i}\":[1]").unwrap());
    v.push(case(
        "inputs, a dictionary with a huge key count",
        "/models/iris-v1/invocations",
        format!("{{\"inputs\": {{{dict}}}}}"),
        400,
        "Model is missing inputs",
    ));
    v.push(case(
        "instances, nested 100k deep",
        "/models/mlp/invocations",
        format!("{{\"instances\": {}{}}}", "[".repeat(size / 2), "]".repeat(size / 2)),
        400,
        "Shape of input 'input'",
    ));
    let (rows, n) = repeat(size, |i, s| {
        s.push('[');
        for c in 0..64 {
            write!(s, "{}{:.6}", if c > 0 { "," } else { "" }, ((i * 64 + c) % 1000) as f32 / 1000.0).unwrap();
        }
        s.push(']');
    });
    v.push(case(
        "inputs, a big tensor",
        "/models/mlp/invocations",
        format!("{{\"inputs\": [{rows}]}}"),
        200,
        &format!("variable={n}"),
    ));
    let (rows, n) = repeat(size, |_, s| {
        s.push('[');
        s.push_str(&["1"; 64].join(","));
        s.push(']');
    });
    v.push(case(
        "inputs, a big tensor of one-digit numbers",
        "/models/mlp/invocations",
        format!("{{\"inputs\": [{rows}]}}"),
        200,
        &format!("variable={n}"),
    ));
    let per = size / 4;
    let column = |k: usize| repeat(per, |i, s| write!(s, "{}", iris_row(i)[k]).unwrap());
    let parts: Vec<(String, usize)> = (0..4).map(column).collect();
    let n = parts.iter().map(|p| p.1).min().unwrap();
    let dict = IRIS
        .iter()
        .zip(&parts)
        .map(|(c, (text, _))| {
            // Equal lengths: cut every column to the shortest.
            let cells: Vec<&str> = text.split(',').take(n).collect();
            format!("\"{c}\": [{}]", cells.join(","))
        })
        .collect::<Vec<_>>()
        .join(",");
    v.push(case(
        "inputs, big columns",
        "/models/iris-columns/invocations",
        format!("{{\"inputs\": {{{dict}}}}}"),
        200,
        &format!("rows={n}"),
    ));

    // CSV: many rows (accepted), a huge header (refused).
    let mut csv = IRIS.join(",");
    let mut n = 0;
    while csv.len() < size {
        let r = iris_row(n);
        write!(csv, "\n{},{},{},{}", r[0], r[1], r[2], r[3]).unwrap();
        n += 1;
    }
    v.push(Case {
        content_type: "text/csv",
        ..case("CSV, rows", "/models/iris-v1/invocations", csv, 200, &format!("rows={n}"))
    });
    let (header, _) = repeat(size, |i, s| write!(s, "c{i}").unwrap());
    v.push(Case {
        content_type: "text/csv",
        ..case(
            "CSV, huge header",
            "/models/iris-v1/invocations",
            format!("{header}\n1"),
            400,
            "more than 65536 columns",
        )
    });

    // Open Inference Protocol: a big JSON tensor and the same in binary (accepted), deep data,
    // a huge declared shape with little data, a huge shape list, many inputs.
    let (data, n) = repeat(size, |i, s| write!(s, "{:.6}", (i % 1000) as f32 / 1000.0).unwrap());
    let rows = n / 64;
    let data: String = data.split(',').take(rows * 64).collect::<Vec<_>>().join(",");
    v.push(case(
        "v2 JSON, a big tensor",
        "/v2/models/mlp/infer",
        format!("{{\"inputs\": [{{\"name\": \"input\", \"shape\": [{rows}, 64], \"datatype\": \"FP32\", \"data\": [{data}]}}]}}"),
        200,
        &format!("v2={rows}"),
    ));
    let rows = size / 256;
    let header = format!(
        "{{\"inputs\": [{{\"name\": \"input\", \"shape\": [{rows}, 64], \"datatype\": \"FP32\", \"parameters\": {{\"binary_data_size\": {}}}}}]}}",
        rows * 256
    );
    let mut body = header.clone().into_bytes();
    for i in 0..rows * 64 {
        body.extend_from_slice(&((i % 7) as f32).to_le_bytes());
    }
    v.push(Case {
        content_type: "application/octet-stream",
        headers: vec![("inference-header-content-length", header.len().to_string())],
        body,
        ..case("v2 binary, a big tensor", "/v2/models/mlp/infer", String::new(), 200, &format!("v2={rows}"))
    });
    v.push(case(
        "v2 JSON, data nested 100k deep",
        "/v2/models/mlp/infer",
        format!(
            "{{\"inputs\": [{{\"name\": \"input\", \"shape\": [1, 64], \"datatype\": \"FP32\", \"data\": {}{}}}]}}",
            "[".repeat(size / 2),
            "]".repeat(size / 2)
        ),
        400,
        "recursion limit",
    ));
    v.push(case(
        "v2 JSON, a huge declared shape",
        "/v2/models/mlp/infer",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [100000000000, 64], \"datatype\": \"FP32\", \"data\": [1, 2]}]}"
            .into(),
        400,
        "has 2 values in 'data'",
    ));
    let (dims, _) = repeat(size, |_, s| s.push('1'));
    v.push(case(
        "v2 JSON, a huge shape list",
        "/v2/models/mlp/infer",
        format!(
            "{{\"inputs\": [{{\"name\": \"input\", \"shape\": [{dims}], \"datatype\": \"FP32\", \"data\": [1]}}]}}"
        ),
        400,
        "more than 64 items",
    ));
    let (inputs, _) =
        repeat(size, |_, s| s.push_str("{\"name\":\"input\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[1]}"));
    v.push(case(
        "v2 JSON, many inputs",
        "/v2/models/mlp/infer",
        format!("{{\"inputs\": [{inputs}]}}"),
        400,
        "more than 4096 items",
    ));
    v
}

/// What a success must show: the number of records or of output rows.
fn summarize(answer: &[u8]) -> String {
    let v: Value = serde_json::from_slice(answer).expect("a JSON answer");
    if let Some(records) = v["predictions"].as_array() {
        return format!("rows={}", records.len());
    }
    if let Some(out) = v["predictions"]["label"].as_array() {
        return format!("label={}", out.len());
    }
    if let Some(out) = v["predictions"]["variable"].as_array() {
        return format!("variable={}", out.len());
    }
    if let Some(outputs) = v["outputs"].as_array() {
        return format!("v2={}", outputs[0]["shape"][0]);
    }
    format!("{v}")
}

/// Each attack against a fresh server (freed memory an allocator keeps from an earlier request
/// would count against the next one), checked on the process's peak resident memory.
#[tokio::test]
async fn every_form_stays_within_its_memory_budget() {
    let reg = registry();
    let client = reqwest::Client::new();
    for c in cases(3 * MIB) {
        let model = c.path.trim_start_matches("/models/").trim_start_matches("/v2/models/");
        let server = serve(&reg, &model[..model.find('/').unwrap()], &[]).await;
        let pid = server.pid();
        let baseline = peak_rss(pid);
        let body_len = c.body.len();
        let started = Instant::now();
        let mut req = client.post(server.url(c.path)).header("Content-Type", c.content_type).body(c.body);
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        let answer = resp.bytes().await.unwrap();
        let took = started.elapsed();
        let peak = peak_rss(pid);
        // The target is peak RSS ≤ 4 × body + 64 MiB on the release build, whose idle RSS is
        // ~44 MiB (bench/attack checks that, with 60 MiB bodies). This debug build idles ~15 MiB
        // higher, so the same target is checked on what the request adds: at most 4 × body plus
        // the 20 MiB the release build has left above its idle.
        let budget = baseline + 4 * body_len + 20 * MIB;
        println!(
            "{:<55} {:>4.1} MiB body  {status}  peak {:>5.1} MiB (idle {:>4.1}, budget {:>5.1})  {took:?}",
            c.name,
            body_len as f64 / MIB as f64,
            peak as f64 / MIB as f64,
            baseline as f64 / MIB as f64,
            budget as f64 / MIB as f64
        );
        let text = if status == 200 { summarize(&answer) } else { String::from_utf8_lossy(&answer).into_owned() };
        assert_eq!(status, c.status, "{}: {text}", c.name);
        assert!(text.contains(&c.expect), "{}: {text:.300} should contain {:?}", c.name, c.expect);
        assert!(status == 200 || answer.len() < 4096, "{}: a {} byte error message", c.name, answer.len());
        assert!(peak <= budget, "{}: peak RSS {peak} over idle {baseline} + 4 × {body_len} + 20 MiB", c.name);
        assert_eq!(client.get(server.url("/ping")).send().await.unwrap().status(), 200, "{}", c.name);
    }
}

/// A body whose parse takes a while: a big `[N, 64]` tensor for mlp.
fn heavy_body(size: usize) -> Vec<u8> {
    let (rows, _) = repeat(size, |i, s| {
        s.push('[');
        for c in 0..64 {
            write!(s, "{}{}", if c > 0 { "," } else { "" }, (i + c) % 10).unwrap();
        }
        s.push(']');
    });
    format!("{{\"inputs\": [{rows}]}}").into_bytes()
}

#[tokio::test]
async fn ping_answers_while_heavy_bodies_are_parsed() {
    let reg = registry();
    let server = serve(&reg, "mlp", &[]).await;
    let client = reqwest::Client::new();
    let body = heavy_body(3 * MIB);
    let heavy: Vec<_> = (0..2)
        .map(|_| {
            let (c, url, body) = (client.clone(), server.url("/models/mlp/invocations"), body.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = c.post(url).header("Content-Type", "application/json").body(body).send().await.unwrap();
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                (status, started.elapsed())
            })
        })
        .collect();
    let (mut worst, mut pings) = (Duration::ZERO, 0);
    while !heavy.iter().all(|h| h.is_finished()) {
        let started = Instant::now();
        let r = client.get(server.url("/ping")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        worst = worst.max(started.elapsed());
        pings += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for h in heavy {
        let (status, took) = h.await.unwrap();
        println!("heavy request: {status} in {took:?}");
        assert_eq!(status, 200);
    }
    println!("/ping: {pings} answers, worst {worst:?} (target 100 ms on a release build)");
    assert!(pings >= 5, "the heavy requests finished too fast to test anything ({pings} pings)");
    assert!(worst < Duration::from_secs(1), "/ping took {worst:?} while bodies were parsed");
}

#[tokio::test]
async fn sigterm_during_a_heavy_parse_exits_within_the_grace_period() {
    let reg = registry();
    let mut server = serve(&reg, "mlp", &["--shutdown-grace", "1s"]).await;
    // Far longer to parse than the grace period (tens of seconds on a debug build).
    let body = heavy_body(24 * MIB);
    let addr = server.base.trim_start_matches("http://").to_string();
    // Send the whole request on a raw connection, then signal while the server parses it.
    let sent = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let head = format!(
            "POST /models/mlp/invocations HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        s
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.pid();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let (exit, log) = tokio::task::spawn_blocking(move || {
        let exit = server.wait_exit(Duration::from_secs(20));
        (exit, server.log())
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    drop(sent);
    println!("exited {exit:?} {took:?} after SIGTERM (grace 1 s)");
    assert!(exit.is_some(), "still running 20 s after SIGTERM; log:\n{log}");
    assert!(took < Duration::from_secs(6), "exit took {took:?} with a 1 s grace period; log:\n{log}");
}

/// Requests beyond 2048 rows run in slices (bounding ONNX Runtime's intermediates): every row's
/// answer matches the answer to the same row sent in a small request.
#[tokio::test]
async fn large_requests_run_in_slices_with_the_same_answers() {
    let reg = registry();
    let client = reqwest::Client::new();
    let score = |server: &Server, path: &str, body: String| {
        let req = client.post(server.url(path)).header("Content-Type", "application/json").body(body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let rows = 20_000;
    let iris = serve(&reg, "iris-v1", &[]).await;
    let table = |n: usize| {
        let data: Vec<String> = (0..n).map(|i| format!("{:?}", iris_row(i))).collect();
        format!("{{\"dataframe_split\": {{\"columns\": {:?}, \"data\": [{}]}}}}", IRIS, data.join(","))
    };
    let big = score(&iris, "/models/iris-v1/invocations", table(rows)).await;
    let small = score(&iris, "/models/iris-v1/invocations", table(50)).await;
    let (big, small) = (big["predictions"].as_array().unwrap(), small["predictions"].as_array().unwrap());
    assert_eq!(big.len(), rows);
    for (i, p) in big.iter().enumerate() {
        common::close(p, &small[i % 50], 1e-6, &format!("iris row {i}")).unwrap();
    }
    drop(iris);
    let mlp = serve(&reg, "mlp", &[]).await;
    let tensor = |n: usize| {
        let data: Vec<String> = (0..n)
            .map(|i| format!("{:?}", (0..64).map(|c| ((i % 7) * 64 + c) as f32 / 448.0).collect::<Vec<_>>()))
            .collect();
        format!("{{\"inputs\": [{}]}}", data.join(","))
    };
    let big = score(&mlp, "/models/mlp/invocations", tensor(rows)).await;
    let small = score(&mlp, "/models/mlp/invocations", tensor(7)).await;
    let (big, small) =
        (big["predictions"]["variable"].as_array().unwrap(), small["predictions"]["variable"].as_array().unwrap());
    assert_eq!(big.len(), rows);
    for (i, p) in big.iter().enumerate() {
        common::close(p, &small[i % 7], 1e-5, &format!("mlp row {i}")).unwrap();
    }
}
