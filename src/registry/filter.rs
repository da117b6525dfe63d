//! Translates MLflow Model Registry search filters, `order_by` clauses and keyset page tokens into parameterized SQLite SQL.
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
//!  LIMIT ?            -- max_results + 1, bound after Query::params
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

use std::fmt::Write as _;

use rusqlite::types::Value;
use rusqlite::{Connection, Row};

/// Tag MLflow uses to tell prompts from models; absent means "not a prompt".
const IS_PROMPT_TAG_KEY: &str = "mlflow.prompt.is_prompt";

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
    let clauses = parse(target, filter)?;
    let mut parts = Vec::with_capacity(clauses.len() + 1);
    let mut params = Vec::new();
    for clause in &clauses {
        parts.push(format!("({})", clause_sql(target, clause, &mut params)));
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
    /// `SELECT <select_list>, <key_select_sql> FROM ... WHERE ... ORDER BY ... LIMIT ?`.
    ///
    /// Bind [`Query::params`] followed by the limit (`max_results + 1`).
    pub fn search_sql(&self, select_list: &str) -> String {
        format!(
            "SELECT {select_list}, {} FROM {} WHERE {} ORDER BY {} LIMIT ?",
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
    /// A rusqlite error if those columns are missing or have unexpected types.
    pub fn next_page_token(&self, row: &Row<'_>, first_key_col_index: usize) -> rusqlite::Result<String> {
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
    /// Any rusqlite error from preparing/running the statement or from `map`.
    pub fn fetch_page<T, F>(
        &self,
        conn: &Connection,
        select_list: &str,
        max_results: usize,
        mut map: F,
    ) -> rusqlite::Result<(Vec<T>, Option<String>)>
    where
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
    {
        let mut stmt = conn.prepare(&self.search_sql(select_list))?;
        let first_key = stmt.column_count().saturating_sub(self.keys.len());
        let limit = Value::Integer(i64::try_from(max_results).unwrap_or(i64::MAX).saturating_add(1));
        let mut rows = stmt.query(rusqlite::params_from_iter(self.params.iter().chain(std::iter::once(&limit))))?;
        let mut out = Vec::new();
        let mut last_key: Option<Vec<Value>> = None;
        while let Some(row) = rows.next()? {
            if out.len() >= max_results {
                return Ok((out, last_key.map(|k| self.encode_token(&k))));
            }
            last_key = Some(self.read_key(row, first_key)?);
            out.push(map(row)?);
        }
        Ok((out, None))
    }

    fn read_key(&self, row: &Row<'_>, first: usize) -> rusqlite::Result<Vec<Value>> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| match k.kind {
                KeyKind::Int => row.get::<_, i64>(first + i).map(Value::Integer),
                KeyKind::Text => row.get::<_, String>(first + i).map(Value::Text),
            })
            .collect()
    }

    fn encode_token(&self, values: &[Value]) -> String {
        let k: Vec<serde_json::Value> = values
            .iter()
            .map(|v| match v {
                Value::Integer(i) => serde_json::Value::from(*i),
                Value::Text(s) => serde_json::Value::from(s.as_str()),
                _ => serde_json::Value::Null,
            })
            .collect();
        let payload = serde_json::json!({
            "v": TOKEN_VERSION,
            "f": format!("{:016x}", self.fingerprint),
            "k": k,
        })
        .to_string()
        .into_bytes();
        let mut bytes = payload.clone();
        bytes.extend_from_slice(&token_checksum(&payload).to_be_bytes());
        b64url_encode(&bytes)
    }

    fn decode_token(&self, token: &str) -> Result<Vec<Value>, FilterError> {
        let bad = |msg: &str| FilterError::PageToken(msg.to_owned());
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("token is too long"));
        }
        let bytes = b64url_decode(token).ok_or_else(|| bad("token is not validly encoded"))?;
        if bytes.len() < 8 {
            return Err(bad("token is truncated"));
        }
        let (payload, sum) = bytes.split_at(bytes.len() - 8);
        if token_checksum(payload).to_be_bytes()[..] != *sum {
            return Err(bad("token is corrupted or was modified"));
        }
        let json: serde_json::Value = serde_json::from_slice(payload).map_err(|_| bad("token payload is malformed"))?;
        if json.get("v").and_then(serde_json::Value::as_u64) != Some(TOKEN_VERSION) {
            return Err(bad("unsupported token version"));
        }
        let expected = format!("{:016x}", self.fingerprint);
        if json.get("f").and_then(serde_json::Value::as_str) != Some(expected.as_str()) {
            return Err(bad("token was issued for a different filter_string or order_by; \
                 restart the search without a page_token"));
        }
        let k = json
            .get("k")
            .and_then(serde_json::Value::as_array)
            .filter(|k| k.len() == self.keys.len())
            .ok_or_else(|| bad("token has the wrong number of sort keys"))?;
        self.keys
            .iter()
            .zip(k)
            .map(|(key, v)| match key.kind {
                KeyKind::Int => v.as_i64().map(Value::Integer),
                KeyKind::Text => v.as_str().map(|s| Value::Text(s.to_owned())),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("token has a sort key of the wrong type"))
    }
}

// ---------------------------------------------------------------------------
// Filter parser
// ---------------------------------------------------------------------------

/// Identifier as written: optional entity prefix and key, quotes removed.
struct RawIdent {
    prefix: Option<String>,
    key: String,
    key_pos: usize,
}

/// A single literal value as written.
enum Scalar {
    Str(String),
    Num(String),
}

enum RawValue {
    Scalar(usize, Scalar),
    List(Vec<(usize, Scalar)>),
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
    target: Target,
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_key_char(c: char) -> bool {
    is_word_char(c) || c == '.'
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>')
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, target: Target) -> Self {
        Parser { src, chars: src.chars().collect(), pos: 0, target }
    }

    fn err(&self, pos: usize, msg: impl std::fmt::Display) -> FilterError {
        FilterError::Filter(format!("Invalid filter '{}': {msg} at position {pos}", self.src))
    }

    fn or_error(&self, pos: usize) -> FilterError {
        FilterError::Filter(format!(
            "Invalid filter '{}': OR is not supported (found at position {pos}); \
             only clauses joined by AND are allowed",
            self.src
        ))
    }

    fn invalid_clause(&self, start: usize) -> FilterError {
        FilterError::Filter(format!(
            "Invalid clause(s) in filter string: {} (at position {start}; expected \
             <attribute or tags.key> <comparator> <value>)",
            self.clause_text(start)
        ))
    }

