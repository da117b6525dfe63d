//! Scoring bodies straight into the model's input tensors, without a JSON value per cell: the
//! path the server takes for `/invocations` and the Open Inference Protocol's JSON `data`.
//!
//! [`payload`](super::payload) + [`convert::prepare`] build a `serde_json::Value` tree first
//! (16–32 bytes per number, several times the body) and stay for the CLI, warm-up and tests.
//! Here, memory is the body, the tensors the model takes, and bookkeeping linear in the number
//! of columns (at most [`MAX_TABLE_WIDTH`]); row-object forms refuse keys the model does not
//! take before anything proportional to rows × keys exists. CPU is linear: each large value is
//! read at most twice (an outline pass skips it, a typed pass converts it), and nesting is
//! bounded by the model's rank (serde_json refuses more than 128 levels in typed passes and skips
//! values without recursion).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;
use serde_json::value::RawValue;
use serde_json::Value;

use super::convert::{
    check_claimed_shape, check_v2, clip, prepare, tensor_from_json, InputTensor, Prepared, Style, TensorData,
};
use super::payload::{self, Format, Payload};
use super::schema::{describe, Binding, ModelSchema, Signature, TensorInfo};
use super::ScoringError;

/// Tables wider than this are refused (no MLflow model takes more columns), which bounds the
/// per-column bookkeeping whatever the body.
pub const MAX_TABLE_WIDTH: usize = 1 << 16;

/// Bodies up to this size first try the all-numeric `dataframe_split` fast path.
const FAST_PATH_MAX: usize = 64 << 10;

/// How many unknown keys an error message lists.
const SHOWN_KEYS: usize = 16;

/// Parse a scoring body (`format` from its Content-Type) into the model's input tensors.
pub fn prepare_body(schema: &ModelSchema, format: Format, body: &[u8]) -> Result<Prepared, ScoringError> {
    match format {
        Format::Json => prepare_json(schema, body),
        Format::Csv => prepare_csv(schema, body),
    }
}

// ------------------------------------------------------------------------ errors

/// Where a visitor leaves a payload error (with its kind) before stopping serde with a marker.
#[derive(Default)]
struct Stash(RefCell<Option<ScoringError>>);

impl Stash {
    fn fail<E: serde::de::Error>(&self, e: ScoringError) -> E {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
        E::custom("stopped on a payload error")
    }

    /// The stashed payload error, else `other` applied to serde's error.
    fn resolve(&self, e: serde_json::Error, other: impl FnOnce(serde_json::Error) -> ScoringError) -> ScoringError {
        self.0.borrow_mut().take().unwrap_or_else(|| other(e))
    }
}

fn malformed(e: serde_json::Error) -> ScoringError {
    ScoringError::bad_request(format!("Malformed JSON: {e}"))
}

/// Run `seed` over one raw JSON value; payload errors come back as they were stashed.
fn run_seed<'a, S: DeserializeSeed<'a>>(raw: &'a str, seed: S, stash: &Stash) -> Result<S::Value, ScoringError> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let out = seed.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    out.map_err(|e| stash.resolve(e, malformed))
}

/// The JSON kind of a raw value, read off its first byte (MLflow's names for them).
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "dictionary",
        Some(b'[') => "list",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// True for `[]` (with any whitespace inside).
fn is_empty_list(raw: &RawValue) -> bool {
    let s = raw.get();
    s.starts_with('[') && s[1..].trim_start().starts_with(']')
}

// ------------------------------------------------------------------------ outlines

/// The wanted fields of a JSON object as raw slices of the body (the last one wins when a key
/// repeats, as in `serde_json::Map`); other keys are skipped, counted and the first few kept
/// for messages.
struct Picked<'a> {
    values: Vec<Option<&'a RawValue>>,
    others: Vec<String>,
    other_count: usize,
}

struct PickVisitor<'w> {
    wanted: &'w [&'w str],
}

impl<'de> Visitor<'de> for PickVisitor<'_> {
    type Value = Picked<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON dictionary")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked<'de>, A::Error> {
        let mut picked = Picked { values: vec![None; self.wanted.len()], others: Vec::new(), other_count: 0 };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.wanted.iter().position(|w| *w == key) {
                Some(i) => picked.values[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                    if picked.others.len() < SHOWN_KEYS && !picked.others.iter().any(|o| *o == key) {
                        picked.others.push(key.into_owned());
                    }
                    picked.other_count += 1;
                }
            }
        }
        Ok(picked)
    }
}

fn pick<'a>(json: &'a str, wanted: &[&str]) -> Result<Picked<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let picked = de.deserialize_map(PickVisitor { wanted })?;
    de.end()?;
    Ok(picked)
}

const INPUT_FIELDS: [&str; 4] = ["dataframe_split", "dataframe_records", "instances", "inputs"];

fn prepare_json(schema: &ModelSchema, body: &[u8]) -> Result<Prepared, ScoringError> {
    if body.len() <= FAST_PATH_MAX {
        if let Some(request) = payload::numeric_split(body) {
            return prepare(schema, &request.payload);
        }
    }
    let fields = "The input must be a JSON dictionary with exactly one of the input fields {'dataframe_split', 'dataframe_records', 'instances', 'inputs'}. Received dictionary with input fields: ";
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScoringError::bad_request(format!("The request body is empty. {fields}none")));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ScoringError::bad_request(format!("Malformed JSON: the body is not UTF-8 text ({e})")))?;
    let first = text.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        let raw: &RawValue = serde_json::from_str(text).map_err(malformed)?;
        return Err(ScoringError::bad_request(format!(
            "{fields}none (the body is a JSON {}, not a dictionary)",
            kind(raw)
        )));
    }
    let mut wanted = INPUT_FIELDS.to_vec();
    wanted.push("params");
    let top = pick(text, &wanted).map_err(malformed)?;
    let present: Vec<usize> = (0..INPUT_FIELDS.len()).filter(|i| top.values[*i].is_some()).collect();
    if present.len() != 1 {
        let mut keys: Vec<String> =
            (0..wanted.len()).filter(|i| top.values[*i].is_some()).map(|i| wanted[i].to_string()).collect();
        keys.extend(top.others.iter().cloned());
        keys.sort();
        let mut shown: Vec<String> = keys.iter().map(|k| format!("'{}'", clip(k))).collect();
        let total = keys.len() - top.others.len() + top.other_count;
        if total > shown.len() {
            shown.push(format!("... ({} keys in all)", total));
        }
        return Err(ScoringError::bad_request(format!("{fields}{{{}}}", shown.join(", "))));
    }
    // Inference parameters: ONNX models take none, so they are checked for shape and unused.
    if let Some(params) = top.values[4] {
        if !matches!(kind(params), "dictionary" | "null") {
            return Err(ScoringError::bad_request(format!(
                "'params' must be a JSON dictionary, got a {}",
                kind(params)
            )));
        }
    }
    let field = INPUT_FIELDS[present[0]];
    let input = top.values[present[0]].expect("checked above; this is a bug");
    match field {
        "dataframe_split" => split(schema, input, body.len()),
        "dataframe_records" => match kind(input) {
            "list" => records(schema, field, input),
            other => Err(ScoringError::bad_request(format!(
                "'dataframe_records' must be a list of row dictionaries, got a {other}"
            ))),
        },
        _ => match kind(input) {
            "list" if is_empty_list(input) => {
                Err(ScoringError::bad_request(format!("'{field}' is an empty list: there is nothing to score")))
            }
            "list" if input.get()[1..].trim_start().starts_with('{') => records(schema, field, input),
            "list" => unnamed_tensor(schema, input),
            "dictionary" => named(schema, field, input),
            other => Err(ScoringError::bad_request(format!(
                "'{field}' must be a list of rows or a dictionary of named inputs, got a {other}"
            ))),
        },
    }
}

