//! Payload → input tensors, and output tensors → MLflow-shaped predictions. Pure functions:
//! everything here is unit-tested without ONNX Runtime.

use serde_json::Value;

use super::payload::{json_kind, Frame, NumericFrame, Payload};
use super::schema::{describe, Binding, DType, ModelSchema, TensorInfo};
use super::ScoringError;

/// Typed, row-major tensor contents.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
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
}

macro_rules! each_variant {
    ($self:expr, $v:ident => $body:expr) => {
        match $self {
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::Bool($v) => $body,
            TensorData::String($v) => $body,
        }
    };
}

impl TensorData {
    pub fn with_capacity(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(Vec::with_capacity(n)),
            DType::F64 => TensorData::F64(Vec::with_capacity(n)),
            DType::I8 => TensorData::I8(Vec::with_capacity(n)),
            DType::I16 => TensorData::I16(Vec::with_capacity(n)),
            DType::I32 => TensorData::I32(Vec::with_capacity(n)),
            DType::I64 => TensorData::I64(Vec::with_capacity(n)),
            DType::U8 => TensorData::U8(Vec::with_capacity(n)),
            DType::U16 => TensorData::U16(Vec::with_capacity(n)),
            DType::U32 => TensorData::U32(Vec::with_capacity(n)),
            DType::U64 => TensorData::U64(Vec::with_capacity(n)),
            DType::Bool => TensorData::Bool(Vec::with_capacity(n)),
            DType::String => TensorData::String(Vec::with_capacity(n)),
        }
    }

    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room for `n` more elements.
    pub fn reserve(&mut self, n: usize) {
        each_variant!(self, v => v.reserve_exact(n))
    }

    /// Append `other` (same variant) to `self`; false if the variants differ.
    pub fn append(&mut self, other: &TensorData) -> bool {
        macro_rules! cat {
            ($($v:ident),*) => {
                match (self, other) {
                    $((TensorData::$v(a), TensorData::$v(b)) => { a.extend_from_slice(b); true })*
                    _ => false,
                }
            };
        }
        cat!(F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Bool, String)
    }

    /// Elements `start..end` as a new tensor of the same type.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        match self {
            TensorData::F32(v) => TensorData::F32(v[start..end].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[start..end].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[start..end].to_vec()),
            TensorData::I16(v) => TensorData::I16(v[start..end].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[start..end].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[start..end].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[start..end].to_vec()),
            TensorData::U16(v) => TensorData::U16(v[start..end].to_vec()),
            TensorData::U32(v) => TensorData::U32(v[start..end].to_vec()),
            TensorData::U64(v) => TensorData::U64(v[start..end].to_vec()),
            TensorData::Bool(v) => TensorData::Bool(v[start..end].to_vec()),
            TensorData::String(v) => TensorData::String(v[start..end].to_vec()),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I8(_) => DType::I8,
            TensorData::I16(_) => DType::I16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
            TensorData::U16(_) => DType::U16,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
        }
    }

    /// Convert one JSON cell and append it; `at` describes the cell for error messages.
    pub(crate) fn push(&mut self, v: &Value, at: &dyn Fn() -> String) -> Result<(), ScoringError> {
        self.put(None, v, at)
    }

    /// A tensor of `n` placeholder elements, to be overwritten with [`TensorData::set`].
    pub(crate) fn filled(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F64 => TensorData::F64(vec![0.0; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::I16 => TensorData::I16(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::U16 => TensorData::U16(vec![0; n]),
            DType::U32 => TensorData::U32(vec![0; n]),
            DType::U64 => TensorData::U64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
            DType::String => TensorData::String(vec![String::new(); n]),
        }
    }

    /// Convert one JSON cell into element `i` (which must exist).
    pub(crate) fn set(&mut self, i: usize, v: &Value, at: &dyn Fn() -> String) -> Result<(), ScoringError> {
        self.put(Some(i), v, at)
    }

    /// Convert one JSON cell; append it (`slot` None) or overwrite element `slot`.
    fn put(&mut self, slot: Option<usize>, v: &Value, at: &dyn Fn() -> String) -> Result<(), ScoringError> {
        let dtype = self.dtype();
        let fail = |why: &str| {
            ScoringError::schema(format!("Failed to convert {} to type '{}': {why}", at(), dtype.numpy_name()))
        };
        fn store<T>(vec: &mut Vec<T>, slot: Option<usize>, x: T) {
            match slot {
                None => vec.push(x),
                Some(i) => vec[i] = x,
            }
        }
        if v.is_null() {
            return Err(ScoringError::schema(format!(
                "{} is null (a missing value); this model takes {} values and has no way to fill in missing ones",
                capitalize(&at()),
                dtype.numpy_name()
            )));
        }
        macro_rules! float {
            ($vec:ident, $t:ty) => {{
                let x = match v {
                    Value::Number(n) => n.as_f64().ok_or_else(|| fail("not a number"))?,
                    Value::String(s) => {
                        parse_float(s).ok_or_else(|| fail(&format!("'{}' is not a number", clip(s))))?
                    }
                    other => return Err(fail(&format!("got a {}", json_kind(other)))),
                };
                store($vec, slot, x as $t);
            }};
        }
        macro_rules! int {
            ($vec:ident, $t:ty) => {{
                let x: i128 = match v {
                    Value::Number(n) => {
                        if let Some(i) = n.as_i64() {
                            i as i128
                        } else if let Some(u) = n.as_u64() {
                            u as i128
                        } else {
                            let f = n.as_f64().unwrap_or(f64::NAN);
                            if f.fract() != 0.0 || !f.is_finite() {
                                return Err(fail(&format!("{f} is not a whole number")));
                            }
                            f as i128
                        }
                    }
                    Value::String(s) => {
                        s.trim().parse::<i128>().map_err(|_| fail(&format!("'{}' is not a whole number", clip(s))))?
                    }
                    Value::Bool(b) => *b as i128,
                    other => return Err(fail(&format!("got a {}", json_kind(other)))),
                };
                store($vec, slot, <$t>::try_from(x).map_err(|_| fail(&format!("{x} is out of range")))?);
            }};
        }
        match self {
            TensorData::F32(vec) => float!(vec, f32),
            TensorData::F64(vec) => float!(vec, f64),
            TensorData::I8(vec) => int!(vec, i8),
            TensorData::I16(vec) => int!(vec, i16),
            TensorData::I32(vec) => int!(vec, i32),
            TensorData::I64(vec) => int!(vec, i64),
            TensorData::U8(vec) => int!(vec, u8),
            TensorData::U16(vec) => int!(vec, u16),
            TensorData::U32(vec) => int!(vec, u32),
            TensorData::U64(vec) => int!(vec, u64),
            TensorData::Bool(vec) => store(
                vec,
                slot,
                match v {
                    Value::Bool(b) => *b,
                    Value::Number(n) if n.as_i64() == Some(0) => false,
                    Value::Number(n) if n.as_i64() == Some(1) => true,
                    Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                    Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                    other => return Err(fail(&format!("{} is not a boolean", clip(&other.to_string())))),
                },
            ),
            TensorData::String(vec) => store(
                vec,
                slot,
                match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(fail(&format!("got a {}", json_kind(other)))),
                },
            ),
        }
        Ok(())
    }
}

