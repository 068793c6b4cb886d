//! The node: builds every part from the config and runs them together.
//!
//! Threads: control (SCHED_FIFO where permitted), sim I/O scan, inspection
//! worker, twin (nice 10). Async tasks on a tokio runtime: telemetry pump,
//! results, twin events and the closed loop, publishers, outbox flusher, MES
//! connector, command consumer, dashboard. [`run`] returns a [`RunReport`]
//! when the duration is over or the shutdown future resolves.
//!
//! The closed loop runs as journaled steps (`chain`): a stop waits for the
//! chains in flight (at most [`CHAIN_STOP_BUDGET`]) while the control thread
//! still runs, so a derate can still be applied; what is left is completed
//! at the next start. [`stop_signal`] resolves on SIGINT or SIGTERM alike.

mod chain;
pub mod models;
pub mod report;
mod survey;
mod tasks;
pub mod threads;

use crate::bus::Bus;
use crate::bus::embedded::EmbeddedBus;
use crate::bus::outbox::Outbox;
use crate::bus::publisher::{Publisher, flush_bus_lane};
use crate::clock::{Clock, SystemClock};
use crate::commands::CommandGate;
use crate::config::{AssetConfig, AxisConfig, BusConfig, CellConfig, DerateRule, NodeConfig};
use crate::control::rings::control_rings;
use crate::control::{AxisLimits, AxisLoop, AxisProgram, ControlRunner, ControlStats, rt};
use crate::dashboard::{AppState, LiveState, NodeView};
use crate::metrics::Metrics;
use crate::node::report::RunReport;
use crate::scenario::Scenario;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use threads::IoStats;

/// How long an orderly stop waits for closed-loop chains in flight.
pub const CHAIN_STOP_BUDGET: Duration = Duration::from_secs(5);

/// Resolves on the first SIGINT or SIGTERM (systemd's stop) and says which:
/// both take the same orderly stop.
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
use tokio::sync::{mpsc, watch};
use triad_hw::sim::{PlantParams, SimCamera, SimCameraConfig, SimLine};
use triad_inspect::history::ResultHistory;
use triad_schemas::Topic;
use triad_twin::{Twin, TwinConfig};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Scenario of the simulated line.
    pub scenario: Scenario,
    /// Stop after this long (`None`: until the shutdown future resolves).
    pub duration: Option<Duration>,
    /// Dashboard address override.
    pub listen: Option<SocketAddr>,
}

/// Topics of the node's axis, cell, asset and line.
pub(crate) struct Topics {
    pub command: Topic,
    pub control_state: Topic,
    pub inspection: Topic,
    pub twin_status: Topic,
    pub twin_alert: Topic,
    pub work_order: Topic,
}

/// What the async tasks share.
pub(crate) struct NodeCtx {
    pub cfg: NodeConfig,
    pub clock: Arc<dyn Clock>,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveState>,
    pub gate: Arc<CommandGate>,
    pub history: Arc<Mutex<ResultHistory>>,
    pub control_stats: Arc<ControlStats>,
    pub io_stats: Arc<IoStats>,
    pub axis: AxisConfig,
    pub cell: CellConfig,
    pub asset: AssetConfig,
    pub rule: Option<DerateRule>,
    pub topics: Topics,
    /// Closed-loop chains in flight.
    pub chains: chain::ChainTracker,
    /// The node is stopping (a derate the control thread no longer answers
    /// is left to the next start).
    pub stopping: AtomicBool,
}

