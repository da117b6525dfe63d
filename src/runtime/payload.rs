//! Scoring payloads, as `mlflow models serve` reads them: `application/json` with exactly one of
//! `dataframe_split`, `dataframe_records`, `instances`, `inputs` (plus optional `params`), or
//! `text/csv` with a header row. Pure parsing; no model knowledge.
//!
//! This is the `serde_json::Value` path, kept as the reference the fuzz targets and property
//! tests check; requests, warm-up and `regserve predict` go through [`decode`](super::decode),
//! which parses straight into the model's tensors.

use serde_json::{Map, Value};

use super::ScoringError;

/// A table: named (or positional) columns, row-major cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Column names; `None` when the payload gave none (`dataframe_split` without `columns`).
    pub columns: Option<Vec<String>>,
    pub rows: Vec<Vec<Value>>,
}

impl Frame {
    pub fn width(&self) -> usize {
        match &self.columns {
            Some(c) => c.len(),
            None => self.rows.first().map_or(0, Vec::len),
        }
    }
}

/// An all-numeric `dataframe_split`, parsed straight into one row-major buffer (the common
/// case, read without building a `serde_json::Value` per cell).
#[derive(Debug, Clone, PartialEq)]
pub struct NumericFrame {
    pub columns: Vec<String>,
    /// Row-major values; `values.len() == rows * columns.len()`.
    pub values: Vec<f64>,
}

impl NumericFrame {
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.columns.len()).unwrap_or(0)
    }

    /// The same table with one JSON value per cell, for the general conversion path.
    pub fn to_frame(&self) -> Frame {
        let w = self.columns.len().max(1);
        let rows = self.values.chunks(w).map(|r| r.iter().map(|x| Value::from(*x)).collect()).collect();
        Frame { columns: Some(self.columns.clone()), rows }
    }
}

/// What a request asks the model to score.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `dataframe_split`, `dataframe_records`, CSV, or a list of row objects.
    Frame(Frame),
    /// An all-numeric `dataframe_split` (see [`NumericFrame`]).
    Numeric(NumericFrame),
    /// `instances` / `inputs` as a (nested) list: one unnamed tensor.
    Tensor(Value),
    /// `inputs` / `instances` as an object: named tensors or columns.
    Named(Vec<(String, Value)>),
}

impl Payload {
    /// True for table-shaped input, which MLflow answers one record per row.
    pub fn is_frame(&self) -> bool {
        matches!(self, Payload::Frame(_) | Payload::Numeric(_))
    }
}

/// A parsed scoring request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub payload: Payload,
    /// Inference parameters (`params`); ONNX models take none, so they are accepted and unused.
    pub params: Option<Map<String, Value>>,
}

const INPUT_FIELDS: [&str; 4] = ["dataframe_split", "dataframe_records", "instances", "inputs"];

fn fields_message() -> String {
    "The input must be a JSON dictionary with exactly one of the input fields {'dataframe_split', 'dataframe_records', 'instances', 'inputs'}. Received dictionary with input fields: "
        .to_string()
}

/// Which body format a Content-Type header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// Read a Content-Type header: JSON (also when absent) or CSV, charset UTF-8 only.
pub fn format_of(content_type: Option<&str>) -> Result<Format, ScoringError> {
    let Some(ct) = content_type.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(Format::Json);
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("charset") {
                let v = v.trim().trim_matches('"').to_ascii_lowercase();
                if v != "utf-8" && v != "utf8" {
                    return Err(ScoringError::media_type(format!(
                        "Unsupported charset '{v}': only charset=utf-8 is supported."
                    )));
                }
            }
        }
    }
    match media.as_str() {
        "application/json" => Ok(Format::Json),
        "text/csv" => Ok(Format::Csv),
        _ => Err(ScoringError::media_type(format!(
            "This predictor only supports the following content types: application/json, text/csv. Got '{ct}'."
        ))),
    }
}

/// Parse a request body according to its Content-Type.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Request, ScoringError> {
    match format_of(content_type)? {
        Format::Json => parse_json(body),
        Format::Csv => parse_csv(body).map(|f| Request { payload: Payload::Frame(f), params: None }),
    }
}

/// The all-numeric `dataframe_split` fast path alone: `None` when the body is anything else.
pub fn numeric_split(body: &[u8]) -> Option<Request> {
    fast::numeric_split(body)
}

