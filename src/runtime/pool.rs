//! A pool of ONNX Runtime sessions ("seats") shared by worker threads and, for fast models, by
//! the async workers themselves. Requests arrive over a bounded MPMC channel with a oneshot
//! reply; no lock is held around `Session::run`: a run takes a seat out of a channel of idle
//! seats and puts it back. A full queue is refused at once (→ 503); dropping the pool closes the
//! channel and the workers exit after the jobs already queued.
//!
//! Inline runs: a request of a few rows, for a model whose small runs measure under
//! `inline_max_run`, runs on the async worker that parsed it when nothing is queued and a seat
//! is idle — no hand-off to a session thread and back (two thread wake-ups that cost more than a
//! small model's run). At most one async worker fewer than the runtime has runs inline at a time
//! (process-wide), so one always stays free for I/O and health checks whatever the model does;
//! a run that turns out slow raises the model's measured cost and sends it back to the threads.
//!
//! Dynamic batching: a worker that takes a request also takes the compatible requests queued
//! behind it (same inputs, types and per-row shapes), up to `max_batch_size` rows, waiting at
//! most `max_batch_delay` for more; it runs them as one batch and splits the outputs back by
//! rows. If the batched run fails, or an output does not have one entry per row, each request
//! is run on its own, so one bad request never fails its neighbours.
//!
//! Every request in the pool, queued or running, holds a [`LoadGuard`] of the model's
//! [`Load`] (two atomic operations, no lock): `regserve_saturation` is made from it. The time
//! from entering the queue to the start of its run goes to `regserve_queue_wait_seconds`.
//!
//! Each seat runs with its own ONNX Runtime `RunOptions`, which the pool keeps too: a run
//! that has to stop (a warm-up past its deadline, shutdown) is terminated from outside with
//! [`SessionPool::terminate`], even inside a long `Loop`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynMapValueType, DynValue, Tensor, ValueType};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use super::convert::{InputTensor, OutputData, OutputTensor, TensorData};
use super::env::RuntimeOptions;
use super::schema::TensorInfo;
use super::{RuntimeError, ScoringError};
use crate::saturation::{Load, LoadGuard};

type Reply = Result<Vec<OutputTensor>, ScoringError>;

struct Job {
    inputs: Vec<InputTensor>,
    /// Rows, when every input has the same first dimension (else not batchable).
    rows: Option<usize>,
    reply: oneshot::Sender<Reply>,
    /// When it entered the queue.
    queued: Instant,
    /// Counts it in the model's load until the job is dropped (answered or given up).
    _load: Option<LoadGuard>,
}

impl Job {
    /// Can `other` run in one batch with `self`?
    fn compatible(&self, other: &Job) -> bool {
        other.rows.is_some()
            && self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
                a.name == b.name && a.data.dtype() == b.data.dtype() && a.shape.get(1..) == b.shape.get(1..)
            })
    }
}

/// What each worker needs besides its session.
struct WorkerConfig {
    outputs: Vec<TensorInfo>,
    max_batch_size: usize,
    max_batch_delay: Duration,
    /// Cleared for good when a batched run shows the model cannot be batched.
    batchable: Arc<AtomicBool>,
    batch_sizes: Option<Histogram>,
    queue_wait: Option<Histogram>,
    seats: Arc<Seats>,
}

/// A session and the run options its runs use (the pool keeps those too, to terminate runs).
struct Seat {
    session: Session,
    run_options: Arc<RunOptions>,
}

/// The pool's idle seats, and what decides whether a request may run inline.
struct Seats {
    idle: Sender<Seat>,
    take: Receiver<Seat>,
    /// Workers holding a job and waiting for a seat: inline runs hold back while any do, so a
    /// stream of inline runs never starves the queue.
    waiting: AtomicUsize,
    /// Moving average of the model's runs of at most [`INLINE_MAX_ROWS`] rows, in ns
    /// (`u64::MAX` until one has been measured).
    small_run_ns: AtomicU64,
    /// Longest small run that may go inline (zero: never).
    inline_max_run: Duration,
}

