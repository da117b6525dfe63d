//! The Model Registry: the data model, the embedded SQLite store, and resolution of
//! `models:/` URIs to a concrete version.
//!
//! - [`types`]: registered models, versions, stages, tags and aliases in MLflow's JSON shape
//! - [`store`]: the embedded store (SQLite, WAL, one transaction per write)
//! - [`filter`]: MLflow's search filter grammar, order_by and page tokens → SQL
//! - [`rest`]: a client for a remote MLflow-compatible registry over REST
//! - [`tracking`]: experiments, runs and logged models (what the MLflow client logs models with)

pub mod filter;
pub mod rest;
pub mod store;
pub mod tracking;
pub mod types;

pub use store::{NewVersion, Page, Store};
pub use types::{Alias, ModelVersion, RegisteredModel, Stage, Tag, VersionStatus};

/// What can go wrong in the registry, classified the way MLflow reports it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 404 `RESOURCE_DOES_NOT_EXIST`
    #[error("{0}")]
    NotFound(String),
    /// 400 `RESOURCE_ALREADY_EXISTS`
    #[error("{0}")]
    AlreadyExists(String),
    /// 400 `INVALID_PARAMETER_VALUE`
    #[error("{0}")]
    InvalidParameter(String),
    /// The store itself failed (disk, corruption, lock timeout).
    #[error("registry store error: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("registry I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A remote registry (or its artifact server) could not be reached, or kept failing
    /// (connection errors, 5xx/429 after retries, an answer that is not MLflow's). 503
    /// `TEMPORARILY_UNAVAILABLE`.
    #[error("{0}")]
    Unavailable(String),
}

impl From<filter::FilterError> for RegistryError {
    fn from(e: filter::FilterError) -> Self {
        RegistryError::InvalidParameter(e.to_string())
    }
}

impl RegistryError {
    /// MLflow's `error_code` for this error.
    pub fn error_code(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            RegistryError::AlreadyExists(_) => "RESOURCE_ALREADY_EXISTS",
            RegistryError::InvalidParameter(_) => "INVALID_PARAMETER_VALUE",
            RegistryError::Store(_) | RegistryError::Io(_) => "INTERNAL_ERROR",
            RegistryError::Unavailable(_) => "TEMPORARILY_UNAVAILABLE",
        }
    }

    pub(crate) fn model_not_found(name: &str) -> Self {
        RegistryError::NotFound(format!("Registered Model with name={name} not found"))
    }

    pub(crate) fn version_not_found(name: &str, version: u64) -> Self {
        RegistryError::NotFound(format!("Model Version (name={name}, version={version}) not found"))
    }
}

/// Check a registered model name: non-empty, at most 256 characters, no '/' or control
/// characters (they cannot be written in a `models:/` URI path segment unambiguously).
pub fn validate_model_name(name: &str) -> Result<(), RegistryError> {
    if name.trim().is_empty() {
        return Err(RegistryError::InvalidParameter("Registered model name cannot be empty.".into()));
    }
    if name.chars().count() > 256 {
        return Err(RegistryError::InvalidParameter(format!(
            "Registered model name is {} characters long; the limit is 256.",
            name.chars().count()
        )));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(RegistryError::InvalidParameter(format!(
            "Invalid registered model name '{}': it may not contain {:?}.",
            name.escape_debug(),
            c
        )));
    }
    Ok(())
}
