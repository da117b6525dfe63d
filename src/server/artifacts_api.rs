//! MLflow's artifact proxy over the artifact root (mounted under `/api/2.0/mlflow-artifacts` and
//! `/ajax-api/2.0/mlflow-artifacts`), how the MLflow client uploads and downloads model files:
//!
//! - `GET /artifacts?path=P` — list a folder: `{"files": [{"path", "is_dir", "file_size"}]}`
//! - `GET /artifacts/<path>` — download a file (streamed, as an attachment with MLflow's headers:
//!   see [`download`](super::download))
//! - `PUT /artifacts/<path>` — upload a file: streamed to a temporary file in the same folder,
//!   synced, then renamed into place, so a partial upload is never visible under its name
//!
//! The files live in the server's [`Destination`]: the data dir's artifact root, or a bucket
//! (`--artifacts-destination`); [`list_folder`], [`send_artifact`] and [`store_file`] are the
//! only places that tell the two apart, for this proxy and the tracking API's artifact endpoints
//! alike. In a bucket, an upload is streamed up as a multipart upload that appears only when
//! complete, a download is streamed down, and a listing is one delimited listing of the prefix.
//!
//! Every path goes through [`ArtifactRoot::path_of`](crate::artifact::ArtifactRoot::path_of) (for a bucket,
//! [`Destination::key_of`], the same rules without links):
//! `..`, absolute paths, their percent-encoded forms and symlinks leading out are refused with
//! 400. The raw (still percent-encoded) request path is used, so it is decoded exactly once.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::body_budget::BodyCharge;
use super::download::{send_file, send_stream};
use super::error::ApiError;
use super::params::Params;
use super::reply::{JsonReply, Reply};
use super::state::{blocking, RegistryState};
use crate::artifact::{Destination, UPLOAD_MARK};
use crate::registry::RegistryError;

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/artifacts", get(list))
        .route("/artifacts/", get(list))
        .route("/artifacts/{*path}", get(download).put(upload))
}

