//! Translates MLflow Model Registry search filters, `order_by` clauses and keyset page tokens into parameterized SQL (SQLite's or PostgreSQL's).
//!
//! The caller owns the `SELECT` list and the `FROM` clause (aliases `rm` for
//! `registered_models` and `mv` for `model_versions`); this module produces the
//! `WHERE` fragment, the `ORDER BY` list, the bound parameters and the sort-key
//! expressions needed to build the next page token:
//!
//! ```text
//! SELECT <caller columns>, <Query::key_select_sql>
//!   FROM registered_models rm
//!  WHERE <Query::where_sql>
//!  ORDER BY <Query::order_sql>
//!  LIMIT <n>          -- max_results + 1, written into the SQL
//! ```
//!
//! Pagination is keyset based: a page token stores the sort-key values of the
//! last row of the previous page, so rows inserted or deleted between two page
//! requests never cause other rows to be skipped or returned twice.
//!
//! Semantics follow MLflow's `SearchModelUtils` / `SearchModelVersionUtils`:
//! `LIKE` is case-sensitive (implemented with `GLOB`), `ILIKE` is
//! case-insensitive (ASCII only, as SQLite's `lower()` without ICU), `%` and
//! `_` are the wildcards and `\%`, `\_`, `\\` match them literally.
//! `tags.<key> != 'v'` also matches entities that do not carry the tag at all,
//! and — as in MLflow — `tags.`mlflow.prompt.is_prompt` = 'false'` matches
//! entities without that tag.
//!
//! Files, one concern each: this one holds the types, [`build`] and [`Query`] (with
//! [`Query::fetch_page`]); `parse` the filter grammar; `sql` clauses → SQL and `LIKE` → `GLOB`;
//! `order` the `order_by` keys and the keyset condition; `token` the page tokens; `tests`.

use crate::db::{self, Dialect, Row, Tx, Value};

mod order;
mod parse;
mod sql;
#[cfg(test)]
mod tests;
mod token;

use order::{keyset_sql, resolve_order_by, KeyCol, KeyKind, OrderKeyDef, MV_ORDER_KEYS, RM_ORDER_KEYS};
use parse::Parser;
use sql::clause_sql;
use token::fingerprint;

/// Tag MLflow uses to tell prompts from models; absent means "not a prompt".
use super::IS_PROMPT_TAG_KEY;

/// Version of the page-token payload layout.
const TOKEN_VERSION: u64 = 1;

/// Upper bound on the accepted page-token length (characters).
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Filter size limits, well inside SQLite's: expression depth 1000 (one level per `AND`),
/// 32766 bound parameters, and 50000 bytes of `LIKE`/`GLOB` pattern (a pattern character
/// takes at most 4 bytes, or 3 once escaped for `GLOB`). Beyond them SQLite refuses the
/// statement, which would surface as an internal error instead of a bad filter.
const MAX_CLAUSES: usize = 200;
const MAX_VALUES: usize = 10_000;
const MAX_PATTERN_CHARS: usize = 10_000;

/// Error produced for an invalid filter string, `order_by` entry or page token.
///
/// Every variant is a client error; the message is meant to be shown to the
/// user as-is (HTTP 400 `INVALID_PARAMETER_VALUE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter string is malformed or uses an unsupported attribute,
    /// comparator or value. The message names the filter and the position.
    #[error("{0}")]
    Filter(String),
    /// An `order_by` entry is malformed, unknown or duplicated.
    #[error("{0}")]
    OrderBy(String),
    /// The page token is malformed, tampered with, or was issued for a
    /// different filter / `order_by` / search endpoint.
    #[error("Invalid page_token: {0}")]
    PageToken(String),
}

/// Which search endpoint a filter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `registered-models/search`: `FROM registered_models rm`.
    RegisteredModels,
    /// `model-versions/search`:
    /// `FROM model_versions mv JOIN registered_models rm ON rm.id = mv.model_id`.
    ModelVersions,
}

