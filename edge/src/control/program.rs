//! The control program of one axis: a sans-IO state machine.
//!
//! Modes: `Stopped`, `Running`, `Derated`, `SafeState`. Requests arrive as
//! [`ControlRequest`]s (already authorised by the command gate); the program
//! still checks each against the axis limits and its mode, applies it or
//! rejects it, and says so with a [`ControlEvent`]. A rejected request
//! changes nothing.
//!
//! The safe state (feed stopped, weld power off) is entered on a stale input,
//! an emergency stop or a watchdog trip, and left only by `ResetFault` once
//! the cause is gone; the axis then stands in `Stopped` until `Start`.

use triad_hw::{LineInputs, LineOutputs};
use triad_schemas::{AxisMode, CommandAction};

/// A request for the axis, as it crosses the command ring (`Copy`, no heap).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControlRequest {
    /// Handle the gate uses to match the outcome to the command.
    pub handle: u64,
    /// Action.
    pub action: CommandAction,
    /// Parameter (PPM for `SetRate` and `Derate`, else ignored).
    pub value: f64,
}

/// Why a request was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The rate is outside the axis' `[min_ppm, max_ppm]`.
    OutOfRange,
    /// The axis is in the safe state; reset it first.
    InSafeState,
    /// The action needs a running axis.
    NotRunning,
    /// `Resume` without a derate.
    NotDerated,
    /// `ResetFault` while the cause is still present.
    CauseActive,
    /// The control program does not execute this action.
    Unsupported,
}

impl RejectReason {
    /// Text for the audit log.
    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::OutOfRange => "rate outside the axis limits",
            RejectReason::InSafeState => "axis is in the safe state: send ResetFault once the cause is cleared",
            RejectReason::NotRunning => "axis is not running: send Start first",
            RejectReason::NotDerated => "axis is not derated",
            RejectReason::CauseActive => "the safe-state cause is still present",
            RejectReason::Unsupported => "the control program does not execute this action",
        }
    }
}

/// Why the outputs went to the safe state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafeReason {
    /// No fresh process image within `input_stale`.
    StaleInput,
    /// Emergency stop pressed.
    EStop,
    /// The cycle woke later than the watchdog allows.
    Watchdog,
}

impl SafeReason {
    /// Text for operators.
    pub fn describe(self) -> &'static str {
        match self {
            SafeReason::StaleInput => {
                "stale input: no fresh process image from the I/O scan, or a bound point older than its bound"
            }
            SafeReason::EStop => "emergency stop pressed",
            SafeReason::Watchdog => "watchdog: the control cycle woke too late",
        }
    }
}

/// What happened in a cycle, for telemetry and audit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ControlEvent {
    /// A request was applied.
    Applied {
        /// Request handle.
        handle: u64,
        /// Action.
        action: CommandAction,
        /// Set-point before, PPM.
        from_ppm: f64,
        /// Set-point after, PPM.
        to_ppm: f64,
        /// Mode after.
        mode: AxisMode,
    },
    /// A request was rejected; nothing changed.
    Rejected {
        /// Request handle.
        handle: u64,
        /// Action.
        action: CommandAction,
        /// Why.
        reason: RejectReason,
    },
    /// Outputs went to the safe state.
    SafeStateEntered {
        /// Why.
        reason: SafeReason,
    },
    /// The safe state was reset (axis now `Stopped`).
    SafeStateLeft,
}

/// Limits and timing of one axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxisLimits {
    /// Rate after start and resume, PPM.
    pub nominal_ppm: f64,
    /// Lowest commandable rate, PPM.
    pub min_ppm: f64,
    /// Highest commandable rate, PPM.
    pub max_ppm: f64,
    /// Weld current while running, A.
    pub weld_current_a: f64,
    /// Start in `Running`.
    pub start_running: bool,
    /// Staleness limit for inputs, ns.
    pub input_stale_ns: i64,
    /// Wake-up lateness that trips the watchdog, ns.
    pub watchdog_ns: i64,
}

