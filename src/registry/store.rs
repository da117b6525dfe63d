//! The embedded registry store: SQLite in WAL mode, schema migrations from `migrations/`,
//! every write one `BEGIN IMMEDIATE` transaction (so two processes writing at once serialize
//! on SQLite's lock, waiting up to the busy timeout instead of failing).
//!
//! The store is synchronous; async callers run it on the blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::search::{self, Target};
use super::webhooks::{self, emit};
use super::{
    validate_description, validate_model_name, Alias, ModelVersion, RegisteredModel, RegistryError, Stage, Tag,
    VersionStatus,
};
use crate::db::{self, Database, DatabaseUri, PoolOptions, Row, Tx};
use crate::params;
use crate::uri::{ModelUri, Selector};

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The PostgreSQL channel every registry write that can change what a `models:/` URI
/// resolves to notifies, with the model's name as payload (see [`Store::changes`]).
pub const CHANGES_CHANNEL: &str = "regserve_registry";

/// A handle on the registry database. Cheap to share behind an `Arc`.
pub struct Store {
    db: Database,
}

/// Fields of a model version to create.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub name: String,
    pub source: String,
    pub run_id: String,
    pub run_link: String,
    pub description: String,
    pub tags: Vec<Tag>,
    /// Where the files live, when it differs from `source` (e.g. a resolved `runs:/` URI).
    pub storage_location: String,
    pub logged_model_id: String,
    pub user_id: String,
    /// `Ready` unless the caller still has work to do before the version may be served.
    pub status: Option<VersionStatus>,
    /// Put the new version in this stage, in the same transaction.
    pub stage: Option<Stage>,
    /// With `stage`: archive the versions already in it (Staging/Production only).
    pub archive_existing: bool,
    /// Point this alias at the new version, in the same transaction.
    pub alias: Option<String>,
}

/// One page of search results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// A version's columns, from `model_versions mv`; [`version_fields`] reads them.
macro_rules! version_fields {
    () => {
        "mv.version, mv.creation_timestamp, mv.last_updated_timestamp, mv.user_id, mv.current_stage, \
         mv.description, mv.source, mv.run_id, mv.status, mv.status_message, mv.run_link, mv.storage_location, \
         mv.logged_model_id, mv.model_id"
    };
}

/// A version with its model's name (from `registered_models rm`); [`version_from_row`] reads them.
const VERSION_COLUMNS: &str = concat!("rm.name, ", version_fields!());

