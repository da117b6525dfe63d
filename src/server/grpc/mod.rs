//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService` of KServe's
//! `proto/grpc_predict_v2.proto`, which `tritonclient.grpc` also speaks) on `--grpc-port`:
//!
//! - `ServerLive`, `ServerReady`, `ServerMetadata` — open, as the HTTP health routes are
//! - `ModelReady`, `ModelMetadata`, `ModelInfer` — behind the bearer token when one is set
//!   (`authorization: Bearer <token>` metadata)
//! - `RepositoryModelLoad`/`Unload`, and Triton's RPCs outside this service — `UNIMPLEMENTED`:
//!   the registry decides what is served
//!
//! Each RPC does what its HTTP twin in [`super::v2`] does, with the same pieces (the model
//! lookup with `model_version` pins, the binding of inputs, the model's batching `run`, output
//! selection, metrics under `protocol="grpc"`, the slot's stats); errors are gRPC status codes
//! mapped from [`ApiError::classify`] by [`code_of`]. [`serve`] runs the listener with bounded
//! messages, connections, streams and request time, messages in flight under a memory budget
//! ([`body_budget`](super::body_budget)), and drains on shutdown like the HTTP one.

pub mod convert;

/// The messages, server and client generated from the `.proto` at build time (`build.rs`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Code, Request, Response, Status};

use super::auth::Token;
use super::body_budget::{self, BodyBudget, Refusal};
use super::error::ApiError;
use super::scoring::{observe, off_workers, ScoringState};
use super::v2::{bind_inputs, datatype, lookup, select_outputs};
use crate::runtime::schema::TensorInfo;
use crate::runtime::{LoadedModel, ScoringError};
use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// The gRPC status code of an error: one table, from the HTTP status the error has everywhere
/// else ([`ApiError::classify`]).
pub fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 415 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        413 | 429 => Code::ResourceExhausted,
        // A pinned version that cannot load until the registry changes (see error::load_status).
        424 => Code::FailedPrecondition,
        503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The status answering `e`; an internal error is logged and answered without its details.
pub fn status_of(e: &ApiError) -> Status {
    let code = code_of(e.classify().0);
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
        return Status::internal("Internal error; the server log has the details");
    }
    Status::new(code, e.to_string())
}

/// The service: what `serve`'s HTTP scoring routes share, and the token they require.
#[derive(Clone)]
pub struct Inference {
    state: ScoringState,
    token: Option<Token>,
}

impl Inference {
    pub fn new(state: ScoringState, token: Option<Token>) -> Inference {
        Inference { state, token }
    }

    /// With a token set: the request's `authorization` metadata must be `Bearer <token>`.
    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else { return Ok(()) };
        let given = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if token.accepts_bearer(given) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "This server requires a bearer token: send the metadata 'authorization: Bearer <token>'",
            ))
        }
    }

    async fn infer(&self, req: ModelInferRequest, served: &mut Option<u64>) -> Result<ModelInferResponse, ApiError> {
        let version = Some(req.model_version.as_str()).filter(|v| !v.is_empty());
        let (model, v) = lookup(&self.state, &req.model_name, version).await?;
        *served = Some(v);
        // Converted off the async workers when large (the message itself is at most
        // --max-body-size, enforced by the decoder).
        let size = prost::Message::encoded_len(&req);
        let m = model.clone();
        let decoded = off_workers(size, move || decode(&m, req)).await??;
        let outputs = model.run(decoded.inputs).await?;
        select_outputs(&outputs, decoded.outputs.as_deref())?;
        let estimate = outputs.iter().map(|o| o.shape.iter().product::<usize>() * 8).sum();
        off_workers(estimate, move || {
            let selected = select_outputs(&outputs, decoded.outputs.as_deref()).unwrap_or_default();
            let (metas, raws) = selected.into_iter().map(convert::raw_output).unzip();
            ModelInferResponse {
                model_name: decoded.model_name,
                model_version: v.to_string(),
                id: decoded.id,
                parameters: decoded.parameters,
                outputs: metas,
                raw_output_contents: raws,
            }
        })
        .await
    }
}

