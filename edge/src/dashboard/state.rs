//! What the dashboard shows: one snapshot of the node, updated by the tasks
//! that know each part, served as JSON at `/api/state`.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use triad_schemas::{TwinState, TwinStatus};

/// Points kept in the temperature chart (at 5 Hz: two minutes).
pub const SERIES_LEN: usize = 600;
/// Recent inspection results kept.
pub const RECENT_LEN: usize = 30;
/// Events kept in the log.
pub const EVENTS_LEN: usize = 60;

/// The node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Software version.
    pub version: String,
    /// Line id.
    pub line: String,
    /// Scenario (sim).
    pub scenario: String,
    /// The axis whose simulated plant runs the scenario's faults (the
    /// others run nominal).
    pub fault_axis: String,
    /// Start, ns.
    pub started_ns: i64,
    /// The node's clock when this snapshot was taken, ns.
    pub now_ns: i64,
    /// Clock backend and state.
    pub clock: String,
    /// Bus backend.
    pub bus: String,
}

/// The axis.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AxisView {
    /// Axis id.
    pub id: String,
    /// Mode.
    pub mode: String,
    /// Set-point, PPM.
    pub ppm_setpoint: f64,
    /// Actual, PPM.
    pub ppm_actual: f64,
    /// Weld temperature, °C.
    pub weld_temp_c: f64,
    /// Weld current, A.
    pub weld_current_a: f64,
    /// Modules finished.
    pub parts_total: u64,
    /// Safe-state reason.
    pub safe_state_reason: Option<String>,
    /// Stack light colour: green (running), amber (derated/stopped), red (safe state).
    pub stack_light: String,
    /// I/O scans in which a device the axis is bound to did not answer.
    pub io_scans_failed: u64,
}

/// The twin: its latest status, exactly as published on
/// `dtwin/<asset>/status` (flattened: `asset`, `measured_c`, `predicted_c`,
/// `residual_c`, `band_c`, `state`, `outside_since_ns`, `health`, `rul_s`,
/// `model_version`, `envelope`), and its model's name and version.
#[derive(Clone, Debug, Serialize)]
pub struct TwinView {
    /// The latest status.
    #[serde(flatten)]
    pub status: TwinStatus,
    /// The twin's model, name and version.
    pub model: String,
}

impl Default for TwinView {
    fn default() -> Self {
        Self {
            status: TwinStatus {
                envelope: triad_schemas::Envelope {
                    schema_version: triad_schemas::codec::SCHEMA_VERSION,
                    node: String::new(),
                    sequence: 0,
                    stamp_ns: 0,
                    clock: triad_schemas::ClockState::FreeRunning,
                    clock_offset_ns: None,
                },
                asset: String::new(),
                measured_c: 0.0,
                predicted_c: 0.0,
                residual_c: 0.0,
                band_c: 0.0,
                state: TwinState::Nominal,
                outside_since_ns: None,
                health: 0.0,
                rul_s: None,
                model_version: String::new(),
            },
            model: String::new(),
        }
    }
}

/// One chart point.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeriesPoint {
    /// Time, ns.
    pub t_ns: i64,
    /// Measured, °C.
    pub measured_c: f64,
    /// Predicted, °C.
    pub predicted_c: f64,
    /// Band, °C.
    pub band_c: f64,
    /// Actual rate, PPM.
    pub ppm: f64,
}

/// One recent inspection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecentResult {
    /// Sequence.
    pub sequence: i64,
    /// The model that inspected the frame, name and version.
    pub model: String,
    /// Part.
    pub part_id: String,
    /// Weld.
    pub weld_index: i32,
    /// Batch.
    pub batch_id: String,
    /// Pass/Fail.
    pub verdict: String,
    /// Defects as "class (score)".
    pub defects: Vec<String>,
    /// Latency, µs.
    pub latency_us: i64,
    /// Stamp, ns.
    pub stamp_ns: i64,
}

/// Inspection totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InspectionView {
    /// Cell id.
    pub cell: String,
    /// Model name and version.
    pub model: String,
    /// Frames inspected.
    pub frames: u64,
    /// Defective frames.
    pub defects: u64,
    /// Frames lost before inspection.
    pub dropped: u64,
    /// Frames that failed to inspect.
    pub errors: u64,
    /// Defect rate of the last 50 frames.
    pub recent_defect_rate: f64,
    /// Most recent results, newest first.
    pub recent: VecDeque<RecentResult>,
    #[serde(skip)]
    window: VecDeque<bool>,
}