/// At most 64 characters of a value or key quoted back in a message (a message must not be as
/// large as the body that caused it).
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(64) {
        None => s.into(),
        Some((end, _)) => format!("{}...", &s[..end]).into(),
    }
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An input ready for ONNX Runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// What a session returned for one output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    Tensor(TensorData),
    /// A sequence of maps (sklearn's zipmap): one `{key: value}` per row.
    Maps(Vec<Vec<(String, f64)>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: OutputData,
}

/// How predictions are shaped: one record per row (table input, as MLflow answers a
/// DataFrame) or a dictionary of output arrays (tensor input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Records,
    Columns,
}

/// The converted inputs of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub inputs: Vec<InputTensor>,
    pub style: Style,
    pub rows: usize,
}

/// Turn a payload into the model's input tensors.
pub fn prepare(schema: &ModelSchema, payload: &Payload) -> Result<Prepared, ScoringError> {
    match payload {
        Payload::Frame(frame) => frame_inputs(schema, frame),
        Payload::Numeric(nf) => numeric_inputs(schema, nf),
        Payload::Tensor(value) => match schema.inputs.as_slice() {
            [only] => {
                let t = tensor_from_json(only, value)?;
                let rows = t.shape.first().copied().unwrap_or(1).max(0) as usize;
                Ok(Prepared { inputs: vec![t], style: Style::Columns, rows })
            }
            _ if matches!(schema.binding, Binding::PerColumn { .. }) => {
                // Positional rows for a model with one input per column.
                let rows: Vec<Vec<Value>> = match value {
                    Value::Array(rows) => rows
                        .iter()
                        .map(|r| match r {
                            Value::Array(cells) => cells.clone(),
                            scalar => vec![scalar.clone()],
                        })
                        .collect(),
                    other => vec![vec![other.clone()]],
                };
                let width = rows.first().map_or(0, Vec::len);
                if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
                    return Err(ScoringError::bad_request(format!(
                        "Input row {i} has {} values but row 0 has {width}: every row must have one value per column",
                        row.len()
                    )));
                }
                let frame = Frame { columns: None, rows };
                frame_inputs(schema, &frame)
            }
            many => Err(ScoringError::schema(format!(
                "This model has {} inputs ({}); send them by name: {{\"inputs\": {{\"<input name>\": <tensor>, ...}}}}",
                many.len(),
                describe(many)
            ))),
        },
        Payload::Named(entries) => {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            if schema.takes_named_tensors(&keys) {
                named_tensor_inputs(schema, entries)
            } else {
                frame_inputs(schema, &frame_from_columns(entries)?)
            }
        }
    }
}

fn named_tensor_inputs(schema: &ModelSchema, entries: &[(String, Value)]) -> Result<Prepared, ScoringError> {
    let mut inputs = Vec::with_capacity(schema.inputs.len());
    let missing: Vec<&str> =
        schema.inputs.iter().filter(|i| !entries.iter().any(|(k, _)| *k == i.name)).map(|i| i.name.as_str()).collect();
    if !missing.is_empty() {
        return Err(ScoringError::schema(format!(
            "Model is missing inputs {missing:?}; its inputs are {}",
            describe(&schema.inputs)
        )));
    }
    for info in &schema.inputs {
        let (_, v) = entries.iter().find(|(k, _)| *k == info.name).expect("checked above; this is a bug");
        inputs.push(tensor_from_json(info, v)?);
    }
    let rows = inputs[0].shape.first().copied().unwrap_or(1).max(0) as usize;
    Ok(Prepared { inputs, style: Style::Columns, rows })
}

