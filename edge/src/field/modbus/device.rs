//! A Modbus device as the I/O scan sees it: its points' latest values,
//! their age, and the capture triggers its weld counter gives.
//!
//! [`ModbusDevice::scan`] never waits on the network: it copies the values
//! the link task last read (see [`super::link`]) and hands it the outputs.
//! An input older than its bound is stale ([`Device::is_stale`]); the scan
//! then gives the axes bound to it a stale image and their programs take
//! the safe state in that cycle.

use super::image::{NEVER, SharedImage};
use crate::config::modbus::{Capture, ModbusConfig};
use std::sync::Arc;
use triad_hw::{CaptureTrigger, Device, Direction, IoError, PointInfo};

/// Triggers one scan hands over at most; a larger jump of the counter (the
/// link was down while parts passed) images the latest welds only.
pub const MAX_TRIGGERS_PER_SCAN: usize = 16;

/// Capture triggers from a weld counter.
struct Counter {
    capture: Capture,
    /// The counter's last value and the stamp of the sample it came from.
    last: Option<(u64, i64)>,
    pending: [Option<CaptureTrigger>; MAX_TRIGGERS_PER_SCAN],
    /// Welds not imaged because the counter jumped too far at once.
    skipped: u64,
}

impl Counter {
    /// Look at the counter's latest sample; queue a trigger per new weld.
    fn update(&mut self, shared: &SharedImage) {
        let stamp = shared.stamp(self.capture.counter);
        let value = shared.value(self.capture.counter);
        if stamp == NEVER || !value.is_finite() || value < 0.0 {
            return;
        }
        let count = value as u64;
        let last = match self.last {
            Some((_, s)) if s == stamp => return,
            Some((last, _)) => last,
            None => count,
        };
        self.last = Some((count, stamp));
        if count <= last {
            // No weld, or the device restarted its counter: count on from here.
            return;
        }
        let new = count - last;
        let take = new.min(MAX_TRIGGERS_PER_SCAN as u64);
        self.skipped += new - take;
        let temp = self.capture.temperature.map_or(0.0, |t| shared.value(t));
        let per_part = u64::from(self.capture.per_part);
        for (slot, weld) in self.pending.iter_mut().zip(count - take..count) {
            *slot = Some(CaptureTrigger {
                module_serial: weld / per_part + 1,
                weld_index: (weld % per_part) as u32,
                stamp_ns: stamp,
                weld_temp_c: temp,
            });
        }
    }
}

/// One Modbus device on the I/O scan.
pub struct ModbusDevice {
    cfg: Arc<ModbusConfig>,
    shared: Arc<SharedImage>,
    counter: Option<Counter>,
}

impl ModbusDevice {
    /// The device of `cfg`, sharing `shared` with its link task.
    pub fn new(cfg: Arc<ModbusConfig>, shared: Arc<SharedImage>) -> Self {
        let counter = cfg.capture.clone().map(|capture| Counter {
            capture,
            last: None,
            pending: [None; MAX_TRIGGERS_PER_SCAN],
            skipped: 0,
        });
        Self { cfg, shared, counter }
    }

    /// Welds not imaged because the counter jumped by more than
    /// [`MAX_TRIGGERS_PER_SCAN`] between two scans.
    pub fn welds_skipped(&self) -> u64 {
        self.counter.as_ref().map_or(0, |c| c.skipped)
    }
}

impl Device for ModbusDevice {
    fn points(&self) -> &[PointInfo] {
        &self.cfg.infos
    }

    fn scan(&mut self, image: &mut [f64], now_ns: i64) -> Result<(), IoError> {
        for (i, p) in self.cfg.points.iter().enumerate() {
            match p.direction {
                Direction::Output => self.shared.set(i, image[i], now_ns),
                Direction::Input => image[i] = self.shared.value(i),
            }
        }
        if let Some(c) = &mut self.counter {
            c.update(&self.shared);
        }
        Ok(())
    }

    fn is_stale(&self, point: usize, now_ns: i64) -> bool {
        let p = &self.cfg.points[point];
        let stamp = self.shared.stamp(point);
        p.direction == Direction::Input && (stamp == NEVER || now_ns.saturating_sub(stamp) > p.stale_ns)
    }

    fn take_triggers(&mut self, sink: &mut dyn FnMut(CaptureTrigger)) {
        if let Some(c) = &mut self.counter {
            for t in c.pending.iter_mut().filter_map(Option::take) {
                sink(t);
            }
        }
    }
}
