//! Getting a remote registry's model version onto local disk, from wherever its download URI
//! points (as MLflow's artifact repositories read them):
//!
//! - a local path or `file://` URI: used in place, not copied
//! - `mlflow-artifacts:/<path>` (or `http(s)://…/mlflow-artifacts/artifacts/<path>`): listed
//!   with `GET /api/2.0/mlflow-artifacts/artifacts?path=<path>` (recursively) and fetched file
//!   by file with `GET /api/2.0/mlflow-artifacts/artifacts/<path>/<file>`, through the tracking
//!   server's artifact proxy
//! - any other `http(s)://` URL: one `.onnx` file (plain HTTP cannot list a folder)
//! - `s3://`, `gs://`, `wasbs://` / `abfss://`: listed and read straight from the bucket
//!   ([`super::store`]) with the credentials of this process's environment, as MLflow's client
//!   does when a server hands out bucket URIs (`--no-serve-artifacts`); files are fetched
//!   [`DOWNLOAD_CONCURRENCY`] at a time, each checked against the listed size and ETag
//! - `runs:/<run id>/<path>`: the run's `artifact_uri` (`runs/get`) joined with the path;
//!   `models:/m-<id>`: the logged model's artifact location (`logged-models/<id>`);
//!   `models:/<name>/<version>`: that version's download URI
//!
//! Anything else (hdfs, dbfs, ...) is [`FetchError::UnsupportedScheme`]. [`ProxyBucket`] reads
//! the embedded registry's `mlflow-artifacts:/` files from the bucket `regserve server` keeps
//! them in, the same way, for the CLI and `serve` on that registry.
//! Downloads land in the [`ArtifactCache`] (complete or not at all); every path a server names
//! is checked before it touches disk; credentials go to the registry's own origin (scheme, host
//! and port) only — an artifact proxy or file server on another host, wherever a version's URI
//! names it, is asked without them (see `HttpClient::request`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::cache::{relative_path, ArtifactCache, CacheEntry, CachedFile};
use super::store::{Bucket, BucketUri, ObjectInfo};
use super::{scheme_of, FetchError};
use crate::mlflow::http::{api_error, append_segments, error_chain, with_retries, RetryPolicy, Step};
use crate::mlflow::RestRegistry;
use crate::registry::RegistryError;
use crate::uri::ModelUri;

/// `runs:/` and `models:/` URIs followed before giving up (they can point at each other).
const MAX_HOPS: usize = 8;
/// Limits on a listed folder tree, so a misbehaving server cannot keep us listing forever.
const MAX_FILES: usize = 20_000;
const MAX_DEPTH: usize = 64;
/// How often a long download reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Files of one version downloaded at the same time from an object store.
pub const DOWNLOAD_CONCURRENCY: usize = 4;

/// Why a version's files could not be put on disk.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The location is unsupported, unsafe, missing, or the local disk failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The registry or artifact server refused, failed, or could not be reached
    /// ([`RegistryError::Unavailable`]).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Where a download URI points, one step at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Files on this machine.
    Local(PathBuf),
    /// `runs:/<run_id>/<path>`.
    Run { run_id: String, path: String },
    /// `models:/m-<id>` (an MLflow 3 logged model).
    LoggedModel(String),
    /// `models:/<name>/<version|stage|latest>` or `models:/<name>@<alias>`.
    Registered(ModelUri),
    /// An MLflow artifact proxy: `endpoint` is `<server>/api/2.0/mlflow-artifacts/artifacts`,
    /// `root` the path below it (checked: relative, no `..`).
    Proxy { endpoint: Url, root: String },
    /// One file over plain HTTP(S).
    HttpFile(Url),
    /// A folder or file in an object store (S3, GCS, Azure Blob).
    Bucket(BucketUri),
}