/// `{"inputs": {"col": [v, ...], ...}}` read as a table.
fn frame_from_columns(entries: &[(String, Value)]) -> Result<Frame, ScoringError> {
    let mut cols: Vec<Vec<Value>> = Vec::with_capacity(entries.len());
    for (name, v) in entries {
        let cells = match v {
            Value::Array(items) => items
                .iter()
                .map(|c| match c {
                    Value::Array(inner) if inner.len() == 1 => Ok(inner[0].clone()),
                    Value::Array(_) | Value::Object(_) => {
                        Err(ScoringError::bad_request(format!("Column '{name}' must be a list of values, one per row")))
                    }
                    scalar => Ok(scalar.clone()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Value::Object(_) => {
                return Err(ScoringError::bad_request(format!(
                    "Column '{name}' must be a list of values, got a dictionary"
                )))
            }
            scalar => vec![scalar.clone()],
        };
        cols.push(cells);
    }
    let n = cols.first().map_or(0, Vec::len);
    if let Some((i, c)) = cols.iter().enumerate().find(|(_, c)| c.len() != n) {
        return Err(ScoringError::bad_request(format!(
            "All columns must have the same length: '{}' has {} values, '{}' has {n}",
            entries[i].0,
            c.len(),
            entries[0].0
        )));
    }
    if n == 0 {
        return Err(ScoringError::bad_request("The columns are empty: there is nothing to score"));
    }
    let rows = (0..n).map(|r| cols.iter().map(|c| c[r].clone()).collect()).collect();
    Ok(Frame { columns: Some(entries.iter().map(|(k, _)| k.clone()).collect()), rows })
}

/// Where each needed column sits in a table with these (optional) names and this width.
fn column_positions(columns: Option<&[String]>, width: usize, wanted: &[String]) -> Result<Vec<usize>, ScoringError> {
    match columns {
        Some(have) => {
            let mut pos = Vec::with_capacity(wanted.len());
            let mut missing = Vec::new();
            for w in wanted {
                match have.iter().position(|h| h == w) {
                    Some(p) => pos.push(p),
                    None => missing.push(w.as_str()),
                }
            }
            if !missing.is_empty() {
                let extra: Vec<&str> = have.iter().filter(|h| !wanted.contains(h)).map(String::as_str).collect();
                let mut msg = format!("Model is missing inputs {missing:?}.");
                if !extra.is_empty() {
                    msg.push_str(&format!(" Note that there were extra inputs: {extra:?}."));
                }
                msg.push_str(&format!(" The model takes the columns {wanted:?}."));
                return Err(ScoringError::schema(msg));
            }
            Ok(pos)
        }
        None => {
            if width != wanted.len() {
                return Err(ScoringError::schema(format!(
                    "The payload has {width} columns and no column names, but the model takes {} columns: {wanted:?}",
                    wanted.len()
                )));
            }
            Ok((0..width).collect())
        }
    }
}

fn frame_inputs(schema: &ModelSchema, frame: &Frame) -> Result<Prepared, ScoringError> {
    let n = frame.rows.len();
    if n == 0 {
        return Err(ScoringError::bad_request("The input has no rows: there is nothing to score"));
    }
    let column_name = |p: usize| -> String {
        frame.columns.as_ref().and_then(|c| c.get(p).cloned()).unwrap_or_else(|| format!("#{p}"))
    };
    let inputs = match &schema.binding {
        Binding::PerColumn { columns } => {
            let pos = column_positions(frame.columns.as_deref(), frame.width(), columns)?;
            let mut inputs = Vec::with_capacity(columns.len());
            for (info, &p) in schema.inputs.iter().zip(&pos) {
                let dtype = info.dtype().expect("checked at load; this is a bug");
                let mut data = TensorData::with_capacity(dtype, n);
                for (r, row) in frame.rows.iter().enumerate() {
                    data.push(&row[p], &|| format!("column {} at row {r}", column_name(p)))?;
                }
                let shape = if info.shape.len() == 2 { vec![n as i64, 1] } else { vec![n as i64] };
                inputs.push(InputTensor { name: info.name.clone(), shape, data });
            }
            inputs
        }
        Binding::Stacked { input, columns } => {
            let info = &schema.inputs[*input];
            let pos = match columns {
                Some(cols) => column_positions(frame.columns.as_deref(), frame.width(), cols)?,
                None => (0..frame.width()).collect(),
            };
            let k = pos.len();
            if info.shape.len() == 2 && info.shape[1] >= 0 && info.shape[1] as usize != k {
                return Err(ScoringError::schema(format!(
                    "Model input '{}' takes {} columns, but the payload has {k}",
                    info.name, info.shape[1]
                )));
            }
            let dtype = info.dtype().expect("checked at load; this is a bug");
            let mut data = TensorData::with_capacity(dtype, n * k);
            for (r, row) in frame.rows.iter().enumerate() {
                for &p in &pos {
                    data.push(&row[p], &|| format!("column {} at row {r}", column_name(p)))?;
                }
            }
            vec![InputTensor { name: info.name.clone(), shape: vec![n as i64, k as i64], data }]
        }
        Binding::NamedTensors => {
            return Err(ScoringError::schema(format!(
                "This model takes tensors, not a table: send {{\"inputs\": {{\"<input name>\": <tensor>}}}} or {{\"inputs\": <tensor>}}. Its inputs are {}",
                describe(&schema.inputs)
            )))
        }
    };
    Ok(Prepared { inputs, style: Style::Records, rows: n })
}

/// An all-numeric table into float inputs without a JSON value per cell; other input types
/// take the general path.
fn numeric_inputs(schema: &ModelSchema, nf: &NumericFrame) -> Result<Prepared, ScoringError> {
    let floats = |i: &TensorInfo| matches!(i.dtype(), Some(DType::F32 | DType::F64));
    let fill = |dtype: DType, n: usize, mut value: &mut dyn FnMut(usize) -> f64| -> TensorData {
        match dtype {
            DType::F64 => TensorData::F64((0..n).map(&mut value).collect()),
            _ => TensorData::F32((0..n).map(|i| value(i) as f32).collect()),
        }
    };
    let (n, w) = (nf.rows(), nf.columns.len());
    let inputs = match &schema.binding {
        Binding::PerColumn { columns } if schema.inputs.iter().all(floats) => {
            let pos = column_positions(Some(&nf.columns), w, columns)?;
            schema
                .inputs
                .iter()
                .zip(&pos)
                .map(|(info, &p)| {
                    let dtype = info.dtype().expect("checked at load; this is a bug");
                    let shape = if info.shape.len() == 2 { vec![n as i64, 1] } else { vec![n as i64] };
                    InputTensor { name: info.name.clone(), shape, data: fill(dtype, n, &mut |r| nf.values[r * w + p]) }
                })
                .collect()
        }
        Binding::Stacked { input, columns } if floats(&schema.inputs[*input]) => {
            let info = &schema.inputs[*input];
            let pos = match columns {
                Some(cols) => column_positions(Some(&nf.columns), w, cols)?,
                None => (0..w).collect(),
            };
            let k = pos.len();
            if info.shape.len() == 2 && info.shape[1] >= 0 && info.shape[1] as usize != k {
                return Err(ScoringError::schema(format!(
                    "Model input '{}' takes {} columns, but the payload has {k}",
                    info.name, info.shape[1]
                )));
            }
            let dtype = info.dtype().expect("checked at load; this is a bug");
            let data = fill(dtype, n * k, &mut |i| nf.values[(i / k) * w + pos[i % k]]);
            vec![InputTensor { name: info.name.clone(), shape: vec![n as i64, k as i64], data }]
        }
        _ => return frame_inputs(schema, &nf.to_frame()),
    };
    Ok(Prepared { inputs, style: Style::Records, rows: n })
}

/// Check a shape read off a payload against the model input's: same rank, fixed dimensions
/// equal, and not empty.
pub(crate) fn check_claimed_shape(info: &TensorInfo, shape: &[usize]) -> Result<(), ScoringError> {
    let fmt_shape = |s: &[usize]| format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    let expected = format!("({})", info.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    if shape.len() != info.shape.len()
        || shape.iter().zip(&info.shape).any(|(got, want)| *want >= 0 && *got as i64 != *want)
    {
        return Err(ScoringError::schema(format!(
            "Shape of input '{}' {} does not match the expected shape {expected}",
            info.name,
            fmt_shape(shape)
        )));
    }
    if shape.first() == Some(&0) {
        return Err(ScoringError::bad_request(format!("Input '{}' is empty: there is nothing to score", info.name)));
    }
    Ok(())
}

/// Build one input tensor from a nested JSON list, checking it against the model's shape.
pub fn tensor_from_json(info: &TensorInfo, value: &Value) -> Result<InputTensor, ScoringError> {
    let dtype = info.dtype().expect("checked at load; this is a bug");
    let mut shape = Vec::new();
    let mut cursor = value;
    while let Value::Array(items) = cursor {
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    check_claimed_shape(info, &shape)?;
    // The shape is read off the first element at each depth: only a claim until `flatten` has
    // checked every element, and a few KB of JSON can claim 10^12 elements (or overflow).
    let claimed = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d)).unwrap_or(0);
    let mut data = TensorData::with_capacity(dtype, claimed.min(1 << 16));
    let mut index = Vec::with_capacity(shape.len());
    flatten(value, &shape, 0, &mut index, &mut data, &info.name)?;
    Ok(InputTensor { name: info.name.clone(), shape: shape.iter().map(|d| *d as i64).collect(), data })
}

fn flatten(
    v: &Value,
    shape: &[usize],
    depth: usize,
    index: &mut Vec<usize>,
    out: &mut TensorData,
    name: &str,
) -> Result<(), ScoringError> {
    if depth == shape.len() {
        if v.is_array() {
            return Err(ScoringError::schema(format!(
                "Input '{name}' is ragged: element {index:?} is nested deeper than the first element"
            )));
        }
        return out.push(v, &|| format!("input '{name}' element {index:?}"));
    }
    match v {
        Value::Array(items) if items.len() == shape[depth] => {
            for (i, item) in items.iter().enumerate() {
                index.push(i);
                flatten(item, shape, depth + 1, index, out, name)?;
                index.pop();
            }
            Ok(())
        }
        Value::Array(items) => Err(ScoringError::schema(format!(
            "Input '{name}' is ragged: element {index:?} has {} items where the first has {}",
            items.len(),
            shape[depth]
        ))),
        _ => Err(ScoringError::schema(format!(
            "Input '{name}' is ragged: element {index:?} is a scalar where a list of {} was expected",
            shape[depth]
        ))),
    }
}

/// Check an Open Inference Protocol input's declared datatype and shape against the model;
/// returns the element type and count.
pub(crate) fn check_v2(info: &TensorInfo, datatype: &str, shape: &[i64]) -> Result<(DType, usize), ScoringError> {
    let dtype = info.dtype().expect("checked at load; this is a bug");
    if !datatype.eq_ignore_ascii_case(dtype.v2_name()) {
        return Err(ScoringError::schema(format!(
            "Input '{}' has datatype {datatype}, but the model expects {}",
            info.name,
            dtype.v2_name()
        )));
    }
    if shape.iter().any(|d| *d < 0) {
        return Err(ScoringError::bad_request(format!(
            "Input '{}' has a negative dimension in its shape {shape:?}",
            info.name
        )));
    }
    if shape.len() != info.shape.len() || shape.iter().zip(&info.shape).any(|(got, want)| *want >= 0 && got != want) {
        return Err(ScoringError::schema(format!(
            "Input '{}' has shape {shape:?}, but the model expects {:?} (-1 is any size)",
            info.name, info.shape
        )));
    }
    let total = shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d as usize))
        .ok_or_else(|| ScoringError::bad_request(format!("Input '{}' shape {shape:?} is too large", info.name)))?;
    Ok((dtype, total))
}

/// Build an input tensor from an Open Inference Protocol input: declared `datatype` and
/// `shape`, `data` flat or nested in row-major order.
pub fn tensor_from_v2(
    info: &TensorInfo,
    datatype: &str,
    shape: &[i64],
    data: &Value,
) -> Result<InputTensor, ScoringError> {
    let (dtype, total) = check_v2(info, datatype, shape)?;
    let mut out = TensorData::with_capacity(dtype, total.min(1 << 16));
    let mut count = 0usize;
    push_flat(data, &mut out, &mut count, &info.name)?;
    if count != total {
        return Err(ScoringError::bad_request(format!(
            "Input '{}' has {count} values in 'data', but its shape {shape:?} holds {total}",
            info.name
        )));
    }
    Ok(InputTensor { name: info.name.clone(), shape: shape.to_vec(), data: out })
}

/// Build an input tensor from the protocol's binary tensor data extension: little-endian
/// values, `BOOL` one byte each, `BYTES` as 4-byte length-prefixed strings.
pub fn tensor_from_v2_binary(
    info: &TensorInfo,
    datatype: &str,
    shape: &[i64],
    raw: &[u8],
) -> Result<InputTensor, ScoringError> {
    let (dtype, total) = check_v2(info, datatype, shape)?;
    let name = &info.name;
    let wrong_size = |size: usize| {
        ScoringError::bad_request(format!(
            "Input '{name}' has {} bytes of binary data, but its shape {shape:?} of {} needs {}",
            raw.len(),
            dtype.v2_name(),
            total.saturating_mul(size)
        ))
    };
    macro_rules! le {
        ($t:ty, $variant:ident) => {{
            const N: usize = std::mem::size_of::<$t>();
            if raw.len() != total.saturating_mul(N) {
                return Err(wrong_size(N));
            }
            TensorData::$variant(
                raw.chunks_exact(N).map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk"))).collect(),
            )
        }};
    }
    let data = match dtype {
        DType::F32 => le!(f32, F32),
        DType::F64 => le!(f64, F64),
        DType::I8 => le!(i8, I8),
        DType::I16 => le!(i16, I16),
        DType::I32 => le!(i32, I32),
        DType::I64 => le!(i64, I64),
        DType::U8 => le!(u8, U8),
        DType::U16 => le!(u16, U16),
        DType::U32 => le!(u32, U32),
        DType::U64 => le!(u64, U64),
        DType::Bool => {
            if raw.len() != total {
                return Err(wrong_size(1));
            }
            TensorData::Bool(raw.iter().map(|b| *b != 0).collect())
        }
        DType::String => {
            let mut out = Vec::with_capacity(total.min(1 << 16));
            let mut rest = raw;
            while rest.len() >= 4 {
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let item = rest.get(4..4 + n).ok_or_else(|| {
                    ScoringError::bad_request(format!("Input '{name}': a BYTES element is longer than the data"))
                })?;
                out.push(String::from_utf8(item.to_vec()).map_err(|_| {
                    ScoringError::bad_request(format!("Input '{name}': a BYTES element is not UTF-8 text"))
                })?);
                rest = &rest[4 + n..];
            }
            if !rest.is_empty() || out.len() != total {
                return Err(ScoringError::bad_request(format!(
                    "Input '{name}' holds {} BYTES elements, but its shape {shape:?} holds {total}",
                    out.len()
                )));
            }
            TensorData::String(out)
        }
    };
    Ok(InputTensor { name: name.clone(), shape: shape.to_vec(), data })
}

fn push_flat(v: &Value, out: &mut TensorData, count: &mut usize, name: &str) -> Result<(), ScoringError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|item| push_flat(item, out, count, name)),
        scalar => {
            let i = *count;
            *count += 1;
            out.push(scalar, &|| format!("input '{name}' value {i}"))
        }
    }
}