impl InspectionView {
    /// Count a verdict in the sliding window.
    pub fn push_verdict(&mut self, defective: bool) {
        self.window.push_back(defective);
        if self.window.len() > 50 {
            self.window.pop_front();
        }
        self.recent_defect_rate = self.window.iter().filter(|d| **d).count() as f64 / self.window.len() as f64;
    }
}

/// An alert.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AlertView {
    /// Id.
    pub alert_id: String,
    /// Asset.
    pub asset: String,
    /// Raised / Cleared / Acknowledged.
    pub state: String,
    /// Severity.
    pub severity: String,
    /// Text.
    pub message: String,
    /// Onset, ns.
    pub onset_ns: i64,
    /// Raised, ns.
    pub raised_ns: i64,
    /// Cleared, ns.
    pub cleared_ns: Option<i64>,
}

/// A work order and its delivery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkOrderView {
    /// Id.
    pub work_order_id: String,
    /// Priority.
    pub priority: String,
    /// Defect probability (`None` when there was no inspection data).
    pub defect_probability: Option<f64>,
    /// Summary.
    pub summary: String,
    /// Issued, ns.
    pub issued_ns: i64,
    /// Is an MES URL configured (else: topic only)?
    pub to_mes: bool,
    /// Accepted by the MES, ns.
    pub delivered_ns: Option<i64>,
    /// POST attempts.
    pub attempts: u32,
    /// Last failure.
    pub last_error: Option<String>,
    /// Refused for good (dead letter).
    pub refused: bool,
}

/// The closed loop's timestamps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainView {
    /// Alert id.
    pub alert_id: String,
    /// Residual left the band, ns.
    pub fault_onset_ns: Option<i64>,
    /// Alert raised, ns.
    pub alert_ns: Option<i64>,
    /// Derate applied, ns.
    pub derate_ns: Option<i64>,
    /// Analysis done, ns.
    pub analysis_ns: Option<i64>,
    /// Work order issued, ns.
    pub workorder_ns: Option<i64>,
    /// Work order accepted by the MES, ns.
    pub mes_accepted_ns: Option<i64>,
    /// Estimated defect probability.
    pub defect_probability: Option<f64>,
    /// Rate before, PPM.
    pub ppm_before: Option<f64>,
    /// Rate after, PPM.
    pub ppm_after: Option<f64>,
}

/// Control loop figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ControlView {
    /// Cycles.
    pub cycles: u64,
    /// Overruns.
    pub overruns: u64,
    /// Jitter p99, µs.
    pub jitter_p99_us: f64,
    /// Jitter max, µs.
    pub jitter_max_us: f64,
    /// Real-time status.
    pub rt: String,
    /// Cycle period, µs.
    pub cycle_us: u64,
    /// Overruns in the last minute (for the health check).
    pub overruns_last_min: u64,
}

/// Outbox sizes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutboxView {
    /// Pending bus messages.
    pub pending_bus: u64,
    /// Pending MES messages.
    pub pending_mes: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// One excursion of the twin's residual out of its band.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExcursionView {
    /// Left the band, ns.
    pub onset_ns: i64,
    /// How long it stayed out, ms (`None` while still out or alerted).
    pub duration_ms: Option<f64>,
    /// Did it last long enough to raise an alert?
    pub alerted: bool,
}

/// A line in the event log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventView {
    /// Time, ns.
    pub t_ns: i64,
    /// Kind (alert, derate, command, excursion, safe-state, mes).
    pub kind: String,
    /// Text.
    pub text: String,
}

/// Everything.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Node.
    pub node: NodeView,
    /// Axis.
    pub axis: AxisView,
    /// Twin.
    pub twin: TwinView,
    /// Chart.
    pub series: VecDeque<SeriesPoint>,
    /// Inspection.
    pub inspection: InspectionView,
    /// Alerts, newest last.
    pub alerts: Vec<AlertView>,
    /// Work orders, newest last.
    pub work_orders: Vec<WorkOrderView>,
    /// Latest closed-loop chain.
    pub chain: Option<ChainView>,
    /// Control figures.
    pub control: ControlView,
    /// Outbox.
    pub outbox: OutboxView,
    /// Excursions of the residual, newest last (at most 100).
    pub excursions: Vec<ExcursionView>,
    /// Event log, newest last.
    pub events: VecDeque<EventView>,
    /// State files found damaged or missing at start: file, what was lost,
    /// what was done (also on `/healthz` as the `storage` check).
    pub state_warnings: Vec<String>,
}

