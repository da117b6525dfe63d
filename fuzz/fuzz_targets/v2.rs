//! Open Inference Protocol inputs: arbitrary request bodies are decoded the way the `/infer`
//! route reads them (`inputs[].{name, datatype, shape, data}`), and each input goes through
//! `tensor_from_v2` against model inputs of every element type and a range of shapes. Never
//! panics; an accepted tensor has exactly the declared shape and as many values as it holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regserve::runtime::convert::tensor_from_v2;
use regserve::runtime::schema::{DType, ModelSchema};
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

const SHAPES: [&[i64]; 6] = [&[-1, 4], &[-1, 3, 2], &[-1], &[], &[-1, -1], &[2, -1, 1]];

fuzz_target!(|body: &[u8]| {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else { return };
    let Some(Value::Array(inputs)) = req.get("inputs") else { return };
    for input in inputs {
        let (Some(datatype), Some(Value::Array(dims)), Some(data)) =
            (input.get("datatype").and_then(Value::as_str), input.get("shape"), input.get("data"))
        else {
            continue;
        };
        let Some(shape) = dims.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>() else { continue };
        for dtype in DTYPES {
            for model_shape in SHAPES {
                let schema =
                    ModelSchema::new(vec![info("in", dtype, model_shape)], vec![], None).expect("valid schema");
                if let Ok(t) = tensor_from_v2(&schema.inputs[0], datatype, &shape, data) {
                    assert_eq!(t.shape, shape, "the declared shape is kept");
                    check_input(&schema, &t);
                }
            }
        }
    }
});
