//! The one place where errors become HTTP statuses. Bodies keep MLflow's shape
//! `{"error_code": "...", "message": "..."}`; anything unclassified is logged and answered with
//! a generic 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::artifact::FetchError;
use crate::registry::RegistryError;
use crate::runtime::{ScoringError, ScoringErrorKind};

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
                RegistryError::AlreadyExists(_) | RegistryError::InvalidParameter(_) => {
                    (StatusCode::BAD_REQUEST, e.error_code())
                }
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
            },
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
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
