//! The control thread's loop: fixed period, absolute deadlines, no
//! allocation, no locks, no blocking calls other than the sleep itself.
//!
//! One thread runs every axis of the node: each cycle reads the clock once
//! and runs each [`AxisLoop`] in turn (newest process image, up to 8
//! requests, the program, outputs, telemetry), each with its own rings, so
//! an axis's inputs, requests, safe state and telemetry never touch
//! another's. The axes are fixed when the runner is built (a boxed slice:
//! nothing grows in the cycle). How many axes fit in a cycle is measured by
//! `cargo bench --bench control_axes`, the wake-up jitter with many axes by
//! `control_jitter` with `BENCH_AXES` (docs/benchmarks.md). Not yet: the
//! watchdog judges every axis by the cycle's wake-up lateness, not by when
//! its own turn came (a few µs for tens of axes; see the bench).
//!
//! Telemetry: a [`TelemetrySample`] every `telemetry_every` cycles, and one
//! more in any cycle that applied a request or changed the mode (a command,
//! the safe state, a derate), pushed right after that cycle's events, so the
//! state topic can show a change from the cycle that made it instead of up
//! to `telemetry_every` cycles later. Samples and events are `Copy` records
//! in an SPSC ring: nothing allocates or waits; a full ring counts a drop.

use super::histogram::ControlStats;
use super::program::{AxisProgram, ControlEvent};
use super::rings::{ControlRings, ControlTelemetry, TelemetrySample};
use crate::clock::{Clock, monotonic_ns, sleep_until_mono};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use triad_hw::LineOutputs;

/// Requests taken per axis and cycle at most, so a flood cannot stretch a cycle.
const MAX_REQUESTS_PER_CYCLE: usize = 8;

/// One axis on the control thread: its program and its ends of the rings.
pub struct AxisLoop {
    program: AxisProgram,
    rings: ControlRings,
    /// Cycles since the last sample.
    counter: u32,
}

impl AxisLoop {
    /// An axis running `program`, talking through `rings`.
    pub fn new(program: AxisProgram, rings: ControlRings) -> Self {
        Self {
            program,
            rings,
            counter: 0,
        }
    }

    /// The program (for tests and reports).
    pub fn program(&self) -> &AxisProgram {
        &self.program
    }

    fn emit(&mut self, t: ControlTelemetry, stats: &ControlStats) {
        if self.rings.telemetry.push(t).is_err() {
            stats.telemetry_dropped.fetch_add(1, Relaxed);
        }
    }

    /// This axis's part of a cycle at `now`.
    fn run_cycle(&mut self, now: i64, lateness_ns: i64, telemetry_every: u32, stats: &ControlStats) {
        let mode_before = self.program.mode();
        // Newest process image wins; older ones in the ring are superseded.
        while let Ok(inputs) = self.rings.inputs.pop() {
            self.program.handle_inputs(&inputs, now);
        }
        let mut applied = false;
        for _ in 0..MAX_REQUESTS_PER_CYCLE {
            let Ok(req) = self.rings.requests.pop() else { break };
            let event = self.program.handle_request(&req);
            applied |= matches!(event, ControlEvent::Applied { .. });
            self.emit(ControlTelemetry::Event { stamp_ns: now, event }, stats);
        }
        let (outputs, event) = self.program.poll_outputs(now, lateness_ns);
        if let Some(event) = event {
            self.emit(ControlTelemetry::Event { stamp_ns: now, event }, stats);
        }
        // If the I/O side stalls, the newest outputs matter: drop is fine
        // because the next cycle writes again.
        let _ = self.rings.outputs.push(outputs);
        self.counter += 1;
        // A change is reported in its own cycle, after its events: at most
        // one extra sample a cycle however many requests it applied. The
        // periodic count starts again from it.
        let changed = applied || self.program.mode() != mode_before;
        if changed || self.counter >= telemetry_every {
            self.counter = 0;
            let sample = TelemetrySample {
                stamp_ns: now,
                inputs: *self.program.last_input(),
                outputs,
                mode: self.program.mode(),
                setpoint_ppm: self.program.setpoint_ppm(),
                changed,
            };
            self.emit(ControlTelemetry::Sample(sample), stats);
        }
    }
}

