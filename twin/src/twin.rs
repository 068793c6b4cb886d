//! The twin core: predictor + residual band + persistence timer + health.

use crate::health::HealthEstimator;
use crate::persistence::{PersistenceTimer, TimerAction, TimerState};
use crate::physics::ThermalModel;
use crate::predictor::Predictor;
use triad_schemas::TwinState;

/// Settings of one asset's twin.
#[derive(Clone, Debug, PartialEq)]
pub struct TwinConfig {
    /// Half-width of the residual band, °C.
    pub band_c: f64,
    /// Deadband for re-entering the band, °C (`0 ≤ deadband < band`).
    pub deadband_c: f64,
    /// Outside the band for strictly longer than this raises an alert, ns.
    pub persist_ns: i64,
    /// Back inside for this long clears it, ns.
    pub clear_ns: i64,
    /// Smoothing time constant of the health score, s.
    pub health_tau_s: f64,
    /// Version string of the predictor, reported in every status.
    pub model_version: String,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            band_c: 6.0,
            deadband_c: 1.0,
            persist_ns: 3_000_000_000,
            clear_ns: 1_000_000_000,
            health_tau_s: 5.0,
            model_version: "builtin".into(),
        }
    }
}

/// One sample of the process, as the control loop measured it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwinSample {
    /// Measurement time, ns.
    pub stamp_ns: i64,
    /// Feed rate, PPM.
    pub feed_ppm: f64,
    /// Weld current, A.
    pub weld_current_a: f64,
    /// Ambient, °C.
    pub ambient_c: f64,
    /// Measured weld temperature, °C.
    pub measured_c: f64,
    /// Is the process running (axis Running or Derated)? While it is not,
    /// the residual means nothing: the twin follows the measurement, ends an
    /// open excursion, and raises nothing (state-based alarm suppression).
    pub running: bool,
}

/// An alert life-cycle event decided by the twin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlertEvent {
    /// Raise: outside the band for longer than the persistence time.
    Raised {
        /// When the residual left the band, ns.
        onset_ns: i64,
        /// Sample time at which the alert was decided, ns.
        raised_ns: i64,
        /// Residual at that sample, °C.
        residual_c: f64,
    },
    /// Clear: back inside for the clear time.
    Cleared {
        /// Onset of the excursion, ns.
        onset_ns: i64,
        /// Sample time at which it cleared, ns.
        cleared_ns: i64,
    },
}

/// The twin's view after one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use]
pub struct TwinStep {
    /// Sample time, ns.
    pub stamp_ns: i64,
    /// Measured, °C.
    pub measured_c: f64,
    /// Predicted, °C.
    pub predicted_c: f64,
    /// Measured − predicted, °C.
    pub residual_c: f64,
    /// Band half-width, °C.
    pub band_c: f64,
    /// Residual condition.
    pub state: TwinState,
    /// Since when outside, ns.
    pub outside_since_ns: Option<i64>,
    /// Health score in [0, 1].
    pub health: f64,
    /// Remaining useful life, s.
    pub rul_s: Option<f64>,
    /// Alert to raise or clear, if any.
    pub alert: Option<AlertEvent>,
    /// Excursion start/end (observed, not alerted), for the record.
    pub excursion: Option<TimerAction>,
}

/// The twin of one asset, predicting with `P` (the physics model by default).
#[derive(Clone, Debug)]
pub struct Twin<P = ThermalModel> {
    cfg: TwinConfig,
    model: P,
    timer: PersistenceTimer,
    health: HealthEstimator,
    predicted_c: Option<f64>,
    last: Option<TwinSample>,
}

impl<P: Predictor> Twin<P> {
    /// A twin with no history; the first sample initialises the prediction.
    pub fn new(cfg: TwinConfig, model: P) -> Self {
        let timer = PersistenceTimer::new(cfg.persist_ns, cfg.clear_ns);
        let health = HealthEstimator::new(cfg.band_c, cfg.health_tau_s);
        Self {
            cfg,
            model,
            timer,
            health,
            predicted_c: None,
            last: None,
        }
    }

    /// Config.
    pub fn config(&self) -> &TwinConfig {
        &self.cfg
    }

    /// Replace the predictor (a model swap); the prediction continues from its current value.
    pub fn set_model(&mut self, model: P, version: String) {
        self.model = model;
        self.cfg.model_version = version;
    }

    /// The predictor (a hot-swappable one is polled for new models through this).
    pub fn predictor_mut(&mut self) -> &mut P {
        &mut self.model
    }

    /// Set the version reported in every status (after the predictor swapped its model).
    pub fn set_model_version(&mut self, version: &str) {
        if self.cfg.model_version != version {
            self.cfg.model_version = version.into();
        }
    }

