//! MLflow's Model Registry REST API (mounted under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow`),
//! answering in MLflow's JSON shapes with MLflow's HTTP methods:
//!
//! - `registered-models/`: `create` (POST), `get` (GET), `rename` (POST), `update` (PATCH),
//!   `delete` (DELETE), `search` (GET), `get-latest-versions` (GET, POST), `set-tag` (POST),
//!   `delete-tag` (DELETE), `alias` (POST set, GET get, DELETE delete)
//! - `model-versions/`: `create` (POST; test-loads ONNX models, see [`super::registration`]),
//!   `get` (GET), `update` (PATCH), `delete` (DELETE), `search` (GET), `get-download-uri` (GET),
//!   `transition-stage` (POST), `set-tag` (POST), `delete-tag` (DELETE)

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::{delete, get, patch, post};
use axum::Router;

use super::params::Params;
use super::reply::{empty, one, JsonReply, Reply};
use super::state::{blocking, RegistryState};
use crate::registration::{self, rest_create::CreateVersion};
use crate::registry::{ModelVersion, RegisteredModel, RegistryError, Stage};

/// MLflow's defaults and limits for `max_results`.
const MODELS_DEFAULT: usize = 100;
const MODELS_LIMIT: usize = 1000;
const VERSIONS_DEFAULT: usize = 10_000;
const VERSIONS_LIMIT: usize = 200_000;

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/registered-models/create", post(create_model))
        .route("/registered-models/get", get(get_model))
        .route("/registered-models/rename", post(rename_model))
        .route("/registered-models/update", patch(update_model))
        .route("/registered-models/delete", delete(delete_model))
        .route("/registered-models/search", get(search_models))
        .route("/registered-models/get-latest-versions", get(latest_versions).post(latest_versions))
        .route("/registered-models/set-tag", post(set_model_tag))
        .route("/registered-models/delete-tag", delete(delete_model_tag))
        .route("/registered-models/alias", post(set_alias).get(get_by_alias).delete(delete_alias))
        .route("/model-versions/create", post(create_version))
        .route("/model-versions/get", get(get_version))
        .route("/model-versions/update", patch(update_version))
        .route("/model-versions/delete", delete(delete_version))
        .route("/model-versions/search", get(search_versions))
        .route("/model-versions/get-download-uri", get(download_uri))
        .route("/model-versions/transition-stage", post(transition_stage))
        .route("/model-versions/set-tag", post(set_version_tag))
        .route("/model-versions/delete-tag", delete(delete_version_tag))
}

/// MLflow leaves `aliases` off the versions listed in `latest_versions`.
fn without_version_aliases(mut rm: RegisteredModel) -> RegisteredModel {
    for v in &mut rm.latest_versions {
        v.aliases.clear();
    }
    rm
}

fn model_reply(rm: RegisteredModel) -> Reply {
    one("registered_model", &without_version_aliases(rm))
}

fn version_reply(mv: ModelVersion) -> Reply {
    one("model_version", &mv)
}

// -------------------------------------------------------------------- registered models

async fn create_model(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let description = p.str_or_empty("description")?;
    let tags = p.tags("tags")?;
    let rm = blocking(move || Ok(st.store.create_registered_model(&name, &description, &tags)?)).await?;
    model_reply(rm)
}

async fn get_model(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    model_reply(blocking(move || Ok(st.store.get_registered_model(&name)?)).await?)
}

async fn rename_model(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let new_name = p.required_str("new_name")?;
    model_reply(blocking(move || Ok(st.store.rename_registered_model(&name, &new_name)?)).await?)
}

async fn update_model(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let description = p.str_or_empty("description")?;
    model_reply(blocking(move || Ok(st.store.update_registered_model(&name, &description)?)).await?)
}

async fn delete_model(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    blocking(move || Ok(registration::delete_model(&st.store, &st.artifacts, &name)?)).await?;
    empty()
}

async fn search_models(State(st): State<RegistryState>, p: Params) -> Reply {
    let filter = p.str_or_empty("filter")?;
    let max_results = p.max_results(MODELS_DEFAULT, MODELS_LIMIT)?;
    let order_by = p.str_list("order_by")?;
    let token = p.opt_str("page_token")?;
    let page =
        blocking(move || Ok(st.store.search_registered_models(&filter, max_results, &order_by, token.as_deref())?))
            .await?;
    let models: Vec<RegisteredModel> = page.items.into_iter().map(without_version_aliases).collect();
    JsonReply::new().list("registered_models", &models)?.opt("next_page_token", page.next_page_token.as_ref())?.finish()
}