/// A server-given relative path, checked ([`relative_path`]) and normalized to `a/b` form.
pub(crate) fn clean_relative(rel: &str) -> Result<String, FetchError> {
    let path = relative_path(rel)?;
    Ok(path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Read where `uri` points; `registry` is the registry's base URL, which serves
/// `mlflow-artifacts:/` paths (unless the URI names another host).
pub fn classify(uri: &str, registry: &Url) -> Result<Location, FetchError> {
    let invalid = |why: &str| FetchError::NotFound(format!("invalid artifact URI '{uri}': {why}"));
    let Some((scheme, rest)) = scheme_of(uri) else {
        return Ok(Location::Local(PathBuf::from(uri)));
    };
    match scheme.as_str() {
        "file" => {
            let path = match rest.strip_prefix("//") {
                Some(with_host) => {
                    let (host, path) = match with_host.find('/') {
                        Some(i) => with_host.split_at(i),
                        None => (with_host, ""),
                    };
                    if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                        return Err(invalid(&format!(
                            "a file:// URI on another host ('{host}') cannot be read from here"
                        )));
                    }
                    path
                }
                None => rest,
            };
            Ok(Location::Local(PathBuf::from(decode(path))))
        }
        "runs" => {
            let rest = rest.trim_start_matches('/');
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            if run_id.is_empty() {
                return Err(invalid("no run id after 'runs:/'"));
            }
            Ok(Location::Run { run_id: run_id.to_string(), path: clean_relative(path.trim_end_matches('/'))? })
        }
        "models" => {
            if let Ok(m) = uri.parse::<ModelUri>() {
                return Ok(Location::Registered(m));
            }
            let id = rest.trim_start_matches('/').trim_end_matches('/');
            if id.is_empty() || id.contains('/') || id.contains('@') {
                return Err(invalid("expected models:/<model id>, models:/<name>/<version> or models:/<name>@<alias>"));
            }
            Ok(Location::LoggedModel(id.to_string()))
        }
        "mlflow-artifacts" => {
            let (netloc, path) = match rest.strip_prefix("//") {
                Some(r) => r.split_once('/').unwrap_or((r, "")),
                None => ("", rest),
            };
            let mut endpoint = registry.clone();
            if !netloc.is_empty() {
                // As MLflow: the named host, with the registry's scheme and path prefix.
                endpoint = Url::parse(&format!("{}://{netloc}{}", registry.scheme(), registry.path()))
                    .map_err(|e| invalid(&e.to_string()))?;
            }
            append_segments(&mut endpoint, ["api", "2.0", "mlflow-artifacts", "artifacts"]);
            Ok(Location::Proxy { endpoint, root: clean_relative(path.trim_matches('/'))? })
        }
        "http" | "https" => {
            let mut url = Url::parse(uri).map_err(|e| invalid(&e.to_string()))?;
            const MARK: &str = "/mlflow-artifacts/artifacts";
            let path = url.path().to_string();
            let at = path.match_indices(MARK).map(|(i, _)| i).find(|&i| {
                let end = i + MARK.len();
                end == path.len() || path[end..].starts_with('/')
            });
            match at {
                Some(i) => {
                    let end = i + MARK.len();
                    let root = decode(path[end..].trim_matches('/'));
                    url.set_path(&path[..end]);
                    url.set_query(None);
                    url.set_fragment(None);
                    Ok(Location::Proxy { endpoint: url, root: clean_relative(&root)? })
                }
                None => Ok(Location::HttpFile(url)),
            }
        }
        other => match BucketUri::parse(uri)? {
            Some(bucket) => Ok(Location::Bucket(bucket)),
            None => Err(FetchError::UnsupportedScheme { scheme: other.to_string(), uri: uri.to_string() }),
        },
    }
}

/// `<root>/<path>` for artifact URIs and paths.
fn join_uri(root: &str, path: &str) -> String {
    if path.is_empty() {
        root.to_string()
    } else {
        format!("{}/{}", root.trim_end_matches('/'), path)
    }
}

/// One entry of an artifact listing.
#[derive(Debug, Deserialize)]
struct ListedFile {
    path: String,
    #[serde(default)]
    is_dir: bool,
    #[serde(default, deserialize_with = "lenient_size")]
    file_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Listing {
    #[serde(default)]
    files: Vec<ListedFile>,
}

/// int64 as a JSON number or string (proto3 JSON), or null.
fn lenient_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    Ok(match Option::<Size>::deserialize(d)? {
        Some(Size::N(n)) => Some(n),
        Some(Size::S(s)) => s.parse().ok(),
        None => None,
    })
}

/// Told, as a version's files arrive, the bytes so far and the total when the listing gave
/// one: the CLI draws its progress bar with it (`serve` has the log line and `/metrics`).
#[derive(Clone)]
pub struct ProgressHook(Arc<dyn Fn(u64, Option<u64>) + Send + Sync>);

impl ProgressHook {
    pub fn new(f: impl Fn(u64, Option<u64>) + Send + Sync + 'static) -> ProgressHook {
        ProgressHook(Arc::new(f))
    }
}

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

/// Bytes downloaded so far for one version, reported every few seconds.
struct Progress {
    label: String,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
    last_report: Mutex<Instant>,
    hook: Option<ProgressHook>,
}

impl Progress {
    fn new(label: String, total: Option<u64>, hook: Option<ProgressHook>) -> Progress {
        let now = Instant::now();
        Progress { label, total, done: AtomicU64::new(0), started: now, last_report: Mutex::new(now), hook }
    }

    fn add(&self, n: u64) {
        crate::metrics::metrics().artifact_bytes.inc_by(n);
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(hook) = &self.hook {
            (hook.0)(done, self.total);
        }
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            match self.total {
                Some(total) if total > 0 => tracing::info!(
                    model = %self.label,
                    "downloading: {:.1} of {:.1} MiB ({:.0}%, {:.1} MiB/s)",
                    mib(done), mib(total), done as f64 * 100.0 / total as f64, mib(done) / secs
                ),
                _ => {
                    tracing::info!(model = %self.label, "downloading: {:.1} MiB so far ({:.1} MiB/s)", mib(done), mib(done) / secs)
                }
            }
        }
    }

    /// Forget bytes of an attempt that will be repeated.
    fn undo(&self, n: u64) {
        self.done.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Downloads a remote registry's versions into a local cache. One per cache root per process
/// (it serializes downloads of the same version).
#[derive(Debug)]
pub struct ArtifactFetcher {
    registry: RestRegistry,
    cache: ArtifactCache,
    registry_id: String,
    /// One lock per version folder, held for a lookup-or-download.
    locks: Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>,
    progress: Option<ProgressHook>,
}

impl ArtifactFetcher {
    pub fn new(registry: RestRegistry, cache: ArtifactCache) -> ArtifactFetcher {
        let registry_id = registry.base_url().as_str().to_string();
        ArtifactFetcher { registry, cache, registry_id, locks: Mutex::new(HashMap::new()), progress: None }
    }

    /// Tell `hook` how each download goes (the CLI's progress bar).
    pub fn with_progress(mut self, hook: ProgressHook) -> ArtifactFetcher {
        self.progress = Some(hook);
        self
    }

    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// The cache folder of one version of `name` (whether or not it is there yet).
    pub fn cache_dir(&self, name: &str, version: u64) -> PathBuf {
        self.cache.entry_dir(&self.registry_id, name, version)
    }

    /// The local path (folder or `.onnx` file) of version `version` of `name`, whose files the
    /// registry says are at `download_uri`: used in place when local, else from the cache,
    /// downloading them first if needed.
    pub async fn fetch(&self, name: &str, version: u64, download_uri: &str) -> Result<PathBuf, DownloadError> {
        let mut uri = download_uri.to_string();
        for _ in 0..MAX_HOPS {
            let location = classify(&uri, self.registry.base_url())?;
            let next = match location {
                Location::Local(path) => {
                    return if path.exists() {
                        Ok(path)
                    } else {
                        Err(FetchError::NotFound(format!(
                            "{} (download URI '{download_uri}') is not on this machine; a registry that keeps files on its own disk must serve them through its artifact proxy (mlflow server --serve-artifacts)",
                            path.display()
                        ))
                        .into())
                    };
                }
                Location::Run { run_id, path } => {
                    let root = self.registry.get_run_artifact_uri(&run_id).await?;
                    join_uri(&root, &path)
                }
                Location::LoggedModel(id) => self.registry.get_logged_model_artifact_uri(&id).await?,
                Location::Registered(model) => {
                    let v = self.registry.resolve(&model).await?;
                    self.registry.get_model_version_download_uri(&v.name, v.version).await?
                }
                remote @ (Location::Proxy { .. } | Location::HttpFile(_) | Location::Bucket(_)) => {
                    return self.fetch_cached(name, version, download_uri, &uri, remote).await;
                }
            };
            tracing::debug!(from = %uri, to = %next, "following the artifact location");
            uri = next;
        }
        Err(FetchError::NotFound(format!(
            "'{download_uri}': gave up after following {MAX_HOPS} runs:/ or models:/ locations"
        ))
        .into())
    }

    fn lock_for(&self, dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, weak| weak.strong_count() > 0);
        if let Some(lock) = locks.get(dir).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(dir.to_path_buf(), Arc::downgrade(&lock));
        lock
    }

    async fn fetch_cached(
        &self,
        name: &str,
        version: u64,
        download_uri: &str,
        resolved_uri: &str,
        location: Location,
    ) -> Result<PathBuf, DownloadError> {
        let dir = self.cache_dir(name, version);
        let lock = self.lock_for(&dir);
        let _guard = lock.lock().await;
        if let Some(path) = self.cache.lookup(&dir, download_uri) {
            tracing::info!(model = name, version, path = %path.display(), "using cached files");
            return Ok(path);
        }
        let partial = self.cache.begin(&dir)?;
        let label = format!("{name}/{version}");
        tracing::info!(model = %label, from = %resolved_uri, to = %dir.display(), "downloading");
        let files_dir = partial.files_dir();
        let (model_path, files, progress) = match location {
            Location::Proxy { endpoint, root } => {
                self.download_tree(&endpoint, &root, resolved_uri, &files_dir, label).await?
            }
            Location::HttpFile(url) => self.download_single(url, &files_dir, label).await?,
            Location::Bucket(bucket) => self.download_bucket(&bucket, &files_dir, label).await?,
            _ => {
                return Err(
                    FetchError::NotFound(format!("'{resolved_uri}' is not a remote location; this is a bug")).into()
                )
            }
        };
        let entry = CacheEntry {
            download_uri: download_uri.to_string(),
            model_path,
            files,
            completed_at_ms: crate::registry::store::now_ms(),
        };
        let path = partial.commit(&entry)?;
        tracing::info!(
            model = name,
            version,
            files = entry.files.len(),
            bytes = entry.bytes(),
            seconds = progress.started.elapsed().as_secs_f64(),
            path = %path.display(),
            "downloaded"
        );
        Ok(path)
    }

    /// List one folder of an artifact proxy.
    async fn list(&self, endpoint: &Url, path: &str) -> Result<Vec<ListedFile>, DownloadError> {
        let http = self.registry.http();
        let mut url = endpoint.clone();
        url.query_pairs_mut().append_pair("path", path);
        let what = format!("GET {url}");
        let timeout = http.timeout();
        let resp = http.send(&what, || http.request(Method::GET, url.clone()).timeout(timeout)).await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            RegistryError::Unavailable(format!("{what}: reading the answer failed: {}", error_chain(&e)))
        })?;
        if !status.is_success() {
            return Err(api_error(status, &body, &what).into());
        }
        let listing: Listing = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Unavailable(format!(
                "{what}: not an artifact listing ({e}): {}",
                crate::mlflow::http::snippet(&body)
            ))
        })?;
        Ok(listing.files)
    }

    /// Everything under `root` of an artifact proxy into `dest`; a root that lists nothing is
    /// taken as one file, as MLflow's client does.
    async fn download_tree(
        &self,
        endpoint: &Url,
        root: &str,
        uri: &str,
        dest: &Path,
        label: String,
    ) -> Result<(String, Vec<CachedFile>, Progress), DownloadError> {
        let top = self.list(endpoint, root).await?;
        if top.is_empty() {
            let file_name = root.rsplit('/').next().unwrap_or_default();
            if file_name.is_empty() {
                return Err(FetchError::NotFound(format!("no files at '{uri}'")).into());
            }
            let progress = Progress::new(label, None, self.progress.clone());
            let url = file_url(endpoint, root, "");
            let size = self.download_file(&url, &dest.join(file_name), None, &progress).await.map_err(|e| match e {
                DownloadError::Fetch(FetchError::NotFound(_)) | DownloadError::Registry(RegistryError::NotFound(_)) => {
                    FetchError::NotFound(format!("no files at '{uri}'")).into()
                }
                e => e,
            })?;
            let file = CachedFile { path: file_name.to_string(), size };
            return Ok((file_name.to_string(), vec![file], progress));
        }

        // Walk the tree breadth-first; MLflow's listings name entries relative to the listed folder.
        let mut files: Vec<(String, Option<u64>)> = Vec::new();
        let mut folders: VecDeque<(String, Vec<ListedFile>)> = VecDeque::from([(String::new(), top)]);
        while let Some((folder, entries)) = folders.pop_front() {
            for entry in entries {
                let name = clean_relative(&entry.path)?;
                if name.is_empty() {
                    return Err(FetchError::PathEscapes(entry.path).into());
                }
                let rel = if folder.is_empty() { name } else { format!("{folder}/{name}") };
                if entry.is_dir {
                    if rel.split('/').count() > MAX_DEPTH {
                        return Err(FetchError::NotFound(format!(
                            "'{uri}' is nested more than {MAX_DEPTH} folders deep"
                        ))
                        .into());
                    }
                    let listed = self.list(endpoint, &join_uri(root, &rel)).await?;
                    folders.push_back((rel, listed));
                } else {
                    files.push((rel, entry.file_size));
                }
                if files.len() + folders.len() > MAX_FILES {
                    return Err(FetchError::NotFound(format!("'{uri}' holds more than {MAX_FILES} files")).into());
                }
            }
        }
        let total = files.iter().map(|(_, s)| *s).sum::<Option<u64>>();
        let progress = Progress::new(label, total, self.progress.clone());
        let mut cached = Vec::with_capacity(files.len());
        for (rel, size) in files {
            let target = dest.join(relative_path(&rel)?);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|source| FetchError::Io { path: parent.display().to_string(), source })?;
            }
            let url = file_url(endpoint, root, &rel);
            let size = self.download_file(&url, &target, size, &progress).await?;
            cached.push(CachedFile { path: rel, size });
        }
        Ok((String::new(), cached, progress))
    }

    /// Everything under an object-store prefix into `dest` ([`download_bucket`]).
    async fn download_bucket(
        &self,
        uri: &BucketUri,
        dest: &Path,
        label: String,
    ) -> Result<(String, Vec<CachedFile>, Progress), DownloadError> {
        let http = self.registry.http();
        let bucket = Bucket::open(uri, &|k: &str| std::env::var(k).ok(), http.timeout())?;
        download_bucket(&bucket, uri, dest, label, http.retry_policy(), self.progress.clone()).await
    }

    /// One `.onnx` file over plain HTTP(S).
    async fn download_single(
        &self,
        url: Url,
        dest: &Path,
        label: String,
    ) -> Result<(String, Vec<CachedFile>, Progress), DownloadError> {
        let file_name = url.path_segments().and_then(|mut s| s.next_back()).map(decode).unwrap_or_default();
        if !file_name.to_ascii_lowercase().ends_with(".onnx") || file_name.contains('/') {
            return Err(FetchError::NotFound(format!(
                "'{url}' does not name a .onnx file: over plain http(s) only a single .onnx file can be fetched, since a folder cannot be listed (serve model folders through an MLflow artifact proxy, mlflow-artifacts:/)"
            ))
            .into());
        }
        let file_name = clean_relative(&file_name)?;
        let progress = Progress::new(label, None, self.progress.clone());
        let size = self.download_file(&url, &dest.join(&file_name), None, &progress).await?;
        let file = CachedFile { path: file_name.clone(), size };
        Ok((file_name, vec![file], progress))
    }

    /// GET `url` into `target` (created or truncated), retrying transient failures, including
    /// a connection lost mid-body, and checking the size against the listing or
    /// `Content-Length`. Returns the bytes written.
    async fn download_file(
        &self,
        url: &Url,
        target: &Path,
        expected: Option<u64>,
        progress: &Progress,
    ) -> Result<u64, DownloadError> {
        let http = self.registry.http();
        let what = format!("GET {url}");
        let io = |source: std::io::Error| -> DownloadError {
            FetchError::Io { path: target.display().to_string(), source }.into()
        };
        let (io, what_ref) = (&io, what.as_str());
        with_retries(http.retry_policy(), &what, || async move {
            let resp = match http.request(Method::GET, url.clone()).send().await {
                Ok(resp) => resp,
                Err(e) => return Step::Retry { reason: error_chain(&e), after: None },
            };
            let status = resp.status();
            if RetryPolicy::retries_status(status) {
                return Step::Retry { reason: format!("answered {status}"), after: None };
            }
            if status == StatusCode::NOT_FOUND {
                return Step::Fail(FetchError::NotFound(format!("{url} (404)")).into());
            }
            if !status.is_success() {
                let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                return Step::Fail(api_error(status, &body, what_ref).into());
            }
            let expected = expected.or(resp.content_length());
            let mut resp = resp;
            let mut file = match tokio::fs::File::create(target).await {
                Ok(f) => f,
                Err(e) => return Step::Fail(io(e)),
            };
            let mut written = 0u64;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = file.write_all(&chunk).await {
                            return Step::Fail(io(e));
                        }
                        written += chunk.len() as u64;
                        progress.add(chunk.len() as u64);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        progress.undo(written);
                        return Step::Retry {
                            reason: format!("the download broke off after {written} bytes: {}", error_chain(&e)),
                            after: None,
                        };
                    }
                }
            }
            if let Some(expected) = expected.filter(|e| *e != written) {
                progress.undo(written);
                return Step::Retry { reason: format!("got {written} bytes, expected {expected}"), after: None };
            }
            if let Err(e) = file.sync_all().await {
                return Step::Fail(io(e));
            }
            Step::Done(written)
        })
        .await
    }
}

