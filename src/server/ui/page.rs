//! The page shell and what every page shares: who is asking (signed in or not, from the
//! guard's [`Access`]), the one-shot flash message of a redirect-after-POST, links, times and
//! stage badges.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::registry::Stage;
use crate::server::auth::Access;
use crate::server::error::ApiError;

/// Path segments and query values: everything but unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

pub fn query_enc(s: &str) -> String {
    enc(s)
}

pub fn model_url(name: &str) -> String {
    format!("/models/{}", enc(name))
}

pub fn version_url(name: &str, version: u64) -> String {
    format!("/models/{}/versions/{version}", enc(name))
}

/// The one-shot message shown after a redirect: kept in a short-lived cookie, cleared by the
/// page that shows it.
const FLASH_COOKIE: &str = "regserve_flash";

#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

impl Flash {
    pub fn ok(message: impl Into<String>) -> Flash {
        Flash { ok: true, message: message.into() }
    }
    pub fn error(message: impl Into<String>) -> Flash {
        Flash { ok: false, message: message.into() }
    }

    fn cookie(&self) -> String {
        const MAX_CHARS: usize = 600; // the encoded cookie stays well under browsers' 4 KiB
        let kind = if self.ok { "ok" } else { "error" };
        let mut message: String = self.message.chars().take(MAX_CHARS).collect();
        if message.len() < self.message.len() {
            message.push('…');
        }
        format!("{FLASH_COOKIE}={kind}.{}; Path=/; Max-Age=60; HttpOnly; SameSite=Strict", enc(&message))
    }

    fn from_cookies(headers: &HeaderMap) -> Option<Flash> {
        let value = cookie(headers, FLASH_COOKIE)?;
        let (kind, message) = value.split_once('.')?;
        let message = percent_encoding::percent_decode_str(message).decode_utf8_lossy().into_owned();
        Some(Flash { ok: kind == "ok", message })
    }
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// How the server guards itself, as far as a page needs to know.
#[derive(Debug, Clone)]
pub struct Auth {
    pub signed_in: bool,
}

/// Who is asking, for the page shell. Never rejects.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// `None` when the server has no token: everyone may read and write.
    pub auth: Option<Auth>,
    pub flash: Option<Flash>,
    /// The request's path and query (where the login link returns to).
    pub here: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let auth = parts.extensions.get::<Access>().map(|a| Auth { signed_in: a.authenticated });
        Ok(Ctx {
            auth,
            flash: Flash::from_cookies(&parts.headers),
            here: parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        })
    }
}

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, axum::response::Html(markup.into_string())).into_response()
}

/// 303 See Other: after a POST, the browser GETs `to` (a local path; `/` if it cannot be sent).
pub fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

