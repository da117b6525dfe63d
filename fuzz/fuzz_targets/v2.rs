//! Open Inference Protocol inputs: `tensor_from_v2` with arbitrary datatypes, shapes and data
//! (nested JSON or flat lists) never panics; an accepted tensor has exactly the declared shape
//! and as many values as the shape holds.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regserve::runtime::convert::tensor_from_v2;
use regserve::runtime::schema::DType;
use regserve::runtime::schema::ModelSchema;
use regserve_fuzz::{check_input, info};
use serde_json::Value;

const DTYPES: [DType; 12] = [
    DType::F32,
    DType::F64,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::Bool,
    DType::String,
];

#[derive(Debug, Arbitrary)]
enum Data {
    /// Any JSON text (nested lists, scalars, objects ...).
    Json(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Bools(Vec<bool>),
    Strings(Vec<String>),
    /// Row-major nested by `row` values per inner list.
    Nested {
        row: u8,
        values: Vec<i32>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    dtype: u8,
    /// The model's declared shape: each entry -1 (dynamic) or a small fixed size.
    model_shape: Vec<i8>,
    /// Use the model's own v2 name (most inputs should get past the datatype check).
    matching_datatype: bool,
    datatype: String,
    shape: Vec<i64>,
    data: Data,
}

fn value(data: Data) -> Option<Value> {
    Some(match data {
        Data::Json(s) => serde_json::from_str(&s).ok()?,
        Data::Ints(v) => Value::from(v),
        Data::Floats(v) => Value::Array(
            v.into_iter().map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)).collect(),
        ),
        Data::Bools(v) => Value::from(v),
        Data::Strings(v) => Value::from(v),
        Data::Nested { row, values } => {
            let row = usize::from(row.max(1));
            Value::Array(values.chunks(row).map(|c| Value::from(c.to_vec())).collect())
        }
    })
}

fuzz_target!(|input: Input| {
    let dtype = DTYPES[usize::from(input.dtype) % DTYPES.len()];
    let model_shape: Vec<i64> =
        input.model_shape.iter().take(6).map(|d| if *d < 0 { -1 } else { i64::from(*d % 8) }).collect();
    let schema = ModelSchema::new(vec![info("in", dtype, &model_shape)], vec![], None).expect("one tensor input");
    let datatype = if input.matching_datatype { dtype.v2_name().to_ascii_lowercase() } else { input.datatype };
    let Some(data) = value(input.data) else { return };
    if let Ok(t) = tensor_from_v2(&schema.inputs[0], &datatype, &input.shape, &data) {
        assert_eq!(t.shape, input.shape, "the declared shape is kept");
        check_input(&schema, &t);
    }
});
