//! Health score and remaining useful life from the residual's history.
//!
//! Health is `1 − ewma(|residual|) / (fail_factor · band)`, clamped to [0, 1]:
//! 1 means the asset behaves exactly as modelled, 0 means its residual sits at
//! `fail_factor` band widths (the asset is considered failed). The remaining
//! useful life extrapolates the health's smoothed slope to zero while health
//! declines.

/// Health and RUL estimator.
#[derive(Clone, Debug)]
pub struct HealthEstimator {
    band_c: f64,
    fail_factor: f64,
    tau_s: f64,
    slope_tau_s: f64,
    ewma_abs: Option<f64>,
    slope_per_s: f64,
    last: Option<(i64, f64)>,
}

/// Output of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Health {
    /// Score in [0, 1].
    pub score: f64,
    /// Seconds until the score reaches 0 at the current trend; `None` while
    /// it is not declining.
    pub rul_s: Option<f64>,
}

impl HealthEstimator {
    /// `band_c`: residual band half-width; `tau_s`: smoothing time constant.
    pub fn new(band_c: f64, tau_s: f64) -> Self {
        Self {
            band_c,
            fail_factor: 4.0,
            tau_s,
            slope_tau_s: 4.0 * tau_s,
            ewma_abs: None,
            slope_per_s: 0.0,
            last: None,
        }
    }

    /// Update with a residual at `now_ns`.
    pub fn handle_residual(&mut self, residual_c: f64, now_ns: i64) -> Health {
        let abs = residual_c.abs();
        let dt_s = self
            .last
            .map(|(t, _)| (now_ns - t) as f64 * 1e-9)
            .unwrap_or(0.0)
            .max(0.0);
        let ewma = match self.ewma_abs {
            None => abs,
            Some(prev) => {
                let a = 1.0 - (-dt_s / self.tau_s).exp();
                prev + a * (abs - prev)
            }
        };
        self.ewma_abs = Some(ewma);
        let score = (1.0 - ewma / (self.fail_factor * self.band_c)).clamp(0.0, 1.0);
        if let Some((_, prev_score)) = self.last
            && dt_s > 0.0
        {
            let inst = (score - prev_score) / dt_s;
            let a = 1.0 - (-dt_s / self.slope_tau_s).exp();
            self.slope_per_s += a * (inst - self.slope_per_s);
        }
        self.last = Some((now_ns, score));
        let rul_s = (self.slope_per_s < -1e-4 && score > 0.0).then(|| score / -self.slope_per_s);
        Health { score, rul_s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_stays_high_and_degrading_gets_a_finite_rul() {
        let mut h = HealthEstimator::new(6.0, 2.0);
        let mut last = None;
        for k in 0..200 {
            last = Some(h.handle_residual(0.3 * ((k % 3) as f64 - 1.0), k * 50_000_000));
        }
        let ok = last.unwrap();
        assert!(ok.score > 0.95 && ok.rul_s.is_none(), "{ok:?}");
        for k in 200..400 {
            last = Some(h.handle_residual((k - 200) as f64 * 0.05, k * 50_000_000));
        }
        let bad = last.unwrap();
        assert!(bad.score < ok.score, "{bad:?}");
        assert!(bad.rul_s.is_some_and(|r| r > 0.0 && r < 1000.0), "{bad:?}");
    }
}
