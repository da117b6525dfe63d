//! The web UI: HTML pages rendered on the server (maud), plain POST forms with
//! redirect-after-POST, no JavaScript and no front-end build. Every write goes through the same
//! `Store` methods and registration functions as the REST API in [`super::registry_api`].
//!
//! On `regserve server` ([`registry_routes`]):
//!
//! - `GET /` — registered models: search with MLflow's filter grammar, keyset "Next page" links;
//!   `POST /models` creates one
//! - `GET /models/{name}` — one model: Markdown description, versions, aliases, tags;
//!   `POST /models/{name}/{rename,description,tags,tags/delete,aliases,aliases/delete,delete}`
//! - `GET /models/{name}/versions/{v}` — one version: details, lineage, signature, input
//!   example; `POST .../{description,stage,tags,tags/delete,delete}`
//! - `GET /models/{name}/delete`, `GET /models/{name}/versions/{v}/delete` — confirm pages
//! - `GET|POST /login`, `POST /logout` — a signed, expiring session in the `regserve_token`
//!   cookie (`GET /logout` only leads to the login page's "Log out" button)
//!
//! On `regserve serve` ([`serve_routes`]): `GET /`, the read-only status of the served models.
//! Both: `GET /static/style.css`.
//!
//! Access is decided by [`super::auth::guard`] alone (writes need the token; reads too with
//! `--auth-reads`); it redirects a UI page to `/login` instead of answering 401. Forms are
//! protected from cross-site posts by the cookie's `SameSite=Strict`, by [`super::origin`]'s
//! check of `Origin`/`Referer`/`Host` on every request, and again by [`forms`]' own check.
//! Pages are sent with a CSP that allows no script at all.

mod files;
mod forms;
mod login;
mod markdown;
mod page;
mod registry;
mod status;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::scoring::ScoringState;
use super::state::RegistryState;

const STYLE: &str = include_str!("style.css");

/// The registry UI, merged into [`super::registry_server`].
pub fn registry_routes() -> Router<RegistryState> {
    Router::new()
        .route("/", get(registry::models_page))
        .route("/models", get(|| async { page::redirect("/") }).post(forms::create_model))
        .route("/models/{name}", get(registry::model_page))
        .route("/models/{name}/rename", post(forms::rename_model))
        .route("/models/{name}/description", post(forms::model_description))
        .route("/models/{name}/tags", post(forms::set_model_tag))
        .route("/models/{name}/tags/delete", post(forms::delete_model_tag))
        .route("/models/{name}/aliases", post(forms::set_alias))
        .route("/models/{name}/aliases/delete", post(forms::delete_alias))
        .route("/models/{name}/delete", get(registry::confirm_delete_model).post(forms::delete_model))
        .route("/models/{name}/versions/{version}", get(registry::version_page))
        .route("/models/{name}/versions/{version}/description", post(forms::version_description))
        .route("/models/{name}/versions/{version}/stage", post(forms::transition_stage))
        .route("/models/{name}/versions/{version}/tags", post(forms::set_version_tag))
        .route("/models/{name}/versions/{version}/tags/delete", post(forms::delete_version_tag))
        .route(
            "/models/{name}/versions/{version}/delete",
            get(registry::confirm_delete_version).post(forms::delete_version),
        )
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", get(login::logout_page).post(login::logout))
        .route("/static/style.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
}

/// The status page of `regserve serve`: public, like `/health` and `/metrics`, which already
/// tell the same (versions, load times, errors, request counts).
pub fn serve_routes(state: ScoringState) -> Router {
    Router::new()
        .route("/", get(status::status_page))
        .route("/static/style.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Paths of UI pages (rather than the API): the guard sends a browser there to `/login`.
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/models" | "/login" | "/logout") || path.starts_with("/models/")
}

/// The login redirect for a request to a UI page, `None` elsewhere: the
/// [`super::auth::Policy::page_redirect`] of `regserve server`.
pub fn page_redirect(request: &Request) -> Option<Response> {
    is_page(request.uri().path()).then(|| login_redirect(request))
}

/// Where the guard sends a request that needs the token it lacks: the login page, which then
/// returns to the page the user was reading (for a refused form post, the page holding the form).
pub fn login_redirect(request: &Request) -> Response {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let next = if read {
        request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into())
    } else {
        forms::same_origin_referer_path(request.headers()).unwrap_or_else(|| "/".into())
    };
    let why = if read { "read" } else { "write" };
    page::redirect(&format!("/login?why={why}&next={}", page::query_enc(&next)))
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], STYLE)
        .into_response()
}

/// No script, no framing, no sniffing; pages are not cached (they show live state, maybe
/// behind a token).
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data: https:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// For handlers: 404 for a version number that is not one.
fn parse_version(v: &str) -> Result<u64, (StatusCode, String)> {
    v.parse::<u64>().map_err(|_| (StatusCode::NOT_FOUND, format!("'{v}' is not a version number")))
}
