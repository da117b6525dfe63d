//! Metric values and histories, as MLflow's SQL store keeps and answers them: NaN stored as
//! `0` with `is_nan` and answered as `"NaN"`, ±Infinity stored as ±1.7976931348623157e308; the
//! checks a logged metric passes; the paged history of one metric (keyset pages in MLflow's order
//! `timestamp, step, value`); and the two bulk histories the MLflow UI reads — every value of
//! several runs, and an even sample per run (MLflow's `NTILE` buckets, first and last point kept).
//!
//! Work per request is bounded by its parameters: a history page reads at most `max_results + 1`
//! rows through the primary key; the bulk history at most `max_results` rows in all; the sample
//! walks each run's values once in index order and keeps at most `max_results` per run.

use crate::db::{self, Row, Tx};
use crate::params;
use serde::Serializer;

use super::{load_run_info, Metric, Paged, Result, TrackingStore};
use crate::registry::RegistryError;

/// The largest `max_results` of one `metrics/get-history` page, and the page size when it is not
/// given: the page size of MLflow's client (`GET_METRIC_HISTORY_MAX_RESULTS`), which follows
/// `next_page_token` until the history ends.
pub const HISTORY_PAGE_MAX: usize = 25_000;
/// At most this many runs per bulk request (MLflow's `MAX_RUN_IDS_PER_REQUEST`).
pub const BULK_MAX_RUNS: usize = 100;
/// At most this many values in one `metrics/get-history-bulk` answer (MLflow's `MAX_HISTORY_RESULTS`).
pub const BULK_MAX_RESULTS: usize = 25_000;
/// At most this many sampled values per run (MLflow's `MAX_RESULTS_PER_RUN`), also the default.
pub const SAMPLE_MAX_RESULTS: usize = 2_500;
/// MLflow's limit on a metric key (`MAX_ENTITY_KEY_LENGTH`).
const MAX_KEY_LEN: usize = 250;

/// How a value is stored: `(value, is_nan)`. NaN becomes `(0, true)`; ±Infinity becomes
/// ±`f64::MAX` (SQL cannot hold either; MLflow's `sanitize_metric_value`).
pub fn stored_value(v: f64) -> (f64, bool) {
    if v.is_nan() {
        (0.0, true)
    } else if v.is_infinite() {
        (if v > 0.0 { f64::MAX } else { f64::MIN }, false)
    } else {
        (v, false)
    }
}

/// A metric value in JSON: a number, or `"NaN"` / `"Infinity"` / `"-Infinity"` as protobuf's JSON
/// mapping (and so MLflow's server and client) writes the values JSON numbers cannot hold.
pub fn serialize_value<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}

/// A metric read from `key, value, timestamp, step, is_nan` (columns 0..=4).
pub(super) fn from_row(r: &Row<'_>) -> Result<Metric, db::Error> {
    let is_nan: bool = r.get(4)?;
    Ok(Metric {
        key: r.get(0)?,
        value: if is_nan { f64::NAN } else { r.get(1)? },
        timestamp: r.get(2)?,
        step: r.get(3)?,
        model_id: None,
        run_id: None,
        dataset_name: None,
        dataset_digest: None,
    })
}

/// The checks MLflow's store makes on each logged metric (`_validate_metric`), with its
/// messages; `path` is "" for `log-metric` and `metrics[i]` for `log-batch`.
pub fn validate(m: &Metric, path: &str) -> Result<()> {
    let at = |field: &str| if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
    let invalid = |field: &str, value: &str, why: String| {
        RegistryError::InvalidParameter(format!("Invalid value {value} for parameter '{}' supplied: {why}", at(field)))
    };
    let shown = || serde_json::Value::from(m.key.as_str()).to_string();
    if m.key.is_empty() {
        return Err(RegistryError::InvalidParameter(format!(
            "Missing value for required parameter '{}'. See the API docs for more information about request parameters.",
            at("key")
        )));
    }
    if !m.key.chars().all(|c| c.is_alphanumeric() || "_/.- :".contains(c)) {
        return Err(invalid(
            "name",
            &shown(),
            "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/).".into(),
        ));
    }
    let norm = normpath(&m.key);
    if norm != m.key || norm == "." || norm.starts_with("..") || norm.starts_with('/') {
        return Err(invalid(
            "name",
            &shown(),
            format!("Names may be treated as files in certain cases, and must not resolve to other names when treated as such. This name would resolve to '{norm}'"),
        ));
    }
    if m.timestamp < 0 {
        return Err(invalid(
            "timestamp",
            &m.timestamp.to_string(),
            format!("metric '{}' (value={:?}). Timestamp must be a nonnegative long (64-bit integer) ", m.key, m.value),
        ));
    }
    if m.key.chars().count() > MAX_KEY_LEN {
        return Err(RegistryError::InvalidParameter(format!(
            "'Metric name' exceeds the maximum length of {MAX_KEY_LEN} characters"
        )));
    }
    Ok(())
}

