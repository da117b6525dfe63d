//! The part of MLflow's tracking REST API the MLflow client needs to log and register models
//! (mounted under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow`):
//!
//! - `experiments/`: `get`, `get-by-name` (GET), `create`, `search` (POST; GET too),
//!   `delete`, `restore`, `update` (rename), `set-experiment-tag`, `delete-experiment-tag` (POST)
//! - `runs/`: `create`, `update`, `delete`, `restore`, `log-batch`, `log-parameter`,
//!   `log-metric`, `set-tag`, `delete-tag`, `search`, `outputs` (POST), `get` (GET);
//!   `metrics/get-history`, `metrics/get-history-bulk-interval` (GET), and
//!   `metrics/get-history-bulk` (GET, under `/ajax-api` only, as MLflow serves it)
//! - `logged-models`: create (POST), `{id}` get (GET), finalize (PATCH) and delete (DELETE),
//!   `{id}/params` (POST), `{id}/tags` set (PATCH), `{id}/tags/{key}` delete (DELETE), `search`
//!   (POST)
//! - `/api/3.0/mlflow/server-info` (GET)

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::params::Params;
use super::reply::{empty, one, JsonReply, Reply};
use super::state::{blocking, RegistryState};
use crate::registration::rest_create::is_this_server;
use crate::registry::{RegistryError, Tag};
use crate::tracking::metrics::{BULK_MAX_RESULTS, BULK_MAX_RUNS, HISTORY_PAGE_MAX, SAMPLE_MAX_RESULTS};
use crate::tracking::{
    DatasetCriterion, LoggedModelOrder, Metric, ModelOutput, NewLoggedModel, NewRun, Paged, ViewType,
};

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/experiments/get", get(get_experiment))
        .route("/experiments/get-by-name", get(get_experiment_by_name))
        .route("/experiments/create", post(create_experiment))
        .route("/experiments/search", post(search_experiments).get(search_experiments))
        .route("/experiments/set-experiment-tag", post(set_experiment_tag))
        .route("/experiments/delete-experiment-tag", post(delete_experiment_tag))
        .route("/experiments/delete", post(delete_experiment))
        .route("/experiments/restore", post(restore_experiment))
        .route("/experiments/update", post(update_experiment))
        .route("/runs/create", post(create_run))
        .route("/runs/get", get(get_run))
        .route("/runs/update", post(update_run))
        .route("/runs/delete", post(delete_run))
        .route("/runs/restore", post(restore_run))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-parameter", post(log_parameter))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/set-tag", post(set_run_tag))
        .route("/runs/delete-tag", post(delete_run_tag))
        .route("/runs/search", post(search_runs))
        .route("/runs/outputs", post(log_outputs))
        .route("/metrics/get-history", get(metric_history))
        .route("/metrics/get-history-bulk-interval", get(metric_history_sampled))
        .route("/logged-models", post(create_logged_model))
        .route("/logged-models/search", post(search_logged_models))
        .route(
            "/logged-models/{model_id}",
            get(get_logged_model).patch(finalize_logged_model).delete(delete_logged_model),
        )
        .route("/logged-models/{model_id}/params", post(log_logged_model_params))
        .route("/logged-models/{model_id}/tags", patch(set_logged_model_tags))
        .route("/logged-models/{model_id}/tags/{key}", axum::routing::delete(delete_logged_model_tag))
}

/// Routes MLflow serves under `/ajax-api/2.0/mlflow` only (for its web UI).
pub fn ajax_routes() -> Router<RegistryState> {
    Router::new().route("/metrics/get-history-bulk", get(metric_history_bulk))
}

/// `GET /api/3.0/mlflow/server-info`, as `mlflow server` 3.17 answers with its SQL store.
pub async fn server_info() -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {"gateway": false}
    }))
}