const MODEL_COLUMNS: &str = "rm.id, rm.name, rm.creation_timestamp, rm.last_updated_timestamp, rm.description";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl Store {
    /// Open (creating if needed) the SQLite database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_uri(&DatabaseUri::Sqlite(path.to_path_buf()), &PoolOptions::default())
    }

    /// Open the database `uri` names (SQLite or PostgreSQL) and bring its schema up to date.
    pub fn open_uri(uri: &DatabaseUri, pool: &PoolOptions) -> Result<Store> {
        Ok(Store { db: Database::open(uri, pool)? })
    }

    /// A private in-memory store, for tests. With `REGSERVE_TEST_POSTGRES` set (a server URI
    /// whose user may create databases), a fresh PostgreSQL database instead, so the same tests
    /// run against both backends.
    pub fn open_in_memory() -> Result<Store> {
        match std::env::var("REGSERVE_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
            Some(server) if cfg!(test) || std::env::var_os("REGSERVE_TEST_POSTGRES_ANY").is_some() => {
                Self::open_uri(&DatabaseUri::Postgres(db::postgres::fresh_database(&server)?), &PoolOptions::default())
            }
            _ => Self::open_uri(&DatabaseUri::Memory, &PoolOptions::default()),
        }
    }

    /// The database file, if SQLite on disk.
    pub fn path(&self) -> Option<&Path> {
        self.db.sqlite_path()
    }

    /// The database underneath.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Registry changes as they commit, on PostgreSQL (`LISTEN`); `None` on SQLite, whose
    /// followers poll.
    pub fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<db::postgres::Notice>> {
        self.db.postgres().map(|pg| pg.listen(CHANGES_CHANNEL))
    }

    fn write<T>(&self, f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        // Wakes this process's webhook worker once a write that queued deliveries commits.
        webhooks::begin_write();
        let result = self.db.write(f);
        webhooks::end_write(result.is_ok());
        result
    }

    fn read<T>(&self, f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.db.read(f)
    }

    // ---------------------------------------------------------------- registered models

    pub fn create_registered_model(&self, name: &str, description: &str, tags: &[Tag]) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        validate_description(description)?;
        validate_tags(tags)?;
        self.write(|tx| {
            let now = now_ms();
            let id: Option<i64> = tx.query_opt(
                "INSERT INTO registered_models (name, description, creation_timestamp, last_updated_timestamp) \
                 VALUES (?1, ?2, ?3, ?3) ON CONFLICT(name) DO NOTHING RETURNING id",
                params![name, description, now],
                |r| r.get(0),
            )?;
            let Some(id) = id else {
                return Err(RegistryError::AlreadyExists(format!("Registered Model (name={name}) already exists.")));
            };
            for t in tags {
                tx.execute(
                    "INSERT INTO registered_model_tags (model_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                    params![id, t.key, t.value],
                )?;
            }
            emit::model_created(tx, name, description, tags)?;
            load_model(tx, id)
        })
    }

    pub fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        self.read(|tx| {
            let id = model_id(tx, name)?;
            load_model(tx, id)
        })
    }

    pub fn update_registered_model(&self, name: &str, description: &str) -> Result<RegisteredModel> {
        validate_description(description)?;
        self.write(|tx| {
            let id = model_id(tx, name)?;
            tx.execute(
                "UPDATE registered_models SET description = ?2, last_updated_timestamp = ?3 WHERE id = ?1",
                params![id, description, now_ms()],
            )?;
            load_model(tx, id)
        })
    }

    pub fn rename_registered_model(&self, name: &str, new_name: &str) -> Result<RegisteredModel> {
        validate_model_name(new_name)?;
        self.write(|tx| {
            let id = model_id(tx, name)?;
            if name != new_name && model_id(tx, new_name).is_ok() {
                return Err(RegistryError::AlreadyExists(format!(
                    "Registered Model (name={new_name}) already exists."
                )));
            }
            let now = now_ms();
            // A replica renaming another model to the same name at this moment: the UNIQUE
            // constraint decides, and the loser hears what the check above would have said.
            tx.execute(
                "UPDATE registered_models SET name = ?2, last_updated_timestamp = ?3 WHERE id = ?1",
                params![id, new_name, now],
            )
            .map_err(|e| match e.is_unique_violation() {
                true => RegistryError::AlreadyExists(format!("Registered Model (name={new_name}) already exists.")),
                false => e.into(),
            })?;
            tx.execute("UPDATE model_versions SET last_updated_timestamp = ?2 WHERE model_id = ?1", params![id, now])?;
            notify(tx, name)?;
            notify(tx, new_name)?;
            load_model(tx, id)
        })
    }

    /// Delete a model with all its versions, tags and aliases. Returns the storage locations of
    /// the deleted versions so the caller can remove files it owns.
    pub fn delete_registered_model(&self, name: &str) -> Result<Vec<String>> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            let locations =
                tx.query_map("SELECT storage_location FROM model_versions WHERE model_id = ?1", params![id], |r| {
                    r.get(0)
                })?;
            tx.execute("DELETE FROM registered_models WHERE id = ?1", params![id])?;
            notify(tx, name)?;
            Ok(locations)
        })
    }

    /// Delete `name` only if it has no versions (undoing a registration that created it,
    /// without touching versions another writer may have added meanwhile). True if deleted.
    pub fn delete_registered_model_if_empty(&self, name: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM registered_models WHERE name = ?1 \
                 AND NOT EXISTS (SELECT 1 FROM model_versions mv WHERE mv.model_id = registered_models.id)",
                params![name],
            )?;
            Ok(n > 0)
        })
    }

    pub fn set_registered_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        validate_tags(&[Tag { key: key.into(), value: value.into() }])?;
        self.write(|tx| {
            let id = model_id(tx, name)?;
            tx.execute(
                "INSERT INTO registered_model_tags (model_id, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
                params![id, key, value],
            )?;
            emit::model_tag(tx, id, name, key, Some(value))?;
            touch_model(tx, id)
        })
    }

    pub fn delete_registered_model_tag(&self, name: &str, key: &str) -> Result<()> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            let n =
                tx.execute("DELETE FROM registered_model_tags WHERE model_id = ?1 AND key = ?2", params![id, key])?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!(
                    "No tag with name: {key} in registered model with name={name}"
                )));
            }
            emit::model_tag(tx, id, name, key, None)?;
            touch_model(tx, id)
        })
    }

    /// Every registered model, by name (the CLI's `list`; the REST API uses [`Store::search_registered_models`]).
    pub fn list_registered_models(&self) -> Result<Vec<RegisteredModel>> {
        self.read(|tx| {
            let ids: Vec<i64> =
                tx.query_map("SELECT id FROM registered_models ORDER BY name", params![], |r| r.get(0))?;
            load_models(tx, &ids)
        })
    }

    pub fn search_registered_models(
        &self,
        filter_str: &str,
        max_results: usize,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<Page<RegisteredModel>> {
        let q = search::build_for(self.db.dialect(), Target::RegisteredModels, filter_str, order_by, page_token)?;
        self.read(|tx| {
            let (mut models, next_page_token) = q.fetch_page(tx, MODEL_COLUMNS, max_results, model_from_row)?;
            complete_models(tx, &mut models)?;
            Ok(Page { items: models.into_iter().map(|(_, m)| m).collect(), next_page_token })
        })
    }

    // ---------------------------------------------------------------- aliases

    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        validate_alias(alias)?;
        self.write(|tx| {
            let id = model_id(tx, name)?;
            version_exists(tx, id, name, version)?;
            tx.execute(
                "INSERT INTO registered_model_aliases (model_id, alias, version) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version",
                params![id, alias, version as i64],
            )?;
            emit::alias_set(tx, id, name, alias, Some(version))?;
            notify(tx, name)?;
            touch_model(tx, id)
        })
    }

    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            let n = tx.execute(
                "DELETE FROM registered_model_aliases WHERE model_id = ?1 AND alias = ?2",
                params![id, alias],
            )?;
            if n == 0 {
                return Err(alias_not_found(alias));
            }
            emit::alias_set(tx, id, name, alias, None)?;
            notify(tx, name)?;
            touch_model(tx, id)
        })
    }

    pub fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        self.read(|tx| {
            let id = model_id(tx, name)?;
            let version: Option<i64> = tx.query_opt(
                "SELECT version FROM registered_model_aliases WHERE model_id = ?1 AND alias = ?2",
                params![id, alias],
                |r| r.get(0),
            )?;
            let version = version.ok_or_else(|| alias_not_found(alias))?;
            load_version(tx, id, name, version as u64)
        })
    }

    // ---------------------------------------------------------------- model versions

    /// Create the next version of `new.name` (the model must exist). The number is taken from
    /// the model's counter inside the transaction, so concurrent writers get distinct,
    /// consecutive numbers and a deleted version's number is never reused.
    pub fn create_model_version(&self, new: &NewVersion) -> Result<ModelVersion> {
        validate_description(&new.description)?;
        validate_tags(&new.tags)?;
        if let Some(alias) = &new.alias {
            validate_alias(alias)?;
        }
        if new.source.is_empty() {
            return Err(RegistryError::InvalidParameter("Missing value for required parameter 'source'.".into()));
        }
        self.write(|tx| {
            let id = model_id(tx, &new.name)?;
            let version: i64 = tx.query_row(
                "UPDATE registered_models SET next_version = next_version + 1, last_updated_timestamp = ?2 \
                 WHERE id = ?1 RETURNING next_version - 1",
                params![id, now_ms()],
                |r| r.get(0),
            )?;
            let now = now_ms();
            let status = new.status.unwrap_or(VersionStatus::Ready);
            tx.execute(
                "INSERT INTO model_versions (model_id, version, creation_timestamp, last_updated_timestamp, \
                 description, user_id, current_stage, source, run_id, run_link, status, storage_location, logged_model_id) \
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, 'None', ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id,
                    version,
                    now,
                    new.description,
                    new.user_id,
                    new.source,
                    new.run_id,
                    new.run_link,
                    status.as_str(),
                    if new.storage_location.is_empty() { &new.source } else { &new.storage_location },
                    new.logged_model_id,
                ],
            )?;
            for t in &new.tags {
                tx.execute(
                    "INSERT INTO model_version_tags (model_id, version, key, value) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (model_id, version, key) DO UPDATE SET value = excluded.value",
                    params![id, version, t.key, t.value],
                )?;
            }
            if let Some(stage) = new.stage {
                set_stage(tx, id, version, stage, new.archive_existing, now)?;
            }
            if let Some(alias) = &new.alias {
                tx.execute(
                    "INSERT INTO registered_model_aliases (model_id, alias, version) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version",
                    params![id, alias, version],
                )?;
            }
            emit::version_created(tx, id, new, version)?;
            notify(tx, &new.name)?;
            load_version(tx, id, &new.name, version as u64)
        })
    }

    pub fn get_model_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        self.read(|tx| {
            let id = model_id(tx, name)?;
            load_version(tx, id, name, version)
        })
    }

    pub fn update_model_version(&self, name: &str, version: u64, description: &str) -> Result<ModelVersion> {
        validate_description(description)?;
        self.write(|tx| {
            let id = model_id(tx, name)?;
            version_exists(tx, id, name, version)?;
            tx.execute(
                "UPDATE model_versions SET description = ?3, last_updated_timestamp = ?4 WHERE model_id = ?1 AND version = ?2",
                params![id, version as i64, description, now_ms()],
            )?;
            load_version(tx, id, name, version)
        })
    }

    /// Set a version's registration status (e.g. PENDING_REGISTRATION → READY).
    pub fn set_version_status(
        &self,
        name: &str,
        version: u64,
        status: VersionStatus,
        message: &str,
    ) -> Result<ModelVersion> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            let before: String = tx
                .query_opt(
                    "SELECT status FROM model_versions WHERE model_id = ?1 AND version = ?2",
                    params![id, version as i64],
                    |r| r.get(0),
                )?
                .ok_or_else(|| RegistryError::version_not_found(name, version))?;
            tx.execute(
                "UPDATE model_versions SET status = ?3, status_message = ?4, last_updated_timestamp = ?5 \
                 WHERE model_id = ?1 AND version = ?2",
                params![id, version as i64, status.as_str(), message, now_ms()],
            )?;
            notify(tx, name)?;
            let mv = load_version(tx, id, name, version)?;
            if before == VersionStatus::PendingRegistration.as_str() && status != VersionStatus::PendingRegistration {
                emit::version_registered(tx, id, &mv)?;
            }
            Ok(mv)
        })
    }

    /// Delete one version (its tags and the aliases pointing at it go too). Returns its
    /// storage location.
    pub fn delete_model_version(&self, name: &str, version: u64) -> Result<String> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            let location: String = tx
                .query_opt(
                    "SELECT storage_location FROM model_versions WHERE model_id = ?1 AND version = ?2",
                    params![id, version as i64],
                    |r| r.get(0),
                )?
                .ok_or_else(|| RegistryError::version_not_found(name, version))?;
            tx.execute("DELETE FROM model_versions WHERE model_id = ?1 AND version = ?2", params![id, version as i64])?;
            notify(tx, name)?;
            touch_model(tx, id)?;
            Ok(location)
        })
    }

    /// Move a version to `stage`; with `archive_existing`, the other versions in that stage
    /// (Staging or Production only, as MLflow does) move to Archived in the same transaction.
    pub fn transition_stage(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
    ) -> Result<ModelVersion> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            version_exists(tx, id, name, version)?;
            set_stage(tx, id, version as i64, stage, archive_existing, now_ms())?;
            emit::stage_transitioned(tx, name, version, stage, archive_existing)?;
            touch_model(tx, id)?;
            notify(tx, name)?;
            load_version(tx, id, name, version)
        })
    }

    /// The highest version in each of `stages` (every stage when empty), as MLflow's
    /// `get-latest-versions` answers.
    pub fn get_latest_versions(&self, name: &str, stages: &[Stage]) -> Result<Vec<ModelVersion>> {
        self.read(|tx| {
            let id = model_id(tx, name)?;
            latest_versions(tx, id, name, stages)
        })
    }

    /// Every version of a model, newest first.
    pub fn list_model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.read(|tx| {
            let id = model_id(tx, name)?;
            let keys: Vec<(i64, u64)> = tx.query_map(
                "SELECT version FROM model_versions WHERE model_id = ?1 ORDER BY version DESC",
                params![id],
                |r| Ok((id, r.get::<i64>(0)? as u64)),
            )?;
            load_versions(tx, &keys)
        })
    }

    pub fn search_model_versions(
        &self,
        filter_str: &str,
        max_results: usize,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<Page<ModelVersion>> {
        let q = search::build_for(self.db.dialect(), Target::ModelVersions, filter_str, order_by, page_token)?;
        self.read(|tx| {
            let (mut versions, next_page_token) = q.fetch_page(tx, VERSION_COLUMNS, max_results, |r| {
                let (mv, id) = version_from_row(r)?;
                Ok(((id, mv.version), mv))
            })?;
            complete_versions(tx, &mut versions)?;
            Ok(Page { items: versions.into_iter().map(|(_, mv)| mv).collect(), next_page_token })
        })
    }

    pub fn set_model_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()> {
        validate_tags(&[Tag { key: key.into(), value: value.into() }])?;
        self.write(|tx| {
            let id = model_id(tx, name)?;
            version_exists(tx, id, name, version)?;
            tx.execute(
                "INSERT INTO model_version_tags (model_id, version, key, value) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (model_id, version, key) DO UPDATE SET value = excluded.value",
                params![id, version as i64, key, value],
            )?;
            emit::version_tag(tx, id, name, version, key, Some(value))?;
            Ok(())
        })
    }

    pub fn delete_model_version_tag(&self, name: &str, version: u64, key: &str) -> Result<()> {
        self.write(|tx| {
            let id = model_id(tx, name)?;
            version_exists(tx, id, name, version)?;
            let n = tx.execute(
                "DELETE FROM model_version_tags WHERE model_id = ?1 AND version = ?2 AND key = ?3",
                params![id, version as i64, key],
            )?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!(
                    "No tag with name: {key} in model version (name={name}, version={version})"
                )));
            }
            emit::version_tag(tx, id, name, version, key, None)?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- resolution

    /// The version a `models:/` URI selects. Stage and `latest` consider READY versions only,
    /// so a version still being registered is never served.
    pub fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion> {
        let name = uri.name.as_str();
        match &uri.selector {
            Selector::Version(v) => self.get_model_version(name, *v),
            Selector::Alias(a) => self.get_model_version_by_alias(name, a),
            Selector::Latest => self.read(|tx| {
                let id = model_id(tx, name)?;
                let v: Option<i64> = tx.query_row(
                    "SELECT MAX(version) FROM model_versions WHERE model_id = ?1 AND status = 'READY'",
                    params![id],
                    |r| r.get(0),
                )?;
                let v = v.ok_or_else(|| {
                    RegistryError::NotFound(format!("No versions of model with name '{name}' found"))
                })?;
                load_version(tx, id, name, v as u64)
            }),
            Selector::Stage(stage) => self.read(|tx| {
                let id = model_id(tx, name)?;
                let v: Option<i64> = tx.query_row(
                    "SELECT MAX(version) FROM model_versions WHERE model_id = ?1 AND current_stage = ?2 AND status = 'READY'",
                    params![id, stage.as_str()],
                    |r| r.get(0),
                )?;
                let v = v.ok_or_else(|| {
                    RegistryError::NotFound(format!(
                        "No versions of model with name '{name}' and stage '{stage}' found"
                    ))
                })?;
                load_version(tx, id, name, v as u64)
            }),
        }
    }

    // ---------------------------------------------------------------- shared with tracking

    /// How many versions keep their files at `location` (so the last one to go may remove them).
    pub fn versions_stored_at(&self, location: &str) -> Result<u64> {
        self.read(|tx| {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM model_versions WHERE storage_location = ?1",
                params![location],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }

    /// One IMMEDIATE write transaction, for the tracking store sharing this database.
    pub(crate) fn write_tx<T>(&self, f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.write(f)
    }

    /// One read transaction, for the tracking store sharing this database.
    pub(crate) fn read_tx<T>(&self, f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.read(f)
    }
}

// -------------------------------------------------------------------- row helpers

/// Tell `serve` daemons following this registry (PostgreSQL `LISTEN`) that what `models:/`
/// URIs of model `name` resolve to may have changed; delivered when the transaction commits.
fn notify(tx: &Tx<'_>, name: &str) -> Result<()> {
    Ok(tx.notify(CHANGES_CHANNEL, name)?)
}

fn alias_not_found(alias: &str) -> RegistryError {
    // MLflow answers 400 INVALID_PARAMETER_VALUE here, not 404.
    RegistryError::InvalidParameter(format!("Registered model alias {alias} not found."))
}

fn model_id(tx: &Tx<'_>, name: &str) -> Result<i64> {
    let sql = format!("SELECT id FROM registered_models WHERE name = ?1{}", tx.for_update());
    tx.query_opt(&sql, params![name], |r| r.get(0))?.ok_or_else(|| RegistryError::model_not_found(name))
}

fn version_exists(tx: &Tx<'_>, id: i64, name: &str, version: u64) -> Result<()> {
    let found: Option<i64> = tx.query_opt(
        "SELECT 1 FROM model_versions WHERE model_id = ?1 AND version = ?2",
        params![id, version as i64],
        |r| r.get(0),
    )?;
    found.map(|_| ()).ok_or_else(|| RegistryError::version_not_found(name, version))
}

fn set_stage(tx: &Tx<'_>, id: i64, version: i64, stage: Stage, archive_existing: bool, now: i64) -> Result<()> {
    if archive_existing && matches!(stage, Stage::Staging | Stage::Production) {
        tx.execute(
            "UPDATE model_versions SET current_stage = 'Archived', last_updated_timestamp = ?3 \
             WHERE model_id = ?1 AND current_stage = ?2 AND version != ?4",
            params![id, stage.as_str(), now, version],
        )?;
    }
    tx.execute(
        "UPDATE model_versions SET current_stage = ?3, last_updated_timestamp = ?4 WHERE model_id = ?1 AND version = ?2",
        params![id, version, stage.as_str(), now],
    )?;
    Ok(())
}

fn touch_model(tx: &Tx<'_>, id: i64) -> Result<()> {
    tx.execute("UPDATE registered_models SET last_updated_timestamp = ?2 WHERE id = ?1", params![id, now_ms()])?;
    Ok(())
}

fn version_from_row(r: &Row<'_>) -> Result<(ModelVersion, i64), db::Error> {
    version_fields(r, 1, r.get(0)?)
}

/// The version in the columns of `version_fields!()` from column `at` on, of model `name`;
/// with its model's id.
fn version_fields(r: &Row<'_>, at: usize, name: String) -> Result<(ModelVersion, i64), db::Error> {
    let stage: String = r.get(at + 4)?;
    let status: String = r.get(at + 8)?;
    let mv = ModelVersion {
        name,
        version: r.get::<i64>(at)? as u64,
        creation_timestamp: r.get(at + 1)?,
        last_updated_timestamp: r.get(at + 2)?,
        user_id: r.get(at + 3)?,
        current_stage: Stage::parse(&stage).map_err(|e| db::Error::Conversion(e.to_string()))?,
        description: r.get(at + 5)?,
        source: r.get(at + 6)?,
        run_id: r.get(at + 7)?,
        status: VersionStatus::parse(&status).unwrap_or(VersionStatus::FailedRegistration),
        status_message: r.get(at + 9)?,
        run_link: r.get(at + 10)?,
        storage_location: r.get(at + 11)?,
        model_id: r.get(at + 12)?,
        tags: Vec::new(),
        aliases: Vec::new(),
    };
    Ok((mv, r.get(at + 13)?))
}

/// Statements that load models or versions by key take at most this many keys at once (a
/// page of 1,000 is a few statements, not one per key, and a statement's parameters stay few).
const KEYS_PER_STATEMENT: usize = 200;

/// `(mv.model_id = ?1 AND mv.version = ?2) OR …` for `keys`, and their parameters.
fn version_keys_clause(prefix: &str, keys: &[(i64, u64)]) -> (String, Vec<db::Value>) {
    let mut sql = String::with_capacity(keys.len() * 48);
    let mut values = Vec::with_capacity(keys.len() * 2);
    for (i, (id, v)) in keys.iter().enumerate() {
        if i > 0 {
            sql.push_str(" OR ");
        }
        sql.push_str(&format!("({prefix}model_id = ?{} AND {prefix}version = ?{})", 2 * i + 1, 2 * i + 2));
        values.push(db::Value::Integer(*id));
        values.push(db::Value::Integer(*v as i64));
    }
    (sql, values)
}

/// `?1, ?2, …` for `n` parameters.
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// The versions `keys` (model id, version), in that order, with their tags and aliases: three
/// statements per [`KEYS_PER_STATEMENT`] keys. A key with no version is an error naming it.
fn load_versions(tx: &Tx<'_>, keys: &[(i64, u64)]) -> Result<Vec<ModelVersion>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let (clause, values) = version_keys_clause("mv.", chunk);
        let params = db::params_from(&values);
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions mv JOIN registered_models rm ON rm.id = mv.model_id WHERE {clause}"
        );
        let rows = tx.query_map(&sql, &params, |r| {
            let (mv, id) = version_from_row(r)?;
            Ok(((id, mv.version), mv))
        })?;
        let mut found: HashMap<(i64, u64), ModelVersion> = rows.into_iter().collect();
        for key in chunk {
            let mv = found.remove(key).ok_or_else(|| {
                RegistryError::NotFound(format!("Model version {} of model id {} not found", key.1, key.0))
            })?;
            out.push((*key, mv));
        }
    }
    complete_versions(tx, &mut out)?;
    Ok(out.into_iter().map(|(_, mv)| mv).collect())
}