/// The bucket where `regserve server --artifacts-destination` keeps the embedded registry's
/// `mlflow-artifacts:/` files, as the other processes on that registry read it (the CLI's
/// `predict`, `serve`): a version's files are downloaded into a cache, as a remote registry's
/// are ([`download_bucket`]: concurrent, checked, complete or not at all). Credentials come from
/// this process's environment, as for the server.
#[derive(Debug)]
pub struct ProxyBucket {
    bucket: Bucket,
    cache: ArtifactCache,
    registry_id: String,
    policy: RetryPolicy,
    /// Held for a lookup-or-download: the cache removes this process's other partial folders
    /// of a version when one starts.
    lock: tokio::sync::Mutex<()>,
    progress: Option<ProgressHook>,
    /// Who named this bucket, for messages (the flag, or the registry's record).
    origin: &'static str,
}

impl ProxyBucket {
    /// The bucket of `uri` (the destination, prefix included), downloads cached in `cache`.
    /// `timeout` bounds each answer of the store, `policy` its retries.
    pub fn open(
        uri: &BucketUri,
        cache: ArtifactCache,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<ProxyBucket, FetchError> {
        let bucket = Bucket::open(uri, &|k: &str| std::env::var(k).ok(), timeout)?;
        // The cache folder is named after the destination: two destinations never share files.
        let registry_id = format!("proxy-{}", uri.uri_of(&uri.prefix));
        let lock = tokio::sync::Mutex::new(());
        Ok(ProxyBucket { bucket, cache, registry_id, policy, lock, progress: None, origin: "" })
    }

    /// Say in messages who named this bucket (e.g. the flag, or the registry's record).
    pub fn with_origin(mut self, origin: &'static str) -> ProxyBucket {
        self.origin = origin;
        self
    }

    pub fn origin(&self) -> &'static str {
        self.origin
    }

