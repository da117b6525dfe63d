//! The transport of the MLflow client: [`HttpClient`] (base URL, TLS options, timeouts,
//! [`Auth`] from MLflow's environment variables, sent only to the registry's origin),
//! [`HttpSettings`] read from that environment, retries with backoff ([`RetryPolicy`],
//! [`with_retries`]), and MLflow error bodies → [`RegistryError`] ([`api_error`]). The
//! registry reads and writes in [`crate::mlflow`] and the artifact downloads in
//! [`crate::artifact::fetch`] both go through it.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

pub use crate::registry::location::redact_url;
use crate::registry::RegistryError;

/// Bearer token sent to the registry.
pub const ENV_TOKEN: &str = "MLFLOW_TRACKING_TOKEN";
/// Basic-auth user name (with [`ENV_PASSWORD`]); wins over the token, as in MLflow.
pub const ENV_USERNAME: &str = "MLFLOW_TRACKING_USERNAME";
pub const ENV_PASSWORD: &str = "MLFLOW_TRACKING_PASSWORD";
/// `true` turns off TLS certificate checks.
pub const ENV_INSECURE_TLS: &str = "MLFLOW_TRACKING_INSECURE_TLS";
/// A PEM bundle of extra CA certificates to trust.
pub const ENV_SERVER_CERT_PATH: &str = "MLFLOW_TRACKING_SERVER_CERT_PATH";
/// Seconds to wait to connect, and between bytes of an answer (default 120).
pub const ENV_TIMEOUT: &str = "MLFLOW_HTTP_REQUEST_TIMEOUT";
/// Retries after the first attempt (default 5).
pub const ENV_MAX_RETRIES: &str = "MLFLOW_HTTP_REQUEST_MAX_RETRIES";
/// Seconds before the first retry, doubling after each (urllib3's backoff factor).
pub const ENV_BACKOFF_FACTOR: &str = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR";
/// Up to this many seconds of random delay added to each backoff.
pub const ENV_BACKOFF_JITTER: &str = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER";

type Result<T, E = RegistryError> = std::result::Result<T, E>;

// ------------------------------------------------------------------------ settings

/// A string that must not be shown: `Debug` prints `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How requests to the registry authenticate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: Secret,
    },
    Bearer(Secret),
}

impl Auth {
    /// MLflow's choice: user name and password → Basic; else a token → Bearer; else nothing.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Auth {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        match (get(ENV_USERNAME), get(ENV_PASSWORD), get(ENV_TOKEN)) {
            (Some(username), Some(password), _) => Auth::Basic { username, password: Secret(password) },
            (_, _, Some(token)) => Auth::Bearer(Secret(token)),
            _ => Auth::None,
        }
    }

    /// Add the `Authorization` header (marked sensitive, so it is never logged).
    pub fn apply(&self, req: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
        }
    }
}

/// When and how often a failed request is tried again. Connection errors, timeouts and the
/// answers 429, 500, 502, 503 and 504 are retried (MLflow's list); anything else is final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: try once).
    pub max_retries: u32,
    /// Wait before the first retry; it doubles with each further retry.
    pub initial_backoff: Duration,
    /// No single wait is longer (a server's `Retry-After` is capped to it too).
    pub max_backoff: Duration,
    /// Up to this much random time is added to each wait, so clients do not retry in step.
    pub jitter: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries after 0.1, 0.2, 0.4, 0.8 and 1.6 s (+ up to 50 ms each): about 3 s in all.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            jitter: Duration::from_millis(50),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), without jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// The wait before retry number `retry`: the server's `Retry-After` if it gave one (capped),
    /// else the backoff; plus jitter.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let base = match retry_after {
            Some(after) => after.min(self.max_backoff),
            None => self.backoff(retry),
        };
        base + self.jitter.mul_f64(random_fraction())
    }

    /// True for the answers worth trying again.
    pub fn retries_status(status: StatusCode) -> bool {
        matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
    }
}

/// A number in [0, 1) that differs between calls (good enough for jitter).
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(0u8) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Transport settings for talking to a registry; [`HttpSettings::from_env`] reads MLflow's
/// variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    pub auth: Auth,
    /// Accept any server certificate (`MLFLOW_TRACKING_INSECURE_TLS=true`).
    pub insecure_tls: bool,
    /// Extra CA certificates, PEM (`MLFLOW_TRACKING_SERVER_CERT_PATH`).
    pub ca_cert: Option<PathBuf>,
    /// Connect timeout, read timeout between bytes, and the total time of one API call
    /// (downloads have no total limit).
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            auth: Auth::None,
            insecure_tls: false,
            ca_cert: None,
            timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