/// Add their tags and aliases to `versions` (keyed by model id and version): two statements
/// per [`KEYS_PER_STATEMENT`] versions.
fn complete_versions(tx: &Tx<'_>, versions: &mut [((i64, u64), ModelVersion)]) -> Result<()> {
    for chunk in versions.chunks_mut(KEYS_PER_STATEMENT) {
        let keys: Vec<(i64, u64)> = chunk.iter().map(|(k, _)| *k).collect();
        let at: HashMap<(i64, u64), usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let (clause, values) = version_keys_clause("", &keys);
        let params = db::params_from(&values);
        tx.for_each(
            &format!("SELECT model_id, version, key, value FROM model_version_tags WHERE {clause} ORDER BY key"),
            &params,
            |r| {
                if let Some(&i) = at.get(&(r.get::<i64>(0)?, r.get::<i64>(1)? as u64)) {
                    chunk[i].1.tags.push(Tag { key: r.get(2)?, value: r.get(3)? });
                }
                Ok(true)
            },
        )?;
        tx.for_each(
            &format!("SELECT model_id, version, alias FROM registered_model_aliases WHERE {clause} ORDER BY alias"),
            &params,
            |r| {
                if let Some(&i) = at.get(&(r.get::<i64>(0)?, r.get::<i64>(1)? as u64)) {
                    chunk[i].1.aliases.push(r.get(2)?);
                }
                Ok(true)
            },
        )?;
    }
    Ok(())
}