fn paged_reply<T: serde::Serialize>(key: &str, page: Paged<T>) -> Reply {
    JsonReply::new().list(key, &page.items)?.opt("next_page_token", page.next_page_token.as_ref())?.finish()
}

/// `run_id`, or the older `run_uuid`.
fn run_id(p: &Params) -> Result<String, RegistryError> {
    match p.opt_str("run_id")?.filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => p.required_str("run_uuid").map_err(|_| {
            RegistryError::InvalidParameter(
                "Missing value for required parameter 'run_id'. See the API docs for more information about request parameters."
                    .into(),
            )
        }),
    }
}

/// A metric of `runs/log-metric` (`path` "") or of `runs/log-batch` (`path` "metrics[i]"):
/// `key`, `value` and `timestamp` are required, as MLflow's handlers check them; the value may
/// be a number or a string such as "NaN" or "Infinity" (how MLflow's client sends those).
fn metric_of(p: &Params, path: &str) -> Result<Metric, RegistryError> {
    for field in ["key", "value", "timestamp"] {
        let missing = match p.0.get(field) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if missing {
            let at = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
            return Err(RegistryError::InvalidParameter(format!(
                "Missing value for required parameter '{at}'. See the API docs for more information about request parameters."
            )));
        }
    }
    // Present (checked above), so the accessors answer a value or a type error.
    let empty = || RegistryError::InvalidParameter(format!("An empty metric value or timestamp at '{path}'."));
    let m = Metric {
        key: p.required_str("key")?,
        value: p.opt_f64("value")?.ok_or_else(empty)?,
        timestamp: p.opt_i64("timestamp")?.ok_or_else(empty)?,
        step: p.opt_i64("step")?.unwrap_or(0),
        model_id: p.opt_str("model_id")?.filter(|s| !s.is_empty()),
        run_id: None,
        dataset_name: p.opt_str("dataset_name")?.filter(|s| !s.is_empty()),
        dataset_digest: p.opt_str("dataset_digest")?.filter(|s| !s.is_empty()),
    };
    crate::tracking::metrics::validate(&m, path)?;
    Ok(m)
}

// -------------------------------------------------------------------- experiments

async fn get_experiment(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = p.required_str("experiment_id")?;
    let e = blocking(move || Ok(st.tracking.get_experiment(&id)?)).await?;
    one("experiment", &e)
}

async fn get_experiment_by_name(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("experiment_name")?;
    let e = blocking(move || Ok(st.tracking.get_experiment_by_name(&name)?)).await?;
    one("experiment", &e)
}

/// Object stores an experiment's artifacts may live in, besides this server's artifact root:
/// stored as given (as MLflow stores them) for the object-storage support to come; until then
/// nothing here reads or writes them (a version made from them is "not test-loaded", `serve`
/// and the CLI's uploads say they cannot fetch or upload there).
const OBJECT_STORE_SCHEMES: [&str; 3] = ["s3", "gs", "wasbs"];
/// MLflow's `MLFLOW_ARTIFACT_LOCATION_MAX_LENGTH` default.
const MAX_ARTIFACT_LOCATION: usize = 2048;

