//! One registry client for the `models` and `predict` commands, whichever registry was chosen
//! (see [`registry_location`]): the embedded SQLite store with its artifact root, or a remote
//! MLflow-compatible registry over REST (`regserve server` or `mlflow server`). Each command has
//! one code path; [`RegistryClient`] decides how each call is carried out.
//!
//! The interface is blocking, like the CLI that uses it: the remote variant owns a small tokio
//! runtime and waits for each call. Do not call it from async code.
//!
//! Registering and deleting go through [`crate::registration`]: the embedded flow, the remote
//! one (logged model, upload, create, wait READY), and the delete that removes the files the
//! embedded registry owns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::artifact::fetch::ProxyBucket;
use crate::artifact::ArtifactRoot;
use crate::manager::remote::open_database;
use crate::manager::remote::{BackendError, RemoteSource};
use crate::manager::source::{embedded_files, proxy_bucket, ModelSource, SourceError};
use crate::mlflow::{name_filter, redact_url, HttpSettings, RestRegistry};
use crate::registration::{self, RegisterError, Registration};
use crate::registry::location::{registry_location, LocalRegistry, RegistryLocation};
use crate::registry::{
    validate_description, validate_model_name, ModelVersion, RegisteredModel, RegistryError, Stage, Store,
};
use crate::uri::ModelUri;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Registering failed (remote registrations: refused, incomplete or still pending too).
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Destination(#[from] crate::manager::source::DestinationError),
    /// `predict` asked for a prompt version (MLflow's prompt registry): nothing to load.
    #[error("version {version} of '{name}' is a prompt, not a model; regserve serves models only")]
    Prompt { name: String, version: u64 },
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A version to load, unless it is a prompt.
fn not_a_prompt(version: ModelVersion) -> Result<ModelVersion> {
    if version.is_prompt() {
        return Err(ClientError::Prompt { name: version.name, version: version.version });
    }
    Ok(version)
}

/// The registry the CLI talks to.
pub enum RegistryClient {
    /// The embedded store and its artifact root, in this process. `destination` is
    /// `--artifacts-destination`, and `cache_dir` where files from a bucket are cached (see
    /// [`proxy_bucket`]: opened by [`RegistryClient::fetch`] only, so commands that need no
    /// files work whatever the bucket's state).
    Embedded { store: Arc<Store>, artifacts: ArtifactRoot, destination: Option<String>, cache_dir: PathBuf },
    /// A remote MLflow-compatible registry; downloads go through the [`RemoteSource`] cache.
    Remote { source: Box<RemoteSource>, runtime: Box<tokio::runtime::Runtime> },
}

impl RegistryClient {
    /// The registry chosen from `registry_uri` (`--registry-uri`), else `MLFLOW_REGISTRY_URI`,
    /// else `MLFLOW_TRACKING_URI`, else the store in `data_dir`. A remote registry's downloads
    /// are cached in `<data_dir>/cache`, as `serve` does.
    /// `local.artifacts_destination` (`--artifacts-destination`) is where the embedded store's
    /// `mlflow-artifacts:/` files are, when not where `regserve server` recorded them.
    pub fn open(registry_uri: Option<&str>, local: &LocalRegistry) -> Result<RegistryClient> {
        let data_dir = local.data_dir.as_path();
        let destination = local.artifacts_destination.as_deref();
        let (location, origin) =
            registry_location(registry_uri, |k| std::env::var(k).ok(), local).map_err(BackendError::from)?;
        match location {
            RegistryLocation::Embedded { db, artifacts } => {
                let store = open_database(&db, &local.pool, origin)?;
                let artifacts = ArtifactRoot::new(&artifacts).map_err(|source| BackendError::Artifacts {
                    path: artifacts.display().to_string(),
                    origin,
                    source,
                })?;
                Ok(RegistryClient::Embedded {
                    store,
                    artifacts,
                    destination: destination.map(str::to_string),
                    cache_dir: data_dir.join("cache"),
                })
            }
            RegistryLocation::Rest { url } => {
                let backend = |source| BackendError::Registry { uri: redact_url(&url), origin, source };
                let registry = RestRegistry::new(&url, HttpSettings::from_env().map_err(backend)?).map_err(backend)?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| backend(RegistryError::Io(e)))?;
                let source =
                    Box::new(RemoteSource::new(registry, data_dir.join("cache")).with_progress(download_bar()));
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

    /// Every registered model, by name; prompts (MLflow's prompt registry) are not models and
    /// are left out, as the MLflow client and a remote registry's listing leave them out.
    pub fn list_models(&self) -> Result<Vec<RegisteredModel>> {
        match self {
            RegistryClient::Embedded { store, .. } => Ok(store
                .list_registered_models()?
                .into_iter()
                .filter(|m| !crate::registry::is_prompt(&m.tags))
                .collect()),
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
            RegistryClient::Embedded { store, artifacts, .. } => {
                Ok(registration::delete_model(store, artifacts, name)?)
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
            RegistryClient::Embedded { store, artifacts, .. } => {
                Ok(registration::delete_version(store, artifacts, name, version)?)
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
            RegistryClient::Embedded { store, artifacts, destination, cache_dir } => {
                let version = not_a_prompt(store.resolve(uri)?)?;
                let bucket = match proxy_bucket(store, destination.as_deref(), cache_dir)? {
                    Some(bucket) if ProxyBucket::holds(version.download_location()) => {
                        bucket.with_progress(download_bar())
                    }
                    _ => {
                        let path = block_on_current(embedded_files(artifacts, None, &version))?;
                        return Ok((version, path));
                    }
                };
                let path = block_on_current(embedded_files(artifacts, Some(&bucket), &version))?;
                Ok((version, path))
            }
            RegistryClient::Remote { source, runtime } => runtime.block_on(async {
                let version = not_a_prompt(source.resolve(uri).await?)?;
                let path = source.fetch(&version).await?;
                Ok((version, path))
            }),
        }
    }

    /// Like [`RegistryClient::fetch`], for `regserve pull`: a remote registry's files are
    /// downloaded into `staging` (which the caller owns and may move them out of: `true`),
    /// not into the shared cache; the embedded registry's are where they are (`false`: copy
    /// them).
    pub fn fetch_to(&self, uri: &ModelUri, staging: &Path) -> Result<(ModelVersion, PathBuf, bool)> {
        match self {
            RegistryClient::Embedded { .. } => {
                let (version, path) = self.fetch(uri)?;
                Ok((version, path, false))
            }
            RegistryClient::Remote { source, runtime } => runtime.block_on(async {
                let staged = RemoteSource::new(source.registry().clone(), staging).with_progress(download_bar());
                let version = not_a_prompt(staged.resolve(uri).await?)?;
                let path = staged.fetch(&version).await?;
                Ok((version, path, true))
            }),
        }
    }

    // ------------------------------------------------------------------ registration

    /// Register `path` (a `.onnx` file or an MLflow model directory) as the next version of
    /// `reg.name`, creating the registered model if needed. The model is test-loaded here
    /// first either way; a remote registry then gets the files as an MLflow 3 logged model.
    pub fn register(&self, path: &Path, reg: &Registration, ort_lib: Option<&Path>) -> Result<ModelVersion> {
        match self {
            RegistryClient::Embedded { store, artifacts, .. } => {
                Ok(registration::embedded::register(store, artifacts, path, reg, ort_lib)?)
            }
            RegistryClient::Remote { source, runtime } => {
                let files = registration::remote::prepare(path, reg, ort_lib)?;
                Ok(runtime.block_on(registration::remote::register(source.registry(), files, reg))?)
            }
        }
    }
}

/// Run `f` to completion on a runtime of its own (the embedded client has none).
fn block_on_current<T>(f: impl std::future::Future<Output = Result<T, SourceError>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SourceError::from(RegistryError::Io(e)))?;
    Ok(runtime.block_on(f)?)
}

/// A progress bar on stderr for the CLI's downloads of a version's files (drawn only when
/// stderr is a terminal; the periodic log line reports progress otherwise).
fn download_bar() -> crate::artifact::fetch::ProgressHook {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "downloading {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    crate::artifact::fetch::ProgressHook::new(move |done, total| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
        if total.is_some_and(|t| done >= t) {
            bar.finish_and_clear();
        }
    })
}