/// The shared, mutable snapshot.
#[derive(Debug, Default)]
pub struct LiveState {
    inner: Mutex<Snapshot>,
}

impl LiveState {
    /// Change the snapshot.
    pub fn update<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        f(&mut self.inner.lock().expect("live state poisoned"))
    }

    /// Read the snapshot in place (what a summary needs, without copying
    /// the chart and the logs).
    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.inner.lock().expect("live state poisoned"))
    }

    /// A copy.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().expect("live state poisoned").clone()
    }

    /// Add a line to the event log.
    pub fn event(&self, t_ns: i64, kind: &str, text: impl Into<String>) {
        self.update(|s| {
            s.events.push_back(EventView {
                t_ns,
                kind: kind.into(),
                text: text.into(),
            });
            if s.events.len() > EVENTS_LEN {
                s.events.pop_front();
            }
        })
    }

    fn with_wo(&self, id: &str, f: impl FnOnce(&mut WorkOrderView)) {
        self.update(|s| {
            if let Some(w) = s.work_orders.iter_mut().find(|w| w.work_order_id == id) {
                f(w)
            }
        })
    }

    /// The MES connector tries to deliver `id`.
    pub fn mes_attempt(&self, id: &str) {
        self.with_wo(id, |w| w.attempts += 1)
    }

    /// The MES accepted `id`.
    pub fn mes_delivered(&self, id: &str, t_ns: i64) {
        self.with_wo(id, |w| {
            w.delivered_ns = Some(t_ns);
            w.last_error = None;
        });
        self.update(|s| {
            // Work-order ids are `WO-<alert id>`.
            if let Some(c) = s.chain.as_mut()
                && id.ends_with(&c.alert_id)
            {
                c.mes_accepted_ns.get_or_insert(t_ns);
            }
        });
        self.event(t_ns, "mes", format!("work order {id} accepted by the MES"));
    }

    /// Delivery of `id` failed.
    pub fn mes_failed(&self, id: &str, why: &str, refused: bool) {
        self.with_wo(id, |w| {
            w.last_error = Some(why.to_string());
            w.refused = refused;
        })
    }
}

/// Every station's view, in configuration order (the first is the node's
/// default view). Node-wide parts report through it to the station a
/// message concerns: the MES connector's deliveries go to the station whose
/// work order it is.
#[derive(Clone, Debug, Default)]
pub struct LineViews(pub Vec<Arc<LiveState>>);

impl LineViews {
    /// The first station's view, the node's default (an empty view for a
    /// node without stations, which `node::run` refuses).
    pub fn first(&self) -> Arc<LiveState> {
        self.0.first().cloned().unwrap_or_default()
    }

    /// The view of the station with cell or asset `id` (a model target),
    /// else the first.
    pub fn of_target(&self, id: &str) -> Arc<LiveState> {
        self.0
            .iter()
            .find(|v| v.read(|s| s.inspection.cell == id || s.twin.status.asset == id))
            .cloned()
            .unwrap_or_else(|| self.first())
    }

    /// The view of work order `id`: the station that lists it, else the
    /// station of its asset (ids are `WO-<asset>-<onset ms>`: an order left
    /// in the outbox by the last run is listed nowhere), else the first.
    fn of_work_order(&self, id: &str) -> Arc<LiveState> {
        if let Some(v) = self
            .0
            .iter()
            .find(|v| v.read(|s| s.work_orders.iter().any(|w| w.work_order_id == id)))
        {
            return v.clone();
        }
        let asset = id
            .strip_prefix("WO-")
            .and_then(|rest| rest.rsplit_once('-'))
            .map_or("", |(asset, _)| asset);
        self.of_target(asset)
    }

    /// The MES connector tries to deliver `id`.
    pub fn mes_attempt(&self, id: &str) {
        self.of_work_order(id).mes_attempt(id)
    }

    /// The MES accepted `id`.
    pub fn mes_delivered(&self, id: &str, t_ns: i64) {
        self.of_work_order(id).mes_delivered(id, t_ns)
    }

