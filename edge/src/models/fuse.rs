//! The fuse: a new model's probation, and the decision to roll it back.
//!
//! When a deployed model takes over a worker, the fuse is armed with the
//! latency of the model it replaced. During probation every frame is
//! reported with its outcome and inspection time; the fuse trips at once
//! when the new model
//!
//! - fails to run (`max_errors` errors, default the first one),
//! - outputs NaN or infinity (always the first time), or
//! - is too slow: `slow_frames` frames in a row (default 5) above the bound,
//!   which is `max_slowdown` × the previous model's median time (default 3×)
//!   or `max_inference` if that is configured and lower. Times are the
//!   worker thread's CPU time per frame (preprocess, inference,
//!   postprocess), so a busy machine does not make a good model look slow.
//!
//! Probation passes when both `probation` has elapsed and `min_frames`
//! frames were judged without tripping. Sans-IO: time (`now_ns`, monotonic)
//! and latencies are arguments, decisions are returned.

use std::time::Duration;

/// Fuse settings, from `[models]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FuseConfig {
    /// How long a new model is on probation.
    pub probation: Duration,
    /// Frames it must judge before probation can pass.
    pub min_frames: u32,
    /// Errors that trip the fuse.
    pub max_errors: u32,
    /// Bound relative to the previous model's median inspection time.
    pub max_slowdown: f64,
    /// Absolute bound on the inspection time, if any.
    pub max_inference: Option<Duration>,
    /// Consecutive slow frames that trip the fuse.
    pub slow_frames: u32,
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self {
            probation: Duration::from_secs(60),
            min_frames: 50,
            max_errors: 1,
            max_slowdown: 3.0,
            max_inference: None,
            slow_frames: 5,
        }
    }
}

/// How one frame went with the model on probation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameOutcome {
    /// Judged, in `latency_ns`.
    Ok {
        /// Inspection time, ns.
        latency_ns: i64,
    },
    /// The model failed to run.
    Error,
    /// The model output NaN or infinity.
    NonFinite,
}

/// Why the fuse tripped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TripReason {
    /// Inference errors.
    Errors {
        /// How many.
        count: u32,
    },
    /// NaN or infinite outputs.
    NonFinite,
    /// Slower than the bound.
    TooSlow {
        /// The last slow frame's time, ns.
        latency_ns: i64,
        /// The bound, ns.
        bound_ns: i64,
        /// Frames in a row above it.
        frames: u32,
    },
}

impl TripReason {
    /// Stable code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            TripReason::Errors { .. } => "fuse_errors",
            TripReason::NonFinite => "fuse_non_finite",
            TripReason::TooSlow { .. } => "fuse_too_slow",
        }
    }
}

impl std::fmt::Display for TripReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TripReason::Errors { count } => write!(f, "the model failed to run on {count} frame(s) during probation"),
            TripReason::NonFinite => write!(f, "the model output NaN or infinite values during probation"),
            TripReason::TooSlow {
                latency_ns,
                bound_ns,
                frames,
            } => write!(
                f,
                "the model took {:.2} ms per frame, above the bound of {:.2} ms, {frames} frames in a row during probation (models.fuse_max_slowdown / fuse_max_inference_ms)",
                *latency_ns as f64 / 1e6,
                *bound_ns as f64 / 1e6
            ),
        }
    }
}

/// What the fuse decided.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum FuseAction {
    /// Roll back now.
    Trip(TripReason),
    /// Probation passed.
    Passed {
        /// Frames judged on probation.
        frames: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Idle,
    Armed {
        since_ns: i64,
        frames: u32,
        errors: u32,
        slow_run: u32,
        bound_ns: i64,
    },
}

/// The fuse of one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Fuse {
    cfg: FuseConfig,
    state: State,
}

impl Fuse {
    /// An idle fuse.
    pub fn new(cfg: FuseConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
        }
    }

    /// Start probation at `now_ns`; `baseline_ns` is the previous model's
    /// median inspection time, if known.
    pub fn arm(&mut self, now_ns: i64, baseline_ns: Option<i64>) {
        let relative = baseline_ns.map(|b| (b as f64 * self.cfg.max_slowdown) as i64);
        let absolute = self.cfg.max_inference.map(|d| d.as_nanos() as i64);
        let bound_ns = match (relative, absolute) {
            (Some(r), Some(a)) => r.min(a),
            (Some(r), None) => r,
            (None, Some(a)) => a,
            (None, None) => i64::MAX,
        };
        self.state = State::Armed {
            since_ns: now_ns,
            frames: 0,
            errors: 0,
            slow_run: 0,
            bound_ns,
        };
    }

    /// Stop watching (after a swap that is not a deploy, e.g. a rollback).
    pub fn disarm(&mut self) {
        self.state = State::Idle;
    }

    /// Is a model on probation?
    pub fn is_armed(&self) -> bool {
        matches!(self.state, State::Armed { .. })
    }

    /// The latency bound in force, ns (`None` when idle or unbounded).
    pub fn bound_ns(&self) -> Option<i64> {
        match self.state {
            State::Armed { bound_ns, .. } if bound_ns < i64::MAX => Some(bound_ns),
            _ => None,
        }
    }

    /// One frame judged by the model on probation, at `now_ns`.
    pub fn handle_frame(&mut self, now_ns: i64, outcome: FrameOutcome) -> Option<FuseAction> {
        let State::Armed {
            since_ns,
            frames,
            errors,
            slow_run,
            bound_ns,
        } = &mut self.state
        else {
            return None;
        };
        *frames += 1;
        let trip = match outcome {
            FrameOutcome::NonFinite => Some(TripReason::NonFinite),
            FrameOutcome::Error => {
                *errors += 1;
                (*errors >= self.cfg.max_errors.max(1)).then_some(TripReason::Errors { count: *errors })
            }
            FrameOutcome::Ok { latency_ns } => {
                if latency_ns > *bound_ns {
                    *slow_run += 1;
                } else {
                    *slow_run = 0;
                }
                (*slow_run >= self.cfg.slow_frames.max(1)).then_some(TripReason::TooSlow {
                    latency_ns,
                    bound_ns: *bound_ns,
                    frames: *slow_run,
                })
            }
        };
        if let Some(t) = trip {
            self.state = State::Idle;
            return Some(FuseAction::Trip(t));
        }
        let elapsed = now_ns - *since_ns;
        if elapsed >= self.cfg.probation.as_nanos() as i64 && *frames >= self.cfg.min_frames {
            let frames = *frames;
            self.state = State::Idle;
            return Some(FuseAction::Passed { frames });
        }
        None
    }
}