    /// Text from `start` up to the next top-level `AND` (or the end), trimmed.
    fn clause_text(&self, start: usize) -> String {
        let mut quote: Option<char> = None;
        let mut i = start;
        while i < self.chars.len() {
            let c = self.chars[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if matches!(c, '\'' | '"' | '`') => quote = Some(c),
                None => {
                    let boundary = i == 0 || !is_word_char(self.chars[i - 1]);
                    if i > start && boundary {
                        if let Some((w, _)) = self.word_at(i) {
                            if w.eq_ignore_ascii_case("AND") {
                                break;
                            }
                        }
                    }
                }
            }
            i += 1;
        }
        self.chars[start..i].iter().collect::<String>().trim().to_owned()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The word (`[alpha_][alnum_]*`) starting at `pos`, and its end.
    fn word_at(&self, pos: usize) -> Option<(String, usize)> {
        let first = *self.chars.get(pos)?;
        if !is_word_start(first) {
            return None;
        }
        let mut end = pos + 1;
        while self.chars.get(end).copied().is_some_and(is_word_char) {
            end += 1;
        }
        Some((self.chars[pos..end].iter().collect(), end))
    }

    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Reads a quoted run starting at the current position (which holds `q`).
    ///
    /// A doubled quote or a backslash before a quote/backslash stands for that
    /// character; any other backslash is kept verbatim.
    fn quoted(&mut self, q: char, what: &str) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err(start, format!("unterminated {what} starting"))),
                Some(c) if c == q => {
                    if self.peek_at(1) == Some(q) {
                        out.push(q);
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        return Ok(out);
                    }
                }
                Some('\\') => match self.peek_at(1) {
                    Some(n @ ('\'' | '"' | '`' | '\\')) => {
                        out.push(n);
                        self.pos += 2;
                    }
                    _ => {
                        out.push('\\');
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn parse_all(&mut self) -> Result<Vec<Clause>, FilterError> {
        let mut out = Vec::new();
        self.skip_ws();
        if self.at_end() {
            return Ok(out);
        }
        let mut values = 0;
        loop {
            let clause_pos = self.pos;
            let clause = self.clause()?;
            values += match &clause.value {
                ClauseValue::StrList(v) => v.len(),
                ClauseValue::IntList(v) => v.len(),
                _ => 1,
            };
            if out.len() == MAX_CLAUSES || values > MAX_VALUES {
                return Err(self.err(
                    clause_pos,
                    format!("the filter is too long (at most {MAX_CLAUSES} clauses and {MAX_VALUES} values)"),
                ));
            }
            out.push(clause);
            self.skip_ws();
            if self.at_end() {
                return Ok(out);
            }
            let here = self.pos;
            match self.word_at(here) {
                Some((w, end)) if w.eq_ignore_ascii_case("AND") => {
                    self.pos = end;
                    self.skip_ws();
                    if self.at_end() {
                        return Err(self.err(self.pos, "expected a clause after AND"));
                    }
                }
                Some((w, _)) if w.eq_ignore_ascii_case("OR") => return Err(self.or_error(here)),
                _ => {
                    return Err(self.err(
                        here,
                        format!("expected AND or the end of the filter, found '{}'", self.clause_text(here)),
                    ))
                }
            }
        }
    }

    fn clause(&mut self) -> Result<Clause, FilterError> {
        let start = self.pos;
        if let Some((w, _)) = self.word_at(start) {
            if w.eq_ignore_ascii_case("OR") {
                return Err(self.or_error(start));
            }
            if w.eq_ignore_ascii_case("AND") {
                return Err(self.err(start, "expected a clause before AND"));
            }
        }
        let Some(ident) = self.identifier()? else {
            return Err(self.invalid_clause(start));
        };
        self.skip_ws();
        let op_pos = self.pos;
        let Some(comparator) = self.comparator()? else {
            return Err(self.invalid_clause(start));
        };
        let subject = self.resolve_subject(ident, start)?;
        let allowed = subject.comparators();
        if !allowed.contains(&comparator) {
            let valid = allowed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
            return Err(self.err(
                op_pos,
                format!(
                    "invalid comparator '{}' for {}; valid comparators are {valid}",
                    comparator.as_str(),
                    subject.describe()
                ),
            ));
        }
        self.skip_ws();
        let value_pos = self.pos;
        let raw = self.value(comparator)?;
        let value = self.convert_value(&subject, raw)?;
        if let (Comparator::Like | Comparator::ILike, ClauseValue::Str(p)) = (comparator, &value) {
            if p.chars().count() > MAX_PATTERN_CHARS {
                return Err(self.err(value_pos, format!("the pattern is longer than {MAX_PATTERN_CHARS} characters")));
            }
        }
        Ok(Clause { subject, comparator, value })
    }

    fn identifier(&mut self) -> Result<Option<RawIdent>, FilterError> {
        let start = self.pos;
        let first = match self.peek() {
            Some('`') => self.quoted('`', "quoted identifier")?,
            Some(c) if is_word_start(c) => self.take_while(is_word_char),
            _ => return Ok(None),
        };
        if self.peek() != Some('.') {
            return Ok(Some(RawIdent { prefix: None, key: first, key_pos: start }));
        }
        self.pos += 1;
        let key_pos = self.pos;
        let key = match self.peek() {
            Some(q @ ('`' | '"' | '\'')) => self.quoted(q, "quoted identifier")?,
            Some(c) if is_key_char(c) => self.take_while(is_key_char),
            _ => return Err(self.err(key_pos, format!("expected a key after '{first}.'"))),
        };
        Ok(Some(RawIdent { prefix: Some(first), key, key_pos }))
    }

    fn valid_keys(&self) -> String {
        let mut keys: Vec<&str> = self.target.attributes().iter().map(|a| a.as_str()).collect();
        keys.push("tags.<key>");
        keys.join(", ")
    }

    fn resolve_subject(&self, ident: RawIdent, start: usize) -> Result<Subject, FilterError> {
        let is_tag = match ident.prefix.as_deref() {
            None => false,
            Some(p) if p.eq_ignore_ascii_case("tag") || p.eq_ignore_ascii_case("tags") => true,
            Some(p) if ["attribute", "attributes", "attr"].iter().any(|a| p.eq_ignore_ascii_case(a)) => false,
            Some(p) => {
                return Err(self.err(
                    start,
                    format!(
                        "invalid entity type '{p}'; valid entity types are attribute \
                         (or attributes) and tag (or tags)"
                    ),
                ))
            }
        };
        if is_tag {
            if ident.key.is_empty() {
                return Err(self.err(ident.key_pos, "tag key must not be empty"));
            }
            return Ok(Subject::Tag(ident.key));
        }
        self.target.attributes().iter().find(|a| a.as_str() == ident.key).map(|a| Subject::Attribute(*a)).ok_or_else(
            || {
                self.err(
                    ident.key_pos,
                    format!("invalid attribute key '{}'; valid keys are {}", ident.key, self.valid_keys()),
                )
            },
        )
    }

    fn comparator(&mut self) -> Result<Option<Comparator>, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_operator_char(c) => {
                let sym = self.take_while(is_operator_char);
                let op = match sym.as_str() {
                    "=" => Comparator::Eq,
                    "!=" | "<>" => Comparator::Ne,
                    "<" => Comparator::Lt,
                    "<=" => Comparator::Le,
                    ">" => Comparator::Gt,
                    ">=" => Comparator::Ge,
                    _ => {
                        return Err(self.err(
                            start,
                            format!(
                                "unknown comparator '{sym}'; valid comparators are =, !=, <, \
                                 <=, >, >=, LIKE, ILIKE, IN, NOT IN"
                            ),
                        ))
                    }
                };
                Ok(Some(op))
            }
            Some(_) => {
                let Some((word, end)) = self.word_at(start) else {
                    return Ok(None);
                };
                let op = match word.to_ascii_uppercase().as_str() {
                    "LIKE" => Comparator::Like,
                    "ILIKE" => Comparator::ILike,
                    "IN" => Comparator::In,
                    "NOT" => {
                        self.pos = end;
                        self.skip_ws();
                        return match self.word_at(self.pos) {
                            Some((w, e)) if w.eq_ignore_ascii_case("IN") => {
                                self.pos = e;
                                Ok(Some(Comparator::NotIn))
                            }
                            _ => {
                                Err(self.err(self.pos, "expected IN after NOT (NOT IN is the only negated comparator)"))
                            }
                        };
                    }
                    _ => return Ok(None),
                };
                self.pos = end;
                Ok(Some(op))
            }
            None => Ok(None),
        }
    }

