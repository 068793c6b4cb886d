//! One station of the line: an axis with its cell, asset and rule
//! ([`StationConfig`]). [`driver`] makes its field I/O driver (before the
//! control thread starts), [`split_rings`] gives the I/O scan its part of
//! the rings, [`build`] makes its camera, inspection worker, twin thread,
//! command gate and context; [`StationParts::spawn`]
//! starts its async tasks; [`Running`] stops them in the node's order.

use super::inspection::CellWork;
use super::threads::{self, InspectionOutcome};
use super::{chain, tasks};
use crate::bus::publisher::Publisher;
use crate::clock::Clock;
use crate::commands::{CommandAuth, CommandGate};
use crate::config::{AssetConfig, AxisConfig, CellConfig, NodeConfig, StationConfig};
use crate::control::rings::ControlEndpoints;
use crate::control::{ControlStats, ControlTelemetry};
use crate::dashboard::{LiveState, NodeView};
use crate::field::{AxisIo, IoStats};
use crate::metrics::{Metrics, StationMetrics};
use crate::models::slot::WorkerModels;
use crate::models::twin::TwinModels;
use crate::rules::StationRules;
use crate::scenario::Scenario;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_inspect::history::ResultHistory;
use triad_schemas::Topic;
use triad_schemas::ids::LineId;
use triad_twin::{Twin, TwinSample, TwinStep};

/// Topics of one station: its axis, cell and asset, and the line's work
/// orders.
pub(crate) struct Topics {
    pub command: Topic,
    pub control_state: Topic,
    pub inspection: Topic,
    pub twin_status: Topic,
    pub twin_alert: Topic,
    pub work_order: Topic,
}

impl Topics {
    pub(crate) fn of(line: &LineId, st: &StationConfig) -> Self {
        Self {
            command: Topic::control_command(&st.axis.id),
            control_state: Topic::control_state(&st.axis.id),
            inspection: Topic::inspection_result(&st.cell.id),
            twin_status: Topic::twin_status(&st.asset.id),
            twin_alert: Topic::twin_alert(&st.asset.id),
            work_order: Topic::mes_work_order(line),
        }
    }

    /// The topics this station publishes on.
    pub(crate) fn published(&self) -> [Topic; 5] {
        [
            self.control_state.clone(),
            self.inspection.clone(),
            self.twin_status.clone(),
            self.twin_alert.clone(),
            self.work_order.clone(),
        ]
    }
}

/// Where a station's closed loop does its I/O (its rules are in
/// [`StationRules`]; the rest of `NodeConfig` stays at the assembly in
/// [`run`]).
#[derive(Clone, Debug)]
pub(crate) struct LoopSettings {
    /// Where chain journals and analysis reports are written.
    pub state_dir: std::path::PathBuf,
    /// Work orders also go to an MES by HTTP (else: the topic only).
    pub to_mes: bool,
}

impl LoopSettings {
    pub(crate) fn of(cfg: &NodeConfig) -> Self {
        Self {
            state_dir: cfg.state_dir.clone(),
            to_mes: cfg.mes.url.is_some(),
        }
    }
}

/// What one station's async tasks share: its axis, cell, asset and rule,
/// its view, gate and topics, and the node's shared parts.
pub(crate) struct StationCtx {
    pub settings: LoopSettings,
    /// The closed loop's rules of this station.
    pub rules: StationRules,
    pub clock: Arc<dyn Clock>,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    /// This station's handles into the labelled metric families.
    pub station_metrics: StationMetrics,
    pub live: Arc<LiveState>,
    pub gate: Arc<CommandGate>,
    pub history: Arc<Mutex<ResultHistory>>,
    pub control_stats: Arc<ControlStats>,
    pub io_stats: Arc<IoStats>,
    pub axis: AxisConfig,
    pub cell: CellConfig,
    pub asset: AssetConfig,
    pub topics: Topics,
    /// Closed-loop chains in flight, on every station.
    pub chains: Arc<chain::ChainTracker>,
    /// The node is stopping (a derate the control thread no longer answers
    /// is left to the next start).
    pub stopping: Arc<AtomicBool>,
    /// The first station: its pump also counts the node's control and
    /// outbox figures.
    pub primary: bool,
}

