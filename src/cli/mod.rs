//! The commands behind `main`: `serve`, `server`, `models ...` and `predict`. Human-readable tables by
//! default, `--json` for scripts.

pub mod client;
mod pull;

pub use pull::pull;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use self::client::RegistryClient;
use crate::artifact::ArtifactRoot;
use crate::config::{AliasCommand, GlobalArgs, InputFormat, ModelsCommand, PinnedVersions, PredictArgs, ServeArgs};
use crate::manager::{
    DirectorySource, ManagerOptions, ModelManager, ModelSource, PinnedPolicy, PullRecord, PulledSource, ServedModel,
};
use crate::registration::Registration;
use crate::registry::types::format_utc_ms;
use crate::registry::{ModelVersion, RegisteredModel, Store, Tag};
use crate::runtime::{init_runtime, payload, LoadedModel, RuntimeOptions};
use crate::server::{self, ScoringState};

/// `println!` that returns the write error instead of panicking: a reader that closes the pipe
/// early (`regserve models list --json | head -1`) ends the command quietly (see `main`).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

fn open_store(global: &GlobalArgs) -> Result<(Arc<Store>, ArtifactRoot)> {
    let local = global.local_registry().map_err(anyhow::Error::msg)?;
    let store = Store::open_uri(&local.db, &local.pool).with_context(|| {
        format!("opening the registry at {} (--data-dir / --backend-store-uri)", local.db.redacted())
    })?;
    let artifacts = ArtifactRoot::new(global.artifact_root())
        .with_context(|| format!("opening the artifact root under {} (--data-dir)", global.data_dir.display()))?;
    sweep_leftovers(&store, &artifacts);
    Ok((Arc::new(store), artifacts))
}

