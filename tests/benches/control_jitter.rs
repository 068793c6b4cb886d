//! Control-loop wake-up jitter against cyclictest, on the same machine, in
//! the same script, both at SCHED_FIFO 80 with a 1 ms period, with the other
//! core busy with inspection work (the node's real neighbour).
//!
//! Run: `cargo bench -p triad-tests --bench control_jitter` (as root or with
//! CAP_SYS_NICE; needs `cyclictest` from rt-tests). Prints Markdown. Env:
//! `BENCH_SECONDS` (30), `BENCH_AXES` (1: axes on the control thread).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use triad_edge::clock::{Clock, SystemClock};
use triad_edge::control::{ControlRunner, ControlStats, rt};
use triad_hw::LineInputs;
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_hw::{Camera, CaptureTrigger};
use triad_inspect::GrayImage;

fn load(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut insp = triad_tests::weld_inspector();
        let mut cam = SimCamera::new(SimCameraConfig::default());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let f = cam
                .capture(&CaptureTrigger {
                    module_serial: 1 + n / 24,
                    weld_index: (n % 24) as u32,
                    stamp_ns: 0,
                    weld_temp_c: 185.0,
                })
                .unwrap();
            insp.inspect(&GrayImage {
                width: f.width,
                height: f.height,
                pixels: &f.pixels,
            })
            .unwrap();
            n += 1;
        }
        n
    })
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let n_axes: usize = std::env::var("BENCH_AXES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // 1. triad's control thread.
    let stop_load = Arc::new(AtomicBool::new(false));
    let loader = load(stop_load.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let stats = Arc::new(ControlStats::new());
    let (axes, mut ends) = triad_tests::bench_axes(n_axes, clock.now_ns());
    let runner = ControlRunner::new(axes, stats.clone(), clock, Duration::from_millis(1), 50);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let ctl = std::thread::spawn(move || {
        let st = rt::prepare_current_thread(Some(80), None);
        let _ = runner.run(&s2);
        st
    });
    let feeder_stop = stop.clone();
    let feeder = std::thread::spawn(move || {
        let mut k = 0;
        while !feeder_stop.load(Ordering::Relaxed) {
            for e in ends.iter_mut() {
                let _ = e.inputs.push(LineInputs {
                    scan_seq: k,
                    ..Default::default()
                });
                while e.telemetry.pop().is_ok() {}
                while e.outputs.pop().is_ok() {}
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let st = ctl.join().unwrap();
    feeder.join().unwrap();
    let p50 = stats.quantile_us(0.5).unwrap();
    let p99 = stats.quantile_us(0.99).unwrap();
    let p999 = stats.quantile_us(0.999).unwrap();
    let max = stats.max_us();
    let cycles = stats.cycles.load(Ordering::Relaxed);
    let overruns = stats.overruns.load(Ordering::Relaxed);

    // 2. cyclictest, same period, priority and neighbour load.
    let loops = (secs * 1000).to_string();
    let o = std::process::Command::new("cyclictest")
        .args(["-t1", "-p80", "-i1000", "-l", &loops, "-m", "-q", "-h", "2000"])
        .output()
        .expect("cyclictest (apt install rt-tests)");
    stop_load.store(true, Ordering::Relaxed);
    let frames = loader.join().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    // Histogram lines: "<us> <count>"; summary "# Max Latencies: <us>".
    let mut hist: Vec<(f64, u64)> = Vec::new();
    let mut cmax = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# Max Latencies:") {
            cmax = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if !line.starts_with('#') {
            let mut it = line.split_whitespace();
            if let (Some(a), Some(b)) = (it.next(), it.next())
                && let (Ok(us), Ok(c)) = (a.parse::<f64>(), b.parse::<u64>())
            {
                hist.push((us, c));
            }
        }
    }
    let total: u64 = hist.iter().map(|h| h.1).sum();
    let q = |p: f64| {
        let rank = (p * total as f64).ceil() as u64;
        let mut seen = 0;
        for (us, c) in &hist {
            seen += c;
            if seen >= rank {
                return us + 1.0; // upper edge of the 1 µs bucket, as triad reports
            }
        }
        cmax
    };
    let (c50, c99, c999) = (q(0.5), q(0.99), q(0.999));
    println!("triad control thread ({n_axes} axes): {}", st.describe());
    println!("neighbour load: {frames} frames inspected during both runs");
    println!();
    println!("| {secs} s at 1 kHz, SCHED_FIFO 80 | p50 | p99 | p99.9 | max | overruns |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| triad control loop ({cycles} cycles) | {p50:.0} µs | {p99:.0} µs | {p999:.0} µs | {max:.0} µs | {overruns} |"
    );
    println!("| cyclictest ({total} loops) | {c50:.0} µs | {c99:.0} µs | {c999:.0} µs | {cmax:.0} µs | – |");
    println!(
        "| **ratio triad / cyclictest** | {:.2} | **{:.2}** | {:.2} | {:.2} | |",
        p50 / c50,
        p99 / c99,
        p999 / c999,
        max / cmax.max(1.0)
    );
}
