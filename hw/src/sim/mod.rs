//! The simulated battery-module welding line: plant, camera and digital lines.
//!
//! Always built; most tests and `triad run --sim` use it.

pub mod camera;
pub mod digital;
pub mod plant;

pub use camera::{SimCamera, SimCameraConfig};
pub use digital::SimLines;
pub use plant::{Fault, FaultKind, PlantParams, SimLine, WeldEvent};