// ------------------------------------------------------------------------ tables

/// The columns a table must supply (`None`: the payload's own columns feed one stacked input).
fn wanted_columns(schema: &ModelSchema) -> Result<Option<&[String]>, ScoringError> {
    match &schema.binding {
        Binding::PerColumn { columns } => Ok(Some(columns)),
        Binding::Stacked { columns, .. } => Ok(columns.as_deref()),
        Binding::NamedTensors => Err(ScoringError::schema(format!(
            "This model takes tensors, not a table: send {{\"inputs\": {{\"<input name>\": <tensor>}}}} or {{\"inputs\": <tensor>}}. Its inputs are {}",
            describe(&schema.inputs)
        ))),
    }
}

fn too_wide() -> ScoringError {
    ScoringError::bad_request(format!("The table has more than {MAX_TABLE_WIDTH} columns"))
}

enum Target {
    /// One tensor per column (`Binding::PerColumn`).
    Columns(Vec<TensorData>),
    /// One row-major `[rows, k]` tensor (`Binding::Stacked`).
    Stacked(TensorData),
}

/// Rows converted as they arrive into the model's input tensors.
struct Table<'s> {
    schema: &'s ModelSchema,
    /// The k columns in input order (their names, for messages).
    names: Vec<String>,
    target: Target,
    rows: usize,
}

impl<'s> Table<'s> {
    /// `rows_hint` is an upper bound on the rows (from the body size): capacity only, so pages
    /// never written are never resident.
    fn new(schema: &'s ModelSchema, names: Vec<String>, rows_hint: usize) -> Result<Table<'s>, ScoringError> {
        let k = names.len();
        let target = match &schema.binding {
            Binding::PerColumn { .. } => Target::Columns(
                schema
                    .inputs
                    .iter()
                    .map(|i| TensorData::with_capacity(i.dtype().expect("checked at load; this is a bug"), rows_hint))
                    .collect(),
            ),
            Binding::Stacked { input, .. } => {
                let info = &schema.inputs[*input];
                if info.shape.len() == 2 && info.shape[1] >= 0 && info.shape[1] as usize != k {
                    return Err(ScoringError::schema(format!(
                        "Model input '{}' takes {} columns, but the payload has {k}",
                        info.name, info.shape[1]
                    )));
                }
                let dtype = info.dtype().expect("checked at load; this is a bug");
                Target::Stacked(TensorData::with_capacity(dtype, rows_hint.saturating_mul(k)))
            }
            Binding::NamedTensors => return Err(wanted_columns(schema).expect_err("tables refused; this is a bug")),
        };
        Ok(Table { schema, names, target, rows: 0 })
    }

    fn width(&self) -> usize {
        self.names.len()
    }

    /// Convert one row; `slots[j]` is column j's cell (`None`: absent, which no dtype accepts).
    fn row(&mut self, slots: &mut [Option<Value>]) -> Result<(), ScoringError> {
        let r = self.rows;
        for (j, slot) in slots.iter_mut().enumerate() {
            let v = slot.take().unwrap_or(Value::Null);
            let at = || format!("column {} at row {r}", self.names[j]);
            match &mut self.target {
                Target::Columns(cols) => cols[j].push(&v, &at)?,
                Target::Stacked(t) => t.push(&v, &at)?,
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> Result<Prepared, ScoringError> {
        let n = self.rows;
        if n == 0 {
            return Err(ScoringError::bad_request("The input has no rows: there is nothing to score"));
        }
        let inputs = match (self.target, &self.schema.binding) {
            (Target::Columns(cols), _) => self
                .schema
                .inputs
                .iter()
                .zip(cols)
                .map(|(info, data)| {
                    let shape = if info.shape.len() == 2 { vec![n as i64, 1] } else { vec![n as i64] };
                    InputTensor { name: info.name.clone(), shape, data }
                })
                .collect(),
            (Target::Stacked(data), Binding::Stacked { input, .. }) => {
                let k = self.names.len() as i64;
                vec![InputTensor { name: self.schema.inputs[*input].name.clone(), shape: vec![n as i64, k], data }]
            }
            _ => unreachable!("a stacked target comes from a stacked binding; this is a bug"),
        };
        Ok(Prepared { inputs, style: Style::Records, rows: n })
    }
}

/// Map a table's column names onto the model's columns: `map[p]` is the model column fed by
/// payload column `p` (`None`: not taken). Refuses missing columns as `convert` does.
fn map_columns(schema: &ModelSchema, given: &[String]) -> Result<(Vec<String>, Vec<Option<usize>>), ScoringError> {
    match wanted_columns(schema)? {
        None => Ok((given.to_vec(), (0..given.len()).map(Some).collect())),
        Some(wanted) => {
            let index: HashMap<&str, usize> = wanted.iter().enumerate().map(|(j, w)| (w.as_str(), j)).collect();
            let mut map = vec![None; given.len()];
            let mut found = vec![false; wanted.len()];
            let mut extra = Vec::new();
            for (p, name) in given.iter().enumerate() {
                match index.get(name.as_str()) {
                    Some(&j) if !found[j] => {
                        found[j] = true;
                        map[p] = Some(j);
                    }
                    Some(_) => {}
                    None if extra.len() < SHOWN_KEYS => extra.push(name.as_str()),
                    None => {}
                }
            }
            let missing: Vec<&str> = wanted.iter().zip(&found).filter(|(_, f)| !**f).map(|(w, _)| w.as_str()).collect();
            if !missing.is_empty() {
                return Err(missing_columns(&missing, &extra, wanted));
            }
            Ok((wanted.to_vec(), map))
        }
    }
}

fn missing_columns(missing: &[&str], extra: &[&str], wanted: &[String]) -> ScoringError {
    let mut msg = format!("Model is missing inputs {missing:?}.");
    if !extra.is_empty() {
        let extra: Vec<_> = extra.iter().map(|e| clip(e)).collect();
        msg.push_str(&format!(" Note that there were extra inputs: {extra:?}."));
    }
    msg.push_str(&format!(" The model takes the columns {wanted:?}."));
    ScoringError::schema(msg)
}

/// One cell: a scalar as a `Value` (no allocation but for strings). Lists and dictionaries are
/// skipped and stand as empty ones, so conversion names the cell and says what it got.
struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object(serde_json::Map::new()))
    }
}

/// Column names: strings, or numbers written as text.
struct NamesVisitor;

impl<'de> Visitor<'de> for NamesVisitor {
    type Value = Result<Vec<String>, ScoringError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of column names")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut names = Vec::new();
        while let Some(v) = seq.next_element_seed(CellSeed)? {
            if names.len() == MAX_TABLE_WIDTH {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Err(too_wide()));
            }
            match v {
                Value::String(s) => names.push(s),
                Value::Number(n) => names.push(n.to_string()),
                other => {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(Err(ScoringError::bad_request(format!(
                        "'dataframe_split.columns' must hold column names, found a {}",
                        payload::json_kind(&other)
                    ))));
                }
            }
        }
        Ok(Ok(names))
    }
}

