//! The artifact endpoints of MLflow's tracking API and UI (`mlflow/server/handlers.py`), over the
//! same artifact root as the proxy ([`artifacts_api`](super::artifacts_api)), each addressing
//! files relative to a run's, a version's or a logged model's artifact location:
//!
//! - `GET artifacts/list?run_id=&path=&page_token=` → `{root_uri, files, next_page_token}`
//!   (under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow`)
//! - `GET logged-models/{id}/artifacts/directories?artifact_directory_path=&page_token=` (same)
//! - `GET /get-artifact?run_id=&path=`, `GET /model-versions/get-artifact?name=&version=&path=`
//!   and `GET /ajax-api/2.0/mlflow/logged-models/{id}/artifacts/files?artifact_file_path=`:
//!   a file, sent as the proxy sends it ([`download`](super::download))
//! - `POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=&path=`: the body (at most 10 MB, as
//!   MLflow) becomes a file of the run, written as the proxy writes (temp file, then rename)
//!
//! Paths are checked as MLflow's `validate_path_is_safe` checks them ("Invalid path": `..`,
//! absolute, `#`), then by [`ArtifactRoot::path_of`](crate::artifact::ArtifactRoot::path_of)
//! (links leading out). Listings are paged: at most [`PAGE`] entries an answer, in name order,
//! with a `next_page_token` when more follow (MLflow answers the whole folder at once).

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

use super::artifacts_api::{
    invalid, list_folder, refuse_hidden, send_artifact, store_file, too_large, FileInfo, UploadRules,
};
use super::body_budget::BodyCharge;
use super::error::ApiError;
use super::params::Params;
use super::reply::{JsonReply, Reply};
use super::state::{blocking, RegistryState};
use crate::artifact::{normalize_scheme, FetchError, SCHEME};
use crate::runtime::ScoringError;

/// Entries in one listing answer.
pub const PAGE: usize = 1000;

/// MLflow's limit on an `upload-artifact` body.
pub const UPLOAD_LIMIT: u64 = 10 * 1024 * 1024;

/// Under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow` (JSON API).
pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/artifacts/list", get(list_run_artifacts))
        .route("/logged-models/{model_id}/artifacts/directories", get(list_logged_model_artifacts))
}

/// The UI's routes, as MLflow mounts them: `get-artifact` and `model-versions/get-artifact` at
/// the root, `upload-artifact` and the logged model's `files` under `/ajax-api/2.0/mlflow` only.
/// The upload takes any body (the file's bytes), so it is outside the JSON-only layer.
pub fn ui_routes() -> Router<RegistryState> {
    Router::new()
        .route("/get-artifact", get(get_run_artifact))
        .route("/model-versions/get-artifact", get(get_model_version_artifact))
        .route("/ajax-api/2.0/mlflow/upload-artifact", post(upload_run_artifact))
        .route("/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files", get(get_logged_model_artifact))
}

fn invalid_path() -> ApiError {
    invalid("Invalid path".into())
}

/// MLflow's `validate_path_is_safe`: percent-decoded until it stops changing (at most 10
/// rounds), then refused with "Invalid path" when it holds `#`, a `..` segment, is absolute
/// (`/x`, `C:\x`, `C:/x`, `\\host`) or a `file:` URI. Returns the decoded path.
pub fn safe_path(path: &str) -> Result<String, ApiError> {
    let mut cur = path.to_string();
    for round in 0.. {
        let next = percent_decode_str(&cur).decode_utf8().map_err(|_| invalid_path())?.into_owned();
        if next == cur {
            break;
        }
        if round == 10 {
            return Err(invalid_path());
        }
        cur = next;
    }
    let bytes = cur.as_bytes();
    let windows_drive =
        bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && matches!(bytes[2], b'/' | b'\\');
    // MLflow turns `file:` URIs into local paths, which are absolute (refused) or a relative
    // path spelled oddly; regserve refuses them all.
    let file_uri = crate::artifact::scheme_of(&cur).is_some_and(|(scheme, _)| scheme == "file");
    if cur.contains('#')
        || file_uri
        || cur.split('/').any(|s| s == "..")
        || cur.starts_with('/')
        || cur.starts_with('\\')
        || windows_drive
    {
        return Err(invalid_path());
    }
    Ok(cur)
}

