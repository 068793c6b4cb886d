//! The model slot of a target and the worker's side of a swap.
//!
//! A [`ModelSlot`] holds the [`Deployed`] model of one target behind an
//! `ArcSwap`: the manager publishes a new `Deployed` (new model, already
//! loaded, warmed up and golden-checked; the model to keep as previous; one
//! ready-made [`Inspector`] per worker), and each inspection worker, between
//! two frames, does one atomic load and compares generations
//! ([`WorkerModels::poll_swap`]). On a change it takes its staged inspector
//! and exchanges it with its own: a pointer move, no model is loaded, no plan
//! built, nothing waited for on the frame path. (Warming the staged
//! inspector on the worker while it idles was measured and made frames that
//! arrive during that run wait; the first frame of a new session costs about
//! what any frame costs, so it is not done.)
//!
//! The worker keeps the model it replaced as its `previous`. A rollback is
//! a `Deployed` whose model is that previous one: the worker swaps the two
//! back, again without loading anything. During a deploy's probation every
//! frame goes through the [`Fuse`]; when it trips, the worker rolls back on
//! its own at once, **re-inspects the same frame** with the previous model
//! (so the frame is not lost), and reports to the manager, which makes the
//! rollback official for every worker, persists and audits it.
//!
//! The same machinery serves the twin thread ([`SlotWorker`] is generic over
//! its [`Runner`]: an [`Inspector`] for a cell, a bare [`ModelSession`] for
//! the twin's predictor, see `models::twin`); a twin session is tiny, so the
//! twin thread builds its own at the swap instead of taking a staged one.
//!
//! Inspectors a worker no longer needs are dropped by the worker itself,
//! right after the exchange (outside the timed swap): tract keeps per-thread
//! scratch for every session that ran on a thread and frees it only when the
//! session is dropped on that same thread, so a session must run and die on
//! one thread. For the same reason the staged inspectors are built but not
//! run by the manager; its warm-up uses a session of its own.

use super::fuse::{FrameOutcome, Fuse, FuseAction, FuseConfig, LatencyWindow, TripReason};
use crate::clock::monotonic_ns;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use triad_inspect::{
    GrayImage, InspectError, Inspection, Inspector, InspectorConfig, ModelError, ModelSession, OnnxModel,
};

/// Where a model came from, and who put it there.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `builtin`, `config` (a model directory of the configuration) or `bundle`.
    pub source: String,
    /// Bundle digest (`sha256:…`), for bundles.
    pub digest: Option<String>,
    /// Name of the key that signed the bundle.
    pub signer: Option<String>,
    /// Issuer of the deploy token.
    pub deployed_by: Option<String>,
    /// When it was deployed, ns since the epoch.
    pub deployed_ns: Option<i64>,
    /// SHA-256 of the ONNX file.
    pub onnx_sha256: String,
}

/// What a target runs, as published to its workers.
pub struct Deployed {
    /// Increases with every publication.
    pub generation: u64,
    /// The model to run.
    pub model: Arc<OnnxModel>,
    /// Its description.
    pub info: Arc<ModelInfo>,
    /// The model workers keep for a rollback.
    pub previous: Option<Arc<OnnxModel>>,
    /// Is this a deploy on probation (the fuse watches it)?
    pub probation: bool,
    staged: Mutex<Vec<Option<Inspector>>>,
}

impl std::fmt::Debug for Deployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployed")
            .field("generation", &self.generation)
            .field("info", &self.info)
            .field("probation", &self.probation)
            .finish_non_exhaustive()
    }
}

impl Deployed {
    /// A publication with one staged inspector per worker (`None` entries are
    /// built by the worker itself, off the warm path).
    pub fn new(
        generation: u64,
        model: Arc<OnnxModel>,
        info: Arc<ModelInfo>,
        previous: Option<Arc<OnnxModel>>,
        probation: bool,
        staged: Vec<Option<Inspector>>,
    ) -> Self {
        Self {
            generation,
            model,
            info,
            previous,
            probation,
            staged: Mutex::new(staged),
        }
    }

    fn take_staged(&self, worker: usize) -> Option<Inspector> {
        self.staged.try_lock().ok()?.get_mut(worker)?.take()
    }

    /// Inspectors no worker took (to drop after the swap).
    pub fn drain_staged(&self) -> Vec<Inspector> {
        self.staged
            .lock()
            .map(|mut v| v.iter_mut().filter_map(Option::take).collect())
            .unwrap_or_default()
    }
}

