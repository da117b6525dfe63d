//! End to end: the Open Inference Protocol over gRPC (`serve --grpc-port`) with a tonic client
//! generated from the same proto: the six RPCs, typed and raw contents checked against the
//! Python onnxruntime references, errors and their status codes, bearer metadata, a message
//! over --max-body-size, raw contents of the wrong size, metrics, and the shared shutdown (both
//! listeners stop on SIGTERM; a request in flight is answered first).

mod common;

use std::time::Duration;

use common::{repo, Registry, Server};
use regserve::server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use regserve::server::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use regserve::server::grpc::proto::*;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn reference(model: &str, case: &str) -> Value {
    let path = repo().join("models/reference").join(model).join(format!("{case}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

/// The address in the `grpc listening on ADDR` line (logged before the HTTP one).
async fn grpc_client(server: &Server) -> GrpcInferenceServiceClient<Channel> {
    let log = server.log();
    let addr = log
        .lines()
        .find_map(|l| l.split("grpc listening on ").nth(1))
        .unwrap_or_else(|| panic!("no gRPC address in the log:\n{log}"))
        .trim()
        .to_string();
    GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.expect("connect to the gRPC port")
}

/// The iris reference rows as a request input, in typed contents or raw bytes.
fn iris_request(rows: &Value, raw: bool) -> ModelInferRequest {
    let values: Vec<f32> = flat(rows).into_iter().map(|v| v as f32).collect();
    let n = rows.as_array().unwrap().len() as i64;
    let mut input = InferInputTensor {
        name: "float_input".into(),
        datatype: "FP32".into(),
        shape: vec![n, 4],
        ..Default::default()
    };
    let mut req = ModelInferRequest { model_name: "iris".into(), id: "req-7".into(), ..Default::default() };
    if raw {
        req.raw_input_contents = vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()];
    } else {
        input.contents = Some(InferTensorContents { fp32_contents: values, ..Default::default() });
    }
    req.inputs = vec![input];
    req
}

fn f32s(raw: &[u8]) -> Vec<f64> {
    raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
}

fn i64s(raw: &[u8]) -> Vec<i64> {
    raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "value {i}: {g} != {w}");
    }
}

