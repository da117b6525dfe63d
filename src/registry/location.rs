//! Which registry a command talks to, chosen the way MLflow chooses it: `--registry-uri`, else
//! `MLFLOW_REGISTRY_URI`, else `MLFLOW_TRACKING_URI`, else the store of `--data-dir` (its
//! database is `--backend-store-uri`, default `<data-dir>/registry.db`). An `http(s)://` URI
//! names a remote MLflow-compatible server; a database URI (`sqlite:///<path>`,
//! `postgresql://…`) a registry whose database this process opens itself. MLflow's own
//! database is recognised so it is never opened as ours.
//!
//! This is only the choice. Opening it needs the serving sources and the MLflow client, which
//! sit above the registry, so it is done by their callers (`manager::remote::open_source` for
//! `serve`, `cli::client::RegistryClient::open` for the CLI), which wrap [`UnsupportedUri`]
//! in their own error.

use std::path::{Path, PathBuf};

use crate::db::{DatabaseUri, PoolOptions};
pub use crate::uri::redact_url;

/// The variables read, in order, when no `--registry-uri` is given.
pub const ENV_REGISTRY_URI: &str = "MLFLOW_REGISTRY_URI";
pub const ENV_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";

/// The registry of `--data-dir`: its database (`--backend-store-uri`), local artifact root
/// and download cache, and the connection pool size for a database server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRegistry {
    pub data_dir: PathBuf,
    pub db: DatabaseUri,
    pub pool: PoolOptions,
    /// `--artifacts-destination`: where `mlflow-artifacts:/` files are, over the destination
    /// `regserve server` recorded in the registry.
    pub artifacts_destination: Option<String>,
}

impl LocalRegistry {
    /// The SQLite default: `<data_dir>/registry.db`.
    pub fn sqlite(data_dir: &Path) -> LocalRegistry {
        LocalRegistry {
            data_dir: data_dir.to_path_buf(),
            db: DatabaseUri::Sqlite(data_dir.join("registry.db")),
            pool: PoolOptions::default(),
            artifacts_destination: None,
        }
    }

    pub fn artifacts(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
}

/// Where the registry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// A registry database this process opens (SQLite or PostgreSQL), and the local artifact
    /// root for its `mlflow-artifacts:/` files.
    Embedded { db: DatabaseUri, artifacts: PathBuf },
    /// An MLflow-compatible REST registry at this base URL.
    Rest { url: String },
}

/// A registry URI of none of the accepted forms.
#[derive(Debug, thiserror::Error)]
#[error("unsupported registry URI '{uri}' (from {origin}); accepted: http(s)://host[:port][/prefix] (an MLflow-compatible registry server), sqlite:///<path to a regserve registry.db>, postgresql://user@host:port/db (a regserve registry database), or none for the --data-dir store")]
pub struct UnsupportedUri {
    pub uri: String,
    pub origin: &'static str,
}

/// Choose the registry: `flag` (`--registry-uri`), else `MLFLOW_REGISTRY_URI`, else
/// `MLFLOW_TRACKING_URI` (looked up with `env`; empty counts as unset), else the store of
/// `local`. Returns the location and which of those chose it.
pub fn registry_location(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    local: &LocalRegistry,
) -> Result<(RegistryLocation, &'static str), UnsupportedUri> {
    let chosen = flag.map(|f| (f.trim().to_string(), "--registry-uri")).filter(|(f, _)| !f.is_empty()).or_else(|| {
        [ENV_REGISTRY_URI, ENV_TRACKING_URI]
            .into_iter()
            .find_map(|k| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(|v| (v, k)))
    });
    let Some((uri, origin)) = chosen else {
        let location = RegistryLocation::Embedded { db: local.db.clone(), artifacts: local.artifacts() };
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
            return Ok((RegistryLocation::Embedded { db: DatabaseUri::Sqlite(db), artifacts }, origin));
        }
    }
    if let Some(db @ DatabaseUri::Postgres(_)) = DatabaseUri::parse(&uri) {
        return Ok((RegistryLocation::Embedded { db, artifacts: local.artifacts() }, origin));
    }
    Err(UnsupportedUri { uri: redact_url(&uri), origin })
}

/// True when `db` exists and is MLflow's own database (its schema is managed by Alembic).
pub fn is_mlflow_database(db: &Path) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_flag_then_registry_then_tracking_uri_then_data_dir() {
        let data = &LocalRegistry::sqlite(Path::new("/data"));
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
                RegistryLocation::Embedded {
                    db: DatabaseUri::Sqlite("/data/registry.db".into()),
                    artifacts: "/data/artifacts".into()
                },
                "--data-dir"
            )
        );
    }

    #[test]
    fn database_uris_name_an_embedded_store() {
        let data = &LocalRegistry::sqlite(Path::new("/data"));
        assert_eq!(
            registry_location(Some("sqlite:////srv/reg/registry.db"), env(&[]), data).unwrap().0,
            RegistryLocation::Embedded {
                db: DatabaseUri::Sqlite("/srv/reg/registry.db".into()),
                artifacts: "/srv/reg/artifacts".into()
            }
        );
        assert_eq!(
            registry_location(Some("sqlite:///registry.db"), env(&[]), data).unwrap().0,
            RegistryLocation::Embedded { db: DatabaseUri::Sqlite("registry.db".into()), artifacts: "artifacts".into() }
        );
        // MLflow's database URIs for PostgreSQL, the SQLAlchemy driver part ignored.
        for uri in
            ["postgresql://u:pw@db:5432/reg", "postgres://u:pw@db:5432/reg", "postgresql+psycopg2://u:pw@db:5432/reg"]
        {
            assert_eq!(
                registry_location(Some(uri), env(&[]), data).unwrap().0,
                RegistryLocation::Embedded {
                    db: DatabaseUri::Postgres("postgresql://u:pw@db:5432/reg".into()),
                    artifacts: "/data/artifacts".into()
                }
            );
        }
    }

    #[test]
    fn other_uris_are_refused_naming_the_accepted_forms_and_the_origin() {
        for (uri, origin) in [
            ("databricks", ENV_TRACKING_URI),
            ("file:///home/me/mlruns", ENV_TRACKING_URI),
            ("./mlruns", ENV_TRACKING_URI),
            ("mysql://u:pw@db/mlflow", ENV_TRACKING_URI),
            ("sqlite://", ENV_TRACKING_URI),
        ] {
            let lookup = move |k: &str| (k == ENV_TRACKING_URI).then(|| uri.to_string());
            let e = registry_location(None, lookup, &LocalRegistry::sqlite(Path::new("/d"))).unwrap_err().to_string();
            assert!(e.contains("http(s)://host") && e.contains("sqlite:///"), "{e}");
            assert!(e.contains(origin), "{e}");
            assert!(!e.contains("pw@"), "the password leaked: {e}");
        }
    }
}