fn load_version(tx: &Tx<'_>, id: i64, name: &str, version: u64) -> Result<ModelVersion> {
    match load_versions(tx, &[(id, version)]) {
        Ok(mut v) => Ok(v.remove(0)),
        Err(RegistryError::NotFound(_)) => Err(RegistryError::version_not_found(name, version)),
        Err(e) => Err(e),
    }
}

/// The latest version in each stage of the models `models` (id and name), with its tags (not
/// its aliases), by model id, each list in stage order: one statement per
/// [`KEYS_PER_STATEMENT`] models. Each row is a version with one of its tags (or none); the
/// tags are put in key order here, so the database needs no sort (the rows come in the order
/// of the `(model_id, current_stage, version)` index).
fn latest_versions_of(tx: &Tx<'_>, models: &[(i64, &str)]) -> Result<HashMap<i64, Vec<ModelVersion>>> {
    let mut out: HashMap<i64, Vec<ModelVersion>> = HashMap::with_capacity(models.len());
    for chunk in models.chunks(KEYS_PER_STATEMENT) {
        let names: HashMap<i64, &str> = chunk.iter().copied().collect();
        let values: Vec<db::Value> = chunk.iter().map(|(id, _)| db::Value::Integer(*id)).collect();
        let sql = format!(
            concat!(
                "SELECT ",
                version_fields!(),
                ", t.key, t.value FROM model_versions mv \
                 LEFT JOIN model_version_tags t ON t.model_id = mv.model_id AND t.version = mv.version \
                 WHERE mv.model_id IN ({}) AND mv.version = (SELECT MAX(l.version) FROM model_versions l \
                 WHERE l.model_id = mv.model_id AND l.current_stage = mv.current_stage) \
                 ORDER BY mv.model_id, mv.current_stage"
            ),
            placeholders(chunk.len())
        );
        tx.for_each(&sql, &db::params_from(&values), |r| {
            let id: i64 = r.get(13)?;
            let version = r.get::<i64>(0)? as u64;
            let list = out.entry(id).or_default();
            if list.last().is_none_or(|mv| mv.version != version) {
                let name = names.get(&id).copied().unwrap_or_default();
                list.push(version_fields(r, 0, name.to_owned())?.0);
            }
            if let Some(key) = r.get::<Option<String>>(14)? {
                let mv = list.last_mut().expect("a version was pushed above; this is a bug");
                mv.tags.push(Tag { key, value: r.get(15)? });
            }
            Ok(true)
        })?;
    }
    for mv in out.values_mut().flatten() {
        mv.tags.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(out)
}

/// The latest version per stage of model `id` in `stages` (all when empty), with tags and aliases.
fn latest_versions(tx: &Tx<'_>, id: i64, name: &str, stages: &[Stage]) -> Result<Vec<ModelVersion>> {
    let mut all = latest_versions_of(tx, &[(id, name)])?.remove(&id).unwrap_or_default();
    all.retain(|v| stages.is_empty() || stages.contains(&v.current_stage));
    if !all.is_empty() {
        let aliases = tx.query_map(
            "SELECT alias, version FROM registered_model_aliases WHERE model_id = ?1 ORDER BY alias",
            params![id],
            |r| Ok(Alias { alias: r.get(0)?, version: r.get::<i64>(1)? as u64 }),
        )?;
        set_version_aliases(&mut all, &aliases);
    }
    Ok(all)
}

/// Each version's aliases, from its model's (`aliases`, in alias order).
fn set_version_aliases(versions: &mut [ModelVersion], aliases: &[Alias]) {
    for mv in versions {
        mv.aliases = aliases.iter().filter(|a| a.version == mv.version).map(|a| a.alias.clone()).collect();
    }
}

fn model_from_row(r: &Row<'_>) -> Result<(i64, RegisteredModel), db::Error> {
    Ok((
        r.get(0)?,
        RegisteredModel {
            name: r.get(1)?,
            creation_timestamp: r.get(2)?,
            last_updated_timestamp: r.get(3)?,
            description: r.get(4)?,
            latest_versions: Vec::new(),
            tags: Vec::new(),
            aliases: Vec::new(),
        },
    ))
}

/// The models `ids`, in that order, each with its tags, aliases and latest version per stage:
/// a fixed number of statements per [`KEYS_PER_STATEMENT`] models, whatever the page's size.
fn load_models(tx: &Tx<'_>, ids: &[i64]) -> Result<Vec<RegisteredModel>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(KEYS_PER_STATEMENT) {
        let values: Vec<db::Value> = chunk.iter().map(|id| db::Value::Integer(*id)).collect();
        let rows = tx.query_map(
            &format!("SELECT {MODEL_COLUMNS} FROM registered_models rm WHERE rm.id IN ({})", placeholders(chunk.len())),
            &db::params_from(&values),
            model_from_row,
        )?;
        let mut found: HashMap<i64, RegisteredModel> = rows.into_iter().collect();
        for id in chunk {
            let m = found
                .remove(id)
                .ok_or_else(|| RegistryError::NotFound(format!("Registered model id {id} not found")))?;
            out.push((*id, m));
        }
    }
    complete_models(tx, &mut out)?;
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

/// Add their tags, aliases and latest version per stage (with the versions' tags and aliases)
/// to `models` (keyed by id, each id once): three statements per [`KEYS_PER_STATEMENT`] models.
fn complete_models(tx: &Tx<'_>, models: &mut [(i64, RegisteredModel)]) -> Result<()> {
    for chunk in models.chunks_mut(KEYS_PER_STATEMENT) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let at: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let values: Vec<db::Value> = ids.iter().map(|id| db::Value::Integer(*id)).collect();
        let params = db::params_from(&values);
        let list = placeholders(ids.len());
        tx.for_each(
            &format!("SELECT model_id, key, value FROM registered_model_tags WHERE model_id IN ({list}) ORDER BY key"),
            &params,
            |r| {
                if let Some(&i) = at.get(&r.get::<i64>(0)?) {
                    chunk[i].1.tags.push(Tag { key: r.get(1)?, value: r.get(2)? });
                }
                Ok(true)
            },
        )?;
        tx.for_each(
            &format!(
                "SELECT model_id, alias, version FROM registered_model_aliases WHERE model_id IN ({list}) ORDER BY alias"
            ),
            &params,
            |r| {
                if let Some(&i) = at.get(&r.get::<i64>(0)?) {
                    chunk[i].1.aliases.push(Alias { alias: r.get(1)?, version: r.get::<i64>(2)? as u64 });
                }
                Ok(true)
            },
        )?;
        let keys: Vec<(i64, &str)> = chunk.iter().map(|(id, m)| (*id, m.name.as_str())).collect();
        let latest = latest_versions_of(tx, &keys)?;
        for (id, mut latest) in latest {
            if let Some(&i) = at.get(&id) {
                let m = &mut chunk[i].1;
                set_version_aliases(&mut latest, &m.aliases);
                m.latest_versions = latest;
            }
        }
    }
    Ok(())
}