/// The node's parts every station is built with.
pub(crate) struct Common<'a> {
    pub cfg: &'a NodeConfig,
    pub clock: &'a Arc<dyn Clock>,
    pub publisher: &'a Arc<Publisher>,
    pub metrics: &'a Arc<Metrics>,
    pub command_auth: &'a Arc<CommandAuth>,
    pub chains: &'a Arc<chain::ChainTracker>,
    pub stopping: &'a Arc<AtomicBool>,
    pub control: &'a Arc<ControlStats>,
    pub rt_text: &'a str,
    pub bus_backend: &'a str,
    pub scenario: &'a Scenario,
    /// The axis whose plant gets the scenario's faults.
    pub fault_axis: &'a str,
    pub started_ns: i64,
}

/// A built station, its threads running, its async tasks not yet started.
pub(crate) struct StationParts {
    pub ctx: Arc<StationCtx>,
    /// Its cell, for the node's inspection pool.
    pub cell_work: Option<CellWork>,
    twin: std::thread::JoinHandle<()>,
    telemetry: rtrb::Consumer<ControlTelemetry>,
    twin_tx: std::sync::mpsc::Sender<TwinSample>,
    results: mpsc::Receiver<InspectionOutcome>,
    steps: mpsc::UnboundedReceiver<(TwinStep, Arc<str>)>,
}

/// A station's side of its rings, once the I/O scan runs with the other.
pub(crate) struct StationRings {
    /// Requests to the axis program (the command gate's).
    pub requests: rtrb::Producer<crate::control::ControlRequest>,
    /// The program's telemetry (the pump's).
    pub telemetry: rtrb::Consumer<ControlTelemetry>,
    /// Parts to image, from the I/O scan (the inspection worker's).
    pub triggers: rtrb::Consumer<triad_hw::CaptureTrigger>,
    /// The I/O scan's figures of this station.
    pub io_stats: Arc<IoStats>,
}

/// Split a station's control endpoints: the I/O scan's part (`AxisIo`,
/// with where its axis' signals live) and the station's ([`StationRings`]).
pub(crate) fn split_rings(st: &StationConfig, ends: ControlEndpoints) -> (AxisIo, StationRings) {
    let io_stats = Arc::new(IoStats::default());
    let (trigger_tx, triggers) = rtrb::RingBuffer::new(1024);
    (
        AxisIo {
            binding: st.axis.io.clone().expect("the node runs bound axes only"),
            inputs: ends.inputs,
            outputs: ends.outputs,
            triggers: trigger_tx,
            stats: io_stats.clone(),
        },
        StationRings {
            requests: ends.requests,
            telemetry: ends.telemetry,
            triggers,
            io_stats,
        },
    )
}

