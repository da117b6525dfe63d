//! `order_by`: the sort keys each target accepts, their defaults and tie-breaks, and the keyset
//! condition that continues after the last row of a page.

use std::fmt::Write as _;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Int,
    Text,
}

/// A resolved sort column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyCol {
    pub(super) key: &'static str,
    pub(super) expr: &'static str,
    pub(super) kind: KeyKind,
    pub(super) asc: bool,
}

pub(super) struct OrderKeyDef {
    /// Name accepted in `order_by`.
    pub(super) name: &'static str,
    /// Canonical key name (aliases share it), used in messages.
    pub(super) canonical: &'static str,
    pub(super) expr: &'static str,
    pub(super) kind: KeyKind,
}

pub(super) const RM_ORDER_KEYS: [OrderKeyDef; 4] = [
    OrderKeyDef { name: "name", canonical: "name", expr: "rm.name", kind: KeyKind::Text },
    OrderKeyDef {
        name: "creation_timestamp",
        canonical: "creation_timestamp",
        expr: "rm.creation_timestamp",
        kind: KeyKind::Int,
    },
    OrderKeyDef {
        name: "last_updated_timestamp",
        canonical: "last_updated_timestamp",
        expr: "rm.last_updated_timestamp",
        kind: KeyKind::Int,
    },
    // MLflow maps `timestamp` to the last-updated time for registered models.
    OrderKeyDef {
        name: "timestamp",
        canonical: "last_updated_timestamp",
        expr: "rm.last_updated_timestamp",
        kind: KeyKind::Int,
    },
];

pub(super) const MV_ORDER_KEYS: [OrderKeyDef; 4] = [
    OrderKeyDef { name: "name", canonical: "name", expr: "rm.name", kind: KeyKind::Text },
    OrderKeyDef { name: "version_number", canonical: "version_number", expr: "mv.version", kind: KeyKind::Int },
    OrderKeyDef {
        name: "creation_timestamp",
        canonical: "creation_timestamp",
        expr: "mv.creation_timestamp",
        kind: KeyKind::Int,
    },
    OrderKeyDef {
        name: "last_updated_timestamp",
        canonical: "last_updated_timestamp",
        expr: "mv.last_updated_timestamp",
        kind: KeyKind::Int,
    },
];

pub(super) fn key_col(target: Target, name: &str, asc: bool) -> Option<KeyCol> {
    target.order_keys().iter().find(|d| d.name == name).map(|d| KeyCol {
        key: d.canonical,
        expr: d.expr,
        kind: d.kind,
        asc,
    })
}

/// Splits an `order_by` entry into words, removing backquotes/double quotes.
pub(super) fn order_by_words(entry: &str) -> Result<Vec<String>, FilterError> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in entry.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None if c == '`' || c == '"' => quote = Some(c),
            None if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            None => current.push(c),
        }
    }
    if quote.is_some() {
        return Err(FilterError::OrderBy(format!("Invalid order_by clause '{entry}': unterminated quote")));
    }
    if !current.is_empty() {
        words.push(current);
    }
    Ok(words)
}

pub(super) fn parse_order_entry(target: Target, entry: &str) -> Result<KeyCol, FilterError> {
    let err = |msg: String| FilterError::OrderBy(format!("Invalid order_by clause '{entry}': {msg}"));
    let words = order_by_words(entry)?;
    let (raw_key, asc) = match words.as_slice() {
        [key] => (key.as_str(), true),
        [key, dir] if dir.eq_ignore_ascii_case("asc") => (key.as_str(), true),
        [key, dir] if dir.eq_ignore_ascii_case("desc") => (key.as_str(), false),
        [_, dir] => return Err(err(format!("invalid direction '{dir}', expected ASC or DESC"))),
        _ => return Err(err("expected '<key>' or '<key> ASC|DESC'".to_owned())),
    };
    let key = match raw_key.split_once('.') {
        Some((prefix, key)) if ["attribute", "attributes", "attr"].iter().any(|a| prefix.eq_ignore_ascii_case(a)) => {
            key
        }
        Some((prefix, _)) if prefix.eq_ignore_ascii_case("tag") || prefix.eq_ignore_ascii_case("tags") => {
            return Err(err("ordering by tags is not supported".to_owned()));
        }
        _ => raw_key,
    };
    key_col(target, key, asc).ok_or_else(|| {
        let valid = target.order_keys().iter().map(|d| d.name).collect::<Vec<_>>().join(", ");
        err(format!("invalid order_by key '{key}'; valid keys are {valid}"))
    })
}

/// Resolves `order_by` into sort columns, adding MLflow's defaults and
/// tie-breakers so that the order is total.
///
/// Without any `order_by`, model versions come newest first, as MLflow's
/// `SqlAlchemyStore.search_model_versions` orders them: `last_updated_timestamp DESC,
/// name ASC, version_number DESC`; registered models by name (MLflow's
/// `_parse_search_registered_models_order_by`).
pub(super) fn resolve_order_by(target: Target, order_by: &[String]) -> Result<Vec<KeyCol>, FilterError> {
    let mut keys: Vec<KeyCol> = Vec::new();
    for entry in order_by.iter().filter(|e| !e.trim().is_empty()) {
        let col = parse_order_entry(target, entry)?;
        if keys.iter().any(|k| k.expr == col.expr) {
            return Err(FilterError::OrderBy(format!("Invalid order_by {order_by:?}: duplicate key '{}'", col.key)));
        }
        keys.push(col);
    }
    if keys.is_empty() && target == Target::ModelVersions {
        keys.extend(key_col(target, "last_updated_timestamp", false));
    }
    let mut ensure = |name: &str, asc: bool| {
        if let Some(col) = key_col(target, name, asc) {
            if !keys.iter().any(|k| k.expr == col.expr) {
                keys.push(col);
            }
        }
    };
    ensure("name", true);
    match target {
        Target::RegisteredModels => keys.push(KeyCol { key: "id", expr: "rm.id", kind: KeyKind::Int, asc: true }),
        Target::ModelVersions => ensure("version_number", false),
    }
    Ok(keys)
}

/// Keyset condition "row sorts strictly after `values`", expanded into
/// `(k1 > ?) OR (k1 = ? AND k2 < ?) OR ...` to allow mixed directions.
pub(super) fn keyset_sql(keys: &[KeyCol], values: &[Value], params: &mut Vec<Value>) -> String {
    let op = |k: &KeyCol| if k.asc { ">" } else { "<" };
    let mut sql = String::from("(");
    if let (Some(first), Some(v)) = (keys.first(), values.first()) {
        // Redundant bound on the leading key so SQLite can use an index.
        let _ = write!(sql, "{} {}= ? AND (", first.expr, op(first));
        params.push(v.clone());
    }
    for i in 0..keys.len() {
        if i > 0 {
            sql.push_str(" OR ");
        }
        sql.push('(');
        for (k, v) in keys[..i].iter().zip(values) {
            let _ = write!(sql, "{} = ? AND ", k.expr);
            params.push(v.clone());
        }
        let _ = write!(sql, "{} {} ?)", keys[i].expr, op(&keys[i]));
        params.push(values[i].clone());
    }
    sql.push_str("))");
    sql
}
