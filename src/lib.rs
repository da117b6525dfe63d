//! regserve: an MLflow-compatible Model Registry and an ONNX model-serving daemon in one binary.
//!
//! Dependencies point one way: a module imports only modules listed before it here (and
//! [`metrics`], a leaf anyone may record into). The README's Architecture section has the map.
//!
//! - [`uri`]: `models:/` URIs
//! - [`registry`]: the data model, the embedded SQLite store, search filters
//! - [`tracking`]: experiments, runs and logged models (what the MLflow client logs models with)
//! - [`mlflow`]: the client side of MLflow's REST API (transport, registry reads, writes, uploads)
//! - [`artifact`]: where a version's files are, and getting them onto local disk
//! - [`runtime`]: ONNX Runtime sessions and payload ⇄ tensor conversion
//! - [`registration`]: registering and deleting versions (test load, the embedded, remote and
//!   REST flows, owned-file cleanup); above registry, artifact and runtime, below server and cli
//! - [`manager`]: served models, watching the registry, hot swap
//! - [`server`]: HTTP routes and the error → status mapping
//! - [`config`]: command line, environment and the configuration file (`--config`)
//! - [`cli`]: the commands (`serve`, `server`, `models`, `predict`) and the CLI's registry client
//! - [`metrics`]: Prometheus metrics (a leaf: anything may record into it)
//! - [`wildcard`]: wildcard matching (a leaf, like `metrics`)
//! - [`saturation`]: requests in the session pools over sessions, averaged (a leaf, like `metrics`)
#![forbid(unsafe_code)]

pub mod artifact;
pub mod cli;
pub mod config;
pub mod db;
pub mod manager;
pub mod metrics;
pub mod mlflow;
pub mod registration;
pub mod registry;
pub mod runtime;
pub mod saturation;
pub mod server;
pub mod tracking;
pub mod uri;
pub mod wildcard;