/// Median of the last 32 inspection times of a worker's current model,
/// without allocating (the baseline of the next probation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyWindow {
    ring: [i64; 32],
    len: usize,
    next: usize,
}

impl LatencyWindow {
    /// Record one time, ns.
    pub fn push(&mut self, ns: i64) {
        self.ring[self.next] = ns;
        self.next = (self.next + 1) % self.ring.len();
        self.len = (self.len + 1).min(self.ring.len());
    }

    /// Forget everything (a new model).
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    /// The median, if at least 5 times were recorded.
    pub fn median(&self) -> Option<i64> {
        if self.len < 5 {
            return None;
        }
        let mut v = self.ring;
        let s = &mut v[..self.len];
        s.sort_unstable();
        Some(s[self.len / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn cfg() -> FuseConfig {
        FuseConfig {
            probation: Duration::from_secs(10),
            min_frames: 3,
            ..FuseConfig::default()
        }
    }

    #[test]
    fn idle_fuse_ignores_frames() {
        let mut f = Fuse::new(cfg());
        assert_eq!(f.handle_frame(0, FrameOutcome::NonFinite), None);
    }

    #[test]
    fn nan_trips_at_once_and_errors_count() {
        let mut f = Fuse::new(cfg());
        f.arm(0, Some(MS));
        assert_eq!(f.handle_frame(1, FrameOutcome::Ok { latency_ns: MS }), None);
        assert_eq!(
            f.handle_frame(2, FrameOutcome::NonFinite),
            Some(FuseAction::Trip(TripReason::NonFinite))
        );
        assert!(!f.is_armed());
        let mut f = Fuse::new(FuseConfig { max_errors: 2, ..cfg() });
        f.arm(0, None);
        assert_eq!(f.handle_frame(1, FrameOutcome::Error), None);
        assert_eq!(
            f.handle_frame(2, FrameOutcome::Error),
            Some(FuseAction::Trip(TripReason::Errors { count: 2 }))
        );
    }

    #[test]
    fn slowness_needs_consecutive_frames_over_the_bound() {
        let mut f = Fuse::new(cfg());
        f.arm(0, Some(MS));
        assert_eq!(f.bound_ns(), Some(3 * MS));
        let slow = FrameOutcome::Ok { latency_ns: 4 * MS };
        for _ in 0..4 {
            assert_eq!(f.handle_frame(1, slow), None);
        }
        // One fast frame resets the run.
        assert_eq!(f.handle_frame(1, FrameOutcome::Ok { latency_ns: MS }), None);
        for _ in 0..4 {
            assert_eq!(f.handle_frame(1, slow), None);
        }
        assert!(matches!(
            f.handle_frame(1, slow),
            Some(FuseAction::Trip(TripReason::TooSlow { frames: 5, .. }))
        ));
        // An absolute bound below the relative one wins.
        let mut f = Fuse::new(FuseConfig {
            max_inference: Some(Duration::from_millis(2)),
            ..cfg()
        });
        f.arm(0, Some(MS));
        assert_eq!(f.bound_ns(), Some(2 * MS));
    }

    #[test]
    fn probation_passes_after_time_and_frames() {
        let mut f = Fuse::new(cfg());
        f.arm(0, Some(MS));
        let ok = FrameOutcome::Ok { latency_ns: MS };
        assert_eq!(f.handle_frame(11_000 * MS, ok), None); // time, but 1 frame
        assert_eq!(f.handle_frame(11_001 * MS, ok), None);
        assert_eq!(f.handle_frame(11_002 * MS, ok), Some(FuseAction::Passed { frames: 3 }));
        assert!(!f.is_armed());
    }

    #[test]
    fn latency_window_median() {
        let mut w = LatencyWindow::default();
        for v in [5, 1, 4, 2] {
            w.push(v);
        }
        assert_eq!(w.median(), None);
        w.push(3);
        assert_eq!(w.median(), Some(3));
        for _ in 0..40 {
            w.push(10);
        }
        assert_eq!(w.median(), Some(10));
    }
}
