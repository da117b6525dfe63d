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

    /// Constant-time check of an `Authorization` header value.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return false };
        let Some(given) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
            return false;
        };
        given.trim().as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// The cookie a browser session (the web UI) carries the token in.
pub const COOKIE: &str = "regserve_token";

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
            .any(|(k, v)| k == COOKIE && bool::from(v.as_bytes().ct_eq(self.0.as_bytes())))
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
/// UI's login page.
fn always_open(path: &str) -> bool {
    matches!(path, "/health" | "/ping" | "/version" | "/metrics" | "/login") || path.starts_with("/static/")
}

/// Middleware for `regserve server`: writes (any method but GET/HEAD) need the token, reads
/// too with `--auth-reads`.
pub async fn guard(State(policy): State<Policy>, request: Request, next: Next) -> Response {
    let read = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let needs_token = !always_open(request.uri().path()) && (!read || policy.reads);
    if !needs_token || policy.token.accepts_request(request.headers()) {
        return next.run(request).await;
    }
    unauthorized()
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
}
