//! What the registry server's handlers share ([`RegistryState`]), and [`blocking`], which runs
//! store work off the async workers.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::ApiError;
use crate::artifact::{ArtifactRoot, Destination};
use crate::mlflow::webhooks::{DeliveryConfig, Sender};
use crate::registration::rest_create::Registrar;
use crate::registry::Store;
use crate::tracking::TrackingStore;

/// What the registry server's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct RegistryState {
    pub store: Arc<Store>,
    pub tracking: TrackingStore,
    pub artifacts: ArtifactRoot,
    /// Where the artifact proxy reads and writes: `artifacts` (the default) or a bucket
    /// (`--artifacts-destination`).
    pub destination: Destination,
    /// `false` with `--no-serve-artifacts`: the proxy's endpoints answer 503, as MLflow's.
    pub serve_artifacts: bool,
    /// `model-versions/create` and its test loads (the same store and artifact root), with the
    /// test-load limits: `--load-timeout`, the wait before answering, loads at once.
    pub registrar: Registrar,
    /// Sends `test_webhook`'s deliveries and checks hooks' destinations (`--webhook-*`).
    pub webhooks: Sender,
}

impl RegistryState {
    /// `ort_lib` is `--ort-lib`; `None` searches the usual places (see `runtime::env`).
    pub fn new(store: Arc<Store>, artifacts: ArtifactRoot, ort_lib: Option<PathBuf>) -> Self {
        let tracking = TrackingStore::new(store.clone());
        let registrar = Registrar::new(store.clone(), tracking.clone(), artifacts.clone(), ort_lib);
        let destination = Destination::Local(artifacts.clone());
        // Building an HTTP client with the compiled-in TLS fails only if the TLS backend cannot start.
        let webhooks = Sender::new(DeliveryConfig::default()).expect("the webhook HTTP client");
        RegistryState { store, tracking, artifacts, destination, serve_artifacts: true, registrar, webhooks }
    }
}

impl RegistryState {
    /// Keep the artifact proxy's files in `destination`, and give new experiments
    /// `<default_root>/<id>` as their artifact location (`--artifacts-destination`,
    /// `--default-artifact-root`).
    pub fn with_artifacts(mut self, destination: Destination, default_root: &str) -> Self {
        self.tracking = self.tracking.with_default_root(default_root);
        self.registrar.tracking = self.tracking.clone();
        self.registrar.destination = destination.clone();
        self.destination = destination;
        self
    }
}

/// Run blocking store work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("a blocking task failed: {e}")))?
}
