//! The tracking store: the part of MLflow's tracking data model that the MLflow client needs to
//! log and register models — experiments, runs (params, metrics, tags, model outputs) and
//! MLflow 3 logged models — in the registry's SQLite database (schema in
//! `migrations/0002_tracking.sql`, metrics as of `0003_metric_datasets.sql`), serialized the way
//! `mlflow server` answers. Metric values and histories are in [`metrics`].
//!
//! Searches (runs, logged models, experiments) load the candidate rows and filter, order and
//! page them in [`search`], a small subset of MLflow's search grammar that differs from the
//! registry's ([`crate::registry::search`]) in ways its module doc lists. Pages are offsets;
//! the token is opaque to clients.

use std::sync::Arc;

use crate::db::{self, Tx};
use crate::params;
use serde::Serialize;

pub mod metrics;
mod search;
mod version_links;

use search::{experiment_field, logged_model_matches, page, run_field, Kind, ModelOrder, OrderBy, SearchFilter};
pub use search::{DatasetCriterion, LoggedModelOrder};
pub use version_links::MODEL_VERSIONS_TAG;

use crate::registry::store::now_ms;
use crate::registry::{RegistryError, Store, Tag};

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Artifact URIs of tracking entities live under this scheme (served by the artifact proxy).
const ARTIFACT_SCHEME: &str = "mlflow-artifacts:";

// -------------------------------------------------------------------- data model

#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub last_update_time: i64,
    pub creation_time: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    pub workspace: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub run_uuid: String,
    pub experiment_id: String,
    pub run_name: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
    pub run_id: String,
}

/// One logged metric value. `value` may be NaN (answered as `"NaN"`, as MLflow does); ±Infinity
/// is stored as ±`f64::MAX` (see [`metrics`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub key: String,
    #[serde(serialize_with = "metrics::serialize_value")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    /// Set on a logged model's metrics only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Set on a logged model's metrics and in the bulk histories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The dataset a logged model's metric was computed on (MLflow 3), shown on its metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Tag>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunOutputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_outputs: Vec<ModelOutput>,
}

/// Dataset inputs are not tracked; MLflow answers `{}` for a run without any.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunInputs {}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
    pub outputs: RunOutputs,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedModelInfo {
    pub model_id: String,
    pub experiment_id: String,
    pub name: String,
    pub creation_timestamp_ms: i64,
    pub last_updated_timestamp_ms: i64,
    pub artifact_uri: String,
    pub status: String,
    pub model_type: String,
    pub source_run_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoggedModelData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Tag>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedModel {
    pub info: LoggedModelInfo,
    pub data: LoggedModelData,
}

/// Run statuses MLflow accepts.
pub const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];
/// Logged model statuses MLflow accepts.
pub const LOGGED_MODEL_STATUSES: [&str; 3] =
    ["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"];

/// What to create a run with.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub experiment_id: String,
    pub user_id: String,
    pub start_time: Option<i64>,
    pub run_name: Option<String>,
    pub tags: Vec<Tag>,
}

/// What to create a logged model with.
#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub experiment_id: String,
    pub name: Option<String>,
    pub source_run_id: String,
    pub model_type: String,
    pub params: Vec<Tag>,
    pub tags: Vec<Tag>,
}

/// Which lifecycle stages a search returns (`ViewType` in MLflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewType {
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    pub fn parse(s: Option<&str>) -> Result<ViewType> {
        match s.map(str::to_ascii_uppercase).as_deref() {
            None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(ViewType::ActiveOnly),
            Some("DELETED_ONLY") | Some("2") => Ok(ViewType::DeletedOnly),
            Some("ALL") | Some("3") => Ok(ViewType::All),
            Some(other) => Err(RegistryError::InvalidParameter(format!(
                "Invalid view type '{other}'; use ACTIVE_ONLY, DELETED_ONLY or ALL."
            ))),
        }
    }

    fn admits(self, lifecycle_stage: &str) -> bool {
        match self {
            ViewType::ActiveOnly => lifecycle_stage == "active",
            ViewType::DeletedOnly => lifecycle_stage == "deleted",
            ViewType::All => true,
        }
    }
}

/// One page of a tracking search.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

// -------------------------------------------------------------------- the store

/// Tracking data in the registry's database. Cheap to clone; blocking, like [`Store`].
#[derive(Clone)]
pub struct TrackingStore {
    db: Arc<Store>,
    /// Where new experiments' artifacts go: `<root>/<id>` (`regserve server
    /// --default-artifact-root`, as MLflow's; `mlflow-artifacts:` unless set).
    default_root: Arc<str>,
}

impl TrackingStore {
    pub fn new(db: Arc<Store>) -> TrackingStore {
        TrackingStore { db, default_root: ARTIFACT_SCHEME.into() }
    }

    /// New experiments get `<root>/<id>` as their artifact location (MLflow's
    /// `append_to_uri_path(default_artifact_root, id)`).
    pub fn with_default_root(self, root: &str) -> TrackingStore {
        TrackingStore { default_root: root.trim_end_matches('/').into(), ..self }
    }

    // ---------------------------------------------------------------- experiments

    /// Create an experiment; its artifacts go under `mlflow-artifacts:/<id>` unless given.
    pub fn create_experiment(&self, name: &str, artifact_location: Option<&str>, tags: &[Tag]) -> Result<String> {
        validate_experiment_name(name)?;
        self.db.write_tx(|tx| {
            let now = now_ms();
            let id: Option<i64> = tx.query_opt(
                "INSERT INTO experiments (name, artifact_location, creation_time, last_update_time) \
                 VALUES (?1, '', ?2, ?2) ON CONFLICT(name) DO NOTHING RETURNING experiment_id",
                params![name, now],
                |r| r.get(0),
            )?;
            let Some(id) = id else {
                return Err(RegistryError::AlreadyExists(format!("Experiment(name={name}) already exists.")));
            };
            let location = match artifact_location.filter(|l| !l.is_empty()) {
                Some(l) => l.to_string(),
                None => format!("{}/{id}", self.default_root),
            };
            tx.execute(
                "UPDATE experiments SET artifact_location = ?2 WHERE experiment_id = ?1",
                params![id, location],
            )?;
            for t in tags {
                tx.execute(
                    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                    params![id, t.key, t.value],
                )?;
            }
            Ok(id.to_string())
        })
    }

