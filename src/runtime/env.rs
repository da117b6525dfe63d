//! Finding and loading the ONNX Runtime shared library (`load-dynamic`), once per process.
//!
//! Search order: `--ort-lib` / `ORT_DYLIB_PATH`; then `libonnxruntime.so*` beside the
//! executable (and in its `lib/` or `../lib/`); then `.ort/lib/` in the current directory or any
//! ancestor of it or of the executable (where `scripts/fetch-onnxruntime` puts it); then the
//! system library folders. A missing library is an error that names the fix — never a panic.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::RuntimeError;

/// How sessions are built.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Sessions per loaded model (each runs one request at a time on its own thread).
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Requests that may wait for a session before new ones get 503.
    pub queue_capacity: usize,
    /// Dynamic batching: merge queued requests into one run of up to this many rows (1 = off).
    pub max_batch_size: usize,
    /// Dynamic batching: how long a worker waits for more requests to fill a batch
    /// (zero = take only what is already queued when a session frees up).
    pub max_batch_delay: std::time::Duration,
    /// Small runs of a model measured under this may run on the async worker itself (see
    /// [`super::pool`]); zero: never.
    pub inline_max_run: std::time::Duration,
    /// Deadline of a load: building the sessions and the warm-up run on the serving input
    /// example. A warm-up still running then is terminated (ONNX Runtime's run options) and
    /// the load fails with [`super::RuntimeError::Timeout`].
    pub load_timeout: std::time::Duration,
}

/// Default of `--inline-max-run`.
pub const DEFAULT_INLINE_MAX_RUN: std::time::Duration = std::time::Duration::from_micros(100);

/// Default of `--load-timeout`.
pub const DEFAULT_LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl RuntimeOptions {
    /// One session, no batching: for test loads and one-off predictions.
    pub fn single() -> Self {
        RuntimeOptions { sessions: 1, queue_capacity: 4, max_batch_size: 1, ..Default::default() }
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            sessions: default_sessions(),
            intra_threads: 1,
            queue_capacity: 1024,
            max_batch_size: 64,
            max_batch_delay: std::time::Duration::ZERO,
            inline_max_run: DEFAULT_INLINE_MAX_RUN,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
        }
    }
}

pub fn default_sessions() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

const LIB_NAMES: &[&str] = &["libonnxruntime.so", "libonnxruntime.so.1.32.0", "libonnxruntime.dylib"];

/// Where the library may be, in search order.
pub fn candidate_paths(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
        return out;
    }
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        for sub in [dir.clone(), dir.join("lib"), dir.join("../lib")] {
            out.extend(LIB_NAMES.iter().map(|n| sub.join(n)));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(dir) = &exe_dir {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    for root in roots {
        out.extend(LIB_NAMES.iter().map(|n| root.join(".ort/lib").join(n)));
    }
    for sys in ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"] {
        out.extend(LIB_NAMES.iter().map(|n| Path::new(sys).join(n)));
    }
    out
}

/// Load ONNX Runtime (once) and create the process-wide environment.
pub fn init_runtime(explicit: Option<&Path>) -> Result<&'static ort::environment::Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let explicit = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from));
    let candidates = candidate_paths(explicit.as_deref());
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let hint = match &explicit {
            Some(p) => format!(
                "ONNX Runtime library not found at {} (from --ort-lib or ORT_DYLIB_PATH). Point it at libonnxruntime.so, or unset it and run scripts/fetch-onnxruntime",
                p.display()
            ),
            None => "ONNX Runtime library (libonnxruntime.so) not found beside the executable, in .ort/lib of the \
                     current directory or its parents, or in the system library folders. Run scripts/fetch-onnxruntime \
                     (it unpacks onnxruntime 1.32.0 from PyPI into .ort/lib), or set ORT_DYLIB_PATH to the library's path"
                .to_string(),
        };
        return Err(RuntimeError::LibraryNotFound(hint));
    };
    let builder = ort::init_from(path).map_err(|e| RuntimeError::LibraryLoad(e.to_string()))?;
    let env = builder
        .with_name("regserve")
        .build()
        .map_err(|e| RuntimeError::LibraryLoad(format!("{} ({})", e, path.display())))?;
    tracing::info!(library = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env))
}
