//! Model versions created through the REST API: where their files are, and the test load that
//! decides whether they may be served.
//!
//! `model-versions/create` resolves the source to a storage location the way `mlflow server`
//! validates it (`models:/m-<id>` needs the matching `model_id`, `runs:/<run>/<path>` the
//! matching `run_id`, local paths are refused — `file:` in any case of the scheme too). A source
//! naming a host (`mlflow-artifacts://host/...`, `http(s)://host/...`) must name this server,
//! as the request's `Host` does: a `serve` following this registry fetches from where a source
//! points, so another host would get its requests (and, before it was fixed, its token). When
//! the files are under the artifact root and
//! hold an ONNX model (an `MLmodel` with an `onnx` flavor, or a `.onnx` file), the version is
//! created `PENDING_REGISTRATION` and loaded once on the blocking pool; it becomes `READY` only
//! if that works, `FAILED_REGISTRATION` (with the reason in `status_message`) if not. Anything
//! else is created `READY` with a `status_message` saying it was not test-loaded. At start,
//! [`resume_pending`] test-loads again the versions a stop left pending.
//!
//! As in MLflow, a prompt version (tagged `mlflow.prompt.is_prompt = true`) takes only a
//! placeholder source and skips all of that: it is `READY` at once, with no files to load. A
//! `model_id` (not for prompts) adds the version to the logged model's `mlflow.modelVersions`
//! tag ([`crate::tracking::TrackingStore::link_model_version`]).
//!
//! The test load is [`super::test_load`]. This module knows no HTTP: the server hands it a
//! [`Registrar`] (stores, artifact root, test-load limits) and maps [`CreateError`] to a status.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::artifact::{ArtifactRoot, Destination};
use crate::registry::{ModelVersion, NewVersion, RegistryError, Store, Tag, VersionStatus};
use crate::runtime::RuntimeError;
use crate::tracking::TrackingStore;
use crate::uri::ModelUri;

/// What the REST registration flow works with: the stores, the artifact root, and the limits
/// of its test loads. Cheap to clone; the server keeps one in its state.
#[derive(Clone)]
pub struct Registrar {
    pub store: Arc<Store>,
    pub tracking: TrackingStore,
    pub artifacts: ArtifactRoot,
    /// Where `mlflow-artifacts:/` files are: `artifacts`, or a bucket
    /// (`--artifacts-destination`), from which a version is copied to disk for its test load.
    pub destination: Destination,
    /// `--ort-lib`; `None` searches the usual places (see `runtime::env`).
    pub ort_lib: Option<PathBuf>,
    /// Test loads running at once; each holds one ONNX Runtime session while it runs.
    pub test_loads: Arc<Semaphore>,
    /// How long `model-versions/create` waits for the test load before answering with the
    /// version still `PENDING_REGISTRATION` (the MLflow client then polls until it settles).
    pub load_wait: Duration,
    /// Deadline of each test load (`--load-timeout`): past it the warm-up run is stopped and
    /// the version is `FAILED_REGISTRATION`.
    pub load_timeout: Duration,
}

impl Registrar {
    pub fn new(store: Arc<Store>, tracking: TrackingStore, artifacts: ArtifactRoot, ort_lib: Option<PathBuf>) -> Self {
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Registrar {
            store,
            tracking,
            destination: Destination::Local(artifacts.clone()),
            artifacts,
            ort_lib,
            test_loads: Arc::new(Semaphore::new(parallel.max(2))),
            load_wait: Duration::from_secs(30),
            load_timeout: crate::runtime::DEFAULT_LOAD_TIMEOUT,
        }
    }
}

/// Why a REST registration step failed: the store's answer, or a blocking task that did not
/// finish (a panic); the server maps the latter to a logged 500.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("a blocking task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Run blocking store work off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, CreateError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RegistryError> + Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await.map_err(CreateError::Task)??)
}

