//! The I/O scan: devices ↔ bound points ↔ each axis' process image.
//!
//! [`LineScan::scan`] is one scan at `now` with no clock or sleep of its
//! own; [`run`] calls it every period on the `triad-io` thread, at a
//! real-time priority just below the control thread's.

use crate::clock::{Clock, monotonic_ns, sleep_until_mono};
use crate::config::IoBinding;
use crate::control::rt;
use rtrb::{Consumer, Producer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use triad_hw::{CaptureTrigger, Device, Direction, LineInputs, LineOutputs, Signal};

/// Figures of one axis in the I/O scan.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Frames that did not fit the weld ring (lost before inspection).
    pub welds_dropped: AtomicU64,
    /// Clock time of the axis' first scan, ns (fault times are relative to it).
    pub plant_start_ns: AtomicI64,
    /// Scans in which a device this axis is bound to failed (its program
    /// got no new image) or a bound input was stale (its program got an
    /// image flagged stale and took the safe state).
    pub scans_failed: AtomicU64,
}

/// One axis' side of the scan: where its signals live and its ends of the
/// rings (the process image to and from the control thread, the capture
/// triggers to its cell's inspection).
pub struct AxisIo {
    /// Its signals' points.
    pub binding: IoBinding,
    /// Process image to the axis' program.
    pub inputs: Producer<LineInputs>,
    /// The program's outputs.
    pub outputs: Consumer<LineOutputs>,
    /// Parts to image.
    pub triggers: Producer<CaptureTrigger>,
    /// Its figures.
    pub stats: Arc<IoStats>,
}

/// The line's devices and axes, scanned together.
pub struct LineScan {
    ids: Vec<String>,
    devices: Vec<Box<dyn Device>>,
    images: Vec<Vec<f64>>,
    /// The device's scan failed last time (its failure is logged once).
    failing: Vec<bool>,
    /// Which axis a device's capture triggers go to.
    parts_of: Vec<Option<usize>>,
    axes: Vec<AxisIo>,
    last_out: Vec<LineOutputs>,
    seq: Vec<u64>,
    scanned: bool,
}

