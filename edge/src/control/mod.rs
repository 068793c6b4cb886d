//! The real-time control loop.
//!
//! - [`program`]: the sans-IO control program of one axis (modes, set-points,
//!   safe state). Inputs, requests and time go in; outputs and events come out.
//! - [`runner`]: the thread that runs every axis's program every cycle on a fixed
//!   period (absolute-time sleeps on CLOCK_MONOTONIC), talking to the rest of
//!   the node only through the lock-free [`rings`].
//! - [`histogram`]: wake-up jitter and overruns, in atomics the dashboard
//!   reads without a lock.
//! - [`rt`]: SCHED_FIFO, memory locking and CPU pinning, where permitted.
//!
//! Nothing on the cycle's path allocates, locks or makes a blocking call; the
//! `control_cycle_allocates_nothing` test proves it with a counting allocator.

pub mod histogram;
pub mod program;
pub mod rings;
pub mod rt;
pub mod runner;

pub use histogram::ControlStats;
pub use program::{AxisLimits, AxisProgram, ControlEvent, ControlRequest, RejectReason, SafeReason};
pub use rings::{ControlEndpoints, ControlRings, ControlTelemetry, TelemetrySample};
pub use runner::{AxisLoop, ControlRunner};