#[tokio::test]
async fn six_rpcs_typed_and_raw_contents_errors_and_metrics() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    reg.register("iris-v2", "iris", &[]);
    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--pinned-versions",
        "any",
        "--grpc-port",
        "0",
        "--max-body-size",
        "4KiB",
    ]);
    server.wait_ready("/v2/health/ready", Duration::from_secs(30)).await;
    let mut c = grpc_client(&server).await;

    assert!(c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let meta = c.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "regserve");
    let ready = |name: &str, version: &str| ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(c.model_ready(ready("iris", "")).await.unwrap().into_inner().ready);
    assert!(c.model_ready(ready("iris", "2")).await.unwrap().into_inner().ready);
    assert_eq!(c.model_ready(ready("nope", "")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(c.model_ready(ready("iris", "9")).await.unwrap_err().code(), Code::NotFound);

    let m = c.model_metadata(ModelMetadataRequest { name: "iris".into(), version: String::new() }).await.unwrap();
    let m = m.into_inner();
    assert_eq!(
        (m.name.as_str(), m.versions.as_slice(), m.platform.as_str()),
        ("iris", &["1".to_string()][..], "onnxruntime_onnx")
    );
    assert_eq!(
        (m.inputs[0].name.as_str(), m.inputs[0].datatype.as_str(), m.inputs[0].shape.as_slice()),
        ("float_input", "FP32", &[-1i64, 4][..])
    );
    let outs: Vec<_> = m.outputs.iter().map(|o| (o.name.as_str(), o.datatype.as_str(), o.shape.clone())).collect();
    assert_eq!(outs, [("label", "INT64", vec![-1]), ("probabilities", "FP32", vec![-1, 3])]);

    // Typed and raw contents give the same answer, the references' (Python onnxruntime), in
    // raw_output_contents.
    for (version, model) in [("", "iris-v1"), ("2", "iris-v2")] {
        let r = reference(model, "instances_2rows");
        let rows = &r["request"]["instances"];
        let mut answers = Vec::new();
        for raw in [false, true] {
            let mut req = iris_request(rows, raw);
            req.model_version = version.into();
            let resp = c.model_infer(req).await.unwrap().into_inner();
            let want_version = if version.is_empty() { "1" } else { version };
            assert_eq!(
                (resp.model_name.as_str(), resp.model_version.as_str(), resp.id.as_str()),
                ("iris", want_version, "req-7")
            );
            let outs: Vec<_> =
                resp.outputs.iter().map(|o| (o.name.as_str(), o.datatype.as_str(), o.shape.clone())).collect();
            assert_eq!(outs, [("label", "INT64", vec![2]), ("probabilities", "FP32", vec![2, 3])]);
            assert!(resp.outputs.iter().all(|o| o.contents.is_none()));
            let labels: Vec<i64> =
                r["raw_outputs"]["label"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(i64s(&resp.raw_output_contents[0]), labels);
            assert_close(&f32s(&resp.raw_output_contents[1]), &flat(&r["raw_outputs"]["probabilities"]), 1e-6);
            answers.push(resp.raw_output_contents);
        }
        assert_eq!(answers[0], answers[1], "typed and raw inputs answer the same bytes");
    }

    // Output selection.
    let mut req = iris_request(&reference("iris-v1", "instances_2rows")["request"]["instances"], true);
    req.outputs = vec![InferRequestedOutputTensor { name: "probabilities".into(), ..Default::default() }];
    let resp = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!((resp.outputs[0].name.as_str(), resp.raw_output_contents.len()), ("probabilities", 1));

    // Errors: the status code of the HTTP protocol's status, the same message.
    let rows = reference("iris-v1", "instances_2rows")["request"]["instances"].clone();
    let error = |mut c: GrpcInferenceServiceClient<Channel>, req: ModelInferRequest| async move {
        match c.model_infer(req).await {
            Ok(_) => panic!("expected an error, got an answer"),
            Err(e) => (e.code(), e.message().to_string()),
        }
    };
    let mut wrong_size = iris_request(&rows, true);
    wrong_size.raw_input_contents[0].pop();
    let (code, msg) = error(c.clone(), wrong_size).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("31 bytes of binary data") && msg.contains("needs 32"), "{msg}");
    let mut short = iris_request(&rows, false);
    short.inputs[0].contents.as_mut().unwrap().fp32_contents.pop();
    let (code, msg) = error(c.clone(), short).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("has 7 values in contents.fp32_contents"), "{msg}");
    let mut shape = iris_request(&rows, true);
    shape.inputs[0].shape = vec![4, 2];
    assert_eq!(error(c.clone(), shape).await.0, Code::InvalidArgument);
    let mut overflow = iris_request(&rows, true);
    overflow.inputs[0].shape = vec![i64::MAX, 4];
    let (code, msg) = error(c.clone(), overflow).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("too large"), "{msg}");
    let mut missing = iris_request(&rows, true);
    missing.inputs[0].name = "x".into();
    let (code, msg) = error(c.clone(), missing).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("Unexpected input 'x'"), "{msg}");
    let mut output = iris_request(&rows, true);
    output.outputs = vec![InferRequestedOutputTensor { name: "nope".into(), ..Default::default() }];
    let (code, msg) = error(c.clone(), output).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("Unknown output 'nope'"), "{msg}");
    let mut unknown = iris_request(&rows, true);
    unknown.model_name = "nope".into();
    let (code, msg) = error(c.clone(), unknown).await;
    assert_eq!((code, msg.as_str()), (Code::NotFound, "Model 'nope' is not served here"));
    let mut version = iris_request(&rows, true);
    version.model_version = "9".into();
    assert_eq!(error(c.clone(), version).await.0, Code::NotFound);
    let mut not_a_number = iris_request(&rows, true);
    not_a_number.model_version = "latest".into();
    assert_eq!(error(c.clone(), not_a_number).await.0, Code::InvalidArgument);
    // A message over --max-body-size (4 KiB): refused before it is decoded.
    let big: Vec<Value> = (0..300).map(|_| rows[0].clone()).collect();
    let (code, msg) = error(c.clone(), iris_request(&Value::Array(big), true)).await;
    assert_eq!(code, Code::ResourceExhausted, "{msg}");
    // Repository control is the registry's.
    let e = c.repository_model_load(RepositoryModelLoadRequest { model_name: "iris".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    // Counted under protocol="grpc", with the status of the HTTP table.
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let count = |status: &str, version: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("regserve_requests_total{") && l.contains("protocol=\"grpc\""))
            .filter(|l| l.contains(&format!("status=\"{status}\"")) && l.contains(&format!("version=\"{version}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("200", "1"), 3.0, "{metrics}");
    assert_eq!(count("200", "2"), 2.0, "{metrics}");
    assert!(count("400", "1") >= 6.0, "{metrics}");
}

// Multi-threaded: the client's connection task must keep running (answer the server's
// GOAWAY ping) while the test thread blocks waiting for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_metadata_guards_the_model_rpcs_and_sigterm_stops_both_listeners() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let token = reg.data_dir().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let mut server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--grpc-port",
        "0",
        "--auth-token-file",
        token.to_str().unwrap(),
        "--shutdown-grace",
        "10s",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let mut c = grpc_client(&server).await;
    let rows = reference("iris-v1", "instances_2rows")["request"]["instances"].clone();
    let with = |value: &str, req: ModelInferRequest| {
        let mut r = Request::new(req);
        r.metadata_mut().insert("authorization", value.parse().unwrap());
        r
    };

    // Health and server metadata stay open, as on HTTP.
    assert!(c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    assert_eq!(c.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner().name, "regserve");
    // The model RPCs need the token.
    let e = c.model_infer(iris_request(&rows, true)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("authorization: Bearer"), "{}", e.message());
    assert_eq!(
        c.model_infer(with("Bearer wrong", iris_request(&rows, true))).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        c.model_infer(with("s3cret-token", iris_request(&rows, true))).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let meta = ModelMetadataRequest { name: "iris".into(), version: String::new() };
    assert_eq!(c.model_metadata(meta.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let ready = ModelReadyRequest { name: "iris".into(), version: String::new() };
    assert_eq!(c.model_ready(ready.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let resp = c.model_infer(with("Bearer s3cret-token", iris_request(&rows, true))).await.unwrap().into_inner();
    assert_eq!(resp.model_version, "1");
    let mut r = Request::new(meta);
    r.metadata_mut().insert("authorization", "Bearer s3cret-token".parse().unwrap());
    assert_eq!(c.model_metadata(r).await.unwrap().into_inner().versions, ["1"]);
    let mut r = Request::new(ready);
    r.metadata_mut().insert("authorization", "Bearer s3cret-token".parse().unwrap());
    assert!(c.model_ready(r).await.unwrap().into_inner().ready);

    // SIGTERM: both listeners stop, the process exits 0.
    let killed = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = server.wait_exit(Duration::from_secs(20)).expect("serve exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}; log:\n{}", server.log());
    assert!(c.server_live(ServerLiveRequest {}).await.is_err(), "the gRPC port still answers after shutdown");
}

// Multi-threaded for the same reason as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_inflight_grpc_request_finish() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let mut server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--grpc-port",
        "0",
        "--max-body-size",
        "128MiB",
        "--shutdown-grace",
        "60s",
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = grpc_client(&server).await.max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20);
    // Three million rows: a few seconds of conversion and inference, so SIGTERM comes mid-request.
    const ROWS: usize = 3_000_000;
    let row: Vec<u8> = [5.0f32, 3.5, 1.3, 0.3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let req = ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![InferInputTensor {
            name: "float_input".into(),
            datatype: "FP32".into(),
            shape: vec![ROWS as i64, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![row.repeat(ROWS)],
        ..Default::default()
    };
    let mut client = c.clone();
    let inflight = tokio::spawn(async move {
        let answer = client.model_infer(req).await;
        (answer, std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed_at = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap().success());
    let (answer, answered_at) = inflight.await.unwrap();
    let answer =
        answer.unwrap_or_else(|e| panic!("the in-flight request failed: {e:?}; log:\n{}", server.log())).into_inner();
    assert!(answered_at > killed_at, "the request finished before SIGTERM: make it larger");
    assert_eq!(answer.outputs[1].shape, [ROWS as i64, 3]);
    assert_eq!(answer.raw_output_contents[1].len(), ROWS * 3 * 4);
    let status = server.wait_exit(Duration::from_secs(30)).expect("serve exits once the request is answered");
    assert!(status.success(), "exit status {status:?}");
    let log = server.log();
    assert!(log.contains("gRPC stopped accepting; waiting for in-flight requests"), "{log}");
}

/// iris v1 in Production served over HTTP and gRPC with these body limits, ready.
async fn iris_with_budget(max_body: &str, inflight: &str) -> (Registry, Server) {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let server = reg.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--grpc-port",
        "0",
        "--max-body-size",
        max_body,
        "--max-inflight-body-size",
        inflight,
    ]);
    server.wait_ready("/ping", Duration::from_secs(30)).await;
    (reg, server)
}

#[tokio::test]
async fn messages_in_flight_share_a_memory_budget() {
    let (_reg, server) = iris_with_budget("8MiB", "1MiB").await;
    let mut c = grpc_client(&server).await.max_encoding_message_size(16 << 20);
    let rows = reference("iris-v1", "instances_2rows")["request"]["instances"].clone();
    // 2 MiB of rows: under --max-body-size, over what all messages together may hold.
    let big: Vec<Value> = (0..(2 << 20) / 16).map(|_| rows[0].clone()).collect();
    let e = c.model_infer(iris_request(&Value::Array(big), true)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("memory budget"), "{}", e.message());
    // The refused message's bytes went back to the budget.
    for _ in 0..3 {
        let resp = c.model_infer(iris_request(&rows, true)).await.unwrap().into_inner();
        assert_eq!(resp.outputs.len(), 2);
    }
}

/// HTTP bodies and gRPC messages share `serve`'s one budget: an HTTP upload holding most of
/// it makes a gRPC message that would pass the budget on its own get UNAVAILABLE, and once the
/// upload is gone the same message is answered.
#[tokio::test]
async fn http_bodies_and_grpc_messages_share_one_budget() {
    use tokio::io::AsyncWriteExt;
    let (_reg, server) = iris_with_budget("4MiB", "1MiB").await;
    let mut c = grpc_client(&server).await.max_encoding_message_size(16 << 20);
    let rows = reference("iris-v1", "instances_2rows")["request"]["instances"].clone();
    // About 400 KiB of rows on the wire: within 1 MiB alone.
    let half: Vec<Value> = (0..(400 << 10) / 16).map(|_| rows[0].clone()).collect();
    let message = iris_request(&Value::Array(half), true);
    c.model_infer(message.clone()).await.expect("alone, the message fits the budget");
    // An HTTP upload declaring 800 KiB, of which it sends a few bytes and then stalls: its
    // Content-Length is charged at once.
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut upload = tokio::net::TcpStream::connect(&addr).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"inst",
                800 << 10
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    upload.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = c.model_infer(message.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("memory budget"), "{}", e.message());
    // The upload goes away: its charge is returned, and the message is answered.
    drop(upload);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.model_infer(message.clone()).await {
            Ok(resp) => {
                assert_eq!(resp.into_inner().outputs.len(), 2);
                break;
            }
            Err(e) if e.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the budget was not returned: {e:?}"),
        }
    }
}