/// Build the configured bus backend. It connects in the background: the
/// control loop never waits for a broker, and a broker that is down at start
/// is not fatal (the outbox holds the messages; every call retries).
pub fn connect_bus(cfg: &BusConfig) -> anyhow::Result<Arc<dyn Bus>> {
    match cfg {
        BusConfig::Embedded => Ok(Arc::new(EmbeddedBus::default())),
        #[cfg(feature = "pulsar")]
        BusConfig::Pulsar(p) => {
            let bus = Arc::new(crate::bus::pulsar::PulsarBus::new(p.clone()).map_err(anyhow::Error::msg)?);
            let (b, p) = (bus.clone(), p.clone());
            tokio::spawn(async move {
                match b.connect().await {
                    Ok(()) => {
                        tracing::info!(url = %p.url, tenant = %p.tenant, namespace = %p.namespace, "bus: Apache Pulsar")
                    }
                    Err(e) => {
                        tracing::error!(url = %p.url, error = %e, "Pulsar not reachable at start; retrying, messages wait in the outbox")
                    }
                }
            });
            Ok(bus)
        }
        #[cfg(not(feature = "pulsar"))]
        BusConfig::Pulsar(_) => anyhow::bail!("[bus] backend = \"pulsar\": {}", crate::bus::PULSAR_NOT_BUILT),
    }
}