impl HttpSettings {
    /// Settings from the process environment (MLflow's variable names).
    pub fn from_env() -> Result<HttpSettings> {
        Self::from_env_with(|k| std::env::var(k).ok())
    }

    /// Settings from `env`; every bad value is reported at once, naming its variable.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Result<HttpSettings> {
        let get = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut errors = Vec::new();
        let mut s = HttpSettings { auth: Auth::from_env_with(&env), ..HttpSettings::default() };
        if let Some(v) = get(ENV_INSECURE_TLS) {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" => s.insecure_tls = true,
                "false" | "0" => s.insecure_tls = false,
                _ => errors.push(format!("{ENV_INSECURE_TLS} must be true or false, not '{v}'")),
            }
        }
        s.ca_cert = get(ENV_SERVER_CERT_PATH).map(PathBuf::from);
        if s.insecure_tls && s.ca_cert.is_some() {
            errors.push(format!("{ENV_INSECURE_TLS}=true and {ENV_SERVER_CERT_PATH} contradict each other; set one"));
        }
        let seconds = |k: &str, errors: &mut Vec<String>| -> Option<Duration> {
            let v = get(k)?;
            match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => Some(Duration::from_secs_f64(n)),
                _ => {
                    errors.push(format!("{k} must be a number of seconds, not '{v}'"));
                    None
                }
            }
        };
        if let Some(t) = seconds(ENV_TIMEOUT, &mut errors) {
            if t.is_zero() {
                errors.push(format!("{ENV_TIMEOUT} must be more than 0 seconds"));
            } else {
                s.timeout = t;
            }
        }
        if let Some(v) = get(ENV_MAX_RETRIES) {
            match v.parse::<u32>() {
                Ok(n) => s.retry.max_retries = n,
                Err(_) => errors.push(format!("{ENV_MAX_RETRIES} must be a whole number, not '{v}'")),
            }
        }
        if let Some(f) = seconds(ENV_BACKOFF_FACTOR, &mut errors) {
            // urllib3: factor * 2^(n-1), at most 120 s.
            s.retry.initial_backoff = f;
            s.retry.max_backoff = Duration::from_secs(120);
        }
        if let Some(j) = seconds(ENV_BACKOFF_JITTER, &mut errors) {
            s.retry.jitter = j;
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(RegistryError::InvalidParameter(errors.join("; ")))
        }
    }
}

// ------------------------------------------------------------------------ retries

/// What one attempt of a retried operation came to.
pub(crate) enum Step<T, E> {
    Done(T),
    Fail(E),
    /// A transient failure: try again after the backoff (or `after`, capped).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

/// Run `attempt` until it is done, fails for good, or the retries are used up; the last is
/// [`RegistryError::Unavailable`] naming `what` and the last reason.
pub(crate) async fn with_retries<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut attempt: F) -> Result<T, E>
where
    E: From<RegistryError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Step<T, E>>,
{
    let mut retry = 0u32;
    loop {
        match attempt().await {
            Step::Done(v) => return Ok(v),
            Step::Fail(e) => return Err(e),
            Step::Retry { reason, after } => {
                if retry >= policy.max_retries {
                    let attempts = retry + 1;
                    let plural = if attempts == 1 { "" } else { "s" };
                    return Err(RegistryError::Unavailable(format!(
                        "{what}: {reason} (gave up after {attempts} attempt{plural})"
                    ))
                    .into());
                }
                let wait = policy.delay(retry, after);
                tracing::info!(what, %reason, retry = retry + 1, of = policy.max_retries, wait_ms = wait.as_millis() as u64, "request failed; retrying");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
        }
    }
}

pub(crate) fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A transport error with its causes, e.g. "client error (Connect): tcp connect error:
/// Connection refused (os error 111)".
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The start of a body, on one line, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 200 {
        format!("{}…", flat.chars().take(200).collect::<String>())
    } else {
        flat
    }
}

// ------------------------------------------------------------------------ transport

