//! Bearer-token authentication. The token comes from a file (`--auth-token-file`) or the
//! `REGSERVE_AUTH_TOKEN` environment variable — never a bare flag value, which would show in
//! the process list — and is compared in constant time. It never appears in logs, `Debug` or
//! cookies: the web UI's login gets a signed, expiring session instead ([`Sessions`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        self.accepts_bearer(authorization.and_then(|v| v.to_str().ok()))
    }

    /// Constant-time check of an `Authorization` value as text (`Bearer <token>`; gRPC metadata).
    pub fn accepts_bearer(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else { return false };
        let Some(given) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
            return false;
        };
        self.matches(given)
    }
}

/// The cookie that keeps a browser (the web UI) logged in: a [`Sessions`] value, never the
/// token itself (the name is older than that).
pub const COOKIE: &str = "regserve_token";

/// Signed, expiring UI sessions: the cookie is `v1.<expiry>.<nonce>.<tag>`, the tag an
/// HMAC-SHA256 over the expiry and the nonce under a key drawn at random when the process
/// starts. A random key rather than one derived from the token: a stolen cookie then says
/// nothing about the token (no offline guessing of a weak token from it), and every session ends
/// with the process — changing the token needs a restart anyway, which thus logs everyone out.
/// The cost is that a restart logs the browser out too.
#[derive(Clone)]
pub struct Sessions {
    key: Arc<ring::hmac::Key>,
    ttl: Duration,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

const SESSION_VERSION: &str = "v1";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Sessions {
    /// A fresh random key; sessions last `ttl` (at least one second).
    pub fn new(ttl: Duration) -> Result<Sessions, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| "the system random number generator failed".to_string())?;
        Ok(Sessions { key: Arc::new(key), ttl: ttl.max(Duration::from_secs(1)) })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn tag(&self, expiry: u64, nonce: &str) -> String {
        let signed =
            ring::hmac::sign(&self.key, format!("regserve-session|{SESSION_VERSION}|{expiry}|{nonce}").as_bytes());
        hex(signed.as_ref())
    }

    /// A new session's cookie value, valid for [`Sessions::ttl`] from now.
    pub fn issue(&self) -> String {
        let mut nonce = [0u8; 16];
        // The key came from the same generator; should it fail now, a zero nonce still yields a
        // value only this key can sign.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        let nonce = hex(&nonce);
        let expiry = now_secs().saturating_add(self.ttl.as_secs().max(1));
        format!("{SESSION_VERSION}.{expiry}.{nonce}.{}", self.tag(expiry, &nonce))
    }

    /// Is this cookie value a session this process issued and that has not expired? The tag is
    /// compared in constant time.
    pub fn verify(&self, value: &str) -> bool {
        let mut parts = value.split('.');
        let (Some(SESSION_VERSION), Some(expiry), Some(nonce), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<u64>() else { return false };
        if expiry <= now_secs() || nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        self.tag(expiry, nonce).as_bytes().ct_eq(tag.as_bytes()).into()
    }

    /// Does the request carry a valid session cookie?
    pub fn accepts_request(&self, headers: &axum::http::HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.verify(v))
    }
}

/// Who must show the token on `regserve server`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub token: Token,
    /// Reads need the token too (by default only writes do).
    pub reads: bool,
    /// The UI's logins.
    pub sessions: Sessions,
    /// Where a refused request goes instead of a 401: `Some(redirect)` for a page of the web UI
    /// (its login page), `None` for the API. Filled by whoever puts the UI in the router
    /// ([`crate::server::registry_app`]), so authentication does not depend on the UI.
    pub page_redirect: fn(&Request) -> Option<Response>,
}

impl Policy {
    /// A policy without pages: every refused request gets 401.
    pub fn new(token: Token, reads: bool, sessions: Sessions) -> Policy {
        Policy { token, reads, sessions, page_redirect: |_| None }
    }
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

/// The MLflow REST API and artifact proxy, where only `Authorization: Bearer` counts.
fn is_api(path: &str) -> bool {
    // MLflow mounts two artifact downloads of its API at the root.
    path.starts_with("/api/")
        || path.starts_with("/ajax-api/")
        || matches!(path, "/get-artifact" | "/model-versions/get-artifact")
}

/// Middleware for `regserve server`: writes (any method but GET/HEAD) need the token, reads
/// too with `--auth-reads`. The API answers 401; a web UI page redirects to its login page.
///
/// The UI's session cookie counts on UI pages only, never on the API: no page of ours calls the
/// API, so a cookie arriving there was sent by a browser on behalf of some other page.
pub async fn guard(State(policy): State<Policy>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let read = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let needs_token = !always_open(path) && (!read || policy.reads);
    let authenticated = policy.token.accepts(request.headers().get(header::AUTHORIZATION))
        || (!is_api(path) && policy.sessions.accepts_request(request.headers()));
    if needs_token && !authenticated {
        return (policy.page_redirect)(&request).unwrap_or_else(unauthorized);
    }
    request.extensions_mut().insert(Access { policy, authenticated });
    next.run(request).await
}

/// Middleware for `regserve serve`: 401 with `WWW-Authenticate` unless the request carries the
/// bearer token in `Authorization` (`serve` has no login and takes no cookie).
pub async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.accepts(request.headers().get(header::AUTHORIZATION)) {
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
    fn the_root_artifact_downloads_are_api_where_the_ui_cookie_does_not_count() {
        for api in [
            "/api/2.0/mlflow/runs/get",
            "/ajax-api/2.0/mlflow/upload-artifact",
            "/get-artifact",
            "/model-versions/get-artifact",
        ] {
            assert!(is_api(api), "{api}");
        }
        assert!(!is_api("/models/iris"));
    }

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
    fn sessions_are_signed_expiring_and_bound_to_this_process() {
        let sessions = Sessions::new(Duration::from_secs(60)).unwrap();
        let value = sessions.issue();
        assert!(sessions.verify(&value), "{value}");
        assert!(!value.contains("s3cret"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap());
        assert!(sessions.accepts_request(&headers));

        // Another process (another key) does not accept it.
        assert!(!Sessions::new(Duration::from_secs(60)).unwrap().verify(&value));
        // Any change to expiry, nonce or tag breaks it.
        let parts: Vec<&str> = value.split('.').collect();
        let later = (parts[1].parse::<u64>().unwrap() + 3600).to_string();
        for forged in [
            format!("v1.{later}.{}.{}", parts[2], parts[3]),
            format!("v1.{}.{}.{}", parts[1], "0".repeat(32), parts[3]),
            format!("v1.{}.{}.{}", parts[1], parts[2], "0".repeat(64)),
            format!("v2.{}.{}.{}", parts[1], parts[2], parts[3]),
            format!("{value}.x"),
            parts[3].to_string(),
            String::new(),
        ] {
            assert!(!sessions.verify(&forged), "{forged}");
        }
        // An expired session, correctly signed, is refused.
        let nonce = "ab".repeat(16);
        let past = now_secs() - 1;
        let expired = format!("v1.{past}.{nonce}.{}", sessions.tag(past, &nonce));
        assert!(!sessions.verify(&expired));
        let future = now_secs() + 100;
        assert!(sessions.verify(&format!("v1.{future}.{nonce}.{}", sessions.tag(future, &nonce))));
    }
}
