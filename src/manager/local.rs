//! Serving a model directory on local disk (`serve --model-dir`, KServe's `/mnt/models`):
//! either files some other tool placed there (KServe's storage initializer copying an
//! `s3://…` model), served as they are, or a directory `regserve pull` wrote, which records the
//! `models:/` URI it came from ([`PullRecord`]) so `serve` can go on following that URI.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::source::{ModelSource, SourceError};
use crate::artifact::FetchError;
use crate::registry::{ModelVersion, RegistryError, Stage, VersionStatus};
use crate::uri::{ModelUri, Selector};

/// The record `regserve pull` leaves beside the files it downloaded.
pub const PULL_RECORD: &str = "regserve-source.json";

/// What `regserve pull` downloaded: the URI asked for, the version it selected then, and the
/// registry (as anyone may read it: no credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRecord {
    pub uri: String,
    pub registry: String,
    /// When the pull finished, in ms since the epoch.
    pub pulled_at_ms: i64,
    /// Where the registry keeps the version's files (its download location): with the name and
    /// number, what tells the same version apart when the registry answers again.
    pub location: String,
    pub model_version: ModelVersion,
}

/// Largest record read: a few KB are written.
const MAX_RECORD_BYTES: u64 = 1 << 20;

impl PullRecord {
    /// The record in `dir`, if `regserve pull` wrote one.
    pub fn read(dir: &Path) -> Result<Option<PullRecord>, String> {
        let path = dir.join(PULL_RECORD);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_RECORD_BYTES + 1), &mut text)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            return Err(format!(
                "{} is larger than {MAX_RECORD_BYTES} bytes; `regserve pull` writes a few KB",
                path.display()
            ));
        }
        let record: PullRecord = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a record written by `regserve pull`: {e}", path.display()))?;
        record.served_uri().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(record))
    }

    pub fn served_uri(&self) -> Result<ModelUri, crate::uri::UriError> {
        self.uri.parse()
    }

    /// The pulled version as the manager compares versions: with its download location.
    fn version(&self) -> ModelVersion {
        let mut v = self.model_version.clone();
        v.storage_location = self.location.clone();
        v
    }

    fn is(&self, v: &ModelVersion) -> bool {
        v.name == self.model_version.name && v.version == self.model_version.version
    }
}

/// The model inside `dir`: `dir` itself when it holds an `MLmodel` or `.onnx` file, else its
/// one subdirectory that does (a storage initializer copying a folder that holds the model
/// folder). Anything else is an error saying what was found.
pub fn model_in_dir(dir: &Path) -> Result<PathBuf, FetchError> {
    let io = |e: std::io::Error| FetchError::Io { path: dir.display().to_string(), source: e };
    let holds_model = |d: &Path| -> Result<bool, std::io::Error> {
        if d.join("MLmodel").is_file() {
            return Ok(true);
        }
        for entry in std::fs::read_dir(d)? {
            let entry = entry?;
            if entry.path().extension().is_some_and(|e| e == "onnx") && entry.file_type()?.is_file() {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if !dir.is_dir() {
        return Err(FetchError::NotFound(format!("{} (--model-dir) is not a directory", dir.display())));
    }
    if holds_model(dir).map_err(io)? {
        return Ok(dir.to_path_buf());
    }
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if entry.file_type().map_err(io)?.is_dir() && !name.to_string_lossy().starts_with('.') {
            subdirs.push(entry.path());
        }
        if subdirs.len() > 1 {
            break;
        }
    }
    match subdirs.as_slice() {
        [one] if holds_model(one).map_err(io)? => Ok(one.clone()),
        _ => Err(FetchError::NotFound(format!(
            "no model in {}: expected an MLflow model directory (MLmodel with an onnx flavor) or a .onnx file there, or in its only subdirectory",
            dir.display()
        ))),
    }
}

/// A version for files with no registry behind them: number 1, READY.
fn directory_version(name: &str, dir: &Path) -> ModelVersion {
    ModelVersion {
        name: name.to_string(),
        version: 1,
        creation_timestamp: 0,
        last_updated_timestamp: 0,
        user_id: String::new(),
        current_stage: Stage::None,
        description: String::new(),
        source: format!("file://{}", dir.display()),
        run_id: String::new(),
        status: VersionStatus::Ready,
        status_message: String::new(),
        run_link: String::new(),
        tags: Vec::new(),
        aliases: Vec::new(),
        model_id: String::new(),
        storage_location: String::new(),
    }
}

fn not_here(uri: &ModelUri, what: &str) -> SourceError {
    SourceError::Registry(RegistryError::NotFound(format!("{uri} is not served here: this server serves {what}")))
}

/// Files in a directory, served as version 1 of `name` (the URI `models:/<name>/1`).
pub struct DirectorySource {
    name: String,
    dir: PathBuf,
}

impl DirectorySource {
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> DirectorySource {
        DirectorySource { name: name.into(), dir: dir.into() }
    }

    /// The URI its one model is served under.
    pub fn uri(&self) -> ModelUri {
        ModelUri::new(self.name.clone(), Selector::Version(1))
    }
}

#[async_trait]
impl ModelSource for DirectorySource {
    async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, SourceError> {
        if *uri != self.uri() {
            return Err(not_here(uri, &format!("only {} (the files in --model-dir)", self.uri())));
        }
        Ok(directory_version(&self.name, &self.dir))
    }

    async fn fetch(&self, _version: &ModelVersion) -> Result<PathBuf, SourceError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || model_in_dir(&dir))
            .await
            .map_err(|e| SourceError::Join(e.to_string()))?
            .map_err(SourceError::from)
    }

    fn describe(&self) -> String {
        format!("model directory {}", self.dir.display())
    }

    fn public_description(&self) -> String {
        "model directory".into()
    }
}

