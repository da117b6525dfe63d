//! Writes to a remote MLflow registry, for `regserve models ... --registry-uri`: registered
//! models and versions (create, update, rename, delete, stage, tags, aliases), MLflow 3 logged
//! models, and streamed uploads of a version's files through the artifact proxy ([`Upload`]).

use std::path::PathBuf;

use reqwest::{Method, Url};
use serde_json::{json, Value};

use super::http::{api_error, error_chain, error_message, retry_after, with_retries, RetryPolicy, Step};
use super::{model_from_json, segment, take, unexpected, version_from_json, RestRegistry, Result};
use crate::registry::{ModelVersion, RegisteredModel, RegistryError, Stage, Tag};

/// A file to upload through the artifact proxy: streamed from disk, or a few bytes made here
/// (e.g. a generated `MLmodel`).
#[derive(Debug, Clone)]
pub enum Upload {
    File(PathBuf),
    Bytes(bytes::Bytes),
}

/// What `model-versions/create` is sent (MLflow's `CreateModelVersion` fields).
#[derive(Debug, Clone, Default)]
pub struct CreateModelVersion {
    pub name: String,
    /// Where the files are, e.g. `models:/m-<id>` for a logged model.
    pub source: String,
    pub run_id: String,
    /// The logged model holding `source` (MLflow 3).
    pub model_id: String,
    pub description: String,
    pub tags: Vec<Tag>,
}

/// An MLflow 3 logged model: its id and where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedModelRef {
    pub model_id: String,
    /// `mlflow-artifacts:/<experiment>/models/m-<id>/artifacts` with the artifact proxy on.
    pub artifact_uri: String,
}

pub use crate::registry::NOT_A_PROMPT;

fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect())
}

/// The writes of the registry API (and the tracking and artifact calls that logging a model
/// needs), with the request shapes MLflow's client sends.
impl RestRegistry {
    /// `POST registered-models/create`; a name in use is [`RegistryError::AlreadyExists`].
    pub async fn create_registered_model(
        &self,
        name: &str,
        description: &str,
        tags: &[Tag],
    ) -> Result<RegisteredModel> {
        let mut body = json!({ "name": name });
        if !description.is_empty() {
            body["description"] = json!(description);
        }
        if !tags.is_empty() {
            body["tags"] = tags_json(tags);
        }
        let (what, mut v) = self.call(Method::POST, "registered-models/create", &[], Some(&body)).await?;
        let m = take(&mut v, "registered_model").ok_or_else(|| unexpected(&what, "no 'registered_model'"))?;
        model_from_json(m, &what)
    }

    /// `PATCH registered-models/update`: set the description.
    pub async fn update_registered_model(&self, name: &str, description: &str) -> Result<RegisteredModel> {
        let body = json!({ "name": name, "description": description });
        let (what, mut v) = self.call(Method::PATCH, "registered-models/update", &[], Some(&body)).await?;
        let m = take(&mut v, "registered_model").ok_or_else(|| unexpected(&what, "no 'registered_model'"))?;
        model_from_json(m, &what)
    }

    /// `POST registered-models/rename`.
    pub async fn rename_registered_model(&self, name: &str, new_name: &str) -> Result<RegisteredModel> {
        let body = json!({ "name": name, "new_name": new_name });
        let (what, mut v) = self.call(Method::POST, "registered-models/rename", &[], Some(&body)).await?;
        let m = take(&mut v, "registered_model").ok_or_else(|| unexpected(&what, "no 'registered_model'"))?;
        model_from_json(m, &what)
    }

    /// `DELETE registered-models/delete`: the model with all its versions.
    pub async fn delete_registered_model(&self, name: &str) -> Result<()> {
        let body = json!({ "name": name });
        self.call(Method::DELETE, "registered-models/delete", &[], Some(&body)).await.map(drop)
    }

