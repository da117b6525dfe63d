//! Which registry a command talks to, chosen the way MLflow chooses it: `--registry-uri`, else
//! `MLFLOW_REGISTRY_URI`, else `MLFLOW_TRACKING_URI`, else the embedded store in `--data-dir`.
//! An `http(s)://` URI names a remote MLflow-compatible server, `sqlite:///<path>` an embedded
//! store; MLflow's own database is recognised so it is never opened as ours.
//!
//! This is only the choice. Opening it needs the serving sources and the MLflow client, which
//! sit above the registry, so it is done by their callers (`manager::remote::open_source` for
//! `serve`, `cli::client::RegistryClient::open` for the CLI), which wrap [`UnsupportedUri`]
//! in their own error.

use std::path::{Path, PathBuf};

use reqwest::Url;

/// The variables read, in order, when no `--registry-uri` is given.
pub const ENV_REGISTRY_URI: &str = "MLFLOW_REGISTRY_URI";
pub const ENV_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";

/// Where the registry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// The embedded SQLite store and its artifact root.
    Embedded { db: PathBuf, artifacts: PathBuf },
    /// An MLflow-compatible REST registry at this base URL.
    Rest { url: String },
}

/// A registry URI of none of the accepted forms.
#[derive(Debug, thiserror::Error)]
#[error("unsupported registry URI '{uri}' (from {origin}); accepted: http(s)://host[:port][/prefix] (an MLflow-compatible registry server), sqlite:///<path to a regserve registry.db>, or none for the --data-dir store")]
pub struct UnsupportedUri {
    pub uri: String,
    pub origin: &'static str,
}

/// Choose the registry: `flag` (`--registry-uri`), else `MLFLOW_REGISTRY_URI`, else
/// `MLFLOW_TRACKING_URI` (looked up with `env`; empty counts as unset), else the store in
/// `data_dir`. Returns the location and which of those chose it.
pub fn registry_location(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    data_dir: &Path,
) -> Result<(RegistryLocation, &'static str), UnsupportedUri> {
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

/// `url` with any user name and password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL: hide whatever sits between "//" and "@".
        Err(_) => match (url.find("//"), url.rfind('@')) {
            (Some(a), Some(b)) if a + 2 <= b => format!("{}***{}", &url[..a + 2], &url[b..]),
            _ => url.to_string(),
        },
    }
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
}
