//! `triad bench control`: the control cycle's wake-up latency beside
//! cyclictest's, on this machine, with the node's real neighbours running.
//!
//! The neighbours start once, before the first block, and run through every
//! block of both kinds:
//!
//! - inspection: `triad-insp-0` images simulated camera frames back to back
//!   with the built-in weld-seam model, through the node's inspection worker
//!   models (the parts the scan announces first, synthetic ones between);
//! - twin: `triad-twin-0` (nice 10, as the node's) steps the built-in twin
//!   model every 2 ms on the newest control sample of the first axis;
//! - field I/O: the simulated plant served over Modbus TCP on 127.0.0.1 in
//!   this process, polled by the node's Modbus link
//!   (`deploy/examples/sim-plant-modbus.toml`, every 10 ms) on a one-worker
//!   tokio runtime of its own thread, and the I/O scan `triad-io` at
//!   SCHED_FIFO P-10 every 1 ms, handing every axis its process image.
//!
//! Then `--blocks` pairs of blocks of `duration / (2 × blocks)` each: the
//! control thread (a [`ControlRunner`] with `--axes` axis programs, 1 ms,
//! SCHED_FIFO P, memory locked, as `node::start_control` starts it) runs a
//! block, then `cyclictest` at the same period and priority runs one, and so
//! on: both meet the same noise, which on a virtual machine shifts within a
//! minute. `/dev/cpu_dma_latency` is held at 0 for the whole run when it can
//! be, as cyclictest holds it for itself (otherwise cyclictest runs with
//! `--laptop`): the two always run under the same power-management request.
//!
//! Printed (Markdown): both latency distributions per block and overall
//! (p50, p99, p99.9, max in µs; overruns for triad), the frames and Modbus
//! polls done in each block (the load really ran), and the p99 ratio
//! triad / cyclictest per pair (min, median, max) and overall. Exit code 2:
//! bad arguments, cyclictest missing, SCHED_FIFO refused.

use crate::clock::{Clock, SystemClock};
use crate::config::{Driver, NodeConfig};
use crate::control::rings::{ControlEndpoints, control_rings};
use crate::control::rt::{self, RtStatus};
use crate::control::{AxisLoop, AxisProgram, ControlRunner, ControlStats, ControlTelemetry};
use crate::field::modbus::link::LinkDevice;
use crate::field::modbus::{ModbusDevice, ModbusLinks, ModbusView, SharedImage};
use crate::field::{AxisIo, IoStats, LineScan};
use crate::models::slot::{ModelInfo, ModelSlot};
use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use triad_hw::sim::{PlantParams, SimCamera, SimCameraConfig, SimLine};
use triad_hw::{Camera, CaptureTrigger, Device};
use triad_inspect::{GrayImage, ModelSession};

/// The node's config for the simulated plant over Modbus; its endpoint is
/// replaced by the address this bench serves the plant on.
const MODBUS_EXAMPLE: &str = include_str!("../../../deploy/examples/sim-plant-modbus.toml");
/// The endpoint written in [`MODBUS_EXAMPLE`].
const EXAMPLE_ENDPOINT: &str = "127.0.0.1:5020";
/// The control period, and cyclictest's `-i` (µs).
const PERIOD: Duration = Duration::from_millis(1);
/// The twin thread's pause between two steps.
const TWIN_EVERY: Duration = Duration::from_millis(2);
/// Most axes the bench runs.
const MAX_AXES: usize = 1024;

/// `triad bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchCmd,
}

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Control-cycle wake-up latency against cyclictest, in alternating
    /// blocks, with inspection, a twin and a Modbus scan running (as root or
    /// with CAP_SYS_NICE; needs cyclictest from rt-tests).
    Control(ControlArgs),
}

/// `triad bench control`.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Length of the whole run, both kinds of blocks (e.g. 60s, 2m); a
    /// multiple of 2 × blocks seconds (cyclictest runs whole seconds).
    #[arg(long, value_name = "D", default_value = "60s")]
    pub duration: String,
    /// Axis programs on the control thread (each gets the scan's process image).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub axes: usize,
    /// Pairs of blocks (triad, then cyclictest).
    #[arg(long, value_name = "K", default_value_t = 6)]
    pub blocks: u32,
    /// SCHED_FIFO priority of the control thread and of cyclictest (1-99);
    /// the I/O scan runs at P-10.
    #[arg(long, value_name = "P", default_value_t = 80)]
    pub priority: i32,
    /// Pin the control thread (keeping the bench's other threads off that
    /// CPU, as the node does) and cyclictest (`-a C`) to this CPU.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

/// The checked arguments.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    /// Each block's length, whole seconds.
    block_s: u64,
    /// Pairs of blocks.
    blocks: u32,
    axes: usize,
    priority: i32,
    cpu: Option<usize>,
}

