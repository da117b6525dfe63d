//! Shared pieces of the fuzz targets: fixed model schemas the payload targets score against,
//! the invariants every successful conversion must hold, and the registry database the filter
//! target runs its SQL on.
#![forbid(unsafe_code)]

use regserve::runtime::convert::{self, InputTensor, Prepared, Style};
use regserve::runtime::payload::Payload;
use regserve::runtime::schema::{ColSpec, DType, ModelSchema, Signature, TensorInfo, ValueKind};
use regserve::params;
use regserve::registry::Store;


pub fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
    TensorInfo { name: name.into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
}

const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

fn columns(names: &[&str], ty: &str) -> Signature {
    Signature::Columns(
        names.iter().map(|n| ColSpec { name: Some(n.to_string()), ty: ty.into(), required: true }).collect(),
    )
}

/// Models whose inputs cover every binding: a stacked `[N, 4]` input fed by a column
/// signature (iris), one input per column, typed columns (int64 / bool / string), a single
/// `[N, 3, 2]` tensor, several named tensors, and a fully dynamic tensor.
pub fn schemas() -> Vec<ModelSchema> {
    let stacked =
        ModelSchema::new(vec![info("float_input", DType::F32, &[-1, 4])], vec![], Some(columns(&IRIS, "float")));
    let per_column = ModelSchema::new(
        IRIS.iter().map(|n| info(n, DType::F32, &[-1, 1])).collect(),
        vec![],
        Some(columns(&IRIS, "float")),
    );
    let typed = ModelSchema::new(
        vec![info("i", DType::I64, &[-1]), info("b", DType::Bool, &[-1]), info("s", DType::String, &[-1, 1])],
        vec![],
        None,
    );
    let cube = ModelSchema::new(vec![info("x", DType::F32, &[-1, 3, 2])], vec![], None);
    let named = ModelSchema::new(
        vec![info("ids", DType::I32, &[-1, 2]), info("mask", DType::U8, &[-1, -1]), info("scale", DType::F64, &[])],
        vec![],
        None,
    );
    let dynamic = ModelSchema::new(vec![info("t", DType::I8, &[-1, -1, -1, -1])], vec![], None);
    let unsigned = ModelSchema::new(vec![info("u", DType::U64, &[-1, 2])], vec![], None);
    [stacked, per_column, typed, cube, named, dynamic, unsigned]
        .into_iter()
        .map(|s| s.expect("the fixed fuzz schemas are valid"))
        .collect()
}

/// Elements a shape holds, or `None` for a negative dimension or an overflow.
pub fn elements(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(usize::try_from(*d).ok()?))
}

/// An input tensor is well formed: its data fills its shape exactly and matches the model's
/// input (name, element type, rank, fixed dimensions).
pub fn check_input(schema: &ModelSchema, t: &InputTensor) {
    let info = schema.inputs.iter().find(|i| i.name == t.name).unwrap_or_else(|| panic!("unknown input {}", t.name));
    assert_eq!(Some(t.data.len()), elements(&t.shape), "input {} data length vs shape {:?}", t.name, t.shape);
    assert_eq!(Some(t.data.dtype()), info.dtype(), "input {} element type", t.name);
    assert_eq!(t.shape.len(), info.shape.len(), "input {} rank: {:?} vs {:?}", t.name, t.shape, info.shape);
    for (got, want) in t.shape.iter().zip(&info.shape) {
        assert!(*got >= 0, "input {} negative dimension in {:?}", t.name, t.shape);
        assert!(*want < 0 || got == want, "input {} shape {:?} vs {:?}", t.name, t.shape, info.shape);
    }
}

/// The invariants of a successful `prepare`.
pub fn check_prepared(schema: &ModelSchema, p: &Prepared) {
    assert!(p.rows > 0, "prepared zero rows: {p:?}");
    assert_eq!(p.inputs.len(), schema.inputs.len(), "every model input is fed exactly once");
    for t in &p.inputs {
        check_input(schema, t);
    }
    if p.style == Style::Records {
        for t in &p.inputs {
            assert_eq!(t.shape.first().copied(), Some(p.rows as i64), "a table feeds one row per record");
        }
    }
}

/// `prepare` a payload against every fixed schema; check what succeeds.
pub fn prepare_all(payload: &Payload) {
    for schema in schemas() {
        if let Ok(p) = convert::prepare(&schema, payload) {
            check_prepared(&schema, &p);
        }
    }
}

/// An in-memory registry database with the real schema (the store's own migrations) and a few
/// rows to match against.
pub fn registry_db() -> Store {
    let store = Store::open_in_memory().expect("in-memory registry");
    let models: [(&str, i64, i64); 5] =
        [("iris", 1, 10), ("Iris_2", 2, 10), ("a%b", 3, 5), ("名前", 4, 7), ("x*y?[z]", 5, 1)];
    store
        .database()
        .write(|c| {
            for (id, (name, created, updated)) in models.iter().enumerate() {
                let id = id as i64 + 1;
                c.execute(
                    "INSERT INTO registered_models (id, name, creation_timestamp, last_updated_timestamp) VALUES (?1, ?2, ?3, ?4)",
                    params![id, name, created, updated],
                )?;
                c.execute(
                    "INSERT INTO registered_model_tags (model_id, key, value) VALUES (?1, 'team', ?2), (?1, 'mlflow.prompt.is_prompt', ?3)",
                    params![id, format!("t{}", id % 2), if id == 3 { "true" } else { "false" }],
                )?;
                for v in 1..=2i64 {
                    c.execute(
                        "INSERT INTO model_versions (model_id, version, creation_timestamp, last_updated_timestamp, source, run_id) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![id, v, created + v, updated + v, format!("mlflow-artifacts:/{id}/{v}"), format!("run{v}")],
                    )?;
                    c.execute(
                        "INSERT INTO model_version_tags (model_id, version, key, value) VALUES (?1, ?2, 'stage', ?3)",
                        params![id, v, if v == 1 { "dev" } else { "prod" }],
                    )?;
                }
            }
            Ok::<_, regserve::db::Error>(())
        })
        .expect("fixture rows");
    store
}
