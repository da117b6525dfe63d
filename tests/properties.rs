//! Property tests over the parsers of untrusted input: the invariants of the fuzz targets in
//! `fuzz/`, with generated inputs and a bounded number of cases so that `cargo test` runs them
//! in seconds. (The fuzz targets explore far more; see fuzz/README.md.)
//!
//! - `models:/` URIs print to a string that parses back to the same value
//! - scoring payloads never panic in `parse_json` / `prepare`, and what converts fills its
//!   tensors exactly (data length = product of shape, rows > 0)
//! - search filters never panic in `build`, and every accepted query runs in SQLite
//! - `ArtifactRoot::path_of` only returns paths inside the root, symlinks resolved
//! - the prediction writers always produce valid JSON

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use regserve::artifact::ArtifactRoot;
use regserve::registry::filter::{build, Target};
use regserve::runtime::convert::{
    prepare, tensor_from_v2, tensor_from_v2_binary, write_flat, write_predictions, InputTensor, OutputData,
    OutputTensor, Style, TensorData,
};
use regserve::runtime::decode::{prepare_body, prepare_via_values};
use regserve::runtime::payload::{parse_csv, parse_json, Format, Payload};
use regserve::runtime::schema::{ColSpec, DType, ModelSchema, Signature, TensorInfo, ValueKind};
use regserve::runtime::ScoringErrorKind;
use regserve::uri::ModelUri;
use serde_json::{json, Value};

fn runner(cases: u32) -> TestRunner {
    // No regression files written into the source tree: inputs found here go to
    // tests/fuzz_regressions.rs by hand.
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Run `test` on `cases` values of `strategy`; a failure reports the shrunk input.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(cases).run(&strategy, test) {
        panic!("{e}");
    }
}

// ------------------------------------------------------------------------------ URIs

fn uri_strings() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[a-zA-Z0-9._ -]{0,8}",
        "[a-z%@/?#0-9A-F]{0,8}",
        Just("%20".to_string()),
        Just("%2F".to_string()),
        Just("%40".to_string()),
        Just("%FF".to_string()),
        Just("名前".to_string()),
        any::<String>(),
    ];
    let selector = prop_oneof![
        "[0-9]{1,22}",
        Just("latest".to_string()),
        Just("Production".to_string()),
        Just("sTaGiNg".to_string()),
        Just(" None ".to_string()),
        Just("archived".to_string()),
        segment.clone(),
    ];
    prop_oneof![
        (segment.clone(), selector, "/{0,2}").prop_map(|(n, s, tail)| format!("models:/{n}/{s}{tail}")),
        (segment.clone(), segment.clone()).prop_map(|(n, a)| format!("models:/{n}@{a}")),
        ("/{0,3}", segment.clone(), segment).prop_map(|(lead, n, rest)| format!("models:{lead}{n}{rest}")),
        any::<String>(),
    ]
}

#[test]
fn uri_display_round_trips() {
    check(2000, uri_strings(), |s| {
        if let Ok(uri) = s.parse::<ModelUri>() {
            let printed = uri.to_string();
            let again = printed.parse::<ModelUri>();
            prop_assert_eq!(again.as_ref(), Ok(&uri), "{:?} printed as {:?}", s, printed);
            prop_assert_eq!(again.unwrap().to_string(), printed);
        }
        Ok(())
    });
}

// ------------------------------------------------------------------------------ payloads

fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
    TensorInfo { name: name.into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
}

const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

fn columns(names: &[&str]) -> Signature {
    Signature::Columns(
        names.iter().map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true }).collect(),
    )
}

