//! The Open Inference Protocol (KServe V2 REST), as Triton, KServe and MLServer answer it:
//!
//! - `GET /v2` — server metadata
//! - `GET /v2/health/live`, `GET /v2/health/ready` — `{"live": true}`, `{"ready": ...}` (200, or 503 until loaded)
//! - `GET /v2/models/{name}[/versions/{v}]` — model metadata (-1 for variable dimensions)
//! - `GET /v2/models/{name}[/versions/{v}]/ready`
//! - `POST /v2/models/{name}[/versions/{v}]/infer`
//!
//! `versions/{v}` pins the version in service; with `--pinned-versions any`, any READY version
//! of a served model, even after the stage has moved on (loaded through the manager's cache).
//! Other versions get 404. Errors are `{"error": "..."}` with the status of `ApiError::classify`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::error::ApiError;
use super::scoring::{observe, off_workers, read_body, ScoringState};
use crate::manager::{PinError, SourceError};
use crate::registry::RegistryError;
use crate::runtime::convert::{tensor_from_v2_binary, write_flat, InputTensor, OutputData, OutputTensor};
use crate::runtime::decode::tensor_from_v2_raw;
use crate::runtime::schema::{TensorInfo, ValueKind};
use crate::runtime::{LoadedModel, ScoringError};

/// Server metadata and health: open even when a token is required.
pub fn public_routes(state: ScoringState) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(server_ready))
        .with_state(state)
}

/// Model metadata, readiness and inference: behind the token when one is set.
pub fn model_routes(state: ScoringState) -> Router {
    Router::new()
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(version_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(version_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(version_infer))
        .with_state(state)
}

/// An error in the protocol's body shape.
struct V2Error(ApiError);

impl<E: Into<ApiError>> From<E> for V2Error {
    fn from(e: E) -> Self {
        V2Error(e.into())
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let (status, _) = self.0.classify();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.0, "internal error");
            "Internal error; the server log has the details".to_string()
        } else {
            self.0.to_string()
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// The error of a model or pinned version that cannot serve (shared with [`super::grpc`]).
pub(super) fn pin_error(e: PinError) -> ApiError {
    match e {
        PinError::NotServed(name) => ApiError::NotFound(format!("Model '{name}' is not served here")),
        e @ (PinError::NotInService { .. } | PinError::NotReady { .. }) => ApiError::NotFound(e.to_string()),
        PinError::Source(SourceError::Registry(r @ RegistryError::NotFound(_))) => r.into(),
        // Status by cause: see `error::load_status`.
        PinError::Load(e) => e.into(),
        other => ScoringError::unavailable(other.to_string()).into(),
    }
}

fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().map_err(|_| ScoringError::bad_request(format!("Version '{v}' is not a version number")).into())
}

/// The model and version number a request is for: the version in service, or the pinned
/// `version` (shared with [`super::grpc`]).
pub(super) async fn lookup(
    st: &ScoringState,
    name: &str,
    version: Option<&str>,
) -> Result<(Arc<LoadedModel>, u64), ApiError> {
    let slot = st.manager.slot(name).ok_or_else(|| pin_error(PinError::NotServed(name.to_string())))?;
    match version {
        None => {
            let active = slot.active().ok_or_else(|| {
                ApiError::from(ScoringError::unavailable(format!("Model '{name}' is not loaded yet")))
            })?;
            Ok((active.model.clone(), active.version.version))
        }
        Some(v) => {
            let v = parse_version(v)?;
            let model = st.manager.pinned(name, v).await.map_err(pin_error)?;
            Ok((model, v))
        }
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "regserve", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

/// The status says it (Triton, tritonclient); the body too, as KServe's servers answer and its
/// SDK's `is_server_ready` reads (`{"ready": ...}`; `{"live": true}` on the liveness route).
async fn server_ready(State(st): State<ScoringState>) -> (StatusCode, Json<Value>) {
    let ready = st.manager.all_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready })))
}

fn tensor_metadata(infos: &[TensorInfo]) -> Vec<Value> {
    infos.iter().map(|i| json!({"name": i.name, "datatype": datatype(i), "shape": i.shape})).collect()
}

/// A model input's or output's datatype in the protocol's metadata (maps and other non-tensor
/// values are `BYTES`).
pub(super) fn datatype(info: &TensorInfo) -> &'static str {
    match &info.kind {
        ValueKind::Tensor(d) => d.v2_name(),
        ValueKind::SequenceOfMaps | ValueKind::Other(_) => "BYTES",
    }
}

fn metadata(name: &str, version: u64, model: &LoadedModel) -> Json<Value> {
    Json(json!({
        "name": name,
        "versions": [version.to_string()],
        "platform": "onnxruntime_onnx",
        "inputs": tensor_metadata(&model.schema.inputs),
        "outputs": tensor_metadata(&model.schema.outputs),
    }))
}

async fn model_metadata(State(st): State<ScoringState>, Path(name): Path<String>) -> Result<Json<Value>, V2Error> {
    let (model, v) = lookup(&st, &name, None).await?;
    Ok(metadata(&name, v, &model))
}