/// `regserve serve`: bind, start following the models, serve until SIGINT/SIGTERM.
pub fn serve(global: &GlobalArgs, args: ServeArgs) -> Result<()> {
    let token = server::auth::Token::load(args.http.auth_token_file.as_deref()).map_err(anyhow::Error::msg)?;
    let webhooks = match args.webhook_secret_file.as_deref() {
        Some(path) => Some(Arc::new(server::hooks::Verifier::from_file(path).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let (served, source) = served_models(global, &args)?;
    let default = args.default_index(&served).map_err(anyhow::Error::msg)?;
    init_runtime(global.ort_lib.as_deref()).context("--ort-lib / ORT_DYLIB_PATH")?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    // gRPC on threads of its own: tonic decodes and encodes whole messages (up to
    // --max-body-size) on the task that reads them, which on the HTTP runtime's workers holds up
    // health checks for as long. Measured with four clients sending 49 MiB typed-contents
    // messages in a loop: /ping p99 74 ms, max 125 ms on one runtime; 8 ms, max 11 ms with this
    // one (the same load over HTTP V2: 10 ms, max 14 ms).
    let grpc_runtime = match args.grpc_port {
        Some(_) => Some(
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("regserve-grpc")
                .enable_all()
                .build()
                .context("starting the gRPC runtime")?,
        ),
        None => None,
    };
    let grpc_handle = grpc_runtime.as_ref().map(|r| r.handle().clone());
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr())
            .await
            .with_context(|| format!("binding {} (--host/--port)", args.addr()))?;
        let local = listener.local_addr()?;
        let grpc_listener = match args.grpc_port {
            Some(port) => Some(
                tokio::net::TcpListener::bind((args.host, port))
                    .await
                    .with_context(|| format!("binding {}:{port} (--host/--grpc-port)", args.host))?,
            ),
            None => None,
        };
        let options = ManagerOptions {
            runtime: RuntimeOptions { load_timeout: global.load_timeout, ..args.runtime.options() },
            ort_lib: global.ort_lib.clone(),
            poll_interval: args.poll_interval,
            model_cache_bytes: args.model_cache_size,
            model_cache_versions: args.model_cache_versions,
            model_cache_threads: args.model_cache_threads,
            model_cache_idle: args.model_cache_idle,
            download_cache_bytes: args.cache_max_size,
            pinned: match args.pinned_versions {
                PinnedVersions::InService => PinnedPolicy::InService,
                PinnedVersions::Any => PinnedPolicy::Any,
            },
        };
        tracing::info!(registry = %source.describe(), models = ?served.iter().map(|m| format!("{} ({})", m.name, m.uri)).collect::<Vec<_>>(), sessions = options.runtime.sessions, "starting");
        let manager = ModelManager::start(served, default, source, options);
        if webhooks.is_some() {
            tracing::info!("registry webhooks accepted at POST /hooks/mlflow");
        }
        let state = ScoringState { manager: manager.clone(), max_body_size: args.max_body_size, webhooks };
        let grpc_service = server::grpc::Inference::new(state.clone(), token.clone());
        let app = server::scoring_server(state, token, args.http.allowed_hosts());
        // One signal stops both listeners; each drains within --shutdown-grace.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            server::shutdown_signal().await;
            manager.begin_drain();
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let limits = args.http.limits(args.max_body_size);
        // Bodies in memory: one budget for both listeners, so together they hold at most
        // --max-inflight-body-size.
        let budget = limits.body_budget();
        let grpc = match (grpc_listener, grpc_handle) {
            (Some(grpc_listener), Some(on)) => {
                if let Ok(addr) = grpc_listener.local_addr() {
                    tracing::info!("grpc listening on {addr}");
                }
                let limits = server::grpc::GrpcLimits::from_http(&limits);
                let (budget, stop) = (budget.clone(), until_stopped(stopped.clone()));
                // Registered again with the gRPC runtime's I/O driver.
                let std_listener = grpc_listener.into_std().context("moving the gRPC listener")?;
                Some(on.spawn(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    server::grpc::serve(listener, grpc_service, limits, budget, stop).await.map_err(anyhow::Error::from)
                }))
            }
            _ => None,
        };
        tracing::info!("listening on http://{local}");
        let http = server::http::serve_with_budget(listener, app, limits, budget, until_stopped(stopped));
        match grpc {
            None => http.await.context("serving HTTP")?,
            Some(grpc) => {
                let (http, grpc) = tokio::join!(http, grpc);
                http.context("serving HTTP")?;
                grpc.context("the gRPC server task failed")?.context("serving gRPC")?;
            }
        }
        tracing::info!("stopped");
        Ok::<(), anyhow::Error>(())
    })?;
    if let Some(grpc_runtime) = grpc_runtime {
        stop_runtime(grpc_runtime);
    }
    stop_runtime(runtime);
    Ok(())
}

/// What `serve` serves, and from where: the -m URIs on the registry, or the model in
/// --model-dir ([`crate::manager::local`]).
fn served_models(global: &GlobalArgs, args: &ServeArgs) -> Result<(Vec<ServedModel>, Arc<dyn ModelSource>)> {
    let registry = || -> Result<Arc<dyn ModelSource>> {
        let local = global.local_registry().map_err(anyhow::Error::msg)?;
        crate::manager::source_from_uri(global.registry_uri.as_deref(), &local)
            .context("choosing the registry (--registry-uri, MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_URI, --data-dir)")
    };
    let Some(dir) = args.model_dir.as_deref() else {
        return Ok((args.served().map_err(anyhow::Error::msg)?, registry()?));
    };
    let name =
        args.model_name.as_deref().map(crate::config::checked_model_name).transpose().map_err(anyhow::Error::msg)?;
    match PullRecord::read(dir).map_err(|e| anyhow::anyhow!("--model-dir: {e}"))? {
        None => {
            let name = name.ok_or_else(|| {
                anyhow::anyhow!("--model-dir {} needs --model-name: the files there name no model", dir.display())
            })?;
            // Fail now, not at the first load, when the directory holds no model.
            crate::manager::local::model_in_dir(dir).context("--model-dir")?;
            let source = DirectorySource::new(name.clone(), dir);
            let served = ServedModel { name, uri: source.uri() };
            Ok((vec![served], Arc::new(source)))
        }
        Some(record) => {
            let uri = record.served_uri().map_err(|e| anyhow::anyhow!("--model-dir: {e}"))?;
            let follow = registry_named(global);
            tracing::info!(uri = %uri, version = record.model_version.version, pulled_from = %record.registry, follow, "serving the version `regserve pull` put in --model-dir");
            let registry = if follow { Some(registry()?) } else { None };
            let served = ServedModel { name: name.unwrap_or_else(|| uri.name.clone()), uri };
            Ok((vec![served], Arc::new(PulledSource::new(record, dir, registry))))
        }
    }
}

