//! The one place where errors become HTTP statuses. Bodies keep MLflow's shape
//! `{"error_code": "...", "message": "..."}`; anything unclassified is logged and answered with
//! a generic 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::artifact::FetchError;
use crate::manager::{LoadError, SourceError};
use crate::registry::RegistryError;
use crate::runtime::{RuntimeError, ScoringError, ScoringErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("The request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    NotFound(String),
    /// The artifact proxy: escapes are 400 INVALID_PARAMETER_VALUE, missing files 404.
    #[error(transparent)]
    Artifact(#[from] FetchError),
    /// A version the request asked for could not be loaded (a pinned version): see [`load_status`].
    /// Shows the public reason only.
    #[error("{}", .0.public())]
    Load(#[from] LoadError),
    /// An `X-MLFLOW-WORKSPACE` other than the default workspace (see [`super::workspace`]):
    /// 400 with MLflow's code `FEATURE_DISABLED` (MLflow answers it with a 500).
    #[error("{0}")]
    WorkspaceDisabled(String),
    /// A request whose credentials do not check out (a webhook delivery's signature,
    /// timestamp or id, see [`super::hooks`]): 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A request for something this server never does (KServe V1's `:explain`): 501.
    #[error("{0}")]
    NotImplemented(String),
    /// A failure that is not the caller's (a panicked task, ...): logged, answered with 500.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::uri::InvalidStage> for ApiError {
    fn from(e: crate::uri::InvalidStage) -> Self {
        ApiError::Registry(e.into())
    }
}

impl ApiError {
    /// Status and MLflow error code.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Scoring(e) => match e.kind {
                ScoringErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
                ScoringErrorKind::Schema => (StatusCode::BAD_REQUEST, "SCHEMA_ENFORCEMENT_FAILED"),
                ScoringErrorKind::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST"),
                ScoringErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
                ScoringErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
            },
            ApiError::Registry(e) => match e {
                RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, e.error_code()),
                RegistryError::AlreadyExists(_)
                | RegistryError::InvalidParameter(_)
                | RegistryError::InvalidState(_) => (StatusCode::BAD_REQUEST, e.error_code()),
                RegistryError::Store(d) if d.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, e.error_code()),
                RegistryError::Store(_) | RegistryError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
                RegistryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, e.error_code()),
            },
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "REQUEST_LIMIT_EXCEEDED"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND"),
            ApiError::Artifact(e) => match e {
                FetchError::PathEscapes(_) | FetchError::UnsupportedScheme { .. } => {
                    (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
                }
                FetchError::NotFound(_) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
                FetchError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
                FetchError::Store { .. } => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
            },
            ApiError::Load(e) => load_status(e),
            ApiError::WorkspaceDisabled(_) => (StatusCode::BAD_REQUEST, "FEATURE_DISABLED"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }
}

/// The status of a version that could not be loaded for a request:
/// - 404: the registry has no such version, or it is not READY;
/// - 424 (Failed Dependency, as TEI answers a backend failure): the version's model cannot be
///   loaded — not a valid model, its files unreadable or missing, an artifact scheme this
///   server cannot fetch, or it is a prompt (a template, not a model). Asking again will not
///   help until the registry changes, so no `Retry-After`;
/// - 503 with `Retry-After`: it may work later — the registry or the download failed, the load
///   ran over `--load-timeout`, was stopped by a shutdown, or ONNX Runtime is not available;
/// - 500: the load task itself failed (a bug).
fn load_status(e: &LoadError) -> (StatusCode, &'static str) {
    const UNAVAILABLE: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE");
    const CANNOT_LOAD: (StatusCode, &str) = (StatusCode::FAILED_DEPENDENCY, "INVALID_STATE");
    match e {
        LoadError::Source { error, .. } => match error.as_ref() {
            SourceError::Registry(RegistryError::NotFound(_)) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            SourceError::Fetch(
                FetchError::NotFound(_) | FetchError::UnsupportedScheme { .. } | FetchError::PathEscapes(_),
            ) => CANNOT_LOAD,
            SourceError::Registry(_) | SourceError::Fetch(_) | SourceError::Join(_) => UNAVAILABLE,
        },
        LoadError::NotReady { .. } => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
        LoadError::Model { error, .. } => match error.as_ref() {
            RuntimeError::InvalidModel { .. }
            | RuntimeError::NotOnnx { .. }
            | RuntimeError::Ort(_)
            | RuntimeError::Io { .. } => CANNOT_LOAD,
            RuntimeError::Timeout(_)
            | RuntimeError::Cancelled
            | RuntimeError::LibraryNotFound(_)
            | RuntimeError::LibraryLoad(_) => UNAVAILABLE,
        },
        LoadError::Prompt { .. } => CANNOT_LOAD,
        LoadError::Task(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

impl From<crate::registration::rest_create::CreateError> for ApiError {
    fn from(e: crate::registration::rest_create::CreateError) -> Self {
        use crate::registration::rest_create::CreateError;
        match e {
            CreateError::Registry(e) => ApiError::Registry(e),
            task @ CreateError::Task(_) => ApiError::Internal(task.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.classify();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            "Internal error; the server log has the details".to_string()
        } else {
            self.to_string()
        };
        let mut resp = (status, Json(json!({"error_code": code, "message": message}))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod load_tests {
    use std::sync::Arc;

    use super::*;

    fn model(error: RuntimeError) -> ApiError {
        ApiError::Load(LoadError::Model { name: "iris".into(), version: 3, error: Arc::new(error) })
    }

    #[test]
    fn a_version_that_cannot_load_is_424_and_one_that_may_load_later_is_503() {
        let invalid = model(RuntimeError::InvalidModel { path: "/secret/model.onnx".into(), reason: "bad".into() });
        assert_eq!(invalid.classify().0, StatusCode::FAILED_DEPENDENCY);
        // The client sees the public reason, never the path.
        assert_eq!(
            invalid.to_string(),
            "version 3 of 'iris' failed to load: it is not a valid model, or cannot score its input example"
        );
        let slow = model(RuntimeError::Timeout(std::time::Duration::from_secs(2)));
        assert_eq!(slow.classify().0, StatusCode::SERVICE_UNAVAILABLE);
        let gone = ApiError::Load(LoadError::Source {
            error: Arc::new(SourceError::Registry(RegistryError::NotFound("no version 9".into()))),
            public: "no version 9".into(),
        });
        assert_eq!(gone.classify().0, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::Load(LoadError::Task("panic".into())).classify().0, StatusCode::INTERNAL_SERVER_ERROR);
        // A prompt never becomes a model: 424, and the reason says so.
        let prompt = ApiError::Load(LoadError::Prompt { name: "greet".into(), version: 1 });
        assert_eq!(prompt.classify().0, StatusCode::FAILED_DEPENDENCY);
        assert_eq!(prompt.to_string(), "version 1 of 'greet' is a prompt, not a model; regserve serves models only");
    }
}
