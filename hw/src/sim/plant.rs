//! The simulated battery-module welding line.
//!
//! One axis feeds modules past a weld station at the commanded rate (parts per
//! minute). Every module gets `welds_per_module` welds, spread evenly over its
//! cycle; each weld is reported as a [`WeldEvent`] so the simulated camera can
//! image it.
//!
//! ## Thermal model
//!
//! The weld-zone temperature `T` follows a first-order heat balance
//!
//! ```text
//! C dT/dt = k · I² · (d0 + d1 · ppm / ppm_ref) − h · (T − T_ambient)
//! ```
//!
//! with weld current `I`, feed rate `ppm` and a duty term that grows with the
//! rate: welding faster puts in more heat. At the reference rate and current
//! the steady state is the nominal weld temperature. The digital twin models
//! the same physics; what it cannot know are the injected [`Fault`]s, which add
//! heat that no input explains (a clogged coolant channel, a worn electrode):
//!
//! - [`FaultKind::Drift`]: the extra temperature grows at a fixed rate up to a cap,
//! - [`FaultKind::Step`]: it jumps to a fixed value and stays,
//! - [`FaultKind::Spike`]: it jumps for a short time, then is gone.
//!
//! Everything is deterministic for a given seed, fault list and sequence of
//! outputs: physics advances in fixed steps of [`PlantParams::step_ns`], and
//! the caller passes the time.

use crate::process::{IoError, LineInputs, LineOutputs, ProcessIo};
use crate::rng::SimRng;

/// Physical parameters of the simulated line. Defaults describe `axis_07`
/// welding battery modules at 12 PPM and 180 °C.
#[derive(Clone, Debug, PartialEq)]
pub struct PlantParams {
    /// Physics step, ns. Scans advance the plant in whole steps.
    pub step_ns: i64,
    /// Welds per module (one camera frame each).
    pub welds_per_module: u32,
    /// Rate at which the axis can change speed, PPM per second.
    pub feed_slew_ppm_per_s: f64,
    /// Reference feed rate for the duty term, PPM.
    pub ppm_ref: f64,
    /// Nominal weld current, A.
    pub current_nominal_a: f64,
    /// Heat gain `k`, °C·s⁻¹ per A² (divided by the heat capacity).
    pub heat_gain: f64,
    /// Duty offset `d0` (heat that does not depend on the rate).
    pub duty_offset: f64,
    /// Duty slope `d1`.
    pub duty_slope: f64,
    /// Cooling coefficient `h / C`, 1/s.
    pub cooling_per_s: f64,
    /// Mean ambient temperature, °C.
    pub ambient_c: f64,
    /// Amplitude of the slow ambient wander, °C.
    pub ambient_wander_c: f64,
    /// Standard deviation of the thermocouple noise, °C.
    pub temp_noise_c: f64,
    /// Standard deviation of the current measurement noise, A.
    pub current_noise_a: f64,
}

impl Default for PlantParams {
    fn default() -> Self {
        // Chosen so that at 12 PPM and 5 kA the steady state is 180 °C with
        // 25 °C ambient and a thermal time constant of 4 s.
        let cooling = 0.25;
        let i = 5_000.0;
        let rise = 180.0 - 25.0;
        let heat_gain = rise * cooling / (i * i);
        Self {
            step_ns: 1_000_000,
            welds_per_module: 24,
            feed_slew_ppm_per_s: 8.0,
            ppm_ref: 12.0,
            current_nominal_a: i,
            heat_gain,
            duty_offset: 0.4,
            duty_slope: 0.6,
            cooling_per_s: cooling,
            ambient_c: 25.0,
            ambient_wander_c: 0.8,
            temp_noise_c: 0.4,
            current_noise_a: 15.0,
        }
    }
}

impl PlantParams {
    /// Steady-state weld temperature for a rate, current and ambient, °C.
    /// The twin's physics model uses the same formula.
    pub fn steady_state_c(&self, ppm: f64, current_a: f64, ambient_c: f64) -> f64 {
        ambient_c + self.heat_rate(ppm, current_a) / self.cooling_per_s
    }

    /// Heat input divided by heat capacity, °C/s.
    pub fn heat_rate(&self, ppm: f64, current_a: f64) -> f64 {
        if ppm <= 0.0 {
            return 0.0;
        }
        self.heat_gain * current_a * current_a * (self.duty_offset + self.duty_slope * ppm / self.ppm_ref)
    }
}

