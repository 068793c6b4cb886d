//! The closed-loop analysis: is the weld producing defects, and how likely?
//!
//! When the twin raises an alert, the node hands this module the last `n`
//! inspection batches of the cell and the healthy baseline (the batches
//! before the excursion, plus the commissioning prior). The model is
//! Beta–binomial:
//!
//! - the baseline defect rate has the posterior
//!   `Beta(α₀ + d_b, β₀ + n_b − d_b)`, where the prior `α₀ = r₀·w`,
//!   `β₀ = (1 − r₀)·w` is the commissioning defect rate `r₀` worth `w` frames;
//! - the recent defect rate has the posterior `Beta(½ + d_r, ½ + n_r − d_r)`
//!   (Jeffreys prior: the recent batches speak for themselves, with the least
//!   bias for small counts);
//! - the **defect probability** is the posterior predictive probability that
//!   the next weld is defective, `(½ + d_r) / (1 + n_r)`;
//! - the **elevated probability** is `P(rate_recent > rate_baseline)`,
//!   integrated numerically.

use crate::stats::prob_beta_greater;
use thiserror::Error;

/// Inspection counts of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Batch id.
    pub batch_id: String,
    /// Frames inspected.
    pub frames: u64,
    /// Frames with at least one defect.
    pub defects: u64,
    /// First frame's time, ns.
    pub first_ns: i64,
    /// Last frame's time, ns.
    pub last_ns: i64,
}

/// The healthy reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    /// Frames inspected while healthy.
    pub frames: u64,
    /// Defective frames among them.
    pub defects: u64,
}

/// Settings of the analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisConfig {
    /// Defect rate expected at commissioning, in [0, 1).
    pub prior_rate: f64,
    /// How many frames that expectation is worth.
    pub prior_weight_frames: f64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            prior_rate: 0.02,
            prior_weight_frames: 200.0,
        }
    }
}

/// Result of the analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// Probability that the next weld is defective.
    pub defect_probability: f64,
    /// Observed defect rate in the analysed batches.
    pub recent_rate: f64,
    /// Posterior mean of the baseline defect rate.
    pub baseline_rate: f64,
    /// Probability that the recent rate exceeds the baseline rate.
    pub elevated_probability: f64,
    /// Frames analysed.
    pub frames: u64,
    /// Defective frames among them.
    pub defects: u64,
    /// Batches analysed, oldest first.
    pub batches: Vec<String>,
    /// When the analysis ran, ns.
    pub analysed_ns: i64,
    /// One sentence for people.
    pub summary: String,
}

/// The analysis cannot conclude.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AnalysisError {
    /// No frames in the batches handed over.
    #[error(
        "no inspection results in the last {batches} batches of the cell: the camera or inspection may be down; check the cell before restarting the line"
    )]
    NoRecentFrames {
        /// Batches looked at.
        batches: usize,
    },
}

/// Run the analysis at `now_ns`.
pub fn analyze(
    recent: &[BatchStats],
    baseline: &Baseline,
    cfg: &AnalysisConfig,
    now_ns: i64,
) -> Result<Analysis, AnalysisError> {
    let n_r: u64 = recent.iter().map(|b| b.frames).sum();
    let d_r: u64 = recent.iter().map(|b| b.defects).sum();
    if n_r == 0 {
        return Err(AnalysisError::NoRecentFrames { batches: recent.len() });
    }
    let a0 = cfg.prior_rate * cfg.prior_weight_frames;
    let b0 = (1.0 - cfg.prior_rate) * cfg.prior_weight_frames;
    let a_b = a0 + baseline.defects as f64 + f64::EPSILON;
    let b_b = b0 + (baseline.frames - baseline.defects) as f64 + f64::EPSILON;
    let a_r = 0.5 + d_r as f64;
    let b_r = 0.5 + (n_r - d_r) as f64;
    let baseline_rate = a_b / (a_b + b_b);
    let defect_probability = a_r / (a_r + b_r);
    let elevated_probability = prob_beta_greater(a_r, b_r, a_b, b_b, 4000);
    let recent_rate = d_r as f64 / n_r as f64;
    let batches: Vec<String> = recent.iter().map(|b| b.batch_id.clone()).collect();
    let summary = format!(
        "weld defect probability {:.1}%: {} of {} welds defective in batches {} against a baseline of {:.1}% ({} welds); the rate is elevated with probability {:.1}%",
        100.0 * defect_probability,
        d_r,
        n_r,
        batches.join(", "),
        100.0 * baseline_rate,
        baseline.frames,
        100.0 * elevated_probability
    );
    Ok(Analysis {
        defect_probability,
        recent_rate,
        baseline_rate,
        elevated_probability,
        frames: n_r,
        defects: d_r,
        batches,
        analysed_ns: now_ns,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str, frames: u64, defects: u64) -> BatchStats {
        BatchStats {
            batch_id: id.into(),
            frames,
            defects,
            first_ns: 0,
            last_ns: 0,
        }
    }

    #[test]
    fn elevated_defects_give_a_high_probability_from_the_data() {
        let recent = [batch("B1", 24, 1), batch("B2", 24, 6), batch("B3", 20, 15)];
        let base = Baseline {
            frames: 480,
            defects: 10,
        };
        let a = analyze(&recent, &base, &AnalysisConfig::default(), 7).unwrap();
        assert_eq!(a.frames, 68);
        assert_eq!(a.defects, 22);
        assert!((a.defect_probability - 22.5 / 69.0).abs() < 1e-12);
        assert!(a.elevated_probability > 0.999, "{a:?}");
        assert!((a.baseline_rate - (4.0 + 10.0) / (200.0 + 480.0)).abs() < 1e-6);
        assert!(a.summary.contains("22 of 68"), "{}", a.summary);
        assert_eq!(a.batches, vec!["B1", "B2", "B3"]);
    }

    #[test]
    fn healthy_batches_are_not_called_elevated() {
        let recent = [batch("B1", 24, 0), batch("B2", 24, 1), batch("B3", 24, 0)];
        let base = Baseline {
            frames: 480,
            defects: 10,
        };
        let a = analyze(&recent, &base, &AnalysisConfig::default(), 0).unwrap();
        assert!(a.elevated_probability < 0.6, "{a:?}");
        assert!(a.defect_probability < 0.03);
        let clean = [batch("B1", 24, 0), batch("B2", 24, 0), batch("B3", 24, 0)];
        let a = analyze(&clean, &base, &AnalysisConfig::default(), 0).unwrap();
        assert!(a.elevated_probability < 0.2, "{a:?}");
    }

    #[test]
    fn more_defects_never_lower_the_probability() {
        let base = Baseline {
            frames: 200,
            defects: 4,
        };
        let mut last = 0.0;
        for d in 0..=24 {
            let a = analyze(&[batch("B", 24, d)], &base, &AnalysisConfig::default(), 0).unwrap();
            assert!(a.defect_probability > last && a.elevated_probability >= 0.0);
            last = a.defect_probability;
        }
    }

    #[test]
    fn no_frames_is_an_error_that_says_what_to_check() {
        let err = analyze(
            &[batch("B1", 0, 0)],
            &Baseline { frames: 0, defects: 0 },
            &AnalysisConfig::default(),
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("camera"), "{err}");
    }
}
