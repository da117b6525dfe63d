//! Served models: each `-m` URI gets a slot that holds the version in service. A watcher task
//! per slot resolves the URI, fetches and loads a new version off the async workers, warms it,
//! then publishes it with one atomic pointer swap; requests clone the `Arc` once, so in-flight
//! requests finish on the old model, which is dropped with its last request. A failed load
//! keeps the current version serving and is reported in the slot's status.
//!
//! Loaded versions are kept in a cache keyed by (name, version, location), bounded at once by
//! file bytes, versions and session threads, and unloaded after an idle time, so a rollback
//! swaps back without reloading. The Open Inference Protocol's `versions/{v}` serves the version
//! in service, or — only with [`PinnedPolicy::Any`] — any READY version of a served model,
//! loaded through that cache (a few loads at a time). A version whose load failed is not loaded
//! again at every check, nor logged again until it is: it backs off up to minutes (up to an hour
//! when its files are not an ONNX model: only rewriting them could change that). A source that
//! can tell when the registry changes (the embedded SQLite file, through `notify`) wakes the
//! watchers at once, and so does a registry webhook received by the server
//! ([`ModelManager::refresh`]); polling stays as the fallback.
//!
//! Errors are kept twice: in full for the log and in-process callers ([`Slot::status`]), and
//! as a short reason without paths, URLs or library messages for `/health` and the status
//! page ([`Slot::public_status`]).
//!
//! This module is serving only: the `models` and `predict` commands' registry client is
//! `cli::client`, and registering and deleting versions is `registration`.

pub mod local;
pub mod remote;
pub mod source;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::metrics;
use crate::registry::{ModelVersion, RegistryError, VersionStatus};
use crate::runtime::{LoadedModel, RuntimeError, RuntimeOptions};
use crate::uri::ModelUri;
pub use local::{DirectorySource, PullRecord, PulledSource};
pub use remote::{source_from_uri, RemoteSource};
pub use source::{EmbeddedSource, ModelSource, SourceError};

/// How models are loaded and followed.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub runtime: RuntimeOptions,
    pub ort_lib: Option<PathBuf>,
    /// How often a stage, alias or `latest` URI is re-resolved.
    pub poll_interval: Duration,
    /// Memory budget of the loaded-model cache, in bytes (model file size × sessions).
    pub model_cache_bytes: u64,
    /// Most versions in the loaded-model cache.
    pub model_cache_versions: u64,
    /// Most session threads held by the versions in the loaded-model cache.
    pub model_cache_threads: u64,
    /// A cached version unused for this long is dropped (its sessions and threads with it,
    /// once no request and no slot holds it).
    pub model_cache_idle: Duration,
    /// Which versions [`ModelManager::pinned`] serves.
    pub pinned: PinnedPolicy,
    /// Disk budget of a remote registry's download cache (`--cache-max-size`): past it, the
    /// least recently used versions not in service and not being loaded are removed after each
    /// load. `None`: unbounded.
    pub download_cache_bytes: Option<u64>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            runtime: RuntimeOptions::default(),
            ort_lib: None,
            poll_interval: Duration::from_secs(5),
            model_cache_bytes: 2 << 30,
            model_cache_versions: 16,
            model_cache_threads: 64,
            model_cache_idle: Duration::from_secs(600),
            pinned: PinnedPolicy::InService,
            download_cache_bytes: None,
        }
    }
}

/// Which versions a request may pin (`/v2/models/{name}/versions/{v}/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinnedPolicy {
    /// Only the version in service for the served URI: nothing else is ever loaded for a
    /// request.
    #[default]
    InService,
    /// Any READY version of a served model, loaded on demand within the cache's bounds.
    Any,
}

/// Pinned versions loading at once (each builds its sessions and threads).
const PINNED_LOADS: usize = 2;

/// Weight units of the whole cache: an entry weighs its largest share of the three bounds.
const CACHE_UNITS: u64 = 1 << 20;

/// An entry's weight: the largest of its shares of the byte, thread and version budgets, so
/// that the sum of weights staying within [`CACHE_UNITS`] keeps each of the three sums within
/// its own bound. Clamped to the whole cache, so any one version can still be cached alone.
fn cache_weight(bytes: u64, threads: u64, budget: (u64, u64, u64)) -> u32 {
    let share = |x: u64, of: u64| -> u64 {
        let of = u128::from(of.max(1));
        ((u128::from(x) * u128::from(CACHE_UNITS)).div_ceil(of)).min(u128::from(CACHE_UNITS)) as u64
    };
    let (b, t, n) = budget;
    let w = share(bytes, b).max(share(threads.max(1), t)).max(share(1, n)).max(1);
    u32::try_from(w).unwrap_or(u32::MAX)
}

