//! Shared pieces of the model-swap tests: keys made at run time, bundles of
//! the weld model, tokens, a model service with a live inspection worker.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use triad_edge::clock::{Clock, SystemClock};
use triad_edge::models::bundle::{self, BuildSpec, Bundle};
use triad_edge::models::fuse::FuseConfig;
use triad_edge::models::manager::{InitialModel, ModelService, ModelsSettings, ServiceOptions, TargetSpec};
use triad_edge::models::{BundlePayload, DeployReport, Refusal};
use triad_edge::trust::SharedReplay;
use triad_edge::trust::audit::{AuditLog, AuditRecord};
use triad_edge::trust::keyring::{KeyUse, Keyring, TrustedKey};
use triad_edge::trust::keys::SigningKey;
use triad_edge::trust::replay::RedbReplay;
use triad_edge::trust::token::{self, Audience, Claims, TokenPolicy, TokenUse};
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_hw::{Camera, CaptureTrigger};
use triad_inspect::{GrayImage, InspectorConfig, ModelKind, ModelManifest, Roi};
use triad_tests::{TempDir, python, workspace_root};

pub const DEVICE: &str = "edge-01";
pub const CELL: &str = "cell_2245";

/// Keys generated for one test run.
pub struct Keys {
    /// Signs bundles (trusted).
    pub release: SigningKey,
    /// Signs bundles (trusted once, now revoked).
    pub old_release: SigningKey,
    /// Issues deploy, rollback and command tokens.
    pub ops: SigningKey,
    /// Known to nobody.
    pub stranger: SigningKey,
}

impl Keys {
    pub fn new() -> Self {
        let k = |n: &str| SigningKey::generate(n).unwrap().0;
        Self {
            release: k("release-2025"),
            old_release: k("release-2024"),
            ops: k("ops"),
            stranger: k("stranger"),
        }
    }

    pub fn keyring(&self) -> Keyring {
        Keyring::new(vec![
            TrustedKey {
                name: "release-2025".into(),
                public: *self.release.public(),
                uses: vec![KeyUse::Bundle],
                revoked: false,
            },
            TrustedKey {
                name: "release-2024".into(),
                public: *self.old_release.public(),
                uses: vec![KeyUse::Bundle],
                revoked: true,
            },
            TrustedKey {
                name: "ops".into(),
                public: *self.ops.public(),
                uses: vec![KeyUse::Deploy, KeyUse::Command],
                revoked: false,
            },
        ])
    }
}

pub fn now_s() -> i64 {
    SystemClock.now_ns().div_euclid(1_000_000_000)
}

