//! The UI's writes: each form posts here, calls the same `Store` method (or registration
//! function) as the REST handler in `registry_api`, and redirects (303) to a page with a flash
//! message — the registry's own error message when it refused.
//!
//! Cross-site posts are refused: a post must come with an `Origin` (or, lacking one, a
//! `Referer`) naming this server's `Host` (or the `X-Forwarded-Host` a reverse proxy sets — a
//! header a cross-site form cannot send). A request with neither is not a browser's cross-site
//! form post, and is let through (the token check still applies).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::page::{describe, error_page, model_url, redirect_with, version_url, Ctx, Flash};
use crate::registration;
use crate::registry::{RegistryError, Stage};
use crate::server::error::ApiError;
use crate::server::state::{blocking, RegistryState};

/// `host[:port]` of an absolute `http(s)://` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Does this post come from a page of this server (see the module docs)?
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let hosts: Vec<&str> =
        [get(header::HOST), get(header::HeaderName::from_static("x-forwarded-host"))].into_iter().flatten().collect();
    if hosts.is_empty() {
        return false;
    }
    let ours = |url: &str| authority(url).is_some_and(|a| hosts.iter().any(|h| a.eq_ignore_ascii_case(h)));
    match (get(header::ORIGIN), get(header::REFERER)) {
        (Some(origin), _) => ours(origin),
        (None, Some(referer)) => ours(referer),
        (None, None) => true,
    }
}

/// The path (and query) of the `Referer` when it is a page of this server.
pub fn same_origin_referer_path(headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let auth = authority(referer)?;
    if !auth.eq_ignore_ascii_case(host) {
        return None;
    }
    let after = referer.split_once(auth).map(|(_, p)| p).unwrap_or("/");
    let path = after.split('#').next().unwrap_or("/");
    Some(if path.starts_with('/') { path.to_string() } else { "/".to_string() })
}

/// Extractor: refuses a cross-site post with a 403 page.
pub struct SameOrigin;

impl<S: Send + Sync> FromRequestParts<S> for SameOrigin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if same_origin(&parts.headers) {
            return Ok(SameOrigin);
        }
        tracing::warn!(path = %parts.uri.path(), "refused a cross-site form post");
        let ctx = Ctx::from_request_parts(parts, state).await.unwrap_or_default();
        Err(error_page(
            &ctx,
            StatusCode::FORBIDDEN,
            "This form was posted from another site (its Origin or Referer is not this server), so it was refused.",
        ))
    }
}

/// Redirect to `ok_to` with `ok` on success, back to `back` with the registry's message on error.
fn done(result: Result<(), ApiError>, ok_to: &str, ok: String, back: &str) -> Response {
    match result {
        Ok(()) => redirect_with(ok_to, Flash::ok(ok)),
        Err(e) => redirect_with(back, Flash::error(describe(&e).1)),
    }
}

fn version_number(v: &str) -> Result<u64, ApiError> {
    v.trim().parse::<u64>().map_err(|_| {
        ApiError::Registry(RegistryError::InvalidParameter(format!("Version must be a number, not '{v}'.")))
    })
}

// -------------------------------------------------------------------- registered models

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateModel {
    name: String,
    description: String,
}

