//! Serving from a remote MLflow-compatible registry ([`RemoteSource`]), and opening the
//! registry [`crate::registry::location`] chooses the way MLflow does ([`source_from_uri`]):
//! `--registry-uri`, else `MLFLOW_REGISTRY_URI`, else `MLFLOW_TRACKING_URI`, else the embedded
//! `--data-dir` store.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::source::{proxy_bucket, DestinationError, EmbeddedSource, ModelSource, SourceError};
use crate::artifact::cache::ArtifactCache;
use crate::artifact::fetch::{ArtifactFetcher, DownloadError};
use crate::artifact::{ArtifactRoot, FetchError};
use crate::db::{DatabaseUri, PoolOptions};
use crate::mlflow::{redact_url, HttpSettings, RestRegistry};
use crate::registry::location::{
    is_mlflow_database, registry_location, LocalRegistry, RegistryLocation, UnsupportedUri,
};
use crate::registry::{ModelVersion, RegistryError, Store};
use crate::uri::ModelUri;

impl From<DownloadError> for SourceError {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::Fetch(e) => SourceError::Fetch(e),
            DownloadError::Registry(e) => SourceError::Registry(e),
        }
    }
}

/// A remote MLflow-compatible registry: versions resolved over REST, files downloaded into a
/// local cache (reused across restarts).
#[derive(Debug)]
pub struct RemoteSource {
    registry: RestRegistry,
    fetcher: ArtifactFetcher,
}

impl RemoteSource {
    /// Serve from `registry`, caching downloads under `cache_dir` (e.g. `<data-dir>/cache`).
    pub fn new(registry: RestRegistry, cache_dir: impl Into<PathBuf>) -> RemoteSource {
        let fetcher = ArtifactFetcher::new(registry.clone(), ArtifactCache::new(cache_dir));
        RemoteSource { registry, fetcher }
    }

    /// Tell `hook` how each download goes (the CLI's progress bar).
    pub fn with_progress(mut self, hook: crate::artifact::fetch::ProgressHook) -> RemoteSource {
        self.fetcher = self.fetcher.with_progress(hook);
        self
    }

    pub fn registry(&self) -> &RestRegistry {
        &self.registry
    }

    pub fn fetcher(&self) -> &ArtifactFetcher {
        &self.fetcher
    }
}

#[async_trait]
impl ModelSource for RemoteSource {
    async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, SourceError> {
        Ok(self.registry.resolve(uri).await?)
    }

    async fn fetch(&self, version: &ModelVersion) -> Result<PathBuf, SourceError> {
        let uri = self.registry.get_model_version_download_uri(&version.name, version.version).await?;
        Ok(self.fetcher.fetch(&version.name, version.version, &uri).await?)
    }

    fn describe(&self) -> String {
        self.registry.base_url().as_str().trim_end_matches('/').to_string()
    }

    fn trim_downloads(&self, keep: &[ModelVersion], max_bytes: u64) {
        let keep: Vec<PathBuf> = keep.iter().map(|v| self.fetcher.cache_dir(&v.name, v.version)).collect();
        self.fetcher.cache().trim(max_bytes, &keep);
    }

    fn public_description(&self) -> String {
        let mut url = self.registry.base_url().clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        url.as_str().trim_end_matches('/').to_string()
    }
}