pub fn weld_manifest() -> ModelManifest {
    serde_json::from_str(triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap()
}

/// An unsigned bundle of `onnx` as `version`.
pub fn build(
    onnx: &[u8],
    version: &str,
    golden_inputs: Vec<Vec<f32>>,
    golden_outputs: Option<Vec<Vec<f32>>>,
) -> Bundle {
    let mut manifest = weld_manifest();
    manifest.version = version.into();
    bundle::build(BuildSpec {
        model_onnx: onnx.to_vec(),
        manifest,
        target: CELL.into(),
        golden_inputs,
        golden_outputs,
        tolerance: 1e-4,
    })
    .unwrap()
}

/// The built-in weld model as a signed bundle of `version`.
pub fn weld_bundle(version: &str, signer: &SigningKey) -> Bundle {
    let mut b = build(triad_inspect::builtin::WELD_SEAM_ONNX, version, vec![], None);
    bundle::sign(&mut b, signer).unwrap();
    b
}

pub fn digest(b: &Bundle) -> String {
    bundle::parse_manifest(b).unwrap().digest
}

pub fn deploy_claims(b: &Bundle) -> Claims {
    let p = bundle::parse_manifest(b).unwrap();
    let now = now_s();
    Claims {
        iss: "alice@plant".into(),
        sub: p.target().into(),
        aud: Audience::One(DEVICE.into()),
        nbf: now - 5,
        exp: now + 300,
        iat: Some(now - 5),
        jti: token::new_jti(),
        use_: TokenUse::Deploy,
        bundle_digest: Some(p.digest.clone()),
        bundle_version: Some(p.manifest.version.clone()),
        scope: None,
    }
}

pub fn rollback_claims() -> Claims {
    let now = now_s();
    Claims {
        iss: "alice@plant".into(),
        sub: CELL.into(),
        aud: Audience::One(DEVICE.into()),
        nbf: now - 5,
        exp: now + 300,
        iat: None,
        jti: token::new_jti(),
        use_: TokenUse::Rollback,
        bundle_digest: None,
        bundle_version: None,
        scope: None,
    }
}

/// Run a script of tests/python with the venv's Python.
pub fn py(script: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(python())
        .arg(workspace_root().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A variant of the weld model made by tests/python/make_models.py.
pub fn model_variant(dir: &Path, kind: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{kind}.onnx"));
    let src = workspace_root().join("inspect/models/weld_seam/model.onnx");
    let mut args = vec![kind, src.to_str().unwrap(), out.to_str().unwrap()];
    args.extend_from_slice(extra);
    py("make_models.py", &args);
    std::fs::read(out).unwrap()
}

/// Test settings: short probation, small swap wait.
pub fn settings() -> ModelsSettings {
    ModelsSettings {
        fuse: FuseConfig {
            probation: Duration::from_millis(1500),
            min_frames: 10,
            slow_frames: 3,
            ..FuseConfig::default()
        },
        swap_wait: Duration::from_secs(3),
        ..ModelsSettings::default()
    }
}

pub fn inspector_config() -> InspectorConfig {
    InspectorConfig {
        roi: Roi {
            x: 16,
            y: 8,
            w: 64,
            h: 64,
        },
        threshold: 0.5,
    }
}

/// What one frame gave.
#[derive(Clone, Debug)]
pub struct FrameLog {
    pub frame: u64,
    pub result: Result<String, String>,
    pub generation: u64,
}

/// An inspection worker on its own thread, like the node's: between two
/// frames it polls the slot, then inspects one simulated weld.
pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub frames: Receiver<FrameLog>,
}

impl Worker {
    pub fn start(service: &ModelService, period: Duration) -> Self {
        let mut models = service.worker(CELL).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let st = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut cam = SimCamera::new(SimCameraConfig {
                seed: 11,
                ..SimCameraConfig::default()
            });
            let mut k = 0u64;
            while !st.load(Ordering::Relaxed) {
                models.poll_swap();
                k += 1;
                let f = cam
                    .capture(&CaptureTrigger {
                        module_serial: 1 + k / 24,
                        weld_index: (k % 24) as u32,
                        stamp_ns: 0,
                        weld_temp_c: 185.0,
                    })
                    .unwrap();
                let r = models.inspect(&GrayImage {
                    width: f.width,
                    height: f.height,
                    pixels: &f.pixels,
                });
                let _ = tx.send(FrameLog {
                    frame: k,
                    result: r.map(|i| i.model_version).map_err(|e| e.to_string()),
                    generation: models.generation(),
                });
                std::thread::sleep(period);
            }
        });
        Self {
            stop,
            handle: Some(handle),
            frames: rx,
        }
    }

    /// Frames logged so far.
    pub fn drain(&self) -> Vec<FrameLog> {
        self.frames.try_iter().collect()
    }

    /// Wait for `n` more frames.
    pub fn next(&self, n: usize) -> Vec<FrameLog> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            if let Ok(f) = self.frames.recv_timeout(Duration::from_millis(200)) {
                out.push(f);
            }
        }
        assert_eq!(out.len(), n, "the worker stopped producing frames");
        out
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A model service for `cell_2245` (running the built-in weld model 1.0.0)
/// with its audit log, replay store and one live worker.
pub struct Rig {
    pub dir: TempDir,
    pub keys: Keys,
    pub service: ModelService,
    pub audit: Arc<AuditLog>,
    pub worker: Option<Worker>,
}

impl Rig {
    pub fn new(name: &str) -> Self {
        Self::with(name, settings(), Keys::new())
    }

    pub fn with(name: &str, settings: ModelsSettings, keys: Keys) -> Self {
        let dir = TempDir::new(name);
        let (service, audit) = start_service(dir.path(), &keys, settings);
        let worker = Some(Worker::start(&service, Duration::from_millis(4)));
        Self {
            dir,
            keys,
            service,
            audit,
            worker,
        }
    }

