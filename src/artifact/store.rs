//! Object storage — `s3://`, `gs://`, `wasbs://` / `abfss://` — through the `object_store`
//! crate: an artifact URI plus the environment become a [`Bucket`] handle that lists, heads and
//! streams objects to disk (and, for the write side, can put).
//!
//! Credentials and endpoints are read as MLflow and the cloud SDKs read them:
//!
//! - S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`
//!   / `AWS_REGION`, and every other `AWS_*` variable `object_store` knows (web identity:
//!   `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`; ECS container credentials; EC2 instance
//!   metadata when nothing else is set). `AWS_PROFILE` and the shared files
//!   (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, default `~/.aws/credentials` and
//!   `~/.aws/config`) are read here for static keys and the region only: `object_store` has no
//!   profile support, and SSO, `credential_process` and `role_arn`/`source_profile` profiles are
//!   refused with an error saying so. `MLFLOW_S3_ENDPOINT_URL` (else `AWS_ENDPOINT_URL`) names
//!   an S3-compatible server (path-style requests, plain http allowed);
//!   `MLFLOW_S3_IGNORE_TLS=true` accepts any certificate.
//! - GCS: `GOOGLE_APPLICATION_CREDENTIALS` (service account or authorized-user JSON), the
//!   `GOOGLE_*` variables of `object_store`, the gcloud default credentials file, else the
//!   metadata server; `STORAGE_EMULATOR_HOST` (the Google SDKs' emulator variable) sends
//!   unsigned requests to an emulator.
//! - Azure: `AZURE_STORAGE_CONNECTION_STRING` (account, key or SAS, and `BlobEndpoint`, e.g.
//!   Azurite's), `AZURE_STORAGE_ACCESS_KEY` / `AZURE_STORAGE_ACCOUNT_KEY` with the account from
//!   the URI, and the `AZURE_*` variables of `object_store` (service principal, workload
//!   identity, managed identity).
//!
//! No secret is ever part of a message: every error text goes through [`Bucket::redact`], which
//! blanks each secret value this handle was given (and SAS signatures), and the builders, which
//! hold the secrets, are never formatted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

use super::FetchError;

/// The cloud behind an object-store URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

/// Why an object-store operation failed; decides retries and what `/health` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The configuration or the credentials are unusable (fix the environment).
    Config,
    /// The store refused the credentials (401/403).
    Denied,
    /// No such bucket or object.
    NotFound,
    /// The store could not be reached or failed (5xx, timeouts, cut connections): retried.
    Unavailable,
    /// The bytes did not match the listing (size, ETag/MD5) or the object changed meanwhile.
    Mismatch,
}

/// An object-store URI split into its parts: `s3://bucket/prefix`, `gs://bucket/prefix`,
/// `wasbs://container@account.blob.core.windows.net/prefix` (also `abfss://`, `wasb://`,
/// `abfs://`, with `…dfs.core.windows.net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUri {
    pub cloud: Cloud,
    /// The scheme as written, in lower case.
    pub scheme: String,
    /// The bucket (S3, GCS) or container (Azure).
    pub bucket: String,
    /// Azure: the storage account and the host (`account.blob.core.windows.net`).
    pub account: Option<String>,
    pub host: Option<String>,
    /// The key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl BucketUri {
    /// `Ok(None)` when `uri` is not an object-store URI.
    pub fn parse(uri: &str) -> Result<Option<BucketUri>, FetchError> {
        let Some((scheme, rest)) = super::scheme_of(uri) else { return Ok(None) };
        let cloud = match scheme.as_str() {
            "s3" | "s3a" | "s3n" => Cloud::S3,
            "gs" => Cloud::Gcs,
            "wasbs" | "wasb" | "abfss" | "abfs" => Cloud::Azure,
            _ => return Ok(None),
        };
        let invalid = |why: &str| FetchError::NotFound(format!("invalid artifact URI '{uri}': {why}"));
        let rest = rest.strip_prefix("//").ok_or_else(|| invalid(&format!("expected {scheme}://<bucket>/<path>")))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let prefix = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let prefix = super::fetch::clean_relative(prefix.trim_matches('/'))?;
        let (bucket, account, host) = match cloud {
            Cloud::S3 | Cloud::Gcs => (authority.to_string(), None, None),
            Cloud::Azure => {
                // container@account.blob.core.windows.net (MLflow's AzureBlobArtifactRepository form)
                let (container, host) = authority
                    .split_once('@')
                    .ok_or_else(|| invalid("expected <scheme>://<container>@<account>.blob.core.windows.net/<path>"))?;
                let account = host.split('.').next().unwrap_or_default().to_string();
                if account.is_empty() {
                    return Err(invalid("no storage account after '@'"));
                }
                (container.to_string(), Some(account), Some(host.to_ascii_lowercase()))
            }
        };
        if bucket.is_empty() || bucket.contains(|c: char| c.is_whitespace() || c == ':' || c == '\\') {
            return Err(invalid("no valid bucket name"));
        }
        Ok(Some(BucketUri { cloud, scheme, bucket, account, host, prefix }))
    }

    /// The bucket itself, as messages name it: `s3://bucket`, `wasbs://c@a.blob.core.windows.net`.
    pub fn root(&self) -> String {
        match &self.host {
            Some(host) => format!("{}://{}@{host}", self.scheme, self.bucket),
            None => format!("{}://{}", self.scheme, self.bucket),
        }
    }

    /// The URI of `key` in this bucket.
    pub fn uri_of(&self, key: &str) -> String {
        format!("{}/{key}", self.root())
    }

    /// The variables to check when access is refused.
    fn credential_hint(&self) -> &'static str {
        match self.cloud {
            Cloud::S3 => "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE, and MLFLOW_S3_ENDPOINT_URL for an S3-compatible server",
            Cloud::Gcs => "check GOOGLE_APPLICATION_CREDENTIALS (a service account key file) and the bucket's IAM permissions",
            Cloud::Azure => "check AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCESS_KEY for the account in the URI",
        }
    }
}

