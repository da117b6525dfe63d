//! `POST /hooks/mlflow` on `serve`: registry webhooks (MLflow ≥ 3.3, or `regserve server`) that
//! make the watchers re-resolve at once instead of at the next poll.
//!
//! A delivery is accepted only when it is signed with the secret of `--webhook-secret-file` as
//! MLflow signs it (`mlflow/webhooks/delivery.py`, `_generate_hmac_signature`):
//! `X-MLflow-Signature: v1,<base64 of HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>`,
//! with `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (Unix seconds). Refused with 401: a
//! missing or wrong signature, a timestamp more than [`TOLERANCE`] from now (either way), a
//! delivery id seen before (ids are remembered for as long as their timestamp is acceptable, at
//! most [`REMEMBERED`] of them; when that many are still fresh, new deliveries get 503 and
//! MLflow retries them). The signature is checked before anything in the body is read; then a
//! malformed body is 400. Polling stays the fallback: a lost delivery costs one poll interval.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::scoring::{read_body, ScoringState};
use crate::metrics;
use crate::runtime::ScoringError;

pub const SIGNATURE_HEADER: &str = "x-mlflow-signature";
pub const DELIVERY_ID_HEADER: &str = "x-mlflow-delivery-id";
pub const TIMESTAMP_HEADER: &str = "x-mlflow-timestamp";

/// How far a delivery's timestamp may be from this clock, in the past or the future.
pub const TOLERANCE: Duration = Duration::from_secs(300);
/// Most delivery ids remembered at once (each at most [`MAX_ID_LEN`] bytes: a few MiB).
pub const REMEMBERED: usize = 65_536;
/// Longest delivery id accepted (MLflow sends a UUID: 36 characters).
pub const MAX_ID_LEN: usize = 128;
/// Largest delivery body read (MLflow's payloads are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;
/// Most signatures read from one header (Standard Webhooks allows several, space-separated).
const MAX_SIGNATURES: usize = 8;

/// Why a delivery was refused before its body was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {0} header is missing (or not visible ASCII)")]
    Missing(&'static str),
    #[error("the X-MLflow-Delivery-Id header must be 1 to {MAX_ID_LEN} visible ASCII characters")]
    BadId,
    #[error("the X-MLflow-Signature header does not match the body (expected v1,<base64 HMAC-SHA256> made with the webhook's secret)")]
    BadSignature,
    #[error("the X-MLflow-Timestamp header is not a Unix time in seconds")]
    BadTimestamp,
    #[error("the delivery is {0} s old; deliveries older than {TOLERANCE:?} are refused")]
    Stale(u64),
    #[error("the delivery's timestamp is {0} s ahead of this server's clock; more than {TOLERANCE:?} is refused")]
    Future(u64),
    #[error("delivery id already received (a replay)")]
    Replayed,
    #[error("too many recent deliveries to remember; try again shortly")]
    Full,
}

impl Refusal {
    /// The `outcome` label of `regserve_webhook_deliveries_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Missing(_) | Refusal::BadId | Refusal::BadSignature => "bad_signature",
            Refusal::BadTimestamp | Refusal::Stale(_) | Refusal::Future(_) => "stale",
            Refusal::Replayed => "replayed",
            Refusal::Full => "busy",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Full => ApiError::Scoring(ScoringError::unavailable(r.to_string())),
            r => ApiError::Unauthenticated(r.to_string()),
        }
    }
}

/// Checks deliveries against one secret and remembers the ids it accepted.
pub struct Verifier {
    key: ring::hmac::Key,
    seen: Mutex<Seen>,
    /// Most ids remembered ([`REMEMBERED`]).
    capacity: usize,
}

/// Accepted delivery ids, with when each may be forgotten (its timestamp + [`TOLERANCE`]: a
/// replay after that is stale anyway), in arrival order.
#[derive(Default)]
struct Seen {
    order: VecDeque<(u64, Arc<str>)>,
    ids: HashSet<Arc<str>>,
}

impl Seen {
    fn forget_until(&mut self, now: u64) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("secret", &"<redacted>").finish()
    }
}

impl Verifier {
    /// A verifier for `secret` (the bytes MLflow's `secret.encode("utf-8")` gives).
    pub fn new(secret: &[u8]) -> Verifier {
        Verifier {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            seen: Mutex::default(),
            capacity: REMEMBERED,
        }
    }

