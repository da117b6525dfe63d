//! Registry webhooks, as MLflow ≥ 3.3 keeps and sends them (`mlflow/entities/webhook.py`,
//! `mlflow/store/model_registry/sqlalchemy_store.py`, `mlflow/webhooks/`): the hooks and their
//! events in the `webhooks`/`webhook_events` tables, the events' payloads, and the
//! transactional outbox (`webhook_deliveries`) the registry writes fill in their own
//! transaction. [`crate::mlflow::webhooks`] sends what the outbox holds, signed, with retries.
//!
//! One regserve extension: `model_version.stage_transitioned` (MLflow sends nothing for a
//! stage transition). The MLflow client refuses an action its enum does not know, so a hook
//! subscribes to it through `regserve_extension_events` and finds it listed there, never in
//! `events`.

use std::cell::Cell;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use super::store::{now_ms, Page, Store};
use super::{RegistryError, Tag};
use crate::db::{self, Tx};
use crate::params;

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// An event a hook subscribes to: MLflow's entity/action pairs (`VALID_ENTITY_ACTIONS`), plus
/// regserve's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    pub entity: &'static str,
    pub action: &'static str,
}

/// MLflow's events, in `VALID_ENTITY_ACTIONS` order.
pub const MLFLOW_EVENTS: &[Event] = &[
    Event { entity: "registered_model", action: "created" },
    Event { entity: "model_version", action: "created" },
    Event { entity: "model_version_tag", action: "set" },
    Event { entity: "model_version_tag", action: "deleted" },
    Event { entity: "model_version_alias", action: "created" },
    Event { entity: "model_version_alias", action: "deleted" },
    Event { entity: "prompt", action: "created" },
    Event { entity: "prompt_version", action: "created" },
    Event { entity: "prompt_tag", action: "set" },
    Event { entity: "prompt_tag", action: "deleted" },
    Event { entity: "prompt_version_tag", action: "set" },
    Event { entity: "prompt_version_tag", action: "deleted" },
    Event { entity: "prompt_alias", action: "created" },
    Event { entity: "prompt_alias", action: "deleted" },
    Event { entity: "budget_policy", action: "exceeded" },
];

/// regserve's extension: a version moved to another stage.
pub const STAGE_TRANSITIONED: Event = Event { entity: "model_version", action: "stage_transitioned" };

/// The proto enums' numbers (`WebhookEntity`, `WebhookAction`), for requests that send numbers.
const ENTITY_NUMBERS: &[&str] = &[
    "entity_unspecified",
    "registered_model",
    "model_version",
    "model_version_tag",
    "model_version_alias",
    "prompt",
    "prompt_version",
    "prompt_tag",
    "prompt_version_tag",
    "prompt_alias",
    "budget_policy",
];
const ACTION_NUMBERS: &[&str] = &["action_unspecified", "created", "updated", "deleted", "set", "exceeded"];

impl Event {
    /// An MLflow event from its entity and action (lower case, as stored).
    pub fn mlflow(entity: &str, action: &str) -> Option<Event> {
        MLFLOW_EVENTS.iter().copied().find(|e| e.entity == entity && e.action == action)
    }

    /// Any event regserve knows: MLflow's and the extension.
    fn known(entity: &str, action: &str) -> Option<Event> {
        Event::mlflow(entity, action).or_else(|| {
            (STAGE_TRANSITIONED.entity == entity && STAGE_TRANSITIONED.action == action).then_some(STAGE_TRANSITIONED)
        })
    }

