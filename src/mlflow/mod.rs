//! The client side of MLflow's REST API: a remote MLflow-compatible Model Registry, spoken to the way
//! MLflow's own client does: the same endpoints, the same environment variables for
//! credentials, TLS, timeouts and retries, and the same client-side resolution of `models:/`
//! URIs (REFERENCE.md, "Client-side resolution of models:/").
//!
//! Endpoints used (under `<base>/api/2.0/mlflow/`):
//! - `GET registered-models/get`, `POST registered-models/get-latest-versions`,
//!   `GET registered-models/alias`
//! - `GET model-versions/get`, `GET model-versions/search`, `GET model-versions/get-download-uri`
//! - `GET runs/get`, `GET logged-models/<id>` (to find the files behind `runs:/` and
//!   `models:/m-<id>` download URIs)
//! - writes, for `regserve models ... --registry-uri`: `registered-models/` `create`, `update`,
//!   `rename`, `delete`, `search`, `set-tag`, `delete-tag`, `alias` (POST, DELETE);
//!   `model-versions/` `create`, `update`, `delete`, `transition-stage`, `set-tag`,
//!   `delete-tag`; `POST logged-models`, `PATCH logged-models/<id>`; and `PUT` of files to the
//!   artifact proxy (`<base>/api/2.0/mlflow-artifacts/artifacts/<path>`)
//!
//! - [`http`]: the transport, [`HttpClient`] (auth, TLS, timeouts, retries with backoff); the
//!   artifact downloads in [`crate::artifact::fetch`] go through the same one
//! - this module: [`RestRegistry`] and its reads, with client-side resolution of `models:/` URIs
//! - `write`: registry writes, logged models and artifact uploads ([`Upload`])
//! - [`webhooks`]: the webhook deliveries `regserve server` sends, as MLflow's server sends them
//!   (signature, retries, destination checks), and the worker that drains the outbox
//!
//! It sits above [`crate::registry`] (whose data model and errors it speaks) and below
//! `artifact`, `manager` and the CLI, which use it.

pub mod http;
pub mod webhooks;
mod write;

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

pub use http::{
    api_error, redact_url, Auth, HttpClient, HttpSettings, RetryPolicy, Secret, ENV_BACKOFF_FACTOR, ENV_BACKOFF_JITTER,
    ENV_INSECURE_TLS, ENV_MAX_RETRIES, ENV_PASSWORD, ENV_SERVER_CERT_PATH, ENV_TIMEOUT, ENV_TOKEN, ENV_USERNAME,
};
pub use write::{CreateModelVersion, LoggedModelRef, ProgressFn, Upload, NOT_A_PROMPT};

use crate::registry::{ModelVersion, RegisteredModel, RegistryError, Stage};
use crate::uri::{ModelUri, Selector};
use http::{append_segments, error_chain, is_missing_endpoint, snippet};

type Result<T, E = RegistryError> = std::result::Result<T, E>;

// ------------------------------------------------------------------------ JSON shapes

/// Fill what MLflow-compatible servers may leave out, and accept int64 timestamps as strings
/// (proto3 JSON), so a `ModelVersion` always parses.
fn fill_version_defaults(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for key in ["creation_timestamp", "last_updated_timestamp"] {
        let parsed = match obj.get(key) {
            None | Some(Value::Null) => Some(0),
            Some(Value::String(s)) => Some(s.parse::<i64>().unwrap_or(0)),
            _ => None,
        };
        if let Some(n) = parsed {
            obj.insert(key.into(), json!(n));
        }
    }
    for (key, default) in [("current_stage", "None"), ("status", "READY")] {
        if matches!(obj.get(key), None | Some(Value::Null)) {
            obj.insert(key.into(), json!(default));
        }
    }
}

fn version_from_json(mut v: Value, what: &str) -> Result<ModelVersion> {
    fill_version_defaults(&mut v);
    serde_json::from_value(v).map_err(|e| unexpected(what, &e.to_string()))
}

