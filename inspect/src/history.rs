//! Per-cell inspection history, counted by batch.
//!
//! The analysis needs the last few batches of a cell and the healthy
//! baseline before them; individual results are on the bus, so here only the
//! counts are kept, for a bounded number of batches.

use std::collections::VecDeque;
use triad_schemas::Verdict;

/// Counts of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchCounts {
    /// Batch id.
    pub batch_id: String,
    /// Frames inspected.
    pub frames: u64,
    /// Frames that failed.
    pub defects: u64,
    /// First frame's capture time, ns.
    pub first_ns: i64,
    /// Last frame's capture time, ns.
    pub last_ns: i64,
}

/// The history of one cell.
#[derive(Clone, Debug)]
pub struct ResultHistory {
    max_batches: usize,
    batches: VecDeque<BatchCounts>,
}

impl ResultHistory {
    /// Keep at most `max_batches` batches (the oldest are forgotten).
    pub fn new(max_batches: usize) -> Self {
        Self {
            max_batches: max_batches.max(1),
            batches: VecDeque::new(),
        }
    }

    /// Count one result.
    pub fn record(&mut self, batch_id: &str, verdict: Verdict, frame_stamp_ns: i64) {
        let fail = u64::from(verdict == Verdict::Fail);
        if let Some(b) = self.batches.iter_mut().rev().find(|b| b.batch_id == batch_id) {
            b.frames += 1;
            b.defects += fail;
            b.first_ns = b.first_ns.min(frame_stamp_ns);
            b.last_ns = b.last_ns.max(frame_stamp_ns);
            return;
        }
        if self.batches.len() == self.max_batches {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchCounts {
            batch_id: batch_id.to_string(),
            frames: 1,
            defects: fail,
            first_ns: frame_stamp_ns,
            last_ns: frame_stamp_ns,
        });
    }

    /// The last `n` batches, oldest first (fewer if the history is shorter).
    pub fn last_batches(&self, n: usize) -> Vec<BatchCounts> {
        let skip = self.batches.len().saturating_sub(n);
        self.batches.iter().skip(skip).cloned().collect()
    }

    /// Totals `(frames, defects)` of batches that ended before `before_ns`,
    /// leaving out the last `exclude_last` batches: the healthy baseline.
    pub fn baseline(&self, before_ns: i64, exclude_last: usize) -> (u64, u64) {
        let keep = self.batches.len().saturating_sub(exclude_last);
        self.batches
            .iter()
            .take(keep)
            .filter(|b| b.last_ns < before_ns)
            .fold((0, 0), |(f, d), b| (f + b.frames, d + b.defects))
    }

    /// Number of batches held.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// No batch yet?
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_batches_and_forgets_the_oldest() {
        let mut h = ResultHistory::new(3);
        for b in 0..5 {
            for k in 0..4 {
                let v = if k == 0 && b >= 3 { Verdict::Fail } else { Verdict::Pass };
                h.record(&format!("B{b}"), v, (b * 10 + k) as i64);
            }
        }
        assert_eq!(h.len(), 3);
        let last = h.last_batches(2);
        assert_eq!(
            last.iter().map(|b| b.batch_id.as_str()).collect::<Vec<_>>(),
            ["B3", "B4"]
        );
        assert_eq!(
            (last[1].frames, last[1].defects, last[1].first_ns, last[1].last_ns),
            (4, 1, 40, 43)
        );
        assert_eq!(h.baseline(100, 2), (4, 0));
        assert_eq!(h.baseline(25, 0), (4, 0));
        assert_eq!(h.last_batches(10).len(), 3);
    }
}
