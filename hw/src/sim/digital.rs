//! In-memory digital lines with the behaviour of a GPIO chip (a `gpiosim`-style fake).

use crate::digital::{DigitalLines, LineId};
use crate::process::IoError;

/// A fake GPIO chip with a fixed number of lines, all low at start.
#[derive(Clone, Debug)]
pub struct SimLines {
    levels: Vec<bool>,
}

impl SimLines {
    /// A chip with `count` lines.
    pub fn new(count: u32) -> Self {
        Self {
            levels: vec![false; count as usize],
        }
    }

    fn check(&self, line: LineId) -> Result<usize, IoError> {
        let idx = line.0 as usize;
        if idx < self.levels.len() {
            Ok(idx)
        } else {
            Err(IoError::DeviceFault {
                device: "sim-gpio".into(),
                code: 22,
                detail: format!(
                    "line {} does not exist; the chip has lines 0..{}",
                    line.0,
                    self.levels.len()
                ),
            })
        }
    }
}

impl DigitalLines for SimLines {
    fn set(&mut self, line: LineId, high: bool) -> Result<(), IoError> {
        let idx = self.check(line)?;
        self.levels[idx] = high;
        Ok(())
    }

    fn get(&self, line: LineId) -> Result<bool, IoError> {
        Ok(self.levels[self.check(line)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_bad_line() {
        let mut l = SimLines::new(4);
        l.set(LineId(2), true).unwrap();
        assert!(l.get(LineId(2)).unwrap());
        assert!(!l.get(LineId(1)).unwrap());
        let err = l.set(LineId(9), true).unwrap_err().to_string();
        assert!(err.contains("line 9 does not exist"), "{err}");
    }
}
