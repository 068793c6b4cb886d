//! The twin's model, signed and hot-swappable like an inspection model.
//!
//! The twin's predictor is an ONNX model of the weld zone's heat balance
//! (`twin/models/weld_thermal/`, written by
//! `twin/training/export_thermal_onnx.py` from the parameters fitted on the
//! nominal run; it agrees with `triad_twin::physics::ThermalModel` to within
//! float rounding). Its target in the model service is the asset id
//! (`battery_pack_89`); a deploy goes through the same checks, golden cases, audit,
//! probation and fuse as an inspection model.
//!
//! On the twin thread, [`TwinModels`] (a [`SlotWorker`] running a bare
//! [`ModelSession`]) is the [`Predictor`] of the twin core. Before each
//! sample the thread calls [`SlotWorker::poll_swap`]: one atomic load when
//! nothing changed; on a deploy, the session is built on the twin thread and
//! exchanged with the current one between two samples, the replaced one kept
//! for a rollback. During probation every prediction feeds the fuse; a model
//! that errors or outputs NaN is rolled back at once and the same sample is
//! predicted again with the previous model, so no sample goes unjudged.
//! Outside probation a failed prediction is counted, logged, and the twin
//! holds its last prediction for that sample.

use super::fuse::FrameOutcome;
use super::slot::{SlotWorker, thread_cpu_ns};
use std::sync::Arc;
use triad_inspect::manifest::TWIN_FEATURES;
use triad_inspect::{ModelError, ModelManifest, ModelSession, OnnxModel};
use triad_twin::Predictor;

/// ONNX bytes of the built-in twin model.
pub const WELD_THERMAL_ONNX: &[u8] = include_bytes!("../../../twin/models/weld_thermal/model.onnx");
/// Its manifest.
pub const WELD_THERMAL_MANIFEST: &str = include_str!("../../../twin/models/weld_thermal/manifest.json");

/// The twin thread's models.
pub type TwinModels = SlotWorker<ModelSession>;

/// Load the built-in twin model (`weld_thermal` 1.0.0).
pub fn builtin() -> Result<OnnxModel, ModelError> {
    let manifest: ModelManifest = serde_json::from_str(WELD_THERMAL_MANIFEST).map_err(|e| ModelError::Manifest {
        name: "builtin weld_thermal".into(),
        problems: vec![e.to_string()],
    })?;
    OnnxModel::load(WELD_THERMAL_ONNX, manifest)
}

/// A nominal operating point: 180 °C, 50 ms, 12 PPM, 5 kA, 25 °C ambient.
pub const NOMINAL_INPUT: [f32; 5] = [180.0, 0.05, 12.0, 5000.0, 25.0];

/// Run `session` once on `x`; the prediction and how the run went.
pub fn run_once(session: &mut ModelSession, x: &[f32; 5]) -> (Option<f64>, FrameOutcome) {
    let mut out = Vec::with_capacity(1);
    let t0 = thread_cpu_ns();
    let r = session.infer(x, &mut out);
    let latency_ns = thread_cpu_ns() - t0;
    match (r, out.first()) {
        (Ok(()), Some(y)) if y.is_finite() => (Some(f64::from(*y)), FrameOutcome::Ok { latency_ns }),
        (Ok(()), _) => (None, FrameOutcome::NonFinite),
        (Err(_), _) => (None, FrameOutcome::Error),
    }
}

/// Does `model` work as the twin's predictor? Checks the kind and runs
/// `runs` predictions at the nominal operating point on a session of the
/// calling thread (which pages the weights in). Errors say what is wrong.
pub fn check_model(model: &Arc<OnnxModel>, runs: u32) -> Result<(), String> {
    let m = model.manifest();
    if m.input.features != TWIN_FEATURES {
        return Err(format!(
            "{} {} is not a twin model (its input features are {:?}, not {:?})",
            m.name, m.version, m.input.features, TWIN_FEATURES
        ));
    }
    let mut s = model.session().map_err(|e| e.to_string())?;
    for _ in 0..runs.max(1) {
        let mut out = Vec::with_capacity(1);
        s.infer(&NOMINAL_INPUT, &mut out).map_err(|e| e.to_string())?;
        // NaN at the nominal point is the fuse's business (it rolls back on
        // the first one); here only whether the model runs at all.
    }
    Ok(())
}

impl Predictor for TwinModels {
    fn predict(&mut self, temp_c: f64, dt_s: f64, feed_ppm: f64, current_a: f64, ambient_c: f64) -> Option<f64> {
        let x = [temp_c, dt_s, feed_ppm, current_a, ambient_c].map(|v| v as f32);
        let (y, outcome) = run_once(self.current_mut(), &x);
        if self.judge(outcome) {
            // Rolled back by the fuse: the same sample, with the previous model.
            return run_once(self.current_mut(), &x).0;
        }
        if y.is_none() {
            self.note_failure(&outcome);
        }
        y
    }
}

impl TwinModels {
    fn note_failure(&mut self, outcome: &FrameOutcome) {
        let n = self.count_failure();
        if n == 1 || n.is_multiple_of(1000) {
            let m = self.current().model().manifest();
            tracing::error!(target = %self.target(), model = %m.name, version = %m.version, ?outcome, failures = n, "the twin model gave no prediction; the twin holds its last one (deploy a fixed model or roll back)");
        }
    }

    /// The version of the model in use.
    pub fn version(&self) -> &str {
        &self.current().model().manifest().version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triad_twin::physics::ThermalModel;

    #[test]
    fn the_builtin_twin_model_is_the_physics_model() {
        let model = Arc::new(builtin().unwrap());
        check_model(&model, 1).unwrap();
        let mut s = model.session().unwrap();
        let mut physics = ThermalModel::default();
        let mut worst: f64 = 0.0;
        for temp in [25.0, 120.0, 180.0, 215.0] {
            for ppm in [0.0, 8.0, 12.0] {
                for dt in [0.001, 0.05, 1.0] {
                    let (y, outcome) = run_once(&mut s, &[temp, dt, ppm, 5000.0, 25.0].map(|v| v as f32));
                    assert!(matches!(outcome, FrameOutcome::Ok { .. }), "{outcome:?}");
                    let p = physics.predict(temp, dt, ppm, 5000.0, 25.0).unwrap();
                    worst = worst.max((y.unwrap() - p).abs());
                }
            }
        }
        assert!(worst < 1e-3, "ONNX twin differs from the physics model by {worst} °C");
    }

    #[test]
    fn an_inspection_model_is_not_a_twin_model() {
        let model = Arc::new(triad_inspect::builtin::weld_seam().unwrap());
        let e = check_model(&model, 1).unwrap_err();
        assert!(e.contains("not a twin model"), "{e}");
    }
}
