//! The gRPC protocol's tensors: typed `contents` or `raw_input_contents` → input tensors, and
//! output tensors → `raw_output_contents` (as Triton answers, which `tritonclient` reads).
//! Pure functions, unit-tested here; the checks of datatype, shape and size are those of the
//! HTTP protocol ([`check_v2`], [`tensor_from_v2_binary`]).

use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::InferTensorContents;
use crate::runtime::convert::{
    check_v2, tensor_from_v2_binary, write_map, InputTensor, OutputData, OutputTensor, TensorData,
};
use crate::runtime::schema::{DType, TensorInfo};
use crate::runtime::ScoringError;

/// One input of a request as the model's tensor `info`: from `raw` (its entry of
/// `raw_input_contents`) or from its typed `contents`, which it gives up (moved, not copied).
pub fn input_tensor(
    info: &TensorInfo,
    input: &mut InferInputTensor,
    raw: Option<&[u8]>,
) -> Result<InputTensor, ScoringError> {
    let contents = input.contents.take().filter(|c| count(c) > 0);
    match (raw, contents) {
        (Some(bytes), None) => tensor_from_v2_binary(info, &input.datatype, &input.shape, bytes),
        (Some(_), Some(_)) => Err(ScoringError::bad_request(format!(
            "Input '{}' has both 'contents' and an entry in 'raw_input_contents'; send one of them",
            info.name
        ))),
        (None, Some(contents)) => from_contents(info, &input.datatype, &input.shape, contents),
        (None, None) => {
            // No values at all: right only for a shape of zero elements, which check_v2 refuses
            // (there is nothing to score) after checking datatype and shape.
            from_contents(info, &input.datatype, &input.shape, InferTensorContents::default())
        }
    }
}

/// Values in all the typed fields together.
fn count(c: &InferTensorContents) -> usize {
    c.bool_contents.len()
        + c.int_contents.len()
        + c.int64_contents.len()
        + c.uint_contents.len()
        + c.uint64_contents.len()
        + c.fp32_contents.len()
        + c.fp64_contents.len()
        + c.bytes_contents.len()
}

/// The typed field that carries values of `dtype`.
fn field_of(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "bool_contents",
        DType::I8 | DType::I16 | DType::I32 => "int_contents",
        DType::I64 => "int64_contents",
        DType::U8 | DType::U16 | DType::U32 => "uint_contents",
        DType::U64 => "uint64_contents",
        DType::F32 => "fp32_contents",
        DType::F64 => "fp64_contents",
        DType::String => "bytes_contents",
    }
}