/// A create request's source, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// What the version records as `source`.
    pub source: String,
    pub run_id: String,
    /// The logged model the version is made from (MLflow 3), or empty. It gets the
    /// `mlflow.modelVersions` tag; the version does not record it (MLflow's SQL store does not
    /// either, and its REST answers have no `model_id`).
    pub model_id: String,
    /// Where the files are (`get-download-uri` answers it).
    pub storage_location: String,
    /// Local files holding an ONNX model to test-load; `None` when not test-loaded.
    pub local: Option<PathBuf>,
    /// Why the version is not test-loaded, when it is not.
    pub not_loaded: Option<String>,
}

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidParameter(message)
}

fn not_contained(source: &str, id_name: &str) -> RegistryError {
    invalid(format!(
        "Invalid model version source: '{source}'. The {id_name} request parameter must identify the resource that contains the source."
    ))
}

/// Refuse `..` and NUL in a source, after undoing any layers of percent-encoding.
fn check_relative_paths(source: &str) -> Result<(), RegistryError> {
    let mut decoded = source.to_string();
    for _ in 0..8 {
        let next = percent_encoding::percent_decode_str(&decoded.replace('+', " ")).decode_utf8_lossy().into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    if decoded.contains('\0') || decoded.split(['/', '\\']).any(|seg| seg == "..") {
        return Err(invalid(format!(
            "Invalid model version source: '{source}'. If supplying a source as an http, https, local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided without relative path references present. Please provide an absolute path."
        )));
    }
    Ok(())
}

/// Does `authority` (`host[:port]`, as in a URI) name the same server as the request's `Host`
/// header? Host names compare case-insensitively; a missing port is the scheme's default.
pub(crate) fn is_this_server(authority: &str, scheme: &str, host_header: Option<&str>) -> bool {
    let Some(host_header) = host_header.filter(|h| !h.is_empty()) else { return false };
    let parse = |a: &str| reqwest::Url::parse(&format!("{scheme}://{a}/")).ok();
    match (parse(authority), parse(host_header)) {
        (Some(a), Some(b)) => {
            a.username().is_empty()
                && a.host_str().is_some()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

fn foreign_host(source: &str, host: &str) -> RegistryError {
    invalid(format!(
        "Invalid model version source: '{source}'. It names the host '{host}', which is not this server: servers following this registry would fetch the model from there. Use mlflow-artifacts:/<path> (this server's artifact store)."
    ))
}

/// `mlflow-artifacts:/a/b` (or `mlflow-artifacts://host/a/b`) → `a/b`.
fn artifact_rel(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix(crate::artifact::SCHEME)?;
    Some(match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => rest.trim_start_matches('/'),
    })
}

fn within(uri: &str, root: &str) -> bool {
    match (artifact_rel(uri), artifact_rel(root)) {
        (Some(u), Some(r)) => {
            let (u, r) = (u.trim_end_matches('/'), r.trim_end_matches('/'));
            u == r || u.starts_with(&format!("{r}/"))
        }
        _ => false,
    }
}

impl Registrar {
    /// [`Destination::local_copy`] from blocking code (the store work runs on the blocking
    /// pool); a local destination needs no runtime.
    fn local_copy(&self, location: &str) -> Result<(PathBuf, bool), crate::artifact::FetchError> {
        match (&self.destination, tokio::runtime::Handle::try_current()) {
            (Destination::Bucket(_), Ok(handle)) => {
                handle.block_on(self.destination.local_copy(&self.artifacts, location))
            }
            _ => Ok((self.artifacts.local_path(location)?, false)),
        }
    }
}

/// Resolve a `model-versions/create` source. `host` is the request's `Host` header (what this
/// server is called by the client). Blocking.
pub fn resolve_source(
    st: &Registrar,
    source: &str,
    run_id: &str,
    model_id: &str,
    host: Option<&str>,
) -> Result<ResolvedSource, RegistryError> {
    check_relative_paths(source)?;
    // Schemes are case-insensitive: decide on (and record) the lower-case form, so `FILE://`,
    // `Models:/` or `MLFLOW-ARTIFACTS:` take the same path as their usual spelling.
    let normalized = crate::artifact::normalize_scheme(source);
    let source = normalized.as_ref();
    let scheme = crate::artifact::scheme_of(source).map(|(s, _)| s);
    let unresolved = |why: String| ResolvedSource {
        source: source.to_string(),
        run_id: run_id.to_string(),
        model_id: model_id.to_string(),
        storage_location: source.to_string(),
        local: None,
        not_loaded: Some(why),
    };
    let mut resolved = if let Some(rest) = source.strip_prefix("models:/") {
        if rest.starts_with('/') {
            return Err(invalid(format!(
                "Invalid model version source: '{source}'. Registered model sources must use the active model registry."
            )));
        }
        if rest.starts_with("m-") && !rest.contains(['/', '@']) {
            // A logged model (MLflow 3): its files are under the experiment's artifact root.
            if model_id != rest {
                return Err(not_contained(source, "model_id"));
            }
            let lm = st.tracking.get_logged_model(rest)?;
            ResolvedSource {
                source: source.to_string(),
                run_id: if run_id.is_empty() { lm.info.source_run_id.clone() } else { run_id.to_string() },
                model_id: model_id.to_string(),
                storage_location: lm.info.artifact_uri,
                local: None,
                not_loaded: None,
            }
        } else {
            // Another registered version (copy_model_version): share its files.
            let uri: ModelUri = source
                .parse()
                .map_err(|e: crate::uri::UriError| invalid(format!("Invalid model version source: '{source}'. {e}")))?;
            let from = st.store.resolve(&uri)?;
            // MLflow (`_resolve_registered_model_source_lineage`): a run_id or model_id given
            // with the copy must be the source version's (which never has a model_id).
            if (!run_id.is_empty() && run_id != from.run_id) || (!model_id.is_empty() && model_id != from.model_id) {
                return Err(invalid(format!(
                    "Invalid model version source: '{source}'. The run_id and model_id request parameters must match the referenced model version."
                )));
            }
            ResolvedSource {
                source: format!("models:/{}/{}", from.name, from.version),
                run_id: from.run_id.clone(),
                model_id: from.model_id.clone(),
                storage_location: from.download_location().to_string(),
                local: None,
                not_loaded: None,
            }
        }
    } else if let Some(rest) = source.strip_prefix("runs:/") {
        if rest.starts_with('/') || !model_id.is_empty() {
            return Err(not_contained(source, if model_id.is_empty() { "run_id" } else { "model_id" }));
        }
        let (source_run, path) = rest.split_once('/').unwrap_or((rest, ""));
        if source_run.is_empty() || source_run != run_id {
            return Err(not_contained(source, "run_id"));
        }
        match st.tracking.get_run(source_run) {
            Err(RegistryError::NotFound(_)) => {
                return Ok(unresolved(format!("run {source_run} is not in this server's tracking store")))
            }
            Err(e) => return Err(e),
            Ok(run) => {
                let path = path.trim_matches('/');
                let in_run = if path.is_empty() {
                    run.info.artifact_uri.clone()
                } else {
                    format!("{}/{path}", run.info.artifact_uri.trim_end_matches('/'))
                };
                let has_files = st.artifacts.local_path(&in_run).map(|p| p.exists()).unwrap_or(false);
                // MLflow 3 logs models as logged models, not run artifacts: fall back to the
                // run's logged model of that name, as the MLflow client does.
                let logged = if has_files || path.is_empty() {
                    None
                } else {
                    st.tracking.logged_models_of_run(source_run, path)?.into_iter().next()
                };
                ResolvedSource {
                    source: source.to_string(),
                    run_id: run_id.to_string(),
                    model_id: String::new(),
                    storage_location: logged.map(|lm| lm.info.artifact_uri).unwrap_or(in_run),
                    local: None,
                    not_loaded: None,
                }
            }
        }
    } else if let Some(rest) = source.strip_prefix(crate::artifact::SCHEME) {
        if let Some(with_host) = rest.strip_prefix("//") {
            let netloc = with_host.split('/').next().unwrap_or_default();
            if !netloc.is_empty() && !is_this_server(netloc, "http", host) {
                return Err(foreign_host(source, netloc));
            }
        }
        let contained = if !model_id.is_empty() {
            let lm = st.tracking.get_logged_model(model_id)?;
            within(source, &lm.info.artifact_uri)
        } else if !run_id.is_empty() {
            let run = st.tracking.get_run(run_id)?;
            within(source, &run.info.artifact_uri)
        } else {
            false
        };
        if !contained {
            return Err(not_contained(source, if model_id.is_empty() { "run_id" } else { "model_id" }));
        }
        ResolvedSource {
            source: source.to_string(),
            run_id: run_id.to_string(),
            model_id: model_id.to_string(),
            storage_location: source.to_string(),
            local: None,
            not_loaded: None,
        }
    } else if scheme.is_none() || scheme.as_deref() == Some("file") {
        // A path (no scheme, `C:`-like one-letter schemes) or `file:` in any spelling.
        return Err(invalid(format!(
            "Invalid model version source: '{source}'. To use a local path as a model version source, the run_id request parameter has to be specified and the local path has to be contained within the artifact directory of the run specified by the run_id."
        )));
    } else if matches!(scheme.as_deref(), Some("http" | "https")) {
        let url = reqwest::Url::parse(source)
            .map_err(|e| invalid(format!("Invalid model version source: '{source}': {e}")))?;
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        if !url.username().is_empty() || !is_this_server(&authority, url.scheme(), host) {
            return Err(foreign_host(source, &authority));
        }
        return Ok(unresolved("regserve test-loads only files under its own artifact root".to_string()));
    } else {
        return Ok(unresolved("regserve test-loads only files under its own artifact root".to_string()));
    };

    // Locate the files under the artifact root and decide whether they are an ONNX model.
    let located = st.local_copy(&resolved.storage_location);
    let copied = match &located {
        Ok((path, true)) => Some(path.clone()),
        _ => None,
    };
    match located.map(|(path, _)| path) {
        Err(crate::artifact::FetchError::Store { public, .. }) => {
            resolved.not_loaded = Some(format!("its files could not be read: {public}"))
        }
        Err(crate::artifact::FetchError::PathEscapes(p)) => {
            return Err(invalid(format!(
                "Invalid model version source: '{source}': its files at '{p}' would be outside the artifact root."
            )))
        }
        Err(_) => {
            resolved.not_loaded =
                Some(format!("{} is not under this server's artifact root", resolved.storage_location))
        }
        Ok(path) if !path.exists() => resolved.not_loaded = Some(format!("no files at {}", resolved.storage_location)),
        Ok(path) => match onnx_model_in(&path) {
            Err(why) => return Err(invalid(format!("Invalid model version source: '{source}': {why}."))),
            Ok(None) => resolved.local = Some(path),
            Ok(Some(why)) => resolved.not_loaded = Some(why),
        },
    }
    if let (Some(path), None) = (copied, &resolved.local) {
        Destination::remove_copy(&st.artifacts, &path);
    }
    Ok(resolved)
}

/// `Ok(None)` when `path` holds an ONNX model to test-load, `Ok(Some(why))` when it does not,
/// `Err` when its `MLmodel` is over the bounds regserve reads (size, nesting, values): refused.
fn onnx_model_in(path: &Path) -> Result<Option<String>, String> {
    use crate::runtime::mlmodel::{parse_mlmodel, read_mlmodel, MlmodelError};
    use crate::runtime::RuntimeError;

    #[derive(serde::Deserialize)]
    struct Flavors {
        #[serde(default)]
        flavors: Option<std::collections::BTreeMap<String, serde::de::IgnoredAny>>,
    }

    let is_onnx = |p: &Path| p.extension().and_then(|e| e.to_str()) == Some("onnx");
    if path.is_file() {
        return Ok((!is_onnx(path)).then(|| "not an ONNX model (not a .onnx file)".to_string()));
    }
    let mlmodel = path.join("MLmodel");
    let mut flavors: Vec<String> = Vec::new();
    if mlmodel.is_file() {
        match read_mlmodel(&mlmodel) {
            Err(RuntimeError::InvalidModel { reason, .. }) => return Err(reason),
            Err(_) => {}
            Ok(text) => match parse_mlmodel::<Flavors>(&text) {
                Err(MlmodelError::Bounds(why)) => return Err(why),
                Err(MlmodelError::Syntax(_)) => {}
                Ok(f) => flavors = f.flavors.unwrap_or_default().into_keys().collect(),
            },
        }
        if flavors.iter().any(|f| f == "onnx") {
            return Ok(None);
        }
    }
    let has_onnx_file = std::fs::read_dir(path)
        .map(|entries| entries.flatten().any(|e| is_onnx(&e.path()) && e.path().is_file()))
        .unwrap_or(false);
    if has_onnx_file {
        return Ok(None);
    }
    Ok(Some(crate::runtime::mlmodel::not_onnx_model(mlmodel.exists().then_some(flavors.as_slice()))))
}

/// What `model-versions/create` asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateVersion {
    pub name: String,
    pub source: String,
    pub run_id: String,
    pub run_link: String,
    pub description: String,
    pub tags: Vec<Tag>,
    pub model_id: String,
    /// The request's `Host` header: a source may name this server, and no other.
    pub host: Option<String>,
}

/// The placeholder sources of prompt versions (MLflow's `_PROMPT_SOURCE_PLACEHOLDERS`: the
/// client's and the store's), the only sources a prompt version may have.
const PROMPT_SOURCES: [&str; 2] = ["dummy-source", "prompt-template"];

/// A prompt version (`mlflow.genai.register_prompt`), resolved as `mlflow server` does
/// (`handlers._create_model_version`): a placeholder source, no lineage checks, no files, and
/// so no test load.
fn prompt_source(req: &CreateVersion) -> Result<ResolvedSource, RegistryError> {
    if !PROMPT_SOURCES.contains(&req.source.as_str()) {
        return Err(invalid(format!(
            "Invalid prompt source: '{}'. Prompt sources must use an MLflow placeholder.",
            req.source
        )));
    }
    Ok(ResolvedSource {
        source: req.source.clone(),
        run_id: req.run_id.clone(),
        model_id: req.model_id.clone(),
        storage_location: req.source.clone(),
        local: None,
        not_loaded: None,
    })
}

/// Create a version: resolve its source, insert it, test-load it when it is an ONNX model
/// under the artifact root. Answers once the test load settled or `load_wait` passed.
pub async fn create_version(st: &Registrar, req: CreateVersion) -> Result<ModelVersion, CreateError> {
    let st2 = st.clone();
    let (mv, local) = blocking(move || {
        let prompt = crate::registry::is_prompt(&req.tags);
        let r = if prompt {
            prompt_source(&req)?
        } else {
            resolve_source(&st2, &req.source, &req.run_id, &req.model_id, req.host.as_deref())?
        };
        let test_load = r.local.is_some();
        let mv = st2.store.create_model_version(&NewVersion {
            name: req.name.clone(),
            source: r.source.clone(),
            run_id: r.run_id.clone(),
            run_link: req.run_link.clone(),
            description: req.description.clone(),
            tags: req.tags.clone(),
            storage_location: r.storage_location.clone(),
            status: Some(if test_load { VersionStatus::PendingRegistration } else { VersionStatus::Ready }),
            ..Default::default()
        })?;
        if !prompt && !r.model_id.is_empty() {
            // As `mlflow server` does: the logged model lists the versions made from it.
            match st2.tracking.link_model_version(&r.model_id, &mv.name, mv.version) {
                Ok(()) => {}
                // The logged model was deleted meanwhile: the version stands without the link.
                Err(RegistryError::NotFound(e)) => {
                    tracing::warn!(error = %e, "not linking the new version to its logged model")
                }
                Err(e) => return Err(e),
            }
        }
        let mv = match &r.not_loaded {
            Some(why) => st2.store.set_version_status(
                &mv.name,
                mv.version,
                VersionStatus::Ready,
                &format!("not test-loaded: {why}"),
            )?,
            None => mv,
        };
        Ok((mv, r.local))
    })
    .await?;
    let Some(path) = local else {
        return Ok(mv);
    };
    let task = spawn_test_load(st.clone(), mv.name.clone(), mv.version, path);
    // The load goes on in its task if the wait ends first (or the client goes away).
    let _ = tokio::time::timeout(st.load_wait, task).await;
    let store = st.store.clone();
    let (name, version) = (mv.name.clone(), mv.version);
    blocking(move || store.get_model_version(&name, version)).await
}

/// Load `path` once with one session, within `st.load_timeout`, then set the version READY or
/// FAILED_REGISTRATION. A load stopped by shutdown leaves the version pending (see
/// [`resume_pending`]).
pub fn spawn_test_load(st: Registrar, name: String, version: u64, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _permit = st.test_loads.clone().acquire_owned().await;
        let ort_lib = st.ort_lib.clone();
        let started = Instant::now();
        let load_timeout = st.load_timeout;
        let artifacts = st.artifacts.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let loaded = super::test_load(&path, load_timeout, ort_lib.as_deref()).map(|_| ());
            // A copy from the bucket destination is not needed any more.
            Destination::remove_copy(&artifacts, &path);
            loaded
        })
        .await;
        let (status, message) = match outcome {
            Ok(Ok(())) => (VersionStatus::Ready, String::new()),
            Ok(Err(RuntimeError::Cancelled)) => {
                tracing::info!(model = %name, version, "test load stopped by shutdown; the version stays pending");
                return;
            }
            Ok(Err(e)) => (VersionStatus::FailedRegistration, format!("the model failed its test load: {e}")),
            Err(e) => (VersionStatus::FailedRegistration, format!("the test load crashed: {e}")),
        };
        tracing::info!(
            model = %name,
            version,
            status = status.as_str(),
            ms = started.elapsed().as_millis() as u64,
            message = %message,
            "test load finished"
        );
        let store = st.store.clone();
        let set = tokio::task::spawn_blocking(move || store.set_version_status(&name, version, status, &message)).await;
        match set {
            Ok(Ok(_)) | Ok(Err(RegistryError::NotFound(_))) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not record a test load's outcome"),
            Err(e) => tracing::error!(error = %e, "could not record a test load's outcome"),
        }
    })
}

