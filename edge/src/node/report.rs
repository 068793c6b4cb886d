//! The run report written by `triad run --report FILE`.
//!
//! ```json
//! {
//!   "scenario": "weld-drift",
//!   "chain": { "fault_onset_ns": …, "alert_ns": …, "derate_ns": …, "analysis_ns": …, "workorder_ns": … },
//!   "defect_probability": 0.41,
//!   "ppm_before": 12.0, "ppm_after": 8.0,
//!   "control": { "cycles": …, "overruns": 0, "jitter_p99_us": …, "jitter_max_us": … },
//!   "inspection": { "frames": …, "defects": … },
//!   "alerts": [ … ]
//! }
//! ```
//!
//! The top level is the station of the fault axis (`--fault-axis`, else
//! the first): `axis`, `cell`, `asset` name it. `stations` has every
//! station of the line, in configuration order, with its end state, its
//! counts and its chain:
//!
//! ```json
//! "stations": [
//!   { "axis": "axis_01", "cell": "cell_01", "asset": "pack_01", "scenario": "nominal",
//!     "mode": "Running", "ppm_setpoint": 12.0, "frames": 118, "defects": 3,
//!     "alerts": [], "work_orders": [], "chain": null }, …
//! ]
//! ```
//!
//! `chain` times are ns on the node clock, `null` where the step did not
//! happen. `fault_onset_ns` is when the twin's residual left its band (the
//! onset the persistence timer measures from); `fault_injected_ns` is when
//! the simulation injected the fault, which a drift makes visible later.

use crate::bus::outbox::OutboxStats;
use crate::control::ControlStats;
use crate::dashboard::{AlertView, ChainView, ExcursionView, Snapshot, WorkOrderView};
use crate::field::IoStats;
use crate::scenario::Scenario;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The closed loop as the dashboard showed it at the end (its stamps,
/// rates and defect probability: [`ChainView`]), with the delays between
/// its steps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainReport {
    /// The chain's stamps, rates and defect probability.
    #[serde(flatten)]
    pub view: ChainView,
    /// alert − onset, ms.
    pub alert_after_onset_ms: Option<f64>,
    /// derate − alert, ms.
    pub derate_after_alert_ms: Option<f64>,
    /// work order − alert, ms.
    pub workorder_after_alert_ms: Option<f64>,
}

/// Control loop figures.
#[derive(Clone, Debug, Serialize)]
pub struct ControlReport {
    /// Cycles run.
    pub cycles: u64,
    /// Deadlines missed.
    pub overruns: u64,
    /// Median wake-up lateness, µs.
    pub jitter_p50_us: f64,
    /// 99th percentile, µs.
    pub jitter_p99_us: f64,
    /// 99.9th percentile, µs.
    pub jitter_p999_us: f64,
    /// Largest, µs.
    pub jitter_max_us: f64,
    /// Longest cycle work, µs.
    pub work_max_us: f64,
    /// Scheduling the thread got.
    pub rt: String,
    /// The axis's mode at the end of the run (`Running`, `Derated`,
    /// `Stopped`, `SafeState`).
    pub mode: String,
    /// Why the outputs went to the safe state, if they are there at the end.
    pub safe_state_reason: Option<String>,
    /// Non-empty histogram buckets `[from_us, to_us, count]`.
    pub histogram: Vec<(f64, f64, u64)>,
}

/// Inspection totals.
#[derive(Clone, Debug, Serialize)]
pub struct InspectionReport {
    /// Frames inspected.
    pub frames: u64,
    /// Defective frames.
    pub defects: u64,
    /// Frames lost before inspection.
    pub dropped: u64,
    /// Frames that failed to inspect.
    pub errors: u64,
    /// Frames per second over the run.
    pub frames_per_s: f64,
    /// Model.
    pub model: String,
}

/// One station at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct StationReport {
    /// Axis id.
    pub axis: String,
    /// Cell id.
    pub cell: String,
    /// Asset id.
    pub asset: String,
    /// The scenario its plant ran (`nominal` off the fault axis).
    pub scenario: String,
    /// The axis' mode at the end (`Running`, `Derated`, `Stopped`, `SafeState`).
    pub mode: String,
    /// Rate set-point at the end, PPM.
    pub ppm_setpoint: f64,
    /// Why the outputs went to the safe state, if they are there at the end.
    pub safe_state_reason: Option<String>,
    /// Frames inspected on the cell.
    pub frames: u64,
    /// Defective frames.
    pub defects: u64,
    /// Frames lost before inspection.
    pub dropped: u64,
    /// I/O scans in which a device the axis is bound to did not answer (its
    /// program got no new inputs).
    pub io_scans_failed: u64,
    /// The twin's state at the end.
    pub twin_state: String,
    /// Alerts raised on the asset.
    pub alerts: Vec<AlertView>,
    /// Work orders for the asset.
    pub work_orders: Vec<WorkOrderView>,
    /// Its latest closed loop, if any.
    pub chain: Option<ChainReport>,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// The fault axis: the station the top level describes.
    pub axis: String,
    /// Its cell.
    pub cell: String,
    /// Its asset.
    pub asset: String,
    /// Run time, s.
    pub duration_s: f64,
    /// When the sim injected the first fault, ns.
    pub fault_injected_ns: Option<i64>,
    /// The closed loop.
    pub chain: ChainReport,
    /// Estimated weld defect probability from the analysis.
    pub defect_probability: Option<f64>,
    /// Rate set-point before the derate (or at the end without one), PPM.
    pub ppm_before: f64,
    /// Rate set-point after the derate (or at the end), PPM.
    pub ppm_after: f64,
    /// Control loop.
    pub control: ControlReport,
    /// Inspection.
    pub inspection: InspectionReport,
    /// Excursions of the twin's residual out of its band (alerted or not).
    pub excursions: Vec<ExcursionView>,
    /// Alerts.
    pub alerts: Vec<AlertView>,
    /// Work orders and their delivery.
    pub work_orders: Vec<WorkOrderView>,
    /// Outbox at the end.
    pub outbox_pending_bus: u64,
    /// MES entries still pending at the end.
    pub outbox_pending_mes: u64,
    /// Entries a destination refused for good (kept for replay).
    pub outbox_dead_letters: u64,
    /// Every station of the line, in configuration order.
    pub stations: Vec<StationReport>,
}