/// Python's `posixpath.normpath`, which MLflow's name check compares a metric name with.
fn normpath(path: &str) -> String {
    let slashes = match path {
        p if p.starts_with("//") && !p.starts_with("///") => 2,
        p if p.starts_with('/') => 1,
        _ => 0,
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if slashes == 0 && parts.last().is_none_or(|p| *p == "..") => parts.push(".."),
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let out = format!("{}{}", "/".repeat(slashes), parts.join("/"));
    if out.is_empty() {
        ".".into()
    } else {
        out
    }
}

/// MLflow's limits on one `log-batch` (`_validate_batch_log_limits`), with its messages.
pub fn validate_batch_limits(metrics: usize, params: usize, tags: usize) -> Result<()> {
    for (what, limit, n) in [
        ("metrics", 1000, metrics),
        ("params", 100, params),
        ("tags", 100, tags),
        ("metrics, params, and tags", 1000, metrics + params + tags),
    ] {
        if n > limit {
            return Err(RegistryError::InvalidParameter(format!(
                "A batch logging request can contain at most {limit} {what}. Got {n} {what}. Please split up {what} across multiple requests and try again."
            )));
        }
    }
    Ok(())
}

/// Store one value of a run's metric (a duplicate of a stored value changes nothing but its
/// logged-model link). A `model_id` must name a logged model.
pub(super) fn insert(tx: &Tx<'_>, run_id: &str, m: &Metric) -> Result<()> {
    if let Some(model_id) = m.model_id.as_deref().filter(|id| !id.is_empty()) {
        let found: Option<i64> =
            tx.query_opt("SELECT 1 FROM logged_models WHERE model_id = ?1", params![model_id], |r| r.get(0))?;
        if found.is_none() {
            return Err(RegistryError::InvalidParameter(format!(
                "Metric '{}' names the logged model '{model_id}', which does not exist.",
                m.key
            )));
        }
    }
    let (value, is_nan) = stored_value(m.value);
    tx.execute(
        "INSERT INTO metrics \
         (run_uuid, key, value, timestamp, step, is_nan, model_id, dataset_name, dataset_digest) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (run_uuid, key, timestamp, step, value, is_nan) DO UPDATE SET model_id = excluded.model_id, \
         dataset_name = excluded.dataset_name, dataset_digest = excluded.dataset_digest",
        params![
            run_id,
            m.key,
            value,
            m.timestamp,
            m.step,
            is_nan,
            m.model_id.as_deref().unwrap_or(""),
            m.dataset_name.as_deref().filter(|s| !s.is_empty()),
            m.dataset_digest.as_deref().filter(|s| !s.is_empty()),
        ],
    )?;
    Ok(())
}

/// Where a history page ends: the last row's `(timestamp, step, stored value, is_nan)`, the
/// primary key's order after `(run, key)`. The token is opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HistoryPos {
    timestamp: i64,
    step: i64,
    value: f64,
    is_nan: bool,
}

impl HistoryPos {
    fn after(m: &Metric) -> HistoryPos {
        let (value, is_nan) = stored_value(m.value);
        HistoryPos { timestamp: m.timestamp, step: m.step, value, is_nan }
    }

    fn encode(self) -> String {
        format!("h1.{}.{}.{:016x}.{}", self.timestamp, self.step, self.value.to_bits(), u8::from(self.is_nan))
    }