fn model_from_json(mut v: Value, what: &str) -> Result<RegisteredModel> {
    fill_version_defaults(&mut v);
    if let Some(Value::Array(versions)) = v.get_mut("latest_versions") {
        versions.iter_mut().for_each(fill_version_defaults);
    }
    serde_json::from_value(v).map_err(|e| unexpected(what, &e.to_string()))
}

fn unexpected(what: &str, why: &str) -> RegistryError {
    RegistryError::Unavailable(format!("{what}: the registry's answer is not what an MLflow registry sends: {why}"))
}

/// `key` taken out of a JSON object answer.
fn take(v: &mut Value, key: &str) -> Option<Value> {
    v.get_mut(key).map(Value::take).filter(|x| !x.is_null())
}

/// A search filter selecting one model by name, quoted the way MLflow's parser reads it.
pub fn name_filter(name: &str) -> String {
    if name.contains('\'') {
        format!("name=\"{name}\"")
    } else {
        format!("name='{name}'")
    }
}

// ------------------------------------------------------------------------ the registry

/// A remote MLflow-compatible Model Registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RestRegistry {
    http: HttpClient,
}

impl RestRegistry {
    /// The registry at `base_url` (`http(s)://host[:port][/prefix]`).
    pub fn new(base_url: &str, settings: HttpSettings) -> Result<RestRegistry> {
        Ok(RestRegistry { http: HttpClient::new(base_url, settings)? })
    }

    /// The registry at `base_url`, with credentials, TLS, timeout and retries from MLflow's
    /// environment variables.
    pub fn from_env(base_url: &str) -> Result<RestRegistry> {
        Self::new(base_url, HttpSettings::from_env()?)
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn base_url(&self) -> &Url {
        self.http.base_url()
    }

    /// One API call: `Ok(Ok(body))` for a success, `Ok(Err((status, body)))` for a final
    /// failure answer, `Err` when the registry could not be reached.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(String, Result<Vec<u8>, (StatusCode, Vec<u8>)>)> {
        let mut url = self.http.endpoint(&format!("api/2.0/mlflow/{path}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let what = format!("{method} {url}");
        let timeout = self.http.timeout();
        let resp = self
            .http
            .send(&what, || {
                let req = self.http.request(method.clone(), url.clone()).timeout(timeout);
                match body {
                    Some(b) => req.json(b),
                    None => req,
                }
            })
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            RegistryError::Unavailable(format!("{what}: reading the answer failed: {}", error_chain(&e)))
        })?;
        let outcome = if status.is_success() { Ok(bytes.to_vec()) } else { Err((status, bytes.to_vec())) };
        Ok((what, outcome))
    }

