//! Model execution: ONNX Runtime ownership and the pure conversions around it.
//!
//! The request path inside this module, in order:
//! [`decode`] (bytes + [`schema`] → input tensors, streaming; [`payload`] + [`convert`] do the same
//! through a `serde_json::Value` tree for the CLI and tests) →
//! [`pool`] (a session on a worker thread runs them) → [`convert`] (outputs → JSON predictions).
//! [`env`] finds and loads the ONNX Runtime library; [`mlmodel`] reads MLflow model directories;
//! [`model`] ties a loaded, warmed model together.

pub mod convert;
pub mod decode;
pub mod env;
pub mod mlmodel;
pub mod model;
pub mod payload;
pub mod pool;
pub mod schema;

pub use env::{init_runtime, RuntimeOptions, DEFAULT_LOAD_TIMEOUT};
pub use model::cancel_loads;
pub use model::LoadedModel;
pub use payload::Payload;

/// Failures to load or run a model (not the caller's payload: see [`ScoringError`]).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    LibraryNotFound(String),
    #[error("failed to load the ONNX Runtime library: {0}")]
    LibraryLoad(String),
    #[error("invalid model at {path}: {reason}")]
    InvalidModel { path: String, reason: String },
    /// An MLflow model of another flavor (sklearn, xgboost, pytorch, ...): the message says
    /// how to convert it ([`mlmodel::not_onnx_model`]). Its files decide this, not the machine
    /// or the moment, so retrying the same files cannot help.
    #[error("model at {path} is {}", mlmodel::not_onnx_model(Some(flavors.as_slice())))]
    NotOnnx { path: String, flavors: Vec<String> },
    #[error("ONNX Runtime error: {0}")]
    Ort(String),
    #[error("I/O error reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The load (sessions and warm-up) did not finish within its deadline; the warm-up run
    /// was terminated.
    #[error("loading and warming up the model did not finish within {} s (--load-timeout); its run was stopped", .0.as_secs_f64())]
    Timeout(std::time::Duration),
    /// The process is shutting down: loads still running are stopped.
    #[error("the load was stopped because the server is shutting down")]
    Cancelled,
}

impl RuntimeError {
    /// A short reason without paths or library messages, for unauthenticated readers
    /// (`/health`, the status page); the full error goes to the log.
    pub fn public_reason(&self) -> String {
        match self {
            RuntimeError::LibraryNotFound(_) | RuntimeError::LibraryLoad(_) => "ONNX Runtime is not available".into(),
            RuntimeError::InvalidModel { .. } => "it is not a valid model, or cannot score its input example".into(),
            RuntimeError::NotOnnx { flavors, .. } => {
                format!("it is {}", mlmodel::not_onnx_model(Some(flavors.as_slice())))
            }
            RuntimeError::Ort(_) => "ONNX Runtime could not load it".into(),
            RuntimeError::Io { .. } => "its files could not be read".into(),
            RuntimeError::Timeout(_) | RuntimeError::Cancelled => self.to_string(),
        }
    }
}

impl From<ort::Error> for RuntimeError {
    fn from(e: ort::Error) -> Self {
        RuntimeError::Ort(e.to_string())
    }
}

/// Why a scoring request failed; each kind has one HTTP status and MLflow error code
/// (decided in `server::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringErrorKind {
    /// 400 `BAD_REQUEST`: the body is not a valid scoring payload.
    BadRequest,
    /// 400 `SCHEMA_ENFORCEMENT_FAILED`: valid payload, but it does not fit the model's inputs.
    Schema,
    /// 415: a content type or charset the server does not read.
    UnsupportedMediaType,
    /// 503 `TEMPORARILY_UNAVAILABLE`: the model's queue is full, or no model is loaded yet.
    Unavailable,
    /// 500 `INTERNAL_ERROR`
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ScoringError {
    pub kind: ScoringErrorKind,
    pub message: String,
}

impl ScoringError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ScoringError { kind: ScoringErrorKind::BadRequest, message: m.into() }
    }
    pub fn schema(m: impl Into<String>) -> Self {
        ScoringError { kind: ScoringErrorKind::Schema, message: m.into() }
    }
    pub fn media_type(m: impl Into<String>) -> Self {
        ScoringError { kind: ScoringErrorKind::UnsupportedMediaType, message: m.into() }
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        ScoringError { kind: ScoringErrorKind::Unavailable, message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        ScoringError { kind: ScoringErrorKind::Internal, message: m.into() }
    }
}
