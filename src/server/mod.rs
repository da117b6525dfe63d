//! HTTP: one router per role, errors mapped in [`error`], served until a shutdown signal.
//!
//! - [`scoring`]: `/ping`, `/health`, `/version`, `/metrics`, `/invocations`, `/models/{name}/invocations`
//! - [`v1`]: KServe's V1 data plane under `/v1/models` (`:predict` scores as `/invocations` does)
//! - [`v2`]: the Open Inference Protocol under `/v2`
//! - [`grpc`]: the Open Inference Protocol over gRPC on `serve --grpc-port` (its own listener)
//! - [`hooks`]: `POST /hooks/mlflow` on `serve`, registry webhooks that trigger re-resolution
//! - [`registry_api`], [`tracking_api`], [`artifacts_api`], [`artifact_views`]: the MLflow-compatible registry
//!   server (`regserve server`), put together by [`registry_server`]; [`registry_app`] and
//!   [`scoring_server`] are the whole apps of `regserve server` and `regserve serve` (auth, origin)
//! - [`webhooks_api`]: MLflow's webhook API on `regserve server` (`/api/2.0/mlflow/webhooks`)
//! - [`ui`]: the web UI — the registry's pages on `regserve server`, a status page on `serve`
//! - [`auth`]: the bearer token and the UI's sessions (it knows no UI: the login redirect is handed in); [`origin`]: what a browser page may make
//!   the server do (`Host` allow-list, same-origin state changes, JSON content type);
//!   [`workspace`]: the `X-MLFLOW-WORKSPACE` header (only the default workspace)

pub mod artifact_views;
pub mod artifacts_api;
pub mod auth;
pub mod body_budget;
pub mod download;
pub mod error;
pub mod grpc;
pub mod hooks;
pub mod http;
pub mod keep_alive;
pub mod origin;
pub mod params;
pub mod registry_api;
pub mod reply;
pub mod scoring;
pub mod state;
pub mod tracking_api;
pub mod ui;
pub mod v1;
pub mod v2;
pub mod webhooks_api;
pub mod workspace;

use std::sync::Arc;

use axum::Router;

pub use error::ApiError;
pub use scoring::ScoringState;
pub use state::RegistryState;

/// The MLflow-compatible registry server: the registry and tracking REST APIs under
/// `/api/2.0/mlflow` (and `/ajax-api/2.0/mlflow`, as MLflow's UI calls them), the artifact proxy
/// under `/api/2.0/mlflow-artifacts`, `/api/3.0/mlflow/server-info`, `/health` and `/version`,
/// and the web UI at `/` (see [`ui`]). The REST API reads bodies only when declared JSON
/// ([`origin::require_json`]).
pub fn registry_server(state: RegistryState) -> Router {
    use axum::routing::get;
    let mlflow = registry_api::routes()
        .merge(webhooks_api::routes())
        .merge(tracking_api::routes())
        .merge(artifact_views::routes())
        .layer(axum::middleware::from_fn(origin::require_json));
    let artifacts = if state.serve_artifacts { artifacts_api::routes() } else { artifacts_api::disabled_routes() };
    let ajax = mlflow.clone().merge(tracking_api::ajax_routes());
    Router::new()
        .nest("/api/2.0/mlflow", mlflow)
        .nest("/ajax-api/2.0/mlflow", ajax)
        .nest("/api/2.0/mlflow-artifacts", artifacts.clone())
        .nest("/ajax-api/2.0/mlflow-artifacts", artifacts)
        .route("/api/3.0/mlflow/server-info", get(tracking_api::server_info))
        .route("/ajax-api/3.0/mlflow/server-info", get(tracking_api::server_info))
        .route("/health", get(|| async { "OK" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .route("/metrics", get(registry_metrics))
        .merge(artifact_views::ui_routes())
        .merge(ui::registry_routes())
        .layer(axum::middleware::from_fn(workspace::check_workspace))
        .with_state(state)
}

/// `GET /metrics` of `regserve server`: Prometheus (OpenMetrics text), e.g.
/// `regserve_webhook_delivery_attempts_total{outcome}`.
async fn registry_metrics() -> axum::response::Response {
    use axum::response::IntoResponse;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], crate::metrics::metrics().encode()).into_response()
}

/// `regserve server`'s whole app: [`registry_server`] behind authentication when there is a
/// token (`policy`; refused UI pages redirect to the UI's login), all behind the `Host`
/// allow-list and the same-origin rule ([`origin::guard`], outermost).
pub fn registry_app(state: RegistryState, policy: Option<auth::Policy>, hosts: origin::AllowedHosts) -> Router {
    let mut app = registry_server(state);
    if let Some(policy) = policy {
        tracing::info!(reads = policy.reads, "writes require a bearer token");
        let policy = auth::Policy { page_redirect: ui::page_redirect, ..policy };
        app = app.layer(axum::middleware::from_fn_with_state(policy, auth::guard));
    }
    // Outermost, before authentication: the Host allow-list and the same-origin rule.
    app.layer(axum::middleware::from_fn_with_state(Arc::new(hosts), origin::guard))
}

/// `regserve serve`'s whole app: scoring ([`scoring`], [`v2`]) behind the bearer token when
/// there is one; the public routes (`/ping`, `/health`, `/metrics`, the status page, ...) outside
/// it, and the webhook receiver ([`hooks`], which the registry's signature authenticates);
/// everything behind the `Host` allow-list and the same-origin rule (outermost).
pub fn scoring_server(state: ScoringState, token: Option<auth::Token>, hosts: origin::AllowedHosts) -> Router {
    let mut scoring =
        scoring::scoring_routes(state.clone()).merge(v1::routes(state.clone())).merge(v2::model_routes(state.clone()));
    if let Some(token) = token {
        tracing::info!("scoring requires a bearer token");
        scoring = scoring.layer(axum::middleware::from_fn_with_state(token, auth::require_token));
    }
    // The status page at `/` is public, like `/health` and `/metrics`, which tell the same.
    // Outermost: the Host allow-list and the same-origin rule (a rebinding page could
    // otherwise read the status and score models from a visitor's browser).
    scoring::public_routes(state.clone())
        .merge(v2::public_routes(state.clone()))
        .merge(hooks::routes(state.clone()))
        .merge(ui::serve_routes(state))
        .merge(scoring)
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), origin::guard))
}

pub use http::{serve, HttpLimits};

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