/// Requests of more rows than this always go to the session threads.
pub const INLINE_MAX_ROWS: usize = 16;

/// Requests of more input elements than this (all inputs together) always go to the session
/// threads: a run's cost grows with its inputs, not only with its rows.
pub const INLINE_MAX_ELEMENTS: usize = 16 << 10;

/// Inline runs in progress in this process (see [`inline_limit`]).
static INLINE_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// At most one async worker fewer than the current runtime has runs a model at a time (none on
/// a single-worker runtime; none off a runtime).
fn inline_limit() -> usize {
    tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_workers().saturating_sub(1))
}

impl Seats {
    /// A worker's seat: blocks until one is idle.
    fn take_blocking(&self) -> Seat {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let seat = self.take.recv().expect("the pool holds both ends of its seat channel; this is a bug");
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        seat
    }

    fn put(&self, seat: Seat) {
        // The channel holds every seat, so there is always room.
        let _ = self.idle.try_send(seat);
    }

    /// Record a run of `rows` rows that took `took`.
    fn measured(&self, rows: usize, took: Duration) {
        if rows > INLINE_MAX_ROWS {
            return;
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.small_run_ns.load(Ordering::Relaxed);
        // A slow run counts in full at once (back to the threads); fast ones pull the average
        // down an eighth at a time.
        let new = if old == u64::MAX || ns >= old { ns } else { old - (old - ns) / 8 };
        self.small_run_ns.store(new, Ordering::Relaxed);
    }

    /// Is a request of `rows` rows small and the model fast enough to run inline, with nothing
    /// queued and no worker waiting for a seat?
    fn eligible(&self, rows: Option<usize>, elements: usize, queue_empty: bool) -> bool {
        matches!(rows, Some(r) if r <= INLINE_MAX_ROWS)
            && elements <= INLINE_MAX_ELEMENTS
            && queue_empty
            && !self.inline_max_run.is_zero()
            && self.small_run_ns.load(Ordering::Relaxed)
                <= u64::try_from(self.inline_max_run.as_nanos()).unwrap_or(u64::MAX)
            && self.waiting.load(Ordering::SeqCst) == 0
    }

    /// May a request of `rows` rows and `elements` input elements run inline now? If so, its
    /// seat.
    fn try_inline(&self, rows: Option<usize>, elements: usize, queue_empty: bool) -> Option<InlineSeat<'_>> {
        if !self.eligible(rows, elements, queue_empty) {
            return None;
        }
        let limit = inline_limit();
        INLINE_RUNNING.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).ok()?;
        match self.take.try_recv() {
            Ok(seat) => {
                watchdog::inline_run_starts();
                Some(InlineSeat { seats: self, seat: Some(seat) })
            }
            Err(_) => {
                INLINE_RUNNING.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }
}

/// An inline run blocks its async worker, and tokio does not know: if that worker had just taken
/// the only task there was off the I/O driver, the other workers stay asleep on their condition
/// variable, nobody polls the driver, and the whole runtime is deaf (seen: a run that never
/// ended stalled `/ping` and every new connection). A watchdog thread looks every
/// [`watchdog::TICK`] while inline runs happen: when one has lasted a whole tick, it spawns an
/// empty task on each runtime that runs models inline, which wakes an idle worker; that worker
/// then parks on the driver and serves I/O while the run goes on. Idle for a while, the
/// watchdog parks until the next inline run.
mod watchdog {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use super::INLINE_RUNNING;

    pub const TICK: Duration = Duration::from_millis(1);
    /// Ticks without an inline run before the watchdog parks.
    const IDLE_TICKS: u32 = 200;

    static STARTS: AtomicU64 = AtomicU64::new(0);
    static PARKED: AtomicBool = AtomicBool::new(false);
    static THREAD: OnceLock<Option<std::thread::Thread>> = OnceLock::new();
    /// The runtimes whose workers ran a model inline (a handful: one per runtime's worker).
    static RUNTIMES: Mutex<Vec<tokio::runtime::Handle>> = Mutex::new(Vec::new());

