//! The MLflow Model Registry data model, serialized the way MLflow's REST API returns it
//! (version numbers as strings, timestamps in ms, empty lists left out).

use serde::{Deserialize, Serialize, Serializer};

pub use crate::uri::Stage;

/// A model version's registration status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionStatus {
    PendingRegistration,
    FailedRegistration,
    Ready,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::PendingRegistration => "PENDING_REGISTRATION",
            VersionStatus::FailedRegistration => "FAILED_REGISTRATION",
            VersionStatus::Ready => "READY",
        }
    }

    pub fn parse(s: &str) -> Option<VersionStatus> {
        [Self::PendingRegistration, Self::FailedRegistration, Self::Ready].into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    pub alias: String,
    #[serde(serialize_with = "as_string", deserialize_with = "from_string")]
    pub version: u64,
}

/// One version of a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    #[serde(serialize_with = "as_string", deserialize_with = "from_string")]
    pub version: u64,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    pub current_stage: Stage,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    pub status: VersionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    #[serde(default)]
    pub run_link: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_id: String,
    /// Where the files are kept (`mlflow-artifacts:/...`, a path, ...). Not part of MLflow's
    /// public object; used to answer `get-download-uri`.
    #[serde(skip)]
    pub storage_location: String,
}

impl ModelVersion {
    /// A prompt version (MLflow's prompt registry), not a model: nothing to serve.
    pub fn is_prompt(&self) -> bool {
        super::is_prompt(&self.tags)
    }

    /// Where the version's files are: its storage location, else its source — what
    /// `model-versions/get-download-uri` answers.
    pub fn download_location(&self) -> &str {
        if self.storage_location.is_empty() {
            &self.source
        } else {
            &self.storage_location
        }
    }
}

/// A timestamp in ms since the epoch as `2026-01-02 15:04:05 UTC` (for tables and pages).
pub fn format_utc_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A registered model with its latest version per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latest_versions: Vec<ModelVersion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Alias>,
}

fn as_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn from_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(u64),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_utc_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc_ms(1_795_879_839_231), "2026-11-28 15:30:39 UTC");
    }

    #[test]
    fn version_serializes_as_string_and_omits_empty_lists() {
        let v = ModelVersion {
            name: "m".into(),
            version: 3,
            creation_timestamp: 1,
            last_updated_timestamp: 2,
            user_id: String::new(),
            current_stage: Stage::Staging,
            description: String::new(),
            source: "s".into(),
            run_id: String::new(),
            status: VersionStatus::Ready,
            status_message: String::new(),
            run_link: String::new(),
            tags: vec![],
            aliases: vec![],
            model_id: String::new(),
            storage_location: "x".into(),
        };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["version"], "3");
        assert_eq!(j["current_stage"], "Staging");
        assert_eq!(j["status"], "READY");
        assert!(j.get("tags").is_none() && j.get("aliases").is_none() && j.get("storage_location").is_none());
        let back: ModelVersion = serde_json::from_value(j).unwrap();
        assert_eq!(back.version, 3);
    }
}
