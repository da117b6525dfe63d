//! The `mlflow.modelVersions` tag of a logged model: the registered versions made from it, as
//! `mlflow server` records them when `model-versions/create` names a `model_id`.
//!
//! MLflow (`AbstractStore.set_model_versions_tags`, called by `handlers._create_model_version`)
//! reads the tag, appends `{"name": <model>, "version": <number>}` unless it is there already,
//! and writes back `json.dumps(list)`: Python's separators (`", "`, `": "`) and non-ASCII
//! escaped. The value written here is byte for byte that, in one transaction.

use crate::params;

use super::{logged_model_exists, Result, TrackingStore};

/// The tag key (MLflow's `mlflow_tags.MLFLOW_MODEL_VERSIONS`).
pub const MODEL_VERSIONS_TAG: &str = "mlflow.modelVersions";

impl TrackingStore {
    /// Record that version `version` of registered model `name` was made from logged model
    /// `model_id`. An existing tag that is not a JSON list (nothing MLflow writes) is replaced.
    pub fn link_model_version(&self, model_id: &str, name: &str, version: u64) -> Result<()> {
        self.db.write_tx(|tx| {
            logged_model_exists(tx, model_id)?;
            let existing: Option<String> = tx.query_opt(
                "SELECT value FROM logged_model_tags WHERE model_id = ?1 AND key = ?2",
                params![model_id, MODEL_VERSIONS_TAG],
                |r| r.get(0),
            )?;
            let value = linked_versions(existing.as_deref(), name, version);
            tx.execute(
                "INSERT INTO logged_model_tags (model_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                params![model_id, MODEL_VERSIONS_TAG, value],
            )?;
            Ok(())
        })
    }
}

/// The tag's new value: `existing` (a JSON list) with `{"name", "version"}` appended unless
/// present, serialized as Python's `json.dumps` does.
fn linked_versions(existing: Option<&str>, name: &str, version: u64) -> String {
    let entry = serde_json::json!({ "name": name, "version": version });
    let mut list = existing.and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(s).ok()).unwrap_or_default();
    if !list.contains(&entry) {
        list.push(entry);
    }
    python_json(&serde_json::Value::Array(list))
}

/// `json.dumps(value)` with Python's defaults: `", "` and `": "` separators, every non-ASCII
/// character as `\uXXXX` (UTF-16 surrogate pairs beyond the BMP).
fn python_json(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    serde::Serialize::serialize(value, &mut ser)
        .expect("serializing a JSON value into memory cannot fail; this is a bug");
    String::from_utf8(out).expect("the formatter writes ASCII only; this is a bug")
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_what_python_json_dumps_writes() {
        // json.dumps([{"name": "m", "version": 1}])
        assert_eq!(linked_versions(None, "m", 1), r#"[{"name": "m", "version": 1}]"#);
        let two = linked_versions(Some(r#"[{"name": "m", "version": 1}]"#), "m", 2);
        assert_eq!(two, r#"[{"name": "m", "version": 1}, {"name": "m", "version": 2}]"#);
        // Already there: unchanged (MLflow's `if mvs[0] not in existing_mvs`).
        assert_eq!(linked_versions(Some(&two), "m", 1), two);
        // What the client's fluent API adds (version as a string) is another entry, as in MLflow.
        assert_eq!(
            linked_versions(Some(r#"[{"name":"m","version":"1"}]"#), "m", 1),
            r#"[{"name": "m", "version": "1"}, {"name": "m", "version": 1}]"#
        );
        // json.dumps([{"name": "modèle 😀\"q\"", "version": 3}])
        assert_eq!(
            linked_versions(None, "modèle 😀\"q\"", 3),
            r#"[{"name": "mod\u00e8le \ud83d\ude00\"q\"", "version": 3}]"#
        );
        // Not a list: replaced.
        assert_eq!(linked_versions(Some("{oops"), "m", 1), r#"[{"name": "m", "version": 1}]"#);
    }
}
