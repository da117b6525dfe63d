//! The search grammar's tests: parsing, SQL on the registry's database (in-memory SQLite, or
//! PostgreSQL with `REGSERVE_TEST_POSTGRES`), order_by and page tokens.

use super::sql::{like_to_glob, like_to_sqlite_like};
use super::token::{b64url_decode, b64url_encode, B64URL};
use super::*;
use crate::db::{self, Row, ToValue};
use crate::params;
use crate::registry::{RegistryError, Store};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

const PROMPT_FILTER: &str = "tags.`mlflow.prompt.is_prompt` != 'true'";

/// The registry's database (`Store::open_in_memory`: SQLite, or a fresh PostgreSQL database
/// when `REGSERVE_TEST_POSTGRES` is set), with the small statement API these tests use.
struct Conn(Store);

impl Conn {
    fn execute(&self, sql: &str, p: &[&dyn ToValue]) -> Result<usize, RegistryError> {
        self.0.database().write(|tx| Ok(tx.execute(sql, p)?))
    }

    fn query_row<T>(
        &self,
        sql: &str,
        p: &[&dyn ToValue],
        f: impl Fn(&Row<'_>) -> Result<T, db::Error>,
    ) -> Result<T, RegistryError> {
        self.0.database().read(|tx| Ok(tx.query_row(sql, p, &f)?))
    }

    fn query_map<T>(
        &self,
        sql: &str,
        p: &[&dyn ToValue],
        f: impl Fn(&Row<'_>) -> Result<T, db::Error>,
    ) -> Result<Vec<T>, RegistryError> {
        self.0.database().read(|tx| Ok(tx.query_map(sql, p, &f)?))
    }

    fn insert_returning_id(&self, sql: &str, p: &[&dyn ToValue]) -> i64 {
        self.0.database().write(|tx| Ok::<_, RegistryError>(tx.query_row(sql, p, |r| r.get(0))?)).unwrap()
    }
}

/// [`Query::fetch_page`] in a read transaction of the test database.
trait FetchOn {
    fn fetch_page_on<T>(
        &self,
        c: &Conn,
        select: &str,
        max: usize,
        f: impl Fn(&Row<'_>) -> Result<T, db::Error>,
    ) -> Result<(Vec<T>, Option<String>), RegistryError>;
}

impl FetchOn for Query {
    fn fetch_page_on<T>(
        &self,
        c: &Conn,
        select: &str,
        max: usize,
        f: impl Fn(&Row<'_>) -> Result<T, db::Error>,
    ) -> Result<(Vec<T>, Option<String>), RegistryError> {
        c.0.database().read(|tx| Ok(self.fetch_page(tx, select, max, &f)?))
    }
}

/// The dialect of the database the tests run on.
fn dialect() -> Dialect {
    if std::env::var("REGSERVE_TEST_POSTGRES").is_ok_and(|u| !u.is_empty()) {
        Dialect::Postgres
    } else {
        Dialect::Sqlite
    }
}

/// `build` for the database the tests run on (shadows the module's, which builds SQLite's).
fn build(target: Target, filter: &str, order_by: &[String], page_token: Option<&str>) -> Result<Query, FilterError> {
    build_for(dialect(), target, filter, order_by, page_token)
}

fn db() -> Conn {
    Conn(Store::open_in_memory().unwrap())
}

fn add_model(c: &Conn, name: &str, created: i64, updated: i64) -> i64 {
    c.insert_returning_id(
        "INSERT INTO registered_models (name, creation_timestamp, last_updated_timestamp) \
             VALUES (?1, ?2, ?3) RETURNING id",
        params![name, created, updated],
    )
}

fn model_id(c: &Conn, name: &str) -> i64 {
    c.query_row("SELECT id FROM registered_models WHERE name = ?1", params![name], |r| r.get(0)).unwrap()
}

fn add_model_tag(c: &Conn, id: i64, key: &str, value: &str) {
    c.execute("INSERT INTO registered_model_tags (model_id, key, value) VALUES (?1, ?2, ?3)", params![id, key, value])
        .unwrap();
}

fn add_version(c: &Conn, id: i64, version: i64, source: &str, run_id: &str) {
    c.execute(
        "INSERT INTO model_versions (model_id, version, creation_timestamp, \
             last_updated_timestamp, source, run_id) VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
        params![id, version, version * 10, source, run_id],
    )
    .unwrap();
}

fn add_version_tag(c: &Conn, id: i64, version: i64, key: &str, value: &str) {
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
fn rm_names(c: &Conn, filter: &str) -> Vec<String> {
    let q = build(Target::RegisteredModels, filter, &[], None).unwrap_or_else(|e| panic!("{filter}: {e}"));
    q.fetch_page_on(c, "rm.name", 1000, |r| r.get(0)).unwrap().0
}

/// Model versions matching `filter`, as sorted `name/version` strings.
fn mv_ids(c: &Conn, filter: &str) -> Vec<String> {
    let q = build(Target::ModelVersions, filter, &[], None).unwrap_or_else(|e| panic!("{filter}: {e}"));
    let mut out: Vec<String> = q
        .fetch_page_on(c, "rm.name, mv.version", 1000, |r| Ok(format!("{}/{}", r.get::<String>(0)?, r.get::<i64>(1)?)))
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

fn name_fixture() -> Conn {
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
    if dialect() == Dialect::Sqlite {
        c.0.database()
            .write(|tx| Ok::<_, RegistryError>(tx.execute("PRAGMA case_sensitive_like = ON", params![])?))
            .unwrap();
    }
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

fn tag_fixture() -> Conn {
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

fn version_fixture() -> Conn {
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
    c.execute("UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE version = 2", params![]).unwrap();
    let page = |token: Option<&str>| {
        let mut q = build(Target::ModelVersions, "name = 'alpha'", &[], token).unwrap();
        q.push_condition("mv.current_stage != ?", [Value::Text("Deleted_Internal".into())]);
        q.fetch_page_on(&c, "mv.version", 2, |r| r.get::<i64>(0)).unwrap()
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
    assert_eq!(order_sql(mv, &[]), "mv.last_updated_timestamp DESC, rm.name ASC, mv.version DESC");
    assert_eq!(order_sql(mv, &["", " "]), "mv.last_updated_timestamp DESC, rm.name ASC, mv.version DESC");
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
            .fetch_page_on(&c, "rm.name", 100, |r| r.get(0))
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
            .fetch_page_on(&c, "rm.name, mv.version", 100, |r| {
                Ok(format!("{}/{}", r.get::<String>(0)?, r.get::<i64>(1)?))
            })
            .unwrap()
            .0
    };
    // MLflow's default: newest first (here version * 10), then name, then highest version.
    assert_eq!(run(&[]), strings(&["alpha/4", "Beta/3", "alpha/3", "Beta/2", "alpha/2", "Beta/1", "alpha/1"]));
    assert_eq!(
        run(&["name", "version_number DESC"]),
        strings(&["Beta/3", "Beta/2", "Beta/1", "alpha/4", "alpha/3", "alpha/2", "alpha/1"])
    );
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

fn first_page_token(c: &Conn, target: Target, filter: &str, order: &[&str]) -> String {
    let select = match target {
        Target::RegisteredModels => "rm.name",
        Target::ModelVersions => "rm.name",
    };
    build(target, filter, &strings(order), None)
        .unwrap()
        .fetch_page_on(c, select, 2, |r| r.get::<String>(0))
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
    let sql = q.search_sql("rm.name, rm.description", 1);
    let (name, token): (String, String) =
        c.query_row(&sql, &db::params_from(&q.params), |r| Ok((r.get(0)?, q.next_page_token(r, 2)?))).unwrap();
    assert_eq!(name, "a*b");
    let q2 = build(Target::RegisteredModels, "name LIKE 'a%'", &[], Some(&token)).unwrap();
    let rest = q2.fetch_page_on(&c, "rm.name", 100, |r| r.get::<String>(0)).unwrap();
    assert_eq!(rest.0, strings(&["a1", "a?c", "a[1]", "a]", "abc", "alpha", "axb"]));
    assert_eq!(rest.1, None);
    // Wrong column index: a type error, not a bogus token.
    let bad = c.query_row(&sql, &db::params_from(&q.params), |r| q.next_page_token(r, 0));
    assert!(bad.is_err());
}

#[test]
fn exact_page_boundary_has_no_next_token() {
    let c = db();
    for i in 0..14 {
        add_model(&c, &format!("m{i:02}"), i, i);
    }
    let q = build(Target::RegisteredModels, "", &[], None).unwrap();
    let (p1, t1) = q.fetch_page_on(&c, "rm.name", 7, |r| r.get::<String>(0)).unwrap();
    assert_eq!(p1.len(), 7);
    let q = build(Target::RegisteredModels, "", &[], t1.as_deref()).unwrap();
    let (p2, t2) = q.fetch_page_on(&c, "rm.name", 7, |r| r.get::<String>(0)).unwrap();
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

fn insert_item(c: &Conn, target: Target, item: &Item) {
    match target {
        Target::RegisteredModels => {
            let id = add_model(c, &item.name, item.created, item.updated);
            if item.prompt {
                add_model_tag(c, id, IS_PROMPT_TAG_KEY, "true");
            }
        }
        Target::ModelVersions => {
            c.execute(
                "INSERT INTO registered_models \
                     (name, creation_timestamp, last_updated_timestamp) VALUES (?1, 0, 0) ON CONFLICT DO NOTHING",
                params![item.name],
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

fn delete_item(c: &Conn, target: Target, item: &Item) {
    let n = match target {
        Target::RegisteredModels => {
            c.execute("DELETE FROM registered_models WHERE name = ?1", params![item.name]).unwrap()
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

fn read_item(r: &Row<'_>) -> Result<Item, db::Error> {
    Ok(Item { name: r.get(0)?, version: r.get(1)?, created: r.get(2)?, updated: r.get(3)?, prompt: r.get(4)? })
}

fn all_items(c: &Conn, target: Target) -> Vec<Item> {
    let sql = format!("SELECT {} FROM {}", item_select(target), target.from_sql());
    c.query_map(&sql, params![], read_item).unwrap()
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
        let (page, next) = q.fetch_page_on(&c, item_select(s.target), 7, read_item).unwrap();
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
            // MLflow's default: newest first, then name, then highest version.
            cmp: |a, b| b.updated.cmp(&a.updated).then_with(|| by_name(a, b)).then_with(|| b.version.cmp(&a.version)),
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