    /// MLflow creates its Default experiment (0) at `<default artifact root>/0`; regserve's is
    /// created with the data dir at `mlflow-artifacts:/0`. With another root, the Default
    /// experiment moves there while it is still empty (no run, no logged model), so a fresh
    /// server started with `--default-artifact-root` hands it out as MLflow's would. Returns
    /// whether it moved.
    pub fn adopt_default_root(&self) -> Result<bool> {
        let builtin = format!("{ARTIFACT_SCHEME}/0");
        let wanted = format!("{}/0", self.default_root);
        if wanted == builtin {
            return Ok(false);
        }
        self.db.write_tx(|tx| {
            let moved = tx.execute(
                "UPDATE experiments SET artifact_location = ?2 WHERE experiment_id = 0 AND artifact_location = ?1 \
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE experiment_id = 0) \
                 AND NOT EXISTS (SELECT 1 FROM logged_models WHERE experiment_id = 0)",
                params![builtin, wanted],
            )?;
            Ok(moved > 0)
        })
    }

    pub fn get_experiment(&self, id: &str) -> Result<Experiment> {
        let num = parse_experiment_id(id)?;
        self.db.read_tx(|tx| load_experiment(tx, num, id))
    }

    pub fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        self.db.read_tx(|tx| {
            let id: Option<i64> =
                tx.query_opt("SELECT experiment_id FROM experiments WHERE name = ?1", params![name], |r| r.get(0))?;
            let id =
                id.ok_or_else(|| RegistryError::NotFound(format!("Could not find experiment with name '{name}'")))?;
            load_experiment(tx, id, &id.to_string())
        })
    }

    pub fn set_experiment_tag(&self, id: &str, key: &str, value: &str) -> Result<()> {
        let num = parse_experiment_id(id)?;
        self.db.write_tx(|tx| {
            ensure_experiment_active(&load_experiment(tx, num, id)?)?;
            tx.execute(
                "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                params![num, key, value],
            )?;
            Ok(())
        })
    }

    /// Delete a tag of an active experiment (`experiments/delete-experiment-tag`).
    pub fn delete_experiment_tag(&self, id: &str, key: &str) -> Result<()> {
        let num = parse_experiment_id(id)?;
        self.db.write_tx(|tx| {
            ensure_experiment_active(&load_experiment(tx, num, id)?)?;
            let n =
                tx.execute("DELETE FROM experiment_tags WHERE experiment_id = ?1 AND key = ?2", params![num, key])?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!("No tag with name: {key} in experiment with id {id}")));
            }
            Ok(())
        })
    }

    /// MLflow's soft delete of an experiment (`deleted` = true) and its restore: the experiment
    /// and every run in it change lifecycle stage; nothing is removed, and the name stays
    /// taken. Deleting needs an active experiment, restoring a deleted one; otherwise the
    /// experiment "does not exist" for the request, as in MLflow.
    pub fn set_experiment_lifecycle(&self, id: &str, deleted: bool) -> Result<()> {
        let num = parse_experiment_id(id)?;
        let (from, to) = if deleted { ("active", "deleted") } else { ("deleted", "active") };
        self.db.write_tx(|tx| {
            let exp = load_experiment(tx, num, id)?;
            if exp.lifecycle_stage != from {
                return Err(experiment_not_found(&num.to_string()));
            }
            tx.execute(
                "UPDATE experiments SET lifecycle_stage = ?2, last_update_time = ?3 WHERE experiment_id = ?1",
                params![num, to, now_ms()],
            )?;
            tx.execute("UPDATE runs SET lifecycle_stage = ?2 WHERE experiment_id = ?1", params![num, to])?;
            Ok(())
        })
    }

    /// Rename an active experiment (`experiments/update`).
    pub fn rename_experiment(&self, id: &str, new_name: &str) -> Result<()> {
        validate_experiment_name(new_name)?;
        let num = parse_experiment_id(id)?;
        self.db.write_tx(|tx| {
            let exp = load_experiment(tx, num, id)?;
            if exp.lifecycle_stage != "active" {
                return Err(RegistryError::InvalidState("Cannot rename a non-active experiment.".into()));
            }
            let taken: Option<i64> = tx.query_opt(
                "SELECT experiment_id FROM experiments WHERE name = ?1 AND experiment_id != ?2",
                params![new_name, num],
                |r| r.get(0),
            )?;
            if taken.is_some() {
                return Err(RegistryError::AlreadyExists(format!("Experiment(name={new_name}) already exists.")));
            }
            tx.execute(
                "UPDATE experiments SET name = ?2, last_update_time = ?3 WHERE experiment_id = ?1",
                params![num, new_name, now_ms()],
            )?;
            Ok(())
        })
    }

    pub fn search_experiments(
        &self,
        view: ViewType,
        filter: &str,
        max_results: usize,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<Paged<Experiment>> {
        let filter = SearchFilter::parse(filter, Kind::Experiment)?;
        let order = OrderBy::parse(order_by, Kind::Experiment)?;
        let all = self.db.read_tx(|tx| {
            let ids: Vec<i64> = tx.query_map("SELECT experiment_id FROM experiments", params![], |r| r.get(0))?;
            ids.into_iter().map(|id| load_experiment(tx, id, &id.to_string())).collect::<Result<Vec<_>>>()
        })?;
        let mut hits: Vec<Experiment> = all
            .into_iter()
            .filter(|e| view.admits(&e.lifecycle_stage) && filter.matches(&|f| experiment_field(e, f)))
            .collect();
        hits.sort_by(|a, b| order.compare(&|f| experiment_field(a, f), &|f| experiment_field(b, f)));
        page(hits, max_results, page_token)
    }

    // ---------------------------------------------------------------- runs

    pub fn create_run(&self, new: &NewRun) -> Result<Run> {
        validate_tags(&new.tags)?;
        let exp_num = parse_experiment_id(&new.experiment_id)?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let run_name = new
            .run_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| new.tags.iter().find(|t| t.key == "mlflow.runName").map(|t| t.value.clone()))
            .unwrap_or_else(random_run_name);
        self.db.write_tx(|tx| {
            let exp = load_experiment(tx, exp_num, &new.experiment_id)?;
            ensure_experiment_active(&exp)?;
            let artifact_uri = format!("{}/{run_id}/artifacts", exp.artifact_location.trim_end_matches('/'));
            tx.execute(
                "INSERT INTO runs (run_uuid, experiment_id, run_name, user_id, status, start_time, artifact_uri) \
                 VALUES (?1, ?2, ?3, ?4, 'RUNNING', ?5, ?6)",
                params![run_id, exp_num, run_name, new.user_id, new.start_time.unwrap_or_else(now_ms), artifact_uri],
            )?;
            for t in &new.tags {
                upsert_run_tag(tx, &run_id, &t.key, &t.value)?;
            }
            upsert_run_tag(tx, &run_id, "mlflow.runName", &run_name)?;
            load_run(tx, &run_id)
        })
    }

    pub fn get_run(&self, run_id: &str) -> Result<Run> {
        self.db.read_tx(|tx| load_run(tx, run_id))
    }

    pub fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunInfo> {
        if let Some(s) = status {
            if !RUN_STATUSES.contains(&s) {
                return Err(RegistryError::InvalidParameter(format!(
                    "Invalid run status '{s}'; use one of {}.",
                    RUN_STATUSES.join(", ")
                )));
            }
        }
        self.db.write_tx(|tx| {
            let run = load_run_info(tx, run_id)?;
            ensure_active(&run)?;
            if let Some(s) = status {
                tx.execute("UPDATE runs SET status = ?2 WHERE run_uuid = ?1", params![run_id, s])?;
            }
            if let Some(t) = end_time {
                tx.execute("UPDATE runs SET end_time = ?2 WHERE run_uuid = ?1", params![run_id, t])?;
            }
            if let Some(n) = run_name.filter(|n| !n.is_empty()) {
                tx.execute("UPDATE runs SET run_name = ?2 WHERE run_uuid = ?1", params![run_id, n])?;
                upsert_run_tag(tx, run_id, "mlflow.runName", n)?;
            }
            load_run_info(tx, run_id)
        })
    }

    /// Mark a run deleted (MLflow's soft delete) or active again.
    pub fn set_run_lifecycle(&self, run_id: &str, deleted: bool) -> Result<()> {
        self.db.write_tx(|tx| {
            load_run_info(tx, run_id)?;
            tx.execute(
                "UPDATE runs SET lifecycle_stage = ?2 WHERE run_uuid = ?1",
                params![run_id, if deleted { "deleted" } else { "active" }],
            )?;
            Ok(())
        })
    }

    /// Log metrics, params and tags to a run in one transaction. A param already logged with
    /// another value is refused, as MLflow does.
    pub fn log_batch(&self, run_id: &str, metrics: &[Metric], params: &[Tag], tags: &[Tag]) -> Result<()> {
        for (i, m) in metrics.iter().enumerate() {
            metrics::validate(m, &if metrics.len() == 1 { String::new() } else { format!("metrics[{i}]") })?;
        }
        validate_tags(tags)?;
        validate_tags(params)?;
        metrics::validate_batch_limits(metrics.len(), params.len(), tags.len())?;
        self.db.write_tx(|tx| {
            let run = load_run_info(tx, run_id)?;
            ensure_active(&run)?;
            insert_params(tx, ParamOwner::Run(run_id), params)?;
            for m in metrics {
                metrics::insert(tx, run_id, m)?;
            }
            for t in tags {
                upsert_run_tag(tx, run_id, &t.key, &t.value)?;
                if t.key == "mlflow.runName" {
                    tx.execute("UPDATE runs SET run_name = ?2 WHERE run_uuid = ?1", params![run_id, t.value])?;
                }
            }
            Ok(())
        })
    }

    pub fn delete_run_tag(&self, run_id: &str, key: &str) -> Result<()> {
        self.db.write_tx(|tx| {
            let run = load_run_info(tx, run_id)?;
            ensure_active(&run)?;
            let n = tx.execute("DELETE FROM run_tags WHERE run_uuid = ?1 AND key = ?2", params![run_id, key])?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!("No tag with name: {key} in run with id {run_id}")));
            }
            Ok(())
        })
    }

    /// Record that a run produced these logged models (`runs/outputs`).
    pub fn log_outputs(&self, run_id: &str, outputs: &[ModelOutput]) -> Result<()> {
        self.db.write_tx(|tx| {
            load_run_info(tx, run_id)?;
            for o in outputs {
                logged_model_exists(tx, &o.model_id)?;
                tx.execute(
                    "INSERT INTO run_outputs (run_uuid, model_id, step) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (run_uuid, model_id) DO UPDATE SET step = excluded.step",
                    params![run_id, o.model_id, o.step],
                )?;
            }
            Ok(())
        })
    }

    pub fn search_runs(
        &self,
        experiment_ids: &[String],
        filter: &str,
        view: ViewType,
        max_results: usize,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<Paged<Run>> {
        let filter = SearchFilter::parse(filter, Kind::Run)?;
        let order = OrderBy::parse(order_by, Kind::Run)?;
        let exp_nums = experiment_ids.iter().map(|e| parse_experiment_id(e)).collect::<Result<Vec<_>>>()?;
        let runs = self.db.read_tx(|tx| {
            let mut out = Vec::new();
            for e in &exp_nums {
                let ids: Vec<String> =
                    tx.query_map("SELECT run_uuid FROM runs WHERE experiment_id = ?1", params![e], |r| r.get(0))?;
                for id in ids {
                    out.push(load_run(tx, &id)?);
                }
            }
            Ok(out)
        })?;
        let mut hits: Vec<Run> = runs
            .into_iter()
            .filter(|r| view.admits(&r.info.lifecycle_stage) && filter.matches(&|f| run_field(r, f)))
            .collect();
        hits.sort_by(|a, b| order.compare(&|f| run_field(a, f), &|f| run_field(b, f)));
        page(hits, max_results, page_token)
    }

    // ---------------------------------------------------------------- logged models

    pub fn create_logged_model(&self, new: &NewLoggedModel) -> Result<LoggedModel> {
        validate_tags(&new.tags)?;
        validate_tags(&new.params)?;
        let exp_num = parse_experiment_id(&new.experiment_id)?;
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let name = new.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(random_run_name);
        self.db.write_tx(|tx| {
            let exp = load_experiment(tx, exp_num, &new.experiment_id)?;
            ensure_experiment_active(&exp)?;
            // `source_run_id` is stored as given, as MLflow does: the run may live in another
            // tracking server, and nothing here resolves it.
            let location = format!("{}/models/{model_id}/artifacts", exp.artifact_location.trim_end_matches('/'));
            let now = now_ms();
            tx.execute(
                "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, creation_timestamp, \
                 last_updated_timestamp, model_type, source_run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
                params![model_id, exp_num, name, location, now, new.model_type, new.source_run_id],
            )?;
            for t in &new.tags {
                tx.execute(
                    "INSERT INTO logged_model_tags (model_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                    params![model_id, t.key, t.value],
                )?;
            }
            for p in &new.params {
                tx.execute(
                    "INSERT INTO logged_model_params (model_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                    params![model_id, p.key, p.value],
                )?;
            }
            load_logged_model(tx, &model_id)
        })
    }

    pub fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel> {
        self.db.read_tx(|tx| load_logged_model(tx, model_id))
    }

    /// A logged model as `GET logged-models/{id}` shows it: a deleted one only when
    /// `allow_deleted`, as in MLflow. ([`Self::get_logged_model`] finds deleted ones too: the
    /// artifact proxy and registration need them, since registered versions may use their files.)
    pub fn get_logged_model_visible(&self, model_id: &str, allow_deleted: bool) -> Result<LoggedModel> {
        self.db.read_tx(|tx| {
            let lm = load_logged_model(tx, model_id)?;
            if !allow_deleted && logged_model_lifecycle(tx, model_id)? == "deleted" {
                return Err(logged_model_not_found(model_id));
            }
            Ok(lm)
        })
    }

    /// MLflow's soft delete of a logged model (`DELETE logged-models/{id}`): hidden from `get`
    /// and searches, its files and versions left as they are. Deleting it again is no error.
    pub fn delete_logged_model(&self, model_id: &str) -> Result<()> {
        self.db.write_tx(|tx| {
            logged_model_exists(tx, model_id)?;
            tx.execute(
                "UPDATE logged_models SET lifecycle_stage = 'deleted', last_updated_timestamp = ?2 WHERE model_id = ?1",
                params![model_id, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Log params on a logged model (`POST logged-models/{id}/params`). A param already logged
    /// with the same value is kept; another value is refused, as for runs.
    pub fn log_logged_model_params(&self, model_id: &str, params: &[Tag]) -> Result<()> {
        validate_tags(params)?;
        self.db.write_tx(|tx| {
            logged_model_exists(tx, model_id)?;
            insert_params(tx, ParamOwner::LoggedModel(model_id), params)?;
            Ok(())
        })
    }

    /// Set a logged model's status (`finalize`: PENDING → READY or UPLOAD_FAILED).
    pub fn set_logged_model_status(&self, model_id: &str, status: &str) -> Result<LoggedModel> {
        if !LOGGED_MODEL_STATUSES.contains(&status) {
            return Err(RegistryError::InvalidParameter(format!(
                "Invalid logged model status '{status}'; use one of {}.",
                LOGGED_MODEL_STATUSES.join(", ")
            )));
        }
        self.db.write_tx(|tx| {
            logged_model_exists(tx, model_id)?;
            tx.execute(
                "UPDATE logged_models SET status = ?2, last_updated_timestamp = ?3 WHERE model_id = ?1",
                params![model_id, status, now_ms()],
            )?;
            load_logged_model(tx, model_id)
        })
    }

    pub fn set_logged_model_tags(&self, model_id: &str, tags: &[Tag]) -> Result<()> {
        validate_tags(tags)?;
        self.db.write_tx(|tx| {
            logged_model_exists(tx, model_id)?;
            for t in tags {
                tx.execute(
                    "INSERT INTO logged_model_tags (model_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                    params![model_id, t.key, t.value],
                )?;
            }
            Ok(())
        })
    }

    pub fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<()> {
        self.db.write_tx(|tx| {
            logged_model_exists(tx, model_id)?;
            let n =
                tx.execute("DELETE FROM logged_model_tags WHERE model_id = ?1 AND key = ?2", params![model_id, key])?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!(
                    "No tag with key '{key}' found for logged model with ID '{model_id}'."
                )));
            }
            Ok(())
        })
    }

    /// Logged models of `source_run_id` named `name`, the one logged at the highest step first
    /// (how the MLflow client picks the model behind `runs:/<run>/<name>`).
    pub fn logged_models_of_run(&self, source_run_id: &str, name: &str) -> Result<Vec<LoggedModel>> {
        self.db.read_tx(|tx| {
            let ids: Vec<String> = tx.query_map(
                "SELECT lm.model_id FROM logged_models lm \
                 LEFT JOIN run_outputs o ON o.model_id = lm.model_id AND o.run_uuid = lm.source_run_id \
                 WHERE lm.source_run_id = ?1 AND lm.name = ?2 AND lm.lifecycle_stage = 'active' \
                 ORDER BY COALESCE(o.step, -1) DESC, lm.creation_timestamp DESC",
                params![source_run_id, name],
                |r| r.get(0),
            )?;
            ids.iter().map(|id| load_logged_model(tx, id)).collect()
        })
    }

    /// `logged-models/search`, as MLflow's SQL store answers it: a metric comparison holds when
    /// any logged value of the metric satisfies it, on one of `datasets` when some are given;
    /// `datasets` alone keeps the models with a metric on one of them; ordering by a metric
    /// uses its latest value (by timestamp, then step), on the entry's dataset when it names
    /// one. Deleted models are left out.
    pub fn search_logged_models(
        &self,
        experiment_ids: &[String],
        filter: &str,
        datasets: &[DatasetCriterion],
        max_results: usize,
        order_by: &[LoggedModelOrder],
        page_token: Option<&str>,
    ) -> Result<Paged<LoggedModel>> {
        let filter = SearchFilter::parse(filter, Kind::LoggedModel)?;
        let order = ModelOrder::parse(order_by)?;
        let exp_nums = experiment_ids.iter().map(|e| parse_experiment_id(e)).collect::<Result<Vec<_>>>()?;
        let models = self.db.read_tx(|tx| {
            let mut out = Vec::new();
            for e in &exp_nums {
                let ids: Vec<String> = tx.query_map(
                    "SELECT model_id FROM logged_models WHERE experiment_id = ?1 AND lifecycle_stage = 'active'",
                    params![e],
                    |r| r.get(0),
                )?;
                for id in ids {
                    out.push(load_logged_model(tx, &id)?);
                }
            }
            Ok(out)
        })?;
        let mut hits: Vec<LoggedModel> =
            models.into_iter().filter(|m| logged_model_matches(&filter, m, datasets)).collect();
        hits.sort_by(|a, b| order.compare(a, b));
        page(hits, max_results, page_token)
    }
}

// -------------------------------------------------------------------- row helpers

/// Experiment names MLflow's SQL store keeps: at most 500 characters. Blank names are refused
/// (MLflow refuses only the empty one).
const MAX_EXPERIMENT_NAME: usize = 500;

fn validate_experiment_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(RegistryError::InvalidParameter(format!(
            "Invalid experiment name: '{name}'. Experiment name cannot be empty."
        )));
    }
    if name.chars().count() > MAX_EXPERIMENT_NAME {
        return Err(RegistryError::InvalidParameter(format!(
            "'name' exceeds the maximum length of {MAX_EXPERIMENT_NAME} characters"
        )));
    }
    Ok(())
}

