//! Open Inference Protocol inputs: arbitrary request bodies are decoded the way the `/infer`
//! route reads them (`inputs[].{name, datatype, shape, data}`, or raw bytes after the JSON
//! header for inputs with `parameters.binary_data_size`), and each input goes through
//! `tensor_from_v2` / `tensor_from_v2_binary` against model inputs of every element type and a
//! range of shapes. Never panics; an accepted tensor has exactly the declared shape and as many
//! values as it holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regserve::runtime::convert::{tensor_from_v2, tensor_from_v2_binary};
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
    // A JSON header, then (binary tensor data extension) raw bytes, as `/infer` splits them at
    // Inference-Header-Content-Length.
    let mut header = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let Some(Ok(Value::Object(req))) = header.next() else { return };
    let mut binary = &body[header.byte_offset()..];
    let Some(Value::Array(inputs)) = req.get("inputs") else { return };
    for input in inputs {
        let (Some(datatype), Some(Value::Array(dims))) =
            (input.get("datatype").and_then(Value::as_str), input.get("shape"))
        else {
            continue;
        };
        let Some(shape) = dims.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>() else { continue };
        let raw = match input.pointer("/parameters/binary_data_size").map(Value::as_u64) {
            None => None,
            Some(Some(n)) if n as usize <= binary.len() => {
                let (chunk, rest) = binary.split_at(n as usize);
                binary = rest;
                Some(chunk)
            }
            Some(_) => return,
        };
        let data = input.get("data");
        for dtype in DTYPES {
            for model_shape in SHAPES {
                let schema =
                    ModelSchema::new(vec![info("in", dtype, model_shape)], vec![], None).expect("valid schema");
                let t = match (raw, data) {
                    (Some(raw), _) => tensor_from_v2_binary(&schema.inputs[0], datatype, &shape, raw),
                    (None, Some(data)) => tensor_from_v2(&schema.inputs[0], datatype, &shape, data),
                    (None, None) => continue,
                };
                if let Ok(t) = t {
                    assert_eq!(t.shape, shape, "the declared shape is kept");
                    check_input(&schema, &t);
                }
            }
        }
    }
});
