//! A loaded model version: its sessions, its schema, and the scoring entry points.
//!
//! A load has a deadline (`RuntimeOptions::load_timeout`): a warm-up run still going then is
//! terminated and the load fails with [`RuntimeError::Timeout`]. [`cancel_loads`] stops every
//! load in the process (shutdown).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::convert::{prepare, write_predictions, OutputTensor, Prepared};
use super::convert::{InputTensor, OutputData, PredictionChunks};
use super::decode::prepare_body;
use super::env::{init_runtime, RuntimeOptions};
use super::mlmodel::ModelFiles;
use super::payload::Format;
use super::payload::{self, Payload};
use super::pool::{Observers, SessionPool, Stopped};
use super::schema::ModelSchema;
use super::{RuntimeError, ScoringError};

/// Set once the process shuts down: loads running stop, new ones fail at once.
static CANCEL: AtomicBool = AtomicBool::new(false);

/// Stop every model load in this process, now and from now on (their warm-up runs are
/// terminated within a few milliseconds): called when shutdown begins, so that no load holds
/// the process past its grace period.
pub fn cancel_loads() {
    CANCEL.store(true, Ordering::SeqCst);
}

fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}

/// A model ready to score. Share it behind an `Arc`; dropping the last handle stops its
/// session threads.
pub struct LoadedModel {
    pub schema: ModelSchema,
    pub files: ModelFiles,
    pool: SessionPool,
    /// How long loading and warm-up took.
    pub load_time: std::time::Duration,
    /// Size of the `.onnx` file (the model cache weighs versions by it).
    pub file_bytes: u64,
}

impl LoadedModel {
    /// Load the model at `path` (a `.onnx` file or a model directory), build its sessions and
    /// warm it up on its serving input example, if it has one. Blocking: call it off the async
    /// workers.
    pub fn load(path: &Path, options: &RuntimeOptions, ort_lib: Option<&Path>) -> Result<LoadedModel, RuntimeError> {
        Self::load_observed(path, options, ort_lib, Observers::default())
    }

    /// [`LoadedModel::load`], its pool recording into `observers` (batch sizes, queue wait,
    /// the model's load).
    pub fn load_observed(
        path: &Path,
        options: &RuntimeOptions,
        ort_lib: Option<&Path>,
        observers: Observers,
    ) -> Result<LoadedModel, RuntimeError> {
        let started = Instant::now();
        let deadline = started + options.load_timeout;
        if cancelled() {
            return Err(RuntimeError::Cancelled);
        }
        let env = init_runtime(ort_lib)?;
        let files = ModelFiles::locate(path)?;
        let file_bytes = std::fs::metadata(&files.onnx).map(|m| m.len()).unwrap_or(0);
        let pool = SessionPool::new(env, &files.onnx, options, observers)?;
        let schema = ModelSchema::new(pool.inputs.clone(), pool.outputs.clone(), files.signature.clone())
            .map_err(|reason| RuntimeError::InvalidModel { path: path.display().to_string(), reason })?;
        let model = LoadedModel { schema, files, pool, load_time: started.elapsed(), file_bytes };
        // Building sessions cannot be interrupted; past the deadline, do not start the warm-up.
        if cancelled() {
            return Err(RuntimeError::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Timeout(options.load_timeout));
        }
        model.warm_up(deadline).map_err(|e| match e {
            WarmUp::Failed(e) => e,
            WarmUp::Stopped(Stopped::Deadline) => RuntimeError::Timeout(options.load_timeout),
            WarmUp::Stopped(Stopped::Cancelled) => RuntimeError::Cancelled,
        })?;
        Ok(LoadedModel { load_time: started.elapsed(), ..model })
    }

    /// Score the model's own serving input example once, so that the first real request does
    /// not pay for lazy initialization, and a model that cannot score its example never serves.
    /// A run still going at `deadline` (or at shutdown) is terminated.
    fn warm_up(&self, deadline: Instant) -> Result<(), WarmUp> {
        let Some(example) = &self.files.serving_example else {
            return Ok(());
        };
        let invalid = |reason: String| RuntimeError::InvalidModel { path: example.display().to_string(), reason };
        let body =
            std::fs::read(example).map_err(|e| RuntimeError::Io { path: example.display().to_string(), source: e })?;
        let request = payload::parse_json(&body)
            .map_err(|e| invalid(format!("the serving input example is not a valid payload: {e}")))?;
        let scoring_failed =
            |e: ScoringError| invalid(format!("the model failed to score its own serving input example: {e}"));
        let Prepared { inputs, .. } = prepare(&self.schema, &request.payload).map_err(scoring_failed)?;
        self.pool.run_blocking_until(inputs, deadline, cancelled).map_err(WarmUp::Stopped)?.map_err(scoring_failed)?;
        Ok(())
    }

