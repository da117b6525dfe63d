//! Command line and environment: every flag has an env var; values are parsed into typed
//! fields (`SocketAddr`, `Duration`, `ModelUri`, byte sizes) before anything starts, and bad
//! values are reported with the flag's name.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::manager::ServedModel;
use crate::registry::Stage;
use crate::runtime::RuntimeOptions;
use crate::server::origin::{AllowedHosts, HostPattern};
use crate::uri::ModelUri;

pub mod file;

#[derive(Debug, Parser)]
#[command(name = "regserve", version, about = "An MLflow-compatible model registry and ONNX model server")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Directory of the embedded registry: `registry.db` and `artifacts/`.
    #[arg(long, env = "REGSERVE_DATA_DIR", default_value = "regserve-data", global = true)]
    pub data_dir: PathBuf,
    /// Path of the ONNX Runtime shared library (default: search beside the binary and in .ort/lib).
    #[arg(long, env = "ORT_DYLIB_PATH", global = true)]
    pub ort_lib: Option<PathBuf>,
    /// Registry for `serve`, `models` and `predict`: http(s)://host[:port][/prefix] (an
    /// MLflow-compatible server; credentials, TLS and retries from MLflow's
    /// MLFLOW_TRACKING_*/MLFLOW_HTTP_* variables), sqlite:///path/to/registry.db, or
    /// postgresql://user[:password]@host[:port]/db (a regserve registry database; `serve`
    /// hears its changes at once). Default: $MLFLOW_REGISTRY_URI, else $MLFLOW_TRACKING_URI,
    /// else the --data-dir store (that fallback is in code: clap's `env` takes one variable).
    #[arg(long, global = true)]
    pub registry_uri: Option<String>,
    /// Database of the --data-dir registry (MLflow's flag): sqlite:///path (default
    /// <data-dir>/registry.db) or postgresql://user[:password]@host[:port]/db[?sslmode=…] — the
    /// database that several `regserve server` replicas share. Without a password in the URI,
    /// PGPASSWORD, then the password file (PGPASSFILE or ~/.pgpass), as libpq reads them.
    #[arg(long, env = "REGSERVE_BACKEND_STORE_URI", global = true)]
    pub backend_store_uri: Option<String>,
    /// Connections to a PostgreSQL registry database, per process.
    #[arg(long, env = "REGSERVE_DB_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub db_pool_size: u32,
    /// Deadline of every model load (sessions and the warm-up run on the serving input
    /// example): test loads in `models register` and `server`, loads in `serve` and `predict`.
    /// A warm-up still running then is stopped and the load fails (e.g. 60s, 500ms).
    #[arg(long, env = "REGSERVE_LOAD_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration, global = true)]
    pub load_timeout: Duration,
    /// `server`: where the artifact proxy (`mlflow-artifacts:/`) keeps files — a bucket,
    /// `s3://bucket/prefix`, `gs://…`, `wasbs://container@account.blob.core.windows.net/…`,
    /// that several replicas can share (credentials from the environment, as `serve` reads
    /// them); recorded in the registry at start. Default: `<data-dir>/artifacts`. `serve`,
    /// `models` and `predict` on the embedded registry read `mlflow-artifacts:/` from the
    /// destination the server recorded; this flag overrides it.
    #[arg(long, env = "REGSERVE_ARTIFACTS_DESTINATION", global = true)]
    pub artifacts_destination: Option<String>,
    /// `serve` and `server`: a TOML file of flag values — keys are the long flag names with `_`
    /// for `-` (`port = 8080`, `model = ["models:/fraud@champion"]`), optionally under
    /// `[serve]` / `[server]`; flags and environment variables override it (see config/).
    #[arg(long, env = file::CONFIG_ENV, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `serve` and `server`: print the effective configuration as TOML (each value's source,
    /// secrets redacted) and exit without starting anything.
    #[arg(long, global = true)]
    pub print_config: bool,
}

