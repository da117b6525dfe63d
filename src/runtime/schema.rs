//! What a model takes and gives: ONNX inputs/outputs, the MLflow signature, and how payload
//! columns bind to ONNX inputs (decided once, at load).

use serde::Deserialize;

/// Tensor element types regserve converts payloads to and from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    String,
}

impl DType {
    pub fn from_ort(t: ort::value::TensorElementType) -> Option<DType> {
        use ort::value::TensorElementType as T;
        Some(match t {
            T::Float32 => DType::F32,
            T::Float64 => DType::F64,
            T::Int8 => DType::I8,
            T::Int16 => DType::I16,
            T::Int32 => DType::I32,
            T::Int64 => DType::I64,
            T::Uint8 => DType::U8,
            T::Uint16 => DType::U16,
            T::Uint32 => DType::U32,
            T::Uint64 => DType::U64,
            T::Bool => DType::Bool,
            T::String => DType::String,
            _ => return None,
        })
    }

    /// numpy's name, used in messages (MLflow speaks numpy).
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::String => "str",
        }
    }

    /// The Open Inference Protocol's datatype name.
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I8 => "INT8",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::Bool => "BOOL",
            DType::String => "BYTES",
        }
    }
}

/// The kind of value an ONNX input or output holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    Tensor(DType),
    /// A sequence of maps, as sklearn classifiers converted with `zipmap` on return.
    SequenceOfMaps,
    /// Anything else (sequences of tensors, optional values, unsupported element types).
    Other(String),
}

/// One ONNX input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub kind: ValueKind,
    /// Dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
}

impl TensorInfo {
    pub fn from_outlet(o: &ort::value::Outlet) -> TensorInfo {
        use ort::value::ValueType;
        let (kind, shape) = match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                let kind = DType::from_ort(*ty)
                    .map(ValueKind::Tensor)
                    .unwrap_or_else(|| ValueKind::Other(format!("tensor({ty:?})")));
                (kind, shape.iter().copied().collect())
            }
            ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
                (ValueKind::SequenceOfMaps, vec![-1])
            }
            other => (ValueKind::Other(format!("{other:?}")), vec![]),
        };
        TensorInfo { name: o.name().to_string(), kind, shape }
    }

    pub fn dtype(&self) -> Option<DType> {
        match self.kind {
            ValueKind::Tensor(d) => Some(d),
            _ => None,
        }
    }

    /// One value per row: shape `[N]` or `[N, 1]`.
    pub fn is_column_like(&self) -> bool {
        match self.shape.as_slice() {
            [_] => true,
            [_, last] => *last == 1,
            _ => false,
        }
    }
}

/// A column of an MLflow column-based signature.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ColSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// A tensor of an MLflow tensor-based signature.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "tensor-spec")]
    pub spec: TensorSpecInner,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorSpecInner {
    pub dtype: String,
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// The input side of an MLflow model signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Columns(Vec<ColSpec>),
    Tensors(Vec<TensorSpec>),
}

impl Signature {
    /// Parse the JSON string MLflow stores under `signature.inputs` in `MLmodel`.
    pub fn parse(json: &str) -> Result<Signature, String> {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(json).map_err(|e| format!("signature inputs are not a JSON list: {e}"))?;
        let is_tensor = |v: &serde_json::Value| v.get("type").and_then(|t| t.as_str()) == Some("tensor");
        if !items.is_empty() && items.iter().all(is_tensor) {
            let specs = items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<TensorSpec>, _>>()
                .map_err(|e| format!("bad tensor signature: {e}"))?;
            Ok(Signature::Tensors(specs))
        } else if items.iter().any(is_tensor) {
            Err("signature mixes tensor and column inputs".into())
        } else {
            let cols = items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<ColSpec>, _>>()
                .map_err(|e| format!("bad column signature: {e}"))?;
            Ok(Signature::Columns(cols))
        }
    }

    /// Column names, when this is a column signature whose columns all have names.
    pub fn column_names(&self) -> Option<Vec<String>> {
        match self {
            Signature::Columns(cols) if !cols.is_empty() => cols.iter().map(|c| c.name.clone()).collect(),
            _ => None,
        }
    }
}

/// How a table (dataframe payload) feeds the ONNX inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// One ONNX input per column; `columns[i]` feeds ONNX input `i`.
    PerColumn { columns: Vec<String> },
    /// One ONNX input `[N, k]` fed from k columns: by name in signature order when `columns`
    /// is known, else the payload's columns in their given order.
    Stacked { input: usize, columns: Option<Vec<String>> },
    /// Several tensor inputs that take no table: only named tensors.
    NamedTensors,
}