/// A loaded version is the same model wherever it is served from: same name, number and files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: String,
    version: u64,
    location: String,
}

impl CacheKey {
    fn of(v: &ModelVersion) -> CacheKey {
        CacheKey { name: v.name.clone(), version: v.version, location: v.download_location().to_string() }
    }
}

type ModelCache = moka::future::Cache<CacheKey, Arc<LoadedModel>>;

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
    /// When the last swap happened, and the version it replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_swap_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    pub requests: RequestStats,
}

/// How many recent request latencies a slot keeps for its percentiles.
const RECENT: usize = 128;

/// Scoring requests seen by one slot: counters and a ring of recent latencies. The scoring
/// handlers (`server::scoring`, `server::v2`) call [`SlotStats::record`] once per request —
/// a few relaxed atomic operations, no lock; the status page and `/health` read a snapshot.
pub struct SlotStats {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    last_request_ms: AtomicI64,
    /// Latencies in microseconds; `written` counts every record, so slot `written % RECENT`
    /// is the next to overwrite.
    recent_us: [AtomicU32; RECENT],
    written: AtomicU64,
}

/// A snapshot of [`SlotStats`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestStats {
    pub total: u64,
    /// Answers with a 4xx status.
    pub client_errors: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_request_ms: Option<i64>,
    /// Latency percentiles over the last `recent` requests (at most 128), in milliseconds.
    pub recent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
}

impl Default for SlotStats {
    fn default() -> Self {
        SlotStats {
            requests: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            last_request_ms: AtomicI64::new(0),
            recent_us: std::array::from_fn(|_| AtomicU32::new(0)),
            written: AtomicU64::new(0),
        }
    }
}

impl SlotStats {
    /// Count one answered request: its HTTP status and how long it took.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.client_errors.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        self.last_request_ms.store(ms(SystemTime::now()), Ordering::Relaxed);
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        let i = self.written.fetch_add(1, Ordering::Relaxed) as usize % RECENT;
        self.recent_us[i].store(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestStats {
        let written = self.written.load(Ordering::Relaxed);
        let n = written.min(RECENT as u64) as usize;
        let mut recent: Vec<u32> = self.recent_us[..n].iter().map(|a| a.load(Ordering::Relaxed)).collect();
        recent.sort_unstable();
        let pick = |q: f64| -> Option<f64> {
            let i = ((recent.len() as f64 * q).ceil() as usize).clamp(1, recent.len().max(1)) - 1;
            recent.get(i).map(|us| f64::from(*us) / 1000.0)
        };
        let last = self.last_request_ms.load(Ordering::Relaxed);
        RequestStats {
            total: self.requests.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            last_request_ms: (last > 0).then_some(last),
            recent: n,
            p50_ms: pick(0.5),
            p95_ms: pick(0.95),
            max_ms: recent.last().map(|us| f64::from(*us) / 1000.0),
        }
    }
}

/// A model this server answers for: the name requests use and the URI that picks its version.
/// The name is the registered model's, unless given another (`--model-name`, KServe's
/// InferenceService name).
#[derive(Debug, Clone)]
pub struct ServedModel {
    pub name: String,
    pub uri: ModelUri,
}

impl From<ModelUri> for ServedModel {
    fn from(uri: ModelUri) -> ServedModel {
        ServedModel { name: uri.name.clone(), uri }
    }
}

/// One served URI.
pub struct Slot {
    /// The name requests use (`/v2/models/{name}`, metrics labels, `--default-model`).
    pub name: String,
    /// The registry URI that picks the version; its name is the registered model's.
    pub uri: ModelUri,
    active: ArcSwapOption<Active>,
    status: Mutex<SlotStatus>,
    /// The short form of `status.last_error`, for unauthenticated readers.
    public_error: Mutex<Option<String>>,
    /// The last version that failed to load, and when it may be tried again.
    failed: Mutex<Option<Failed>>,
    /// Updated by the scoring handlers.
    pub stats: SlotStats,
    /// Notified by [`ModelManager::refresh`] (a registry webhook): the watcher checks at once.
    /// A notification while a check runs is kept, so that check is followed by another.
    wake: tokio::sync::Notify,
}

/// A version whose load failed: not loaded again before `retry_at`.
struct Failed {
    key: CacheKey,
    error: LoadError,
    attempts: u32,
    retry_at: Instant,
}

/// How long a version that failed to load `attempts` times waits before the next try:
/// 5 s, 10 s, 20 s, ... up to 5 minutes (a model that loops until its deadline must not burn a
/// core at every check).
fn load_backoff(attempts: u32) -> Duration {
    (Duration::from_secs(5) * (1u32 << attempts.saturating_sub(1).min(6))).min(Duration::from_secs(300))
}

/// How long a version whose files are not servable (not an ONNX model, see
/// [`LoadError::unservable`]) waits before the next try: 1 min, 2, 4, ... up to 1 hour.
/// Its files decide the failure, so trying them again only helps if they were rewritten: a
/// remote registry's versions are read from `serve`'s download cache, which never refreshes a
/// version, but on the embedded store a version registered from a run's artifact folder
/// (`runs:/…`) is read in place, and that folder stays writable through `regserve server`'s
/// artifact proxy, as in MLflow. A URI that moves to another version is loaded at once.
fn unservable_backoff(attempts: u32) -> Duration {
    (Duration::from_secs(60) * (1u32 << attempts.saturating_sub(1).min(6))).min(Duration::from_secs(3600))
}

impl Slot {
    fn new(served: ServedModel) -> Slot {
        let ServedModel { name, uri } = served;
        let status = SlotStatus { uri: uri.to_string(), name: name.clone(), ..Default::default() };
        Slot {
            name,
            uri,
            active: ArcSwapOption::empty(),
            status: Mutex::new(status),
            public_error: Mutex::new(None),
            failed: Mutex::new(None),
            stats: SlotStats::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The version in service, if any. Clone it once per request.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.active.load_full()
    }

    /// The slot's status with errors in full (they may name local paths and registry URLs):
    /// for the log and in-process callers.
    pub fn status(&self) -> SlotStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status.requests = self.stats.snapshot();
        status
    }

