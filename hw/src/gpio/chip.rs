//! The real chip: Linux GPIO character device lines through gpiocdev.

use super::GpioPoint;
use crate::digital::{DigitalLines, LineId};
use crate::process::{Direction, IoError};
use gpiocdev::Request;
use gpiocdev::line::Value;

/// The lines of a GPIO device on a Linux GPIO chip (`/dev/gpiochipN`), held
/// in one line request with the consumer name `triad` (what `gpioinfo`
/// shows against them) for as long as it lives.
///
/// Levels are physical: `Value::Active` is a high line, as the request
/// leaves every line active-high; [`super::GpioDevice`] applies
/// `active_low` itself.
///
/// Compiled on the development machine, never run there (it has no GPIO
/// chip and cannot load `gpio-sim`): the logic above it is tested against
/// [`crate::sim::SimLines`].
pub struct ChipLines {
    /// The chip's path, named in errors.
    chip: String,
    request: Request,
}

impl ChipLines {
    /// Request the lines of `points` on `chip`, a path (`/dev/gpiochip0`) or
    /// a chip name (`gpiochip0`): inputs as inputs, outputs as outputs
    /// switched off (the line high for an `active_low` output), so nothing
    /// turns on before the first scan writes the outputs.
    ///
    /// Takes the points rather than bare offsets because the safe level of
    /// an output depends on its `active_low`. Hand the same points to
    /// [`super::GpioDevice::new`].
    pub fn open(chip: &str, points: &[GpioPoint]) -> Result<Self, String> {
        let path = if chip.contains('/') {
            chip.to_string()
        } else {
            format!("/dev/{chip}")
        };
        if points.is_empty() {
            return Err(format!(
                "GPIO chip {path}: no lines to request; list the device's points in the config"
            ));
        }
        let mut builder = Request::builder();
        builder.on_chip(&path).with_consumer("triad");
        for p in points {
            builder.with_line(p.line);
            match p.direction {
                Direction::Input => builder.as_input(),
                Direction::Output if p.active_low => builder.as_output(Value::Active),
                Direction::Output => builder.as_output(Value::Inactive),
            };
        }
        let request = builder.request().map_err(|e| {
            let lines: Vec<u32> = points.iter().map(|p| p.line).collect();
            format!(
                "cannot request lines {lines:?} on GPIO chip {path}: {e}. Check that the chip \
                 exists (`ls /dev/gpiochip*`, `gpiodetect`) and has those lines (`gpioinfo`), \
                 that this user may open it (member of the `gpio` group, or a udev rule granting \
                 it), and that no other program holds the lines (`gpioinfo` shows a consumer)"
            )
        })?;
        Ok(Self { chip: path, request })
    }

    fn fault(&self, doing: &str, line: LineId, e: gpiocdev::Error) -> IoError {
        IoError::DeviceFault {
            device: self.chip.clone(),
            code: 0,
            detail: format!("{doing} line {} failed: {e}", line.0),
        }
    }
}

impl DigitalLines for ChipLines {
    fn set(&mut self, line: LineId, high: bool) -> Result<(), IoError> {
        let value = if high { Value::Active } else { Value::Inactive };
        self.request
            .set_value(line.0, value)
            .map_err(|e| self.fault("setting", line, e))
    }

    fn get(&self, line: LineId) -> Result<bool, IoError> {
        self.request
            .value(line.0)
            .map(|v| v == Value::Active)
            .map_err(|e| self.fault("reading", line, e))
    }
}
