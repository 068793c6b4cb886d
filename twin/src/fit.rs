//! Fitting the [`ThermalModel`] on nominal data by least squares.
//!
//! Discretised, the heat balance is linear in its parameters:
//!
//! ```text
//! ΔT/Δt = a · I² + b · I² · ppm/ppm_ref − c · (T − T_amb)
//! ```
//!
//! so `(a, b, c)` solve a 3×3 normal-equation system. Feed it samples from a
//! nominal run that moves the operating point (a rate change), averaged to a
//! few hertz so that sensor noise does not dominate the differences.

use crate::physics::ThermalModel;
use thiserror::Error;

/// One averaged sample of a nominal run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitSample {
    /// Time, s (any origin).
    pub t_s: f64,
    /// Feed rate, PPM.
    pub ppm: f64,
    /// Weld current, A.
    pub current_a: f64,
    /// Ambient, °C.
    pub ambient_c: f64,
    /// Measured weld temperature, °C.
    pub temp_c: f64,
}

/// The data cannot determine the parameters.
#[derive(Debug, Error, PartialEq)]
pub enum FitError {
    /// Too few samples.
    #[error("need at least {needed} samples to fit the thermal model, got {got}: record a longer nominal run")]
    TooFewSamples {
        /// Minimum.
        needed: usize,
        /// Given.
        got: usize,
    },
    /// The inputs never changed enough to separate the parameters.
    #[error(
        "the nominal run does not excite the model (singular normal equations): change the feed rate at least once while recording"
    )]
    NotExcited,
    /// The result is not physical.
    #[error(
        "fitted cooling coefficient {cooling_per_s} 1/s is not positive: the data are not a heat balance (check units and sensors)"
    )]
    Unphysical {
        /// The fitted value.
        cooling_per_s: f64,
    },
}

/// Fit `(gain_base, gain_rate, cooling_per_s)` with `ppm_ref` fixed.
pub fn fit_thermal(samples: &[FitSample], ppm_ref: f64) -> Result<ThermalModel, FitError> {
    if samples.len() < 10 {
        return Err(FitError::TooFewSamples {
            needed: 10,
            got: samples.len(),
        });
    }
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [0.0f64; 3];
    for w in samples.windows(2) {
        let (s0, s1) = (&w[0], &w[1]);
        let dt = s1.t_s - s0.t_s;
        if dt <= 0.0 {
            continue;
        }
        // Midpoint regressors.
        let i2 = 0.5 * (s0.current_a * s0.current_a + s1.current_a * s1.current_a);
        let ppm = 0.5 * (s0.ppm + s1.ppm);
        if ppm <= 0.0 {
            continue;
        }
        let excess = 0.5 * (s0.temp_c + s1.temp_c) - 0.5 * (s0.ambient_c + s1.ambient_c);
        let row = [i2, i2 * ppm / ppm_ref, -excess];
        let y = (s1.temp_c - s0.temp_c) / dt;
        for r in 0..3 {
            for c in 0..3 {
                ata[r][c] += row[r] * row[c];
            }
            atb[r] += row[r] * y;
        }
    }
    let x = solve3(ata, atb).ok_or(FitError::NotExcited)?;
    if x[2] <= 0.0 {
        return Err(FitError::Unphysical { cooling_per_s: x[2] });
    }
    Ok(ThermalModel {
        gain_base: x[0],
        gain_rate: x[1],
        ppm_ref,
        cooling_per_s: x[2],
    })
}

/// Solve a 3×3 system by Gaussian elimination with partial pivoting after
/// scaling each column (the regressors differ by orders of magnitude).
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    let mut scale = [0.0f64; 3];
    for c in 0..3 {
        scale[c] = a[c][c].abs().sqrt().max(f64::MIN_POSITIVE);
    }
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] /= scale[r] * scale[c];
        }
        b[r] /= scale[r];
    }
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..3 {
            let f = a[r][col] / a[col][col];
            let pivot_row = a[col];
            for (c, v) in a[r].iter_mut().enumerate().skip(col) {
                *v -= f * pivot_row[c];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    for r in 0..3 {
        x[r] /= scale[r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use triad_hw::sim::{PlantParams, SimLine};
    use triad_hw::{LineOutputs, ProcessIo};

    /// Record a nominal run of the simulated line that changes rate
    /// 12 → 8 → 12 PPM, averaged to 10 Hz.
    fn nominal_run() -> Vec<FitSample> {
        let mut line = SimLine::warm(PlantParams::default(), 11, vec![], 12.0);
        let mut out = Vec::new();
        let mut acc = [0.0f64; 5];
        for k in 1..=60_000i64 {
            let t_s = k as f64 * 1e-3;
            let ppm = if (15.0..35.0).contains(&t_s) { 8.0 } else { 12.0 };
            let o = LineOutputs {
                stamp_ns: 0,
                feed_ppm_cmd: ppm,
                weld_enable: true,
                weld_current_cmd_a: 5000.0,
            };
            let i = line.scan(&o, k * 1_000_000).unwrap();
            acc[0] += i.feed_ppm;
            acc[1] += i.weld_current_a;
            acc[2] += i.ambient_c;
            acc[3] += i.weld_temp_c;
            acc[4] += 1.0;
            if k % 100 == 0 {
                let n = acc[4];
                out.push(FitSample {
                    t_s: t_s - 0.05,
                    ppm: acc[0] / n,
                    current_a: acc[1] / n,
                    ambient_c: acc[2] / n,
                    temp_c: acc[3] / n,
                });
                acc = [0.0; 5];
            }
        }
        out
    }

    #[test]
    fn recovers_the_plant_from_a_nominal_run() {
        let data = nominal_run();
        let m = fit_thermal(&data, 12.0).unwrap();
        let p = PlantParams::default();
        for (ppm, ss_plant) in [
            (12.0, p.steady_state_c(12.0, 5000.0, 25.0)),
            (8.0, p.steady_state_c(8.0, 5000.0, 25.0)),
        ] {
            let ss = m.steady_state_c(ppm, 5000.0, 25.0);
            assert!(
                (ss - ss_plant).abs() < 1.5,
                "steady state at {ppm} PPM: fitted {ss}, plant {ss_plant}"
            );
        }
        assert!(
            (m.cooling_per_s - p.cooling_per_s).abs() / p.cooling_per_s < 0.1,
            "cooling {}",
            m.cooling_per_s
        );
        // The shipped default is the fitted model within the same tolerance.
        let d = ThermalModel::default();
        assert!((d.steady_state_c(8.0, 5000.0, 25.0) - m.steady_state_c(8.0, 5000.0, 25.0)).abs() < 1.5);
    }

    #[test]
    fn refuses_data_that_cannot_determine_it() {
        assert_eq!(
            fit_thermal(&[], 12.0).unwrap_err(),
            FitError::TooFewSamples { needed: 10, got: 0 }
        );
        let flat: Vec<FitSample> = (0..50)
            .map(|k| FitSample {
                t_s: k as f64,
                ppm: 12.0,
                current_a: 5000.0,
                ambient_c: 25.0,
                temp_c: 180.0,
            })
            .collect();
        assert_eq!(fit_thermal(&flat, 12.0).unwrap_err(), FitError::NotExcited);
    }
}