/// One object below a listed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full key in the bucket.
    pub key: String,
    /// The key relative to the listed prefix (`a/b`).
    pub rel: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

/// An open bucket: the `object_store` client plus what is needed to report errors without
/// secrets. Cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    uri: BucketUri,
    store: Arc<dyn ObjectStore>,
    /// The same client's page-by-page listing (every cloud store has it; the in-memory store of
    /// the tests does not, and is listed in one go).
    lister: Option<Arc<dyn PaginatedListStore>>,
    /// Values that must never appear in a message.
    secrets: Arc<Vec<String>>,
    /// Longest wait for the store's first answer and between two chunks of a body.
    timeout: Duration,
    /// S3 only: no credentials were configured, so `object_store` asks the instance metadata
    /// service; said in errors, since off EC2 that is rarely what was meant.
    no_credentials: bool,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("uri", &self.uri.root()).finish_non_exhaustive()
    }
}

/// Environment lookup (the process environment, or a map in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Bucket {
    /// Open the bucket of `uri` with credentials and endpoints from `env`. `timeout` bounds
    /// the wait for an answer and between two chunks of a download (there is no limit on a whole
    /// download). Nothing is sent yet.
    pub fn open(uri: &BucketUri, env: Env<'_>, timeout: Duration) -> Result<Bucket, FetchError> {
        let mut secrets = Vec::new();
        let no_credentials = uri.cloud == Cloud::S3
            && [
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_SKIP_SIGNATURE",
            ]
            .iter()
            .all(|k| env(k).is_none_or(|v| v.is_empty()))
            && matches!(shared_profile(env, None), Ok(None));
        // No overall request timeout (a large object takes as long as it takes); the idle
        // timeout is ours, per chunk. Retries are ours too (see `fetch`), so one policy applies.
        let options =
            ClientOptions::new().with_timeout_disabled().with_connect_timeout(timeout.min(Duration::from_secs(30)));
        let retry = RetryConfig { max_retries: 0, retry_timeout: timeout, ..Default::default() };
        let built: Result<Opened, object_store::Error> = match uri.cloud {
            Cloud::S3 => open_s3(uri, env, options, retry, &mut secrets),
            Cloud::Gcs => open_gcs(uri, env, options, retry, &mut secrets),
            Cloud::Azure => open_azure(uri, env, options, retry, &mut secrets),
        };
        secrets.retain(|s| s.len() >= 4);
        let secrets = Arc::new(secrets);
        match built {
            Ok((store, lister)) => Ok(Bucket { uri: uri.clone(), store, lister, secrets, timeout, no_credentials }),
            Err(e) => {
                let redacted = redact(&e.to_string(), &secrets);
                Err(store_error(
                    StoreErrorKind::Config,
                    format!("cannot open {}: {redacted}; {}", uri.root(), uri.credential_hint()),
                    format!("cannot open {}: {}", uri.root(), uri.credential_hint()),
                ))
            }
        }
    }

    /// A bucket over `object_store`'s in-memory store (tests).
    #[cfg(test)]
    pub(crate) fn in_memory(uri: &str) -> Bucket {
        let uri = BucketUri::parse(uri).expect("a valid test URI").expect("a bucket URI");
        let store = Arc::new(object_store::memory::InMemory::new());
        let (secrets, timeout) = (Arc::new(vec![]), Duration::from_secs(5));
        Bucket { uri, store, lister: None, secrets, timeout, no_credentials: false }
    }

    pub fn uri(&self) -> &BucketUri {
        &self.uri
    }

    /// `text` with every secret of this handle blanked.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    /// Every object under `prefix` (recursively), at most `max` of them.
    pub async fn list(&self, prefix: &str, max: usize) -> Result<Vec<ObjectInfo>, FetchError> {
        let base = prefix.trim_matches('/');
        let path = if base.is_empty() { None } else { Some(ObjectPath::from(base)) };
        let what = format!("listing {}", self.uri.uri_of(base));
        let mut stream = self.store.list(path.as_ref());
        let mut out = Vec::new();
        loop {
            let next = match tokio::time::timeout(self.timeout, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Err(self.timed_out(&what)),
            };
            let Some(item) = next else { break };
            let meta = item.map_err(|e| self.error(&what, e))?;
            let key = meta.location.to_string();
            let rel = if base.is_empty() { key.clone() } else { key[base.len()..].trim_start_matches('/').to_string() };
            // Folder markers some tools write (`dir/`) hold nothing.
            if rel.is_empty() || key.ends_with('/') {
                continue;
            }
            out.push(ObjectInfo { key, rel, size: meta.size, e_tag: meta.e_tag });
            if out.len() > max {
                return Err(FetchError::NotFound(format!("'{}' holds more than {max} files", self.uri.uri_of(base))));
            }
        }
        Ok(out)
    }

    /// The size and ETag of one object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, FetchError> {
        let what = format!("reading {}", self.uri.uri_of(key));
        let meta = match tokio::time::timeout(self.timeout, self.store.head(&ObjectPath::from(key))).await {
            Ok(r) => r.map_err(|e| self.error(&what, e))?,
            Err(_) => return Err(self.timed_out(&what)),
        };
        let rel = key.rsplit('/').next().unwrap_or(key).to_string();
        Ok(ObjectInfo { key: key.to_string(), rel, size: meta.size, e_tag: meta.e_tag })
    }

    /// Stream `object` into `target` (created or truncated), chunk by chunk (never the whole
    /// object in memory), calling `on_bytes` for each chunk. The GET asks for the listed ETag
    /// (`If-Match`), so an object replaced since the listing is a [`StoreErrorKind::Mismatch`];
    /// the size must be the listed one, and where the ETag is a plain MD5 (S3 and GCS single-part
    /// uploads) the bytes are checked against it — returned as `Some(digest)` when they differ,
    /// for the caller to decide (an SSE-KMS object's ETag is not its MD5). One attempt.
    pub async fn download(
        &self,
        object: &ObjectInfo,
        target: &Path,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Download, FetchError> {
        let what = format!("downloading {}", self.uri.uri_of(&object.key));
        let options = GetOptions { if_match: object.e_tag.clone(), ..Default::default() };
        let location = ObjectPath::from(object.key.as_str());
        let get = self.store.get_opts(&location, options);
        let result = match tokio::time::timeout(self.timeout, get).await {
            Ok(r) => r.map_err(|e| self.error(&what, e))?,
            Err(_) => return Err(self.timed_out(&what)),
        };
        let io = |source: std::io::Error| FetchError::Io { path: target.display().to_string(), source };
        let mut file = tokio::fs::File::create(target).await.map_err(io)?;
        let md5_expected = object.e_tag.as_deref().and_then(plain_md5).filter(|_| self.uri.cloud != Cloud::Azure);
        let mut md5 = md5_expected.map(|_| <md5::Md5 as md5::Digest>::new());
        let mut stream = result.into_stream();
        let mut written = 0u64;
        loop {
            let chunk = match tokio::time::timeout(self.timeout, stream.next()).await {
                Ok(Some(chunk)) => chunk.map_err(|e| {
                    let mut err = self.error(&what, e);
                    if let FetchError::Store { message, .. } = &mut err {
                        message.push_str(&format!(" (the download broke off after {written} bytes)"));
                    }
                    err
                })?,
                Ok(None) => break,
                Err(_) => return Err(self.timed_out(&format!("{what} (after {written} bytes)"))),
            };
            file.write_all(&chunk).await.map_err(io)?;
            if let Some(h) = md5.as_mut() {
                md5::Digest::update(h, &chunk);
            }
            written += chunk.len() as u64;
            on_bytes(chunk.len() as u64);
        }
        if written != object.size {
            return Err(store_error(
                StoreErrorKind::Mismatch,
                format!("{what}: got {written} bytes, the listing says {}", object.size),
                format!("a download from {} was incomplete", self.uri.root()),
            ));
        }
        file.sync_all().await.map_err(io)?;
        let md5_mismatch = match (md5, md5_expected) {
            (Some(h), Some(expected)) => {
                let digest: [u8; 16] = md5::Digest::finalize(h).into();
                (digest != expected).then_some(digest)
            }
            _ => None,
        };
        Ok(Download { bytes: written, md5_mismatch })
    }

    /// Store `bytes` at `key` (for the write side).
    pub async fn put(&self, key: &str, bytes: bytes::Bytes) -> Result<(), FetchError> {
        let what = format!("writing {}", self.uri.uri_of(key));
        self.store.put(&ObjectPath::from(key), bytes.into()).await.map(|_| ()).map_err(|e| self.error(&what, e))
    }

    /// Stream the file at `source` to `key` (multipart uploads past a few MiB, never the whole
    /// file in memory); returns the bytes sent. The object appears only when complete.
    pub async fn put_file(&self, key: &str, source: &Path) -> Result<u64, FetchError> {
        let what = format!("writing {}", self.uri.uri_of(key));
        let io = |e: std::io::Error| FetchError::Io { path: source.display().to_string(), source: e };
        let mut file = tokio::fs::File::open(source).await.map_err(io)?;
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), ObjectPath::from(key));
        let sent = match tokio::io::copy(&mut file, &mut writer).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(self.io_error(&what, e));
            }
        };
        writer.shutdown().await.map_err(|e| self.io_error(&what, e))?;
        Ok(sent)
    }

    /// One folder of the bucket, not recursive: the entries (files and sub-folders) directly
    /// under `prefix`, at most `max` of them (more is an error). The listing is read page by
    /// page and stops at the page that passes `max`, so a huge folder costs one page past the
    /// cap, not the whole listing.
    pub async fn list_dir(&self, prefix: &str, max: usize) -> Result<Vec<DirEntry>, FetchError> {
        let base = prefix.trim_matches('/');
        let what = format!("listing {}", self.uri.uri_of(base));
        let what = what.as_str();
        let page = |token: Option<String>| async move {
            let listed = match &self.lister {
                Some(lister) => {
                    // Unlike `list`, the paginated listing adds no trailing `/` to the prefix.
                    let folder = if base.is_empty() { None } else { Some(format!("{base}/")) };
                    let options = PaginatedListOptions {
                        delimiter: Some("/".into()),
                        max_keys: Some(max.saturating_add(1).min(LIST_PAGE)),
                        page_token: token,
                        ..Default::default()
                    };
                    tokio::time::timeout(self.timeout, lister.list_paginated(folder.as_deref(), options)).await
                }
                None => {
                    let path = if base.is_empty() { None } else { Some(ObjectPath::from(base)) };
                    let listed = self.store.list_with_delimiter(path.as_ref());
                    tokio::time::timeout(self.timeout, listed)
                        .await
                        .map(|r| r.map(|result| PaginatedListResult { result, page_token: None }))
                }
            };
            match listed {
                Ok(r) => r.map_err(|e| self.error(what, e)),
                Err(_) => Err(self.timed_out(what)),
            }
        };
        collect_dir(page, max, MAX_LIST_PAGES)
            .await?
            .ok_or_else(|| FetchError::NotFound(format!("'{}' holds more than {max} entries", self.uri.uri_of(base))))
    }

    /// Whether anything is stored below `prefix/` (a "folder").
    pub async fn has_children(&self, prefix: &str) -> Result<bool, FetchError> {
        let what = format!("listing {}", self.uri.uri_of(prefix));
        let path = ObjectPath::from(prefix.trim_matches('/'));
        let mut stream = self.store.list(Some(&path));
        match tokio::time::timeout(self.timeout, stream.next()).await {
            Ok(Some(item)) => item.map(|_| true).map_err(|e| self.error(&what, e)),
            Ok(None) => Ok(false),
            Err(_) => Err(self.timed_out(&what)),
        }
    }

    /// Open `key` for reading: its size and its bytes as a stream of chunks (never the whole
    /// object in memory). `Ok(None)` when there is no such object.
    pub async fn get_stream(&self, key: &str) -> Result<Option<(u64, ByteStream)>, FetchError> {
        let what = format!("reading {}", self.uri.uri_of(key));
        let got = match tokio::time::timeout(self.timeout, self.store.get(&ObjectPath::from(key))).await {
            Ok(Err(object_store::Error::NotFound { .. })) => return Ok(None),
            Ok(r) => r.map_err(|e| self.error(&what, e))?,
            Err(_) => return Err(self.timed_out(&what)),
        };
        let size = got.meta.size;
        // Each chunk within the timeout, as downloads (a stalled store ends the body with an
        // error instead of holding the connection forever).
        let state = (got.into_stream(), self.clone(), what);
        let stream = futures_util::stream::unfold(Some(state), |state| async move {
            let (mut inner, bucket, what) = state?;
            match tokio::time::timeout(bucket.timeout, inner.next()).await {
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((inner, bucket, what)))),
                Ok(Some(Err(e))) => Some((Err(std::io::Error::other(bucket.error(&what, e).to_string())), None)),
                Err(_) => Some((Err(std::io::Error::other(bucket.timed_out(&what).to_string())), None)),
            }
        });
        Ok(Some((size, Box::pin(stream))))
    }

    /// Start a streamed upload to `key`: [`Upload::write`] the chunks, then [`Upload::finish`]
    /// (the object appears only then) or [`Upload::abort`]. Past a few MiB it is a multipart
    /// upload, so memory stays bounded whatever the object's size: [`UPLOAD_PART`] bytes
    /// buffered, and at most [`UPLOAD_PARTS_IN_FLIGHT`] parts being sent.
    pub fn upload(&self, key: &str) -> Upload {
        let writer =
            object_store::buffered::BufWriter::with_capacity(self.store.clone(), ObjectPath::from(key), UPLOAD_PART)
                .with_max_concurrency(UPLOAD_PARTS_IN_FLIGHT);
        Upload { bucket: self.clone(), what: format!("writing {}", self.uri.uri_of(key)), writer }
    }

    /// An I/O error of a buffered upload (an `object_store` error inside, or the local file).
    fn io_error(&self, what: &str, e: std::io::Error) -> FetchError {
        match e.into_inner().map(|inner| inner.downcast::<object_store::Error>()) {
            Some(Ok(store)) => self.error(what, *store),
            Some(Err(other)) => store_error(
                StoreErrorKind::Unavailable,
                format!("{what}: {}", self.redact(&other.to_string())),
                format!("{} could not be written", self.uri.root()),
            ),
            None => store_error(
                StoreErrorKind::Unavailable,
                format!("{what}: the upload failed"),
                format!("{} could not be written", self.uri.root()),
            ),
        }
    }

    fn timed_out(&self, what: &str) -> FetchError {
        store_error(
            StoreErrorKind::Unavailable,
            format!("{what}: no answer within {} s", self.timeout.as_secs_f64()),
            format!("{} did not answer in time", self.uri.root()),
        )
    }

    /// An `object_store` error as a [`FetchError::Store`], secrets blanked.
    fn error(&self, what: &str, e: object_store::Error) -> FetchError {
        use object_store::Error as E;
        let root = self.uri.root();
        let detail = self.redact(&error_chain(&e));
        let (kind, public) = match &e {
            E::NotFound { .. } => (StoreErrorKind::NotFound, format!("not found in {root}")),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                (StoreErrorKind::Denied, format!("{root} refused the credentials: {}", self.uri.credential_hint()))
            }
            E::Precondition { .. } => {
                (StoreErrorKind::Mismatch, format!("an object in {root} changed during the download"))
            }
            E::Generic { .. } if looks_denied(&detail) => {
                (StoreErrorKind::Denied, format!("{root} refused the credentials: {}", self.uri.credential_hint()))
            }
            E::Generic { .. } if detail.contains("NoSuchBucket") => {
                (StoreErrorKind::NotFound, format!("no bucket {root}"))
            }
            E::Generic { .. } | E::JoinError { .. } => {
                (StoreErrorKind::Unavailable, format!("{root} could not be reached, or failed"))
            }
            _ => (StoreErrorKind::Config, format!("{root}: the request failed")),
        };
        let mut message = match kind {
            StoreErrorKind::Denied => format!("{what}: access denied: {detail}; {}", self.uri.credential_hint()),
            _ => format!("{what}: {detail}"),
        };
        let mut public = public;
        if self.no_credentials && matches!(kind, StoreErrorKind::Denied | StoreErrorKind::Unavailable) {
            let note = " (no AWS credentials are set — AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/credentials, web identity — so the EC2 instance metadata service was asked)";
            message.push_str(note);
            public.push_str(note);
        }
        store_error(kind, message, public)
    }
}