/// What the conversion of a request leaves for the run and the reply.
struct Decoded {
    inputs: Vec<crate::runtime::convert::InputTensor>,
    model_name: String,
    id: String,
    parameters: std::collections::HashMap<String, InferParameter>,
    outputs: Option<Vec<String>>,
}

/// A request's inputs as the model's tensors: `raw_input_contents` (one entry per input, in
/// order) or each input's typed `contents`.
fn decode(model: &LoadedModel, mut req: ModelInferRequest) -> Result<Decoded, ScoringError> {
    let raw = std::mem::take(&mut req.raw_input_contents);
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(ScoringError::bad_request(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in the order of 'inputs'",
            raw.len(),
            req.inputs.len()
        )));
    }
    let names: Vec<String> = req.inputs.iter().map(|i| i.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let inputs = bind_inputs(model, &names, |at, info| {
        convert::input_tensor(info, &mut req.inputs[at], raw.get(at).map(Vec::as_slice))
    })?;
    let outputs = (!req.outputs.is_empty()).then(|| req.outputs.into_iter().map(|o| o.name).collect());
    Ok(Decoded { inputs, model_name: req.model_name, id: req.id, parameters: req.parameters, outputs })
}

fn tensor_metadata(infos: &[TensorInfo]) -> Vec<TensorMetadata> {
    infos
        .iter()
        .map(|i| TensorMetadata { name: i.name.clone(), datatype: datatype(i).to_string(), shape: i.shape.clone() })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: self.state.manager.all_ready() }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "regserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    /// Unknown model: NOT_FOUND (as HTTP's 404); served but not loaded yet: `ready: false`; a
    /// pinned version: ready when it can serve, NOT_FOUND / INVALID_ARGUMENT as for inference.
    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        let Some(slot) = self.state.manager.slot(&req.name) else {
            return Err(Status::not_found(format!("Model '{}' is not served here", req.name)));
        };
        let ready = if req.version.is_empty() {
            slot.active().is_some()
        } else {
            match lookup(&self.state, &req.name, Some(&req.version)).await {
                Ok(_) => true,
                Err(e) => match e.classify().0 {
                    StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Err(status_of(&e)),
                    _ => false,
                },
            }
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        let version = Some(req.version.as_str()).filter(|v| !v.is_empty());
        let (model, v) = lookup(&self.state, &req.name, version).await.map_err(|e| status_of(&e))?;
        Ok(Response::new(ModelMetadataResponse {
            name: req.name,
            versions: vec![v.to_string()],
            platform: "onnxruntime_onnx".into(),
            inputs: tensor_metadata(&model.schema.inputs),
            outputs: tensor_metadata(&model.schema.outputs),
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        self.authorize(&request)?;
        let started = Instant::now();
        let req = request.into_inner();
        let name = req.model_name.clone();
        let mut served = None;
        let result = self.infer(req, &mut served).await;
        let status = match &result {
            Ok(_) => StatusCode::OK,
            Err(e) => e.classify().0,
        };
        observe(&self.state.manager, &name, served, "grpc", status, started);
        if let Some(slot) = self.state.manager.slot(&name) {
            slot.stats.record(status.as_u16(), started.elapsed());
        }
        result.map(Response::new).map_err(|e| status_of(&e))
    }

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented(
            "regserve serves the models:/ URIs it was started with; the registry decides their versions",
        ))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented(
            "regserve serves the models:/ URIs it was started with; the registry decides their versions",
        ))
    }
}

/// The gRPC listener's limits.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    /// The largest request message decoded (`--max-body-size`); larger is RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// Open connections; further clients wait in the listen backlog (`--max-connections`).
    pub max_connections: usize,
    /// Concurrent requests (HTTP/2 streams) on one connection; more wait for a free one.
    pub streams_per_connection: usize,
    /// Each request must complete within this (`--request-timeout`), else CANCELLED.
    pub request_timeout: Duration,
    /// A connection idle this long is pinged; without an answer within `keepalive_timeout`,
    /// closed (half-open connections do not hold a slot forever).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Metadata (headers) of one request, at most.
    pub max_header_bytes: usize,
    /// On shutdown, how long in-flight requests may take to finish (`--shutdown-grace`).
    pub shutdown_grace: Duration,
}

