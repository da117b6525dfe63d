//! A loaded model version: its sessions, its schema, and the scoring entry points.

use std::path::Path;
use std::time::Instant;

use super::convert::{write_predictions, OutputTensor, PredictionChunks, Prepared};
use super::decode::prepare_body;
use super::env::{init_runtime, RuntimeOptions};
use super::mlmodel::ModelFiles;
use super::payload::Format;
use super::pool::SessionPool;
use super::schema::ModelSchema;
use super::{RuntimeError, ScoringError};

/// A model ready to score. Share it behind an `Arc`; dropping the last handle stops its
/// session threads.
pub struct LoadedModel {
    pub schema: ModelSchema,
    pub files: ModelFiles,
    pool: SessionPool,
    /// How long loading and warm-up took.
    pub load_time: std::time::Duration,
}

impl LoadedModel {
    /// Load the model at `path` (a `.onnx` file or a model directory), build its sessions and
    /// warm it up on its serving input example, if it has one. Blocking: call it off the async
    /// workers.
    pub fn load(path: &Path, options: &RuntimeOptions, ort_lib: Option<&Path>) -> Result<LoadedModel, RuntimeError> {
        Self::load_observed(path, options, ort_lib, None)
    }

    /// [`LoadedModel::load`], recording rows per session run into `batch_sizes`.
    pub fn load_observed(
        path: &Path,
        options: &RuntimeOptions,
        ort_lib: Option<&Path>,
        batch_sizes: Option<prometheus_client::metrics::histogram::Histogram>,
    ) -> Result<LoadedModel, RuntimeError> {
        let started = Instant::now();
        let env = init_runtime(ort_lib)?;
        let files = ModelFiles::locate(path)?;
        let pool = SessionPool::new(env, &files.onnx, options, batch_sizes)?;
        let schema = ModelSchema::new(pool.inputs.clone(), pool.outputs.clone(), files.signature.clone())
            .map_err(|reason| RuntimeError::InvalidModel { path: path.display().to_string(), reason })?;
        let model = LoadedModel { schema, files, pool, load_time: started.elapsed() };
        model.warm_up()?;
        Ok(LoadedModel { load_time: started.elapsed(), ..model })
    }

    /// Score the model's own serving input example once, so that the first real request does
    /// not pay for lazy initialization, and a model that cannot score its example never serves.
    fn warm_up(&self) -> Result<(), RuntimeError> {
        let Some(example) = &self.files.serving_example else {
            return Ok(());
        };
        let invalid = |reason: String| RuntimeError::InvalidModel { path: example.display().to_string(), reason };
        let body =
            std::fs::read(example).map_err(|e| RuntimeError::Io { path: example.display().to_string(), source: e })?;
        // The example goes through the same parser as a request to `/invocations`.
        let prepared = prepare_body(&self.schema, Format::Json, &body)
            .map_err(|e| invalid(format!("the serving input example does not fit the model: {e}")))?;
        self.predict_prepared_blocking(prepared)
            .map_err(|e| invalid(format!("the model failed to score its own serving input example: {e}")))?;
        Ok(())
    }

    /// Parse a scoring body into this model's inputs (CPU-bound, linear in the body: large
    /// bodies belong off the async workers).
    pub fn prepare(&self, format: Format, body: &[u8]) -> Result<Prepared, ScoringError> {
        prepare_body(&self.schema, format, body)
    }

    /// Run; the answer is rendered as its chunks are taken (see [`PredictionChunks`]).
    pub async fn predict_chunks(&self, prepared: Prepared) -> Result<PredictionChunks, ScoringError> {
        let Prepared { inputs, style, rows } = prepared;
        let outputs = self.pool.run(inputs).await?;
        Ok(PredictionChunks::new(outputs, style, rows))
    }

    pub fn predict_prepared_blocking(&self, prepared: Prepared) -> Result<Vec<u8>, ScoringError> {
        let Prepared { inputs, style, rows } = prepared;
        let outputs = self.pool.run_blocking(inputs)?;
        Ok(render(&outputs, style, rows))
    }

    /// Run already-built input tensors (the Open Inference Protocol path).
    pub async fn run(&self, inputs: Vec<super::convert::InputTensor>) -> Result<Vec<OutputTensor>, ScoringError> {
        self.pool.run(inputs).await
    }

    pub fn sessions(&self) -> usize {
        self.pool.sessions
    }

    pub fn queue_depth(&self) -> usize {
        self.pool.queue_depth()
    }
}

fn render(outputs: &[OutputTensor], style: super::convert::Style, rows: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + rows * 48);
    write_predictions(&mut buf, outputs, style, rows);
    buf
}