    /// Handle one sample.
    pub fn handle_sample(&mut self, s: &TwinSample) -> TwinStep {
        if !s.running {
            return self.handle_idle(s);
        }
        let predicted = match (self.predicted_c, self.last.filter(|l| l.running)) {
            (Some(p), Some(prev)) if s.stamp_ns > prev.stamp_ns => {
                let dt = (s.stamp_ns - prev.stamp_ns) as f64 * 1e-9;
                // Zero-order hold of the previous sample's inputs; a
                // predictor that cannot answer leaves the prediction held.
                self.model
                    .predict(p, dt, prev.feed_ppm, prev.weld_current_a, prev.ambient_c)
                    .unwrap_or(p)
            }
            (Some(p), Some(_)) => p,
            // First sample, or first after the process stood: start from the measurement.
            _ => s.measured_c,
        };
        self.predicted_c = Some(predicted);
        self.last = Some(*s);
        let residual = s.measured_c - predicted;
        // Deadband (as in ISA-18.2 alarm management): once outside, the
        // residual must come back below `band − deadband` to count as inside,
        // so noise at the edge does not chop one excursion into many.
        let was_outside = !matches!(self.timer.state(), TimerState::Inside);
        let limit = if was_outside {
            self.cfg.band_c - self.cfg.deadband_c
        } else {
            self.cfg.band_c
        };
        let outside = residual.abs() > limit;
        let action = self.timer.handle_sample(outside, s.stamp_ns);
        let health = self.health.handle_residual(residual, s.stamp_ns);
        let alert = match action {
            Some(TimerAction::Raise { onset_ns }) => Some(AlertEvent::Raised {
                onset_ns,
                raised_ns: s.stamp_ns,
                residual_c: residual,
            }),
            Some(TimerAction::Clear { onset_ns }) => Some(AlertEvent::Cleared {
                onset_ns,
                cleared_ns: s.stamp_ns,
            }),
            _ => None,
        };
        let excursion = action.filter(|a| {
            matches!(
                a,
                TimerAction::ExcursionStarted { .. } | TimerAction::ExcursionEnded { .. }
            )
        });
        let (state, outside_since_ns) = match self.timer.state() {
            TimerState::Inside => (TwinState::Nominal, None),
            TimerState::Outside { since } => (TwinState::Excursion, Some(since)),
            TimerState::Alerted { since, .. } => (TwinState::Alert, Some(since)),
        };
        TwinStep {
            stamp_ns: s.stamp_ns,
            measured_c: s.measured_c,
            predicted_c: predicted,
            residual_c: residual,
            band_c: self.cfg.band_c,
            state,
            outside_since_ns,
            health: health.score,
            rul_s: health.rul_s,
            alert,
            excursion,
        }
    }
}