/// The slot of one target.
pub struct ModelSlot {
    target: String,
    config: InspectorConfig,
    active: ArcSwap<Deployed>,
    /// Workers running now.
    workers: AtomicUsize,
    /// Worker indices handed out (the length of a staged vector).
    slots: AtomicUsize,
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSlot")
            .field("target", &self.target)
            .field("active", &*self.active.load())
            .finish_non_exhaustive()
    }
}

impl ModelSlot {
    /// A slot running `model` (generation 1).
    pub fn new(target: &str, config: InspectorConfig, model: Arc<OnnxModel>, info: ModelInfo) -> Self {
        Self {
            target: target.into(),
            config,
            active: ArcSwap::from_pointee(Deployed::new(1, model, Arc::new(info), None, false, Vec::new())),
            workers: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
        }
    }

    /// The target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The inspector settings of the target's workers.
    pub fn inspector_config(&self) -> &InspectorConfig {
        &self.config
    }

    /// What is published now.
    pub fn current(&self) -> Arc<Deployed> {
        self.active.load_full()
    }

    /// Publish `d`; workers take it between their next two frames.
    pub fn publish(&self, d: Deployed) {
        self.active.store(Arc::new(d));
    }

    /// Number of workers running.
    pub fn workers(&self) -> usize {
        self.workers.load(Ordering::Acquire)
    }

    /// Number of worker indices handed out (a staged vector's length).
    pub fn worker_slots(&self) -> usize {
        self.slots.load(Ordering::Acquire)
    }

    /// Build a worker's side for this slot (registers it).
    pub fn worker<R: Runner>(
        self: &Arc<Self>,
        fuse: FuseConfig,
        reporter: Box<dyn Fn(WorkerReport) + Send>,
    ) -> Result<SlotWorker<R>, R::Error> {
        let d = self.current();
        let current = R::build(self, &d.model)?;
        let index = self.slots.fetch_add(1, Ordering::AcqRel);
        self.workers.fetch_add(1, Ordering::AcqRel);
        Ok(SlotWorker {
            slot: self.clone(),
            index,
            generation: d.generation,
            current,
            previous: None,
            fuse: Fuse::new(fuse),
            latency: LatencyWindow::default(),
            reporter,
            built_on_worker: false,
            failures: 0,
        })
    }
}

/// What a worker tells the manager.
pub enum WorkerReport {
    /// The worker runs generation `generation` since `at_mono_ns`.
    Swapped {
        /// Target.
        target: String,
        /// Worker index.
        worker: usize,
        /// Generation now running.
        generation: u64,
        /// How long the exchange took on the frame path, ns.
        swap_ns: i64,
        /// Did the worker have to build the inspector itself?
        built_on_worker: bool,
    },
    /// The fuse tripped; the worker already went back to its previous model.
    FuseTripped {
        /// Target.
        target: String,
        /// Worker index.
        worker: usize,
        /// The generation that failed.
        generation: u64,
        /// Why.
        reason: TripReason,
        /// Did the worker have a previous model to go back to?
        rolled_back: bool,
    },
    /// Probation passed on this worker.
    ProbationPassed {
        /// Target.
        target: String,
        /// Worker index.
        worker: usize,
        /// Generation.
        generation: u64,
        /// Frames judged.
        frames: u32,
    },
}

impl std::fmt::Debug for WorkerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerReport::Swapped {
                target,
                worker,
                generation,
                swap_ns,
                built_on_worker,
            } => write!(
                f,
                "Swapped({target}#{worker} gen {generation} in {swap_ns} ns, built_on_worker {built_on_worker})"
            ),
            WorkerReport::FuseTripped {
                target,
                worker,
                generation,
                reason,
                rolled_back,
            } => write!(
                f,
                "FuseTripped({target}#{worker} gen {generation}: {reason}; rolled back {rolled_back})"
            ),
            WorkerReport::ProbationPassed {
                target,
                worker,
                generation,
                frames,
            } => write!(
                f,
                "ProbationPassed({target}#{worker} gen {generation}, {frames} frames)"
            ),
        }
    }
}

/// What a worker runs a model with: an [`Inspector`] (inspection cells) or
/// a bare [`ModelSession`] (the twin's predictor, see `models::twin`).
pub trait Runner: Sized {
    /// Why one cannot be built.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Does the manager stage one per worker (so that building one on the
    /// worker is worth a warning)?
    const STAGED: bool = false;
    /// The smallest baseline the fuse's slowness bound is computed from, ns
    /// of CPU time: runs far below it are too short to compare reliably.
    const BASELINE_FLOOR_NS: i64 = 0;
    /// The model it runs.
    fn model(&self) -> &Arc<OnnxModel>;
    /// Build one for `model`, on the worker's thread.
    fn build(slot: &ModelSlot, model: &Arc<OnnxModel>) -> Result<Self, Self::Error>;
    /// The one the manager staged for worker `index` of `d`, if any.
    fn staged(_d: &Deployed, _index: usize) -> Option<Self> {
        None
    }
}