/// Run the simulated line with the closed loop until `duration` passes or
/// `shutdown` resolves, and return the run's report.
pub async fn run(
    cfg: NodeConfig,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunReport> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let started_ns = clock.now_ns();
    let axis = cfg
        .axes
        .first()
        .cloned()
        .context("the simulated line needs one [[axes]] entry")?;
    let cell = cfg
        .cells
        .iter()
        .find(|c| c.axis == axis.id)
        .cloned()
        .with_context(|| format!("the simulated line needs a [[cells]] entry on axis {}", axis.id))?;
    let asset = cfg
        .assets
        .iter()
        .find(|a| a.axis == axis.id)
        .cloned()
        .with_context(|| format!("the simulated line needs an [[assets]] entry on axis {}", axis.id))?;
    let rule = cfg.rules.iter().find(|r| r.asset == asset.id).cloned();

    // Durable state first: if it cannot be opened, nothing else starts.
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create the state directory {}", cfg.state_dir.display()))?;
    let damaged_before = survey::damaged_files(&cfg.state_dir);
    let mut state_warnings = survey::before_start(&cfg.state_dir);
    let outbox = Arc::new(Outbox::open(&cfg.state_dir.join("outbox.redb"), cfg.outbox)?);
    outbox.set_reserve(cfg.outbox_reserve_bytes);
    let outbox_lost = outbox.open_report().lost.clone();
    if let Some(what) = &outbox_lost {
        tracing::error!("{what}");
        state_warnings.push(what.clone());
    }
    let pending = outbox.stats();
    if pending.pending_bus + pending.pending_mes > 0 {
        tracing::info!(
            bus = pending.pending_bus,
            mes = pending.pending_mes,
            "resuming delivery of messages left in the outbox"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let live = Arc::new(LiveState::default());
    let bus = connect_bus(&cfg.bus)?;
    let publisher = Arc::new(Publisher::new(
        cfg.node.clone(),
        clock.clone(),
        bus.clone(),
        outbox.clone(),
        metrics.clone(),
    ));

    // Signed models: the service runs what was last deployed to the cell and
    // the asset (re-verified) or the configured or built-in model, and owns
    // swaps and rollbacks.
    let models = crate::node::models::start(&cfg, &cell, &asset, clock.clone(), publisher.clone(), live.clone())?;
    // The stores are open: what they set aside, and the start's findings.
    state_warnings.extend(survey::after_start(&cfg.state_dir, &damaged_before));
    for w in &state_warnings {
        if outbox_lost.as_ref() != Some(w) {
            tracing::error!("{w}");
        }
    }
    survey::mark(&cfg.state_dir);
    live.update(|s| s.state_warnings = state_warnings);

    let topics = Topics {
        command: Topic::control_command(&axis.id),
        control_state: Topic::control_state(&axis.id),
        inspection: Topic::inspection_result(&cell.id),
        twin_status: Topic::twin_status(&asset.id),
        twin_alert: Topic::twin_alert(&asset.id),
        work_order: Topic::mes_work_order(&cfg.line),
    };
    // Open the producers in the background: a slow or absent broker never
    // delays the control loop. One that cannot open is not fatal: durable
    // messages wait in the outbox and the flusher retries (an incompatible
    // schema is logged with its field).
    {
        let publisher = publisher.clone();
        let list = [
            topics.control_state.clone(),
            topics.inspection.clone(),
            topics.twin_status.clone(),
            topics.twin_alert.clone(),
            topics.work_order.clone(),
        ];
        tokio::spawn(async move {
            for t in list {
                if let Err(e) = publisher.open(&t).await {
                    tracing::error!(topic = %t, error = %e, "producer not open; messages of this topic wait in the outbox");
                }
            }
        });
    }

    let listen = opts.listen.unwrap_or(cfg.dashboard_listen);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} for the dashboard: is another triad running? choose another with --listen or [dashboard] listen")
    })?;
    let listen = listener.local_addr()?;

    // The control thread and its rings.
    let (rings, endpoints) = control_rings();
    let stats = Arc::new(ControlStats::new());
    let limits = AxisLimits {
        nominal_ppm: axis.nominal_ppm,
        min_ppm: axis.min_ppm,
        max_ppm: axis.max_ppm,
        weld_current_a: axis.weld_current_a,
        start_running: axis.start_running,
        input_stale_ns: cfg.control.input_stale.as_nanos() as i64,
        watchdog_ns: cfg.control.watchdog.as_nanos() as i64,
    };
    // Lock memory before the program takes its start time: mlockall of a
    // large process can take longer than input_stale_ms, and the first
    // cycle would then see a stale input.
    let mem = if cfg.control.rt_priority.is_some() {
        rt::lock_memory()
    } else {
        Ok(())
    };
    let runner = ControlRunner::new(
        vec![AxisLoop::new(AxisProgram::new(limits, clock.now_ns()), rings)],
        stats.clone(),
        clock.clone(),
        cfg.control.cycle,
        cfg.control.telemetry_every_cycles,
    );
    let gate = Arc::new(
        CommandGate::new(
            axis.id.to_string(),
            axis.min_ppm,
            axis.max_ppm,
            endpoints.requests,
            metrics.clone(),
        )
        .with_auth(models.command_auth.clone()),
    );
    let stop_control = Arc::new(AtomicBool::new(false));
    let (rt_tx, rt_rx) = std::sync::mpsc::channel();
    let control_thread = {
        let stop = stop_control.clone();
        let (prio, cpu) = (cfg.control.rt_priority, cfg.control.cpu);
        std::thread::Builder::new()
            .name("triad-control".into())
            .spawn(move || {
                let mut status = rt::prepare_current_thread(prio, cpu);
                // Pinned: the CPU is the control thread's alone. The node's
                // other threads run by now or are started by one that does.
                if let Some(Ok(c)) = status.cpu {
                    status.alone = Some(rt::keep_other_threads_off(c));
                }
                rt::prefault_stack(64 * 1024);
                let _ = rt_tx.send(status);
                runner.run(&stop);
            })?
    };
    let rt_status = rt_rx.recv().context("control thread died at start")?;
    let mut rt_text = rt_status.describe();
    if let Err(e) = &mem {
        rt_text.push_str(&format!("; memory not locked ({e})"));
    }
    match &rt_status.fifo {
        Ok(p) => {
            tracing::info!(priority = p, cycle_us = cfg.control.cycle.as_micros() as u64, rt = %rt_text, "control thread running")
        }
        Err(e) => {
            tracing::warn!(reason = %e, "control thread runs at normal priority: jitter will be higher; {rt_text}")
        }
    }

    // The simulated plant and its I/O scan.
    let params = PlantParams::default();
    let line = SimLine::warm(
        params,
        cfg.sim_seed,
        opts.scenario.faults.clone(),
        if axis.start_running { axis.nominal_ppm } else { 0.0 },
    );
    let io_stats = Arc::new(IoStats::default());
    let (weld_tx, weld_rx) = rtrb::RingBuffer::new(1024);
    let stop_io = Arc::new(AtomicBool::new(false));
    let io_prio = cfg.control.rt_priority.map(|p| (p - 10).max(1));
    let io_thread = {
        let (stop, clock, st) = (stop_io.clone(), clock.clone(), io_stats.clone());
        let (inp, out) = (endpoints.inputs, endpoints.outputs);
        std::thread::Builder::new().name("triad-io-sim".into()).spawn(move || {
            threads::run_sim_io(
                line,
                inp,
                out,
                weld_tx,
                clock,
                st,
                Duration::from_millis(1),
                io_prio,
                stop,
            )
        })?
    };

    // Inspection worker.
    let (res_tx, res_rx) = mpsc::channel(1024);
    let camera = SimCamera::new(SimCameraConfig {
        seed: cfg.sim_seed,
        ..SimCameraConfig::default()
    });
    let stop_insp = Arc::new(AtomicBool::new(false));
    let insp_thread = {
        let (stop, clock) = (stop_insp.clone(), clock.clone());
        std::thread::Builder::new()
            .name("triad-inspect".into())
            .spawn(move || threads::run_inspection(camera, models.worker, weld_rx, res_tx, clock, stop))?
    };

    // Twin worker.
    let twin_cfg = TwinConfig {
        band_c: asset.band_c,
        deadband_c: asset.deadband_c,
        persist_ns: asset.persistence.as_nanos() as i64,
        clear_ns: asset.clear.as_nanos() as i64,
        ..TwinConfig::default()
    };
    let (twin_tx, twin_rx) = std::sync::mpsc::channel();
    let (step_tx, step_rx) = mpsc::unbounded_channel();
    let twin_thread = std::thread::Builder::new()
        .name("triad-twin".into())
        .spawn(move || threads::run_twin(Twin::new(twin_cfg, models.twin), twin_rx, step_tx))?;

    live.update(|s| {
        s.node = NodeView {
            id: cfg.node.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            line: cfg.line.to_string(),
            scenario: opts.scenario.name.into(),
            started_ns,
            now_ns: started_ns,
            clock: format!("{} ({:?})", clock.name(), clock.status().state),
            bus: bus.backend().into(),
        };
        s.control.rt = rt_text.clone();
        s.control.cycle_us = cfg.control.cycle.as_micros() as u64;
        s.axis.id = axis.id.to_string();
        s.inspection.cell = cell.id.to_string();
        s.twin.asset = asset.id.to_string();
    });
    let ctx = Arc::new(NodeCtx {
        cfg: cfg.clone(),
        clock: clock.clone(),
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        live: live.clone(),
        gate,
        history: Arc::new(Mutex::new(ResultHistory::new(512))),
        control_stats: stats.clone(),
        io_stats: io_stats.clone(),
        axis: axis.clone(),
        cell,
        asset,
        rule,
        topics,
        chains: chain::ChainTracker::default(),
        stopping: AtomicBool::new(false),
    });

    // Async tasks.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, state_rx) = watch::channel(None);
    let pump = tokio::spawn(tasks::telemetry_pump(
        ctx.clone(),
        endpoints.telemetry,
        twin_tx,
        state_tx,
        stop_rx.clone(),
    ));
    tokio::spawn(tasks::publish_latest(
        ctx.clone(),
        ctx.topics.control_state.clone(),
        state_rx,
    ));
    let results = tokio::spawn(tasks::results_task(ctx.clone(), res_rx));
    let twin_events = tokio::spawn(tasks::twin_task(ctx.clone(), step_rx));
    let commands = tokio::spawn(tasks::command_consumer(ctx.clone()));
    tokio::spawn(crate::models::bus::serve_requests(
        publisher.clone(),
        Topic::model_request(&cfg.node),
        models.service.clone(),
        live.clone(),
        clock.clone(),
    ));
    let flusher = tokio::spawn(flush_bus_lane(
        outbox.clone(),
        bus.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    let mes = tokio::spawn(crate::mes::run_mes_connector(
        outbox.clone(),
        cfg.mes.clone(),
        metrics.clone(),
        live.clone(),
        clock.clone(),
        stop_rx.clone(),
    ));
    let app = AppState {
        live: live.clone(),
        metrics: metrics.clone(),
        control: stats.clone(),
        outbox_max_entries: cfg.outbox.max_entries,
        clock: clock.clone(),
        outbox: Some(outbox.clone()),
        outbox_max_bytes: cfg.outbox.max_bytes,
        bounds: cfg.health,
    };
    let mut dash_stop = stop_rx.clone();
    let api = crate::api::router(crate::api::ApiState {
        models: models.service.clone(),
        gates: vec![ctx.gate.clone()],
        clock: clock.clone(),
        node: cfg.node.to_string(),
        metrics: ctx.metrics.clone(),
    });
    let dashboard = tokio::spawn(crate::dashboard::serve_router(
        listener,
        crate::dashboard::router(app).merge(api),
        async move {
            let _ = dash_stop.wait_for(|s| *s).await;
        },
    ));
    // Chains a stop or a power cut interrupted: complete them now.
    chain::resume(&ctx, outbox_lost.is_some());
    tracing::info!(url = %format!("http://{listen}/"), scenario = opts.scenario.name, "triad node running; dashboard at the url");
    println!(
        "triad: dashboard at http://{listen}/  (scenario {}, Ctrl-C to stop)",
        opts.scenario.name
    );

    match opts.duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown => tracing::info!("shutdown requested"),
            }
        }
        None => shutdown.await,
    }
    let ran_for = Duration::from_nanos((clock.now_ns() - started_ns).max(0) as u64);

    // Orderly stop. First the closed-loop chains in flight, while the control
    // thread still runs (a derate can still be applied); then control to the
    // safe state, then the plant, then the workers drain, then the async side
    // delivers what is pending. Every step is bounded.
    ctx.stopping.store(true, Relaxed);
    if !ctx.chains.wait_idle(CHAIN_STOP_BUDGET).await {
        tracing::warn!(
            chains = ctx.chains.active(),
            budget_s = CHAIN_STOP_BUDGET.as_secs(),
            "closed-loop chains not finished in the stop budget; their journals complete them at the next start"
        );
    }
    stop_control.store(true, Relaxed);
    let _ = control_thread.join();
    stop_io.store(true, Relaxed);
    let _ = io_thread.join();
    stop_insp.store(true, Relaxed);
    let _ = insp_thread.join();
    models.service.stop();
    // Bounded: a producer held back by a failing disk must not hold the stop.
    let bound = Duration::from_secs(3);
    let _ = tokio::time::timeout(bound, results).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(bound, pump).await;
    let _ = twin_thread.join();
    let _ = tokio::time::timeout(bound, twin_events).await;
    // Chains the last twin steps raised: what cannot finish is journaled.
    let _ = ctx.chains.wait_idle(Duration::from_secs(2)).await;
    commands.abort();
    // Give deliveries a moment; whatever is left stays in the outbox for the next start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while outbox.stats().pending_bus > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flusher.abort();
    mes.abort();
    // Close producers and connections while the runtime still runs
    // (bounded: a broker that does not answer must not hold the stop).
    let _ = tokio::time::timeout(Duration::from_secs(3), bus.close()).await;
    let _ = dashboard.await;
    let left = outbox.stats();
    if left.pending_bus + left.pending_mes > 0 {
        tracing::warn!(
            bus = left.pending_bus,
            mes = left.pending_mes,
            "messages still pending in the outbox; they are delivered after the next start"
        );
    }
    Ok(RunReport::build(
        opts.scenario.name,
        ran_for,
        &live.snapshot(),
        &stats,
        &io_stats,
        &opts.scenario,
        &left,
    ))
}