impl GlobalArgs {
    /// The --data-dir registry: its database (--backend-store-uri, default
    /// `<data-dir>/registry.db`) and pool size.
    pub fn local_registry(&self) -> Result<crate::registry::location::LocalRegistry, String> {
        use crate::db::{DatabaseUri, PoolOptions};
        let db = match self.backend_store_uri.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => DatabaseUri::Sqlite(self.db_path()),
            Some(uri) => DatabaseUri::parse(uri).filter(|d| *d != DatabaseUri::Memory).ok_or_else(|| {
                format!(
                    "--backend-store-uri / REGSERVE_BACKEND_STORE_URI: '{}' is not a database URI; accepted: sqlite:///path/to/registry.db, postgresql://user@host:port/db",
                    crate::uri::redact_url(uri)
                )
            })?,
        };
        Ok(crate::registry::location::LocalRegistry {
            data_dir: self.data_dir.clone(),
            db,
            pool: PoolOptions { max_connections: self.db_pool_size as usize },
            artifacts_destination: self.artifacts_destination.clone().filter(|d| !d.trim().is_empty()),
        })
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("registry.db")
    }
    pub fn artifact_root(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve models from the registry over HTTP (MLflow scoring protocol).
    Serve(ServeArgs),
    /// Manage registered models and versions.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Score one payload with a registered model and print the JSON answer.
    Predict(PredictArgs),
    /// Run an MLflow-compatible Model Registry server (REST API, tracking, artifact proxy).
    Server(ServerArgs),
    /// Download the version a models:/ URI selects into a directory, with a record of where it
    /// came from (`regserve serve --model-dir DIR` serves it and follows the URI): KServe's
    /// storage initializer for models:/ storage URIs, which runs it as `pull URI /mnt/models`.
    Pull(PullArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    /// models:/name/version|stage|latest or models:/name@alias, resolved on the registry
    /// (--registry-uri, MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_URI, else --data-dir).
    pub uri: ModelUri,
    /// Where the files go: created if missing; it must be empty or hold an earlier pull, which
    /// is replaced.
    pub dir: PathBuf,
}

/// `regserve server`: the MLflow-compatible registry server over the `--data-dir` store.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    #[arg(long, env = "REGSERVE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the bound address is logged).
    #[arg(short, long, env = "REGSERVE_PORT", default_value_t = 5000)]
    pub port: u16,
    #[command(flatten)]
    pub http: HttpArgs,
    /// With a token set: require it for reads too (by default only writes need it).
    #[arg(long, env = "REGSERVE_AUTH_READS")]
    pub auth_reads: bool,
    /// With a token set: how long a web UI login lasts (the session cookie's lifetime; a
    /// restart also ends every session).
    #[arg(long, env = "REGSERVE_UI_SESSION_TTL", default_value = "12h", value_parser = parse_duration)]
    pub ui_session_ttl: Duration,
    /// Artifact location of new experiments: `<root>/<experiment id>` (MLflow's flag). With
    /// an `s3://…` root the clients upload to the bucket themselves. Default:
    /// `mlflow-artifacts:/` (the proxy), or with --no-serve-artifacts `file://<data-dir>/artifacts`.
    #[arg(long, env = "REGSERVE_DEFAULT_ARTIFACT_ROOT")]
    pub default_artifact_root: Option<String>,
    /// Turn the artifact proxy off (MLflow's flag): its endpoints answer 503, and clients read
    /// and write the experiments' locations (--default-artifact-root) directly.
    #[arg(long, env = "REGSERVE_NO_SERVE_ARTIFACTS", conflicts_with = "artifacts_destination")]
    pub no_serve_artifacts: bool,
    /// URL schemes webhook destinations may use, comma-separated (MLflow's variable).
    #[arg(long, env = "MLFLOW_WEBHOOK_ALLOWED_SCHEMES", value_delimiter = ',', default_value = "https")]
    pub webhook_allowed_schemes: Vec<String>,
    /// Let webhooks deliver to loopback, private and link-local addresses (MLflow's variable;
    /// refused by default).
    #[arg(long, env = "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private_ips: bool,
    /// Seconds one webhook delivery attempt may take (MLflow's variable).
    #[arg(long, env = "MLFLOW_WEBHOOK_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout: u64,
    /// Retries of a webhook delivery after a 429/5xx answer, a timeout or a connection error
    /// (MLflow's variable).
    #[arg(long, env = "MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES", default_value_t = 3)]
    pub webhook_max_retries: u32,
    /// Webhook deliveries in flight at once (MLflow's variable).
    #[arg(long, env = "MLFLOW_WEBHOOK_DELIVERY_MAX_WORKERS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..1000))]
    pub webhook_max_workers: u64,
}

