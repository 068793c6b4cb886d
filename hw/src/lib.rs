//! # triad-hw: field I/O behind small traits
//!
//! The control thread and the inspection workers never talk to hardware
//! directly. They see three traits:
//!
//! - [`ProcessIo`]: one scan of the line's process image. Reading fills a
//!   [`LineInputs`], writing applies a [`LineOutputs`]. A Modbus or GPIO driver
//!   implements it on real hardware; [`sim::SimLine`] implements it for the
//!   simulated battery-module welding line.
//! - [`Camera`]: turns a [`CaptureTrigger`] into a [`Frame`]. The simulated
//!   camera [`sim::SimCamera`] renders weld images whose defects become likelier
//!   as the weld temperature drifts.
//! - [`DigitalLines`]: a handful of digital points (stack light, e-stop), with
//!   [`sim::SimLines`] as the always-built fake.
//!
//! Everything here is deterministic: the simulation takes its seed and the
//! time as arguments and never reads a clock.
#![deny(missing_docs)]

pub mod camera;
pub mod digital;
pub mod process;
pub mod rng;
pub mod sim;

pub use camera::{Camera, CameraError, CaptureTrigger, Frame, FrameTruth, TruthBox};
pub use digital::{DigitalLines, LineId};
pub use process::{IoError, LineInputs, LineOutputs, ProcessIo};