/// Whether a registry was named (flag or variable) rather than left to the --data-dir default:
/// a pulled --model-dir follows its URI only on a registry someone chose.
fn registry_named(global: &GlobalArgs) -> bool {
    let set = |v: Option<String>| v.is_some_and(|v| !v.trim().is_empty());
    set(global.registry_uri.clone())
        || set(global.backend_store_uri.clone())
        || set(std::env::var(crate::registry::location::ENV_REGISTRY_URI).ok())
        || set(std::env::var(crate::registry::location::ENV_TRACKING_URI).ok())
}

/// Drop the async runtime without waiting on blocking work still running past shutdown (a
/// model load is told to stop, but building sessions cannot be interrupted): the grace
/// period is over, so the process exits.
fn stop_runtime(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}

/// `regserve server`: the MLflow-compatible registry server over the same store and artifact
/// root as the CLI. A missing ONNX Runtime is not fatal: versions then fail their test load
/// with the runtime's message.
pub fn server(global: &GlobalArgs, args: crate::config::ServerArgs) -> Result<()> {
    if global.registry_uri.is_some() {
        bail!("--registry-uri does not apply to `regserve server`, which serves the --data-dir store (its database: --backend-store-uri)");
    }
    let token = server::auth::Token::load(args.http.auth_token_file.as_deref()).map_err(anyhow::Error::msg)?;
    let (store, artifacts) = open_store(global)?;
    let store_uri = global.local_registry().map_err(anyhow::Error::msg)?.db.redacted();
    let default_root = args.default_artifact_root(artifacts.root());
    let destination = match global.artifacts_destination.as_deref().filter(|d| !d.trim().is_empty()) {
        None => crate::artifact::Destination::Local(artifacts.clone()),
        Some(uri) => {
            let Some(parsed) = crate::artifact::store::BucketUri::parse(uri)
                .map_err(|e| anyhow::anyhow!("--artifacts-destination: {e}"))?
            else {
                bail!("--artifacts-destination takes a bucket (s3://, gs://, wasbs://, abfss://), not '{uri}'; local artifacts live in --data-dir ({})", artifacts.root().display());
            };
            let env = |k: &str| std::env::var(k).ok();
            let bucket = crate::artifact::store::Bucket::open(&parsed, &env, DESTINATION_TIMEOUT)
                .map_err(|e| anyhow::anyhow!("--artifacts-destination: {e}"))?;
            tracing::info!(destination = %parsed.uri_of(&parsed.prefix), "the artifact proxy keeps files in a bucket");
            crate::artifact::Destination::Bucket(bucket)
        }
    };
    record_destination(&store, &destination)?;
    if let Err(e) = init_runtime(global.ort_lib.as_deref()) {
        tracing::warn!(error = %e, "ONNX Runtime is not available: new model versions will fail their test load");
    }
    let mut state =
        server::RegistryState::new(store, artifacts, global.ort_lib.clone()).with_artifacts(destination, &default_root);
    state.serve_artifacts = !args.no_serve_artifacts;
    let delivery = args.webhook_delivery().map_err(anyhow::Error::msg)?;
    tracing::info!(schemes = ?delivery.destinations.allowed_schemes, allow_private_ips = delivery.destinations.allow_private_ips, "webhook destinations");
    state.webhooks = crate::mlflow::webhooks::Sender::new(delivery).map_err(anyhow::Error::msg)?;
    match state.tracking.adopt_default_root() {
        Ok(true) => {
            tracing::info!(location = %format!("{}/0", default_root.trim_end_matches('/')), "the Default experiment's artifacts go under --default-artifact-root")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not move the Default experiment to --default-artifact-root"),
    }
    state.registrar.load_timeout = global.load_timeout;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr())
            .await
            .with_context(|| format!("binding {} (--host/--port)", args.addr()))?;
        let local = listener.local_addr()?;
        let pending = crate::registration::rest_create::resume_pending(&state.registrar).await?;
        if pending > 0 {
            tracing::info!(pending, "test-loading versions left pending by an earlier run");
        }
        tracing::info!(data_dir = %global.data_dir.display(), database = %store_uri, "starting the registry server");
        let policy = match token {
            Some(token) => Some(server::auth::Policy::new(
                token,
                args.auth_reads,
                server::auth::Sessions::new(args.ui_session_ttl).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        // Delivers the webhook outbox (this server's events and any other replica's) until shutdown.
        let _webhooks = crate::mlflow::webhooks::Worker::spawn(state.store.clone(), state.webhooks.clone());
        let app = server::registry_app(state, policy, args.http.allowed_hosts());
        tracing::info!("listening on http://{local}");
        let shutdown = async {
            server::shutdown_signal().await;
            // Test loads still running stop now; their versions stay pending for the next start.
            crate::runtime::cancel_loads();
        };
        server::serve(listener, app, args.http.limits(server::params::BODY_LIMIT), shutdown)
            .await
            .context("serving HTTP")
    })?;
    stop_runtime(runtime);
    Ok(())
}

/// Record in the registry where this server keeps the `mlflow-artifacts:/` files, so every
/// other process on the registry (the embedded CLI, `serve`, other replicas) reads them there:
/// the bucket URI, or `file://` + the local root. Two servers with different destinations on one
/// registry: the last one started wins, and says so loudly (the versions the other one wrote are
/// no longer readable through this one).
fn record_destination(store: &Store, destination: &crate::artifact::Destination) -> Result<()> {
    use crate::registry::settings::ARTIFACTS_DESTINATION;
    let value = match destination {
        crate::artifact::Destination::Local(root) => format!("file://{}", root.root().display()),
        crate::artifact::Destination::Bucket(bucket) => bucket.uri().uri_of(&bucket.uri().prefix),
    };
    let recorded = store.setting(ARTIFACTS_DESTINATION).context("reading the recorded artifacts destination")?;
    if let Some(previous) = recorded.filter(|p| *p != value) {
        tracing::warn!(
            previous = %previous,
            now = %value,
            "THE ARTIFACTS DESTINATION CHANGED: another `regserve server` on this registry kept mlflow-artifacts:/ files in {previous}; this one keeps them in {value} and records that, so the CLI and `serve` now read {value}, and versions stored in {previous} cannot be read through this server. Run every server of one registry with the same --artifacts-destination."
        );
    }
    store.set_setting(ARTIFACTS_DESTINATION, &value).context("recording the artifacts destination in the registry")?;
    Ok(())
}

/// The registry `models` and `predict` talk to: `--registry-uri`, else MLFLOW_REGISTRY_URI,
/// else MLFLOW_TRACKING_URI, else the `--data-dir` store.
fn open_client(global: &GlobalArgs) -> Result<RegistryClient> {
    let local = global.local_registry().map_err(anyhow::Error::msg)?;
    let client = RegistryClient::open(global.registry_uri.as_deref(), &local)
        .context("choosing the registry (--registry-uri, MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_URI, --data-dir)")?;
    if let RegistryClient::Embedded { store, artifacts, .. } = &client {
        sweep_leftovers(store, artifacts);
    }
    Ok(client)
}

/// Remove what an interrupted upload or registration left behind, once older than
/// [`LEFTOVER_AGE`](crate::registration::sweep::LEFTOVER_AGE): whenever the embedded store is
/// opened (`models`, `predict`, and `regserve server`'s start).
/// How long the artifact proxy waits for the bucket's answer (and between two chunks).
const DESTINATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn sweep_leftovers(store: &Store, artifacts: &ArtifactRoot) {
    use crate::registration::sweep;
    sweep::sweep_leftovers(store, artifacts, sweep::LEFTOVER_AGE);
}

/// `regserve predict`: score one payload with a registered model, print the answer.
pub fn predict(global: &GlobalArgs, args: PredictArgs) -> Result<()> {
    let client = open_client(global)?;
    let (version, path) =
        client.fetch(&args.model).with_context(|| format!("getting {} from {}", args.model, client.describe()))?;
    let mut body = Vec::new();
    if args.input.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(&args.input).with_context(|| format!("reading --input {}", args.input.display()))?;
    }
    let format = args.content_type.unwrap_or(match args.input.extension().and_then(|e| e.to_str()) {
        Some("csv") => InputFormat::Csv,
        _ => InputFormat::Json,
    });
    let request = match format {
        InputFormat::Json => payload::parse_json(&body)?,
        InputFormat::Csv => {
            payload::Request { payload: payload::Payload::Frame(payload::parse_csv(&body)?), params: None }
        }
    };
    let options = RuntimeOptions { load_timeout: global.load_timeout, ..RuntimeOptions::single() };
    let model = LoadedModel::load(&path, &options, global.ort_lib.as_deref())
        .with_context(|| format!("loading version {} of '{}'", version.version, version.name))?;
    let out = model.predict_blocking(&request.payload)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.write_all(b"\n")?;
    Ok(())
}

