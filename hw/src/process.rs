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
    /// A value of this image is older than its point's bound (a polled
    /// device stopped answering): the program takes the safe state now.
    pub stale: bool,
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

/// One signal of an axis' process image: what its program reads (the
/// fields of [`LineInputs`]) or drives (of [`LineOutputs`]). The name is the
/// field's, and the config key an axis binds to a device point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Measured feed rate, PPM.
    FeedPpm,
    /// Weld-zone temperature, °C.
    WeldTempC,
    /// Weld current, A.
    WeldCurrentA,
    /// Ambient temperature, °C.
    AmbientC,
    /// Modules finished.
    PartsTotal,
    /// Emergency stop pressed.
    Estop,
    /// Commanded feed rate, PPM.
    FeedPpmCmd,
    /// Weld power stage enabled.
    WeldEnable,
    /// Commanded weld current, A.
    WeldCurrentCmdA,
}

/// Whether a point is read from the field or driven into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Read by a scan.
    Input,
    /// Written by a scan.
    Output,
}

/// What a point's value means. Every value crosses the scan as an `f64`:
/// a bool is 0.0 or 1.0, a counter a whole number (exact below 2^53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    /// A measured or commanded quantity.
    Analog,
    /// A count that only grows.
    Counter,
    /// A digital point.
    Bool,
}

impl Signal {
    /// Every signal: the inputs, then the outputs.
    pub const ALL: [Signal; 9] = [
        Signal::FeedPpm,
        Signal::WeldTempC,
        Signal::WeldCurrentA,
        Signal::AmbientC,
        Signal::PartsTotal,
        Signal::Estop,
        Signal::FeedPpmCmd,
        Signal::WeldEnable,
        Signal::WeldCurrentCmdA,
    ];

    /// Its name: the process image's field, the config key.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::FeedPpm => "feed_ppm",
            Signal::WeldTempC => "weld_temp_c",
            Signal::WeldCurrentA => "weld_current_a",
            Signal::AmbientC => "ambient_c",
            Signal::PartsTotal => "parts_total",
            Signal::Estop => "estop",
            Signal::FeedPpmCmd => "feed_ppm_cmd",
            Signal::WeldEnable => "weld_enable",
            Signal::WeldCurrentCmdA => "weld_current_cmd_a",
        }
    }

    /// Read by the program or driven by it.
    pub const fn direction(self) -> Direction {
        match self {
            Signal::FeedPpmCmd | Signal::WeldEnable | Signal::WeldCurrentCmdA => Direction::Output,
            _ => Direction::Input,
        }
    }

    /// Its kind of value.
    pub const fn kind(self) -> PointKind {
        match self {
            Signal::Estop | Signal::WeldEnable => PointKind::Bool,
            Signal::PartsTotal => PointKind::Counter,
            _ => PointKind::Analog,
        }
    }

    /// Its engineering unit (empty for bools and counts).
    pub const fn unit(self) -> &'static str {
        match self {
            Signal::FeedPpm | Signal::FeedPpmCmd => "PPM",
            Signal::WeldTempC | Signal::AmbientC => "°C",
            Signal::WeldCurrentA | Signal::WeldCurrentCmdA => "A",
            Signal::PartsTotal | Signal::Estop | Signal::WeldEnable => "",
        }
    }

    /// Its position in [`Signal::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The signal named `name`, if any.
    pub fn by_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn flag(v: f64) -> bool {
    v >= 0.5
}

impl LineInputs {
    /// Set input `signal` from a scanned value (outputs are ignored).
    pub fn set(&mut self, signal: Signal, v: f64) {
        match signal {
            Signal::FeedPpm => self.feed_ppm = v,
            Signal::WeldTempC => self.weld_temp_c = v,
            Signal::WeldCurrentA => self.weld_current_a = v,
            Signal::AmbientC => self.ambient_c = v,
            Signal::PartsTotal => self.parts_total = v.max(0.0) as u64,
            Signal::Estop => self.estop = flag(v),
            Signal::FeedPpmCmd | Signal::WeldEnable | Signal::WeldCurrentCmdA => {}
        }
    }

    /// Input `signal` as a scanned value (0.0 for outputs).
    pub fn get(&self, signal: Signal) -> f64 {
        match signal {
            Signal::FeedPpm => self.feed_ppm,
            Signal::WeldTempC => self.weld_temp_c,
            Signal::WeldCurrentA => self.weld_current_a,
            Signal::AmbientC => self.ambient_c,
            Signal::PartsTotal => self.parts_total as f64,
            Signal::Estop => f64::from(u8::from(self.estop)),
            Signal::FeedPpmCmd | Signal::WeldEnable | Signal::WeldCurrentCmdA => 0.0,
        }
    }
}

impl LineOutputs {
    /// Output `signal` as a value to write (0.0 for inputs).
    pub fn get(&self, signal: Signal) -> f64 {
        match signal {
            Signal::FeedPpmCmd => self.feed_ppm_cmd,
            Signal::WeldEnable => f64::from(u8::from(self.weld_enable)),
            Signal::WeldCurrentCmdA => self.weld_current_cmd_a,
            _ => 0.0,
        }
    }

    /// Set output `signal` from a value (inputs are ignored).
    pub fn set(&mut self, signal: Signal, v: f64) {
        match signal {
            Signal::FeedPpmCmd => self.feed_ppm_cmd = v,
            Signal::WeldEnable => self.weld_enable = flag(v),
            Signal::WeldCurrentCmdA => self.weld_current_cmd_a = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_round_trips_through_the_image_and_is_found_by_name() {
        let mut inp = LineInputs::default();
        let mut out = LineOutputs::SAFE;
        for (i, s) in Signal::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Signal::by_name(s.name()), Some(s));
            let v = if s.kind() == PointKind::Bool { 1.0 } else { 42.0 };
            match s.direction() {
                Direction::Input => {
                    inp.set(s, v);
                    assert_eq!(inp.get(s), v, "{s:?}");
                }
                Direction::Output => {
                    out.set(s, v);
                    assert_eq!(out.get(s), v, "{s:?}");
                }
            }
        }
        assert_eq!(Signal::by_name("feed"), None);
    }
}