    /// One page of `GET registered-models/search`.
    pub async fn search_registered_models(
        &self,
        filter: &str,
        max_results: usize,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<crate::registry::Page<RegisteredModel>> {
        let max = max_results.to_string();
        let mut query = vec![("max_results", max.as_str())];
        if !filter.is_empty() {
            query.push(("filter", filter));
        }
        query.extend(order_by.iter().map(|o| ("order_by", o.as_str())));
        if let Some(t) = page_token.filter(|t| !t.is_empty()) {
            query.push(("page_token", t));
        }
        let (what, mut v) = self.call(Method::GET, "registered-models/search", &query, None).await?;
        let items = match take(&mut v, "registered_models") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                items.into_iter().map(|m| model_from_json(m, &what)).collect::<Result<Vec<_>>>()?
            }
            Some(_) => return Err(unexpected(&what, "'registered_models' is not a list")),
        };
        let next_page_token = match take(&mut v, "next_page_token") {
            Some(Value::String(t)) if !t.is_empty() => Some(t),
            _ => None,
        };
        Ok(crate::registry::Page { items, next_page_token })
    }

    /// Every registered model except prompts, all pages, in the server's order (by name). A
    /// server whose filter grammar lacks `!=` on tags is asked again without the prompt filter.
    pub async fn list_registered_models(&self) -> Result<Vec<RegisteredModel>> {
        const PAGE: usize = 1000;
        const MAX_PAGES: usize = 1000;
        let mut filter = NOT_A_PROMPT;
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = match self.search_registered_models(filter, PAGE, &[], token.as_deref()).await {
                Err(RegistryError::InvalidParameter(e)) if !filter.is_empty() && token.is_none() => {
                    tracing::debug!(error = %e, "the registry refused the prompt filter; listing without it");
                    filter = "";
                    continue;
                }
                other => other?,
            };
            all.extend(page.items);
            match page.next_page_token {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        Ok(all)
    }

    /// `POST registered-models/set-tag`.
    pub async fn set_registered_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let body = json!({ "name": name, "key": key, "value": value });
        self.call(Method::POST, "registered-models/set-tag", &[], Some(&body)).await.map(drop)
    }

    /// `DELETE registered-models/delete-tag`.
    pub async fn delete_registered_model_tag(&self, name: &str, key: &str) -> Result<()> {
        let body = json!({ "name": name, "key": key });
        self.call(Method::DELETE, "registered-models/delete-tag", &[], Some(&body)).await.map(drop)
    }

    /// `POST registered-models/alias`: point `alias` at `version`.
    pub async fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        let body = json!({ "name": name, "alias": alias, "version": version.to_string() });
        self.call(Method::POST, "registered-models/alias", &[], Some(&body)).await.map(drop)
    }

    /// `DELETE registered-models/alias` (MLflow answers `{}` for an alias that is not set).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        let body = json!({ "name": name, "alias": alias });
        self.call(Method::DELETE, "registered-models/alias", &[], Some(&body)).await.map(drop)
    }

    /// `POST model-versions/create`. The server may answer before the version is usable
    /// (`status: PENDING_REGISTRATION`); poll [`RestRegistry::get_model_version`] until it settles.
    pub async fn create_model_version(&self, req: &CreateModelVersion) -> Result<ModelVersion> {
        let mut body = json!({ "name": req.name, "source": req.source });
        for (key, value) in [("run_id", &req.run_id), ("model_id", &req.model_id), ("description", &req.description)] {
            if !value.is_empty() {
                body[key] = json!(value);
            }
        }
        if !req.tags.is_empty() {
            body["tags"] = tags_json(&req.tags);
        }
        let (what, mut v) = self.call(Method::POST, "model-versions/create", &[], Some(&body)).await?;
        let mv = take(&mut v, "model_version").ok_or_else(|| unexpected(&what, "no 'model_version'"))?;
        version_from_json(mv, &what)
    }

    /// `PATCH model-versions/update`: set the description.
    pub async fn update_model_version(&self, name: &str, version: u64, description: &str) -> Result<ModelVersion> {
        let body = json!({ "name": name, "version": version.to_string(), "description": description });
        let (what, mut v) = self.call(Method::PATCH, "model-versions/update", &[], Some(&body)).await?;
        let mv = take(&mut v, "model_version").ok_or_else(|| unexpected(&what, "no 'model_version'"))?;
        version_from_json(mv, &what)
    }

    /// `DELETE model-versions/delete`.
    pub async fn delete_model_version(&self, name: &str, version: u64) -> Result<()> {
        let body = json!({ "name": name, "version": version.to_string() });
        self.call(Method::DELETE, "model-versions/delete", &[], Some(&body)).await.map(drop)
    }

    /// `POST model-versions/transition-stage`.
    pub async fn transition_model_version_stage(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing_versions: bool,
    ) -> Result<ModelVersion> {
        let body = json!({
            "name": name,
            "version": version.to_string(),
            "stage": stage.as_str(),
            "archive_existing_versions": archive_existing_versions,
        });
        let (what, mut v) = self.call(Method::POST, "model-versions/transition-stage", &[], Some(&body)).await?;
        let mv = take(&mut v, "model_version").ok_or_else(|| unexpected(&what, "no 'model_version'"))?;
        version_from_json(mv, &what)
    }

    /// `POST model-versions/set-tag`.
    pub async fn set_model_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()> {
        let body = json!({ "name": name, "version": version.to_string(), "key": key, "value": value });
        self.call(Method::POST, "model-versions/set-tag", &[], Some(&body)).await.map(drop)
    }

    /// `DELETE model-versions/delete-tag`.
    pub async fn delete_model_version_tag(&self, name: &str, version: u64, key: &str) -> Result<()> {
        let body = json!({ "name": name, "version": version.to_string(), "key": key });
        self.call(Method::DELETE, "model-versions/delete-tag", &[], Some(&body)).await.map(drop)
    }

    /// `POST logged-models`: a new MLflow 3 logged model (status `LOGGED_MODEL_PENDING`) in
    /// `experiment_id`, whose files are then uploaded to its `artifact_uri`.
    pub async fn create_logged_model(&self, experiment_id: &str, name: &str, tags: &[Tag]) -> Result<LoggedModelRef> {
        let mut body = json!({ "experiment_id": experiment_id, "name": name });
        if !tags.is_empty() {
            body["tags"] = tags_json(tags);
        }
        let (what, mut v) = self.call(Method::POST, "logged-models", &[], Some(&body)).await?;
        let mut info = take(&mut v, "model")
            .and_then(|mut m| take(&mut m, "info"))
            .ok_or_else(|| unexpected(&what, "no 'model.info'"))?;
        let model_id = match take(&mut info, "model_id") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return Err(unexpected(&what, "no 'model.info.model_id'")),
        };
        match take(&mut info, "artifact_uri").or_else(|| take(&mut info, "artifact_location")) {
            Some(Value::String(artifact_uri)) if !artifact_uri.is_empty() => {
                Ok(LoggedModelRef { model_id, artifact_uri })
            }
            _ => Err(unexpected(&what, "no 'model.info.artifact_uri'")),
        }
    }

    /// `PATCH logged-models/<id>`: set the status, `LOGGED_MODEL_READY` once its files are up
    /// (or `LOGGED_MODEL_UPLOAD_FAILED`).
    pub async fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<()> {
        let path = format!("logged-models/{}", segment(model_id));
        let body = json!({ "model_id": model_id, "status": status });
        self.call(Method::PATCH, &path, &[], Some(&body)).await.map(drop)
    }

    /// `PUT <url>` of an artifact proxy (`…/api/2.0/mlflow-artifacts/artifacts/<path>`), the
    /// body streamed from `content` with its length set; retried like the API calls, reading the
    /// file again each time. `on_progress` gets the bytes sent so far in the current attempt.
    pub async fn upload_artifact(&self, url: &Url, content: &Upload, on_progress: &ProgressFn) -> Result<()> {
        let http = &self.http;
        let what = format!("PUT {url}");
        let what_ref = what.as_str();
        with_retries(http.retry_policy(), &what, || async move {
            let (body, len) = match content {
                Upload::Bytes(b) => (reqwest::Body::from(b.clone()), b.len() as u64),
                Upload::File(path) => {
                    let file = match tokio::fs::File::open(path).await {
                        Ok(f) => f,
                        Err(e) => return Step::Fail(RegistryError::Io(annotate(e, path))),
                    };
                    let len = match file.metadata().await {
                        Ok(m) => m.len(),
                        Err(e) => return Step::Fail(RegistryError::Io(annotate(e, path))),
                    };
                    (FileBody::body(file, len, on_progress.clone()), len)
                }
            };
            let req = http
                .request(Method::PUT, url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body);
            match req.send().await {
                Ok(resp) if resp.status().is_success() => Step::Done(()),
                Ok(resp) => {
                    let status = resp.status();
                    let after = retry_after(&resp);
                    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if RetryPolicy::retries_status(status) {
                        Step::Retry { reason: format!("answered {status}: {}", error_message(&body)), after }
                    } else {
                        Step::Fail(api_error(status, &body, what_ref))
                    }
                }
                Err(e) if e.is_builder() => {
                    Step::Fail(RegistryError::InvalidParameter(format!("cannot build the request: {e}")))
                }
                Err(e) => Step::Retry { reason: error_chain(&e), after: None },
            }
        })
        .await
    }
}

/// Told the bytes of a file sent so far (by [`RestRegistry::upload_artifact`]).
pub type ProgressFn = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

fn annotate(e: std::io::Error, path: &std::path::Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A request body read from a file as it is sent, ending after `len` bytes.
struct FileBody {
    file: tokio::fs::File,
    buf: Box<[u8]>,
    remaining: u64,
    sent: u64,
    on_progress: ProgressFn,
}

impl FileBody {
    const CHUNK: usize = 256 * 1024;

    fn body(file: tokio::fs::File, len: u64, on_progress: ProgressFn) -> reqwest::Body {
        let buf = vec![0u8; Self::CHUNK].into_boxed_slice();
        reqwest::Body::wrap(FileBody { file, buf, remaining: len, sent: 0, on_progress })
    }
}

impl hyper::body::Body for FileBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        use std::task::Poll;
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = Self::CHUNK.min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        let mut buf = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was being uploaded",
            )))),
            Poll::Ready(Ok(())) => {
                let chunk = bytes::Bytes::copy_from_slice(buf.filled());
                this.remaining -= chunk.len() as u64;
                this.sent += chunk.len() as u64;
                (this.on_progress)(this.sent);
                Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}