    thread_local! {
        static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Called by each inline run as it starts (on its async worker).
    pub fn inline_run_starts() {
        if !REGISTERED.with(|r| r.replace(true)) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let mut runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
                if runtimes.len() < 64 {
                    runtimes.push(handle);
                }
            }
        }
        STARTS.fetch_add(1, Ordering::Relaxed);
        let thread = THREAD.get_or_init(|| {
            std::thread::Builder::new()
                .name("regserve-inline-watchdog".into())
                .spawn(watch)
                .map(|h| h.thread().clone())
                .map_err(|e| tracing::warn!(error = %e, "could not start the inline-run watchdog"))
                .ok()
        });
        if PARKED.load(Ordering::Acquire) {
            if let Some(t) = thread {
                t.unpark();
            }
        }
    }

    fn watch() {
        let (mut last_starts, mut last_running, mut woken_at, mut idle) = (0u64, 0usize, u64::MAX, 0u32);
        loop {
            std::thread::sleep(TICK);
            let (starts, running) = (STARTS.load(Ordering::Relaxed), INLINE_RUNNING.load(Ordering::Acquire));
            if running == 0 {
                idle += 1;
                if idle >= IDLE_TICKS {
                    PARKED.store(true, Ordering::Release);
                    if INLINE_RUNNING.load(Ordering::Acquire) == 0 {
                        std::thread::park();
                    }
                    PARKED.store(false, Ordering::Release);
                    idle = 0;
                }
            } else {
                idle = 0;
                // Running at both looks with no run started between: one has lasted a tick.
                if last_running > 0 && starts == last_starts && woken_at != starts {
                    woken_at = starts;
                    let runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for rt in runtimes {
                        rt.spawn(async {});
                    }
                }
            }
            (last_starts, last_running) = (starts, running);
        }
    }
}

/// A seat taken for an inline run; gives it back, and the process's inline slot, when dropped.
struct InlineSeat<'a> {
    seats: &'a Seats,
    seat: Option<Seat>,
}

impl Drop for InlineSeat<'_> {
    fn drop(&mut self) {
        if let Some(seat) = self.seat.take() {
            self.seats.put(seat);
        }
        INLINE_RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sessions of one model version. Cheap to share behind an `Arc`.
pub struct SessionPool {
    jobs: Sender<Job>,
    seats: Arc<Seats>,
    batch_sizes: Option<Histogram>,
    queue_wait: Option<Histogram>,
    inline_runs: Option<Counter>,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub sessions: usize,
    /// Threads the pool's sessions run on: one worker each, times their intra-op threads.
    pub threads: usize,
    /// One per worker (the other end is in its `WorkerConfig`).
    run_options: Vec<Arc<RunOptions>>,
    load: Option<Arc<Load>>,
}

/// What a pool records into; all optional (the CLI and test loads record nothing).
#[derive(Clone, Default)]
pub struct Observers {
    /// Rows per session run (`regserve_batch_size`).
    pub batch_sizes: Option<Histogram>,
    /// From entering the queue to the start of the run (`regserve_queue_wait_seconds`).
    pub queue_wait: Option<Histogram>,
    /// Requests in the pool, queued or running (`regserve_saturation`).
    pub load: Option<Arc<Load>>,
    /// Requests run inline (`regserve_inline_runs`).
    pub inline_runs: Option<Counter>,
}

/// Why [`SessionPool::run_blocking_until`] stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The deadline passed.
    Deadline,
    /// `cancelled()` turned true.
    Cancelled,
}