/// The folder an artifact location names, relative to the artifact root: `mlflow-artifacts:/P`
/// and `mlflow-artifacts://host/P` → `P`, as MLflow resolves proxied locations
/// (`_get_proxied_run_artifact_destination_path`). Another scheme (a `runs:/` source whose run
/// this server does not know, `s3://...`) is not served here: 400.
fn location_rel(uri: &str) -> Result<String, ApiError> {
    let normalized = normalize_scheme(uri);
    let rest = normalized.strip_prefix(SCHEME).ok_or_else(|| {
        let scheme = crate::artifact::scheme_of(uri).map(|(s, _)| s).unwrap_or_default();
        ApiError::Artifact(FetchError::UnsupportedScheme { scheme, uri: uri.to_string() })
    })?;
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => rest,
    };
    Ok(path.trim_matches('/').to_string())
}

/// `base/path` as `posixpath.join` would make it (for a non-absolute `path`).
fn join(base: &str, path: &str) -> String {
    match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => format!("{base}/"),
        (false, false) => format!("{base}/{path}"),
    }
}

/// `after:<name percent-encoded>`, the last name of the page.
fn page_token(last: &str) -> String {
    format!("after:{}", utf8_percent_encode(last, NON_ALPHANUMERIC))
}

fn after_of(token: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = || invalid(format!("Invalid page token '{token}'"));
    let encoded = token.strip_prefix("after:").ok_or_else(bad)?;
    Ok(Some(percent_decode_str(encoded).decode_utf8().map_err(|_| bad())?.into_owned()))
}

/// One page of `root_uri`'s folder `path` (already [`safe_path`]-checked; `None`: the root):
/// entries named `path/<name>` as MLflow names them (`_list_artifacts_for_proxied_run_artifact_root`).
async fn list_under(st: &RegistryState, root_uri: String, path: Option<String>, token: Option<String>) -> Reply {
    let base = location_rel(&root_uri)?;
    let rel = join(&base, path.as_deref().unwrap_or(""));
    refuse_hidden(&rel)?;
    let after = after_of(token)?;
    let (files, more) = list_folder(st, &rel, after, PAGE).await?;
    let next = if more { files.last().map(|f| page_token(&f.path)) } else { None };
    let files: Vec<FileInfo> = files
        .into_iter()
        .map(|f| FileInfo {
            path: match path.as_deref().filter(|p| !p.is_empty()) {
                Some(p) if p.ends_with('/') => format!("{p}{}", f.path),
                Some(p) => format!("{p}/{}", f.path),
                None => f.path,
            },
            ..f
        })
        .collect();
    JsonReply::new()
        .field("root_uri", &root_uri)?
        .list("files", &files)?
        .opt("next_page_token", next.as_ref())?
        .finish()
}

/// An optional path parameter, checked.
fn opt_path(p: &Params, key: &str) -> Result<Option<String>, ApiError> {
    p.opt_str(key)?.map(|s| safe_path(&s)).transpose()
}

/// `run_id`, or the older `run_uuid`.
fn run_id(p: &Params) -> Result<String, ApiError> {
    match p.opt_str("run_id")?.filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => Ok(p.required_str("run_uuid").map_err(|_| {
            invalid("Missing value for required parameter 'run_id'. See the API docs for more information about request parameters.".into())
        })?),
    }
}

async fn run_artifact_uri(st: &RegistryState, run_id: String) -> Result<String, ApiError> {
    let tracking = st.tracking.clone();
    blocking(move || Ok(tracking.get_run(&run_id)?.info.artifact_uri)).await
}

async fn logged_model_artifact_uri(st: &RegistryState, model_id: String) -> Result<String, ApiError> {
    let tracking = st.tracking.clone();
    blocking(move || Ok(tracking.get_logged_model(&model_id)?.info.artifact_uri)).await
}

/// `GET artifacts/list` (`_list_artifacts`).
async fn list_run_artifacts(State(st): State<RegistryState>, p: Params) -> Reply {
    let run_id = run_id(&p)?;
    let path = opt_path(&p, "path")?;
    let token = p.opt_str("page_token")?;
    let root = run_artifact_uri(&st, run_id).await?;
    list_under(&st, root, path, token).await
}

/// `GET logged-models/{id}/artifacts/directories` (`_list_logged_model_artifacts`).
async fn list_logged_model_artifacts(
    State(st): State<RegistryState>,
    Path(model_id): Path<String>,
    p: Params,
) -> Reply {
    let path = opt_path(&p, "artifact_directory_path")?;
    let token = p.opt_str("page_token")?;
    let root = logged_model_artifact_uri(&st, model_id).await?;
    list_under(&st, root, path, token).await
}