/// The same model shapes the fuzz targets score against (fuzz/src/lib.rs).
fn schemas() -> Vec<ModelSchema> {
    vec![
        ModelSchema::new(vec![info("float_input", DType::F32, &[-1, 4])], vec![], Some(columns(&IRIS))),
        ModelSchema::new(IRIS.iter().map(|n| info(n, DType::F32, &[-1, 1])).collect(), vec![], Some(columns(&IRIS))),
        ModelSchema::new(
            vec![info("i", DType::I64, &[-1]), info("b", DType::Bool, &[-1]), info("s", DType::String, &[-1, 1])],
            vec![],
            None,
        ),
        ModelSchema::new(vec![info("x", DType::F32, &[-1, 3, 2])], vec![], None),
        ModelSchema::new(
            vec![info("ids", DType::I32, &[-1, 2]), info("mask", DType::U8, &[-1, -1]), info("scale", DType::F64, &[])],
            vec![],
            None,
        ),
        ModelSchema::new(vec![info("t", DType::I8, &[-1, -1, -1, -1])], vec![], None),
    ]
    .into_iter()
    .map(|s| s.expect("valid schema"))
    .collect()
}

fn elements(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(usize::try_from(*d).ok()?))
}

fn check_input(schema: &ModelSchema, t: &InputTensor) -> Result<(), TestCaseError> {
    let info = schema.inputs.iter().find(|i| i.name == t.name);
    prop_assert!(info.is_some(), "unknown input {}", t.name);
    let info = info.unwrap();
    prop_assert_eq!(Some(t.data.len()), elements(&t.shape), "input {} shape {:?}", &t.name, &t.shape);
    prop_assert_eq!(Some(t.data.dtype()), info.dtype());
    prop_assert_eq!(t.shape.len(), info.shape.len());
    for (got, want) in t.shape.iter().zip(&info.shape) {
        prop_assert!(*want < 0 || got == want, "input {} shape {:?} vs {:?}", t.name, t.shape, info.shape);
    }
    Ok(())
}

fn prepare_all(payload: &Payload) -> Result<(), TestCaseError> {
    for schema in schemas() {
        if let Ok(p) = prepare(&schema, payload) {
            prop_assert!(p.rows > 0, "zero rows from {:?}", payload);
            prop_assert_eq!(p.inputs.len(), schema.inputs.len());
            for t in &p.inputs {
                check_input(&schema, t)?;
            }
        }
    }
    Ok(())
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..300).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![Just("1.5"), Just("NaN"), Just("-inf"), Just("true"), Just(" 7 "), Just("x")].prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            // Rectangular-ish lists of lists, the common tensor shape.
            (1usize..4, prop::collection::vec(inner.clone(), 0..12))
                .prop_map(|(w, v)| { Value::Array(v.chunks(w).map(|c| Value::Array(c.to_vec())).collect()) }),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys that hit the fixed schemas' input and column names most of the time.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
            "float_input",
            "i",
            "b",
            "s",
            "x",
            "ids",
            "mask",
            "scale",
            "t",
            "columns",
            "data",
            "index",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,3}",
    ]
}