    fn decode(token: &str) -> Result<HistoryPos> {
        let bad = || {
            RegistryError::InvalidParameter(format!(
                "Invalid page token '{}' for metrics/get-history: pass the next_page_token of the previous page, or none to start over.",
                token.chars().take(64).collect::<String>()
            ))
        };
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [version, timestamp, step, bits, nan] = parts[..] else { return Err(bad()) };
        if version != "h1" {
            return Err(bad());
        }
        Ok(HistoryPos {
            timestamp: timestamp.parse().map_err(|_| bad())?,
            step: step.parse().map_err(|_| bad())?,
            value: f64::from_bits(u64::from_str_radix(bits, 16).map_err(|_| bad())?),
            is_nan: match nan {
                "0" => false,
                "1" => true,
                _ => return Err(bad()),
            },
        })
    }
}

/// The first row of each of `k` NTILE buckets over `n` ordered rows, the last of them replaced by
/// the last row (MLflow's sampling: every row when `n <= k`; only the last row when `k == 1`).
fn sample_indices(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    // NTILE: the first `n % k` buckets hold one row more than the others.
    let (size, extra) = (n / k, n % k);
    let mut picks: Vec<usize> = (0..k).map(|b| b * size + b.min(extra)).collect();
    if let Some(last) = picks.last_mut() {
        *last = n - 1;
    }
    picks
}

impl TrackingStore {
    /// One page of a metric's history in MLflow's order (`timestamp, step, value`), at most
    /// `max_results` values, and the token of the next page when there is more.
    pub fn metric_history_page(
        &self,
        run_id: &str,
        key: &str,
        max_results: usize,
        page_token: Option<&str>,
    ) -> Result<Paged<Metric>> {
        let after = page_token.map(str::trim).filter(|t| !t.is_empty()).map(HistoryPos::decode).transpose()?;
        let limit = max_results.min(HISTORY_PAGE_MAX) as i64 + 1;
        let mut items = self.db.read_tx(|tx| {
            load_run_info(tx, run_id)?;
            const COLUMNS: &str =
                "SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ?1 AND key = ?2";
            const ORDER: &str = "ORDER BY timestamp, step, value, is_nan LIMIT ?3";
            let rows = match after {
                None => tx.query_map(&format!("{COLUMNS} {ORDER}"), params![run_id, key, limit], from_row)?,
                Some(p) => tx.query_map(
                    &format!("{COLUMNS} AND (timestamp, step, value, is_nan) > (?4, ?5, ?6, ?7) {ORDER}"),
                    params![run_id, key, limit, p.timestamp, p.step, p.value, p.is_nan],
                    from_row,
                )?,
            };
            Ok(rows)
        })?;
        let more = items.len() as i64 == limit;
        items.truncate(limit as usize - 1);
        let next_page_token = if more { items.last().map(|m| HistoryPos::after(m).encode()) } else { None };
        Ok(Paged { items, next_page_token })
    }

    /// Every value of `key` in the given runs (unknown runs add nothing), ordered by run id, then
    /// `timestamp, step, value`, at most `max_results` in all; each carries its `run_id`.
    pub fn metric_history_bulk(&self, run_ids: &[String], key: &str, max_results: usize) -> Result<Vec<Metric>> {
        let mut runs: Vec<&str> = run_ids.iter().map(String::as_str).collect();
        runs.sort_unstable();
        runs.dedup();
        let max_results = max_results.min(BULK_MAX_RESULTS);
        self.db.read_tx(|tx| {
            let mut out = Vec::new();
            for run in &runs {
                let left = max_results - out.len();
                if left == 0 {
                    break;
                }
                let values = tx.query_map(
                    "SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ?1 AND key = ?2 \
                     ORDER BY timestamp, step, value, is_nan LIMIT ?3",
                    params![run, key, left as i64],
                    from_row,
                )?;
                out.extend(values.into_iter().map(|m| Metric { run_id: Some(run.to_string()), ..m }));
            }
            Ok(out)
        })
    }