    /// Read the secret from `path` (`--webhook-secret-file`): the file's text without the
    /// whitespace around it; an empty or unreadable file is an error that names the flag.
    pub fn from_file(path: &std::path::Path) -> Result<Verifier, String> {
        let flag = "--webhook-secret-file / REGSERVE_WEBHOOK_SECRET_FILE";
        let meta = std::fs::metadata(path).map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
        if meta.len() > 64 << 10 {
            return Err(format!(
                "{flag}: {} is {} bytes; a webhook secret is a short string",
                path.display(),
                meta.len()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(format!("{flag}: {} is empty", path.display()));
        }
        Ok(Verifier::new(secret.as_bytes()))
    }

    /// Accept one delivery at `now` (Unix seconds), or say why not. The id is remembered only
    /// once signature and timestamp are good, so nobody without the secret fills the memory.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<(), Refusal> {
        let header = |name: &'static str, shown: &'static str| {
            headers
                .get(name)
                .map(|v| v.to_str().map_err(|_| Refusal::Missing(shown)))
                .unwrap_or(Err(Refusal::Missing(shown)))
        };
        let signature = header(SIGNATURE_HEADER, "X-MLflow-Signature")?;
        let id = header(DELIVERY_ID_HEADER, "X-MLflow-Delivery-Id")?;
        let timestamp = header(TIMESTAMP_HEADER, "X-MLflow-Timestamp")?;
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Refusal::BadId);
        }
        self.check_signature(signature, id, timestamp, body)?;
        let ts: u64 = timestamp.trim().parse().map_err(|_| Refusal::BadTimestamp)?;
        let tolerance = TOLERANCE.as_secs();
        if now > ts && now - ts > tolerance {
            return Err(Refusal::Stale(now - ts));
        }
        if ts > now && ts - now > tolerance {
            return Err(Refusal::Future(ts - now));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.forget_until(now);
        if seen.ids.contains(id) {
            return Err(Refusal::Replayed);
        }
        if seen.ids.len() >= self.capacity {
            // Arrival order is not quite expiry order: sweep everything once before refusing.
            seen.order.retain(|(at, _)| *at > now);
            seen.ids = seen.order.iter().map(|(_, id)| id.clone()).collect();
            if seen.ids.len() >= self.capacity {
                return Err(Refusal::Full);
            }
        }
        let id: Arc<str> = Arc::from(id);
        seen.ids.insert(id.clone());
        seen.order.push_back((ts + tolerance, id));
        Ok(())
    }

    /// Any `v1,<base64>` entry of the header equal, in constant time, to the HMAC of
    /// `id.timestamp.body`.
    fn check_signature(&self, header: &str, id: &str, timestamp: &str, body: &[u8]) -> Result<(), Refusal> {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut good = subtle::Choice::from(0);
        for entry in header.split_ascii_whitespace().take(MAX_SIGNATURES) {
            let Some(("v1", b64)) = entry.split_once(',') else { continue };
            let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64) else { continue };
            good |= tag.as_ref().ct_eq(&given);
        }
        if bool::from(good) {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }
}

/// The route; it answers 404 unless `serve` has a webhook secret.
pub fn routes(state: ScoringState) -> Router {
    Router::new().route("/hooks/mlflow", post(receive)).with_state(state)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn count(outcome: &str) {
    metrics::metrics().webhook_deliveries.get_or_create(&metrics::OutcomeLabels { outcome: outcome.to_string() }).inc();
}

/// Verify, then wake the watchers of the model the event names (`data.name`). Any event naming
/// a served model counts (versions, tags, aliases, the model itself: all may move a
/// `models:/` URI); others are acknowledged and change nothing. Answers at once; the load, if
/// any, happens in the watcher.
async fn receive(State(st): State<ScoringState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let Some(verifier) = st.webhooks.as_deref() else {
        return Err(ApiError::NotFound(
            "webhooks are not enabled on this server (start `regserve serve` with --webhook-secret-file)".into(),
        ));
    };
    let body = read_body(&headers, body, MAX_BODY).await?;
    if let Err(refusal) = verifier.verify(&headers, &body, now_secs()) {
        count(refusal.outcome());
        tracing::warn!(reason = %refusal, "refused a webhook delivery");
        return Err(refusal.into());
    }
    let event = match parse_event(&body) {
        Ok(e) => e,
        Err(why) => {
            count("malformed");
            return Err(ScoringError::bad_request(why).into());
        }
    };
    let woken: Vec<String> = st.manager.refresh(&event.name).iter().map(|u| u.to_string()).collect();
    count("accepted");
    tracing::info!(entity = %event.entity, action = %event.action, model = %event.name, woken = ?woken, "webhook delivery accepted");
    Ok(Json(json!({"event": format!("{}.{}", event.entity, event.action), "refreshed": woken})).into_response())
}

/// What a delivery says: `{"entity", "action", "timestamp", "data": {"name", ...}}`.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    entity: String,
    action: String,
    name: String,
}