/// An output's values as one flat JSON list (the Open Inference Protocol's `data`); maps
/// (zipmap outputs) are written as JSON objects.
pub fn write_flat(buf: &mut Vec<u8>, o: &OutputTensor) {
    buf.push(b'[');
    match &o.data {
        OutputData::Tensor(t) => {
            for i in 0..t.len() {
                if i > 0 {
                    buf.push(b',');
                }
                write_elem(buf, t, i);
            }
        }
        OutputData::Maps(maps) => {
            for (i, m) in maps.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_map(buf, m);
            }
        }
    }
    buf.push(b']');
}

// ------------------------------------------------------------------------ output JSON

/// `{"predictions": ...}` rendered a chunk at a time as the response is sent: the text costs
/// tens of bytes a row, several times the request for narrow tables, so it is never held whole.
/// Chunks end on row boundaries (records, or rows of each output in the columns style).
pub struct PredictionChunks {
    outputs: Vec<OutputTensor>,
    /// `"name":` of each output, escaped once.
    keys: Vec<Vec<u8>>,
    rows: usize,
    records: bool,
    at: Place,
}

/// Where rendering stands.
#[derive(Clone, Copy)]
enum Place {
    Start,
    /// Records style: the next record.
    Record(usize),
    /// Columns style: the next row of output `i`.
    Output {
        i: usize,
        r: usize,
    },
    Done,
}