/// The visits of a tensor element that is not a list, each handed to `self.leaf` as the
/// `Value` the tree path would have built (a dictionary as an empty one: only its kind is told).
macro_rules! leaf_visits {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            self.leaf(Value::Object(serde_json::Map::new()))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
            self.leaf(Value::Bool(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
            self.leaf(Value::from(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
            self.leaf(Value::from(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
            self.leaf(Value::from(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
            self.leaf(Value::String(v.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            self.leaf(Value::Null)
        }
    };
}

/// `$list` reads a JSON list of items, each handed with its index to `$item { st, i }` over
/// the same `$state` (one seed per item, so nothing per item is kept).
macro_rules! list_seed {
    ($list:ident, $state:ident, $item:ident, $expecting:literal) => {
        struct $list<'a, 's, 'c>(&'a mut $state<'s, 'c>);

        impl<'de> DeserializeSeed<'de> for $list<'_, '_, '_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_seq(self)
            }
        }

        impl<'de> Visitor<'de> for $list<'_, '_, '_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($expecting)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                let st = self.0;
                let mut i = 0;
                while seq.next_element_seed($item { st: &mut *st, i })?.is_some() {
                    i += 1;
                }
                Ok(())
            }
        }
    };
}

/// A table and where each payload column goes in it.
type Layout<'s> = (Table<'s>, Vec<Option<usize>>);

/// How a list-of-lists table is read: with its column map once the width is known.
struct RowsState<'s, 'c> {
    table: Option<Table<'s>>,
    /// Payload column → model column.
    map: Vec<Option<usize>>,
    /// Payload width (`None` until the first row when the payload names no columns).
    width: Option<usize>,
    /// Builds the table for a payload of this width when the payload names no columns.
    unnamed: &'c dyn Fn(usize) -> Result<Layout<'s>, ScoringError>,
    positional: bool,
    slots: Vec<Option<Value>>,
    stash: &'c Stash,
}

list_seed!(RowsSeed, RowsState, RowSeed, "a list of rows");

struct RowSeed<'a, 's, 'c> {
    st: &'a mut RowsState<'s, 'c>,
    i: usize,
}

impl<'s> RowSeed<'_, 's, '_> {
    /// Check the row's width and convert it.
    fn end<E: serde::de::Error>(self, n: usize) -> Result<(), E> {
        let st = self.st;
        let i = self.i;
        let width = match st.width {
            Some(w) => w,
            None => {
                // The first row of a table without column names sets the width.
                let (table, map) = (st.unnamed)(n).map_err(|e| st.stash.fail(e))?;
                st.slots.resize(table.width(), None);
                st.table = Some(table);
                st.map = map;
                st.width = Some(n);
                n
            }
        };
        if n != width {
            let msg = if st.positional {
                format!("Input row {i} has {n} values but row 0 has {width}: every row must have one value per column")
            } else {
                format!("'dataframe_split' row {i} has {n} values but {width} columns were given")
            };
            return Err(st.stash.fail(ScoringError::bad_request(msg)));
        }
        let table = st.table.as_mut().expect("set before the first row ends; this is a bug");
        table.row(&mut st.slots).map_err(|e| st.stash.fail(e))
    }

    fn place(&mut self, p: usize, v: Value) {
        if let Some(Some(j)) = self.st.map.get(p) {
            self.st.slots[*j] = Some(v);
        } else if self.st.width.is_none() {
            // Width not known yet: keep the cell by position (bounded by the width cap).
            if self.st.slots.len() <= p {
                self.st.slots.resize(p + 1, None);
            }
            self.st.slots[p] = Some(v);
        }
    }
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! scalar_row {
    ($name:ident, $t:ty, $conv:expr) => {
        fn $name<E: serde::de::Error>(mut self, v: $t) -> Result<(), E> {
            self.place(0, $conv(v));
            self.end(1)
        }
    };
}

impl<'de> Visitor<'de> for RowSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let cap = self.st.width.unwrap_or(MAX_TABLE_WIDTH);
        let mut n = 0;
        loop {
            if n >= cap {
                // Too many cells: count the rest without keeping them.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                if self.st.width.is_none() {
                    return Err(self.st.stash.fail(too_wide()));
                }
            } else if self.st.width.is_some() && !matches!(self.st.map.get(n), Some(Some(_))) {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
            } else {
                match seq.next_element_seed(CellSeed)? {
                    Some(v) => self.place(n, v),
                    None => break,
                }
            }
            n += 1;
        }
        self.end(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        let msg = format!("'dataframe_split.data' row {} is a dictionary; rows must be lists of values", self.i);
        Err(self.st.stash.fail(ScoringError::bad_request(msg)))
    }
    scalar_row!(visit_bool, bool, Value::Bool);
    scalar_row!(visit_i64, i64, Value::from);
    scalar_row!(visit_u64, u64, Value::from);
    scalar_row!(visit_f64, f64, Value::from);
    scalar_row!(visit_str, &str, |s: &str| Value::String(s.to_string()));
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.place(0, Value::Null);
        self.end(1)
    }
}

/// Read a list of rows (lists of cells) into a table.
fn list_rows<'s>(
    schema: &'s ModelSchema,
    rows: &RawValue,
    names: Option<Vec<String>>,
    rows_hint: usize,
    positional: bool,
) -> Result<Prepared, ScoringError> {
    let stash = Stash::default();
    let unnamed = |width: usize| -> Result<Layout<'s>, ScoringError> {
        let names = match wanted_columns(schema)? {
            Some(wanted) if width != wanted.len() => {
                return Err(ScoringError::schema(format!(
                    "The payload has {width} columns and no column names, but the model takes {} columns: {wanted:?}",
                    wanted.len()
                )))
            }
            Some(wanted) => wanted.to_vec(),
            None => (0..width).map(|p| format!("#{p}")).collect(),
        };
        let hint = rows_hint / width.max(1) + 1;
        Ok((Table::new(schema, names, hint)?, (0..width).map(Some).collect()))
    };
    let mut st = RowsState {
        table: None,
        map: Vec::new(),
        width: None,
        unnamed: &unnamed,
        positional,
        slots: Vec::new(),
        stash: &stash,
    };
    if let Some(given) = names {
        let (model_names, map) = map_columns(schema, &given)?;
        let hint = rows_hint / given.len().max(1) + 1;
        st.slots = vec![None; model_names.len()];
        st.table = Some(Table::new(schema, model_names, hint)?);
        st.map = map;
        st.width = Some(given.len());
    }
    run_seed(rows.get(), RowsSeed(&mut st), &stash)?;
    match st.table {
        Some(t) => t.finish(),
        None => Err(ScoringError::bad_request("The input has no rows: there is nothing to score")),
    }
}

fn split(schema: &ModelSchema, input: &RawValue, body_len: usize) -> Result<Prepared, ScoringError> {
    if kind(input) != "dictionary" {
        return Err(ScoringError::bad_request(
            "'dataframe_split' must be a dictionary with 'columns' and 'data' (pandas orient='split')",
        ));
    }
    let picked = pick(input.get(), &["columns", "data"]).map_err(malformed)?;
    let names = match picked.values[0] {
        None => None,
        Some(c) if kind(c) == "null" => None,
        Some(c) if kind(c) == "list" => {
            let mut de = serde_json::Deserializer::from_str(c.get());
            Some(de.deserialize_seq(NamesVisitor).map_err(malformed)??)
        }
        Some(c) => {
            return Err(ScoringError::bad_request(format!(
                "'dataframe_split.columns' must be a list, got a {}",
                kind(c)
            )))
        }
    };
    let data = match picked.values[1] {
        Some(d) if kind(d) == "list" => d,
        None => return Err(ScoringError::bad_request("'dataframe_split' has no 'data' field")),
        Some(d) => {
            return Err(ScoringError::bad_request(format!(
                "'dataframe_split.data' must be a list of rows, got a {}",
                kind(d)
            )))
        }
    };
    if is_empty_list(data) {
        return Err(ScoringError::bad_request("'dataframe_split.data' is empty: there is nothing to score"));
    }
    list_rows(schema, data, names, body_len / 2, false)
}

