//! The process image of the welding line and the scan trait that fills it.
//!
//! Everything in the process image is `Copy` and fixed-size, so it can cross a
//! lock-free ring into the control thread without allocation.

use thiserror::Error;

/// Inputs of one scan, as the control program sees them.
///
/// Units are in the field names. Times are ns on the node clock.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LineInputs {
    /// When the scan sampled the inputs.
    pub stamp_ns: i64,
    /// Scan counter, +1 per scan: the control thread flags an input as stale
    /// when this stops moving.
    pub scan_seq: u64,
    /// Measured feed rate of the axis, parts (modules) per minute.
    pub feed_ppm: f64,
    /// Measured weld-zone temperature, °C.
    pub weld_temp_c: f64,
    /// Measured weld current, A (0 when welding is disabled).
    pub weld_current_a: f64,
    /// Ambient temperature at the cell, °C.
    pub ambient_c: f64,
    /// Modules finished since start.
    pub parts_total: u64,
    /// Emergency stop pressed (digital input, active high).
    pub estop: bool,
}

/// Outputs the control program drives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineOutputs {
    /// When the control program computed these outputs.
    pub stamp_ns: i64,
    /// Commanded feed rate, parts per minute.
    pub feed_ppm_cmd: f64,
    /// Weld power stage enabled.
    pub weld_enable: bool,
    /// Commanded weld current, A.
    pub weld_current_cmd_a: f64,
}

impl LineOutputs {
    /// The safe state: feed stopped, weld power off.
    pub const SAFE: LineOutputs = LineOutputs {
        stamp_ns: 0,
        feed_ppm_cmd: 0.0,
        weld_enable: false,
        weld_current_cmd_a: 0.0,
    };
}

impl Default for LineOutputs {
    fn default() -> Self {
        Self::SAFE
    }
}

/// A scan failure. Link faults (the device cannot be reached) are kept apart
/// from faults the device itself reports.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IoError {
    /// No answer within the scan timeout; the driver will reconnect.
    #[error("device {device} did not answer within {timeout_ms} ms: check power and cabling; inputs are flagged stale")]
    Timeout {
        /// Device name from the config.
        device: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The connection is down.
    #[error("device {device} is disconnected ({reason}); reconnecting")]
    Disconnected {
        /// Device name from the config.
        device: String,
        /// What the transport said.
        reason: String,
    },
    /// The device answered with an exception or a fault code.
    #[error("device {device} reported fault {code}: {detail}")]
    DeviceFault {
        /// Device name from the config.
        device: String,
        /// Device-specific fault or exception code.
        code: u16,
        /// Human-readable meaning.
        detail: String,
    },
}

/// One scan of the process image: apply `outputs`, then sample the inputs.
///
/// `now_ns` is the scan time on the node clock; implementations never read a
/// clock themselves.
pub trait ProcessIo: Send {
    /// Apply outputs and read inputs.
    fn scan(&mut self, outputs: &LineOutputs, now_ns: i64) -> Result<LineInputs, IoError>;

    /// Hand the capture triggers seen since the last call (a part passing
    /// the camera: a PLC's part-present signal, the simulation's welds) to
    /// `sink`, oldest first. Call after [`ProcessIo::scan`]. A device that
    /// sees no parts has none (the default).
    fn take_triggers(&mut self, sink: &mut dyn FnMut(crate::CaptureTrigger)) {
        let _ = sink;
    }
}
