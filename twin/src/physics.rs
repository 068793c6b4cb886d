//! The physics predictor: a first-order heat balance of the weld zone.
//!
//! ```text
//! dT/dt = k · I² · (d0 + d1 · ppm / ppm_ref) − c · (T − T_ambient)
//! ```
//!
//! The same structure as the simulated plant; parameters come from
//! [`crate::fit::fit_thermal`] on nominal data or from the config.

/// Parameters of the heat balance. Defaults are the values fitted on the
/// simulated line's nominal run (see the `fit` tests).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThermalModel {
    /// Heat gain `k` times duty offset `d0`, °C·s⁻¹·A⁻².
    pub gain_base: f64,
    /// Heat gain `k` times duty slope `d1`, °C·s⁻¹·A⁻² per unit of `ppm/ppm_ref`.
    pub gain_rate: f64,
    /// Reference feed rate, PPM.
    pub ppm_ref: f64,
    /// Cooling coefficient `c`, 1/s.
    pub cooling_per_s: f64,
}

impl Default for ThermalModel {
    fn default() -> Self {
        // 155 °C rise at 12 PPM and 5 kA, time constant 4 s.
        let k = 155.0 * 0.25 / (5000.0 * 5000.0);
        Self {
            gain_base: k * 0.4,
            gain_rate: k * 0.6,
            ppm_ref: 12.0,
            cooling_per_s: 0.25,
        }
    }
}

impl ThermalModel {
    /// Heat input over heat capacity, °C/s. No heat while the axis stands.
    pub fn heat_rate(&self, ppm: f64, current_a: f64) -> f64 {
        if ppm <= 0.0 {
            return 0.0;
        }
        current_a * current_a * (self.gain_base + self.gain_rate * ppm / self.ppm_ref)
    }

    /// Steady-state temperature for constant inputs, °C.
    pub fn steady_state_c(&self, ppm: f64, current_a: f64, ambient_c: f64) -> f64 {
        ambient_c + self.heat_rate(ppm, current_a) / self.cooling_per_s
    }

    /// Advance `temp_c` by `dt_s` with the inputs held constant (exact
    /// solution of the linear ODE, stable for any step).
    pub fn advance(&self, temp_c: f64, dt_s: f64, ppm: f64, current_a: f64, ambient_c: f64) -> f64 {
        let target = self.steady_state_c(ppm, current_a, ambient_c);
        target + (temp_c - target) * (-self.cooling_per_s * dt_s).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_state_and_relaxation() {
        let m = ThermalModel::default();
        assert!((m.steady_state_c(12.0, 5000.0, 25.0) - 180.0).abs() < 1e-9);
        let t = m.advance(180.0, 4.0, 8.0, 5000.0, 25.0);
        let target = m.steady_state_c(8.0, 5000.0, 25.0);
        // One time constant covers 63 % of the way.
        let covered = (180.0 - t) / (180.0 - target);
        assert!((covered - (1.0 - (-1.0f64).exp())).abs() < 1e-9, "{covered}");
        assert_eq!(m.heat_rate(0.0, 5000.0), 0.0);
    }
}