/// Each output's name as a JSON key with its colon (`"label":`), escaped once for all the
/// records that repeat it.
fn record_keys(outputs: &[OutputTensor]) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .map(|o| {
            let mut k = Vec::with_capacity(o.name.len() + 3);
            write_str(&mut k, &o.name);
            k.push(b':');
            k
        })
        .collect()
}

/// About this many bytes of text per chunk.
const CHUNK: usize = 64 << 10;

impl PredictionChunks {
    pub fn new(outputs: Vec<OutputTensor>, style: Style, rows: usize) -> PredictionChunks {
        let records = style == Style::Records && outputs.iter().all(|o| o.shape.first() == Some(&rows));
        let keys = record_keys(&outputs);
        PredictionChunks { outputs, keys, rows, records, at: Place::Start }
    }

    /// About how many bytes the largest single row renders to (a chunk holds at least one), to
    /// decide whether rendering belongs off the async workers.
    pub fn row_estimate(&self) -> usize {
        let per_row = |o: &OutputTensor| match &o.data {
            OutputData::Tensor(t) => t.len() / o.shape.first().copied().unwrap_or(1).max(1),
            OutputData::Maps(m) => m.iter().map(Vec::len).max().unwrap_or(0) * 2,
        };
        let row: usize = if self.records {
            self.outputs.iter().map(per_row).sum()
        } else {
            self.outputs.iter().map(per_row).max().unwrap_or(0)
        };
        row * 24
    }
}

