//! The messages of DESIGN.md's topic table, one type per family.
//!
//! Field names carry units (`_c` for °C, `_ppm` for parts per minute, `_ns`
//! for nanoseconds since the Unix epoch on the node clock, `_us` for
//! microseconds of duration). Each type mirrors an Avro schema under
//! `schemas/avro/`; `codec` tests check that they round-trip.

use crate::envelope::Envelope;
use serde::{Deserialize, Serialize};

/// Every message family, one per Avro schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// [`ControlCommand`]
    ControlCommand,
    /// [`ControlState`]
    ControlState,
    /// [`InspectionResult`]
    InspectionResult,
    /// [`TwinStatus`]
    TwinStatus,
    /// [`TwinAlert`]
    TwinAlert,
    /// [`WorkOrder`]
    WorkOrder,
    /// [`AuditEvent`]
    AuditEvent,
    /// [`ModelRequest`]
    ModelRequest,
}

impl MessageKind {
    /// All kinds, in topic-table order.
    pub const ALL: [MessageKind; 8] = [
        MessageKind::ControlCommand,
        MessageKind::ControlState,
        MessageKind::InspectionResult,
        MessageKind::TwinStatus,
        MessageKind::TwinAlert,
        MessageKind::WorkOrder,
        MessageKind::AuditEvent,
        MessageKind::ModelRequest,
    ];

    /// The Avro record's name (also the schema file's stem in snake case).
    pub fn record_name(self) -> &'static str {
        match self {
            MessageKind::ControlCommand => "ControlCommand",
            MessageKind::ControlState => "ControlState",
            MessageKind::InspectionResult => "InspectionResult",
            MessageKind::TwinStatus => "TwinStatus",
            MessageKind::TwinAlert => "TwinAlert",
            MessageKind::WorkOrder => "WorkOrder",
            MessageKind::AuditEvent => "AuditEvent",
            MessageKind::ModelRequest => "ModelRequest",
        }
    }
}

/// A message that can travel on a triad bus.
pub trait BusMessage: Serialize + for<'de> Deserialize<'de> + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Which schema describes it.
    const KIND: MessageKind;
    /// Its header.
    fn envelope(&self) -> &Envelope;
    /// Mutable header, for the bus to fill in sequence numbers.
    fn envelope_mut(&mut self) -> &mut Envelope;
    /// Partition and compaction key (the axis, cell or asset it is about).
    fn key(&self) -> &str;
}

macro_rules! bus_message {
    ($ty:ident, $key:ident) => {
        impl BusMessage for $ty {
            const KIND: MessageKind = MessageKind::$ty;
            fn envelope(&self) -> &Envelope {
                &self.envelope
            }
            fn envelope_mut(&mut self) -> &mut Envelope {
                &mut self.envelope
            }
            fn key(&self) -> &str {
                &self.$key
            }
        }
    };
}

/// What a control command asks an axis to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandAction {
    /// Start feeding at the configured nominal rate.
    Start,
    /// Stop feeding (controlled stop, not the safe state).
    Stop,
    /// Run at `value` PPM (within the axis limits).
    SetRate,
    /// Run at the reduced rate `value` PPM because of a quality risk.
    Derate,
    /// Return from a derate to the nominal rate.
    Resume,
    /// Leave the safe state after the cause is cleared.
    ResetFault,
    /// Let parts pass without re-inspection (needs a token that allows it).
    SkipReinspection,
}

/// `ctrl/<axis>/cmd`: a command for one axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlCommand {
    /// Header.
    pub envelope: Envelope,
    /// Unique id of the command (for audit and dedup).
    pub command_id: String,
    /// Target axis.
    pub axis: String,
    /// Requested action.
    pub action: CommandAction,
    /// Parameter of the action (PPM for `SetRate` and `Derate`).
    pub value: Option<f64>,
    /// Why the command was sent, for the audit trail.
    pub reason: String,
    /// Who or what issued it (user, rule id).
    pub issued_by: String,
    /// Signed authorisation (compact EdDSA JWT); `None` only for commands the
    /// node's own rules issue in-process.
    pub token: Option<String>,
}
bus_message!(ControlCommand, axis);

/// Operating mode of an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AxisMode {
    /// Not feeding.
    Stopped,
    /// Feeding at the requested rate.
    Running,
    /// Feeding at a reduced rate after a quality alert.
    Derated,
    /// Outputs in the configured safe state (stale input, watchdog, e-stop).
    SafeState,
}