impl Runner for Inspector {
    type Error = InspectError;
    const STAGED: bool = true;
    fn model(&self) -> &Arc<OnnxModel> {
        Inspector::model(self)
    }
    fn build(slot: &ModelSlot, model: &Arc<OnnxModel>) -> Result<Self, InspectError> {
        Inspector::new(slot.config.clone(), model)
    }
    fn staged(d: &Deployed, index: usize) -> Option<Self> {
        d.take_staged(index)
    }
}

impl Runner for ModelSession {
    type Error = ModelError;
    /// A twin prediction takes microseconds, where cache and scheduler
    /// noise alone can triple it: the bound is `max_slowdown` × at least
    /// 200 µs (`fuse_max_inference_ms` still applies).
    const BASELINE_FLOOR_NS: i64 = 200_000;
    fn model(&self) -> &Arc<OnnxModel> {
        ModelSession::model(self)
    }
    fn build(_slot: &ModelSlot, model: &Arc<OnnxModel>) -> Result<Self, ModelError> {
        model.session()
    }
}

/// One worker's models: the current runner, the previous one, the fuse, and
/// the link to the slot.
pub struct SlotWorker<R: Runner> {
    slot: Arc<ModelSlot>,
    index: usize,
    generation: u64,
    current: R,
    previous: Option<R>,
    fuse: Fuse,
    latency: LatencyWindow,
    reporter: Box<dyn Fn(WorkerReport) + Send>,
    built_on_worker: bool,
    failures: u64,
}

/// An inspection worker's models.
pub type WorkerModels = SlotWorker<Inspector>;

impl<R: Runner> std::fmt::Debug for SlotWorker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotWorker")
            .field("target", &self.slot.target)
            .field("index", &self.index)
            .field("generation", &self.generation)
            .field("probation", &self.fuse.is_armed())
            .finish_non_exhaustive()
    }
}

/// CPU time of the calling thread, ns. The fuse measures a model's cost in
/// CPU time, so that a loaded machine (preemption) does not look like a slow
/// model.
pub fn thread_cpu_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // exists on every Linux and cannot fail for the calling thread.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl<R: Runner> Drop for SlotWorker<R> {
    fn drop(&mut self) {
        self.slot.workers.fetch_sub(1, Ordering::AcqRel);
    }
}

fn same<R: Runner>(r: &R, m: &Arc<OnnxModel>) -> bool {
    Arc::ptr_eq(r.model(), m)
}

impl WorkerModels {
    /// The inspector in use.
    pub fn inspector(&self) -> &Inspector {
        &self.current
    }

    /// Inspect one frame with the current model; on probation, feed the
    /// fuse (the frame's outcome and its inspection time in thread CPU
    /// time), and if it trips, go back to the previous model and inspect the
    /// same frame again with it.
    pub fn inspect(&mut self, image: &GrayImage<'_>) -> Result<Inspection, InspectError> {
        let t0 = thread_cpu_ns();
        let result = self.current.inspect(image);
        let latency_ns = thread_cpu_ns() - t0;
        let outcome = match &result {
            Ok(_) => FrameOutcome::Ok { latency_ns },
            Err(InspectError::NonFinite { .. }) => FrameOutcome::NonFinite,
            Err(InspectError::Model(_)) => FrameOutcome::Error,
            // A frame that does not fit the ROI is not the model's fault.
            Err(_) => return result,
        };
        if self.judge(outcome) {
            self.current.inspect(image)
        } else {
            result
        }
    }
}

impl<R: Runner> SlotWorker<R> {
    /// The generation this worker runs.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The runner in use.
    pub fn current(&self) -> &R {
        &self.current
    }

    /// Mutable access to the runner in use.
    pub fn current_mut(&mut self) -> &mut R {
        &mut self.current
    }

    /// The target.
    pub fn target(&self) -> &str {
        &self.slot.target
    }

    /// Count a run that gave no result; returns the count so far.
    pub fn count_failure(&mut self) -> u64 {
        self.failures += 1;
        self.failures
    }

    /// Is the current model on probation?
    pub fn on_probation(&self) -> bool {
        self.fuse.is_armed()
    }

