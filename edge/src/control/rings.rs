//! The lock-free rings between the control thread and the rest of the node.
//!
//! Four single-producer single-consumer rings (`rtrb`), all of `Copy`
//! records, so neither side allocates:
//!
//! | ring | producer | consumer |
//! |---|---|---|
//! | inputs | I/O scan | control |
//! | outputs | control | I/O scan |
//! | requests | command gate | control |
//! | telemetry | control | telemetry pump |

use super::program::{ControlEvent, ControlRequest};
use rtrb::{Consumer, Producer, RingBuffer};
use triad_hw::{LineInputs, LineOutputs};
use triad_schemas::AxisMode;

/// A periodic sample of the loop, for the twin, dashboard and state topic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TelemetrySample {
    /// Clock stamp, ns.
    pub stamp_ns: i64,
    /// Inputs used in that cycle.
    pub inputs: LineInputs,
    /// Outputs written.
    pub outputs: LineOutputs,
    /// Mode.
    pub mode: AxisMode,
    /// Set-point, PPM.
    pub setpoint_ppm: f64,
    /// The cycle applied a request or changed the mode: the sample was
    /// taken for that change, and the state topic shows it at once.
    pub changed: bool,
}

/// What the control thread reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ControlTelemetry {
    /// Periodic sample.
    Sample(TelemetrySample),
    /// Something happened, at `stamp_ns`.
    Event {
        /// Clock stamp, ns.
        stamp_ns: i64,
        /// What.
        event: ControlEvent,
    },
}

impl TelemetrySample {
    /// What the twin of the axis' asset gets of it: the process measured in
    /// that cycle, and whether it runs (Running or Derated; otherwise the
    /// twin raises nothing).
    pub fn twin_sample(&self) -> triad_twin::TwinSample {
        triad_twin::TwinSample {
            stamp_ns: self.stamp_ns,
            feed_ppm: self.inputs.feed_ppm,
            weld_current_a: self.inputs.weld_current_a,
            ambient_c: self.inputs.ambient_c,
            measured_c: self.inputs.weld_temp_c,
            running: matches!(
                self.mode,
                triad_schemas::AxisMode::Running | triad_schemas::AxisMode::Derated
            ),
        }
    }
}

/// The control thread's ends of the rings.
#[derive(Debug)]
pub struct ControlRings {
    /// Process images from the I/O scan.
    pub inputs: Consumer<LineInputs>,
    /// Outputs to the I/O scan.
    pub outputs: Producer<LineOutputs>,
    /// Authorised requests.
    pub requests: Consumer<ControlRequest>,
    /// Telemetry out.
    pub telemetry: Producer<ControlTelemetry>,
}

/// The other ends, for the I/O scan, the command gate and the telemetry pump.
#[derive(Debug)]
pub struct ControlEndpoints {
    /// Push process images here (I/O scan).
    pub inputs: Producer<LineInputs>,
    /// Pop outputs here (I/O scan).
    pub outputs: Consumer<LineOutputs>,
    /// Push requests here (command gate).
    pub requests: Producer<ControlRequest>,
    /// Pop telemetry here (telemetry pump).
    pub telemetry: Consumer<ControlTelemetry>,
}

/// Create the four rings.
pub fn control_rings() -> (ControlRings, ControlEndpoints) {
    let (in_p, in_c) = RingBuffer::new(64);
    let (out_p, out_c) = RingBuffer::new(64);
    let (req_p, req_c) = RingBuffer::new(64);
    let (tel_p, tel_c) = RingBuffer::new(4096);
    (
        ControlRings {
            inputs: in_c,
            outputs: out_p,
            requests: req_c,
            telemetry: tel_p,
        },
        ControlEndpoints {
            inputs: in_p,
            outputs: out_c,
            requests: req_p,
            telemetry: tel_c,
        },
    )
}
