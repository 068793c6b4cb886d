//! Jitter histogram and cycle counters, shared through atomics.
//!
//! The control thread records; anyone reads, at any time, without a lock.
//! Buckets: 1 µs wide up to 1 ms, then 1 ms wide up to 100 ms, then one
//! overflow bucket.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

const FINE: usize = 1000; // 0..1000 µs in 1 µs buckets
const COARSE: usize = 99; // 1..100 ms in 1 ms buckets
const BUCKETS: usize = FINE + COARSE + 1;

/// Counters of the control loop.
#[derive(Debug)]
pub struct ControlStats {
    buckets: Box<[AtomicU64]>,
    /// Cycles run.
    pub cycles: AtomicU64,
    /// Cycles whose deadline passed before they could run (skipped).
    pub overruns: AtomicU64,
    /// Largest wake-up lateness, ns.
    pub max_lateness_ns: AtomicI64,
    /// Largest time spent in the cycle's work, ns.
    pub max_work_ns: AtomicI64,
    /// Telemetry records dropped because the ring was full.
    pub telemetry_dropped: AtomicU64,
    /// Monotonic time of the last cycle, ns (for health checks).
    pub last_cycle_mono_ns: AtomicI64,
    /// Is the loop running?
    pub running: AtomicBool,
}

impl Default for ControlStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlStats {
    /// All zero.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            cycles: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            max_lateness_ns: AtomicI64::new(0),
            max_work_ns: AtomicI64::new(0),
            telemetry_dropped: AtomicU64::new(0),
            last_cycle_mono_ns: AtomicI64::new(0),
            running: AtomicBool::new(false),
        }
    }

    /// The loop runs and its last cycle was at most `bound_ns` before
    /// `now_mono_ns` (monotonic): what the health check and the systemd
    /// watchdog call healthy. Returns the age of the last cycle, ns, as the
    /// error when not.
    pub fn cycling(&self, now_mono_ns: i64, bound_ns: i64) -> Result<i64, i64> {
        let age = now_mono_ns - self.last_cycle_mono_ns.load(Relaxed);
        if self.running.load(Relaxed) && age <= bound_ns {
            Ok(age)
        } else {
            Err(age)
        }
    }

    fn bucket(lateness_ns: i64) -> usize {
        let us = (lateness_ns.max(0) / 1000) as usize;
        if us < FINE {
            us
        } else {
            let ms = us / 1000;
            if ms < 100 { FINE + ms - 1 } else { BUCKETS - 1 }
        }
    }

    /// Lower edge of a bucket, µs.
    fn bucket_floor_us(idx: usize) -> f64 {
        if idx < FINE {
            idx as f64
        } else {
            ((idx - FINE + 1) * 1000) as f64
        }
    }

    /// Upper edge of a bucket, µs (the overflow bucket reports 100 ms).
    fn bucket_ceil_us(idx: usize) -> f64 {
        if idx < FINE {
            (idx + 1) as f64
        } else {
            ((idx - FINE + 2) * 1000).min(100_000) as f64
        }
    }

    /// Record one cycle's wake-up lateness and work time. Wait-free.
    pub fn record(&self, lateness_ns: i64, work_ns: i64, mono_ns: i64) {
        self.buckets[Self::bucket(lateness_ns)].fetch_add(1, Relaxed);
        self.cycles.fetch_add(1, Relaxed);
        self.max_lateness_ns.fetch_max(lateness_ns, Relaxed);
        self.max_work_ns.fetch_max(work_ns, Relaxed);
        self.last_cycle_mono_ns.store(mono_ns, Relaxed);
    }

    /// Lateness quantile `q` in [0, 1], µs (upper edge of its bucket, so it
    /// never understates). `None` before the first cycle.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::bucket_ceil_us(i));
            }
        }
        None
    }

    /// Largest lateness, µs.
    pub fn max_us(&self) -> f64 {
        self.max_lateness_ns.load(Relaxed) as f64 / 1000.0
    }

    /// Non-empty buckets as `(from_us, to_us, count)`, for the report and docs.
    pub fn histogram(&self) -> Vec<(f64, f64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let c = b.load(Relaxed);
                (c > 0).then(|| (Self::bucket_floor_us(i), Self::bucket_ceil_us(i), c))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let s = ControlStats::new();
        assert_eq!(s.quantile_us(0.99), None);
        for _ in 0..98 {
            s.record(5_500, 1000, 0); // 5.5 µs
        }
        s.record(250_000, 1000, 0); // 250 µs
        s.record(3_200_000, 1000, 0); // 3.2 ms
        assert_eq!(s.quantile_us(0.5), Some(6.0));
        assert_eq!(s.quantile_us(0.99), Some(251.0));
        assert_eq!(s.quantile_us(1.0), Some(4000.0));
        assert_eq!(s.max_us(), 3200.0);
        assert_eq!(s.cycles.load(Relaxed), 100);
        assert_eq!(s.histogram().len(), 3);
        s.record(10_000_000_000, 0, 0);
        assert_eq!(s.quantile_us(1.0), Some(100_000.0));
    }
}