fn experiment_not_found(shown: &str) -> RegistryError {
    RegistryError::NotFound(format!("No Experiment with id={shown} exists"))
}

/// Writes into an experiment (tags, runs, logged models) need it active, as in MLflow.
fn ensure_experiment_active(exp: &Experiment) -> Result<()> {
    if exp.lifecycle_stage != "active" {
        return Err(RegistryError::InvalidParameter(format!(
            "The experiment {} must be in the 'active' state. Current state is {}.",
            exp.experiment_id, exp.lifecycle_stage
        )));
    }
    Ok(())
}

fn parse_experiment_id(id: &str) -> Result<i64> {
    id.trim().parse::<i64>().map_err(|_| {
        RegistryError::InvalidParameter(format!("Invalid experiment ID '{id}'. Experiment ID must be a valid integer."))
    })
}

fn load_experiment(tx: &Tx<'_>, id: i64, shown: &str) -> Result<Experiment> {
    let row = tx.query_opt(
        "SELECT name, artifact_location, lifecycle_stage, creation_time, last_update_time \
             FROM experiments WHERE experiment_id = ?1",
        params![id],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<String>(2)?, r.get::<i64>(3)?, r.get::<i64>(4)?)),
    )?;
    let (name, artifact_location, lifecycle_stage, creation_time, last_update_time) =
        row.ok_or_else(|| experiment_not_found(shown))?;
    let tags = key_values(tx, "SELECT key, value FROM experiment_tags WHERE experiment_id = ?1 ORDER BY key", &id)?;
    Ok(Experiment {
        experiment_id: id.to_string(),
        name,
        artifact_location,
        lifecycle_stage,
        last_update_time,
        creation_time,
        tags,
        workspace: "default",
    })
}

