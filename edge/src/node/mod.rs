//! The node: builds every part from the config and runs them together.
//!
//! Every `[[axes]]` entry is a station (`station`): its axis program in the
//! one control thread (SCHED_FIFO where permitted), its bound points in the
//! one I/O scan over the `[[devices]]` (`triad-io`, [`crate::field`]), its
//! cell in the inspection pool (`inspection`, threads `triad-insp-<k>`), a
//! twin per asset (`triad-twin-<i>`, nice 10), and its async tasks
//! (telemetry pump, results, twin events and the closed loop, command
//! consumer). The node's own tasks on the tokio runtime: publishers, outbox
//! flusher, MES connector, model requests, dashboard. [`run`] returns a
//! [`RunReport`] when the duration is over or the shutdown future resolves.
//!
//! The closed loop's rules are the sans-IO engine of [`crate::rules`];
//! `chain` does their I/O as journaled steps: a stop waits for the
//! chains in flight (at most [`CHAIN_STOP_BUDGET`]) while the control thread
//! still runs, so a derate can still be applied; what is left is completed
//! at the next start. [`stop_signal`] resolves on SIGINT or SIGTERM alike.

mod chain;
mod inspection;
pub mod models;
pub mod report;
mod station;
mod survey;
mod systemd;
mod tasks;
pub mod threads;

#[cfg(test)]
pub(crate) use station::LoopSettings;
pub(crate) use station::{StationCtx, Topics};

use crate::bus::Bus;
use crate::bus::embedded::EmbeddedBus;
use crate::bus::outbox::Outbox;
use crate::bus::publisher::{Publisher, flush_bus_lane};
use crate::clock::{Clock, SystemClock};
use crate::config::{BusConfig, NodeConfig, StationConfig};
use crate::control::rings::control_rings;
use crate::control::{AxisLoop, AxisProgram, ControlRunner, ControlStats, rt};
use crate::dashboard::{AppState, LineViews, LiveState};
use crate::metrics::Metrics;
use crate::node::report::RunReport;
use crate::scenario::Scenario;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// How long an orderly stop waits for closed-loop chains in flight.
pub const CHAIN_STOP_BUDGET: Duration = Duration::from_secs(5);
/// Longest the start waits for every Modbus device's first answer before
/// the control thread starts (the axes of a device that has not answered
/// by then start in the safe state, for a stale input).
pub const MODBUS_START_WAIT: Duration = Duration::from_secs(3);

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
use tokio::sync::watch;
use triad_schemas::Topic;
use triad_schemas::ids::AxisId;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Scenario of the simulated line.
    pub scenario: Scenario,
    /// The axis whose simulated plant gets the scenario's faults (`None`:
    /// the first axis); the others run nominal.
    pub fault_axis: Option<AxisId>,
    /// Stop after this long (`None`: until the shutdown future resolves).
    pub duration: Option<Duration>,
    /// Dashboard address override.
    pub listen: Option<SocketAddr>,
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

/// The fault axis (default: the first) and, if the scenario has faults,
/// the device they go to: the simulated plant the fault axis' weld
/// temperature is read from.
fn scenario_faults(
    cfg: &NodeConfig,
    scenario: &Scenario,
    fault_axis: Option<&AxisId>,
) -> anyhow::Result<(usize, Option<usize>)> {
    let axis = match fault_axis {
        None => 0,
        Some(id) => cfg.axes.iter().position(|a| &a.id == id).with_context(|| {
            let known: Vec<&str> = cfg.axes.iter().map(|a| a.id.as_str()).collect();
            format!("--fault-axis {id}: the configuration has no such axis; its axes are {known:?}")
        })?,
    };
    if scenario.faults.is_empty() {
        return Ok((axis, None));
    }
    match crate::field::drivers::fault_device(cfg, axis) {
        Ok(device) => Ok((axis, Some(device))),
        Err(e) => {
            tracing::warn!("scenario {}: {e}; this run injects no faults", scenario.name);
            Ok((axis, None))
        }
    }
}

