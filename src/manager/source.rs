//! Where served models come from: something that resolves a `models:/` URI to a version and
//! puts that version's files on local disk.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::artifact::{ArtifactRoot, FetchError};
use crate::registry::{ModelVersion, RegistryError, Store};
use crate::uri::ModelUri;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("internal task failed: {0}")]
    Join(String),
}

#[async_trait]
pub trait ModelSource: Send + Sync + 'static {
    /// The version `uri` selects now.
    async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, SourceError>;
    /// A local directory or file holding the version's model.
    async fn fetch(&self, version: &ModelVersion) -> Result<PathBuf, SourceError>;
    /// A short description for logs and `/health` (e.g. the database path).
    fn describe(&self) -> String;
}

/// The embedded SQLite registry and its artifact root, in this process.
#[derive(Clone)]
pub struct EmbeddedSource {
    pub store: Arc<Store>,
    pub artifacts: ArtifactRoot,
}

#[async_trait]
impl ModelSource for EmbeddedSource {
    async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, SourceError> {
        let store = self.store.clone();
        let uri = uri.clone();
        tokio::task::spawn_blocking(move || store.resolve(&uri))
            .await
            .map_err(|e| SourceError::Join(e.to_string()))?
            .map_err(SourceError::from)
    }

    async fn fetch(&self, version: &ModelVersion) -> Result<PathBuf, SourceError> {
        let location = if version.storage_location.is_empty() {
            &version.source
        } else {
            &version.storage_location
        };
        let path = self.artifacts.local_path(location)?;
        if !path.exists() {
            return Err(FetchError::NotFound(format!(
                "{} (version {} of '{}')",
                path.display(),
                version.version,
                version.name
            ))
            .into());
        }
        Ok(path)
    }

    fn describe(&self) -> String {
        match self.store.path() {
            Some(p) => format!("sqlite:///{}", p.display()),
            None => "sqlite (in memory)".into(),
        }
    }
}