fn parse_event(body: &[u8]) -> Result<Event, String> {
    #[derive(serde::Deserialize)]
    struct Data {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Wire {
        entity: String,
        action: String,
        data: Data,
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        format!("the delivery is not an MLflow webhook payload ({{\"entity\", \"action\", \"data\": {{\"name\", ...}}}}): {e}")
    })?;
    Ok(Event { entity: wire.entity, action: wire.action, name: wire.data.name })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &str = "s3cret";
    const BODY: &str = r#"{"entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00", "data": {"name": "iris", "alias": "champion", "version": "2"}}"#;

    /// Signed as `mlflow/webhooks/delivery.py` signs; the expected value for these inputs was
    /// computed with Python's `hmac` and `base64` (see the test below it).
    fn signed(id: &str, ts: u64, body: &str, secret: &str) -> HeaderMap {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, format!("{id}.{ts}.{body}").as_bytes());
        let sig = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        h.insert(DELIVERY_ID_HEADER, HeaderValue::from_str(id).unwrap());
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(&ts.to_string()).unwrap());
        h
    }

    #[test]
    fn the_signature_is_mlflows() {
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"s3cret",
        //   b"d-1.1700000000.{}", hashlib.sha256).digest()).decode())'
        let h = signed("d-1", 1_700_000_000, "{}", SECRET);
        assert_eq!(h[SIGNATURE_HEADER], "v1,ffAlUwnIkZyROfdeDakYdx/QELuJ1gjEmzbfJrcVam0=");
        let v = Verifier::new(SECRET.as_bytes());
        assert_eq!(v.verify(&h, b"{}", 1_700_000_000), Ok(()));
    }

    #[test]
    fn bad_signatures_and_missing_headers_are_refused() {
        let v = Verifier::new(SECRET.as_bytes());
        let now = 1_700_000_000;
        let h = signed("a", now, BODY, "other secret");
        assert_eq!(v.verify(&h, BODY.as_bytes(), now), Err(Refusal::BadSignature));
        let h = signed("b", now, BODY, SECRET);
        assert_eq!(v.verify(&h, b"{\"tampered\": 1}", now), Err(Refusal::BadSignature));
        // The id and timestamp are signed too.
        let mut moved = signed("c", now, BODY, SECRET);
        moved.insert(DELIVERY_ID_HEADER, HeaderValue::from_static("d"));
        assert_eq!(v.verify(&moved, BODY.as_bytes(), now), Err(Refusal::BadSignature));
        let mut later = signed("e", now, BODY, SECRET);
        later.insert(TIMESTAMP_HEADER, HeaderValue::from_static("1700000001"));
        assert_eq!(v.verify(&later, BODY.as_bytes(), now), Err(Refusal::BadSignature));
        for (name, shown) in [
            (SIGNATURE_HEADER, "X-MLflow-Signature"),
            (DELIVERY_ID_HEADER, "X-MLflow-Delivery-Id"),
            (TIMESTAMP_HEADER, "X-MLflow-Timestamp"),
        ] {
            let mut h = signed("f", now, BODY, SECRET);
            h.remove(name);
            assert_eq!(v.verify(&h, BODY.as_bytes(), now), Err(Refusal::Missing(shown)));
        }
        let mut h = signed("g", now, BODY, SECRET);
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static("v1,not base64!"));
        assert_eq!(v.verify(&h, BODY.as_bytes(), now), Err(Refusal::BadSignature));
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(v.verify(&signed(&long, now, BODY, SECRET), BODY.as_bytes(), now), Err(Refusal::BadId));
        // Another version's entry is skipped; a good v1 among several is enough.
        let good = signed("h", now, BODY, SECRET);
        let mut several = good.clone();
        let both = format!("v2,AAAA {}", good[SIGNATURE_HEADER].to_str().unwrap());
        several.insert(SIGNATURE_HEADER, HeaderValue::from_str(&both).unwrap());
        assert_eq!(v.verify(&several, BODY.as_bytes(), now), Ok(()));
    }

    #[test]
    fn stale_future_and_replayed_deliveries_are_refused() {
        let v = Verifier::new(SECRET.as_bytes());
        let now = 1_700_000_000;
        let old = now - TOLERANCE.as_secs() - 1;
        assert_eq!(v.verify(&signed("1", old, BODY, SECRET), BODY.as_bytes(), now), Err(Refusal::Stale(301)));
        let ahead = now + TOLERANCE.as_secs() + 1;
        assert_eq!(v.verify(&signed("2", ahead, BODY, SECRET), BODY.as_bytes(), now), Err(Refusal::Future(301)));
        let edge = now - TOLERANCE.as_secs();
        assert_eq!(v.verify(&signed("3", edge, BODY, SECRET), BODY.as_bytes(), now), Ok(()));
        let h = signed("4", now, BODY, SECRET);
        assert_eq!(v.verify(&h, BODY.as_bytes(), now), Ok(()));
        assert_eq!(v.verify(&h, BODY.as_bytes(), now + 10), Err(Refusal::Replayed));
        // Once the id is forgotten, its timestamp is stale: a replay is refused either way.
        assert_eq!(v.verify(&h, BODY.as_bytes(), now + TOLERANCE.as_secs() + 1), Err(Refusal::Stale(301)));
        let mut bad = signed("5", now, BODY, SECRET);
        bad.insert(TIMESTAMP_HEADER, HeaderValue::from_static("soon"));
        let sig = signed_with_ts_text("5", "soon", BODY);
        bad.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        assert_eq!(v.verify(&bad, BODY.as_bytes(), now), Err(Refusal::BadTimestamp));
    }

    fn signed_with_ts_text(id: &str, ts: &str, body: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, format!("{id}.{ts}.{body}").as_bytes());
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
    }

    #[test]
    fn remembered_ids_are_bounded_and_forgotten_with_their_window() {
        let v = Verifier { capacity: 64, ..Verifier::new(SECRET.as_bytes()) };
        let now = 1_700_000_000;
        for i in 0..64 {
            let id = format!("id-{i}");
            assert_eq!(v.verify(&signed(&id, now, "{}", SECRET), b"{}", now), Ok(()), "{id}");
        }
        // Full of fresh ids: refused (503), nothing forgotten early.
        assert_eq!(v.verify(&signed("one-more", now, "{}", SECRET), b"{}", now), Err(Refusal::Full));
        assert_eq!(v.verify(&signed("id-0", now, "{}", SECRET), b"{}", now + 1), Err(Refusal::Replayed));
        // Past their window, they make room.
        let later = now + TOLERANCE.as_secs() + 1;
        assert_eq!(v.verify(&signed("one-more", later, "{}", SECRET), b"{}", later), Ok(()));
        assert_eq!(v.seen.lock().unwrap().ids.len(), 1);
    }

    #[test]
    fn events_name_their_model_and_malformed_bodies_say_what_is_expected() {
        let e = parse_event(BODY.as_bytes()).unwrap();
        assert_eq!(e, Event { entity: "model_version_alias".into(), action: "created".into(), name: "iris".into() });
        for bad in [
            "",
            "[]",
            "{\"entity\": \"x\", \"action\": \"y\"}",
            "{\"entity\": 1, \"action\": \"y\", \"data\": {\"name\": \"m\"}}",
        ] {
            let why = parse_event(bad.as_bytes()).unwrap_err();
            assert!(why.contains("\"data\""), "{why}");
        }
    }

    #[test]
    fn the_secret_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  \n").unwrap();
        assert!(Verifier::from_file(&path).unwrap_err().contains("is empty"));
        std::fs::write(&path, "s3cret\n").unwrap();
        let v = Verifier::from_file(&path).unwrap();
        assert_eq!(v.verify(&signed("x", 5_000, "{}", SECRET), b"{}", 5_000), Ok(()));
        assert!(!format!("{v:?}").contains("s3cret"));
        assert!(Verifier::from_file(&dir.path().join("absent")).unwrap_err().contains("--webhook-secret-file"));
    }
}