/// An experiment's `artifact_location`: MLflow's checks first, with its messages (fragments,
/// `runs:/`, length), then regserve's: this server's artifact root (`mlflow-artifacts:/...`,
/// with no host or this server's) or an object store (`s3://bucket/...`, `gs://`, `wasbs://`);
/// no query string, no `..`. Local paths and `file:` are refused: the server would read the
/// files a client named, and MLflow resolves relative ones against the server's own folder.
fn check_artifact_location(l: &str, host: Option<&str>) -> Result<(), RegistryError> {
    let invalid = |why: String| Err(RegistryError::InvalidParameter(why));
    let not_here = |why: &str| invalid(format!("Invalid artifact_location '{l}': {why}"));
    if l.contains('#') {
        return invalid("'artifact_location' URL can't include fragments or params.".into());
    }
    if l.starts_with("runs:") {
        return invalid(format!("Artifact location cannot be a runs:/ URI. Given: '{l}'"));
    }
    if l.chars().count() > MAX_ARTIFACT_LOCATION {
        return invalid(format!(
            "Invalid artifact path length. The length of the artifact path cannot be greater than {MAX_ARTIFACT_LOCATION} characters."
        ));
    }
    if l.contains('?') {
        return not_here("regserve keeps artifact locations without a query string.");
    }
    let decoded = percent_encoding::percent_decode_str(l).decode_utf8_lossy();
    if decoded.split(['/', '\\']).any(|segment| segment == "..") {
        return not_here("'..' is not allowed in an artifact location.");
    }
    const USE: &str = "leave it out (the experiment's files then go under mlflow-artifacts:/<id>) or use mlflow-artifacts:/<path>, s3://<bucket>/<path>, gs://<bucket>/<path> or wasbs://<container>@<account>.blob.core.windows.net/<path>";
    match crate::artifact::scheme_of(l) {
        None => not_here(&format!("regserve does not keep artifacts in server-local paths; {USE}.")),
        Some((scheme, _)) if scheme == "file" => {
            not_here(&format!("regserve does not keep artifacts in server-local paths; {USE}."))
        }
        Some(_) if l.starts_with(crate::artifact::SCHEME) => {
            // Its runs' and models' files must be where the artifact proxy can serve them: under
            // this server's artifact root, named without a host or with this server's.
            let rest = &l[crate::artifact::SCHEME.len()..];
            if let Some(netloc) = rest.strip_prefix("//").map(|r| r.split('/').next().unwrap_or_default()) {
                if !netloc.is_empty() && !is_this_server(netloc, "http", host) {
                    return not_here(&format!(
                        "it names the host '{netloc}', which is not this server; use mlflow-artifacts:/<path>."
                    ));
                }
            }
            Ok(())
        }
        Some((scheme, rest)) if OBJECT_STORE_SCHEMES.contains(&scheme.as_str()) => {
            let bucket = rest.strip_prefix("//").map(|r| r.split('/').next().unwrap_or_default()).unwrap_or_default();
            if bucket.is_empty() {
                return not_here(&format!("name the bucket or container: {scheme}://<bucket>/<path>."));
            }
            Ok(())
        }
        Some((scheme, _)) => not_here(&format!("regserve does not keep artifacts in '{scheme}:' locations; {USE}.")),
    }
}

async fn create_experiment(State(st): State<RegistryState>, headers: HeaderMap, p: Params) -> Reply {
    // Every parameter's type first, in MLflow's order, so errors match its; then the location.
    let name = p.required_str("name")?;
    let location = p.opt_str("artifact_location")?;
    let tags = p.tags("tags")?;
    let location = location.filter(|l| !l.is_empty()).map(|l| crate::artifact::normalize_scheme(&l).into_owned());
    if let Some(l) = location.as_deref() {
        check_artifact_location(l, headers.get(header::HOST).and_then(|v| v.to_str().ok()))?;
    }
    let id = blocking(move || Ok(st.tracking.create_experiment(&name, location.as_deref(), &tags)?)).await?;
    one("experiment_id", &id)
}

/// A `ViewType` by name (`"DELETED_ONLY"`) or by its protobuf number (`2`), as MLflow reads it.
fn view_type(p: &Params, key: &str) -> Result<ViewType, RegistryError> {
    match p.0.get(key) {
        Some(Value::Number(n)) => ViewType::parse(Some(&n.to_string())),
        _ => ViewType::parse(p.opt_str(key)?.as_deref()),
    }
}

async fn search_experiments(State(st): State<RegistryState>, p: Params) -> Reply {
    let view = view_type(&p, "view_type")?;
    let filter = p.str_or_empty("filter")?;
    let max_results = p.max_results(1000, 50_000)?;
    let order_by = p.str_list("order_by")?;
    let token = p.opt_str("page_token")?;
    let page = blocking(move || {
        Ok(st.tracking.search_experiments(view, &filter, max_results, &order_by, token.as_deref())?)
    })
    .await?;
    paged_reply("experiments", page)
}

