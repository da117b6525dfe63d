//! Registry search filters: `registry::filter::build` for both search endpoints with arbitrary
//! filter strings, `order_by` lists and page tokens never panics, and every query it accepts
//! runs against a registry database with the real schema. Tokens come three ways: arbitrary
//! strings (almost always refused), the token of a real first page, and tokens minted from
//! arbitrary sort-key values.
//!
//! Input format (so seeds stay readable): the first line is the filter; each further line is
//! `o <order_by entry>`, `t <page token>`, `i <integer sort key>`, `s <text sort key>`,
//! `mv` (search model versions instead of registered models) or `n <page size>`.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use regserve::db::{self, Value};
use regserve::registry::filter::{build, Query, Target};
use regserve::registry::Store;

struct Input {
    target: Target,
    filter: String,
    order_by: Vec<String>,
    token: Option<String>,
    keys: Vec<Value>,
    page_size: usize,
}

fn decode(data: &[u8]) -> Input {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut input = Input {
        target: Target::RegisteredModels,
        filter: lines.next().unwrap_or_default().to_string(),
        order_by: Vec::new(),
        token: None,
        keys: Vec::new(),
        page_size: 2,
    };
    for line in lines {
        let Some((tag, rest)) = line.get(..2).map(|t| (t, &line[2..])) else { continue };
        match tag {
            "mv" => input.target = Target::ModelVersions,
            "o " => input.order_by.push(rest.to_string()),
            "t " => input.token = Some(rest.to_string()),
            "i " => input.keys.push(Value::Integer(rest.trim().parse().unwrap_or_default())),
            "s " => input.keys.push(Value::Text(rest.to_string())),
            "n " => input.page_size = rest.trim().parse::<usize>().unwrap_or(2).clamp(1, 8),
            _ => {}
        }
    }
    input
}

thread_local! {
    static DB: RefCell<Option<Store>> = const { RefCell::new(None) };
}

const SELECT: &str = "rm.name";

/// Run the query; it was accepted, so SQLite must accept it too.
fn run(c: &Store, q: &Query, page_size: usize, what: &str) -> Option<String> {
    let (rows, next) = c
        .database()
        .read(|tx| q.fetch_page(tx, SELECT, page_size, |r| r.get::<String>(0)))
        .unwrap_or_else(|e| panic!("{what}: accepted query fails in SQLite: {e}\nSQL: {}", q.search_sql(SELECT, page_size as u64 + 1)));
    assert!(rows.len() <= page_size);
    next
}

fuzz_target!(|data: &[u8]| {
    let input = decode(data);
    let (target, filter, order_by, page_size) = (input.target, &input.filter, &input.order_by, input.page_size);
    DB.with(|db| {
        let mut db = db.borrow_mut();
        let c = db.get_or_insert_with(regserve_fuzz::registry_db);

        if let Ok(q) = build(target, filter, order_by, input.token.as_deref()) {
            run(c, &q, page_size, "given token");
        }
        let Ok(first) = build(target, filter, order_by, None) else { return };
        if let Some(token) = run(c, &first, page_size, "first page") {
            let second = build(target, filter, order_by, Some(&token))
                .unwrap_or_else(|e| panic!("a token we issued is refused: {e}"));
            run(c, &second, page_size, "second page");
        }
        // Mint a token for arbitrary sort-key values (typed as the input chose).
        if input.keys.len() != first.key_count() {
            return;
        }
        let placeholders = (1..=input.keys.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let token = c
            .database()
            .read(|tx| {
                tx.query_row(&format!("SELECT {placeholders}"), &db::params_from(&input.keys), |r| {
                    first.next_page_token(r, 0)
                })
            })
            .ok();
        if let Some(token) = token {
            let q = build(target, filter, order_by, Some(&token))
                .unwrap_or_else(|e| panic!("a minted token is refused: {e}"));
            run(c, &q, page_size, "minted token");
        }
    });
});
