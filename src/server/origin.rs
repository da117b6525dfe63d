//! What a web page in someone's browser may make this server do: nothing, unless it is one of
//! this server's own pages. Three checks, in the order a request meets them:
//!
//! - **Host allow-list** (DNS rebinding): a page on `http://evil.example` that re-points its
//!   name at 127.0.0.1 reaches us with `Host: evil.example`; any `Host` not allowed gets 403
//!   (MLflow's `--allowed-hosts`, same message). Default: `localhost` and any IP-address literal,
//!   on any port — a rebinding page can only ever send a DNS name it controls, never an IP
//!   literal, so this lets clients that use the bound address, a pod IP or `[::1]` in while
//!   refusing every name (a DNS name the server is known by goes in `--allowed-hosts`). Liveness
//!   and readiness probes (`/ping`, `/health`, `/version`, `/v2/health/*`) are exempt, as in
//!   MLflow: Kubernetes sends `Host: <pod IP>:<port>` and an explicit list may not name it.
//! - **Same origin for state changes**: a POST/PUT/PATCH/DELETE whose `Origin` is not this
//!   server (its `Host`, or the `X-Forwarded-Host` a reverse proxy sets), or, lacking an
//!   `Origin`, whose `Referer` is another site or whose `Sec-Fetch-Site` says `cross-site` /
//!   `same-site`, gets 403. Clients that are not browsers (MLflow's, curl, regserve's own)
//!   send none of these headers and pass.
//! - **JSON content type** ([`require_json`], on the MLflow REST API only): a body must come as
//!   `application/json`, so the bodies a page can send without a CORS preflight (`text/plain`,
//!   forms) are never read as JSON. As MLflow: 400 `INVALID_PARAMETER_VALUE`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::registry::RegistryError;

/// MLflow's body for a refused `Host` (`mlflow/server/security_utils.py`).
pub const INVALID_HOST_MSG: &str = "Invalid Host header - possible DNS rebinding attack detected";
/// MLflow's body for a refused cross-origin state change.
pub const CORS_BLOCKED_MSG: &str = "Cross-origin request blocked";

/// One `--allowed-hosts` entry: `name`, `name:port`, with `*` matching any run of characters
/// (`*.example.com`, `registry:*`); `*` alone allows every host. Without a port it matches the
/// name on any port (MLflow would need `name:*` for that; both are accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty --allowed-hosts entry".into());
        }
        if s.contains("://") || s.contains('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("'{s}' is not a host (give a name or address, optionally with :port, e.g. registry.example.com, 10.0.0.5:5000, *.internal)"));
        }
        Ok(HostPattern(s.to_ascii_lowercase()))
    }

    fn matches(&self, host: &str, port: Option<&str>) -> bool {
        let p = self.0.as_str();
        if p == "*" {
            return true;
        }
        match split_host_port(p) {
            Some((name, Some(want))) => glob(name, host) && port.is_some_and(|got| glob(want, got)),
            Some((name, None)) => glob(name, host),
            None => false,
        }
    }
}

/// Which `Host` values are let in.
#[derive(Debug, Clone)]
pub enum AllowedHosts {
    /// `localhost` and IP-address literals, any port (see the module docs).
    Local,
    List(Vec<HostPattern>),
}

impl AllowedHosts {
    /// From `--allowed-hosts`: empty means the default.
    pub fn new(list: Vec<HostPattern>) -> AllowedHosts {
        if list.is_empty() {
            AllowedHosts::Local
        } else {
            AllowedHosts::List(list)
        }
    }

    pub fn allows(&self, host_header: &str) -> bool {
        let lowered = host_header.to_ascii_lowercase();
        let Some((host, port)) = split_host_port(&lowered) else { return false };
        if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
            return false;
        }
        match self {
            AllowedHosts::Local => host == "localhost" || is_ip_literal(host),
            AllowedHosts::List(list) => list.iter().any(|p| p.matches(host, port)),
        }
    }
}

/// `1.2.3.4` or `[::1]` (as a `Host` carries it; a bare `::1` is not a valid `Host`).
fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()),
    }
}

/// `name[:port]` or `[v6][:port]` → (host, port). `None` for a malformed bracket.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => rest.strip_prefix(':').map(|p| (host, Some(p))),
        };
    }
    Some(match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        Some(_) => (s, None),
        None => (s, None),
    })
}

/// `*` matches any run of characters; everything else itself (both sides already lower case).
fn glob(pattern: &str, text: &str) -> bool {
    crate::wildcard::matches(pattern.as_bytes(), text.as_bytes(), b'*', None)
}

/// Paths that answer whatever the `Host`: probes (they reveal nothing a probe should not see).
fn is_probe(path: &str) -> bool {
    matches!(path, "/ping" | "/health" | "/version" | "/v2/health/live" | "/v2/health/ready")
}