/// Runs every axis's [`AxisProgram`] every cycle.
pub struct ControlRunner {
    axes: Box<[AxisLoop]>,
    stats: Arc<ControlStats>,
    clock: Arc<dyn Clock>,
    cycle_ns: i64,
    telemetry_every: u32,
}

impl ControlRunner {
    /// Assemble a runner for `axes`, in the order they run in a cycle; their
    /// periodic samples are staggered over `telemetry_every` cycles.
    ///
    /// # Panics
    /// If `axes` is empty.
    pub fn new(
        axes: Vec<AxisLoop>,
        stats: Arc<ControlStats>,
        clock: Arc<dyn Clock>,
        cycle: Duration,
        telemetry_every: u32,
    ) -> Self {
        assert!(!axes.is_empty(), "a control runner needs at least one axis");
        let mut axes = axes.into_boxed_slice();
        // Stagger the periodic samples: not every axis's in the same cycle.
        for (i, a) in axes.iter_mut().enumerate() {
            a.counter = (i as u32) % telemetry_every.max(1);
        }
        Self {
            axes,
            stats,
            clock,
            cycle_ns: cycle.as_nanos() as i64,
            telemetry_every,
        }
    }

    /// The axes, in cycle order (for tests and reports).
    pub fn axes(&self) -> &[AxisLoop] {
        &self.axes
    }

    /// One cycle of work for every axis. `lateness_ns` is how late this
    /// cycle woke.
    pub fn run_cycle(&mut self, lateness_ns: i64) {
        let now = self.clock.now_ns();
        for axis in self.axes.iter_mut() {
            axis.run_cycle(now, lateness_ns, self.telemetry_every, &self.stats);
        }
    }

