//! # triad-hw: field I/O behind small traits
//!
//! The control thread and the inspection workers never talk to hardware
//! directly. They see three traits:
//!
//! - [`ProcessIo`]: one scan of one axis' whole process image. Reading fills
//!   a [`LineInputs`], writing applies a [`LineOutputs`]; [`sim::SimLine`]
//!   implements it for the simulated battery-module welding line.
//! - [`Device`]: a field device with named points, what the node scans;
//!   axes bind their signals ([`Signal`]) to its points by name.
//!   [`AxisImageDevice`] makes a [`ProcessIo`] one.
//! - [`modbus`]: the sans-IO core of the Modbus driver (value encoding,
//!   block reads, the simulated plant's register map).
//! - [`Camera`]: turns a [`CaptureTrigger`] into a [`Frame`]. The simulated
//!   camera [`sim::SimCamera`] renders weld images whose defects become likelier
//!   as the weld temperature drifts.
//! - [`DigitalLines`]: a handful of digital points (stack light, e-stop), with
//!   [`sim::SimLines`] as the always-built fake.
//! - [`GpioDevice`]: digital points ([`GpioPoint`]) on [`DigitalLines`] as a
//!   [`Device`]; `gpio::ChipLines` (Linux) is the real chip.
//!
//! Everything here is deterministic: the simulation takes its seed and the
//! time as arguments and never reads a clock.
#![deny(missing_docs)]

pub mod camera;
pub mod device;
pub mod digital;
pub mod gpio;
pub mod modbus;
pub mod process;
pub mod rng;
pub mod sim;

pub use camera::{Camera, CameraError, CaptureTrigger, Frame, FrameTruth, TruthBox};
pub use device::{AXIS_IMAGE_POINTS, AxisImageDevice, Device, PointInfo};
pub use digital::{DigitalLines, LineId};
#[cfg(target_os = "linux")]
pub use gpio::ChipLines;
pub use gpio::{GpioDevice, GpioPoint};
pub use process::{Direction, IoError, LineInputs, LineOutputs, PointKind, ProcessIo, Signal};
