//! Field I/O: the line's devices and the scan that connects them to the
//! axis programs.
//!
//! - [`drivers`] makes each `[[devices]]` entry's driver (a
//!   [`triad_hw::Device`]); the `sim` driver is the simulated welding line
//!   of one axis, deterministic by seed; `modbus-tcp` and `modbus-rtu`
//!   devices are polled by [`modbus`] link tasks.
//! - [`scan`] is the I/O scan: every millisecond it writes each axis'
//!   outputs to the points they are bound to, scans every device, and hands
//!   each axis its process image (from its bound points) and its cell the
//!   parts to image. A device that fails its scan leaves the axes bound to
//!   it without a new image: their programs see the inputs go stale and
//!   take the safe state. A polled input older than its bound makes the
//!   image of the axes bound to it stale: they take the safe state in that
//!   cycle.

pub mod drivers;
pub mod modbus;
pub mod scan;

pub use scan::{AxisIo, IoStats, LineScan};