/// Send the file `path` (checked) under the artifact location `root_uri`.
async fn send_under(st: &RegistryState, root_uri: &str, path: &str) -> Result<Response, ApiError> {
    let rel = join(&location_rel(root_uri)?, path);
    refuse_hidden(&rel)?;
    send_artifact(st, &rel, &rel).await
}

fn required_path(p: &Params, key: &str) -> Result<String, ApiError> {
    let path = p
        .opt_str(key)?
        .ok_or_else(|| invalid(format!("Missing value for required parameter '{key}'. See the API docs for more information about request parameters.")))?;
    safe_path(&path)
}

/// `GET /get-artifact` (`get_artifact_handler`).
async fn get_run_artifact(State(st): State<RegistryState>, p: Params) -> Result<Response, ApiError> {
    let path = required_path(&p, "path")?;
    let root = run_artifact_uri(&st, run_id(&p)?).await?;
    send_under(&st, &root, &path).await
}

/// `GET /model-versions/get-artifact` (`get_model_version_artifact_handler`): under the
/// version's download location (what `get-download-uri` answers).
async fn get_model_version_artifact(State(st): State<RegistryState>, p: Params) -> Result<Response, ApiError> {
    let path = required_path(&p, "path")?;
    let name = p.required_str("name")?;
    let version = p.version()?;
    let store = st.store.clone();
    let root = blocking(move || Ok(store.get_model_version(&name, version)?.download_location().to_string())).await?;
    send_under(&st, &root, &path).await
}

/// `GET /ajax-api/2.0/mlflow/logged-models/{id}/artifacts/files` (`get_logged_model_artifact_handler`).
async fn get_logged_model_artifact(
    State(st): State<RegistryState>,
    Path(model_id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let path = p.opt_str("artifact_file_path")?.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::Scoring(ScoringError::bad_request("Request must include the \"artifact_file_path\" query parameter."))
    })?;
    let path = safe_path(&path)?;
    let root = logged_model_artifact_uri(&st, model_id).await?;
    send_under(&st, &root, &path).await
}

/// `POST /ajax-api/2.0/mlflow/upload-artifact` (`upload_artifact_handler`): `run_uuid` and
/// `path` in the query string, the file's bytes as the body, at most [`UPLOAD_LIMIT`].
async fn upload_run_artifact(
    State(st): State<RegistryState>,
    charge: Option<Extension<BodyCharge>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let p = Params::from_query(query.as_deref().unwrap_or(""));
    let must = |key: &str, m: &str| -> Result<String, ApiError> {
        p.opt_str(key)?.filter(|s| !s.is_empty()).ok_or_else(|| invalid(m.into()))
    };
    let run_uuid = must("run_uuid", "Request must specify run_uuid.")?;
    let path = safe_path(&must("path", "Request must specify path.")?)?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > UPLOAD_LIMIT => return Err(too_large(UPLOAD_LIMIT)),
        Some(0) => return Err(invalid("Request must specify data.".into())),
        _ => {}
    }
    let root = run_artifact_uri(&st, run_uuid).await?;
    let rel = join(&location_rel(&root)?, &path);
    store_file(&st, &rel, body, charge, UploadRules { max_bytes: Some(UPLOAD_LIMIT), refuse_empty: true }).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], "").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_as_mlflow_checks_them() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a#b",
            "%2e%2e/x",
            "%252e%252e/x",
            "C:\\x",
            "c:/x",
            "\\\\host\\x",
            "file:///etc/passwd",
            "FILE:x",
        ] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_path("sub/MLmodel").unwrap(), "sub/MLmodel");
        assert_eq!(safe_path("a%20b").unwrap(), "a b");
        assert_eq!(safe_path("..x/y..").unwrap(), "..x/y..");
        assert_eq!(safe_path("").unwrap(), "");
    }

    #[test]
    fn locations_and_tokens() {
        assert_eq!(location_rel("mlflow-artifacts:/0/r/artifacts").unwrap(), "0/r/artifacts");
        assert_eq!(location_rel("MLFLOW-ARTIFACTS://h:5000/0/r/artifacts/").unwrap(), "0/r/artifacts");
        assert!(location_rel("runs:/abc/model").is_err());
        assert!(location_rel("s3://b/k").is_err());
        assert_eq!(join("0/r", "d/"), "0/r/d/");
        assert_eq!(join("0/r", ""), "0/r/");
        for name in ["MLmodel", "日本 語", "a/b%c"] {
            assert_eq!(after_of(Some(page_token(name))).unwrap().as_deref(), Some(name));
        }
        assert!(after_of(Some("abc".into())).is_err());
        assert_eq!(after_of(Some(String::new())).unwrap(), None);
    }
}