/// Open the durable state: the state directory and the outbox, with what
/// the start found damaged or lost. Nothing else starts if this fails.
struct DurableState {
    outbox: Arc<Outbox>,
    /// The outbox was damaged or missing: what was lost.
    outbox_lost: Option<String>,
    warnings: Vec<String>,
    damaged_before: std::collections::BTreeSet<std::path::PathBuf>,
}

fn open_state(cfg: &NodeConfig) -> anyhow::Result<DurableState> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create the state directory {}", cfg.state_dir.display()))?;
    let damaged_before = survey::damaged_files(&cfg.state_dir);
    let mut warnings = survey::before_start(&cfg.state_dir);
    let outbox = Arc::new(Outbox::open(&cfg.state_dir.join("outbox.redb"), cfg.outbox)?);
    outbox.set_reserve(cfg.outbox_reserve_bytes);
    let outbox_lost = outbox.open_report().lost.clone();
    if let Some(what) = &outbox_lost {
        tracing::error!("{what}");
        warnings.push(what.clone());
    }
    let pending = outbox.stats();
    if pending.pending_bus + pending.pending_mes > 0 {
        tracing::info!(
            bus = pending.pending_bus,
            mes = pending.pending_mes,
            "resuming delivery of messages left in the outbox"
        );
    }
    Ok(DurableState {
        outbox,
        outbox_lost,
        warnings,
        damaged_before,
    })
}

/// Open every station's producers in the background: a slow or absent
/// broker never delays the control loop. One that cannot open is not fatal:
/// durable messages wait in the outbox and the flusher retries (an
/// incompatible schema is logged with its field).
fn open_producers<'a>(publisher: &Arc<Publisher>, topics: impl Iterator<Item = &'a Topics>) {
    let mut seen = std::collections::HashSet::new();
    let list: Vec<Topic> = topics
        .flat_map(Topics::published)
        .filter(|t| seen.insert(t.name().to_string()))
        .collect();
    let publisher = publisher.clone();
    tokio::spawn(async move {
        for t in list {
            if let Err(e) = publisher.open(&t).await {
                tracing::error!(topic = %t, error = %e, "producer not open; messages of this topic wait in the outbox");
            }
        }
    });
}

/// The control thread, running every axis program in its cycle.
struct ControlThread {
    handle: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    stats: Arc<ControlStats>,
    rt_text: String,
}

/// Every axis program with its rings, not yet running; memory is locked
/// first (mlockall of a large process can take longer than input_stale_ms,
/// and the first cycle would then see a stale input).
struct ControlLoops {
    loops: Vec<AxisLoop>,
    endpoints: Vec<crate::control::rings::ControlEndpoints>,
    /// Why memory is not locked, if it is not.
    mem: Result<(), String>,
}

fn control_loops(cfg: &NodeConfig, stations: &[StationConfig], clock: &Arc<dyn Clock>) -> ControlLoops {
    let mem = if cfg.control.rt_priority.is_some() {
        rt::lock_memory()
    } else {
        Ok(())
    };
    let (loops, endpoints) = stations
        .iter()
        .map(|st| {
            let (rings, ends) = control_rings();
            let program = AxisProgram::new(st.axis.limits(&cfg.control), clock.now_ns());
            (AxisLoop::new(program, rings), ends)
        })
        .unzip();
    ControlLoops { loops, endpoints, mem }
}

