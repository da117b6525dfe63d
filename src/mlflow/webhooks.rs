//! The sending side of registry webhooks ([`crate::registry::webhooks`] keeps the hooks and the
//! outbox): deliveries sent as MLflow sends them (`mlflow/webhooks/delivery.py`): a JSON POST with
//! `X-MLflow-Delivery-Id`, `X-MLflow-Timestamp` and, with a secret, `X-MLflow-Signature:
//! v1,<base64 HMAC-SHA256 of "{delivery_id}.{timestamp}.{body}">`; retried on 429/5xx,
//! timeouts and connection errors with exponential backoff (1 s, 2 s, 4 s, … at most 60 s,
//! `Retry-After` honoured) up to `MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES` times.
//!
//! Destinations are checked as MLflow's `_validate_webhook_url` and `ssrf.py` check them: the
//! scheme must be allowed (`MLFLOW_WEBHOOK_ALLOWED_SCHEMES`, default `https`) and, unless
//! `MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`, the host must resolve to public addresses only — when the
//! hook is saved, and again when each delivery connects (the resolver hands the client public
//! addresses only, so a name rebound to a private address after the check is not reached).
//!
//! [`Worker`] runs in each `regserve server`: it claims due rows of the outbox with a lease,
//! sends them (at most `max_workers` at once), and deletes, reschedules or fails each. Every
//! attempt is logged and counted in `regserve_webhook_delivery_attempts_total{outcome}`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ring::hmac;

use crate::registry::store::now_ms;
use crate::registry::webhooks::{self as hooks, Claimed, Event};
use crate::registry::RegistryError;
use crate::registry::Store;

/// Which destinations hooks may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    /// Lower-case URL schemes (`MLFLOW_WEBHOOK_ALLOWED_SCHEMES`, `--webhook-allowed-schemes`).
    pub allowed_schemes: Vec<String>,
    /// Allow loopback, private, link-local, … addresses (`MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`,
    /// `--webhook-allow-private-ips`).
    pub allow_private_ips: bool,
}

impl Default for Destinations {
    fn default() -> Self {
        Destinations { allowed_schemes: vec!["https".into()], allow_private_ips: false }
    }
}

/// How long a hostname lookup of a check may take (MLflow: 5 s).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidParameter(message)
}

impl Destinations {
    /// MLflow's `_validate_webhook_url`, with its messages: a 400 `INVALID_PARAMETER_VALUE`
    /// that says why.
    pub async fn check(&self, url: &str) -> Result<(), RegistryError> {
        if url.trim().is_empty() {
            return Err(invalid(format!("Webhook URL cannot be empty or just whitespace: '{url}'")));
        }
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("Invalid webhook URL '{url}': {e}")))?;
        self.check_scheme(&parsed)?;
        let host = match parsed.host() {
            Some(h) => h,
            None => return Err(invalid(format!("Webhook URL must include a hostname: '{url}'"))),
        };
        if self.allow_private_ips {
            return Ok(());
        }
        let addrs: Vec<IpAddr> = match host {
            url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            url::Host::Domain(name) => {
                let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0)))
                    .await
                    .map_err(|_| {
                        invalid(format!(
                            "Timed out resolving Webhook URL hostname '{name}' after {} seconds",
                            RESOLVE_TIMEOUT.as_secs()
                        ))
                    })?
                    .map_err(|e| invalid(format!("Cannot resolve Webhook URL hostname '{name}': {e}")))?;
                lookup.map(|a| a.ip()).collect()
            }
        };
        for ip in addrs {
            if !is_public(ip) {
                return Err(invalid(format!(
                    "Webhook URL must not resolve to a non-public IP address. '{host}' resolves to {ip}. \
                     (Private and loopback destinations need MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true or \
                     --webhook-allow-private-ips.)"
                )));
            }
        }
        Ok(())
    }

    fn check_scheme(&self, url: &url::Url) -> Result<(), RegistryError> {
        if self.allowed_schemes.iter().any(|s| s == url.scheme()) {
            Ok(())
        } else {
            Err(invalid(format!(
                "Invalid webhook URL scheme: '{}'. Allowed schemes are: {}.",
                url.scheme(),
                self.allowed_schemes.join(", ")
            )))
        }
    }
}

