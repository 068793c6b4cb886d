//! Signed model hot-swap under load: several simulated camera streams are
//! inspected at full rate while signed bundles are deployed again and again
//! through the whole pipeline (token, unpack, signature, digests, load,
//! warm-up, golden cases, swap between two frames).
//!
//! Run: `cargo bench -p triad-tests --bench model_swap` (release). Prints a
//! Markdown table for docs/benchmarks.md. Knobs (environment):
//! `BENCH_STREAMS` (3), `BENCH_FPS` per stream (200), `BENCH_BLOCKS` (40)
//! and `BENCH_BLOCK_S` (3), `BENCH_SWAP_EVERY_MS` (200), `BENCH_RSS_CYCLES`
//! (1000), `BENCH_RSS_WARMUP` (100).
//!
//! Phases: (A/B) `BENCH_BLOCKS` blocks of `BENCH_BLOCK_S` seconds
//! alternate between steady state (A, no deploys) and swapping (B, a deploy
//! every `BENCH_SWAP_EVERY_MS`), so that drifts in the machine's load fall
//! on both alike; (C) `BENCH_RSS_CYCLES` deploy-and-swap cycles back to
//! back, inspection still running, with the process's RSS read before and
//! after. Exit code 1 if a floor is missed (frames dropped, p99 ratio > 1.2,
//! RSS growth >= 1 MiB).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triad_edge::clock::{SystemClock, monotonic_ns, sleep_until_mono};
use triad_edge::models::bundle::{self, BuildSpec, Bundle};
use triad_edge::models::fuse::FuseConfig;
use triad_edge::models::manager::{InitialModel, ModelService, ModelsSettings, ServiceOptions, TargetSpec};
use triad_edge::models::{BundlePayload, DeployReport};
use triad_edge::trust::SharedReplay;
use triad_edge::trust::audit::AuditLog;
use triad_edge::trust::keyring::{KeyUse, Keyring, TrustedKey};
use triad_edge::trust::keys::SigningKey;
use triad_edge::trust::replay::RedbReplay;
use triad_edge::trust::token::{self, Audience, Claims, TokenPolicy, TokenUse};
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_hw::{Camera, CaptureTrigger, Frame};
use triad_inspect::{GrayImage, InspectorConfig, ModelKind, ModelManifest, Roi};
use triad_tests::TempDir;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const CELL: &str = "cell_2245";
const DEVICE: &str = "edge-01";

/// Frame latency samples (µs) of the phase being recorded.
struct Recorder {
    on: AtomicBool,
    /// (trigger time ns, latency µs).
    samples: Mutex<Vec<(i64, f64)>>,
    /// Latencies of the first frame of each worker after a swap.
    first_after_swap: Mutex<Vec<f64>>,
    errors: AtomicU64,
    frames: AtomicU64,
}