/// A directory `regserve pull` wrote. With a registry (`registry`), the recorded URI is
/// followed there: its version is served from the directory, any later one is fetched from the
/// registry; until the registry first answers, the pulled version is served (the pod is ready
/// with what it pulled even while the registry is away). Without one, the pulled version only.
pub struct PulledSource {
    record: PullRecord,
    dir: PathBuf,
    registry: Option<Arc<dyn ModelSource>>,
    /// Whether the registry has answered once: from then on its errors are errors (the
    /// manager keeps the version in service and says why), not a reason to go back.
    heard: AtomicBool,
}

impl PulledSource {
    pub fn new(record: PullRecord, dir: impl Into<PathBuf>, registry: Option<Arc<dyn ModelSource>>) -> PulledSource {
        PulledSource { record, dir: dir.into(), registry, heard: AtomicBool::new(false) }
    }

    fn pulled_uri(&self) -> ModelUri {
        ModelUri::new(self.record.model_version.name.clone(), Selector::Version(self.record.model_version.version))
    }
}

#[async_trait]
impl ModelSource for PulledSource {
    async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, SourceError> {
        let recorded = self.record.served_uri().ok();
        let ours = recorded.as_ref() == Some(uri) || *uri == self.pulled_uri();
        let Some(registry) = &self.registry else {
            return if ours {
                Ok(self.record.version())
            } else {
                Err(not_here(uri, &format!("the version pulled into --model-dir ({})", self.pulled_uri())))
            };
        };
        match registry.resolve(uri).await {
            Ok(v) if self.record.is(&v) => {
                self.heard.store(true, Ordering::Relaxed);
                // The pulled files are this version's: compare them as the same version.
                Ok(ModelVersion { storage_location: self.record.location.clone(), ..v })
            }
            Ok(v) => {
                self.heard.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) if ours && !self.heard.load(Ordering::Relaxed) => {
                tracing::warn!(uri = %uri, error = %e, version = self.record.model_version.version, "the registry did not answer; serving the version pulled into --model-dir until it does");
                Ok(self.record.version())
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch(&self, version: &ModelVersion) -> Result<PathBuf, SourceError> {
        if self.record.is(version) {
            let dir = self.dir.clone();
            return tokio::task::spawn_blocking(move || model_in_dir(&dir))
                .await
                .map_err(|e| SourceError::Join(e.to_string()))?
                .map_err(SourceError::from);
        }
        match &self.registry {
            Some(registry) => registry.fetch(version).await,
            None => Err(FetchError::NotFound(format!(
                "version {} of '{}': only the pulled version is in --model-dir",
                version.version, version.name
            ))
            .into()),
        }
    }

    fn describe(&self) -> String {
        match &self.registry {
            Some(r) => format!("{} (pulled {} into {})", r.describe(), self.record.uri, self.dir.display()),
            None => format!(
                "model directory {} (pulled {} from {})",
                self.dir.display(),
                self.record.uri,
                self.record.registry
            ),
        }
    }

    fn public_description(&self) -> String {
        match &self.registry {
            Some(r) => r.public_description(),
            None => "model directory".into(),
        }
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.registry.as_ref().and_then(|r| r.changes())
    }

    fn trim_downloads(&self, keep: &[ModelVersion], max_bytes: u64) {
        if let Some(r) = &self.registry {
            r.trim_downloads(keep, max_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: u64) -> PullRecord {
        let mut v = directory_version(name, Path::new("/x"));
        v.version = version;
        PullRecord {
            uri: format!("models:/{name}@champion"),
            registry: "http://registry".into(),
            pulled_at_ms: 1,
            location: "mlflow-artifacts:/1/m/artifacts".into(),
            model_version: v,
        }
    }

    #[test]
    fn the_model_is_in_the_directory_or_its_only_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(model_in_dir(dir.path()).unwrap_err().to_string().contains("no model in"));
        let sub = dir.path().join("model");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("MLmodel"), "flavors: {}\n").unwrap();
        assert_eq!(model_in_dir(dir.path()).unwrap(), sub);
        // A dot-folder (a download's staging area) does not count.
        std::fs::create_dir(dir.path().join(".staging")).unwrap();
        assert_eq!(model_in_dir(dir.path()).unwrap(), sub);
        std::fs::create_dir(dir.path().join("other")).unwrap();
        assert!(model_in_dir(dir.path()).is_err(), "two folders: which one?");
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        assert_eq!(model_in_dir(dir.path()).unwrap(), dir.path());
        assert!(model_in_dir(&dir.path().join("missing")).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PullRecord::read(dir.path()).unwrap().is_none());
        let r = record("fraud", 3);
        std::fs::write(dir.path().join(PULL_RECORD), serde_json::to_vec(&r).unwrap()).unwrap();
        let back = PullRecord::read(dir.path()).unwrap().unwrap();
        assert_eq!((back.model_version.version, back.uri.as_str()), (3, "models:/fraud@champion"));
        assert_eq!(back.version().download_location(), "mlflow-artifacts:/1/m/artifacts");
        std::fs::write(dir.path().join(PULL_RECORD), b"{\"uri\": 1}").unwrap();
        let e = PullRecord::read(dir.path()).unwrap_err();
        assert!(e.contains(PULL_RECORD) && e.contains("regserve pull"), "{e}");
        let mut bad = record("fraud", 3);
        bad.uri = "s3://bucket/x".into();
        std::fs::write(dir.path().join(PULL_RECORD), serde_json::to_vec(&bad).unwrap()).unwrap();
        assert!(PullRecord::read(dir.path()).unwrap_err().contains("models:/"));
    }

    /// A registry whose answers the test sets.
    struct Answers(std::sync::Mutex<Result<u64, String>>);

    #[async_trait]
    impl ModelSource for Answers {
        async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, SourceError> {
            match &*self.0.lock().unwrap() {
                Ok(v) => {
                    let mut mv = record(&uri.name, *v).model_version;
                    mv.storage_location = format!("mlflow-artifacts:/v{v}");
                    Ok(mv)
                }
                Err(e) => Err(SourceError::Registry(RegistryError::Io(std::io::Error::other(e.clone())))),
            }
        }
        async fn fetch(&self, v: &ModelVersion) -> Result<PathBuf, SourceError> {
            Ok(PathBuf::from(format!("/registry/v{}", v.version)))
        }
        fn describe(&self) -> String {
            "answers".into()
        }
    }

    #[tokio::test]
    async fn a_pulled_directory_follows_its_uri_once_the_registry_answers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        let answers = Arc::new(Answers(std::sync::Mutex::new(Err("connection refused".into()))));
        let source = PulledSource::new(record("fraud", 3), dir.path(), Some(answers.clone()));
        let uri: ModelUri = "models:/fraud@champion".parse().unwrap();
        // The registry is away at start: the pulled version, from the directory.
        let v = source.resolve(&uri).await.unwrap();
        assert_eq!(v.version, 3);
        assert_eq!(source.fetch(&v).await.unwrap(), dir.path());
        // It answers with the same version: the same key (no reload), still the directory.
        *answers.0.lock().unwrap() = Ok(3);
        let same = source.resolve(&uri).await.unwrap();
        assert_eq!(same.download_location(), v.download_location());
        assert_eq!(source.fetch(&same).await.unwrap(), dir.path());
        // The alias moves: the new version comes from the registry.
        *answers.0.lock().unwrap() = Ok(4);
        let moved = source.resolve(&uri).await.unwrap();
        assert_eq!(source.fetch(&moved).await.unwrap(), PathBuf::from("/registry/v4"));
        // Once heard, an outage is an error (the manager keeps v4 in service), not a way back to v3.
        *answers.0.lock().unwrap() = Err("gone".into());
        assert!(source.resolve(&uri).await.is_err());
    }

    #[tokio::test]
    async fn without_a_registry_only_the_pulled_version_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let source = PulledSource::new(record("fraud", 3), dir.path(), None);
        assert_eq!(source.resolve(&"models:/fraud@champion".parse().unwrap()).await.unwrap().version, 3);
        assert_eq!(source.resolve(&"models:/fraud/3".parse().unwrap()).await.unwrap().version, 3);
        let e = source.resolve(&"models:/fraud/2".parse().unwrap()).await.unwrap_err().to_string();
        assert!(e.contains("not served here") && e.contains("models:/fraud/3"), "{e}");
        let dsrc = DirectorySource::new("m", dir.path());
        assert_eq!(dsrc.resolve(&dsrc.uri()).await.unwrap().version, 1);
        assert!(dsrc.resolve(&"models:/m/2".parse().unwrap()).await.is_err());
    }
}
