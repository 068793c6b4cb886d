//! The control thread's loop: fixed period, absolute deadlines, no
//! allocation, no locks, no blocking calls other than the sleep itself.

use super::histogram::ControlStats;
use super::program::AxisProgram;
use super::rings::{ControlRings, ControlTelemetry, TelemetrySample};
use crate::clock::{Clock, monotonic_ns, sleep_until_mono};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use triad_hw::LineOutputs;

/// Requests taken per cycle at most, so a flood cannot stretch a cycle.
const MAX_REQUESTS_PER_CYCLE: usize = 8;

/// Runs an [`AxisProgram`] every cycle.
pub struct ControlRunner {
    program: AxisProgram,
    rings: ControlRings,
    stats: Arc<ControlStats>,
    clock: Arc<dyn Clock>,
    cycle_ns: i64,
    telemetry_every: u32,
    counter: u32,
}

impl ControlRunner {
    /// Assemble a runner.
    pub fn new(
        program: AxisProgram,
        rings: ControlRings,
        stats: Arc<ControlStats>,
        clock: Arc<dyn Clock>,
        cycle: Duration,
        telemetry_every: u32,
    ) -> Self {
        Self {
            program,
            rings,
            stats,
            clock,
            cycle_ns: cycle.as_nanos() as i64,
            telemetry_every,
            counter: 0,
        }
    }

    /// The program (for tests and reports).
    pub fn program(&self) -> &AxisProgram {
        &self.program
    }

    fn emit(&mut self, t: ControlTelemetry) {
        if self.rings.telemetry.push(t).is_err() {
            self.stats.telemetry_dropped.fetch_add(1, Relaxed);
        }
    }

    /// One cycle of work. `lateness_ns` is how late this cycle woke.
    pub fn run_cycle(&mut self, lateness_ns: i64) {
        let now = self.clock.now_ns();
        // Newest process image wins; older ones in the ring are superseded.
        while let Ok(inputs) = self.rings.inputs.pop() {
            self.program.handle_inputs(&inputs, now);
        }
        for _ in 0..MAX_REQUESTS_PER_CYCLE {
            let Ok(req) = self.rings.requests.pop() else { break };
            let event = self.program.handle_request(&req);
            self.emit(ControlTelemetry::Event { stamp_ns: now, event });
        }
        let (outputs, event) = self.program.poll_outputs(now, lateness_ns);
        if let Some(event) = event {
            self.emit(ControlTelemetry::Event { stamp_ns: now, event });
        }
        // If the I/O side stalls, the newest outputs matter: drop is fine
        // because the next cycle writes again.
        let _ = self.rings.outputs.push(outputs);
        self.counter += 1;
        if self.counter >= self.telemetry_every {
            self.counter = 0;
            let sample = TelemetrySample {
                stamp_ns: now,
                inputs: *self.program.last_input(),
                outputs,
                mode: self.program.mode(),
                setpoint_ppm: self.program.setpoint_ppm(),
            };
            self.emit(ControlTelemetry::Sample(sample));
        }
    }

    /// Run until `stop` is set, then write the safe state once more.
    /// Call on the control thread after [`super::rt::prepare_current_thread`].
    pub fn run(mut self, stop: &AtomicBool) -> Self {
        self.stats.running.store(true, Relaxed);
        let mut next = monotonic_ns() + self.cycle_ns;
        while !stop.load(Relaxed) {
            sleep_until_mono(next);
            let wake = monotonic_ns();
            let late = wake - next;
            if late >= self.cycle_ns {
                // Deadlines passed while we were not running: count them as
                // overruns and skip them, keeping the phase.
                let missed = late / self.cycle_ns;
                self.stats.overruns.fetch_add(missed as u64, Relaxed);
                next += missed * self.cycle_ns;
            }
            self.run_cycle(late);
            let done = monotonic_ns();
            self.stats.record(late.max(0), done - wake, done);
            next += self.cycle_ns;
        }
        let _ = self.rings.outputs.push(LineOutputs {
            stamp_ns: self.clock.now_ns(),
            ..LineOutputs::SAFE
        });
        self.stats.running.store(false, Relaxed);
        self
    }
}
