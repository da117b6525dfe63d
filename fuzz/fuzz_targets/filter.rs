//! Registry search filters: `registry::filter::build` for both search endpoints with arbitrary
//! filter strings, `order_by` lists and page tokens never panics, and every query it accepts
//! runs against a registry database with the real schema. Tokens come three ways: arbitrary
//! strings (almost always refused), the token of a real first page, and tokens minted from
//! arbitrary sort-key values.
#![no_main]

use std::cell::RefCell;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regserve::registry::filter::{build, Query, Target};
use rusqlite::types::Value;
use rusqlite::Connection;

#[derive(Debug, Arbitrary)]
enum Key {
    Int(i64),
    Text(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    versions: bool,
    filter: String,
    order_by: Vec<String>,
    token: Option<String>,
    keys: Vec<Key>,
    page_size: u8,
}

thread_local! {
    static DB: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

const SELECT: &str = "rm.name";

/// Run the query; it was accepted, so SQLite must accept it too.
fn run(c: &Connection, q: &Query, page_size: usize, what: &str) -> Option<String> {
    let (rows, next) = q
        .fetch_page(c, SELECT, page_size, |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{what}: accepted query fails in SQLite: {e}\nSQL: {}", q.search_sql(SELECT)));
    assert!(rows.len() <= page_size);
    next
}

fuzz_target!(|input: Input| {
    let target = if input.versions { Target::ModelVersions } else { Target::RegisteredModels };
    let page_size = usize::from(input.page_size % 4) + 1;
    DB.with(|db| {
        let mut db = db.borrow_mut();
        let c = db.get_or_insert_with(regserve_fuzz::registry_db);

        if let Ok(q) = build(target, &input.filter, &input.order_by, input.token.as_deref()) {
            run(c, &q, page_size, "arbitrary token");
        }
        let Ok(first) = build(target, &input.filter, &input.order_by, None) else { return };
        if let Some(token) = run(c, &first, page_size, "first page") {
            let second = build(target, &input.filter, &input.order_by, Some(&token))
                .unwrap_or_else(|e| panic!("a token we issued is refused: {e}"));
            run(c, &second, page_size, "second page");
        }
        // Mint a token for arbitrary sort-key values (typed as the fuzzer chose).
        if input.keys.len() != first.key_count() {
            return;
        }
        let values: Vec<Value> = input
            .keys
            .iter()
            .map(|k| match k {
                Key::Int(i) => Value::Integer(*i),
                Key::Text(s) => Value::Text(s.clone()),
            })
            .collect();
        let placeholders = (1..=values.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let token = c
            .query_row(&format!("SELECT {placeholders}"), rusqlite::params_from_iter(&values), |r| {
                first.next_page_token(r, 0)
            })
            .ok();
        if let Some(token) = token {
            let q = build(target, &input.filter, &input.order_by, Some(&token))
                .unwrap_or_else(|e| panic!("a minted token is refused: {e}"));
            run(c, &q, page_size, "minted token");
        }
    });
});