    /// Run until `stop` is set, then write the safe state to every axis once
    /// more. Call on the control thread after
    /// [`super::rt::prepare_current_thread`].
    pub fn run(mut self, stop: &AtomicBool) -> Self {
        self.stats.running.store(true, Relaxed);
        let mut next = monotonic_ns() + self.cycle_ns;
        #[cfg(feature = "test-support")]
        let hang_at = test_hang_at();
        while !stop.load(Relaxed) {
            sleep_until_mono(next);
            let wake = monotonic_ns();
            #[cfg(feature = "test-support")]
            if hang_at.is_some_and(|t| wake >= t) {
                // A hung cycle, for the watchdog's tests: no more cycles.
                while !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                break;
            }
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
        let stamp_ns = self.clock.now_ns();
        for axis in self.axes.iter_mut() {
            let _ = axis.rings.outputs.push(LineOutputs {
                stamp_ns,
                ..LineOutputs::SAFE
            });
        }
        self.stats.running.store(false, Relaxed);
        self
    }
}

/// Test builds only: `TRIAD_TEST_CONTROL_HANG_AFTER_MS` makes the control
/// loop stop cycling that long after it starts (a hung cycle), so the
/// systemd watchdog's tests can see the pings stop.
#[cfg(feature = "test-support")]
fn test_hang_at() -> Option<i64> {
    let ms: i64 = std::env::var("TRIAD_TEST_CONTROL_HANG_AFTER_MS").ok()?.parse().ok()?;
    Some(monotonic_ns() + ms * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::control::program::{AxisLimits, ControlRequest, SafeReason};
    use crate::control::rings::{ControlEndpoints, control_rings};
    use triad_hw::LineInputs;
    use triad_schemas::{AxisMode, CommandAction};

    const MS: i64 = 1_000_000;
    /// The node's default `telemetry_every_cycles`.
    const EVERY: u32 = 50;

    struct Rig {
        clock: Arc<ManualClock>,
        runner: ControlRunner,
        /// The other ends of each axis's rings.
        ends: Vec<ControlEndpoints>,
        scan: u64,
    }

    impl Rig {
        fn new() -> Self {
            Self::with_axes(1)
        }

        fn with_axes(n: usize) -> Self {
            let clock = Arc::new(ManualClock::new(0));
            let limits = AxisLimits {
                nominal_ppm: 12.0,
                min_ppm: 1.0,
                max_ppm: 15.0,
                weld_current_a: 5000.0,
                start_running: true,
                input_stale_ns: 5 * MS,
                watchdog_ns: 100 * MS,
            };
            let (axes, ends) = (0..n)
                .map(|_| {
                    let (rings, ends) = control_rings();
                    (AxisLoop::new(AxisProgram::new(limits, 0), rings), ends)
                })
                .unzip();
            let runner = ControlRunner::new(
                axes,
                Arc::new(ControlStats::new()),
                clock.clone(),
                Duration::from_millis(1),
                EVERY,
            );
            Self {
                clock,
                runner,
                ends,
                scan: 0,
            }
        }

        /// One 1 ms cycle; `fresh[a]`: the I/O scan delivered a new image
        /// for axis `a` first. Returns what each axis reported, in ring order.
        fn cycle_axes(&mut self, fresh: &[bool]) -> Vec<Vec<ControlTelemetry>> {
            self.scan += 1;
            for (ends, &fresh) in self.ends.iter_mut().zip(fresh) {
                if fresh {
                    ends.inputs
                        .push(LineInputs {
                            scan_seq: self.scan,
                            feed_ppm: 12.0,
                            weld_temp_c: 180.0,
                            ..Default::default()
                        })
                        .unwrap();
                }
            }
            self.clock.advance(MS);
            self.runner.run_cycle(0);
            self.ends
                .iter_mut()
                .map(|ends| {
                    while ends.outputs.pop().is_ok() {}
                    let mut got = Vec::new();
                    while let Ok(t) = ends.telemetry.pop() {
                        got.push(t);
                    }
                    got
                })
                .collect()
        }

        /// [`Self::cycle_axes`] for the first (or only) axis.
        fn cycle(&mut self, fresh: bool) -> Vec<ControlTelemetry> {
            let fresh = vec![fresh; self.ends.len()];
            self.cycle_axes(&fresh).swap_remove(0)
        }

        /// Run fresh cycles until one reports a periodic sample; return how many.
        fn cycles_to_next_sample(&mut self) -> u32 {
            for n in 1..=EVERY {
                if self
                    .cycle(true)
                    .iter()
                    .any(|t| matches!(t, ControlTelemetry::Sample(_)))
                {
                    return n;
                }
            }
            panic!("no sample within {EVERY} cycles");
        }

        fn request(&mut self, action: CommandAction, value: f64) {
            self.request_on(0, action, value);
        }

        fn request_on(&mut self, axis: usize, action: CommandAction, value: f64) {
            self.ends[axis]
                .requests
                .push(ControlRequest {
                    handle: 7,
                    action,
                    value,
                })
                .unwrap();
        }
    }

    fn sample(t: &ControlTelemetry) -> Option<TelemetrySample> {
        match t {
            ControlTelemetry::Sample(s) => Some(*s),
            ControlTelemetry::Event { .. } => None,
        }
    }

    #[test]
    fn an_applied_command_is_sampled_in_its_own_cycle_after_its_event() {
        let mut rig = Rig::new();
        // Off the periodic boundary: a few cycles after a periodic sample.
        rig.cycles_to_next_sample();
        for _ in 0..10 {
            assert!(rig.cycle(true).is_empty());
        }
        rig.request(CommandAction::SetRate, 9.0);
        let got = rig.cycle(true);
        let now = rig.clock.now_ns();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            matches!(got[0], ControlTelemetry::Event { stamp_ns, event: ControlEvent::Applied { to_ppm, .. } } if stamp_ns == now && to_ppm == 9.0),
            "{got:?}"
        );
        let s = sample(&got[1]).expect("a sample right after the applied event");
        assert_eq!((s.stamp_ns, s.setpoint_ppm, s.mode), (now, 9.0, AxisMode::Running));
        assert_eq!(s.outputs.feed_ppm_cmd, 9.0, "the sample carries this cycle's outputs");
        // The periodic count starts again from the change.
        assert_eq!(rig.cycles_to_next_sample(), EVERY);

        // A derate is a mode change: sampled at once, too.
        rig.request(CommandAction::Derate, 8.0);
        let got = rig.cycle(true);
        let s = got.iter().find_map(sample).expect("a sample in the derate's cycle");
        assert_eq!((s.setpoint_ppm, s.mode), (8.0, AxisMode::Derated));
    }

    #[test]
    fn a_rejected_request_changes_nothing_and_waits_for_the_periodic_sample() {
        let mut rig = Rig::new();
        rig.cycles_to_next_sample();
        rig.request(CommandAction::SetRate, 99.0);
        let got = rig.cycle(true);
        assert!(
            matches!(
                got.as_slice(),
                [ControlTelemetry::Event {
                    event: ControlEvent::Rejected { .. },
                    ..
                }]
            ),
            "{got:?}"
        );
        assert_eq!(rig.cycles_to_next_sample(), EVERY - 1);
    }

    #[test]
    fn many_requests_in_one_cycle_give_one_sample_with_the_last_set_point() {
        let mut rig = Rig::new();
        rig.cycles_to_next_sample();
        for v in [9.0, 10.0, 11.0] {
            rig.request(CommandAction::SetRate, v);
        }
        let got = rig.cycle(true);
        let samples: Vec<_> = got.iter().filter_map(sample).collect();
        assert_eq!(samples.len(), 1, "{got:?}");
        assert_eq!(samples[0].setpoint_ppm, 11.0);
        assert!(
            sample(got.last().unwrap()).is_some(),
            "the sample comes after the events: {got:?}"
        );
    }

    #[test]
    fn entering_the_safe_state_is_sampled_in_its_own_cycle() {
        let mut rig = Rig::new();
        rig.cycles_to_next_sample();
        // No fresh image: stale after 5 ms.
        let mut got = Vec::new();
        for _ in 0..10 {
            got = rig.cycle(false);
            if !got.is_empty() {
                break;
            }
        }
        let now = rig.clock.now_ns();
        assert!(
            matches!(
                got.first(),
                Some(ControlTelemetry::Event {
                    event: ControlEvent::SafeStateEntered {
                        reason: SafeReason::StaleInput
                    },
                    ..
                })
            ),
            "{got:?}"
        );
        let s = got.get(1).and_then(sample).expect("a sample right after the event");
        assert_eq!((s.stamp_ns, s.mode, s.setpoint_ppm), (now, AxisMode::SafeState, 0.0));
        assert!(!s.outputs.weld_enable);
        // Leaving it (ResetFault, then Start) is sampled at once as well.
        rig.cycle(true);
        rig.request(CommandAction::ResetFault, 0.0);
        let s = rig.cycle(true).iter().find_map(sample).expect("sample on reset");
        assert_eq!(s.mode, AxisMode::Stopped);
        rig.request(CommandAction::Start, 0.0);
        let s = rig.cycle(true).iter().find_map(sample).expect("sample on start");
        assert_eq!((s.mode, s.setpoint_ppm), (AxisMode::Running, 12.0));
    }

    #[test]
    fn each_axis_keeps_its_own_requests_safe_state_and_telemetry() {
        let mut rig = Rig::with_axes(3);
        let (t, f) = (true, false);
        for _ in 0..EVERY {
            rig.cycle_axes(&[t, t, t]);
        }
        // A set-point for the second axis changes the second axis only.
        rig.request_on(1, CommandAction::SetRate, 9.0);
        let got = rig.cycle_axes(&[t, t, t]);
        // The others report nothing of it: no event, no sample for a change
        // (a periodic sample of theirs may fall in this cycle).
        let quiet = |t: &[ControlTelemetry]| t.iter().all(|t| sample(t).is_some_and(|s| !s.changed));
        assert!(quiet(&got[0]) && quiet(&got[2]), "{got:?}");
        let s = got[1]
            .iter()
            .find_map(sample)
            .expect("the second axis samples its change");
        assert_eq!((s.setpoint_ppm, s.outputs.feed_ppm_cmd), (9.0, 9.0));
        let ppm: Vec<f64> = rig.runner.axes().iter().map(|a| a.program().setpoint_ppm()).collect();
        assert_eq!(ppm, [12.0, 9.0, 12.0]);

        // The third axis's I/O stops: it alone goes to the safe state.
        let mut entered = None;
        for _ in 0..10 {
            let got = rig.cycle_axes(&[t, t, f]);
            if let Some(s) = got[2].iter().find_map(sample).filter(|s| s.changed) {
                entered = Some(s);
                assert!(quiet(&got[0]) && quiet(&got[1]), "{got:?}");
                break;
            }
        }
        let s = entered.expect("the third axis entered the safe state");
        assert_eq!(s.mode, AxisMode::SafeState);
        assert!(!s.outputs.weld_enable);
        let modes: Vec<AxisMode> = rig.runner.axes().iter().map(|a| a.program().mode()).collect();
        assert_eq!(modes, [AxisMode::Running, AxisMode::Running, AxisMode::SafeState]);
    }
}