fn key_values(tx: &Tx<'_>, sql: &str, id: &dyn db::ToValue) -> Result<Vec<Tag>> {
    Ok(tx.query_map(sql, &[id], |r| Ok(Tag { key: r.get(0)?, value: r.get(1)? }))?)
}

fn load_run_info(tx: &Tx<'_>, run_id: &str) -> Result<RunInfo> {
    tx.query_opt(
        "SELECT run_uuid, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri, \
         lifecycle_stage FROM runs WHERE run_uuid = ?1",
        params![run_id],
        |r| {
            Ok(RunInfo {
                run_uuid: r.get(0)?,
                experiment_id: r.get::<i64>(1)?.to_string(),
                run_name: r.get(2)?,
                user_id: r.get(3)?,
                status: r.get(4)?,
                start_time: r.get(5)?,
                end_time: r.get(6)?,
                artifact_uri: r.get(7)?,
                lifecycle_stage: r.get(8)?,
                run_id: r.get(0)?,
            })
        },
    )?
    .ok_or_else(|| RegistryError::NotFound(format!("Run with id={run_id} not found")))
}

fn ensure_active(run: &RunInfo) -> Result<()> {
    if run.lifecycle_stage != "active" {
        return Err(RegistryError::InvalidParameter(format!(
            "The run {} must be in the 'active' state. Current state is {}.",
            run.run_id, run.lifecycle_stage
        )));
    }
    Ok(())
}