impl Target {
    fn attributes(self) -> &'static [Attribute] {
        match self {
            Target::RegisteredModels => &[Attribute::Name],
            Target::ModelVersions => {
                &[Attribute::Name, Attribute::RunId, Attribute::VersionNumber, Attribute::SourcePath]
            }
        }
    }

    /// Correlated tag subquery prefix; callers append `AND ...` conditions.
    fn tag_subquery(self) -> &'static str {
        match self {
            Target::RegisteredModels => "SELECT 1 FROM registered_model_tags t WHERE t.model_id = rm.id AND t.key = ?",
            Target::ModelVersions => {
                "SELECT 1 FROM model_version_tags t WHERE t.model_id = mv.model_id \
                 AND t.version = mv.version AND t.key = ?"
            }
        }
    }

    /// The `FROM` clause the generated fragments expect.
    pub fn from_sql(self) -> &'static str {
        match self {
            Target::RegisteredModels => "registered_models rm",
            Target::ModelVersions => "model_versions mv JOIN registered_models rm ON rm.id = mv.model_id",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Target::RegisteredModels => "rm",
            Target::ModelVersions => "mv",
        }
    }

    fn order_keys(self) -> &'static [OrderKeyDef] {
        match self {
            Target::RegisteredModels => &RM_ORDER_KEYS,
            Target::ModelVersions => &MV_ORDER_KEYS,
        }
    }
}

/// A searchable attribute (as opposed to a tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `name`: the registered model name (`rm.name`).
    Name,
    /// `run_id` (`mv.run_id`, model versions only).
    RunId,
    /// `version_number` (`mv.version`, model versions only).
    VersionNumber,
    /// `source_path` (`mv.source`, model versions only).
    SourcePath,
}

impl Attribute {
    /// The attribute name as written in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribute::Name => "name",
            Attribute::RunId => "run_id",
            Attribute::VersionNumber => "version_number",
            Attribute::SourcePath => "source_path",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Attribute::Name => "rm.name",
            Attribute::RunId => "mv.run_id",
            Attribute::VersionNumber => "mv.version",
            Attribute::SourcePath => "mv.source",
        }
    }

    fn comparators(self) -> &'static [Comparator] {
        use Comparator as C;
        match self {
            Attribute::VersionNumber => &[C::Eq, C::Ne, C::Lt, C::Le, C::Gt, C::Ge, C::In, C::NotIn],
            Attribute::Name | Attribute::RunId => &[C::Eq, C::Ne, C::Like, C::ILike, C::In, C::NotIn],
            Attribute::SourcePath => &[C::Eq, C::Ne, C::Like, C::ILike],
        }
    }
}

/// Left-hand side of a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A built-in attribute.
    Attribute(Attribute),
    /// `tags.<key>` / `tag.<key>`, with the key unquoted.
    Tag(String),
}

const TAG_COMPARATORS: &[Comparator] = &[Comparator::Eq, Comparator::Ne, Comparator::Like, Comparator::ILike];

impl Subject {
    fn comparators(&self) -> &'static [Comparator] {
        match self {
            Subject::Attribute(a) => a.comparators(),
            Subject::Tag(_) => TAG_COMPARATORS,
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::Attribute(a) => format!("attribute '{}'", a.as_str()),
            Subject::Tag(k) => format!("tag '{k}'"),
        }
    }
}

/// Comparison operator of a clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// `=`
    Eq,
    /// `!=` (or `<>`)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `LIKE` (case-sensitive)
    Like,
    /// `ILIKE` (case-insensitive)
    ILike,
    /// `IN (...)`
    In,
    /// `NOT IN (...)`
    NotIn,
}

impl Comparator {
    /// The comparator as written in filters (upper-case keywords).
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "!=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Like => "LIKE",
            Comparator::ILike => "ILIKE",
            Comparator::In => "IN",
            Comparator::NotIn => "NOT IN",
        }
    }

    fn is_list(self) -> bool {
        matches!(self, Comparator::In | Comparator::NotIn)
    }
}