    /// Tell `hook` how each download goes (the CLI's progress bar).
    pub fn with_progress(mut self, hook: ProgressHook) -> ProxyBucket {
        self.progress = Some(hook);
        self
    }

    /// The destination: `s3://bucket/prefix`, ….
    pub fn uri(&self) -> String {
        let uri = self.bucket.uri();
        uri.uri_of(&uri.prefix)
    }

    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// The cache folder of one version of `name`.
    pub fn cache_dir(&self, name: &str, version: u64) -> PathBuf {
        self.cache.entry_dir(&self.registry_id, name, version)
    }

    /// Whether the files at `location` are in the bucket: `mlflow-artifacts:/` locations are,
    /// except under `registry/` — the copies `regserve models register` makes in the local root,
    /// where the proxy never writes.
    pub fn holds(location: &str) -> bool {
        super::proxy_relative(location).is_some_and(|rel| {
            let first = rel.trim_start_matches('/').split('/').next().unwrap_or_default();
            first != super::REGISTERED_PREFIX
        })
    }

    /// The local path (folder or file) of version `version` of `name`, whose files are at
    /// `location` (`mlflow-artifacts:/<path>`, see [`ProxyBucket::holds`]): from the cache,
    /// downloading them first if needed.
    pub async fn fetch(&self, name: &str, version: u64, location: &str) -> Result<PathBuf, DownloadError> {
        let rel = super::proxy_relative(location)
            .ok_or_else(|| FetchError::NotFound(format!("'{location}' is not an mlflow-artifacts:/ location")))?;
        let key = super::Destination::key_of(&self.bucket, &rel)?;
        let uri = BucketUri { prefix: key, ..self.bucket.uri().clone() };
        let dir = self.cache_dir(name, version);
        let _guard = self.lock.lock().await;
        if let Some(path) = self.cache.lookup(&dir, location) {
            tracing::debug!(model = name, version, path = %path.display(), "using cached files");
            return Ok(path);
        }
        let partial = self.cache.begin(&dir)?;
        let label = format!("{name}/{version}");
        tracing::info!(model = %label, from = %uri.uri_of(&uri.prefix), to = %dir.display(), "downloading");
        let (model_path, files, progress) =
            download_bucket(&self.bucket, &uri, &partial.files_dir(), label, &self.policy, self.progress.clone())
                .await?;
        let entry = CacheEntry {
            download_uri: location.to_string(),
            model_path,
            files,
            completed_at_ms: crate::registry::store::now_ms(),
        };
        let path = partial.commit(&entry)?;
        tracing::info!(
            model = name,
            version,
            bytes = entry.bytes(),
            seconds = progress.started.elapsed().as_secs_f64(),
            "downloaded"
        );
        Ok(path)
    }
}