/// `ctrl/<axis>/state`: the latest state of one axis (latest value wins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Header.
    pub envelope: Envelope,
    /// Axis.
    pub axis: String,
    /// Mode.
    pub mode: AxisMode,
    /// Requested rate, PPM.
    pub ppm_setpoint: f64,
    /// Measured rate, PPM.
    pub ppm_actual: f64,
    /// Measured weld current, A.
    pub weld_current_a: f64,
    /// Measured weld temperature, °C.
    pub weld_temp_c: f64,
    /// Modules finished.
    pub parts_total: i64,
    /// Why the axis is in the safe state, if it is.
    pub safe_state_reason: Option<String>,
    /// Control cycles run.
    pub cycles: i64,
    /// Cycles that missed their deadline.
    pub overruns: i64,
    /// 99th percentile of wake-up lateness, µs.
    pub jitter_p99_us: f64,
    /// Largest wake-up lateness, µs.
    pub jitter_max_us: f64,
}
bus_message!(ControlState, axis);

/// Outcome of one inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// No defect found.
    Pass,
    /// At least one defect found.
    Fail,
}

/// A defect found in a frame, in frame pixel coordinates (origin top-left).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefectBox {
    /// Class label from the model (e.g. `porosity`, `crack`).
    pub class: String,
    /// Model confidence in [0, 1].
    pub score: f64,
    /// Left edge, px.
    pub x: i32,
    /// Top edge, px.
    pub y: i32,
    /// Width, px.
    pub w: i32,
    /// Height, px.
    pub h: i32,
}

/// `insp/<cell>/result`: the result of inspecting one weld.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InspectionResult {
    /// Header (stamp = when the result was produced).
    pub envelope: Envelope,
    /// Inspection cell.
    pub cell: String,
    /// Part (module) id, e.g. `M000042`.
    pub part_id: String,
    /// Weld index within the part, from 0.
    pub weld_index: i32,
    /// Batch id, e.g. `B000042`.
    pub batch_id: String,
    /// When the frame was captured, ns.
    pub frame_stamp_ns: i64,
    /// SHA-256 of the ROI pixels the model saw, hex (first 16 bytes).
    pub roi_hash: String,
    /// Pass or fail.
    pub verdict: Verdict,
    /// Defects found (empty on pass).
    pub defects: Vec<DefectBox>,
    /// Model that decided.
    pub model_name: String,
    /// Its version.
    pub model_version: String,
    /// Frame to result, µs.
    pub latency_us: i64,
}
bus_message!(InspectionResult, cell);

/// Condition of the twin's residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwinState {
    /// Residual inside its band.
    Nominal,
    /// Residual outside its band, not yet for long enough to alert.
    Excursion,
    /// Residual outside for longer than the persistence time: alert raised.
    Alert,
}

/// `dtwin/<asset>/status`: the twin's latest view of one asset (compacted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwinStatus {
    /// Header (stamp = time of the measurement).
    pub envelope: Envelope,
    /// Asset.
    pub asset: String,
    /// Measured weld temperature, °C.
    pub measured_c: f64,
    /// Predicted weld temperature, °C.
    pub predicted_c: f64,
    /// Measured minus predicted, °C.
    pub residual_c: f64,
    /// Half-width of the residual band, °C.
    pub band_c: f64,
    /// Residual condition.
    pub state: TwinState,
    /// Since when the residual is outside the band, ns.
    pub outside_since_ns: Option<i64>,
    /// Health score in [0, 1] (1 = as new).
    pub health: f64,
    /// Remaining useful life estimate, s, while health declines.
    pub rul_s: Option<f64>,
    /// Version of the predictor model.
    pub model_version: String,
}
bus_message!(TwinStatus, asset);

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertKind {
    /// The twin's residual stayed outside its band longer than allowed.
    ResidualOutOfBand,
}

/// Life cycle of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertState {
    /// Raised now.
    Raised,
    /// The condition is gone.
    Cleared,
    /// An operator acknowledged it.
    Acknowledged,
}

/// How urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// `dtwin/<asset>/alert`: an alert raised, cleared or acknowledged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwinAlert {
    /// Header (stamp = when this alert event happened).
    pub envelope: Envelope,
    /// Unique id, shared by the raise, clear and acknowledge of one alert.
    pub alert_id: String,
    /// Asset.
    pub asset: String,
    /// Kind.
    pub kind: AlertKind,
    /// Life-cycle event.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// When the residual left its band, ns.
    pub onset_ns: i64,
    /// When the alert was raised, ns.
    pub raised_ns: i64,
    /// Residual at raise time, °C.
    pub residual_c: f64,
    /// Band half-width, °C.
    pub band_c: f64,
    /// Persistence time that was exceeded, ms.
    pub persistence_ms: i64,
    /// Text for people.
    pub message: String,
}
bus_message!(TwinAlert, asset);

/// Priority of a work order, as MES systems order their queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// When convenient.
    Low,
    /// Normal queue.
    Normal,
    /// Before normal work.
    High,
    /// Now.
    Urgent,
}