/// With `--no-serve-artifacts`: every proxy endpoint answers 503 with MLflow's message
/// (`handlers.py` `_disable_unless_serve_artifacts`).
pub fn disabled_routes() -> Router<RegistryState> {
    async fn disabled(uri: Uri) -> Response {
        let message = format!(
            "Endpoint: {} disabled due to the mlflow server running with `--no-serve-artifacts`. To enable artifacts server functionality, run `mlflow server` with `--serve-artifacts`",
            uri.path()
        );
        (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
    }
    Router::new()
        .route("/artifacts", get(disabled))
        .route("/artifacts/", get(disabled))
        .route("/artifacts/{*path}", get(disabled).put(disabled).delete(disabled))
}

/// The artifact path of a request, still percent-encoded. (Inside the nested router the URI
/// starts at `/artifacts/`; in the full path `mlflow-artifacts/artifacts/`, the first
/// `/artifacts/` is the same one.)
fn raw_path(uri: &Uri) -> &str {
    uri.path().split_once("/artifacts/").map(|(_, rest)| rest).unwrap_or("")
}

pub(super) fn invalid(message: String) -> ApiError {
    ApiError::Registry(RegistryError::InvalidParameter(message))
}

pub(super) fn decoded(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// Names starting with '.' are the server's own (staging folders, uploads in progress): not
/// listed, served or written through the proxy.
pub(super) fn refuse_hidden(raw: &str) -> Result<(), ApiError> {
    let rel = decoded(raw);
    if rel.split('/').any(|c| c.starts_with('.') && c != "." && c != "..") {
        return Err(ApiError::Registry(RegistryError::NotFound(format!("No such artifact: '{rel}'"))));
    }
    Ok(())
}

/// Names with control characters (a line break, ...) are refused at upload: MLflow stores them
/// percent-escaped under another name (`a%0ab`), regserve says no rather than rename.
pub(super) fn refuse_control(rel: &str) -> Result<(), ApiError> {
    if rel.chars().any(char::is_control) {
        return Err(invalid(format!("Invalid path {rel:?}: artifact names may not hold control characters")));
    }
    Ok(())
}

/// One entry of a listing, as MLflow's `FileInfo` (`file_size` for files only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(super) struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

/// The most entries one folder scan reads: listing a folder costs time in proportion to its
/// size, so a folder with more is refused (400) rather than read for every page.
pub(super) const MAX_SCAN: usize = 100_000;

/// One page of the folder `dir`: the first `limit` entries (by name, in code point order as
/// MLflow sorts) whose names come after `after`, and whether more follow. Dot-files (uploads in
/// progress, staging folders) are hidden and symlinks never followed. Memory is bounded by
/// `limit`; a missing folder (or a file) lists as nothing, as in MLflow. Blocking.
pub(super) fn scan_dir(dir: &Path, after: Option<&str>, limit: usize) -> Result<(Vec<FileInfo>, bool), ApiError> {
    let mut page: std::collections::BinaryHeap<(String, bool, u64)> = std::collections::BinaryHeap::new();
    let mut more = false;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((Vec::new(), false));
    };
    for (seen, entry) in entries.flatten().enumerate() {
        if seen >= MAX_SCAN {
            return Err(invalid(format!(
                "The folder holds more than {MAX_SCAN} entries; regserve lists folders of at most that many."
            )));
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || after.is_some_and(|a| name.as_str() <= a) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !(meta.is_dir() || meta.is_file()) {
            continue;
        }
        page.push((name, meta.is_dir(), meta.len()));
        if page.len() > limit {
            page.pop();
            more = true;
        }
    }
    let files = page
        .into_sorted_vec()
        .into_iter()
        .map(|(path, is_dir, len)| FileInfo { path, is_dir, file_size: (!is_dir).then_some(len) })
        .collect();
    Ok((files, more))
}

async fn list(State(st): State<RegistryState>, p: Params) -> Reply {
    let rel = p.str_or_empty("path")?;
    refuse_hidden(&rel)?;
    // This listing has no page token (MLflow's proxy pages nothing): one answer, at most MAX_SCAN.
    let (files, _) = list_folder(&st, &rel, None, MAX_SCAN).await?;
    JsonReply::new().list("files", &files)?.finish()
}

async fn download(State(st): State<RegistryState>, uri: Uri) -> Result<Response, ApiError> {
    let raw = raw_path(&uri).to_string();
    refuse_hidden(&raw)?;
    send_artifact(&st, &raw, &decoded(&raw)).await
}

/// One page of the folder `rel` (relative to the artifact destination, checked here) — see
/// [`scan_dir`] for the local folder; a bucket's folder is one delimited listing of its
/// prefix, paged the same way.
pub(super) async fn list_folder(
    st: &RegistryState,
    rel: &str,
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<FileInfo>, bool), ApiError> {
    match &st.destination {
        Destination::Local(root) => {
            let dir = root.path_of(rel)?;
            blocking(move || scan_dir(&dir, after.as_deref(), limit)).await
        }
        Destination::Bucket(bucket) => {
            let key = Destination::key_of(bucket, rel)?;
            let mut entries = bucket.list_dir(&key, MAX_SCAN).await?;
            entries.retain(|e| !e.name.starts_with('.') && after.as_deref().is_none_or(|a| e.name.as_str() > a));
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let more = entries.len() > limit;
            entries.truncate(limit);
            let files = entries
                .into_iter()
                .map(|e| FileInfo { path: e.name, is_dir: e.is_dir, file_size: (!e.is_dir).then_some(e.size) })
                .collect();
            Ok((files, more))
        }
    }
}

/// Send the artifact `rel` (relative to the artifact destination, checked here) as MLflow
/// sends it ([`send_file`]); `shown` is the path messages name.
pub(super) async fn send_artifact(st: &RegistryState, rel: &str, shown: &str) -> Result<Response, ApiError> {
    match &st.destination {
        Destination::Local(root) => send_file(&root.path_of(rel)?, shown).await,
        Destination::Bucket(bucket) => {
            let key = Destination::key_of(bucket, rel)?;
            let name = key.rsplit('/').next().unwrap_or_default().to_string();
            let object = if key.is_empty() { None } else { bucket.get_stream(&key).await? };
            match object {
                Some((size, stream)) if !name.is_empty() && !rel.ends_with('/') => Ok(send_stream(stream, size, &name)),
                _ if !key.is_empty() && bucket.has_children(&key).await? => {
                    Err(invalid(format!("Artifact path refers to a directory, not a file: '{shown}'")))
                }
                _ => Err(ApiError::Registry(RegistryError::NotFound(format!("No such artifact: '{shown}'")))),
            }
        }
    }
}

/// The segments of an artifact path, without empty and `.` ones (`a//./b/` → `[a, b]`).
fn segments(rel: &str) -> Vec<&str> {
    rel.split('/').filter(|s| !s.is_empty() && *s != ".").collect()
}

/// The folder a logged model keeps its files in, as artifact path segments: its artifact
/// location (`mlflow-artifacts:/<experiment location>/models/<id>/artifacts`) without the
/// trailing `artifacts`, percent-decoded as the proxy decodes request paths. `None` when the
/// location is not under this server's artifact root.
fn model_folder(artifact_uri: &str) -> Option<Vec<String>> {
    let uri = crate::artifact::normalize_scheme(artifact_uri);
    let rest = uri.strip_prefix(crate::artifact::SCHEME)?;
    let rel = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => rest,
    };
    let rel = decoded(rel);
    let mut parts: Vec<String> = segments(&rel).into_iter().map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "artifacts") {
        parts.pop();
    }
    Some(parts)
}