/// The part size of a streamed upload ([`Bucket::upload`]; S3's smallest part is 5 MiB).
pub const UPLOAD_PART: usize = 8 << 20;
/// Parts of one streamed upload sent at once.
pub const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// A stream of an object's bytes.
pub type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>;

/// Entries asked for per listing page (S3's and Azure's most; GCS allows more).
const LIST_PAGE: usize = 1000;
/// Pages of one folder listing read at most, whatever `max` is (a store that keeps handing
/// out page tokens cannot keep us listing).
const MAX_LIST_PAGES: usize = 1000;

/// The entries of a folder listed page by page with `page` (given the previous page's token):
/// `Ok(None)` as soon as more than `max` entries arrived (no further page is asked for).
async fn collect_dir<F, Fut>(mut page: F, max: usize, max_pages: usize) -> Result<Option<Vec<DirEntry>>, FetchError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<PaginatedListResult, FetchError>>,
{
    let name = |p: &ObjectPath| p.filename().unwrap_or_default().to_string();
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..max_pages {
        let listed = page(token.take()).await?;
        let dirs = listed.result.common_prefixes.iter().map(|p| DirEntry { name: name(p), is_dir: true, size: 0 });
        let files =
            listed.result.objects.iter().map(|m| DirEntry { name: name(&m.location), is_dir: false, size: m.size });
        out.extend(dirs.chain(files).filter(|e| !e.name.is_empty()));
        if out.len() > max {
            return Ok(None);
        }
        match listed.page_token {
            Some(next) => token = Some(next),
            None => return Ok(Some(out)),
        }
    }
    Ok(None)
}