fn from_contents(
    info: &TensorInfo,
    datatype: &str,
    shape: &[i64],
    c: InferTensorContents,
) -> Result<InputTensor, ScoringError> {
    let (dtype, total) = check_v2(info, datatype, shape)?;
    if total == 0 {
        return Err(ScoringError::bad_request(format!("Input '{}' is empty: there is nothing to score", info.name)));
    }
    let name = &info.name;
    let field = field_of(dtype);
    let all = count(&c);
    let narrow = |e: std::num::TryFromIntError, i: usize| {
        ScoringError::bad_request(format!(
            "Input '{name}' value {i} in {field} is out of range for {}: {e}",
            dtype.v2_name()
        ))
    };
    macro_rules! take {
        ($field:ident, $variant:ident) => {
            TensorData::$variant(c.$field)
        };
        ($field:ident, $variant:ident, $t:ty) => {
            TensorData::$variant(
                c.$field
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| <$t>::try_from(v).map_err(|e| narrow(e, i)))
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    let n = match dtype {
        DType::Bool => c.bool_contents.len(),
        DType::I8 | DType::I16 | DType::I32 => c.int_contents.len(),
        DType::I64 => c.int64_contents.len(),
        DType::U8 | DType::U16 | DType::U32 => c.uint_contents.len(),
        DType::U64 => c.uint64_contents.len(),
        DType::F32 => c.fp32_contents.len(),
        DType::F64 => c.fp64_contents.len(),
        DType::String => c.bytes_contents.len(),
    };
    if n != all {
        return Err(ScoringError::bad_request(format!(
            "Input '{name}' of datatype {} takes its values in contents.{field}; {} values are in other fields",
            dtype.v2_name(),
            all - n
        )));
    }
    if n != total {
        return Err(ScoringError::bad_request(format!(
            "Input '{name}' has {n} values in contents.{field}, but its shape {shape:?} holds {total}"
        )));
    }
    let data = match dtype {
        DType::Bool => take!(bool_contents, Bool),
        DType::I8 => take!(int_contents, I8, i8),
        DType::I16 => take!(int_contents, I16, i16),
        DType::I32 => take!(int_contents, I32),
        DType::I64 => take!(int64_contents, I64),
        DType::U8 => take!(uint_contents, U8, u8),
        DType::U16 => take!(uint_contents, U16, u16),
        DType::U32 => take!(uint_contents, U32),
        DType::U64 => take!(uint64_contents, U64),
        DType::F32 => take!(fp32_contents, F32),
        DType::F64 => take!(fp64_contents, F64),
        DType::String => TensorData::String(
            c.bytes_contents
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| {
                        ScoringError::bad_request(format!(
                            "Input '{name}' value {i} in bytes_contents is not UTF-8 text"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(InputTensor { name: name.clone(), shape: shape.to_vec(), data })
}

/// An output's description and its `raw_output_contents` entry: little-endian values, `BOOL`
/// one byte each, `BYTES` 4-byte little-endian length-prefixed; a sequence of maps (a zipmap
/// output) is `BYTES`, each row a JSON object as the HTTP protocol writes it.
pub fn raw_output(o: &OutputTensor) -> (InferOutputTensor, Vec<u8>) {
    let (datatype, bytes) = match &o.data {
        OutputData::Tensor(t) => (t.dtype().v2_name(), raw_bytes(t)),
        OutputData::Maps(maps) => {
            let mut out = Vec::new();
            let mut json = Vec::new();
            for m in maps {
                json.clear();
                write_map(&mut json, m);
                push_prefixed(&mut out, &json);
            }
            ("BYTES", out)
        }
    };
    let meta = InferOutputTensor {
        name: o.name.clone(),
        datatype: datatype.to_string(),
        shape: o.shape.iter().map(|d| *d as i64).collect(),
        ..Default::default()
    };
    (meta, bytes)
}

fn push_prefixed(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(&(item.len() as u32).to_le_bytes());
    out.extend_from_slice(item);
}

fn raw_bytes(t: &TensorData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {{
            let mut out = Vec::with_capacity(std::mem::size_of_val($v.as_slice()));
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
            out
        }};
    }
    match t {
        TensorData::F32(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::I8(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::U8(v) => v.clone(),
        TensorData::U16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
        TensorData::String(v) => {
            let mut out = Vec::with_capacity(v.iter().map(|s| s.len() + 4).sum());
            for s in v {
                push_prefixed(&mut out, s.as_bytes());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::schema::ValueKind;

    fn info(dtype: DType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: "x".into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
    }

    fn input(datatype: &str, shape: &[i64], contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            contents,
            ..Default::default()
        }
    }

    #[test]
    fn typed_and_raw_contents_make_the_same_tensor() {
        let values = [1.5f32, -2.0, 3.25, 0.0];
        let typed = InferTensorContents { fp32_contents: values.to_vec(), ..Default::default() };
        let a = input_tensor(&info(DType::F32, &[-1, 2]), &mut input("FP32", &[2, 2], Some(typed)), None).unwrap();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b = input_tensor(&info(DType::F32, &[-1, 2]), &mut input("FP32", &[2, 2], None), Some(&raw)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.data, TensorData::F32(values.to_vec()));
    }

    #[test]
    fn narrow_integers_are_range_checked() {
        let c = InferTensorContents { int_contents: vec![1, 300], ..Default::default() };
        let e = input_tensor(&info(DType::I8, &[2]), &mut input("INT8", &[2], Some(c)), None).unwrap_err();
        assert!(e.message.contains("value 1 in int_contents is out of range for INT8"), "{}", e.message);
        let c = InferTensorContents { uint_contents: vec![7, 65535], ..Default::default() };
        let t = input_tensor(&info(DType::U16, &[2]), &mut input("UINT16", &[2], Some(c)), None).unwrap();
        assert_eq!(t.data, TensorData::U16(vec![7, 65535]));
    }

    #[test]
    fn wrong_counts_fields_and_sizes_are_bad_requests() {
        // Values in the field of another type.
        let c = InferTensorContents { fp64_contents: vec![1.0, 2.0], ..Default::default() };
        let e = input_tensor(&info(DType::F32, &[2]), &mut input("FP32", &[2], Some(c)), None).unwrap_err();
        assert!(e.message.contains("takes its values in contents.fp32_contents"), "{}", e.message);
        // Fewer values than the shape holds.
        let c = InferTensorContents { fp32_contents: vec![1.0], ..Default::default() };
        let e = input_tensor(&info(DType::F32, &[2]), &mut input("FP32", &[2], Some(c)), None).unwrap_err();
        assert!(
            e.message.contains("has 1 values in contents.fp32_contents, but its shape [2] holds 2"),
            "{}",
            e.message
        );
        // Raw bytes of the wrong size.
        let e = input_tensor(&info(DType::F32, &[2]), &mut input("FP32", &[2], None), Some(&[0u8; 7])).unwrap_err();
        assert!(e.message.contains("7 bytes of binary data"), "{}", e.message);
        // Both forms at once.
        let c = InferTensorContents { fp32_contents: vec![1.0, 2.0], ..Default::default() };
        let e = input_tensor(&info(DType::F32, &[2]), &mut input("FP32", &[2], Some(c)), Some(&[0u8; 8])).unwrap_err();
        assert!(e.message.contains("both"), "{}", e.message);
        // No values for a non-empty shape.
        let e = input_tensor(&info(DType::F32, &[2]), &mut input("FP32", &[2], None), None).unwrap_err();
        assert!(e.message.contains("has 0 values"), "{}", e.message);
        // A shape whose element count overflows.
        let e = input_tensor(&info(DType::F32, &[-1, -1]), &mut input("FP32", &[i64::MAX, 4], None), Some(&[]))
            .unwrap_err();
        assert!(e.message.contains("too large"), "{}", e.message);
    }

    #[test]
    fn bytes_inputs_and_outputs_are_length_prefixed() {
        let c = InferTensorContents { bytes_contents: vec![b"a".to_vec(), "é".into()], ..Default::default() };
        let t = input_tensor(&info(DType::String, &[2]), &mut input("BYTES", &[2], Some(c)), None).unwrap();
        assert_eq!(t.data, TensorData::String(vec!["a".into(), "é".into()]));
        let out = OutputTensor { name: "y".into(), shape: vec![2], data: OutputData::Tensor(t.data.clone()) };
        let (meta, raw) = raw_output(&out);
        assert_eq!(meta.datatype, "BYTES");
        assert_eq!(raw, [&[1, 0, 0, 0][..], b"a", &[2, 0, 0, 0], "é".as_bytes()].concat());
        let back = input_tensor(&info(DType::String, &[2]), &mut input("BYTES", &[2], None), Some(&raw)).unwrap();
        assert_eq!(back.data, t.data);
    }

    #[test]
    fn outputs_are_little_endian_and_maps_are_json_rows() {
        let out =
            OutputTensor { name: "y".into(), shape: vec![2], data: OutputData::Tensor(TensorData::I64(vec![1, -2])) };
        let (meta, raw) = raw_output(&out);
        assert_eq!((meta.datatype.as_str(), meta.shape.as_slice()), ("INT64", &[2i64][..]));
        assert_eq!(raw, [1i64.to_le_bytes(), (-2i64).to_le_bytes()].concat());
        let maps =
            OutputTensor { name: "p".into(), shape: vec![1], data: OutputData::Maps(vec![vec![("0".into(), 0.5)]]) };
        let (meta, raw) = raw_output(&maps);
        assert_eq!(meta.datatype, "BYTES");
        let json = &raw[4..];
        assert_eq!(u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize, json.len());
        assert_eq!(serde_json::from_slice::<serde_json::Value>(json).unwrap(), serde_json::json!({"0": 0.5}));
    }
}