async fn version_metadata(
    State(st): State<ScoringState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    let (model, v) = lookup(&st, &name, Some(&version)).await?;
    Ok(metadata(&name, v, &model))
}

async fn model_ready(State(st): State<ScoringState>, Path(name): Path<String>) -> StatusCode {
    match st.manager.slot(&name) {
        None => StatusCode::NOT_FOUND,
        Some(slot) if slot.active().is_some() => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn version_ready(State(st): State<ScoringState>, Path((name, version)): Path<(String, String)>) -> StatusCode {
    match lookup(&st, &name, Some(&version)).await {
        Ok(_) => StatusCode::OK,
        Err(e) => match e.classify().0 {
            StatusCode::NOT_FOUND => StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
    }
}

/// An inference request, read without a JSON value per element: `data` and `parameters` stay
/// raw slices of the body until they are converted (data) or echoed (parameters).
#[derive(Debug, Deserialize)]
struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    inputs: AtMost<InferInput<'a>, MAX_LIST>,
    #[serde(default)]
    outputs: Option<AtMost<RequestedOutput, MAX_LIST>>,
}

/// Longest `inputs` / `outputs` list and shape read (far beyond any ONNX model), so a request
/// cannot make the server hold a struct per few bytes of body.
const MAX_LIST: usize = 4096;
const MAX_RANK: usize = 64;

#[derive(Debug, Deserialize)]
struct InferInput<'a> {
    name: String,
    shape: AtMost<i64, MAX_RANK>,
    datatype: String,
    /// `binary_data_size` says the values follow the JSON header as raw bytes.
    #[serde(default)]
    parameters: Option<InputParameters>,
    /// JSON values; absent when the input is sent as binary data.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// An input's `parameters`: only `binary_data_size` means anything here; other keys are skipped.
#[derive(Debug, Deserialize)]
struct InputParameters {
    #[serde(default)]
    binary_data_size: Option<serde_json::Number>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
}

/// A JSON list of at most `N` items.
#[derive(Debug)]
struct AtMost<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for AtMost<T, N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for V<T, N> {
            type Value = AtMost<T, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a list of at most {N} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == N {
                        return Err(serde::de::Error::custom(format!("a list of more than {N} items")));
                    }
                    items.push(item);
                }
                Ok(AtMost(items))
            }
        }
        d.deserialize_seq(V::<T, N>(std::marker::PhantomData))
    }
}

/// What the parse of an inference request leaves for the run and the reply.
struct Decoded {
    inputs: Vec<InputTensor>,
    id: Option<String>,
    /// The request's `parameters`, as sent, echoed in the reply.
    parameters: Option<String>,
    outputs: Option<Vec<String>>,
}

/// The model's input tensors from a request's inputs (named `given`, in request order): every
/// name must be one of the model's, every model input must be given (of a repeated name the
/// first entry counts); `build(i, info)` makes the tensor of request input `i` (shared with
/// [`super::grpc`]).
pub(super) fn bind_inputs(
    model: &LoadedModel,
    given: &[&str],
    mut build: impl FnMut(usize, &TensorInfo) -> Result<InputTensor, ScoringError>,
) -> Result<Vec<InputTensor>, ScoringError> {
    for name in given {
        if !model.schema.inputs.iter().any(|i| i.name == *name) {
            let names: Vec<&str> = model.schema.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(ScoringError::bad_request(format!(
                "Unexpected input '{name}'; the model's inputs are {names:?}"
            )));
        }
    }
    let mut inputs = Vec::with_capacity(model.schema.inputs.len());
    for info in &model.schema.inputs {
        let at = given
            .iter()
            .position(|n| *n == info.name)
            .ok_or_else(|| ScoringError::bad_request(format!("Missing input '{}'", info.name)))?;
        inputs.push(build(at, info)?);
    }
    Ok(inputs)
}

/// The outputs a request asked for, in its order (all of them, in the model's order, when it
/// named none); an unknown name is a bad request (shared with [`super::grpc`]).
pub(super) fn select_outputs<'a>(
    outputs: &'a [OutputTensor],
    wanted: Option<&[String]>,
) -> Result<Vec<&'a OutputTensor>, ScoringError> {
    let Some(wanted) = wanted else { return Ok(outputs.iter().collect()) };
    wanted
        .iter()
        .map(|w| {
            outputs.iter().find(|o| o.name == *w).ok_or_else(|| {
                let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
                ScoringError::bad_request(format!("Unknown output '{w}'; the model's outputs are {names:?}"))
            })
        })
        .collect()
}

