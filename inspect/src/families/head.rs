//! Dispatch by family: how the [`crate::Inspector`] turns a frame's ROI
//! into the model's input and the model's output into a verdict.
//!
//! A [`Head`] is built once per inspector from the manifest and the cell's
//! ROI, and checks there that the two fit; per frame it [`Head::prepare`]s
//! the input tensor and [`Head::judge`]s the output. It holds no model:
//! everything here is tested on hand-made tensors.
//!
//! | family | input | verdict |
//! |---|---|---|
//! | `grid` | the ROI, which must be the model's input size, normalised | **Fail** if a cell's most likely defect class is above the cell's `threshold`; connected cells of a class are one box |
//! | `classifier` | as `grid` (grey repeated into 3 channels for an RGB model) | **Pass** if and only if the most likely class is the manifest's `classifier.ok_class` (default: the first class); a Fail lists the defect classes among the `top_k`, each boxed as the whole ROI, score its probability |
//! | `detector-yolo` | the ROI letterboxed into the model's input (any ROI size), normalised | **Fail** if any box survives the manifest's `detector` confidence threshold and class-wise NMS; every box is a defect, in frame pixels |
//!
//! In every family a Pass has no defects and a Fail at least one.

use super::letterbox::Letterbox;
use super::yolo::{self, YoloError, YoloParams};
use super::{Detection, ModelFamily, classifier};
use crate::inspector::InspectError;
use crate::manifest::ModelManifest;
use crate::model::ModelError;
use crate::postprocess::boxes;
use crate::preprocess::{GrayImage, Normalization, Roi, normalize_roi};
use triad_schemas::{DefectBox, Verdict};

/// What a model's output says about one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Pass or fail.
    pub verdict: Verdict,
    /// Defects, highest score first; empty exactly when the verdict is Pass.
    pub defects: Vec<DefectBox>,
    /// `detector-yolo`: the kept boxes in frame pixels, unrounded (the
    /// defects are these rounded outwards); empty for other families.
    pub detections: Vec<Detection>,
}

/// The family-specific half of an inspector.
#[derive(Clone, Debug, PartialEq)]
pub enum Head {
    /// `grid`: class probabilities per ROI cell.
    Grid {
        /// Grid rows.
        rows: usize,
        /// Grid columns.
        cols: usize,
    },
    /// `classifier`: one label for the ROI.
    Classifier {
        /// Input channels (1 or 3).
        channels: usize,
        /// Apply a softmax to the output.
        softmax: bool,
        /// Index of the class that passes.
        ok: usize,
        /// Classes ranked.
        top_k: usize,
    },
    /// `detector-yolo`: boxes through the letterbox.
    Detector {
        /// Input channels (1 or 3).
        channels: usize,
        /// The ROI in the model's input.
        letterbox: Letterbox,
        /// Decoding thresholds.
        params: YoloParams,
        /// Anchors `N` of the `[1, 4 + C, N]` output.
        anchors: usize,
    },
}

impl Head {
    /// The head of a (validated) inspection `manifest` for a cell seeing
    /// `roi`: a grid or classifier needs the ROI to be the model's input
    /// size; a detector takes any non-empty ROI.
    pub fn new(m: &ModelManifest, roi: Roi) -> Result<Self, InspectError> {
        let (channels, input_h, input_w) = (m.input.shape[1], m.input.shape[2], m.input.shape[3]);
        let must_match = || {
            if roi.w as usize != input_w || roi.h as usize != input_h {
                Err(InspectError::RoiMismatch {
                    model: m.name.clone(),
                    roi_w: roi.w,
                    roi_h: roi.h,
                    input_w,
                    input_h,
                })
            } else {
                Ok(())
            }
        };
        match m.family {
            ModelFamily::Grid => {
                must_match()?;
                Ok(Self::Grid {
                    rows: m.output.shape[2],
                    cols: m.output.shape[3],
                })
            }
            ModelFamily::Classifier => {
                must_match()?;
                let (softmax, ok, top_k) = m.classifier_settings().ok_or_else(|| {
                    InspectError::Model(ModelError::Manifest {
                        name: m.name.clone(),
                        problems: m.validate().err().unwrap_or_default(),
                    })
                })?;
                Ok(Self::Classifier {
                    channels,
                    softmax,
                    ok,
                    top_k,
                })
            }
            ModelFamily::DetectorYolo => {
                if roi.w == 0 || roi.h == 0 {
                    return Err(InspectError::EmptyRoi {
                        model: m.name.clone(),
                        roi,
                    });
                }
                let d = m.detector.unwrap_or_default();
                Ok(Self::Detector {
                    channels,
                    letterbox: Letterbox::new(roi.w, roi.h, input_w as u32, input_h as u32),
                    params: YoloParams {
                        classes: m.output.classes.len(),
                        confidence: d.confidence,
                        iou: d.iou,
                        max_detections: d.max_detections,
                    },
                    anchors: m.output.shape[2],
                })
            }
        }
    }

