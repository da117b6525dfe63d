//! Bearer-token authentication. The token comes from a file (`--auth-token-file`) or the
//! `REGSERVE_AUTH_TOKEN` environment variable — never a bare flag value, which would show in
//! the process list — and is compared in constant time. It never appears in logs or `Debug`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;

/// A secret token; `Debug` prints `Token(***)`.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    pub fn new(s: &str) -> Option<Token> {
        let s = s.trim();
        (!s.is_empty()).then(|| Token(Arc::from(s)))
    }

    /// The token from `file` if given, else from `REGSERVE_AUTH_TOKEN`; `None` if neither is set.
    pub fn load(file: Option<&Path>) -> Result<Option<Token>, String> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --auth-token-file {}: {e}", path.display()))?;
            return Token::new(&text).map(Some).ok_or_else(|| format!("--auth-token-file {} is empty", path.display()));
        }
        Ok(std::env::var("REGSERVE_AUTH_TOKEN").ok().and_then(|t| Token::new(&t)))
    }

    /// Constant-time check of a token as given (the UI's login form).
    pub fn matches(&self, given: &str) -> bool {
        given.trim().as_bytes().ct_eq(self.0.as_bytes()).into()
    }

    /// Constant-time check of an `Authorization` header value.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return false };
        let Some(given) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
            return false;
        };
        self.matches(given)
    }
}

/// The cookie a browser session (the web UI) carries the token in, percent-encoded (see
/// [`cookie_value`]).
pub const COOKIE: &str = "regserve_token";

/// Characters left as they are in the cookie's value: those a cookie value may hold, minus `%`.
const COOKIE_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'/')
    .remove(b'=')
    .remove(b'!')
    .remove(b'*')
    .remove(b':');

/// The token as the value of [`COOKIE`]: any token survives the trip through a cookie.
pub fn cookie_value(token: &str) -> String {
    percent_encoding::utf8_percent_encode(token.trim(), COOKIE_SET).to_string()
}

impl Token {
    /// The token from the `Authorization` header, or from the UI's cookie.
    pub fn accepts_request(&self, headers: &axum::http::HeaderMap) -> bool {
        if self.accepts(headers.get(header::AUTHORIZATION)) {
            return true;
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.matches(&percent_encoding::percent_decode_str(v).decode_utf8_lossy()))
    }
}

/// Who must show the token on `regserve server`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub token: Token,
    /// Reads need the token too (by default only writes do).
    pub reads: bool,
}

/// Paths that stay open whatever the policy: liveness, readiness, version, metrics, and the
/// UI's login and logout pages and its stylesheet.
fn always_open(path: &str) -> bool {
    matches!(path, "/health" | "/ping" | "/version" | "/metrics" | "/login" | "/logout") || path.starts_with("/static/")
}

/// What [`guard`] decided about a request, left in its extensions for handlers that adapt to
/// it: the web UI shows "Log in"/"Log out" and checks the token its login form posts. Absent
/// when the server has no token.
#[derive(Debug, Clone)]
pub struct Access {
    pub policy: Policy,
    /// The request carries the token (header or cookie).
    pub authenticated: bool,
}

/// Middleware for `regserve server`: writes (any method but GET/HEAD) need the token, reads
/// too with `--auth-reads`. The API answers 401; a web UI page redirects to its login page.
pub async fn guard(State(policy): State<Policy>, mut request: Request, next: Next) -> Response {
    let read = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let needs_token = !always_open(request.uri().path()) && (!read || policy.reads);
    let authenticated = policy.token.accepts_request(request.headers());
    if needs_token && !authenticated {
        if super::ui::is_page(request.uri().path()) {
            return super::ui::login_redirect(&request);
        }
        return unauthorized();
    }
    request.extensions_mut().insert(Access { policy, authenticated });
    next.run(request).await
}

/// Middleware: 401 with `WWW-Authenticate` unless the request carries the bearer token.
pub async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.accepts_request(request.headers()) {
        return next.run(request).await;
    }
    unauthorized()
}

fn unauthorized() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error_code": "UNAUTHENTICATED", "message": "A valid bearer token is required (Authorization: Bearer <token>)"})),
    )
        .into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"regserve\""));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_bearer_token_and_never_prints_it() {
        let t = Token::new(" s3cret\n").unwrap();
        assert!(t.accepts(Some(&HeaderValue::from_static("Bearer s3cret"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("Bearer s3cre"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("Bearer s3cret2"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("Basic s3cret"))));
        assert!(!t.accepts(None));
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(Token::new("  ").is_none());
    }

    #[test]
    fn the_cookie_carries_any_token() {
        for raw in ["plain-Token_1.2~", "a b;c,d\"e%41", "ünï"] {
            let t = Token::new(raw).unwrap();
            let mut headers = axum::http::HeaderMap::new();
            let cookie = format!("other=1; {COOKIE}={}", cookie_value(raw));
            headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
            assert!(t.accepts_request(&headers), "{raw} as {cookie}");
        }
        assert_eq!(cookie_value("plain-Token_1.2~"), "plain-Token_1.2~");
    }
}