    /// Between two frames: take a newly published model, if any. One atomic
    /// load when nothing changed; otherwise a pointer exchange with the
    /// inspector staged for this worker (or, for a rollback, with the one it
    /// keeps). Returns `true` if the model changed.
    pub fn poll_swap(&mut self) -> bool {
        let d = self.slot.active.load();
        if d.generation == self.generation {
            return false;
        }
        self.swap(&d)
    }

    /// The staged runner of this worker, or one built here.
    fn new_runner(&mut self, d: &Deployed) -> Option<R> {
        if let Some(i) = R::staged(d, self.index) {
            return Some(i);
        }
        self.built_on_worker = R::STAGED;
        match R::build(&self.slot, &d.model) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::error!(target = %self.slot.target, error = %e, "cannot run the published model on this worker; keeping the current one");
                self.generation = d.generation;
                None
            }
        }
    }

    fn swap(&mut self, d: &Deployed) -> bool {
        let t0 = monotonic_ns();
        let mut retired: [Option<R>; 2] = [None, None];
        let keep_prev = |i: &R| d.previous.as_ref().is_some_and(|p| same(i, p));
        let changed = if same(&self.current, &d.model) {
            // Already running it (a rollback this worker's fuse made itself).
            if let Some(p) = self.previous.take_if(|p| !keep_prev(p)) {
                retired[0] = Some(p);
            }
            false
        } else if self.previous.as_ref().is_some_and(|p| same(p, &d.model)) {
            // Rollback: back to the previous inspector.
            let prev = self.previous.take().expect("checked");
            let old = std::mem::replace(&mut self.current, prev);
            if keep_prev(&old) {
                self.previous = Some(old);
            } else {
                retired[0] = Some(old);
            }
            true
        } else {
            let Some(new) = self.new_runner(d) else {
                return false;
            };
            let old = std::mem::replace(&mut self.current, new);
            let old_prev = self.previous.take();
            if keep_prev(&old) {
                self.previous = Some(old);
                retired[0] = old_prev;
            } else if old_prev.as_ref().is_some_and(keep_prev) {
                self.previous = old_prev;
                retired[0] = Some(old);
            } else {
                retired[0] = Some(old);
                retired[1] = old_prev;
            }
            true
        };
        let swap_ns = monotonic_ns() - t0;
        self.generation = d.generation;
        if changed {
            let baseline = self.latency.median().map(|b| b.max(R::BASELINE_FLOOR_NS));
            self.latency.clear();
            if d.probation {
                self.fuse.arm(monotonic_ns(), baseline);
            } else {
                self.fuse.disarm();
            }
        }
        // Dropped here, on the thread that ran them (see the module doc).
        drop(retired);
        (self.reporter)(WorkerReport::Swapped {
            target: self.slot.target.clone(),
            worker: self.index,
            generation: self.generation,
            swap_ns,
            built_on_worker: std::mem::take(&mut self.built_on_worker),
        });
        changed
    }

    /// Judge one run of the current model: its CPU time feeds the latency
    /// window; on probation the fuse sees the outcome, and if it trips the
    /// worker goes back to its previous model at once and reports it.
    /// Returns `true` if the worker switched back (the caller runs the same
    /// input again, so nothing is lost).
    pub fn judge(&mut self, outcome: FrameOutcome) -> bool {
        if let FrameOutcome::Ok { latency_ns } = outcome {
            self.latency.push(latency_ns);
        }
        if !self.fuse.is_armed() {
            return false;
        }
        match self.fuse.handle_frame(monotonic_ns(), outcome) {
            None => false,
            Some(FuseAction::Passed { frames }) => {
                (self.reporter)(WorkerReport::ProbationPassed {
                    target: self.slot.target.clone(),
                    worker: self.index,
                    generation: self.generation,
                    frames,
                });
                false
            }
            Some(FuseAction::Trip(reason)) => {
                let rolled_back = match self.previous.take() {
                    Some(prev) => {
                        let bad = std::mem::replace(&mut self.current, prev);
                        self.previous = Some(bad);
                        self.latency.clear();
                        true
                    }
                    None => false,
                };
                tracing::error!(target = %self.slot.target, generation = self.generation, reason = %reason, rolled_back, "model fuse tripped");
                (self.reporter)(WorkerReport::FuseTripped {
                    target: self.slot.target.clone(),
                    worker: self.index,
                    generation: self.generation,
                    reason,
                    rolled_back,
                });
                rolled_back
            }
        }
    }
}