    /// Write the model's input for `roi` of `frame` into `input` (the
    /// length of the manifest's input shape).
    ///
    /// # Panics
    /// If the ROI does not fit the frame or `input` has the wrong length;
    /// the inspector checks both.
    pub fn prepare(&self, frame: &GrayImage<'_>, roi: Roi, norm: Normalization, input: &mut [f32]) {
        match self {
            Self::Grid { .. } => normalize_roi(frame, roi, norm, input),
            Self::Classifier { channels, .. } => {
                let plane = input.len() / channels;
                let (first, rest) = input.split_at_mut(plane);
                normalize_roi(frame, roi, norm, first);
                for c in rest.chunks_exact_mut(plane) {
                    c.copy_from_slice(first);
                }
            }
            Self::Detector {
                channels, letterbox, ..
            } => {
                letterbox.fill(frame, roi, *channels, input);
                // `fill` gives p / 255; the manifest's normalisation is
                // (p / 255 - mean) / std (YOLOv8: 0 and 1, which is exact).
                if norm.mean != 0.0 || norm.std != 1.0 {
                    for v in input.iter_mut() {
                        *v = (*v - norm.mean) / norm.std;
                    }
                }
            }
        }
    }

    /// The verdict and defects from the model's (finite) `output`.
    /// `threshold` is the cell's, used by the grid only.
    pub fn judge(
        &self,
        m: &ModelManifest,
        output: &[f32],
        roi: Roi,
        threshold: f32,
    ) -> Result<Judgement, InspectError> {
        let classes = &m.output.classes;
        let (defects, detections) = match self {
            Self::Grid { rows, cols } => (boxes(output, classes, *rows, *cols, roi, threshold), Vec::new()),
            Self::Classifier { softmax, ok, top_k, .. } => {
                let ranked = classifier::top_k(output, *softmax, *top_k).ok_or_else(|| InspectError::NonFinite {
                    model: m.name.clone(),
                    version: m.version.clone(),
                    count: output.iter().filter(|v| !v.is_finite()).count(),
                })?;
                let defects = if ranked.first().is_some_and(|(c, _)| c == ok) {
                    Vec::new()
                } else {
                    ranked
                        .iter()
                        .filter(|(c, _)| c != ok)
                        .map(|&(c, p)| DefectBox {
                            class: classes[c].clone(),
                            score: f64::from(p),
                            x: roi.x as i32,
                            y: roi.y as i32,
                            w: roi.w as i32,
                            h: roi.h as i32,
                        })
                        .collect()
                };
                (defects, Vec::new())
            }
            Self::Detector {
                letterbox,
                params,
                anchors,
                ..
            } => {
                let kept = yolo::decode(output, *anchors, params, letterbox, roi).map_err(|e| match e {
                    YoloError::NonFinite { .. } => InspectError::NonFinite {
                        model: m.name.clone(),
                        version: m.version.clone(),
                        count: 1,
                    },
                    YoloError::Shape { .. } => InspectError::Model(ModelError::Run {
                        name: m.name.clone(),
                        detail: e.to_string(),
                    }),
                })?;
                (kept.iter().map(|d| d.to_defect_box(classes)).collect(), kept)
            }
        };
        Ok(Judgement {
            verdict: if defects.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            defects,
            detections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ClassifierSpec, DetectorSpec};

    fn manifest(family: &str, input: [usize; 4], output: serde_json::Value, classes: &[&str]) -> ModelManifest {
        let m: ModelManifest = serde_json::from_value(serde_json::json!({
            "name": "m", "version": "1.0.0", "kind": "inspection", "family": family,
            "input": {"name": "x", "shape": input, "mean": 0.0, "std": 1.0},
            "output": {"name": "y", "shape": output, "classes": classes},
        }))
        .unwrap();
        m.validate().unwrap();
        m
    }

    fn classifier(spec: Option<ClassifierSpec>) -> ModelManifest {
        let mut m = manifest(
            "classifier",
            [1, 3, 4, 4],
            serde_json::json!([1, 3]),
            &["good", "porosity", "crack"],
        );
        m.classifier = spec;
        m.validate().unwrap();
        m
    }

    const ROI: Roi = Roi { x: 2, y: 1, w: 4, h: 4 };

    #[test]
    fn the_manifest_picks_the_head_and_checks_the_roi() {
        let grid: ModelManifest = serde_json::from_str(crate::builtin::WELD_SEAM_MANIFEST).unwrap();
        let roi = Roi {
            x: 16,
            y: 8,
            w: 64,
            h: 64,
        };
        assert_eq!(Head::new(&grid, roi).unwrap(), Head::Grid { rows: 8, cols: 8 });
        let off = Roi { w: 60, ..roi };
        assert!(matches!(
            Head::new(&grid, off),
            Err(InspectError::RoiMismatch { roi_w: 60, .. })
        ));
        assert!(matches!(
            Head::new(&classifier(None), off),
            Err(InspectError::RoiMismatch { .. })
        ));
        assert_eq!(
            Head::new(&classifier(None), ROI).unwrap(),
            Head::Classifier {
                channels: 3,
                softmax: true,
                ok: 0,
                top_k: 3
            }
        );
        // A detector takes any ROI: the letterbox fits it in.
        let det = manifest(
            "detector-yolo",
            [1, 3, 64, 64],
            serde_json::json!([1, 6, 84]),
            &["a", "b"],
        );
        match Head::new(&det, off).unwrap() {
            Head::Detector { letterbox, anchors, .. } => {
                assert_eq!((letterbox.src_w, letterbox.src_h, anchors), (60, 64, 84));
                assert_eq!((letterbox.new_w, letterbox.left), (60, 2));
            }
            h => panic!("{h:?}"),
        }
        assert!(matches!(
            Head::new(&det, Roi { w: 0, ..roi }),
            Err(InspectError::EmptyRoi { .. })
        ));
    }

    #[test]
    fn a_classifier_passes_only_on_its_ok_class() {
        let m = classifier(None);
        let h = Head::new(&m, ROI).unwrap();
        // Logits: good is the most likely.
        let j = h.judge(&m, &[2.0, 1.0, 0.0], ROI, 0.5).unwrap();
        assert_eq!((j.verdict, j.defects.len()), (Verdict::Pass, 0));
        // Crack is the most likely: Fail, defects are crack then porosity,
        // each the whole ROI, scored with the softmax probability.
        let j = h.judge(&m, &[0.0, 1.0, 2.0], ROI, 0.5).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        let names: Vec<_> = j.defects.iter().map(|d| d.class.as_str()).collect();
        assert_eq!(names, ["crack", "porosity"]);
        let sum = 1.0 + 1f64.exp() + 2f64.exp();
        assert!((j.defects[0].score - 2f64.exp() / sum).abs() < 1e-6);
        assert_eq!(
            (j.defects[0].x, j.defects[0].y, j.defects[0].w, j.defects[0].h),
            (2, 1, 4, 4)
        );
        // Another ok class, probabilities as given, top 1.
        let m = classifier(Some(ClassifierSpec {
            softmax: false,
            ok_class: Some("crack".into()),
            top_k: 1,
        }));
        let h = Head::new(&m, ROI).unwrap();
        assert_eq!(h.judge(&m, &[0.1, 0.2, 0.7], ROI, 0.5).unwrap().verdict, Verdict::Pass);
        let j = h.judge(&m, &[0.6, 0.1, 0.3], ROI, 0.5).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!((j.defects.len(), j.defects[0].class.as_str()), (1, "good"));
        assert!((j.defects[0].score - 0.6).abs() < 1e-6);
    }

    #[test]
    fn classifier_settings_are_validated() {
        let mut m = classifier(None);
        m.classifier = Some(ClassifierSpec {
            ok_class: Some("ok".into()),
            top_k: 0,
            ..ClassifierSpec::default()
        });
        let e = m.validate().unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("classifier.ok_class = \"ok\" is not one of output.classes"));
        assert!(e[1].contains("classifier.top_k = 0"));
        let mut d = manifest(
            "detector-yolo",
            [1, 3, 64, 64],
            serde_json::json!([1, 6, 84]),
            &["a", "b"],
        );
        d.classifier = Some(ClassifierSpec::default());
        assert!(d.validate().unwrap_err()[0].contains("apply to \"family\": \"classifier\" only"));
    }

    #[test]
    fn a_classifier_input_is_the_normalised_roi_in_every_channel() {
        let m = classifier(None);
        let h = Head::new(&m, ROI).unwrap();
        let px: Vec<u8> = (0..48).map(|i| (i * 5) as u8).collect();
        let frame = GrayImage {
            width: 8,
            height: 6,
            pixels: &px,
        };
        let mut input = vec![0.0; 48];
        let norm = Normalization { mean: 0.5, std: 0.25 };
        h.prepare(&frame, ROI, norm, &mut input);
        assert!((input[0] - (px[8 + 2] as f32 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
        assert_eq!(&input[..16], &input[16..32]);
        assert_eq!(&input[..16], &input[32..]);
    }

    #[test]
    fn a_detector_fails_on_any_kept_box_mapped_into_the_frame() {
        let mut m = manifest(
            "detector-yolo",
            [1, 1, 8, 8],
            serde_json::json!([1, 6, 3]),
            &["pore", "crack"],
        );
        m.detector = Some(DetectorSpec {
            confidence: 0.5,
            iou: 0.5,
            max_detections: 10,
        });
        // ROI 4×2 at (3, 5): gain 2, 2 px of grey above the image.
        let roi = Roi { x: 3, y: 5, w: 4, h: 2 };
        let h = Head::new(&m, roi).unwrap();
        // Anchors (cx, cy, w, h, s0, s1), channel-major.
        let anchors = [
            [4.0, 4.0, 4.0, 2.0, 0.9, 0.1], // ROI (1..3, 0.5..1.5)
            [4.0, 4.0, 4.0, 2.0, 0.8, 0.0], // the same box, lower: suppressed
            [2.0, 3.0, 2.0, 2.0, 0.1, 0.4], // below the confidence
        ];
        let mut out = vec![0.0f32; 18];
        for (n, a) in anchors.iter().enumerate() {
            for (row, v) in a.iter().enumerate() {
                out[row * 3 + n] = *v;
            }
        }
        let j = h.judge(&m, &out, roi, 0.99).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.detections.len(), 1);
        let d = j.detections[0];
        assert_eq!((d.class, d.x0, d.y0, d.x1, d.y1), (0, 4.0, 5.5, 6.0, 6.5));
        let b = &j.defects[0];
        assert_eq!((b.class.as_str(), b.x, b.y, b.w, b.h), ("pore", 4, 5, 2, 2));
        // Nothing above the confidence: Pass, no defects.
        out[12] = 0.3;
        out[13] = 0.3;
        let j = h.judge(&m, &out, roi, 0.99).unwrap();
        assert_eq!((j.verdict, j.defects.len(), j.detections.len()), (Verdict::Pass, 0, 0));
        // The input: grey bars, the ROI scaled ×2 (1 channel here).
        let px = vec![255u8; 10 * 8];
        let frame = GrayImage {
            width: 10,
            height: 8,
            pixels: &px,
        };
        let mut input = vec![0.0; 64];
        h.prepare(&frame, roi, Normalization { mean: 0.0, std: 1.0 }, &mut input);
        assert!(input[..16].iter().all(|&v| v == 114.0 / 255.0));
        assert!(input[16..48].iter().all(|&v| v == 1.0));
        assert!(input[48..].iter().all(|&v| v == 114.0 / 255.0));
    }
}
