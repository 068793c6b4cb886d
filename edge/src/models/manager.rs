//! The model service: one background thread (`triad-models`, SCHED_IDLE)
//! that owns the keyring, the replay store, the targets' slots and their
//! stores, and does everything slow: verifying, unpacking, loading, warming
//! up, golden checks, persisting and auditing. Deploys and rollbacks are
//! handled one at a time, in arrival order, so two deploys can never race
//! past the downgrade check.
//!
//! Requests arrive from any front end (the HTTP API and the bus today; OPC
//! UA will call the same [`ModelService::deploy`] and [`ModelService::rollback`]).
//! Targets are inspection cells and twin assets (see `twin`); their workers
//! (inspection threads, the twin thread) report swaps, fuse trips and
//! probation results through
//! the same channel; a fuse trip makes the rollback official for every
//! worker of the target, persists it and audits it.
//!
//! Previous-model rule: a deploy keeps the model it replaces as the one to
//! roll back to, unless that model was itself still on probation; then the
//! last model that passed probation stays the previous one. A rollback
//! leaves no previous model (a second rollback is refused; deploy again).

use super::bundle::{Bundle, BundleLimits, MODEL_FILE, SIGNATURE_FILE};
use super::checks::{
    self, BundleInput, CheckContext, Refusal, TargetState, VerifiedDeploy, check_bundle, check_token, golden_check,
};
use super::fuse::FuseConfig;
use super::slot::{Deployed, ModelInfo, ModelSlot, Runner, SlotWorker, WorkerModels, WorkerReport};
use super::store::{ModelInfoRecord, StoredModel, StoredRef, TargetRecord, TargetStore};
use super::twin::TwinModels;
use crate::clock::Clock;
use crate::trust::SharedReplay;
use crate::trust::audit::{AuditLog, AuditRecord};
use crate::trust::keyring::Keyring;
use crate::trust::token::{TokenPolicy, TokenUse, VerifiedToken};
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triad_inspect::{GrayImage, InspectError, Inspector, InspectorConfig, ModelKind, OnnxModel};

/// Settings of the model service, from `[models]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelsSettings {
    /// Bundle size limits.
    pub limits: BundleLimits,
    /// The fuse.
    pub fuse: FuseConfig,
    /// Warm-up runs per staged inspector.
    pub warmup_runs: u32,
    /// How long a deploy waits for the workers to take the new model.
    pub swap_wait: Duration,
    /// Accept a plain (unsigned) `model_dir` in the configuration.
    pub allow_unsigned_model_dir: bool,
}

impl Default for ModelsSettings {
    fn default() -> Self {
        Self {
            limits: BundleLimits::default(),
            fuse: FuseConfig::default(),
            warmup_runs: 3,
            swap_wait: Duration::from_secs(2),
            allow_unsigned_model_dir: false,
        }
    }
}

/// The model a target runs when nothing was deployed.
#[derive(Clone, Debug)]
pub enum InitialModel {
    /// The model built into the binary.
    Builtin,
    /// A model directory of the configuration (a signed bundle, or a plain
    /// model directory if `allow_unsigned_model_dir`).
    Dir(PathBuf),
    /// A model already loaded (tests and benchmarks).
    Loaded(Arc<OnnxModel>),
}

/// A target of the service.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    /// Cell id (inspection) or asset id (twin).
    pub id: String,
    /// Kind of model it runs.
    pub kind: ModelKind,
    /// Settings of its inspectors (inspection targets; ignored for a twin).
    pub inspector: InspectorConfig,
    /// What runs when nothing was deployed.
    pub initial: InitialModel,
}

/// Called after every decision (for the dashboard).
pub type Notify = Box<dyn Fn(&AuditRecord, &TargetStatus) + Send>;

/// Everything the service needs.
pub struct ServiceOptions {
    /// This node's id (the tokens' audience).
    pub device: String,
    /// Where deployed bundles are kept.
    pub state_dir: PathBuf,
    /// Trusted keys.
    pub keyring: Keyring,
    /// Token limits.
    pub policy: TokenPolicy,
    /// Model settings.
    pub settings: ModelsSettings,
    /// The targets.
    pub targets: Vec<TargetSpec>,
    /// The node's clock (token times, audit stamps).
    pub clock: Arc<dyn Clock>,
    /// The audit trail.
    pub audit: Arc<AuditLog>,
    /// The replay store.
    pub replay: SharedReplay,
    /// Decision hook.
    pub notify: Option<Notify>,
}

/// What a target runs, for `/api/models` and the dashboard.
#[derive(Clone, Debug, Serialize)]
pub struct TargetStatus {
    /// Cell id.
    pub target: String,
    /// Kind.
    pub kind: ModelKind,
    /// Publication counter.
    pub generation: u64,
    /// The running model.
    pub current: ModelInfo,
    /// The model a rollback goes back to.
    pub previous: Option<ModelInfo>,
    /// Is the current model on probation?
    pub probation: bool,
    /// Workers of the target.
    pub workers: usize,
    /// Workers running the current generation.
    pub swapped_workers: usize,
    /// Longest exchange on a worker for the current generation, ns.
    pub last_swap_ns: Option<i64>,
}

/// Time spent in each step of a deploy, ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Checks 1–12 (token, unpack, signature, digests).
    pub verify_ms: f64,
    /// tract load and optimisation.
    pub load_ms: f64,
    /// Building and warming up the workers' inspectors.
    pub warmup_ms: f64,
    /// Golden cases.
    pub golden_ms: f64,
    /// Until every worker took it (or the wait ended).
    pub total_ms: f64,
}