    pub fn worker(&self) -> &Worker {
        self.worker.as_ref().unwrap()
    }

    pub fn deploy(&self, b: &Bundle, token: &str) -> Result<DeployReport, Refusal> {
        self.service
            .deploy_blocking(CELL, token, BundlePayload::Archive(b.to_archive()), "test")
    }

    pub fn deploy_archive(&self, archive: Vec<u8>, token: &str) -> Result<DeployReport, Refusal> {
        self.service
            .deploy_blocking(CELL, token, BundlePayload::Archive(archive), "test")
    }

    pub fn token(&self, c: &Claims) -> String {
        token::issue(c, &self.keys.ops)
    }

    /// Version, generation of what the service publishes now.
    pub fn running(&self) -> (String, u64) {
        let st = self.service.status().into_iter().next().unwrap();
        (st.current.version, st.generation)
    }

    /// The refusal must be `code`, name `needle`, and leave 1.0.0 (generation
    /// `expected_gen`) in place: in the slot, in the status and on the worker's frames.
    pub fn assert_refused(&self, r: Result<DeployReport, Refusal>, code: &str, needle: &str, expected_gen: u64) {
        let e = match r {
            Ok(rep) => panic!("expected refusal {code}, but it was accepted: {rep:?}"),
            Err(e) => e,
        };
        assert_eq!(e.code(), code, "wrong refusal: {e}");
        assert!(e.to_string().contains(needle), "reason {e:?} does not name {needle:?}");
        let slot = self.service.slot(CELL).unwrap().current();
        assert_eq!(slot.generation, expected_gen, "the slot was republished");
        assert_eq!(slot.info.version, "1.0.0");
        assert_eq!(self.running(), ("1.0.0".to_string(), expected_gen));
        let frames = self.worker().next(3);
        for f in &frames {
            assert_eq!(f.result.as_deref(), Ok("1.0.0"), "{f:?}");
            assert_eq!(f.generation, expected_gen);
        }
        let last = self.audit.recent(1).pop().expect("audited");
        assert_eq!((last.action.as_str(), last.outcome.as_str()), ("deploy", "refused"));
        assert_eq!(last.code, code, "{last:?}");
    }

    /// Stop the service (and the worker), keeping the state directory.
    pub fn stop(&mut self) {
        self.worker.take();
        self.service.stop();
    }

    /// Start again on the same state directory.
    pub fn restart(&mut self, settings: ModelsSettings) {
        self.stop();
        let (service, audit) = start_service(self.dir.path(), &self.keys, settings);
        self.service = service;
        self.audit = audit;
        self.worker = Some(Worker::start(&self.service, Duration::from_millis(4)));
    }

    pub fn audit_records(&self) -> Vec<AuditRecord> {
        self.audit.recent(500)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_service(dir: &Path, keys: &Keys, settings: ModelsSettings) -> (ModelService, Arc<AuditLog>) {
    let audit = Arc::new(AuditLog::open(&dir.join("audit.jsonl"), DEVICE).unwrap());
    let replay: SharedReplay = Arc::new(Mutex::new(
        RedbReplay::open(&dir.join("replay.redb"), TokenPolicy::default(), now_s()).unwrap(),
    ));
    let service = ModelService::start(ServiceOptions {
        device: DEVICE.into(),
        state_dir: dir.to_path_buf(),
        keyring: keys.keyring(),
        policy: TokenPolicy::default(),
        settings,
        targets: vec![TargetSpec {
            id: CELL.into(),
            kind: ModelKind::Inspection,
            inspector: inspector_config(),
            initial: InitialModel::Builtin,
        }],
        clock: Arc::new(SystemClock),
        audit: audit.clone(),
        replay,
        notify: None,
    })
    .unwrap();
    (service, audit)
}

/// The files of `b` as raw tar entries (to add hostile ones).
pub fn entries(b: &Bundle) -> Vec<(String, Vec<u8>)> {
    b.paths().map(|p| (p.to_string(), b.get(p).unwrap().to_vec())).collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn pathbuf(s: &str) -> PathBuf {
    PathBuf::from(s)
}