async fn set_experiment_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = p.required_str("experiment_id")?;
    let key = p.required_str("key")?;
    let value = p.str_or_empty("value")?;
    blocking(move || Ok(st.tracking.set_experiment_tag(&id, &key, &value)?)).await?;
    empty()
}

async fn delete_experiment_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = p.required_str("experiment_id")?;
    let key = p.required_str("key")?;
    blocking(move || Ok(st.tracking.delete_experiment_tag(&id, &key)?)).await?;
    empty()
}

async fn delete_experiment(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = p.required_str("experiment_id")?;
    blocking(move || Ok(st.tracking.set_experiment_lifecycle(&id, true)?)).await?;
    empty()
}

async fn restore_experiment(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = p.required_str("experiment_id")?;
    blocking(move || Ok(st.tracking.set_experiment_lifecycle(&id, false)?)).await?;
    empty()
}

async fn update_experiment(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = p.required_str("experiment_id")?;
    let new_name = p.required_str("new_name")?;
    blocking(move || Ok(st.tracking.rename_experiment(&id, &new_name)?)).await?;
    empty()
}

// -------------------------------------------------------------------- runs

async fn create_run(State(st): State<RegistryState>, p: Params) -> Reply {
    let new = NewRun {
        experiment_id: p.opt_str("experiment_id")?.unwrap_or_else(|| "0".into()),
        user_id: p.str_or_empty("user_id")?,
        start_time: p.opt_i64("start_time")?,
        run_name: p.opt_str("run_name")?,
        tags: p.tags("tags")?,
    };
    let run = blocking(move || Ok(st.tracking.create_run(&new)?)).await?;
    one("run", &run)
}

async fn get_run(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let run = blocking(move || Ok(st.tracking.get_run(&id)?)).await?;
    one("run", &run)
}

async fn update_run(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let status = p.opt_str("status")?;
    let end_time = p.opt_i64("end_time")?;
    let name = p.opt_str("run_name")?;
    let info = blocking(move || Ok(st.tracking.update_run(&id, status.as_deref(), end_time, name.as_deref())?)).await?;
    one("run_info", &info)
}

async fn delete_run(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    blocking(move || Ok(st.tracking.set_run_lifecycle(&id, true)?)).await?;
    empty()
}

async fn restore_run(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    blocking(move || Ok(st.tracking.set_run_lifecycle(&id, false)?)).await?;
    empty()
}