    /// Up to `max_results` values of `key` per run, evenly sampled over the values in step order
    /// (within `steps`, inclusive, when given), the first and last kept, as MLflow's
    /// `get_metric_history_bulk_interval` samples them; runs in the order given, unknown runs
    /// add nothing. Each value carries its `run_id`.
    pub fn metric_history_sampled(
        &self,
        run_ids: &[String],
        key: &str,
        max_results: usize,
        steps: Option<(i64, i64)>,
    ) -> Result<Vec<Metric>> {
        let k = max_results.clamp(1, SAMPLE_MAX_RESULTS);
        let (lo, hi) = steps.unwrap_or((i64::MIN, i64::MAX));
        self.db.read_tx(|tx| {
            let mut out = Vec::new();
            for run in run_ids {
                let n: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM metrics WHERE run_uuid = ?1 AND key = ?2 AND step BETWEEN ?3 AND ?4",
                    params![run, key, lo, hi],
                    |r| r.get(0),
                )?;
                let picks = sample_indices(n as usize, k);
                if picks.is_empty() {
                    continue;
                }
                // Number the rows in the database and return only the picked ones: at most `k`
                // rows cross to this process, however long the history.
                let picked = picks.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                let sql = format!(
                    "SELECT key, value, timestamp, step, is_nan FROM ( \
                       SELECT key, value, timestamp, step, is_nan, \
                              ROW_NUMBER() OVER (ORDER BY step, timestamp, value, is_nan) - 1 AS i \
                       FROM metrics WHERE run_uuid = ?1 AND key = ?2 AND step BETWEEN ?3 AND ?4) numbered \
                     WHERE i IN ({picked}) ORDER BY i"
                );
                let values = tx.query_map(&sql, params![run, key, lo, hi], from_row)?;
                out.extend(values.into_iter().map(|m| Metric { run_id: Some(run.clone()), ..m }));
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::Store;
    use crate::tracking::NewRun;

    fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> Metric {
        Metric {
            key: key.into(),
            value,
            timestamp,
            step,
            model_id: None,
            run_id: None,
            dataset_name: None,
            dataset_digest: None,
        }
    }

    fn store_with_run() -> (TrackingStore, String) {
        let t = TrackingStore::new(Arc::new(Store::open_in_memory().unwrap()));
        let run = t.create_run(&NewRun { experiment_id: "0".into(), ..Default::default() }).unwrap();
        (t, run.info.run_id)
    }

    #[test]
    fn a_version_2_database_keeps_its_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql")).unwrap();
            conn.execute_batch(include_str!("../../migrations/sqlite/0002_tracking.sql")).unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 2; \
                 INSERT INTO runs (run_uuid, experiment_id, start_time, artifact_uri) VALUES ('r1', 0, 1, 'x'); \
                 INSERT INTO metrics (run_uuid, key, value, timestamp, step) VALUES ('r1', 'acc', 0.5, 10, 0), \
                 ('r1', 'acc', 0.75, 11, 1);",
            )
            .unwrap();
        }
        let t = TrackingStore::new(Arc::new(Store::open(&path).unwrap()));
        let values = |t: &TrackingStore| {
            let page = t.metric_history_page("r1", "acc", 10, None).unwrap();
            page.items.iter().map(|m| shown(m.value)).collect::<Vec<_>>()
        };
        assert_eq!(values(&t), ["0.5", "0.75"]);
        // A NaN beside a real 0 at the same timestamp and step: two values, as in MLflow.
        t.log_batch("r1", &[metric("acc", 0.0, 12, 2), metric("acc", f64::NAN, 12, 2)], &[], &[]).unwrap();
        assert_eq!(values(&t), ["0.5", "0.75", "0", "NaN"]);
    }

    fn shown(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else {
            v.to_string()
        }
    }

