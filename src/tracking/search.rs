//! Searching the tracking store: MLflow's search grammar for runs, logged models and
//! experiments, evaluated in memory on rows the store has loaded ([`SearchFilter`]),
//! `order_by` with each entity's tie-breaks ([`OrderBy`]), and offset pages ([`page`]).
//!
//! The grammar is a subset of MLflow's: `AND`-joined comparisons of `attributes.x`,
//! `metrics.x`, `params.x` and `tags.x` (keys may be backquoted or quoted) with `=`, `!=`,
//! `<`, `<=`, `>`, `>=`, `LIKE`, `ILIKE`, `IN` and `NOT IN` (the registry's [`Comparator`]).
//!
//! It is not the registry's grammar ([`crate::registry::search`]). The differences are visible
//! to clients, so they are kept as they are:
//! - evaluation: here in Rust over loaded rows; the registry compiles filters to SQL;
//! - `LIKE`/`ILIKE`: here `%` and `_` are always wildcards (no `\%`, `\_` escapes) and
//!   `ILIKE` folds Unicode case; the registry honours the escapes and folds ASCII only
//!   (SQLite's `lower()`);
//! - page tokens: here a bare `offset:N` (a run inserted between two pages can shift one
//!   row); the registry's tokens are signed keyset tokens bound to the filter and order;
//! - entities: here `metrics.` and `params.` exist, and attribute names are the tracking
//!   entities' (`run_name`, `start_time`, ...); the registry has `name`, `tags.`, `run_id`, ...
//!
//! They share the comparator type only. Merging the rest (one lexer and parser with two
//! back-ends, one LIKE, one token codec) would change answers at those edges, so it is left for
//! a step that changes behaviour on purpose.

use std::cmp::Ordering;

use super::{Experiment, LoggedModel, Metric, Paged, Result, Run};
use crate::registry::search::Comparator;
use crate::registry::{RegistryError, Tag};

pub(super) fn page<T>(items: Vec<T>, max_results: usize, page_token: Option<&str>) -> Result<Paged<T>> {
    let offset = match page_token.map(str::trim).filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .strip_prefix("offset:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| RegistryError::InvalidParameter(format!("Invalid page token '{t}'")))?,
    };
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(max_results).collect();
    let end = offset.saturating_add(items.len());
    let next_page_token = (end < total).then(|| format!("offset:{end}"));
    Ok(Paged { items, next_page_token })
}

/// Which entity a filter or order applies to; decides the valid attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Experiment,
    Run,
    LoggedModel,
}

impl Kind {
    fn attributes(self) -> &'static [&'static str] {
        match self {
            Kind::Experiment => &["name", "experiment_id", "creation_time", "last_update_time"],
            Kind::Run => &[
                "run_id",
                "run_name",
                "status",
                "user_id",
                "start_time",
                "end_time",
                "artifact_uri",
                "lifecycle_stage",
                "experiment_id",
            ],
            Kind::LoggedModel => &[
                "model_id",
                "name",
                "status",
                "source_run_id",
                "model_type",
                "creation_timestamp",
                "last_updated_timestamp",
                "experiment_id",
            ],
        }
    }

    fn entities(self) -> &'static [Entity] {
        match self {
            Kind::Experiment => &[Entity::Attribute, Entity::Tag],
            Kind::Run | Kind::LoggedModel => &[Entity::Attribute, Entity::Metric, Entity::Param, Entity::Tag],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entity {
    Attribute,
    Metric,
    Param,
    Tag,
}

/// A field of an entity a filter refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    entity: Entity,
    key: String,
}