pub fn parse_json(body: &[u8]) -> Result<Request, ScoringError> {
    if let Some(fast) = fast::numeric_split(body) {
        return Ok(fast);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScoringError::bad_request(format!("The request body is empty. {}none", fields_message())));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ScoringError::bad_request(format!("Malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ScoringError::bad_request(format!(
            "{}none (the body is a JSON {}, not a dictionary)",
            fields_message(),
            json_kind(&value)
        )));
    };
    let present: Vec<&str> = INPUT_FIELDS.iter().copied().filter(|f| obj.contains_key(*f)).collect();
    if present.len() != 1 {
        let keys: Vec<String> = obj.keys().map(|k| format!("'{k}'")).collect();
        return Err(ScoringError::bad_request(format!("{}{{{}}}", fields_message(), keys.join(", "))));
    }
    let field = present[0];
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(ScoringError::bad_request(format!(
                "'params' must be a JSON dictionary, got a {}",
                json_kind(&other)
            )))
        }
    };
    let input = obj.remove(field).unwrap_or(Value::Null);
    let payload = match field {
        "dataframe_split" => Payload::Frame(split_frame(input)?),
        "dataframe_records" => match input {
            Value::Array(rows) => Payload::Frame(records_frame(rows, field)?),
            other => {
                return Err(ScoringError::bad_request(format!(
                    "'dataframe_records' must be a list of row dictionaries, got a {}",
                    json_kind(&other)
                )))
            }
        },
        _ => match input {
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                Payload::Frame(records_frame(items, field)?)
            }
            Value::Array(items) if items.is_empty() => {
                return Err(ScoringError::bad_request(format!("'{field}' is an empty list: there is nothing to score")))
            }
            Value::Array(items) => Payload::Tensor(Value::Array(items)),
            Value::Object(m) if m.is_empty() => {
                return Err(ScoringError::bad_request(format!(
                    "'{field}' is an empty dictionary: there is nothing to score"
                )))
            }
            Value::Object(m) => Payload::Named(m.into_iter().collect()),
            other => {
                return Err(ScoringError::bad_request(format!(
                    "'{field}' must be a list of rows or a dictionary of named inputs, got a {}",
                    json_kind(&other)
                )))
            }
        },
    };
    Ok(Request { payload, params })
}