/// Run `triad bench`.
pub fn run(a: BenchArgs) -> ExitCode {
    match a.what {
        BenchCmd::Control(c) => control(c),
    }
}

fn control(a: ControlArgs) -> ExitCode {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = match plan(&a, cpus) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    if let Err(e) = check_cyclictest() {
        return usage(&e);
    }
    if let Err(e) = check_fifo(plan.priority) {
        return usage(&format!(
            "cannot measure at SCHED_FIFO priority {} ({e}); run as root or with CAP_SYS_NICE",
            plan.priority
        ));
    }
    match measure(&plan) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::FifoRefused(e)) => usage(&format!("the control thread: {e}")),
        Err(e) => {
            eprintln!("triad bench control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(e: &str) -> ExitCode {
    eprintln!("triad bench control: {e}");
    ExitCode::from(2)
}

/// Check the arguments against `cpus` CPUs.
fn plan(a: &ControlArgs, cpus: usize) -> Result<Plan, String> {
    let total = crate::scenario::parse_duration(&a.duration).map_err(|e| format!("--duration: {e}"))?;
    if a.blocks == 0 {
        return Err("--blocks 0: give at least 1 pair of blocks".into());
    }
    let block_s = block_secs(total, a.blocks)?;
    if !(1..=MAX_AXES).contains(&a.axes) {
        return Err(format!("--axes {}: give 1 to {MAX_AXES} axes", a.axes));
    }
    if !(1..=99).contains(&a.priority) {
        return Err(format!("--priority {}: SCHED_FIFO priorities are 1 to 99", a.priority));
    }
    if let Some(c) = a.cpu.filter(|&c| c >= cpus) {
        return Err(format!(
            "--cpu {c}: this process may use {cpus} CPUs (0 to {}); give one of them or leave --cpu out",
            cpus - 1
        ));
    }
    Ok(Plan {
        block_s,
        blocks: a.blocks,
        axes: a.axes,
        priority: a.priority,
        cpu: a.cpu,
    })
}

/// Each block's length for `total` over `blocks` pairs: whole seconds, at
/// least one (cyclictest's `-D` takes whole seconds).
fn block_secs(total: Duration, blocks: u32) -> Result<u64, String> {
    let n = 2 * u128::from(blocks);
    let ms = total.as_millis();
    if !ms.is_multiple_of(n * 1000) || ms < n * 1000 {
        return Err(format!(
            "--duration {:.3}s with --blocks {blocks}: each block would be {:.3} s, but cyclictest runs whole seconds; \
             give a duration that is a multiple of 2 x {blocks} s (e.g. {}s)",
            total.as_secs_f64(),
            total.as_secs_f64() / n as f64,
            (ms / (n * 1000)).max(1) * n
        ));
    }
    Ok((ms / (n * 1000)) as u64)
}

/// Is cyclictest installed?
fn check_cyclictest() -> Result<(), String> {
    match Command::new("cyclictest")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("cyclictest not found: apt install rt-tests (the bench compares against it)".into())
        }
        Err(e) => Err(format!("cannot run cyclictest: {e}")),
    }
}

/// May a thread of this process take SCHED_FIFO `priority`? Asked on a
/// thread that ends at once.
fn check_fifo(priority: i32) -> Result<(), String> {
    std::thread::spawn(move || rt::prepare_current_thread(Some(priority), None).fifo.map(drop))
        .join()
        .map_err(|_| "the probe thread panicked".to_string())?
}

// ---------------------------------------------------------------------------
// Distributions

/// A wake-up latency distribution: counts by the upper edge of their bucket
/// (µs), and the largest latency seen.
#[derive(Clone, Debug, Default, PartialEq)]
struct Dist {
    buckets: BTreeMap<u64, u64>,
    max_us: f64,
}

