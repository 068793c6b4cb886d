//! The values a Modbus device's link task and the I/O scan share.
//!
//! One slot per point, lock-free: the link task stores each input it reads
//! with the time it read it (node clock) and loads the outputs the scan
//! stored; the scan does the opposite. Neither waits for the other, and the
//! scan never allocates.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// An input never read yet.
pub const NEVER: i64 = i64::MIN;

/// Counters of one device's link, for metrics and the dashboard.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Requests sent (reads and writes, retries included).
    pub requests: AtomicU64,
    /// Requests that got no answer in time.
    pub timeouts: AtomicU64,
    /// Requests answered with a Modbus exception.
    pub exceptions: AtomicU64,
    /// Requests lost to the transport (connection refused or cut,
    /// malformed answer).
    pub transport_errors: AtomicU64,
    /// Connections made (the first included).
    pub connects: AtomicU64,
    /// Polls of a whole group that completed (every block answered).
    pub polls: AtomicU64,
    /// Duration of the last complete poll of the default group, ns.
    pub last_poll_ns: AtomicU64,
}

/// The shared slots of one device.
#[derive(Debug)]
pub struct SharedImage {
    values: Box<[AtomicU64]>,
    stamps: Box<[AtomicI64]>,
    /// The link's counters.
    pub stats: LinkStats,
    /// The link's latest failure, as logged (only the link task and
    /// readers of figures take this lock, never the scan).
    last_error: Mutex<Option<String>>,
}

impl SharedImage {
    /// `points` slots: inputs never read, outputs never set (NaN: the link
    /// writes nothing until the scan has set a value).
    pub fn new(points: usize) -> Self {
        Self {
            values: (0..points).map(|_| AtomicU64::new(f64::NAN.to_bits())).collect(),
            stamps: (0..points).map(|_| AtomicI64::new(NEVER)).collect(),
            stats: LinkStats::default(),
            last_error: Mutex::new(None),
        }
    }

    /// The link's latest failure, as logged.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map_or(None, |e| e.clone())
    }

    /// Record the link's latest failure (the link task).
    pub fn set_last_error(&self, text: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(text);
        }
    }

    /// Point `i`'s value.
    pub fn value(&self, i: usize) -> f64 {
        f64::from_bits(self.values[i].load(Relaxed))
    }

    /// When input `i` was last read, ns on the node clock ([`NEVER`] if not yet).
    pub fn stamp(&self, i: usize) -> i64 {
        self.stamps[i].load(Relaxed)
    }

    /// Set output `i` (the scan) or input `i` as read at `stamp_ns` (the link).
    pub fn set(&self, i: usize, value: f64, stamp_ns: i64) {
        self.values[i].store(value.to_bits(), Relaxed);
        self.stamps[i].store(stamp_ns, Relaxed);
    }
}
