//! Output writers: arbitrary (well-formed) output tensors — every element type, any shape
//! including zero-sized dimensions, NaN/±inf, strings needing escapes, zipmap outputs — through
//! `write_predictions` in both styles and `write_flat` always produce valid JSON, and the flat
//! form holds exactly one JSON value per element.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regserve::runtime::convert::{write_flat, write_predictions, OutputData, OutputTensor, Style, TensorData};
use serde_json::Value;

#[derive(Debug, Arbitrary)]
enum Elems {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Maps(Vec<Vec<(String, f64)>>),
}

#[derive(Debug, Arbitrary)]
struct Output {
    name: String,
    /// Dimensions after the first; the first is chosen so the data fills the shape.
    inner: Vec<u8>,
    /// Make the first dimension the request's row count when possible.
    per_row: bool,
    elems: Elems,
}

#[derive(Debug, Arbitrary)]
struct Input {
    rows: u8,
    outputs: Vec<Output>,
}

/// Cut `v` to fill `[first, inner...]` exactly, with `first = rows` when asked and possible.
fn fit<T: Clone>(v: Vec<T>, inner: &[usize], per_row: bool, rows: usize) -> (Vec<usize>, Vec<T>) {
    let step: usize = inner.iter().product();
    let first = if step == 0 {
        if per_row {
            rows
        } else {
            v.len() % 5
        }
    } else if per_row && rows * step <= v.len() {
        rows
    } else {
        v.len() / step
    };
    let mut shape = vec![first];
    shape.extend_from_slice(inner);
    let n = first * step;
    (shape, v.into_iter().take(n).collect())
}

fn build(o: Output, rows: usize) -> OutputTensor {
    let inner: Vec<usize> = o.inner.iter().take(3).map(|d| usize::from(*d % 4)).collect();
    macro_rules! tensor {
        ($variant:ident, $v:expr) => {{
            let (shape, data) = fit($v, &inner, o.per_row, rows);
            (shape, OutputData::Tensor(TensorData::$variant(data)))
        }};
    }
    let (shape, data) = match o.elems {
        Elems::F32(v) => tensor!(F32, v),
        Elems::F64(v) => tensor!(F64, v),
        Elems::I8(v) => tensor!(I8, v),
        Elems::I16(v) => tensor!(I16, v),
        Elems::I32(v) => tensor!(I32, v),
        Elems::I64(v) => tensor!(I64, v),
        Elems::U8(v) => tensor!(U8, v),
        Elems::U16(v) => tensor!(U16, v),
        Elems::U32(v) => tensor!(U32, v),
        Elems::U64(v) => tensor!(U64, v),
        Elems::Bool(v) => tensor!(Bool, v),
        Elems::String(v) => tensor!(String, v),
        Elems::Maps(v) => {
            let (shape, maps) = fit(v, &[], o.per_row, rows);
            (shape, OutputData::Maps(maps))
        }
    };
    OutputTensor { name: o.name, shape, data }
}

fn parse(buf: &[u8], what: &str) -> Value {
    serde_json::from_slice(buf)
        .unwrap_or_else(|e| panic!("{what} wrote invalid JSON ({e}): {}", String::from_utf8_lossy(buf)))
}

fuzz_target!(|input: Input| {
    let rows = usize::from(input.rows % 6);
    let outputs: Vec<OutputTensor> = input.outputs.into_iter().take(4).map(|o| build(o, rows)).collect();
    for style in [Style::Records, Style::Columns] {
        let mut buf = Vec::new();
        write_predictions(&mut buf, &outputs, style, rows);
        let v = parse(&buf, "write_predictions");
        assert!(v.get("predictions").is_some(), "no predictions key");
    }
    for o in &outputs {
        let mut buf = Vec::new();
        write_flat(&mut buf, o);
        let v = parse(&buf, "write_flat");
        let n = match &o.data {
            OutputData::Tensor(t) => t.len(),
            OutputData::Maps(m) => m.len(),
        };
        assert_eq!(v.as_array().map(Vec::len), Some(n), "write_flat holds one value per element");
    }
});