/// HTTP to one registry: base URL, credentials, TLS, timeouts, retries. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base: Url,
    auth: Auth,
    retry: RetryPolicy,
    timeout: Duration,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base.as_str())
            .field("auth", &self.auth)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpClient {
    /// A client for the registry at `base_url` (`http(s)://host[:port][/prefix]`). A user name
    /// and password in the URL are used for Basic auth unless `settings` has credentials; they
    /// are removed from the URL either way.
    pub fn new(base_url: &str, settings: HttpSettings) -> Result<HttpClient> {
        let invalid = |why: String| {
            RegistryError::InvalidParameter(format!(
                "invalid registry URL '{}': {why}; expected http(s)://host[:port][/prefix]",
                redact_url(base_url)
            ))
        };
        let mut base = Url::parse(base_url.trim()).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!("the scheme is '{}'", base.scheme())));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the host is missing".into()));
        }
        let mut auth = settings.auth.clone();
        if !base.username().is_empty() {
            if auth == Auth::None {
                let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                auth = Auth::Basic {
                    username: decode(base.username()),
                    password: Secret(decode(base.password().unwrap_or(""))),
                };
            }
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        base.set_query(None);
        base.set_fragment(None);
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(&path);

        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .read_timeout(settings.timeout)
            .user_agent(concat!("regserve/", env!("CARGO_PKG_VERSION")));
        if settings.insecure_tls {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                RegistryError::InvalidParameter(format!("cannot read {ENV_SERVER_CERT_PATH}={}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::InvalidParameter(format!(
                    "{ENV_SERVER_CERT_PATH}={} is not a PEM certificate bundle: {e}",
                    path.display()
                ))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| RegistryError::InvalidParameter(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HttpClient { client, base, auth, retry: settings.retry, timeout: settings.timeout })
    }

    /// The registry's base URL, without credentials (and without a trailing slash unless the
    /// path is just `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The timeout of one API call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The credentials sent to the registry's origin.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// `<base>/<path>` where `path` is like `api/2.0/mlflow/model-versions/get`; each segment is
    /// percent-encoded as needed and the base's path prefix is kept.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        append_segments(&mut url, path.split('/').filter(|s| !s.is_empty()));
        url
    }

    /// True when `url` has the registry's scheme, host and port (so it may see the credentials).
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// A request to `url`, with the credentials only if `url` is on the registry's origin
    /// (scheme, host and port): whatever a registry or an artifact URI names, its token or
    /// password never goes to another host. (A redirect to another host drops them too:
    /// reqwest removes `Authorization` when a redirect changes host or port.)
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let send_auth = self.same_origin(&url);
        let req = self.client.request(method, url);
        if send_auth {
            self.auth.apply(req)
        } else {
            req
        }
    }

    /// Send the request `make` builds, retrying connection errors, timeouts and 429/5xx
    /// answers per the policy. Returns the first answer that is not retried.
    pub(crate) async fn send(&self, what: &str, make: impl Fn() -> RequestBuilder) -> Result<Response> {
        with_retries(&self.retry, what, || {
            let req = make();
            async move {
                match req.send().await {
                    Ok(resp) if RetryPolicy::retries_status(resp.status()) => {
                        let after = retry_after(&resp);
                        let status = resp.status();
                        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                        Step::Retry { reason: format!("answered {status}: {}", error_message(&body)), after }
                    }
                    Ok(resp) => Step::Done(resp),
                    Err(e) if e.is_builder() => {
                        Step::Fail(RegistryError::InvalidParameter(format!("cannot build the request: {e}")))
                    }
                    Err(e) => Step::Retry { reason: error_chain(&e), after: None },
                }
            }
        })
        .await
    }
}

/// Append `/`-free segments to `url`'s path (percent-encoding them).
pub(crate) fn append_segments<'a>(url: &mut Url, segments: impl IntoIterator<Item = &'a str>) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

/// MLflow's error body, if the answer is one.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error_code: String,
    #[serde(default)]
    message: String,
}

/// The `message` of an MLflow error body, or the start of any other body.
pub(crate) fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.message.is_empty() => format!("{} ({})", e.message, e.error_code),
        Ok(e) => e.error_code,
        Err(_) => snippet(body),
    }
}

