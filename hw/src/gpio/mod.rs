//! GPIO as a field [`Device`]: digital points (e-stop, stack light, relays)
//! on the lines of one chip.
//!
//! A [`GpioDevice`] turns a list of configured [`GpioPoint`]s into device
//! points over any [`DigitalLines`]: the real chip (`ChipLines`, Linux
//! only) or the always-built fake [`crate::sim::SimLines`].
//!
//! - **Values.** Every point is a [`PointKind::Bool`]: in the image, an input
//!   reads as 1.0 (active) or 0.0, and an output is active when its value is
//!   not 0.0 (NaN counts as inactive: the safe state).
//! - **Active low.** `active_low` points are active when their line is low:
//!   the level on the line is `active != active_low`, both ways. The device
//!   does the inversion itself; the lines below only see levels.
//! - **Writes go on change.** An output's line is written on the first scan,
//!   and after that only when its level differs from the last one written
//!   successfully: each write is an ioctl on a real chip, and the scan runs
//!   every millisecond. After a failed write that line is written again on
//!   the next scan.
//! - **No allocation in [`Device::scan`]**: point infos, line ids and the
//!   written-level memory are built by [`GpioDevice::new`]; only an error
//!   allocates its message.
//!
//! Tested: the device logic, against [`crate::sim::SimLines`] and test
//! wrappers around it (see the tests below). `ChipLines` is compiled on
//! this machine but has never run here: it has no GPIO chip and cannot load
//! `gpio-sim`.

#[cfg(target_os = "linux")]
mod chip;

#[cfg(target_os = "linux")]
pub use chip::ChipLines;

use crate::device::{Device, PointInfo};
use crate::digital::{DigitalLines, LineId};
use crate::process::{Direction, IoError, PointKind};
use std::borrow::Cow;

/// One configured digital point on a GPIO chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpioPoint {
    /// Its name, unique on the device (what `[axes.io]` binds to).
    pub name: String,
    /// The line's offset on the chip, counting from 0 (as `gpioinfo` lists).
    pub line: u32,
    /// Read (an e-stop) or driven (a stack light) by the scan.
    pub direction: Direction,
    /// Active when the line is low (a normally-closed e-stop contact, a
    /// relay board that switches on low).
    pub active_low: bool,
}

impl GpioPoint {
    /// The level on the line for `active`.
    fn level(&self, active: bool) -> bool {
        active != self.active_low
    }

    /// What `err`, raised while `doing` this point's line, becomes: the same
    /// kind of error, now naming device `id`, the line and the point.
    fn error(&self, id: &str, doing: &str, err: IoError) -> IoError {
        let at = format!("{doing} line {} ('{}')", self.line, self.name);
        match err {
            IoError::Timeout { timeout_ms, .. } => IoError::Timeout {
                device: format!("{id} ({at})"),
                timeout_ms,
            },
            IoError::Disconnected { device, reason } => IoError::Disconnected {
                device: id.to_string(),
                reason: format!("{at} on {device}: {reason}"),
            },
            IoError::DeviceFault { device, code, detail } => IoError::DeviceFault {
                device: id.to_string(),
                code,
                detail: format!("{at} on {device}: {detail}"),
            },
        }
    }
}

/// A field device made of digital points on one set of [`DigitalLines`].
///
/// The image holds one value per point, in the order of the points given to
/// [`GpioDevice::new`].
pub struct GpioDevice<L> {
    /// Device id from the config, named in every error.
    id: String,
    /// The configured points, in image order.
    points: Vec<GpioPoint>,
    /// Their [`PointInfo`]s, built once: [`Device::points`] hands out a slice.
    info: Vec<PointInfo>,
    /// Per point, the level last written to its line; `None` before the
    /// first write and after a failed one, so the next scan writes it.
    /// Always `None` for inputs.
    written: Vec<Option<bool>>,
    lines: L,
}