async fn log_batch(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let metrics = p
        .objects("metrics")?
        .iter()
        .enumerate()
        .map(|(i, m)| metric_of(m, &format!("metrics[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    // MLflow names the entry without a key ("... 'params[0].key'").
    for list in ["params", "tags"] {
        for (i, entry) in p.objects(list)?.iter().enumerate() {
            if entry.opt_str("key")?.is_none_or(|k| k.is_empty()) {
                return Err(RegistryError::InvalidParameter(format!(
                    "Missing value for required parameter '{list}[{i}].key'. See the API docs for more information about request parameters."
                ))
                .into());
            }
        }
    }
    let params = p.tags("params")?;
    let tags = p.tags("tags")?;
    blocking(move || Ok(st.tracking.log_batch(&id, &metrics, &params, &tags)?)).await?;
    empty()
}

async fn log_parameter(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let param = Tag { key: p.required_str("key")?, value: p.str_or_empty("value")? };
    blocking(move || Ok(st.tracking.log_batch(&id, &[], &[param], &[])?)).await?;
    empty()
}

async fn log_metric(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let metric = metric_of(&p, "")?;
    blocking(move || Ok(st.tracking.log_batch(&id, &[metric], &[], &[])?)).await?;
    empty()
}

async fn set_run_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let tag = Tag { key: p.required_str("key")?, value: p.str_or_empty("value")? };
    blocking(move || Ok(st.tracking.log_batch(&id, &[], &[], &[tag])?)).await?;
    empty()
}

async fn delete_run_tag(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let key = p.required_str("key")?;
    blocking(move || Ok(st.tracking.delete_run_tag(&id, &key)?)).await?;
    empty()
}

async fn search_runs(State(st): State<RegistryState>, p: Params) -> Reply {
    let experiment_ids = p.str_list("experiment_ids")?;
    let filter = p.str_or_empty("filter")?;
    let view = view_type(&p, "run_view_type")?;
    let max_results = p.max_results(1000, 50_000)?;
    let order_by = p.str_list("order_by")?;
    let token = p.opt_str("page_token")?;
    let page = blocking(move || {
        Ok(st.tracking.search_runs(&experiment_ids, &filter, view, max_results, &order_by, token.as_deref())?)
    })
    .await?;
    paged_reply("runs", page)
}

async fn log_outputs(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let outputs = p
        .objects("models")?
        .iter()
        .map(|m| Ok(ModelOutput { model_id: m.required_str("model_id")?, step: m.opt_i64("step")?.unwrap_or(0) }))
        .collect::<Result<Vec<_>, RegistryError>>()?;
    blocking(move || Ok(st.tracking.log_outputs(&id, &outputs)?)).await?;
    empty()
}

/// `metrics/get-history`: one page (at most [`HISTORY_PAGE_MAX`] values, also the page size when
/// `max_results` is not given) and `next_page_token` while there is more.
async fn metric_history(State(st): State<RegistryState>, p: Params) -> Reply {
    let id = run_id(&p)?;
    let key = p.required_str("metric_key")?;
    let max_results = match p.opt_i64("max_results")? {
        None => HISTORY_PAGE_MAX,
        Some(n) if n >= 1 => n.min(HISTORY_PAGE_MAX as i64) as usize,
        Some(n) => {
            return Err(RegistryError::InvalidParameter(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer."
            ))
            .into())
        }
    };
    let token = p.opt_str("page_token")?;
    let page = blocking(move || Ok(st.tracking.metric_history_page(&id, &key, max_results, token.as_deref())?)).await?;
    paged_reply("metrics", page)
}

/// `metrics/get-history-bulk` (the UI's, under `/ajax-api` only): `run_id` repeated (1 to 100),
/// `metric_key`, `max_results` (at most 25000 values in all, the default).
async fn metric_history_bulk(State(st): State<RegistryState>, p: Params) -> Reply {
    let run_ids = p.str_list("run_id")?;
    if run_ids.is_empty() {
        return Err(invalid("GetMetricHistoryBulk request must specify at least one run_id.".into()));
    }
    if run_ids.len() > BULK_MAX_RUNS {
        return Err(invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than {BULK_MAX_RUNS} run_ids. Received {} run_ids.",
            run_ids.len()
        )));
    }
    let key = p
        .opt_str("metric_key")?
        .ok_or_else(|| invalid("GetMetricHistoryBulk request must specify a metric_key.".into()))?;
    let max_results = match p.opt_i64("max_results")? {
        None => BULK_MAX_RESULTS,
        Some(n) if n >= 0 => n.min(BULK_MAX_RESULTS as i64) as usize,
        Some(n) => {
            return Err(invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be zero or a positive integer."
            )))
        }
    };
    let metrics = blocking(move || Ok(st.tracking.metric_history_bulk(&run_ids, &key, max_results)?)).await?;
    one("metrics", &metrics)
}