/// One entry of a folder listing ([`Bucket::list_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// An upload in progress ([`Bucket::upload`]).
pub struct Upload {
    bucket: Bucket,
    what: String,
    writer: object_store::buffered::BufWriter,
}

impl Upload {
    pub async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), FetchError> {
        self.writer.put(chunk).await.map_err(|e| self.bucket.error(&self.what, e))
    }

    /// Complete the upload: the object appears under its key.
    pub async fn finish(mut self) -> Result<(), FetchError> {
        self.writer.shutdown().await.map_err(|e| self.bucket.io_error(&self.what, e))
    }

    /// Give the upload up (parts sent so far are removed); nothing appears.
    pub async fn abort(mut self) {
        let _ = self.writer.abort().await;
    }
}

/// What one download wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Download {
    pub bytes: u64,
    /// The MD5 of the bytes, when the ETag is an MD5 and differs from it.
    pub md5_mismatch: Option<[u8; 16]>,
}

fn store_error(kind: StoreErrorKind, message: String, public: String) -> FetchError {
    FetchError::Store { kind, message, public }
}

/// A 401/403 that `object_store` reports as a generic error (the body names it).
fn looks_denied(detail: &str) -> bool {
    [
        "403 Forbidden",
        "401 Unauthorized",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "AuthenticationFailed",
        "AuthorizationFailure",
    ]
    .iter()
    .any(|m| detail.contains(m))
}