fn scoring_body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop::sample::select(vec!["dataframe_split", "dataframe_records", "instances", "inputs"]);
    prop_oneof![
        (field, json_value()).prop_map(|(f, v)| serde_json::to_vec(&json!({ f: v })).unwrap()),
        (prop::collection::vec(key(), 0..5), prop::collection::vec(prop::collection::vec(scalar(), 0..5), 0..4))
            .prop_map(|(cols, data)| {
                serde_json::to_vec(&json!({"dataframe_split": {"columns": cols, "data": data}})).unwrap()
            }),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn scoring_payloads_convert_or_fail_cleanly() {
    check(1500, scoring_body(), |body| {
        if let Ok(req) = parse_json(&body) {
            prepare_all(&req.payload)?;
        }
        Ok(())
    });
}

/// The server's streaming parser (`runtime::decode`) gives the same tensors as the `Value` path
/// whenever both accept a body. Where only the `Value` path accepts, the streaming one refused
/// a row key the model does not take (the `Value` path ignores it); where only the streaming
/// one accepts, it skipped an extra column the `Value` path still read. Never an internal error.
#[test]
fn streaming_and_value_paths_agree() {
    check(1500, scoring_body(), |body| {
        for schema in schemas() {
            let streamed = prepare_body(&schema, Format::Json, &body);
            let values = prepare_via_values(&schema, Format::Json, &body);
            let shown = String::from_utf8_lossy(&body);
            match (&streamed, &values) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", shown),
                (Err(e), Ok(_)) => {
                    prop_assert!(e.message.contains("which is not a column of this model"), "{}: {:?}", shown, e)
                }
                (Err(e), Err(_)) => prop_assert_ne!(e.kind, ScoringErrorKind::Internal, "{}", shown),
                (Ok(p), Err(_)) => {
                    for t in &p.inputs {
                        check_input(&schema, t)?;
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn csv_payloads_convert_or_fail_cleanly() {
    let cell = prop_oneof!["[0-9.eE+-]{0,6}", "[a-z ]{0,4}", Just("\"a,b\"".to_string()), Just("NaN".to_string())];
    let header = prop::collection::vec(key(), 1..5);
    let rows = prop::collection::vec(prop::collection::vec(cell, 1..5), 0..5);
    check(800, (header, rows), |(header, rows)| {
        let mut body = header.join(",");
        for r in rows {
            body.push('\n');
            body.push_str(&r.join(","));
        }
        if let Ok(frame) = parse_csv(body.as_bytes()) {
            prepare_all(&Payload::Frame(frame))?;
        }
        Ok(())
    });
}

#[test]
fn v2_inputs_have_their_declared_shape() {
    let dtypes = prop::sample::select(vec![DType::F32, DType::I64, DType::U8, DType::Bool, DType::String]);
    let model_shape = prop::collection::vec(prop_oneof![Just(-1i64), 0i64..4], 0..4);
    let shape = prop::collection::vec(prop_oneof![0i64..4, any::<i64>()], 0..4);
    let raw = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        // BYTES elements: 4-byte little-endian lengths, then the bytes.
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..5).prop_map(|items| {
            items.iter().flat_map(|i| (i.len() as u32).to_le_bytes().into_iter().chain(i.iter().copied())).collect()
        }),
    ];
    check(1500, (dtypes, model_shape, shape, json_value(), raw), |(dtype, model_shape, shape, data, raw)| {
        let schema = ModelSchema::new(vec![info("in", dtype, &model_shape)], vec![], None).unwrap();
        let json = tensor_from_v2(&schema.inputs[0], dtype.v2_name(), &shape, &data);
        let binary = tensor_from_v2_binary(&schema.inputs[0], dtype.v2_name(), &shape, &raw);
        for t in [json, binary].into_iter().flatten() {
            prop_assert_eq!(&t.shape, &shape);
            check_input(&schema, &t)?;
        }
        Ok(())
    });
}

// ------------------------------------------------------------------------------ filters

fn registry_db() -> regserve::registry::Store {
    let store = regserve::registry::Store::open_in_memory().unwrap();
    store
        .database()
        .write(|tx| {
            tx.execute_batch(
                "INSERT INTO registered_models (id, name, creation_timestamp, last_updated_timestamp)
             VALUES (1, 'iris', 1, 10), (2, 'a%b', 2, 5), (3, 'x*y?[z]', 3, 5);
         INSERT INTO registered_model_tags VALUES (1, 'team', 't1'), (2, 'mlflow.prompt.is_prompt', 'true');
         INSERT INTO model_versions (model_id, version, creation_timestamp, last_updated_timestamp, source, run_id)
             VALUES (1, 1, 1, 1, 's1', 'r1'), (1, 2, 2, 2, 's2', 'r2'), (3, 1, 3, 3, 's3', 'r3');
         INSERT INTO model_version_tags VALUES (1, 2, 'stage', 'prod');",
            )
        })
        .unwrap();
    store
}

fn quoted() -> impl Strategy<Value = String> {
    let body = prop_oneof!["[a-z%_*?\\[\\]\\\\ ]{0,8}", any::<String>(), Just("\\%\\_\\\\".to_string())];
    (prop::sample::select(vec!['\'', '"']), body).prop_map(|(q, b)| {
        let escaped = b.replace(q, &format!("{q}{q}"));
        format!("{q}{escaped}{q}")
    })
}

fn clause() -> impl Strategy<Value = String> {
    let subject = prop_oneof![
        prop::sample::select(vec![
            "name",
            "run_id",
            "version_number",
            "source_path",
            "attribute.name",
            "`name`",
            "tags.team",
            "tag.`mlflow.prompt.is_prompt`",
            "tags.\"a b\"",
            "nope",
        ])
        .prop_map(str::to_string),
        "[a-z_.`]{1,10}",
    ];
    let comparator =
        prop::sample::select(vec!["=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "ilike", "IN", "NOT IN", "=="]);
    let value = prop_oneof![
        quoted(),
        any::<i64>().prop_map(|i| i.to_string()),
        "[0-9+-.]{1,4}",
        prop::collection::vec(prop_oneof![quoted(), (0i64..5).prop_map(|i| i.to_string())], 0..4)
            .prop_map(|v| format!("({})", v.join(", "))),
        Just("true".to_string()),
    ];
    (subject, " {0,2}", comparator, " {0,2}", value).prop_map(|(s, w1, c, w2, v)| format!("{s}{w1}{c}{w2}{v}"))
}

fn filter_input() -> impl Strategy<Value = (bool, String, Vec<String>, Option<String>)> {
    let filter = prop_oneof![
        prop::collection::vec(clause(), 0..4).prop_map(|c| c.join(" AND ")),
        prop::collection::vec(clause(), 2..3).prop_map(|c| c.join(" or ")),
        any::<String>(),
    ];
    let order_entry = prop_oneof![
        prop::sample::select(vec![
            "name",
            "name DESC",
            "version_number desc",
            "creation_timestamp ASC",
            "last_updated_timestamp",
            "timestamp DESC",
            "attribute.name",
            "`name` asc",
            "tags.x",
            "name sideways",
            "",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ];
    let token = prop::option::of(prop_oneof!["[A-Za-z0-9_-]{0,40}", any::<String>()]);
    (any::<bool>(), filter, prop::collection::vec(order_entry, 0..3), token)
}

#[test]
fn filters_build_or_fail_cleanly_and_accepted_sql_runs() {
    let c = registry_db();
    check(1500, filter_input(), |(versions, filter, order_by, token)| {
        let target = if versions { Target::ModelVersions } else { Target::RegisteredModels };
        for token in [token.as_deref(), None] {
            let Ok(q) = build(target, &filter, &order_by, token) else { continue };
            let page = c.database().read(|tx| q.fetch_page(tx, "rm.name", 1, |r| r.get::<String>(0)));
            prop_assert!(
                page.is_ok(),
                "{:?} fails in SQLite: {:?}\n{}",
                filter,
                page.err(),
                q.search_sql("rm.name", 2)
            );
            if let Some(next) = page.unwrap().1 {
                let q2 = build(target, &filter, &order_by, Some(&next));
                prop_assert!(q2.is_ok(), "our own token is refused: {:?}", q2.err());
                let page2 =
                    c.database().read(|tx| q2.as_ref().unwrap().fetch_page(tx, "rm.name", 1, |r| r.get::<String>(0)));
                prop_assert!(page2.is_ok(), "second page fails: {:?}", page2.err());
            }
        }
        Ok(())
    });
}

// ------------------------------------------------------------------------------ artifact paths

/// Every symlink between the root and `p` resolves inside the root.
fn links_stay_inside(root: &Path, p: &Path) -> Result<(), String> {
    let rel = p.strip_prefix(root).map_err(|_| format!("{} is not under {}", p.display(), root.display()))?;
    let mut at = PathBuf::from(root);
    for c in rel.components() {
        at.push(c);
        let Ok(meta) = std::fs::symlink_metadata(&at) else { return Ok(()) };
        if meta.file_type().is_symlink() {
            let real =
                at.canonicalize().map_err(|e| format!("{} is a link that does not resolve: {e}", at.display()))?;
            if !real.starts_with(root) {
                return Err(format!("{} leads to {}", at.display(), real.display()));
            }
        }
    }
    Ok(())
}

#[test]
fn artifact_paths_stay_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let root = ArtifactRoot::new(dir.path().join("root")).unwrap();
    let r = root.root();
    std::fs::create_dir_all(r.join("a/b")).unwrap();
    std::os::unix::fs::symlink(r.join("a"), r.join("in")).unwrap();
    std::os::unix::fs::symlink(&outside, r.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("missing"), r.join("dangling")).unwrap();

    let segment = prop_oneof![
        prop::sample::select(vec![
            "..", ".", "", "a", "b", "in", "out", "dangling", "x.onnx", "%2e%2e", "%2E.", "%2F", "%00", "\\", "%5C",
            "~",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ];
    let rel = prop_oneof![
        prop::collection::vec(segment, 0..5).prop_map(|s| s.join("/")),
        prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
    ];
    check(2000, rel, |rel| {
        if let Ok(p) = root.path_of(&rel) {
            prop_assert!(p.starts_with(root.root()), "{:?} → {}", rel, p.display());
            let inside = links_stay_inside(root.root(), &p);
            prop_assert!(inside.is_ok(), "{:?} → {}: {}", rel, p.display(), inside.unwrap_err());
        }
        Ok(())
    });
}

// ------------------------------------------------------------------------------ output JSON

fn output(rows: usize) -> impl Strategy<Value = OutputTensor> {
    let inner = prop::collection::vec(0usize..4, 0..3);
    let name = prop_oneof!["[a-z_]{1,8}", any::<String>()];
    (name, inner, any::<bool>(), 0usize..4).prop_flat_map(move |(name, inner, per_row, other)| {
        let first = if per_row { rows } else { other };
        let mut shape = vec![first];
        shape.extend(&inner);
        let n: usize = shape.iter().product();
        let data = prop_oneof![
            prop::collection::vec(any::<f32>(), n).prop_map(|v| OutputData::Tensor(TensorData::F32(v))),
            prop::collection::vec(any::<f64>(), n).prop_map(|v| OutputData::Tensor(TensorData::F64(v))),
            prop::collection::vec(any::<i64>(), n).prop_map(|v| OutputData::Tensor(TensorData::I64(v))),
            prop::collection::vec(any::<u64>(), n).prop_map(|v| OutputData::Tensor(TensorData::U64(v))),
            prop::collection::vec(any::<i8>(), n).prop_map(|v| OutputData::Tensor(TensorData::I8(v))),
            prop::collection::vec(any::<bool>(), n).prop_map(|v| OutputData::Tensor(TensorData::Bool(v))),
            prop::collection::vec(any::<String>(), n).prop_map(|v| OutputData::Tensor(TensorData::String(v))),
            prop::collection::vec(prop::collection::vec((any::<String>(), any::<f64>()), 0..3), first)
                .prop_map(OutputData::Maps),
        ];
        let name = name.clone();
        data.prop_map(move |data| {
            let shape = if matches!(data, OutputData::Maps(_)) { vec![shape[0]] } else { shape.clone() };
            OutputTensor { name: name.clone(), shape, data }
        })
    })
}

#[test]
fn prediction_json_always_parses() {
    let input = (0usize..4).prop_flat_map(|rows| (Just(rows), prop::collection::vec(output(rows), 0..4)));
    check(1000, input, |(rows, outputs)| {
        for style in [Style::Records, Style::Columns] {
            let mut buf = Vec::new();
            write_predictions(&mut buf, &outputs, style, rows);
            let v = serde_json::from_slice::<Value>(&buf);
            prop_assert!(v.is_ok(), "invalid JSON: {}", String::from_utf8_lossy(&buf));
        }
        for o in &outputs {
            let mut buf = Vec::new();
            write_flat(&mut buf, o);
            let v = serde_json::from_slice::<Value>(&buf);
            prop_assert!(v.is_ok(), "invalid JSON: {}", String::from_utf8_lossy(&buf));
            let n = match &o.data {
                OutputData::Tensor(t) => t.len(),
                OutputData::Maps(m) => m.len(),
            };
            prop_assert_eq!(v.unwrap().as_array().map(Vec::len), Some(n));
        }
        Ok(())
    });
}
