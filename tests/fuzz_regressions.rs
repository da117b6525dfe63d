//! Inputs the fuzz targets in `fuzz/` found crashing or breaking an invariant, each fed exactly
//! as found (see fuzz/README.md). Every one of them must now be a clean error, or a correct
//! result.

use regserve::runtime::convert::prepare;
use regserve::runtime::payload::parse_json;
use regserve::runtime::schema::{ColSpec, DType, ModelSchema, Signature, TensorInfo, ValueKind};
use regserve::runtime::ScoringErrorKind;

fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
    TensorInfo { name: name.into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
}

const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// The iris model with one `[N, 1]` input per column, as `models/iris-columns`.
fn per_column_iris() -> ModelSchema {
    let sig = Signature::Columns(
        IRIS.iter().map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true }).collect(),
    );
    ModelSchema::new(IRIS.iter().map(|n| info(n, DType::F32, &[-1, 1])).collect(), vec![], Some(sig)).unwrap()
}

/// payload_json crash-df65e319: positional rows of different lengths for a model with one
/// input per column indexed past the end of the short row (index out of bounds in
/// `convert::frame_inputs`).
#[test]
fn ragged_positional_rows_for_a_per_column_model() {
    let body = br#"{"inputs":[[5.7,4.4,1.4,1.4],[6.44,1.4],[6.4,3.2,5.3,2.3]]}"#;
    let payload = parse_json(body).unwrap().payload;
    let e = prepare(&per_column_iris(), &payload).unwrap_err();
    assert_eq!(e.kind, ScoringErrorKind::BadRequest, "{e}");
    assert!(e.message.contains("row 1 has 2 values but row 0 has 4"), "{e}");
    // Rectangular rows still work.
    let ok = parse_json(br#"{"inputs":[[5.7,4.4,1.4,1.4],[6.4,3.2,5.3,2.3]]}"#).unwrap().payload;
    assert_eq!(prepare(&per_column_iris(), &ok).unwrap().rows, 2);
}

/// properties `artifact_paths_stay_inside_the_root`, and artifact_path crash-dcc63425
/// (`dangling/`): a dangling symlink leading out of the root was accepted, because
/// `Path::exists` follows links and the check then only resolved the root itself; with a
/// trailing slash even `symlink_metadata` follows the link.
#[test]
fn dangling_links_out_of_the_artifact_root_are_refused() {
    use regserve::artifact::{ArtifactRoot, FetchError};
    let dir = tempfile::tempdir().unwrap();
    let root = ArtifactRoot::new(dir.path().join("root")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside/missing"), root.root().join("dangling")).unwrap();
    for rel in ["dangling", "dangling/", "dangling/x", "./dangling/x/y", "dangling%2F"] {
        assert!(matches!(root.path_of(rel), Err(FetchError::PathEscapes(_))), "{rel}");
    }
    // Paths that do not exist yet, and links that stay inside, are still fine.
    std::fs::create_dir_all(root.root().join("a")).unwrap();
    std::os::unix::fs::symlink(root.root().join("a"), root.root().join("in")).unwrap();
    for rel in ["new/file.onnx", "in/x", "a/b/c"] {
        assert!(root.path_of(rel).unwrap().starts_with(root.root()), "{rel}");
    }
}

fn registry_db() -> regserve::registry::Store {
    let store = regserve::registry::Store::open_in_memory().unwrap();
    store
        .database()
        .write(|tx| {
            tx.execute_batch(
                "INSERT INTO registered_models (id, name, creation_timestamp, last_updated_timestamp) VALUES (1, 'a', 1, 1), (2, 'b', 2, 2);
                 INSERT INTO registered_model_tags VALUES (1, 'x', 'a'), (2, 'x', 'a');",
            )
        })
        .unwrap();
    store
}

/// Filters the parser accepted but SQLite refused (an internal error instead of a bad filter):
/// 1100 clauses exceed SQLite's expression depth of 1000, 33000 `IN` values its 32766 bound
/// parameters, and a 20000-character `LIKE` pattern (60000 bytes as a GLOB) its 50000-byte
/// pattern limit. Found reading `filter.rs` while writing the filter target, and confirmed
/// with it (`fuzz/target/.../filter <file>`): now clean `FilterError::Filter`s.
#[test]
fn filters_beyond_sqlite_limits_are_refused_cleanly() {
    use regserve::registry::filter::{build, FilterError, Target};
    let too_big = [
        vec!["name = 'a'"; 1100].join(" AND "),
        vec!["tags.x = 'a'"; 1100].join(" AND "),
        format!("name IN ({})", vec!["'a'"; 33000].join(",")),
        format!("name LIKE '{}'", "*".repeat(20000)),
        format!("tags.x ILIKE '{}'", "%".repeat(20000)),
    ];
    for filter in &too_big {
        let e = build(Target::RegisteredModels, filter, &[], None).unwrap_err();
        assert!(matches!(e, FilterError::Filter(ref m) if m.contains("too long") || m.contains("longer than")), "{e}");
    }
    // Just inside the limits the SQL runs, including the keyset condition of a page token.
    let c = registry_db();
    let fits = [
        vec!["tags.x = 'a'"; 200].join(" AND "),
        format!("name IN ({})", vec!["'a'"; 10_000].join(",")),
        format!("name LIKE '{}'", "*".repeat(10_000)),
        format!("name ILIKE '{}'", "é".repeat(10_000)),
        format!("tags.x LIKE '{}'", "\u{10FFFF}".repeat(10_000)),
    ];
    for filter in &fits {
        let q = build(Target::RegisteredModels, filter, &[], None).unwrap();
        let (_, token) = c.database().read(|tx| q.fetch_page(tx, "rm.name", 1, |r| r.get::<String>(0))).unwrap();
        if let Some(token) = token {
            let q = build(Target::RegisteredModels, filter, &[], Some(&token)).unwrap();
            c.database().read(|tx| q.fetch_page(tx, "rm.name", 1, |r| r.get::<String>(0))).unwrap();
        }
    }
}

/// `levels` nested lists whose first element at each depth has `n` items and whose other
/// items are `0`: tiny as JSON, but its first elements claim `n^levels` values.
fn claims_huge_shape(levels: usize, n: usize) -> serde_json::Value {
    let mut v = serde_json::Value::from(vec![0; n]);
    for _ in 1..levels {
        let mut items = vec![v];
        items.extend(std::iter::repeat_n(serde_json::Value::from(0), n - 1));
        v = serde_json::Value::Array(items);
    }
    v
}

/// An 8 KB body (`{"instances": ...}`, 4 levels of 1000) made `tensor_from_json` reserve
/// room for the 10^12 values its first elements claim: "memory allocation of 1000000000000
/// bytes failed", an abort of the whole server. 8 levels of 256 overflowed the product
/// (a panic in debug builds). Found reviewing `convert.rs` for the payload_json target (which
/// only scores against a 4-D dynamic model) and confirmed with its binary.
#[test]
fn ragged_tensors_claiming_huge_shapes_do_not_allocate_them() {
    for (levels, n) in [(4, 1000), (8, 256)] {
        let schema = ModelSchema::new(vec![info("t", DType::I8, &vec![-1; levels])], vec![], None).unwrap();
        let body = serde_json::to_vec(&serde_json::json!({ "instances": claims_huge_shape(levels, n) })).unwrap();
        let payload = parse_json(&body).unwrap().payload;
        let e = prepare(&schema, &payload).unwrap_err();
        assert_eq!(e.kind, ScoringErrorKind::Schema, "{e}");
        assert!(e.message.contains("ragged"), "{e}");
    }
}