/// Refuse uploads that would change files a registered version depends on: the copies made by
/// `regserve models register` and the files of a finalized logged model.
///
/// A logged model's folder is `<experiment's artifact location>/models/<id>/`, and an
/// experiment's location can be nested (`mlflow-artifacts:/a/b`), so the path's shape alone
/// does not say whose it is: every `models/m-<id>` pair in the path names a candidate, each is
/// looked up in the tracking store, and the upload is refused when a finalized one's folder
/// holds the path.
pub(super) async fn check_writable(st: &RegistryState, rel: &str) -> Result<(), ApiError> {
    let parts = segments(rel);
    if matches!(parts.first(), Some(&crate::artifact::REGISTERED_PREFIX) | Some(&".staging")) {
        return Err(invalid(format!(
            "Invalid path '{rel}': the '{}' folder holds versions registered with `regserve models register` and is read-only here.",
            parts[0]
        )));
    }
    let mut candidates: Vec<String> =
        parts.windows(2).filter(|w| w[0] == "models" && w[1].starts_with("m-")).map(|w| w[1].to_string()).collect();
    candidates.sort();
    candidates.dedup();
    if candidates.is_empty() {
        return Ok(());
    }
    let path: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
    let tracking = st.tracking.clone();
    let finalized_owner = blocking(move || {
        for id in candidates {
            let lm = match tracking.get_logged_model(&id) {
                Ok(lm) => lm,
                Err(RegistryError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let owns = model_folder(&lm.info.artifact_uri).is_some_and(|folder| path.starts_with(&folder));
            if owns && lm.info.status == "LOGGED_MODEL_READY" {
                return Ok(Some(id));
            }
        }
        Ok(None)
    })
    .await?;
    if let Some(model_id) = finalized_owner {
        return Err(invalid(format!(
            "Invalid path '{rel}': logged model {model_id} is finalized; its files can no longer change."
        )));
    }
    Ok(())
}

async fn upload(
    State(st): State<RegistryState>,
    charge: Option<Extension<BodyCharge>>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = raw_path(&uri).to_string();
    store_file(&st, &raw, body, charge, UploadRules::default()).await?;
    Ok(StatusCode::OK.into_response())
}

/// What an upload must satisfy beyond a safe path.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UploadRules {
    /// At most this many bytes (MLflow's `upload-artifact`: 10 MB); the proxy's PUT has none.
    pub max_bytes: Option<u64>,
    /// An empty body is refused ("Request must specify data.", as `upload-artifact`).
    pub refuse_empty: bool,
}

/// Write `body` to the artifact at `raw` (relative to the artifact root, percent-encoded as in a
/// request path): streamed to a temporary file in the same folder (only the frame in hand counts
/// against the body budget), synced, then renamed into place, so a partial or refused upload is
/// never visible under its name. Refuses hidden names, control characters, folders and the
/// read-only places ([`check_writable`]). Returns the bytes written.
pub(super) async fn store_file(
    st: &RegistryState,
    raw: &str,
    body: Body,
    charge: Option<Extension<BodyCharge>>,
    rules: UploadRules,
) -> Result<u64, ApiError> {
    if let Some(Extension(charge)) = &charge {
        charge.streaming();
    }
    refuse_hidden(raw)?;
    match &st.destination {
        Destination::Local(root) => drop(root.path_of(raw)?),
        Destination::Bucket(bucket) => drop(Destination::key_of(bucket, raw)?),
    }
    let rel = decoded(raw);
    if rel.trim_matches('/').is_empty() || raw.ends_with('/') {
        return Err(invalid(format!("Invalid path '{rel}': name a file to upload")));
    }
    refuse_control(&rel)?;
    check_writable(st, &rel).await?;
    let root = match &st.destination {
        Destination::Local(root) => root,
        Destination::Bucket(bucket) => return upload_to_bucket(bucket, raw, &rel, body, rules).await,
    };
    let dest = root.path_of(raw)?;
    if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.is_dir()) {
        return Err(invalid(format!("Invalid path '{rel}': it is a directory")));
    }
    let parent = dest.parent().map(Path::to_path_buf).ok_or_else(|| invalid(format!("Invalid path '{rel}'")))?;
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", parent.display())))?;
    // The folder may have been swapped for a link between the check and now: check again.
    root.path_of(raw)?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}{UPLOAD_MARK}{}", uuid::Uuid::new_v4().simple()));
    let written = match write_body(&tmp, body, rules).await {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ApiError::Internal(format!("moving the upload to {}: {e}", dest.display())));
    }
    if let Ok(dir) = tokio::fs::File::open(&parent).await {
        let _ = dir.sync_all().await;
    }
    Ok(written)
}