    /// One API call answered with a JSON object.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(String, Value)> {
        let (what, outcome) = self.exchange(method, path, query, body).await?;
        match outcome {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| unexpected(&what, &format!("{e} in '{}'", snippet(&bytes))))?;
                if !v.is_object() {
                    return Err(unexpected(&what, "the answer is not a JSON object"));
                }
                Ok((what, v))
            }
            Err((status, bytes)) => Err(api_error(status, &bytes, &what)),
        }
    }

    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        let (what, mut v) = self.call(Method::GET, "registered-models/get", &[("name", name)], None).await?;
        let m = take(&mut v, "registered_model").ok_or_else(|| unexpected(&what, "no 'registered_model'"))?;
        model_from_json(m, &what)
    }

    pub async fn get_model_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        let version = version.to_string();
        let (what, mut v) =
            self.call(Method::GET, "model-versions/get", &[("name", name), ("version", &version)], None).await?;
        let mv = take(&mut v, "model_version").ok_or_else(|| unexpected(&what, "no 'model_version'"))?;
        version_from_json(mv, &what)
    }

    /// The latest version in each of `stages` (all stages when empty), as MLflow's
    /// `get_latest_versions`: `POST registered-models/get-latest-versions`.
    pub async fn get_latest_versions(&self, name: &str, stages: &[Stage]) -> Result<Vec<ModelVersion>> {
        let body = latest_versions_body(name, stages);
        let (what, mut v) = self.call(Method::POST, "registered-models/get-latest-versions", &[], Some(&body)).await?;
        versions_of(&mut v, &what)
    }

    pub async fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let (what, mut v) =
            self.call(Method::GET, "registered-models/alias", &[("name", name), ("alias", alias)], None).await?;
        let mv = take(&mut v, "model_version").ok_or_else(|| unexpected(&what, "no 'model_version'"))?;
        version_from_json(mv, &what)
    }

    /// Every version matching `filter` (MLflow's search grammar, e.g. `name='fraud'`), all pages.
    pub async fn search_model_versions(&self, filter: &str) -> Result<Vec<ModelVersion>> {
        const MAX_PAGES: usize = 1000;
        let mut all = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("filter", filter), ("max_results", "10000")];
            if !token.is_empty() {
                query.push(("page_token", &token));
            }
            let (what, mut v) = self.call(Method::GET, "model-versions/search", &query, None).await?;
            all.extend(versions_of(&mut v, &what)?);
            match take(&mut v, "next_page_token") {
                Some(Value::String(t)) if !t.is_empty() && t != token => token = t,
                _ => return Ok(all),
            }
        }
        Ok(all)
    }

    /// Where the files of a version are (`mlflow-artifacts:/...`, `runs:/...`, a path, ...).
    pub async fn get_model_version_download_uri(&self, name: &str, version: u64) -> Result<String> {
        let version = version.to_string();
        let (what, mut v) = self
            .call(Method::GET, "model-versions/get-download-uri", &[("name", name), ("version", &version)], None)
            .await?;
        match take(&mut v, "artifact_uri") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(unexpected(&what, "no 'artifact_uri'")),
        }
    }

    /// The artifact root of a run (`run.info.artifact_uri`), for `runs:/<id>/<path>`.
    pub async fn get_run_artifact_uri(&self, run_id: &str) -> Result<String> {
        let (what, mut v) = self.call(Method::GET, "runs/get", &[("run_id", run_id)], None).await?;
        let uri = take(&mut v, "run")
            .and_then(|mut run| take(&mut run, "info"))
            .and_then(|mut info| take(&mut info, "artifact_uri"));
        match uri {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(unexpected(&what, "no 'run.info.artifact_uri'")),
        }
    }

    /// The artifact location of an MLflow 3 logged model (`models:/m-<id>`).
    pub async fn get_logged_model_artifact_uri(&self, model_id: &str) -> Result<String> {
        let path = format!("logged-models/{}", segment(model_id));
        let (what, mut v) = self.call(Method::GET, &path, &[], None).await?;
        let mut info = take(&mut v, "model")
            .and_then(|mut m| take(&mut m, "info"))
            .ok_or_else(|| unexpected(&what, "no 'model.info'"))?;
        // The proto field is `artifact_uri`; MLflow's Python entity calls it `artifact_location`.
        match take(&mut info, "artifact_uri").or_else(|| take(&mut info, "artifact_location")) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(unexpected(&what, "no 'model.info.artifact_uri'")),
        }
    }

    /// The latest version per stage; where a server lacks `get-latest-versions`, computed from
    /// `search_model_versions` the same way (highest version per stage).
    async fn latest_per_stage(&self, name: &str, stages: &[Stage]) -> Result<Vec<ModelVersion>> {
        let body = latest_versions_body(name, stages);
        let (what, outcome) =
            self.exchange(Method::POST, "registered-models/get-latest-versions", &[], Some(&body)).await?;
        match outcome {
            Ok(bytes) => {
                let mut v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| unexpected(&what, &format!("{e} in '{}'", snippet(&bytes))))?;
                versions_of(&mut v, &what)
            }
            Err((status, bytes)) if is_missing_endpoint(status, &bytes) => {
                tracing::debug!(%what, %status, "no get-latest-versions; searching versions instead");
                // A missing model must still say so.
                self.get_registered_model(name).await?;
                let all = self.search_model_versions(&name_filter(name)).await?;
                Ok(latest_of_each_stage(all, name, stages))
            }
            Err((status, bytes)) => Err(api_error(status, &bytes, &what)),
        }
    }

    /// The version `uri` selects now, by MLflow's client-side rules: a number is that version;
    /// `latest` is the highest version of any stage; a stage is the highest version in it; an
    /// alias is `GET registered-models/alias`.
    pub async fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion> {
        let name = uri.name.as_str();
        match &uri.selector {
            Selector::Version(v) => self.get_model_version(name, *v).await,
            Selector::Alias(alias) => self.get_model_version_by_alias(name, alias).await,
            Selector::Latest => self
                .latest_per_stage(name, &[])
                .await?
                .into_iter()
                .max_by_key(|v| v.version)
                .ok_or_else(|| RegistryError::NotFound(format!("No versions of model with name '{name}' found"))),
            Selector::Stage(stage) => {
                self.latest_per_stage(name, &[*stage]).await?.into_iter().max_by_key(|v| v.version).ok_or_else(|| {
                    RegistryError::NotFound(format!(
                        "No versions of model with name '{name}' and stage '{stage}' found"
                    ))
                })
            }
        }
    }
}