/// The program.
#[derive(Clone, Debug)]
pub struct AxisProgram {
    limits: AxisLimits,
    mode: AxisMode,
    setpoint_ppm: f64,
    safe: Option<SafeReason>,
    last_input: LineInputs,
    last_fresh_ns: i64,
    has_input: bool,
    /// No fresh process image for longer than the bound, as of the last
    /// cycle (a reset out of a stale-input safe state waits for fresh ones).
    inputs_stale: bool,
    /// The last image came flagged stale by the I/O scan.
    marked_stale: bool,
}

impl AxisProgram {
    /// A program starting at `now_ns` (inputs count as fresh from then).
    pub fn new(limits: AxisLimits, now_ns: i64) -> Self {
        let (mode, setpoint) = if limits.start_running {
            (AxisMode::Running, limits.nominal_ppm)
        } else {
            (AxisMode::Stopped, 0.0)
        };
        Self {
            limits,
            mode,
            setpoint_ppm: setpoint,
            safe: None,
            last_input: LineInputs::default(),
            last_fresh_ns: now_ns,
            has_input: false,
            inputs_stale: false,
            marked_stale: false,
        }
    }

    /// Mode.
    pub fn mode(&self) -> AxisMode {
        self.mode
    }
    /// Requested rate, PPM.
    pub fn setpoint_ppm(&self) -> f64 {
        self.setpoint_ppm
    }
    /// Latest inputs.
    pub fn last_input(&self) -> &LineInputs {
        &self.last_input
    }
    /// Why in the safe state.
    pub fn safe_reason(&self) -> Option<SafeReason> {
        self.safe
    }

    /// A new process image arrived. An image flagged stale (a bound point
    /// older than its bound) counts as no fresh input: the next
    /// [`AxisProgram::poll_outputs`] takes the safe state.
    pub fn handle_inputs(&mut self, inputs: &LineInputs, now_ns: i64) {
        self.marked_stale = inputs.stale;
        if !inputs.stale && (!self.has_input || inputs.scan_seq != self.last_input.scan_seq) {
            self.last_fresh_ns = now_ns;
            self.inputs_stale = false;
        }
        self.has_input = true;
        self.last_input = *inputs;
    }

    /// Apply or reject one request.
    pub fn handle_request(&mut self, req: &ControlRequest) -> ControlEvent {
        let from = self.setpoint_ppm;
        let reject = |reason| ControlEvent::Rejected {
            handle: req.handle,
            action: req.action,
            reason,
        };
        let in_range = req.value.is_finite() && req.value >= self.limits.min_ppm && req.value <= self.limits.max_ppm;
        use CommandAction::*;
        let next = match (req.action, self.mode) {
            (ResetFault, AxisMode::SafeState) => {
                if self.cause_active() {
                    return reject(RejectReason::CauseActive);
                }
                self.safe = None;
                (AxisMode::Stopped, 0.0)
            }
            (_, AxisMode::SafeState) => return reject(RejectReason::InSafeState),
            (Start, AxisMode::Stopped) => (AxisMode::Running, self.limits.nominal_ppm),
            (Start, m) => (m, from),
            (Stop, _) => (AxisMode::Stopped, 0.0),
            (SetRate | Derate, _) if !in_range => return reject(RejectReason::OutOfRange),
            (SetRate | Derate, AxisMode::Stopped) => return reject(RejectReason::NotRunning),
            (SetRate, _) => (AxisMode::Running, req.value),
            (Derate, _) => (AxisMode::Derated, req.value),
            (Resume, AxisMode::Derated) => (AxisMode::Running, self.limits.nominal_ppm),
            (Resume, _) => return reject(RejectReason::NotDerated),
            (ResetFault, m) => (m, from),
            (SkipReinspection, _) => return reject(RejectReason::Unsupported),
        };
        self.mode = next.0;
        self.setpoint_ppm = next.1;
        ControlEvent::Applied {
            handle: req.handle,
            action: req.action,
            from_ppm: from,
            to_ppm: next.1,
            mode: next.0,
        }
    }

    fn cause_active(&self) -> bool {
        match self.safe {
            Some(SafeReason::EStop) => self.last_input.estop,
            Some(SafeReason::StaleInput) => !self.has_input || self.inputs_stale,
            _ => false,
        }
    }

