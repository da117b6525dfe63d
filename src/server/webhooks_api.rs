//! MLflow's webhook REST API (MLflow ≥ 3.3, `mlflow/server/handlers.py` `_create_webhook` …),
//! under `/api/2.0/mlflow/webhooks`: create (POST), list (GET, paged), get (GET `{id}`), update
//! (PATCH `{id}`), delete (DELETE `{id}`), test (POST `{id}/test`). The secret is stored and
//! never returned. Destinations are checked by [`Destinations`](crate::mlflow::webhooks::Destinations)
//! when a hook is saved; deliveries go out from the outbox ([`crate::registry::webhooks`]).
//!
//! regserve's extension: `regserve_extension_events: ["model_version.stage_transitioned"]` in
//! create and update, listed back under the same key.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::params::Params;
use super::reply::{empty, one, JsonReply, Reply};
use super::state::{blocking, RegistryState};
use crate::registry::webhooks::{parse_status, Event, NewWebhook, WebhookUpdate};
use crate::registry::RegistryError;

/// MLflow's `list_webhooks` default and limit for `max_results`.
const LIST_DEFAULT: usize = 100;
const LIST_LIMIT: usize = 1000;

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/webhooks", post(create).get(list))
        .route("/webhooks/{webhook_id}", get(fetch).patch(update).delete(remove))
        .route("/webhooks/{webhook_id}/test", post(test))
}

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidParameter(message)
}

/// `events`: a list of `{entity, action}` objects (`None` when absent).
fn events(p: &Params) -> Result<Option<Vec<Event>>, RegistryError> {
    match p.0.get("events") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) => list.iter().map(Event::from_request).collect::<Result<Vec<_>, _>>().map(Some),
        Some(other) => Err(invalid(format!(
            "Invalid value {other} for parameter 'events' supplied: Hint: Value was of type '{}'. See the API docs for more information about request parameters.",
            if other.is_object() { "dict" } else if other.is_string() { "str" } else { "other" }
        ))),
    }
}

/// regserve's `regserve_extension_events`: names such as `model_version.stage_transitioned`.
fn extension_events(p: &Params) -> Result<Option<Vec<Event>>, RegistryError> {
    if p.0.get("regserve_extension_events").is_none_or(Value::is_null) {
        return Ok(None);
    }
    p.str_list("regserve_extension_events")?
        .iter()
        .map(|s| Event::extension_from_str(s))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn status(p: &Params) -> Result<Option<String>, RegistryError> {
    match p.0.get("status") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_status(v).map(Some),
    }
}

async fn create(State(st): State<RegistryState>, p: Params) -> Reply {
    let name = p.required_str("name")?;
    let url = p.required_str("url")?;
    let Some(mut events) = events(&p)? else {
        return Err(invalid(
            "Missing value for required parameter 'events'. See the API docs for more information about request parameters."
                .into(),
        )
        .into());
    };
    events.extend(extension_events(&p)?.unwrap_or_default());
    let new = NewWebhook {
        name,
        url,
        events,
        description: p.opt_str("description")?.filter(|d| !d.is_empty()),
        secret: p.opt_str("secret")?.filter(|s| !s.is_empty()),
        status: status(&p)?,
    };
    crate::registry::webhooks::validate_name(&new.name)?;
    st.webhooks.config.destinations.check(&new.url).await?;
    let hook = blocking(move || Ok(st.store.create_webhook(&new)?)).await?;
    one("webhook", &hook)
}

async fn list(State(st): State<RegistryState>, p: Params) -> Reply {
    let max_results = match p.opt_i64("max_results")? {
        None | Some(0) => LIST_DEFAULT,
        Some(n) if (1..=LIST_LIMIT as i64).contains(&n) => n as usize,
        Some(_) => return Err(invalid(format!("max_results must be between 1 and {LIST_LIMIT}.")).into()),
    };
    let token = p.opt_str("page_token")?;
    let page = blocking(move || Ok(st.store.list_webhooks(max_results, token.as_deref())?)).await?;
    JsonReply::new().list("webhooks", &page.items)?.opt("next_page_token", page.next_page_token.as_ref())?.finish()
}

async fn fetch(State(st): State<RegistryState>, Path(id): Path<String>) -> Reply {
    one("webhook", &blocking(move || Ok(st.store.get_webhook(&id)?)).await?)
}

async fn update(State(st): State<RegistryState>, Path(id): Path<String>, p: Params) -> Reply {
    let new_events = events(&p)?.filter(|e| !e.is_empty());
    let new_extensions = extension_events(&p)?;
    let mut update = WebhookUpdate {
        name: p.opt_str("name")?.filter(|n| !n.is_empty()),
        description: p.opt_str("description")?,
        url: p.opt_str("url")?.filter(|u| !u.is_empty()),
        events: None,
        secret: p.opt_str("secret")?,
        status: status(&p)?,
    };
    if let Some(url) = &update.url {
        st.webhooks.config.destinations.check(url).await?;
    }
    let store = st.store.clone();
    let hook = blocking(move || {
        if new_events.is_some() || new_extensions.is_some() {
            // `events` replaces MLflow's events, `regserve_extension_events` the extension's; what
            // a request does not name stays.
            let current = store.get_webhook(&id)?.events;
            let (ext, mlflow): (Vec<Event>, Vec<Event>) = current.into_iter().partition(Event::is_extension);
            let mut all = new_events.unwrap_or(mlflow);
            all.extend(new_extensions.unwrap_or(ext));
            update.events = Some(all);
        }
        Ok(store.update_webhook(&id, &update)?)
    })
    .await?;
    one("webhook", &hook)
}

async fn remove(State(st): State<RegistryState>, Path(id): Path<String>) -> Reply {
    blocking(move || Ok(st.store.delete_webhook(&id)?)).await?;
    empty()
}

async fn test(State(st): State<RegistryState>, Path(id): Path<String>, p: Params) -> Reply {
    let event = match p.0.get("event") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(Event::from_request(v)?),
        Some(other) => return Err(invalid(format!("Invalid value {other} for parameter 'event' supplied.")).into()),
    };
    let store = st.store.clone();
    let hook = blocking(move || Ok(store.get_webhook(&id)?)).await?;
    let result = st.webhooks.test(&hook, event).await;
    one("result", &result)
}