fn latest_versions_body(name: &str, stages: &[Stage]) -> Value {
    if stages.is_empty() {
        json!({ "name": name })
    } else {
        json!({ "name": name, "stages": stages.iter().map(|s| s.as_str()).collect::<Vec<_>>() })
    }
}

/// `model_versions` of an answer (absent when empty, as MLflow leaves empty lists out).
fn versions_of(v: &mut Value, what: &str) -> Result<Vec<ModelVersion>> {
    match take(v, "model_versions") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.into_iter().map(|item| version_from_json(item, what)).collect(),
        Some(_) => Err(unexpected(what, "'model_versions' is not a list")),
    }
}

/// The highest version of each stage in `stages` (all when empty), from a full list.
fn latest_of_each_stage(all: Vec<ModelVersion>, name: &str, stages: &[Stage]) -> Vec<ModelVersion> {
    let mut best: Vec<ModelVersion> = Vec::new();
    for v in all.into_iter().filter(|v| v.name == name) {
        if !stages.is_empty() && !stages.contains(&v.current_stage) {
            continue;
        }
        match best.iter_mut().find(|b| b.current_stage == v.current_stage) {
            Some(b) if b.version < v.version => *b = v,
            Some(_) => {}
            None => best.push(v),
        }
    }
    best
}

/// One path segment, percent-encoded.
fn segment(s: &str) -> String {
    let mut url = Url::parse("http://x/").expect("a constant URL; this is a bug");
    append_segments(&mut url, [s]);
    url.path().trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::VersionStatus;

    #[test]
    fn versions_parse_leniently() {
        let v = version_from_json(json!({"name": "m", "version": "3", "creation_timestamp": "17", "source": "s"}), "x")
            .unwrap();
        assert_eq!(v.version, 3);
        assert_eq!(v.creation_timestamp, 17);
        assert_eq!(v.current_stage, Stage::None);
        assert_eq!(v.status, VersionStatus::Ready);
        let e = version_from_json(json!({"name": "m"}), "GET x").unwrap_err();
        assert!(matches!(e, RegistryError::Unavailable(_)), "{e}");
        let mut answer = json!({});
        assert!(versions_of(&mut answer, "x").unwrap().is_empty());
    }

    #[test]
    fn latest_of_each_stage_picks_the_highest() {
        let mk = |version: u64, stage: Stage| ModelVersion {
            version,
            current_stage: stage,
            ..version_from_json(json!({"name": "m", "version": "1"}), "x").unwrap()
        };
        let all = vec![mk(1, Stage::Production), mk(3, Stage::Archived), mk(2, Stage::Production), mk(4, Stage::None)];
        let mut latest: Vec<u64> = latest_of_each_stage(all.clone(), "m", &[]).iter().map(|v| v.version).collect();
        latest.sort();
        assert_eq!(latest, [2, 3, 4]);
        let prod = latest_of_each_stage(all, "m", &[Stage::Production]);
        assert_eq!(prod.len(), 1);
        assert_eq!(prod[0].version, 2);
        assert_eq!(name_filter("a"), "name='a'");
        assert_eq!(name_filter("o'k"), "name=\"o'k\"");
    }
}
