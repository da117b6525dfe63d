//! Registering into a remote MLflow-compatible registry over REST (`regserve server` or `mlflow
//! server`), as MLflow 3's `mlflow.onnx.log_model(..., registered_model_name=...)` does:
//! test-load the model here first ([`super::test_load`]: a model that does not load never
//! reaches the registry), create a logged model, `PUT` its files to the artifact proxy (a bare
//! `.onnx` file gets a minimal `MLmodel`), mark it `LOGGED_MODEL_READY`, create the registered
//! model if needed, create the version from `models:/m-<id>`, wait until the registry says
//! `READY`, then apply the stage and alias. Large uploads show their progress on stderr.
//!
//! Two steps, so the blocking test load runs outside the caller's async runtime: [`prepare`],
//! then [`register`].

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{test_load, RegisterError, Registration};
use crate::artifact::fetch::{classify, Location};
use crate::artifact::FetchError;
use crate::mlflow::http::append_segments;
use crate::mlflow::{CreateModelVersion, LoggedModelRef, ProgressFn, RestRegistry, Upload};
use crate::registry::{ModelVersion, RegistryError, VersionStatus};

/// The experiment new logged models go to (MLflow's variable); default `0`, "Default".
pub const ENV_EXPERIMENT_ID: &str = "MLFLOW_EXPERIMENT_ID";
/// How long a remote registration may stay `PENDING_REGISTRATION` (MLflow's
/// `await_registration_for` default).
const REGISTRATION_WAIT: Duration = Duration::from_secs(300);
/// Files at least this large show their upload progress on stderr.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

type Result<T, E = RegisterError> = std::result::Result<T, E>;

/// A model checked and laid out for upload: relative paths in the logged model's folder, and
/// whether an `MLmodel` must be written for it (pointing at this `.onnx` file).
#[derive(Debug)]
pub struct PreparedUpload {
    files: Vec<(String, PathBuf)>,
    mlmodel_for: Option<String>,
}

