//! Served models: each `-m` URI gets a slot that holds the version in service. A watcher task
//! per slot resolves the URI, fetches and loads a new version off the async workers, warms it,
//! then publishes it with one atomic pointer swap; requests clone the `Arc` once, so in-flight
//! requests finish on the old model, which is dropped with its last request. A failed load
//! keeps the current version serving and is reported in the slot's status.
//!
//! Registration of new versions (copy, test-load, create) lives in [`register`].

pub mod register;
pub mod source;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::registry::ModelVersion;
use crate::runtime::{LoadedModel, RuntimeOptions};
use crate::uri::ModelUri;
pub use source::{EmbeddedSource, ModelSource, SourceError};

/// How models are loaded and followed.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub runtime: RuntimeOptions,
    pub ort_lib: Option<PathBuf>,
    /// How often a stage, alias or `latest` URI is re-resolved.
    pub poll_interval: Duration,
}

/// The version in service for one slot.
pub struct Active {
    pub version: ModelVersion,
    pub model: Arc<LoadedModel>,
    pub loaded_at: SystemTime,
}

/// What `/health` reports for a slot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotStatus {
    pub uri: String,
    pub name: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub swaps: u64,
}

/// One served URI.
pub struct Slot {
    pub uri: ModelUri,
    active: ArcSwapOption<Active>,
    status: Mutex<SlotStatus>,
}

impl Slot {
    fn new(uri: ModelUri) -> Slot {
        let status = SlotStatus {
            uri: uri.to_string(),
            name: uri.name.clone(),
            ..Default::default()
        };
        Slot {
            uri,
            active: ArcSwapOption::empty(),
            status: Mutex::new(status),
        }
    }

    /// The version in service, if any. Clone it once per request.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.active.load_full()
    }

    pub fn status(&self) -> SlotStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut SlotStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

struct Inner {
    slots: Vec<Arc<Slot>>,
    default: usize,
    source: Arc<dyn ModelSource>,
    options: ManagerOptions,
}

/// Handle on the served models. Cheap to clone; the watcher tasks stop once every handle is
/// dropped.
#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl ModelManager {
    /// Create the slots and start one watcher task per URI (on the current tokio runtime).
    /// `default` picks the slot that also answers `/invocations`.
    pub fn start(
        uris: Vec<ModelUri>,
        default: usize,
        source: Arc<dyn ModelSource>,
        options: ManagerOptions,
    ) -> ModelManager {
        let slots: Vec<Arc<Slot>> = uris.into_iter().map(|u| Arc::new(Slot::new(u))).collect();
        let inner = Arc::new(Inner {
            slots,
            default,
            source,
            options,
        });
        for slot in &inner.slots {
            tokio::spawn(watch(Arc::downgrade(&inner), slot.clone()));
        }
        ModelManager { inner }
    }

    pub fn slots(&self) -> &[Arc<Slot>] {
        &self.inner.slots
    }

    pub fn default_slot(&self) -> Option<&Arc<Slot>> {
        self.inner.slots.get(self.inner.default)
    }

    /// The slot serving registered model `name`.
    pub fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.inner.slots.iter().find(|s| s.uri.name == name)
    }

    /// True when every slot has a model in service.
    pub fn all_ready(&self) -> bool {
        self.inner.slots.iter().all(|s| s.active().is_some())
    }

    pub fn source_description(&self) -> String {
        self.inner.source.describe()
    }
}

/// Follow one URI: load the version it selects, and again whenever that changes.
async fn watch(inner: Weak<Inner>, slot: Arc<Slot>) {
    let mut failures: u32 = 0;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (source, options) = (strong.source.clone(), strong.options.clone());
        drop(strong);
        let outcome = check_once(&*source, &options, &slot).await;
        let now = SystemTime::now();
        match outcome {
            Ok(()) => {
                failures = 0;
                slot.update_status(|s| {
                    s.last_check_ms = Some(ms(now));
                    s.last_error = None;
                });
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(uri = %slot.uri, error = %e, "model check failed; keeping the current version");
                slot.update_status(|s| {
                    s.last_check_ms = Some(ms(now));
                    s.last_error = Some(e);
                });
            }
        }
        // A pinned version that loaded never changes: stop watching.
        if !slot.uri.is_floating() && slot.active().is_some() {
            return;
        }
        // Back off on repeated failures: poll, 2x, 4x ... up to 8x the poll interval.
        let factor = 1u32 << failures.saturating_sub(1).min(3);
        let delay = if failures == 0 {
            options.poll_interval
        } else {
            options.poll_interval.min(Duration::from_secs(1)) * factor
        };
        tokio::time::sleep(delay).await;
    }
}

async fn check_once(
    source: &dyn ModelSource,
    options: &ManagerOptions,
    slot: &Slot,
) -> Result<(), String> {
    let version = source.resolve(&slot.uri).await.map_err(|e| e.to_string())?;
    if let Some(active) = slot.active() {
        if active.version.version == version.version && active.version.name == version.name {
            return Ok(());
        }
    }
    let path = source.fetch(&version).await.map_err(|e| e.to_string())?;
    let (runtime, ort_lib) = (options.runtime.clone(), options.ort_lib.clone());
    let model =
        tokio::task::spawn_blocking(move || LoadedModel::load(&path, &runtime, ort_lib.as_deref()))
            .await
            .map_err(|e| format!("model load task failed: {e}"))?
            .map_err(|e| format!("version {} failed to load: {e}", version.version))?;
    let loaded_at = SystemTime::now();
    let load_seconds = model.load_time.as_secs_f64();
    let previous = slot.active().map(|a| a.version.version);
    let number = version.version;
    slot.active.store(Some(Arc::new(Active {
        version,
        model: Arc::new(model),
        loaded_at,
    })));
    tracing::info!(uri = %slot.uri, version = number, ?previous, load_seconds, "model version in service");
    slot.update_status(|s| {
        s.ready = true;
        s.version = Some(number);
        s.loaded_at_ms = Some(ms(loaded_at));
        s.load_seconds = Some(load_seconds);
        if previous.is_some() {
            s.swaps += 1;
        }
    });
    Ok(())
}