/// An accepted deploy or rollback.
#[derive(Clone, Debug, Serialize)]
pub struct DeployReport {
    /// `deployed`, `rolled_back`.
    pub outcome: &'static str,
    /// Target.
    pub target: String,
    /// What runs now.
    pub model: ModelInfo,
    /// Version before.
    pub from_version: String,
    /// Publication counter.
    pub generation: u64,
    /// Workers that took it before the answer.
    pub swapped_workers: usize,
    /// Workers of the target.
    pub workers: usize,
    /// Longest exchange on a worker, ns.
    pub swap_ns_max: Option<i64>,
    /// Step times.
    pub timings: Timings,
}

/// The bundle of a deploy request.
#[derive(Debug)]
pub enum BundlePayload {
    /// `.tar` / `.tar.gz` bytes.
    Archive(Vec<u8>),
    /// Files already read.
    Files(Bundle),
}

type Reply = tokio::sync::oneshot::Sender<Result<DeployReport, Refusal>>;
/// The service's answer to a request, to await or to block on.
type Answer = tokio::sync::oneshot::Receiver<Result<DeployReport, Refusal>>;

enum Msg {
    Deploy {
        target: String,
        token: String,
        bundle: BundlePayload,
        origin: String,
        reply: Reply,
    },
    Rollback {
        target: String,
        token: String,
        origin: String,
        reply: Reply,
    },
    Worker(WorkerReport),
    Stop,
}

struct Inner {
    tx: Sender<Msg>,
    slots: BTreeMap<String, Arc<ModelSlot>>,
    status: Arc<Mutex<BTreeMap<String, TargetStatus>>>,
    audit: Arc<AuditLog>,
    settings: ModelsSettings,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    device: String,
    keyring: Keyring,
    policy: TokenPolicy,
    clock: Arc<dyn Clock>,
}

/// Handle on the model service (cheap to clone).
#[derive(Clone)]
pub struct ModelService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ModelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelService")
            .field("targets", &self.inner.slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct Entry {
    model: Arc<OnnxModel>,
    info: Arc<ModelInfo>,
    stored: StoredRef,
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Self {
            model: self.model.clone(),
            info: self.info.clone(),
            stored: self.stored.clone(),
        }
    }
}

struct TargetRt {
    spec: TargetSpec,
    slot: Arc<ModelSlot>,
    store: TargetStore,
    current: Entry,
    previous: Option<Entry>,
    generation: u64,
    probation: bool,
    passed: usize,
    swapped: usize,
    swap_ns_max: Option<i64>,
    published: Option<Arc<Deployed>>,
}

struct Manager {
    device: String,
    keyring: Keyring,
    policy: TokenPolicy,
    settings: ModelsSettings,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
    replay: SharedReplay,
    targets: BTreeMap<String, TargetRt>,
    status: Arc<Mutex<BTreeMap<String, TargetStatus>>>,
    notify: Option<Notify>,
    rx: Receiver<Msg>,
    deferred: VecDeque<Msg>,
}

fn info_of(model: &OnnxModel, source: &str) -> ModelInfo {
    let m = model.manifest();
    ModelInfo {
        name: m.name.clone(),
        version: m.version.clone(),
        source: source.into(),
        onnx_sha256: model.sha256().into(),
        ..Default::default()
    }
}

/// Does `model` run on `spec`'s workers? (An inspection model must fit the
/// cell's ROI; a twin model must be one and run.)
fn check_fits(spec: &TargetSpec, model: &Arc<OnnxModel>, runs: u32) -> Result<(), String> {
    if model.manifest().kind != spec.kind {
        return Err(format!(
            "{} {} is a {:?} model; target {} runs {:?} models",
            model.manifest().name,
            model.manifest().version,
            model.manifest().kind,
            spec.id,
            spec.kind
        ));
    }
    match spec.kind {
        ModelKind::Inspection => Inspector::new(spec.inspector.clone(), model)
            .map(drop)
            .map_err(|e| e.to_string()),
        ModelKind::Twin => super::twin::check_model(model, runs),
    }
}

fn load_initial(spec: &TargetSpec, keyring: &Keyring, settings: &ModelsSettings) -> anyhow::Result<Entry> {
    let (model, info) = match &spec.initial {
        InitialModel::Builtin => {
            let m = match spec.kind {
                ModelKind::Inspection => triad_inspect::builtin::weld_seam(),
                ModelKind::Twin => super::twin::builtin(),
            };
            let m = Arc::new(m.context("the built-in model does not load")?);
            let i = info_of(&m, "builtin");
            (m, i)
        }
        InitialModel::Loaded(m) => (m.clone(), info_of(m, "config")),
        InitialModel::Dir(dir) => {
            let dir = dir.clone();
            if dir.join(SIGNATURE_FILE).exists() {
                let bundle = Bundle::from_dir(&dir, settings.limits)
                    .with_context(|| format!("cells {}: model_dir {}", spec.id, dir.display()))?;
                let (parsed, signer) = check_bundle(&bundle, keyring)
                    .map_err(|r| anyhow::anyhow!("cells {}: model_dir {} is refused: {r}", spec.id, dir.display()))?;
                if parsed.target() != spec.id {
                    anyhow::bail!(
                        "cells {}: model_dir {} is a bundle for target {:?}",
                        spec.id,
                        dir.display(),
                        parsed.target()
                    );
                }
                let m = Arc::new(OnnxModel::load(
                    bundle.get(MODEL_FILE).unwrap_or_default(),
                    parsed.manifest.clone(),
                )?);
                let mut i = info_of(&m, "config");
                i.digest = Some(parsed.digest);
                i.signer = Some(signer);
                (m, i)
            } else if settings.allow_unsigned_model_dir {
                tracing::warn!(cell = %spec.id, dir = %dir.display(), "running an UNSIGNED model from the configuration (models.allow_unsigned_model_dir = true)");
                let m = Arc::new(OnnxModel::load_dir(&dir)?);
                let i = info_of(&m, "config-unsigned");
                (m, i)
            } else {
                anyhow::bail!(
                    "cells {}: model_dir {} is not a signed bundle (no signature.json); sign it with `triad bundle sign`, or set models.allow_unsigned_model_dir = true",
                    spec.id,
                    dir.display()
                );
            }
        }
    };
    Ok(Entry {
        model,
        info: Arc::new(info),
        stored: StoredRef::Initial,
    })
}