fn upsert_run_tag(tx: &Tx<'_>, run_id: &str, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO run_tags (run_uuid, key, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value",
        params![run_id, key, value],
    )?;
    Ok(())
}

fn load_run(tx: &Tx<'_>, run_id: &str) -> Result<Run> {
    let info = load_run_info(tx, run_id)?;
    // The current value per key: highest step, then timestamp, then value (MLflow's rule; NaN
    // is stored as 0 and wins a tie with a real 0).
    let metrics = tx.query_map(
        "SELECT key, value, timestamp, step, is_nan FROM metrics m WHERE run_uuid = ?1 AND NOT EXISTS ( \
           SELECT 1 FROM metrics n WHERE n.run_uuid = m.run_uuid AND n.key = m.key AND \
           (n.step > m.step OR (n.step = m.step AND (n.timestamp > m.timestamp OR \
           (n.timestamp = m.timestamp AND (n.value > m.value OR \
           (n.value = m.value AND n.is_nan > m.is_nan))))))) ORDER BY key",
        params![run_id],
        metrics::from_row,
    )?;
    let params = key_values(tx, "SELECT key, value FROM run_params WHERE run_uuid = ?1 ORDER BY key", &run_id)?;
    // Tags in the order they were first set, as MLflow's SQLite store lists them; PostgreSQL
    // rows have no insertion order to read, so there they come by key.
    let tags_sql = match tx.dialect() {
        db::Dialect::Sqlite => "SELECT key, value FROM run_tags WHERE run_uuid = ?1 ORDER BY rowid",
        db::Dialect::Postgres => "SELECT key, value FROM run_tags WHERE run_uuid = ?1 ORDER BY key",
    };
    let tags = key_values(tx, tags_sql, &run_id)?;
    let model_outputs = tx.query_map(
        "SELECT model_id, step FROM run_outputs WHERE run_uuid = ?1 ORDER BY step, model_id",
        params![run_id],
        |r| Ok(ModelOutput { model_id: r.get(0)?, step: r.get(1)? }),
    )?;
    Ok(Run {
        info,
        data: RunData { metrics, params, tags },
        inputs: RunInputs {},
        outputs: RunOutputs { model_outputs },
    })
}

fn logged_model_not_found(model_id: &str) -> RegistryError {
    RegistryError::NotFound(format!("Logged model with ID '{model_id}' not found."))
}

fn logged_model_exists(tx: &Tx<'_>, model_id: &str) -> Result<()> {
    let found: Option<i64> =
        tx.query_opt("SELECT 1 FROM logged_models WHERE model_id = ?1", params![model_id], |r| r.get(0))?;
    found.map(|_| ()).ok_or_else(|| logged_model_not_found(model_id))
}

fn logged_model_lifecycle(tx: &Tx<'_>, model_id: &str) -> Result<String> {
    tx.query_opt("SELECT lifecycle_stage FROM logged_models WHERE model_id = ?1", params![model_id], |r| r.get(0))?
        .ok_or_else(|| logged_model_not_found(model_id))
}

