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
    /// A short description for logs (e.g. the database path).
    fn describe(&self) -> String;
    /// A description anyone may read (`/health`, the status page): no local paths, no
    /// credentials, no query strings.
    fn public_description(&self) -> String {
        "registry".into()
    }
    /// A signal that ticks when the registry may have changed, for sources that can tell
    /// (watchers then re-resolve at once instead of waiting for the next poll).
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// For sources that keep downloads: remove the least recently used ones past `max_bytes`,
    /// except the files of the versions in `keep` (in service or being loaded). Blocking.
    fn trim_downloads(&self, _keep: &[ModelVersion], _max_bytes: u64) {}
}

/// The embedded SQLite registry and its artifact root, in this process.
#[derive(Clone)]
pub struct EmbeddedSource {
    pub store: Arc<Store>,
    pub artifacts: ArtifactRoot,
    notifier: Option<Arc<DbNotifier>>,
}

impl EmbeddedSource {
    /// The store and its artifact root; when the store is a file, a `notify` watcher on its
    /// folder signals writes by any process (the database and its WAL file change).
    pub fn new(store: Arc<Store>, artifacts: ArtifactRoot) -> EmbeddedSource {
        let notifier = store.path().and_then(|p| match DbNotifier::start(p) {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the registry database; polling only");
                None
            }
        });
        EmbeddedSource { store, artifacts, notifier }
    }
}

/// Watches the folder of the database file; ticks a `watch` channel on any change to it.
struct DbNotifier {
    _watcher: notify::RecommendedWatcher,
    rx: tokio::sync::watch::Receiver<u64>,
}

impl DbNotifier {
    fn start(db: &std::path::Path) -> notify::Result<DbNotifier> {
        use notify::Watcher;
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let file_name = db.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // registry.db, registry.db-wal, registry.db-shm; not the artifacts folder.
            let ours =
                event.paths.iter().any(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&file_name)));
            if ours && (event.kind.is_modify() || event.kind.is_create()) {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        })?;
        let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(DbNotifier { _watcher: watcher, rx })
    }
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
        let location = version.download_location();
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

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.notifier.as_ref().map(|n| n.rx.clone())
    }

    fn describe(&self) -> String {
        match self.store.path() {
            Some(p) => format!("sqlite:///{}", p.display()),
            None => "sqlite (in memory)".into(),
        }
    }

    fn public_description(&self) -> String {
        "embedded SQLite registry".into()
    }
}
