//! Prometheus metrics, one process-wide registry, all names prefixed `regserve_`; durations in
//! seconds. Exposed as OpenMetrics text at `GET /metrics`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `model` label of requests for a model this server does not serve: label values come
/// only from the served models, never from what a client puts in a path.
pub const UNKNOWN_MODEL: &str = "__unknown__";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    /// `invocations` or `v2`.
    pub protocol: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// One served URI (`-m`) and the registered model it names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UriLabels {
    pub uri: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub model: String,
    /// `success` or `failure`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Webhook attempts: `delivered`, `retried`, `failed` (given up), `dropped` (hook gone).
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ModelLabels, Histogram>,
    pub batch_size: Family<ModelLabels, Histogram>,
    pub queue_depth: Family<ModelLabels, Gauge>,
    pub loads: Family<LoadLabels, Counter>,
    pub swaps: Family<ModelLabels, Counter>,
    pub version_in_service: Family<ModelLabels, Gauge>,
    /// The version in service per served URI: replicas that disagree on one URI are skewed.
    pub model_version: Family<UriLabels, Gauge>,
    /// Webhook deliveries received by `serve` (`POST /hooks/mlflow`), by outcome: `accepted`,
    /// `bad_signature`, `stale`, `replayed`, `malformed`, `busy`.
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub artifact_bytes: Counter,
    /// Webhook delivery attempts of `regserve server` (the sending side), by outcome.
    pub webhook_attempts: Family<AttemptLabels, Counter>,
    /// (requests running + waiting for a session) / sessions, a 10 s moving average
    /// ([`crate::saturation`]); the HPA's metric.
    pub saturation: Family<ModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// From entering a model's queue to the start of the session run.
    pub queue_wait: Family<ModelLabels, Histogram>,
    /// Requests run on the async worker that read them, skipping the session threads.
    pub inline_runs: Family<ModelLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs .. ~3.3 s
    prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 17)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("regserve");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Scoring requests by model, version, protocol and HTTP status", requests.clone());
        let request_duration =
            Family::<ModelLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "request_duration",
            "Scoring request latency, from body read to answer",
            prometheus_client::registry::Unit::Seconds,
            request_duration.clone(),
        );
        let batch_size = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
        });
        registry.register("batch_size", "Rows per session run (dynamic batching merges requests)", batch_size.clone());
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        registry.register("queue_depth", "Requests waiting for a session, per served model", queue_depth.clone());
        let loads = Family::<LoadLabels, Counter>::default();
        registry.register("model_loads", "Model version loads by outcome", loads.clone());
        let swaps = Family::<ModelLabels, Counter>::default();
        registry.register("model_swaps", "Hot swaps to another version", swaps.clone());
        let version_in_service = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_version_in_service",
            "Version number in service per served model",
            version_in_service.clone(),
        );
        let model_version = Family::<UriLabels, Gauge>::default();
        registry.register("model_version", "Version number in service per served URI", model_version.clone());
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Registry webhook deliveries received (POST /hooks/mlflow) by outcome",
            webhook_deliveries.clone(),
        );
        let artifact_bytes = Counter::default();
        registry.register(
            "artifact_downloaded_bytes",
            "Artifact bytes downloaded from remote stores",
            artifact_bytes.clone(),
        );
        let webhook_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "webhook_delivery_attempts",
            "Webhook delivery attempts sent by `regserve server`, by outcome",
            webhook_attempts.clone(),
        );
        let saturation = Family::<ModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "saturation",
            "(requests running + requests waiting for a session) / sessions, per served model, averaged over about 10 s: 1 = every session busy, above 1 = queueing",
            saturation.clone(),
        );
        let queue_wait = Family::<ModelLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "queue_wait",
            "Time a scoring request waited for a session",
            prometheus_client::registry::Unit::Seconds,
            queue_wait.clone(),
        );
        let inline_runs = Family::<ModelLabels, Counter>::default();
        registry.register(
            "inline_runs",
            "Scoring requests run on the async worker that read them (fast models, nothing queued)",
            inline_runs.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            batch_size,
            queue_depth,
            loads,
            swaps,
            version_in_service,
            model_version,
            webhook_deliveries,
            artifact_bytes,
            webhook_attempts,
            saturation,
            queue_wait,
            inline_runs,
        }
    }

    /// OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn model(name: &str) -> ModelLabels {
        ModelLabels { model: name.to_string() }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_prefix_and_durations_are_seconds() {
        let m = metrics();
        m.requests
            .get_or_create(&RequestLabels {
                model: "m".into(),
                version: "1".into(),
                protocol: "v2".into(),
                status: 200,
            })
            .inc();
        m.request_duration.get_or_create(&Metrics::model("m")).observe(0.001);
        let text = m.encode();
        assert!(
            text.contains("regserve_requests_total{model=\"m\",version=\"1\",protocol=\"v2\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("regserve_request_duration_seconds_bucket"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(line.starts_with("regserve_"), "{line}");
        }
    }
}