/// The shape of an injected fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind {
    /// Extra temperature rising at `rate_c_per_s` up to `max_c`, then holding.
    Drift {
        /// Rise rate, °C per second.
        rate_c_per_s: f64,
        /// Cap of the extra temperature, °C.
        max_c: f64,
    },
    /// Extra temperature of `delta_c` from the start on.
    Step {
        /// Size of the step, °C.
        delta_c: f64,
    },
    /// Extra temperature of `delta_c` for `duration_ns`, then nothing.
    Spike {
        /// Size of the spike, °C.
        delta_c: f64,
        /// How long it lasts, ns.
        duration_ns: i64,
    },
}

/// A fault injected at a time after the plant started.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    /// Start, ns after the plant's first scan.
    pub at_ns: i64,
    /// What it does.
    pub kind: FaultKind,
}

impl Fault {
    /// Extra weld temperature this fault causes at `t_ns` after plant start, °C.
    pub fn extra_c(&self, t_ns: i64) -> f64 {
        if t_ns < self.at_ns {
            return 0.0;
        }
        let dt_s = (t_ns - self.at_ns) as f64 * 1e-9;
        match self.kind {
            FaultKind::Drift { rate_c_per_s, max_c } => (rate_c_per_s * dt_s).min(max_c),
            FaultKind::Step { delta_c } => delta_c,
            FaultKind::Spike { delta_c, duration_ns } => {
                if t_ns - self.at_ns < duration_ns {
                    delta_c
                } else {
                    0.0
                }
            }
        }
    }
}

/// One weld made on the line; the camera images it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeldEvent {
    /// Module serial, from 1.
    pub module_serial: u64,
    /// Weld index within the module, from 0.
    pub weld_index: u32,
    /// When the weld was made, ns on the node clock.
    pub stamp_ns: i64,
    /// True weld-zone temperature at that moment, °C (no sensor noise).
    pub weld_temp_c: f64,
}

/// Capacity of the internal weld-event queue between two scans.
pub const WELD_QUEUE: usize = 16;

/// The simulated line. Implements [`ProcessIo`]; weld events are collected with
/// [`SimLine::take_welds`].
#[derive(Clone, Debug)]
pub struct SimLine {
    params: PlantParams,
    faults: Vec<Fault>,
    rng: SimRng,
    start_ns: Option<i64>,
    sim_ns: i64,
    scan_seq: u64,
    feed_ppm: f64,
    temp_physics_c: f64,
    module_phase: f64,
    weld_in_module: u32,
    parts_total: u64,
    estop: bool,
    welds: [Option<WeldEvent>; WELD_QUEUE],
    welds_len: usize,
    welds_dropped: u64,
}

impl SimLine {
    /// A line at rest at ambient temperature, with the faults to inject.
    pub fn new(params: PlantParams, seed: u64, faults: Vec<Fault>) -> Self {
        let t0 = params.ambient_c;
        Self {
            params,
            faults,
            rng: SimRng::new(seed),
            start_ns: None,
            sim_ns: 0,
            scan_seq: 0,
            feed_ppm: 0.0,
            temp_physics_c: t0,
            module_phase: 0.0,
            weld_in_module: 0,
            parts_total: 0,
            estop: false,
            welds: [None; WELD_QUEUE],
            welds_len: 0,
            welds_dropped: 0,
        }
    }

    /// A line already warm and running at `ppm` with nominal current, as after
    /// a start-up: saves the scenarios a minute of warm-up.
    pub fn warm(params: PlantParams, seed: u64, faults: Vec<Fault>, ppm: f64) -> Self {
        let mut line = Self::new(params, seed, faults);
        line.feed_ppm = ppm;
        line.temp_physics_c = line
            .params
            .steady_state_c(ppm, line.params.current_nominal_a, line.params.ambient_c);
        line
    }

    /// The parameters.
    pub fn params(&self) -> &PlantParams {
        &self.params
    }

    /// Press or release the emergency stop.
    pub fn set_estop(&mut self, pressed: bool) {
        self.estop = pressed;
    }

    /// Simulated time since the first scan, ns.
    pub fn sim_time_ns(&self) -> i64 {
        self.sim_ns
    }

    /// Extra temperature from all faults at simulated time `t_ns`, °C.
    pub fn fault_extra_c(&self, t_ns: i64) -> f64 {
        self.faults.iter().map(|f| f.extra_c(t_ns)).sum()
    }

    /// Current true weld temperature (physics plus faults), °C.
    pub fn true_temp_c(&self) -> f64 {
        self.temp_physics_c + self.fault_extra_c(self.sim_ns)
    }

