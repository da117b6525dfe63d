//! Serving from a remote MLflow-compatible registry ([`RemoteSource`]), and choosing the
//! registry the way MLflow does ([`source_from_uri`]): `--registry-uri`, else
//! `MLFLOW_REGISTRY_URI`, else `MLFLOW_TRACKING_URI`, else the embedded `--data-dir` store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::source::{EmbeddedSource, ModelSource, SourceError};
use crate::artifact::cache::ArtifactCache;
use crate::artifact::fetch::{ArtifactFetcher, DownloadError};
use crate::artifact::{ArtifactRoot, FetchError};
use crate::registry::rest::{redact_url, HttpSettings, RestRegistry};
use crate::registry::{ModelVersion, RegistryError, Store};
use crate::uri::ModelUri;

/// The variables read, in order, when no `--registry-uri` is given.
pub const ENV_REGISTRY_URI: &str = "MLFLOW_REGISTRY_URI";
pub const ENV_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";

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

/// Where the registry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// The embedded SQLite store and its artifact root.
    Embedded { db: PathBuf, artifacts: PathBuf },
    /// An MLflow-compatible REST registry at this base URL.
    Rest { url: String },
}

/// Why no registry could be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unsupported registry URI '{uri}' (from {origin}); accepted: http(s)://host[:port][/prefix] (an MLflow-compatible registry server), sqlite:///<path to a regserve registry.db>, or none for the --data-dir store")]
    Unsupported { uri: String, origin: &'static str },
    #[error("{path} (from {origin}) is an MLflow database, which regserve cannot open directly; serve it with `mlflow server --backend-store-uri sqlite:///{path}` and pass that server's http:// URL as --registry-uri")]
    ForeignDatabase { path: String, origin: &'static str },
    #[error("registry '{uri}' (from {origin}): {source}")]
    Registry {
        uri: String,
        origin: &'static str,
        #[source]
        source: RegistryError,
    },
    #[error("artifact root {path} (from {origin}): {source}")]
    Artifacts {
        path: String,
        origin: &'static str,
        #[source]
        source: FetchError,
    },
}

/// Choose the registry: `flag` (`--registry-uri`), else `MLFLOW_REGISTRY_URI`, else
/// `MLFLOW_TRACKING_URI` (looked up with `env`; empty counts as unset), else the store in
/// `data_dir`. Returns the location and which of those chose it.
pub fn registry_location(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    data_dir: &Path,
) -> Result<(RegistryLocation, &'static str), BackendError> {
    let chosen = flag.map(|f| (f.trim().to_string(), "--registry-uri")).filter(|(f, _)| !f.is_empty()).or_else(|| {
        [ENV_REGISTRY_URI, ENV_TRACKING_URI]
            .into_iter()
            .find_map(|k| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(|v| (v, k)))
    });
    let Some((uri, origin)) = chosen else {
        let location =
            RegistryLocation::Embedded { db: data_dir.join("registry.db"), artifacts: data_dir.join("artifacts") };
        return Ok((location, "--data-dir"));
    };
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok((RegistryLocation::Rest { url: uri }, origin));
    }
    if let Some(path) = uri.strip_prefix("sqlite:///") {
        // SQLAlchemy's form: sqlite:///relative.db, sqlite:////absolute.db.
        if !path.is_empty() && !path.contains('?') {
            let db = PathBuf::from(path);
            let artifacts = match db.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join("artifacts"),
                _ => PathBuf::from("artifacts"),
            };
            return Ok((RegistryLocation::Embedded { db, artifacts }, origin));
        }
    }
    Err(BackendError::Unsupported { uri: redact_url(&uri), origin })
}