    /// The slot's status for anyone who asks (`/health`, the status page): `last_error` is a
    /// short reason without local paths, URLs or library messages; the full error is logged.
    pub fn public_status(&self) -> SlotStatus {
        let mut status = self.status();
        if status.last_error.is_some() {
            status.last_error = self.public_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        }
        status
    }

    fn update_status(&self, f: impl FnOnce(&mut SlotStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

struct Inner {
    /// Set when shutdown begins: readiness fails so load balancers stop sending traffic.
    draining: std::sync::atomic::AtomicBool,
    slots: Vec<Arc<Slot>>,
    default: usize,
    source: Arc<dyn ModelSource>,
    options: ManagerOptions,
    cache: ModelCache,
    /// Admission of pinned-version loads ([`PINNED_LOADS`] at a time).
    pinned_loads: tokio::sync::Semaphore,
    /// Pinned versions whose load failed recently, with the public reason: asked again within
    /// [`PINNED_FAILURE_TTL`], they are refused without loading (a version that loops until
    /// its deadline must not keep cores busy at every request).
    failed_pins: moka::future::Cache<CacheKey, LoadError>,
    /// Versions whose files are being fetched or loaded now (with a count of the loads): their
    /// downloads are never trimmed.
    loading: Mutex<HashMap<CacheKey, (ModelVersion, usize)>>,
}

impl Inner {
    /// Keep the download cache within `--cache-max-size`: keep the versions in service and
    /// those being loaded.
    async fn trim_downloads(&self) {
        let Some(max_bytes) = self.options.download_cache_bytes else { return };
        let mut keep: Vec<ModelVersion> =
            self.slots.iter().filter_map(|s| s.active()).map(|a| a.version.clone()).collect();
        keep.extend(self.loading.lock().unwrap_or_else(|p| p.into_inner()).values().map(|(v, _)| v.clone()));
        let source = self.source.clone();
        let _ = tokio::task::spawn_blocking(move || source.trim_downloads(&keep, max_bytes)).await;
    }
}

/// Counts a version as being loaded while alive (see `Inner::loading`).
struct Loading<'a> {
    inner: &'a Inner,
    key: CacheKey,
}

impl<'a> Loading<'a> {
    fn start(inner: &'a Inner, version: &ModelVersion) -> Loading<'a> {
        let key = CacheKey::of(version);
        let mut loading = inner.loading.lock().unwrap_or_else(|p| p.into_inner());
        loading.entry(key.clone()).or_insert_with(|| (version.clone(), 0)).1 += 1;
        Loading { inner, key }
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        let mut loading = self.inner.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = loading.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                loading.remove(&self.key);
            }
        }
    }
}

/// How long a pinned version that failed to load is refused without trying again.
const PINNED_FAILURE_TTL: Duration = Duration::from_secs(60);

/// Handle on the served models. Cheap to clone; the watcher tasks stop once every handle is
/// dropped.
#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl ModelManager {
    /// Create the slots and start one watcher task per URI (on the current tokio runtime).
    /// `default` picks the slot that also answers `/invocations`.
    pub fn start(
        served: Vec<ServedModel>,
        default: usize,
        source: Arc<dyn ModelSource>,
        options: ManagerOptions,
    ) -> ModelManager {
        let slots: Vec<Arc<Slot>> = served.into_iter().map(|s| Arc::new(Slot::new(s))).collect();
        let budget = (options.model_cache_bytes, options.model_cache_threads, options.model_cache_versions);
        let cache = ModelCache::builder()
            .max_capacity(CACHE_UNITS)
            .weigher(move |_, m: &Arc<LoadedModel>| {
                let bytes = m.file_bytes.max(1).saturating_mul(m.sessions() as u64);
                cache_weight(bytes, m.threads() as u64, budget)
            })
            .time_to_idle(options.model_cache_idle)
            .build();
        let pinned_loads = tokio::sync::Semaphore::new(PINNED_LOADS);
        let failed_pins = moka::future::Cache::builder().max_capacity(1024).time_to_live(PINNED_FAILURE_TTL).build();
        let inner = Arc::new(Inner {
            draining: Default::default(),
            slots,
            default,
            source,
            options,
            cache,
            pinned_loads,
            failed_pins,
            loading: Mutex::new(HashMap::new()),
        });
        for slot in &inner.slots {
            tokio::spawn(watch(Arc::downgrade(&inner), slot.clone()));
        }
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        tokio::spawn(saturation(Arc::downgrade(&inner)));
        ModelManager { inner }
    }

