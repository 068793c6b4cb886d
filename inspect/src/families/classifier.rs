//! A classifier's output: one label for the whole ROI.
//!
//! The output is `[1, C]`: logits (the manifest's `classifier.softmax`, true by default, and
//! they are turned into probabilities with a numerically stable softmax,
//! `exp(x − max) / Σ exp(x − max)`) or probabilities already. The top `k`
//! classes are returned, highest first; equal probabilities keep class order.

/// `(class index, probability)` of the `k` most likely classes.
///
/// Non-finite outputs are not ranked: a NaN or infinite logit makes the
/// whole output unusable, and `None` is returned (the caller reports the
/// model as broken, as the probation fuse does).
pub fn top_k(output: &[f32], softmax: bool, k: usize) -> Option<Vec<(usize, f32)>> {
    if output.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let probs: Vec<f32> = if softmax {
        let max = output.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = output.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect()
    } else {
        output.to_vec()
    };
    let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    Some(ranked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_known_logits() {
        // ln 1, ln 2, ln 5 -> 1/8, 2/8, 5/8.
        let top = top_k(&[0.0, 2f32.ln(), 5f32.ln()], true, 2).unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].0, top[1].0), (2, 1));
        assert!((top[0].1 - 0.625).abs() < 1e-6 && (top[1].1 - 0.25).abs() < 1e-6);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let top = top_k(&[1000.0, 999.0], true, 1).unwrap();
        assert_eq!(top[0].0, 0);
        assert!((top[0].1 - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn probabilities_pass_through_and_ties_keep_class_order() {
        assert_eq!(
            top_k(&[0.2, 0.4, 0.4], false, 3).unwrap(),
            vec![(1, 0.4), (2, 0.4), (0, 0.2)]
        );
        assert_eq!(top_k(&[0.1, f32::NAN], false, 1), None);
    }
}