impl SessionPool {
    /// Build `options.sessions` sessions from the model file (errors surface here, on the
    /// caller's thread) and start one worker thread per session.
    pub fn new(
        env: &ort::environment::Environment,
        onnx: &Path,
        options: &RuntimeOptions,
        observers: Observers,
    ) -> Result<Self, RuntimeError> {
        // Loaded from the file, not from bytes: ONNX Runtime then resolves external-data
        // references against the model's own folder and refuses any that leave it (`..`,
        // absolute paths); from bytes it would resolve them against our working directory.
        std::fs::metadata(onnx).map_err(|e| RuntimeError::Io { path: onnx.display().to_string(), source: e })?;
        let n = options.sessions.max(1);
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            sessions.push(build_session(env, onnx, options.intra_threads)?);
        }
        let inputs: Vec<TensorInfo> = sessions[0].inputs().iter().map(TensorInfo::from_outlet).collect();
        let outputs: Vec<TensorInfo> = sessions[0].outputs().iter().map(TensorInfo::from_outlet).collect();
        let (tx, rx) = bounded::<Job>(options.queue_capacity.max(1));
        let batchable = Arc::new(AtomicBool::new(options.max_batch_size > 1));
        let (idle, take) = bounded::<Seat>(n);
        let mut run_options = Vec::with_capacity(n);
        for session in sessions {
            let options_i = Arc::new(RunOptions::new()?);
            run_options.push(options_i.clone());
            let _ = idle.try_send(Seat { session, run_options: options_i });
        }
        let seats = Arc::new(Seats {
            idle,
            take,
            waiting: AtomicUsize::new(0),
            small_run_ns: AtomicU64::new(u64::MAX),
            inline_max_run: options.inline_max_run,
        });
        for i in 0..n {
            let rx = rx.clone();
            let config = WorkerConfig {
                outputs: outputs.clone(),
                max_batch_size: options.max_batch_size.max(1),
                max_batch_delay: options.max_batch_delay,
                batchable: batchable.clone(),
                batch_sizes: observers.batch_sizes.clone(),
                queue_wait: observers.queue_wait.clone(),
                seats: seats.clone(),
            };
            std::thread::Builder::new()
                .name(format!("regserve-session-{i}"))
                .spawn(move || worker(rx, config))
                .map_err(|e| RuntimeError::Ort(format!("could not start a session thread: {e}")))?;
        }
        let threads = n * options.intra_threads.max(1);
        Ok(SessionPool {
            jobs: tx,
            seats,
            batch_sizes: observers.batch_sizes,
            queue_wait: observers.queue_wait,
            inline_runs: observers.inline_runs,
            inputs,
            outputs,
            sessions: n,
            threads,
            run_options,
            load: observers.load,
        })
    }

    /// Stop every run in progress on this pool, and make later runs fail at once: for a pool
    /// that is being given up (a warm-up past its deadline, shutdown).
    pub fn terminate(&self) {
        for o in &self.run_options {
            if let Err(e) = o.terminate() {
                tracing::warn!(error = %e, "could not terminate a session run");
            }
        }
    }

    /// [`SessionPool::run_blocking`] that gives up at `deadline`, or once `cancelled()` is
    /// true (checked every few milliseconds), terminating the pool's runs. Blocking.
    pub fn run_blocking_until(
        &self,
        inputs: Vec<InputTensor>,
        deadline: Instant,
        cancelled: impl Fn() -> bool,
    ) -> Result<Reply, Stopped> {
        use tokio::sync::oneshot::error::TryRecvError;
        let mut rx = match self.submit(inputs) {
            Ok(rx) => rx,
            Err(e) => return Ok(Err(e)),
        };
        loop {
            match rx.try_recv() {
                Ok(reply) => return Ok(reply),
                Err(TryRecvError::Closed) => {
                    return Ok(Err(ScoringError::internal("the session worker stopped before answering")))
                }
                Err(TryRecvError::Empty) => {}
            }
            let stop = if cancelled() {
                Some(Stopped::Cancelled)
            } else if Instant::now() >= deadline {
                Some(Stopped::Deadline)
            } else {
                None
            };
            if let Some(why) = stop {
                self.terminate();
                return Err(why);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn submit(&self, inputs: Vec<InputTensor>) -> Result<oneshot::Receiver<Reply>, ScoringError> {
        let (reply, rx) = oneshot::channel();
        let rows = rows_of(&inputs);
        let job = Job { inputs, rows, reply, queued: Instant::now(), _load: self.load.as_ref().map(|l| l.arrive()) };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                Err(ScoringError::unavailable("The model's request queue is full; retry shortly"))
            }
            Err(TrySendError::Disconnected(_)) => Err(ScoringError::unavailable("The model is shutting down")),
        }
    }

    /// Run one request on the next free session: inline when the model is fast, nothing is
    /// queued and a seat is idle (see the module's comment), else on a session thread.
    pub async fn run(&self, inputs: Vec<InputTensor>) -> Reply {
        let rows = rows_of(&inputs);
        let elements = inputs.iter().map(|t| t.data.len()).sum();
        if let Some(mut inline) = self.seats.try_inline(rows, elements, self.jobs.is_empty()) {
            let _load = self.load.as_ref().map(|l| l.arrive());
            if let Some(h) = &self.queue_wait {
                h.observe(0.0);
            }
            if let Some(h) = &self.batch_sizes {
                h.observe(rows.unwrap_or(1) as f64);
            }
            if let Some(c) = &self.inline_runs {
                c.inc();
            }
            let seat = inline.seat.as_mut().expect("an inline seat holds its seat until dropped; this is a bug");
            let started = Instant::now();
            let reply = guarded(seat, inputs, &self.outputs);
            self.seats.measured(rows.unwrap_or(usize::MAX), started.elapsed());
            return reply;
        }
        let rx = self.submit(inputs)?;
        rx.await.unwrap_or_else(|_| Err(ScoringError::internal("the session worker stopped before answering")))
    }

    /// Blocking variant, for the CLI and warm-up (not for async contexts).
    pub fn run_blocking(&self, inputs: Vec<InputTensor>) -> Reply {
        let rx = self.submit(inputs)?;
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(ScoringError::internal("the session worker stopped before answering")))
    }

    /// Requests waiting for a session.
    pub fn queue_depth(&self) -> usize {
        self.jobs.len()
    }
}