/// Is `ip` a public (globally routable) address, as Python's `ip_address(...).is_global` after
/// MLflow's `_embedded_ipv4` (IPv4-mapped, 6to4 and NAT64 addresses count as the IPv4 inside)?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            if seg[0] == 0x2002 {
                return is_public_v4(Ipv4Addr::new(
                    (seg[1] >> 8) as u8,
                    seg[1] as u8,
                    (seg[2] >> 8) as u8,
                    seg[2] as u8,
                ));
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::new(
                    (seg[6] >> 8) as u8,
                    seg[6] as u8,
                    (seg[7] >> 8) as u8,
                    seg[7] as u8,
                ));
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240) // 240.0.0.0/4 reserved, multicast below is not global either
        && !ip.is_multicast()
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (2001::/23)
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible, deprecated
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

/// A resolver that hands the HTTP client public addresses only (unless private ones are
/// allowed): the connection-time check of MLflow's `ssrf.py`.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("webhook connection blocked: '{host}' resolves to no public IP address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// How deliveries go out: `MLFLOW_WEBHOOK_*` variables / `--webhook-*` flags.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub destinations: Destinations,
    /// One attempt's timeout (`MLFLOW_WEBHOOK_REQUEST_TIMEOUT`, 30 s).
    pub timeout: Duration,
    /// Retries after the first attempt (`MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES`, 3).
    pub max_retries: u32,
    /// Deliveries in flight at once per server (`MLFLOW_WEBHOOK_DELIVERY_MAX_WORKERS`, 10).
    pub max_workers: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            destinations: Destinations::default(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            max_workers: 10,
        }
    }
}

/// The longest backoff between attempts (MLflow's `backoff_max`).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How much of a receiver's answer `test_webhook` reports.
const RESPONSE_BODY_LIMIT: usize = 8 * 1024;
/// How often the worker looks for due rows when nothing woke it (rows written by other
/// servers, retries coming due).
const POLL: Duration = Duration::from_millis(250);
/// How long a delivery that failed for good stays in the outbox (for operators), and how often
/// the worker forgets older ones.
const KEEP_FAILED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    /// The receiver answered below 400... or any status that is not worth retrying.
    Answered { status: u16, body: String },
    /// Worth retrying: 429/5xx (with the receiver's `Retry-After`, if any), a timeout, a
    /// connection error.
    Retryable { error: String, retry_after: Option<Duration>, answer: Option<(u16, String)> },
    /// Not sendable at all (destination refused, bad URL).
    Refused(String),
}

/// The HTTP side: one client for every delivery of this server.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    pub config: Arc<DeliveryConfig>,
}

/// MLflow's `_generate_hmac_signature`: `v1,` + base64(HMAC-SHA256(secret,
/// "{delivery_id}.{timestamp}.{payload}")).
pub fn signature(secret: &str, delivery_id: &str, timestamp: &str, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{delivery_id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

impl Sender {
    pub fn new(config: DeliveryConfig) -> Result<Sender, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            // A proxy would make the checked peer the proxy (MLflow: `trust_env = False`), and a
            // redirect would go where no check looked.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if !config.destinations.allow_private_ips {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder.build().map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Sender { client, config: Arc::new(config) })
    }

    /// POST `body` to `url` once, signed with `secret` when there is one.
    pub async fn send(&self, url: &str, secret: Option<&str>, delivery_id: &str, body: &str) -> Attempt {
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Attempt::Refused(format!("invalid webhook URL '{url}': {e}")),
        };
        if let Err(e) = self.config.destinations.check_scheme(&parsed) {
            return Attempt::Refused(e.to_string());
        }
        if !self.config.destinations.allow_private_ips {
            // Literal addresses skip the resolver.
            let literal = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
                return Attempt::Refused(format!("webhook connection blocked: {ip} is not a public IP address"));
            }
        }
        let timestamp = (now_ms() / 1000).to_string();
        let mut req = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-MLflow-Delivery-Id", delivery_id)
            .header("X-MLflow-Timestamp", &timestamp);
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            req = req.header("X-MLflow-Signature", signature(secret, delivery_id, &timestamp, body));
        }
        match req.body(body.to_string()).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_BACKOFF));
                let text = read_limited(resp).await;
                if matches!(status, 429 | 500 | 502 | 503 | 504) {
                    Attempt::Retryable {
                        error: format!("the receiver answered {status}"),
                        retry_after,
                        answer: Some((status, text)),
                    }
                } else {
                    Attempt::Answered { status, body: text }
                }
            }
            Err(e) if e.is_timeout() => Attempt::Retryable {
                error: format!("no answer within {:?}", self.config.timeout),
                retry_after: None,
                answer: None,
            },
            Err(e) => {
                let chain = error_chain(&e);
                if chain.contains("webhook connection blocked") {
                    Attempt::Refused(chain)
                } else {
                    Attempt::Retryable { error: chain, retry_after: None, answer: None }
                }
            }
        }
    }

    /// MLflow's `test_webhook`: one signed POST of the event's example payload (no retries).
    pub async fn test(&self, hook: &hooks::Webhook, event: Option<Event>) -> serde_json::Value {
        let event = event.or_else(|| hook.events.first().copied()).unwrap_or(hooks::MLFLOW_EVENTS[0]);
        let body = hooks::event_body(event, &event.example_payload());
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let outcome = self.send(&hook.url, hook.secret.as_deref(), &delivery_id, &body).await;
        tracing::info!(webhook_id = %hook.webhook_id, %event, outcome = ?outcome_label(&outcome, true), "webhook test delivery");
        match outcome {
            Attempt::Answered { status, body } | Attempt::Retryable { answer: Some((status, body)), .. } => {
                serde_json::json!({"success": status < 400, "response_status": status, "response_body": body})
            }
            Attempt::Retryable { error, .. } | Attempt::Refused(error) => {
                serde_json::json!({"success": false, "error_message": format!("Failed to test webhook: {error}")})
            }
        }
    }
}