/// Right-hand side of a clause, already unquoted and type-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClauseValue {
    /// A string value (for `LIKE`/`ILIKE`, the raw MLflow pattern).
    Str(String),
    /// An integer value (`version_number`).
    Int(i64),
    /// A list of strings (`IN`/`NOT IN` on `name`/`run_id`).
    StrList(Vec<String>),
    /// A list of integers (`IN`/`NOT IN` on `version_number`).
    IntList(Vec<i64>),
}

/// One `<identifier> <comparator> <value>` clause of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// What is compared.
    pub subject: Subject,
    /// How it is compared.
    pub comparator: Comparator,
    /// What it is compared with.
    pub value: ClauseValue,
}

/// A parsed search request, ready to be embedded in a `SELECT`.
#[derive(Debug, Clone)]
pub struct Query {
    /// `WHERE` fragment (without the keyword): filter clauses and, when a page
    /// token was given, the keyset condition. `1=1` when there is nothing.
    pub where_sql: String,
    /// `ORDER BY` list (without the keywords); always a total order.
    pub order_sql: String,
    /// Parameters for the `?` placeholders of `where_sql`, in order.
    pub params: Vec<Value>,
    /// Comma-separated sort-key expressions; append them as the LAST columns
    /// of the `SELECT` list so [`Query::next_page_token`] can read them.
    pub key_select_sql: String,
    target: Target,
    keys: Vec<KeyCol>,
    fingerprint: u64,
}

/// Parses a filter string into clauses (exposed mainly for tests).
///
/// An empty or whitespace-only filter yields no clauses.
///
/// # Errors
///
/// [`FilterError::Filter`] for malformed filters, `OR`, unknown attributes,
/// comparators not valid for the attribute and ill-typed values. Positions in
/// messages are 0-based character offsets into `filter`.
pub fn parse(target: Target, filter: &str) -> Result<Vec<Clause>, FilterError> {
    Parser::new(filter, target).parse_all()
}

/// Builds the SQL pieces for one page of a search.
///
/// `page_token` is the token returned with the previous page (`None` or an
/// empty string for the first page). It is only valid together with the same
/// `target`, an equivalent `filter` and the same effective `order_by`.
///
/// # Errors
///
/// [`FilterError::Filter`] (see [`parse`]), [`FilterError::OrderBy`] for an
/// unknown, malformed or duplicated `order_by` entry, and
/// [`FilterError::PageToken`] for a malformed/modified token or one issued
/// for another filter, order or target.
pub fn build(
    target: Target,
    filter: &str,
    order_by: &[String],
    page_token: Option<&str>,
) -> Result<Query, FilterError> {
    build_for(Dialect::Sqlite, target, filter, order_by, page_token)
}

/// [`build`] for a database of the given dialect.
pub fn build_for(
    dialect: Dialect,
    target: Target,
    filter: &str,
    order_by: &[String],
    page_token: Option<&str>,
) -> Result<Query, FilterError> {
    let clauses = parse(target, filter)?;
    let mut parts = Vec::with_capacity(clauses.len() + 1);
    let mut params = Vec::new();
    for clause in &clauses {
        parts.push(format!("({})", clause_sql(dialect, target, clause, &mut params)));
    }
    let keys = resolve_order_by(target, order_by)?;
    let order_sql = keys
        .iter()
        .map(|k| format!("{} {}", k.expr, if k.asc { "ASC" } else { "DESC" }))
        .collect::<Vec<_>>()
        .join(", ");
    let key_select_sql = keys.iter().map(|k| k.expr).collect::<Vec<_>>().join(", ");
    let filter_sql = parts.join(" AND ");
    let fingerprint = fingerprint(target, &filter_sql, &params, &order_sql);

    let mut query = Query { where_sql: String::new(), order_sql, params, key_select_sql, target, keys, fingerprint };
    if let Some(token) = page_token.map(str::trim).filter(|t| !t.is_empty()) {
        let values = query.decode_token(token)?;
        parts.push(keyset_sql(&query.keys, &values, &mut query.params));
    }
    query.where_sql = if parts.is_empty() { "1=1".to_owned() } else { parts.join(" AND ") };
    Ok(query)
}