fn build_session(
    env: &ort::environment::Environment,
    onnx: &Path,
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
        .commit_from_file(onnx)?;
    Ok(session)
}

fn worker(jobs: Receiver<Job>, config: WorkerConfig) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        let job = match pending.pop_front() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return, // the pool was dropped and the queue is drained
            },
        };
        if job.reply.is_closed() {
            continue; // the client went away while queued
        }
        let batch = if job.rows.is_some() && config.batchable.load(Ordering::Relaxed) {
            gather(job, &jobs, &mut pending, &config)
        } else {
            vec![job]
        };
        for job in &batch {
            if let Some(h) = &config.queue_wait {
                h.observe(job.queued.elapsed().as_secs_f64());
            }
        }
        let mut seat = config.seats.take_blocking();
        if batch.len() == 1 {
            let job = batch.into_iter().next().expect("one job; this is a bug");
            observe(&config, job.rows.unwrap_or(1));
            let started = Instant::now();
            let result = guarded(&mut seat, job.inputs, &config.outputs);
            config.seats.measured(job.rows.unwrap_or(usize::MAX), started.elapsed());
            let _ = job.reply.send(result);
        } else {
            run_batch(&mut seat, batch, &config);
        }
        config.seats.put(seat);
    }
}

/// Rows, when every input has the same first dimension (else not batchable, never inline).
fn rows_of(inputs: &[InputTensor]) -> Option<usize> {
    let first = inputs.first().and_then(|t| t.shape.first()).copied();
    first.filter(|r| *r > 0 && inputs.iter().all(|t| t.shape.first() == Some(r))).map(|r| r as usize)
}