impl Iterator for PredictionChunks {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if matches!(self.at, Place::Done) {
            return None;
        }
        let mut buf = Vec::with_capacity(CHUNK + 256);
        while buf.len() < CHUNK {
            self.at = match self.at {
                Place::Done => break,
                Place::Start if self.records => {
                    buf.extend_from_slice(b"{\"predictions\":[");
                    Place::Record(0)
                }
                Place::Start => {
                    buf.extend_from_slice(b"{\"predictions\":{");
                    Place::Output { i: 0, r: 0 }
                }
                Place::Record(r) if r == self.rows => {
                    buf.extend_from_slice(b"]}");
                    Place::Done
                }
                Place::Record(r) => {
                    if r > 0 {
                        buf.push(b',');
                    }
                    buf.push(b'{');
                    for (i, (o, key)) in self.outputs.iter().zip(&self.keys).enumerate() {
                        if i > 0 {
                            buf.push(b',');
                        }
                        buf.extend_from_slice(key);
                        write_row(&mut buf, o, r);
                    }
                    buf.push(b'}');
                    Place::Record(r + 1)
                }
                Place::Output { i, .. } if i == self.outputs.len() => {
                    buf.extend_from_slice(b"}}");
                    Place::Done
                }
                Place::Output { i, r } => {
                    let o = &self.outputs[i];
                    if r == 0 {
                        if i > 0 {
                            buf.push(b',');
                        }
                        buf.extend_from_slice(&self.keys[i]);
                    }
                    match o.shape.first() {
                        // A scalar output: whole.
                        None => {
                            write_output(&mut buf, o);
                            Place::Output { i: i + 1, r: 0 }
                        }
                        Some(&n) => {
                            if r == 0 {
                                buf.push(b'[');
                            }
                            if r == n {
                                buf.push(b']');
                                Place::Output { i: i + 1, r: 0 }
                            } else {
                                if r > 0 {
                                    buf.push(b',');
                                }
                                write_row(&mut buf, o, r);
                                Place::Output { i, r: r + 1 }
                            }
                        }
                    }
                }
            };
        }
        Some(buf)
    }
}

/// Write `{"predictions": ...}` for the outputs, shaped by `style`. Records fall back to the
/// column style when an output does not have one entry per row.
pub fn write_predictions(buf: &mut Vec<u8>, outputs: &[OutputTensor], style: Style, rows: usize) {
    buf.extend_from_slice(b"{\"predictions\":");
    write_prediction_value(buf, outputs, style, rows);
    buf.push(b'}');
}

/// The value under `predictions`.
pub fn write_prediction_value(buf: &mut Vec<u8>, outputs: &[OutputTensor], style: Style, rows: usize) {
    let per_row = outputs.iter().all(|o| o.shape.first() == Some(&rows));
    if style == Style::Records && per_row {
        // Each record repeats the output names: escape them once.
        let keys = record_keys(outputs);
        buf.push(b'[');
        for r in 0..rows {
            if r > 0 {
                buf.push(b',');
            }
            buf.push(b'{');
            for (i, (o, key)) in outputs.iter().zip(&keys).enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(key);
                write_row(buf, o, r);
            }
            buf.push(b'}');
        }
        buf.push(b']');
    } else {
        buf.push(b'{');
        for (i, o) in outputs.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(buf, &o.name);
            buf.push(b':');
            write_output(buf, o);
        }
        buf.push(b'}');
    }
}

/// One whole output as a nested list.
pub fn write_output(buf: &mut Vec<u8>, o: &OutputTensor) {
    match &o.data {
        OutputData::Maps(maps) => {
            buf.push(b'[');
            for (i, m) in maps.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_map(buf, m);
            }
            buf.push(b']');
        }
        OutputData::Tensor(t) => write_nested(buf, t, &o.shape, 0, t.len()),
    }
}

fn write_row(buf: &mut Vec<u8>, o: &OutputTensor, r: usize) {
    match &o.data {
        OutputData::Maps(maps) => write_map(buf, &maps[r]),
        OutputData::Tensor(t) => {
            let inner: usize = o.shape[1..].iter().product();
            if o.shape.len() == 1 {
                write_elem(buf, t, r);
            } else {
                write_nested(buf, t, &o.shape[1..], r * inner, inner);
            }
        }
    }
}

