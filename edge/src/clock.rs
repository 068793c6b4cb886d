//! One clock for every workload.
//!
//! Stamps are nanoseconds since the Unix epoch. Every message carries the
//! clock's state and offset estimate with the stamp, so a consumer can tell a
//! PTP-locked stamp from a free-running one. Backends: [`SystemClock`]
//! (CLOCK_REALTIME, free-running) and [`ManualClock`] for tests; PHC and an
//! embedded statime instance are planned behind the same trait.
//!
//! Reading the clock never allocates or blocks (it is a vDSO call), so the
//! control thread may call it every cycle.

use std::sync::atomic::{AtomicI64, Ordering};
use triad_schemas::ClockState;

/// State and quality of the clock right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockStatus {
    /// Locked, holdover or free-running.
    pub state: ClockState,
    /// Estimated offset from the reference, ns (`None` if unknown).
    pub offset_ns: Option<i64>,
}

/// The envelope of a message node `node` makes at `stamp_ns`, with the
/// clock's state and offset now (sequence 0: filled at publish).
pub fn envelope(clock: &dyn Clock, node: &str, stamp_ns: i64) -> triad_schemas::Envelope {
    let st = clock.status();
    triad_schemas::Envelope {
        schema_version: triad_schemas::codec::SCHEMA_VERSION,
        node: node.to_string(),
        sequence: 0,
        stamp_ns,
        clock: st.state,
        clock_offset_ns: st.offset_ns,
    }
}

/// The node's clock.
pub trait Clock: Send + Sync + 'static {
    /// Now, ns since the Unix epoch.
    fn now_ns(&self) -> i64;
    /// State and offset estimate.
    fn status(&self) -> ClockStatus;
    /// Short name for logs and the dashboard.
    fn name(&self) -> &'static str;
}

/// CLOCK_REALTIME of the host. Free-running unless the host runs its own
/// synchronisation, which this backend cannot see.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        realtime_ns()
    }
    fn status(&self) -> ClockStatus {
        ClockStatus {
            state: ClockState::FreeRunning,
            offset_ns: None,
        }
    }
    fn name(&self) -> &'static str {
        "system"
    }
}

/// CLOCK_REALTIME in ns.
pub fn realtime_ns() -> i64 {
    read(libc::CLOCK_REALTIME)
}

/// CLOCK_MONOTONIC in ns (for deadlines and durations, never for stamps).
pub fn monotonic_ns() -> i64 {
    read(libc::CLOCK_MONOTONIC)
}

fn read(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime has no other
    // preconditions and cannot fail for these clock ids.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Sleep until `deadline_ns` on CLOCK_MONOTONIC (absolute; restarts on EINTR).
/// The only blocking call the control thread makes.
pub fn sleep_until_mono(deadline_ns: i64) {
    let ts = libc::timespec {
        tv_sec: deadline_ns / 1_000_000_000,
        tv_nsec: deadline_ns % 1_000_000_000,
    };
    loop {
        // SAFETY: valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let rc =
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
        if rc != libc::EINTR {
            return;
        }
    }
}

/// A clock that moves only when a test says so.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    state: ClockState,
}

impl ManualClock {
    /// Start at `start_ns`, reporting `Locked` with zero offset.
    pub fn new(start_ns: i64) -> Self {
        Self {
            now: AtomicI64::new(start_ns),
            state: ClockState::Locked,
        }
    }
    /// Move forward by `delta_ns`.
    pub fn advance(&self, delta_ns: i64) {
        self.now.fetch_add(delta_ns, Ordering::SeqCst);
    }
    /// Jump to `t_ns`.
    pub fn set(&self, t_ns: i64) {
        self.now.store(t_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
    fn status(&self) -> ClockStatus {
        ClockStatus {
            state: self.state,
            offset_ns: Some(0),
        }
    }
    fn name(&self) -> &'static str {
        "manual"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_plausible_and_monotonic_moves_forward() {
        let t = SystemClock.now_ns();
        assert!(t > 1_700_000_000_000_000_000, "{t}");
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        assert_eq!(SystemClock.status().state, ClockState::FreeRunning);
    }

    #[test]
    fn manual_clock_moves_by_hand() {
        let c = ManualClock::new(100);
        c.advance(50);
        assert_eq!(c.now_ns(), 150);
        c.set(7);
        assert_eq!(c.now_ns(), 7);
    }
}
