//! A throwaway PostgreSQL for end-to-end tests, over `scripts/pg-cluster` (the script
//! `tests/python/pg.py` drives too): a cluster in a temporary directory on 127.0.0.1 and a free
//! port, a fresh database per test, a restart on the same port, stopped and removed on drop.

use std::path::Path;
use std::process::{Command, Stdio};

/// A running cluster; `url()` is its superuser URL (database `postgres`).
pub struct PgCluster {
    dir: tempfile::TempDir,
    url: String,
}

fn script(command: &str, dir: &Path) -> Result<String, String> {
    // The script bounds its own waits (pg_ctl -t), so this cannot hang.
    let out = Command::new(super::repo().join("scripts/pg-cluster"))
        .arg(command)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("scripts/pg-cluster: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/pg-cluster {command} {} failed ({}):\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().unwrap_or("").to_string())
}

/// psql on `url`, stopping at the first error: the rows of `sql`, fields separated by `|`.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["--no-psqlrc", "-X", "-w", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-q", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("psql (Debian's postgresql-client): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

impl PgCluster {
    /// initdb and start a new cluster. The directory is under the system temp dir: when the
    /// tests run as root the server runs as the `postgres` OS user, which must reach it.
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new().prefix("regserve-pg-").tempdir().expect("temp dir");
        let url = script("start", dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(url.starts_with("postgresql://"), "pg-cluster printed {url:?}");
        PgCluster { dir, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `CREATE DATABASE name`; returns its URL. `name`: lower-case letters, digits, `_`.
    pub fn new_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() < 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: use lower-case letters, digits and _"
        );
        psql(&self.url, &format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let base = self.url.rsplit_once('/').expect("the URL ends with /postgres").0;
        format!("{base}/{name}")
    }

    /// Stop and start again on the same port (same URL, same data).
    pub fn restart(&self) {
        let url = script("restart", self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url, self.url, "the cluster came back on another address");
    }

    /// Stop the server (fast shutdown); `restart` starts it again.
    pub fn stop(&self) {
        script("stop", self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Err(e) = script("stop", self.dir.path()) {
            eprintln!("{e}");
        }
        // The TempDir removes the directory after this.
    }
}
