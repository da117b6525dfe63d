//! Clauses → parameterized SQL: attribute and tag comparisons, and `LIKE`/`ILIKE` patterns
//! translated to SQLite's `GLOB` (case-sensitive) and `LIKE` (ASCII case-insensitive), or
//! PostgreSQL's `LIKE` (case-sensitive on the schema's `COLLATE "C"` columns).

use super::*;

pub(super) fn clause_sql(dialect: Dialect, target: Target, clause: &Clause, params: &mut Vec<Value>) -> String {
    match &clause.subject {
        Subject::Attribute(attr) => attribute_sql(dialect, attr.column(), clause.comparator, &clause.value, params),
        Subject::Tag(key) => tag_sql(dialect, target, key, clause.comparator, &clause.value, params),
    }
}

pub(super) fn attribute_sql(
    dialect: Dialect,
    column: &str,
    comparator: Comparator,
    value: &ClauseValue,
    params: &mut Vec<Value>,
) -> String {
    match value {
        ClauseValue::Str(s) => {
            let (sql, param) = string_match(dialect, column, comparator, s);
            params.push(Value::Text(param));
            sql
        }
        ClauseValue::Int(i) => {
            params.push(Value::Integer(*i));
            format!("{column} {} ?", comparator.as_str())
        }
        ClauseValue::StrList(items) => {
            params.extend(items.iter().cloned().map(Value::Text));
            list_sql(column, comparator, items.len())
        }
        ClauseValue::IntList(items) => {
            params.extend(items.iter().copied().map(Value::Integer));
            list_sql(column, comparator, items.len())
        }
    }
}

pub(super) fn list_sql(column: &str, comparator: Comparator, n: usize) -> String {
    let placeholders = vec!["?"; n].join(", ");
    format!("{column} {} ({placeholders})", comparator.as_str())
}

/// SQL and bound parameter for a scalar string comparison against `column`.
pub(super) fn string_match(dialect: Dialect, column: &str, comparator: Comparator, value: &str) -> (String, String) {
    match comparator {
        Comparator::Like if dialect == Dialect::Sqlite => (format!("{column} GLOB ?"), like_to_glob(value)),
        Comparator::Like => (format!("{column} LIKE ? ESCAPE '\\'"), like_to_sqlite_like(value)),
        Comparator::ILike => (format!("lower({column}) LIKE lower(?) ESCAPE '\\'"), like_to_sqlite_like(value)),
        other => (format!("{column} {} ?", other.as_str()), value.to_owned()),
    }
}

pub(super) fn tag_sql(
    dialect: Dialect,
    target: Target,
    key: &str,
    comparator: Comparator,
    value: &ClauseValue,
    params: &mut Vec<Value>,
) -> String {
    let sub = target.tag_subquery();
    params.push(Value::Text(key.to_owned()));
    let text = match value {
        ClauseValue::Str(s) => s.as_str(),
        // The parser only produces string scalars for tags.
        _ => "",
    };
    if comparator == Comparator::Ne {
        // Entities without the tag match `!=`.
        params.push(Value::Text(text.to_owned()));
        return format!("NOT EXISTS ({sub} AND t.value = ?)");
    }
    if comparator == Comparator::Eq && key == IS_PROMPT_TAG_KEY && text == "false" {
        // MLflow: a missing is_prompt tag means "not a prompt".
        params.push(Value::Text(text.to_owned()));
        return format!("NOT EXISTS ({sub} AND t.value != ?)");
    }
    let (cond, param) = string_match(dialect, "t.value", comparator, text);
    params.push(Value::Text(param));
    format!("EXISTS ({sub} AND {cond})")
}

/// One element of an MLflow LIKE pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatternPart {
    Literal(char),
    AnySequence,
    AnyChar,
}

/// Splits an MLflow LIKE pattern: `%` and `_` are wildcards, a backslash
/// makes a following `%`, `_` or `\` literal; any other backslash is literal.
pub(super) fn pattern_parts(pattern: &str) -> Vec<PatternPart> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push(PatternPart::AnySequence),
            '_' => out.push(PatternPart::AnyChar),
            '\\' => match chars.peek() {
                Some(&n @ ('%' | '_' | '\\')) => {
                    chars.next();
                    out.push(PatternPart::Literal(n));
                }
                _ => out.push(PatternPart::Literal('\\')),
            },
            c => out.push(PatternPart::Literal(c)),
        }
    }
    out
}

/// Case-sensitive pattern for SQLite `GLOB`.
pub(super) fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for part in pattern_parts(pattern) {
        match part {
            PatternPart::AnySequence => out.push('*'),
            PatternPart::AnyChar => out.push('?'),
            PatternPart::Literal(c @ ('*' | '?' | '[' | ']')) => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            PatternPart::Literal(c) => out.push(c),
        }
    }
    out
}

/// Pattern for SQLite `LIKE ... ESCAPE '\'`.
pub(super) fn like_to_sqlite_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for part in pattern_parts(pattern) {
        match part {
            PatternPart::AnySequence => out.push('%'),
            PatternPart::AnyChar => out.push('_'),
            PatternPart::Literal(c @ ('%' | '_' | '\\')) => {
                out.push('\\');
                out.push(c);
            }
            PatternPart::Literal(c) => out.push(c),
        }
    }
    out
}
