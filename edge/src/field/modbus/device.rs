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
use triad_hw::modbus::DataType;
use triad_hw::{CaptureTrigger, Device, Direction, IoError, PointInfo};

/// Triggers one scan hands over at most; a larger jump of the counter (the
/// link was down while parts passed) images the latest welds only.
pub const MAX_TRIGGERS_PER_SCAN: usize = 16;

/// Capture triggers from a weld counter.
struct Counter {
    capture: Capture,
    /// Values of an unsigned counter wrap at this (2^16 for u16, 2^32 for
    /// u32); `None` for a type that does not wrap.
    modulus: Option<u64>,
    /// The counter's last raw value and the stamp of the sample it came from.
    last: Option<(u64, i64)>,
    /// Welds counted: starts at the counter's first value (so that weld
    /// numbers match the device's own numbering) and only grows, across a
    /// wrap or a restart of the device's counter.
    total: u64,
    pending: [Option<CaptureTrigger>; MAX_TRIGGERS_PER_SCAN],
    /// Welds not imaged because the counter jumped too far at once.
    skipped: u64,
}

impl Counter {
    fn new(capture: Capture, ty: DataType) -> Self {
        let modulus = match ty {
            DataType::U16 => Some(1 << 16),
            DataType::U32 => Some(1 << 32),
            _ => None,
        };
        Self {
            capture,
            modulus,
            last: None,
            total: 0,
            pending: [None; MAX_TRIGGERS_PER_SCAN],
            skipped: 0,
        }
    }

    /// Welds between two raw values: the difference modulo the counter's
    /// range for a wrapping counter; 0 for a counter that went back (the
    /// device restarted it) or leapt by more than half its range.
    fn welds_between(&self, last: u64, now: u64) -> u64 {
        match self.modulus {
            Some(m) => {
                let d = now.wrapping_sub(last) % m;
                if d < m / 2 { d } else { 0 }
            }
            None => now.saturating_sub(last),
        }
    }

    /// Look at the counter's latest sample; queue a trigger per new weld.
    fn update(&mut self, shared: &SharedImage) {
        let stamp = shared.stamp(self.capture.counter);
        let value = shared.value(self.capture.counter);
        if stamp == NEVER || !value.is_finite() || value < 0.0 {
            return;
        }
        let raw = value as u64;
        let new = match self.last {
            Some((_, s)) if s == stamp => return,
            Some((last, _)) => self.welds_between(last, raw),
            None => {
                self.total = raw;
                0
            }
        };
        self.last = Some((raw, stamp));
        if new == 0 {
            return;
        }
        let end = self.total + new;
        let take = new.min(MAX_TRIGGERS_PER_SCAN as u64);
        self.skipped += new - take;
        let temp = self.capture.temperature.map_or(0.0, |t| shared.value(t));
        let per_part = u64::from(self.capture.per_part);
        for (slot, weld) in self.pending.iter_mut().zip(end - take..end) {
            *slot = Some(CaptureTrigger {
                module_serial: weld / per_part + 1,
                weld_index: (weld % per_part) as u32,
                stamp_ns: stamp,
                weld_temp_c: temp,
            });
        }
        self.total = end;
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
        let counter = cfg
            .capture
            .clone()
            .map(|c| Counter::new(c.clone(), cfg.points[c.counter].ty));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(ty: DataType) -> (Counter, SharedImage) {
        let c = Capture {
            counter: 0,
            per_part: 4,
            temperature: None,
        };
        (Counter::new(c, ty), SharedImage::new(1))
    }

    /// The weld numbers of the triggers after the counter reads `v`.
    fn step(c: &mut Counter, sh: &SharedImage, v: f64, stamp: i64) -> Vec<(u64, u32)> {
        sh.set(0, v, stamp);
        c.update(sh);
        c.pending
            .iter_mut()
            .filter_map(Option::take)
            .map(|t| (t.module_serial, t.weld_index))
            .collect()
    }

    #[test]
    fn a_weld_counter_wraps_and_restarts_without_losing_or_reusing_a_weld_number() {
        let (mut c, sh) = counter(DataType::U16);
        assert!(
            step(&mut c, &sh, 65534.0, 1).is_empty(),
            "the first value sets the origin"
        );
        // 65534 -> 65535 -> (wrap) 0 -> 1: three welds, numbered on.
        assert_eq!(step(&mut c, &sh, 1.0, 2), [(16384, 2), (16384, 3), (16385, 0)]);
        // The device restarts its counter at 0: no weld, numbering goes on.
        assert!(step(&mut c, &sh, 0.0, 3).is_empty());
        assert_eq!(step(&mut c, &sh, 1.0, 4), [(16385, 1)]);
        assert!(step(&mut c, &sh, 1.0, 4).is_empty(), "the same sample counts once");
        let (mut c, sh) = counter(DataType::F32);
        step(&mut c, &sh, 10.0, 1);
        assert_eq!(step(&mut c, &sh, 12.0, 2).len(), 2);
        assert!(
            step(&mut c, &sh, 3.0, 3).is_empty(),
            "a float counter that went back: a restart"
        );
    }
}