fn ms(a: Option<i64>, b: Option<i64>) -> Option<f64> {
    Some((a? - b?) as f64 / 1e6)
}

impl ChainReport {
    fn of(c: &ChainView) -> Self {
        ChainReport {
            view: c.clone(),
            alert_after_onset_ms: ms(c.alert_ns, c.fault_onset_ns),
            derate_after_alert_ms: ms(c.derate_ns, c.alert_ns),
            workorder_after_alert_ms: ms(c.workorder_ns, c.alert_ns),
        }
    }
}

impl StationReport {
    fn of(snap: &Snapshot, io: &IoStats) -> Self {
        StationReport {
            axis: snap.axis.id.clone(),
            cell: snap.inspection.cell.clone(),
            asset: snap.twin.status.asset.clone(),
            scenario: if snap.node.fault_axis == snap.axis.id {
                snap.node.scenario.clone()
            } else {
                "nominal".into()
            },
            mode: snap.axis.mode.clone(),
            ppm_setpoint: snap.axis.ppm_setpoint,
            safe_state_reason: snap.axis.safe_state_reason.clone(),
            frames: snap.inspection.frames,
            defects: snap.inspection.defects,
            dropped: io.welds_dropped.load(Relaxed),
            io_scans_failed: io.scans_failed.load(Relaxed),
            twin_state: format!("{:?}", snap.twin.status.state),
            alerts: snap.alerts.clone(),
            work_orders: snap.work_orders.clone(),
            chain: snap.chain.as_ref().map(ChainReport::of),
        }
    }
}

impl RunReport {
    /// Assemble from every station's final snapshot and I/O figures
    /// (`stations[fault]` is the top level) and the node's counters.
    pub fn build(
        scenario: &str,
        ran_for: Duration,
        stations: &[(Snapshot, Arc<IoStats>)],
        fault: usize,
        control: &ControlStats,
        sc: &Scenario,
        outbox: &OutboxStats,
    ) -> Self {
        let (snap, io) = &stations[fault];
        let c = snap.chain.clone().unwrap_or_default();
        let chain = ChainReport::of(&c);
        let start = io.plant_start_ns.load(Relaxed);
        let fault_injected_ns = sc.faults.iter().map(|f| start + f.at_ns).min().filter(|_| start > 0);
        let (ppm_before, ppm_after) = match (c.ppm_before, c.ppm_after) {
            (Some(b), Some(a)) => (b, a),
            _ => (snap.axis.ppm_setpoint, snap.axis.ppm_setpoint),
        };
        let secs = ran_for.as_secs_f64().max(1e-9);
        RunReport {
            scenario: scenario.into(),
            axis: snap.axis.id.clone(),
            cell: snap.inspection.cell.clone(),
            asset: snap.twin.status.asset.clone(),
            duration_s: secs,
            fault_injected_ns,
            chain,
            defect_probability: c.defect_probability,
            ppm_before,
            ppm_after,
            control: ControlReport {
                cycles: control.cycles.load(Relaxed),
                overruns: control.overruns.load(Relaxed),
                jitter_p50_us: control.quantile_us(0.5).unwrap_or(0.0),
                jitter_p99_us: control.quantile_us(0.99).unwrap_or(0.0),
                jitter_p999_us: control.quantile_us(0.999).unwrap_or(0.0),
                jitter_max_us: control.max_us(),
                work_max_us: control.max_work_ns.load(Relaxed) as f64 / 1000.0,
                rt: snap.control.rt.clone(),
                mode: snap.axis.mode.clone(),
                safe_state_reason: snap.axis.safe_state_reason.clone(),
                histogram: control.histogram(),
            },
            inspection: InspectionReport {
                frames: snap.inspection.frames,
                defects: snap.inspection.defects,
                dropped: io.welds_dropped.load(Relaxed),
                errors: snap.inspection.errors,
                frames_per_s: snap.inspection.frames as f64 / secs,
                model: snap.inspection.model.clone(),
            },
            excursions: snap.excursions.clone(),
            alerts: snap.alerts.clone(),
            work_orders: snap.work_orders.clone(),
            outbox_pending_bus: outbox.pending_bus,
            outbox_pending_mes: outbox.pending_mes,
            outbox_dead_letters: outbox.dead_letters,
            stations: stations.iter().map(|(s, io)| StationReport::of(s, io)).collect(),
        }
    }
}