/// Timestamps of the closed-loop chain, ns on the shared clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainStamps {
    /// The residual left its band.
    pub fault_onset_ns: i64,
    /// The twin raised the alert.
    pub alert_ns: i64,
    /// The control loop applied the derate (if it did).
    pub derate_ns: Option<i64>,
    /// The analysis finished.
    pub analysis_ns: i64,
    /// The work order was issued.
    pub workorder_ns: i64,
}

/// `mes/<line>/workorder`: a maintenance/quality work order for the MES.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    /// Header.
    pub envelope: Envelope,
    /// Unique id (`WO-<node>-<alert>`), stable across retries.
    pub work_order_id: String,
    /// Line.
    pub line: String,
    /// Asset the alert is about.
    pub asset: String,
    /// Inspection cell analysed.
    pub cell: String,
    /// Axis that was derated.
    pub axis: String,
    /// Alert that triggered it.
    pub alert_id: String,
    /// Priority.
    pub priority: Priority,
    /// Estimated probability that the next weld is defective; `None` when
    /// the cell had no inspection results to analyse.
    pub defect_probability: Option<f64>,
    /// Defect rate of the healthy baseline.
    pub baseline_defect_rate: f64,
    /// Defect rate observed in the analysed batches.
    pub recent_defect_rate: f64,
    /// Probability that the recent rate really exceeds the baseline.
    pub elevated_probability: f64,
    /// Batches analysed.
    pub batches: Vec<String>,
    /// Frames in those batches.
    pub frames_analysed: i64,
    /// Defective frames among them.
    pub defects_found: i64,
    /// Rate before the derate, PPM.
    pub ppm_before: f64,
    /// Rate after the derate, PPM.
    pub ppm_after: f64,
    /// The chain's timestamps.
    pub chain: ChainStamps,
    /// Text for people.
    pub summary: String,
}
bus_message!(WorkOrder, asset);

/// Was a security decision an acceptance or a refusal?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Done.
    Accepted,
    /// Refused; nothing changed.
    Refused,
}

/// `audit/<node>/event`: one security decision of a node (a model deploy,
/// rollback, automatic rollback, probation result, or an external control
/// command): who, what, when (the envelope's stamp) and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Header.
    pub envelope: Envelope,
    /// Unique id of the decision on this node.
    pub event_id: String,
    /// `deploy`, `rollback`, `auto_rollback`, `probation_passed`,
    /// `load_at_start` or `command`.
    pub action: String,
    /// Accepted or refused.
    pub outcome: AuditOutcome,
    /// Cell, asset or axis concerned.
    pub target: String,
    /// `ok` or the stable refusal code (e.g. `token_expired`).
    pub code: String,
    /// The reason in words.
    pub reason: String,
    /// Who asked: the token's issuer, a rule, or `node:fuse`.
    pub actor: Option<String>,
    /// Key that signed the token.
    pub key_id: Option<String>,
    /// The token's id (never the token).
    pub token_id: Option<String>,
    /// Where the request came from (`http <peer>`, `bus <topic>`, `node`).
    pub origin: String,
    /// Bundle model name.
    pub bundle_name: Option<String>,
    /// Bundle version.
    pub bundle_version: Option<String>,
    /// Bundle digest, `sha256:…`.
    pub bundle_digest: Option<String>,
    /// Key that signed the bundle.
    pub bundle_signer: Option<String>,
    /// Version running before.
    pub from_version: Option<String>,
    /// Version running after (equal to before when refused).
    pub to_version: Option<String>,
}
bus_message!(AuditEvent, target);

/// What a [`ModelRequest`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelAction {
    /// Verify, load, check and swap in the bundle.
    Deploy,
    /// Go back to the previous model.
    Rollback,
}

/// `models/<node>/request`: deploy a signed bundle to, or roll back, one
/// target of a node, from a fleet manager or an MES. The token authorises
/// it exactly as on the HTTP API; the node's decision is published on
/// `audit/<node>/event` with `origin` naming the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// Header (the sender's).
    pub envelope: Envelope,
    /// Unique id chosen by the sender.
    pub request_id: String,
    /// Cell (inspection model) or asset (twin model).
    pub target: String,
    /// Deploy or roll back.
    pub action: ModelAction,
    /// Compact EdDSA JWT for this use, target (and bundle).
    pub token: String,
    /// Deploy: the bundle as a `.tar` or `.tar.gz` archive.
    #[serde(default, with = "apache_avro::serde_avro_bytes_opt")]
    pub bundle: Option<Vec<u8>>,
    /// Who or what sent it.
    pub issued_by: String,
}
bus_message!(ModelRequest, target);