/// [`store_file`] into a bucket: the body streamed up chunk by chunk (multipart past a few
/// MiB, so memory stays bounded by the part size); the object appears only when the whole body
/// arrived, so a partial or refused upload is never visible (as the local rename).
async fn upload_to_bucket(
    bucket: &crate::artifact::store::Bucket,
    raw: &str,
    rel: &str,
    body: Body,
    rules: UploadRules,
) -> Result<u64, ApiError> {
    let key = Destination::key_of(bucket, raw)?;
    if bucket.has_children(&key).await? {
        return Err(invalid(format!("Invalid path '{rel}': it is a directory")));
    }
    let mut upload = bucket.upload(&key);
    let mut body = body;
    let mut written: u64 = 0;
    let sent: Result<(), ApiError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| invalid(format!("The upload was interrupted: {e}")))?;
            if let Ok(data) = frame.into_data() {
                written += data.len() as u64;
                if let Some(max) = rules.max_bytes.filter(|max| written > *max) {
                    return Err(too_large(max));
                }
                upload.write(data).await?;
            }
        }
        if written == 0 && rules.refuse_empty {
            return Err(invalid("Request must specify data.".into()));
        }
        Ok(())
    }
    .await;
    match sent {
        Ok(()) => {
            upload.finish().await?;
            Ok(written)
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// MLflow's message for an `upload-artifact` body over its limit.
pub(super) fn too_large(max: u64) -> ApiError {
    invalid(format!("Artifact size is too large. Max size is {}MB.", max >> 20))
}

async fn write_body(tmp: &PathBuf, body: Body, rules: UploadRules) -> Result<u64, ApiError> {
    let io_err = |e: std::io::Error| ApiError::Internal(format!("writing {}: {e}", tmp.display()));
    let mut file = tokio::fs::File::create(tmp).await.map_err(io_err)?;
    let mut body = body;
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| invalid(format!("The upload was interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            written += data.len() as u64;
            if let Some(max) = rules.max_bytes.filter(|max| written > *max) {
                return Err(too_large(max));
            }
            file.write_all(&data).await.map_err(io_err)?;
        }
    }
    if written == 0 && rules.refuse_empty {
        return Err(invalid("Request must specify data.".into()));
    }
    file.flush().await.map_err(io_err)?;
    file.sync_all().await.map_err(io_err)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_models_folder_is_its_location_without_artifacts() {
        let f = |u: &str| model_folder(u).map(|v| v.join("/"));
        assert_eq!(f("mlflow-artifacts:/0/models/m-1/artifacts").as_deref(), Some("0/models/m-1"));
        assert_eq!(f("mlflow-artifacts:/a/b/models/m-1/artifacts/").as_deref(), Some("a/b/models/m-1"));
        assert_eq!(f("MLFLOW-ARTIFACTS://h:5000/a%20b//models/m-1/artifacts").as_deref(), Some("a b/models/m-1"));
        assert_eq!(f("s3://bucket/models/m-1/artifacts"), None);
        assert_eq!(segments("a//./b/"), ["a", "b"]);
    }
}