fn split_frame(input: Value) -> Result<Frame, ScoringError> {
    let Value::Object(mut obj) = input else {
        return Err(ScoringError::bad_request(
            "'dataframe_split' must be a dictionary with 'columns' and 'data' (pandas orient='split')",
        ));
    };
    let columns = match obj.remove("columns") {
        None | Some(Value::Null) => None,
        Some(Value::Array(cols)) => Some(
            cols.into_iter()
                .map(|c| match c {
                    Value::String(s) => Ok(s),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(ScoringError::bad_request(format!(
                        "'dataframe_split.columns' must hold column names, found a {}",
                        json_kind(&other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => {
            return Err(ScoringError::bad_request(format!(
                "'dataframe_split.columns' must be a list, got a {}",
                json_kind(&other)
            )))
        }
    };
    let data = match obj.remove("data") {
        Some(Value::Array(rows)) => rows,
        None => return Err(ScoringError::bad_request("'dataframe_split' has no 'data' field")),
        Some(other) => {
            return Err(ScoringError::bad_request(format!(
                "'dataframe_split.data' must be a list of rows, got a {}",
                json_kind(&other)
            )))
        }
    };
    if data.is_empty() {
        return Err(ScoringError::bad_request("'dataframe_split.data' is empty: there is nothing to score"));
    }
    let mut rows = Vec::with_capacity(data.len());
    for (i, row) in data.into_iter().enumerate() {
        let row = match row {
            Value::Array(cells) => cells,
            scalar @ (Value::Number(_) | Value::String(_) | Value::Bool(_) | Value::Null) => {
                vec![scalar]
            }
            Value::Object(_) => {
                return Err(ScoringError::bad_request(format!(
                    "'dataframe_split.data' row {i} is a dictionary; rows must be lists of values"
                )))
            }
        };
        rows.push(row);
    }
    let width = columns.as_ref().map_or(rows[0].len(), Vec::len);
    if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        return Err(ScoringError::bad_request(format!(
            "'dataframe_split' row {i} has {} values but {width} columns were given",
            row.len()
        )));
    }
    Ok(Frame { columns, rows })
}

/// Row dictionaries as a table whose columns are item 0's keys. A later item with a key item 0
/// lacks is refused (a table with that column would hold a missing value in row 0, which no
/// model input accepts), so the table is never wider than one row: rows × keys stays linear in
/// the body. A key absent from a later item becomes null, refused by conversion with its name.
fn records_frame(records: Vec<Value>, field: &str) -> Result<Frame, ScoringError> {
    if records.is_empty() {
        return Err(ScoringError::bad_request(format!("'{field}' is an empty list: there is nothing to score")));
    }
    let mut columns: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut rows = Vec::with_capacity(records.len());
    for (i, rec) in records.into_iter().enumerate() {
        let Value::Object(m) = rec else {
            return Err(ScoringError::bad_request(format!(
                "'{field}' item {i} is a {}; every item must be a dictionary of column values",
                json_kind(&rec)
            )));
        };
        if i == 0 {
            for k in m.keys() {
                index.insert(k.clone(), columns.len());
                columns.push(k.clone());
            }
        }
        let mut row = vec![Value::Null; columns.len()];
        for (k, v) in m {
            match index.get(&k) {
                Some(&j) => row[j] = v,
                None => {
                    return Err(ScoringError::schema(format!(
                        "'{field}' item {i} has the key '{}', which item 0 does not have; every item must have the same keys",
                        super::convert::clip(&k)
                    )))
                }
            }
        }
        rows.push(row);
    }
    Ok(Frame { columns: Some(columns), rows })
}

/// `text/csv` with a header row; every cell arrives as a string and is converted per column.
pub fn parse_csv(body: &[u8]) -> Result<Frame, ScoringError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScoringError::bad_request("The CSV body is empty; send a header row and at least one data row"));
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(body);
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| ScoringError::bad_request(format!("Malformed CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| ScoringError::bad_request(format!("Malformed CSV at data row {i}: {e}")))?;
        rows.push(rec.iter().map(|s| if s.is_empty() { Value::Null } else { Value::String(s.to_string()) }).collect());
    }
    if rows.is_empty() {
        return Err(ScoringError::bad_request("The CSV body has a header but no data rows"));
    }
    Ok(Frame { columns: Some(columns), rows })
}

/// The fast path: `{"dataframe_split": {"columns": [...], "data": [[numbers...], ...]}}` (with
/// an optional `index` and `params`) read by a typed deserializer straight into a flat buffer.
/// Anything else — strings, nulls, other keys, ragged rows — returns `None` and takes the
/// general path, which gives the precise error messages.
mod fast {
    use std::fmt;

    use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use serde_json::{Map, Value};

    use super::{NumericFrame, Payload, Request};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        dataframe_split: Split,
        #[serde(default)]
        params: Option<Map<String, Value>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Split {
        columns: Vec<String>,
        data: Rows,
        #[serde(default)]
        #[allow(dead_code)]
        index: Option<IgnoredAny>,
    }

    /// Rows of numbers, flattened as they are read; every row must be as wide as the first.
    struct Rows {
        values: Vec<f64>,
        width: usize,
    }

    impl<'de> Deserialize<'de> for Rows {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_seq(RowsVisitor)
        }
    }

    struct RowsVisitor;

    impl<'de> Visitor<'de> for RowsVisitor {
        type Value = Rows;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of rows of numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
            let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(1) * 8);
            let mut width = None;
            while let Some(n) = seq.next_element_seed(Row(&mut values))? {
                match width {
                    None => width = Some(n),
                    Some(w) if w == n => {}
                    Some(_) => return Err(serde::de::Error::custom("ragged rows")),
                }
            }
            Ok(Rows { values, width: width.unwrap_or(0) })
        }
    }

    struct Row<'a>(&'a mut Vec<f64>);

    impl<'de> DeserializeSeed<'de> for Row<'_> {
        type Value = usize;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Row<'_> {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a row of numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(x) = seq.next_element::<f64>()? {
                self.0.push(x);
                n += 1;
            }
            Ok(n)
        }
    }

    pub(super) fn numeric_split(body: &[u8]) -> Option<Request> {
        let parsed: Body = serde_json::from_slice(body).ok()?;
        let Split { columns, data, .. } = parsed.dataframe_split;
        if columns.is_empty() || data.values.is_empty() || data.width != columns.len() {
            return None;
        }
        Some(Request {
            payload: Payload::Numeric(NumericFrame { columns, values: data.values }),
            params: parsed.params,
        })
    }
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "dictionary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ScoringErrorKind;
    use serde_json::json;

    fn ok(body: &str) -> Payload {
        parse_json(body.as_bytes()).unwrap().payload
    }
    fn err(body: &str) -> ScoringError {
        parse_json(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn dataframe_split_and_records() {
        // A string cell takes the general path (all-numeric tables take the fast one).
        let p = ok(r#"{"dataframe_split": {"columns": ["a", "b"], "data": [["1", 2.5], [3, 4]], "index": [0, 1]}}"#);
        assert_eq!(
            p,
            Payload::Frame(Frame {
                columns: Some(vec!["a".into(), "b".into()]),
                rows: vec![vec![json!("1"), json!(2.5)], vec![json!(3), json!(4)]]
            })
        );
        let p = ok(r#"{"dataframe_records": [{"a": 1, "b": 2}, {"b": 4, "a": 3}]}"#);
        let Payload::Frame(f) = p else { panic!() };
        assert_eq!(f.columns.unwrap(), vec!["a", "b"]);
        assert_eq!(f.rows[1], vec![json!(3), json!(4)]);
        // A missing key becomes null (later refused by conversion with the column's name); a
        // key item 0 lacks is refused, so the table is never wider than item 0.
        let Payload::Frame(f) = ok(r#"{"dataframe_records": [{"a": 1, "b": 2}, {"b": 4}]}"#) else { panic!() };
        assert_eq!(f.rows[1], vec![Value::Null, json!(4)]);
        let e = err(r#"{"dataframe_records": [{"a": 1}, {"b": 4}]}"#);
        assert!(e.message.contains("item 1 has the key 'b', which item 0 does not have"), "{e}");
    }

    #[test]
    fn numeric_split_takes_the_fast_path_and_agrees_with_the_general_one() {
        let body = r#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]], "index": [7, 8]}, "params": {"p": 1}}"#;
        let r = parse_json(body.as_bytes()).unwrap();
        let Payload::Numeric(nf) = &r.payload else { panic!("{:?}", r.payload) };
        assert_eq!((nf.rows(), nf.values.clone()), (2, vec![1.0, 2.5, 3.0, 4.0]));
        assert_eq!(r.params.unwrap()["p"], json!(1));
        assert_eq!(
            nf.to_frame(),
            Frame {
                columns: Some(vec!["a".into(), "b".into()]),
                rows: vec![vec![json!(1.0), json!(2.5)], vec![json!(3.0), json!(4.0)]]
            }
        );
        // Strings, nulls, ragged rows, unknown keys: the general path.
        for other in [
            r#"{"dataframe_split": {"columns": ["a"], "data": [["1"]]}}"#,
            r#"{"dataframe_split": {"columns": ["a"], "data": [[null]]}}"#,
            r#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}"#,
            r#"{"dataframe_split": {"columns": ["a"], "data": [[1]]}, "extra": 1}"#,
        ] {
            assert!(!matches!(parse_json(other.as_bytes()).map(|r| r.payload), Ok(Payload::Numeric(_))), "{other}");
        }
    }

    #[test]
    fn instances_and_inputs() {
        assert_eq!(ok(r#"{"instances": [[1, 2], [3, 4]]}"#), Payload::Tensor(json!([[1, 2], [3, 4]])));
        assert_eq!(ok(r#"{"inputs": {"x": [[1, 2]]}}"#), Payload::Named(vec![("x".into(), json!([[1, 2]]))]));
        assert!(ok(r#"{"inputs": [{"a": 1}, {"a": 2}]}"#).is_frame());
        let r = parse_json(br#"{"inputs": [[1]], "params": {"threshold": 0.5}}"#).unwrap();
        assert_eq!(r.params.unwrap()["threshold"], json!(0.5));
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        for body in [
            "",
            "   ",
            "{not json",
            "[1, 2]",
            "{}",
            r#"{"inputs": [[1]], "instances": [[1]]}"#,
            r#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}"#,
            r#"{"dataframe_split": {"columns": ["a"]}}"#,
            r#"{"dataframe_split": [[1]]}"#,
            r#"{"dataframe_records": {"a": 1}}"#,
            r#"{"inputs": []}"#,
            r#"{"inputs": 3}"#,
            r#"{"inputs": [[1]], "params": [1]}"#,
        ] {
            let e = err(body);
            assert_eq!(e.kind, ScoringErrorKind::BadRequest, "{body}: {e}");
        }
        assert!(err("{}").message.contains("exactly one of the input fields"));
        assert!(err(r#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}"#)
            .message
            .contains("row 1 has 1 values but 2 columns"));
    }

    #[test]
    fn csv_with_header() {
        let f = parse_csv(b"a,b\n1,2\n3, 4\n").unwrap();
        assert_eq!(f.columns.unwrap(), vec!["a", "b"]);
        assert_eq!(f.rows[1], vec![json!("3"), json!("4")]);
        assert!(parse_csv(b"a,b\n1,2\n3\n").unwrap_err().message.contains("row 1"));
        assert!(parse_csv(b"a,b\n").is_err());
        assert_eq!(parse_csv(b"a,b\n1,\n").unwrap().rows[0][1], Value::Null);
    }

    #[test]
    fn content_types() {
        assert_eq!(format_of(None).unwrap(), Format::Json);
        assert_eq!(format_of(Some("application/json; charset=UTF-8")).unwrap(), Format::Json);
        assert_eq!(format_of(Some("text/csv")).unwrap(), Format::Csv);
        for bad in ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"] {
            assert_eq!(format_of(Some(bad)).unwrap_err().kind, ScoringErrorKind::UnsupportedMediaType, "{bad}");
        }
    }
}