pub fn redirect_with(to: &str, flash: Flash) -> Response {
    let mut resp = redirect(to);
    if let Ok(v) = HeaderValue::from_str(&flash.cookie()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The status and the message to show for a failed registry call (internal errors are logged
/// and shown without details, as the API answers them).
pub fn describe(e: &ApiError) -> (StatusCode, String) {
    let (status, _) = e.classify();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "internal error");
        (status, "Internal error; the server log has the details".to_string())
    } else {
        (status, e.to_string())
    }
}

/// One page of the registry UI.
pub struct Page {
    pub title: String,
    /// Breadcrumbs before the title: (label, link).
    pub crumbs: Vec<(String, String)>,
    pub body: Markup,
    pub status: StatusCode,
}

impl Page {
    pub fn new(title: impl Into<String>, body: Markup) -> Page {
        Page { title: title.into(), crumbs: Vec::new(), body, status: StatusCode::OK }
    }

    pub fn crumb(mut self, label: impl Into<String>, link: impl Into<String>) -> Page {
        self.crumbs.push((label.into(), link.into()));
        self
    }

    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    /// The page in the registry shell; clears the flash message it shows.
    pub fn render(self, ctx: &Ctx) -> Response {
        let nav = html! {
            nav.nav {
                a href="/" { "Models" }
                @match &ctx.auth {
                    None => {}
                    Some(a) if a.signed_in => {
                        span.who { "Signed in" }
                        form.inline method="post" action="/logout" {
                            button.link type="submit" { "Log out" }
                        }
                    }
                    Some(_) => {
                        a.button.small href={ "/login?next=" (query_enc(&ctx.here)) } { "Log in" }
                    }
                }
            }
        };
        let notice = match (&ctx.auth, &ctx.flash) {
            (Some(a), None) if !a.signed_in && !ctx.here.starts_with("/login") => Some(html! {
                p.notice.muted { "Read-only: " a href={ "/login?next=" (query_enc(&ctx.here)) } { "log in" } " to make changes." }
            }),
            _ => None,
        };
        let crumbs = html! {
            @if !self.crumbs.is_empty() {
                nav.crumbs aria-label="Breadcrumbs" {
                    @for (label, link) in &self.crumbs {
                        a href=(link) { (label) } span.sep aria-hidden="true" { "/" }
                    }
                }
            }
        };
        let markup = shell(
            &self.title,
            None,
            nav,
            html! {
                @if let Some(f) = &ctx.flash { (flash_box(f)) }
                @if let Some(n) = notice { (n) }
                (crumbs)
                (self.body)
            },
        );
        let mut resp = html_response(self.status, markup);
        if ctx.flash.is_some() {
            let clear = format!("{FLASH_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&clear) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }
}

fn flash_box(f: &Flash) -> Markup {
    html! {
        @if f.ok {
            p.flash.ok role="status" { (f.message) }
        } @else {
            p.flash.error role="alert" { (f.message) }
        }
    }
}

/// An error page (a missing model, a bad version number, a refused post).
pub fn error_page(ctx: &Ctx, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    Page::new(
        title.clone(),
        html! {
            h1 { (title) }
            p.flash.error role="alert" { (message) }
            p { a href="/" { "Back to the registered models" } }
        },
    )
    .status(status)
    .render(ctx)
}

/// The HTML document: head, header bar with `nav`, main content.
pub fn shell(title: &str, refresh_seconds: Option<u32>, nav: Markup, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh_seconds {
                    meta http-equiv="refresh" content=(s);
                }
                title { (title) " · regserve" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.top {
                    a.brand href="/" { span.logo aria-hidden="true" { "◆" } "regserve" }
                    (nav)
                }
                main { (main) }
                footer.foot { "regserve " (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}

/// `2026-01-02 15:04:05 UTC` from milliseconds since the epoch.
pub use crate::registry::types::format_utc_ms as utc;

/// A timestamp as a `<time>` element.
pub fn time(ms: i64) -> Markup {
    let text = utc(ms);
    html! { time datetime=(iso(&text)) { (text) } }
}

/// A timestamp to the minute, for tables (the seconds in its tooltip).
pub fn time_short(ms: i64) -> Markup {
    let text = utc(ms);
    let short = format!("{} UTC", &text[..text.len().saturating_sub(7)]);
    html! { time datetime=(iso(&text)) title=(text) { (short) } }
}

fn iso(utc: &str) -> String {
    format!("{}Z", utc.trim_end_matches(" UTC").replacen(' ', "T", 1))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// "12 s ago", "3 min ago", "5 h ago", "2 d ago".
pub fn ago(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

pub fn stage_badge(stage: Stage) -> Markup {
    let class = match stage {
        Stage::None => "badge stage-none",
        Stage::Staging => "badge stage-staging",
        Stage::Production => "badge stage-production",
        Stage::Archived => "badge stage-archived",
    };
    html! { span class=(class) { (stage.as_str()) } }
}

pub fn alias_chip(name: &str, alias: &str, version: Option<u64>) -> Markup {
    html! {
        @match version {
            Some(v) => a.chip href=(version_url(name, v)) { "@" (alias) span.arrow { " → v" (v) } },
            None => span.chip { "@" (alias) },
        }
    }
}

/// Empty values shown as a dash.
pub fn or_dash(s: &str) -> Markup {
    html! {
        @if s.is_empty() { span.muted { "—" } } @else { (s) }
    }
}