    /// Delivery of `id` failed.
    pub fn mes_failed(&self, id: &str, why: &str, refused: bool) {
        self.of_work_order(id).mes_failed(id, why, refused)
    }

    /// The view of axis `id`, or the first station's without one; `None`
    /// for an axis the line does not have.
    pub fn station(&self, axis: Option<&str>) -> Option<&Arc<LiveState>> {
        match axis {
            None => self.0.first(),
            Some(id) => self.0.iter().find(|v| v.read(|s| s.axis.id == id)),
        }
    }
}

/// One station in the line overview.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StationSummary {
    /// The axis.
    pub axis: AxisView,
    /// Cell id.
    pub cell: String,
    /// Frames inspected.
    pub frames: u64,
    /// Defective frames.
    pub defects: u64,
    /// The last verdict (`Pass`, `Fail`; `None` before the first frame).
    pub last_verdict: Option<String>,
    /// Asset id.
    pub asset: String,
    /// The twin's state.
    pub twin_state: String,
    /// Residual, °C.
    pub residual_c: f64,
    /// Alerts not cleared.
    pub alerts_open: usize,
    /// Alerts raised in this run.
    pub alerts_total: usize,
    /// Work orders issued in this run.
    pub work_orders: usize,
}

/// `/api/line`: the node and every station, in configuration order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LineView {
    /// The node.
    pub node: NodeView,
    /// Control figures (one thread runs every axis).
    pub control: ControlView,
    /// Outbox.
    pub outbox: OutboxView,
    /// Stations.
    pub stations: Vec<StationSummary>,
}

impl LineView {
    /// The overview of `views`.
    pub fn of(views: &LineViews) -> Self {
        let (node, control, outbox) = views
            .first()
            .read(|s| (s.node.clone(), s.control.clone(), s.outbox.clone()));
        LineView {
            node,
            control,
            outbox,
            stations: views
                .0
                .iter()
                .map(|v| {
                    v.read(|s| StationSummary {
                        axis: s.axis.clone(),
                        cell: s.inspection.cell.clone(),
                        frames: s.inspection.frames,
                        defects: s.inspection.defects,
                        last_verdict: s.inspection.recent.front().map(|r| r.verdict.clone()),
                        asset: s.twin.status.asset.clone(),
                        twin_state: format!("{:?}", s.twin.status.state),
                        residual_c: s.twin.status.residual_c,
                        alerts_open: s.alerts.iter().filter(|a| a.state != "Cleared").count(),
                        alerts_total: s.alerts.len(),
                        work_orders: s.work_orders.len(),
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn station(axis: &str, cell: &str, asset: &str) -> Arc<LiveState> {
        let v = Arc::new(LiveState::default());
        v.update(|s| {
            s.axis.id = axis.into();
            s.inspection.cell = cell.into();
            s.twin.status.asset = asset.into();
        });
        v
    }

    #[test]
    fn node_wide_reports_reach_the_station_they_concern() {
        let views = LineViews(vec![
            station("axis_01", "cell_01", "pack_01"),
            station("axis_02", "cell_02", "pack-02"),
        ]);
        // A work order the view lists, and one left in the outbox by the
        // last run (listed nowhere): both go to their asset's station, an
        // asset id with a '-' in it too.
        views.0[1].update(|s| {
            s.work_orders.push(WorkOrderView {
                work_order_id: "WO-pack-02-1000".into(),
                ..Default::default()
            })
        });
        views.mes_attempt("WO-pack-02-1000");
        views.mes_delivered("WO-pack-02-900", 5);
        let s2 = views.0[1].snapshot();
        assert_eq!(s2.work_orders[0].attempts, 1);
        assert!(
            s2.events.iter().any(|e| e.text.contains("WO-pack-02-900")),
            "{:?}",
            s2.events
        );
        assert!(views.0[0].snapshot().events.is_empty());
        // Model targets by cell or asset id; anything else on the first.
        assert!(Arc::ptr_eq(&views.of_target("cell_02"), &views.0[1]));
        assert!(Arc::ptr_eq(&views.of_target("pack_01"), &views.0[0]));
        assert!(Arc::ptr_eq(&views.of_target("cell_99"), &views.0[0]));
        assert!(Arc::ptr_eq(views.station(Some("axis_02")).unwrap(), &views.0[1]));
        assert!(views.station(Some("axis_09")).is_none());
    }
}