async fn latest_versions(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let stages = p.str_list("stages")?.iter().map(|s| Stage::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let versions = blocking(move || Ok(st.store.get_latest_versions(&name, &stages)?)).await?;
    versions_reply(versions, None)
}

async fn set_model_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let key = p.required_str("key")?;
    let value = p.str_or_empty("value")?;
    blocking(move || Ok(st.store.set_registered_model_tag(&name, &key, &value)?)).await?;
    empty()
}

async fn delete_model_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let key = p.required_str("key")?;
    blocking(move || Ok(st.store.delete_registered_model_tag(&name, &key)?)).await?;
    empty()
}

async fn set_alias(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let alias = p.required_str("alias")?;
    let version = p.version()?;
    blocking(move || Ok(st.store.set_alias(&name, &alias, version)?)).await?;
    empty()
}

async fn get_by_alias(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let alias = p.required_str("alias")?;
    version_reply(blocking(move || Ok(st.store.get_model_version_by_alias(&name, &alias)?)).await?)
}

async fn delete_alias(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let alias = p.required_str("alias")?;
    blocking(move || match st.store.delete_alias(&name, &alias) {
        // MLflow answers `{}` for an alias that was not set.
        Ok(()) | Err(RegistryError::InvalidParameter(_)) => Ok(()),
        Err(e) => Err(e.into()),
    })
    .await?;
    empty()
}

// -------------------------------------------------------------------- model versions

async fn create_version(State(st): State<RegistryState>, headers: HeaderMap, p: Params) -> Reply {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string);
    let req = CreateVersion {
        name: p.required_str("name")?,
        source: p.required_str("source")?,
        run_id: p.str_or_empty("run_id")?,
        run_link: p.str_or_empty("run_link")?,
        description: p.str_or_empty("description")?,
        tags: p.tags("tags")?,
        model_id: p.str_or_empty("model_id")?,
        host,
    };
    version_reply(registration::rest_create::create_version(&st.registrar, req).await?)
}

async fn get_version(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    version_reply(blocking(move || Ok(st.store.get_model_version(&name, version)?)).await?)
}

async fn update_version(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    let description = p.str_or_empty("description")?;
    version_reply(blocking(move || Ok(st.store.update_model_version(&name, version, &description)?)).await?)
}

async fn delete_version(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    blocking(move || Ok(registration::delete_version(&st.store, &st.artifacts, &name, version)?)).await?;
    empty()
}

async fn search_versions(State(st): State<RegistryState>, p: Params) -> Reply {
    let filter = p.str_or_empty("filter")?;
    let max_results = p.max_results(VERSIONS_DEFAULT, VERSIONS_LIMIT)?;
    let order_by = p.str_list("order_by")?;
    let token = p.opt_str("page_token")?;
    let page =
        blocking(move || Ok(st.store.search_model_versions(&filter, max_results, &order_by, token.as_deref())?))
            .await?;
    // As MLflow: versions found by a search carry no aliases.
    let items = page
        .items
        .into_iter()
        .map(|mut v| {
            v.aliases.clear();
            v
        })
        .collect();
    versions_reply(items, page.next_page_token)
}

fn versions_reply(versions: Vec<ModelVersion>, next_page_token: Option<String>) -> Reply {
    JsonReply::new().list("model_versions", &versions)?.opt("next_page_token", next_page_token.as_ref())?.finish()
}

async fn download_uri(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    let mv = blocking(move || Ok(st.store.get_model_version(&name, version)?)).await?;
    one("artifact_uri", mv.download_location())
}

async fn transition_stage(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    let stage = Stage::parse(&p.required_str("stage")?)?;
    let archive = p.opt_bool("archive_existing_versions")?.unwrap_or(false);
    version_reply(blocking(move || Ok(st.store.transition_stage(&name, version, stage, archive)?)).await?)
}

async fn set_version_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    let key = p.required_str("key")?;
    let value = p.str_or_empty("value")?;
    blocking(move || Ok(st.store.set_model_version_tag(&name, version, &key, &value)?)).await?;
    empty()
}

async fn delete_version_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let version = p.version()?;
    let key = p.required_str("key")?;
    blocking(move || Ok(st.store.delete_model_version_tag(&name, version, &key)?)).await?;
    empty()
}