fn load_logged_model(tx: &Tx<'_>, model_id: &str) -> Result<LoggedModel> {
    let info = tx
        .query_opt(
            "SELECT model_id, experiment_id, name, creation_timestamp, last_updated_timestamp, \
             artifact_location, status, model_type, source_run_id FROM logged_models WHERE model_id = ?1",
            params![model_id],
            |r| {
                Ok(LoggedModelInfo {
                    model_id: r.get(0)?,
                    experiment_id: r.get::<i64>(1)?.to_string(),
                    name: r.get(2)?,
                    creation_timestamp_ms: r.get(3)?,
                    last_updated_timestamp_ms: r.get(4)?,
                    artifact_uri: r.get(5)?,
                    status: r.get(6)?,
                    model_type: r.get(7)?,
                    source_run_id: r.get(8)?,
                    tags: Vec::new(),
                })
            },
        )?
        .ok_or_else(|| logged_model_not_found(model_id))?;
    let tags = key_values(tx, "SELECT key, value FROM logged_model_tags WHERE model_id = ?1 ORDER BY key", &model_id)?;
    let params =
        key_values(tx, "SELECT key, value FROM logged_model_params WHERE model_id = ?1 ORDER BY key", &model_id)?;
    let metrics = tx.query_map(
        "SELECT key, value, timestamp, step, is_nan, run_uuid, dataset_name, dataset_digest FROM metrics \
         WHERE model_id = ?1 ORDER BY key, step, timestamp",
        params![model_id],
        |r| {
            let mut m = metrics::from_row(r)?;
            m.model_id = Some(model_id.to_string());
            m.run_id = Some(r.get(5)?);
            m.dataset_name = r.get(6)?;
            m.dataset_digest = r.get(7)?;
            Ok(m)
        },
    )?;
    Ok(LoggedModel { info: LoggedModelInfo { tags, ..info }, data: LoggedModelData { params, metrics } })
}

const MAX_TAG_KEY: usize = 250;
const MAX_TAG_VALUE: usize = 8000;