impl Dist {
    fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// Quantile `q` in [0, 1], µs: the upper edge of its bucket (so it never
    /// understates), or the largest latency seen if that is lower (the
    /// control thread's buckets are 1 ms wide past 1 ms). `None` when empty.
    fn quantile(&self, q: f64) -> Option<f64> {
        let rank = ((q.clamp(0.0, 1.0) * self.total() as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let upper = self.buckets.iter().find_map(|(&upper, &c)| {
            seen += c;
            (seen >= rank).then_some(upper as f64)
        })?;
        Some(if self.max_us > 0.0 {
            upper.min(self.max_us)
        } else {
            upper
        })
    }

    fn merge(&mut self, other: &Dist) {
        for (&upper, &c) in &other.buckets {
            *self.buckets.entry(upper).or_default() += c;
        }
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// What a block of the control thread recorded: the difference of two
/// snapshots of [`ControlStats::histogram`], with the block's largest
/// lateness.
fn dist_between(before: &[(f64, f64, u64)], after: &[(f64, f64, u64)], max_us: f64) -> Dist {
    let mut buckets = BTreeMap::new();
    for &(_, upper, c) in after {
        *buckets.entry(upper as u64).or_insert(0) += c;
    }
    for &(_, upper, c) in before {
        if let Some(n) = buckets.get_mut(&(upper as u64)) {
            *n = n.saturating_sub(c);
        }
    }
    buckets.retain(|_, c| *c > 0);
    Dist { buckets, max_us }
}

/// cyclictest's `-q -h` output: histogram lines `<µs> <count>` (bucket
/// `[µs, µs+1)`), `# Max Latencies: <µs>` and `# Histogram Overflows: <n>`
/// (latencies past the histogram, counted at the maximum).
fn parse_cyclictest(text: &str) -> Result<Dist, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let max = field("# Max Latencies:").ok_or("no \"# Max Latencies:\" line in cyclictest's output")?;
    let mut d = Dist {
        max_us: max as f64,
        ..Dist::default()
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut it = line.split_whitespace();
        if let (Some(Ok(us)), Some(Ok(c))) = (it.next().map(str::parse::<u64>), it.next().map(str::parse::<u64>))
            && c > 0
        {
            *d.buckets.entry(us + 1).or_default() += c;
        }
    }
    if let Some(over) = field("# Histogram Overflows:").filter(|&n| n > 0) {
        *d.buckets.entry(max + 1).or_default() += over;
    }
    if d.total() == 0 {
        return Err("cyclictest's histogram is empty".into());
    }
    Ok(d)
}

/// Min, median and max of `xs` (`None` if empty).
fn spread(xs: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

/// p99 of `a` over p99 of `b`.
fn p99_ratio(a: &Dist, b: &Dist) -> Option<f64> {
    Some(a.quantile(0.99)? / b.quantile(0.99)?)
}

// ---------------------------------------------------------------------------
// The neighbours

/// Counters of the load, read before and after each block.
struct LoadFigures {
    frames: Arc<AtomicU64>,
    twin_steps: Arc<AtomicU64>,
    modbus: Arc<SharedImage>,
}

impl LoadFigures {
    /// (frames inspected, Modbus polls completed) so far.
    fn now(&self) -> (u64, u64) {
        (self.frames.load(Relaxed), self.modbus.stats.polls.load(Relaxed))
    }
}

/// The running neighbours.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    field_stop: Option<tokio::sync::oneshot::Sender<()>>,
    field: Option<JoinHandle<()>>,
    figures: LoadFigures,
    modbus_addr: std::net::SocketAddr,
    io_priority: i32,
    /// The example's `telemetry_every_cycles`, for the control runner.
    telemetry_every: u32,
}

impl Load {
    fn stop(mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(tx) = self.field_stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.field.take() {
            let _ = t.join();
        }
    }
}

/// The example config with its welder at `addr`.
fn modbus_config(addr: std::net::SocketAddr) -> Result<NodeConfig, String> {
    let text = MODBUS_EXAMPLE.replace(EXAMPLE_ENDPOINT, &addr.to_string());
    crate::config::from_toml_str(&text).map_err(|e| format!("deploy/examples/sim-plant-modbus.toml: {e}"))
}

/// Serve the simulated plant on `listener` and poll it with the node's
/// Modbus link on a one-worker runtime on its own thread; returns once the
/// device's inputs were read once (or the start wait ran out).
fn start_field(
    cfg: &NodeConfig,
    listener: std::net::TcpListener,
    link: LinkDevice,
    clock: &Arc<dyn Clock>,
) -> Result<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("triad-bench-rt")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Modbus runtime: {e}"))?;
    let axis = &cfg.axes[0];
    let plant = SimLine::warm(PlantParams::default(), cfg.sim_seed, Vec::new(), axis.nominal_ppm);
    let view = ModbusView {
        id: link.id.clone(),
        cfg: link.cfg.clone(),
        image: link.shared.clone(),
    };
    let unit = link.cfg.unit;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let clock = clock.clone();
    let thread = std::thread::Builder::new()
        .name("triad-modbus".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot serve the simulated plant: {e}")));
                        return;
                    }
                };
                let (srv_tx, srv_rx) = tokio::sync::oneshot::channel::<()>();
                let server = tokio::spawn(crate::field::modbus::serve_sim_plant(
                    listener,
                    unit,
                    plant,
                    clock.clone(),
                    async move {
                        let _ = srv_rx.await;
                    },
                ));
                let links = ModbusLinks::start(vec![link], clock.clone());
                crate::field::modbus::wait_first_samples(&[view], crate::node::MODBUS_START_WAIT, &clock).await;
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
                links.stop(Duration::from_secs(2)).await;
                let _ = srv_tx.send(());
                let _ = server.await;
            });
        })
        .map_err(|e| format!("cannot start the Modbus thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((stop_tx, thread)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the Modbus thread ended at start".into()),
    }
}

