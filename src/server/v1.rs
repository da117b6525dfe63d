//! KServe's V1 data plane (the TensorFlow Serving REST shape), for InferenceServices that name
//! protocol v1 — KServe's default:
//!
//! - `GET /v1/models` — `{"models": [names]}`
//! - `GET /v1/models/{name}` — `{"name", "ready"}`: 200 when loaded, 503 before
//! - `POST /v1/models/{name}:predict` — `{"instances": [...]}` (or MLflow's `inputs`,
//!   `dataframe_split`, …) → `{"predictions": [...]}`: the body MLflow's scoring protocol reads
//!   and answers, scored as `/models/{name}/invocations` is, counted as `protocol="v1"`
//! - `POST /v1/models/{name}:explain` — 501: regserve has no explainers
//!
//! Errors keep `/invocations`' body (`{"error_code", "message"}`); KServe's V1 leaves error
//! bodies to the server.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::scoring::{score, ScoringState};

/// Behind the token when one is set, as the other scoring routes.
pub fn routes(state: ScoringState) -> Router {
    Router::new().route("/v1/models", get(list)).route("/v1/models/{target}", get(ready).post(verb)).with_state(state)
}

async fn list(State(st): State<ScoringState>) -> Json<serde_json::Value> {
    let names: Vec<&str> = st.manager.slots().iter().map(|s| s.name.as_str()).collect();
    Json(json!({ "models": names }))
}

async fn ready(State(st): State<ScoringState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let slot = st.manager.slot(&name).ok_or_else(|| not_served(&name))?;
    let ready = slot.active().is_some() && !st.manager.is_draining();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(json!({ "name": name, "ready": ready }))).into_response())
}

async fn verb(
    State(st): State<ScoringState>,
    Path(target): Path<String>,
    mut headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some((name, verb)) = target.rsplit_once(':') else {
        return Err(ApiError::NotFound(format!("POST /v1/models/{target}: name a verb, /v1/models/NAME:predict")));
    };
    let slot = st.manager.slot(name).ok_or_else(|| not_served(name))?.clone();
    match verb {
        "predict" => {
            // V1 bodies are JSON; a client that sends no type means it.
            headers.entry(header::CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
            Ok(score(&st, &slot, &headers, body, "v1").await)
        }
        "explain" => Err(ApiError::NotImplemented(format!(
            "model '{name}' has no explainer: regserve serves predictions only (:predict)"
        ))),
        other => Err(ApiError::NotFound(format!("unknown verb ':{other}'; V1 has :predict and :explain"))),
    }
}

fn not_served(name: &str) -> ApiError {
    ApiError::NotFound(format!("model '{name}' is not served here"))
}