    /// Weld events that did not fit the queue because nobody collected them.
    pub fn welds_dropped(&self) -> u64 {
        self.welds_dropped
    }

    /// Hand every weld made since the last call to `sink`, oldest first.
    pub fn take_welds(&mut self, mut sink: impl FnMut(WeldEvent)) {
        for slot in self.welds.iter_mut().take(self.welds_len) {
            if let Some(ev) = slot.take() {
                sink(ev);
            }
        }
        self.welds_len = 0;
    }

    fn ambient_at(&self, t_ns: i64) -> f64 {
        let t = t_ns as f64 * 1e-9;
        self.params.ambient_c + self.params.ambient_wander_c * (t / 90.0 * std::f64::consts::TAU).sin()
    }

    /// Advance physics by one step with the given outputs applied.
    fn step(&mut self, out: &LineOutputs, now_ns: i64) {
        let dt = self.params.step_ns as f64 * 1e-9;
        // Axis: slew-limited toward the command; the e-stop stops it at once.
        let target = if self.estop { 0.0 } else { out.feed_ppm_cmd.max(0.0) };
        let max_delta = self.params.feed_slew_ppm_per_s * dt;
        self.feed_ppm += (target - self.feed_ppm).clamp(-max_delta, max_delta);
        if self.estop {
            self.feed_ppm = 0.0;
        }
        // Thermal balance.
        let current = if out.weld_enable && !self.estop {
            out.weld_current_cmd_a
        } else {
            0.0
        };
        let ambient = self.ambient_at(self.sim_ns);
        let heat = self.params.heat_rate(self.feed_ppm, current);
        self.temp_physics_c += dt * (heat - self.params.cooling_per_s * (self.temp_physics_c - ambient));
        // Welds: `welds_per_module` evenly spread over one module cycle.
        if current > 0.0 && self.feed_ppm > 0.0 {
            let welds_per_s = self.feed_ppm / 60.0 * self.params.welds_per_module as f64;
            self.module_phase += welds_per_s * dt;
            while self.module_phase >= 1.0 {
                self.module_phase -= 1.0;
                let ev = WeldEvent {
                    module_serial: self.parts_total + 1,
                    weld_index: self.weld_in_module,
                    stamp_ns: now_ns,
                    weld_temp_c: self.true_temp_c(),
                };
                self.push_weld(ev);
                self.weld_in_module += 1;
                if self.weld_in_module == self.params.welds_per_module {
                    self.weld_in_module = 0;
                    self.parts_total += 1;
                }
            }
        }
        self.sim_ns += self.params.step_ns;
    }

    fn push_weld(&mut self, ev: WeldEvent) {
        if self.welds_len < WELD_QUEUE {
            self.welds[self.welds_len] = Some(ev);
            self.welds_len += 1;
        } else {
            self.welds_dropped += 1;
        }
    }
}

impl ProcessIo for SimLine {
    fn scan(&mut self, outputs: &LineOutputs, now_ns: i64) -> Result<LineInputs, IoError> {
        let start = *self.start_ns.get_or_insert(now_ns);
        let target = now_ns - start;
        // Physics keeps pace with the clock, never ahead of it (weld stamps
        // are never in the future); at most one second of catch-up per scan.
        let mut steps = 0;
        while self.sim_ns < target && steps < 1000 {
            let step_stamp = start + self.sim_ns;
            self.step(outputs, step_stamp);
            steps += 1;
        }
        self.scan_seq += 1;
        let ambient = self.ambient_at(self.sim_ns);
        let current = if outputs.weld_enable && !self.estop {
            outputs.weld_current_cmd_a
        } else {
            0.0
        };
        Ok(LineInputs {
            stamp_ns: now_ns,
            scan_seq: self.scan_seq,
            feed_ppm: self.feed_ppm,
            weld_temp_c: self.true_temp_c() + self.params.temp_noise_c * self.rng.normal(),
            weld_current_a: if current > 0.0 {
                current + self.params.current_noise_a * self.rng.normal()
            } else {
                0.0
            },
            ambient_c: ambient + 0.05 * self.rng.normal(),
            parts_total: self.parts_total,
            estop: self.estop,
            stale: false,
        })
    }