/// `regserve models ...`, against whichever registry [`open_client`] chose.
pub fn models(global: &GlobalArgs, cmd: ModelsCommand) -> Result<()> {
    let client = open_client(global)?;
    match cmd {
        ModelsCommand::Register { path, name, description, tags, stage, archive_existing, alias, out } => {
            let reg = Registration {
                name,
                description,
                tags: tags.into_iter().map(|(key, value)| Tag { key, value }).collect(),
                stage,
                archive_existing,
                alias,
                run_id: String::new(),
                load_timeout: Some(global.load_timeout),
            };
            let v = client
                .register(&path, &reg, global.ort_lib.as_deref())
                .with_context(|| format!("registering {} in {}", path.display(), client.describe()))?;
            if out.json {
                print_json(&v)?;
            } else {
                out!("Registered '{}' version {} ({}) from {}", v.name, v.version, v.current_stage, path.display());
                print_versions(std::slice::from_ref(&v))?;
            }
        }
        ModelsCommand::List { out } => {
            let models = client.list_models()?;
            if out.json {
                print_json(&models)?;
            } else {
                print_models(&models)?;
            }
        }
        ModelsCommand::Show { name, out } => {
            let (m, versions) = client.get_model_with_versions(&name)?;
            if out.json {
                print_json(&serde_json::json!({"registered_model": m, "model_versions": versions}))?;
            } else {
                out!("Name:         {}", m.name);
                out!("Created:      {}", format_utc_ms(m.creation_timestamp));
                out!("Last updated: {}", format_utc_ms(m.last_updated_timestamp));
                if !m.tags.is_empty() {
                    out!(
                        "Tags:         {}",
                        m.tags.iter().map(|t| format!("{}={}", t.key, t.value)).collect::<Vec<_>>().join(", ")
                    );
                }
                if !m.aliases.is_empty() {
                    out!(
                        "Aliases:      {}",
                        m.aliases
                            .iter()
                            .map(|a| format!("@{} → v{}", a.alias, a.version))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if !m.description.is_empty() {
                    out!("\n{}\n", m.description);
                }
                print_versions(&versions)?;
            }
        }
        ModelsCommand::Versions { name, out } => {
            let versions = client.list_versions(&name)?;
            if out.json {
                print_json(&versions)?;
            } else {
                print_versions(&versions)?;
            }
        }
        ModelsCommand::Transition { name, version, stage, archive_existing, out } => {
            let v = client.transition(&name, version, stage, archive_existing)?;
            if out.json {
                print_json(&v)?;
            } else {
                out!("'{}' version {} is now in {}", v.name, v.version, v.current_stage);
            }
        }
        ModelsCommand::Alias(AliasCommand::Set { name, alias, version }) => {
            client.set_alias(&name, &alias, version)?;
            out!("'{name}@{alias}' → version {version}");
        }
        ModelsCommand::Alias(AliasCommand::Delete { name, alias }) => {
            client.delete_alias(&name, &alias)?;
            out!("deleted alias '{name}@{alias}'");
        }
        ModelsCommand::Describe { name, description, version } => match version {
            Some(v) => {
                client.describe_version(&name, v, &description)?;
                out!("updated the description of '{name}' version {v}");
            }
            None => {
                client.describe_model(&name, &description)?;
                out!("updated the description of '{name}'");
            }
        },
        ModelsCommand::Rename { name, new_name } => {
            client.rename_model(&name, &new_name)?;
            out!("renamed '{name}' to '{new_name}'");
        }
        ModelsCommand::Tag { name, tag, version, delete } => match (delete, tag, version) {
            (Some(key), _, Some(v)) => client.delete_version_tag(&name, v, &key)?,
            (Some(key), _, None) => client.delete_model_tag(&name, &key)?,
            (None, Some((k, val)), Some(v)) => client.set_version_tag(&name, v, &k, &val)?,
            (None, Some((k, val)), None) => client.set_model_tag(&name, &k, &val)?,
            (None, None, _) => bail!("give a tag as key=value, or --delete KEY"),
        },
        ModelsCommand::Delete { name, version, yes } => {
            let what = match version {
                Some(v) => format!("version {v} of '{name}'"),
                None => format!("registered model '{name}' and all its versions"),
            };
            // Fail on a missing model/version before asking.
            match version {
                Some(v) => drop(client.get_version(&name, v)?),
                None => drop(client.get_model(&name)?),
            }
            if !yes && !confirm(&format!("Delete {what}? [y/N] "))? {
                bail!("not deleted (answer 'y', or pass --yes)");
            }
            match version {
                Some(v) => client.delete_version(&name, v)?,
                None => client.delete_model(&name)?,
            }
            out!("deleted {what}");
        }
    }
    Ok(())
}

fn confirm(prompt: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        // Read an answer from a pipe if one is there; no answer means no.
        eprint!("{prompt}");
    } else {
        write!(std::io::stdout(), "{prompt}")?;
        std::io::stdout().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> Result<()> {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out!("{}", s.join("  ").trim_end());
        Ok(())
    };
    line(headers.iter().map(|h| h.to_string()).collect())?;
    line(widths.iter().map(|w| "-".repeat(*w)).collect())?;
    for r in rows {
        line(r)?;
    }
    Ok(())
}

fn print_models(models: &[RegisteredModel]) -> Result<()> {
    if models.is_empty() {
        out!("No registered models.");
        return Ok(());
    }
    let rows = models
        .iter()
        .map(|m| {
            let mut latest: Vec<String> =
                m.latest_versions.iter().map(|v| format!("{}:v{}", v.current_stage, v.version)).collect();
            latest.sort();
            vec![
                m.name.clone(),
                latest.join(" "),
                m.aliases.iter().map(|a| format!("@{}=v{}", a.alias, a.version)).collect::<Vec<_>>().join(" "),
                format_utc_ms(m.last_updated_timestamp),
            ]
        })
        .collect();
    print_table(&["NAME", "LATEST VERSIONS", "ALIASES", "LAST UPDATED"], rows)
}

fn print_versions(versions: &[ModelVersion]) -> Result<()> {
    if versions.is_empty() {
        out!("No versions.");
        return Ok(());
    }
    let rows = versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.current_stage.to_string(),
                v.status.as_str().to_string(),
                v.aliases.iter().map(|a| format!("@{a}")).collect::<Vec<_>>().join(" "),
                format_utc_ms(v.creation_timestamp),
                v.source.clone(),
            ]
        })
        .collect();
    print_table(&["VERSION", "STAGE", "STATUS", "ALIASES", "CREATED", "SOURCE"], rows)
}