/// Take the compatible jobs queued behind `first`, up to the row limit and the delay.
fn gather(first: Job, jobs: &Receiver<Job>, pending: &mut VecDeque<Job>, config: &WorkerConfig) -> Vec<Job> {
    let mut rows = first.rows.unwrap_or(1);
    let mut batch = vec![first];
    let deadline = Instant::now() + config.max_batch_delay;
    while rows < config.max_batch_size {
        let next = match jobs.try_recv() {
            Ok(job) => job,
            Err(_) if config.max_batch_delay.is_zero() => break,
            Err(_) => match jobs.recv_deadline(deadline) {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if next.reply.is_closed() {
            continue;
        }
        match next.rows {
            Some(r) if batch[0].compatible(&next) && rows + r <= config.max_batch_size => {
                rows += r;
                batch.push(next);
            }
            _ => {
                // Not mergeable with this batch: it runs next, in arrival order.
                pending.push_back(next);
                break;
            }
        }
    }
    batch
}

fn observe(config: &WorkerConfig, rows: usize) {
    if let Some(h) = &config.batch_sizes {
        h.observe(rows as f64);
    }
}

fn guarded(seat: &mut Seat, inputs: Vec<InputTensor>, outputs: &[TensorInfo]) -> Reply {
    std::panic::catch_unwind(AssertUnwindSafe(|| run_once(&mut seat.session, &seat.run_options, inputs, outputs)))
        .unwrap_or_else(|_| Err(ScoringError::internal("model execution panicked")))
}

/// Run several jobs as one batch and answer each with its rows of the outputs.
fn run_batch(seat: &mut Seat, batch: Vec<Job>, config: &WorkerConfig) {
    let rows: Vec<usize> = batch.iter().map(|j| j.rows.unwrap_or(1)).collect();
    let total: usize = rows.iter().sum();
    let mut merged: Vec<InputTensor> = batch[0].inputs.clone();
    for t in &mut merged {
        t.shape[0] = total as i64;
    }
    for job in &batch[1..] {
        for (m, t) in merged.iter_mut().zip(&job.inputs) {
            m.data.append(&t.data);
        }
    }
    let started = Instant::now();
    let outputs = guarded(seat, merged, &config.outputs);
    config.seats.measured(total, started.elapsed());
    let per_row = |outs: &Vec<OutputTensor>| outs.iter().all(|o| o.shape.first() == Some(&total));
    match outputs {
        Ok(outs) if per_row(&outs) => {
            observe(config, total);
            let mut start = 0;
            for (job, n) in batch.into_iter().zip(rows) {
                let part = outs.iter().map(|o| split_rows(o, start, n, total)).collect();
                start += n;
                let _ = job.reply.send(Ok(part));
            }
        }
        other => {
            if other.is_ok() {
                tracing::info!("an output does not have one entry per row; dynamic batching is off for this model");
                config.batchable.store(false, Ordering::Relaxed);
            }
            for job in batch {
                observe(config, job.rows.unwrap_or(1));
                let result = guarded(seat, job.inputs, &config.outputs);
                let _ = job.reply.send(result);
            }
        }
    }
}

/// Rows `start..start+n` of an output whose first dimension is `total`.
fn split_rows(o: &OutputTensor, start: usize, n: usize, total: usize) -> OutputTensor {
    let mut shape = o.shape.clone();
    shape[0] = n;
    let data = match &o.data {
        OutputData::Tensor(t) => {
            let per_row = t.len().checked_div(total).unwrap_or(0);
            OutputData::Tensor(t.slice(start * per_row, (start + n) * per_row))
        }
        OutputData::Maps(maps) => OutputData::Maps(maps[start..start + n].to_vec()),
    };
    OutputTensor { name: o.name.clone(), shape, data }
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
        TensorData::String(v) => Tensor::from_string_array((shape, v.as_slice()))?.into_dyn().into(),
    })
}

