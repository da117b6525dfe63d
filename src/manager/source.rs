//! Where served models come from: something that resolves a `models:/` URI to a version and
//! puts that version's files on local disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::artifact::cache::ArtifactCache;
use crate::artifact::fetch::{DownloadError, ProxyBucket};
use crate::artifact::store::BucketUri;
use crate::artifact::{ArtifactRoot, FetchError};
use crate::mlflow::HttpSettings;
use crate::registry::settings::ARTIFACTS_DESTINATION;
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

/// Why the bucket of the embedded registry's proxied artifacts ([`proxy_bucket`]) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("reading the artifacts destination recorded in the registry: {0}")]
    Registry(#[from] RegistryError),
    /// Misnamed, or cannot be opened (its configuration or credentials); names no secret.
    #[error("the registry's artifacts (mlflow-artifacts:/) are in {uri} ({origin}): {error}")]
    Bucket { uri: String, origin: &'static str, error: FetchError },
    #[error("--artifacts-destination takes a bucket (s3://, gs://, wasbs://, abfss://), not '{0}'; without it, the local artifact root is the folder `artifacts` beside the registry database")]
    NotABucket(String),
}

/// Where the bucket of [`proxy_bucket`] was named.
pub const RECORDED: &str = "recorded in the registry by `regserve server`; --artifacts-destination overrides it";
const FLAG: &str = "--artifacts-destination";

/// The bucket holding the embedded registry's `mlflow-artifacts:/` files, for a process other
/// than the server on it (the CLI, `serve`): `flag` (`--artifacts-destination`) when given,
/// else the destination the last `regserve server` started recorded in the registry
/// ([`ARTIFACTS_DESTINATION`]). `None`: the local artifact root beside the database, which a
/// recorded `file://` destination also means (the server's root is the folder beside the same
/// database; its recorded path is for people, as the data dir may be mounted elsewhere here).
/// Downloads are cached in `cache_dir`; timeouts and retries are MLflow's HTTP variables'.
pub fn proxy_bucket(
    store: &Store,
    flag: Option<&str>,
    cache_dir: &Path,
) -> Result<Option<ProxyBucket>, DestinationError> {
    let (uri, origin) = match flag.map(str::trim).filter(|f| !f.is_empty()) {
        Some(flag) => (flag.to_string(), FLAG),
        None => match store.setting(ARTIFACTS_DESTINATION)? {
            Some(recorded) => (recorded, RECORDED),
            None => return Ok(None),
        },
    };
    let destination = |error| DestinationError::Bucket { uri: uri.clone(), origin, error };
    let parsed = match BucketUri::parse(&uri).map_err(destination)? {
        Some(parsed) => parsed,
        None if origin == FLAG => return Err(DestinationError::NotABucket(uri)),
        None => return Ok(None),
    };
    let http = HttpSettings::from_env()?;
    let bucket = ProxyBucket::open(&parsed, ArtifactCache::new(cache_dir), http.timeout, http.retry.clone())
        .map_err(destination)?
        .with_origin(origin);
    tracing::debug!(destination = %bucket.uri(), origin, "the registry's mlflow-artifacts:/ files are in a bucket");
    Ok(Some(bucket))
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
    /// Where `regserve server` keeps the registry's `mlflow-artifacts:/` files when they are in
    /// a bucket ([`proxy_bucket`]).
    pub bucket: Option<Arc<ProxyBucket>>,
    notifier: Option<Arc<DbNotifier>>,
}

impl EmbeddedSource {
    /// The store and its artifact root. Writes by any process are signalled: on SQLite by a
    /// `notify` watcher on the database's folder (the database and its WAL file change), on
    /// PostgreSQL by `LISTEN` on the channel every registry write notifies.
    pub fn new(store: Arc<Store>, artifacts: ArtifactRoot) -> EmbeddedSource {
        let notifier = match store.path() {
            Some(p) => match DbNotifier::start(p) {
                Ok(n) => Some(Arc::new(n)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the registry database; polling only");
                    None
                }
            },
            None => store.changes().map(|notices| Arc::new(DbNotifier::listen(notices))),
        };
        EmbeddedSource { store, artifacts, bucket: None, notifier }
    }

    /// Read `mlflow-artifacts:/` locations from `bucket` (see [`proxy_bucket`]).
    pub fn with_bucket(mut self, bucket: Option<ProxyBucket>) -> EmbeddedSource {
        self.bucket = bucket.map(Arc::new);
        self
    }
}

/// The local path of `version`'s files in the embedded registry: downloaded from `bucket` when
/// they are there ([`ProxyBucket::holds`]), else on local disk under `artifacts`.
pub async fn embedded_files(
    artifacts: &ArtifactRoot,
    bucket: Option<&ProxyBucket>,
    version: &ModelVersion,
) -> Result<PathBuf, SourceError> {
    let location = version.download_location();
    if let Some(bucket) = bucket.filter(|_| ProxyBucket::holds(location)) {
        return bucket.fetch(&version.name, version.version, location).await.map_err(|e| match e {
            DownloadError::Fetch(FetchError::NotFound(what)) => FetchError::NotFound(format!(
                "{what} (version {} of '{}', in {})",
                version.version,
                version.name,
                bucket.uri()
            ))
            .into(),
            DownloadError::Fetch(FetchError::Store { kind, message, public }) => FetchError::Store {
                kind,
                message: format!(
                    "{message} (the registry's mlflow-artifacts:/ files are in {}: {})",
                    bucket.uri(),
                    bucket.origin()
                ),
                public,
            }
            .into(),
            DownloadError::Fetch(e) => SourceError::Fetch(e),
            DownloadError::Registry(e) => SourceError::Registry(e),
        });
    }
    let path = artifacts.local_path(location)?;
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

/// Watches the folder of the database file; ticks a `watch` channel on any change to it.
struct DbNotifier {
    _watcher: Option<notify::RecommendedWatcher>,
    rx: tokio::sync::watch::Receiver<u64>,
}

impl DbNotifier {
    /// Tick on every PostgreSQL notification, and when the listening connection is back after
    /// an outage (notifications sent meanwhile were lost: look again).
    fn listen(mut notices: tokio::sync::mpsc::UnboundedReceiver<crate::db::postgres::Notice>) -> DbNotifier {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        // A thread of its own: the source may be made before the async runtime starts. It
        // ends when the database (and with it the sender) goes.
        let spawned = std::thread::Builder::new().name("regserve-registry-listen".into()).spawn(move || {
            while let Some(notice) = notices.blocking_recv() {
                tracing::debug!(?notice, "registry change heard");
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot listen for registry changes; polling only");
        }
        DbNotifier { _watcher: None, rx }
    }

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
        Ok(DbNotifier { _watcher: Some(watcher), rx })
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
        embedded_files(&self.artifacts, self.bucket.as_deref(), version).await
    }

    fn trim_downloads(&self, keep: &[ModelVersion], max_bytes: u64) {
        if let Some(bucket) = &self.bucket {
            let keep: Vec<PathBuf> = keep.iter().map(|v| bucket.cache_dir(&v.name, v.version)).collect();
            bucket.cache().trim(max_bytes, &keep);
        }
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.notifier.as_ref().map(|n| n.rx.clone())
    }

    fn describe(&self) -> String {
        match (self.store.path(), self.store.database().postgres()) {
            (Some(p), _) => format!("sqlite:///{}", p.display()),
            (None, Some(pg)) => pg.redacted_uri().to_string(),
            (None, None) => "sqlite (in memory)".into(),
        }
    }

    fn public_description(&self) -> String {
        match self.store.database().dialect() {
            crate::db::Dialect::Sqlite => "embedded SQLite registry".into(),
            crate::db::Dialect::Postgres => "PostgreSQL registry".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which bucket the embedded registry's proxied files are read from: the flag, else the
    /// server's record; a recorded local root means the root beside the database.
    #[test]
    fn the_flag_then_the_recorded_destination() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let store = Store::open_in_memory().unwrap();
        assert!(proxy_bucket(&store, None, &cache).unwrap().is_none(), "nothing recorded: the local root");
        store.set_setting(ARTIFACTS_DESTINATION, "file:///srv/data/artifacts").unwrap();
        assert!(proxy_bucket(&store, None, &cache).unwrap().is_none(), "a recorded local root");
        store.set_setting(ARTIFACTS_DESTINATION, "s3://recorded/pre").unwrap();
        let recorded = proxy_bucket(&store, None, &cache).unwrap().unwrap();
        assert_eq!((recorded.uri().as_str(), recorded.origin()), ("s3://recorded/pre", RECORDED));
        let flagged = proxy_bucket(&store, Some(" s3://flag/x "), &cache).unwrap().unwrap();
        assert_eq!((flagged.uri().as_str(), flagged.origin()), ("s3://flag/x", FLAG));
        assert_eq!(proxy_bucket(&store, Some(""), &cache).unwrap().unwrap().uri(), "s3://recorded/pre");
        let e = proxy_bucket(&store, Some("/srv/elsewhere"), &cache).unwrap_err().to_string();
        assert!(e.contains("takes a bucket") && e.contains("/srv/elsewhere"), "{e}");
        store.set_setting(ARTIFACTS_DESTINATION, "s3://").unwrap();
        let e = proxy_bucket(&store, None, &cache).unwrap_err().to_string();
        assert!(e.contains("s3://") && e.contains(RECORDED), "{e}");
        // The CLI's own copies (registry/…) stay local; everything else the proxy wrote.
        assert!(ProxyBucket::holds("mlflow-artifacts:/0/models/m-1/artifacts"));
        assert!(ProxyBucket::holds("MLflow-Artifacts://host:5000/1/x"));
        assert!(!ProxyBucket::holds("mlflow-artifacts:/registry/abc"));
        assert!(!ProxyBucket::holds("file:///srv/x") && !ProxyBucket::holds("s3://b/x"));
    }
}
