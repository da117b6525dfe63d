//! regserve: an MLflow-compatible Model Registry and an ONNX model-serving daemon in one binary.
//!
//! Dependencies point one way: `server → manager → runtime / registry / artifact → uri`.
//!
//! - [`uri`]: `models:/` URIs
//! - [`registry`]: the data model, the embedded SQLite store, search filters
//! - [`tracking`]: experiments, runs and logged models (what the MLflow client logs models with)
//! - [`mlflow`]: the client side of MLflow's REST API (transport, registry reads, writes, uploads)
//! - [`artifact`]: where a version's files are, and getting them onto local disk
//! - [`runtime`]: ONNX Runtime sessions and payload ⇄ tensor conversion
//! - [`manager`]: served models, watching the registry, hot swap, registration
//! - [`server`]: HTTP routes and the error → status mapping
//! - [`metrics`]: Prometheus metrics (a leaf: anything may record into it)
//! - [`config`]: command line and environment
//! - [`cli`]: the `models` and `predict` commands
#![forbid(unsafe_code)]

pub mod artifact;
pub mod cli;
pub mod config;
pub mod manager;
pub mod metrics;
pub mod mlflow;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod tracking;
pub mod uri;