impl LineScan {
    /// Scan `devices` (id, driver) for `axes` (their bindings index
    /// `devices`).
    pub fn new(devices: Vec<(String, Box<dyn Device>)>, axes: Vec<AxisIo>) -> Self {
        let (ids, devices): (Vec<String>, Vec<Box<dyn Device>>) = devices.into_iter().unzip();
        // Outputs no axis drives stay NaN ("not commanded"): a driver writes
        // nothing for them (a Modbus link skips them, GPIO drives them off).
        let images = devices
            .iter()
            .map(|d| {
                d.points()
                    .iter()
                    .map(|p| {
                        if p.direction == Direction::Output {
                            f64::NAN
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        let parts_of = (0..devices.len())
            .map(|d| {
                axes.iter()
                    .position(|a| a.binding.point(Signal::PartsTotal).device == d)
            })
            .collect();
        Self {
            ids,
            failing: vec![false; devices.len()],
            devices,
            images,
            parts_of,
            last_out: vec![LineOutputs::SAFE; axes.len()],
            seq: vec![0; axes.len()],
            axes,
            scanned: false,
        }
    }

    /// One scan at `now_ns`: every axis' latest outputs to their points,
    /// every device scanned, every axis whose devices answered gets its
    /// process image, every part its cell's trigger.
    pub fn scan(&mut self, now_ns: i64) {
        for (a, last) in self.axes.iter_mut().zip(&mut self.last_out) {
            while let Ok(o) = a.outputs.pop() {
                *last = o;
            }
            for s in Signal::ALL.into_iter().filter(|s| s.direction() == Direction::Output) {
                let r = a.binding.point(s);
                self.images[r.device][r.point] = last.get(s);
            }
            if !self.scanned {
                a.stats.plant_start_ns.store(now_ns, Relaxed);
            }
        }
        self.scanned = true;
        for (d, dev) in self.devices.iter_mut().enumerate() {
            match dev.scan(&mut self.images[d], now_ns) {
                Ok(()) => {
                    if std::mem::take(&mut self.failing[d]) {
                        tracing::info!(device = %self.ids[d], "device answers again");
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.failing[d], true) {
                        tracing::warn!(device = %self.ids[d], error = %e, "device scan failed; the axes bound to it get no new inputs until it answers");
                    }
                    continue;
                }
            }
            let Some(owner) = self.parts_of[d] else {
                dev.take_triggers(&mut |_| {});
                continue;
            };
            let a = &mut self.axes[owner];
            let (triggers, stats) = (&mut a.triggers, &a.stats);
            dev.take_triggers(&mut |t| {
                if triggers.push(t).is_err() {
                    stats.welds_dropped.fetch_add(1, Relaxed);
                }
            });
        }
        for (i, a) in self.axes.iter_mut().enumerate() {
            let inputs = Signal::ALL.into_iter().filter(|s| s.direction() == Direction::Input);
            if inputs.clone().any(|s| self.failing[a.binding.point(s).device]) {
                a.stats.scans_failed.fetch_add(1, Relaxed);
                continue;
            }
            self.seq[i] += 1;
            let mut image = LineInputs {
                stamp_ns: now_ns,
                scan_seq: self.seq[i],
                ..LineInputs::default()
            };
            for s in inputs {
                let r = a.binding.point(s);
                image.set(s, self.images[r.device][r.point]);
                image.stale |= self.devices[r.device].is_stale(r.point, now_ns);
            }
            if image.stale {
                a.stats.scans_failed.fetch_add(1, Relaxed);
            }
            let _ = a.inputs.push(image);
        }
    }
}

/// The I/O scan thread: [`LineScan::scan`] every `period` until `stop`.
pub fn run(
    mut line: LineScan,
    clock: Arc<dyn Clock>,
    period: Duration,
    rt_priority: Option<i32>,
    stop: Arc<AtomicBool>,
) {
    // The scan feeds the control loop: it runs real-time too, just below it.
    let st = rt::prepare_current_thread(rt_priority, None);
    if let Err(e) = &st.fifo {
        tracing::debug!(reason = %e, "I/O scan at normal priority");
    }
    let period_ns = period.as_nanos() as i64;
    let mut next = monotonic_ns() + period_ns;
    while !stop.load(Relaxed) {
        sleep_until_mono(next);
        next += period_ns;
        let behind = monotonic_ns() - next;
        if behind > period_ns {
            next += (behind / period_ns) * period_ns;
        }
        line.scan(clock.now_ns());
    }
    // A last scan hands the programs' final outputs (the safe state they
    // push when they stop) to the devices.
    line.scan(clock.now_ns());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IoBinding, PointRef};
    use std::sync::atomic::AtomicBool;
    use triad_hw::sim::{PlantParams, SimLine};
    use triad_hw::{AxisImageDevice, IoError, PointInfo};

    /// A device that stops answering while `down` is set (a cable pulled).
    struct Unplugged<D> {
        inner: D,
        down: Arc<AtomicBool>,
    }

    impl<D: Device> Device for Unplugged<D> {
        fn points(&self) -> &[PointInfo] {
            self.inner.points()
        }
        fn scan(&mut self, image: &mut [f64], now_ns: i64) -> Result<(), IoError> {
            if self.down.load(Relaxed) {
                return Err(IoError::Timeout {
                    device: "welder_b".into(),
                    timeout_ms: 50,
                });
            }
            self.inner.scan(image, now_ns)
        }
        fn take_triggers(&mut self, sink: &mut dyn FnMut(CaptureTrigger)) {
            self.inner.take_triggers(sink)
        }
    }

    struct Axis {
        inputs: Consumer<LineInputs>,
        outputs: Producer<LineOutputs>,
        triggers: Consumer<CaptureTrigger>,
        stats: Arc<IoStats>,
    }

    fn axis(device: usize) -> (AxisIo, Axis) {
        let (itx, irx) = rtrb::RingBuffer::new(64);
        let (otx, orx) = rtrb::RingBuffer::new(64);
        let (ttx, trx) = rtrb::RingBuffer::new(1024);
        let stats = Arc::new(IoStats::default());
        (
            AxisIo {
                binding: IoBinding(std::array::from_fn(|point| PointRef { device, point })),
                inputs: itx,
                outputs: orx,
                triggers: ttx,
                stats: stats.clone(),
            },
            Axis {
                inputs: irx,
                outputs: otx,
                triggers: trx,
                stats,
            },
        )
    }

    fn plant(seed: u64) -> Box<dyn Device> {
        Box::new(AxisImageDevice::new(SimLine::warm(
            PlantParams::default(),
            seed,
            vec![],
            12.0,
        )))
    }

    #[test]
    fn a_device_that_stops_answering_leaves_only_its_axis_without_inputs() {
        let down = Arc::new(AtomicBool::new(false));
        let flaky: Box<dyn Device> = Box::new(Unplugged {
            inner: AxisImageDevice::new(SimLine::warm(PlantParams::default(), 2, vec![], 12.0)),
            down: down.clone(),
        });
        let (io_a, mut a) = axis(0);
        let (io_b, mut b) = axis(1);
        let mut line = LineScan::new(
            vec![("welder_a".into(), plant(1)), ("welder_b".into(), flaky)],
            vec![io_a, io_b],
        );
        let run = LineOutputs {
            stamp_ns: 0,
            feed_ppm_cmd: 12.0,
            weld_enable: true,
            weld_current_cmd_a: 5000.0,
        };
        // 10 s of scans from `from` ms: the last image of each axis, axis a's welds.
        let scan = |line: &mut LineScan, from: i64, a: &mut Axis, b: &mut Axis| {
            let (mut last_a, mut last_b, mut welds_a) = (None::<LineInputs>, None::<LineInputs>, 0);
            for ms in from..from + 10_000 {
                let _ = a.outputs.push(run);
                let _ = b.outputs.push(run);
                line.scan(ms * 1_000_000);
                while let Ok(i) = a.inputs.pop() {
                    last_a = Some(i);
                }
                while let Ok(i) = b.inputs.pop() {
                    last_b = Some(i);
                }
                while a.triggers.pop().is_ok() {
                    welds_a += 1;
                }
            }
            (last_a.map(|i| i.scan_seq), last_b.map(|i| i.scan_seq), last_a, welds_a)
        };
        let (seq_a, seq_b, a1, welds_a) = scan(&mut line, 0, &mut a, &mut b);
        assert_eq!((seq_a, seq_b), (Some(10_000), Some(10_000)));
        assert!(
            a1.unwrap().weld_current_a > 4000.0,
            "the axis' outputs reached its device: {a1:?}"
        );
        assert!(
            welds_a > 0 && b.triggers.pop().is_ok(),
            "each device's parts go to its axis"
        );

        down.store(true, Relaxed);
        let (seq_a, seq_b, _, _) = scan(&mut line, 10_000, &mut a, &mut b);
        assert_eq!(seq_a, Some(20_000), "the other axis keeps its scan");
        assert_eq!(seq_b, None, "no image from a device that did not answer");
        assert_eq!(b.stats.scans_failed.load(Relaxed), 10_000);
        assert_eq!(a.stats.scans_failed.load(Relaxed), 0);

        down.store(false, Relaxed);
        let (_, seq_b, _, _) = scan(&mut line, 20_000, &mut a, &mut b);
        assert_eq!(seq_b, Some(20_000), "back once it answers, counting on");
    }

    /// A fake GPIO chip the test drives: lines behind a shared lock.
    #[derive(Clone)]
    struct Panel(Arc<std::sync::Mutex<triad_hw::sim::SimLines>>);

    impl triad_hw::DigitalLines for Panel {
        fn set(&mut self, line: triad_hw::LineId, high: bool) -> Result<(), IoError> {
            self.0.lock().unwrap().set(line, high)
        }
        fn get(&self, line: triad_hw::LineId) -> Result<bool, IoError> {
            self.0.lock().unwrap().get(line)
        }
    }

    #[test]
    fn an_estop_on_a_gpio_line_takes_the_safe_state_in_the_next_cycle() {
        use crate::control::program::{AxisLimits, AxisProgram, SafeReason};
        use triad_hw::{DigitalLines, Direction as D, GpioDevice, GpioPoint, LineId};
        let panel = Panel(Arc::new(std::sync::Mutex::new(triad_hw::sim::SimLines::new(32))));
        // A normally-closed contact: the line is high while the button is out.
        panel.0.lock().unwrap().set(LineId(17), true).unwrap();
        let estop = GpioPoint {
            name: "estop".into(),
            line: 17,
            direction: D::Input,
            active_low: true,
        };
        let gpio: Box<dyn Device> = Box::new(GpioDevice::new("panel", vec![estop], panel.clone()).unwrap());
        let (mut io, mut a) = axis(0);
        io.binding.0[Signal::Estop.index()] = PointRef { device: 1, point: 0 };
        let mut line = LineScan::new(vec![("welder".into(), plant(1)), ("panel".into(), gpio)], vec![io]);
        let mut program = AxisProgram::new(
            AxisLimits {
                nominal_ppm: 12.0,
                min_ppm: 1.0,
                max_ppm: 15.0,
                weld_current_a: 5000.0,
                start_running: true,
                input_stale_ns: 50_000_000,
                watchdog_ns: 100_000_000,
            },
            0,
        );
        let mut cycle = |line: &mut LineScan, ms: i64| {
            line.scan(ms * 1_000_000);
            while let Ok(i) = a.inputs.pop() {
                program.handle_inputs(&i, ms * 1_000_000);
            }
            let (out, ev) = program.poll_outputs(ms * 1_000_000, 0);
            let _ = a.outputs.push(out);
            (out, ev)
        };
        for ms in 0..100 {
            let (out, ev) = cycle(&mut line, ms);
            assert!(ev.is_none() && out.weld_enable, "runs while the contact is closed");
        }
        // Pressed: the contact opens, the line goes low.
        panel.0.lock().unwrap().set(LineId(17), false).unwrap();
        let (out, ev) = cycle(&mut line, 100);
        assert_eq!(
            ev,
            Some(crate::control::program::ControlEvent::SafeStateEntered {
                reason: SafeReason::EStop
            })
        );
        assert!(!out.weld_enable && out.feed_ppm_cmd == 0.0);
        // The safe outputs reach the welder at the next scan.
        line.scan(101_000_000);
        let welder = &line.images[0];
        assert_eq!(welder[Signal::WeldEnable.index()], 0.0);
        assert_eq!(welder[Signal::FeedPpmCmd.index()], 0.0);
    }
}
