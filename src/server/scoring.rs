//! The MLflow scoring protocol, as `mlflow models serve` answers it:
//!
//! - `GET /ping`, `GET /health` — 200 once every served model is loaded, 503 before
//!   (`/health` answers JSON with per-model status when asked with `Accept: application/json`)
//! - `GET /version` — the server version
//! - `POST /invocations` — score with the default model
//! - `POST /models/{name}/invocations` — score with a named served model; every answer made
//!   by a model version says which in `X-Model-Version` (the one the request held)
//! - `GET /metrics` — Prometheus metrics

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::error::ApiError;
use crate::manager::{ModelManager, Slot};
use crate::metrics;
use crate::runtime::payload;
use crate::runtime::ScoringError;

#[derive(Clone)]
pub struct ScoringState {
    pub manager: ModelManager,
    pub max_body_size: usize,
    /// Registry webhooks (`POST /hooks/mlflow`, [`super::hooks`]): `None` without a secret.
    pub webhooks: Option<Arc<super::hooks::Verifier>>,
}

/// The header naming the version that computed a scoring answer (fleet skew shows in it).
pub const MODEL_VERSION_HEADER: &str = "x-model-version";

/// Put `X-Model-Version: version` on an answer.
pub fn with_version(mut response: Response, version: Option<u64>) -> Response {
    if let Some(v) = version {
        response.headers_mut().insert(MODEL_VERSION_HEADER, axum::http::HeaderValue::from(v));
    }
    response
}

/// Health, version and metrics: open even when a token is required.
pub fn public_routes(state: ScoringState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Scoring: behind the token when one is set.
pub fn scoring_routes(state: ScoringState) -> Router {
    Router::new()
        .route("/invocations", post(invocations))
        .route("/models/{name}/invocations", post(model_invocations))
        .with_state(state)
}

async fn ping(State(st): State<ScoringState>) -> StatusCode {
    if st.manager.all_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn health(State(st): State<ScoringState>, headers: HeaderMap) -> Response {
    let ready = st.manager.all_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Public: short reasons only (no local paths, registry URLs or library messages); the log
    // has each error in full.
    let statuses: Vec<_> = st.manager.slots().iter().map(|s| s.public_status()).collect();
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    if wants_json {
        let body = json!({"status": if ready {"ready"} else {"loading"}, "registry": st.manager.source_description(), "models": statuses});
        return (status, axum::Json(body)).into_response();
    }
    let mut text = String::new();
    for s in statuses {
        let state = match (s.version, &s.last_error) {
            (Some(v), None) => format!("serving version {v}"),
            (Some(v), Some(e)) => format!("serving version {v}; last check failed: {e}"),
            (None, Some(e)) => format!("not loaded: {e}"),
            (None, None) => "loading".to_string(),
        };
        text.push_str(&format!("{}: {state}\n", s.uri));
    }
    (status, text).into_response()
}

async fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

async fn invocations(State(st): State<ScoringState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let slot = st.manager.default_slot().ok_or_else(|| ApiError::NotFound("no model is served".into()))?.clone();
    Ok(score(&st, &slot, &headers, body, "invocations").await)
}

async fn model_invocations(
    State(st): State<ScoringState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let slot =
        st.manager.slot(&name).ok_or_else(|| ApiError::NotFound(format!("model '{name}' is not served here")))?.clone();
    Ok(score(&st, &slot, &headers, body, "invocations").await)
}

/// Score an MLflow-shaped body (`dataframe_split`, `instances`, `inputs`, CSV) with `slot`,
/// counted under `protocol` (`invocations`, or `v1` for KServe's V1 `:predict`).
pub async fn score(
    st: &ScoringState,
    slot: &Arc<Slot>,
    headers: &HeaderMap,
    body: Body,
    protocol: &'static str,
) -> Response {
    let started = Instant::now();
    let (version, result) = score_inner(st, slot, headers, body).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.classify().0,
    };
    observe(&st.manager, &slot.name, version, protocol, status, started);
    slot.stats.record(status.as_u16(), started.elapsed());
    // `version` is the number of the `Active` this request cloned: the one that computed it.
    with_version(result.into_response(), version)
}

async fn score_inner(
    st: &ScoringState,
    slot: &Arc<Slot>,
    headers: &HeaderMap,
    body: Body,
) -> (Option<u64>, Result<Response, ApiError>) {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid"));
    let format = match payload::format_of(content_type) {
        Ok(f) => f,
        Err(e) => return (None, Err(e.into())),
    };
    let bytes = match read_body(headers, body, st.max_body_size).await {
        Ok(b) => b,
        Err(e) => return (None, Err(e)),
    };
    let Some(active) = slot.active() else {
        let why = slot.public_status().last_error.unwrap_or_else(|| "it is still loading".into());
        return (None, Err(ScoringError::unavailable(format!("Model {} is not loaded yet: {why}", slot.uri)).into()));
    };
    let version = Some(active.version.version);
    // The body is parsed straight into the model's input tensors, and dropped with the closure.
    let model = active.model.clone();
    let prepared = match off_workers(bytes.len(), move || model.prepare(format, &bytes)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return (version, Err(e.into())),
        Err(e) => return (version, Err(e)),
    };
    let mut chunks = match active.model.predict_chunks(prepared).await {
        Ok(c) => c,
        Err(e) => return (version, Err(e.into())),
    };
    // The first chunk holds at least one row: off the async workers when rows are large.
    let first = off_workers(chunks.row_estimate(), move || (chunks.next().unwrap_or_default(), chunks)).await;
    let (first, chunks) = match first {
        Ok(c) => c,
        Err(e) => return (version, Err(e)),
    };
    let json = [(header::CONTENT_TYPE, "application/json")];
    let mut rest = chunks.peekable();
    if rest.peek().is_none() {
        return (version, Ok((json, first).into_response()));
    }
    // A large answer: rendered chunk by chunk as hyper sends it.
    let stream = futures_util::stream::iter(
        std::iter::once(first).chain(rest).map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(c))),
    );
    (version, Ok((json, Body::from_stream(stream)).into_response()))
}