impl Binding {
    /// Decide the binding from the ONNX inputs and (if any) the MLflow signature.
    pub fn decide(inputs: &[TensorInfo], signature: Option<&Signature>) -> Result<Binding, String> {
        let names = signature.and_then(Signature::column_names);
        let input_names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        if let Some(cols) = names {
            let all_inputs_are_columns = inputs.iter().all(|i| cols.contains(&i.name) && i.is_column_like());
            if all_inputs_are_columns && (inputs.len() > 1 || cols.len() == 1) {
                return Ok(Binding::PerColumn { columns: input_names.iter().map(|s| s.to_string()).collect() });
            }
            if let [only] = inputs {
                if only.shape.len() == 2 && (only.shape[1] < 0 || only.shape[1] as usize == cols.len()) {
                    return Ok(Binding::Stacked { input: 0, columns: Some(cols) });
                }
            }
            return Err(format!(
                "the signature's columns {cols:?} match neither one ONNX input per column nor one [N, {}] input; ONNX inputs: {}",
                cols.len(),
                describe(inputs)
            ));
        }
        match inputs {
            [] => Err("the model has no inputs".into()),
            [only] if only.shape.len() == 2 => Ok(Binding::Stacked { input: 0, columns: None }),
            [_] => Ok(Binding::NamedTensors),
            many if many.iter().all(TensorInfo::is_column_like) => {
                Ok(Binding::PerColumn { columns: many.iter().map(|i| i.name.clone()).collect() })
            }
            _ => Ok(Binding::NamedTensors),
        }
    }

    /// The column names a table must have, when known.
    pub fn column_names(&self) -> Option<&[String]> {
        match self {
            Binding::PerColumn { columns } => Some(columns),
            Binding::Stacked { columns: Some(c), .. } => Some(c),
            _ => None,
        }
    }
}

/// Everything needed to turn payloads into inputs and outputs into answers.
#[derive(Debug, Clone)]
pub struct ModelSchema {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub signature: Option<Signature>,
    pub binding: Binding,
}

impl ModelSchema {
    pub fn new(
        inputs: Vec<TensorInfo>,
        outputs: Vec<TensorInfo>,
        signature: Option<Signature>,
    ) -> Result<Self, String> {
        for i in &inputs {
            if i.dtype().is_none() {
                return Err(format!("input '{}' has an unsupported type {:?}", i.name, i.kind));
            }
        }
        let binding = Binding::decide(&inputs, signature.as_ref())?;
        Ok(ModelSchema { inputs, outputs, signature, binding })
    }

    /// True when dict payloads should be read as named ONNX tensors rather than as columns.
    pub fn takes_named_tensors(&self, keys: &[&str]) -> bool {
        if matches!(self.signature, Some(Signature::Columns(_))) {
            return false;
        }
        keys.iter().all(|k| self.inputs.iter().any(|i| i.name == *k))
    }
}

pub fn describe(infos: &[TensorInfo]) -> String {
    infos
        .iter()
        .map(|i| {
            let ty = match &i.kind {
                ValueKind::Tensor(d) => d.numpy_name().to_string(),
                ValueKind::SequenceOfMaps => "seq(map)".to_string(),
                ValueKind::Other(s) => s.clone(),
            };
            format!("{} {ty}{:?}", i.name, i.shape)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), kind: ValueKind::Tensor(DType::F32), shape: shape.to_vec() }
    }

    fn cols(names: &[&str]) -> Signature {
        Signature::Columns(
            names.iter().map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true }).collect(),
        )
    }

    #[test]
    fn parses_column_and_tensor_signatures() {
        let c =
            Signature::parse(r#"[{"type": "float", "name": "a", "required": true}, {"type": "long", "name": "b"}]"#)
                .unwrap();
        assert_eq!(c.column_names().unwrap(), vec!["a", "b"]);
        let t = Signature::parse(
            r#"[{"name": "x", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]"#,
        )
        .unwrap();
        assert!(matches!(t, Signature::Tensors(ref v) if v[0].spec.shape == vec![-1, 4]));
        assert!(t.column_names().is_none());
        assert!(Signature::parse("not json").is_err());
    }

    #[test]
    fn bindings() {
        let sig = cols(&["a", "b", "c", "d"]);
        assert_eq!(
            Binding::decide(&[t("x", &[-1, 4])], Some(&sig)).unwrap(),
            Binding::Stacked { input: 0, columns: Some(vec!["a".into(), "b".into(), "c".into(), "d".into()]) }
        );
        let per = [t("a", &[-1, 1]), t("b", &[-1, 1]), t("c", &[-1]), t("d", &[-1, 1])];
        assert!(matches!(Binding::decide(&per, Some(&sig)).unwrap(), Binding::PerColumn { .. }));
        assert!(matches!(Binding::decide(&per, None).unwrap(), Binding::PerColumn { .. }));
        assert_eq!(Binding::decide(&[t("x", &[-1, 64])], None).unwrap(), Binding::Stacked { input: 0, columns: None });
        assert_eq!(Binding::decide(&[t("img", &[-1, 3, 8, 8])], None).unwrap(), Binding::NamedTensors);
        // 3 signature columns cannot feed a [N, 4] input.
        assert!(Binding::decide(&[t("x", &[-1, 4])], Some(&cols(&["a", "b", "c"]))).is_err());
    }
}
