//! One registry client for the `models` and `predict` commands, whichever registry was chosen
//! (see [`registry_location`]): the embedded SQLite store with its artifact root, or a remote
//! MLflow-compatible registry over REST (`regserve server` or `mlflow server`). Each command has
//! one code path; [`RegistryClient`] decides how each call is carried out.
//!
//! The interface is blocking, like the CLI that uses it: the remote variant owns a small tokio
//! runtime and waits for each call. Do not call it from async code.
//!
//! Registering into a remote registry does what MLflow 3's
//! `mlflow.onnx.log_model(..., registered_model_name=...)` does (REFERENCE.md): test-load the
//! model here first (a model that does not load never reaches the registry), create a logged
//! model, `PUT` its files to the artifact proxy (a bare `.onnx` file gets a minimal `MLmodel`),
//! mark it `LOGGED_MODEL_READY`, create the registered model if needed, create the version from
//! `models:/m-<id>`, wait until the registry says `READY`, then apply the stage and alias.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::register::{register, RegisterError, Registration};
use super::remote::{BackendError, RemoteSource};
use super::source::{ModelSource, SourceError};
use crate::artifact::fetch::{classify, Location};
use crate::artifact::{ArtifactRoot, FetchError};
use crate::mlflow::http::append_segments;
use crate::mlflow::{
    name_filter, redact_url, CreateModelVersion, HttpSettings, LoggedModelRef, ProgressFn, RestRegistry, Upload,
};
use crate::registry::location::{is_mlflow_database, registry_location, RegistryLocation};
use crate::registry::{
    validate_description, validate_model_name, ModelVersion, RegisteredModel, RegistryError, Stage, Store,
    VersionStatus,
};
use crate::runtime::LoadedModel;
use crate::uri::ModelUri;