/// The inspection worker: the node's inspection models on simulated
/// frames, back to back; the parts the scan announces first.
fn start_inspection(
    cfg: &NodeConfig,
    mut triggers: rtrb::Consumer<CaptureTrigger>,
    frames: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let cell = &cfg.cells[0];
    let model = Arc::new(triad_inspect::builtin::weld_seam().map_err(|e| format!("the built-in model: {e}"))?);
    let slot = Arc::new(ModelSlot::new(
        cell.id.as_str(),
        crate::node::models::inspector_config(cell),
        model,
        ModelInfo {
            source: "builtin".into(),
            ..ModelInfo::default()
        },
    ));
    let mut models = slot
        .worker::<triad_inspect::Inspector>(cfg.models.fuse, Box::new(|_| {}))
        .map_err(|e| format!("the built-in model does not fit cell {}: {e}", cell.id))?;
    let mut camera = SimCamera::new(SimCameraConfig {
        seed: cfg.sim_seed,
        ..SimCameraConfig::default()
    });
    std::thread::Builder::new()
        .name("triad-insp-0".into())
        .spawn(move || {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                let trigger = triggers.pop().unwrap_or(CaptureTrigger {
                    module_serial: 1_000_000 + n / 24,
                    weld_index: (n % 24) as u32,
                    stamp_ns: 0,
                    weld_temp_c: 185.0,
                });
                if let Ok(f) = camera.capture(&trigger) {
                    let image = GrayImage {
                        width: f.width,
                        height: f.height,
                        pixels: &f.pixels,
                    };
                    let _ = std::hint::black_box(models.inspect(&image));
                }
                n += 1;
                frames.fetch_add(1, Relaxed);
            }
        })
        .map_err(|e| format!("cannot start the inspection thread: {e}"))
}

/// The twin thread: the node's twin predictor (the built-in twin model),
/// stepped every [`TWIN_EVERY`] on the newest sample of the first axis;
/// the other axes' telemetry is drained.
fn start_twin(
    cfg: &NodeConfig,
    mut telemetry: Vec<rtrb::Consumer<ControlTelemetry>>,
    clock: Arc<dyn Clock>,
    steps: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let (cell, asset) = (&cfg.cells[0], &cfg.assets[0]);
    let model = Arc::new(crate::models::twin::builtin().map_err(|e| format!("the built-in twin model: {e}"))?);
    let slot = Arc::new(ModelSlot::new(
        asset.id.as_str(),
        crate::node::models::inspector_config(cell),
        model,
        ModelInfo {
            source: "builtin".into(),
            ..ModelInfo::default()
        },
    ));
    let predictor = slot
        .worker::<ModelSession>(cfg.models.fuse, Box::new(|_| {}))
        .map_err(|e| format!("the built-in twin model: {e}"))?;
    let version = predictor.version().to_string();
    let mut twin = triad_twin::Twin::new(asset.twin_config(), predictor);
    twin.set_model_version(&version);
    std::thread::Builder::new()
        .name("triad-twin-0".into())
        .spawn(move || {
            let _ = rt::set_nice(10);
            let mut last = None;
            while !stop.load(Relaxed) {
                for (i, ring) in telemetry.iter_mut().enumerate() {
                    while let Ok(t) = ring.pop() {
                        if let (0, ControlTelemetry::Sample(s)) = (i, t) {
                            last = Some(s.twin_sample());
                        }
                    }
                }
                if let Some(s) = last.as_mut() {
                    s.stamp_ns = clock.now_ns();
                    let _ = std::hint::black_box(twin.handle_sample(s));
                    steps.fetch_add(1, Relaxed);
                }
                std::thread::sleep(TWIN_EVERY);
            }
        })
        .map_err(|e| format!("cannot start the twin thread: {e}"))
}