/// Bodies up to this size are parsed on the async worker that read them (microseconds).
const INLINE_PARSE_MAX: usize = 64 << 10;

/// Run `parse` (CPU-bound, linear in `size` bytes of body) where it cannot starve the async
/// workers that answer `/ping`: small bodies inline, larger ones on the blocking pool, at most
/// half the cores' worth at a time (the rest wait here, in arrival order). The permits are
/// process-wide because the cores are.
pub async fn off_workers<T: Send + 'static>(
    size: usize,
    parse: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if size <= INLINE_PARSE_MAX {
        return Ok(parse());
    }
    static PERMITS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1)))
    });
    let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed; this is a bug");
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        parse()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the request parser failed: {e}")))
}

/// Count one scoring request and its latency. `model` comes from the request path: a name this
/// server does not serve is counted under [`metrics::UNKNOWN_MODEL`], so the label values stay
/// the served models whatever clients send.
pub fn observe(
    manager: &ModelManager,
    model: &str,
    version: Option<u64>,
    protocol: &str,
    status: StatusCode,
    started: Instant,
) {
    let (model, version) = match manager.slot(model) {
        Some(_) => (model, version),
        None => (metrics::UNKNOWN_MODEL, None),
    };
    let m = metrics::metrics();
    m.requests
        .get_or_create(&metrics::RequestLabels {
            model: model.to_string(),
            version: version.map(|v| v.to_string()).unwrap_or_default(),
            protocol: protocol.to_string(),
            status: status.as_u16(),
        })
        .inc();
    m.request_duration.get_or_create(&metrics::Metrics::model(model)).observe(started.elapsed().as_secs_f64());
}

/// `GET /metrics`: Prometheus (OpenMetrics text); queue depths are read at scrape time.
pub async fn metrics_text(State(st): State<ScoringState>) -> Response {
    let m = metrics::metrics();
    for slot in st.manager.slots() {
        let depth = slot.active().map_or(0, |a| a.model.queue_depth());
        m.queue_depth.get_or_create(&metrics::Metrics::model(&slot.name)).set(depth as i64);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode()).into_response()
}

/// Read the whole body, refusing more than `limit` bytes with 413. Past the limit the rest of
/// the body is read and dropped (up to a cap) before answering, so the client gets the 413
/// instead of a connection reset.
///
/// Memory: a declared `Content-Length` is read into one buffer of that size. A body of unknown
/// length is kept in segments of [`SEGMENT`] bytes (no doubling of one buffer, which
/// would hold up to twice the bytes received while the body arrives — bytes that the in-flight
/// budget of [`body_budget`](super::body_budget) counts once) and joined once at the end.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    const DRAIN_CAP: usize = 8 << 20;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    let mut segments: Vec<axum::body::Bytes> = Vec::new();
    let mut buf = bytes::BytesMut::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    let mut seen: usize = 0;
    let mut over = declared.is_some_and(|n| n > limit as u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ScoringError::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            over = true;
        }
        if over {
            if seen > limit.saturating_add(DRAIN_CAP) {
                break;
            }
            continue;
        }
        if declared.is_some() {
            buf.extend_from_slice(&data);
            continue;
        }
        // Unknown length: fill the segment in hand to its end, then start the next.
        let mut rest = &data[..];
        while !rest.is_empty() {
            if buf.len() == buf.capacity() {
                if !buf.is_empty() {
                    segments.push(buf.split().freeze());
                }
                buf = bytes::BytesMut::with_capacity(SEGMENT);
            }
            let n = rest.len().min(buf.capacity() - buf.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    if over {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if segments.is_empty() {
        return Ok(buf.freeze());
    }
    segments.push(buf.freeze());
    let mut whole = Vec::with_capacity(seen);
    for s in segments.drain(..) {
        whole.extend_from_slice(&s);
    }
    Ok(whole.into())
}

/// The segment size for a body of unknown length (see [`read_body`]).
const SEGMENT: usize = 256 << 10;