/// Parse an inference request (JSON header of `header_len` bytes, then binary tensor data) into
/// the model's input tensors.
fn decode(model: &LoadedModel, bytes: &[u8], header_len: usize) -> Result<Decoded, ScoringError> {
    let (json_part, mut binary) = bytes.split_at(header_len);
    let req: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| ScoringError::bad_request(format!("Invalid inference request: {e}")))?;
    let given = &req.inputs.0;
    // Binary chunks come in the order of the request's inputs.
    let mut raw: Vec<Option<&[u8]>> = Vec::with_capacity(given.len());
    for input in given {
        match input.parameters.as_ref().and_then(|p| p.binary_data_size.as_ref()) {
            None => raw.push(None),
            Some(n) => {
                let size = n.as_u64().map(|n| n as usize).filter(|n| *n <= binary.len()).ok_or_else(|| {
                    ScoringError::bad_request(format!(
                        "Input '{}': binary_data_size {n} is beyond the body",
                        input.name
                    ))
                })?;
                let (chunk, rest) = binary.split_at(size);
                raw.push(Some(chunk));
                binary = rest;
            }
        }
    }
    let names: Vec<&str> = given.iter().map(|i| i.name.as_str()).collect();
    let inputs = bind_inputs(model, &names, |at, info| {
        let input = &given[at];
        match (raw[at], input.data) {
            (Some(bytes), _) => tensor_from_v2_binary(info, &input.datatype, &input.shape.0, bytes),
            (None, Some(data)) => tensor_from_v2_raw(info, &input.datatype, &input.shape.0, data),
            (None, None) => {
                Err(ScoringError::bad_request(format!("Input '{}' has neither 'data' nor binary data", info.name)))
            }
        }
    })?;
    Ok(Decoded {
        inputs,
        id: req.id,
        parameters: req.parameters.map(|p| p.get().to_string()).filter(|p| p != "null"),
        outputs: req.outputs.map(|o| o.0.into_iter().map(|o| o.name).collect()),
    })
}

async fn infer(
    State(st): State<ScoringState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    infer_observed(&st, name, None, &headers, body).await
}

async fn version_infer(
    State(st): State<ScoringState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    infer_observed(&st, name, Some(version), &headers, body).await
}

async fn infer_observed(
    st: &ScoringState,
    name: String,
    version: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let started = Instant::now();
    let mut served_version = None;
    let result = run_infer(st, &name, version.as_deref(), headers, body, &mut served_version).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.0.classify().0,
    };
    observe(&st.manager, &name, served_version, "v2", status, started);
    if let Some(slot) = st.manager.slot(&name) {
        slot.stats.record(status.as_u16(), started.elapsed());
    }
    // The body's `model_version` says it too; the header is the same as on /invocations.
    result.map(|r| super::scoring::with_version(r, served_version))
}

async fn run_infer(
    st: &ScoringState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    served_version: &mut Option<u64>,
) -> Result<Response, V2Error> {
    let bytes = read_body(headers, body, st.max_body_size).await?;
    let (model, v) = lookup(st, name, version).await?;
    *served_version = Some(v);
    // The binary tensor data extension: a JSON header of this length, then raw tensor bytes.
    let header_len = match headers.get("inference-header-content-length") {
        None => bytes.len(),
        Some(v) => {
            v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n <= bytes.len()).ok_or_else(
                || ScoringError::bad_request("Inference-Header-Content-Length is not a length within the body"),
            )?
        }
    };
    // Parsed off the async workers when large; the body is dropped with the closure.
    let m = model.clone();
    let req = off_workers(bytes.len(), move || decode(&m, &bytes, header_len)).await??;
    let outputs = model.run(req.inputs).await?;
    select_outputs(&outputs, req.outputs.as_deref())?;
    // Rendered off the async workers when large.
    let estimate = outputs.iter().map(|o| o.shape.iter().product::<usize>() * 12).sum();
    let name = name.to_string();
    let (id, parameters, wanted) = (req.id, req.parameters, req.outputs);
    let buf = off_workers(estimate, move || {
        let selected = select_outputs(&outputs, wanted.as_deref()).unwrap_or_default();
        render(&name, v, id.as_deref(), parameters.as_deref(), &selected)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], buf).into_response())
}

/// The inference response: `{"model_name", "model_version", "id"?, "parameters"?, "outputs"}`.
fn render(name: &str, v: u64, id: Option<&str>, parameters: Option<&str>, selected: &[&OutputTensor]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    // Serializing a str into a Vec cannot fail.
    let string = |buf: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(buf, s);
    };
    buf.extend_from_slice(b"{\"model_name\":");
    string(&mut buf, name);
    buf.extend_from_slice(format!(",\"model_version\":\"{v}\"").as_bytes());
    if let Some(id) = id {
        buf.extend_from_slice(b",\"id\":");
        string(&mut buf, id);
    }
    if let Some(p) = parameters {
        buf.extend_from_slice(b",\"parameters\":");
        buf.extend_from_slice(p.as_bytes());
    }
    buf.extend_from_slice(b",\"outputs\":[");
    for (i, o) in selected.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let datatype = match &o.data {
            OutputData::Tensor(t) => t.dtype().v2_name(),
            OutputData::Maps(_) => "BYTES",
        };
        buf.extend_from_slice(b"{\"name\":");
        string(&mut buf, &o.name);
        buf.extend_from_slice(format!(",\"datatype\":\"{datatype}\",\"shape\":{:?},\"data\":", o.shape).as_bytes());
        write_flat(&mut buf, o);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
    buf
}