/// True when `db` exists and is MLflow's own database (its schema is managed by Alembic).
pub(crate) fn is_mlflow_database(db: &Path) -> bool {
    if !db.is_file() {
        return false;
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    rusqlite::Connection::open_with_flags(db, flags)
        .and_then(|conn| {
            conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n > 0)
}

/// Open the source at `location`: the embedded store, or a REST registry with MLflow's
/// environment settings and a download cache in `<data_dir>/cache`.
pub fn open_source(
    location: &RegistryLocation,
    origin: &'static str,
    data_dir: &Path,
    http: HttpSettings,
) -> Result<Arc<dyn ModelSource>, BackendError> {
    match location {
        RegistryLocation::Embedded { db, artifacts } => {
            if is_mlflow_database(db) {
                return Err(BackendError::ForeignDatabase { path: db.display().to_string(), origin });
            }
            let store = Store::open(db).map_err(|source| BackendError::Registry {
                uri: format!("sqlite:///{}", db.display()),
                origin,
                source,
            })?;
            let artifacts = ArtifactRoot::new(artifacts).map_err(|source| BackendError::Artifacts {
                path: artifacts.display().to_string(),
                origin,
                source,
            })?;
            Ok(Arc::new(EmbeddedSource::new(Arc::new(store), artifacts)))
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
pub fn source_from_uri(registry_uri: Option<&str>, data_dir: &Path) -> Result<Arc<dyn ModelSource>, BackendError> {
    let (location, origin) = registry_location(registry_uri, |k| std::env::var(k).ok(), data_dir)?;
    let http = match &location {
        RegistryLocation::Rest { url } => HttpSettings::from_env().map_err(|source| BackendError::Registry {
            uri: redact_url(url),
            origin,
            source,
        })?,
        RegistryLocation::Embedded { .. } => HttpSettings::default(),
    };
    open_source(&location, origin, data_dir, http)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_flag_then_registry_then_tracking_uri_then_data_dir() {
        let data = Path::new("/data");
        let both = env(&[(ENV_REGISTRY_URI, "http://reg:5000"), (ENV_TRACKING_URI, "http://track:5000")]);
        assert_eq!(
            registry_location(Some("https://flag.example/mlflow"), &both, data).unwrap(),
            (RegistryLocation::Rest { url: "https://flag.example/mlflow".into() }, "--registry-uri")
        );
        assert_eq!(registry_location(None, &both, data).unwrap().1, ENV_REGISTRY_URI);
        assert_eq!(
            registry_location(None, env(&[(ENV_REGISTRY_URI, " "), (ENV_TRACKING_URI, "http://track:5000")]), data)
                .unwrap(),
            (RegistryLocation::Rest { url: "http://track:5000".into() }, ENV_TRACKING_URI)
        );
        assert_eq!(
            registry_location(Some(""), env(&[]), data).unwrap(),
            (
                RegistryLocation::Embedded { db: "/data/registry.db".into(), artifacts: "/data/artifacts".into() },
                "--data-dir"
            )
        );
    }

    #[test]
    fn sqlite_uris_name_an_embedded_store() {
        let data = Path::new("/data");
        assert_eq!(
            registry_location(Some("sqlite:////srv/reg/registry.db"), env(&[]), data).unwrap().0,
            RegistryLocation::Embedded { db: "/srv/reg/registry.db".into(), artifacts: "/srv/reg/artifacts".into() }
        );
        assert_eq!(
            registry_location(Some("sqlite:///registry.db"), env(&[]), data).unwrap().0,
            RegistryLocation::Embedded { db: "registry.db".into(), artifacts: "artifacts".into() }
        );
    }

    #[test]
    fn other_uris_are_refused_naming_the_accepted_forms_and_the_origin() {
        for (uri, origin) in [
            ("databricks", ENV_TRACKING_URI),
            ("file:///home/me/mlruns", ENV_TRACKING_URI),
            ("./mlruns", ENV_TRACKING_URI),
            ("postgresql://u:pw@db/mlflow", ENV_TRACKING_URI),
            ("sqlite://", ENV_TRACKING_URI),
        ] {
            let lookup = move |k: &str| (k == ENV_TRACKING_URI).then(|| uri.to_string());
            let e = registry_location(None, lookup, Path::new("/d")).unwrap_err().to_string();
            assert!(e.contains("http(s)://host") && e.contains("sqlite:///"), "{e}");
            assert!(e.contains(origin), "{e}");
            assert!(!e.contains("pw@"), "the password leaked: {e}");
        }
    }

    #[test]
    fn an_mlflow_database_is_not_opened_as_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("mlflow.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL); CREATE TABLE registered_models (name TEXT);")
            .unwrap();
        drop(conn);
        let before = std::fs::read(&db).unwrap();
        let location = RegistryLocation::Embedded { db: db.clone(), artifacts: tmp.path().join("artifacts") };
        let e = open_source(&location, "--registry-uri", tmp.path(), HttpSettings::default())
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
        let s = source_from_uri(Some(&format!("sqlite:///{}", db.display())), tmp.path()).unwrap();
        assert!(s.describe().contains("registry.db"), "{}", s.describe());
        assert!(tmp.path().join("r/artifacts").is_dir());
        let location = RegistryLocation::Rest { url: "http://user:pw@127.0.0.1:9/prefix/".into() };
        let s = open_source(&location, "--registry-uri", tmp.path(), HttpSettings::default()).unwrap();
        assert_eq!(s.describe(), "http://127.0.0.1:9/prefix");
        assert_eq!(s.public_description(), "http://127.0.0.1:9/prefix");
        let embedded = source_from_uri(Some(&format!("sqlite:///{}", db.display())), tmp.path()).unwrap();
        assert!(!embedded.public_description().contains(tmp.path().to_str().unwrap()), "no local paths");
    }
}
