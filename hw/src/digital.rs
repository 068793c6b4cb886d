//! Digital points (stack light, e-stop) behind a small trait.
//!
//! On a gateway these are GPIO lines (gpiocdev on Jetson and RISC-V boards);
//! the always-built fake is [`crate::sim::SimLines`].

use crate::process::IoError;

/// A digital line, numbered by its offset on the chip (counting from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineId(pub u32);

/// A set of digital lines that can be driven and read.
pub trait DigitalLines: Send {
    /// Drive output `line` high (`true`) or low.
    fn set(&mut self, line: LineId, high: bool) -> Result<(), IoError>;
    /// Read the current level of `line`.
    fn get(&self, line: LineId) -> Result<bool, IoError>;
}