/// Start the control thread running `loops`.
fn start_control(
    cfg: &NodeConfig,
    loops: Vec<AxisLoop>,
    mem: Result<(), String>,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<ControlThread> {
    let axes = loops.len();
    let stats = Arc::new(ControlStats::new());
    let runner = ControlRunner::new(
        loops,
        stats.clone(),
        clock.clone(),
        cfg.control.cycle,
        cfg.control.telemetry_every_cycles,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (rt_tx, rt_rx) = std::sync::mpsc::channel();
    let handle = {
        let stop = stop.clone();
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
            tracing::info!(priority = p, cycle_us = cfg.control.cycle.as_micros() as u64, axes, rt = %rt_text, "control thread running")
        }
        Err(e) => {
            tracing::warn!(reason = %e, "control thread runs at normal priority: jitter will be higher; {rt_text}")
        }
    }
    Ok(ControlThread {
        handle,
        stop,
        stats,
        rt_text,
    })
}

/// Run the line the configuration describes, on its devices (every axis
/// must be bound: [`NodeConfig::simulate_unbound`] gives the unbound ones a
/// simulated plant), with the closed loop, until `duration` passes or `shutdown` resolves, and
/// return the run's report. Every `[[axes]]` entry is a station with its
/// cell, asset and rule ([`NodeConfig::stations`]); one control thread runs
/// every axis program.
pub async fn run(
    cfg: NodeConfig,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunReport> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let started_ns = clock.now_ns();
    let stations = cfg.stations();
    anyhow::ensure!(
        !stations.is_empty(),
        "the configuration runs no station: give it an [[axes]] entry with one [[cells]] and one [[assets]] entry on that axis"
    );
    let unbound = cfg.unbound_axes();
    anyhow::ensure!(
        unbound.is_empty(),
        "axes {unbound:?} have no [axes.io]: bind their signals to device points (docs/configuration.md), or run with --sim to give each a simulated plant"
    );
    let (fault_index, fault_device) = scenario_faults(&cfg, &opts.scenario, opts.fault_axis.as_ref())?;

    let DurableState {
        outbox,
        outbox_lost,
        warnings: mut state_warnings,
        damaged_before,
    } = open_state(&cfg)?;
    let metrics = Arc::new(Metrics::new());
    let lives: Vec<Arc<LiveState>> = stations.iter().map(|_| Arc::new(LiveState::default())).collect();
    let bus = connect_bus(&cfg.bus)?;
    let publisher = Arc::new(Publisher::new(
        cfg.node.clone(),
        clock.clone(),
        bus.clone(),
        outbox.clone(),
        metrics.clone(),
    ));

    // Signed models: the service runs what was last deployed to each cell
    // and asset (re-verified) or the configured or built-in model, and owns
    // swaps and rollbacks.
    let mut models = crate::node::models::start(&cfg, &stations, clock.clone(), publisher.clone(), &lives)?;
    // The stores are open: what they set aside, and the start's findings.
    state_warnings.extend(survey::after_start(&cfg.state_dir, &damaged_before));
    for w in &state_warnings {
        if outbox_lost.as_ref() != Some(w) {
            tracing::error!("{w}");
        }
    }
    survey::mark(&cfg.state_dir);
    for live in &lives {
        live.update(|s| s.state_warnings = state_warnings.clone());
    }

    let listen = opts.listen.unwrap_or(cfg.dashboard_listen);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} for the dashboard: is another triad running? choose another with --listen or [dashboard] listen")
    })?;
    let listen = listener.local_addr()?;

    // Every device's driver first (a simulated plant takes time to warm),
    // then the programs and their rings, then the I/O scan, then the
    // control thread: its first cycles find a process image waiting (the
    // scan writes the safe outputs until the programs run).
    let field = crate::field::drivers::open(
        &cfg,
        |d| {
            if fault_device == Some(d) {
                opts.scenario.faults.clone()
            } else {
                Vec::new()
            }
        },
        &clock,
    )
    .map_err(|e| anyhow::anyhow!("cannot open the field devices: {e}"))?;
    crate::field::modbus::wait_first_samples(&field.modbus_images, MODBUS_START_WAIT, &clock).await;
    let modbus_metrics = tokio::spawn(crate::field::modbus::export_metrics(
        field.modbus_images.clone(),
        metrics.clone(),
    ));
    let ControlLoops { loops, endpoints, mem } = control_loops(&cfg, &stations, &clock);
    let (axes_io, rings): (Vec<_>, Vec<_>) = stations
        .iter()
        .zip(endpoints)
        .map(|(st, ends)| station::split_rings(st, ends))
        .unzip();
    let io_stats: Vec<Arc<crate::field::IoStats>> = axes_io.iter().map(|a| a.stats.clone()).collect();
    let line_scan = crate::field::LineScan::new(field.devices, axes_io);
    let stop_io = Arc::new(AtomicBool::new(false));
    let io_thread = {
        let (stop, clock) = (stop_io.clone(), clock.clone());
        let io_prio = cfg.control.rt_priority.map(|p| (p - 10).max(1));
        std::thread::Builder::new()
            .name("triad-io".into())
            .spawn(move || crate::field::scan::run(line_scan, clock, Duration::from_millis(1), io_prio, stop))?
    };
    // The control thread starts once the scan has run (a loaded machine can
    // keep a new thread waiting for longer than input_stale_ms: its programs
    // would start in the safe state for a stale input).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while io_stats.iter().any(|s| s.plant_start_ns.load(Relaxed) == 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let control = match start_control(&cfg, loops, mem, &clock) {
        Ok(c) => c,
        Err(e) => {
            stop_io.store(true, Relaxed);
            let _ = io_thread.join();
            return Err(e);
        }
    };

    // Per station: its camera and model slot, its twin, its view, gate and
    // context; the cells go to one inspection pool.
    let stop_insp = Arc::new(AtomicBool::new(false));
    let chains = Arc::new(chain::ChainTracker::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let common = station::Common {
        cfg: &cfg,
        clock: &clock,
        publisher: &publisher,
        metrics: &metrics,
        command_auth: &models.command_auth,
        chains: &chains,
        stopping: &stopping,
        control: &control.stats,
        rt_text: &control.rt_text,
        bus_backend: bus.backend(),
        scenario: &opts.scenario,
        fault_axis: stations[fault_index].axis.id.as_str(),
        started_ns,
    };
    let mut parts = Vec::with_capacity(stations.len());
    let sides = std::mem::take(&mut models.stations);
    for (i, ((st, rings), side)) in stations.iter().zip(rings).zip(sides).enumerate() {
        parts.push(station::build(i, st, rings, side, lives[i].clone(), &common)?);
    }
    let cells: Vec<_> = parts.iter_mut().filter_map(|p| p.cell_work.take()).collect();
    let workers = inspection::pool_size(cfg.inspection_workers, cells.len());
    tracing::info!(workers, cells = cells.len(), "inspection pool");
    let pool = inspection::InspectionPool::start(cells, workers, clock.clone(), stop_insp.clone())?;

    // Async tasks, per station, then the node's.
    let (stop_tx, stop_rx) = watch::channel(false);
    open_producers(&publisher, parts.iter().map(|p| &p.ctx.topics));
    let (ctxs, mut running): (Vec<_>, Vec<_>) = parts
        .into_iter()
        .map(|p| (p.ctx.clone(), p.spawn(stop_rx.clone())))
        .unzip();
    tokio::spawn(crate::models::bus::serve_requests(
        publisher.clone(),
        Topic::model_request(&cfg.node),
        models.service.clone(),
        LineViews(lives.clone()),
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
        LineViews(lives.clone()),
        clock.clone(),
        stop_rx.clone(),
    ));
    let app = AppState {
        stations: LineViews(lives.clone()),
        metrics: metrics.clone(),
        control: control.stats.clone(),
        outbox_max_entries: cfg.outbox.max_entries,
        clock: clock.clone(),
        outbox: Some(outbox.clone()),
        outbox_max_bytes: cfg.outbox.max_bytes,
        bounds: cfg.health,
    };
    let mut dash_stop = stop_rx.clone();
    let api = crate::api::router(crate::api::ApiState {
        models: models.service.clone(),
        gates: ctxs.iter().map(|c| c.gate.clone()).collect(),
        clock: clock.clone(),
        node: cfg.node.to_string(),
        metrics: metrics.clone(),
    });
    let dashboard = tokio::spawn(crate::dashboard::serve_router(
        listener,
        crate::dashboard::router(app).merge(api),
        async move {
            let _ = dash_stop.wait_for(|s| *s).await;
        },
    ));
    let modbus_server = match &cfg.modbus_server {
        None => None,
        Some(ms) => {
            let listener = tokio::net::TcpListener::bind(ms.listen).await.with_context(|| {
                format!("cannot listen on {} for [modbus_server]: is the port taken, or below 1024 without CAP_NET_BIND_SERVICE?", ms.listen)
            })?;
            let axes = cfg
                .axes
                .iter()
                .map(|a| {
                    let c = ctxs
                        .iter()
                        .find(|c| c.gate.axis() == a.id.as_str())
                        .expect("every axis is a station");
                    crate::field::modbus::server::ServedAxis {
                        live: c.live.clone(),
                        gate: c.gate.clone(),
                    }
                })
                .collect();
            let mut stop = stop_rx.clone();
            tracing::info!(listen = %ms.listen, unit = ms.unit, points = ms.points.len(), writers = ms.writers.len(), "serving the process image over Modbus TCP");
            Some(tokio::spawn(crate::field::modbus::server::serve_process_image(
                listener,
                ms.clone(),
                axes,
                models.service.audit().clone(),
                clock.clone(),
                cfg.node.to_string(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
    };
    // Chains a stop or a power cut interrupted: complete them now.
    chain::resume(&ctxs, outbox_lost.is_some());
    let axes: Vec<&str> = stations.iter().map(|s| s.axis.id.as_str()).collect();
    let fault_axis = stations[fault_index].axis.id.as_str();
    tracing::info!(url = %format!("http://{listen}/"), scenario = opts.scenario.name, ?axes, fault_axis, "triad node running; dashboard at the url");
    println!(
        "triad: dashboard at http://{listen}/  ({} axes; scenario {} on {fault_axis}; Ctrl-C to stop)",
        stations.len(),
        opts.scenario.name
    );
    // Control cycles, the state is open, the dashboard answers: ready.
    systemd::ready(&format!("{} axes under control; dashboard on {listen}", stations.len()));
    let watchdog = tokio::spawn(systemd::watchdog(control.stats.clone()));

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
    // safe state, then the plants, then the workers drain, then the async
    // side delivers what is pending. Every step is bounded.
    stopping.store(true, Relaxed);
    systemd::stopping();
    watchdog.abort();
    if !chains.wait_idle(CHAIN_STOP_BUDGET).await {
        tracing::warn!(
            chains = chains.active(),
            budget_s = CHAIN_STOP_BUDGET.as_secs(),
            "closed-loop chains not finished in the stop budget; their journals complete them at the next start"
        );
    }
    control.stop.store(true, Relaxed);
    let _ = control.handle.join();
    stop_io.store(true, Relaxed);
    let _ = io_thread.join();
    // The scan's last outputs (the programs' safe state) to the field.
    field.modbus.stop(Duration::from_secs(2)).await;
    modbus_metrics.abort();
    stop_insp.store(true, Relaxed);
    pool.join();
    models.service.stop();
    // Bounded, once for all stations: a producer held back by a failing
    // disk must not hold the stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for r in &mut running {
        r.results_drained(deadline).await;
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for r in running {
        r.stop(deadline).await;
    }
    // Chains the last twin steps raised: what cannot finish is journaled.
    let _ = chains.wait_idle(Duration::from_secs(2)).await;
    // Give deliveries a moment; whatever is left stays in the outbox for the next start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while outbox.stats().pending_bus > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flusher.abort();
    mes.abort();
    if let Some(server) = modbus_server {
        server.abort();
    }
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
    let views: Vec<_> = ctxs.iter().map(|c| (c.live.snapshot(), c.io_stats.clone())).collect();
    // The faults this node injected: none when the fault axis' plant is not
    // a simulated one here (a plant served over Modbus injects its own).
    let injected = Scenario {
        faults: if fault_device.is_some() {
            opts.scenario.faults.clone()
        } else {
            Vec::new()
        },
        ..opts.scenario.clone()
    };
    Ok(RunReport::build(
        opts.scenario.name,
        ran_for,
        &views,
        fault_index,
        &control.stats,
        &injected,
        &left,
    ))
}