impl<P: Predictor> Twin<P> {
    fn handle_idle(&mut self, s: &TwinSample) -> TwinStep {
        self.predicted_c = Some(s.measured_c);
        self.last = Some(*s);
        let excursion = self.timer.suspend(s.stamp_ns);
        let (state, outside_since_ns) = match self.timer.state() {
            TimerState::Alerted { since, .. } => (TwinState::Alert, Some(since)),
            _ => (TwinState::Nominal, None),
        };
        let health = self.health.handle_residual(0.0, s.stamp_ns);
        TwinStep {
            stamp_ns: s.stamp_ns,
            measured_c: s.measured_c,
            predicted_c: s.measured_c,
            residual_c: 0.0,
            band_c: self.cfg.band_c,
            state,
            outside_since_ns,
            health: health.score,
            rul_s: health.rul_s,
            alert: None,
            excursion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predictor::Predictor;
    use triad_hw::sim::{Fault, FaultKind, PlantParams, SimLine};
    use triad_hw::{LineOutputs, ProcessIo};

    const S: i64 = 1_000_000_000;

    /// Run the simulated plant with `faults` and a twin sampling at 20 Hz;
    /// derate to 8 PPM when the alert comes, as the node's rule does.
    fn run(faults: Vec<Fault>, seconds: i64) -> (Vec<TwinStep>, Vec<AlertEvent>) {
        let mut line = SimLine::warm(PlantParams::default(), 4, faults, 12.0);
        let mut twin = Twin::new(TwinConfig::default(), ThermalModel::default());
        let mut ppm = 12.0;
        let mut steps = Vec::new();
        let mut alerts = Vec::new();
        for k in 1..=seconds * 1000 {
            let now = k * 1_000_000;
            let out = LineOutputs {
                stamp_ns: now,
                feed_ppm_cmd: ppm,
                weld_enable: true,
                weld_current_cmd_a: 5000.0,
            };
            let i = line.scan(&out, now).unwrap();
            if k % 50 == 0 {
                let st = twin.handle_sample(&TwinSample {
                    stamp_ns: now,
                    feed_ppm: i.feed_ppm,
                    weld_current_a: i.weld_current_a,
                    ambient_c: i.ambient_c,
                    measured_c: i.weld_temp_c,
                    running: true,
                });
                if let Some(a) = st.alert {
                    if matches!(a, AlertEvent::Raised { .. }) {
                        ppm = 8.0;
                    }
                    alerts.push(a);
                }
                steps.push(st);
            }
        }
        (steps, alerts)
    }

    #[test]
    fn nominal_run_stays_inside_the_band() {
        let (steps, alerts) = run(vec![], 40);
        assert!(alerts.is_empty());
        let max = steps.iter().map(|s| s.residual_c.abs()).fold(0.0, f64::max);
        assert!(max < 3.0, "largest nominal residual {max} °C");
        assert!(steps.last().unwrap().health > 0.9);
    }

    #[test]
    fn drift_alerts_just_over_three_seconds_after_onset_and_survives_the_derate() {
        let drift = Fault {
            at_ns: 5 * S,
            kind: FaultKind::Drift {
                rate_c_per_s: 3.0,
                max_c: 35.0,
            },
        };
        let (steps, alerts) = run(vec![drift], 30);
        let AlertEvent::Raised {
            onset_ns, raised_ns, ..
        } = alerts[0]
        else {
            panic!("{alerts:?}")
        };
        // One excursion, not a chatter of short ones at the band's edge.
        let starts = steps
            .iter()
            .filter(|s| matches!(s.excursion, Some(TimerAction::ExcursionStarted { .. })))
            .count();
        assert_eq!(starts, 1, "the deadband keeps one excursion");
        let gap = raised_ns - onset_ns;
        assert!(gap > 3 * S && gap <= 3 * S + 50_000_000, "alert {gap} ns after onset");
        // Onset: the drift passes the 6 °C band about 2 s after injection.
        assert!((onset_ns - 7 * S).abs() < 300_000_000, "onset at {onset_ns}");
        // The derate cools the weld, but the model knows that: no clear.
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(steps.last().unwrap().state, TwinState::Alert);
    }

    #[test]
    fn short_spike_is_observed_not_alerted() {
        let spike = Fault {
            at_ns: 5 * S,
            kind: FaultKind::Spike {
                delta_c: 15.0,
                duration_ns: 2 * S,
            },
        };
        let (steps, alerts) = run(vec![spike], 15);
        assert!(alerts.is_empty(), "{alerts:?}");
        assert!(steps.iter().any(|s| s.state == TwinState::Excursion));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s.excursion, Some(TimerAction::ExcursionEnded { .. })))
        );
    }

    #[test]
    fn a_predictor_that_cannot_answer_leaves_the_prediction_held() {
        /// Answers like the physics model, except for samples it is told to fail.
        struct Flaky {
            fail: bool,
        }
        impl Predictor for Flaky {
            fn predict(&mut self, t: f64, dt: f64, ppm: f64, i: f64, amb: f64) -> Option<f64> {
                (!self.fail).then(|| ThermalModel::default().advance(t, dt, ppm, i, amb))
            }
        }
        let mut twin = Twin::new(TwinConfig::default(), Flaky { fail: false });
        let sample = |k: i64, measured_c: f64| TwinSample {
            stamp_ns: k * 50_000_000,
            feed_ppm: 12.0,
            weld_current_a: 5000.0,
            ambient_c: 25.0,
            measured_c,
            running: true,
        };
        let _ = twin.handle_sample(&sample(0, 170.0));
        let before = twin.handle_sample(&sample(1, 170.0)).predicted_c;
        twin.predictor_mut().fail = true;
        let held = twin.handle_sample(&sample(2, 170.0));
        assert_eq!(held.predicted_c, before, "held, not NaN");
        assert!(held.residual_c.is_finite() && held.alert.is_none());
        twin.predictor_mut().fail = false;
        assert!(
            twin.handle_sample(&sample(3, 170.0)).predicted_c > before,
            "moves on towards 180 °C"
        );
    }

    #[test]
    fn a_stopped_process_raises_nothing_and_restarts_its_prediction() {
        let mut twin = Twin::new(TwinConfig::default(), ThermalModel::default());
        let sample = |k: i64, measured_c: f64, running: bool| TwinSample {
            stamp_ns: k * 50_000_000,
            feed_ppm: if running { 12.0 } else { 0.0 },
            weld_current_a: if running { 5000.0 } else { 0.0 },
            ambient_c: 25.0,
            measured_c,
            running,
        };
        let _ = twin.handle_sample(&sample(0, 180.0, true));
        // 2 s out of band while running: an excursion, no alert yet.
        for k in 1..=40 {
            let st = twin.handle_sample(&sample(k, 195.0, true));
            assert!(st.alert.is_none());
        }
        // The line stops (safe state): the excursion ends, nothing is raised
        // however long the weld cools off the model.
        let st = twin.handle_sample(&sample(41, 150.0, false));
        assert!(
            matches!(st.excursion, Some(TimerAction::ExcursionEnded { .. })),
            "{st:?}"
        );
        for k in 42..200 {
            let st = twin.handle_sample(&sample(k, 150.0 - k as f64 * 0.2, false));
            assert!(st.alert.is_none() && st.state == TwinState::Nominal, "{st:?}");
        }
        // Back running: the prediction starts from the measurement.
        let st = twin.handle_sample(&sample(200, 120.0, true));
        assert_eq!(st.predicted_c, 120.0);
        assert_eq!(st.state, TwinState::Nominal);
    }
}