/// Start every neighbour and return them with the axis programs, ready
/// for the control thread.
fn start_load(plan: &Plan, clock: &Arc<dyn Clock>) -> Result<(Load, Vec<AxisLoop>), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot listen on 127.0.0.1 for the simulated plant: {e}"))?;
    let modbus_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let cfg = modbus_config(modbus_addr)?;
    let dev = &cfg.devices[0];
    let Driver::Modbus(m) = &dev.driver else {
        return Err("deploy/examples/sim-plant-modbus.toml: its first device is not a Modbus device".into());
    };
    let binding = cfg.axes[0]
        .io
        .clone()
        .ok_or("deploy/examples/sim-plant-modbus.toml: axis without [axes.io]")?;
    let shared = Arc::new(SharedImage::new(m.points.len()));
    let link = LinkDevice {
        id: dev.id.clone(),
        cfg: m.clone(),
        shared: shared.clone(),
    };
    let (field_stop, field) = start_field(&cfg, listener, link, clock)?;

    // Every axis program on the one welder's image (the same binding), as
    // the node builds them (`node::control_loops`, `station::split_rings`).
    let limits = cfg.axes[0].limits(&cfg.control);
    let mut loops = Vec::with_capacity(plan.axes);
    let mut axes_io = Vec::with_capacity(plan.axes);
    let mut telemetry = Vec::with_capacity(plan.axes);
    let mut triggers = Vec::with_capacity(plan.axes);
    for _ in 0..plan.axes {
        let (rings, ends) = control_rings();
        loops.push(AxisLoop::new(AxisProgram::new(limits, clock.now_ns()), rings));
        let ControlEndpoints {
            inputs,
            outputs,
            telemetry: tel,
            ..
        } = ends;
        let (trigger_tx, trigger_rx) = rtrb::RingBuffer::new(1024);
        axes_io.push(AxisIo {
            binding: binding.clone(),
            inputs,
            outputs,
            triggers: trigger_tx,
            stats: Arc::new(IoStats::default()),
        });
        telemetry.push(tel);
        triggers.push(trigger_rx);
    }
    let device: Box<dyn Device> = Box::new(ModbusDevice::new(m.clone(), shared.clone()));
    let scan = LineScan::new(vec![(dev.id.clone(), device)], axes_io);

    let stop = Arc::new(AtomicBool::new(false));
    let io_priority = (plan.priority - 10).max(1);
    let io = {
        let (stop, clock) = (stop.clone(), clock.clone());
        std::thread::Builder::new()
            .name("triad-io".into())
            .spawn(move || crate::field::scan::run(scan, clock, PERIOD, Some(io_priority), stop))
            .map_err(|e| format!("cannot start the I/O scan: {e}"))?
    };
    let figures = LoadFigures {
        frames: Arc::default(),
        twin_steps: Arc::default(),
        modbus: shared,
    };
    let first_triggers = triggers.swap_remove(0);
    let insp = start_inspection(&cfg, first_triggers, figures.frames.clone(), stop.clone())?;
    let twin = start_twin(&cfg, telemetry, clock.clone(), figures.twin_steps.clone(), stop.clone())?;
    let load = Load {
        stop,
        threads: vec![io, insp, twin],
        field_stop: Some(field_stop),
        field: Some(field),
        figures,
        modbus_addr,
        io_priority,
        telemetry_every: cfg.control.telemetry_every_cycles,
    };
    Ok((load, loops))
}

// ---------------------------------------------------------------------------
// The control thread and cyclictest

/// The control thread, idle between its blocks.
struct ControlThread {
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
    stats: Arc<ControlStats>,
    handle: JoinHandle<ControlRunner>,
}