    pub fn slots(&self) -> &[Arc<Slot>] {
        &self.inner.slots
    }

    pub fn default_slot(&self) -> Option<&Arc<Slot>> {
        self.inner.slots.get(self.inner.default)
    }

    /// The slot answering to `name` (see [`ServedModel`]).
    pub fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.inner.slots.iter().find(|s| s.name == name)
    }

    /// The registry says registered model `name` changed (a webhook): the watchers of its URIs re-resolve
    /// now instead of at the next poll. Returns the URIs woken (none: not served here, or only
    /// at pinned versions already loaded).
    pub fn refresh(&self, name: &str) -> Vec<&ModelUri> {
        let woken: Vec<&ModelUri> = self
            .inner
            .slots
            .iter()
            // A pinned version, once loaded, is not watched any more: nothing to wake.
            .filter(|s| s.uri.name == name && (s.uri.is_floating() || s.active().is_none()))
            .map(|s| {
                s.wake.notify_one();
                &s.uri
            })
            .collect();
        woken
    }

    /// True when every slot has a model in service and shutdown has not begun.
    pub fn all_ready(&self) -> bool {
        !self.is_draining() && self.inner.slots.iter().all(|s| s.active().is_some())
    }

    /// Begin shutdown: readiness answers 503 from now on; scoring goes on while connections
    /// drain. Loads still running (a version coming into service, a pinned one) are stopped,
    /// so none keeps the process past its grace period.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        crate::runtime::cancel_loads();
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Where the models come from, for anyone who asks (`/health`, the status page): no local
    /// paths, no credentials. The log has the full description.
    pub fn source_description(&self) -> String {
        self.inner.source.public_description()
    }

    /// A specific version of a served model: the one in service; with [`PinnedPolicy::Any`],
    /// any READY version, loaded through the cache.
    pub async fn pinned(&self, name: &str, version: u64) -> Result<Arc<LoadedModel>, PinError> {
        let slot = self.slot(name).ok_or_else(|| PinError::NotServed(name.to_string()))?;
        let registered = slot.uri.name.as_str();
        let active = slot.active();
        if let Some(active) = &active {
            if active.version.version == version {
                return Ok(active.model.clone());
            }
        }
        if self.inner.options.pinned == PinnedPolicy::InService {
            return Err(PinError::NotInService {
                name: name.to_string(),
                version,
                in_service: active.map(|a| a.version.version),
            });
        }
        let uri = ModelUri::new(registered, crate::uri::Selector::Version(version));
        let v = self.inner.source.resolve(&uri).await.map_err(PinError::Source)?;
        if v.is_prompt() {
            return Err(PinError::Load(LoadError::Prompt { name: v.name, version: v.version }));
        }
        if v.status != VersionStatus::Ready {
            return Err(PinError::NotReady { name: name.to_string(), version, status: v.status.as_str() });
        }
        let key = CacheKey::of(&v);
        if let Some(model) = self.inner.cache.get(&key).await {
            return Ok(model);
        }
        if let Some(why) = self.inner.failed_pins.get(&key).await {
            return Err(PinError::Load(why));
        }
        // A few loads at a time: each builds sessions and threads before the cache can weigh it.
        let _permit = self.inner.pinned_loads.acquire().await.map_err(|_| PinError::ShuttingDown)?;
        let model = match load_cached(&self.inner, &v).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(model = name, version, error = %e, "pinned version failed to load");
                if e.model_failed() {
                    self.inner.failed_pins.insert(key, e.clone()).await;
                }
                return Err(PinError::Load(e));
            }
        };
        // Apply evictions now rather than at some later cache access.
        self.inner.cache.run_pending_tasks().await;
        self.inner.trim_downloads().await;
        Ok(model)
    }
}