pub async fn create_model(State(st): State<RegistryState>, _: SameOrigin, Form(f): Form<CreateModel>) -> Response {
    let name = f.name.trim().to_string();
    let n = name.clone();
    let result = blocking(move || Ok(st.store.create_registered_model(&n, &f.description, &[])?)).await;
    match result {
        Ok(rm) => redirect_with(&model_url(&rm.name), Flash::ok(format!("Created registered model '{}'.", rm.name))),
        Err(e) => redirect_with("/#create", Flash::error(describe(&e).1)),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Rename {
    new_name: String,
}

pub async fn rename_model(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path(name): Path<String>,
    Form(f): Form<Rename>,
) -> Response {
    let new_name = f.new_name.trim().to_string();
    let (n, nn) = (name.clone(), new_name.clone());
    let result = blocking(move || Ok(st.store.rename_registered_model(&n, &nn)?)).await.map(drop);
    done(result, &model_url(&new_name), format!("Renamed '{name}' to '{new_name}'."), &model_url(&name))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Description {
    description: String,
}

pub async fn model_description(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path(name): Path<String>,
    Form(f): Form<Description>,
) -> Response {
    let n = name.clone();
    let result = blocking(move || Ok(st.store.update_registered_model(&n, &f.description)?)).await.map(drop);
    let url = model_url(&name);
    done(result, &url, "Saved the description.".into(), &url)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetTag {
    key: String,
    value: String,
}

pub async fn set_model_tag(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path(name): Path<String>,
    Form(f): Form<SetTag>,
) -> Response {
    let key = f.key.trim().to_string();
    let (n, k) = (name.clone(), key.clone());
    let result = blocking(move || Ok(st.store.set_registered_model_tag(&n, &k, &f.value)?)).await;
    let url = model_url(&name);
    done(result, &url, format!("Set tag '{key}'."), &url)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteTag {
    key: String,
}

pub async fn delete_model_tag(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path(name): Path<String>,
    Form(f): Form<DeleteTag>,
) -> Response {
    let (n, k) = (name.clone(), f.key.clone());
    let result = blocking(move || Ok(st.store.delete_registered_model_tag(&n, &k)?)).await;
    let url = model_url(&name);
    done(result, &url, format!("Removed tag '{}'.", f.key), &url)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetAlias {
    alias: String,
    version: String,
}

pub async fn set_alias(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<SetAlias>,
) -> Response {
    let alias = f.alias.trim().to_string();
    let (n, a) = (name.clone(), alias.clone());
    let version = version_number(&f.version);
    let result = match version {
        Ok(v) => blocking(move || Ok(st.store.set_alias(&n, &a, v)?)).await,
        Err(e) => Err(e),
    };
    // Back to the page holding the form (the model's or the version's).
    let back = same_origin_referer_path(&headers).unwrap_or_else(|| model_url(&name));
    done(result, &back, format!("'@{alias}' now points at version {}.", f.version.trim()), &back)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteAlias {
    alias: String,
}

pub async fn delete_alias(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path(name): Path<String>,
    Form(f): Form<DeleteAlias>,
) -> Response {
    let (n, a) = (name.clone(), f.alias.clone());
    let result = blocking(move || Ok(st.store.delete_alias(&n, &a)?)).await;
    let url = model_url(&name);
    done(result, &url, format!("Removed alias '@{}'.", f.alias), &url)
}

pub async fn delete_model(State(st): State<RegistryState>, _: SameOrigin, Path(name): Path<String>) -> Response {
    let n = name.clone();
    // As the REST API's `registered-models/delete`.
    let result = blocking(move || Ok(registration::delete_model(&st.store, &st.artifacts, &n)?)).await;
    done(result, "/", format!("Deleted registered model '{name}'."), &model_url(&name))
}

// -------------------------------------------------------------------- model versions

/// Back to the model's page when the version in the path is not a number.
fn not_a_version(name: &str, message: String) -> Response {
    redirect_with(&model_url(name), Flash::error(message))
}

pub async fn version_description(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path((name, version)): Path<(String, String)>,
    Form(f): Form<Description>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((_, message)) => return not_a_version(&name, message),
    };
    let n = name.clone();
    let result = blocking(move || Ok(st.store.update_model_version(&n, version, &f.description)?)).await.map(drop);
    let url = version_url(&name, version);
    done(result, &url, "Saved the description.".into(), &url)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Transition {
    stage: String,
    /// A checkbox: present when ticked.
    archive_existing: Option<String>,
}

pub async fn transition_stage(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path((name, version)): Path<(String, String)>,
    Form(f): Form<Transition>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((_, message)) => return not_a_version(&name, message),
    };
    let archive = f.archive_existing.is_some();
    let n = name.clone();
    let result = match Stage::parse(&f.stage) {
        Ok(stage) => blocking(move || Ok(st.store.transition_stage(&n, version, stage, archive)?)).await,
        Err(e) => Err(e.into()),
    };
    let url = version_url(&name, version);
    match result {
        Ok(mv) => {
            let archived = if archive && matches!(mv.current_stage, Stage::Staging | Stage::Production) {
                "; the other versions there are now Archived"
            } else {
                ""
            };
            redirect_with(&url, Flash::ok(format!("Version {version} is now in {}{archived}.", mv.current_stage)))
        }
        Err(e) => redirect_with(&url, Flash::error(describe(&e).1)),
    }
}

pub async fn set_version_tag(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path((name, version)): Path<(String, String)>,
    Form(f): Form<SetTag>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((_, message)) => return not_a_version(&name, message),
    };
    let key = f.key.trim().to_string();
    let (n, k) = (name.clone(), key.clone());
    let result = blocking(move || Ok(st.store.set_model_version_tag(&n, version, &k, &f.value)?)).await;
    let url = version_url(&name, version);
    done(result, &url, format!("Set tag '{key}'."), &url)
}

pub async fn delete_version_tag(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path((name, version)): Path<(String, String)>,
    Form(f): Form<DeleteTag>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((_, message)) => return not_a_version(&name, message),
    };
    let (n, k) = (name.clone(), f.key.clone());
    let result = blocking(move || Ok(st.store.delete_model_version_tag(&n, version, &k)?)).await;
    let url = version_url(&name, version);
    done(result, &url, format!("Removed tag '{}'.", f.key), &url)
}

pub async fn delete_version(
    State(st): State<RegistryState>,
    _: SameOrigin,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((_, message)) => return not_a_version(&name, message),
    };
    let n = name.clone();
    // As the REST API's `model-versions/delete`.
    let result = blocking(move || Ok(registration::delete_version(&st.store, &st.artifacts, &n, version)?)).await;
    done(result, &model_url(&name), format!("Deleted version {version}."), &version_url(&name, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn posts_must_come_from_this_server() {
        let host = (header::HOST, "127.0.0.1:5000");
        assert!(same_origin(&headers(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:5000")])));
        assert!(same_origin(&headers(&[host.clone(), (header::ORIGIN, "https://127.0.0.1:5000")])));
        assert!(!same_origin(&headers(&[host.clone(), (header::ORIGIN, "http://evil.example")])));
        assert!(!same_origin(&headers(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:5001")])));
        assert!(!same_origin(&headers(&[host.clone(), (header::ORIGIN, "null")])));
        assert!(same_origin(&headers(&[host.clone(), (header::REFERER, "http://127.0.0.1:5000/models/x")])));
        assert!(!same_origin(&headers(&[host.clone(), (header::REFERER, "http://127.0.0.1:5000.evil/x")])));
        assert!(same_origin(&headers(std::slice::from_ref(&host))));
        assert!(!same_origin(&headers(&[(header::ORIGIN, "http://127.0.0.1:5000")])));
        let proxied = [host.clone(), (header::HeaderName::from_static("x-forwarded-host"), "models.example.com")];
        let mut h = headers(&proxied);
        h.insert(header::ORIGIN, HeaderValue::from_static("https://models.example.com"));
        assert!(same_origin(&h));
        let h = headers(&[host, (header::REFERER, "http://127.0.0.1:5000/models/a%20b?x=1#frag")]);
        assert_eq!(same_origin_referer_path(&h).as_deref(), Some("/models/a%20b?x=1"));
    }
}