/// Start the control thread as the node does (`node::start_control`):
/// SCHED_FIFO, pinned (and alone) if asked, stack prefaulted; it runs the
/// axes for each block it is sent.
fn start_control(
    plan: &Plan,
    loops: Vec<AxisLoop>,
    telemetry_every: u32,
    clock: &Arc<dyn Clock>,
) -> Result<(ControlThread, RtStatus), String> {
    let stats = Arc::new(ControlStats::new());
    let runner = ControlRunner::new(loops, stats.clone(), clock.clone(), PERIOD, telemetry_every);
    let stop = Arc::new(AtomicBool::new(false));
    let (go, go_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    let (st_tx, st_rx) = mpsc::channel();
    let (priority, cpu, s) = (plan.priority, plan.cpu, stop.clone());
    let handle = std::thread::Builder::new()
        .name("triad-control".into())
        .spawn(move || {
            let mut status = rt::prepare_current_thread(Some(priority), cpu);
            if let Some(Ok(c)) = status.cpu {
                status.alone = Some(rt::keep_other_threads_off(c));
            }
            rt::prefault_stack(64 * 1024);
            let _ = st_tx.send(status);
            let mut runner = runner;
            while go_rx.recv().is_ok() {
                runner = runner.run(&s);
                if done_tx.send(()).is_err() {
                    break;
                }
            }
            runner
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    let status = st_rx
        .recv()
        .map_err(|_| "the control thread died at start".to_string())?;
    Ok((
        ControlThread {
            go,
            done,
            stop,
            stats,
            handle,
        },
        status,
    ))
}

impl ControlThread {
    /// Run the axes for `secs`; their latency distribution and overruns.
    fn block(&self, secs: u64) -> Result<(Dist, u64), String> {
        let before = self.stats.histogram();
        let overruns = self.stats.overruns.load(Relaxed);
        self.stats.max_lateness_ns.store(0, Relaxed);
        self.stop.store(false, Relaxed);
        self.go.send(()).map_err(|_| "the control thread ended")?;
        std::thread::sleep(Duration::from_secs(secs));
        self.stop.store(true, Relaxed);
        self.done.recv().map_err(|_| "the control thread ended")?;
        let d = dist_between(&before, &self.stats.histogram(), self.stats.max_us());
        Ok((d, self.stats.overruns.load(Relaxed) - overruns))
    }

    /// End the thread; the runner, for the axes' final modes.
    fn end(self) -> Option<ControlRunner> {
        drop(self.go);
        self.handle.join().ok()
    }
}

/// cyclictest's arguments for one block.
fn cyclictest_args(plan: &Plan, laptop: bool) -> Vec<String> {
    let mut a: Vec<String> = ["-m", "-q", "-p", &plan.priority.to_string(), "-i"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend([
        PERIOD.as_micros().to_string(),
        "-h".into(),
        "2000".into(),
        "-D".into(),
        plan.block_s.to_string(),
    ]);
    if let Some(c) = plan.cpu {
        a.extend(["-a".into(), c.to_string()]);
    }
    if laptop {
        a.push("--laptop".into());
    }
    a
}

/// One cyclictest block.
fn cyclictest_block(args: &[String]) -> Result<Dist, String> {
    let o = Command::new("cyclictest")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run cyclictest: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "cyclictest {} failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    parse_cyclictest(&String::from_utf8_lossy(&o.stdout))
}

/// Ask for no C-state exit latency for as long as the file is open, as
/// cyclictest does for itself; `None` if refused.
fn hold_cpu_dma_latency() -> Option<std::fs::File> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .ok()?;
    f.write_all(&0i32.to_ne_bytes()).ok()?;
    Some(f)
}

// ---------------------------------------------------------------------------
// The run

/// One block's figures.
struct Row {
    dist: Dist,
    /// `None` for cyclictest.
    overruns: Option<u64>,
    frames: u64,
    polls: u64,
}

enum Outcome {
    Done,
    FifoRefused(String),
}

fn measure(plan: &Plan) -> Result<Outcome, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mem = rt::lock_memory();
    let qos = hold_cpu_dma_latency();
    let (load, loops) = start_load(plan, &clock)?;
    let (control, status) = match start_control(plan, loops, load.telemetry_every, &clock) {
        Ok(c) => c,
        Err(e) => {
            load.stop();
            return Err(e);
        }
    };
    if let Err(e) = &status.fifo {
        let _ = control.end();
        load.stop();
        return Ok(Outcome::FifoRefused(e.clone()));
    }
    let ct_args = cyclictest_args(plan, qos.is_none());
    let mut rows = Vec::with_capacity(2 * plan.blocks as usize);
    let mut failed = None;
    for _ in 0..plan.blocks {
        let r = run_pair(plan, &control, &load.figures, &ct_args);
        match r {
            Ok([t, c]) => rows.extend([t, c]),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let runner = control.end();
    let twin_steps = load.figures.twin_steps.load(Relaxed);
    let modbus = &load.figures.modbus.stats;
    let (polls, timeouts, transport) = (
        modbus.polls.load(Relaxed),
        modbus.timeouts.load(Relaxed),
        modbus.transport_errors.load(Relaxed),
    );
    let frames = load.figures.frames.load(Relaxed);
    let (addr, io_priority) = (load.modbus_addr, load.io_priority);
    load.stop();
    let qos_held = qos.is_some();
    drop(qos);
    if let Some(e) = failed {
        return Err(e);
    }
    print_header(plan, &status, &mem, qos_held, &ct_args, addr, io_priority);
    print_table(&rows);
    print_ratios(&rows);
    let modes: Vec<String> = runner
        .map(|r| r.axes().iter().map(|a| format!("{:?}", a.program().mode())).collect())
        .unwrap_or_default();
    println!(
        "load over the run: {frames} frames inspected, {twin_steps} twin steps, {polls} Modbus polls completed \
         ({timeouts} timeouts, {transport} transport errors); axis modes at the end: {}",
        modes.join(", ")
    );
    Ok(Outcome::Done)
}

/// One triad block, then one cyclictest block.
fn run_pair(plan: &Plan, control: &ControlThread, load: &LoadFigures, ct_args: &[String]) -> Result<[Row; 2], String> {
    let (f0, p0) = load.now();
    let (dist, overruns) = control.block(plan.block_s)?;
    let (f1, p1) = load.now();
    let ct = cyclictest_block(ct_args)?;
    let (f2, p2) = load.now();
    Ok([
        Row {
            dist,
            overruns: Some(overruns),
            frames: f1 - f0,
            polls: p1 - p0,
        },
        Row {
            dist: ct,
            overruns: None,
            frames: f2 - f1,
            polls: p2 - p1,
        },
    ])
}

// ---------------------------------------------------------------------------
// Printing

fn print_header(
    plan: &Plan,
    status: &RtStatus,
    mem: &Result<(), String>,
    qos: bool,
    ct_args: &[String],
    addr: std::net::SocketAddr,
    io_priority: i32,
) {
    let cpu = plan.cpu.map_or("not pinned".to_string(), |c| format!("CPU {c}"));
    println!(
        "triad bench control: {} pairs of {} s blocks ({} s), period 1 ms, SCHED_FIFO {}, {} axis program(s), {cpu}",
        plan.blocks,
        plan.block_s,
        2 * u64::from(plan.blocks) * plan.block_s,
        plan.priority,
        plan.axes
    );
    let mem = match mem {
        Ok(()) => "memory locked".to_string(),
        Err(e) => format!("memory not locked ({e})"),
    };
    println!("control thread: {}; {mem}", status.describe());
    println!(
        "power management: {}",
        if qos {
            "/dev/cpu_dma_latency held at 0 µs for the whole run (as cyclictest holds it)"
        } else {
            "/dev/cpu_dma_latency not writable: cyclictest runs with --laptop (neither holds it)"
        }
    );
    println!("cyclictest {}", ct_args.join(" "));
    println!(
        "neighbours in every block: inspection (built-in model, 1 thread, back to back), twin (built-in model, every 2 ms, nice 10), \
         Modbus TCP link to the simulated plant on {addr} (deploy/examples/sim-plant-modbus.toml), I/O scan at SCHED_FIFO {io_priority} every 1 ms"
    );
    println!();
}

fn us(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

fn print_row(pair: &str, name: &str, r: &Row) {
    println!(
        "| {pair} | {name} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
        r.dist.total(),
        us(r.dist.quantile(0.5)),
        us(r.dist.quantile(0.99)),
        us(r.dist.quantile(0.999)),
        r.dist.max_us,
        r.overruns.map_or("–".into(), |o| o.to_string()),
        r.frames,
        r.polls
    );
}

/// Both runs merged over every block.
fn overall(rows: &[Row], kind: usize) -> Row {
    let mut all = Row {
        dist: Dist::default(),
        overruns: (kind == 0).then_some(0),
        frames: 0,
        polls: 0,
    };
    for r in rows.iter().skip(kind).step_by(2) {
        all.dist.merge(&r.dist);
        all.overruns = all.overruns.zip(r.overruns).map(|(a, b)| a + b);
        all.frames += r.frames;
        all.polls += r.polls;
    }
    all
}

fn print_table(rows: &[Row]) {
    println!("| pair | run | wake-ups | p50 µs | p99 µs | p99.9 µs | max µs | overruns | frames | Modbus polls |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, pair) in rows.chunks(2).enumerate() {
        for (r, name) in pair.iter().zip(["triad", "cyclictest"]) {
            print_row(&(i + 1).to_string(), name, r);
        }
    }
    print_row("all", "**triad**", &overall(rows, 0));
    print_row("all", "**cyclictest**", &overall(rows, 1));
    println!();
}

fn print_ratios(rows: &[Row]) {
    let ratios: Vec<f64> = rows
        .chunks(2)
        .filter_map(|p| p99_ratio(&p[0].dist, &p[1].dist))
        .collect();
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let all = p99_ratio(&overall(rows, 0).dist, &overall(rows, 1).dist);
    match spread(&ratios) {
        Some((min, median, max)) => println!(
            "p99 ratio triad / cyclictest per pair: {} -> min {min:.2}, median {median:.2}, max {max:.2}; overall {}",
            each.join(", "),
            all.map_or("–".into(), |r| format!("{r:.2}"))
        ),
        None => println!("p99 ratio triad / cyclictest: no pair completed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(duration: &str, axes: usize, blocks: u32, priority: i32, cpu: Option<usize>) -> ControlArgs {
        ControlArgs {
            duration: duration.into(),
            axes,
            blocks,
            priority,
            cpu,
        }
    }

    #[test]
    fn the_defaults_give_six_pairs_of_five_second_blocks() {
        let p = plan(&args("60s", 1, 6, 80, None), 2).unwrap();
        assert_eq!(
            p,
            Plan {
                block_s: 5,
                blocks: 6,
                axes: 1,
                priority: 80,
                cpu: None
            }
        );
        assert_eq!(plan(&args("2m", 4, 3, 90, Some(1)), 2).unwrap().block_s, 20);
    }

    #[test]
    fn bad_arguments_say_what_to_give() {
        let err = |a| plan(&a, 2).unwrap_err();
        assert!(err(args("61s", 1, 6, 80, None)).contains("multiple of 2 x 6 s"));
        assert!(err(args("6s", 1, 6, 80, None)).contains("whole seconds"));
        assert!(err(args("soon", 1, 6, 80, None)).starts_with("--duration"));
        assert!(err(args("60s", 0, 6, 80, None)).contains("--axes 0"));
        assert!(err(args("60s", 1, 0, 80, None)).contains("--blocks 0"));
        assert!(err(args("60s", 1, 6, 0, None)).contains("1 to 99"));
        assert!(err(args("60s", 1, 6, 100, None)).contains("1 to 99"));
        assert!(err(args("60s", 1, 6, 80, Some(2))).contains("0 to 1"));
    }

    #[test]
    fn block_lengths_are_whole_seconds() {
        assert_eq!(block_secs(Duration::from_secs(60), 6), Ok(5));
        assert_eq!(block_secs(Duration::from_secs(2), 1), Ok(1));
        assert!(block_secs(Duration::from_millis(60_500), 6).is_err());
        assert!(block_secs(Duration::from_secs(1), 1).is_err());
    }

    fn dist(pairs: &[(u64, u64)], max_us: f64) -> Dist {
        Dist {
            buckets: pairs.iter().copied().collect(),
            max_us,
        }
    }

    #[test]
    fn quantiles_take_the_upper_edge_of_their_bucket() {
        let d = dist(&[(10, 98), (50, 1), (900, 1)], 899.5);
        assert_eq!(d.total(), 100);
        assert_eq!(d.quantile(0.5), Some(10.0));
        assert_eq!(d.quantile(0.99), Some(50.0));
        assert_eq!(d.quantile(0.999), Some(899.5), "never past the largest latency");
        assert_eq!(Dist::default().quantile(0.5), None);
        let mut m = d.clone();
        m.merge(&dist(&[(10, 2), (2000, 1)], 1999.0));
        assert_eq!((m.total(), m.max_us, m.buckets[&10]), (103, 1999.0, 100));
    }

    #[test]
    fn a_block_is_the_difference_of_two_snapshots() {
        let before = [(5.0, 6.0, 10), (20.0, 21.0, 1)];
        let after = [(5.0, 6.0, 15), (7.0, 8.0, 3), (20.0, 21.0, 1), (1000.0, 2000.0, 2)];
        let d = dist_between(&before, &after, 1500.0);
        assert_eq!(d, dist(&[(6, 5), (8, 3), (2000, 2)], 1500.0));
    }

    #[test]
    fn cyclictest_output_is_parsed_with_its_overflows() {
        let text = "# /dev/cpu_dma_latency set to 0us\n\
                    000000 000000\n000012 000004\n000013 000005\n001999 000000\n\
                    # Total: 000000010\n# Min Latencies: 00012\n# Avg Latencies: 00013\n\
                    # Max Latencies: 02500\n# Histogram Overflows: 00001\n# Histogram Overflow at cycle number:\n# Thread 0: 00007\n";
        let d = parse_cyclictest(text).unwrap();
        assert_eq!(d, dist(&[(13, 4), (14, 5), (2501, 1)], 2500.0));
        assert_eq!(d.quantile(0.5), Some(14.0));
        assert!(parse_cyclictest("000001 000002\n").is_err());
        assert!(parse_cyclictest("# Max Latencies: 00003\n").is_err());
    }

    #[test]
    fn ratios_are_summarised_by_min_median_and_max() {
        assert_eq!(spread(&[2.0, 0.5, 1.0]), Some((0.5, 1.0, 2.0)));
        assert_eq!(spread(&[1.0, 3.0, 2.0, 4.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(spread(&[]), None);
        let (a, b) = (dist(&[(30, 100)], 30.0), dist(&[(20, 100)], 20.0));
        assert_eq!(p99_ratio(&a, &b), Some(1.5));
        assert_eq!(p99_ratio(&a, &Dist::default()), None);
    }

    #[test]
    fn cyclictest_runs_at_the_bench_period_and_priority() {
        let p = plan(&args("60s", 1, 6, 80, Some(1)), 2).unwrap();
        assert_eq!(
            cyclictest_args(&p, false).join(" "),
            "-m -q -p 80 -i 1000 -h 2000 -D 5 -a 1"
        );
        assert!(cyclictest_args(&p, true).ends_with(&["--laptop".to_string()]));
    }

    #[test]
    fn the_example_config_parses_with_the_served_address() {
        let cfg = modbus_config("127.0.0.1:41234".parse().unwrap()).unwrap();
        let Driver::Modbus(m) = &cfg.devices[0].driver else {
            panic!("not a Modbus device")
        };
        assert!(format!("{:?}", m.link).contains("41234"), "{:?}", m.link);
        assert!(cfg.axes[0].io.is_some());
    }
}
