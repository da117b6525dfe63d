//! The MLflow scoring protocol, as `mlflow models serve` answers it:
//!
//! - `GET /ping`, `GET /health` — 200 once every served model is loaded, 503 before
//!   (`/health` answers JSON with per-model status when asked with `Accept: application/json`)
//! - `GET /version` — the server version
//! - `POST /invocations` — score with the default model
//! - `POST /models/{name}/invocations` — score with a named served model

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::error::ApiError;
use crate::manager::{ModelManager, Slot};
use crate::runtime::payload::{self, Format};
use crate::runtime::ScoringError;

#[derive(Clone)]
pub struct ScoringState {
    pub manager: ModelManager,
    pub max_body_size: usize,
}

pub fn routes(state: ScoringState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/health", get(health))
        .route("/version", get(version))
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
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let statuses: Vec<_> = st.manager.slots().iter().map(|s| s.status()).collect();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
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

async fn invocations(
    State(st): State<ScoringState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let slot = st
        .manager
        .default_slot()
        .ok_or_else(|| ApiError::NotFound("no model is served".into()))?
        .clone();
    score(&st, &slot, &headers, body).await
}

async fn model_invocations(
    State(st): State<ScoringState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let slot = st
        .manager
        .slot(&name)
        .ok_or_else(|| ApiError::NotFound(format!("model '{name}' is not served here")))?
        .clone();
    score(&st, &slot, &headers, body).await
}

async fn score(
    st: &ScoringState,
    slot: &Arc<Slot>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let format = payload::format_of(content_type)?;
    let bytes = read_body(headers, body, st.max_body_size).await?;
    let Some(active) = slot.active() else {
        let why = slot
            .status()
            .last_error
            .unwrap_or_else(|| "it is still loading".into());
        return Err(ScoringError::unavailable(format!(
            "Model {} is not loaded yet: {why}",
            slot.uri
        ))
        .into());
    };
    let request = match format {
        Format::Json => payload::parse_json(&bytes)?,
        Format::Csv => payload::Request {
            payload: payload::Payload::Frame(payload::parse_csv(&bytes)?),
            params: None,
        },
    };
    let out = active.model.predict(&request.payload).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// Read the whole body, refusing more than `limit` bytes (413) — early from Content-Length,
/// else while reading.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ApiError::PayloadTooLarge { limit }
        } else {
            ScoringError::bad_request(format!("could not read the request body: {e}")).into()
        }
    })
}