/// Map a final non-success answer to a [`RegistryError`]: MLflow's `error_code` decides where
/// there is one; credentials refused, missing endpoints, and anything else unexpected make the
/// registry unusable ([`RegistryError::Unavailable`]).
pub fn api_error(status: StatusCode, body: &[u8], what: &str) -> RegistryError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let auth_hint = "check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD";
    if let Some(e) = &parsed {
        let message = if e.message.is_empty() { e.error_code.clone() } else { e.message.clone() };
        match e.error_code.as_str() {
            "RESOURCE_DOES_NOT_EXIST" | "NOT_FOUND" => return RegistryError::NotFound(message),
            "RESOURCE_ALREADY_EXISTS" => return RegistryError::AlreadyExists(message),
            "INVALID_PARAMETER_VALUE" | "BAD_REQUEST" | "INVALID_STATE" | "MALFORMED_REQUEST" | "INVALID_REQUEST" => {
                return RegistryError::InvalidParameter(message)
            }
            "UNAUTHENTICATED" | "PERMISSION_DENIED" | "UNAUTHORIZED" => {
                return RegistryError::Unavailable(format!(
                    "{what}: the registry refused the request ({status}, {}): {message}; {auth_hint}",
                    e.error_code
                ))
            }
            _ => {}
        }
    }
    match status.as_u16() {
        401 | 403 => RegistryError::Unavailable(format!(
            "{what}: the registry refused the credentials ({status}); {auth_hint}"
        )),
        404 if parsed.is_none()
            || parsed.as_ref().is_some_and(|e| e.error_code == "ENDPOINT_NOT_FOUND") =>
        {
            RegistryError::Unavailable(format!(
                "{what}: no such endpoint (404: {}); is the registry URL, with its path prefix, that of an MLflow tracking server?",
                error_message(body)
            ))
        }
        404 => RegistryError::NotFound(error_message(body)),
        400..=499 => RegistryError::InvalidParameter(format!(
            "{what}: the registry answered {status}: {}",
            error_message(body)
        )),
        _ => RegistryError::Unavailable(format!(
            "{what}: the registry answered {status}: {}",
            error_message(body)
        )),
    }
}

