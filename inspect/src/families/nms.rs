//! Class-wise non-maximum suppression (NMS).
//!
//! The rule is torchvision's `batched_nms`, which Ultralytics' YOLOv8
//! post-processing uses: candidates are taken in order of decreasing score;
//! a candidate is dropped when its intersection over union (IoU) with a box
//! already kept **of the same class** is above the threshold; boxes of
//! different classes never suppress each other. At most `max_detections`
//! boxes are kept, highest scores first. Equal scores keep their input
//! order (the sort is stable), so the result is deterministic.

use super::Detection;

/// Keep the boxes that survive class-wise NMS, highest score first.
///
/// `iou_threshold` is in [0, 1]: 0.7 is Ultralytics' default for
/// prediction, 0.45 a common stricter choice.
pub fn class_wise(mut candidates: Vec<Detection>, iou_threshold: f32, max_detections: usize) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(max_detections.min(candidates.len()));
    for c in candidates {
        if kept.len() == max_detections {
            break;
        }
        if kept.iter().all(|k| k.class != c.class || k.iou(&c) <= iou_threshold) {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: usize, score: f32, x0: f32, y0: f32, x1: f32, y1: f32) -> Detection {
        Detection {
            class,
            score,
            x0,
            y0,
            x1,
            y1,
        }
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best() {
        let out = class_wise(
            vec![
                det(0, 0.6, 1.0, 1.0, 11.0, 11.0),
                det(0, 0.9, 0.0, 0.0, 10.0, 10.0),
                det(0, 0.8, 30.0, 30.0, 40.0, 40.0),
            ],
            0.5,
            100,
        );
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].score, out[1].score), (0.9, 0.8));
    }

    #[test]
    fn classes_do_not_suppress_each_other() {
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = det(1, 0.8, 0.0, 0.0, 10.0, 10.0);
        assert_eq!(class_wise(vec![a, b], 0.5, 100), vec![a, b]);
        // The same two boxes in one class: one survives.
        let b0 = Detection { class: 0, ..b };
        assert_eq!(class_wise(vec![a, b0], 0.5, 100), vec![a]);
    }

    #[test]
    fn the_threshold_is_exclusive() {
        // IoU exactly 1/3: kept at threshold 1/3 + ε, dropped below.
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = det(0, 0.8, 5.0, 0.0, 15.0, 10.0);
        assert_eq!(class_wise(vec![a, b], 0.34, 100).len(), 2);
        assert_eq!(class_wise(vec![a, b], 0.33, 100).len(), 1);
    }

    #[test]
    fn at_most_max_detections_highest_first() {
        let boxes: Vec<_> = (0..10)
            .map(|i| det(0, i as f32 / 10.0, 20.0 * i as f32, 0.0, 20.0 * i as f32 + 10.0, 10.0))
            .collect();
        let out = class_wise(boxes, 0.5, 3);
        assert_eq!(out.iter().map(|d| d.score).collect::<Vec<_>>(), vec![0.9, 0.8, 0.7]);
    }

    #[test]
    fn a_chain_is_suppressed_only_by_kept_boxes() {
        // b overlaps a (dropped), c overlaps b but not a: c survives,
        // because only kept boxes suppress.
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = det(0, 0.8, 4.0, 0.0, 14.0, 10.0);
        let c = det(0, 0.7, 11.0, 0.0, 21.0, 10.0);
        assert_eq!(class_wise(vec![c, b, a], 0.3, 100), vec![a, c]);
    }
}
