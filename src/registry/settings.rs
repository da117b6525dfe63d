//! What `regserve server` records in the registry for every process that opens the same
//! registry (the `server_settings` table, migration 0004): today the artifact proxy's
//! destination, so the embedded CLI and `serve` resolve `mlflow-artifacts:/` as the server does.

use crate::params;

use super::{RegistryError, Store};

/// The key of the artifact proxy's destination: a bucket URI (`s3://bucket/prefix`, …) or
/// `file://<absolute path>` of the server's local artifact root. The last server started wins.
pub const ARTIFACTS_DESTINATION: &str = "artifacts_destination";

impl Store {
    /// The value recorded under `key`, if any.
    pub fn setting(&self, key: &str) -> Result<Option<String>, RegistryError> {
        self.read_tx(|tx| {
            Ok(tx.query_opt("SELECT value FROM server_settings WHERE key = ?1", params![key], |r| r.get::<String>(0))?)
        })
    }

    /// Record `value` under `key`, replacing what was there.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), RegistryError> {
        self.write_tx(|tx| {
            tx.execute(
                "INSERT INTO server_settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_recorded_replaced_and_seen_by_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.setting(ARTIFACTS_DESTINATION).unwrap(), None);
        store.set_setting(ARTIFACTS_DESTINATION, "s3://bucket/a").unwrap();
        store.set_setting("other", "x").unwrap();
        store.set_setting(ARTIFACTS_DESTINATION, "s3://bucket/b").unwrap();
        // Another process's handle on the same file sees the last value, and keys stay apart.
        let other = Store::open(&path).unwrap();
        assert_eq!(other.setting(ARTIFACTS_DESTINATION).unwrap().as_deref(), Some("s3://bucket/b"));
        assert_eq!(other.setting("other").unwrap().as_deref(), Some("x"));
        assert_eq!(other.setting("none").unwrap(), None);
    }
}