/// The experiment new logged models go to (MLflow's variable); default `0`, "Default".
pub const ENV_EXPERIMENT_ID: &str = "MLFLOW_EXPERIMENT_ID";
/// How long a remote registration may stay `PENDING_REGISTRATION` (MLflow's
/// `await_registration_for` default).
const REGISTRATION_WAIT: Duration = Duration::from_secs(300);
/// Files at least this large show their upload progress on stderr.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The registry's test load refused the new version.
    #[error("the registry refused version {version} of '{name}' (FAILED_REGISTRATION): {message}")]
    FailedRegistration { name: String, version: u64, message: String },
    /// The version exists but a later step (waiting, stage, alias) failed.
    #[error("version {version} of '{name}' was created, but {what}: {source}")]
    Incomplete {
        name: String,
        version: u64,
        what: &'static str,
        #[source]
        source: Box<ClientError>,
    },
    #[error("version {version} of '{name}' is still {status} after {waited:?}")]
    StillPending { name: String, version: u64, status: &'static str, waited: Duration },
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The registry the CLI talks to.
pub enum RegistryClient {
    /// The embedded store and its artifact root, in this process.
    Embedded { store: Arc<Store>, artifacts: ArtifactRoot },
    /// A remote MLflow-compatible registry; downloads go through the [`RemoteSource`] cache.
    Remote { source: Box<RemoteSource>, runtime: Box<tokio::runtime::Runtime> },
}

impl RegistryClient {
    /// The registry chosen from `registry_uri` (`--registry-uri`), else `MLFLOW_REGISTRY_URI`,
    /// else `MLFLOW_TRACKING_URI`, else the store in `data_dir`. A remote registry's downloads
    /// are cached in `<data_dir>/cache`, as `serve` does.
    pub fn open(registry_uri: Option<&str>, data_dir: &Path) -> Result<RegistryClient> {
        let (location, origin) =
            registry_location(registry_uri, |k| std::env::var(k).ok(), data_dir).map_err(BackendError::from)?;
        match location {
            RegistryLocation::Embedded { db, artifacts } => {
                if is_mlflow_database(&db) {
                    return Err(BackendError::ForeignDatabase { path: db.display().to_string(), origin }.into());
                }
                let store = Store::open(&db).map_err(|source| BackendError::Registry {
                    uri: format!("sqlite:///{}", db.display()),
                    origin,
                    source,
                })?;
                let artifacts = ArtifactRoot::new(&artifacts).map_err(|source| BackendError::Artifacts {
                    path: artifacts.display().to_string(),
                    origin,
                    source,
                })?;
                Ok(RegistryClient::Embedded { store: Arc::new(store), artifacts })
            }
            RegistryLocation::Rest { url } => {
                let backend = |source| BackendError::Registry { uri: redact_url(&url), origin, source };
                let registry = RestRegistry::new(&url, HttpSettings::from_env().map_err(backend)?).map_err(backend)?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| backend(RegistryError::Io(e)))?;
                let source = Box::new(RemoteSource::new(registry, data_dir.join("cache")));
                Ok(RegistryClient::Remote { source, runtime: Box::new(runtime) })
            }
        }
    }

    /// Where the registry is, for messages: the database path or the server's URL.
    pub fn describe(&self) -> String {
        match self {
            RegistryClient::Embedded { store, .. } => match store.path() {
                Some(p) => format!("sqlite:///{}", p.display()),
                None => "sqlite (in memory)".into(),
            },
            RegistryClient::Remote { source, .. } => source.describe(),
        }
    }

    fn remote<T>(
        runtime: &tokio::runtime::Runtime,
        f: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T> {
        Ok(runtime.block_on(f)?)
    }

    // ------------------------------------------------------------------ registered models

    /// Every registered model, by name.
    pub fn list_models(&self) -> Result<Vec<RegisteredModel>> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.list_registered_models()?),
            RegistryClient::Remote { source, runtime } => {
                let mut models = Self::remote(runtime, source.registry().list_registered_models())?;
                models.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(models)
            }
        }
    }

    pub fn get_model(&self, name: &str) -> Result<RegisteredModel> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.get_registered_model(name)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().get_registered_model(name))
            }
        }
    }

    /// A model and all its versions, newest first, each with its aliases.
    pub fn get_model_with_versions(&self, name: &str) -> Result<(RegisteredModel, Vec<ModelVersion>)> {
        match self {
            RegistryClient::Embedded { store, .. } => {
                Ok((store.get_registered_model(name)?, store.list_model_versions(name)?))
            }
            RegistryClient::Remote { source, runtime } => runtime.block_on(async {
                let registry = source.registry();
                let model = registry.get_registered_model(name).await?;
                let mut versions = registry.search_model_versions(&name_filter(name)).await?;
                versions.retain(|v| v.name == model.name);
                // Searches leave the aliases off (as MLflow does); the model lists them.
                for v in &mut versions {
                    v.aliases =
                        model.aliases.iter().filter(|a| a.version == v.version).map(|a| a.alias.clone()).collect();
                }
                versions.sort_by_key(|v| std::cmp::Reverse(v.version));
                Ok((model, versions))
            }),
        }
    }

    /// Every version of a model, newest first.
    pub fn list_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.get_model_with_versions(name).map(|(_, versions)| versions)
    }

    pub fn describe_model(&self, name: &str, description: &str) -> Result<RegisteredModel> {
        // Checked here too, so a remote registry that would take more (MLflow's file store)
        // gets the same refusal as `regserve server`.
        validate_description(description)?;
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.update_registered_model(name, description)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().update_registered_model(name, description))
            }
        }
    }

    pub fn rename_model(&self, name: &str, new_name: &str) -> Result<RegisteredModel> {
        validate_model_name(new_name)?;
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.rename_registered_model(name, new_name)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().rename_registered_model(name, new_name))
            }
        }
    }

    pub fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.set_registered_model_tag(name, key, value)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().set_registered_model_tag(name, key, value))
            }
        }
    }

    pub fn delete_model_tag(&self, name: &str, key: &str) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.delete_registered_model_tag(name, key)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().delete_registered_model_tag(name, key))
            }
        }
    }

    /// Delete a model and all its versions. Files the embedded registry copied in for them
    /// are removed; a remote registry decides for itself.
    pub fn delete_model(&self, name: &str) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, artifacts } => {
                for location in store.delete_registered_model(name)? {
                    super::register::remove_owned_files(store, artifacts, &location);
                }
                Ok(())
            }
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().delete_registered_model(name))
            }
        }
    }

    // ------------------------------------------------------------------ aliases

    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.set_alias(name, alias, version)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().set_alias(name, alias, version))
            }
        }
    }

    /// Delete an alias; one that is not set is an error here too (MLflow's server answers `{}`).
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.delete_alias(name, alias)?),
            RegistryClient::Remote { source, runtime } => runtime.block_on(async {
                let registry = source.registry();
                registry.get_model_version_by_alias(name, alias).await?;
                Ok(registry.delete_alias(name, alias).await?)
            }),
        }
    }

    // ------------------------------------------------------------------ versions

    pub fn get_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.get_model_version(name, version)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().get_model_version(name, version))
            }
        }
    }

    pub fn transition(&self, name: &str, version: u64, stage: Stage, archive_existing: bool) -> Result<ModelVersion> {
        match self {
            RegistryClient::Embedded { store, .. } => {
                Ok(store.transition_stage(name, version, stage, archive_existing)?)
            }
            RegistryClient::Remote { source, runtime } => Self::remote(
                runtime,
                source.registry().transition_model_version_stage(name, version, stage, archive_existing),
            ),
        }
    }

    pub fn describe_version(&self, name: &str, version: u64, description: &str) -> Result<ModelVersion> {
        validate_description(description)?;
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.update_model_version(name, version, description)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().update_model_version(name, version, description))
            }
        }
    }

    pub fn set_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.set_model_version_tag(name, version, key, value)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().set_model_version_tag(name, version, key, value))
            }
        }
    }

    pub fn delete_version_tag(&self, name: &str, version: u64, key: &str) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store.delete_model_version_tag(name, version, key)?),
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().delete_model_version_tag(name, version, key))
            }
        }
    }

    pub fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        match self {
            RegistryClient::Embedded { store, artifacts } => {
                let location = store.delete_model_version(name, version)?;
                super::register::remove_owned_files(store, artifacts, &location);
                Ok(())
            }
            RegistryClient::Remote { source, runtime } => {
                Self::remote(runtime, source.registry().delete_model_version(name, version))
            }
        }
    }

    /// The version `uri` selects and a local path to its model (a remote version's files are
    /// downloaded into the cache, or taken from it).
    pub fn fetch(&self, uri: &ModelUri) -> Result<(ModelVersion, PathBuf)> {
        match self {
            RegistryClient::Embedded { store, artifacts } => {
                let version = store.resolve(uri)?;
                let location = version.download_location();
                let path = artifacts.local_path(location).map_err(SourceError::from)?;
                if !path.exists() {
                    let missing = format!("{} (version {} of '{}')", path.display(), version.version, version.name);
                    return Err(SourceError::from(FetchError::NotFound(missing)).into());
                }
                Ok((version, path))
            }
            RegistryClient::Remote { source, runtime } => runtime.block_on(async {
                let version = source.resolve(uri).await?;
                let path = source.fetch(&version).await?;
                Ok((version, path))
            }),
        }
    }

    // ------------------------------------------------------------------ registration

    /// Register `path` (a `.onnx` file or an MLflow model directory) as the next version of
    /// `reg.name`, creating the registered model if needed. The model is test-loaded here
    /// first either way; a remote registry then gets the files as an MLflow 3 logged model.
    pub fn register(&self, path: &Path, reg: &Registration, ort_lib: Option<&Path>) -> Result<ModelVersion> {
        match self {
            RegistryClient::Embedded { store, artifacts } => Ok(register(store, artifacts, path, reg, ort_lib)?),
            RegistryClient::Remote { source, runtime } => {
                let files = prepare_upload(path, reg, ort_lib)?;
                runtime.block_on(register_remote(source.registry(), files, reg))
            }
        }
    }
}