/// Build station `i` on its rings: its camera and model slot (for the
/// inspection pool), its twin thread, its command gate on the control thread's request ring, its
/// dashboard view `live`.
pub(crate) fn build(
    i: usize,
    st: &StationConfig,
    rings: StationRings,
    (worker, twin_models): (WorkerModels, TwinModels),
    live: Arc<LiveState>,
    c: &Common<'_>,
) -> anyhow::Result<StationParts> {
    let seed = c.cfg.sim_seed.wrapping_add(i as u64);
    let StationRings {
        requests,
        telemetry,
        triggers: trigger_rx,
        io_stats,
    } = rings;

    let (res_tx, results) = mpsc::channel(1024);
    let camera: Box<dyn triad_hw::Camera> = Box::new(SimCamera::new(SimCameraConfig {
        seed,
        ..SimCameraConfig::default()
    }));
    let cell_work = CellWork::new(camera, worker, trigger_rx, res_tx);
    let twin_cfg = st.asset.twin_config();
    let (twin_tx, twin_rx) = std::sync::mpsc::channel();
    let (step_tx, steps) = mpsc::unbounded_channel();
    let twin = std::thread::Builder::new()
        .name(format!("triad-twin-{i}"))
        .spawn(move || threads::run_twin(Twin::new(twin_cfg, twin_models), twin_rx, step_tx))?;

    let gate = Arc::new(
        CommandGate::new(
            st.axis.id.to_string(),
            st.axis.min_ppm,
            st.axis.max_ppm,
            requests,
            c.metrics.clone(),
        )
        .with_auth(c.command_auth.clone()),
    );
    live.update(|s| {
        s.node = NodeView {
            id: c.cfg.node.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            line: c.cfg.line.to_string(),
            scenario: c.scenario.name.into(),
            fault_axis: c.fault_axis.into(),
            started_ns: c.started_ns,
            now_ns: c.started_ns,
            clock: format!("{} ({:?})", c.clock.name(), c.clock.status().state),
            bus: c.bus_backend.into(),
        };
        s.control.rt = c.rt_text.into();
        s.control.cycle_us = c.cfg.control.cycle.as_micros() as u64;
        s.axis.id = st.axis.id.to_string();
        s.inspection.cell = st.cell.id.to_string();
        s.twin.status.asset = st.asset.id.to_string();
    });
    let ctx = Arc::new(StationCtx {
        settings: LoopSettings::of(c.cfg),
        rules: st.rules(&c.cfg.line, c.cfg.analysis),
        clock: c.clock.clone(),
        publisher: c.publisher.clone(),
        metrics: c.metrics.clone(),
        station_metrics: StationMetrics::new(
            c.metrics,
            st.axis.id.as_str(),
            st.cell.id.as_str(),
            st.asset.id.as_str(),
        ),
        live,
        gate,
        history: Arc::new(Mutex::new(ResultHistory::new(512))),
        control_stats: c.control.clone(),
        io_stats,
        axis: st.axis.clone(),
        cell: st.cell.clone(),
        asset: st.asset.clone(),
        topics: Topics::of(&c.cfg.line, st),
        chains: c.chains.clone(),
        stopping: c.stopping.clone(),
        primary: i == 0,
    });
    Ok(StationParts {
        ctx,
        cell_work: Some(cell_work),
        twin,
        telemetry,
        twin_tx,
        results,
        steps,
    })
}

impl StationParts {
    /// Start the station's async tasks: telemetry pump (until `stop`),
    /// state publisher, results, twin events and the closed loop, external
    /// commands.
    pub(crate) fn spawn(self, stop: watch::Receiver<bool>) -> Running {
        let ctx = self.ctx;
        let (state_tx, state_rx) = watch::channel(None);
        let pump = tokio::spawn(tasks::telemetry_pump(
            ctx.clone(),
            self.telemetry,
            self.twin_tx,
            state_tx,
            stop,
        ));
        tokio::spawn(tasks::publish_latest(
            ctx.clone(),
            ctx.topics.control_state.clone(),
            state_rx,
        ));
        Running {
            results: Some(tokio::spawn(tasks::results_task(ctx.clone(), self.results))),
            twin_events: tokio::spawn(tasks::twin_task(ctx.clone(), self.steps)),
            commands: tokio::spawn(tasks::command_consumer(ctx)),
            pump,
            twin: self.twin,
        }
    }
}

/// A station's running threads and tasks, stopped in the node's order.
pub(crate) struct Running {
    pump: JoinHandle<()>,
    results: Option<JoinHandle<()>>,
    twin_events: JoinHandle<()>,
    commands: JoinHandle<()>,
    twin: std::thread::JoinHandle<()>,
}

impl Running {
    /// Wait until every result of the cell is published, at most until
    /// `deadline` (one deadline for every station: a producer held back by
    /// a failing disk must not hold the stop once per station).
    pub(crate) async fn results_drained(&mut self, deadline: tokio::time::Instant) {
        if let Some(r) = self.results.take() {
            let _ = tokio::time::timeout_at(deadline, r).await;
        }
    }

    /// After the node signalled its tasks to stop: the pump ends (at the
    /// deadline it is aborted), which closes the twin's samples, so the
    /// twin thread ends; its last steps are handled until the deadline; the
    /// command consumer is dropped.
    pub(crate) async fn stop(mut self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, &mut self.pump).await.is_err() {
            self.pump.abort();
            let _ = (&mut self.pump).await;
        }
        let _ = self.twin.join();
        if tokio::time::timeout_at(deadline, &mut self.twin_events).await.is_err() {
            self.twin_events.abort();
        }
        self.commands.abort();
    }
}
