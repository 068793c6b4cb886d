//! Decoding an Ultralytics YOLOv8-layout detector's output.
//!
//! The output is `[1, 4 + C, N]`, channel-major: for each of `N` anchors,
//! the box centre and size `cx, cy, w, h` in the model input's pixels, then
//! one score per class (already sigmoid-activated; YOLOv8 has no separate
//! objectness). As in Ultralytics' `non_max_suppression`: an anchor is a
//! candidate when its best class score is above the confidence threshold
//! (strictly); its class is that best class; candidates go through
//! class-wise NMS ([`super::nms`]) in the input's pixels; the kept boxes are
//! mapped back through the [`Letterbox`] into the ROI and offset into the
//! frame.

use super::letterbox::Letterbox;
use super::{Detection, nms};
use crate::preprocess::Roi;
use thiserror::Error;

/// Thresholds of the decoding (from the manifest or the cell's config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YoloParams {
    /// Number of classes `C`.
    pub classes: usize,
    /// Score a box needs to be a candidate, in [0, 1] (Ultralytics: 0.25).
    pub confidence: f32,
    /// IoU above which a lower-scored box of the same class is dropped (0.7).
    pub iou: f32,
    /// Most boxes kept per frame (300).
    pub max_detections: usize,
}

/// An output that is not what the manifest said.
#[derive(Debug, Error, PartialEq)]
pub enum YoloError {
    /// The output's length is not `(4 + classes) × anchors`.
    #[error(
        "detector output has {len} values, not (4 + {classes} classes) × {anchors} anchors; check the manifest's output shape [1, 4 + classes, anchors]"
    )]
    Shape {
        /// Values received.
        len: usize,
        /// Classes declared.
        classes: usize,
        /// Anchors declared.
        anchors: usize,
    },
    /// A candidate's box is NaN or infinite.
    #[error("the model outputs a non-finite box for anchor {anchor} (score {score}); the model is broken")]
    NonFinite {
        /// Anchor index.
        anchor: usize,
        /// Its score.
        score: f32,
    },
}

/// Boxes in frame pixels, highest score first, from one output tensor.
pub fn decode(
    output: &[f32],
    anchors: usize,
    params: &YoloParams,
    letterbox: &Letterbox,
    roi: Roi,
) -> Result<Vec<Detection>, YoloError> {
    let rows = 4 + params.classes;
    if rows.checked_mul(anchors) != Some(output.len()) {
        return Err(YoloError::Shape {
            len: output.len(),
            classes: params.classes,
            anchors,
        });
    }
    let at = |row: usize, n: usize| output[row * anchors + n];
    let mut candidates = Vec::new();
    for n in 0..anchors {
        let (class, score) = (0..params.classes)
            .map(|c| (c, at(4 + c, n)))
            .fold((0, f32::NEG_INFINITY), |best, x| if x.1 > best.1 { x } else { best });
        // Strictly above; a NaN score is never a candidate.
        if score.is_nan() || score <= params.confidence {
            continue;
        }
        let (cx, cy, w, h) = (at(0, n), at(1, n), at(2, n), at(3, n));
        if ![cx, cy, w, h].iter().all(|v| v.is_finite()) {
            return Err(YoloError::NonFinite { anchor: n, score });
        }
        candidates.push(Detection {
            class,
            score,
            x0: cx - w / 2.0,
            y0: cy - h / 2.0,
            x1: cx + w / 2.0,
            y1: cy + h / 2.0,
        });
    }
    let kept = nms::class_wise(candidates, params.iou, params.max_detections);
    Ok(kept
        .into_iter()
        .map(|d| {
            let (x0, y0) = letterbox.to_source(d.x0, d.y0);
            let (x1, y1) = letterbox.to_source(d.x1, d.y1);
            Detection {
                x0: x0 + roi.x as f32,
                y0: y0 + roi.y as f32,
                x1: x1 + roi.x as f32,
                y1: y1 + roi.y as f32,
                ..d
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[1, 4 + 2, N]` output from `(cx, cy, w, h, s0, s1)` per anchor.
    fn output(anchors: &[[f32; 6]]) -> Vec<f32> {
        let n = anchors.len();
        let mut out = vec![0.0; 6 * n];
        for (i, a) in anchors.iter().enumerate() {
            for (row, v) in a.iter().enumerate() {
                out[row * n + i] = *v;
            }
        }
        out
    }

    const P: YoloParams = YoloParams {
        classes: 2,
        confidence: 0.25,
        iou: 0.7,
        max_detections: 300,
    };

    #[test]
    fn boxes_are_thresholded_suppressed_and_mapped_to_the_frame() {
        // ROI 64×48 at (100, 50) of the frame, letterboxed into 640×640:
        // gain 10, 80 px of padding on top.
        let roi = Roi {
            x: 100,
            y: 50,
            w: 64,
            h: 48,
        };
        let lb = Letterbox::new(64, 48, 640, 640);
        let out = output(&[
            [320.0, 320.0, 100.0, 60.0, 0.9, 0.1], // class 0 at ROI (27..37, 21..27)
            [322.0, 321.0, 100.0, 60.0, 0.8, 0.0], // same object, lower: suppressed
            [322.0, 321.0, 100.0, 60.0, 0.0, 0.5], // same place, other class: kept
            [100.0, 100.0, 20.0, 20.0, 0.2, 0.25], // 0.25 is not above 0.25: dropped
        ]);
        let d = decode(&out, 4, &P, &lb, roi).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].class, d[0].score), (0, 0.9));
        assert_eq!((d[0].x0, d[0].y0, d[0].x1, d[0].y1), (127.0, 71.0, 137.0, 77.0));
        assert_eq!((d[1].class, d[1].score), (1, 0.5));
    }

    #[test]
    fn boxes_outside_the_image_are_clipped_to_the_roi() {
        let roi = Roi {
            x: 0,
            y: 0,
            w: 64,
            h: 48,
        };
        let lb = Letterbox::new(64, 48, 640, 640);
        // A box reaching into the top padding and past the right edge.
        let d = decode(&output(&[[630.0, 90.0, 40.0, 40.0, 0.9, 0.0]]), 1, &P, &lb, roi).unwrap();
        assert_eq!((d[0].x0, d[0].y0, d[0].x1, d[0].y1), (61.0, 0.0, 64.0, 3.0));
    }

    #[test]
    fn a_wrong_shape_and_a_nan_box_are_errors() {
        let lb = Letterbox::new(64, 48, 640, 640);
        let roi = Roi {
            x: 0,
            y: 0,
            w: 64,
            h: 48,
        };
        assert!(matches!(
            decode(&[0.0; 11], 2, &P, &lb, roi),
            Err(YoloError::Shape { len: 11, .. })
        ));
        let nan = output(&[[f32::NAN, 1.0, 1.0, 1.0, 0.9, 0.0]]);
        assert!(matches!(
            decode(&nan, 1, &P, &lb, roi),
            Err(YoloError::NonFinite { anchor: 0, .. })
        ));
        // A NaN score is never a candidate.
        let nan_score = output(&[[1.0, 1.0, 1.0, 1.0, f32::NAN, 0.0]]);
        assert_eq!(decode(&nan_score, 1, &P, &lb, roi).unwrap(), vec![]);
    }
}