    /// An `{"entity": "MODEL_VERSION", "action": "CREATED"}` object of a request (names in any
    /// case, or the enums' numbers), checked as MLflow's `WebhookEvent` does.
    pub fn from_request(v: &Value) -> Result<Event> {
        let part = |key: &str, numbers: &[&str]| -> Result<String> {
            match v.get(key) {
                Some(Value::String(s)) => Ok(s.to_ascii_lowercase()),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|i| numbers.get(i as usize))
                    .map(|s| s.to_string())
                    .ok_or_else(|| invalid(format!("Unknown webhook {key} number {n}."))),
                None | Some(Value::Null) => Ok(numbers[0].to_string()),
                Some(other) => Err(invalid(format!("Invalid webhook {key} {other}: expected a string."))),
            }
        };
        let entity = part("entity", ENTITY_NUMBERS)?;
        let action = part("action", ACTION_NUMBERS)?;
        if entity == STAGE_TRANSITIONED.entity && action == STAGE_TRANSITIONED.action {
            return Err(invalid(
                "'model_version.stage_transitioned' is a regserve extension event: subscribe to it with \
                 'regserve_extension_events': [\"model_version.stage_transitioned\"], not in 'events' \
                 (the MLflow client cannot read it there)."
                    .into(),
            ));
        }
        if !ENTITY_NUMBERS[1..].contains(&entity.as_str()) {
            return Err(invalid(format!("Invalid webhook entity '{entity}'.")));
        }
        Event::mlflow(&entity, &action).ok_or_else(|| {
            let valid: Vec<&str> = MLFLOW_EVENTS.iter().filter(|e| e.entity == entity).map(|e| e.action).collect();
            let mut valid = valid;
            valid.sort_unstable();
            invalid(format!("Invalid action '{action}' for entity '{entity}'. Valid actions are: {valid:?}"))
        })
    }

    /// An extension event named `entity.action` (`regserve_extension_events`).
    pub fn extension_from_str(s: &str) -> Result<Event> {
        if s == STAGE_TRANSITIONED.to_string() {
            Ok(STAGE_TRANSITIONED)
        } else {
            Err(invalid(format!(
                "Unknown regserve extension event '{s}'. The only one is 'model_version.stage_transitioned'."
            )))
        }
    }

    pub fn is_extension(&self) -> bool {
        *self == STAGE_TRANSITIONED
    }

    /// The payload `test_webhook` sends for this event: MLflow's `get_example_payload_for_event`.
    pub fn example_payload(&self) -> Value {
        match (self.entity, self.action) {
            ("registered_model", "created") => {
                json!({"name": "example_model", "tags": {"example_key": "example_value"}, "description": "An example registered model"})
            }
            ("model_version", "created") => {
                json!({"name": "example_model", "version": "1", "source": "models:/123", "run_id": "abcd1234abcd5678", "tags": {"example_key": "example_value"}, "description": "An example model version"})
            }
            ("model_version_tag", "set") => {
                json!({"name": "example_model", "version": "1", "key": "example_key", "value": "example_value"})
            }
            ("model_version_tag", "deleted") => json!({"name": "example_model", "version": "1", "key": "example_key"}),
            ("model_version_alias", "created") => {
                json!({"name": "example_model", "alias": "example_alias", "version": "1"})
            }
            ("model_version_alias", "deleted") => json!({"name": "example_model", "alias": "example_alias"}),
            ("prompt", "created") => {
                json!({"name": "example_prompt", "tags": {"example_key": "example_value"}, "description": "An example prompt"})
            }
            ("prompt_version", "created") => {
                json!({"name": "example_prompt", "version": "1", "template": "Hello {{name}}!", "tags": {"example_key": "example_value"}, "description": "An example prompt version"})
            }
            ("prompt_tag", "set") => json!({"name": "example_prompt", "key": "example_key", "value": "example_value"}),
            ("prompt_tag", "deleted") => json!({"name": "example_prompt", "key": "example_key"}),
            ("prompt_version_tag", "set") => {
                json!({"name": "example_prompt", "version": "1", "key": "example_key", "value": "example_value"})
            }
            ("prompt_version_tag", "deleted") => {
                json!({"name": "example_prompt", "version": "1", "key": "example_key"})
            }
            ("prompt_alias", "created") => json!({"name": "example_prompt", "alias": "example_alias", "version": "1"}),
            ("prompt_alias", "deleted") => json!({"name": "example_prompt", "alias": "example_alias"}),
            ("budget_policy", "exceeded") => {
                json!({"budget_policy_id": "bp-abc123", "budget_unit": "USD", "budget_amount": 100.0, "current_spend": 105.5, "duration_unit": "MONTHS", "duration_value": 1, "target_scope": "ENDPOINT", "workspace": "default", "target_value": "ep-abc123", "window_start": 1704067200000_i64})
            }
            _ => {
                json!({"name": "example_model", "version": "1", "stage": "Production", "archive_existing_versions": false})
            }
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.entity, self.action)
    }
}