fn run_once(session: &mut Session, options: &RunOptions, inputs: Vec<InputTensor>, infos: &[TensorInfo]) -> Reply {
    let mut values: Vec<(String, SessionInputValue<'static>)> = Vec::with_capacity(inputs.len());
    for t in inputs {
        let name = t.name.clone();
        let v = to_value(t).map_err(|e| ScoringError::bad_request(format!("Could not build input '{name}': {e}")))?;
        values.push((name, v));
    }
    let outputs = session
        .run_with_options(values, options)
        .map_err(|e| ScoringError::bad_request(format!("The model could not run on this input: {e}")))?;
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        let v = outputs.get(&info.name).ok_or_else(|| {
            ScoringError::internal(format!("output '{}' missing from the session's results", info.name))
        })?;
        out.push(
            extract(&info.name, v)
                .map_err(|e| ScoringError::internal(format!("reading output '{}': {e}", info.name)))?,
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
                    (shape.iter().map(|d| *d as usize).collect::<Vec<_>>(), TensorData::$variant(data.to_vec()))
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
                    (shape.iter().map(|d| *d as usize).collect(), TensorData::String(strings))
                }
                other => {
                    return Err(ort::Error::new(format!("output element type {other:?} is not supported")));
                }
            };
            Ok(OutputTensor { name: name.to_string(), shape, data: OutputData::Tensor(data) })
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
                    (T::String, T::Float32) => {
                        m.try_extract_key_values::<String, f32>()?.into_iter().map(|(k, v)| (k, v as f64)).collect()
                    }
                    (T::Int64, T::Float64) => {
                        m.try_extract_key_values::<i64, f64>()?.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    }
                    (T::String, T::Float64) => m.try_extract_key_values::<String, f64>()?,
                    (k, v) => return Err(ort::Error::new(format!("map<{k:?}, {v:?}> outputs are not supported"))),
                };
                rows.push(row);
            }
            Ok(OutputTensor { name: name.to_string(), shape: vec![rows.len()], data: OutputData::Maps(rows) })
        }
        other => Err(ort::Error::new(format!("output type {other:?} is not supported"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(inline_max_run: Duration) -> Seats {
        let (idle, take) = bounded::<Seat>(1);
        Seats { idle, take, waiting: AtomicUsize::new(0), small_run_ns: AtomicU64::new(u64::MAX), inline_max_run }
    }

    #[test]
    fn only_small_requests_of_a_model_measured_fast_with_nothing_queued_are_eligible() {
        let s = seats(Duration::from_micros(100));
        assert!(!s.eligible(Some(1), 4, true), "not measured yet");
        s.measured(1, Duration::from_micros(20));
        assert!(s.eligible(Some(1), 4, true));
        assert!(s.eligible(Some(INLINE_MAX_ROWS), 4, true));
        assert!(!s.eligible(Some(INLINE_MAX_ROWS + 1), 4, true), "too many rows");
        assert!(!s.eligible(None, 4, true), "inputs of different first dimensions");
        assert!(!s.eligible(Some(1), 4, false), "something is queued");
        assert!(s.eligible(Some(1), INLINE_MAX_ELEMENTS, true));
        assert!(!s.eligible(Some(1), INLINE_MAX_ELEMENTS + 1, true), "too many elements");
        s.waiting.fetch_add(1, Ordering::SeqCst);
        assert!(!s.eligible(Some(1), 4, true), "a worker waits for a seat");
        s.waiting.fetch_sub(1, Ordering::SeqCst);
        assert!(s.eligible(Some(1), 4, true));
        let off = seats(Duration::ZERO);
        off.measured(1, Duration::ZERO);
        assert!(!off.eligible(Some(1), 4, true), "--inline-max-run 0");
    }

    #[test]
    fn one_slow_run_sends_the_model_back_to_the_threads_and_fast_ones_bring_it_back_slowly() {
        let s = seats(Duration::from_micros(100));
        s.measured(1, Duration::from_micros(10));
        assert!(s.eligible(Some(1), 4, true));
        // Large runs say nothing about small ones.
        s.measured(INLINE_MAX_ROWS + 1, Duration::from_secs(1));
        assert!(s.eligible(Some(1), 4, true));
        s.measured(1, Duration::from_millis(50));
        assert!(!s.eligible(Some(1), 4, true), "one slow small run counts in full");
        let mut fast_runs = 0;
        while !s.eligible(Some(1), 4, true) {
            s.measured(1, Duration::from_micros(10));
            fast_runs += 1;
            assert!(fast_runs < 100, "never fast again");
        }
        // 50 ms down to 100 µs, an eighth of the distance at a time.
        assert!(fast_runs > 30, "back after {fast_runs} fast runs");
    }

    #[test]
    fn one_async_worker_always_stays_free() {
        assert_eq!(inline_limit(), 0, "off any runtime");
        let one = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(one.block_on(async { inline_limit() }), 0);
        let four = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
        assert_eq!(four.block_on(async { inline_limit() }), 3);
    }
}