/// Everything under an object-store prefix into `dest`, [`DOWNLOAD_CONCURRENCY`] files at
/// a time; a prefix that lists nothing is taken as one object (as MLflow's client does).
async fn download_bucket(
    bucket: &Bucket,
    uri: &BucketUri,
    dest: &Path,
    label: String,
    policy: &RetryPolicy,
    hook: Option<ProgressHook>,
) -> Result<(String, Vec<CachedFile>, Progress), DownloadError> {
    let mut objects = retrying(policy, || bucket.list(&uri.prefix, MAX_FILES)).await?;
    let mut model_path = String::new();
    if objects.is_empty() {
        let name = uri.prefix.rsplit('/').next().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(FetchError::NotFound(format!("no files at '{}'", uri.uri_of(&uri.prefix))).into());
        }
        let mut object = retrying(policy, || bucket.head(&uri.prefix)).await.map_err(|e| match e {
            FetchError::Store { kind: super::store::StoreErrorKind::NotFound, .. } => {
                FetchError::NotFound(format!("no files at '{}'", uri.uri_of(&uri.prefix)))
            }
            e => e,
        })?;
        object.rel = name.clone();
        model_path = name;
        objects.push(object);
    }
    let mut files = Vec::with_capacity(objects.len());
    for object in &objects {
        let rel = clean_relative(&object.rel)?;
        if rel.is_empty() {
            return Err(FetchError::PathEscapes(object.rel.clone()).into());
        }
        let target = dest.join(relative_path(&rel)?);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| FetchError::Io { path: parent.display().to_string(), source })?;
        }
        files.push((rel, target, object.clone()));
    }
    let progress = Progress::new(label, Some(objects.iter().map(|o| o.size).sum()), hook);
    let (bucket, progress_ref) = (&bucket, &progress);
    let results: Vec<Result<CachedFile, FetchError>> =
        futures_util::stream::iter(files.into_iter().map(|(rel, target, object)| async move {
            let size = download_object(bucket, &object, &target, policy, progress_ref).await?;
            Ok(CachedFile { path: rel, size })
        }))
        .buffer_unordered(DOWNLOAD_CONCURRENCY)
        .collect()
        .await;
    let mut cached = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    cached.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((model_path, cached, progress))
}

