//! The benchmark's floor: a bare hyper server that reads the body, parses it as JSON and
//! answers a canned body — what any JSON-over-HTTP server must pay before doing real work.
//! The answer has one `{"label":0}` per row of the request (`dataframe_split.data` or
//! `inputs`, else one), so a 100-row point writes as many predictions as regserve does.
//! `cargo run --release --example floor -- PORT`

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const ROW: &[u8] = br#"{"label":0}"#;

/// Rows of a scoring request: `dataframe_split.data` or `inputs` as a list, else one.
fn rows(body: &serde_json::Value) -> usize {
    let list = body.get("dataframe_split").and_then(|s| s.get("data")).or_else(|| body.get("inputs"));
    list.and_then(serde_json::Value::as_array).map_or(1, Vec::len).max(1)
}

fn answer(rows: usize) -> Bytes {
    if rows == 1 {
        return Bytes::from_static(br#"{"predictions":[{"label":0}]}"#);
    }
    let mut out = Vec::with_capacity(18 + rows * (ROW.len() + 1));
    out.extend_from_slice(br#"{"predictions":["#);
    for i in 0..rows {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(ROW);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(Response::builder().status(400).body(Full::new(Bytes::new())).expect("static response")),
    };
    let (status, body) = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => (200, answer(rows(&v))),
        Err(_) => (400, Bytes::new()),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("static response"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handle)).await;
        });
    }
}
