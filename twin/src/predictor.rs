//! The predictor seam: what the twin asks of a model of the weld zone.
//!
//! The twin core ([`crate::Twin`]) does not care how the temperature is
//! predicted: the physics model ([`ThermalModel`]) answers in closed form; the
//! node runs a signed, hot-swappable ONNX model behind the same trait (its
//! `models::twin` module). A predictor that cannot answer (the model failed,
//! or produced NaN) returns `None`; the twin then holds its last prediction
//! for that sample rather than compare the measurement with garbage.

use crate::physics::ThermalModel;

/// Predicts the weld temperature one step ahead.
pub trait Predictor {
    /// The temperature `dt_s` seconds after `temp_c`, with the inputs held
    /// over the step; `None` if no prediction can be made.
    fn predict(&mut self, temp_c: f64, dt_s: f64, feed_ppm: f64, current_a: f64, ambient_c: f64) -> Option<f64>;
}

impl Predictor for ThermalModel {
    fn predict(&mut self, temp_c: f64, dt_s: f64, feed_ppm: f64, current_a: f64, ambient_c: f64) -> Option<f64> {
        Some(self.advance(temp_c, dt_s, feed_ppm, current_a, ambient_c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_physics_model_always_predicts() {
        let mut m = ThermalModel::default();
        let p = m.predict(180.0, 0.05, 12.0, 5000.0, 25.0).unwrap();
        assert!((p - 180.0).abs() < 1e-9, "steady state stays: {p}");
    }
}