/// Run an object-store operation, retrying transient failures with `policy`'s backoff.
async fn retrying<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, FetchError>>,
{
    let mut retry = 0u32;
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && retry < policy.max_retries => {
                let wait = policy.delay(retry, None);
                tracing::warn!(error = %e, retry = retry + 1, of = policy.max_retries, wait_s = wait.as_secs_f64(), "object store: retrying");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            other => return other,
        }
    }
}

/// One object into `target`, retried; an ETag that is not the MD5 of the bytes fails the
/// attempt, unless two complete downloads gave the same bytes (an SSE-KMS or SSE-C object,
/// whose ETag is not its MD5: corruption in transit does not repeat itself).
async fn download_object(
    bucket: &Bucket,
    object: &ObjectInfo,
    target: &Path,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<u64, FetchError> {
    let mut last_mismatch: Option<[u8; 16]> = None;
    let last = &mut last_mismatch;
    let mut retry = 0u32;
    loop {
        let counted = AtomicU64::new(0);
        let on_bytes = |n: u64| {
            counted.fetch_add(n, Ordering::Relaxed);
            progress.add(n);
        };
        let outcome = bucket.download(object, target, &on_bytes).await;
        let error = match outcome {
            Ok(done) => match done.md5_mismatch {
                None => return Ok(done.bytes),
                Some(digest) if *last == Some(digest) => {
                    tracing::debug!(object = %bucket.uri().uri_of(&object.key), "the ETag is not the MD5 of the object (SSE-KMS?); the same bytes came twice, so they are taken");
                    return Ok(done.bytes);
                }
                Some(digest) => {
                    *last = Some(digest);
                    FetchError::Store {
                        kind: super::store::StoreErrorKind::Mismatch,
                        message: format!(
                            "{}: the bytes do not match the ETag {}",
                            bucket.uri().uri_of(&object.key),
                            object.e_tag.as_deref().unwrap_or_default()
                        ),
                        public: format!("a download from {} did not match its checksum", bucket.uri().root()),
                    }
                }
            },
            Err(e) => e,
        };
        progress.undo(counted.load(Ordering::Relaxed));
        if !error.is_transient() || retry >= policy.max_retries.max(1) {
            return Err(error);
        }
        let wait = policy.delay(retry, None);
        tracing::warn!(error = %error, retry = retry + 1, wait_s = wait.as_secs_f64(), "object store download: retrying");
        tokio::time::sleep(wait).await;
        retry += 1;
    }
}

/// `<endpoint>/<root>/<rel>`, each segment percent-encoded.
fn file_url(endpoint: &Url, root: &str, rel: &str) -> Url {
    let mut url = endpoint.clone();
    append_segments(&mut url, root.split('/').chain(rel.split('/')).filter(|s| !s.is_empty()));
    url
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_progress_hook_sees_every_byte_against_the_listed_total() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = {
            let seen = seen.clone();
            ProgressHook::new(move |done, total| seen.lock().unwrap().push((done, total)))
        };
        let progress = Progress::new("m/1".into(), Some(15), Some(hook));
        progress.add(10);
        progress.add(5);
        assert_eq!(*seen.lock().unwrap(), vec![(10, Some(15)), (15, Some(15))]);
        // Without a hook (serve), only the log line and the counter.
        Progress::new("m/1".into(), None, None).add(3);
    }

    use super::*;
    use crate::uri::Selector;

    fn registry() -> Url {
        Url::parse("http://reg.example:5000/prefix").unwrap()
    }

    fn c(uri: &str) -> Result<Location, FetchError> {
        classify(uri, &registry())
    }

    #[test]
    fn local_paths_and_file_uris_are_used_in_place() {
        assert_eq!(c("/srv/m").unwrap(), Location::Local("/srv/m".into()));
        assert_eq!(c("rel/m").unwrap(), Location::Local("rel/m".into()));
        assert_eq!(c("file:///srv/a%20b").unwrap(), Location::Local("/srv/a b".into()));
        assert_eq!(c("file://localhost/srv/m").unwrap(), Location::Local("/srv/m".into()));
        assert_eq!(c("file:/srv/m").unwrap(), Location::Local("/srv/m".into()));
        assert!(c("file://elsewhere/srv/m").is_err());
    }

    #[test]
    fn artifact_proxy_uris() {
        assert_eq!(
            c("mlflow-artifacts:/1/models/m-abc/artifacts").unwrap(),
            Location::Proxy {
                endpoint: Url::parse("http://reg.example:5000/prefix/api/2.0/mlflow-artifacts/artifacts").unwrap(),
                root: "1/models/m-abc/artifacts".into()
            }
        );
        // Another host keeps the registry's scheme and prefix, as MLflow's client does.
        assert_eq!(
            c("mlflow-artifacts://files.example:8080/1/x").unwrap(),
            Location::Proxy {
                endpoint: Url::parse("http://files.example:8080/prefix/api/2.0/mlflow-artifacts/artifacts").unwrap(),
                root: "1/x".into()
            }
        );
        assert_eq!(
            c("https://h.example/api/2.0/mlflow-artifacts/artifacts/1/a%20b/").unwrap(),
            Location::Proxy {
                endpoint: Url::parse("https://h.example/api/2.0/mlflow-artifacts/artifacts").unwrap(),
                root: "1/a b".into()
            }
        );
        assert_eq!(
            c("https://h.example/files/model.onnx").unwrap(),
            Location::HttpFile(Url::parse("https://h.example/files/model.onnx").unwrap())
        );
        assert!(matches!(c("mlflow-artifacts:/1/../../etc"), Err(FetchError::PathEscapes(_))));
        // URL parsing already folds dot segments, so an http(s) URL stays below the proxy.
        assert!(matches!(
            c("https://h.example/api/2.0/mlflow-artifacts/artifacts/1/%2e%2e/x"),
            Ok(Location::Proxy { root, .. }) if root == "x"
        ));
    }

    #[test]
    fn runs_and_models_uris() {
        assert_eq!(c("runs:/9a3a/model").unwrap(), Location::Run { run_id: "9a3a".into(), path: "model".into() });
        assert_eq!(c("runs:/9a3a").unwrap(), Location::Run { run_id: "9a3a".into(), path: String::new() });
        assert!(matches!(c("runs:/9a3a/../x"), Err(FetchError::PathEscapes(_))));
        assert!(c("runs:/").is_err());
        assert_eq!(c("models:/m-21d865").unwrap(), Location::LoggedModel("m-21d865".into()));
        assert_eq!(c("models:/iris/2").unwrap(), Location::Registered(ModelUri::new("iris", Selector::Version(2))));
        assert!(c("models:/").is_err());
    }

    #[test]
    fn object_store_uris() {
        for (uri, bucket, prefix) in [
            ("s3://bucket/1/m", "bucket", "1/m"),
            ("gs://bucket/m/", "bucket", "m"),
            ("abfss://c@a.dfs.core.windows.net/m", "c", "m"),
            ("wasbs://c@a.blob.core.windows.net/m", "c", "m"),
        ] {
            match c(uri) {
                Ok(Location::Bucket(b)) => {
                    assert_eq!((b.bucket.as_str(), b.prefix.as_str()), (bucket, prefix), "{uri}")
                }
                other => panic!("{uri}: {other:?}"),
            }
        }
        assert!(matches!(c("s3://bucket/a/../../x"), Err(FetchError::PathEscapes(_))));
    }

    #[test]
    fn other_schemes_are_named_in_the_error() {
        for (uri, scheme) in [("hdfs://nn/m", "hdfs"), ("dbfs:/databricks/m", "dbfs")] {
            match c(uri) {
                Err(FetchError::UnsupportedScheme { scheme: s, uri: u }) => {
                    assert_eq!((s.as_str(), u.as_str()), (scheme, uri));
                }
                other => panic!("{uri}: {other:?}"),
            }
        }
    }

    #[test]
    fn joins_and_file_urls() {
        assert_eq!(join_uri("mlflow-artifacts:/1/r/artifacts/", "model"), "mlflow-artifacts:/1/r/artifacts/model");
        assert_eq!(join_uri("/a", ""), "/a");
        let endpoint = Url::parse("http://h/api/2.0/mlflow-artifacts/artifacts").unwrap();
        assert_eq!(
            file_url(&endpoint, "1/m", "sub/a b.json").as_str(),
            "http://h/api/2.0/mlflow-artifacts/artifacts/1/m/sub/a%20b.json"
        );
        assert_eq!(clean_relative("./a//b/").unwrap(), "a/b");
        let listing: Listing = serde_json::from_str(
            r#"{"files":[{"path":"MLmodel","is_dir":false,"file_size":1321},{"path":"d","is_dir":true},{"path":"x","file_size":"12"}]}"#,
        )
        .unwrap();
        let sizes: Vec<Option<u64>> = listing.files.iter().map(|f| f.file_size).collect();
        assert_eq!(sizes, [Some(1321), None, Some(12)]);
        assert!(serde_json::from_str::<Listing>("{}").unwrap().files.is_empty());
    }
}