/// Marks the `status_message` of a version whose test load was resumed after a restart,
/// followed by ` (attempt N)`.
const RESUMED: &str = "test load resumed after a restart";

/// Resumed test loads a version gets before it is failed without loading it.
const RESUME_ATTEMPTS: u32 = 3;

/// How many times the test load of a pending version was resumed already (from its mark).
fn resumed_attempts(status_message: &str) -> u32 {
    status_message
        .strip_prefix(RESUMED)
        .and_then(|rest| rest.trim().strip_prefix("(attempt ")?.strip_suffix(')')?.parse().ok())
        .unwrap_or(0)
}

/// Test-load again every version left `PENDING_REGISTRATION` (the server stopped during its
/// test load), so none stays pending forever. Each test load has the `--load-timeout`
/// deadline, so a model that loops settles FAILED_REGISTRATION at its first resumed load. A
/// version is marked with its attempt before each resumed load; one whose test load was cut
/// short by a stop [`RESUME_ATTEMPTS`] times in a row (say it crashes the process) is set
/// FAILED_REGISTRATION without loading it, so it cannot be a poison pill.
pub async fn resume_pending(st: &Registrar) -> Result<usize, CreateError> {
    let store = st.store.clone();
    let pending = blocking(move || {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = store.search_model_versions("", 10_000, &[], token.as_deref())?;
            out.extend(page.items.into_iter().filter(|v| v.status == VersionStatus::PendingRegistration));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    })
    .await?;
    let n = pending.len();
    for v in pending {
        let location = v.download_location();
        let attempts = resumed_attempts(&v.status_message);
        if attempts >= RESUME_ATTEMPTS {
            let store = st.store.clone();
            let msg = format!(
                "the model failed its test load: the server stopped during it {} times; not trying again",
                attempts + 1
            );
            tracing::warn!(model = %v.name, version = v.version, "{msg}");
            blocking(move || store.set_version_status(&v.name, v.version, VersionStatus::FailedRegistration, &msg))
                .await?;
            continue;
        }
        match st.destination.local_copy(&st.artifacts, location).await.map(|(path, _)| path) {
            Ok(path) => {
                let store = st.store.clone();
                let (name, version) = (v.name.clone(), v.version);
                let mark = format!("{RESUMED} (attempt {})", attempts + 1);
                blocking(move || store.set_version_status(&name, version, VersionStatus::PendingRegistration, &mark))
                    .await?;
                spawn_test_load(st.clone(), v.name.clone(), v.version, path);
            }
            Err(e) => {
                let store = st.store.clone();
                let msg = format!("the model failed its test load: {e}");
                blocking(move || store.set_version_status(&v.name, v.version, VersionStatus::FailedRegistration, &msg))
                    .await?;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_refused_in_sources() {
        for bad in ["s3://b/x/../y", "mlflow-artifacts:/0/..%2f..%2fetc", "http://h/a/%252e%252e/b"] {
            assert!(check_relative_paths(bad).is_err(), "{bad}");
        }
        assert!(check_relative_paths("s3://b/x/y").is_ok());
    }

    #[test]
    fn resumed_attempts_are_read_from_the_mark() {
        assert_eq!(resumed_attempts(""), 0);
        assert_eq!(resumed_attempts("not test-loaded: x"), 0);
        assert_eq!(resumed_attempts(&format!("{RESUMED} (attempt 2)")), 2);
        assert_eq!(resumed_attempts(RESUMED), 0);
    }

    #[test]
    fn hosts_are_this_server_only_when_they_match_the_host_header() {
        let h = Some("127.0.0.1:5000");
        assert!(is_this_server("127.0.0.1:5000", "http", h));
        assert!(is_this_server("LOCALHOST", "http", Some("localhost:80")));
        assert!(!is_this_server("127.0.0.1:5001", "http", h));
        assert!(!is_this_server("attacker.example:5000", "http", h));
        assert!(!is_this_server("127.0.0.1", "http", h), "the default port is 80, not 5000");
        assert!(!is_this_server("user@127.0.0.1:5000", "http", h));
        assert!(!is_this_server("127.0.0.1:5000", "http", None));
        assert!(!is_this_server("", "http", h));
    }

    #[test]
    fn containment_of_artifact_uris() {
        assert!(within("mlflow-artifacts:/0/r/artifacts/model", "mlflow-artifacts:/0/r/artifacts"));
        assert!(!within("mlflow-artifacts:/0/r/artifactsX", "mlflow-artifacts:/0/r/artifacts"));
        assert!(within("mlflow-artifacts://host:5000/0/r/artifacts", "mlflow-artifacts:/0/r/artifacts"));
    }
}