/// `metrics/get-history-bulk-interval`: `run_ids` repeated (1 to 100), `metric_key`,
/// `start_step` and `end_step` (both or neither), `max_results` per run (1 to 2500, default
/// 2500); an even sample of each run's values, as the MLflow UI's charts read them.
async fn metric_history_sampled(State(st): State<RegistryState>, p: Params) -> Reply {
    const HINT: &str = " See the API docs for more information about request parameters.";
    let run_ids = p.str_list("run_ids")?;
    if run_ids.is_empty() {
        return Err(invalid(format!("Missing value for required parameter 'run_ids'.{HINT}")));
    }
    if run_ids.len() > BULK_MAX_RUNS {
        return Err(invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_MAX_RUNS} run_ids. Received {} run_ids.{HINT}",
            run_ids.len()
        )));
    }
    let key = p.required_str("metric_key")?;
    let start = p.opt_i64("start_step")?;
    let end = p.opt_i64("end_step")?;
    let max_results = match p.opt_i64("max_results")? {
        None => SAMPLE_MAX_RESULTS,
        Some(n) if (1..=SAMPLE_MAX_RESULTS as i64).contains(&n) => n as usize,
        Some(_) => return Err(invalid(format!("max_results must be between 1 and {SAMPLE_MAX_RESULTS}.{HINT}"))),
    };
    let steps = match (start, end) {
        (None, None) => None,
        (Some(s), Some(e)) if s > e => {
            return Err(invalid(format!(
                "end_step must be greater than start_step. Found start_step={s} and end_step={e}."
            )))
        }
        (Some(s), Some(e)) => Some((s, e)),
        _ => return Err(invalid("If either start step or end step are specified, both must be specified.".into())),
    };
    let metrics = blocking(move || Ok(st.tracking.metric_history_sampled(&run_ids, &key, max_results, steps)?)).await?;
    JsonReply::new().list("metrics", &metrics)?.finish()
}

fn invalid(message: String) -> super::error::ApiError {
    RegistryError::InvalidParameter(message).into()
}

// -------------------------------------------------------------------- logged models

async fn create_logged_model(State(st): State<RegistryState>, p: Params) -> Reply {
    let new = NewLoggedModel {
        experiment_id: p.required_str("experiment_id")?,
        name: p.opt_str("name")?,
        source_run_id: p.str_or_empty("source_run_id")?,
        model_type: p.str_or_empty("model_type")?,
        params: p.tags("params")?,
        tags: p.tags("tags")?,
    };
    let lm = blocking(move || Ok(st.tracking.create_logged_model(&new)?)).await?;
    one("model", &lm)
}

/// `?allow_deleted=true` shows a deleted model; any other value does not (MLflow reads it so).
async fn get_logged_model(State(st): State<RegistryState>, Path(id): Path<String>, p: Params) -> Reply {
    let allow_deleted = p.opt_str("allow_deleted")?.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let lm = blocking(move || Ok(st.tracking.get_logged_model_visible(&id, allow_deleted)?)).await?;
    one("model", &lm)
}

async fn delete_logged_model(State(st): State<RegistryState>, Path(id): Path<String>) -> Reply {
    blocking(move || Ok(st.tracking.delete_logged_model(&id)?)).await?;
    empty()
}

/// MLflow requires `model_id` in the body too, and logs to the model of the path.
async fn log_logged_model_params(State(st): State<RegistryState>, Path(id): Path<String>, p: Params) -> Reply {
    p.required_str("model_id")?;
    let params = p.tags("params")?;
    blocking(move || Ok(st.tracking.log_logged_model_params(&id, &params)?)).await?;
    empty()
}

async fn finalize_logged_model(State(st): State<RegistryState>, Path(id): Path<String>, p: Params) -> Reply {
    let status = p.required_str("status")?;
    let lm = blocking(move || Ok(st.tracking.set_logged_model_status(&id, &status)?)).await?;
    one("model", &lm)
}

async fn set_logged_model_tags(State(st): State<RegistryState>, Path(id): Path<String>, p: Params) -> Reply {
    let tags = p.tags("tags")?;
    blocking(move || Ok(st.tracking.set_logged_model_tags(&id, &tags)?)).await?;
    empty()
}