    fn take_triggers(&mut self, sink: &mut dyn FnMut(crate::CaptureTrigger)) {
        self.take_welds(|w| {
            sink(crate::CaptureTrigger {
                module_serial: w.module_serial,
                weld_index: w.weld_index,
                stamp_ns: w.stamp_ns,
                weld_temp_c: w.weld_temp_c,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(ppm: f64) -> LineOutputs {
        LineOutputs {
            stamp_ns: 0,
            feed_ppm_cmd: ppm,
            weld_enable: true,
            weld_current_cmd_a: 5_000.0,
        }
    }

    fn run(line: &mut SimLine, out: &LineOutputs, seconds: f64) -> (LineInputs, Vec<WeldEvent>) {
        let mut welds = Vec::new();
        let mut last = LineInputs::default();
        // One scan more: the first scan only sets the plant's time origin.
        let n = (seconds * 1000.0) as i64 + 1;
        let base = line.sim_time_ns();
        for k in 1..=n {
            last = line.scan(out, 1_000_000_000 + base + k * 1_000_000).unwrap();
            line.take_welds(|w| welds.push(w));
        }
        (last, welds)
    }

    #[test]
    fn warm_line_sits_at_nominal_temperature_and_rate() {
        let mut line = SimLine::warm(PlantParams::default(), 1, vec![], 12.0);
        let (inp, welds) = run(&mut line, &running(12.0), 10.0);
        assert!((inp.weld_temp_c - 180.0).abs() < 3.0, "temp {}", inp.weld_temp_c);
        assert!((inp.feed_ppm - 12.0).abs() < 1e-9);
        // 12 PPM × 24 welds = 4.8 welds/s.
        assert!((welds.len() as i64 - 48).abs() <= 1, "welds {}", welds.len());
        assert_eq!(inp.parts_total, 2);
    }

    #[test]
    fn derating_cools_the_weld() {
        let mut line = SimLine::warm(PlantParams::default(), 1, vec![], 12.0);
        let (inp, _) = run(&mut line, &running(8.0), 30.0);
        let expected = line.params().steady_state_c(8.0, 5_000.0, 25.0);
        assert!(expected < 160.0);
        assert!(
            (inp.weld_temp_c - expected).abs() < 3.0,
            "temp {} expected {}",
            inp.weld_temp_c,
            expected
        );
    }

    #[test]
    fn drift_step_and_spike_shape_the_extra_temperature() {
        let s = 1_000_000_000;
        let drift = Fault {
            at_ns: 2 * s,
            kind: FaultKind::Drift {
                rate_c_per_s: 3.0,
                max_c: 30.0,
            },
        };
        assert_eq!(drift.extra_c(s), 0.0);
        assert!((drift.extra_c(4 * s) - 6.0).abs() < 1e-9);
        assert_eq!(drift.extra_c(100 * s), 30.0);
        let spike = Fault {
            at_ns: s,
            kind: FaultKind::Spike {
                delta_c: 15.0,
                duration_ns: 2 * s,
            },
        };
        assert_eq!(spike.extra_c(2 * s), 15.0);
        assert_eq!(spike.extra_c(3 * s), 0.0);
        let step = Fault {
            at_ns: s,
            kind: FaultKind::Step { delta_c: 9.0 },
        };
        assert_eq!(step.extra_c(50 * s), 9.0);
    }

    #[test]
    fn faults_show_in_the_measured_temperature() {
        let fault = Fault {
            at_ns: 1_000_000_000,
            kind: FaultKind::Step { delta_c: 20.0 },
        };
        let mut line = SimLine::warm(PlantParams::default(), 3, vec![fault], 12.0);
        let (inp, welds) = run(&mut line, &running(12.0), 3.0);
        assert!((inp.weld_temp_c - 200.0).abs() < 3.0, "temp {}", inp.weld_temp_c);
        assert!(welds.last().unwrap().weld_temp_c > 195.0);
    }

    #[test]
    fn same_seed_same_run() {
        let mut a = SimLine::warm(PlantParams::default(), 9, vec![], 12.0);
        let mut b = SimLine::warm(PlantParams::default(), 9, vec![], 12.0);
        let (ia, wa) = run(&mut a, &running(12.0), 2.0);
        let (ib, wb) = run(&mut b, &running(12.0), 2.0);
        assert_eq!(ia, ib);
        assert_eq!(wa, wb);
    }

    #[test]
    fn estop_and_safe_outputs_stop_feed_and_welds() {
        let mut line = SimLine::warm(PlantParams::default(), 1, vec![], 12.0);
        line.set_estop(true);
        let (inp, welds) = run(&mut line, &running(12.0), 1.0);
        assert_eq!(inp.feed_ppm, 0.0);
        assert!(welds.is_empty());
        line.set_estop(false);
        let (inp, welds) = run(&mut line, &LineOutputs::SAFE, 2.0);
        assert_eq!(inp.weld_current_a, 0.0);
        assert!(welds.is_empty());
    }
}