fn load_stored(
    spec: &TargetSpec,
    store: &TargetStore,
    s: &StoredModel,
    keyring: &Keyring,
    limits: BundleLimits,
) -> Result<Entry, Refusal> {
    let bundle = store.get_bundle(&s.dir, limits)?;
    let (parsed, signer) = check_bundle(&bundle, keyring)?;
    if parsed.target() != spec.id {
        return Err(Refusal::BundleTargetMismatch {
            bundle_target: parsed.target().into(),
            target: spec.id.clone(),
        });
    }
    let model = Arc::new(
        OnnxModel::load(bundle.get(MODEL_FILE).unwrap_or_default(), parsed.manifest.clone())
            .map_err(|e| Refusal::ModelLoad { detail: e.to_string() })?,
    );
    check_fits(spec, &model, 1).map_err(|detail| Refusal::Incompatible {
        target: spec.id.clone(),
        detail,
    })?;
    let mut info = info_of(&model, "bundle");
    info.digest = Some(parsed.digest);
    info.signer = Some(signer);
    info.deployed_by = s.info.deployed_by.clone();
    info.deployed_ns = s.info.deployed_ns;
    Ok(Entry {
        model,
        info: Arc::new(info),
        stored: StoredRef::Bundle(s.clone()),
    })
}

/// The claims of a token that failed verification, for the audit log only.
fn peek_unverified(token: &str) -> (Option<String>, Option<String>, Option<String>) {
    use base64::Engine;
    let dec = |p: Option<&str>| -> Option<serde_json::Value> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p?).ok()?;
        serde_json::from_slice(&b).ok()
    };
    let mut parts = token.trim().split('.');
    let header = dec(parts.next());
    let claims = dec(parts.next());
    let s = |v: &Option<serde_json::Value>, k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(|x| x.as_str())
            .map(|x| x.chars().take(128).collect::<String>())
    };
    (
        s(&claims, "iss").map(|i| format!("{i} (unverified)")),
        s(&header, "kid"),
        s(&claims, "jti"),
    )
}

