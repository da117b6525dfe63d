//! A pool of ONNX Runtime sessions, each owned by its own worker thread. Requests arrive over a
//! bounded MPMC channel with a oneshot reply, so inference never runs on the async workers and
//! no lock is held around `Session::run`. A full queue is refused at once (→ 503); dropping the
//! pool closes the channel and the workers exit after the jobs already queued.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynMapValueType, DynValue, Tensor, ValueType};
use tokio::sync::oneshot;

use super::convert::{InputTensor, OutputData, OutputTensor, TensorData};
use super::env::RuntimeOptions;
use super::schema::TensorInfo;
use super::{RuntimeError, ScoringError};

type Reply = Result<Vec<OutputTensor>, ScoringError>;

struct Job {
    inputs: Vec<InputTensor>,
    reply: oneshot::Sender<Reply>,
}

/// Sessions of one model version. Cheap to share behind an `Arc`.
pub struct SessionPool {
    jobs: Sender<Job>,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub sessions: usize,
}

impl SessionPool {
    /// Build `options.sessions` sessions from the model file (errors surface here, on the
    /// caller's thread) and start one worker thread per session.
    pub fn new(
        env: &ort::environment::Environment,
        onnx: &Path,
        options: &RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let bytes = std::fs::read(onnx).map_err(|e| RuntimeError::Io {
            path: onnx.display().to_string(),
            source: e,
        })?;
        let n = options.sessions.max(1);
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            sessions.push(build_session(env, &bytes, options.intra_threads)?);
        }
        let inputs: Vec<TensorInfo> = sessions[0]
            .inputs()
            .iter()
            .map(TensorInfo::from_outlet)
            .collect();
        let outputs: Vec<TensorInfo> = sessions[0]
            .outputs()
            .iter()
            .map(TensorInfo::from_outlet)
            .collect();
        let (tx, rx) = bounded::<Job>(options.queue_capacity.max(1));
        for (i, session) in sessions.into_iter().enumerate() {
            let rx = rx.clone();
            let outputs = outputs.clone();
            std::thread::Builder::new()
                .name(format!("regserve-session-{i}"))
                .spawn(move || worker(session, rx, outputs))
                .map_err(|e| RuntimeError::Ort(format!("could not start a session thread: {e}")))?;
        }
        Ok(SessionPool {
            jobs: tx,
            inputs,
            outputs,
            sessions: n,
        })
    }

    fn submit(&self, inputs: Vec<InputTensor>) -> Result<oneshot::Receiver<Reply>, ScoringError> {
        let (reply, rx) = oneshot::channel();
        match self.jobs.try_send(Job { inputs, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(ScoringError::unavailable(
                "The model's request queue is full; retry shortly",
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(ScoringError::unavailable("The model is shutting down"))
            }
        }
    }

    /// Run one request on the next free session.
    pub async fn run(&self, inputs: Vec<InputTensor>) -> Reply {
        let rx = self.submit(inputs)?;
        rx.await.unwrap_or_else(|_| {
            Err(ScoringError::internal(
                "the session worker stopped before answering",
            ))
        })
    }

    /// Blocking variant, for the CLI and warm-up (not for async contexts).
    pub fn run_blocking(&self, inputs: Vec<InputTensor>) -> Reply {
        let rx = self.submit(inputs)?;
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(ScoringError::internal(
                "the session worker stopped before answering",
            ))
        })
    }

    /// Requests waiting for a session.
    pub fn queue_depth(&self) -> usize {
        self.jobs.len()
    }
}

fn build_session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    intra_threads: usize,
) -> Result<Session, RuntimeError> {
    let builder = Session::builder(env)?;
    let session = builder
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(ort::Error::from)?
        .with_intra_threads(intra_threads.max(1))
        .map_err(ort::Error::from)?
        .with_inter_threads(1)
        .map_err(ort::Error::from)?
        .commit_from_memory(bytes)?;
    Ok(session)
}

fn worker(mut session: Session, jobs: Receiver<Job>, outputs: Vec<TensorInfo>) {
    while let Ok(job) = jobs.recv() {
        if job.reply.is_closed() {
            continue; // the client went away while queued
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_once(&mut session, job.inputs, &outputs)
        }))
        .unwrap_or_else(|_| Err(ScoringError::internal("model execution panicked")));
        let _ = job.reply.send(result);
    }
}

