//! Model families: the pre- and post-processing that turn a frame into a
//! model's input tensor and the model's outputs back into detections, for
//! each layout of model a plant brings.
//!
//! | family | output layout | post-processing |
//! |---|---|---|
//! | `grid` | `[1, C, R, K]` class probabilities per ROI cell | connected cells of a class become a box ([`crate::postprocess`]) |
//! | `classifier` | `[1, C]` logits or probabilities | softmax (if asked), top-k ([`classifier`]) |
//! | `detector-yolo` | `[1, 4 + C, N]` (Ultralytics YOLOv8: `cx, cy, w, h`, then one score per class, for `N` anchors) | confidence threshold, class-wise non-maximum suppression, boxes mapped back through the letterbox ([`yolo`], [`nms`], [`letterbox`]) |
//!
//! Everything here is sans-IO and allocation-bounded by the shapes it is
//! given: functions take slices and sizes and return values; nothing reads
//! a clock, a file or a model.

pub mod classifier;
pub mod head;
pub mod letterbox;
pub mod nms;
pub mod yolo;

use serde::{Deserialize, Serialize};

/// Which pre- and post-processing a model needs (`"family"` in a manifest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFamily {
    /// Today's weld model: a class grid over the ROI.
    #[default]
    Grid,
    /// One label for the whole ROI: softmax over classes, top-k.
    Classifier,
    /// An Ultralytics YOLOv8-layout detector.
    DetectorYolo,
}

/// A detected object in frame pixels (corners, `x0 <= x1`, `y0 <= y1`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// Index of the class in the model's class list.
    pub class: usize,
    /// Confidence in [0, 1].
    pub score: f32,
    /// Left edge, px.
    pub x0: f32,
    /// Top edge, px.
    pub y0: f32,
    /// Right edge, px.
    pub x1: f32,
    /// Bottom edge, px.
    pub y1: f32,
}

impl Detection {
    /// Area in px² (0 for a degenerate box).
    pub fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    /// Intersection over union with `other` (0 when either is empty).
    pub fn iou(&self, other: &Detection) -> f32 {
        let w = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let h = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// The bus's box: integer pixels (rounded outwards), the class's name.
    pub fn to_defect_box(&self, classes: &[String]) -> triad_schemas::DefectBox {
        let (x0, y0) = (self.x0.floor(), self.y0.floor());
        let (x1, y1) = (self.x1.ceil(), self.y1.ceil());
        triad_schemas::DefectBox {
            class: classes
                .get(self.class)
                .cloned()
                .unwrap_or_else(|| format!("class_{}", self.class)),
            score: f64::from(self.score),
            x: x0 as i32,
            y: y0 as i32,
            w: (x1 - x0) as i32,
            h: (y1 - y0) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, y0: f32, x1: f32, y1: f32) -> Detection {
        Detection {
            class: 0,
            score: 1.0,
            x0,
            y0,
            x1,
            y1,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = det(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        // Half overlap: inter 50, union 150.
        assert!((a.iou(&det(5.0, 0.0, 15.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&det(20.0, 20.0, 30.0, 30.0)), 0.0);
        assert_eq!(det(0.0, 0.0, 0.0, 0.0).iou(&det(0.0, 0.0, 0.0, 0.0)), 0.0);
    }

    #[test]
    fn family_names_are_the_manifest_words() {
        let f: ModelFamily = serde_json::from_str("\"detector-yolo\"").unwrap();
        assert_eq!(f, ModelFamily::DetectorYolo);
        assert_eq!(
            serde_json::to_string(&ModelFamily::Classifier).unwrap(),
            "\"classifier\""
        );
        assert!(serde_json::from_str::<ModelFamily>("\"yolo\"").is_err());
    }

    #[test]
    fn boxes_round_outwards_to_pixels() {
        let d = Detection {
            class: 1,
            score: 0.5,
            x0: 1.2,
            y0: 2.7,
            x1: 3.1,
            y1: 4.0,
        };
        let b = d.to_defect_box(&["good".into(), "crack".into()]);
        assert_eq!((b.class.as_str(), b.x, b.y, b.w, b.h), ("crack", 1, 2, 3, 2));
    }
}