/// Verification, loading and golden checks must never take CPU from the
/// inspection workers (or anything else): the service thread runs under
/// SCHED_IDLE where the kernel allows, else at nice 19.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0
        && let Err(e) = crate::control::rt::set_nice(19)
    {
        tracing::debug!(error = %e, "could not lower the model service's priority");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl ModelService {
    /// Load what every target should run (the stored deploy, else the
    /// configured model), build the slots and start the service thread.
    pub fn start(opts: ServiceOptions) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut targets = BTreeMap::new();
        let mut slots = BTreeMap::new();
        let now = opts.clock.now_ns();
        for spec in opts.targets {
            let store = TargetStore::new(&opts.state_dir, &spec.id);
            let initial = load_initial(&spec, &opts.keyring, &opts.settings)?;
            let rec = store.load().unwrap_or_else(|e| {
                tracing::error!(target = %spec.id, error = %e, "model state unreadable; running the configured model");
                TargetRecord::default()
            });
            let load = |r: &StoredRef, what: &str| -> Option<Entry> {
                match r {
                    StoredRef::Initial => Some(initial.clone()),
                    StoredRef::Bundle(s) => match load_stored(&spec, &store, s, &opts.keyring, opts.settings.limits) {
                        Ok(e) => {
                            opts.audit.record(
                                now,
                                AuditRecord {
                                    origin: "node".into(),
                                    actor: Some("node:start".into()),
                                    bundle_name: Some(e.info.name.clone()),
                                    bundle_version: Some(e.info.version.clone()),
                                    bundle_digest: e.info.digest.clone(),
                                    bundle_signer: e.info.signer.clone(),
                                    to_version: Some(e.info.version.clone()),
                                    ..AuditRecord::new(
                                        "load_at_start",
                                        &spec.id,
                                        true,
                                        "ok",
                                        format!("{what} model re-verified and loaded"),
                                    )
                                },
                            );
                            Some(e)
                        }
                        Err(r) => {
                            tracing::error!(target = %spec.id, model = %s.info.version, error = %r, "a stored model was refused at start");
                            opts.audit.record(
                                now,
                                AuditRecord {
                                    origin: "node".into(),
                                    actor: Some("node:start".into()),
                                    bundle_name: Some(s.info.name.clone()),
                                    bundle_version: Some(s.info.version.clone()),
                                    bundle_digest: s.info.digest.clone(),
                                    ..AuditRecord::new(
                                        "load_at_start",
                                        &spec.id,
                                        false,
                                        r.code(),
                                        format!("{what} model refused at start: {r}"),
                                    )
                                },
                            );
                            None
                        }
                    },
                }
            };
            let (current, previous, changed) = match load(&rec.current, "current") {
                Some(cur) => {
                    let prev = rec.previous.as_ref().and_then(|p| load(p, "previous"));
                    let changed = prev.is_none() && rec.previous.is_some();
                    (cur, prev, changed)
                }
                None => (initial.clone(), None, true),
            };
            if changed {
                let fixed = TargetRecord {
                    current: current.stored.clone(),
                    previous: previous.as_ref().map(|p| p.stored.clone()),
                };
                if let Err(e) = store.save(&fixed) {
                    tracing::error!(target = %spec.id, error = %e, "cannot write the model state");
                }
            }
            check_fits(&spec, &current.model, 1)
                .map_err(|e| anyhow::anyhow!("{}: the model does not fit the target: {e}", spec.id))?;
            let slot = Arc::new(ModelSlot::new(
                &spec.id,
                spec.inspector.clone(),
                current.model.clone(),
                (*current.info).clone(),
            ));
            slots.insert(spec.id.clone(), slot.clone());
            targets.insert(
                spec.id.clone(),
                TargetRt {
                    spec,
                    slot,
                    store,
                    current,
                    previous,
                    generation: 1,
                    probation: false,
                    passed: 0,
                    swapped: 0,
                    swap_ns_max: None,
                    published: None,
                },
            );
        }
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let (pre_device, pre_keyring, pre_policy, pre_clock) = (
            opts.device.clone(),
            opts.keyring.clone(),
            opts.policy,
            opts.clock.clone(),
        );
        let mut mgr = Manager {
            device: opts.device,
            keyring: opts.keyring,
            policy: opts.policy,
            settings: opts.settings.clone(),
            clock: opts.clock,
            audit: opts.audit.clone(),
            replay: opts.replay,
            targets,
            status: status.clone(),
            notify: opts.notify,
            rx,
            deferred: VecDeque::new(),
        };
        for id in mgr.targets.keys().cloned().collect::<Vec<_>>() {
            mgr.publish_status(&id);
        }
        let thread = std::thread::Builder::new()
            .name("triad-models".into())
            .spawn(move || {
                lower_priority();
                mgr.run();
            })
            .context("cannot start the model service thread")?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                slots,
                status,
                audit: opts.audit,
                settings: opts.settings,
                thread: Mutex::new(Some(thread)),
                device: pre_device,
                keyring: pre_keyring,
                policy: pre_policy,
                clock: pre_clock,
            }),
        })
    }

    /// The slot of `target`.
    pub fn slot(&self, target: &str) -> Option<&Arc<ModelSlot>> {
        self.inner.slots.get(target)
    }

    /// Target ids.
    pub fn targets(&self) -> Vec<String> {
        self.inner.slots.keys().cloned().collect()
    }

    /// The audit trail.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.inner.audit
    }

    /// The bundle limits (for front ends that receive archives).
    pub fn limits(&self) -> BundleLimits {
        self.inner.settings.limits
    }

    /// Checks 1–4 of a token (form, algorithm, key, signature, claims, use,
    /// time, audience, target) without using it up: front ends call this
    /// before they read a request's body, so that an unauthenticated caller
    /// cannot make the node receive a bundle. The full checks, replay
    /// included, run again in the service.
    pub fn precheck(&self, target: &str, token: &str, use_: TokenUse) -> Result<(), Refusal> {
        let i = &self.inner;
        let now_s = i.clock.now_ns().div_euclid(1_000_000_000);
        let tok = crate::trust::token::verify(token, &i.keyring, use_, &i.device, now_s, i.policy)?;
        if tok.claims.sub != target {
            return Err(Refusal::WrongTarget {
                token_sub: tok.claims.sub,
                target: target.into(),
            });
        }
        Ok(())
    }

    /// Record a refusal made by a front end (e.g. [`ModelService::precheck`]).
    pub fn audit_refusal(&self, action: &str, target: &str, origin: &str, token: &str, r: &Refusal) {
        let (actor, key_id, token_id) = peek_unverified(token);
        self.inner.audit.record(
            self.inner.clock.now_ns(),
            AuditRecord {
                origin: origin.into(),
                actor,
                key_id,
                token_id,
                ..AuditRecord::new(action, target, false, r.code(), r.to_string())
            },
        );
    }

    /// What every target runs.
    pub fn status(&self) -> Vec<TargetStatus> {
        self.inner
            .status
            .lock()
            .expect("status poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// An inspection worker's side for the cell `target` (its reports go
    /// to the service).
    pub fn worker(&self, target: &str) -> anyhow::Result<WorkerModels> {
        self.slot_worker(target, ModelKind::Inspection)
    }

    /// The twin thread's side for the asset `target`: the twin's predictor.
    pub fn twin_worker(&self, target: &str) -> anyhow::Result<TwinModels> {
        self.slot_worker(target, ModelKind::Twin)
    }

    fn slot_worker<R: Runner>(&self, target: &str, kind: ModelKind) -> anyhow::Result<SlotWorker<R>> {
        let slot = self.slot(target).with_context(|| format!("no model target {target}"))?;
        let running = slot.current().model.manifest().kind;
        anyhow::ensure!(
            running == kind,
            "model target {target} runs {running:?} models, not {kind:?}"
        );
        let tx = self.inner.tx.clone();
        Ok(slot.worker(
            self.inner.settings.fuse,
            Box::new(move |r| {
                let _ = tx.send(Msg::Worker(r));
            }),
        )?)
    }

    fn request(&self, make: impl FnOnce(Reply) -> Msg) -> Answer {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.inner.tx.send(make(reply)).is_err() {
            let (reply, rx2) = tokio::sync::oneshot::channel();
            let _ = reply.send(Err(Refusal::Unavailable {
                detail: "the model service has stopped".into(),
            }));
            return rx2;
        }
        rx
    }

    fn gone() -> Refusal {
        Refusal::Unavailable {
            detail: "the model service stopped before answering".into(),
        }
    }

    fn deploy_request(&self, target: &str, token: &str, bundle: BundlePayload, origin: &str) -> Answer {
        self.request(|reply| Msg::Deploy {
            target: target.into(),
            token: token.into(),
            bundle,
            origin: origin.into(),
            reply,
        })
    }

    fn rollback_request(&self, target: &str, token: &str, origin: &str) -> Answer {
        self.request(|reply| Msg::Rollback {
            target: target.into(),
            token: token.into(),
            origin: origin.into(),
            reply,
        })
    }

    /// Deploy `bundle` to `target`, authorised by `token`. `origin` names the
    /// front end and peer for the audit log.
    pub async fn deploy(
        &self,
        target: &str,
        token: &str,
        bundle: BundlePayload,
        origin: &str,
    ) -> Result<DeployReport, Refusal> {
        let rx = self.deploy_request(target, token, bundle, origin);
        rx.await.unwrap_or_else(|_| Err(Self::gone()))
    }

    /// [`ModelService::deploy`] from synchronous code (tests, tools).
    pub fn deploy_blocking(
        &self,
        target: &str,
        token: &str,
        bundle: BundlePayload,
        origin: &str,
    ) -> Result<DeployReport, Refusal> {
        let rx = self.deploy_request(target, token, bundle, origin);
        rx.blocking_recv().unwrap_or_else(|_| Err(Self::gone()))
    }

    /// Roll `target` back to its previous model, authorised by `token`.
    pub async fn rollback(&self, target: &str, token: &str, origin: &str) -> Result<DeployReport, Refusal> {
        let rx = self.rollback_request(target, token, origin);
        rx.await.unwrap_or_else(|_| Err(Self::gone()))
    }

    /// [`ModelService::rollback`] from synchronous code.
    pub fn rollback_blocking(&self, target: &str, token: &str, origin: &str) -> Result<DeployReport, Refusal> {
        let rx = self.rollback_request(target, token, origin);
        rx.blocking_recv().unwrap_or_else(|_| Err(Self::gone()))
    }

    /// Stop the service thread (after the workers stopped).
    pub fn stop(&self) {
        let _ = self.inner.tx.send(Msg::Stop);
        if let Some(t) = self.inner.thread.lock().expect("poisoned").take() {
            let _ = t.join();
        }
    }
}

impl Manager {
    fn run(&mut self) {
        loop {
            let msg = match self.deferred.pop_front() {
                Some(m) => m,
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            match msg {
                Msg::Stop => return,
                Msg::Worker(r) => self.handle_worker(r),
                Msg::Deploy {
                    target,
                    token,
                    bundle,
                    origin,
                    reply,
                } => {
                    let r = self.deploy(&target, &token, bundle, &origin);
                    let _ = reply.send(r);
                }
                Msg::Rollback {
                    target,
                    token,
                    origin,
                    reply,
                } => {
                    let r = self.rollback(&target, &token, &origin);
                    let _ = reply.send(r);
                }
            }
        }
    }

    fn now_s(&self) -> i64 {
        self.clock.now_ns().div_euclid(1_000_000_000)
    }

    fn publish_status(&mut self, id: &str) -> Option<TargetStatus> {
        let t = self.targets.get(id)?;
        let st = TargetStatus {
            target: id.into(),
            kind: t.spec.kind,
            generation: t.generation,
            current: (*t.current.info).clone(),
            previous: t.previous.as_ref().map(|p| (*p.info).clone()),
            probation: t.probation,
            workers: t.slot.workers(),
            swapped_workers: t.swapped,
            last_swap_ns: t.swap_ns_max,
        };
        self.status
            .lock()
            .expect("status poisoned")
            .insert(id.into(), st.clone());
        Some(st)
    }

    fn record(&mut self, rec: AuditRecord) {
        let rec = self.audit.record(self.clock.now_ns(), rec);
        if let Some(st) = self.publish_status(&rec.target.clone())
            && let Some(n) = &self.notify
        {
            n(&rec, &st);
        }
    }

    fn refuse(
        &mut self,
        action: &str,
        target: &str,
        origin: &str,
        token: &str,
        tok: Option<&VerifiedToken>,
        r: &Refusal,
    ) {
        let (actor, key_id, token_id) = match tok {
            Some(t) => (
                Some(t.claims.iss.clone()),
                Some(t.key_name.clone()),
                Some(t.claims.jti.clone()),
            ),
            None => peek_unverified(token),
        };
        let running = self.targets.get(target).map(|t| t.current.info.version.clone());
        self.record(AuditRecord {
            origin: origin.into(),
            actor,
            key_id,
            token_id,
            bundle_digest: tok.and_then(|t| t.claims.bundle_digest.clone()),
            bundle_version: tok.and_then(|t| t.claims.bundle_version.clone()),
            from_version: running.clone(),
            to_version: running,
            ..AuditRecord::new(action, target, false, r.code(), r.to_string())
        });
    }

    fn ctx(&self) -> CheckContext<'_> {
        CheckContext {
            keyring: &self.keyring,
            device: &self.device,
            policy: self.policy,
            limits: self.settings.limits,
        }
    }

    fn known(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// The first gate of a request: the target exists, then checks 1–5 of
    /// the token (the replay check uses it up). A refusal is audited under
    /// `action`.
    fn admit(
        &mut self,
        action: &str,
        use_: TokenUse,
        target: &str,
        token: &str,
        origin: &str,
    ) -> Result<VerifiedToken, Refusal> {
        let checked = if self.targets.contains_key(target) {
            let now_s = self.now_s();
            let ctx = self.ctx();
            let mut replay = self.replay.lock().expect("replay poisoned");
            check_token(token, use_, target, &ctx, now_s, &mut *replay)
        } else {
            Err(Refusal::UnknownTarget {
                target: target.into(),
                known: self.known(),
            })
        };
        checked.inspect_err(|r| self.refuse(action, target, origin, token, None, r))
    }

    fn deploy(
        &mut self,
        target: &str,
        token: &str,
        payload: BundlePayload,
        origin: &str,
    ) -> Result<DeployReport, Refusal> {
        let t0 = Instant::now();
        // Checks 1–5 (token), then 6–12 (bundle), audited with the token's issuer.
        let tok = self.admit("deploy", TokenUse::Deploy, target, token, origin)?;
        let t = &self.targets[target];
        let state = TargetState {
            id: target.into(),
            kind: t.spec.kind,
            running_version: t.current.info.version.clone(),
        };
        let verified = {
            let input = match &payload {
                BundlePayload::Archive(b) => BundleInput::Archive(b),
                BundlePayload::Files(b) => BundleInput::Files(b.clone()),
            };
            checks::check_deploy_bundle(tok.clone(), &state, input, &self.ctx())
        };
        let v = match verified {
            Ok(v) => v,
            Err(r) => {
                self.refuse("deploy", target, origin, token, Some(&tok), &r);
                return Err(r);
            }
        };
        let verify_ms = ms(t0.elapsed());
        match self.stage_and_publish(target, &v, verify_ms, t0, origin) {
            Ok(rep) => Ok(rep),
            Err(r) => {
                let mut rec_tok = v.token.clone();
                rec_tok.claims.bundle_digest = Some(v.manifest.digest.clone());
                self.refuse("deploy", target, origin, token, Some(&rec_tok), &r);
                Err(r)
            }
        }
    }

    /// Build one inspector per worker for `model` (checked against the
    /// target's ROI) and warm the model up on a session of this thread: the
    /// weights are paged in and tract's kernels chosen before the swap. The
    /// staged inspectors are not run here: a tract session must run and be
    /// dropped on one thread (see `slot`).
    fn stage(&self, t: &TargetRt, model: &Arc<OnnxModel>) -> Result<Vec<Option<Inspector>>, Refusal> {
        if t.spec.kind == ModelKind::Twin {
            // A twin session is tiny; the twin thread builds its own at the
            // swap (between two samples, 20 per second).
            check_fits(&t.spec, model, self.settings.warmup_runs).map_err(|detail| Refusal::Incompatible {
                target: t.spec.id.clone(),
                detail,
            })?;
            return Ok(Vec::new());
        }
        let cfg = t.slot.inspector_config();
        let n = t.slot.worker_slots().max(1);
        let incompatible = |e: InspectError| Refusal::Incompatible {
            target: t.spec.id.clone(),
            detail: e.to_string(),
        };
        // The config bounds the ROI (MAX_FRAME_SIDE_PX); u32 sums cannot wrap there.
        let (w, h) = (cfg.roi.x.saturating_add(cfg.roi.w), cfg.roi.y.saturating_add(cfg.roi.h));
        let frame = vec![0u8; w as usize * h as usize];
        let image = GrayImage {
            width: w,
            height: h,
            pixels: &frame,
        };
        let mut warm = Inspector::new(cfg.clone(), model).map_err(incompatible)?;
        for _ in 0..self.settings.warmup_runs {
            match warm.inspect(&image) {
                Ok(_) | Err(InspectError::NonFinite { .. }) => {}
                Err(InspectError::Model(e)) => {
                    return Err(Refusal::ModelLoad {
                        detail: format!("warm-up run failed: {e}"),
                    });
                }
                Err(e) => return Err(incompatible(e)),
            }
        }
        drop(warm);
        let mut staged = Vec::with_capacity(n);
        for _ in 0..n {
            staged.push(Some(Inspector::new(cfg.clone(), model).map_err(incompatible)?));
        }
        Ok(staged)
    }

    fn stage_and_publish(
        &mut self,
        target: &str,
        v: &VerifiedDeploy,
        verify_ms: f64,
        t0: Instant,
        origin: &str,
    ) -> Result<DeployReport, Refusal> {
        let t_load = Instant::now();
        let model = Arc::new(
            OnnxModel::load(
                v.bundle.get(MODEL_FILE).unwrap_or_default(),
                v.manifest.manifest.clone(),
            )
            .map_err(|e| Refusal::ModelLoad { detail: e.to_string() })?,
        );
        let load_ms = ms(t_load.elapsed());
        let t_warm = Instant::now();
        let staged = self.stage(&self.targets[target], &model)?;
        let warmup_ms = ms(t_warm.elapsed());
        let t_golden = Instant::now();
        golden_check(&model, &v.bundle, &v.manifest)?;
        let golden_ms = ms(t_golden.elapsed());
        let now_ns = self.clock.now_ns();
        let t = self.targets.get_mut(target).expect("checked");
        let dir = t.store.put_bundle(&v.manifest.digest, &v.bundle)?;
        let mut info = info_of(&model, "bundle");
        info.digest = Some(v.manifest.digest.clone());
        info.signer = Some(v.signer.clone());
        info.deployed_by = Some(v.token.claims.iss.clone());
        info.deployed_ns = Some(now_ns);
        let entry = Entry {
            model: model.clone(),
            stored: StoredRef::Bundle(StoredModel {
                dir,
                info: ModelInfoRecord::from(&info),
            }),
            info: Arc::new(info),
        };
        let from_version = t.current.info.version.clone();
        let new_previous = if t.probation {
            t.previous.clone()
        } else {
            Some(t.current.clone())
        };
        t.store
            .save(&TargetRecord {
                current: entry.stored.clone(),
                previous: new_previous.as_ref().map(|p| p.stored.clone()),
            })
            .map_err(|e| Refusal::Unavailable {
                detail: format!("cannot persist the deploy ({e}); nothing was swapped"),
            })?;
        t.previous = new_previous;
        t.current = entry;
        // Audited (fsync) before it is published, so that the workers' swap
        // and first frames do not meet the service's disk writes.
        let model = (*self.targets[target].current.info).clone();
        self.record(AuditRecord {
            origin: origin.into(),
            actor: Some(v.token.claims.iss.clone()),
            key_id: Some(v.token.key_name.clone()),
            token_id: Some(v.token.claims.jti.clone()),
            bundle_name: Some(v.manifest.manifest.name.clone()),
            bundle_version: Some(v.manifest.manifest.version.clone()),
            bundle_digest: Some(v.manifest.digest.clone()),
            bundle_signer: Some(v.signer.clone()),
            from_version: Some(from_version.clone()),
            to_version: Some(model.version.clone()),
            ..AuditRecord::new(
                "deploy",
                target,
                true,
                "ok",
                "verified, loaded, warmed up, golden cases passed; published to the workers, who take it between two frames; on probation",
            )
        });
        self.publish(target, true, staged);
        let generation = self.targets[target].generation;
        let (swapped, workers, swap_max) = self.wait_swapped(target, generation);
        Ok(DeployReport {
            outcome: "deployed",
            target: target.into(),
            model,
            from_version,
            generation,
            swapped_workers: swapped,
            workers,
            swap_ns_max: swap_max,
            timings: Timings {
                verify_ms,
                load_ms,
                warmup_ms,
                golden_ms,
                total_ms: ms(t0.elapsed()),
            },
        })
    }

    /// Publish the target's current model (with its previous) to the workers.
    fn publish(&mut self, target: &str, probation: bool, staged: Vec<Option<Inspector>>) {
        let t = self.targets.get_mut(target).expect("known target");
        if let Some(old) = t.published.take() {
            drop(old.drain_staged());
        }
        t.generation += 1;
        t.probation = probation;
        t.passed = 0;
        t.swapped = 0;
        t.swap_ns_max = None;
        t.slot.publish(Deployed::new(
            t.generation,
            t.current.model.clone(),
            t.current.info.clone(),
            t.previous.as_ref().map(|p| p.model.clone()),
            probation,
            staged,
        ));
        // Kept to drop the inspectors no worker took, off the frame path.
        t.published = Some(t.slot.current());
        self.publish_status(target);
    }

    /// Handle worker reports until every worker of `target` runs the current
    /// generation or the wait is over. Returns (swapped, workers, max swap ns).
    fn wait_swapped(&mut self, target: &str, generation: u64) -> (usize, usize, Option<i64>) {
        let deadline = Instant::now() + self.settings.swap_wait;
        let mut seen = (0, self.targets[target].slot.workers(), None);
        loop {
            let t = &self.targets[target];
            if t.generation != generation {
                // Superseded while waiting (a fuse rolled it back): report what was seen.
                return seen;
            }
            let workers = t.slot.workers();
            seen = (t.swapped, workers, t.swap_ns_max);
            if t.swapped >= workers {
                return seen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    target,
                    swapped = t.swapped,
                    workers,
                    "not every worker took the new model within the wait; they take it at their next frame"
                );
                return seen;
            }
            match self.rx.recv_timeout(left) {
                Ok(Msg::Worker(r)) => self.handle_worker(r),
                Ok(Msg::Stop) => {
                    self.deferred.push_front(Msg::Stop);
                    return seen;
                }
                Ok(other) => self.deferred.push_back(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return seen,
            }
        }
    }

    fn rollback(&mut self, target: &str, token: &str, origin: &str) -> Result<DeployReport, Refusal> {
        let t0 = Instant::now();
        let tok = self.admit("rollback", TokenUse::Rollback, target, token, origin)?;
        match self.roll_back(target) {
            Ok(rep) => {
                self.record(AuditRecord {
                    origin: origin.into(),
                    actor: Some(tok.claims.iss.clone()),
                    key_id: Some(tok.key_name.clone()),
                    token_id: Some(tok.claims.jti.clone()),
                    bundle_name: Some(rep.model.name.clone()),
                    bundle_version: Some(rep.model.version.clone()),
                    bundle_digest: rep.model.digest.clone(),
                    bundle_signer: rep.model.signer.clone(),
                    from_version: Some(rep.from_version.clone()),
                    to_version: Some(rep.model.version.clone()),
                    ..AuditRecord::new("rollback", target, true, "ok", "rolled back on request")
                });
                let mut rep = rep;
                rep.timings.total_ms = ms(t0.elapsed());
                Ok(rep)
            }
            Err(r) => {
                self.refuse("rollback", target, origin, token, Some(&tok), &r);
                Err(r)
            }
        }
    }

    /// Make the previous model current (no previous remains).
    fn roll_back(&mut self, target: &str) -> Result<DeployReport, Refusal> {
        let t = self.targets.get_mut(target).expect("known target");
        let Some(prev) = t.previous.clone() else {
            return Err(Refusal::NothingToRollBack { target: target.into() });
        };
        let from_version = t.current.info.version.clone();
        t.store
            .save(&TargetRecord {
                current: prev.stored.clone(),
                previous: None,
            })
            .map_err(|e| Refusal::Unavailable {
                detail: format!("cannot persist the rollback ({e})"),
            })?;
        t.current = prev;
        t.previous = None;
        // Workers still hold the previous inspector; stage only for those that may not.
        let staged = {
            let t = &self.targets[target];
            let n = if t.spec.kind == ModelKind::Inspection {
                t.slot.worker_slots()
            } else {
                0
            };
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(Inspector::new(t.slot.inspector_config().clone(), &t.current.model).ok());
            }
            v
        };
        self.publish(target, false, staged);
        let (generation, model) = {
            let t = &self.targets[target];
            (t.generation, (*t.current.info).clone())
        };
        let (swapped, workers, swap_max) = self.wait_swapped(target, generation);
        Ok(DeployReport {
            outcome: "rolled_back",
            target: target.into(),
            model,
            from_version,
            generation,
            swapped_workers: swapped,
            workers,
            swap_ns_max: swap_max,
            timings: Timings::default(),
        })
    }

    fn handle_worker(&mut self, r: WorkerReport) {
        match r {
            WorkerReport::Swapped {
                target,
                generation,
                swap_ns,
                built_on_worker,
                worker,
            } => {
                if built_on_worker {
                    tracing::warn!(target = %target, worker, "a worker had to build its inspector itself (a frame may have waited)");
                }
                if let Some(t) = self.targets.get_mut(&target)
                    && t.generation == generation
                {
                    t.swapped += 1;
                    t.swap_ns_max = Some(t.swap_ns_max.unwrap_or(0).max(swap_ns));
                    if t.swapped >= t.slot.workers()
                        && let Some(d) = &t.published
                    {
                        drop(d.drain_staged());
                    }
                    self.publish_status(&target);
                }
            }
            WorkerReport::ProbationPassed {
                target,
                generation,
                frames,
                ..
            } => {
                let done = match self.targets.get_mut(&target) {
                    Some(t) if t.generation == generation && t.probation => {
                        t.passed += 1;
                        if t.passed >= t.slot.workers() {
                            t.probation = false;
                            Some(t.current.info.clone())
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(info) = done {
                    self.record(AuditRecord {
                        origin: "node".into(),
                        actor: Some("node:fuse".into()),
                        bundle_name: Some(info.name.clone()),
                        bundle_version: Some(info.version.clone()),
                        bundle_digest: info.digest.clone(),
                        bundle_signer: info.signer.clone(),
                        from_version: Some(info.version.clone()),
                        to_version: Some(info.version.clone()),
                        ..AuditRecord::new(
                            "probation_passed",
                            &target,
                            true,
                            "ok",
                            format!("model passed probation ({frames} frames on the last worker)"),
                        )
                    });
                }
            }
            WorkerReport::FuseTripped {
                target,
                generation,
                reason,
                rolled_back,
                worker,
            } => {
                let current_gen = self.targets.get(&target).map(|t| t.generation);
                if current_gen != Some(generation) {
                    tracing::info!(target = %target, worker, generation, "fuse report for an older model; already handled");
                    return;
                }
                let bad = self.targets[&target].current.info.clone();
                match self.roll_back(&target) {
                    Ok(rep) => self.record(AuditRecord {
                        origin: "node".into(),
                        actor: Some("node:fuse".into()),
                        bundle_name: Some(bad.name.clone()),
                        bundle_version: Some(bad.version.clone()),
                        bundle_digest: bad.digest.clone(),
                        bundle_signer: bad.signer.clone(),
                        from_version: Some(bad.version.clone()),
                        to_version: Some(rep.model.version.clone()),
                        ..AuditRecord::new(
                            "auto_rollback",
                            &target,
                            true,
                            reason.code(),
                            format!(
                                "{reason}; rolled back from {} to {} (worker {worker} switched at once: {rolled_back})",
                                bad.version, rep.model.version
                            ),
                        )
                    }),
                    Err(r) => self.record(AuditRecord {
                        origin: "node".into(),
                        actor: Some("node:fuse".into()),
                        bundle_version: Some(bad.version.clone()),
                        ..AuditRecord::new(
                            "auto_rollback",
                            &target,
                            false,
                            r.code(),
                            format!("{reason}; cannot roll back: {r}"),
                        )
                    }),
                }
            }
        }
    }
}