/// Whose params are logged: a run's or a logged model's (each its own table).
enum ParamOwner<'a> {
    Run(&'a str),
    LoggedModel(&'a str),
}

/// Insert params; one already logged with the same value is kept, with another value refused
/// with MLflow's message (params never change).
fn insert_params(tx: &Tx<'_>, owner: ParamOwner<'_>, params: &[Tag]) -> Result<()> {
    let (table, column, what, id) = match owner {
        ParamOwner::Run(id) => ("run_params", "run_uuid", "run", id),
        ParamOwner::LoggedModel(id) => ("logged_model_params", "model_id", "logged model", id),
    };
    for p in params {
        let old: Option<String> = tx.query_opt(
            &format!("SELECT value FROM {table} WHERE {column} = ?1 AND key = ?2"),
            params![id, p.key],
            |r| r.get(0),
        )?;
        match old {
            Some(v) if v == p.value => {}
            Some(v) => {
                return Err(RegistryError::InvalidParameter(format!(
                    "Changing param values is not allowed. Param with key='{}' was already logged with value='{v}' for {what} ID='{id}'. Attempted logging new value '{}'.",
                    p.key, p.value
                )))
            }
            None => {
                tx.execute(&format!("INSERT INTO {table} ({column}, key, value) VALUES (?1, ?2, ?3)"), params![id, p.key, p.value])?;
            }
        }
    }
    Ok(())
}

fn validate_tags(tags: &[Tag]) -> Result<()> {
    for t in tags {
        if t.key.is_empty() {
            return Err(RegistryError::InvalidParameter("Tag and param keys cannot be empty.".into()));
        }
        if t.key.len() > MAX_TAG_KEY || t.value.len() > MAX_TAG_VALUE {
            return Err(RegistryError::InvalidParameter(format!(
                "Key '{}' or its value is too long (limits: {MAX_TAG_KEY} bytes for keys, {MAX_TAG_VALUE} for values).",
                t.key.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// A readable run name such as `calm-otter-417`, as MLflow generates them.
fn random_run_name() -> String {
    const ADJECTIVES: [&str; 16] = [
        "bold", "brave", "bright", "calm", "clever", "eager", "gentle", "happy", "keen", "lively", "merry", "nimble",
        "quiet", "silent", "swift", "wise",
    ];
    const NOUNS: [&str; 16] = [
        "ant", "bat", "crane", "deer", "eel", "finch", "goat", "hawk", "ibis", "jay", "koi", "lynx", "mole", "newt",
        "otter", "seal",
    ];
    let r = uuid::Uuid::new_v4().as_u128();
    format!("{}-{}-{}", ADJECTIVES[(r % 16) as usize], NOUNS[((r >> 8) % 16) as usize], (r >> 16) % 1000)
}

#[cfg(test)]
mod tests {
    use super::search::like;
    use super::*;

    fn store() -> TrackingStore {
        TrackingStore::new(Arc::new(Store::open_in_memory().unwrap()))
    }

    fn tag(k: &str, v: &str) -> Tag {
        Tag { key: k.into(), value: v.into() }
    }

    #[test]
    fn another_default_root_places_new_and_empty_default_experiments() {
        let t = store();
        assert!(!t.adopt_default_root().unwrap());
        let s3 = t.clone().with_default_root("s3://b/p/");
        assert!(s3.adopt_default_root().unwrap());
        assert_eq!(s3.get_experiment("0").unwrap().artifact_location, "s3://b/p/0");
        let id = s3.create_experiment("e", None, &[]).unwrap();
        assert_eq!(s3.get_experiment(&id).unwrap().artifact_location, format!("s3://b/p/{id}"));
        // Once the Default experiment holds a run, it stays where it is.
        let used = store();
        used.create_run(&NewRun { experiment_id: "0".into(), ..Default::default() }).unwrap();
        let used = used.with_default_root("gs://other");
        assert!(!used.adopt_default_root().unwrap());
        assert_eq!(used.get_experiment("0").unwrap().artifact_location, "mlflow-artifacts:/0");
    }

    #[test]
    fn default_experiment_and_create() {
        let t = store();
        let d = t.get_experiment("0").unwrap();
        assert_eq!((d.name.as_str(), d.artifact_location.as_str()), ("Default", "mlflow-artifacts:/0"));

        let id = t.create_experiment("exp", None, &[tag("a", "b")]).unwrap();
        assert_eq!(id, "1");
        let e = t.get_experiment_by_name("exp").unwrap();
        assert_eq!(e.artifact_location, "mlflow-artifacts:/1");
        assert_eq!(e.tags, vec![tag("a", "b")]);
        assert!(matches!(t.create_experiment("exp", None, &[]), Err(RegistryError::AlreadyExists(_))));
        assert!(matches!(t.get_experiment("7"), Err(RegistryError::NotFound(_))));
        let page = t.search_experiments(ViewType::ActiveOnly, "name LIKE 'ex%'", 10, &[], None).unwrap();
        assert_eq!(page.items.len(), 1);
    }

    #[test]
    fn runs_params_metrics_and_search() {
        let t = store();
        let run = t
            .create_run(&NewRun {
                experiment_id: "0".into(),
                user_id: "u".into(),
                tags: vec![tag("team", "x")],
                ..Default::default()
            })
            .unwrap();
        let id = run.info.run_id.clone();
        assert!(run.info.artifact_uri.starts_with("mlflow-artifacts:/0/"));
        assert!(run.data.tags.iter().any(|t| t.key == "mlflow.runName"));
        let m = |v: f64, step: i64| Metric {
            key: "acc".into(),
            value: v,
            timestamp: 10,
            step,
            model_id: None,
            run_id: None,
            dataset_name: None,
            dataset_digest: None,
        };
        t.log_batch(&id, &[m(0.5, 0), m(0.9, 1), m(0.7, 0)], &[tag("alpha", "1")], &[]).unwrap();
        assert!(matches!(t.log_batch(&id, &[], &[tag("alpha", "2")], &[]), Err(RegistryError::InvalidParameter(_))));
        let got = t.get_run(&id).unwrap();
        assert_eq!(got.data.metrics.len(), 1);
        assert_eq!(got.data.metrics[0].value, 0.9);
        assert_eq!(t.metric_history_page(&id, "acc", 10, None).unwrap().items.len(), 3);
        for (filter, n) in [
            ("", 1),
            ("metrics.acc > 0.8", 1),
            ("metrics.acc < 0.8", 0),
            ("params.alpha = '1' and tags.team = 'x'", 1),
            ("tags.`team` != 'x'", 0),
            (&format!("attributes.run_id IN ('{id}', 'zz')"), 1),
            ("attributes.status = 'RUNNING'", 1),
        ] {
            let p = t.search_runs(&["0".into()], filter, ViewType::ActiveOnly, 10, &[], None).unwrap();
            assert_eq!(p.items.len(), n, "{filter}");
        }
        assert!(t.search_runs(&["0".into()], "bogus filter", ViewType::ActiveOnly, 10, &[], None).is_err());
        let info = t.update_run(&id, Some("FINISHED"), Some(99), None).unwrap();
        assert_eq!((info.status.as_str(), info.end_time), ("FINISHED", Some(99)));
        assert!(t.update_run(&id, Some("DONE"), None, None).is_err());
    }

    #[test]
    fn logged_models() {
        let t = store();
        let run = t.create_run(&NewRun { experiment_id: "0".into(), ..Default::default() }).unwrap();
        let lm = t
            .create_logged_model(&NewLoggedModel {
                experiment_id: "0".into(),
                name: Some("model".into()),
                source_run_id: run.info.run_id.clone(),
                params: vec![tag("alpha", "1")],
                ..Default::default()
            })
            .unwrap();
        let id = lm.info.model_id.clone();
        assert_eq!(lm.info.artifact_uri, format!("mlflow-artifacts:/0/models/{id}/artifacts"));
        assert_eq!(lm.info.status, "LOGGED_MODEL_PENDING");
        let ready = t.set_logged_model_status(&id, "LOGGED_MODEL_READY").unwrap();
        assert_eq!(ready.info.status, "LOGGED_MODEL_READY");
        t.set_logged_model_tags(&id, &[tag("k", "v")]).unwrap();
        t.log_outputs(&run.info.run_id, &[ModelOutput { model_id: id.clone(), step: 0 }]).unwrap();
        assert_eq!(t.get_run(&run.info.run_id).unwrap().outputs.model_outputs.len(), 1);
        let found = t.logged_models_of_run(&run.info.run_id, "model").unwrap();
        assert_eq!(found.len(), 1);
        let p = t.search_logged_models(&["0".into()], "name = 'model'", &[], 10, &[], None).unwrap();
        assert_eq!(p.items.len(), 1);
        assert!(matches!(t.get_logged_model("m-nope"), Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn experiment_lifecycle_rename_and_tags() {
        let t = store();
        let id = t.create_experiment("exp", None, &[tag("a", "1"), tag("b", "2")]).unwrap();
        let run = t.create_run(&NewRun { experiment_id: id.clone(), ..Default::default() }).unwrap().info.run_id;
        t.set_experiment_lifecycle(&id, true).unwrap();
        assert_eq!(t.get_experiment_by_name("exp").unwrap().lifecycle_stage, "deleted");
        assert_eq!(t.get_run(&run).unwrap().info.lifecycle_stage, "deleted");
        assert!(matches!(t.set_experiment_lifecycle(&id, true), Err(RegistryError::NotFound(_))));
        let new_run = NewRun { experiment_id: id.clone(), ..Default::default() };
        assert!(matches!(t.create_run(&new_run), Err(RegistryError::InvalidParameter(_))));
        let new_model = NewLoggedModel { experiment_id: id.clone(), ..Default::default() };
        assert!(matches!(t.create_logged_model(&new_model), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(t.set_experiment_tag(&id, "c", "3"), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(t.delete_experiment_tag(&id, "a"), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(t.rename_experiment(&id, "other"), Err(RegistryError::InvalidState(_))));
        assert!(matches!(t.create_experiment("exp", None, &[]), Err(RegistryError::AlreadyExists(_))));
        let deleted = t.search_experiments(ViewType::DeletedOnly, "", 10, &[], None).unwrap();
        assert_eq!(deleted.items.len(), 1);

        t.set_experiment_lifecycle(&id, false).unwrap();
        assert!(matches!(t.set_experiment_lifecycle(&id, false), Err(RegistryError::NotFound(_))));
        assert_eq!(t.get_run(&run).unwrap().info.lifecycle_stage, "active");
        t.rename_experiment(&id, "renamed").unwrap();
        assert_eq!(t.get_experiment(&id).unwrap().name, "renamed");
        assert!(matches!(t.rename_experiment(&id, "Default"), Err(RegistryError::AlreadyExists(_))));
        t.rename_experiment(&id, "renamed").unwrap();
        for bad in ["", "  ", &"x".repeat(501)] {
            assert!(matches!(t.rename_experiment(&id, bad), Err(RegistryError::InvalidParameter(_))), "{bad}");
        }
        t.delete_experiment_tag(&id, "a").unwrap();
        assert_eq!(t.get_experiment(&id).unwrap().tags, vec![tag("b", "2")]);
        assert!(matches!(t.delete_experiment_tag(&id, "a"), Err(RegistryError::NotFound(_))));
        assert!(matches!(t.set_experiment_lifecycle("99", true), Err(RegistryError::NotFound(_))));
        assert!(matches!(t.set_experiment_lifecycle("x", true), Err(RegistryError::InvalidParameter(_))));
    }

    #[test]
    fn logged_model_params_delete_and_unknown_source_run() {
        let t = store();
        let lm = t
            .create_logged_model(&NewLoggedModel {
                experiment_id: "0".into(),
                source_run_id: "not-a-run-here".into(),
                ..Default::default()
            })
            .unwrap();
        let id = lm.info.model_id;
        assert_eq!(lm.info.source_run_id, "not-a-run-here");
        t.log_logged_model_params(&id, &[tag("a", "1"), tag("b", "2")]).unwrap();
        t.log_logged_model_params(&id, &[tag("a", "1")]).unwrap();
        assert!(matches!(t.log_logged_model_params(&id, &[tag("a", "2")]), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(t.log_logged_model_params("m-nope", &[tag("a", "1")]), Err(RegistryError::NotFound(_))));
        assert_eq!(t.get_logged_model(&id).unwrap().data.params, vec![tag("a", "1"), tag("b", "2")]);

        t.delete_logged_model(&id).unwrap();
        t.delete_logged_model(&id).unwrap();
        assert!(matches!(t.get_logged_model_visible(&id, false), Err(RegistryError::NotFound(_))));
        assert_eq!(t.get_logged_model_visible(&id, true).unwrap().info.model_id, id);
        // Internal readers (the artifact proxy, registration) still see it.
        assert_eq!(t.get_logged_model(&id).unwrap().info.model_id, id);
        assert!(t.search_logged_models(&["0".into()], "", &[], 10, &[], None).unwrap().items.is_empty());
        assert!(matches!(t.delete_logged_model("m-nope"), Err(RegistryError::NotFound(_))));
    }

    /// The scenario recorded against `mlflow server` 3.17.2 (see
    /// tests/python/test_conformance_tracking.py::test_logged_model_search_by_datasets).
    #[test]
    fn logged_model_search_by_datasets() {
        use super::search::{logged_model_matches, ModelOrder, SearchFilter};
        let metric = |key: &str, value: f64, step: i64, timestamp: i64, ds: Option<(&str, &str)>| Metric {
            key: key.into(),
            value,
            timestamp,
            step,
            model_id: None,
            run_id: Some("r".into()),
            dataset_name: ds.map(|d| d.0.into()),
            dataset_digest: ds.map(|d| d.1.into()),
        };
        let model = |name: &str, created: i64, metrics: Vec<Metric>| LoggedModel {
            info: LoggedModelInfo {
                model_id: format!("m-{name}"),
                experiment_id: "0".into(),
                name: name.into(),
                creation_timestamp_ms: created,
                last_updated_timestamp_ms: created,
                artifact_uri: String::new(),
                status: "LOGGED_MODEL_READY".into(),
                model_type: String::new(),
                source_run_id: String::new(),
                tags: vec![],
            },
            data: LoggedModelData { params: vec![], metrics },
        };
        let (train, test) = (Some(("train", "d1")), Some(("test", "d2")));
        let models = [
            model("A", 1, vec![metric("acc", 0.9, 0, 100, train), metric("acc", 0.2, 1, 200, train)]),
            model("B", 2, vec![metric("acc", 0.5, 0, 100, test)]),
            model("C", 3, vec![metric("acc", 0.1, 5, 50, test)]),
            model("D", 4, vec![metric("loss", 1.0, 0, 100, None)]),
        ];
        let ds = |name: &str, digest: Option<&str>| DatasetCriterion {
            dataset_name: name.into(),
            dataset_digest: digest.map(str::to_string),
        };
        let search = |filter: &str, datasets: &[DatasetCriterion]| -> Vec<&str> {
            let f = SearchFilter::parse(filter, Kind::LoggedModel).unwrap();
            models.iter().filter(|m| logged_model_matches(&f, m, datasets)).map(|m| m.info.name.as_str()).collect()
        };
        assert_eq!(search("", &[]), ["A", "B", "C", "D"]);
        assert_eq!(search("metrics.acc > 0.8", &[]), ["A"]); // any value, not only the latest
        assert_eq!(search("metrics.acc < 0.3", &[]), ["A", "C"]);
        assert!(search("", &[ds("train", None)]).is_empty()); // no digest: values logged without one
        assert_eq!(search("", &[ds("train", Some("d1"))]), ["A"]);
        assert_eq!(search("", &[ds("train", Some("d1")), ds("test", Some("d2"))]), ["A", "B", "C"]);
        assert_eq!(search("metrics.acc < 0.5", &[ds("train", Some("d1"))]), ["A"]);
        assert_eq!(search("metrics.acc > 0.4", &[ds("test", Some("d2"))]), ["B"]);
        assert!(search("metrics.loss = 1", &[ds("train", Some("d1"))]).is_empty());
        assert!(search("name = 'A'", &[ds("test", Some("d2"))]).is_empty());

        let order = |field: &str, ascending: bool, name: Option<&str>, digest: Option<&str>| -> Vec<&str> {
            let o = ModelOrder::parse(&[LoggedModelOrder {
                field_name: field.into(),
                ascending,
                dataset_name: name.map(str::to_string),
                dataset_digest: digest.map(str::to_string),
            }])
            .unwrap();
            let mut sorted: Vec<&LoggedModel> = models.iter().collect();
            sorted.sort_by(|a, b| o.compare(a, b));
            sorted.iter().map(|m| m.info.name.as_str()).collect()
        };
        assert_eq!(order("metrics.acc", true, None, None), ["C", "A", "B", "D"]);
        assert_eq!(order("metrics.acc", false, None, None), ["B", "A", "C", "D"]);
        assert_eq!(order("metrics.acc", true, Some("test"), None), ["C", "B", "D", "A"]);
        assert_eq!(order("metrics.acc", true, Some("train"), Some("d1")), ["A", "D", "C", "B"]);
        assert_eq!(order("metrics.acc", true, None, Some("d2")), ["C", "B", "D", "A"]);
        assert_eq!(order("name", false, None, None), ["D", "C", "B", "A"]);
        let bad = LoggedModelOrder { field_name: "params.x".into(), ..Default::default() };
        assert!(
            matches!(ModelOrder::parse(&[bad]), Err(RegistryError::InvalidParameter(m)) if m.contains("Only metrics"))
        );
    }

    #[test]
    fn like_patterns_and_paging() {
        assert!(like("iris-onnx", "ir%", false));
        assert!(like("iris", "i_is", false));
        assert!(!like("Iris", "ir%", false));
        assert!(like("Iris", "ir%", true));
        assert!(like("abcabc", "%b%c", false));
        let p = page((0..25).collect::<Vec<_>>(), 10, None).unwrap();
        assert_eq!(p.next_page_token.as_deref(), Some("offset:10"));
        let p = page((0..25).collect::<Vec<_>>(), 10, Some("offset:20")).unwrap();
        assert_eq!((p.items.len(), p.next_page_token), (5, None));
        assert!(page(vec![1], 10, Some("x")).is_err());
    }
}
