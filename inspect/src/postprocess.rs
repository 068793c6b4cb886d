//! From the model's class grid to defect boxes.
//!
//! The output is `[1, C, R, K]`: for each of `R × K` cells of the ROI, the
//! probabilities of `C` classes (channel 0 = no defect). A cell is defective
//! when its most likely defect class has probability above the threshold.
//! 4-connected defective cells of the same class form one box; its score is
//! the highest probability inside.

use crate::preprocess::Roi;
use triad_schemas::DefectBox;

/// Find defect boxes in `grid` (`classes × rows × cols`, channel-major),
/// mapped into frame pixels through `roi`.
pub fn boxes(grid: &[f32], classes: &[String], rows: usize, cols: usize, roi: Roi, threshold: f32) -> Vec<DefectBox> {
    let c = classes.len();
    assert_eq!(grid.len(), c * rows * cols, "grid length");
    let cell_w = roi.w as usize / cols;
    let cell_h = roi.h as usize / rows;
    // Per cell: best defect class and its probability, or none.
    let mut label = vec![0usize; rows * cols];
    let mut prob = vec![0.0f32; rows * cols];
    for i in 0..rows * cols {
        let (best, p) = (1..c)
            .map(|k| (k, grid[k * rows * cols + i]))
            .fold((0, 0.0f32), |a, b| if b.1 > a.1 { b } else { a });
        if p > threshold {
            label[i] = best;
            prob[i] = p;
        }
    }
    let mut seen = vec![false; rows * cols];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..rows * cols {
        if label[start] == 0 || seen[start] {
            continue;
        }
        let class = label[start];
        let (mut r0, mut c0, mut r1, mut c1) = (usize::MAX, usize::MAX, 0, 0);
        let mut score = 0.0f32;
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (r, k) = (i / cols, i % cols);
            r0 = r0.min(r);
            r1 = r1.max(r);
            c0 = c0.min(k);
            c1 = c1.max(k);
            score = score.max(prob[i]);
            let mut visit = |j: usize| {
                if !seen[j] && label[j] == class {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if r > 0 {
                visit(i - cols);
            }
            if r + 1 < rows {
                visit(i + cols);
            }
            if k > 0 {
                visit(i - 1);
            }
            if k + 1 < cols {
                visit(i + 1);
            }
        }
        out.push(DefectBox {
            class: classes[class].clone(),
            score: score as f64,
            x: (roi.x as usize + c0 * cell_w) as i32,
            y: (roi.y as usize + r0 * cell_h) as i32,
            w: ((c1 - c0 + 1) * cell_w) as i32,
            h: ((r1 - r0 + 1) * cell_h) as i32,
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["good".into(), "porosity".into(), "crack".into()]
    }

    /// A 3-class 4×4 grid with everything "good" except `set` cells.
    fn grid(set: &[(usize, usize, usize, f32)]) -> Vec<f32> {
        let mut g = vec![0.0f32; 3 * 16];
        g[..16].fill(1.0);
        for &(class, r, k, p) in set {
            g[r * 4 + k] = 1.0 - p;
            g[class * 16 + r * 4 + k] = p;
        }
        g
    }

    #[test]
    fn clean_grid_has_no_boxes() {
        let roi = Roi {
            x: 16,
            y: 8,
            w: 32,
            h: 32,
        };
        assert!(boxes(&grid(&[]), &classes(), 4, 4, roi, 0.5).is_empty());
    }

    #[test]
    fn connected_cells_merge_and_classes_stay_apart() {
        let roi = Roi {
            x: 16,
            y: 8,
            w: 32,
            h: 32,
        };
        let g = grid(&[(1, 1, 1, 0.9), (1, 1, 2, 0.7), (2, 3, 3, 0.6), (1, 3, 0, 0.4)]);
        let b = boxes(&g, &classes(), 4, 4, roi, 0.5);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].class, "porosity");
        assert!((b[0].score - 0.9).abs() < 1e-6);
        assert_eq!((b[0].x, b[0].y, b[0].w, b[0].h), (16 + 8, 8 + 8, 16, 8));
        assert_eq!(b[1].class, "crack");
        assert_eq!((b[1].x, b[1].y, b[1].w, b[1].h), (16 + 24, 8 + 24, 8, 8));
    }

    #[test]
    fn diagonal_cells_are_separate_defects() {
        let roi = Roi {
            x: 0,
            y: 0,
            w: 32,
            h: 32,
        };
        let g = grid(&[(2, 0, 0, 0.8), (2, 1, 1, 0.8)]);
        assert_eq!(boxes(&g, &classes(), 4, 4, roi, 0.5).len(), 2);
    }
}