fn load_model(tx: &Tx<'_>, id: i64) -> Result<RegisteredModel> {
    Ok(load_models(tx, &[id])?.remove(0))
}

// -------------------------------------------------------------------- validation

const MAX_TAG_KEY: usize = 250;
const MAX_TAG_VALUE: usize = 5000;

fn validate_tags(tags: &[Tag]) -> Result<()> {
    for t in tags {
        if t.key.is_empty() {
            return Err(RegistryError::InvalidParameter("Tag keys cannot be empty.".into()));
        }
        if t.key.len() > MAX_TAG_KEY {
            return Err(RegistryError::InvalidParameter(format!(
                "Tag key '{}...' is {} bytes long; the limit is {MAX_TAG_KEY}.",
                t.key.chars().take(20).collect::<String>(),
                t.key.len()
            )));
        }
        if t.value.len() > MAX_TAG_VALUE {
            return Err(RegistryError::InvalidParameter(format!(
                "Tag value for key '{}' is {} bytes long; the limit is {MAX_TAG_VALUE}.",
                t.key,
                t.value.len()
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() || alias.len() > 255 {
        return Err(RegistryError::InvalidParameter("Alias must be between 1 and 255 characters long.".into()));
    }
    if alias.eq_ignore_ascii_case("latest") || (alias.starts_with(['v', 'V']) && alias[1..].parse::<u64>().is_ok()) {
        return Err(RegistryError::InvalidParameter(format!(
            "'{alias}' is a reserved alias name: it would be ambiguous with 'latest' or a version number."
        )));
    }
    if alias.contains(['/', '@']) || alias.chars().any(char::is_control) {
        return Err(RegistryError::InvalidParameter(format!(
            "Invalid alias '{}': it may not contain '/', '@' or control characters.",
            alias.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::ModelUri;

    fn version(store: &Store, name: &str) -> ModelVersion {
        store
            .create_model_version(&NewVersion { name: name.into(), source: "file:///m".into(), ..Default::default() })
            .unwrap()
    }

    #[test]
    fn models_versions_and_errors_in_mlflow_terms() {
        let s = Store::open_in_memory().unwrap();
        let m = s
            .create_registered_model("fraud", "# Fraud\nmodel", &[Tag { key: "team".into(), value: "risk".into() }])
            .unwrap();
        assert_eq!((m.name.as_str(), m.description.as_str(), m.tags.len()), ("fraud", "# Fraud\nmodel", 1));
        let e = s.create_registered_model("fraud", "", &[]).unwrap_err();
        assert!(matches!(e, RegistryError::AlreadyExists(_)));
        assert_eq!(e.to_string(), "Registered Model (name=fraud) already exists.");
        assert_eq!(
            s.get_registered_model("nope").unwrap_err().to_string(),
            "Registered Model with name=nope not found"
        );
        assert_eq!(
            s.get_model_version("fraud", 9).unwrap_err().to_string(),
            "Model Version (name=fraud, version=9) not found"
        );
        assert!(matches!(s.create_registered_model("", "", &[]), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(s.create_registered_model("a/b", "", &[]), Err(RegistryError::InvalidParameter(_))));
        let v1 = version(&s, "fraud");
        assert_eq!((v1.version, v1.current_stage, v1.status), (1, Stage::None, VersionStatus::Ready));
        let m = s.get_registered_model("fraud").unwrap();
        assert_eq!(m.latest_versions.len(), 1);
    }

    #[test]
    fn undoing_a_registration_never_deletes_versions_added_meanwhile() {
        let s = Store::open_in_memory().unwrap();
        s.create_registered_model("m", "", &[]).unwrap();
        version(&s, "m");
        assert!(!s.delete_registered_model_if_empty("m").unwrap());
        assert_eq!(s.list_model_versions("m").unwrap().len(), 1);
        s.create_registered_model("empty", "", &[]).unwrap();
        assert!(s.delete_registered_model_if_empty("empty").unwrap());
        assert!(s.get_registered_model("empty").is_err());
    }

    #[test]
    fn version_numbers_are_never_reused() {
        let s = Store::open_in_memory().unwrap();
        s.create_registered_model("m", "", &[]).unwrap();
        assert_eq!(version(&s, "m").version, 1);
        assert_eq!(version(&s, "m").version, 2);
        s.delete_model_version("m", 2).unwrap();
        assert_eq!(version(&s, "m").version, 3);
        s.delete_model_version("m", 3).unwrap();
        s.delete_model_version("m", 1).unwrap();
        assert_eq!(version(&s, "m").version, 4);
    }

    #[test]
    fn stages_archive_existing_and_resolution() {
        let s = Store::open_in_memory().unwrap();
        s.create_registered_model("m", "", &[]).unwrap();
        for _ in 0..3 {
            version(&s, "m");
        }
        s.transition_stage("m", 1, Stage::Production, false).unwrap();
        s.transition_stage("m", 2, Stage::Production, false).unwrap();
        let uri: ModelUri = "models:/m/production".parse().unwrap();
        assert_eq!(s.resolve(&uri).unwrap().version, 2);
        s.transition_stage("m", 3, Stage::Production, true).unwrap();
        assert_eq!(s.get_model_version("m", 1).unwrap().current_stage, Stage::Archived);
        assert_eq!(s.get_model_version("m", 2).unwrap().current_stage, Stage::Archived);
        assert_eq!(s.resolve(&uri).unwrap().version, 3);
        assert_eq!(s.resolve(&"models:/m/latest".parse().unwrap()).unwrap().version, 3);
        let e = s.resolve(&"models:/m/Staging".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(e, "No versions of model with name 'm' and stage 'Staging' found");
        let latest = s.get_latest_versions("m", &[Stage::Archived, Stage::Production]).unwrap();
        assert_eq!(latest.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2, 3]);
        // A version that is not READY is never resolved by stage or latest.
        s.set_version_status("m", 3, VersionStatus::PendingRegistration, "loading").unwrap();
        assert_eq!(s.resolve(&"models:/m/latest".parse().unwrap()).unwrap().version, 2);
    }

    #[test]
    fn aliases_follow_versions_and_renames() {
        let s = Store::open_in_memory().unwrap();
        s.create_registered_model("m", "", &[]).unwrap();
        version(&s, "m");
        version(&s, "m");
        s.set_alias("m", "champion", 1).unwrap();
        s.set_alias("m", "champion", 2).unwrap();
        assert_eq!(s.get_model_version_by_alias("m", "champion").unwrap().version, 2);
        assert_eq!(s.get_model_version("m", 2).unwrap().aliases, vec!["champion"]);
        assert!(matches!(s.set_alias("m", "x", 9), Err(RegistryError::NotFound(_))));
        assert!(matches!(s.set_alias("m", "latest", 1), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(s.set_alias("m", "v3", 1), Err(RegistryError::InvalidParameter(_))));
        let renamed = s.rename_registered_model("m", "m2").unwrap();
        assert_eq!(renamed.aliases[0].alias, "champion");
        assert_eq!(s.get_model_version_by_alias("m2", "champion").unwrap().name, "m2");
        // Deleting the version removes the alias pointing at it.
        s.delete_model_version("m2", 2).unwrap();
        let e = s.get_model_version_by_alias("m2", "champion").unwrap_err();
        assert!(matches!(e, RegistryError::InvalidParameter(_)), "{e}");
        assert_eq!(e.to_string(), "Registered model alias champion not found.");
    }

    #[test]
    fn create_with_stage_and_bad_alias_is_all_or_nothing() {
        let s = Store::open_in_memory().unwrap();
        s.create_registered_model("m", "", &[]).unwrap();
        let bad = NewVersion { name: "m".into(), source: "x".into(), alias: Some("a/b".into()), ..Default::default() };
        assert!(s.create_model_version(&bad).is_err());
        assert!(s.list_model_versions("m").unwrap().is_empty());
        let good = NewVersion { stage: Some(Stage::Staging), alias: Some("candidate".into()), ..bad };
        let v = s.create_model_version(&NewVersion { alias: Some("candidate".into()), ..good }).unwrap();
        assert_eq!((v.version, v.current_stage, v.aliases.clone()), (1, Stage::Staging, vec!["candidate".to_string()]));
    }

    #[test]
    fn processes_opening_a_fresh_database_together_all_succeed() {
        // Two `regserve server`s started at the same moment on a fresh data dir: the WAL switch
        // and the migrations of one must not make the other fail with "database is locked".
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("registry.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Store::open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), Ok(()), "round {round}");
            }
        }
    }

    #[test]
    fn two_writers_on_one_file_get_distinct_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        Store::open(&path).unwrap().create_registered_model("m", "", &[]).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each thread is its own connection, as another process would be.
                    let s = Store::open(&path).unwrap();
                    (0..25).map(|_| version(&s, "m").version).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=100).collect::<Vec<u64>>());
    }

    #[test]
    fn search_uses_filters_and_pages() {
        let s = Store::open_in_memory().unwrap();
        for i in 0..12 {
            s.create_registered_model(&format!("model-{i:02}"), "", &[]).unwrap();
        }
        s.set_registered_model_tag("model-03", "team", "risk").unwrap();
        let page = s.search_registered_models("name LIKE 'model-0%'", 4, &[], None).unwrap();
        assert_eq!(
            page.items.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["model-00", "model-01", "model-02", "model-03"]
        );
        let next = s.search_registered_models("name LIKE 'model-0%'", 4, &[], page.next_page_token.as_deref()).unwrap();
        assert_eq!(next.items[0].name, "model-04");
        let tagged = s.search_registered_models("tags.team = 'risk'", 100, &[], None).unwrap();
        assert_eq!(tagged.items.len(), 1);
        assert!(matches!(
            s.search_registered_models("bogus filter", 10, &[], None),
            Err(RegistryError::InvalidParameter(_))
        ));
    }
}