impl GrpcLimits {
    /// The gRPC twin of [`super::HttpLimits`], as `serve` builds it from the same flags.
    pub fn from_http(http: &super::HttpLimits) -> GrpcLimits {
        GrpcLimits {
            max_message_bytes: http.max_body_bytes,
            max_connections: http.max_connections.max(1),
            streams_per_connection: 256,
            request_timeout: http.request_timeout,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_header_bytes: http.max_header_bytes,
            shutdown_grace: http.shutdown_grace,
        }
    }
}

/// A connection holding one of the `max_connections` slots until it closes.
struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Every request's body charged to one budget ([`body_budget`](super::body_budget), the HTTP
/// listener's mechanism) while it is read and until it is answered.
#[derive(Clone)]
struct Budgeted<S> {
    inner: S,
    budget: BodyBudget,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<axum::http::Request<tonic::body::Body>> for Budgeted<S>
where
    S: tower::Service<axum::http::Request<tonic::body::Body>, Response = axum::http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let (body, charge) = body_budget::metered(&self.budget, axum::body::Body::new(body));
        let answer = self.inner.call(axum::http::Request::from_parts(parts, tonic::body::Body::new(body)));
        Box::pin(async move {
            let response = answer.await?;
            Ok(match charge.refusal() {
                None => response,
                Some(why @ Refusal::OverBudget) => Status::unavailable(why.to_string()).into_http(),
                Some(why @ Refusal::TimedOut) => Status::deadline_exceeded(why.to_string()).into_http(),
            })
        })
    }
}

/// tonic refuses a request message over `max_decoding_message_size` (before reading it) with
/// OUT_OF_RANGE; gRPC's convention, and gRPC's own servers (Triton's among them), say
/// RESOURCE_EXHAUSTED, the code [`code_of`] gives the HTTP 413 too. No handler here answers
/// OUT_OF_RANGE, so every one is tonic's size check (a trailers-only answer: status in headers).
fn too_large_is_resource_exhausted<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|s| s.as_bytes() == b"11") {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
    response
}

/// Serve `service` on an already-bound listener until `shutdown` resolves; then stop accepting
/// and let in-flight requests finish within `limits.shutdown_grace`.
/// Request messages are charged to `budget` while they are read and answered
/// (`--max-inflight-body-size`, the one budget `serve`'s HTTP listener charges too); past it,
/// UNAVAILABLE. A message must arrive within the budget's read timeout, else DEADLINE_EXCEEDED.
pub async fn serve(
    listener: TcpListener,
    service: Inference,
    limits: GrpcLimits,
    budget: BodyBudget,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let incoming = futures_util::stream::unfold((listener, slots), |(listener, slots)| async move {
        loop {
            let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed; this is a bug");
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((Ok::<_, std::io::Error>(Counted { stream, _slot: slot }), (listener, slots)));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let service = GrpcInferenceServiceServer::new(service).max_decoding_message_size(limits.max_message_bytes);
    let streams = limits.streams_per_connection.max(1);
    let (begun_tx, begun) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = begun_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted))
        .layer(tower::layer::layer_fn(move |inner| Budgeted { inner, budget: budget.clone() }))
        .concurrency_limit_per_connection(streams)
        .max_concurrent_streams(Some(streams as u32))
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .http2_max_header_list_size(Some(limits.max_header_bytes as u32))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::pin!(server);
    tokio::select! {
        done = &mut server => return done,
        _ = begun => {}
    }
    tracing::info!(grace = ?limits.shutdown_grace, "gRPC stopped accepting; waiting for in-flight requests");
    tokio::select! {
        done = &mut server => {
            tracing::info!("all gRPC connections closed");
            done
        }
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing the remaining gRPC connections");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_status_has_its_grpc_code() {
        let table = [
            (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
            (StatusCode::NOT_FOUND, Code::NotFound),
            (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
            (StatusCode::FAILED_DEPENDENCY, Code::FailedPrecondition),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        ];
        for (http, grpc) in table {
            assert_eq!(code_of(http), grpc, "{http}");
        }
        let bad = ApiError::from(ScoringError::bad_request("Missing input 'x'"));
        let status = status_of(&bad);
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "Missing input 'x'"));
        // An internal error keeps its details in the log.
        let status = status_of(&ApiError::Internal("/secret/path exploded".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