/// Write elements `start .. start+len` of `t` nested by `shape`.
fn write_nested(buf: &mut Vec<u8>, t: &TensorData, shape: &[usize], start: usize, len: usize) {
    match shape {
        [] => write_elem(buf, t, start),
        [d, rest @ ..] => {
            let step = if *d == 0 { 0 } else { len / d };
            buf.push(b'[');
            for i in 0..*d {
                if i > 0 {
                    buf.push(b',');
                }
                write_nested(buf, t, rest, start + i * step, step);
            }
            buf.push(b']');
        }
    }
}

/// One row of a sequence of maps (a zipmap output) as a JSON object.
pub fn write_map(buf: &mut Vec<u8>, m: &[(String, f64)]) {
    buf.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, k);
        buf.push(b':');
        write_f64(buf, *v);
    }
    buf.push(b'}');
}

fn write_elem(buf: &mut Vec<u8>, t: &TensorData, i: usize) {
    let mut ints = itoa::Buffer::new();
    match t {
        TensorData::F32(v) => write_f32(buf, v[i]),
        TensorData::F64(v) => write_f64(buf, v[i]),
        TensorData::I8(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::I16(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::I32(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::I64(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::U8(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::U16(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::U32(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::U64(v) => buf.extend_from_slice(ints.format(v[i]).as_bytes()),
        TensorData::Bool(v) => buf.extend_from_slice(if v[i] { b"true" } else { b"false" }),
        TensorData::String(v) => write_str(buf, &v[i]),
    }
}

/// Shortest round-trip text of an f32 (`ryu`: whole numbers keep their `.0`, so clients read
/// floats back as floats); non-finite values become `null` (JSON has no NaN).
fn write_f32(buf: &mut Vec<u8>, x: f32) {
    if x.is_finite() {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        buf.extend_from_slice(b"null");
    }
}

fn write_f64(buf: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        buf.extend_from_slice(b"null");
    }
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::payload::parse_json;
    use crate::runtime::schema::{ColSpec, Signature, ValueKind};
    use crate::runtime::ScoringErrorKind;
    use serde_json::json;

    fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
    }
    fn iris_cols() -> Signature {
        Signature::Columns(
            ["sepal_length", "sepal_width", "petal_length", "petal_width"]
                .iter()
                .map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true })
                .collect(),
        )
    }
    fn stacked_iris() -> ModelSchema {
        ModelSchema::new(vec![info("float_input", DType::F32, &[-1, 4])], vec![], Some(iris_cols())).unwrap()
    }
    fn per_column_iris() -> ModelSchema {
        let inputs = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
            .iter()
            .map(|n| info(n, DType::F32, &[-1, 1]))
            .collect();
        ModelSchema::new(inputs, vec![], Some(iris_cols())).unwrap()
    }
    fn prep(schema: &ModelSchema, body: &str) -> Result<Prepared, ScoringError> {
        prepare(schema, &parse_json(body.as_bytes()).unwrap().payload)
    }

    #[test]
    fn split_feeds_stacked_input_by_name() {
        let p = prep(
            &stacked_iris(),
            r#"{"dataframe_split": {"columns": ["petal_width", "sepal_length", "sepal_width", "petal_length"], "data": [[0.2, 5.1, 3.5, 1.4], [1, 2, 3, 4]]}}"#,
        )
        .unwrap();
        assert_eq!(p.style, Style::Records);
        assert_eq!(p.rows, 2);
        assert_eq!(p.inputs[0].shape, vec![2, 4]);
        assert_eq!(p.inputs[0].data, TensorData::F32(vec![5.1, 3.5, 1.4, 0.2, 2.0, 3.0, 4.0, 1.0]));
    }

    #[test]
    fn per_column_inputs_and_csv_strings() {
        let p = prep(&per_column_iris(), r#"{"dataframe_records": [{"sepal_length": "5.1", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}"#).unwrap();
        assert_eq!(p.inputs.len(), 4);
        assert_eq!(
            p.inputs[0],
            InputTensor { name: "sepal_length".into(), shape: vec![1, 1], data: TensorData::F32(vec![5.1]) }
        );
        let p = prep(&per_column_iris(), r#"{"inputs": {"sepal_length": [1, 2], "sepal_width": [3, 4], "petal_length": [5, 6], "petal_width": [7, 8]}}"#).unwrap();
        assert_eq!(p.style, Style::Records);
        assert_eq!(p.inputs[3].data, TensorData::F32(vec![7.0, 8.0]));
    }

    #[test]
    fn tensors_in_columns_style() {
        let schema = ModelSchema::new(vec![info("input", DType::F32, &[-1, 3])], vec![], None).unwrap();
        let p = prep(&schema, r#"{"inputs": [[1, 2, 3], [4, 5, 6]]}"#).unwrap();
        assert_eq!((p.style, p.rows, p.inputs[0].shape.clone()), (Style::Columns, 2, vec![2, 3]));
        let p = prep(&schema, r#"{"inputs": {"input": [[1, 2, 3]]}}"#).unwrap();
        assert_eq!(p.style, Style::Columns);
        // A table works for a [N, k] input without a signature: columns in their given order.
        assert_eq!(
            prep(&schema, r#"{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}}"#).unwrap().inputs
                [0]
            .data,
            TensorData::F32(vec![1.0, 2.0, 3.0])
        );
    }

    #[test]
    fn integer_and_bool_inputs() {
        let schema =
            ModelSchema::new(vec![info("i", DType::I64, &[-1]), info("b", DType::Bool, &[-1])], vec![], None).unwrap();
        let p = prep(&schema, r#"{"dataframe_split": {"columns": ["i", "b"], "data": [[1, true], [2.0, "false"]]}}"#)
            .unwrap();
        assert_eq!(p.inputs[0].data, TensorData::I64(vec![1, 2]));
        assert_eq!(p.inputs[1].data, TensorData::Bool(vec![true, false]));
        let e = prep(&schema, r#"{"dataframe_split": {"columns": ["i", "b"], "data": [[1.5, true]]}}"#).unwrap_err();
        assert!(e.message.contains("column i at row 0") && e.message.contains("not a whole number"), "{e}");
    }

    #[test]
    fn errors_name_the_column_or_input() {
        let s = stacked_iris();
        let e = prep(
            &s,
            r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length"], "data": [[1, 2, 3]]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ScoringErrorKind::Schema);
        assert!(e.message.contains("Model is missing inputs [\"petal_width\"]"), "{e}");
        let e = prep(&s, r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [["abc", 2, 3, 4]]}}"#).unwrap_err();
        assert!(e.message.contains("Failed to convert column sepal_length at row 0 to type 'float32'"), "{e}");
        let e = prep(&s, r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[1, null, 3, 4]]}}"#).unwrap_err();
        assert!(e.message.contains("Column sepal_width at row 0 is null"), "{e}");
        let e = prep(&s, r#"{"inputs": [[1, 2, 3]]}"#).unwrap_err();
        assert!(
            e.message.contains("Shape of input 'float_input' (1, 3) does not match the expected shape (-1, 4)"),
            "{e}"
        );
        let e = prep(&s, r#"{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}"#).unwrap_err();
        assert!(e.message.contains("ragged"), "{e}");
        let e = prep(&s, r#"{"dataframe_split": {"data": [[1, 2, 3]]}}"#).unwrap_err();
        assert!(e.message.contains("3 columns and no column names"), "{e}");
    }

    fn out(name: &str, shape: &[usize], data: TensorData) -> OutputTensor {
        OutputTensor { name: name.into(), shape: shape.to_vec(), data: OutputData::Tensor(data) }
    }

    #[test]
    fn records_and_columns_output() {
        let outputs = vec![
            out("label", &[2], TensorData::I64(vec![0, 2])),
            out("probabilities", &[2, 3], TensorData::F32(vec![0.9, 0.1, 0.0, 0.1, 0.2, 0.7])),
        ];
        let mut buf = Vec::new();
        write_predictions(&mut buf, &outputs, Style::Records, 2);
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v,
            json!({"predictions": [{"label": 0, "probabilities": [0.9, 0.1, 0.0]}, {"label": 2, "probabilities": [0.1, 0.2, 0.7]}]})
        );
        let mut buf = Vec::new();
        write_predictions(&mut buf, &outputs, Style::Columns, 2);
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v, json!({"predictions": {"label": [0, 2], "probabilities": [[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]]}}));
    }

    #[test]
    fn non_finite_floats_are_null_and_maps_are_objects() {
        let outputs = vec![
            out("y", &[2], TensorData::F32(vec![f32::NAN, 1.5])),
            OutputTensor {
                name: "p".into(),
                shape: vec![2],
                data: OutputData::Maps(vec![vec![("0".into(), 0.25)], vec![("0".into(), 0.5)]]),
            },
        ];
        let mut buf = Vec::new();
        write_predictions(&mut buf, &outputs, Style::Records, 2);
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v, json!({"predictions": [{"y": null, "p": {"0": 0.25}}, {"y": 1.5, "p": {"0": 0.5}}]}));
    }

    #[test]
    fn v2_binary_data_is_little_endian_and_checked() {
        let f = info("x", DType::F32, &[-1, 2]);
        let raw: Vec<u8> = [1.5f32, -2.0, 3.25, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = tensor_from_v2_binary(&f, "FP32", &[2, 2], &raw).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![1.5, -2.0, 3.25, 4.0]));
        assert!(tensor_from_v2_binary(&f, "FP32", &[2, 2], &raw[..15]).unwrap_err().message.contains("15 bytes"));
        assert!(tensor_from_v2_binary(&f, "FP64", &[2, 2], &raw).is_err());
        let s = info("s", DType::String, &[-1]);
        let mut raw = Vec::new();
        for word in ["ab", "", "ünï"] {
            raw.extend_from_slice(&(word.len() as u32).to_le_bytes());
            raw.extend_from_slice(word.as_bytes());
        }
        let t = tensor_from_v2_binary(&s, "BYTES", &[3], &raw).unwrap();
        assert_eq!(t.data, TensorData::String(vec!["ab".into(), "".into(), "ünï".into()]));
        assert!(tensor_from_v2_binary(&s, "BYTES", &[2], &raw).is_err());
        assert!(tensor_from_v2_binary(&s, "BYTES", &[3], &raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn chunks_join_to_the_whole_answer() {
        for rows in [1usize, 3, 5000] {
            let outputs = vec![
                out("label", &[rows], TensorData::I64((0..rows as i64).collect())),
                out("probabilities", &[rows, 2], TensorData::F32(vec![0.25; rows * 2])),
            ];
            for style in [Style::Records, Style::Columns] {
                let mut whole = Vec::new();
                write_predictions(&mut whole, &outputs, style, rows);
                let chunks: Vec<Vec<u8>> = PredictionChunks::new(outputs.clone(), style, rows).collect();
                assert!(chunks.len() > 1 || rows < 5000 || style == Style::Columns, "{} chunks", chunks.len());
                assert_eq!(chunks.concat(), whole, "{rows} rows, {style:?}");
            }
        }
    }

    #[test]
    fn records_fall_back_when_an_output_is_not_per_row() {
        let outputs =
            vec![out("y", &[2], TensorData::F32(vec![1.0, 2.0])), out("total", &[1], TensorData::F32(vec![3.0]))];
        let mut buf = Vec::new();
        write_predictions(&mut buf, &outputs, Style::Records, 2);
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v, json!({"predictions": {"y": [1.0, 2.0], "total": [3.0]}}));
    }
}