/// True when an answer says the endpoint itself is missing (not a missing model).
pub(crate) fn is_missing_endpoint(status: StatusCode, body: &[u8]) -> bool {
    match status.as_u16() {
        405 | 501 => true,
        404 => match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => e.error_code == "ENDPOINT_NOT_FOUND",
            Err(_) => true,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::{segment, RestRegistry};
    use serde_json::json;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn endpoints_keep_the_prefix_and_encode_segments() {
        let c = HttpClient::new("http://reg.example:5000/mlflow/", HttpSettings::default()).unwrap();
        assert_eq!(c.base_url().as_str(), "http://reg.example:5000/mlflow");
        assert_eq!(
            c.endpoint("api/2.0/mlflow/registered-models/get").as_str(),
            "http://reg.example:5000/mlflow/api/2.0/mlflow/registered-models/get"
        );
        let c = HttpClient::new("https://reg.example", HttpSettings::default()).unwrap();
        assert_eq!(
            c.endpoint("api/2.0/mlflow-artifacts/artifacts/1/a b/c#d").as_str(),
            "https://reg.example/api/2.0/mlflow-artifacts/artifacts/1/a%20b/c%23d"
        );
        assert_eq!(segment("m-1/2"), "m-1%2F2");
        assert!(c.same_origin(&Url::parse("https://reg.example:443/x").unwrap()));
        assert!(!c.same_origin(&Url::parse("http://reg.example/x").unwrap()));
        assert!(!c.same_origin(&Url::parse("https://other.example/x").unwrap()));
        for bad in ["ftp://x", "reg.example:5000", "http://", "not a url"] {
            let e = HttpClient::new(bad, HttpSettings::default()).unwrap_err();
            assert!(e.to_string().contains("http(s)://host"), "{bad}: {e}");
        }
    }

    #[test]
    fn auth_follows_mlflow_precedence() {
        assert_eq!(Auth::from_env_with(env(&[])), Auth::None);
        assert_eq!(Auth::from_env_with(env(&[(ENV_TOKEN, "t")])), Auth::Bearer(Secret::new("t")));
        // Basic wins when both are set, as in MLflow's rest_utils.
        assert_eq!(
            Auth::from_env_with(env(&[(ENV_TOKEN, "t"), (ENV_USERNAME, "u"), (ENV_PASSWORD, "p")])),
            Auth::Basic { username: "u".into(), password: Secret::new("p") }
        );
        // A user name without a password is not enough.
        assert_eq!(Auth::from_env_with(env(&[(ENV_TOKEN, "t"), (ENV_USERNAME, "u")])), Auth::Bearer(Secret::new("t")));
        assert_eq!(Auth::from_env_with(env(&[(ENV_TOKEN, "")])), Auth::None);
    }

    #[test]
    fn auth_headers_go_to_the_registry_origin_only() {
        let settings = HttpSettings { auth: Auth::Bearer(Secret::new("tok")), ..HttpSettings::default() };
        let c = HttpClient::new("http://reg.example:5000", settings).unwrap();
        let header = |url: &str| {
            c.request(Method::GET, Url::parse(url).unwrap())
                .build()
                .unwrap()
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(header("http://reg.example:5000/api").as_deref(), Some("Bearer tok"));
        // Another host, another port, another scheme: another origin, no credentials.
        for other in [
            "http://files.example/model.onnx",
            "http://reg.example:5001/api",
            "https://reg.example:5000/api",
            "http://reg.example.evil.example:5000/api",
            "http://attacker.example:5000/api/2.0/mlflow-artifacts/artifacts/x",
        ] {
            assert_eq!(header(other), None, "{other}");
        }
        // The host is compared case-insensitively and the default port is implied.
        assert_eq!(header("http://REG.example:5000/x").as_deref(), Some("Bearer tok"));

        let basic = HttpSettings {
            auth: Auth::Basic { username: "u".into(), password: Secret::new("p") },
            ..HttpSettings::default()
        };
        let c = HttpClient::new("http://reg.example", basic).unwrap();
        let req = c.request(Method::GET, c.endpoint("api")).build().unwrap();
        let value = req.headers().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Basic dTpw");
        assert!(value.is_sensitive());
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_are_removed() {
        let c = HttpClient::new("http://al%40x:s3cret@reg.example/p", HttpSettings::default()).unwrap();
        assert_eq!(c.base_url().as_str(), "http://reg.example/p");
        assert_eq!(c.auth(), &Auth::Basic { username: "al@x".into(), password: Secret::new("s3cret") });
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(redact_url("http://al:s3cret@reg.example/p"), "http://***@reg.example/p");
        assert_eq!(redact_url("http://reg.example/p"), "http://reg.example/p");
        assert_eq!(redact_url("weird//u:p@host"), "weird//***@host");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let settings = HttpSettings::from_env_with(env(&[(ENV_USERNAME, "user"), (ENV_PASSWORD, "hunter2")])).unwrap();
        let text = format!("{settings:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("user"), "{text}");
        let settings = HttpSettings::from_env_with(env(&[(ENV_TOKEN, "tok-123")])).unwrap();
        let registry = RestRegistry::new("http://reg.example", settings.clone()).unwrap();
        for text in [format!("{settings:?}"), format!("{registry:?}")] {
            assert!(!text.contains("tok-123"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn settings_from_env_report_every_bad_value() {
        let s = HttpSettings::from_env_with(env(&[
            (ENV_TIMEOUT, "30"),
            (ENV_MAX_RETRIES, "2"),
            (ENV_BACKOFF_FACTOR, "0.5"),
            (ENV_BACKOFF_JITTER, "0"),
            (ENV_INSECURE_TLS, "TRUE"),
        ]))
        .unwrap();
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert!(s.insecure_tls);
        assert_eq!(
            s.retry,
            RetryPolicy {
                max_retries: 2,
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(120),
                jitter: Duration::ZERO
            }
        );
        assert_eq!(HttpSettings::from_env_with(env(&[])).unwrap(), HttpSettings::default());
        let e = HttpSettings::from_env_with(env(&[
            (ENV_TIMEOUT, "soon"),
            (ENV_MAX_RETRIES, "-1"),
            (ENV_INSECURE_TLS, "yes"),
        ]))
        .unwrap_err()
        .to_string();
        for var in [ENV_TIMEOUT, ENV_MAX_RETRIES, ENV_INSECURE_TLS] {
            assert!(e.contains(var), "{e}");
        }
        let e = HttpSettings::from_env_with(env(&[(ENV_INSECURE_TLS, "true"), (ENV_SERVER_CERT_PATH, "/x.pem")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("contradict"), "{e}");
    }

    #[test]
    fn a_missing_ca_bundle_is_reported() {
        let settings = HttpSettings { ca_cert: Some("/nonexistent/ca.pem".into()), ..HttpSettings::default() };
        let e = HttpClient::new("https://reg.example", settings).unwrap_err();
        assert!(e.to_string().contains(ENV_SERVER_CERT_PATH), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: Duration::ZERO,
        };
        let waits: Vec<u64> = (0..6).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(200), Duration::from_secs(1));
        assert_eq!(p.delay(0, Some(Duration::from_secs(30))), Duration::from_secs(1));
        let jittery = RetryPolicy { jitter: Duration::from_millis(50), ..p };
        for _ in 0..20 {
            let d = jittery.delay(1, None);
            assert!(d >= Duration::from_millis(200) && d < Duration::from_millis(250));
        }
        for code in [429, 500, 502, 503, 504] {
            assert!(RetryPolicy::retries_status(StatusCode::from_u16(code).unwrap()));
        }
        for code in [200, 400, 401, 403, 404, 501] {
            assert!(!RetryPolicy::retries_status(StatusCode::from_u16(code).unwrap()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_out_the_backoff_then_give_up() {
        let p = RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter: Duration::ZERO,
        };
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<(), RegistryError> = with_retries(&p, "GET x", || {
            calls += 1;
            async { Step::Retry { reason: "connection refused".into(), after: None } }
        })
        .await;
        assert_eq!(calls, 4);
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4));
        let e = r.unwrap_err();
        assert!(matches!(e, RegistryError::Unavailable(_)));
        assert_eq!(e.to_string(), "GET x: connection refused (gave up after 4 attempts)");

        // Succeeds on the third attempt; Retry-After is honoured.
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<u32, RegistryError> = with_retries(&p, "GET x", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Step::Retry { reason: "503".into(), after: Some(Duration::from_secs(5)) }
                } else {
                    Step::Done(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(start.elapsed(), Duration::from_secs(10));

        // A final failure is not retried.
        let mut calls = 0;
        let r: Result<(), RegistryError> = with_retries(&p, "GET x", || {
            calls += 1;
            async { Step::Fail(RegistryError::NotFound("gone".into())) }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(r, Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn mlflow_error_bodies_map_to_registry_errors() {
        let body = |code: &str, msg: &str| {
            serde_json::to_vec(&json!({"error_code": code, "message": msg, "sqlstate": "KAM00"})).unwrap()
        };
        let e = api_error(
            StatusCode::NOT_FOUND,
            &body("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=x not found"),
            "GET u",
        );
        assert!(matches!(&e, RegistryError::NotFound(m) if m == "Registered Model with name=x not found"));
        let e = api_error(
            StatusCode::BAD_REQUEST,
            &body("INVALID_PARAMETER_VALUE", "Registered model alias nope not found."),
            "GET u",
        );
        assert!(matches!(e, RegistryError::InvalidParameter(_)));
        let e = api_error(StatusCode::BAD_REQUEST, &body("RESOURCE_ALREADY_EXISTS", "exists"), "GET u");
        assert!(matches!(e, RegistryError::AlreadyExists(_)));
        let e = api_error(StatusCode::UNAUTHORIZED, b"<html>no</html>", "GET u");
        assert!(matches!(&e, RegistryError::Unavailable(m) if m.contains("MLFLOW_TRACKING_TOKEN")), "{e}");
        let e = api_error(StatusCode::FORBIDDEN, &body("PERMISSION_DENIED", "no"), "GET u");
        assert!(matches!(e, RegistryError::Unavailable(_)));
        // Flask's HTML 404 for an unknown endpoint is not a missing model.
        let e = api_error(StatusCode::NOT_FOUND, b"<!doctype html>\n<title>404 Not Found</title>", "GET u");
        assert!(matches!(&e, RegistryError::Unavailable(m) if m.contains("prefix")), "{e}");
        let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, &body("INTERNAL_ERROR", "boom"), "GET u");
        assert!(matches!(&e, RegistryError::Unavailable(m) if m.contains("boom")));
        assert!(is_missing_endpoint(StatusCode::NOT_FOUND, b"<html>"));
        assert!(is_missing_endpoint(StatusCode::METHOD_NOT_ALLOWED, b""));
        assert!(!is_missing_endpoint(StatusCode::NOT_FOUND, &body("RESOURCE_DOES_NOT_EXIST", "x")));
    }
}