/// The error and its sources, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The 16 bytes of an ETag that is a plain MD5 (`"<32 hex>"`); `None` for multipart
/// (`…-N`), weak or other ETags.
fn plain_md5(e_tag: &str) -> Option<[u8; 16]> {
    let hex = e_tag.trim_matches('"');
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `text` with each secret (raw and percent-encoded) and any `sig=` query value blanked.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
        let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
        if encoded != *secret {
            out = out.replace(&encoded, "***");
        }
    }
    // SAS signatures in URLs.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("sig=") {
        result.push_str(&rest[..i + 4]);
        result.push_str("***");
        let after = &rest[i + 4..];
        let end = after.find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace()).unwrap_or(after.len());
        rest = &after[end..];
    }
    result.push_str(rest);
    result
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// A built client, as an object store and as a paginated lister (S3, GCS and Azure are both).
type Opened = (Arc<dyn ObjectStore>, Option<Arc<dyn PaginatedListStore>>);

fn open_s3(
    uri: &BucketUri,
    env: Env<'_>,
    mut options: ClientOptions,
    retry: RetryConfig,
    secrets: &mut Vec<String>,
) -> Result<Opened, object_store::Error> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut builder = AmazonS3Builder::new();
    let profile = env("AWS_PROFILE").filter(|p| !p.is_empty());
    // As botocore: a profile named explicitly wins over keys in the environment.
    let env_keys = profile.is_none() && env("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty());
    for name in AWS_VARIABLES {
        let Some(value) = env(name).filter(|v| !v.is_empty()) else { continue };
        if !env_keys && matches!(*name, "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN") {
            continue;
        }
        if matches!(*name, "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN") {
            secrets.push(value.clone());
        }
        if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    if !env_keys {
        match shared_profile(env, profile.as_deref()) {
            Ok(Some(p)) => {
                secrets.push(p.secret.clone());
                builder = builder.with_access_key_id(p.key_id).with_secret_access_key(p.secret);
                if let Some(token) = p.token {
                    secrets.push(token.clone());
                    builder = builder.with_token(token);
                }
                if let Some(region) =
                    p.region.filter(|_| env("AWS_DEFAULT_REGION").is_none() && env("AWS_REGION").is_none())
                {
                    builder = builder.with_region(region);
                }
            }
            Ok(None) => {}
            Err(why) => return Err(object_store::Error::Generic { store: "S3", source: why.into() }),
        }
    }
    if let Some(endpoint) = env("MLFLOW_S3_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT_URL")).filter(|v| !v.is_empty())
    {
        if endpoint.starts_with("http://") {
            options = options.with_allow_http(true);
        }
        builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
    }
    if env("MLFLOW_S3_IGNORE_TLS").is_some_and(|v| truthy(&v)) {
        options = options.with_allow_invalid_certificates(true);
    }
    let store = builder.with_bucket_name(&uri.bucket).with_client_options(options).with_retry(retry).build()?;
    let store = Arc::new(store);
    Ok((store.clone(), Some(store)))
}

/// The `AWS_*` variables passed on to `object_store` (its `from_env` reads every `AWS_*`; this
/// list keeps the process environment out of unit tests and says what is used).
const AWS_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
    "AWS_REQUEST_PAYER",
    "AWS_SKIP_SIGNATURE",
];

/// Static keys of a profile in the shared files.
struct Profile {
    key_id: String,
    secret: String,
    token: Option<String>,
    region: Option<String>,
}

