//! Field devices: what the node's I/O scan talks to.
//!
//! A [`Device`] has named points (its [`PointInfo`] list) and exchanges them
//! in one [`Device::scan`]: the outputs in its image are written, then its
//! inputs are read into the image. Axes bind their program's signals
//! ([`Signal`]) to points by name in the config (`[axes.io]`); the scan
//! copies values between the devices' images and each axis' process image.
//! A Modbus or GPIO driver is a device with the points its config lists; a
//! [`ProcessIo`] that produces one axis' whole image (the simulated plant)
//! becomes a device with [`AxisImageDevice`].

use crate::camera::CaptureTrigger;
use crate::process::{Direction, IoError, LineOutputs, PointKind, ProcessIo, Signal};
use std::borrow::Cow;

/// One named point of a device.
#[derive(Clone, Debug, PartialEq)]
pub struct PointInfo {
    /// Its name, unique on the device (what `[axes.io]` names).
    pub name: Cow<'static, str>,
    /// Read or written by the scan.
    pub direction: Direction,
    /// What its value means.
    pub kind: PointKind,
    /// Engineering unit (empty for bools and counts).
    pub unit: Cow<'static, str>,
}

/// A field device, scanned by the node's I/O thread.
///
/// `image` has one value per point, in the order of [`Device::points`]:
/// output values are set before the scan, input values are filled by it
/// (on an error they keep their last value, and the axes bound to them get
/// no new process image: their inputs go stale). `now_ns` is the scan time
/// on the node clock; drivers never read a clock themselves.
pub trait Device: Send {
    /// Its points, in image order. Fixed for the device's life.
    fn points(&self) -> &[PointInfo];

    /// Write the outputs of `image`, then read its inputs.
    fn scan(&mut self, image: &mut [f64], now_ns: i64) -> Result<(), IoError>;

    /// Whether input `point`'s value is older than its bound at `now_ns`: a
    /// polled device (Modbus) whose samples stopped arriving. The axes bound
    /// to a stale point get a stale image and take the safe state at once.
    /// A device scanned synchronously is never stale (the default): its
    /// scan fails instead.
    fn is_stale(&self, point: usize, now_ns: i64) -> bool {
        let _ = (point, now_ns);
        false
    }

    /// Hand the capture triggers seen since the last scan to `sink`, oldest
    /// first. A device that sees no parts has none (the default).
    fn take_triggers(&mut self, sink: &mut dyn FnMut(CaptureTrigger)) {
        let _ = sink;
    }
}

/// The points of an axis' whole process image: one per [`Signal`], named
/// as the signal, in [`Signal::ALL`] order.
pub static AXIS_IMAGE_POINTS: [PointInfo; 9] = {
    const fn point(s: Signal) -> PointInfo {
        PointInfo {
            name: Cow::Borrowed(s.name()),
            direction: s.direction(),
            kind: s.kind(),
            unit: Cow::Borrowed(s.unit()),
        }
    }
    let a = Signal::ALL;
    [
        point(a[0]),
        point(a[1]),
        point(a[2]),
        point(a[3]),
        point(a[4]),
        point(a[5]),
        point(a[6]),
        point(a[7]),
        point(a[8]),
    ]
};

/// A [`ProcessIo`] (one axis' whole image, e.g. [`crate::sim::SimLine`]) as a
/// device whose points are [`AXIS_IMAGE_POINTS`].
pub struct AxisImageDevice<P> {
    io: P,
}

impl<P: ProcessIo> AxisImageDevice<P> {
    /// Wrap `io`.
    pub fn new(io: P) -> Self {
        Self { io }
    }
}

impl<P: ProcessIo> Device for AxisImageDevice<P> {
    fn points(&self) -> &[PointInfo] {
        &AXIS_IMAGE_POINTS
    }

    fn scan(&mut self, image: &mut [f64], now_ns: i64) -> Result<(), IoError> {
        let mut out = LineOutputs {
            stamp_ns: now_ns,
            ..LineOutputs::SAFE
        };
        for s in Signal::ALL {
            // NaN: no axis drives this output; it keeps its safe value.
            if s.direction() == Direction::Output && !image[s.index()].is_nan() {
                out.set(s, image[s.index()]);
            }
        }
        let inputs = self.io.scan(&out, now_ns)?;
        for s in Signal::ALL {
            if s.direction() == Direction::Input {
                image[s.index()] = inputs.get(s);
            }
        }
        Ok(())
    }

    fn take_triggers(&mut self, sink: &mut dyn FnMut(CaptureTrigger)) {
        self.io.take_triggers(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{PlantParams, SimLine};

    #[test]
    fn the_simulated_plant_as_a_device_reads_what_its_outputs_command() {
        let mut dev = AxisImageDevice::new(SimLine::warm(PlantParams::default(), 1, vec![], 12.0));
        let names: Vec<&str> = dev.points().iter().map(|p| p.name.as_ref()).collect();
        assert_eq!(names[0], "feed_ppm");
        assert_eq!(names[8], "weld_current_cmd_a");
        let mut image = [0.0; 9];
        image[Signal::FeedPpmCmd.index()] = 12.0;
        image[Signal::WeldEnable.index()] = 1.0;
        image[Signal::WeldCurrentCmdA.index()] = 5000.0;
        let mut welds = 0;
        for i in 0..20_000 {
            dev.scan(&mut image, i * 1_000_000).unwrap();
            dev.take_triggers(&mut |_| welds += 1);
        }
        assert!((image[Signal::FeedPpm.index()] - 12.0).abs() < 1.0, "{image:?}");
        assert!(image[Signal::WeldCurrentA.index()] > 4000.0, "{image:?}");
        assert!(image[Signal::PartsTotal.index()] >= 2.0, "{image:?}");
        assert!(welds > 0);
        assert_eq!(image[Signal::FeedPpmCmd.index()], 12.0, "outputs are left as written");
    }
}