async fn delete_logged_model_tag(State(st): State<RegistryState>, Path((id, key)): Path<(String, String)>) -> Reply {
    blocking(move || Ok(st.tracking.delete_logged_model_tag(&id, &key)?)).await?;
    empty()
}

/// `datasets` and the datasets of `order_by` entries as MLflow's handler passes them on: a
/// criterion without a digest matches metrics logged without one.
async fn search_logged_models(State(st): State<RegistryState>, p: Params) -> Reply {
    let experiment_ids = match p.0.get("experiment_ids") {
        None | Some(Value::Null) => {
            return Err(RegistryError::InvalidParameter(
                "Missing value for required parameter 'experiment_ids'. See the API docs for more information about request parameters."
                    .into(),
            )
            .into())
        }
        Some(Value::Array(_)) => p.str_list("experiment_ids")?,
        // Not a list (MLflow's schema wants one): `objects` answers MLflow's type error.
        Some(_) => p.objects("experiment_ids").map(|_| Vec::new())?,
    };
    let filter = p.str_or_empty("filter")?;
    let datasets = p
        .objects("datasets")?
        .iter()
        .map(|d| {
            let name = d.0.get("dataset_name").and_then(Value::as_str).filter(|n| !n.is_empty());
            let Some(name) = name else {
                return Err(RegistryError::InvalidParameter(
                    "`dataset_name` in the `datasets` clause must be specified.".into(),
                ));
            };
            Ok(DatasetCriterion {
                dataset_name: name.to_string(),
                dataset_digest: d.opt_str("dataset_digest")?.filter(|s| !s.is_empty()),
            })
        })
        .collect::<Result<Vec<_>, RegistryError>>()?;
    let max_results = p.max_results(100, 1000)?;
    let order_by = p
        .objects("order_by")?
        .iter()
        .map(|o| {
            Ok(LoggedModelOrder {
                field_name: o.required_str("field_name")?,
                ascending: o.opt_bool("ascending")?.unwrap_or(true),
                dataset_name: o.opt_str("dataset_name")?.filter(|s| !s.is_empty()),
                dataset_digest: o.opt_str("dataset_digest")?.filter(|s| !s.is_empty()),
            })
        })
        .collect::<Result<Vec<_>, RegistryError>>()?;
    let token = p.opt_str("page_token")?;
    let page = blocking(move || {
        Ok(st.tracking.search_logged_models(
            &experiment_ids,
            &filter,
            &datasets,
            max_results,
            &order_by,
            token.as_deref(),
        )?)
    })
    .await?;
    paged_reply("models", page)
}

#[cfg(test)]
mod tests {
    use super::check_artifact_location;

    #[test]
    fn artifact_locations() {
        for ok in [
            "s3://bucket/p",
            "gs://b/p/",
            "wasbs://c@acct.blob.core.windows.net/p",
            "mlflow-artifacts:/x/y",
            "mlflow-artifacts://127.0.0.1:5000/x",
        ] {
            assert!(check_artifact_location(ok, Some("127.0.0.1:5000")).is_ok(), "{ok}");
        }
        for bad in [
            "file:///etc",
            "/etc",
            "rel",
            "C:/x",
            "runs:/r/m",
            "s3:/nobucket",
            "s3:///p",
            "s3://b/p?x=1",
            "s3://b/p#f",
            "s3://b/%2e%2e/x",
            "mlflow-artifacts:/a/../b",
            "mlflow-artifacts://elsewhere/x",
            "http://127.0.0.1:5000/x",
            "hdfs://h/p",
        ] {
            assert!(check_artifact_location(bad, Some("127.0.0.1:5000")).is_err(), "{bad}");
        }
        assert!(check_artifact_location(&format!("s3://b/{}", "a".repeat(2048)), None).is_err());
    }
}