/// The static keys of `profile` (else `default`) from the shared credentials and config files;
/// `Ok(None)` when no file names the default profile; an error when a profile named with
/// `AWS_PROFILE` is missing or is not a static-key profile.
fn shared_profile(env: Env<'_>, profile: Option<&str>) -> Result<Option<Profile>, String> {
    let home = env("HOME").unwrap_or_default();
    let credentials = env("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| format!("{home}/.aws/credentials"));
    let config = env("AWS_CONFIG_FILE").unwrap_or_else(|| format!("{home}/.aws/config"));
    let name = profile.unwrap_or("default");
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let from_credentials = read(&credentials).and_then(|t| ini_section(&t, name));
    let config_section = if name == "default" { "default".to_string() } else { format!("profile {name}") };
    let from_config = read(&config).and_then(|t| ini_section(&t, &config_section).or_else(|| ini_section(&t, name)));
    let get = |key: &str| {
        from_credentials
            .as_ref()
            .and_then(|s| s.iter().find(|(k, _)| k == key))
            .or_else(|| from_config.as_ref().and_then(|s| s.iter().find(|(k, _)| k == key)))
            .map(|(_, v)| v.clone())
    };
    if from_credentials.is_none() && from_config.is_none() {
        return match profile {
            Some(p) => Err(format!("AWS_PROFILE '{p}' is in neither {credentials} nor {config}")),
            None => Ok(None),
        };
    }
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key_id), Some(secret)) => {
            Ok(Some(Profile { key_id, secret, token: get("aws_session_token"), region: get("region") }))
        }
        _ if profile.is_none() => Ok(None),
        _ => Err(format!(
            "AWS profile '{name}' has no aws_access_key_id/aws_secret_access_key: regserve reads static keys from profiles only (no SSO, credential_process or role_arn); export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN instead (e.g. `aws configure export-credentials --format env`)"
        )),
    }
}