/// One `order_by` key's comparison of two rows' values, as MLflow's SQL stores order them: a NaN
/// metric sorts after every number and before a missing value, and missing values sort last,
/// in either direction (MLflow orders by `is_nan`, then presence, then the value).
fn compare_values(a: Option<Val>, b: Option<Val>, ascending: bool) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => x.is_nan().cmp(&y.is_nan()),
        (Some(x), Some(y)) => {
            let o = x.cmp(&y).unwrap_or(Ordering::Equal);
            if ascending {
                o
            } else {
                o.reverse()
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// A field's value, for comparisons.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Str(String),
    Num(f64),
}

impl Val {
    fn cmp(&self, other: &Val) -> Option<Ordering> {
        match (self, other) {
            (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
            (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
            (Val::Num(a), Val::Str(b)) => b.parse::<f64>().ok().and_then(|b| a.partial_cmp(&b)),
            (Val::Str(a), Val::Num(b)) => a.parse::<f64>().ok().and_then(|a| a.partial_cmp(b)),
        }
    }

    fn is_nan(&self) -> bool {
        matches!(self, Val::Num(n) if n.is_nan())
    }

    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Clause {
    field: Field,
    op: Comparator,
    values: Vec<Val>,
}

/// A parsed search filter: comparisons joined by `AND`.
#[derive(Debug, Clone, Default)]
pub(super) struct SearchFilter {
    clauses: Vec<Clause>,
}

pub(super) fn filter_error(filter: &str, why: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidParameter(format!("Invalid filter '{filter}': {why}"))
}

impl SearchFilter {
    pub(super) fn parse(filter: &str, kind: Kind) -> Result<SearchFilter> {
        let mut clauses = Vec::new();
        let mut lex = Lexer::new(filter);
        if lex.at_end() {
            return Ok(SearchFilter::default());
        }
        loop {
            let field = lex.field(filter, kind)?;
            let op = lex.op(filter)?;
            let values = if matches!(op, Comparator::In | Comparator::NotIn) {
                lex.list(filter)?
            } else {
                vec![lex.value(filter)?]
            };
            clauses.push(Clause { field, op, values });
            if lex.at_end() {
                break;
            }
            let word = lex.word();
            if !word.eq_ignore_ascii_case("and") {
                return Err(filter_error(
                    filter,
                    format!("expected AND, found '{word}' (only AND-joined comparisons are supported)"),
                ));
            }
        }
        Ok(SearchFilter { clauses })
    }

    pub(super) fn matches(&self, lookup: &dyn Fn(&Field) -> Option<Val>) -> bool {
        self.clauses.iter().all(|c| {
            // Entities without the field never match (MLflow's behaviour, `!=` included).
            lookup(&c.field).is_some_and(|v| c.holds(&v))
        })
    }
}

impl Clause {
    /// Whether the field's value `v` satisfies this comparison.
    fn holds(&self, v: &Val) -> bool {
        let first = &self.values[0];
        match self.op {
            Comparator::Eq => v.cmp(first) == Some(Ordering::Equal),
            Comparator::Ne => v.cmp(first) != Some(Ordering::Equal),
            Comparator::Lt => v.cmp(first) == Some(Ordering::Less),
            Comparator::Le => matches!(v.cmp(first), Some(Ordering::Less | Ordering::Equal)),
            Comparator::Gt => v.cmp(first) == Some(Ordering::Greater),
            Comparator::Ge => matches!(v.cmp(first), Some(Ordering::Greater | Ordering::Equal)),
            Comparator::Like => like(&v.text(), &first.text(), false),
            Comparator::ILike => like(&v.text(), &first.text(), true),
            Comparator::In => self.values.iter().any(|x| v.cmp(x) == Some(Ordering::Equal)),
            Comparator::NotIn => !self.values.iter().any(|x| v.cmp(x) == Some(Ordering::Equal)),
        }
    }
}

/// SQL LIKE: `%` any sequence, `_` one character.
pub(super) fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if case_insensitive {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    crate::wildcard::matches(&fold(pattern), &fold(text), '%', Some('_'))
}

pub(super) struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    _src: &'a str,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer { chars: src.chars().collect(), pos: 0, _src: src }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-') {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn quoted(&mut self, filter: &str) -> Result<String> {
        let Some(q) = self.peek() else {
            return Err(filter_error(filter, "unexpected end"));
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(filter_error(filter, format!("unterminated {q}quote"))),
                Some(c) if c == q => {
                    self.pos += 1;
                    // A doubled quote stands for one.
                    if self.peek() == Some(q) {
                        out.push(q);
                        self.pos += 1;
                    } else {
                        return Ok(out);
                    }
                }
                Some('\\') if self.chars.get(self.pos + 1) == Some(&q) => {
                    out.push(q);
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn field(&mut self, filter: &str, kind: Kind) -> Result<Field> {
        self.skip_ws();
        let first = match self.peek() {
            Some('`') | Some('"') => self.quoted(filter)?,
            _ => self.word(),
        };
        if first.is_empty() {
            return Err(filter_error(filter, "expected an identifier"));
        }
        let (entity, key) = if self.peek() == Some('.') {
            self.pos += 1;
            let key = match self.peek() {
                Some('`') | Some('"') => self.quoted(filter)?,
                _ => {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c.is_alphanumeric() || "_-.:/".contains(c)) {
                        self.pos += 1;
                    }
                    self.chars[start..self.pos].iter().collect()
                }
            };
            let entity = match first.to_ascii_lowercase().as_str() {
                "attribute" | "attributes" | "attr" | "run" => Entity::Attribute,
                "metric" | "metrics" => Entity::Metric,
                "param" | "params" | "parameter" | "parameters" => Entity::Param,
                "tag" | "tags" => Entity::Tag,
                other => {
                    return Err(filter_error(
                        filter,
                        format!("unknown entity type '{other}' (use attributes, metrics, params or tags)"),
                    ))
                }
            };
            (entity, key)
        } else {
            (Entity::Attribute, first)
        };
        if !kind.entities().contains(&entity) {
            return Err(filter_error(filter, format!("{entity:?} fields cannot be searched here")));
        }
        let key = match (entity, key.as_str()) {
            (Entity::Attribute, "creation_timestamp_ms") => "creation_timestamp".to_string(),
            (Entity::Attribute, "last_updated_timestamp_ms") => "last_updated_timestamp".to_string(),
            (Entity::Attribute, "run_uuid") => "run_id".to_string(),
            _ => key,
        };
        if entity == Entity::Attribute && !kind.attributes().contains(&key.as_str()) {
            return Err(filter_error(
                filter,
                format!("invalid attribute '{key}'; valid attributes are {}", kind.attributes().join(", ")),
            ));
        }
        if key.is_empty() {
            return Err(filter_error(filter, "empty key"));
        }
        Ok(Field { entity, key })
    }

    fn op(&mut self, filter: &str) -> Result<Comparator> {
        self.skip_ws();
        let rest: String = self.chars[self.pos..].iter().take(2).collect();
        for (text, op) in [
            ("!=", Comparator::Ne),
            ("<>", Comparator::Ne),
            ("<=", Comparator::Le),
            (">=", Comparator::Ge),
            ("==", Comparator::Eq),
        ] {
            if rest == text {
                self.pos += 2;
                return Ok(op);
            }
        }
        match self.peek() {
            Some('=') => {
                self.pos += 1;
                return Ok(Comparator::Eq);
            }
            Some('<') => {
                self.pos += 1;
                return Ok(Comparator::Lt);
            }
            Some('>') => {
                self.pos += 1;
                return Ok(Comparator::Gt);
            }
            _ => {}
        }
        let w = self.word().to_ascii_uppercase();
        match w.as_str() {
            "LIKE" => Ok(Comparator::Like),
            "ILIKE" => Ok(Comparator::ILike),
            "IN" => Ok(Comparator::In),
            "NOT" if self.word().eq_ignore_ascii_case("in") => Ok(Comparator::NotIn),
            _ => Err(filter_error(filter, format!("expected a comparison operator, found '{w}'"))),
        }
    }

    fn value(&mut self, filter: &str) -> Result<Val> {
        self.skip_ws();
        match self.peek() {
            Some('\'') | Some('"') => Ok(Val::Str(self.quoted(filter)?)),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                text.parse::<f64>()
                    .map(Val::Num)
                    .map_err(|_| filter_error(filter, format!("expected a quoted string or a number, found '{text}'")))
            }
        }
    }

    fn list(&mut self, filter: &str) -> Result<Vec<Val>> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(filter_error(filter, "IN needs a parenthesized list"));
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            out.push(self.value(filter)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(filter_error(filter, "unterminated list")),
            }
        }
    }
}

/// A parsed `order_by`: fields with direction, applied in order, then the entity's tie-breaks.
#[derive(Debug, Clone)]
pub(super) struct OrderBy {
    keys: Vec<(Field, bool)>,
}

impl OrderBy {
    pub(super) fn parse(order_by: &[String], kind: Kind) -> Result<OrderBy> {
        let mut keys = Vec::new();
        for o in order_by.iter().filter(|o| !o.trim().is_empty()) {
            let mut lex = Lexer::new(o);
            let field = lex
                .field(o, kind)
                .map_err(|_| RegistryError::InvalidParameter(format!("Invalid order_by clause '{o}'")))?;
            let asc = match lex.word().to_ascii_uppercase().as_str() {
                "" | "ASC" => true,
                "DESC" => false,
                _ => {
                    return Err(RegistryError::InvalidParameter(format!(
                        "Invalid order_by clause '{o}': the direction must be ASC or DESC"
                    )))
                }
            };
            if !lex.at_end() {
                return Err(RegistryError::InvalidParameter(format!("Invalid order_by clause '{o}'")));
            }
            keys.push((field, asc));
        }
        let attr = |k: &str| Field { entity: Entity::Attribute, key: k.to_string() };
        // Defaults and tie-breaks, as MLflow orders each entity.
        match kind {
            Kind::Experiment => {
                keys.push((attr("creation_time"), false));
                keys.push((attr("experiment_id"), false));
            }
            Kind::Run => {
                keys.push((attr("start_time"), false));
                keys.push((attr("run_id"), true));
            }
            Kind::LoggedModel => {
                keys.push((attr("creation_timestamp"), false));
                keys.push((attr("model_id"), true));
            }
        }
        Ok(OrderBy { keys })
    }

    pub(super) fn compare(&self, a: &dyn Fn(&Field) -> Option<Val>, b: &dyn Fn(&Field) -> Option<Val>) -> Ordering {
        for (field, asc) in &self.keys {
            let ord = compare_values(a(field), b(field), *asc);
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

pub(super) fn find(list: &[Tag], key: &str) -> Option<Val> {
    list.iter().find(|t| t.key == key).map(|t| Val::Str(t.value.clone()))
}

pub(super) fn experiment_field(e: &Experiment, f: &Field) -> Option<Val> {
    match f.entity {
        Entity::Tag => find(&e.tags, &f.key),
        Entity::Attribute => match f.key.as_str() {
            "name" => Some(Val::Str(e.name.clone())),
            "experiment_id" => e.experiment_id.parse().ok().map(Val::Num),
            "creation_time" => Some(Val::Num(e.creation_time as f64)),
            "last_update_time" => Some(Val::Num(e.last_update_time as f64)),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn run_field(r: &Run, f: &Field) -> Option<Val> {
    let i = &r.info;
    match f.entity {
        Entity::Tag => find(&r.data.tags, &f.key),
        Entity::Param => find(&r.data.params, &f.key),
        Entity::Metric => r.data.metrics.iter().find(|m| m.key == f.key).map(|m| Val::Num(m.value)),
        Entity::Attribute => match f.key.as_str() {
            "run_id" => Some(Val::Str(i.run_id.clone())),
            "run_name" => Some(Val::Str(i.run_name.clone())),
            "status" => Some(Val::Str(i.status.clone())),
            "user_id" => Some(Val::Str(i.user_id.clone())),
            "artifact_uri" => Some(Val::Str(i.artifact_uri.clone())),
            "lifecycle_stage" => Some(Val::Str(i.lifecycle_stage.clone())),
            "experiment_id" => Some(Val::Str(i.experiment_id.clone())),
            "start_time" => Some(Val::Num(i.start_time as f64)),
            "end_time" => i.end_time.map(|t| Val::Num(t as f64)),
            _ => None,
        },
    }
}

pub(super) fn logged_model_field(m: &LoggedModel, f: &Field) -> Option<Val> {
    let i = &m.info;
    match f.entity {
        Entity::Tag => find(&i.tags, &f.key),
        Entity::Param => find(&m.data.params, &f.key),
        // A model has many values per metric: `logged_model_matches` and `latest_metric` decide.
        Entity::Metric => None,
        Entity::Attribute => match f.key.as_str() {
            "model_id" => Some(Val::Str(i.model_id.clone())),
            "name" => Some(Val::Str(i.name.clone())),
            "status" => Some(Val::Str(i.status.clone())),
            "source_run_id" => Some(Val::Str(i.source_run_id.clone())),
            "model_type" => Some(Val::Str(i.model_type.clone())),
            "experiment_id" => Some(Val::Str(i.experiment_id.clone())),
            "creation_timestamp" => Some(Val::Num(i.creation_timestamp_ms as f64)),
            "last_updated_timestamp" => Some(Val::Num(i.last_updated_timestamp_ms as f64)),
            _ => None,
        },
    }
}

// -------------------------------------------------------------------- logged models: datasets

/// One entry of the `datasets` criterion of `logged-models/search`: metrics computed on the
/// dataset of this name and digest — without a digest, on a dataset logged without one (the
/// SQL MLflow's handler and store run together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetCriterion {
    pub dataset_name: String,
    pub dataset_digest: Option<String>,
}

impl DatasetCriterion {
    fn admits(&self, m: &Metric) -> bool {
        m.dataset_name.as_deref() == Some(self.dataset_name.as_str()) && m.dataset_digest == self.dataset_digest
    }
}

/// One `order_by` entry of `logged-models/search`: an attribute or `metrics.<key>`; a metric
/// entry's dataset name and digest, each when given, pick the values it orders by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedModelOrder {
    pub field_name: String,
    pub ascending: bool,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

/// Whether a logged model passes `filter` and `datasets` (see `search_logged_models`): an
/// attribute, param or tag clause compares the model's value; a metric clause holds when any
/// value logged for the key (on one of `datasets`, when given) satisfies it; `datasets`
/// without a metric clause needs one metric on one of them.
pub(super) fn logged_model_matches(filter: &SearchFilter, m: &LoggedModel, datasets: &[DatasetCriterion]) -> bool {
    let on_datasets = |x: &Metric| datasets.is_empty() || datasets.iter().any(|d| d.admits(x));
    let mut has_metric_clause = false;
    let all = filter.clauses.iter().all(|c| {
        if c.field.entity == Entity::Metric {
            has_metric_clause = true;
            m.data
                .metrics
                .iter()
                .filter(|x| x.key == c.field.key && on_datasets(x))
                .any(|x| c.holds(&Val::Num(x.value)))
        } else {
            logged_model_field(m, &c.field).is_some_and(|v| c.holds(&v))
        }
    });
    all && (datasets.is_empty() || has_metric_clause || m.data.metrics.iter().any(on_datasets))
}

/// A parsed `order_by` of `logged-models/search`, with MLflow's tie-breaks (newest first, then
/// model id).
#[derive(Debug, Clone)]
pub(super) struct ModelOrder {
    keys: Vec<(Field, bool, Option<String>, Option<String>)>,
}

impl ModelOrder {
    pub(super) fn parse(order_by: &[LoggedModelOrder]) -> Result<ModelOrder> {
        let mut keys = Vec::new();
        for o in order_by {
            let name = o.field_name.trim();
            let invalid = || RegistryError::InvalidParameter(format!("Invalid order by field name: {name}"));
            let mut lex = Lexer::new(name);
            let field = lex.field(name, Kind::LoggedModel).map_err(|_| invalid())?;
            if !lex.at_end() {
                return Err(invalid());
            }
            if !matches!(field.entity, Entity::Attribute | Entity::Metric) {
                return Err(RegistryError::InvalidParameter(format!(
                    "Invalid order by field name: {name}. Only metrics are supported."
                )));
            }
            keys.push((field, o.ascending, o.dataset_name.clone(), o.dataset_digest.clone()));
        }
        let attr = |k: &str| Field { entity: Entity::Attribute, key: k.to_string() };
        keys.push((attr("creation_timestamp"), false, None, None));
        keys.push((attr("model_id"), true, None, None));
        Ok(ModelOrder { keys })
    }

    pub(super) fn compare(&self, a: &LoggedModel, b: &LoggedModel) -> Ordering {
        for (field, asc, name, digest) in &self.keys {
            let value = |m: &LoggedModel| match field.entity {
                Entity::Metric => latest_metric(m, &field.key, name.as_deref(), digest.as_deref()).map(Val::Num),
                _ => logged_model_field(m, field),
            };
            let ord = compare_values(value(a), value(b), *asc);
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

/// A logged model's latest value of a metric as MLflow orders by it: the newest timestamp,
/// then the highest step, then the first run id; only values on the dataset name and digest
/// when given.
fn latest_metric(m: &LoggedModel, key: &str, name: Option<&str>, digest: Option<&str>) -> Option<f64> {
    m.data
        .metrics
        .iter()
        .filter(|x| {
            x.key == key
                && name.is_none_or(|n| x.dataset_name.as_deref() == Some(n))
                && digest.is_none_or(|d| x.dataset_digest.as_deref() == Some(d))
        })
        .max_by(|x, y| (x.timestamp, x.step).cmp(&(y.timestamp, y.step)).then_with(|| y.run_id.cmp(&x.run_id)))
        .map(|x| x.value)
}