impl Query {
    /// Number of sort-key columns listed in [`Query::key_select_sql`].
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// ANDs a caller-side condition (e.g. `mv.current_stage != ?`) onto
    /// [`Query::where_sql`]; its `params` are bound after the existing ones.
    ///
    /// Such conditions are not part of the page-token fingerprint, so they
    /// must be the same for every page of a search.
    pub fn push_condition(&mut self, sql: &str, params: impl IntoIterator<Item = Value>) {
        self.where_sql = format!("{} AND ({sql})", self.where_sql);
        self.params.extend(params);
    }

    /// The target this query was built for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The full search statement for `select_list`:
    /// `SELECT <select_list>, <key_select_sql> FROM ... WHERE ... ORDER BY ... LIMIT <limit>`.
    ///
    /// Bind [`Query::params`]. The limit is written into the SQL, not bound: SQLite plans with
    /// a bound `LIMIT`'s value, so binding it again (every run of a cached statement) expires
    /// the statement and re-parses it. A page size is one of a few numbers in practice, so the
    /// statement caches keep one statement per size in use.
    pub fn search_sql(&self, select_list: &str, limit: u64) -> String {
        format!(
            "SELECT {select_list}, {} FROM {} WHERE {} ORDER BY {} LIMIT {limit}",
            self.key_select_sql,
            self.target.from_sql(),
            self.where_sql,
            self.order_sql
        )
    }

    /// Encodes the page token that continues after `row`.
    ///
    /// `row` must be the last row of the page being returned and must contain
    /// the [`Query::key_select_sql`] columns starting at `first_key_col_index`.
    ///
    /// # Errors
    ///
    /// A database error if those columns are missing or have unexpected types.
    pub fn next_page_token(&self, row: &Row<'_>, first_key_col_index: usize) -> Result<String, db::Error> {
        let values = self.read_key(row, first_key_col_index)?;
        Ok(self.encode_token(&values))
    }

    /// Runs [`Query::search_sql`] and returns at most `max_results` mapped
    /// rows plus the token of the next page, if there is one.
    ///
    /// `map` sees the whole row; the caller's columns come first.
    ///
    /// # Errors
    ///
    /// Any database error from running the statement or from `map`.
    pub fn fetch_page<T, F>(
        &self,
        tx: &Tx<'_>,
        select_list: &str,
        max_results: usize,
        mut map: F,
    ) -> Result<(Vec<T>, Option<String>), db::Error>
    where
        F: FnMut(&Row<'_>) -> Result<T, db::Error>,
    {
        let limit = u64::try_from(max_results).unwrap_or(u64::MAX).min(i64::MAX as u64 - 1) + 1;
        let params = db::params_from(&self.params);
        let mut out = Vec::with_capacity(max_results.min(1024));
        let mut last_key: Option<Vec<Value>> = None;
        let mut next = None;
        tx.for_each(&self.search_sql(select_list, limit), &params, |row| {
            if out.len() >= max_results {
                next = last_key.take().map(|k| self.encode_token(&k));
                return Ok(false);
            }
            let first_key = row.len().saturating_sub(self.keys.len());
            last_key = Some(self.read_key(row, first_key)?);
            out.push(map(row)?);
            Ok(true)
        })?;
        Ok((out, next))
    }

    fn read_key(&self, row: &Row<'_>, first: usize) -> Result<Vec<Value>, db::Error> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| match k.kind {
                KeyKind::Int => row.get::<i64>(first + i).map(Value::Integer),
                KeyKind::Text => row.get::<String>(first + i).map(Value::Text),
            })
            .collect()
    }
}