/// `host[:port]` of an absolute `http(s)://` URL (`Origin`, `Referer`).
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Is this request from a page of this server, or from no browser page at all? (See the
/// module docs; the UI's forms apply the same rule.)
pub fn same_origin(headers: &HeaderMap) -> bool {
    let hosts: Vec<&str> =
        [header_str(headers, header::HOST), header_str(headers, "x-forwarded-host")].into_iter().flatten().collect();
    let ours = |url: &str| authority(url).is_some_and(|a| hosts.iter().any(|h| a.eq_ignore_ascii_case(h)));
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        // `null` (sandboxed frames, `data:` pages) and anything unparsable are not us.
        return ours(origin);
    }
    if headers.contains_key(header::ORIGIN) {
        return false;
    }
    if let Some(referer) = header_str(headers, header::REFERER) {
        if !ours(referer) {
            return false;
        }
    }
    !matches!(header_str(headers, "sec-fetch-site"), Some(s) if s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site"))
}

fn changes_state(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

fn forbidden(message: String) -> Response {
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Middleware for both `serve` and `server` (outermost, before authentication): the `Host`
/// allow-list and the same-origin rule for state changes.
pub async fn guard(State(allowed): State<Arc<AllowedHosts>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !is_probe(path) {
        // HTTP/1.1 requires `Host`; an absolute-form request line carries it in the URI.
        let host = header_str(request.headers(), header::HOST)
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        if !host.as_deref().is_some_and(|h| allowed.allows(h)) {
            let shown: String = host.as_deref().unwrap_or("").chars().take(100).collect();
            tracing::warn!(host = %shown, path, "refused a request whose Host is not allowed");
            return forbidden(format!(
                "{INVALID_HOST_MSG}: Host '{shown}' is not allowed (add it to --allowed-hosts / REGSERVE_ALLOWED_HOSTS if this server is reached by that name)"
            ));
        }
    }
    if changes_state(request.method()) && !same_origin(request.headers()) {
        let origin = header_str(request.headers(), header::ORIGIN)
            .or_else(|| header_str(request.headers(), header::REFERER))
            .unwrap_or("another site");
        let origin: String = origin.chars().take(100).collect();
        tracing::warn!(%origin, path, "refused a cross-origin state change");
        return forbidden(format!(
            "{CORS_BLOCKED_MSG}: a {} from {origin} is not from this server's own pages",
            request.method()
        ));
    }
    next.run(request).await
}

/// Middleware for the MLflow REST API: a request body must be declared `application/json`.
/// POST and PUT must declare it even when empty (as MLflow); PATCH and DELETE (which MLflow's
/// artifact client may send body-less) only when they carry a body or any `Content-Type`.
pub async fn require_json(request: Request, next: Next) -> Response {
    let method = request.method();
    if !changes_state(method) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || header_str(headers, header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0");
    let content_type = headers.get(header::CONTENT_TYPE);
    let must = matches!(*method, Method::POST | Method::PUT) || has_body || content_type.is_some();
    if !must {
        return next.run(request).await;
    }
    let message = match content_type.map(|v| v.to_str().unwrap_or("")) {
        None => "Bad Request. Content-Type header is missing.",
        Some(ct) if ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") => {
            return next.run(request).await;
        }
        Some(_) => "Bad Request. Content-Type must be one of ['application/json'].",
    };
    ApiError::Registry(RegistryError::InvalidParameter(message.into())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn list(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::new(entries.iter().map(|e| HostPattern::parse(e).unwrap()).collect())
    }

    #[test]
    fn the_default_lets_in_localhost_and_ip_literals_only() {
        let d = AllowedHosts::new(Vec::new());
        for ok in [
            "localhost",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:5000",
            "10.1.2.3:80",
            "[fd00::1]:1",
        ] {
            assert!(d.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "::1",
            "0x7f.1",
            "2130706433",
            "",
            "localhost:",
            "localhost:50x",
            "[::1",
            "[::1]x",
            "localhost.",
        ] {
            assert!(!d.allows(bad), "{bad}");
        }
    }

    #[test]
    fn listed_hosts_match_like_mlflow_with_any_port_when_none_given() {
        let l = list(&["registry.example.com", "*.internal", "svc:8080", "[::1]:*"]);
        for ok in ["registry.example.com", "Registry.Example.com:443", "a.b.internal:1", "svc:8080", "[::1]:5"] {
            assert!(l.allows(ok), "{ok}");
        }
        for bad in ["localhost", "127.0.0.1", "svc:8081", "svc", "example.com", "internal", "[::1]"] {
            assert!(!l.allows(bad), "{bad}");
        }
        assert!(list(&["*"]).allows("anything.example:1"));
        assert!(HostPattern::parse("http://x").is_err());
        assert!(HostPattern::parse(" ").is_err());
    }

    #[test]
    fn glob_is_anchored() {
        assert!(glob("a*c", "abbbc") && glob("*", "") && glob("a**", "a"));
        assert!(!glob("a*c", "abcd") && !glob("*.x", "x"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_this_servers_pages_or_no_page_may_change_state() {
        let host = ("host", "127.0.0.1:5000");
        assert!(same_origin(&headers(&[host])), "a client that is not a browser");
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:5000")])));
        assert!(same_origin(&headers(&[host, ("referer", "http://127.0.0.1:5000/models/x")])));
        assert!(same_origin(&headers(&[host, ("x-forwarded-host", "reg.example"), ("origin", "https://reg.example")])));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin"), ("origin", "http://127.0.0.1:5000")])));
        for bad in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://127.0.0.1:5001")],
            vec![host, ("origin", "http://localhost:5000")],
            vec![host, ("referer", "http://evil.example/page")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![host, ("origin", "http://evil.example"), ("referer", "http://127.0.0.1:5000/")],
        ] {
            assert!(!same_origin(&headers(&bad)), "{bad:?}");
        }
    }
}
