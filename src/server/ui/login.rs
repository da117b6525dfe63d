//! `/login` and `/logout`: logging in with the token gives the browser a signed session that
//! expires (`--ui-session-ttl`) in the `regserve_token` cookie (`HttpOnly; SameSite=Strict;
//! Path=/; Max-Age`, plus `Secure` when the login page was reached over https), which the guard
//! accepts on UI pages as it accepts `Authorization: Bearer`. Logging out is a same-origin POST;
//! `GET /logout` only shows the login page with its "Log out" button.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::forms::SameOrigin;
use super::page::{redirect_with, Ctx, Flash, Page};
use crate::server::auth::{Access, COOKIE};

/// The guard's decision, when the server has a token.
pub struct Guarded(Option<Access>);

impl<S: Send + Sync> FromRequestParts<S> for Guarded {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Guarded(parts.extensions.get::<Access>().cloned()))
    }
}

/// A local path to return to after logging in; anything else (another site, `//host`) is `/`.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.starts_with("/login")
        && !next.starts_with("/logout")
        && next.is_ascii()
        && !next.chars().any(|c| c.is_ascii_control());
    if ok {
        next.to_string()
    } else {
        "/".to_string()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
    why: String,
}

pub async fn login_page(ctx: Ctx, Query(q): Query<LoginQuery>) -> Response {
    let message = match q.why.as_str() {
        "write" => Some("Log in to make changes: this registry needs its token for writes."),
        "read" => Some("This registry needs its token to be read. Log in to continue."),
        _ => None,
    };
    render_login(&ctx, &safe_next(&q.next), message, None, StatusCode::OK)
}

fn render_login(ctx: &Ctx, next: &str, message: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.card.narrow-card {
            h1 { "Log in" }
            @match &ctx.auth {
                None => {
                    p { "This server has no token: anyone may read and write. There is nothing to log in to." }
                    p { a.button href=(next) { "Continue" } }
                }
                Some(a) if a.signed_in => {
                    p { "You are logged in." }
                    div.actions {
                        a.button href=(next) { "Continue" }
                        form.inline method="post" action="/logout" { button.secondary type="submit" { "Log out" } }
                    }
                }
                Some(_) => {
                    @if let Some(m) = message { p.flash.info role="status" { (m) } }
                    @if let Some(e) = error { p.flash.error role="alert" { (e) } }
                    form.stack method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label { "Token"
                            input type="password" name="token" required autocomplete="current-password" autofocus;
                        }
                        div.actions { button type="submit" { "Log in" } }
                    }
                    p.muted.small {
                        "The token is the one the server was started with ("
                        code { "--auth-token-file" } " or " code { "REGSERVE_AUTH_TOKEN" }
                        "). It is kept in an HttpOnly cookie for this browser session."
                    }
                    @if next != "/" {
                        p.small { "Already logged in? " a href=(next) { "Continue to the page" } "." }
                    }
                }
            }
        }
    };
    Page::new("Log in", body).status(status).render(ctx)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    token: String,
    next: String,
}

pub async fn login(
    ctx: Ctx,
    Guarded(access): Guarded,
    _: SameOrigin,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(&f.next);
    let Some(access) = access else {
        return redirect_with(&next, Flash::ok("This server has no token: there is nothing to log in to."));
    };
    if !access.policy.token.matches(&f.token) {
        tracing::warn!("a UI login with a wrong token");
        return render_login(&ctx, &next, None, Some("That is not the server's token."), StatusCode::UNAUTHORIZED);
    }
    let https = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|o| o.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        access.policy.sessions.issue(),
        access.policy.sessions.ttl().as_secs().max(1),
        if https { "; Secure" } else { "" }
    );
    let mut resp = redirect_with(&next, Flash::ok("Logged in."));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /logout` changes nothing (a link or an image on any page could fetch it): it sends
/// the browser to the login page, which offers the "Log out" button.
pub async fn logout_page() -> Response {
    super::page::redirect("/login")
}

/// `POST /logout`, from this server's pages only: forgets the session in this browser.
pub async fn logout(_: SameOrigin) -> Response {
    let mut resp = redirect_with("/", Flash::ok("Logged out."));
    let clear = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn returns_only_to_local_pages() {
        assert_eq!(safe_next("/models/iris?x=1"), "/models/iris?x=1");
        for bad in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "", "models", "/login?next=/"] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }
}
