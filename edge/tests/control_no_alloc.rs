//! The control cycle allocates nothing: proven with a counting global
//! allocator that counts allocations made by the control thread only.
//!
//! Three checks: 20 000 calls of `run_cycle` with inputs, requests and
//! telemetry flowing through the real rings, with one axis and with three;
//! then the real timed loop
//! (`ControlRunner::run`, with its sleeps) for one second on its own thread.
//! And the I/O scan that feeds it, with a Modbus and a GPIO device bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use triad_edge::clock::{Clock, SystemClock};
use triad_edge::control::rings::control_rings;
use triad_edge::control::{
    AxisLimits, AxisLoop, AxisProgram, ControlRequest, ControlRunner, ControlStats, ControlTelemetry,
};
use triad_hw::LineInputs;
use triad_schemas::CommandAction;

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only adds thread-local counting,
// which itself never allocates (const-initialised Cells).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn count_allocs(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

fn limits() -> AxisLimits {
    AxisLimits {
        nominal_ppm: 12.0,
        min_ppm: 1.0,
        max_ppm: 15.0,
        weld_current_a: 5000.0,
        start_running: true,
        input_stale_ns: 20_000_000,
        watchdog_ns: 100_000_000,
    }
}

/// 20 000 cycles of a runner with `n` axes; the requests go to the last
/// axis. Returns the allocations counted and, per axis, the samples and
/// events it reported.
fn cycles_with_axes(n: usize) -> (u64, Vec<(u64, u64)>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (axes, mut ends): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (rings, ends) = control_rings();
            (AxisLoop::new(AxisProgram::new(limits(), clock.now_ns()), rings), ends)
        })
        .unzip();
    let stats = Arc::new(ControlStats::new());
    let mut runner = ControlRunner::new(axes, stats.clone(), clock.clone(), Duration::from_millis(1), 10);
    let mut counts = vec![(0u64, 0u64); n];
    let allocs = count_allocs(|| {
        for k in 0..20_000u64 {
            // The other threads' part, done here between cycles: the ring
            // pushes and pops themselves are part of what must not allocate.
            for e in ends.iter_mut() {
                let _ = e.inputs.push(LineInputs {
                    scan_seq: k,
                    feed_ppm: 12.0,
                    weld_temp_c: 180.0,
                    ..Default::default()
                });
            }
            let last = &mut ends[n - 1];
            if k % 1000 == 0 {
                let action = if k % 2000 == 0 {
                    CommandAction::Derate
                } else {
                    CommandAction::Resume
                };
                let _ = last.requests.push(ControlRequest {
                    handle: k,
                    action,
                    value: 8.0,
                });
            }
            if k == 5000 {
                let _ = last.requests.push(ControlRequest {
                    handle: k,
                    action: CommandAction::SetRate,
                    value: 99.0,
                });
            }
            runner.run_cycle(1000);
            for (e, (samples, events)) in ends.iter_mut().zip(counts.iter_mut()) {
                while let Ok(t) = e.telemetry.pop() {
                    match t {
                        ControlTelemetry::Sample(_) => *samples += 1,
                        ControlTelemetry::Event { .. } => *events += 1,
                    }
                }
                while e.outputs.pop().is_ok() {}
            }
        }
    });
    (allocs, counts)
}

#[test]
fn control_cycle_allocates_nothing() {
    let (n, counts) = cycles_with_axes(1);
    assert_eq!(n, 0, "the control cycle allocated {n} times in 20 000 cycles");
    assert_eq!(
        counts,
        [(2000, 21)],
        "(samples, events): 20 requests applied or rejected + 1 out-of-range rejection"
    );
}

#[test]
fn a_control_cycle_of_three_axes_allocates_nothing_and_keeps_them_apart() {
    let (n, counts) = cycles_with_axes(3);
    assert_eq!(
        n, 0,
        "the three-axis control cycle allocated {n} times in 20 000 cycles"
    );
    assert_eq!(
        counts,
        [(2000, 0), (2000, 0), (2000, 21)],
        "(samples, events) per axis: only the last axis got requests"
    );
}

#[test]
fn timed_control_loop_allocates_nothing_on_its_thread() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (rings, mut ends) = control_rings();
    let stats = Arc::new(ControlStats::new());
    let runner = ControlRunner::new(
        vec![AxisLoop::new(AxisProgram::new(limits(), clock.now_ns()), rings)],
        stats.clone(),
        clock,
        Duration::from_millis(1),
        50,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let control = std::thread::spawn(move || {
        let mut runner = Some(runner);
        let n = count_allocs(|| {
            runner = Some(runner.take().unwrap().run(&s2));
        });
        (n, runner)
    });
    // Feed it like the I/O scan does, from another thread, for one second.
    let feeder = std::thread::spawn(move || {
        let mut popped = 0u64;
        for k in 0..1000u64 {
            let _ = ends.inputs.push(LineInputs {
                scan_seq: k,
                feed_ppm: 12.0,
                weld_temp_c: 180.0,
                ..Default::default()
            });
            if k == 500 {
                let _ = ends.requests.push(ControlRequest {
                    handle: 1,
                    action: CommandAction::Derate,
                    value: 8.0,
                });
            }
            while ends.telemetry.pop().is_ok() {
                popped += 1;
            }
            while ends.outputs.pop().is_ok() {}
            std::thread::sleep(Duration::from_millis(1));
        }
        popped
    });
    let popped = feeder.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (n, runner) = control.join().unwrap();
    assert_eq!(n, 0, "the control thread allocated {n} times while cycling");
    let cycles = stats.cycles.load(Ordering::Relaxed);
    assert!(cycles > 800, "only {cycles} cycles in about a second");
    assert!(popped > 10, "telemetry flowed: {popped}");
    assert_eq!(
        runner.unwrap().axes()[0].program().setpoint_ppm(),
        8.0,
        "the derate reached the program"
    );
}