/// Why no registry could be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Unsupported(#[from] UnsupportedUri),
    #[error("{path} (from {origin}) is an MLflow database, which regserve cannot open directly; serve it with `mlflow server --backend-store-uri sqlite:///{path}` and pass that server's http:// URL as --registry-uri")]
    ForeignDatabase { path: String, origin: &'static str },
    #[error("registry '{uri}' (from {origin})")]
    Registry {
        uri: String,
        origin: &'static str,
        #[source]
        source: RegistryError,
    },
    #[error("artifact root {path} (from {origin})")]
    Artifacts {
        path: String,
        origin: &'static str,
        #[source]
        source: FetchError,
    },
    /// The bucket of the embedded registry's proxied artifacts (see [`proxy_bucket`]).
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

/// Open the source at `location`: the embedded store, or a REST registry with MLflow's
/// environment settings and a download cache in `<data_dir>/cache`. The embedded store's
/// `mlflow-artifacts:/` files are read from `local.artifacts_destination` (`--artifacts-destination`), else
/// from the bucket `regserve server` recorded in it, else from its local root ([`proxy_bucket`]).
pub fn open_source(
    location: &RegistryLocation,
    origin: &'static str,
    local: &LocalRegistry,
    http: HttpSettings,
) -> Result<Arc<dyn ModelSource>, BackendError> {
    let data_dir = local.data_dir.as_path();
    match location {
        RegistryLocation::Embedded { db, artifacts } => {
            let store = open_database(db, &local.pool, origin)?;
            let artifacts = ArtifactRoot::new(artifacts).map_err(|source| BackendError::Artifacts {
                path: artifacts.display().to_string(),
                origin,
                source,
            })?;
            let bucket = proxy_bucket(&store, local.artifacts_destination.as_deref(), &data_dir.join("cache"))?;
            Ok(Arc::new(EmbeddedSource::new(store, artifacts).with_bucket(bucket)))
        }
        RegistryLocation::Rest { url } => {
            let registry = RestRegistry::new(url, http).map_err(|source| BackendError::Registry {
                uri: redact_url(url),
                origin,
                source,
            })?;
            Ok(Arc::new(RemoteSource::new(registry, data_dir.join("cache"))))
        }
    }
}

/// The model source `serve` uses: the registry chosen from `registry_uri` (`--registry-uri`)
/// and the environment (see [`registry_location`]), with HTTP settings from MLflow's variables.
pub fn source_from_uri(
    registry_uri: Option<&str>,
    local: &LocalRegistry,
) -> Result<Arc<dyn ModelSource>, BackendError> {
    let (location, origin) = registry_location(registry_uri, |k| std::env::var(k).ok(), local)?;
    let http = match &location {
        RegistryLocation::Rest { url } => HttpSettings::from_env().map_err(|source| BackendError::Registry {
            uri: redact_url(url),
            origin,
            source,
        })?,
        RegistryLocation::Embedded { .. } => HttpSettings::default(),
    };
    open_source(&location, origin, local, http)
}

/// Open a registry database (`--registry-uri` or the --data-dir store), refusing MLflow's own.
pub fn open_database(db: &DatabaseUri, pool: &PoolOptions, origin: &'static str) -> Result<Arc<Store>, BackendError> {
    if let DatabaseUri::Sqlite(path) = db {
        if is_mlflow_database(path) {
            return Err(BackendError::ForeignDatabase { path: path.display().to_string(), origin });
        }
    }
    let store =
        Store::open_uri(db, pool).map_err(|source| BackendError::Registry { uri: db.redacted(), origin, source })?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mlflow_database_is_not_opened_as_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("mlflow.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL); CREATE TABLE registered_models (name TEXT);")
            .unwrap();
        drop(conn);
        let before = std::fs::read(&db).unwrap();
        let location =
            RegistryLocation::Embedded { db: DatabaseUri::Sqlite(db.clone()), artifacts: tmp.path().join("artifacts") };
        let e = open_source(&location, "--registry-uri", &LocalRegistry::sqlite(tmp.path()), HttpSettings::default())
            .err()
            .expect("an MLflow database must be refused")
            .to_string();
        assert!(e.contains("mlflow server"), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "left untouched");
    }

    #[test]
    fn sources_describe_themselves() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("r/registry.db");
        let s =
            source_from_uri(Some(&format!("sqlite:///{}", db.display())), &LocalRegistry::sqlite(tmp.path())).unwrap();
        assert!(s.describe().contains("registry.db"), "{}", s.describe());
        assert!(tmp.path().join("r/artifacts").is_dir());
        let location = RegistryLocation::Rest { url: "http://user:pw@127.0.0.1:9/prefix/".into() };
        let s = open_source(&location, "--registry-uri", &LocalRegistry::sqlite(tmp.path()), HttpSettings::default())
            .unwrap();
        assert_eq!(s.describe(), "http://127.0.0.1:9/prefix");
        assert_eq!(s.public_description(), "http://127.0.0.1:9/prefix");
        let embedded =
            source_from_uri(Some(&format!("sqlite:///{}", db.display())), &LocalRegistry::sqlite(tmp.path())).unwrap();
        assert!(!embedded.public_description().contains(tmp.path().to_str().unwrap()), "no local paths");
    }
}