/// One stream: a camera (triggers at a fixed rate into a bounded queue, a
/// full queue is a dropped frame) and its inspection worker.
fn start_stream(
    service: &ModelService,
    fps: f64,
    stop: Arc<AtomicBool>,
    rec: Arc<Recorder>,
    dropped: Arc<AtomicU64>,
    seed: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    // Pre-rendered frames: the bench measures inspection, not the renderer.
    let mut cam = SimCamera::new(SimCameraConfig {
        seed,
        ..SimCameraConfig::default()
    });
    let frames: Arc<Vec<Frame>> = Arc::new(
        (0..64u64)
            .map(|k| {
                cam.capture(&CaptureTrigger {
                    module_serial: 1 + k / 24,
                    weld_index: (k % 24) as u32,
                    stamp_ns: 0,
                    weld_temp_c: 185.0 + (k % 20) as f64,
                })
                .unwrap()
            })
            .collect(),
    );
    let (tx, rx) = sync_channel::<(usize, i64)>(64);
    let period = (1e9 / fps) as i64;
    let st = stop.clone();
    let camera = std::thread::spawn(move || {
        let mut next = monotonic_ns() + period;
        let mut k = 0usize;
        while !st.load(Ordering::Relaxed) {
            sleep_until_mono(next);
            next += period;
            k += 1;
            match tx.try_send((k % 64, monotonic_ns())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    });
    let mut models = service.worker(CELL).unwrap();
    let worker = std::thread::spawn(move || {
        let mut local: Vec<(i64, f64)> = Vec::with_capacity(1 << 16);
        let mut firsts: Vec<f64> = Vec::with_capacity(1 << 12);
        let mut swapped = false;
        loop {
            swapped |= models.poll_swap();
            let (idx, t0) = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    swapped |= models.poll_swap();
                    match rx.recv_timeout(Duration::from_millis(2)) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let f = &frames[idx];
            let r = models.inspect(&GrayImage {
                width: f.width,
                height: f.height,
                pixels: &f.pixels,
            });
            let lat_us = (monotonic_ns() - t0) as f64 / 1e3;
            rec.frames.fetch_add(1, Ordering::Relaxed);
            if r.is_err() {
                rec.errors.fetch_add(1, Ordering::Relaxed);
            }
            if std::mem::take(&mut swapped) && firsts.len() < firsts.capacity() {
                firsts.push(lat_us);
            }
            if rec.on.load(Ordering::Relaxed) {
                local.push((t0, lat_us));
            } else if !local.is_empty() {
                rec.samples.lock().unwrap().append(&mut local);
            }
        }
        rec.samples.lock().unwrap().append(&mut local);
        rec.first_after_swap.lock().unwrap().append(&mut firsts);
    });
    vec![camera, worker]
}

struct Deployer {
    release: SigningKey,
    ops: SigningKey,
    manifest: ModelManifest,
    golden_in: Vec<Vec<f32>>,
    golden_out: Vec<Vec<f32>>,
    next_minor: u32,
}

impl Deployer {
    /// A signed bundle of the weld model with the next version, and its token.
    fn next(&mut self) -> (Vec<u8>, String) {
        self.next_minor += 1;
        let mut m = self.manifest.clone();
        m.version = format!("1.{}.0", self.next_minor);
        let mut b: Bundle = bundle::build(BuildSpec {
            model_onnx: triad_inspect::builtin::WELD_SEAM_ONNX.to_vec(),
            manifest: m,
            target: CELL.into(),
            golden_inputs: self.golden_in.clone(),
            golden_outputs: Some(self.golden_out.clone()),
            tolerance: 1e-4,
        })
        .unwrap();
        let digest = bundle::sign(&mut b, &self.release).unwrap();
        let now = now_s();
        let claims = Claims {
            iss: "bench".into(),
            sub: CELL.into(),
            aud: Audience::One(DEVICE.into()),
            nbf: now - 5,
            exp: now + 600,
            iat: None,
            jti: token::new_jti(),
            use_: TokenUse::Deploy,
            bundle_digest: Some(digest),
            bundle_version: Some(format!("1.{}.0", self.next_minor)),
            scope: None,
        };
        (b.to_archive(), token::issue(&claims, &self.ops))
    }
}

fn now_s() -> i64 {
    use triad_edge::clock::Clock;
    SystemClock.now_ns().div_euclid(1_000_000_000)
}

fn deploy(svc: &ModelService, d: &mut Deployer) -> DeployReport {
    let (archive, tok) = d.next();
    deploy_prepared(svc, archive, &tok)
}

/// Deploy a bundle prepared beforehand: during the latency blocks the
/// harness does no work of its own (building, signing and gzipping a bundle
/// is the shipper's job, not the node's).
fn deploy_prepared(svc: &ModelService, archive: Vec<u8>, tok: &str) -> DeployReport {
    svc.deploy_blocking(CELL, tok, BundlePayload::Archive(archive), "bench")
        .unwrap_or_else(|e| panic!("deploy refused: {e}"))
}

fn main() {
    let streams: usize = env("BENCH_STREAMS", 3);
    let fps: f64 = env("BENCH_FPS", 200.0);
    let blocks: usize = env("BENCH_BLOCKS", 40);
    let block = Duration::from_secs_f64(env("BENCH_BLOCK_S", 3.0));
    let swap_every = Duration::from_millis(env("BENCH_SWAP_EVERY_MS", 200));
    let rss_cycles: usize = env("BENCH_RSS_CYCLES", 1000);
    let rss_warmup: usize = env("BENCH_RSS_WARMUP", 100);

    let dir = TempDir::new("bench-swap");
    let release = SigningKey::generate("release").unwrap().0;
    let ops = SigningKey::generate("ops").unwrap().0;
    let keyring = Keyring::new(vec![
        TrustedKey {
            name: "release".into(),
            public: *release.public(),
            uses: vec![KeyUse::Bundle],
            revoked: false,
        },
        TrustedKey {
            name: "ops".into(),
            public: *ops.public(),
            uses: vec![KeyUse::Deploy],
            revoked: false,
        },
    ]);
    let audit = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl"), DEVICE).unwrap());
    let replay: SharedReplay = Arc::new(Mutex::new(
        RedbReplay::open(&dir.path().join("replay.redb"), TokenPolicy::default(), now_s()).unwrap(),
    ));
    let service = ModelService::start(ServiceOptions {
        device: DEVICE.into(),
        state_dir: dir.path().to_path_buf(),
        keyring,
        policy: TokenPolicy::default(),
        settings: ModelsSettings {
            fuse: FuseConfig {
                probation: Duration::from_millis(100),
                min_frames: 5,
                ..FuseConfig::default()
            },
            swap_wait: Duration::from_secs(2),
            ..ModelsSettings::default()
        },
        targets: vec![TargetSpec {
            id: CELL.into(),
            kind: ModelKind::Inspection,
            inspector: InspectorConfig {
                roi: Roi {
                    x: 16,
                    y: 8,
                    w: 64,
                    h: 64,
                },
                threshold: 0.5,
            },
            initial: InitialModel::Builtin,
        }],
        clock: Arc::new(SystemClock),
        audit,
        replay,
        notify: None,
    })
    .unwrap();

    // Golden cases computed once (the same model in every bundle).
    let manifest: ModelManifest = serde_json::from_str(triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap();
    let golden_in = bundle::default_golden_inputs(&manifest);
    let model = Arc::new(triad_inspect::builtin::weld_seam().unwrap());
    let mut session = model.session().unwrap();
    let golden_out = golden_in
        .iter()
        .map(|x| {
            let mut y = Vec::new();
            session.infer(x, &mut y).unwrap();
            y
        })
        .collect();
    let mut dep = Deployer {
        release,
        ops,
        manifest,
        golden_in,
        golden_out,
        next_minor: 0,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let rec = Arc::new(Recorder {
        on: AtomicBool::new(false),
        samples: Mutex::new(Vec::new()),
        first_after_swap: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
        frames: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for s in 0..streams {
        threads.extend(start_stream(
            &service,
            fps,
            stop.clone(),
            rec.clone(),
            dropped.clone(),
            100 + s as u64,
        ));
    }
    // Warm everything up, including one deploy.
    std::thread::sleep(Duration::from_secs(1));
    deploy(&service, &mut dep);
    std::thread::sleep(Duration::from_millis(500));

    let record = |f: &mut dyn FnMut()| -> Vec<(i64, f64)> {
        rec.samples.lock().unwrap().clear();
        rec.on.store(true, Ordering::SeqCst);
        f();
        rec.on.store(false, Ordering::SeqCst);
        // Workers flush their samples at the next frame.
        std::thread::sleep(Duration::from_millis(200));
        std::mem::take(&mut *rec.samples.lock().unwrap())
    };

    // (A/B) alternating blocks: steady state, then deploys every `swap_every`.
    let dropped0 = dropped.load(Ordering::SeqCst);
    let mut reports: Vec<DeployReport> = Vec::new();
    let mut windows: Vec<(i64, i64)> = Vec::new();
    let per_block = (block.as_millis() / swap_every.as_millis().max(1)) as usize + 2;
    let mut prepared: std::collections::VecDeque<(Vec<u8>, String)> =
        (0..per_block * blocks.div_ceil(2)).map(|_| dep.next()).collect();
    let mut steady: Vec<(i64, f64)> = Vec::new();
    let mut swapping: Vec<(i64, f64)> = Vec::new();
    let mut pair_ratios = Vec::new();
    let mut last_steady_p99 = f64::NAN;
    for b in 0..blocks {
        if b % 2 == 0 {
            let got = record(&mut || std::thread::sleep(block));
            last_steady_p99 = pct(&got.iter().map(|(_, l)| *l).collect::<Vec<_>>(), 99.0);
            steady.extend(got);
        } else {
            let got = record(&mut || {
                let end = Instant::now() + block;
                while Instant::now() < end {
                    let t = Instant::now();
                    let Some((archive, tok)) = prepared.pop_front() else {
                        break;
                    };
                    let w0 = monotonic_ns();
                    reports.push(deploy_prepared(&service, archive, &tok));
                    windows.push((w0, monotonic_ns()));
                    if let Some(rest) = swap_every.checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            });
            pair_ratios.push(pct(&got.iter().map(|(_, l)| *l).collect::<Vec<_>>(), 99.0) / last_steady_p99);
            swapping.extend(got);
        }
    }
    let dropped_ab = dropped.load(Ordering::SeqCst) - dropped0;
    // Frames triggered while a deploy was being verified, loaded and swapped.
    let in_window: Vec<f64> = swapping
        .iter()
        .filter(|(t0, _)| windows.iter().any(|(a, b)| t0 >= a && *t0 <= b + 5_000_000))
        .map(|(_, l)| *l)
        .collect();
    let steady: Vec<f64> = steady.into_iter().map(|(_, l)| l).collect();
    let swapping: Vec<f64> = swapping.into_iter().map(|(_, l)| l).collect();

    // (C) RSS over many deploy-and-swap cycles.
    for _ in 0..rss_warmup {
        deploy(&service, &mut dep);
    }
    let rss0 = rss_bytes();
    let t_c = Instant::now();
    let mut swaps_c = Vec::with_capacity(rss_cycles);
    for _ in 0..rss_cycles {
        let r = deploy(&service, &mut dep);
        swaps_c.push(r.swap_ns_max.unwrap_or(0) as f64);
    }
    let rss1 = rss_bytes();
    let c_secs = t_c.elapsed().as_secs_f64();
    let dropped_total = dropped.load(Ordering::SeqCst);

    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    service.stop();

    let col = |f: &dyn Fn(&DeployReport) -> f64| reports.iter().map(f).collect::<Vec<f64>>();
    let swap_ns: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.swap_ns_max.map(|n| n as f64))
        .chain(swaps_c.iter().copied())
        .collect();
    let verify = col(&|r| r.timings.verify_ms);
    let load = col(&|r| r.timings.load_ms);
    let warm = col(&|r| r.timings.warmup_ms);
    let golden = col(&|r| r.timings.golden_ms);
    let total = col(&|r| r.timings.verify_ms + r.timings.load_ms + r.timings.warmup_ms + r.timings.golden_ms);
    let (a99, b99) = (pct(&steady, 99.0), pct(&swapping, 99.0));
    let ratio = b99 / a99;
    let growth = rss1 as i64 - rss0 as i64;
    let swapped_all = reports.iter().all(|r| r.swapped_workers == r.workers);

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| load | {streams} streams × {fps:.0} frames/s; {blocks} alternating blocks of {:.0} s, steady and swapping |",
        block.as_secs_f64()
    );
    println!(
        "| frames inspected / dropped / failed | {} / **{dropped_total}** / {} |",
        rec.frames.load(Ordering::SeqCst),
        rec.errors.load(Ordering::SeqCst)
    );
    println!(
        "| frame latency steady: p50 / p99 / max | {:.0} / {a99:.0} / {:.0} µs ({} frames) |",
        pct(&steady, 50.0),
        pct(&steady, 100.0),
        steady.len()
    );
    println!(
        "| frame latency while swapping every {} ms: p50 / p99 / max | {:.0} / {b99:.0} / {:.0} µs ({} frames, {} swaps) |",
        swap_every.as_millis(),
        pct(&swapping, 50.0),
        pct(&swapping, 100.0),
        swapping.len(),
        reports.len()
    );
    println!("| **p99 during swaps / steady** | **{ratio:.2}** |");
    println!(
        "| same, per pair of neighbouring blocks: median (min – max) | {:.2} ({:.2} – {:.2}, {} pairs) |",
        pct(&pair_ratios, 50.0),
        pct(&pair_ratios, 0.0),
        pct(&pair_ratios, 100.0),
        pair_ratios.len()
    );
    println!(
        "| frames triggered during a deploy (verify to swap, +5 ms): p50 / p99 / max | {:.0} / {:.0} / {:.0} µs ({} frames; p99 / steady {:.2}) |",
        pct(&in_window, 50.0),
        pct(&in_window, 99.0),
        pct(&in_window, 100.0),
        in_window.len(),
        pct(&in_window, 99.0) / a99
    );
    let firsts = std::mem::take(&mut *rec.first_after_swap.lock().unwrap());
    println!(
        "| first frame on a worker after a swap: p50 / p90 / p99 / max | {:.0} / {:.0} / {:.0} / {:.0} µs ({} frames) |",
        pct(&firsts, 50.0),
        pct(&firsts, 90.0),
        pct(&firsts, 99.0),
        pct(&firsts, 100.0),
        firsts.len()
    );
    println!(
        "| swap on the worker (pointer exchange): p50 / p99 / max | {:.2} / {:.2} / {:.2} µs ({} swaps) |",
        pct(&swap_ns, 50.0) / 1e3,
        pct(&swap_ns, 99.0) / 1e3,
        pct(&swap_ns, 100.0) / 1e3,
        swap_ns.len()
    );
    println!(
        "| verify (token, unpack, signature, digests) p50 / p99 | {:.2} / {:.2} ms |",
        pct(&verify, 50.0),
        pct(&verify, 99.0)
    );
    println!(
        "| load (tract, optimise) p50 / p99 | {:.1} / {:.1} ms |",
        pct(&load, 50.0),
        pct(&load, 99.0)
    );
    println!(
        "| warm-up (3 runs on a service session) + {streams} staged inspectors p50 / p99 | {:.1} / {:.1} ms |",
        pct(&warm, 50.0),
        pct(&warm, 99.0)
    );
    println!(
        "| golden cases (4) p50 / p99 | {:.1} / {:.1} ms |",
        pct(&golden, 50.0),
        pct(&golden, 99.0)
    );
    println!(
        "| verify + load + warm-up + golden p50 / p99 | {:.1} / {:.1} ms |",
        pct(&total, 50.0),
        pct(&total, 99.0)
    );
    println!(
        "| RSS growth over {rss_cycles} deploy-and-swap cycles (after {rss_warmup} warm-up) | **{:+.0} KiB** ({:.1} → {:.1} MiB, {:.0} s, {:.1} cycles/s) |",
        growth as f64 / 1024.0,
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        c_secs,
        rss_cycles as f64 / c_secs
    );
    println!("| every worker took every model before the deploy answered | {swapped_all} |");
    let mut failed = Vec::new();
    if dropped_total > 0 || dropped_ab > 0 {
        failed.push(format!("{dropped_total} frames dropped"));
    }
    if ratio > 1.2 {
        failed.push(format!("p99 ratio {ratio:.2} > 1.2"));
    }
    if growth >= 1 << 20 {
        failed.push(format!("RSS grew {growth} bytes"));
    }
    if rec.errors.load(Ordering::SeqCst) > 0 {
        failed.push("inspection errors".into());
    }
    if failed.is_empty() {
        println!("\nall floors met");
    } else {
        println!("\nFLOORS MISSED: {}", failed.join("; "));
        std::process::exit(1);
    }
}