#[test]
fn the_counter_sees_allocations() {
    let n = count_allocs(|| {
        let v = std::hint::black_box(vec![1u8; 64]);
        drop(v);
        let s = std::hint::black_box(format!("{}", 42));
        drop(s);
    });
    assert!(n >= 2, "counting allocator missed allocations: {n}");
}

/// The I/O scan (on its own real-time thread, feeding the control cycle)
/// with a Modbus device and a GPIO device bound: 10 000 scans, with the
/// Modbus link's fresh samples and weld counter moving, allocate nothing.
#[test]
fn the_io_scan_with_modbus_and_gpio_devices_bound_allocates_nothing() {
    use triad_edge::config::{Driver, from_toml_str};
    use triad_edge::field::modbus::{ModbusDevice, SharedImage};
    use triad_edge::field::{AxisIo, IoStats, LineScan};
    use triad_hw::{Device, GpioDevice};
    let text = include_str!("../../deploy/examples/sim-plant-modbus.toml").to_string()
        + "\n[[devices]]\nid = \"panel\"\ndriver = \"gpio\"\nchip = \"gpiochip0\"\n\
           points = [ { name = \"estop\", line = 17, active_low = true } ]\n";
    let text = text.replace(
        "io = { device = \"welder_07\" }",
        "io = { device = \"welder_07\", estop = \"panel.estop\" }",
    );
    let cfg = from_toml_str(&text).unwrap();
    let (Driver::Modbus(m), Driver::Gpio(g)) = (&cfg.devices[0].driver, &cfg.devices[1].driver) else {
        panic!("{:?}", cfg.devices)
    };
    let shared = Arc::new(SharedImage::new(m.points.len()));
    let mut lines = triad_hw::sim::SimLines::new(32);
    triad_hw::DigitalLines::set(&mut lines, triad_hw::LineId(17), true).unwrap();
    let devices: Vec<(String, Box<dyn Device>)> = vec![
        (
            "welder_07".into(),
            Box::new(ModbusDevice::new(m.clone(), shared.clone())),
        ),
        (
            "panel".into(),
            Box::new(GpioDevice::new("panel", g.points.clone(), lines).unwrap()),
        ),
    ];
    let (in_tx, mut in_rx) = rtrb::RingBuffer::<LineInputs>::new(64);
    let (mut out_tx, out_rx) = rtrb::RingBuffer::new(64);
    let (trig_tx, mut trig_rx) = rtrb::RingBuffer::new(1024);
    let stats = Arc::new(IoStats::default());
    let axis = AxisIo {
        binding: cfg.axes[0].io.clone().unwrap(),
        inputs: in_tx,
        outputs: out_rx,
        triggers: trig_tx,
        stats: stats.clone(),
    };
    let mut line = LineScan::new(devices, vec![axis]);
    let clock = SystemClock;
    let welds = m.points.iter().position(|p| p.name == "welds_total").unwrap();
    let (mut images, mut triggers, mut allocs_total) = (0u64, 0u64, 0u64);
    for k in 0..10_000u64 {
        let now = clock.now_ns();
        // What the link task would have stored: fresh samples, a weld every 10 scans.
        for (i, p) in m.points.iter().enumerate() {
            if p.direction == triad_hw::Direction::Input {
                shared.set(i, if i == welds { (k / 10) as f64 } else { 180.0 }, now);
            }
        }
        let _ = out_tx.push(triad_hw::LineOutputs {
            stamp_ns: now,
            feed_ppm_cmd: 12.0,
            weld_enable: k % 100 < 50,
            weld_current_cmd_a: 5000.0,
        });
        allocs_total += count_allocs(|| line.scan(now));
        while let Ok(i) = in_rx.pop() {
            assert!(!i.stale && !i.estop, "{i:?}");
            images += 1;
        }
        while trig_rx.pop().is_ok() {
            triggers += 1;
        }
    }
    assert_eq!(
        allocs_total, 0,
        "the I/O scan allocated {allocs_total} times in 10 000 scans"
    );
    assert_eq!(images, 10_000);
    assert!(triggers >= 990, "a capture trigger per weld: {triggers}");
    assert_eq!(stats.scans_failed.load(Ordering::Relaxed), 0);
    let cmd = m.points.iter().position(|p| p.name == "feed_ppm_cmd").unwrap();
    assert_eq!(shared.value(cmd), 12.0, "the program's outputs reach the link's image");
}