// ------------------------------------------------------------------------ row objects

/// `dataframe_records`, or `instances` / `inputs` as a list of row dictionaries.
struct RecordsState<'s, 'c> {
    schema: &'s ModelSchema,
    field: &'c str,
    /// Column name → model column; from the model, or from item 0 when the model names none.
    index: HashMap<String, usize>,
    /// False while item 0 of an unnamed table is read (its keys become the columns).
    fixed: bool,
    names: Vec<String>,
    table: Option<Table<'s>>,
    rows_hint: usize,
    slots: Vec<Option<Value>>,
    stash: &'c Stash,
}

list_seed!(RecordsSeed, RecordsState, RecordSeed, "a list of row dictionaries");

struct RecordSeed<'a, 's, 'c> {
    st: &'a mut RecordsState<'s, 'c>,
    i: usize,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Looks a key up without allocating (unless it is escaped).
struct KeySeed<'a>(&'a HashMap<String, usize>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Result<usize, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Result<usize, String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.get(v).copied().ok_or_else(|| v.to_string()))
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row dictionary")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (st, i) = (self.st, self.i);
        while let Some(key) = map.next_key_seed(KeySeed(&st.index))? {
            let j = match key {
                Ok(j) => j,
                Err(key) if !st.fixed => {
                    // Item 0 of a table whose model names no columns: its keys are the columns.
                    if st.names.len() == MAX_TABLE_WIDTH {
                        return Err(st.stash.fail(too_wide()));
                    }
                    let j = st.names.len();
                    st.index.insert(key.clone(), j);
                    st.names.push(key);
                    st.slots.push(None);
                    j
                }
                Err(key) => {
                    let msg = if let Some(wanted) = st.schema.binding.column_names() {
                        format!(
                            "'{}' item {i} has the key '{}', which is not a column of this model; its columns are {wanted:?}",
                            st.field,
                            clip(&key)
                        )
                    } else {
                        format!(
                            "'{}' item {i} has the key '{}', which item 0 does not have; every item must have the same keys",
                            st.field,
                            clip(&key)
                        )
                    };
                    return Err(st.stash.fail(ScoringError::schema(msg)));
                }
            };
            st.slots[j] = Some(map.next_value_seed(CellSeed)?);
        }
        if !st.fixed {
            st.fixed = true;
            let hint = st.rows_hint / st.names.len().max(1) + 1;
            st.table = Some(Table::new(st.schema, st.names.clone(), hint).map_err(|e| st.stash.fail(e))?);
        }
        if i == 0 {
            // Columns absent from item 0 are missing from the table, as `convert` reports them.
            let missing: Vec<&str> =
                st.slots.iter().zip(&st.names).filter(|(s, _)| s.is_none()).map(|(_, n)| n.as_str()).collect();
            if !missing.is_empty() {
                return Err(st.stash.fail(missing_columns(&missing, &[], &st.names)));
            }
        }
        let table = st.table.as_mut().expect("built after item 0; this is a bug");
        table.row(&mut st.slots).map_err(|e| st.stash.fail(e))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(self.not_a_row("list"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_a_row("boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_a_row("number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_a_row("number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_a_row("number"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_a_row("string"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(self.not_a_row("null"))
    }
}

impl RecordSeed<'_, '_, '_> {
    fn not_a_row<E: serde::de::Error>(self, what: &str) -> E {
        let msg = format!(
            "'{}' item {} is a {what}; every item must be a dictionary of column values",
            self.st.field, self.i
        );
        self.st.stash.fail(ScoringError::bad_request(msg))
    }
}

fn records(schema: &ModelSchema, field: &str, rows: &RawValue) -> Result<Prepared, ScoringError> {
    if is_empty_list(rows) {
        return Err(ScoringError::bad_request(format!("'{field}' is an empty list: there is nothing to score")));
    }
    let stash = Stash::default();
    let wanted = wanted_columns(schema)?;
    let names: Vec<String> = wanted.map(<[String]>::to_vec).unwrap_or_default();
    let rows_hint = rows.get().len() / 2;
    let table = match wanted {
        Some(_) => Some(Table::new(schema, names.clone(), rows_hint / names.len().max(1) + 1)?),
        None => None,
    };
    let mut st = RecordsState {
        schema,
        field,
        index: names.iter().enumerate().map(|(j, n)| (n.clone(), j)).collect(),
        fixed: wanted.is_some(),
        slots: vec![None; names.len()],
        names,
        table,
        rows_hint,
        stash: &stash,
    };
    run_seed(rows.get(), RecordsSeed(&mut st), &stash)?;
    st.table.expect("built at item 0 of a non-empty list; this is a bug").finish()
}

// ------------------------------------------------------------------------ tensors

/// `instances` / `inputs` as a nested list.
fn unnamed_tensor(schema: &ModelSchema, list: &RawValue) -> Result<Prepared, ScoringError> {
    match schema.inputs.as_slice() {
        [only] => {
            let t = tensor_from_raw(only, list)?;
            let rows = t.shape.first().copied().unwrap_or(1).max(0) as usize;
            Ok(Prepared { inputs: vec![t], style: Style::Columns, rows })
        }
        _ if matches!(schema.binding, Binding::PerColumn { .. }) => {
            // Positional rows for a model with one input per column.
            list_rows(schema, list, None, list.get().len() / 2, true)
        }
        many => Err(ScoringError::schema(format!(
            "This model has {} inputs ({}); send them by name: {{\"inputs\": {{\"<input name>\": <tensor>, ...}}}}",
            many.len(),
            describe(many)
        ))),
    }
}

/// The shape read off the first element at each depth (at most `limit` levels).
struct FirstShape {
    depth: usize,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for FirstShape {
    type Value = Vec<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<usize>, D::Error> {
        if self.depth >= self.limit {
            IgnoredAny::deserialize(d)?;
            return Ok(Vec::new());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstShape {
    type Value = Vec<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
        let inner = seq.next_element_seed(FirstShape { depth: self.depth + 1, limit: self.limit })?;
        let mut n = usize::from(inner.is_some());
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        let mut shape = vec![n];
        shape.extend(inner.unwrap_or_default());
        Ok(shape)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<usize>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Vec<usize>, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Vec<usize>, E> {
        Ok(Vec::new())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Vec<usize>, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Vec<usize>, E> {
        Ok(Vec::new())
    }
    fn visit_str<E>(self, _: &str) -> Result<Vec<usize>, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E>(self) -> Result<Vec<usize>, E> {
        Ok(Vec::new())
    }
}

/// Elements of a rectangular nested list, appended in row-major order.
struct Flatten<'a> {
    shape: &'a [usize],
    depth: usize,
    index: &'a RefCell<Vec<usize>>,
    out: &'a RefCell<TensorData>,
    name: &'a str,
    stash: &'a Stash,
}

impl Flatten<'_> {
    fn child(&self) -> Flatten<'_> {
        Flatten { depth: self.depth + 1, ..*self }
    }

    fn ragged<E: serde::de::Error>(&self, why: String) -> E {
        let index = self.index.borrow();
        self.stash.fail(ScoringError::schema(format!("Input '{}' is ragged: element {index:?} {why}", self.name)))
    }

    fn leaf<E: serde::de::Error>(&self, v: Value) -> Result<(), E> {
        if self.depth < self.shape.len() {
            return Err(self.ragged(format!("is a scalar where a list of {} was expected", self.shape[self.depth])));
        }
        let index = self.index.borrow();
        let at = || format!("input '{}' element {index:?}", self.name);
        self.out.borrow_mut().push(&v, &at).map_err(|e| self.stash.fail(e))
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth == self.shape.len() {
            return Err(self.ragged("is nested deeper than the first element".into()));
        }
        let want = self.shape[self.depth];
        let mut n = 0;
        loop {
            if n < want {
                self.index.borrow_mut().push(n);
                let got = seq.next_element_seed(self.child())?;
                self.index.borrow_mut().pop();
                if got.is_none() {
                    break;
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            n += 1;
        }
        if n != want {
            return Err(self.ragged(format!("has {n} items where the first has {want}")));
        }
        Ok(())
    }
    leaf_visits!();
}

/// One input tensor from a nested JSON list, checked against the model's shape: the streaming
/// twin of [`convert::tensor_from_json`](super::convert::tensor_from_json), same messages.
pub fn tensor_from_raw(info: &TensorInfo, raw: &RawValue) -> Result<InputTensor, ScoringError> {
    if raw.get().len() <= FAST_PATH_MAX {
        // Small: one pass building a tree (at most a few MiB) beats two streaming passes, and
        // is the function this one mirrors.
        let value: Value = serde_json::from_str(raw.get()).map_err(malformed)?;
        return tensor_from_json(info, &value);
    }
    stream_tensor(info, raw)
}

/// [`tensor_from_raw`] in two streaming passes: the shape off the first element at each depth,
/// then every element converted as it is read.
fn stream_tensor(info: &TensorInfo, raw: &RawValue) -> Result<InputTensor, ScoringError> {
    let dtype = info.dtype().expect("checked at load; this is a bug");
    // One level past the model's rank is enough to tell the shapes apart.
    let shape = run_seed(raw.get(), FirstShape { depth: 0, limit: info.shape.len() + 1 }, &Stash::default())?;
    check_claimed_shape(info, &shape)?;
    // The shape is only a claim until every element is read; each element takes at least two
    // bytes of the body, which bounds the reservation.
    let claimed = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d)).unwrap_or(usize::MAX);
    let out = RefCell::new(TensorData::with_capacity(dtype, claimed.min(raw.get().len() / 2 + 1)));
    let index = RefCell::new(Vec::with_capacity(shape.len()));
    let stash = Stash::default();
    let seed = Flatten { shape: &shape, depth: 0, index: &index, out: &out, name: &info.name, stash: &stash };
    run_seed(raw.get(), seed, &stash)?;
    Ok(InputTensor {
        name: info.name.clone(),
        shape: shape.iter().map(|d| *d as i64).collect(),
        data: out.into_inner(),
    })
}

/// `instances` / `inputs` as a dictionary: named tensors, or columns of a table.
fn named(schema: &ModelSchema, field: &str, obj: &RawValue) -> Result<Prepared, ScoringError> {
    let input_names: Vec<&str> = schema.inputs.iter().map(|i| i.name.as_str()).collect();
    let wanted = match &schema.binding {
        Binding::NamedTensors => None,
        _ => wanted_columns(schema)?,
    };
    let mut keys: Vec<&str> = input_names.clone();
    if let Some(w) = wanted {
        keys.extend(w.iter().map(String::as_str).filter(|c| !input_names.contains(c)));
    }
    let unnamed_table = matches!(schema.binding, Binding::Stacked { columns: None, .. });
    let picked = if unnamed_table {
        // The payload's keys are the table's columns: keep them all, in order (bounded).
        pick_all(obj.get())?
    } else {
        let p = pick(obj.get(), &keys).map_err(malformed)?;
        let mut named: Vec<(String, &RawValue)> = Vec::new();
        for (k, v) in keys.iter().zip(&p.values) {
            if let Some(v) = v {
                named.push((k.to_string(), *v));
            }
        }
        (named, p.others, p.other_count)
    };
    let (entries, others, other_count) = picked;
    if entries.is_empty() && other_count == 0 {
        return Err(ScoringError::bad_request(format!("'{field}' is an empty dictionary: there is nothing to score")));
    }
    let column_signature = matches!(schema.signature, Some(Signature::Columns(_)));
    let all_inputs = other_count == 0 && entries.iter().all(|(k, _)| input_names.contains(&k.as_str()));
    if !column_signature && all_inputs {
        let mut inputs = Vec::with_capacity(schema.inputs.len());
        let missing: Vec<&str> = input_names.iter().copied().filter(|n| !entries.iter().any(|(k, _)| k == n)).collect();
        if !missing.is_empty() {
            return Err(ScoringError::schema(format!(
                "Model is missing inputs {missing:?}; its inputs are {}",
                describe(&schema.inputs)
            )));
        }
        for info in &schema.inputs {
            let (_, raw) = entries.iter().find(|(k, _)| *k == info.name).expect("checked above; this is a bug");
            inputs.push(tensor_from_raw(info, raw)?);
        }
        let rows = inputs[0].shape.first().copied().unwrap_or(1).max(0) as usize;
        return Ok(Prepared { inputs, style: Style::Columns, rows });
    }
    columns(schema, &entries, &others)
}

type AllKeys<'a> = (Vec<(String, &'a RawValue)>, Vec<String>, usize);

/// Every key of a dictionary in order (a repeated key keeps its first place and last value).
fn pick_all(json: &str) -> Result<AllKeys<'_>, ScoringError> {
    struct All;
    impl<'de> Visitor<'de> for All {
        type Value = Result<Vec<(String, &'de RawValue)>, ScoringError>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON dictionary")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, &'de RawValue)> = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            while let Some(k) = map.next_key::<String>()? {
                let v: &'de RawValue = map.next_value()?;
                match seen.get(&k) {
                    Some(&i) => out[i].1 = v,
                    None if out.len() == MAX_TABLE_WIDTH => {
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        return Ok(Err(too_wide()));
                    }
                    None => {
                        seen.insert(k.clone(), out.len());
                        out.push((k, v));
                    }
                }
            }
            Ok(Ok(out))
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let out = de.deserialize_map(All).map_err(malformed)??;
    de.end().map_err(malformed)?;
    Ok((out, Vec::new(), 0))
}

/// Counts a column's cells (a list; a scalar is one cell).
struct CountCells;

impl<'de> Visitor<'de> for CountCells {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<usize>, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Some(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<usize>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<usize>, E> {
        Ok(Some(1))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<usize>, E> {
        Ok(Some(1))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<usize>, E> {
        Ok(Some(1))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<usize>, E> {
        Ok(Some(1))
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<usize>, E> {
        Ok(Some(1))
    }
    fn visit_unit<E>(self) -> Result<Option<usize>, E> {
        Ok(Some(1))
    }
}

/// One column's cells written into its place in the table.
struct ColumnCells<'a> {
    name: &'a str,
    j: usize,
    k: usize,
    target: &'a mut Target,
    stash: &'a Stash,
}

impl ColumnCells<'_> {
    fn put<E: serde::de::Error>(&mut self, r: usize, v: &Value) -> Result<(), E> {
        let at = || format!("column {} at row {r}", self.name);
        let done = match self.target {
            Target::Columns(cols) => cols[self.j].push(v, &at),
            Target::Stacked(t) => t.set(r * self.k + self.j, v, &at),
        };
        done.map_err(|e| self.stash.fail(e))
    }

    fn not_a_value<E: serde::de::Error>(&self) -> E {
        let msg = format!("Column '{}' must be a list of values, one per row", self.name);
        self.stash.fail(ScoringError::bad_request(msg))
    }
}

impl<'de> Visitor<'de> for ColumnCells<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut r = 0;
        while let Some(cell) = seq.next_element_seed(OneCell)? {
            let v = cell.ok_or_else(|| self.not_a_value())?;
            self.put(r, &v)?;
            r += 1;
        }
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<(), E> {
        self.put(0, &Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<(), E> {
        self.put(0, &Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<(), E> {
        self.put(0, &Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<(), E> {
        self.put(0, &Value::from(v))
    }
    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<(), E> {
        self.put(0, &Value::String(v.to_string()))
    }
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.put(0, &Value::Null)
    }
}

/// One cell of a column: a scalar, or a one-item list standing for its item (`[[1], [2]]` is a
/// column of 1 and 2); `None` for anything else.
struct OneCell;

impl<'de> DeserializeSeed<'de> for OneCell {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OneCell {
    type Value = Option<Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        let first = seq.next_element_seed(CellSeed)?;
        let mut more = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more = true;
        }
        Ok(first.filter(|v| !more && !v.is_array() && !v.is_object()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_string())))
    }
    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }
}

/// `{"inputs": {"col": [v, ...], ...}}` read as a table.
fn columns(schema: &ModelSchema, entries: &[(String, &RawValue)], others: &[String]) -> Result<Prepared, ScoringError> {
    let given: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    let (names, map) = map_columns(schema, &given).map_err(|e| match wanted_columns(schema) {
        // Name the extra keys the outline skipped, too.
        Ok(Some(wanted)) if !others.is_empty() => {
            let missing: Vec<&str> =
                wanted.iter().map(String::as_str).filter(|w| !given.iter().any(|g| g == w)).collect();
            let extra: Vec<&str> = others.iter().map(String::as_str).collect();
            missing_columns(&missing, &extra, wanted)
        }
        _ => e,
    })?;
    // Every model column, by payload position.
    let mut by_column: Vec<Option<usize>> = vec![None; names.len()];
    for (p, j) in map.iter().enumerate() {
        if let Some(j) = j {
            by_column[*j] = Some(p);
        }
    }
    // First pass: every column's length, all equal.
    let mut n = None;
    for p in by_column.iter().flatten() {
        let (name, raw) = &entries[*p];
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let len = de.deserialize_any(CountCells).map_err(malformed)?.ok_or_else(|| {
            ScoringError::bad_request(format!("Column '{name}' must be a list of values, got a dictionary"))
        })?;
        match n {
            None => n = Some((len, name)),
            Some((m, first)) if m != len => {
                return Err(ScoringError::bad_request(format!(
                    "All columns must have the same length: '{name}' has {len} values, '{first}' has {m}"
                )))
            }
            Some(_) => {}
        }
    }
    let rows = n.map_or(0, |(m, _)| m);
    if rows == 0 {
        return Err(ScoringError::bad_request("The columns are empty: there is nothing to score"));
    }
    let mut table = Table::new(schema, names, rows)?;
    let k = table.width();
    if let Target::Stacked(t) = &mut table.target {
        *t = TensorData::filled(t.dtype(), rows.saturating_mul(k));
    }
    let stash = Stash::default();
    for (j, p) in by_column.iter().enumerate() {
        let (name, raw) = &entries[p.expect("every model column was found; this is a bug")];
        let cells = ColumnCells { name, j, k, target: &mut table.target, stash: &stash };
        let mut de = serde_json::Deserializer::from_str(raw.get());
        de.deserialize_any(cells).map_err(|e| stash.resolve(e, malformed))?;
    }
    table.rows = rows;
    table.finish()
}

// ------------------------------------------------------------------------ Open Inference Protocol

/// An Open Inference Protocol input's JSON `data` (flat or nested, row-major) into a tensor of
/// its declared datatype and shape: the streaming twin of
/// [`convert::tensor_from_v2`](super::convert::tensor_from_v2).
pub fn tensor_from_v2_raw(
    info: &TensorInfo,
    datatype: &str,
    shape: &[i64],
    data: &RawValue,
) -> Result<InputTensor, ScoringError> {
    let (dtype, total) = check_v2(info, datatype, shape)?;
    let out = RefCell::new(TensorData::with_capacity(dtype, total.min(data.get().len() / 2 + 1)));
    let stash = Stash::default();
    let seed = PushFlat { out: &out, total, name: &info.name, stash: &stash };
    run_seed(data.get(), seed, &stash)?;
    let out = out.into_inner();
    if out.len() != total {
        return Err(ScoringError::bad_request(format!(
            "Input '{}' has {} values in 'data', but its shape {shape:?} holds {total}",
            info.name,
            out.len()
        )));
    }
    Ok(InputTensor { name: info.name.clone(), shape: shape.to_vec(), data: out })
}

#[derive(Clone, Copy)]
struct PushFlat<'a> {
    out: &'a RefCell<TensorData>,
    total: usize,
    name: &'a str,
    stash: &'a Stash,
}

impl PushFlat<'_> {
    fn leaf<E: serde::de::Error>(self, v: Value) -> Result<(), E> {
        let mut out = self.out.borrow_mut();
        let i = out.len();
        if i == self.total {
            let msg =
                format!("Input '{}' has more than the {} values its shape holds in 'data'", self.name, self.total);
            return Err(self.stash.fail(ScoringError::bad_request(msg)));
        }
        out.push(&v, &|| format!("input '{}' value {i}", self.name)).map_err(|e| self.stash.fail(e))
    }
}

impl<'de> DeserializeSeed<'de> for PushFlat<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PushFlat<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    leaf_visits!();
}

// ------------------------------------------------------------------------ CSV

fn prepare_csv(schema: &ModelSchema, body: &[u8]) -> Result<Prepared, ScoringError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScoringError::bad_request("The CSV body is empty; send a header row and at least one data row"));
    }
    // Count the header's fields before the reader holds them all (a field a few bytes long
    // costs it several times that).
    if header_fields(body) > MAX_TABLE_WIDTH {
        return Err(too_wide());
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(body);
    let header = reader.headers().map_err(|e| ScoringError::bad_request(format!("Malformed CSV header: {e}")))?;
    let given: Vec<String> = header.iter().map(str::to_string).collect();
    let (names, map) = map_columns(schema, &given)?;
    let mut table = Table::new(schema, names, body.len() / (2 * given.len().max(1)) + 1)?;
    let mut slots: Vec<Option<Value>> = vec![None; table.width()];
    let mut record = csv::StringRecord::new();
    let mut i = 0;
    loop {
        let more = reader
            .read_record(&mut record)
            .map_err(|e| ScoringError::bad_request(format!("Malformed CSV at data row {i}: {e}")))?;
        if !more {
            break;
        }
        for (cell, j) in record.iter().zip(&map) {
            if let Some(j) = j {
                slots[*j] = Some(if cell.is_empty() { Value::Null } else { Value::String(cell.to_string()) });
            }
        }
        table.row(&mut slots)?;
        i += 1;
    }
    if i == 0 {
        return Err(ScoringError::bad_request("The CSV body has a header but no data rows"));
    }
    table.finish()
}

