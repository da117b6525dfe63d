//! Registering a model version from local files into the embedded registry: validate, copy
//! into the artifact root (staged, then renamed), test-load the copy with ONNX Runtime, and
//! only then create the version, READY, in one transaction. Any failure removes what was
//! written, so no version is left half-registered.

use std::path::Path;

use crate::artifact::{ArtifactRoot, FetchError};
use crate::registry::{
    validate_description, validate_model_name, ModelVersion, NewVersion, RegistryError, Stage, Store, Tag,
};
use crate::runtime::{LoadedModel, RuntimeError, RuntimeOptions};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Not `#[from]`: the message already holds the runtime's error, which must not be
    /// printed twice as a cause.
    #[error("the model failed its test load, so no version was created: {0}")]
    Load(RuntimeError),
}

impl From<RuntimeError> for RegisterError {
    fn from(e: RuntimeError) -> Self {
        RegisterError::Load(e)
    }
}

/// What to register.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<Tag>,
    pub stage: Option<Stage>,
    pub archive_existing: bool,
    pub alias: Option<String>,
    pub run_id: String,
    /// Deadline of the test load (`None`: [`crate::runtime::DEFAULT_LOAD_TIMEOUT`]).
    pub load_timeout: Option<std::time::Duration>,
}

impl Registration {
    /// The runtime options of a test load: one small session, within the load deadline.
    pub fn test_load_options(&self) -> RuntimeOptions {
        RuntimeOptions {
            load_timeout: self.load_timeout.unwrap_or(crate::runtime::DEFAULT_LOAD_TIMEOUT),
            ..RuntimeOptions::single()
        }
    }
}

/// Register `path` (a `.onnx` file or an MLflow model directory) as the next version of
/// `reg.name`, creating the registered model if needed. Blocking.
pub fn register(
    store: &Store,
    artifacts: &ArtifactRoot,
    path: &Path,
    reg: &Registration,
    ort_lib: Option<&Path>,
) -> Result<ModelVersion, RegisterError> {
    validate_model_name(&reg.name)?;
    validate_description(reg.description.as_deref().unwrap_or(""))?;
    if let Some(alias) = &reg.alias {
        crate::registry::store::validate_alias(alias)?;
    }
    if !path.exists() {
        return Err(FetchError::NotFound(path.display().to_string()).into());
    }
    let (uri, local) = artifacts.import(path, "registry")?;
    let cleanup = |e: RegisterError| {
        if let Err(rm) = artifacts.remove(&uri) {
            tracing::warn!(%uri, error = %rm, "could not remove the files of a failed registration");
        }
        e
    };
    // One small session is enough to prove the copy loads and scores its example.
    let options = reg.test_load_options();
    LoadedModel::load(&local, &options, ort_lib).map_err(|e| cleanup(e.into()))?;

    let created_model = match store.create_registered_model(&reg.name, reg.description.as_deref().unwrap_or(""), &[]) {
        Ok(_) => true,
        Err(RegistryError::AlreadyExists(_)) => false,
        Err(e) => return Err(cleanup(e.into())),
    };
    store
        .create_model_version(&NewVersion {
            name: reg.name.clone(),
            source: uri.clone(),
            storage_location: uri.clone(),
            run_id: reg.run_id.clone(),
            description: reg.description.clone().unwrap_or_default(),
            tags: reg.tags.clone(),
            stage: reg.stage,
            archive_existing: reg.archive_existing,
            alias: reg.alias.clone(),
            ..Default::default()
        })
        .map_err(|e| {
            if created_model {
                let _ = store.delete_registered_model_if_empty(&reg.name);
            }
            cleanup(e.into())
        })
}

/// Remove the files of a deleted version when the embedded registry owns them: only copies
/// made by `regserve models register` (`mlflow-artifacts:/registry/...`) that no other version
/// still uses. Logged models' and runs' files belong to them, as in MLflow. The CLI and
/// `regserve server` both delete through this rule.
pub fn remove_owned_files(store: &Store, artifacts: &ArtifactRoot, location: &str) {
    let owned = location
        .strip_prefix(crate::artifact::SCHEME)
        .map(|rest| rest.trim_start_matches('/'))
        .is_some_and(|rel| rel.starts_with("registry/"));
    if !owned || store.versions_stored_at(location).map(|n| n > 0).unwrap_or(true) {
        return;
    }
    if let Err(e) = artifacts.remove(location) {
        tracing::warn!(%location, error = %e, "could not remove the files of a deleted version");
    }
}