/// Why a pinned version could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("model '{0}' is not served here")]
    NotServed(String),
    #[error("version {version} of model '{name}' is not in service here{}; this server serves pinned versions only while they are in service (--pinned-versions in-service)", in_service.map(|v| format!(" (version {v} is)")).unwrap_or_default())]
    NotInService { name: String, version: u64, in_service: Option<u64> },
    #[error("version {version} of model '{name}' is {status}; only READY versions are served")]
    NotReady { name: String, version: u64, status: &'static str },
    #[error(transparent)]
    Source(SourceError),
    /// Shows the public reason only (it goes to the client).
    #[error("{}", .0.public())]
    Load(LoadError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Why a version could not be checked or loaded. `Display` is the full story (the log, the
/// in-process status); [`LoadError::public`] is the short reason for unauthenticated readers
/// (`/health`, the status page, a pinned request's error). Cheap to clone (the moka cache shares
/// one error among the callers of one load).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The registry could not say which version it is, or its files could not be fetched.
    #[error("{error}")]
    Source { error: Arc<SourceError>, public: String },
    /// The selected version is not READY (still pending, or its registration failed).
    #[error("{detail}")]
    NotReady { detail: String, public: String },
    /// The selected version is a prompt of MLflow's prompt registry: a template, no model.
    #[error("version {version} of '{name}' is a prompt, not a model; regserve serves models only")]
    Prompt { name: String, version: u64 },
    /// The model itself failed to load: invalid, no ONNX Runtime, over its deadline, stopped.
    #[error("version {version} failed to load: {error}")]
    Model { name: String, version: u64, error: Arc<RuntimeError> },
    /// The load task failed (a panic).
    #[error("model load task failed: {0}")]
    Task(String),
}

impl LoadError {
    fn source(e: SourceError) -> LoadError {
        LoadError::Source { public: source_public_reason(&e), error: Arc::new(e) }
    }

    /// The short reason, without paths, URLs or library messages.
    pub fn public(&self) -> String {
        match self {
            LoadError::Source { public, .. } | LoadError::NotReady { public, .. } => public.clone(),
            LoadError::Model { name, version, error } => {
                format!("version {version} of '{name}' failed to load: {}", error.public_reason())
            }
            LoadError::Task(_) => "internal error".into(),
            LoadError::Prompt { .. } => self.to_string(),
        }
    }

    /// The version's files are not something regserve serves (an MLflow model of another
    /// flavor): trying them again gives the same answer unless they are rewritten, so the
    /// version is retried rarely ([`unservable_backoff`]).
    pub fn unservable(&self) -> bool {
        matches!(self, LoadError::Model { error, .. } if matches!(error.as_ref(), RuntimeError::NotOnnx { .. }))
    }

    /// The model itself failed (not the registry, the download or a shutdown): such a version
    /// is retried with backoff rather than at once.
    pub fn model_failed(&self) -> bool {
        match self {
            LoadError::Model { error, .. } => !matches!(error.as_ref(), RuntimeError::Cancelled),
            LoadError::Task(_) => true,
            LoadError::Source { .. } | LoadError::NotReady { .. } | LoadError::Prompt { .. } => false,
        }
    }
}

/// A short reason for a source error, without paths or URLs. "Not found" keeps the registry's
/// message (it names the model, version, stage or alias asked for), cut to one short line.
pub fn source_public_reason(e: &SourceError) -> String {
    match e {
        SourceError::Registry(RegistryError::NotFound(m)) => {
            let line = m.lines().next().unwrap_or_default();
            match line.char_indices().nth(200) {
                Some((i, _)) => format!("{}…", &line[..i]),
                None => line.to_string(),
            }
        }
        SourceError::Registry(RegistryError::Unavailable(_)) => {
            "the registry could not be reached, or refused the request".into()
        }
        SourceError::Registry(_) => "the registry failed to answer".into(),
        // Names the bucket and what to fix, never a key or a secret.
        SourceError::Fetch(crate::artifact::FetchError::Store { public, .. }) => {
            format!("the version's files could not be fetched: {public}")
        }
        SourceError::Fetch(_) => "the version's files could not be fetched".into(),
        SourceError::Join(_) => "internal error".into(),
    }
}

/// Load a version, or take it from the cache (concurrent callers share one load).
async fn load_cached(inner: &Inner, version: &ModelVersion) -> Result<Arc<LoadedModel>, LoadError> {
    let _loading = Loading::start(inner, version);
    let key = CacheKey::of(version);
    let source = inner.source.clone();
    let (runtime, ort_lib) = (inner.options.runtime.clone(), inner.options.ort_lib.clone());
    let v = version.clone();
    let labels = metrics::Metrics::model(&version.name);
    inner
        .cache
        .try_get_with(key, async move {
            let path = source.fetch(&v).await.map_err(|e| LoadError::Source {
                public: format!("version {} of '{}': {}", v.version, v.name, source_public_reason(&e)),
                error: Arc::new(e),
            })?;
            let m = metrics::metrics();
            let observers = crate::runtime::pool::Observers {
                batch_sizes: Some(m.batch_size.get_or_create(&labels).clone()),
                queue_wait: Some(m.queue_wait.get_or_create(&labels).clone()),
                inline_runs: Some(m.inline_runs.get_or_create(&labels).clone()),
                load: Some(crate::saturation::load_of(&v.name)),
            };
            let loaded = tokio::task::spawn_blocking(move || {
                LoadedModel::load_observed(&path, &runtime, ort_lib.as_deref(), observers)
            })
            .await
            .map_err(|e| LoadError::Task(e.to_string()))?;
            let outcome = if loaded.is_ok() { "success" } else { "failure" };
            metrics::metrics()
                .loads
                .get_or_create(&metrics::LoadLabels { model: v.name.clone(), outcome: outcome.into() })
                .inc();
            loaded.map(Arc::new).map_err(|e| LoadError::Model {
                name: v.name.clone(),
                version: v.version,
                error: Arc::new(e),
            })
        })
        .await
        .map_err(|e: Arc<LoadError>| e.as_ref().clone())
}

/// Apply the cache's evictions (idle versions, bounds) regularly: the cache does this work
/// only when it is used, and an idle server should still let go of idle versions.
async fn housekeeping(inner: Weak<Inner>) {
    let tick = inner
        .upgrade()
        .map(|i| (i.options.model_cache_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)))
        .unwrap_or_default();
    loop {
        tokio::time::sleep(tick).await;
        let Some(strong) = inner.upgrade() else { return };
        strong.cache.run_pending_tasks().await;
    }
}

/// Every [`saturation::TICK`](crate::saturation::TICK): fold each served model's load into
/// its `regserve_saturation` moving average (sessions of the version in service).
async fn saturation(inner: Weak<Inner>) {
    use crate::saturation::{load_of, Ewma, TICK};
    let mut averages: HashMap<String, Ewma> = HashMap::new();
    loop {
        let Some(strong) = inner.upgrade() else { return };
        for slot in &strong.slots {
            // The load is the registered model's (its versions' pools count into it); the label
            // is the name requests use, as on the other metrics.
            let sessions = slot.active().map(|a| a.model.sessions());
            let load = load_of(&slot.uri.name).integral();
            let value = averages.entry(slot.name.clone()).or_default().update(load, sessions);
            metrics::metrics().saturation.get_or_create(&metrics::Metrics::model(&slot.name)).set(value);
        }
        drop(strong);
        tokio::time::sleep(TICK).await;
    }
}

/// Follow one URI: load the version it selects, and again whenever that changes.
async fn watch(inner: Weak<Inner>, slot: Arc<Slot>) {
    let mut last_logged: Option<String> = None;
    let mut failures: u32 = 0;
    let mut changes = inner.upgrade().and_then(|i| i.source.changes());
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let outcome = check_once(&strong, &slot).await;
        let poll = strong.options.poll_interval;
        drop(strong);
        let now = SystemTime::now();
        match outcome {
            Ok(()) => {
                failures = 0;
                last_logged = None;
                slot.update_status(|s| {
                    s.last_check_ms = Some(ms(now));
                    s.last_error = None;
                });
            }
            Err(failure) => {
                failures = failures.saturating_add(1);
                let e = match failure {
                    // The same failure as at the last check (a prompt, a FAILED_REGISTRATION
                    // version, a registry that is still down): logged once, not at every check.
                    CheckFailure::Fresh(e) if last_logged.as_deref() == Some(e.to_string().as_str()) => {
                        tracing::debug!(uri = %slot.uri, error = %e, "model check failed again");
                        e
                    }
                    CheckFailure::Fresh(e) => {
                        tracing::warn!(uri = %slot.uri, error = %e, "model check failed; keeping the current version");
                        last_logged = Some(e.to_string());
                        e
                    }
                    // Logged when it happened; `/health` keeps showing it.
                    CheckFailure::Remembered(e) => {
                        tracing::debug!(uri = %slot.uri, error = %e, "version still waiting to be tried again");
                        e
                    }
                };
                *slot.public_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.public());
                slot.update_status(|s| {
                    s.last_check_ms = Some(ms(now));
                    s.last_error = Some(e.to_string());
                });
            }
        }
        // A pinned version that loaded never changes: stop watching.
        if !slot.uri.is_floating() && slot.active().is_some() {
            return;
        }
        // After a failure, retry sooner than the poll interval at first, then back off:
        // 1 s, 2 s, 4 s, 8 s (each at most the poll interval ... up to 8x it).
        let delay = if failures == 0 {
            poll
        } else {
            poll.min(Duration::from_secs(1)) * (1u32 << failures.saturating_sub(1).min(3))
        };
        // Wait for the poll interval, a change the source heard, or a webhook.
        let heard = async {
            match changes.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            _ = tokio::time::sleep(delay) => Woke::Poll,
            _ = slot.wake.notified() => Woke::Webhook,
            ok = heard => if ok { Woke::Source } else { Woke::SourceStopped },
        };
        match woke {
            Woke::Poll => {}
            Woke::Webhook => tracing::debug!(uri = %slot.uri, "a webhook says the model changed; checking now"),
            Woke::SourceStopped => changes = None, // the notifier stopped: poll only
            Woke::Source => {
                // Let a burst of writes settle, then look.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(rx) = changes.as_mut() {
                    rx.borrow_and_update();
                }
            }
        }
    }
}