/// Fields in a CSV body's first line (commas outside quotes, plus one).
fn header_fields(body: &[u8]) -> usize {
    let mut quoted = false;
    let mut fields = 1;
    for &b in body {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => fields += 1,
            b'\n' if !quoted => break,
            _ => {}
        }
    }
    fields
}

/// Parse with the general path and convert: what the server did before this module, kept as
/// the reference the streaming path is checked against in tests.
pub fn prepare_via_values(schema: &ModelSchema, format: Format, body: &[u8]) -> Result<Prepared, ScoringError> {
    let request = match format {
        Format::Json => payload::parse_json(body)?,
        Format::Csv => payload::Request { payload: Payload::Frame(payload::parse_csv(body)?), params: None },
    };
    prepare(schema, &request.payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::schema::{ColSpec, DType, ValueKind};
    use crate::runtime::ScoringErrorKind;

    fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
    }
    const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    fn iris_cols() -> Signature {
        Signature::Columns(
            IRIS.iter().map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true }).collect(),
        )
    }
    fn stacked_iris() -> ModelSchema {
        ModelSchema::new(vec![info("float_input", DType::F32, &[-1, 4])], vec![], Some(iris_cols())).unwrap()
    }
    fn per_column_iris() -> ModelSchema {
        let inputs = IRIS.iter().map(|n| info(n, DType::F32, &[-1, 1])).collect();
        ModelSchema::new(inputs, vec![], Some(iris_cols())).unwrap()
    }
    fn unnamed(width: i64) -> ModelSchema {
        ModelSchema::new(vec![info("input", DType::F32, &[-1, width])], vec![], None).unwrap()
    }
    fn mixed() -> ModelSchema {
        ModelSchema::new(
            vec![info("i", DType::I64, &[-1]), info("b", DType::Bool, &[-1]), info("s", DType::String, &[-1, 1])],
            vec![],
            None,
        )
        .unwrap()
    }
    fn stream(schema: &ModelSchema, body: &str) -> Result<Prepared, ScoringError> {
        prepare_body(schema, Format::Json, body.as_bytes())
    }

    #[test]
    fn agrees_with_the_value_path() {
        let cases: Vec<(ModelSchema, &str)> = vec![
            (
                stacked_iris(),
                r#"{"dataframe_split": {"columns": ["petal_width", "sepal_length", "sepal_width", "petal_length"], "data": [[0.2, "5.1", 3.5, 1.4], [1, 2, 3, 4]], "index": [0, 1]}}"#,
            ),
            (stacked_iris(), r#"{"dataframe_split": {"data": [[1, 2, 3, 4]]}, "params": {"x": 1}}"#),
            (
                stacked_iris(),
                r#"{"dataframe_records": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": "4"}, {"petal_width": 8, "petal_length": 7, "sepal_width": 6, "sepal_length": 5}]}"#,
            ),
            (
                stacked_iris(),
                r#"{"instances": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}]}"#,
            ),
            (stacked_iris(), r#"{"inputs": [[1, 2, 3, 4], [5, 6, 7, 8]]}"#),
            (
                stacked_iris(),
                r#"{"inputs": {"sepal_length": [1, 2], "sepal_width": [3, 4], "petal_length": [5, 6], "petal_width": [[7], [8]]}}"#,
            ),
            (
                stacked_iris(),
                r#"{"inputs": {"sepal_length": 1, "sepal_width": 3, "petal_length": 5, "petal_width": 7}}"#,
            ),
            (
                per_column_iris(),
                r#"{"dataframe_records": [{"sepal_length": "5.1", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}"#,
            ),
            (
                per_column_iris(),
                r#"{"inputs": {"sepal_length": [1, 2], "sepal_width": [3, 4], "petal_length": [5, 6], "petal_width": [7, 8]}}"#,
            ),
            (per_column_iris(), r#"{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}"#),
            (
                per_column_iris(),
                r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width", "id"], "data": [[1, 2, 3, 4, "x"]]}}"#,
            ),
            (unnamed(3), r#"{"inputs": [[1, 2, 3], [4, 5, 6]]}"#),
            (unnamed(3), r#"{"inputs": {"input": [[1, 2, 3]]}}"#),
            (unnamed(3), r#"{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}}"#),
            (unnamed(-1), r#"{"dataframe_records": [{"a": 1, "b": 2}, {"b": 4, "a": 3}]}"#),
            (
                mixed(),
                r#"{"dataframe_split": {"columns": ["i", "b", "s"], "data": [[1, true, "x"], [2.0, "false", 3]]}}"#,
            ),
            (mixed(), r#"{"inputs": {"i": [1, 2], "b": [true, false], "s": [["a"], ["b"]]}}"#),
        ];
        for (schema, body) in cases {
            let want =
                prepare_via_values(&schema, Format::Json, body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(stream(&schema, body).unwrap_or_else(|e| panic!("{body}: {e}")), want, "{body}");
        }
        let csv = b"petal_width,sepal_length,sepal_width,petal_length,id\n0.2,5.1,3.5,1.4,x\n1,2,3,4,y\n";
        assert_eq!(
            prepare_body(&stacked_iris(), Format::Csv, csv).unwrap(),
            prepare_via_values(&stacked_iris(), Format::Csv, csv).unwrap()
        );
    }

    #[test]
    fn errors_keep_their_messages() {
        let s = stacked_iris();
        for (body, kind, text) in [
            ("", ScoringErrorKind::BadRequest, "empty"),
            ("{not json", ScoringErrorKind::BadRequest, "Malformed JSON"),
            ("[1, 2]", ScoringErrorKind::BadRequest, "(the body is a JSON list, not a dictionary)"),
            (r#"{"inputs": [[1]], "instances": [[1]]}"#, ScoringErrorKind::BadRequest, "{'inputs', 'instances'}"),
            (r#"{"inputs": [[1]], "params": [1]}"#, ScoringErrorKind::BadRequest, "'params' must be a JSON dictionary"),
            (
                r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length"], "data": [[1, 2, 3]]}}"#,
                ScoringErrorKind::Schema,
                "Model is missing inputs [\"petal_width\"]",
            ),
            (
                r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[1, 2, 3, 4], [3]]}}"#,
                ScoringErrorKind::BadRequest,
                "row 1 has 1 values but 4 columns",
            ),
            (
                r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [["abc", 2, 3, 4]]}}"#,
                ScoringErrorKind::Schema,
                "Failed to convert column sepal_length at row 0 to type 'float32'",
            ),
            (
                r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[1, null, 3, 4]]}}"#,
                ScoringErrorKind::Schema,
                "Column sepal_width at row 0 is null",
            ),
            (
                r#"{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[1, [2], 3, 4]]}}"#,
                ScoringErrorKind::Schema,
                "got a list",
            ),
            (
                r#"{"dataframe_split": {"data": [[1, 2, 3]]}}"#,
                ScoringErrorKind::Schema,
                "3 columns and no column names",
            ),
            (r#"{"dataframe_split": {"columns": ["a"]}}"#, ScoringErrorKind::BadRequest, "no 'data' field"),
            (r#"{"dataframe_split": {"columns": ["a"], "data": []}}"#, ScoringErrorKind::BadRequest, "is empty"),
            (r#"{"dataframe_records": {"a": 1}}"#, ScoringErrorKind::BadRequest, "must be a list of row dictionaries"),
            (
                r#"{"dataframe_records": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}, 5]}"#,
                ScoringErrorKind::BadRequest,
                "item 1 is a number",
            ),
            (
                r#"{"inputs": [[1, 2, 3]]}"#,
                ScoringErrorKind::Schema,
                "Shape of input 'float_input' (1, 3) does not match the expected shape (-1, 4)",
            ),
            (
                r#"{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}"#,
                ScoringErrorKind::Schema,
                "ragged: element [1] has 3 items where the first has 4",
            ),
            (
                r#"{"inputs": [[1, 2, 3, 4], 5]}"#,
                ScoringErrorKind::Schema,
                "element [1] is a scalar where a list of 4 was expected",
            ),
            (
                r#"{"inputs": [[1, 2, 3, 4], [1, 2, 3, [4]]]}"#,
                ScoringErrorKind::Schema,
                "element [1, 3] is nested deeper",
            ),
            (r#"{"inputs": []}"#, ScoringErrorKind::BadRequest, "empty list"),
            (r#"{"inputs": {}}"#, ScoringErrorKind::BadRequest, "empty dictionary"),
            (r#"{"inputs": 3}"#, ScoringErrorKind::BadRequest, "got a number"),
            (
                r#"{"inputs": {"sepal_length": [1, 2], "sepal_width": [3], "petal_length": [5, 6], "petal_width": [7, 8]}}"#,
                ScoringErrorKind::BadRequest,
                "All columns must have the same length",
            ),
            (
                r#"{"inputs": {"sepal_length": [1], "sepal_width": [3], "petal_length": [5], "other": [7]}}"#,
                ScoringErrorKind::Schema,
                "Note that there were extra inputs: [\"other\"]",
            ),
        ] {
            let e = stream(&s, body).unwrap_err();
            assert_eq!(e.kind, kind, "{body}: {e}");
            assert!(e.message.contains(text), "{body}: {e:?} should contain {text:?}");
        }
        let e = prepare_body(&s, Format::Csv, b"sepal_length,sepal_width\n5.1,3.5\n").unwrap_err();
        assert!(e.message.contains("petal_length"), "{e}");
        assert!(prepare_body(&unnamed(2), Format::Csv, b"a,b\n1,2\n3\n").unwrap_err().message.contains("data row 1"));
    }

    #[test]
    fn row_objects_refuse_unknown_keys_before_building_a_table() {
        // Each row carries a different key: refused at the first key the model does not take.
        let rows: Vec<String> = (0..20_000).map(|i| format!("{{\"k{i}\": {i}}}")).collect();
        for field in ["dataframe_records", "instances", "inputs"] {
            let body = format!("{{\"{field}\": [{}]}}", rows.join(","));
            let e = stream(&stacked_iris(), &body).unwrap_err();
            assert_eq!(e.kind, ScoringErrorKind::Schema);
            assert!(e.message.contains("item 0 has the key 'k0', which is not a column of this model"), "{e}");
            // Without column names, item 0's keys are the columns and item 1 may add none.
            let e = stream(&unnamed(-1), &body).unwrap_err();
            assert!(e.message.contains("item 1 has the key 'k1', which item 0 does not have"), "{e}");
            let e = prepare_via_values(&unnamed(-1), Format::Json, body.as_bytes()).unwrap_err();
            assert!(e.message.contains("item 1 has the key 'k1', which item 0 does not have"), "{e}");
        }
        // Item 0 wider than the model's input.
        let wide: Vec<String> = (0..5).map(|i| format!("\"c{i}\": 1")).collect();
        let e = stream(&unnamed(4), &format!("{{\"dataframe_records\": [{{{}}}]}}", wide.join(","))).unwrap_err();
        assert!(e.message.contains("takes 4 columns, but the payload has 5"), "{e}");
        // A key missing from a later row is a missing value, named.
        let e = stream(&unnamed(-1), r#"{"dataframe_records": [{"a": 1, "b": 2}, {"a": 3}]}"#).unwrap_err();
        assert!(e.message.contains("Column b at row 1 is null"), "{e}");
    }

    #[test]
    fn deep_nesting_and_wide_tables_fail_fast() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for body in [
            format!("{{\"inputs\": {}}}", deep(100_000)),
            format!("{{\"dataframe_split\": {{\"columns\": [\"sepal_length\"], \"data\": [[{}]]}}}}", deep(100_000)),
            format!("{{\"dataframe_records\": [{{\"sepal_length\": {}}}]}}", deep(100_000)),
            format!("{{\"inputs\": {{\"sepal_length\": {}}}}}", deep(100_000)),
            format!("{{\"other\": {}, \"inputs\": [[1, 2, 3, 4]]}}", deep(100_000)),
            deep(100_000),
        ] {
            let started = std::time::Instant::now();
            let e = stream(&stacked_iris(), &body).err();
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
            let shown = &body[..40.min(body.len())];
            assert!(e.is_some() || body.starts_with("{\"other\""), "{shown}");
            if let Some(e) = e {
                assert_ne!(e.kind, ScoringErrorKind::Internal, "{shown}: {e}");
            }
        }
        let names: Vec<String> = (0..=MAX_TABLE_WIDTH).map(|i| format!("\"c{i}\"")).collect();
        let body = format!("{{\"dataframe_split\": {{\"columns\": [{}], \"data\": [[1]]}}}}", names.join(","));
        assert!(stream(&unnamed(-1), &body).unwrap_err().message.contains("more than 65536 columns"));
    }

    #[test]
    fn streamed_tensors_match_the_tree_path() {
        let x = info("x", DType::F32, &[-1, 2]);
        let b = info("b", DType::Bool, &[-1]);
        for (info, json) in [
            (&x, "[[1, 2], [3, 4.5]]"),
            (&x, "[[1, 2, 3]]"),
            (&x, "[[1, 2], [3]]"),
            (&x, "[[1, 2], 3]"),
            (&x, "[[1, 2], [3, [4]]]"),
            (&x, "[[1, \"a\"]]"),
            (&x, "[[1, null]]"),
            (&x, "[[1, {\"a\": 1}]]"),
            (&x, "[]"),
            (&x, "[[[1, 2]]]"),
            (&b, "[true, 0, \"false\"]"),
            (&b, "[2]"),
        ] {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            let tree = tensor_from_json(info, &serde_json::from_str(json).unwrap());
            let streamed = stream_tensor(info, &raw);
            match (&tree, &streamed) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{json}"),
                (Err(a), Err(b)) => assert_eq!((a.kind, &a.message), (b.kind, &b.message), "{json}"),
                _ => panic!("{json}: {tree:?} vs {streamed:?}"),
            }
        }
    }

    #[test]
    fn v2_data_streams_flat_or_nested() {
        let f = info("x", DType::F32, &[-1, 2]);
        let raw: Box<RawValue> = serde_json::from_str("[[1, 2], [3, 4.5]]").unwrap();
        let t = tensor_from_v2_raw(&f, "FP32", &[2, 2], &raw).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
        let raw: Box<RawValue> = serde_json::from_str("[1, 2, 3]").unwrap();
        assert!(tensor_from_v2_raw(&f, "FP32", &[2, 2], &raw).unwrap_err().message.contains("has 3 values"));
        let raw: Box<RawValue> = serde_json::from_str("[1, 2, 3, 4, 5]").unwrap();
        assert!(tensor_from_v2_raw(&f, "FP32", &[2, 2], &raw).unwrap_err().message.contains("more than the 4 values"));
        let raw: Box<RawValue> = serde_json::from_str(&format!("{}1{}", "[".repeat(500), "]".repeat(500))).unwrap();
        let e = tensor_from_v2_raw(&info("y", DType::F32, &[-1, 1]), "FP32", &[1, 1], &raw).unwrap_err();
        assert!(e.kind == ScoringErrorKind::BadRequest && e.message.contains("recursion limit"), "{e}");
    }
}