/// Step 1, blocking: validate the request and test-load the model (one session), so that
/// nothing is created remotely for a model that does not load.
pub fn prepare(path: &Path, reg: &Registration, ort_lib: Option<&Path>) -> Result<PreparedUpload> {
    reg.validate()?;
    let meta =
        std::fs::metadata(path).map_err(|_| RegisterError::Fetch(FetchError::NotFound(path.display().to_string())))?;
    let files = test_load(path, reg.load_timeout(), ort_lib).map_err(RegisterError::Load)?;
    if meta.is_file() {
        // As MLflow lays out an ONNX model: model.onnx beside an MLmodel naming it.
        return Ok(PreparedUpload {
            files: vec![("model.onnx".to_string(), path.to_path_buf())],
            mlmodel_for: Some("model.onnx".to_string()),
        });
    }
    let listed = list_files(path).map_err(|e| RegistryError::Io(annotate(e, path)))?;
    let mlmodel_for = if files.is_mlflow_model {
        None
    } else {
        let rel = files.onnx.strip_prefix(path).unwrap_or(&files.onnx);
        Some(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
    };
    Ok(PreparedUpload { files: listed, mlmodel_for })
}

fn annotate(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Every regular file under `dir` (following links to files, not to folders), as
/// (`a/b` relative path, full path), sorted.
fn list_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut folders = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, folder)) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push((rel, entry.path()));
            } else if std::fs::metadata(entry.path())?.is_file() {
                out.push((rel, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `MLmodel` MLflow writes for an ONNX model, without the optional parts (signature,
/// environment files): enough for `mlflow.pyfunc.load_model` and for regserve.
fn minimal_mlmodel(data: &str, logged: &LoggedModelRef) -> String {
    let doc = serde_json::json!({
        "artifact_path": logged.artifact_uri,
        "flavors": {
            "onnx": {
                "code": null,
                "data": data,
                "onnx_session_options": null,
                "providers": ["CPUExecutionProvider"],
            },
            "python_function": {
                "data": data,
                "loader_module": "mlflow.onnx",
            },
        },
        "model_id": logged.model_id,
        "model_uuid": logged.model_id,
    });
    serde_yaml::to_string(&doc).expect("a JSON document is valid YAML; this is a bug")
}

/// Steps 2.. of a remote registration, after the local test load ([`prepare`]).
pub async fn register(registry: &RestRegistry, prepared: PreparedUpload, reg: &Registration) -> Result<ModelVersion> {
    let experiment = std::env::var(ENV_EXPERIMENT_ID).ok().filter(|e| !e.trim().is_empty()).unwrap_or("0".into());
    let logged = registry.create_logged_model(experiment.trim(), &reg.name, &[]).await?;
    if let Err(e) = upload_files(registry, &logged, &prepared).await {
        if let Err(mark) = registry.finalize_logged_model(&logged.model_id, "LOGGED_MODEL_UPLOAD_FAILED").await {
            tracing::warn!(model_id = %logged.model_id, error = %mark, "could not mark the logged model as failed");
        }
        return Err(e);
    }
    registry.finalize_logged_model(&logged.model_id, "LOGGED_MODEL_READY").await?;

    let description = reg.description.clone().unwrap_or_default();
    let created_model = match registry.create_registered_model(&reg.name, &description, &[]).await {
        Ok(_) => true,
        Err(RegistryError::AlreadyExists(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let request = CreateModelVersion {
        name: reg.name.clone(),
        source: format!("models:/{}", logged.model_id),
        run_id: reg.run_id.clone(),
        model_id: logged.model_id.clone(),
        description,
        tags: reg.tags.clone(),
    };
    let created = match registry.create_model_version(&request).await {
        Ok(v) => v,
        Err(e) => {
            if created_model {
                if let Err(rm) = registry.delete_registered_model(&reg.name).await {
                    tracing::warn!(model = %reg.name, error = %rm, "could not remove the registered model just created");
                }
            }
            return Err(e.into());
        }
    };
    let (name, version) = (created.name.clone(), created.version);
    let incomplete = |what: &'static str, e: RegistryError| RegisterError::Incomplete {
        name: name.clone(),
        version,
        what,
        source: Box::new(e.into()),
    };
    wait_until_ready(registry, created).await?;
    if let Some(stage) = reg.stage {
        registry
            .transition_model_version_stage(&name, version, stage, reg.archive_existing)
            .await
            .map_err(|e| incomplete("moving it to the stage failed", e))?;
    }
    if let Some(alias) = &reg.alias {
        registry.set_alias(&name, alias, version).await.map_err(|e| incomplete("setting the alias failed", e))?;
    }
    Ok(registry.get_model_version(&name, version).await?)
}

/// Poll `model-versions/get` until the version leaves `PENDING_REGISTRATION`.
async fn wait_until_ready(registry: &RestRegistry, mut version: ModelVersion) -> Result<ModelVersion> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match version.status {
            VersionStatus::Ready => return Ok(version),
            VersionStatus::FailedRegistration => {
                return Err(RegisterError::FailedRegistration {
                    name: version.name,
                    version: version.version,
                    message: if version.status_message.is_empty() {
                        "no reason given".into()
                    } else {
                        version.status_message
                    },
                })
            }
            VersionStatus::PendingRegistration if started.elapsed() >= REGISTRATION_WAIT => {
                return Err(RegisterError::StillPending {
                    name: version.name,
                    version: version.version,
                    status: version.status.as_str(),
                    waited: REGISTRATION_WAIT,
                })
            }
            VersionStatus::PendingRegistration => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        let (name, number) = (version.name.clone(), version.version);
        version = registry.get_model_version(&name, number).await.map_err(|e| RegisterError::Incomplete {
            name,
            version: number,
            what: "waiting for the registry to accept it failed",
            source: Box::new(e.into()),
        })?;
    }
}

/// PUT every file (and the generated `MLmodel`, if any) under the logged model's artifact
/// location, through the artifact proxy.
async fn upload_files(registry: &RestRegistry, logged: &LoggedModelRef, prepared: &PreparedUpload) -> Result<()> {
    let (endpoint, root) = match classify(&logged.artifact_uri, registry.base_url()) {
        Ok(Location::Proxy { endpoint, root }) => (endpoint, root),
        Ok(Location::Bucket(uri)) => return upload_to_bucket(registry, &uri, logged, prepared).await,
        _ => {
            return Err(RegistryError::InvalidParameter(format!(
                "the registry keeps logged model {} at '{}', which regserve cannot upload to: it uploads through the MLflow artifact proxy (mlflow-artifacts:/ locations; `mlflow server` serves artifacts by default, unless --no-serve-artifacts) or straight to a bucket (s3://, gs://, wasbs://, abfss://)",
                logged.model_id, logged.artifact_uri
            ))
            .into())
        }
    };
    let url_of = |rel: &str| {
        let mut url = endpoint.clone();
        append_segments(&mut url, root.split('/').chain(rel.split('/')).filter(|s| !s.is_empty()));
        url
    };
    for (rel, path) in &prepared.files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let progress = Arc::new(Progress::new(rel.clone(), size));
        let report = progress.clone();
        let on_progress: ProgressFn = Arc::new(move |sent| report.update(sent));
        tracing::debug!(file = %rel, bytes = size, "uploading");
        registry.upload_artifact(&url_of(rel), &Upload::File(path.clone()), &on_progress).await?;
        progress.finish();
    }
    if let Some(data) = &prepared.mlmodel_for {
        let text = minimal_mlmodel(data, logged);
        let none: ProgressFn = Arc::new(|_| {});
        registry.upload_artifact(&url_of("MLmodel"), &Upload::Bytes(text.into()), &none).await?;
    }
    Ok(())
}

/// Upload every file (and the generated `MLmodel`) straight to the bucket of the logged
/// model's location, as MLflow's client does when the server hands out an `s3://…` location
/// (`--no-serve-artifacts`, or an `s3://` `--default-artifact-root`): credentials and endpoint
/// from the environment (see `artifact::store`); each file streamed, multipart when large.
async fn upload_to_bucket(
    registry: &RestRegistry,
    uri: &crate::artifact::store::BucketUri,
    logged: &LoggedModelRef,
    prepared: &PreparedUpload,
) -> Result<()> {
    use crate::artifact::store::Bucket;
    let bucket = Bucket::open(uri, &|k: &str| std::env::var(k).ok(), registry.http().timeout())?;
    let key_of = |rel: &str| if uri.prefix.is_empty() { rel.to_string() } else { format!("{}/{rel}", uri.prefix) };
    for (rel, path) in &prepared.files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let progress = Progress::new(rel.clone(), size);
        tracing::debug!(file = %rel, bytes = size, bucket = %uri.root(), "uploading");
        bucket.put_file(&key_of(rel), path).await?;
        progress.finish();
    }
    if let Some(data) = &prepared.mlmodel_for {
        let text = minimal_mlmodel(data, logged);
        bucket.put(&key_of("MLmodel"), text.into()).await?;
    }
    Ok(())
}

/// Upload progress of one large file on stderr: rewritten in place on a terminal, a line every
/// few seconds otherwise. Small files say nothing.
struct Progress {
    label: String,
    total: u64,
    started: Instant,
    last: Mutex<Option<Instant>>,
    tty: bool,
}

impl Progress {
    fn new(label: String, total: u64) -> Progress {
        Progress { label, total, started: Instant::now(), last: Mutex::new(None), tty: std::io::stderr().is_terminal() }
    }

    fn shown(&self) -> bool {
        self.total >= PROGRESS_MIN_BYTES
    }

    fn update(&self, sent: u64) {
        if !self.shown() {
            return;
        }
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < every) || sent >= self.total {
            return;
        }
        *last = Some(Instant::now());
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let line = format!(
            "uploading {}: {:.1} of {:.1} MiB ({:.0}%)",
            self.label,
            mib(sent),
            mib(self.total),
            sent as f64 * 100.0 / self.total as f64
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }

    fn finish(&self) {
        if !self.shown() {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let mib = self.total as f64 / (1024.0 * 1024.0);
        let line = format!("uploaded {}: {mib:.1} MiB in {secs:.1} s", self.label);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { writeln!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_mlmodel_is_one_regserve_and_mlflow_read() {
        let logged = LoggedModelRef {
            model_id: "m-0123".into(),
            artifact_uri: "mlflow-artifacts:/0/models/m-0123/artifacts".into(),
        };
        let text = minimal_mlmodel("model.onnx", &logged);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["flavors"]["onnx"]["data"].as_str(), Some("model.onnx"));
        assert_eq!(yaml["flavors"]["python_function"]["loader_module"].as_str(), Some("mlflow.onnx"));
        assert_eq!(yaml["model_id"].as_str(), Some("m-0123"));
        assert!(yaml["flavors"]["onnx"]["code"].is_null());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("MLmodel"), text).unwrap();
        let files = crate::runtime::mlmodel::ModelFiles::locate(dir.path()).unwrap();
        assert_eq!(files.onnx, dir.path().join("model.onnx"));
        assert!(files.is_mlflow_model && files.signature.is_none());
    }

    #[test]
    fn files_are_listed_recursively_with_slashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        for f in ["MLmodel", "model.onnx", "sub/a.txt", "sub/deeper/b.bin"] {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let rels: Vec<String> = list_files(dir.path()).unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(rels, ["MLmodel", "model.onnx", "sub/a.txt", "sub/deeper/b.bin"]);
    }
}