async fn read_limited(mut resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = RESPONSE_BODY_LIMIT.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= RESPONSE_BODY_LIMIT {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The `outcome` label of one attempt.
fn outcome_label(a: &Attempt, last: bool) -> &'static str {
    match a {
        Attempt::Answered { status, .. } if *status < 400 => "delivered",
        Attempt::Answered { .. } | Attempt::Refused(_) => "failed",
        Attempt::Retryable { .. } if last => "failed",
        Attempt::Retryable { .. } => "retried",
    }
}

/// The wait before attempt `n + 1` after `n` failed attempts: 1 s, 2 s, 4 s, … ≤ 60 s.
pub fn backoff(failed_attempts: u32) -> Duration {
    let secs = 1u64 << failed_attempts.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// The delivery worker of one server; dropping it stops it (deliveries in flight finish or
/// are retried by any server once their lease runs out).
pub struct Worker {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Worker {
    /// Start delivering what the outbox of `store` holds (call inside a tokio runtime).
    pub fn spawn(store: Arc<Store>, sender: Sender) -> Worker {
        Worker { task: tokio::spawn(run(store, sender)) }
    }
}

async fn run(store: Arc<Store>, sender: Sender) {
    let slots = Arc::new(tokio::sync::Semaphore::new(sender.config.max_workers.max(1)));
    // Long enough for an attempt to finish; after it, another server may take the row over.
    let lease_ms = (sender.config.timeout + Duration::from_secs(30)).as_millis() as i64;
    let mut pruned_at: Option<std::time::Instant> = None;
    // On PostgreSQL, the other servers' writes wake this worker too (LISTEN).
    let mut others = store.database().postgres().map(|pg| pg.listen(hooks::OUTBOX_CHANNEL));
    loop {
        if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(std::time::Instant::now());
            let prune_store = store.clone();
            let keep = KEEP_FAILED.as_millis() as i64;
            match tokio::task::spawn_blocking(move || prune_store.prune_failed_deliveries(keep)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(deliveries = n, "forgot webhook deliveries that failed over 7 days ago"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not prune failed webhook deliveries"),
                Err(_) => {}
            }
        }
        let Ok(first) = slots.clone().acquire_owned().await else { return };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let want = permits.len();
        let claim_store = store.clone();
        let claimed = match tokio::task::spawn_blocking(move || claim_store.claim_deliveries(want, lease_ms)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the webhook outbox");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "the webhook outbox task failed");
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        for row in claimed {
            let Some(permit) = permits.pop() else { break };
            let (store, sender) = (store.clone(), sender.clone());
            tokio::spawn(async move {
                deliver(store, sender, row).await;
                drop(permit);
            });
        }
        drop(permits);
        if idle {
            let other_write = async {
                match others.as_mut() {
                    Some(r) => {
                        if r.recv().await.is_none() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = hooks::enqueued() => {}
                _ = other_write => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// One attempt of one claimed row, and its bookkeeping.
async fn deliver(store: Arc<Store>, sender: Sender, row: Claimed) {
    let lookup_store = store.clone();
    let hook_id = row.webhook_id.clone();
    let dest = match tokio::task::spawn_blocking(move || lookup_store.delivery_destination(&hook_id)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, delivery_id = %row.delivery_id, "could not read the webhook; retrying later");
            return; // the lease runs out and the row is claimed again
        }
        Err(_) => return,
    };
    let m = crate::metrics::metrics();
    let Some(dest) = dest else {
        tracing::info!(delivery_id = %row.delivery_id, webhook_id = %row.webhook_id, "webhook deleted or disabled: delivery dropped");
        m.webhook_attempts.get_or_create(&crate::metrics::AttemptLabels { outcome: "dropped".into() }).inc();
        let _ = tokio::task::spawn_blocking(move || store.finish_delivery(row.id)).await;
        return;
    };
    let started = std::time::Instant::now();
    let outcome = sender.send(&dest.url, dest.secret.as_deref(), &row.delivery_id, &row.body).await;
    let last = row.attempt > sender.config.max_retries;
    let label = outcome_label(&outcome, last);
    m.webhook_attempts.get_or_create(&crate::metrics::AttemptLabels { outcome: label.into() }).inc();
    let (next, error) = match &outcome {
        Attempt::Answered { status, .. } if *status < 400 => {
            tracing::info!(delivery_id = %row.delivery_id, webhook_id = %row.webhook_id, event = %row.event, url = %dest.url, attempt = row.attempt, status, elapsed_ms = started.elapsed().as_millis() as u64, "webhook delivered");
            let _ = tokio::task::spawn_blocking(move || store.finish_delivery(row.id)).await;
            return;
        }
        Attempt::Answered { status, .. } => (None, format!("the receiver answered {status}")),
        Attempt::Refused(e) => (None, e.clone()),
        Attempt::Retryable { error, .. } if last => (None, error.clone()),
        Attempt::Retryable { error, retry_after, .. } => {
            let wait = retry_after.unwrap_or_else(|| backoff(row.attempt));
            (Some(now_ms() + wait.as_millis() as i64), error.clone())
        }
    };
    tracing::warn!(delivery_id = %row.delivery_id, webhook_id = %row.webhook_id, event = %row.event, url = %dest.url, attempt = row.attempt, outcome = label, error = %error, "webhook delivery failed");
    let id = row.id;
    match tokio::task::spawn_blocking(move || store.reschedule_delivery(id, next, &error)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not record a webhook delivery's failure"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_mlflows() {
        // python: base64.b64encode(hmac.new(b"secret", b"id.1700000000.{}", hashlib.sha256).digest())
        assert_eq!(signature("secret", "id", "1700000000", "{}"), "v1,GBemBzTgbKoVEGKycqyY3615LbdJbhFLE1oQk+zZ+lo=");
    }

    #[test]
    fn public_addresses_only_unless_allowed() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "2002:0a00:0001::",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let strict = Destinations::default();
        let e = rt.block_on(strict.check("http://8.8.8.8/x")).unwrap_err().to_string();
        assert!(e.contains("Invalid webhook URL scheme: 'http'"), "{e}");
        assert!(rt.block_on(strict.check("https://127.0.0.1/x")).unwrap_err().to_string().contains("non-public"));
        assert!(rt.block_on(strict.check("https://8.8.8.8/x")).is_ok());
        let open = Destinations { allowed_schemes: vec!["http".into()], allow_private_ips: true };
        assert!(rt.block_on(open.check("http://127.0.0.1:9/x")).is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn deliveries_connect_to_public_addresses_only_unless_allowed() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let strict = Sender::new(DeliveryConfig {
            destinations: Destinations { allowed_schemes: vec!["http".into()], allow_private_ips: false },
            timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .unwrap();
        for url in ["http://127.0.0.1:9/x", "http://[::1]:9/x", "http://localhost:9/x"] {
            match rt.block_on(strict.send(url, None, "d", "{}")) {
                Attempt::Refused(why) => assert!(why.contains("blocked"), "{url}: {why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        match rt.block_on(strict.send("https://8.8.8.8/x", None, "d", "{}")) {
            Attempt::Refused(why) => assert!(why.contains("scheme"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Allowed: a closed local port is a connection error, worth retrying.
        let open = Sender::new(DeliveryConfig {
            destinations: Destinations { allowed_schemes: vec!["http".into()], allow_private_ips: true },
            timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(matches!(
            rt.block_on(open.send(&format!("http://127.0.0.1:{port}/x"), None, "d", "{}")),
            Attempt::Retryable { answer: None, .. }
        ));
    }
}