impl ServerArgs {
    /// The artifact location new experiments are placed under (MLflow's
    /// `resolve_default_artifact_root`): the flag, else the proxy, else the local root.
    pub fn default_artifact_root(&self, local_root: &std::path::Path) -> String {
        match (&self.default_artifact_root, self.no_serve_artifacts) {
            (Some(root), _) if !root.trim().is_empty() => root.trim().to_string(),
            (_, false) => "mlflow-artifacts:/".to_string(),
            (_, true) => format!("file://{}", local_root.display()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// How webhook deliveries go out (the `--webhook-*` flags / `MLFLOW_WEBHOOK_*` variables).
    pub fn webhook_delivery(&self) -> Result<crate::mlflow::webhooks::DeliveryConfig, String> {
        let schemes: Vec<String> = self
            .webhook_allowed_schemes
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if schemes.is_empty() {
            return Err("--webhook-allowed-schemes (MLFLOW_WEBHOOK_ALLOWED_SCHEMES) names no scheme".into());
        }
        Ok(crate::mlflow::webhooks::DeliveryConfig {
            destinations: crate::mlflow::webhooks::Destinations {
                allowed_schemes: schemes,
                allow_private_ips: self.webhook_allow_private_ips,
            },
            timeout: Duration::from_secs(self.webhook_timeout),
            max_retries: self.webhook_max_retries,
            max_workers: self.webhook_max_workers as usize,
        })
    }
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Model URI to serve (models:/name/version|stage|latest, models:/name@alias); repeat or
    /// separate with commas to serve several. Required unless --model-dir is given (checked
    /// when serve starts, so a configuration file may give either).
    #[arg(short = 'm', long = "model", env = "REGSERVE_MODEL", value_delimiter = ',')]
    pub models: Vec<ModelUri>,
    /// Serve the model in this directory instead of -m (KServe's `--model_dir`, where its
    /// storage initializer put the files, e.g. /mnt/models): an MLflow model directory or a
    /// `.onnx` file, there or in its only subdirectory, served as version 1. A directory
    /// written by `regserve pull` names the models:/ URI it came from: with a registry named
    /// (--registry-uri, MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_URI, --backend-store-uri), that URI
    /// is followed from the pulled version on (hot swap when the alias or stage moves);
    /// without one, the pulled version is served.
    #[arg(long, alias = "model_dir", env = "REGSERVE_MODEL_DIR", conflicts_with = "models")]
    pub model_dir: Option<PathBuf>,
    /// The name the model answers to (`/v2/models/{name}`, metrics), when not the registered
    /// model's (KServe's `--model_name`: the InferenceService's name). Required with a
    /// --model-dir that `regserve pull` did not write; with -m, one model only.
    #[arg(long, alias = "model_name", env = "REGSERVE_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Registered model name that also answers /invocations (default: the first -m).
    #[arg(long, env = "REGSERVE_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    #[arg(long, env = "REGSERVE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the bound address is logged). KServe's
    /// `--http_port` is another name for it.
    #[arg(short, long, alias = "http_port", env = "REGSERVE_PORT", default_value_t = 5000)]
    pub port: u16,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// Largest request body accepted (bytes, or with a KiB/MiB/GiB suffix); larger gets 413.
    #[arg(long, env = "REGSERVE_MAX_BODY_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_body_size: usize,
    /// How often a stage, alias or `latest` URI is re-resolved (e.g. 5s, 500ms, 1m).
    #[arg(long, env = "REGSERVE_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// File holding the secret of the registry webhooks (MLflow ≥ 3.3, `regserve server`) that
    /// POST to /hooks/mlflow: a signed delivery naming a served model makes its URIs re-resolve
    /// at once (polling stays the fallback). Without it, /hooks/mlflow answers 404.
    #[arg(long, env = "REGSERVE_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Memory budget for loaded versions kept for rollbacks and pinned requests (model file
    /// size × sessions; e.g. 2GiB).
    #[arg(long, env = "REGSERVE_MODEL_CACHE_SIZE", default_value = "2GiB", value_parser = parse_size_u64)]
    pub model_cache_size: u64,
    /// Disk budget for the files downloaded from a remote registry (`<data-dir>/cache`, e.g.
    /// 10GiB): past it, the least recently used versions are removed, never one in service or
    /// being loaded. Unbounded when not set.
    #[arg(long, env = "REGSERVE_CACHE_MAX_SIZE", value_parser = parse_size_u64)]
    pub cache_max_size: Option<u64>,
    /// Most versions kept loaded in that cache (the versions in service count too).
    #[arg(long, env = "REGSERVE_MODEL_CACHE_VERSIONS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub model_cache_versions: u64,
    /// Most session threads held by the versions in that cache (sessions × intra-op threads each).
    #[arg(long, env = "REGSERVE_MODEL_CACHE_THREADS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub model_cache_threads: u64,
    /// A cached version not used for this long is unloaded (its sessions and threads freed);
    /// a version in service stays loaded by its slot.
    #[arg(long, env = "REGSERVE_MODEL_CACHE_IDLE", default_value = "10m", value_parser = parse_positive_duration)]
    pub model_cache_idle: Duration,
    /// Which versions `/v2/models/{name}/versions/{v}/...` serves: `in-service` (only the
    /// version in service for the served URI) or `any` (any READY version of a served model,
    /// loaded on demand within the cache bounds above).
    #[arg(long, env = "REGSERVE_PINNED_VERSIONS", value_enum, default_value = "in-service")]
    pub pinned_versions: PinnedVersions,
    /// Also serve the Open Inference Protocol over gRPC (KServe V2 `GRPCInferenceService`, what
    /// `tritonclient.grpc` speaks) on --host:PORT; 0 picks a free port (logged). Absent: no gRPC.
    /// KServe's `--grpc_port` is another name for it.
    #[arg(long = "grpc-port", alias = "grpc_port", env = "REGSERVE_GRPC_PORT")]
    pub grpc_port: Option<u16>,
}

/// `--pinned-versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PinnedVersions {
    /// Only the version in service for each served URI.
    #[default]
    InService,
    /// Any READY version of a served model.
    Any,
}

/// HTTP limits and authentication, shared by `serve` and `server`.
#[derive(Debug, Args, Clone)]
pub struct HttpArgs {
    /// Most open connections; further clients wait in the listen backlog.
    #[arg(long, env = "REGSERVE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Connections accepted past --max-connections that answer only the health routes (/ping,
    /// /health, /v2/health/*, /version; one request each), so health checks answer while every
    /// ordinary connection is held by slow clients.
    #[arg(long, env = "REGSERVE_HEALTH_CONNECTIONS", default_value_t = 16)]
    pub health_connections: usize,
    /// Bytes of request bodies all connections together may hold in memory; a request beyond it
    /// gets 503 with Retry-After. Default: 4 × the largest body a request may send (--max-body-size
    /// on `serve`, the 2 MiB JSON limit on `server`), at least 64 MiB — a few of the largest
    /// bodies can be read while others are scored, and the bodies plus their parse (a small
    /// multiple of the body) stay near 1 GiB with the default --max-body-size, whatever the
    /// number of connections.
    #[arg(long, env = "REGSERVE_MAX_INFLIGHT_BODY_SIZE", value_parser = parse_size)]
    pub max_inflight_body_size: Option<usize>,
    /// A request body must arrive in full within this time (a streamed upload may not pause
    /// longer), else 408; capped by --request-timeout. It bounds how long a client that stalls
    /// before its last byte holds a share of --max-inflight-body-size.
    #[arg(long, env = "REGSERVE_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// A client must send a request head within this time of its first byte (slow-loris protection).
    #[arg(long, env = "REGSERVE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection may wait for its next request (keep it above the
    /// idle timeout of a load balancer in front, so that the balancer closes first).
    #[arg(long, env = "REGSERVE_KEEP_ALIVE_TIMEOUT", default_value = "75s", value_parser = parse_positive_duration)]
    pub keep_alive_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    #[arg(long, env = "REGSERVE_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_header_size: usize,
    /// A request (body included) must complete within this time, else 503.
    #[arg(long, env = "REGSERVE_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "REGSERVE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// File holding the bearer token clients must send (else REGSERVE_AUTH_TOKEN; neither: no auth).
    #[arg(long, env = "REGSERVE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// `Host` values to answer (DNS-rebinding protection), comma-separated: names or addresses,
    /// optionally with :port, `*` matching any characters (`*.example.com`); `*` alone allows
    /// all. Default: localhost and any IP address, on any port. Probes (/ping, /health,
    /// /version, /v2/health/*) answer whatever the Host.
    #[arg(long, env = "REGSERVE_ALLOWED_HOSTS", value_delimiter = ',', value_parser = parse_host_pattern)]
    pub allowed_hosts: Vec<HostPattern>,
}

impl HttpArgs {
    /// The limits, for a server whose handlers buffer bodies of at most `max_body` bytes.
    pub fn limits(&self, max_body: usize) -> crate::server::HttpLimits {
        crate::server::HttpLimits {
            max_connections: self.max_connections.max(1),
            health_connections: self.health_connections,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            max_header_bytes: self.max_header_size,
            max_body_bytes: max_body,
            inflight_body_bytes: self
                .max_inflight_body_size
                .unwrap_or_else(|| max_body.saturating_mul(4).max(64 << 20))
                .max(1),
            body_read_timeout: self.body_read_timeout.min(self.request_timeout),
            request_timeout: self.request_timeout,
            shutdown_grace: self.shutdown_grace,
        }
    }

    pub fn allowed_hosts(&self) -> AllowedHosts {
        AllowedHosts::new(self.allowed_hosts.clone())
    }
}

#[derive(Debug, Args, Clone)]
pub struct RuntimeArgs {
    /// ONNX Runtime sessions per loaded model (default: one per core).
    #[arg(long, env = "REGSERVE_SESSIONS")]
    pub sessions: Option<usize>,
    /// Intra-op threads per session.
    #[arg(long, env = "REGSERVE_INTRA_THREADS", default_value_t = 1)]
    pub intra_threads: usize,
    /// Requests that may wait for a session per model before new ones get 503.
    #[arg(long, env = "REGSERVE_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Dynamic batching: most rows merged into one session run (1 turns batching off).
    #[arg(long, env = "REGSERVE_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,
    /// Dynamic batching: longest wait for more requests to fill a batch (0 = take what is queued).
    #[arg(long, env = "REGSERVE_MAX_BATCH_DELAY", default_value = "0ms", value_parser = parse_duration)]
    pub max_batch_delay: Duration,
    /// Run a request of at most 16 rows on the async worker that read it, skipping the hand-off
    /// to a session thread, when the model's small runs measure under this and nothing is queued
    /// (one async worker always stays free). 0 = always hand off.
    #[arg(long, env = "REGSERVE_INLINE_MAX_RUN", default_value = "100us", value_parser = parse_duration)]
    pub inline_max_run: Duration,
}

impl RuntimeArgs {
    pub fn options(&self) -> RuntimeOptions {
        let d = RuntimeOptions::default();
        RuntimeOptions {
            sessions: self.sessions.filter(|n| *n > 0).unwrap_or(d.sessions),
            intra_threads: self.intra_threads.max(1),
            queue_capacity: self.queue_capacity.max(1),
            max_batch_size: self.max_batch_size.max(1),
            max_batch_delay: self.max_batch_delay,
            inline_max_run: self.inline_max_run,
            load_timeout: d.load_timeout,
        }
    }
}

impl ServeArgs {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The models given with -m, under the names they answer to (--model-name renames the one).
    pub fn served(&self) -> Result<Vec<ServedModel>, String> {
        if self.models.is_empty() {
            return Err(
                "nothing to serve: give -m models:/NAME/… (or `model = [...]` in --config), or --model-dir DIR".into(),
            );
        }
        let mut served: Vec<ServedModel> = self.models.iter().cloned().map(ServedModel::from).collect();
        if let Some(name) = self.model_name.as_deref() {
            let name = checked_model_name(name)?;
            match served.as_mut_slice() {
                [one] => one.name = name,
                _ => return Err(format!("--model-name names one model; {} are served (-m)", served.len())),
            }
        }
        Ok(served)
    }

    /// Index of the slot answering /invocations among `served`.
    pub fn default_index(&self, served: &[ServedModel]) -> Result<usize, String> {
        match &self.default_model {
            None => Ok(0),
            Some(name) => served
                .iter()
                .position(|m| &m.name == name)
                .ok_or_else(|| format!("--default-model '{name}' is not one of the served models (-m)")),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InputFormat {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[arg(short = 'm', long = "model", env = "REGSERVE_MODEL")]
    pub model: ModelUri,
    /// Payload file ('-' for standard input).
    #[arg(short, long)]
    pub input: PathBuf,
    /// Payload format (default: csv for a .csv file, else json).
    #[arg(long)]
    pub content_type: Option<InputFormat>,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register a .onnx file or MLflow model directory as a new version.
    ///
    /// The model is test-loaded here first. A remote registry gets its files as an MLflow
    /// logged model in experiment $MLFLOW_EXPERIMENT_ID (default 0), uploaded through its
    /// artifact proxy.
    Register {
        path: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Version tag, key=value (repeatable).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Put the new version in this stage.
        #[arg(long, value_parser = parse_stage)]
        stage: Option<Stage>,
        /// With --stage: archive the versions already in that stage.
        #[arg(long)]
        archive_existing: bool,
        /// Point this alias at the new version.
        #[arg(long)]
        alias: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List registered models.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Show one registered model.
    Show {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List the versions of a model.
    Versions {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Move a version to a stage (None, Staging, Production, Archived).
    Transition {
        name: String,
        version: u64,
        #[arg(value_parser = parse_stage)]
        stage: Stage,
        #[arg(long)]
        archive_existing: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Set or delete an alias.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Set the description of a model, or of one version with --version.
    Describe {
        name: String,
        description: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Rename a registered model.
    Rename { name: String, new_name: String },
    /// Set a tag (key=value) on a model, or on one version with --version; --delete KEY removes one.
    Tag {
        name: String,
        #[arg(value_parser = parse_tag, required_unless_present = "delete")]
        tag: Option<(String, String)>,
        #[arg(long)]
        version: Option<u64>,
        #[arg(long, conflicts_with = "tag")]
        delete: Option<String>,
    },
    /// Delete a model (all versions) or, with --version, one version.
    Delete {
        name: String,
        #[arg(long)]
        version: Option<u64>,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    Set { name: String, alias: String, version: u64 },
    Delete { name: String, alias: String },
}

/// A model name as it goes into URL paths (`/v2/models/{name}`): not empty, no `/`.
pub fn checked_model_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.contains('/') || trimmed.chars().any(char::is_control) {
        return Err(format!("--model-name '{name}' is not a model name (not empty, no '/', no control characters)"));
    }
    Ok(trimmed.to_string())
}

pub fn parse_host_pattern(s: &str) -> Result<HostPattern, String> {
    HostPattern::parse(s)
}

pub fn parse_stage(s: &str) -> Result<Stage, String> {
    Stage::parse(s).map_err(|e| e.to_string())
}

pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 5s, 2m)"))?;
    let secs = match unit.trim() {
        "us" | "µs" => n / 1_000_000.0,
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit '{other}' in '{s}' (use us, ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A [`parse_duration`] that must be more than zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("'{s}' must be more than zero"));
    }
    Ok(d)
}

pub fn parse_size_u64(s: &str) -> Result<u64, String> {
    parse_size(s).map(|n| n as u64)
}

/// `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 1048576, 512KiB, 64MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit '{other}' in '{s}'")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("12XB").is_err());
    }

    #[test]
    fn serve_flags_parse_into_types() {
        let cli = Cli::try_parse_from([
            "regserve",
            "serve",
            "-m",
            "models:/a/Production,models:/b@champion",
            "--port",
            "0",
            "--poll-interval",
            "1s",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!(args.models.len(), 2);
        assert_eq!(args.poll_interval, Duration::from_secs(1));
        assert_eq!(args.addr().to_string(), "127.0.0.1:0");
        let err = Cli::try_parse_from(["regserve", "serve", "-m", "models:/a"]).unwrap_err().to_string();
        assert!(err.contains("Accepted forms"), "{err}");
    }

    /// KServe's runtime spells the flags with underscores and `=`.
    #[test]
    fn kserve_spellings_and_served_names() {
        let cli = Cli::try_parse_from([
            "regserve",
            "serve",
            "--model_name=fraud-isvc",
            "--model_dir=/mnt/models",
            "--http_port=8080",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!(args.model_dir.as_deref(), Some(std::path::Path::new("/mnt/models")));
        assert_eq!((args.model_name.as_deref(), args.port), (Some("fraud-isvc"), 8080));
        let cli = Cli::try_parse_from(["regserve", "serve", "--port", "1"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        assert!(args.served().unwrap_err().contains("nothing to serve"), "-m or --model-dir");
        assert!(Cli::try_parse_from(["regserve", "serve", "-m", "models:/a/1", "--model-dir", "/d"]).is_err());
        let cli =
            Cli::try_parse_from(["regserve", "serve", "-m", "models:/fraud@champion", "--model-name", "fraud-isvc"])
                .unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        let served = args.served().unwrap();
        assert_eq!((served[0].name.as_str(), served[0].uri.name.as_str()), ("fraud-isvc", "fraud"));
        assert_eq!(args.default_index(&served), Ok(0));
        let cli = Cli::try_parse_from(["regserve", "serve", "-m", "models:/a/1,models:/b/1", "--default-model", "b"])
            .unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!(args.default_index(&args.served().unwrap()), Ok(1));
        assert!(checked_model_name(" ").is_err() && checked_model_name("a/b").is_err());
    }

    #[test]
    fn load_and_pinning_limits_parse_and_default_safely() {
        let cli = Cli::try_parse_from(["regserve", "serve", "-m", "models:/a/1"]).unwrap();
        assert_eq!(cli.global.load_timeout, Duration::from_secs(60));
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!(args.pinned_versions, PinnedVersions::InService);
        assert_eq!((args.model_cache_versions, args.model_cache_threads), (16, 64));
        let cli = Cli::try_parse_from([
            "regserve",
            "serve",
            "-m",
            "models:/a/1",
            "--load-timeout",
            "5s",
            "--pinned-versions",
            "any",
            "--model-cache-idle",
            "30s",
        ])
        .unwrap();
        assert_eq!(cli.global.load_timeout, Duration::from_secs(5));
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!((args.pinned_versions, args.model_cache_idle), (PinnedVersions::Any, Duration::from_secs(30)));
        for bad in [&["--load-timeout", "0s"][..], &["--model-cache-versions", "0"], &["--pinned-versions", "all"]] {
            let mut argv = vec!["regserve", "serve", "-m", "models:/a/1"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