/// A model checked and laid out for upload: relative paths in the logged model's folder, and
/// whether an `MLmodel` must be written for it (pointing at this `.onnx` file).
#[derive(Debug)]
struct PreparedUpload {
    files: Vec<(String, PathBuf)>,
    mlmodel_for: Option<String>,
}

/// Validate the request and test-load the model (one session), so that nothing is created
/// remotely for a model that does not load.
fn prepare_upload(path: &Path, reg: &Registration, ort_lib: Option<&Path>) -> Result<PreparedUpload> {
    validate_model_name(&reg.name)?;
    validate_description(reg.description.as_deref().unwrap_or(""))?;
    if let Some(alias) = &reg.alias {
        crate::registry::store::validate_alias(alias)?;
    }
    let meta =
        std::fs::metadata(path).map_err(|_| RegisterError::Fetch(FetchError::NotFound(path.display().to_string())))?;
    let model = LoadedModel::load(path, &reg.test_load_options(), ort_lib).map_err(RegisterError::Load)?;
    let files = model.files.clone();
    drop(model);
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

/// Steps 2.. of a remote registration, after the local test load.
async fn register_remote(
    registry: &RestRegistry,
    prepared: PreparedUpload,
    reg: &Registration,
) -> Result<ModelVersion> {
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
    let incomplete = |what: &'static str, e: RegistryError| ClientError::Incomplete {
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
                return Err(ClientError::FailedRegistration {
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
                return Err(ClientError::StillPending {
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
        version = registry.get_model_version(&name, number).await.map_err(|e| ClientError::Incomplete {
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
        _ => {
            return Err(RegistryError::InvalidParameter(format!(
                "the registry keeps logged model {} at '{}', which regserve cannot upload to: it uploads through the MLflow artifact proxy (mlflow-artifacts:/ locations; `mlflow server` serves artifacts by default, unless --no-serve-artifacts)",
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

    #[test]
    fn only_registry_copies_are_removed_with_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let artifacts = ArtifactRoot::new(dir.path()).unwrap();
        for rel in ["registry/abc", "0/models/m-1/artifacts"] {
            std::fs::create_dir_all(dir.path().join(rel)).unwrap();
        }
        crate::manager::register::remove_owned_files(&store, &artifacts, "mlflow-artifacts:/0/models/m-1/artifacts");
        crate::manager::register::remove_owned_files(&store, &artifacts, "mlflow-artifacts:/registry/abc");
        assert!(dir.path().join("0/models/m-1/artifacts").is_dir(), "a logged model's files stay");
        assert!(!dir.path().join("registry/abc").exists(), "the registry's own copy goes");
    }
}