    #[test]
    fn normpath_as_python() {
        for (p, want) in [
            ("a/b", "a/b"),
            ("a//b/", "a/b"),
            ("./a", "a"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("//a", "//a"),
            ("///a", "/a"),
            ("..", ".."),
            ("a/..", "."),
        ] {
            assert_eq!(normpath(p), want, "{p}");
        }
    }

    #[test]
    fn ntile_sampling_keeps_first_and_last() {
        assert_eq!(sample_indices(3, 5), vec![0, 1, 2]);
        assert_eq!(sample_indices(0, 5), Vec::<usize>::new());
        assert_eq!(sample_indices(7, 1), vec![6]);
        // NTILE(3) over 7 rows: buckets of 3, 2, 2 rows start at 0, 3, 5; the last becomes 6.
        assert_eq!(sample_indices(7, 3), vec![0, 3, 6]);
        assert_eq!(sample_indices(10, 4), vec![0, 3, 6, 9]);
    }

    #[test]
    fn nan_and_infinity_are_kept_and_answered_as_mlflow_does() {
        let (t, run) = store_with_run();
        let ms = [
            metric("m", f64::INFINITY, 1, 0),
            metric("m", f64::NEG_INFINITY, 2, 1),
            metric("m", f64::NAN, 3, 2),
            metric("m", 0.0, 3, 2),
        ];
        t.log_batch(&run, &ms, &[], &[]).unwrap();
        let page = t.metric_history_page(&run, "m", 10, None).unwrap();
        let values: Vec<f64> = page.items.iter().map(|m| m.value).collect();
        assert_eq!(values[..2], [f64::MAX, f64::MIN]);
        assert_eq!(values[2], 0.0);
        assert!(values[3].is_nan(), "{values:?}");
        let json = serde_json::to_value(&page.items).unwrap();
        assert_eq!(json[0]["value"], serde_json::json!(1.7976931348623157e308));
        assert_eq!(json[3]["value"], "NaN");
        // The run's latest value: the highest step, then timestamp, then value; NaN wins a tie with 0.
        let latest = t.get_run(&run).unwrap().data.metrics;
        assert_eq!(latest.len(), 1);
        assert!(latest[0].value.is_nan());
    }

    #[test]
    fn history_pages_in_mlflow_order_and_the_token_resumes() {
        let (t, run) = store_with_run();
        let ms: Vec<Metric> = (0..7).map(|i| metric("p", i as f64 * 0.5, 100 + i % 3, i)).collect();
        t.log_batch(&run, &ms, &[], &[]).unwrap();
        let mut seen = Vec::new();
        let mut token = None;
        for _ in 0..10 {
            let page = t.metric_history_page(&run, "p", 3, token.as_deref()).unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|m| (m.timestamp, m.step)));
            token = page.next_page_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen, vec![(100, 0), (100, 3), (100, 6), (101, 1), (101, 4), (102, 2), (102, 5)]);
        assert!(t.metric_history_page(&run, "p", 3, Some("offset:3")).is_err());
        assert!(t.metric_history_page(&run, "p", 3, Some("h1.1.2.zz.0")).is_err());
    }

    #[test]
    fn bulk_and_sampled_histories() {
        let (t, a) = store_with_run();
        let (b, c) = {
            let r1 = t.create_run(&NewRun { experiment_id: "0".into(), ..Default::default() }).unwrap();
            let r2 = t.create_run(&NewRun { experiment_id: "0".into(), ..Default::default() }).unwrap();
            (r1.info.run_id, r2.info.run_id)
        };
        for run in [&a, &b] {
            let ms: Vec<Metric> = (0..10).map(|i| metric("x", i as f64, 1000 - i, i)).collect();
            t.log_batch(run, &ms, &[], &[]).unwrap();
        }
        let all = t.metric_history_bulk(&[b.clone(), a.clone(), c.clone(), "nope".into()], "x", 25).unwrap();
        assert_eq!(all.len(), 20);
        let mut sorted = [a.clone(), b.clone()];
        sorted.sort();
        assert!(all[..10].iter().all(|m| m.run_id.as_deref() == Some(sorted[0].as_str())));
        // Within a run: by timestamp, so the highest step first here.
        assert_eq!(all[0].step, 9);
        assert_eq!(t.metric_history_bulk(&[a.clone(), b.clone()], "x", 4).unwrap().len(), 4);
        let s = t.metric_history_sampled(&[a.clone(), "nope".into()], "x", 4, None).unwrap();
        assert_eq!(s.iter().map(|m| m.step).collect::<Vec<_>>(), vec![0, 3, 6, 9]);
        let s = t.metric_history_sampled(std::slice::from_ref(&a), "x", 1, Some((2, 5))).unwrap();
        assert_eq!(s.iter().map(|m| m.step).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn checks_with_mlflow_messages() {
        let ok = metric("loss/train", 1.0, 0, 0);
        assert!(validate(&ok, "").is_ok());
        for (m, needle) in [
            (metric("", 1.0, 0, 0), "'metrics[0].key'"),
            (metric("a", 1.0, -1, 0), "Timestamp must be a nonnegative long"),
            (metric("a/../b", 1.0, 0, 0), "must not resolve to other names"),
            (metric("a;b", 1.0, 0, 0), "Names may only contain"),
            (metric(&"k".repeat(251), 1.0, 0, 0), "maximum length of 250"),
        ] {
            let e = validate(&m, "metrics[0]").unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
