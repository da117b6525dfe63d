//! The Model Registry: the data model, the embedded SQLite store, and resolution of
//! `models:/` URIs to a concrete version.
//!
//! - [`types`]: registered models, versions, tags and aliases in MLflow's JSON shape (the
//!   [`Stage`] type lives with `models:/` URIs in [`crate::uri`] and is re-exported here)
//! - [`store`]: the registry store, on the database of [`crate::db`] (SQLite or PostgreSQL)
//! - [`location`]: which registry (`--registry-uri`, MLflow's variables, `--data-dir`): embedded or remote
//! - [`search`]: MLflow's search filter grammar, order_by and page tokens → SQL
//! - [`webhooks`]: MLflow's registry webhooks: the hooks, their events, the delivery outbox and its sender
//! - [`settings`]: what `regserve server` records for every process on the registry (`server_settings`)

pub mod location;
pub mod search;
pub mod settings;
pub mod store;
pub mod types;
pub mod webhooks;

/// The search grammar's former path (`registry::filter`), kept so the fuzz targets and tests
/// that name it need no change.
pub use search as filter;

pub use store::{NewVersion, Page, Store};
pub use types::{Alias, ModelVersion, RegisteredModel, Stage, Tag, VersionStatus};

/// The tag MLflow marks prompts (registered models) and prompt versions with; the prompt
/// registry of MLflow 3 (`mlflow.genai.register_prompt`) rides on registered models with it.
pub const IS_PROMPT_TAG_KEY: &str = "mlflow.prompt.is_prompt";

/// MLflow's `search_registered_models` adds this to every filter so prompts (stored as
/// registered models with this tag) are not listed as models.
pub const NOT_A_PROMPT: &str = "tag.`mlflow.prompt.is_prompt` != 'true'";

/// Do these tags make a prompt? As MLflow's `ModelVersion._is_prompt` reads them: the last
/// value of the tag wins, and only `true` (in any case) counts.
pub fn is_prompt(tags: &[Tag]) -> bool {
    tags.iter().rev().find(|t| t.key == IS_PROMPT_TAG_KEY).is_some_and(|t| t.value.eq_ignore_ascii_case("true"))
}

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
    /// 400 `INVALID_STATE`: the entity is in a state that forbids the request (renaming a
    /// deleted experiment). MLflow answers these with 500, which its own client retries.
    #[error("{0}")]
    InvalidState(String),
    /// The store itself failed (disk, corruption, lock timeout).
    /// (Not the error's `source`: the message already holds it, and a chain printer would
    /// repeat it.)
    #[error("registry store error: {0}")]
    Store(crate::db::Error),
    #[error("registry I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A remote registry (or its artifact server) could not be reached, or kept failing
    /// (connection errors, 5xx/429 after retries, an answer that is not MLflow's). 503
    /// `TEMPORARILY_UNAVAILABLE`.
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::db::Error> for RegistryError {
    fn from(e: crate::db::Error) -> Self {
        RegistryError::Store(e)
    }
}

impl crate::db::StoreError for RegistryError {
    fn db_error(&self) -> Option<&crate::db::Error> {
        match self {
            RegistryError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::uri::InvalidStage> for RegistryError {
    fn from(e: crate::uri::InvalidStage) -> Self {
        RegistryError::InvalidParameter(e.to_string())
    }
}

impl From<search::FilterError> for RegistryError {
    fn from(e: search::FilterError) -> Self {
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
            RegistryError::InvalidState(_) => "INVALID_STATE",
            RegistryError::Store(e) if e.is_retryable() => "TEMPORARILY_UNAVAILABLE",
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
/// characters (they cannot be written in a `models:/` URI path segment unambiguously), no
/// leading or trailing whitespace (two names that look the same), and not `.` or `..` (path
/// segments in URLs and artifact paths). Checked at every create and rename.
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
    if name.trim() != name {
        return Err(RegistryError::InvalidParameter(format!(
            "Invalid registered model name '{}': it may not start or end with whitespace.",
            name.escape_debug()
        )));
    }
    if name == "." || name == ".." {
        return Err(RegistryError::InvalidParameter(format!(
            "Invalid registered model name '{name}': '.' and '..' are reserved path segments."
        )));
    }
    Ok(())
}

/// The longest description of a registered model or version, in characters: what MLflow's SQL
/// store keeps (`VARCHAR(5000)`). It also bounds the work of rendering it as Markdown.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;

/// Check a description's size (every write path: REST, CLI, UI, registration).
pub fn validate_description(description: &str) -> Result<(), RegistryError> {
    // Bytes bound characters from above: count only when it could be over.
    if description.len() > MAX_DESCRIPTION_CHARS {
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(RegistryError::InvalidParameter(format!(
                "Description is {chars} characters long; the limit is {MAX_DESCRIPTION_CHARS}."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_that_look_alike_or_are_path_segments_are_refused() {
        for bad in ["", " ", ".", "..", " iris", "iris ", "iris\t", "\u{a0}iris", "a/b", "a\nb", "a\u{7f}b"] {
            assert!(
                matches!(validate_model_name(bad), Err(RegistryError::InvalidParameter(_))),
                "{bad:?} was accepted"
            );
        }
        for good in ["iris", "a.b", "...", ".hidden", "fraud detector", "m-1_2", "Iris Ünïcode"] {
            assert!(validate_model_name(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn descriptions_are_limited_in_characters_not_bytes() {
        assert!(validate_description(&"x".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
        // 5,000 two-byte characters are 10,000 bytes, and allowed.
        assert!(validate_description(&"é".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
        let e = validate_description(&"x".repeat(MAX_DESCRIPTION_CHARS + 1)).unwrap_err();
        assert_eq!(e.to_string(), "Description is 5001 characters long; the limit is 5000.");
        assert_eq!(e.error_code(), "INVALID_PARAMETER_VALUE");
    }
}