/// The `key = value` pairs of `[section]` in an INI text (`#`/`;` comments), keys lower case.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<bool> = None;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let hit = name.trim() == section;
            if hit && found.is_none() {
                found = Some(Vec::new());
            }
            current = Some(hit);
            continue;
        }
        if current == Some(true) {
            if let (Some((k, v)), Some(pairs)) = (line.split_once('='), found.as_mut()) {
                pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    found
}

fn open_gcs(
    uri: &BucketUri,
    env: Env<'_>,
    mut options: ClientOptions,
    retry: RetryConfig,
    secrets: &mut Vec<String>,
) -> Result<Opened, object_store::Error> {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let mut builder = GoogleCloudStorageBuilder::new();
    for name in ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY"] {
        if let Some(value) = env(name).filter(|v| !v.is_empty()) {
            if name == "GOOGLE_SERVICE_ACCOUNT_KEY" {
                secrets.push(value.clone());
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
    }
    if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS").filter(|v| !v.is_empty()) {
        builder = builder.with_application_credentials(path);
    }
    if let Some(host) = env("STORAGE_EMULATOR_HOST").filter(|v| !v.is_empty()) {
        let base = if host.contains("://") { host } else { format!("http://{host}") };
        if base.starts_with("http://") {
            options = options.with_allow_http(true);
        }
        builder = builder.with_config(GoogleConfigKey::BaseUrl, base.trim_end_matches('/')).with_skip_signature(true);
    }
    let store = builder.with_bucket_name(&uri.bucket).with_client_options(options).with_retry(retry).build()?;
    let store = Arc::new(store);
    Ok((store.clone(), Some(store)))
}

fn open_azure(
    uri: &BucketUri,
    env: Env<'_>,
    mut options: ClientOptions,
    retry: RetryConfig,
    secrets: &mut Vec<String>,
) -> Result<Opened, object_store::Error> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let mut builder = MicrosoftAzureBuilder::new().with_container_name(&uri.bucket);
    let mut account = uri.account.clone();
    for name in [
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "AZURE_MSI_ENDPOINT",
        "AZURE_OBJECT_ID",
        "AZURE_MSI_RESOURCE_ID",
        "AZURE_USE_AZURE_CLI",
    ] {
        if let Some(value) = env(name).filter(|v| !v.is_empty()) {
            if matches!(name, "AZURE_STORAGE_ACCOUNT_KEY" | "AZURE_STORAGE_SAS_KEY" | "AZURE_CLIENT_SECRET") {
                secrets.push(value.clone());
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AzureConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
    }
    // MLflow's variable for the account key.
    if let Some(key) = env("AZURE_STORAGE_ACCESS_KEY").filter(|v| !v.is_empty()) {
        secrets.push(key.clone());
        builder = builder.with_access_key(key);
    }
    if let Some(cs) = env("AZURE_STORAGE_CONNECTION_STRING").filter(|v| !v.is_empty()) {
        let parts = connection_string(&cs);
        let get = |k: &str| parts.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        if let Some(key) = get("AccountKey") {
            secrets.push(key.clone());
            builder = builder.with_access_key(key);
        }
        if let Some(sas) = get("SharedAccessSignature") {
            secrets.push(sas.clone());
            builder = builder.with_config(AzureConfigKey::SasKey, sas);
        }
        if let Some(name) = get("AccountName") {
            account = Some(name);
        }
        let endpoint = get("BlobEndpoint").or_else(|| {
            let protocol = get("DefaultEndpointsProtocol").unwrap_or_else(|| "https".into());
            let suffix = get("EndpointSuffix")?;
            Some(format!("{protocol}://{}.blob.{suffix}", account.as_deref().unwrap_or_default()))
        });
        if let Some(endpoint) = endpoint {
            if endpoint.starts_with("http://") {
                options = options.with_allow_http(true);
            }
            builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
        }
        secrets.push(cs);
    } else if let Some(endpoint) = env("AZURE_STORAGE_ENDPOINT").filter(|v| !v.is_empty()) {
        if endpoint.starts_with("http://") {
            options = options.with_allow_http(true);
        }
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(account) = account {
        builder = builder.with_account(account);
    }
    let store = builder.with_client_options(options).with_retry(retry).build()?;
    let store = Arc::new(store);
    Ok((store.clone(), Some(store)))
}

/// `Key=Value;Key=Value` pairs of an Azure connection string (values may contain `=`).
fn connection_string(cs: &str) -> Vec<(String, String)> {
    cs.split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ListResult, ObjectMeta};
    use std::collections::HashMap;

    /// A folder listing stops at the page that passes the cap (the pages after it are never
    /// asked for), keeps folders and files, and is bounded in pages too.
    #[tokio::test]
    async fn a_folder_listing_stops_at_its_cap() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Page i of 5: a folder `d<i>/` and a file `f<i>` (size i), the next page's token.
        let asked = AtomicUsize::new(0);
        let pages = |endless: bool| {
            let asked = &asked;
            move |token: Option<String>| {
                let i: usize = token.map(|t| t.parse().unwrap()).unwrap_or(0);
                asked.fetch_add(1, Ordering::SeqCst);
                let object = ObjectMeta {
                    location: ObjectPath::from(format!("pre/f{i}")),
                    last_modified: Default::default(),
                    size: i as u64,
                    e_tag: None,
                    version: None,
                };
                let result =
                    ListResult { common_prefixes: vec![ObjectPath::from(format!("pre/d{i}"))], objects: vec![object] };
                let page_token = (endless || i + 1 < 5).then(|| (i + 1).to_string());
                async move { Ok(PaginatedListResult { result, page_token }) }
            }
        };
        let all = collect_dir(pages(false), 10, 100).await.unwrap().unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[2], DirEntry { name: "d1".into(), is_dir: true, size: 0 });
        assert_eq!(all[3], DirEntry { name: "f1".into(), is_dir: false, size: 1 });
        assert_eq!(asked.swap(0, Ordering::SeqCst), 5);
        // Cap 3: the second page passes it; pages 3 to 5 are not read.
        assert_eq!(collect_dir(pages(false), 3, 100).await.unwrap(), None);
        assert_eq!(asked.swap(0, Ordering::SeqCst), 2);
        // Exactly the cap is fine.
        assert_eq!(collect_dir(pages(false), 10, 100).await.unwrap().map(|v| v.len()), Some(10));
        asked.store(0, Ordering::SeqCst);
        // A store that never stops handing out tokens: at most `max_pages` pages.
        assert_eq!(collect_dir(pages(true), usize::MAX, 7).await.unwrap(), None);
        assert_eq!(asked.load(Ordering::SeqCst), 7);
        // An error on a page is the listing's error.
        let failing = |_| async { Err(FetchError::NotFound("boom".into())) };
        assert!(matches!(collect_dir(failing, 10, 10).await, Err(FetchError::NotFound(m)) if m == "boom"));
    }

    #[test]
    fn parses_the_three_clouds() {
        let s3 = BucketUri::parse("s3://my-bucket/1/abc/artifacts/model/").unwrap().unwrap();
        assert_eq!(
            (s3.cloud, s3.bucket.as_str(), s3.prefix.as_str()),
            (Cloud::S3, "my-bucket", "1/abc/artifacts/model")
        );
        assert_eq!(s3.root(), "s3://my-bucket");
        let gs = BucketUri::parse("GS://b/x%20y").unwrap().unwrap();
        assert_eq!((gs.cloud, gs.prefix.as_str()), (Cloud::Gcs, "x y"));
        let az = BucketUri::parse("wasbs://models@acct.blob.core.windows.net/p/q").unwrap().unwrap();
        assert_eq!((az.cloud, az.bucket.as_str(), az.account.as_deref()), (Cloud::Azure, "models", Some("acct")));
        assert_eq!(az.root(), "wasbs://models@acct.blob.core.windows.net");
        let abfss = BucketUri::parse("abfss://c@acct.dfs.core.windows.net/").unwrap().unwrap();
        assert_eq!((abfss.prefix.as_str(), abfss.account.as_deref()), ("", Some("acct")));
        assert_eq!(BucketUri::parse("s3://b").unwrap().unwrap().prefix, "");
        for other in ["mlflow-artifacts:/x", "/srv/m", "https://h/x", "hdfs://nn/x"] {
            assert_eq!(BucketUri::parse(other).unwrap(), None, "{other}");
        }
        for bad in
            ["s3:/bucket/x", "s3:///x", "wasbs://acct.blob.core.windows.net/x", "s3://b/../../x", "s3://b/a/../../x"]
        {
            assert!(BucketUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn md5_etags_and_redaction() {
        assert_eq!(plain_md5("\"d41d8cd98f00b204e9800998ecf8427e\"").unwrap()[0], 0xd4);
        assert_eq!(plain_md5("\"d41d8cd98f00b204e9800998ecf8427e-3\""), None);
        assert_eq!(plain_md5("W/\"x\""), None);
        assert_eq!(plain_md5("\"0x8DCB1C7E2A3F4B5\""), None);
        let secrets = vec!["s3cr/t+key".to_string()];
        let text = "bad s3cr/t+key and s3cr%2Ft%2Bkey at https://a/c?sv=1&sig=abc%2Fdef&se=2 end";
        let out = redact(text, &secrets);
        assert_eq!(out, "bad *** and *** at https://a/c?sv=1&sig=***&se=2 end");
    }

    #[test]
    fn profiles_from_the_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(&creds, "[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n\n[prod]\n# c\naws_access_key_id=AK2\naws_secret_access_key=SK2\naws_session_token=T2\n").unwrap();
        std::fs::write(&config, "[default]\nregion = eu-west-1\n[profile prod]\nregion = us-west-2\n[profile sso]\nsso_start_url = https://x\n").unwrap();
        let vars: HashMap<&str, String> = HashMap::from([
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
        ]);
        let env = |k: &str| vars.get(k).cloned();
        let d = shared_profile(&env, None).unwrap().unwrap();
        assert_eq!((d.key_id.as_str(), d.secret.as_str(), d.region.as_deref()), ("AK1", "SK1", Some("eu-west-1")));
        let p = shared_profile(&env, Some("prod")).unwrap().unwrap();
        assert_eq!(
            (p.key_id.as_str(), p.token.as_deref(), p.region.as_deref()),
            ("AK2", Some("T2"), Some("us-west-2"))
        );
        let sso = shared_profile(&env, Some("sso")).err().unwrap();
        assert!(sso.contains("static keys from profiles only"), "{sso}");
        assert!(shared_profile(&env, Some("nope")).err().unwrap().contains("AWS_PROFILE 'nope'"));
        let none = |_: &str| None;
        assert!(shared_profile(&none, None).unwrap().is_none());
    }

    /// `object_store`'s in-memory store behind a bucket handle: listing, streaming and the checks.
    #[tokio::test]
    async fn lists_downloads_and_checks_objects() {
        use object_store::memory::InMemory;
        let store = Arc::new(InMemory::new());
        for (key, body) in [
            ("m/MLmodel", "flavors: {}"),
            ("m/model.onnx", "onnx-bytes"),
            ("m/sub/w.bin", "weights"),
            ("mx/other", "x"),
        ] {
            store.put(&ObjectPath::from(key), bytes::Bytes::from(body).into()).await.unwrap();
        }
        let uri = BucketUri::parse("s3://bkt/m").unwrap().unwrap();
        let bucket = Bucket {
            uri,
            store,
            lister: None,
            secrets: Arc::new(vec![]),
            timeout: Duration::from_secs(5),
            no_credentials: false,
        };
        let mut listed = bucket.list("m", 100).await.unwrap();
        listed.sort_by(|a, b| a.rel.cmp(&b.rel));
        let rels: Vec<&str> = listed.iter().map(|o| o.rel.as_str()).collect();
        assert_eq!(rels, ["MLmodel", "model.onnx", "sub/w.bin"]); // not mx/other
        assert!(matches!(bucket.list("m", 2).await, Err(FetchError::NotFound(m)) if m.contains("more than 2")));

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("w.bin");
        let seen = std::sync::atomic::AtomicU64::new(0);
        let count = |n: u64| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let w = listed[2].clone();
        let done = bucket.download(&w, &target, &count).await.unwrap();
        assert_eq!((done.bytes, seen.into_inner()), (7, 7));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "weights");

        let short = ObjectInfo { size: 99, ..w.clone() };
        let err = bucket.download(&short, &target, &|_| {}).await.unwrap_err();
        assert!(matches!(err, FetchError::Store { kind: StoreErrorKind::Mismatch, .. }), "{err:?}");
        assert!(err.is_transient());
        // Replaced since the listing: the If-Match on the listed ETag fails.
        bucket.store.put(&ObjectPath::from("m/sub/w.bin"), bytes::Bytes::from("new").into()).await.unwrap();
        let err = bucket.download(&w, &target, &|_| {}).await.unwrap_err();
        assert!(matches!(err, FetchError::Store { kind: StoreErrorKind::Mismatch, .. }), "{err:?}");
        let gone = ObjectInfo { key: "m/none".into(), ..w };
        let err = bucket.download(&gone, &target, &|_| {}).await.unwrap_err();
        assert!(
            matches!(&err, FetchError::Store { kind: StoreErrorKind::NotFound, public, .. } if public.contains("s3://bkt")),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert_eq!(bucket.head("m/MLmodel").await.unwrap().size, 11);

        // The write side: a file streamed up, then read back through the same handle.
        let big = dir.path().join("big.bin");
        let body: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &body).unwrap();
        assert_eq!(bucket.put_file("m/big.bin", &big).await.unwrap(), body.len() as u64);
        let info = bucket.head("m/big.bin").await.unwrap();
        assert_eq!(info.size, body.len() as u64);
        let back = dir.path().join("back.bin");
        bucket.download(&info, &back, &|_| {}).await.unwrap();
        assert!(std::fs::read(&back).unwrap() == body);
    }

    /// GCS without an emulator that speaks the XML API (see the module doc): the configuration,
    /// and a request to a closed port failing as "unavailable", naming the bucket only.
    #[tokio::test]
    async fn gcs_configuration_and_errors() {
        let uri = BucketUri::parse("gs://gbkt/models/m").unwrap().unwrap();
        let missing = |k: &str| (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| "/nonexistent/key.json".to_string());
        match Bucket::open(&uri, &missing, Duration::from_secs(2)) {
            Err(FetchError::Store { kind: StoreErrorKind::Config, public, message }) => {
                assert!(public.contains("gs://gbkt") && public.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{public}");
                assert!(message.contains("/nonexistent/key.json"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let emulator = move |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| format!("127.0.0.1:{port}"));
        let bucket = Bucket::open(&uri, &emulator, Duration::from_secs(2)).unwrap();
        match bucket.list(&uri.prefix, 10).await {
            Err(e @ FetchError::Store { kind: StoreErrorKind::Unavailable, .. }) => {
                assert!(e.is_transient());
                assert!(e.to_string().contains("gs://gbkt/models/m"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn opening_keeps_secrets_out_of_messages() {
        let uri = BucketUri::parse("s3://bkt/m").unwrap().unwrap();
        let vars: HashMap<&str, &str> = HashMap::from([
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("HOME", "/nonexistent"),
        ]);
        let env = |k: &str| vars.get(k).map(|v| v.to_string());
        let bucket = Bucket::open(&uri, &env, Duration::from_secs(5)).unwrap();
        assert_eq!(bucket.redact("x very-secret-value y"), "x *** y");
        assert!(!format!("{bucket:?}").contains("very-secret-value"));
        let cs = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5a2V5a2V5a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
        let parts = connection_string(cs);
        assert!(parts.contains(&("AccountKey".to_string(), "a2V5a2V5a2V5a2V5".to_string())));
        let az = BucketUri::parse("wasbs://c@devstoreaccount1.blob.core.windows.net/m").unwrap().unwrap();
        let env = |k: &str| (k == "AZURE_STORAGE_CONNECTION_STRING").then(|| cs.to_string());
        let bucket = Bucket::open(&az, &env, Duration::from_secs(5)).unwrap();
        assert_eq!(bucket.redact("key a2V5a2V5a2V5a2V5 here"), "key *** here");
    }
}