/// A hook as the REST API shows it (MLflow's `Webhook` proto in JSON); the secret is kept but
/// never serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub webhook_id: String,
    pub name: String,
    pub description: Option<String>,
    pub url: String,
    /// MLflow's events and the extension events, in stored order.
    pub events: Vec<Event>,
    /// `ACTIVE` or `DISABLED`.
    pub status: String,
    pub secret: Option<String>,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
}

struct EventsJson<'a>(&'a [Event]);

impl Serialize for EventsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for e in self.0.iter().filter(|e| !e.is_extension()) {
            seq.serialize_element(
                &json!({"entity": e.entity.to_ascii_uppercase(), "action": e.action.to_ascii_uppercase()}),
            )?;
        }
        seq.end()
    }
}

impl Serialize for Webhook {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("webhook_id", &self.webhook_id)?;
        m.serialize_entry("name", &self.name)?;
        if let Some(d) = self.description.as_deref().filter(|d| !d.is_empty()) {
            m.serialize_entry("description", d)?;
        }
        m.serialize_entry("url", &self.url)?;
        m.serialize_entry("events", &EventsJson(&self.events))?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("creation_timestamp", &self.creation_timestamp)?;
        m.serialize_entry("last_updated_timestamp", &self.last_updated_timestamp)?;
        let extensions: Vec<String> = self.events.iter().filter(|e| e.is_extension()).map(|e| e.to_string()).collect();
        if !extensions.is_empty() {
            m.serialize_entry("regserve_extension_events", &extensions)?;
        }
        m.end()
    }
}

/// The fields of a hook to create.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub events: Vec<Event>,
    pub description: Option<String>,
    pub secret: Option<String>,
    pub status: Option<String>,
}

/// The fields an update changes (`None`: unchanged), as MLflow's `update_webhook`.
#[derive(Debug, Clone, Default)]
pub struct WebhookUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<Event>>,
    pub secret: Option<String>,
    pub status: Option<String>,
}

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidParameter(message)
}

/// MLflow's `_WEBHOOK_NAME_REGEX`: 1 to 63 letters, digits, `.`, `_`, `-`, starting and ending
/// with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_len = (1..=63).contains(&name.len());
    let bytes = name.as_bytes();
    let ends_ok =
        bytes.first().is_some_and(u8::is_ascii_alphanumeric) && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    let chars_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok_len && ends_ok && chars_ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Webhook name '{name}' is invalid. It must start and end with a letter or digit, be less than 63 \
             characters long, and contain only letters, digits, dots (.), underscores (_), and hyphens (-)."
        )))
    }
}