    /// Session threads this version holds (worker threads × intra-op threads).
    pub fn threads(&self) -> usize {
        self.pool.threads
    }

    /// Convert, run and shape: the whole scoring path for one parsed payload.
    pub async fn predict(&self, payload: &Payload) -> Result<Vec<u8>, ScoringError> {
        let prepared = prepare(&self.schema, payload)?;
        let (style, rows) = (prepared.style, prepared.rows);
        let outputs = self.pool.run(prepared.inputs).await?;
        Ok(render(&outputs, style, rows))
    }

    pub fn predict_blocking(&self, payload: &Payload) -> Result<Vec<u8>, ScoringError> {
        let Prepared { inputs, style, rows } = prepare(&self.schema, payload)?;
        let outputs = self.pool.run_blocking(inputs)?;
        Ok(render(&outputs, style, rows))
    }

    /// Parse a scoring body into this model's inputs (CPU-bound, linear in the body: large
    /// bodies belong off the async workers).
    pub fn prepare(&self, format: Format, body: &[u8]) -> Result<Prepared, ScoringError> {
        prepare_body(&self.schema, format, body)
    }

    /// Run; the answer is rendered as its chunks are taken (see [`PredictionChunks`]).
    pub async fn predict_chunks(&self, prepared: Prepared) -> Result<PredictionChunks, ScoringError> {
        let Prepared { inputs, style, rows } = prepared;
        let outputs = self.run(inputs).await?;
        Ok(PredictionChunks::new(outputs, style, rows))
    }

    /// Run already-built input tensors. More than [`RUN_ROWS`] rows run in slices of that many,
    /// so ONNX Runtime's intermediate tensors (for mlp, 512 bytes a row in its hidden layer alone)
    /// stay bounded whatever the request; the outputs are joined back. A model whose outputs
    /// are not one per row runs the whole request at once, as the pool's batching assumes too.
    pub async fn run(&self, inputs: Vec<InputTensor>) -> Result<Vec<OutputTensor>, ScoringError> {
        let rows = inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(0);
        let per_row = rows > 0 && inputs.iter().all(|t| t.shape.first() == Some(&rows));
        let rows = rows.max(0) as usize;
        if !per_row || rows <= RUN_ROWS {
            return self.pool.run(inputs).await;
        }
        let mut joined: Vec<OutputTensor> = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = RUN_ROWS.min(rows - start);
            let part = inputs.iter().map(|t| slice_rows(t, start, n, rows)).collect();
            let out = self.pool.run(part).await?;
            if out.iter().any(|o| o.shape.first() != Some(&n)) {
                return self.pool.run(inputs).await;
            }
            if joined.is_empty() {
                joined = out;
                for o in &mut joined {
                    // Room for every row at once: no regrowth (and copy) as slices arrive.
                    match &mut o.data {
                        OutputData::Tensor(t) => t.reserve((t.len() / n) * (rows - n)),
                        OutputData::Maps(m) => m.reserve(rows - n),
                    }
                }
            } else {
                for (acc, o) in joined.iter_mut().zip(out) {
                    let joined_ok = match (&mut acc.data, o.data) {
                        (OutputData::Tensor(a), OutputData::Tensor(b)) => a.append(&b),
                        (OutputData::Maps(a), OutputData::Maps(b)) => {
                            a.extend(b);
                            true
                        }
                        _ => false,
                    };
                    if !joined_ok {
                        return Err(ScoringError::internal(format!("output '{}' changed type between runs", acc.name)));
                    }
                    acc.shape[0] += n;
                }
            }
            start += n;
        }
        Ok(joined)
    }

    pub fn sessions(&self) -> usize {
        self.pool.sessions
    }

    pub fn queue_depth(&self) -> usize {
        self.pool.queue_depth()
    }
}

/// Why a warm-up did not succeed.
enum WarmUp {
    Failed(RuntimeError),
    Stopped(Stopped),
}

impl From<RuntimeError> for WarmUp {
    fn from(e: RuntimeError) -> Self {
        WarmUp::Failed(e)
    }
}

fn render(outputs: &[OutputTensor], style: super::convert::Style, rows: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + rows * 48);
    write_predictions(&mut buf, outputs, style, rows);
    buf
}

/// Rows per session run (see [`LoadedModel::run`]).
pub const RUN_ROWS: usize = 2048;

/// Rows `start..start+n` of an input whose first dimension is `rows`.
fn slice_rows(t: &InputTensor, start: usize, n: usize, rows: usize) -> InputTensor {
    let per_row = t.data.len() / rows.max(1);
    let mut shape = t.shape.clone();
    shape[0] = n as i64;
    InputTensor { name: t.name.clone(), shape, data: t.data.slice(start * per_row, (start + n) * per_row) }
}
