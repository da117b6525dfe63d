//! Registering a model version from local files into the embedded registry (`regserve models
//! register` with the local store): validate, copy into the artifact root (staged, then
//! renamed), test-load the copy with ONNX Runtime ([`super::test_load`]), and only then create
//! the version, READY, in one transaction. Any failure removes what was written, so no version
//! is left half-registered.

use std::path::Path;

use super::{test_load, RegisterError, Registration};
use crate::artifact::{ArtifactRoot, FetchError};
use crate::registry::{ModelVersion, NewVersion, RegistryError, Store};

/// Register `path` (a `.onnx` file or an MLflow model directory) as the next version of
/// `reg.name`, creating the registered model if needed. Blocking.
pub fn register(
    store: &Store,
    artifacts: &ArtifactRoot,
    path: &Path,
    reg: &Registration,
    ort_lib: Option<&Path>,
) -> Result<ModelVersion, RegisterError> {
    reg.validate()?;
    if !path.exists() {
        return Err(FetchError::NotFound(path.display().to_string()).into());
    }
    let (uri, local) = artifacts.import(path, crate::artifact::REGISTERED_PREFIX)?;
    let cleanup = |e: RegisterError| {
        if let Err(rm) = artifacts.remove(&uri) {
            tracing::warn!(%uri, error = %rm, "could not remove the files of a failed registration");
        }
        e
    };
    // One small session is enough to prove the copy loads and scores its example.
    test_load(&local, reg.load_timeout(), ort_lib).map_err(|e| cleanup(e.into()))?;

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
