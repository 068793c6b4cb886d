//! The header every bus message carries.

use serde::{Deserialize, Serialize};

/// State of the node's clock when a message was stamped (as PTP reports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClockState {
    /// Synchronised to the grandmaster within the configured bound.
    Locked,
    /// Lost the grandmaster, coasting on the last frequency estimate.
    Holdover,
    /// Never synchronised, or a plain system clock with no reference.
    FreeRunning,
}

/// Header of every message: who sent it, when (on the shared clock), how
/// good that clock was, and where it falls in the sender's sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Version of the message's schema (see `codec::SCHEMA_VERSION`).
    pub schema_version: i32,
    /// Node that produced the message.
    pub node: String,
    /// Per (node, topic) sequence number, from 1, without gaps. Consumers
    /// use it to deduplicate at-least-once deliveries.
    pub sequence: i64,
    /// Time of the event the message describes, ns since the Unix epoch on
    /// the node's clock.
    pub stamp_ns: i64,
    /// State of that clock.
    pub clock: ClockState,
    /// Estimated offset of the node clock from the reference, ns (positive:
    /// node ahead). `None` when nothing is known (free-running).
    pub clock_offset_ns: Option<i64>,
}