    /// Check the safe-state conditions and compute the outputs for this
    /// cycle. `lateness_ns` is how late the cycle woke.
    pub fn poll_outputs(&mut self, now_ns: i64, lateness_ns: i64) -> (LineOutputs, Option<ControlEvent>) {
        let mut event = None;
        self.inputs_stale = self.marked_stale || now_ns - self.last_fresh_ns > self.limits.input_stale_ns;
        if self.mode != AxisMode::SafeState {
            let reason = if self.last_input.estop {
                Some(SafeReason::EStop)
            } else if self.inputs_stale {
                Some(SafeReason::StaleInput)
            } else if lateness_ns > self.limits.watchdog_ns {
                Some(SafeReason::Watchdog)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.mode = AxisMode::SafeState;
                self.safe = Some(reason);
                self.setpoint_ppm = 0.0;
                event = Some(ControlEvent::SafeStateEntered { reason });
            }
        }
        let out = match self.mode {
            AxisMode::Running | AxisMode::Derated => LineOutputs {
                stamp_ns: now_ns,
                feed_ppm_cmd: self.setpoint_ppm,
                weld_enable: true,
                weld_current_cmd_a: self.limits.weld_current_a,
            },
            AxisMode::Stopped | AxisMode::SafeState => LineOutputs {
                stamp_ns: now_ns,
                ..LineOutputs::SAFE
            },
        };
        (out, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn limits() -> AxisLimits {
        AxisLimits {
            nominal_ppm: 12.0,
            min_ppm: 1.0,
            max_ppm: 15.0,
            weld_current_a: 5000.0,
            start_running: true,
            input_stale_ns: 20 * MS,
            watchdog_ns: 100 * MS,
        }
    }

    fn input(seq: u64) -> LineInputs {
        LineInputs {
            scan_seq: seq,
            feed_ppm: 12.0,
            weld_temp_c: 180.0,
            ..Default::default()
        }
    }

    fn req(action: CommandAction, value: f64) -> ControlRequest {
        ControlRequest {
            handle: 1,
            action,
            value,
        }
    }

    #[test]
    fn derate_and_resume() {
        let mut p = AxisProgram::new(limits(), 0);
        p.handle_inputs(&input(1), 0);
        let ev = p.handle_request(&req(CommandAction::Derate, 8.0));
        assert_eq!(
            ev,
            ControlEvent::Applied {
                handle: 1,
                action: CommandAction::Derate,
                from_ppm: 12.0,
                to_ppm: 8.0,
                mode: AxisMode::Derated
            }
        );
        let (out, _) = p.poll_outputs(MS, 0);
        assert_eq!(out.feed_ppm_cmd, 8.0);
        assert!(out.weld_enable);
        assert!(
            matches!(p.handle_request(&req(CommandAction::Resume, 0.0)), ControlEvent::Applied { to_ppm, .. } if to_ppm == 12.0)
        );
    }

    #[test]
    fn out_of_range_and_unsupported_requests_change_nothing() {
        let mut p = AxisProgram::new(limits(), 0);
        for (action, v) in [
            (CommandAction::SetRate, 99.0),
            (CommandAction::SetRate, f64::NAN),
            (CommandAction::Derate, 0.0),
        ] {
            let ev = p.handle_request(&req(action, v));
            assert_eq!(
                ev,
                ControlEvent::Rejected {
                    handle: 1,
                    action,
                    reason: RejectReason::OutOfRange
                }
            );
        }
        let ev = p.handle_request(&req(CommandAction::SkipReinspection, 0.0));
        assert!(matches!(
            ev,
            ControlEvent::Rejected {
                reason: RejectReason::Unsupported,
                ..
            }
        ));
        assert_eq!((p.mode(), p.setpoint_ppm()), (AxisMode::Running, 12.0));
    }

    #[test]
    fn an_image_flagged_stale_takes_the_safe_state_in_that_cycle_and_holds_the_reset() {
        let mut p = AxisProgram::new(limits(), 0);
        p.handle_inputs(&input(1), 0);
        assert_eq!(p.poll_outputs(MS, 0).1, None);
        // A bound point passed its bound: the very next cycle is safe, long
        // before input_stale_ns (20 ms) would have said so.
        p.handle_inputs(
            &LineInputs {
                stale: true,
                ..input(2)
            },
            2 * MS,
        );
        let (out, ev) = p.poll_outputs(2 * MS, 0);
        assert_eq!(
            ev,
            Some(ControlEvent::SafeStateEntered {
                reason: SafeReason::StaleInput
            })
        );
        assert!(!out.weld_enable && out.feed_ppm_cmd == 0.0);
        p.handle_inputs(
            &LineInputs {
                stale: true,
                ..input(3)
            },
            3 * MS,
        );
        p.poll_outputs(3 * MS, 0);
        assert!(matches!(
            p.handle_request(&req(CommandAction::ResetFault, 0.0)),
            ControlEvent::Rejected {
                reason: RejectReason::CauseActive,
                ..
            }
        ));
        // Fresh again: the reset is taken, and the axis waits for a start.
        p.handle_inputs(&input(4), 4 * MS);
        p.poll_outputs(4 * MS, 0);
        assert!(matches!(
            p.handle_request(&req(CommandAction::ResetFault, 0.0)),
            ControlEvent::Applied {
                mode: AxisMode::Stopped,
                ..
            }
        ));
    }

    #[test]
    fn stale_input_goes_to_safe_state_until_reset() {
        let mut p = AxisProgram::new(limits(), 0);
        p.handle_inputs(&input(1), 0);
        assert_eq!(p.poll_outputs(10 * MS, 0).1, None);
        // The same scan again is not fresh.
        p.handle_inputs(&input(1), 15 * MS);
        let (out, ev) = p.poll_outputs(21 * MS, 0);
        assert_eq!(
            ev,
            Some(ControlEvent::SafeStateEntered {
                reason: SafeReason::StaleInput
            })
        );
        assert_eq!(
            out,
            LineOutputs {
                stamp_ns: 21 * MS,
                ..LineOutputs::SAFE
            }
        );
        assert!(matches!(
            p.handle_request(&req(CommandAction::Start, 0.0)),
            ControlEvent::Rejected {
                reason: RejectReason::InSafeState,
                ..
            }
        ));
        // The device is still silent: the cause is present, the reset is refused.
        p.poll_outputs(40 * MS, 0);
        assert!(matches!(
            p.handle_request(&req(CommandAction::ResetFault, 0.0)),
            ControlEvent::Rejected {
                reason: RejectReason::CauseActive,
                ..
            }
        ));
        p.handle_inputs(&input(2), 50 * MS);
        assert!(matches!(
            p.handle_request(&req(CommandAction::ResetFault, 0.0)),
            ControlEvent::Applied {
                mode: AxisMode::Stopped,
                ..
            }
        ));
        assert!(matches!(
            p.handle_request(&req(CommandAction::Start, 0.0)),
            ControlEvent::Applied {
                mode: AxisMode::Running,
                ..
            }
        ));
    }

    #[test]
    fn estop_and_watchdog_trip_and_estop_blocks_reset() {
        let mut p = AxisProgram::new(limits(), 0);
        p.handle_inputs(
            &LineInputs {
                estop: true,
                ..input(1)
            },
            0,
        );
        assert_eq!(
            p.poll_outputs(MS, 0).1,
            Some(ControlEvent::SafeStateEntered {
                reason: SafeReason::EStop
            })
        );
        assert!(matches!(
            p.handle_request(&req(CommandAction::ResetFault, 0.0)),
            ControlEvent::Rejected {
                reason: RejectReason::CauseActive,
                ..
            }
        ));
        let mut q = AxisProgram::new(limits(), 0);
        q.handle_inputs(&input(1), 0);
        assert_eq!(
            q.poll_outputs(MS, 150 * MS).1,
            Some(ControlEvent::SafeStateEntered {
                reason: SafeReason::Watchdog
            })
        );
    }

    #[test]
    fn stopped_axis_refuses_rates_until_started() {
        let mut p = AxisProgram::new(
            AxisLimits {
                start_running: false,
                ..limits()
            },
            0,
        );
        p.handle_inputs(&input(1), 0);
        assert!(!p.poll_outputs(MS, 0).0.weld_enable);
        assert!(matches!(
            p.handle_request(&req(CommandAction::Derate, 8.0)),
            ControlEvent::Rejected {
                reason: RejectReason::NotRunning,
                ..
            }
        ));
        p.handle_request(&req(CommandAction::Start, 0.0));
        assert_eq!(p.poll_outputs(2 * MS, 0).0.feed_ppm_cmd, 12.0);
    }
}