/// What ended a watcher's wait.
enum Woke {
    Poll,
    Webhook,
    Source,
    SourceStopped,
}

/// Why a check did not put a version in service.
enum CheckFailure {
    /// Found at this check: logged.
    Fresh(LoadError),
    /// The version failed to load before and is not tried again yet: the remembered error,
    /// not logged again (a version that cannot load must not log at every poll).
    Remembered(LoadError),
}

impl From<LoadError> for CheckFailure {
    fn from(e: LoadError) -> Self {
        CheckFailure::Fresh(e)
    }
}

async fn check_once(inner: &Inner, slot: &Slot) -> Result<(), CheckFailure> {
    let version = inner.source.resolve(&slot.uri).await.map_err(LoadError::source)?;
    if version.is_prompt() {
        return Err(LoadError::Prompt { name: version.name, version: version.version }.into());
    }
    let current = slot.active();
    // Only READY versions are ever loaded: one still being registered is waited for, a failed
    // one is reported (remote registries resolve by stage without looking at the status).
    match version.status {
        VersionStatus::Ready => {}
        VersionStatus::PendingRegistration if current.is_some() => return Ok(()),
        status => {
            let why =
                if version.status_message.is_empty() { String::new() } else { format!(": {}", version.status_message) };
            let what = format!("version {} of '{}' is {}", version.version, version.name, status.as_str());
            return Err(LoadError::NotReady {
                detail: format!("{what}{why}; not loading it"),
                public: format!("{what}; not loading it"),
            }
            .into());
        }
    }
    let key = CacheKey::of(&version);
    if let Some(active) = &current {
        if CacheKey::of(&active.version) == key {
            return Ok(());
        }
    }
    // The same version failed to load recently: say so again without loading it.
    if let Some(f) = slot.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        if f.key == key && Instant::now() < f.retry_at {
            return Err(CheckFailure::Remembered(f.error.clone()));
        }
    }
    let model = match load_cached(inner, &version).await {
        Ok(m) => m,
        Err(e) => {
            if e.model_failed() {
                let mut failed = slot.failed.lock().unwrap_or_else(|p| p.into_inner());
                let attempts = match failed.as_ref() {
                    Some(f) if f.key == key => f.attempts.saturating_add(1),
                    _ => 1,
                };
                let wait = if e.unservable() { unservable_backoff(attempts) } else { load_backoff(attempts) };
                tracing::info!(uri = %slot.uri, version = version.version, attempts, retry_in = ?wait, "not loading this version again before the retry time, unless the URI moves to another version");
                *failed = Some(Failed { key, error: e.clone(), attempts, retry_at: Instant::now() + wait });
            }
            return Err(e.into());
        }
    };
    *slot.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    if let Some(active) = &current {
        let (old, new) = (&active.model.schema, &model.schema);
        if old.inputs != new.inputs || old.binding != new.binding {
            tracing::warn!(
                uri = %slot.uri,
                from = active.version.version,
                to = version.version,
                old_inputs = %crate::runtime::schema::describe(&old.inputs),
                new_inputs = %crate::runtime::schema::describe(&new.inputs),
                "the new version takes different inputs; clients may need to change their payloads"
            );
        }
    }
    let loaded_at = SystemTime::now();
    let load_seconds = model.load_time.as_secs_f64();
    let previous = current.map(|a| a.version.version);
    let number = version.version;
    let name = slot.name.clone();
    slot.active.store(Some(Arc::new(Active { version, model, loaded_at })));
    // The new version is in service now: its files are kept, the previous one's may go.
    inner.trim_downloads().await;
    tracing::info!(uri = %slot.uri, version = number, ?previous, load_seconds, "model version in service");
    let m = metrics::metrics();
    let labels = metrics::Metrics::model(&name);
    m.version_in_service.get_or_create(&labels).set(number as i64);
    m.model_version
        .get_or_create(&metrics::UriLabels { uri: slot.uri.to_string(), model: name.clone() })
        .set(number as i64);
    if previous.is_some() {
        m.swaps.get_or_create(&labels).inc();
    }
    slot.update_status(|s| {
        s.ready = true;
        s.version = Some(number);
        s.loaded_at_ms = Some(ms(loaded_at));
        s.load_seconds = Some(load_seconds);
        if previous.is_some() {
            s.swaps += 1;
            s.last_swap_ms = Some(ms(loaded_at));
            s.previous_version = previous;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_weight_keeps_every_bound() {
        // 1 GiB, 64 threads, 16 versions.
        let budget = (1 << 30, 64, 16);
        let fits = |bytes: u64, threads: u64| CACHE_UNITS / u64::from(cache_weight(bytes, threads, budget));
        assert_eq!(fits(1, 1), 16, "tiny versions: the version bound");
        assert_eq!(fits(1, 8), 8, "8 threads each: 64 threads");
        assert_eq!(fits(256 << 20, 1), 4, "256 MiB each: 1 GiB");
        assert_eq!(fits(8 << 30, 1), 1, "larger than the budget: still cached alone");
        assert_eq!(cache_weight(u64::MAX, u64::MAX, budget), CACHE_UNITS as u32);
    }

    #[test]
    fn failed_loads_back_off_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| load_backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn unservable_versions_back_off_up_to_an_hour() {
        let waits: Vec<u64> = (1..=9).map(|n| unservable_backoff(n).as_secs() / 60).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let not_onnx = LoadError::Model {
            name: "m".into(),
            version: 1,
            error: Arc::new(RuntimeError::NotOnnx { path: "/x/MLmodel".into(), flavors: vec!["sklearn".into()] }),
        };
        assert!(not_onnx.unservable() && not_onnx.model_failed());
        let public = not_onnx.public();
        assert!(
            public.contains("skl2onnx") && public.contains("mlflow.onnx.log_model") && !public.contains("/x"),
            "{public}"
        );
        let timeout = LoadError::Model {
            name: "m".into(),
            version: 1,
            error: Arc::new(RuntimeError::Timeout(Duration::from_secs(1))),
        };
        assert!(!timeout.unservable() && timeout.model_failed());
    }

    #[test]
    fn public_reasons_name_no_paths_or_urls() {
        let fetch = SourceError::Fetch(crate::artifact::FetchError::NotFound("/srv/data/artifacts/x".into()));
        let remote = SourceError::Registry(RegistryError::Unavailable("GET http://u:p@h/api: 503".into()));
        for e in [fetch, remote] {
            let r = source_public_reason(&e);
            assert!(!r.contains('/'), "{r}");
        }
        let missing = SourceError::Registry(RegistryError::model_not_found("iris"));
        assert_eq!(source_public_reason(&missing), "Registered Model with name=iris not found");
    }

    #[test]
    fn slot_stats_count_statuses_and_keep_recent_latencies() {
        let stats = SlotStats::default();
        assert_eq!(stats.snapshot().p50_ms, None);
        for ms in 1..=200u64 {
            stats.record(200, Duration::from_millis(ms));
        }
        stats.record(400, Duration::from_millis(1));
        stats.record(503, Duration::from_millis(1));
        let s = stats.snapshot();
        assert_eq!((s.total, s.client_errors, s.server_errors, s.recent), (202, 1, 1, RECENT));
        // The ring holds the last 128: 75..=200 and the two 1 ms errors.
        assert_eq!(s.max_ms, Some(200.0));
        assert_eq!(s.p50_ms, Some(136.0));
        assert!(s.last_request_ms.is_some());
    }
}