impl<L: DigitalLines> GpioDevice<L> {
    /// A device `id` with `points` over `lines`.
    ///
    /// Refuses two points on one line and two points with one name, listing
    /// every clash in the message.
    pub fn new(id: &str, points: Vec<GpioPoint>, lines: L) -> Result<Self, String> {
        let mut problems = Vec::new();
        for (i, a) in points.iter().enumerate() {
            for b in &points[i + 1..] {
                if a.line == b.line {
                    problems.push(format!(
                        "points '{}' and '{}' are both on line {}: a line carries one point, give each its own line",
                        a.name, b.name, a.line
                    ));
                }
                if a.name == b.name {
                    problems.push(format!(
                        "two points are named '{}' (lines {} and {}): point names must be unique on a device, rename one",
                        a.name, a.line, b.line
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(format!("GPIO device '{id}': {}", problems.join("; ")));
        }
        let info = points
            .iter()
            .map(|p| PointInfo {
                name: Cow::Owned(p.name.clone()),
                direction: p.direction,
                kind: PointKind::Bool,
                unit: Cow::Borrowed(""),
            })
            .collect();
        Ok(Self {
            id: id.to_string(),
            written: vec![None; points.len()],
            points,
            info,
            lines,
        })
    }
}

impl<L: DigitalLines> Device for GpioDevice<L> {
    fn points(&self) -> &[PointInfo] {
        &self.info
    }

    /// Write the outputs that changed (all of them on the first scan), then
    /// read every input. Stops at the first failing line; the inputs then
    /// keep their last values.
    ///
    /// # Panics
    ///
    /// If `image` does not have one value per point.
    fn scan(&mut self, image: &mut [f64], _now_ns: i64) -> Result<(), IoError> {
        assert_eq!(
            image.len(),
            self.points.len(),
            "GPIO device '{}': the image must have one value per point",
            self.id
        );
        for ((p, &v), written) in self.points.iter().zip(image.iter()).zip(&mut self.written) {
            if p.direction != Direction::Output {
                continue;
            }
            let level = p.level(v != 0.0 && !v.is_nan());
            if *written == Some(level) {
                continue;
            }
            *written = None;
            self.lines
                .set(LineId(p.line), level)
                .map_err(|e| p.error(&self.id, "writing", e))?;
            *written = Some(level);
        }
        for (p, v) in self.points.iter().zip(image.iter_mut()) {
            if p.direction != Direction::Input {
                continue;
            }
            let level = self
                .lines
                .get(LineId(p.line))
                .map_err(|e| p.error(&self.id, "reading", e))?;
            *v = if level != p.active_low { 1.0 } else { 0.0 };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimLines;
    use std::sync::{Arc, Mutex};

    fn point(name: &str, line: u32, direction: Direction, active_low: bool) -> GpioPoint {
        GpioPoint {
            name: name.into(),
            line,
            direction,
            active_low,
        }
    }

    /// What a [`Probe`] shares with its test.
    struct ProbeState {
        /// The fake chip; the test drives inputs with `sim.set`.
        sim: SimLines,
        /// Every `set` that reached the chip, in order.
        sets: Vec<(u32, bool)>,
        /// A line whose every access fails.
        broken: Option<u32>,
    }

    /// [`SimLines`] shared with the test, which drives its inputs, counts
    /// the writes and can break a line.
    #[derive(Clone)]
    struct Probe(Arc<Mutex<ProbeState>>);

    impl Probe {
        fn new(count: u32) -> Self {
            Self(Arc::new(Mutex::new(ProbeState {
                sim: SimLines::new(count),
                sets: Vec::new(),
                broken: None,
            })))
        }

        fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
            self.0.lock().unwrap()
        }

        fn drive(&self, line: u32, high: bool) {
            self.state().sim.set(LineId(line), high).unwrap();
        }

        fn level(&self, line: u32) -> bool {
            self.state().sim.get(LineId(line)).unwrap()
        }

        fn broken_error(line: LineId) -> IoError {
            IoError::DeviceFault {
                device: "probe-chip".into(),
                code: 5,
                detail: format!("line {} gave EIO", line.0),
            }
        }
    }

    impl DigitalLines for Probe {
        fn set(&mut self, line: LineId, high: bool) -> Result<(), IoError> {
            let mut s = self.state();
            if s.broken == Some(line.0) {
                return Err(Self::broken_error(line));
            }
            s.sets.push((line.0, high));
            s.sim.set(line, high)
        }

        fn get(&self, line: LineId) -> Result<bool, IoError> {
            let s = self.state();
            if s.broken == Some(line.0) {
                return Err(Self::broken_error(line));
            }
            s.sim.get(line)
        }
    }

    #[test]
    fn points_are_bools_in_configuration_order() {
        let dev = GpioDevice::new(
            "panel",
            vec![
                point("estop", 4, Direction::Input, false),
                point("lamp_red", 17, Direction::Output, true),
            ],
            SimLines::new(32),
        )
        .unwrap();
        let p = dev.points();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].name.as_ref(), p[0].direction), ("estop", Direction::Input));
        assert_eq!((p[1].name.as_ref(), p[1].direction), ("lamp_red", Direction::Output));
        assert!(p.iter().all(|p| p.kind == PointKind::Bool && p.unit.is_empty()));
    }

    #[test]
    fn an_estop_line_reads_into_the_image_active_high_and_active_low() {
        let chip = Probe::new(8);
        let mut dev = GpioDevice::new(
            "panel",
            vec![
                point("estop", 2, Direction::Input, false),
                point("estop_nc", 3, Direction::Input, true),
            ],
            chip.clone(),
        )
        .unwrap();
        let mut image = [0.5; 2];

        dev.scan(&mut image, 0).unwrap();
        assert_eq!(image, [0.0, 1.0], "both lines low: the active-low one is pressed");

        chip.drive(2, true);
        chip.drive(3, true);
        dev.scan(&mut image, 1_000_000).unwrap();
        assert_eq!(image, [1.0, 0.0], "both lines high: the active-high one is pressed");
        assert!(chip.state().sets.is_empty(), "inputs are never written");
    }

    #[test]
    fn outputs_land_on_their_lines_and_are_written_only_on_change() {
        let chip = Probe::new(8);
        let mut dev = GpioDevice::new(
            "panel",
            vec![
                point("lamp_green", 5, Direction::Output, false),
                point("estop", 2, Direction::Input, false),
                point("relay", 6, Direction::Output, true),
            ],
            chip.clone(),
        )
        .unwrap();

        // First scan: every output is written, even at its current level.
        let mut image = [0.0, 0.0, 0.0];
        dev.scan(&mut image, 0).unwrap();
        assert_eq!(chip.state().sets, [(5, false), (6, true)], "relay off = line high");

        // Nothing changed: no writes.
        for i in 1..100 {
            dev.scan(&mut image, i * 1_000_000).unwrap();
        }
        assert_eq!(chip.state().sets.len(), 2);

        // Only the relay changes (any non-zero value is active).
        image[2] = 5000.0;
        dev.scan(&mut image, 100_000_000).unwrap();
        dev.scan(&mut image, 101_000_000).unwrap();
        assert_eq!(chip.state().sets[2..], [(6, false)]);
        assert!(!chip.level(6), "active-low relay on = line low");

        image[0] = 1.0;
        dev.scan(&mut image, 102_000_000).unwrap();
        assert_eq!(chip.state().sets[3..], [(5, true)]);
        assert!(chip.level(5));

        // NaN is not a command to switch on.
        image[0] = f64::NAN;
        dev.scan(&mut image, 103_000_000).unwrap();
        assert_eq!(chip.state().sets[4..], [(5, false)]);
        assert_eq!(image[2], 5000.0, "outputs are left as written");
    }

    #[test]
    fn a_failing_line_gives_an_io_error_naming_the_device_and_the_line() {
        let chip = Probe::new(8);
        let mut dev = GpioDevice::new(
            "panel",
            vec![
                point("estop", 2, Direction::Input, false),
                point("lamp_red", 7, Direction::Output, false),
            ],
            chip.clone(),
        )
        .unwrap();
        let mut image = [0.0, 1.0];

        chip.state().broken = Some(2);
        let err = dev.scan(&mut image, 0).unwrap_err();
        let IoError::DeviceFault { device, code, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((device.as_str(), *code), ("panel", 5));
        let msg = err.to_string();
        assert!(msg.contains("reading line 2 ('estop') on probe-chip"), "{msg}");

        // A write that fails is retried on the next scan, even unchanged.
        chip.state().broken = Some(7);
        chip.state().sets.clear();
        dev.scan(&mut image, 1_000_000).unwrap(); // written before the break
        image[1] = 0.0;
        let msg = dev.scan(&mut image, 2_000_000).unwrap_err().to_string();
        assert!(
            msg.contains("device panel") && msg.contains("writing line 7 ('lamp_red')"),
            "{msg}"
        );
        chip.state().broken = None;
        dev.scan(&mut image, 3_000_000).unwrap();
        assert_eq!(chip.state().sets, [(7, false)]);
    }

    #[test]
    fn a_line_the_chip_lacks_is_named_in_the_error() {
        let mut dev = GpioDevice::new(
            "panel",
            vec![point("estop", 9, Direction::Input, false)],
            SimLines::new(4),
        )
        .unwrap();
        let msg = dev.scan(&mut [0.0], 0).unwrap_err().to_string();
        assert!(msg.contains("device panel"), "{msg}");
        assert!(
            msg.contains("reading line 9 ('estop') on sim-gpio: line 9 does not exist"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_lines_and_names_are_refused_with_every_clash_named() {
        let err = GpioDevice::new(
            "panel",
            vec![
                point("estop", 4, Direction::Input, false),
                point("lamp", 4, Direction::Output, false),
                point("estop", 5, Direction::Input, true),
            ],
            SimLines::new(8),
        )
        .err()
        .unwrap();
        assert!(err.starts_with("GPIO device 'panel': "), "{err}");
        assert!(err.contains("points 'estop' and 'lamp' are both on line 4"), "{err}");
        assert!(err.contains("two points are named 'estop' (lines 4 and 5)"), "{err}");

        let ok = GpioDevice::new(
            "panel",
            vec![
                point("estop", 4, Direction::Input, false),
                point("lamp", 5, Direction::Output, false),
            ],
            SimLines::new(8),
        );
        assert!(ok.is_ok());
    }
}