fn to_value(t: InputTensor) -> Result<SessionInputValue<'static>, ort::Error> {
    let shape = t.shape;
    Ok(match t.data {
        TensorData::F32(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::F64(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::I8(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::I16(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::I32(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::I64(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::U8(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::U16(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::U32(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::U64(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::Bool(v) => Tensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::String(v) => Tensor::from_string_array((shape, v.as_slice()))?
            .into_dyn()
            .into(),
    })
}

fn run_once(session: &mut Session, inputs: Vec<InputTensor>, infos: &[TensorInfo]) -> Reply {
    let mut values: Vec<(String, SessionInputValue<'static>)> = Vec::with_capacity(inputs.len());
    for t in inputs {
        let name = t.name.clone();
        let v = to_value(t).map_err(|e| {
            ScoringError::bad_request(format!("Could not build input '{name}': {e}"))
        })?;
        values.push((name, v));
    }
    let outputs = session.run(values).map_err(|e| {
        ScoringError::bad_request(format!("The model could not run on this input: {e}"))
    })?;
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        let v = outputs.get(&info.name).ok_or_else(|| {
            ScoringError::internal(format!(
                "output '{}' missing from the session's results",
                info.name
            ))
        })?;
        out.push(
            extract(&info.name, v).map_err(|e| {
                ScoringError::internal(format!("reading output '{}': {e}", info.name))
            })?,
        );
    }
    Ok(out)
}

/// Copy one output out of the session (outputs borrow it).
fn extract(name: &str, v: &DynValue) -> Result<OutputTensor, ort::Error> {
    use ort::value::TensorElementType as T;
    match v.dtype() {
        ValueType::Tensor { ty, .. } => {
            macro_rules! prim {
                ($t:ty, $variant:ident) => {{
                    let (shape, data) = v.try_extract_tensor::<$t>()?;
                    (
                        shape.iter().map(|d| *d as usize).collect::<Vec<_>>(),
                        TensorData::$variant(data.to_vec()),
                    )
                }};
            }
            let (shape, data) = match ty {
                T::Float32 => prim!(f32, F32),
                T::Float64 => prim!(f64, F64),
                T::Int8 => prim!(i8, I8),
                T::Int16 => prim!(i16, I16),
                T::Int32 => prim!(i32, I32),
                T::Int64 => prim!(i64, I64),
                T::Uint8 => prim!(u8, U8),
                T::Uint16 => prim!(u16, U16),
                T::Uint32 => prim!(u32, U32),
                T::Uint64 => prim!(u64, U64),
                T::Bool => prim!(bool, Bool),
                T::String => {
                    let (shape, strings) = v.try_extract_strings()?;
                    (
                        shape.iter().map(|d| *d as usize).collect(),
                        TensorData::String(strings),
                    )
                }
                other => {
                    return Err(ort::Error::new(format!(
                        "output element type {other:?} is not supported"
                    )));
                }
            };
            Ok(OutputTensor {
                name: name.to_string(),
                shape,
                data: OutputData::Tensor(data),
            })
        }
        ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
            let maps = v.try_extract_sequence::<DynMapValueType>()?;
            let mut rows = Vec::with_capacity(maps.len());
            for m in &maps {
                let ValueType::Map { key, value } = m.dtype() else {
                    return Err(ort::Error::new("sequence item is not a map"));
                };
                let row: Vec<(String, f64)> = match (key, value) {
                    (T::Int64, T::Float32) => m
                        .try_extract_key_values::<i64, f32>()?
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v as f64))
                        .collect(),
                    (T::String, T::Float32) => m
                        .try_extract_key_values::<String, f32>()?
                        .into_iter()
                        .map(|(k, v)| (k, v as f64))
                        .collect(),
                    (T::Int64, T::Float64) => m
                        .try_extract_key_values::<i64, f64>()?
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    (T::String, T::Float64) => m.try_extract_key_values::<String, f64>()?,
                    (k, v) => {
                        return Err(ort::Error::new(format!(
                            "map<{k:?}, {v:?}> outputs are not supported"
                        )))
                    }
                };
                rows.push(row);
            }
            Ok(OutputTensor {
                name: name.to_string(),
                shape: vec![rows.len()],
                data: OutputData::Maps(rows),
            })
        }
        other => Err(ort::Error::new(format!(
            "output type {other:?} is not supported"
        ))),
    }
}