fn validate_events(events: &[Event]) -> Result<()> {
    if events.iter().all(Event::is_extension) {
        return Err(invalid(format!(
            "Webhook events must be a non-empty list of WebhookEvent objects: {:?}.",
            events.iter().filter(|e| !e.is_extension()).map(|e| e.to_string()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// `ACTIVE` or `DISABLED` (a proto enum name, or its number).
pub fn parse_status(v: &Value) -> Result<String> {
    match v {
        Value::String(s) if s.eq_ignore_ascii_case("ACTIVE") => Ok("ACTIVE".into()),
        Value::String(s) if s.eq_ignore_ascii_case("DISABLED") => Ok("DISABLED".into()),
        Value::Number(n) if n.as_u64() == Some(1) => Ok("ACTIVE".into()),
        Value::Number(n) if n.as_u64() == Some(2) => Ok("DISABLED".into()),
        other => Err(invalid(format!("Invalid webhook status {other}: it must be ACTIVE or DISABLED."))),
    }
}

fn not_found(id: &str) -> RegistryError {
    RegistryError::NotFound(format!("Webhook with ID {id} not found."))
}

/// MLflow's offset page token (`SearchUtils.create_page_token`): base64 of `{"offset": n}`.
fn page_token(offset: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

fn parse_page_token(token: Option<&str>) -> Result<usize> {
    use base64::Engine;
    let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(0) };
    let bad = || invalid("Invalid page token, could not base64-decode".to_string());
    let raw = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    v.get("offset")
        .and_then(Value::as_u64)
        .map(|o| o as usize)
        .ok_or_else(|| invalid(format!("Invalid page token, parsed value=\"{}\"", String::from_utf8_lossy(&raw))))
}

const WEBHOOK_COLUMNS: &str =
    "webhook_id, name, description, url, secret, status, creation_timestamp, last_updated_timestamp";

fn load(tx: &Tx<'_>, id: &str) -> Result<Webhook> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?1 AND deleted_timestamp IS NULL");
    let mut hook = tx
        .query_opt(&sql, params![id], |r| {
            Ok(Webhook {
                webhook_id: r.get(0)?,
                name: r.get(1)?,
                description: r.get(2)?,
                url: r.get(3)?,
                secret: r.get(4)?,
                status: r.get(5)?,
                creation_timestamp: r.get(6)?,
                last_updated_timestamp: r.get(7)?,
                events: Vec::new(),
            })
        })?
        .ok_or_else(|| not_found(id))?;
    let pairs: Vec<(String, String)> = tx.query_map(
        "SELECT entity, action FROM webhook_events WHERE webhook_id = ?1 ORDER BY entity, action",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    hook.events = pairs.iter().filter_map(|(e, a)| Event::known(e, a)).collect();
    Ok(hook)
}

fn insert_events(tx: &Tx<'_>, id: &str, events: &[Event]) -> Result<()> {
    for e in events {
        tx.execute(
            "INSERT INTO webhook_events (webhook_id, entity, action) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![id, e.entity, e.action],
        )?;
    }
    Ok(())
}

impl Store {
    /// MLflow's `create_webhook` (the URL is checked by the caller: `mlflow::webhooks::Destinations`).
    pub fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook> {
        validate_name(&new.name)?;
        validate_events(&new.events)?;
        let id = uuid::Uuid::new_v4().to_string();
        self.write_tx(|tx| {
            let now = now_ms();
            tx.execute(
                "INSERT INTO webhooks (webhook_id, name, description, url, secret, status, creation_timestamp, \
                 last_updated_timestamp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    id,
                    new.name,
                    new.description,
                    new.url,
                    new.secret,
                    new.status.as_deref().unwrap_or("ACTIVE"),
                    now
                ],
            )?;
            insert_events(tx, &id, &new.events)?;
            load(tx, &id)
        })
    }

    pub fn get_webhook(&self, id: &str) -> Result<Webhook> {
        self.read_tx(|tx| load(tx, id))
    }

    /// One page of the hooks, newest first (MLflow's order), `max_results` at most.
    pub fn list_webhooks(&self, max_results: usize, token: Option<&str>) -> Result<Page<Webhook>> {
        let offset = parse_page_token(token)?;
        self.read_tx(|tx| {
            let ids: Vec<String> = tx.query_map(
                "SELECT webhook_id FROM webhooks WHERE deleted_timestamp IS NULL \
                 ORDER BY creation_timestamp DESC, webhook_id DESC LIMIT ?1 OFFSET ?2",
                params![(max_results + 1) as i64, offset as i64],
                |r| r.get(0),
            )?;
            let more = ids.len() > max_results;
            let items = ids.iter().take(max_results).map(|id| load(tx, id)).collect::<Result<Vec<_>>>()?;
            Ok(Page { items, next_page_token: more.then(|| page_token(offset + max_results)) })
        })
    }

    /// MLflow's `update_webhook`: the fields given change; `events` replaces every event.
    pub fn update_webhook(&self, id: &str, update: &WebhookUpdate) -> Result<Webhook> {
        if let Some(name) = &update.name {
            validate_name(name)?;
        }
        if let Some(events) = &update.events {
            validate_events(events)?;
        }
        self.write_tx(|tx| {
            load(tx, id)?;
            let now = now_ms();
            tx.execute(
                "UPDATE webhooks SET name = COALESCE(?2, name), description = COALESCE(?3, description), \
                 url = COALESCE(?4, url), secret = COALESCE(?5, secret), status = COALESCE(?6, status), \
                 last_updated_timestamp = ?7 WHERE webhook_id = ?1",
                params![id, update.name, update.description, update.url, update.secret, update.status, now],
            )?;
            if let Some(events) = &update.events {
                tx.execute("DELETE FROM webhook_events WHERE webhook_id = ?1", params![id])?;
                insert_events(tx, id, events)?;
            }
            load(tx, id)
        })
    }

    /// MLflow's `delete_webhook`: a soft delete. Deliveries still waiting are dropped.
    pub fn delete_webhook(&self, id: &str) -> Result<()> {
        self.write_tx(|tx| {
            load(tx, id)?;
            let now = now_ms();
            tx.execute(
                "UPDATE webhooks SET deleted_timestamp = ?2, last_updated_timestamp = ?2 WHERE webhook_id = ?1",
                params![id, now],
            )?;
            tx.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1 AND state = 'PENDING'", params![id])?;
            Ok(())
        })
    }
}

// -------------------------------------------------------------------- the outbox

thread_local! {
    /// Set by [`enqueue`] on the thread running the write transaction; read (and cleared) by
    /// the store once the transaction has committed, to wake the delivery workers at once.
    static ENQUEUED: Cell<bool> = const { Cell::new(false) };
}

static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The PostgreSQL channel a write that queued deliveries notifies (on commit), so the delivery
/// workers of the other servers on the database start at once too.
pub const OUTBOX_CHANNEL: &str = "regserve_webhook_outbox";

/// Clear the "events were enqueued" mark of this thread (before a write transaction).
pub(crate) fn begin_write() {
    ENQUEUED.set(false);
}

/// After a write transaction: wake this process's delivery worker if it enqueued events and
/// committed.
pub(crate) fn end_write(committed: bool) {
    if ENQUEUED.replace(false) && committed {
        WAKE.notify_one();
    }
}

/// Resolves when a write of this process enqueued deliveries (or at once if one did since the
/// last call).
pub(crate) async fn enqueued() {
    WAKE.notified().await
}

/// MLflow's `datetime.now(timezone.utc).isoformat()`: `2025-01-01T12:00:00.123456+00:00`.
fn iso_now() -> String {
    let s = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    s.strip_suffix('Z').map(|t| format!("{t}+00:00")).unwrap_or(s)
}

/// The JSON body MLflow posts for an event: `{entity, action, timestamp, data}`.
pub fn event_body(event: Event, data: &Value) -> String {
    json!({"entity": event.entity, "action": event.action, "timestamp": iso_now(), "data": data}).to_string()
}

/// Queue `event` for every active hook subscribed to it, in the caller's write transaction
/// (so the event exists exactly when the registry write does).
pub(crate) fn enqueue(tx: &Tx<'_>, event: Event, data: Value) -> Result<(), db::Error> {
    let hooks: Vec<String> = tx.query_map(
        "SELECT w.webhook_id FROM webhooks w JOIN webhook_events e ON e.webhook_id = w.webhook_id \
         WHERE w.deleted_timestamp IS NULL AND w.status = 'ACTIVE' AND e.entity = ?1 AND e.action = ?2",
        params![event.entity, event.action],
        |r| r.get(0),
    )?;
    if hooks.is_empty() {
        return Ok(());
    }
    let body = event_body(event, &data);
    let now = now_ms();
    for hook in hooks {
        tx.execute(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, body, created_at, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![uuid::Uuid::new_v4().to_string(), hook, event.to_string(), body, now],
        )?;
    }
    ENQUEUED.set(true);
    tx.notify(OUTBOX_CHANNEL, "")
}

/// Is the model `model_id` a prompt (MLflow's `RegisteredModel._is_prompt`)?
pub(crate) fn model_is_prompt(tx: &Tx<'_>, model_id: i64) -> Result<bool, db::Error> {
    let v: Option<String> = tx.query_opt(
        "SELECT value FROM registered_model_tags WHERE model_id = ?1 AND key = ?2",
        params![model_id, super::IS_PROMPT_TAG_KEY],
        |r| r.get(0),
    )?;
    Ok(v.is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

/// Tags as MLflow's payloads carry them: `{key: value}`, the last value of a key winning.
pub(crate) fn tags_object<'a>(tags: impl IntoIterator<Item = &'a Tag>) -> Value {
    let mut m = serde_json::Map::new();
    for t in tags {
        m.insert(t.key.clone(), Value::String(t.value.clone()));
    }
    Value::Object(m)
}

/// Pick the prompt or the model variant of an event, as MLflow's handlers do.
pub(crate) fn entity(prompt: bool, model_entity: &'static str, prompt_entity: &'static str) -> &'static str {
    if prompt {
        prompt_entity
    } else {
        model_entity
    }
}

/// An event of MLflow's list (panics only on a typo in this crate's own calls).
pub(crate) fn ev(entity: &'static str, action: &'static str) -> Event {
    Event::known(entity, action).unwrap_or(Event { entity, action })
}

// -------------------------------------------------------------------- the events of registry writes

/// The events of registry writes, with MLflow's payloads (`mlflow/server/handlers.py`: a
/// prompt — a model tagged `mlflow.prompt.is_prompt=true` — gets the `prompt*` events instead).
/// Each runs inside the write's transaction.
pub(crate) mod emit {
    use serde_json::{json, Value};

    use super::{enqueue, entity, ev, model_is_prompt, tags_object, STAGE_TRANSITIONED};
    use crate::db::{self, Tx};
    use crate::registry::{ModelVersion, NewVersion, Stage, Tag, VersionStatus};

    const PROMPT_TYPE_TAG_KEY: &str = "_mlflow_prompt_type";
    const PROMPT_TEXT_TAG_KEY: &str = "mlflow.prompt.text";

    /// `registered_model.created` / `prompt.created`: the request's tags and description.
    pub fn model_created(tx: &Tx<'_>, name: &str, description: &str, tags: &[Tag]) -> Result<(), db::Error> {
        if crate::registry::is_prompt(tags) {
            let kept =
                tags.iter().filter(|t| t.key != crate::registry::IS_PROMPT_TAG_KEY && t.key != PROMPT_TYPE_TAG_KEY);
            enqueue(
                tx,
                ev("prompt", "created"),
                json!({"name": name, "tags": tags_object(kept), "description": description}),
            )
        } else {
            enqueue(
                tx,
                ev("registered_model", "created"),
                json!({"name": name, "tags": tags_object(tags), "description": description}),
            )
        }
    }

    /// A new version: `model_version.created` / `prompt_version.created` — unless it waits for
    /// its test load (`PENDING_REGISTRATION`): then [`version_registered`] sends it once the
    /// version is READY (or failed), so a receiver that resolves it finds it servable. With
    /// regserve's create-with-alias, the alias event too.
    pub fn version_created(tx: &Tx<'_>, model_id: i64, new: &NewVersion, version: i64) -> Result<(), db::Error> {
        if new.status != Some(VersionStatus::PendingRegistration) {
            let v = Created { name: &new.name, version: version as u64, source: &new.source, run_id: &new.run_id };
            created(tx, model_id, &v, &new.tags, &new.description)?;
        }
        if let Some(alias) = &new.alias {
            alias_set(tx, model_id, &new.name, alias, Some(version as u64))?;
        }
        Ok(())
    }

    /// A version left `PENDING_REGISTRATION`: its deferred `created` event, from what is stored.
    pub fn version_registered(tx: &Tx<'_>, model_id: i64, mv: &ModelVersion) -> Result<(), db::Error> {
        let v = Created { name: &mv.name, version: mv.version, source: &mv.source, run_id: &mv.run_id };
        created(tx, model_id, &v, &mv.tags, &mv.description)
    }

    struct Created<'a> {
        name: &'a str,
        version: u64,
        source: &'a str,
        run_id: &'a str,
    }

    fn created(tx: &Tx<'_>, model_id: i64, v: &Created<'_>, tags: &[Tag], description: &str) -> Result<(), db::Error> {
        let prompt = model_is_prompt(tx, model_id)? || crate::registry::is_prompt(tags);
        let description = (!description.is_empty()).then_some(description);
        let version = v.version.to_string();
        if prompt {
            let template = tags.iter().rev().find(|t| t.key == PROMPT_TEXT_TAG_KEY).map(|t| t.value.clone());
            let kept = tags.iter().filter(|t| {
                ![PROMPT_TEXT_TAG_KEY, crate::registry::IS_PROMPT_TAG_KEY, PROMPT_TYPE_TAG_KEY]
                    .contains(&t.key.as_str())
            });
            enqueue(
                tx,
                ev("prompt_version", "created"),
                json!({"name": v.name, "version": version, "template": template, "tags": tags_object(kept), "description": description}),
            )
        } else {
            let run_id = (!v.run_id.is_empty()).then_some(v.run_id);
            enqueue(
                tx,
                ev("model_version", "created"),
                json!({"name": v.name, "version": version, "source": v.source, "run_id": run_id, "tags": tags_object(tags), "description": description}),
            )
        }
    }

    /// `prompt_tag.set` / `prompt_tag.deleted` (`value` `None`): MLflow sends nothing for a
    /// registered model's tag.
    pub fn model_tag(tx: &Tx<'_>, model_id: i64, name: &str, key: &str, value: Option<&str>) -> Result<(), db::Error> {
        if !model_is_prompt(tx, model_id)? {
            return Ok(());
        }
        match value {
            Some(value) => enqueue(tx, ev("prompt_tag", "set"), json!({"name": name, "key": key, "value": value})),
            None => enqueue(tx, ev("prompt_tag", "deleted"), json!({"name": name, "key": key})),
        }
    }

    /// `model_version_tag.set` / `.deleted` (or the `prompt_version_tag` ones).
    pub fn version_tag(
        tx: &Tx<'_>,
        model_id: i64,
        name: &str,
        version: u64,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), db::Error> {
        let e = entity(model_is_prompt(tx, model_id)?, "model_version_tag", "prompt_version_tag");
        let version = version.to_string();
        match value {
            Some(value) => {
                enqueue(tx, ev(e, "set"), json!({"name": name, "version": version, "key": key, "value": value}))
            }
            None => enqueue(tx, ev(e, "deleted"), json!({"name": name, "version": version, "key": key})),
        }
    }

    /// `model_version_alias.created` / `.deleted` (`version` `None`), or the `prompt_alias` ones.
    pub fn alias_set(
        tx: &Tx<'_>,
        model_id: i64,
        name: &str,
        alias: &str,
        version: Option<u64>,
    ) -> Result<(), db::Error> {
        let e = entity(model_is_prompt(tx, model_id)?, "model_version_alias", "prompt_alias");
        match version {
            Some(v) => enqueue(tx, ev(e, "created"), json!({"name": name, "alias": alias, "version": v.to_string()})),
            None => enqueue(tx, ev(e, "deleted"), json!({"name": name, "alias": alias})),
        }
    }

    /// regserve's extension `model_version.stage_transitioned`.
    pub fn stage_transitioned(
        tx: &Tx<'_>,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
    ) -> Result<(), db::Error> {
        let data: Value = json!({
            "name": name,
            "version": version.to_string(),
            "stage": stage.as_str(),
            "archive_existing_versions": archive_existing,
        });
        enqueue(tx, STAGE_TRANSITIONED, data)
    }
}

/// One claimed delivery: what the worker sends.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub delivery_id: String,
    pub webhook_id: String,
    pub event: String,
    pub body: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
}

/// A hook's destination at send time (`None` when it was deleted or disabled meanwhile).
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: String,
    pub secret: Option<String>,
}

impl Store {
    /// Claim up to `limit` due deliveries for `lease_ms`: a conditional `UPDATE … RETURNING`,
    /// so that of several servers on one database each row goes to one (PostgreSQL re-checks
    /// the lease condition on a row another transaction changed; SQLite writes one at a time).
    pub fn claim_deliveries(&self, limit: usize, lease_ms: i64) -> Result<Vec<Claimed>> {
        self.write_tx(|tx| {
            let now = now_ms();
            Ok(tx.query_map(
                "UPDATE webhook_deliveries SET lease_until = ?2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'PENDING' AND next_attempt_at <= ?1 \
                 AND (lease_until IS NULL OR lease_until < ?1) ORDER BY id LIMIT ?3) \
                 AND state = 'PENDING' AND (lease_until IS NULL OR lease_until < ?1) \
                 RETURNING id, delivery_id, webhook_id, event, body, attempts",
                params![now, now + lease_ms, limit as i64],
                |r| {
                    Ok(Claimed {
                        id: r.get(0)?,
                        delivery_id: r.get(1)?,
                        webhook_id: r.get(2)?,
                        event: r.get(3)?,
                        body: r.get(4)?,
                        attempt: r.get::<i64>(5)? as u32,
                    })
                },
            )?)
        })
    }

    /// Where to send a delivery for hook `id`: `None` once it is deleted or disabled.
    pub fn delivery_destination(&self, id: &str) -> Result<Option<Destination>> {
        self.read_tx(|tx| {
            Ok(tx.query_opt(
                "SELECT url, secret FROM webhooks WHERE webhook_id = ?1 AND deleted_timestamp IS NULL AND status = 'ACTIVE'",
                params![id],
                |r| Ok(Destination { url: r.get(0)?, secret: r.get(1)? }),
            )?)
        })
    }

    /// Delivered (or no longer wanted): the row goes.
    pub fn finish_delivery(&self, id: i64) -> Result<()> {
        self.write_tx(|tx| {
            tx.execute("DELETE FROM webhook_deliveries WHERE id = ?1", params![id])?;
            Ok(())
        })
    }

    /// Try again at `next_attempt_at` (ms), or with `None` give up: the row stays, `FAILED`.
    pub fn reschedule_delivery(&self, id: i64, next_attempt_at: Option<i64>, error: &str) -> Result<()> {
        self.write_tx(|tx| {
            match next_attempt_at {
                Some(at) => tx.execute(
                    "UPDATE webhook_deliveries SET lease_until = NULL, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, at, error],
                )?,
                // A failed row's `next_attempt_at` is when it failed (for pruning).
                None => tx.execute(
                    "UPDATE webhook_deliveries SET lease_until = NULL, state = 'FAILED', last_error = ?2, \
                     next_attempt_at = ?3 WHERE id = ?1",
                    params![id, error, now_ms()],
                )?,
            };
            Ok(())
        })
    }

    /// Forget deliveries that failed more than `keep_ms` ago; returns how many.
    pub fn prune_failed_deliveries(&self, keep_ms: i64) -> Result<u64> {
        self.write_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM webhook_deliveries WHERE state = 'FAILED' AND next_attempt_at < ?1",
                params![now_ms() - keep_ms],
            )?;
            Ok(n as u64)
        })
    }

    /// Deliveries by state (`PENDING`, `FAILED`): for tests and operators.
    pub fn count_deliveries(&self, state: &str) -> Result<u64> {
        self.read_tx(|tx| {
            let n: i64 =
                tx.query_row("SELECT COUNT(*) FROM webhook_deliveries WHERE state = ?1", params![state], |r| r.get(0))?;
            Ok(n as u64)
        })
    }
}

#[cfg(test)]
mod tests;
