//! What happens when a model version is registered or deleted, for every way in: the one test
//! load that decides whether a version's files may be registered ([`test_load`]), and the one
//! "delete a model / version and the files the registry owns" ([`delete_model`],
//! [`delete_version`]) that the CLI, the REST API and the web UI all call.
//!
//! The three registration flows, one file each:
//! - [`embedded`]: `regserve models register` into the local store: copy, test-load, create
//!   the version READY in one transaction.
//! - [`remote`]: `regserve models register` into a remote MLflow registry over REST: test-load
//!   here, log a model, upload its files, create the version, wait until READY, stage and alias.
//! - [`rest_create`]: `model-versions/create` on `regserve server`: resolve the source, create
//!   the version PENDING, test-load it, READY or FAILED_REGISTRATION; resume pending ones at
//!   start.
//!
//! [`sweep`] removes what an interrupted registration or upload left behind.
//!
//! Layering: above `registry`, `artifact` and `runtime`; below `server` and `cli`, which call
//! it. It does not import `server`: the REST flow gets what it needs in a [`rest_create::Registrar`]
//! and answers with its own error, which the server maps.

pub mod embedded;
pub mod remote;
pub mod rest_create;
pub mod sweep;

use std::path::Path;
use std::time::Duration;

use crate::artifact::{ArtifactRoot, FetchError};
use crate::registry::{validate_description, validate_model_name, RegistryError, Stage, Store, Tag};
use crate::runtime::mlmodel::ModelFiles;
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
    /// The remote registry's test load refused the new version.
    #[error("the registry refused version {version} of '{name}' (FAILED_REGISTRATION): {message}")]
    FailedRegistration { name: String, version: u64, message: String },
    /// The version exists but a later step (waiting, stage, alias) failed.
    #[error("version {version} of '{name}' was created, but {what}: {source}")]
    Incomplete {
        name: String,
        version: u64,
        what: &'static str,
        #[source]
        source: Box<RegisterError>,
    },
    #[error("version {version} of '{name}' is still {status} after {waited:?}")]
    StillPending { name: String, version: u64, status: &'static str, waited: Duration },
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
    pub load_timeout: Option<Duration>,
}

impl Registration {
    /// Deadline of this registration's test load.
    pub fn load_timeout(&self) -> Duration {
        self.load_timeout.unwrap_or(crate::runtime::DEFAULT_LOAD_TIMEOUT)
    }

    /// The name, description and alias are valid, checked before anything is copied or
    /// created (a remote registry that would take more gets the same refusal as ours).
    fn validate(&self) -> Result<(), RegistryError> {
        validate_model_name(&self.name)?;
        validate_description(self.description.as_deref().unwrap_or(""))?;
        if let Some(alias) = &self.alias {
            crate::registry::store::validate_alias(alias)?;
        }
        Ok(())
    }
}

/// The test load: load `path` (a `.onnx` file or an MLflow model directory) with one small
/// session, warm it up on its input example, within `load_timeout`, then drop it. A version is
/// registered only if this works, whichever flow registers it. Returns the model's files.
/// Blocking.
pub fn test_load(path: &Path, load_timeout: Duration, ort_lib: Option<&Path>) -> Result<ModelFiles, RuntimeError> {
    let options = RuntimeOptions { load_timeout, ..RuntimeOptions::single() };
    LoadedModel::load(path, &options, ort_lib).map(|model| model.files.clone())
}

/// Delete a registered model and all its versions, and the files the registry owns for them
/// (see [`remove_owned_files`]). Blocking.
pub fn delete_model(store: &Store, artifacts: &ArtifactRoot, name: &str) -> Result<(), RegistryError> {
    for location in store.delete_registered_model(name)? {
        remove_owned_files(store, artifacts, &location);
    }
    Ok(())
}

/// Delete one version, and its files when the registry owns them (see [`remove_owned_files`]).
/// Blocking.
pub fn delete_version(store: &Store, artifacts: &ArtifactRoot, name: &str, version: u64) -> Result<(), RegistryError> {
    let location = store.delete_model_version(name, version)?;
    remove_owned_files(store, artifacts, &location);
    Ok(())
}

/// Remove the files of a deleted version when the embedded registry owns them: only copies
/// made by `regserve models register` (`mlflow-artifacts:/registry/...`) that no other version
/// still uses. Logged models' and runs' files belong to them, as in MLflow.
pub fn remove_owned_files(store: &Store, artifacts: &ArtifactRoot, location: &str) {
    let owned = location
        .strip_prefix(crate::artifact::SCHEME)
        .map(|rest| rest.trim_start_matches('/'))
        .and_then(|rel| rel.strip_prefix(crate::artifact::REGISTERED_PREFIX))
        .is_some_and(|rest| rest.starts_with('/'));
    if !owned || store.versions_stored_at(location).map(|n| n > 0).unwrap_or(true) {
        return;
    }
    if let Err(e) = artifacts.remove(location) {
        tracing::warn!(%location, error = %e, "could not remove the files of a deleted version");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registry_copies_are_removed_with_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let artifacts = ArtifactRoot::new(dir.path()).unwrap();
        for rel in ["registry/abc", "0/models/m-1/artifacts", "registryX/abc"] {
            std::fs::create_dir_all(dir.path().join(rel)).unwrap();
        }
        remove_owned_files(&store, &artifacts, "mlflow-artifacts:/0/models/m-1/artifacts");
        remove_owned_files(&store, &artifacts, "mlflow-artifacts:/registryX/abc");
        remove_owned_files(&store, &artifacts, "mlflow-artifacts:/registry/abc");
        assert!(dir.path().join("0/models/m-1/artifacts").is_dir(), "a logged model's files stay");
        assert!(dir.path().join("registryX/abc").is_dir(), "only the registry's own folder is owned");
        assert!(!dir.path().join("registry/abc").exists(), "the registry's own copy goes");
    }

    #[test]
    fn deleting_removes_a_registry_copy_with_its_last_version_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let artifacts = ArtifactRoot::new(dir.path()).unwrap();
        let shared = "mlflow-artifacts:/registry/abc";
        std::fs::create_dir_all(dir.path().join("registry/abc")).unwrap();
        for name in ["a", "b"] {
            store.create_registered_model(name, "", &[]).unwrap();
        }
        let version = |name: &str| crate::registry::NewVersion {
            name: name.into(),
            source: shared.into(),
            storage_location: shared.into(),
            ..Default::default()
        };
        // Two versions of `a` and one of `b` (a copy_model_version) share the files.
        for name in ["a", "a", "b"] {
            store.create_model_version(&version(name)).unwrap();
        }
        delete_version(&store, &artifacts, "a", 1).unwrap();
        assert!(dir.path().join("registry/abc").is_dir(), "still used by a/2 and b/1");
        delete_model(&store, &artifacts, "a").unwrap();
        assert!(dir.path().join("registry/abc").is_dir(), "still used by b/1");
        assert!(matches!(delete_version(&store, &artifacts, "a", 2), Err(RegistryError::NotFound(_))));
        delete_version(&store, &artifacts, "b", 1).unwrap();
        assert!(!dir.path().join("registry/abc").exists(), "gone with its last version");
    }
}