    fn value(&mut self, comparator: Comparator) -> Result<RawValue, FilterError> {
        let pos = self.pos;
        if !comparator.is_list() {
            return match self.scalar()? {
                Some(s) => Ok(RawValue::Scalar(pos, s)),
                None => Err(self.err(pos, format!("expected a value after '{}'", comparator.as_str()))),
            };
        }
        if self.peek() != Some('(') {
            return Err(self.err(
                pos,
                format!("expected a parenthesized list of values after '{}', e.g. ('a', 'b')", comparator.as_str()),
            ));
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            let item_pos = self.pos;
            if self.peek() == Some(')') && items.is_empty() {
                return Err(self.err(
                    item_pos,
                    format!("expected at least one value in the list after '{}'", comparator.as_str()),
                ));
            }
            match self.scalar()? {
                Some(s) => items.push((item_pos, s)),
                None => return Err(self.err(item_pos, "expected a value in the list")),
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(RawValue::List(items));
                }
                None => return Err(self.err(self.pos, "unterminated list, expected ')'")),
                Some(_) => return Err(self.err(self.pos, "expected ',' or ')' in the list")),
            }
        }
    }

    fn scalar(&mut self) -> Result<Option<Scalar>, FilterError> {
        let pos = self.pos;
        match self.peek() {
            Some(q @ ('\'' | '"')) => Ok(Some(Scalar::Str(self.quoted(q, "string")?))),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => {
                self.pos += 1;
                let rest = self.take_while(|c| c.is_alphanumeric() || c == '.');
                Ok(Some(Scalar::Num(format!("{c}{rest}"))))
            }
            Some(c) if is_word_start(c) || c == '`' => {
                let word = if c == '`' { self.quoted('`', "quoted identifier")? } else { self.take_while(is_key_char) };
                Err(self.err(
                    pos,
                    format!(
                        "expected a quoted string value, found '{word}'; \
                         use single or double quotes"
                    ),
                ))
            }
            _ => Ok(None),
        }
    }

    fn convert_value(&self, subject: &Subject, raw: RawValue) -> Result<ClauseValue, FilterError> {
        let numeric = matches!(subject, Subject::Attribute(Attribute::VersionNumber));
        match raw {
            RawValue::Scalar(pos, s) if numeric => self.int_value(pos, s).map(ClauseValue::Int),
            RawValue::Scalar(pos, s) => self.str_value(pos, subject, s).map(ClauseValue::Str),
            RawValue::List(items) if numeric => items
                .into_iter()
                .map(|(pos, s)| self.int_value(pos, s))
                .collect::<Result<_, _>>()
                .map(ClauseValue::IntList),
            RawValue::List(items) => items
                .into_iter()
                .map(|(pos, s)| self.str_value(pos, subject, s))
                .collect::<Result<_, _>>()
                .map(ClauseValue::StrList),
        }
    }

    fn int_value(&self, pos: usize, s: Scalar) -> Result<i64, FilterError> {
        let text = match s {
            Scalar::Str(t) | Scalar::Num(t) => t,
        };
        text.parse::<i64>()
            .map_err(|_| self.err(pos, format!("expected an integer value for 'version_number', found '{text}'")))
    }

    fn str_value(&self, pos: usize, subject: &Subject, s: Scalar) -> Result<String, FilterError> {
        match s {
            Scalar::Str(t) => Ok(t),
            Scalar::Num(n) => {
                Err(self.err(pos, format!("expected a quoted string value for {}, found {n}", subject.describe())))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// SQL generation
// ---------------------------------------------------------------------------

fn clause_sql(target: Target, clause: &Clause, params: &mut Vec<Value>) -> String {
    match &clause.subject {
        Subject::Attribute(attr) => attribute_sql(attr.column(), clause.comparator, &clause.value, params),
        Subject::Tag(key) => tag_sql(target, key, clause.comparator, &clause.value, params),
    }
}

fn attribute_sql(column: &str, comparator: Comparator, value: &ClauseValue, params: &mut Vec<Value>) -> String {
    match value {
        ClauseValue::Str(s) => {
            let (sql, param) = string_match(column, comparator, s);
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

fn list_sql(column: &str, comparator: Comparator, n: usize) -> String {
    let placeholders = vec!["?"; n].join(", ");
    format!("{column} {} ({placeholders})", comparator.as_str())
}

/// SQL and bound parameter for a scalar string comparison against `column`.
fn string_match(column: &str, comparator: Comparator, value: &str) -> (String, String) {
    match comparator {
        Comparator::Like => (format!("{column} GLOB ?"), like_to_glob(value)),
        Comparator::ILike => (format!("lower({column}) LIKE lower(?) ESCAPE '\\'"), like_to_sqlite_like(value)),
        other => (format!("{column} {} ?", other.as_str()), value.to_owned()),
    }
}

fn tag_sql(target: Target, key: &str, comparator: Comparator, value: &ClauseValue, params: &mut Vec<Value>) -> String {
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
    let (cond, param) = string_match("t.value", comparator, text);
    params.push(Value::Text(param));
    format!("EXISTS ({sub} AND {cond})")
}

/// One element of an MLflow LIKE pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternPart {
    Literal(char),
    AnySequence,
    AnyChar,
}

/// Splits an MLflow LIKE pattern: `%` and `_` are wildcards, a backslash
/// makes a following `%`, `_` or `\` literal; any other backslash is literal.
fn pattern_parts(pattern: &str) -> Vec<PatternPart> {
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
fn like_to_glob(pattern: &str) -> String {
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
fn like_to_sqlite_like(pattern: &str) -> String {
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

// ---------------------------------------------------------------------------
// order_by
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Int,
    Text,
}

/// A resolved sort column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyCol {
    key: &'static str,
    expr: &'static str,
    kind: KeyKind,
    asc: bool,
}

struct OrderKeyDef {
    /// Name accepted in `order_by`.
    name: &'static str,
    /// Canonical key name (aliases share it), used in messages.
    canonical: &'static str,
    expr: &'static str,
    kind: KeyKind,
}

const RM_ORDER_KEYS: [OrderKeyDef; 4] = [
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

const MV_ORDER_KEYS: [OrderKeyDef; 4] = [
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

fn key_col(target: Target, name: &str, asc: bool) -> Option<KeyCol> {
    target.order_keys().iter().find(|d| d.name == name).map(|d| KeyCol {
        key: d.canonical,
        expr: d.expr,
        kind: d.kind,
        asc,
    })
}

/// Splits an `order_by` entry into words, removing backquotes/double quotes.
fn order_by_words(entry: &str) -> Result<Vec<String>, FilterError> {
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

fn parse_order_entry(target: Target, entry: &str) -> Result<KeyCol, FilterError> {
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
fn resolve_order_by(target: Target, order_by: &[String]) -> Result<Vec<KeyCol>, FilterError> {
    let mut keys: Vec<KeyCol> = Vec::new();
    for entry in order_by.iter().filter(|e| !e.trim().is_empty()) {
        let col = parse_order_entry(target, entry)?;
        if keys.iter().any(|k| k.expr == col.expr) {
            return Err(FilterError::OrderBy(format!("Invalid order_by {order_by:?}: duplicate key '{}'", col.key)));
        }
        keys.push(col);
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
fn keyset_sql(keys: &[KeyCol], values: &[Value], params: &mut Vec<Value>) -> String {
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

// ---------------------------------------------------------------------------
// Page token plumbing
// ---------------------------------------------------------------------------

fn fnv1a64(seed: u64, data: &[u8]) -> u64 {
    data.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Stable hash of everything that determines the result set and its order.
fn fingerprint(target: Target, filter_sql: &str, params: &[Value], order_sql: &str) -> u64 {
    let mut canon = format!(
        "v{TOKEN_VERSION}|{}|{}:{filter_sql}|{}:{order_sql}|",
        target.code(),
        filter_sql.len(),
        order_sql.len()
    );
    for p in params {
        match p {
            Value::Integer(i) => {
                let _ = write!(canon, "i{i};");
            }
            Value::Text(s) => {
                let _ = write!(canon, "s{}:{s};", s.len());
            }
            other => {
                let _ = write!(canon, "o{other:?};");
            }
        }
    }
    fnv1a64(FNV_OFFSET, canon.as_bytes())
}

/// Integrity check appended to the token payload (detects corruption and
/// casual edits; tokens are not secret and carry no authority).
fn token_checksum(payload: &[u8]) -> u64 {
    fnv1a64(fnv1a64(FNV_OFFSET, b"regserve/page-token"), payload)
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut buf = [0u8; 4];
        buf[1..=chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes(buf);
        for i in 0..=chunk.len() {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(B64URL[idx as usize]));
        }
    }
    out
}

fn b64url_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Strict unpadded base64url decoding (rejects non-canonical trailing bits).
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    for chunk in bytes.chunks(4) {
        let mut n: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            n |= b64url_value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        if n & ((1u32 << (24 - 8 * produced)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&n.to_be_bytes()[1..=produced]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;
    use std::cmp::Ordering;
    use std::collections::{HashMap, HashSet};

    const SCHEMA: &str = "
        CREATE TABLE registered_models (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '', creation_timestamp INTEGER NOT NULL, last_updated_timestamp INTEGER NOT NULL, next_version INTEGER NOT NULL DEFAULT 1);
        CREATE TABLE registered_model_tags (model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (model_id, key));
        CREATE TABLE model_versions (model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE, version INTEGER NOT NULL, creation_timestamp INTEGER NOT NULL, last_updated_timestamp INTEGER NOT NULL, description TEXT NOT NULL DEFAULT '', user_id TEXT NOT NULL DEFAULT '', current_stage TEXT NOT NULL DEFAULT 'None', source TEXT NOT NULL, run_id TEXT NOT NULL DEFAULT '', run_link TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'READY', status_message TEXT NOT NULL DEFAULT '', storage_location TEXT NOT NULL DEFAULT '', logged_model_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (model_id, version));
        CREATE TABLE model_version_tags (model_id INTEGER NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (model_id, version, key), FOREIGN KEY (model_id, version) REFERENCES model_versions(model_id, version) ON DELETE CASCADE);
    ";

    const PROMPT_FILTER: &str = "tags.`mlflow.prompt.is_prompt` != 'true'";

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn add_model(c: &Connection, name: &str, created: i64, updated: i64) -> i64 {
        c.execute(
            "INSERT INTO registered_models (name, creation_timestamp, last_updated_timestamp) \
             VALUES (?1, ?2, ?3)",
            params![name, created, updated],
        )
        .unwrap();
        c.last_insert_rowid()
    }

    fn model_id(c: &Connection, name: &str) -> i64 {
        c.query_row("SELECT id FROM registered_models WHERE name = ?1", [name], |r| r.get(0)).unwrap()
    }

    fn add_model_tag(c: &Connection, id: i64, key: &str, value: &str) {
        c.execute(
            "INSERT INTO registered_model_tags (model_id, key, value) VALUES (?1, ?2, ?3)",
            params![id, key, value],
        )
        .unwrap();
    }

    fn add_version(c: &Connection, id: i64, version: i64, source: &str, run_id: &str) {
        c.execute(
            "INSERT INTO model_versions (model_id, version, creation_timestamp, \
             last_updated_timestamp, source, run_id) VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
            params![id, version, version * 10, source, run_id],
        )
        .unwrap();
    }

    fn add_version_tag(c: &Connection, id: i64, version: i64, key: &str, value: &str) {
        c.execute(
            "INSERT INTO model_version_tags (model_id, version, key, value) \
             VALUES (?1, ?2, ?3, ?4)",
            params![id, version, key, value],
        )
        .unwrap();
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Registered-model names matching `filter`, in the default order.
    fn rm_names(c: &Connection, filter: &str) -> Vec<String> {
        let q = build(Target::RegisteredModels, filter, &[], None).unwrap_or_else(|e| panic!("{filter}: {e}"));
        q.fetch_page(c, "rm.name", 1000, |r| r.get(0)).unwrap().0
    }

    /// Model versions matching `filter`, as sorted `name/version` strings.
    fn mv_ids(c: &Connection, filter: &str) -> Vec<String> {
        let q = build(Target::ModelVersions, filter, &[], None).unwrap_or_else(|e| panic!("{filter}: {e}"));
        let mut out: Vec<String> = q
            .fetch_page(c, "rm.name, mv.version", 1000, |r| {
                Ok(format!("{}/{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .unwrap()
            .0;
        out.sort();
        out
    }

    fn err(target: Target, filter: &str) -> String {
        match build(target, filter, &[], None) {
            Ok(q) => panic!("expected an error for {filter:?}, got {q:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn order_err(target: Target, order_by: &[&str]) -> String {
        match build(target, "", &strings(order_by), None) {
            Ok(q) => panic!("expected an error for {order_by:?}, got {q:?}"),
            Err(e) => e.to_string(),
        }
    }

    // ------------------------------------------------------------------
    // Parsing
    // ------------------------------------------------------------------

    fn one(target: Target, filter: &str) -> Clause {
        let mut clauses = parse(target, filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(clauses.len(), 1, "{filter}");
        clauses.remove(0)
    }

    fn name_eq(v: &str) -> Clause {
        Clause {
            subject: Subject::Attribute(Attribute::Name),
            comparator: Comparator::Eq,
            value: ClauseValue::Str(v.to_owned()),
        }
    }

    #[test]
    fn empty_filter_means_no_condition() {
        for f in ["", "   ", "\t\n "] {
            assert!(parse(Target::RegisteredModels, f).unwrap().is_empty());
            let q = build(Target::ModelVersions, f, &[], None).unwrap();
            assert_eq!(q.where_sql, "1=1");
            assert!(q.params.is_empty());
        }
    }

    #[test]
    fn parses_attribute_spellings() {
        for f in [
            "name = 'm'",
            "name='m'",
            "attribute.name = 'm'",
            "attributes.name = 'm'",
            "attr.name = 'm'",
            "`name` = 'm'",
            "attribute.`name` = 'm'",
            "  name   =   \"m\"  ",
        ] {
            assert_eq!(one(Target::RegisteredModels, f), name_eq("m"), "{f}");
        }
        let c = one(Target::ModelVersions, "source_path LIKE 's3://%'");
        assert_eq!(c.subject, Subject::Attribute(Attribute::SourcePath));
        assert_eq!(c.comparator, Comparator::Like);
    }

    #[test]
    fn parses_tag_spellings() {
        let cases = [
            ("tags.k = 'v'", "k"),
            ("tag.k = 'v'", "k"),
            ("tags.`mlflow.prompt.is_prompt` = 'v'", "mlflow.prompt.is_prompt"),
            ("tags.\"my key\" = 'v'", "my key"),
            ("tags.my.dotted.key = 'v'", "my.dotted.key"),
            ("`tags`.`a b` = 'v'", "a b"),
            ("TAGS.k = 'v'", "k"),
            ("tags.`it``s` = 'v'", "it`s"),
        ];
        for (f, key) in cases {
            let c = one(Target::RegisteredModels, f);
            assert_eq!(c.subject, Subject::Tag(key.to_owned()), "{f}");
            assert_eq!(c.value, ClauseValue::Str("v".to_owned()), "{f}");
        }
    }

    #[test]
    fn parses_quoted_values_and_escapes() {
        let cases = [
            ("name = 'it''s'", "it's"),
            (r"name = 'it\'s'", "it's"),
            ("name = \"say \"\"hi\"\"\"", "say \"hi\""),
            (r#"name = "say \"hi\"""#, "say \"hi\""),
            (r"name = 'a\\b'", r"a\b"),
            (r"name = 'a\b'", r"a\b"),
            ("name = ''", ""),
            ("name = 'with AND inside'", "with AND inside"),
            ("name = 'Ünïcødé'", "Ünïcødé"),
        ];
        for (f, v) in cases {
            assert_eq!(one(Target::RegisteredModels, f), name_eq(v), "{f}");
        }
    }

    #[test]
    fn parses_comparators_case_insensitively() {
        let cases = [
            ("name like 'a%'", Comparator::Like),
            ("name Like 'a%'", Comparator::Like),
            ("name iLike 'a%'", Comparator::ILike),
            ("name != 'a'", Comparator::Ne),
            ("name <> 'a'", Comparator::Ne),
            ("run_id in ('a')", Comparator::In),
            ("run_id not   in ('a')", Comparator::NotIn),
            ("version_number >= 2", Comparator::Ge),
            ("version_number<2", Comparator::Lt),
        ];
        for (f, op) in cases {
            assert_eq!(one(Target::ModelVersions, f).comparator, op, "{f}");
        }
    }

    #[test]
    fn parses_lists_and_integers() {
        let c = one(Target::ModelVersions, "run_id IN ('a', \"b\",'c' )");
        assert_eq!(c.value, ClauseValue::StrList(strings(&["a", "b", "c"])));
        let c = one(Target::ModelVersions, "version_number IN (1, '2',3)");
        assert_eq!(c.value, ClauseValue::IntList(vec![1, 2, 3]));
        let c = one(Target::ModelVersions, "version_number = '7'");
        assert_eq!(c.value, ClauseValue::Int(7));
        let c = one(Target::ModelVersions, "version_number != -1");
        assert_eq!(c.value, ClauseValue::Int(-1));
        let clauses = parse(Target::ModelVersions, "name = 'a' and run_id = 'r' AND tags.k != 'v'").unwrap();
        assert_eq!(clauses.len(), 3);
        assert_eq!(clauses[1].subject, Subject::Attribute(Attribute::RunId));
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let rm = Target::RegisteredModels;
        let mv = Target::ModelVersions;
        let e = err(rm, "bogus filter");
        assert!(e.starts_with("Invalid clause(s) in filter string: bogus filter"), "{e}");
        assert!(e.contains("position 0"), "{e}");

        let e = err(rm, "name = ");
        assert_eq!(e, "Invalid filter 'name = ': expected a value after '=' at position 7");

        let e = err(rm, "run_id = 'r'");
        assert!(e.contains("invalid attribute key 'run_id'"), "{e}");
        assert!(e.contains("valid keys are name, tags.<key>"), "{e}");
        let e = err(mv, "attribute.foo = 'x'");
        assert!(e.contains("invalid attribute key 'foo'"), "{e}");
        assert!(e.contains("name, run_id, version_number, source_path, tags.<key>"), "{e}");
        assert!(e.contains("at position 10"), "{e}");

        let e = err(mv, "version_number LIKE '1'");
        assert!(e.contains("invalid comparator 'LIKE' for attribute 'version_number'"), "{e}");
        assert!(e.contains("at position 15"), "{e}");

        let e = err(rm, "name = 'abc");
        assert!(e.contains("unterminated string starting at position 7"), "{e}");
        let e = err(rm, "tags.`abc = 'x'");
        assert!(e.contains("unterminated quoted identifier"), "{e}");

        let e = err(rm, "name = 'a' OR name = 'b'");
        assert!(e.contains("OR is not supported"), "{e}");
        assert!(e.contains("position 11"), "{e}");
        let e = err(rm, "name = 'a' or name = 'b'");
        assert!(e.contains("OR is not supported"), "{e}");

        let e = err(rm, "name = 'a' AND");
        assert!(e.contains("expected a clause after AND at position 14"), "{e}");
        let e = err(rm, "AND name = 'a'");
        assert!(e.contains("expected a clause before AND at position 0"), "{e}");
        let e = err(rm, "name = 'a' name = 'b'");
        assert!(e.contains("expected AND or the end of the filter"), "{e}");
        assert!(e.contains("at position 11"), "{e}");

        let e = err(rm, "name = foo");
        assert!(e.contains("expected a quoted string value, found 'foo'"), "{e}");
        let e = err(rm, "name = 5");
        assert!(e.contains("expected a quoted string value for attribute 'name'"));
        let e = err(rm, "tags.k = 5");
        assert!(e.contains("expected a quoted string value for tag 'k'"), "{e}");
        let e = err(mv, "version_number = 1.5");
        assert!(e.contains("expected an integer value"), "{e}");
        let e = err(mv, "version_number = 'x'");
        assert!(e.contains("expected an integer value"), "{e}");
        let e = err(mv, "source_path IN ('a')");
        assert!(e.contains("invalid comparator 'IN'"), "{e}");
        let e = err(mv, "tags.k IN ('a')");
        assert!(e.contains("invalid comparator 'IN' for tag 'k'"), "{e}");
        let e = err(mv, "run_id IN ()");
        assert!(e.contains("at least one value"), "{e}");
        let e = err(mv, "run_id IN ('a'");
        assert!(e.contains("unterminated list"), "{e}");
        let e = err(mv, "run_id IN 'a'");
        assert!(e.contains("parenthesized list"), "{e}");
        let e = err(mv, "run_id NOT LIKE 'a'");
        assert!(e.contains("expected IN after NOT"), "{e}");
        let e = err(mv, "name == 'a'");
        assert!(e.contains("unknown comparator '=='"), "{e}");
        let e = err(rm, "tags. = 'a'");
        assert!(e.contains("expected a key after 'tags.' at position 5"), "{e}");
        let e = err(rm, "tags.`` = 'a'");
        assert!(e.contains("tag key must not be empty"), "{e}");
        let e = err(rm, "params.x = 'a'");
        assert!(e.contains("invalid entity type 'params'"), "{e}");
        let e = err(rm, "(name = 'a')");
        assert!(e.starts_with("Invalid clause(s) in filter string: (name = 'a')"));
        let e = err(rm, "name");
        assert!(e.starts_with("Invalid clause(s) in filter string: name"), "{e}");
        let e = err(rm, "name = 'a' AND garbage here AND name = 'b'");
        assert!(e.starts_with("Invalid clause(s) in filter string: garbage here (at position 15"), "{e}");
        // Every filter error names the filter or the clause the user wrote.
        assert!(matches!(build(rm, "name = ", &[], None), Err(FilterError::Filter(_))));
    }

    #[test]
    fn like_pattern_translation() {
        assert_eq!(like_to_glob("a%b_c"), "a*b?c");
        assert_eq!(like_to_glob("*?[]"), "[*][?][[][]]");
        assert_eq!(like_to_glob(r"100\%\_\\x"), r"100%_\x");
        assert_eq!(like_to_glob(r"a\b"), r"a\b");
        assert_eq!(like_to_sqlite_like("a%b_c"), "a%b_c");
        assert_eq!(like_to_sqlite_like(r"100\%\_\\x"), r"100\%\_\\x");
        assert_eq!(like_to_sqlite_like(r"a\b*"), r"a\\b*");
    }

    // ------------------------------------------------------------------
    // Filters executed against SQLite
    // ------------------------------------------------------------------

    fn name_fixture() -> Connection {
        let c = db();
        for (i, n) in [
            "Alpha",
            "alpha",
            "ALPHA-2",
            "beta",
            "a*b",
            "axb",
            "a?c",
            "abc",
            "a[1]",
            "a1",
            "a]",
            "x%y",
            "xzy",
            "x_y",
            "u\\v",
            "Ünïcode",
        ]
        .iter()
        .enumerate()
        {
            let i = i64::try_from(i).unwrap();
            add_model(&c, n, i, i);
        }
        c
    }

    #[test]
    fn sql_name_equality_is_case_sensitive() {
        let c = name_fixture();
        assert_eq!(rm_names(&c, "name = 'alpha'"), strings(&["alpha"]));
        assert_eq!(rm_names(&c, "name = 'ALPHA'"), Vec::<String>::new());
        let ne = rm_names(&c, "name != 'alpha'");
        assert_eq!(ne.len(), 15);
        assert!(!ne.contains(&"alpha".to_owned()));
        assert_eq!(rm_names(&c, "name IN ('beta', 'Alpha', 'nope')"), strings(&["Alpha", "beta"]));
        assert_eq!(rm_names(&c, "name NOT IN ('beta', 'Alpha')").len(), 14);
        assert_eq!(rm_names(&c, "name = 'Ünïcode'"), strings(&["Ünïcode"]));
    }

    #[test]
    fn sql_like_is_case_sensitive_and_ilike_is_not() {
        let c = name_fixture();
        assert_eq!(rm_names(&c, "name LIKE 'alpha%'"), strings(&["alpha"]));
        assert_eq!(rm_names(&c, "name LIKE 'Alpha'"), strings(&["Alpha"]));
        assert_eq!(rm_names(&c, "name LIKE 'A%'"), strings(&["ALPHA-2", "Alpha"]));
        assert_eq!(rm_names(&c, "name ILIKE 'alpha%'"), strings(&["ALPHA-2", "Alpha", "alpha"]));
        assert_eq!(rm_names(&c, "name ILIKE 'ALPHA'"), strings(&["Alpha", "alpha"]));
        assert_eq!(rm_names(&c, "name LIKE '%code'"), strings(&["Ünïcode"]));
        assert_eq!(rm_names(&c, "name LIKE '_nïcode'"), strings(&["Ünïcode"]));
        assert_eq!(rm_names(&c, "name LIKE 'a_c'"), strings(&["a?c", "abc"]));
        assert_eq!(rm_names(&c, "name ILIKE 'A_C'"), strings(&["a?c", "abc"]));
        assert_eq!(rm_names(&c, "name LIKE '%'").len(), 16);
        // SQLite's case_sensitive_like pragma must not change either semantics.
        c.execute_batch("PRAGMA case_sensitive_like = ON;").unwrap();
        assert_eq!(rm_names(&c, "name ILIKE 'alpha%'"), strings(&["ALPHA-2", "Alpha", "alpha"]));
        assert_eq!(rm_names(&c, "name LIKE 'alpha%'"), strings(&["alpha"]));
    }

    #[test]
    fn sql_like_treats_glob_metacharacters_literally() {
        let c = name_fixture();
        assert_eq!(rm_names(&c, "name LIKE 'a*b'"), strings(&["a*b"]));
        assert_eq!(rm_names(&c, "name LIKE 'a?c'"), strings(&["a?c"]));
        assert_eq!(rm_names(&c, "name LIKE 'a[1]'"), strings(&["a[1]"]));
        assert_eq!(rm_names(&c, "name LIKE 'a[%'"), strings(&["a[1]"]));
        assert_eq!(rm_names(&c, "name LIKE '%]'"), strings(&["a[1]", "a]"]));
        assert_eq!(rm_names(&c, "name LIKE 'a]'"), strings(&["a]"]));
        assert_eq!(rm_names(&c, "name ILIKE 'A*%'"), strings(&["a*b"]));
        assert_eq!(rm_names(&c, "name ILIKE 'a[1]'"), strings(&["a[1]"]));
        assert_eq!(rm_names(&c, "name ILIKE 'A?C'"), strings(&["a?c"]));
        assert_eq!(rm_names(&c, "name = 'a*b'"), strings(&["a*b"]));
    }

    #[test]
    fn sql_like_escaped_wildcards_and_backslashes() {
        let c = name_fixture();
        assert_eq!(rm_names(&c, "name LIKE 'x_y'"), strings(&["x%y", "x_y", "xzy"]));
        assert_eq!(rm_names(&c, r"name LIKE 'x\%y'"), strings(&["x%y"]));
        assert_eq!(rm_names(&c, r"name LIKE 'x\_y'"), strings(&["x_y"]));
        assert_eq!(rm_names(&c, r"name ILIKE 'X\%Y'"), strings(&["x%y"]));
        assert_eq!(rm_names(&c, r"name ILIKE 'X\_Y'"), strings(&["x_y"]));
        assert_eq!(rm_names(&c, r"name LIKE 'u\v'"), strings(&["u\\v"]));
        assert_eq!(rm_names(&c, r"name LIKE 'u\\\\%'"), strings(&["u\\v"]));
        assert_eq!(rm_names(&c, r"name ILIKE 'U\\\\V'"), strings(&["u\\v"]));
        assert_eq!(rm_names(&c, r"name ILIKE 'U\V'"), strings(&["u\\v"]));
        assert_eq!(rm_names(&c, r"name = 'u\\v'"), strings(&["u\\v"]));
    }

    fn tag_fixture() -> Connection {
        let c = db();
        let plain = add_model(&c, "plain", 1, 1);
        let prompt = add_model(&c, "prompt", 2, 2);
        let notprompt = add_model(&c, "explicit-model", 3, 3);
        let team = add_model(&c, "team-a", 4, 4);
        let team_b = add_model(&c, "team-b", 5, 5);
        let _ = plain;
        add_model_tag(&c, prompt, IS_PROMPT_TAG_KEY, "true");
        add_model_tag(&c, notprompt, IS_PROMPT_TAG_KEY, "false");
        add_model_tag(&c, team, "team", "Vision");
        add_model_tag(&c, team, "odd key", "x");
        add_model_tag(&c, team_b, "team", "vision-2");
        c
    }

    #[test]
    fn sql_tag_comparisons() {
        let c = tag_fixture();
        assert_eq!(rm_names(&c, "tags.team = 'Vision'"), strings(&["team-a"]));
        assert_eq!(rm_names(&c, "tag.team = 'vision'"), Vec::<String>::new());
        assert_eq!(rm_names(&c, "tags.team != 'Vision'"), strings(&["explicit-model", "plain", "prompt", "team-b"]));
        assert_eq!(rm_names(&c, "tags.team LIKE 'vision%'"), strings(&["team-b"]));
        assert_eq!(rm_names(&c, "tags.team ILIKE 'vision%'"), strings(&["team-a", "team-b"]));
        assert_eq!(rm_names(&c, "tags.`odd key` = 'x'"), strings(&["team-a"]));
        assert_eq!(rm_names(&c, "tags.\"odd key\" LIKE '%'"), strings(&["team-a"]));
        assert_eq!(rm_names(&c, "tags.team ILIKE '%' AND name LIKE '%-b'"), strings(&["team-b"]));
        assert_eq!(rm_names(&c, "tags.missing = 'x'"), Vec::<String>::new());
        assert_eq!(rm_names(&c, "tags.missing != 'x'").len(), 5);
    }

    #[test]
    fn sql_is_prompt_filters_match_untagged_models() {
        let c = tag_fixture();
        // What the MLflow client appends to every registered-model search.
        assert_eq!(rm_names(&c, PROMPT_FILTER), strings(&["explicit-model", "plain", "team-a", "team-b"]));
        assert_eq!(rm_names(&c, &format!("name LIKE 'team%' AND {PROMPT_FILTER}")), strings(&["team-a", "team-b"]));
        assert_eq!(rm_names(&c, "tags.`mlflow.prompt.is_prompt` = 'true'"), strings(&["prompt"]));
        assert_eq!(
            rm_names(&c, "tags.`mlflow.prompt.is_prompt` = 'false'"),
            strings(&["explicit-model", "plain", "team-a", "team-b"])
        );
    }

    fn version_fixture() -> Connection {
        let c = db();
        let a = add_model(&c, "alpha", 1, 1);
        let b = add_model(&c, "Beta", 2, 2);
        for v in 1..=4 {
            add_version(&c, a, v, &format!("s3://bucket/alpha/{v}"), &format!("run{v}"));
        }
        for v in 1..=3 {
            add_version(&c, b, v, &format!("file:///Beta/{v}"), &format!("run{}", v + 10));
        }
        add_version_tag(&c, a, 2, "stage", "prod");
        add_version_tag(&c, b, 3, "stage", "Prod");
        add_version_tag(&c, b, 1, IS_PROMPT_TAG_KEY, "true");
        c
    }

    #[test]
    fn sql_model_version_filters() {
        let c = version_fixture();
        let mv = |f: &str| mv_ids(&c, f);
        assert_eq!(mv("name = 'Beta'"), strings(&["Beta/1", "Beta/2", "Beta/3"]));
        assert_eq!(mv("name = 'beta'"), Vec::<String>::new());
        assert_eq!(mv("name ILIKE 'beta'").len(), 3);
        assert_eq!(mv("run_id = 'run2'"), strings(&["alpha/2"]));
        assert_eq!(mv("run_id IN ('run1', 'run11', 'nope')"), strings(&["Beta/1", "alpha/1"]));
        assert_eq!(mv("run_id NOT IN ('run1', 'run2', 'run3', 'run4')").len(), 3);
        assert_eq!(mv("name = 'alpha' AND version_number = 3"), strings(&["alpha/3"]));
        assert_eq!(mv("name = 'alpha' AND version_number = '3'"), strings(&["alpha/3"]));
        assert_eq!(mv("version_number >= 3"), strings(&["Beta/3", "alpha/3", "alpha/4"]));
        assert_eq!(mv("version_number > 3"), strings(&["alpha/4"]));
        assert_eq!(mv("version_number < 2"), strings(&["Beta/1", "alpha/1"]));
        assert_eq!(mv("version_number <= 1").len(), 2);
        assert_eq!(mv("version_number != 1").len(), 5);
        assert_eq!(mv("version_number IN (1, 4)"), strings(&["Beta/1", "alpha/1", "alpha/4"]));
        assert_eq!(mv("version_number NOT IN (1, 2, 3)"), strings(&["alpha/4"]));
        assert_eq!(mv("source_path LIKE 's3://%'").len(), 4);
        assert_eq!(mv("source_path LIKE 'file:///beta%'").len(), 0);
        assert_eq!(mv("source_path ILIKE 'file:///beta%'").len(), 3);
        assert_eq!(mv("source_path = 's3://bucket/alpha/1'"), strings(&["alpha/1"]));
        assert_eq!(mv("tags.stage = 'prod'"), strings(&["alpha/2"]));
        assert_eq!(mv("tags.stage ILIKE 'prod'"), strings(&["Beta/3", "alpha/2"]));
        assert_eq!(mv("tags.stage != 'prod'").len(), 6);
        assert_eq!(mv(PROMPT_FILTER).len(), 6);
        assert!(!mv(PROMPT_FILTER).contains(&"Beta/1".to_owned()));
        assert_eq!(mv("attributes.name = 'alpha' AND tags.stage LIKE 'p%' AND run_id = 'run2'"), strings(&["alpha/2"]));
    }

    #[test]
    fn caller_conditions_keep_parameter_order() {
        let c = version_fixture();
        c.execute("UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE version = 2", []).unwrap();
        let page = |token: Option<&str>| {
            let mut q = build(Target::ModelVersions, "name = 'alpha'", &[], token).unwrap();
            q.push_condition("mv.current_stage != ?", [Value::Text("Deleted_Internal".into())]);
            q.fetch_page(&c, "mv.version", 2, |r| r.get::<_, i64>(0)).unwrap()
        };
        let (p1, t1) = page(None);
        assert_eq!(p1, vec![4, 3]);
        // Page 2 binds filter params, keyset params, then the caller's param.
        let (p2, t2) = page(t1.as_deref());
        assert_eq!(p2, vec![1]);
        assert_eq!(t2, None);
        // Placeholders are not values.
        let e = err(Target::ModelVersions, "version_number > ?");
        assert!(e.contains("expected a value after '>' at position 17"), "{e}");
    }

    #[test]
    fn values_are_bound_not_interpolated() {
        let c = name_fixture();
        let evil = "x'); DROP TABLE registered_models; --";
        let f = format!("name = \"{evil}\" AND tags.`k'); --` != \"{evil}\"");
        let q = build(Target::RegisteredModels, &f, &[], None).unwrap();
        assert!(!q.where_sql.contains("DROP"), "{}", q.where_sql);
        assert!(q.params.contains(&Value::Text(evil.to_owned())));
        assert!(rm_names(&c, &f).is_empty());
        assert_eq!(rm_names(&c, "").len(), 16);
    }

    #[test]
    fn fragments_only_use_known_aliases() {
        let q = build(
            Target::ModelVersions,
            "name = 'a' AND run_id IN ('r') AND tags.k ILIKE 'v' AND version_number > 1",
            &strings(&["last_updated_timestamp DESC"]),
            None,
        )
        .unwrap();
        assert_eq!(q.order_sql, "mv.last_updated_timestamp DESC, rm.name ASC, mv.version DESC");
        assert_eq!(q.key_select_sql, "mv.last_updated_timestamp, rm.name, mv.version");
        assert_eq!(q.params.len(), 5);
        assert_eq!(q.where_sql.matches('?').count(), q.params.len());
        assert!(q.where_sql.contains("t.model_id = mv.model_id AND t.version = mv.version"));
    }

    // ------------------------------------------------------------------
    // order_by
    // ------------------------------------------------------------------

    fn order_sql(target: Target, order_by: &[&str]) -> String {
        build(target, "", &strings(order_by), None).unwrap_or_else(|e| panic!("{order_by:?}: {e}")).order_sql
    }

    #[test]
    fn order_by_parsing_and_defaults() {
        let rm = Target::RegisteredModels;
        let mv = Target::ModelVersions;
        assert_eq!(order_sql(rm, &[]), "rm.name ASC, rm.id ASC");
        assert_eq!(order_sql(rm, &["name"]), "rm.name ASC, rm.id ASC");
        assert_eq!(order_sql(rm, &["name desc"]), "rm.name DESC, rm.id ASC");
        assert_eq!(order_sql(rm, &["`name`   DESC"]), "rm.name DESC, rm.id ASC");
        assert_eq!(order_sql(rm, &["attribute.name Asc"]), "rm.name ASC, rm.id ASC");
        assert_eq!(order_sql(rm, &["attributes.`name` DESC"]), "rm.name DESC, rm.id ASC");
        assert_eq!(order_sql(rm, &["`attribute.name`"]), "rm.name ASC, rm.id ASC");
        assert_eq!(
            order_sql(rm, &["last_updated_timestamp DESC"]),
            "rm.last_updated_timestamp DESC, rm.name ASC, rm.id ASC"
        );
        assert_eq!(order_sql(rm, &["timestamp"]), "rm.last_updated_timestamp ASC, rm.name ASC, rm.id ASC");
        assert_eq!(
            order_sql(rm, &["creation_timestamp DESC", "name DESC"]),
            "rm.creation_timestamp DESC, rm.name DESC, rm.id ASC"
        );
        assert_eq!(order_sql(rm, &["", "  "]), "rm.name ASC, rm.id ASC");
        assert_eq!(order_sql(mv, &[]), "rm.name ASC, mv.version DESC");
        assert_eq!(order_sql(mv, &["version_number DESC"]), "mv.version DESC, rm.name ASC");
        assert_eq!(order_sql(mv, &["version_number"]), "mv.version ASC, rm.name ASC");
        assert_eq!(
            order_sql(mv, &["creation_timestamp", "name DESC"]),
            "mv.creation_timestamp ASC, rm.name DESC, mv.version DESC"
        );
    }

    #[test]
    fn order_by_errors() {
        let rm = Target::RegisteredModels;
        let mv = Target::ModelVersions;
        let e = order_err(rm, &["bogus"]);
        assert!(e.contains("invalid order_by key 'bogus'"), "{e}");
        assert!(e.contains("valid keys are name, creation_timestamp, last_updated_timestamp, timestamp"), "{e}");
        let e = order_err(rm, &["version_number"]);
        assert!(e.contains("invalid order_by key 'version_number'"), "{e}");
        let e = order_err(mv, &["timestamp"]);
        assert!(e.contains("invalid order_by key 'timestamp'"), "{e}");
        let e = order_err(rm, &["name upward"]);
        assert!(e.contains("invalid direction 'upward'"), "{e}");
        let e = order_err(rm, &["name ASC extra"]);
        assert!(e.starts_with("Invalid order_by clause 'name ASC extra'"), "{e}");
        let e = order_err(rm, &["name", "name DESC"]);
        assert!(e.contains("duplicate key 'name'"), "{e}");
        let e = order_err(rm, &["timestamp", "last_updated_timestamp"]);
        assert!(e.contains("duplicate key 'last_updated_timestamp'"), "{e}");
        let e = order_err(rm, &["tags.k"]);
        assert!(e.contains("ordering by tags is not supported"), "{e}");
        let e = order_err(rm, &["`name"]);
        assert!(e.contains("unterminated quote"), "{e}");
        assert!(matches!(build(rm, "", &strings(&["x"]), None), Err(FilterError::OrderBy(_))));
    }

    #[test]
    fn order_by_executes_in_requested_order() {
        let c = db();
        for (n, created, updated) in [("b", 3, 10), ("a", 1, 20), ("c", 2, 10), ("D", 4, 5)] {
            add_model(&c, n, created, updated);
        }
        let run = |order: &[&str]| -> Vec<String> {
            build(Target::RegisteredModels, "", &strings(order), None)
                .unwrap()
                .fetch_page(&c, "rm.name", 100, |r| r.get(0))
                .unwrap()
                .0
        };
        assert_eq!(run(&[]), strings(&["D", "a", "b", "c"]));
        assert_eq!(run(&["name DESC"]), strings(&["c", "b", "a", "D"]));
        assert_eq!(run(&["creation_timestamp"]), strings(&["a", "c", "b", "D"]));
        assert_eq!(run(&["last_updated_timestamp DESC"]), strings(&["a", "b", "c", "D"]));
        assert_eq!(run(&["timestamp", "name DESC"]), strings(&["D", "c", "b", "a"]));

        let c = version_fixture();
        let run = |order: &[&str]| -> Vec<String> {
            build(Target::ModelVersions, "", &strings(order), None)
                .unwrap()
                .fetch_page(&c, "rm.name, mv.version", 100, |r| {
                    Ok(format!("{}/{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .unwrap()
                .0
        };
        assert_eq!(run(&[]), strings(&["Beta/3", "Beta/2", "Beta/1", "alpha/4", "alpha/3", "alpha/2", "alpha/1"]));
        assert_eq!(
            run(&["version_number DESC"]),
            strings(&["alpha/4", "Beta/3", "alpha/3", "Beta/2", "alpha/2", "Beta/1", "alpha/1"])
        );
        assert_eq!(
            run(&["name DESC", "version_number"]),
            strings(&["alpha/1", "alpha/2", "alpha/3", "alpha/4", "Beta/1", "Beta/2", "Beta/3"])
        );
    }

    // ------------------------------------------------------------------
    // Page tokens
    // ------------------------------------------------------------------

    #[test]
    fn base64url_roundtrip_and_strictness() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let enc = b64url_encode(&data);
            assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(b64url_decode(&enc), Some(data));
        }
        assert_eq!(b64url_encode(b"hello?>"), "aGVsbG8_Pg");
        assert_eq!(b64url_decode("A"), None);
        assert_eq!(b64url_decode("ab=c"), None);
        assert_eq!(b64url_decode("aGVsbG8_Ph"), None); // non-zero trailing bits
    }

    fn first_page_token(c: &Connection, target: Target, filter: &str, order: &[&str]) -> String {
        let select = match target {
            Target::RegisteredModels => "rm.name",
            Target::ModelVersions => "rm.name",
        };
        build(target, filter, &strings(order), None)
            .unwrap()
            .fetch_page(c, select, 2, |r| r.get::<_, String>(0))
            .unwrap()
            .1
            .expect("a next page")
    }

    #[test]
    fn page_token_is_bound_to_filter_order_and_target() {
        let c = name_fixture();
        let rm = Target::RegisteredModels;
        let token = first_page_token(&c, rm, "name LIKE 'a%'", &["name DESC"]);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let ok = |f: &str, o: &[&str]| build(rm, f, &strings(o), Some(&token)).is_ok();
        assert!(ok("name LIKE 'a%'", &["name DESC"]));
        // Equivalent spelling of the same filter / order is fine.
        assert!(ok("  attribute.name  like  \"a%\" ", &["`name` desc"]));
        let rejected = |f: &str, o: &[&str]| match build(rm, f, &strings(o), Some(&token)) {
            Err(FilterError::PageToken(m)) => assert!(m.contains("different"), "{m}"),
            other => panic!("expected a page_token error, got {other:?}"),
        };
        rejected("name LIKE 'b%'", &["name DESC"]);
        rejected("name LIKE 'a%'", &["name ASC"]);
        rejected("name LIKE 'a%'", &[]);
        rejected("", &["name DESC"]);
        match build(Target::ModelVersions, "name LIKE 'a%'", &strings(&["name DESC"]), Some(&token)) {
            Err(FilterError::PageToken(_)) => {}
            other => panic!("expected a page_token error, got {other:?}"),
        }
        // Empty tokens mean "first page".
        let q = build(rm, "", &[], Some("")).unwrap();
        assert_eq!(q.where_sql, "1=1");
        let q = build(rm, "", &[], Some("  ")).unwrap();
        assert_eq!(q.where_sql, "1=1");
    }

    #[test]
    fn malformed_or_tampered_tokens_are_rejected() {
        let c = name_fixture();
        let rm = Target::RegisteredModels;
        let token = first_page_token(&c, rm, "", &[]);
        let check = |t: &str| match build(rm, "", &[], Some(t)) {
            Err(e @ FilterError::PageToken(_)) => {
                assert!(e.to_string().starts_with("Invalid page_token: "), "{e}");
            }
            other => panic!("token {t:?} should be rejected, got {other:?}"),
        };
        for bad in ["x", "not a token", "%%%%", "AAAA", "eyJ2IjoxfQ", "{\"v\":1}"] {
            check(bad);
        }
        check(&"A".repeat(MAX_TOKEN_LEN + 4));
        // Changing any single character must be detected.
        let alphabet = B64URL.iter().map(|&b| char::from(b)).collect::<Vec<_>>();
        for i in 0..token.len() {
            let orig = token.as_bytes()[i];
            let replacement = alphabet.iter().copied().find(|&ch| ch as u32 != u32::from(orig)).unwrap();
            let mut t = token.clone();
            t.replace_range(i..=i, &replacement.to_string());
            check(&t);
        }
        check(&token[..token.len() - 1]);
        check(&format!("{token}A"));
        // A structurally valid token with a forged sort key of the wrong type.
        let q = build(rm, "", &[], None).unwrap();
        let forged = q.encode_token(&[Value::Integer(1), Value::Integer(2)]);
        check(&forged);
        let forged = q.encode_token(&[Value::Text("a".into())]);
        check(&forged);
        // A well-formed token for the same query is accepted.
        let good = q.encode_token(&[Value::Text("a".into()), Value::Integer(3)]);
        let q2 = build(rm, "", &[], Some(&good)).unwrap();
        assert_eq!(
            q2.params,
            vec![Value::Text("a".into()), Value::Text("a".into()), Value::Text("a".into()), Value::Integer(3),]
        );
    }

    #[test]
    fn next_page_token_reads_trailing_key_columns() {
        let c = name_fixture();
        let q = build(Target::RegisteredModels, "name LIKE 'a%'", &[], None).unwrap();
        assert_eq!(q.key_count(), 2);
        let sql = q.search_sql("rm.name, rm.description");
        let (name, token): (String, String) = c
            .query_row(&sql, rusqlite::params_from_iter(q.params.iter().chain([&Value::Integer(1)])), |r| {
                Ok((r.get(0)?, q.next_page_token(r, 2)?))
            })
            .unwrap();
        assert_eq!(name, "a*b");
        let q2 = build(Target::RegisteredModels, "name LIKE 'a%'", &[], Some(&token)).unwrap();
        let rest = q2.fetch_page(&c, "rm.name", 100, |r| r.get::<_, String>(0)).unwrap();
        assert_eq!(rest.0, strings(&["a1", "a?c", "a[1]", "a]", "abc", "alpha", "axb"]));
        assert_eq!(rest.1, None);
        // Wrong column index: a type error, not a bogus token.
        let bad = c.query_row(&sql, rusqlite::params_from_iter(q.params.iter().chain([&Value::Integer(1)])), |r| {
            q.next_page_token(r, 0)
        });
        assert!(bad.is_err());
    }

    #[test]
    fn exact_page_boundary_has_no_next_token() {
        let c = db();
        for i in 0..14 {
            add_model(&c, &format!("m{i:02}"), i, i);
        }
        let q = build(Target::RegisteredModels, "", &[], None).unwrap();
        let (p1, t1) = q.fetch_page(&c, "rm.name", 7, |r| r.get::<_, String>(0)).unwrap();
        assert_eq!(p1.len(), 7);
        let q = build(Target::RegisteredModels, "", &[], t1.as_deref()).unwrap();
        let (p2, t2) = q.fetch_page(&c, "rm.name", 7, |r| r.get::<_, String>(0)).unwrap();
        assert_eq!(p2.len(), 7);
        assert_eq!(t2, None);
        assert_eq!(p2[0], "m07");
    }

    // ------------------------------------------------------------------
    // Keyset pagination while others write
    // ------------------------------------------------------------------

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Item {
        name: String,
        version: i64,
        created: i64,
        updated: i64,
        prompt: bool,
    }

    impl Item {
        fn id(&self) -> (String, i64) {
            (self.name.clone(), self.version)
        }
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }

        fn pick<'v, T>(&mut self, items: &'v [T]) -> Option<&'v T> {
            if items.is_empty() {
                return None;
            }
            let n = u64::try_from(items.len()).unwrap();
            items.get(usize::try_from(self.below(n)).unwrap())
        }
    }

    fn insert_item(c: &Connection, target: Target, item: &Item) {
        match target {
            Target::RegisteredModels => {
                let id = add_model(c, &item.name, item.created, item.updated);
                if item.prompt {
                    add_model_tag(c, id, IS_PROMPT_TAG_KEY, "true");
                }
            }
            Target::ModelVersions => {
                c.execute(
                    "INSERT OR IGNORE INTO registered_models \
                     (name, creation_timestamp, last_updated_timestamp) VALUES (?1, 0, 0)",
                    [&item.name],
                )
                .unwrap();
                let id = model_id(c, &item.name);
                c.execute(
                    "INSERT INTO model_versions (model_id, version, creation_timestamp, \
                     last_updated_timestamp, source) VALUES (?1, ?2, ?3, ?4, 'src')",
                    params![id, item.version, item.created, item.updated],
                )
                .unwrap();
                if item.prompt {
                    add_version_tag(c, id, item.version, IS_PROMPT_TAG_KEY, "true");
                }
            }
        }
    }

    fn delete_item(c: &Connection, target: Target, item: &Item) {
        let n = match target {
            Target::RegisteredModels => {
                c.execute("DELETE FROM registered_models WHERE name = ?1", [&item.name]).unwrap()
            }
            Target::ModelVersions => c
                .execute(
                    "DELETE FROM model_versions WHERE version = ?2 AND model_id = \
                     (SELECT id FROM registered_models WHERE name = ?1)",
                    params![item.name, item.version],
                )
                .unwrap(),
        };
        assert_eq!(n, 1, "{item:?}");
    }

    fn item_select(target: Target) -> &'static str {
        match target {
            Target::RegisteredModels => {
                "rm.name, 0, rm.creation_timestamp, rm.last_updated_timestamp, \
                 EXISTS (SELECT 1 FROM registered_model_tags x WHERE x.model_id = rm.id \
                 AND x.key = 'mlflow.prompt.is_prompt' AND x.value = 'true')"
            }
            Target::ModelVersions => {
                "rm.name, mv.version, mv.creation_timestamp, mv.last_updated_timestamp, \
                 EXISTS (SELECT 1 FROM model_version_tags x WHERE x.model_id = mv.model_id \
                 AND x.version = mv.version AND x.key = 'mlflow.prompt.is_prompt' \
                 AND x.value = 'true')"
            }
        }
    }

    fn read_item(r: &Row<'_>) -> rusqlite::Result<Item> {
        Ok(Item { name: r.get(0)?, version: r.get(1)?, created: r.get(2)?, updated: r.get(3)?, prompt: r.get(4)? })
    }

    fn all_items(c: &Connection, target: Target) -> Vec<Item> {
        let sql = format!("SELECT {} FROM {}", item_select(target), target.from_sql());
        let mut stmt = c.prepare(&sql).unwrap();
        let rows = stmt.query_map([], read_item).unwrap();
        rows.collect::<rusqlite::Result<Vec<_>>>().unwrap()
    }

    struct Scenario {
        target: Target,
        order_by: &'static [&'static str],
        filter: &'static str,
        /// Full expected order (requested keys plus tie-breakers).
        cmp: fn(&Item, &Item) -> Ordering,
        matches: fn(&Item) -> bool,
        /// Makes a fresh item; must not collide with existing ones.
        make: fn(&mut Rng, usize) -> Item,
        initial: Vec<Item>,
    }

    /// Pages through `scenario` 7 rows at a time, inserting and deleting rows
    /// on both sides of the cursor between pages, and checks that every row
    /// present for the whole scan comes back exactly once, in order.
    fn run_scan(s: Scenario, seed: u64) {
        let c = db();
        for item in &s.initial {
            insert_item(&c, s.target, item);
        }
        let order = strings(s.order_by);
        let mut rng = Rng(seed);
        let mut seen: Vec<Item> = Vec::new();
        let mut deleted: HashSet<(String, i64)> = HashSet::new();
        let mut token: Option<String> = None;
        let (mut ins_before, mut ins_after, mut del_before, mut del_after) = (0, 0, 0, 0);
        let mut counter = 0usize;
        for page_no in 0.. {
            assert!(page_no < 100, "pagination does not terminate");
            let q = build(s.target, s.filter, &order, token.as_deref()).unwrap();
            let (page, next) = q.fetch_page(&c, item_select(s.target), 7, read_item).unwrap();
            assert!(page.len() <= 7);
            if next.is_some() {
                assert_eq!(page.len(), 7);
            }
            seen.extend(page.iter().cloned());
            let Some(next) = next else { break };
            token = Some(next);
            let cursor = page.last().unwrap().clone();

            // Concurrent writers: three inserts at random positions ...
            for _ in 0..3 {
                counter += 1;
                let item = (s.make)(&mut rng, counter);
                if (s.cmp)(&item, &cursor) == Ordering::Less {
                    ins_before += 1;
                } else {
                    ins_after += 1;
                }
                insert_item(&c, s.target, &item);
            }
            // ... one delete behind the cursor, one ahead of it, and every
            // third page the cursor row itself.
            let current = all_items(&c, s.target);
            let (behind, ahead): (Vec<Item>, Vec<Item>) =
                current.into_iter().partition(|i| (s.cmp)(i, &cursor) != Ordering::Greater);
            let mut victims: Vec<Item> = Vec::new();
            if page_no % 3 == 1 {
                victims.push(cursor.clone());
            } else if let Some(v) = rng.pick(&behind) {
                victims.push(v.clone());
            }
            if let Some(v) = rng.pick(&ahead) {
                victims.push(v.clone());
            }
            for v in victims {
                if (s.cmp)(&v, &cursor) == Ordering::Greater {
                    del_after += 1;
                } else {
                    del_before += 1;
                }
                delete_item(&c, s.target, &v);
                deleted.insert(v.id());
            }
        }

        assert!(ins_before > 0 && ins_after > 0, "{ins_before} {ins_after}");
        assert!(del_before > 0 && del_after > 0, "{del_before} {del_after}");

        // No row is returned twice, not even rows inserted mid-scan.
        let mut counts: HashMap<(String, i64), usize> = HashMap::new();
        for item in &seen {
            *counts.entry(item.id()).or_default() += 1;
        }
        for (id, n) in &counts {
            assert_eq!(*n, 1, "{id:?} returned {n} times");
        }
        // Every row that existed for the whole scan (and matches) is returned.
        let stable: Vec<&Item> = s.initial.iter().filter(|i| (s.matches)(i) && !deleted.contains(&i.id())).collect();
        assert!(stable.len() >= 25, "scenario too small: {}", stable.len());
        for item in &stable {
            assert!(counts.contains_key(&item.id()), "{item:?} was skipped");
        }
        // Only matching rows, in strictly increasing requested order.
        assert!(seen.iter().all(|i| (s.matches)(i)));
        for w in seen.windows(2) {
            assert_eq!((s.cmp)(&w[0], &w[1]), Ordering::Less, "{:?} !< {:?}", w[0], w[1]);
        }
    }

    fn by_name(a: &Item, b: &Item) -> Ordering {
        a.name.as_bytes().cmp(b.name.as_bytes())
    }

    fn rm_item(name: String, created: i64, updated: i64, prompt: bool) -> Item {
        Item { name, version: 0, created, updated, prompt }
    }

    fn mv_item(name: String, version: i64, created: i64, updated: i64) -> Item {
        Item { name, version, created, updated, prompt: false }
    }

    fn rm_initial(prompts: bool) -> Vec<Item> {
        (0..50i64)
            .map(|i| {
                // Insertion order differs from name order on purpose.
                let n = (i * 17) % 50;
                rm_item(format!("m{n:03}"), i, 1000 * (n % 3), prompts && n % 7 == 0)
            })
            .collect()
    }

    #[test]
    fn keyset_scan_models_by_name_asc() {
        for seed in [1, 2, 3] {
            run_scan(
                Scenario {
                    target: Target::RegisteredModels,
                    order_by: &["name ASC"],
                    filter: "",
                    cmp: by_name,
                    matches: |_| true,
                    make: |rng, n| rm_item(format!("m{:03}x{n}", rng.below(60)), 0, 0, false),
                    initial: rm_initial(false),
                },
                seed,
            );
        }
    }

    #[test]
    fn keyset_scan_models_by_last_updated_desc_with_ties_and_filter() {
        for seed in [4, 5, 6] {
            run_scan(
                Scenario {
                    target: Target::RegisteredModels,
                    order_by: &["last_updated_timestamp DESC"],
                    filter: PROMPT_FILTER,
                    cmp: |a, b| b.updated.cmp(&a.updated).then_with(|| by_name(a, b)),
                    matches: |i| !i.prompt,
                    make: |rng, n| {
                        let updated = 1000 * i64::try_from(rng.below(3)).unwrap();
                        let prompt = rng.below(4) == 0;
                        rm_item(format!("m{:03}y{n}", rng.below(60)), 0, updated, prompt)
                    },
                    initial: rm_initial(true),
                },
                seed,
            );
        }
    }

    #[test]
    fn keyset_scan_models_by_creation_desc_then_name_desc() {
        run_scan(
            Scenario {
                target: Target::RegisteredModels,
                order_by: &["creation_timestamp DESC", "name DESC"],
                filter: "name LIKE 'm%'",
                cmp: |a, b| b.created.cmp(&a.created).then_with(|| by_name(b, a)),
                matches: |i| i.name.starts_with('m'),
                make: |rng, n| {
                    let created = i64::try_from(rng.below(10)).unwrap() * 5;
                    let prefix = if rng.below(4) == 0 { "z" } else { "m" };
                    rm_item(format!("{prefix}{:03}c{n}", rng.below(60)), created, 0, false)
                },
                initial: (0..50i64).map(|i| rm_item(format!("m{i:03}"), (i % 10) * 5, 0, false)).collect(),
            },
            7,
        );
    }

    fn mv_initial() -> Vec<Item> {
        let mut out = Vec::new();
        for m in 0..5i64 {
            for v in 1..=10i64 {
                out.push(mv_item(format!("model{m}"), v, v * 100 + m, 1000 * ((v + m) % 3)));
            }
        }
        out
    }

    fn mv_make(rng: &mut Rng, n: usize) -> Item {
        // New models (versions 1..) and new versions of existing models, with
        // version numbers that are unique per name.
        let model = rng.below(7);
        let n = i64::try_from(n).unwrap();
        let version = if model >= 5 { n } else { 10 + n };
        let updated = 1000 * i64::try_from(rng.below(3)).unwrap();
        mv_item(format!("model{model}"), version, n, updated)
    }

    #[test]
    fn keyset_scan_versions_by_version_number_desc() {
        for seed in [8, 9] {
            run_scan(
                Scenario {
                    target: Target::ModelVersions,
                    order_by: &["version_number DESC"],
                    filter: "",
                    cmp: |a, b| b.version.cmp(&a.version).then_with(|| by_name(a, b)),
                    matches: |_| true,
                    make: |rng, n| {
                        let mut item = mv_make(rng, n);
                        // Also insert low version numbers, which sort after
                        // the cursor under version_number DESC.
                        if rng.below(2) == 0 {
                            item.name = format!("new{n}");
                            item.version = i64::try_from(rng.below(10)).unwrap() + 1;
                        }
                        item
                    },
                    initial: mv_initial(),
                },
                seed,
            );
        }
    }

    #[test]
    fn keyset_scan_versions_default_order_with_filter() {
        run_scan(
            Scenario {
                target: Target::ModelVersions,
                order_by: &[],
                filter: "name LIKE 'model%' AND version_number >= 1",
                cmp: |a, b| by_name(a, b).then_with(|| b.version.cmp(&a.version)),
                matches: |i| i.name.starts_with("model"),
                make: mv_make,
                initial: mv_initial(),
            },
            10,
        );
    }

    #[test]
    fn keyset_scan_versions_by_last_updated_desc_with_ties() {
        for seed in [11, 12] {
            run_scan(
                Scenario {
                    target: Target::ModelVersions,
                    order_by: &["last_updated_timestamp DESC"],
                    filter: "",
                    cmp: |a, b| {
                        b.updated.cmp(&a.updated).then_with(|| by_name(a, b)).then_with(|| b.version.cmp(&a.version))
                    },
                    matches: |_| true,
                    make: mv_make,
                    initial: mv_initial(),
                },
                seed,
            );
        }
    }
}
