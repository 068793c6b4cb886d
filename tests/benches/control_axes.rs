//! How many axes fit in one control cycle: the work time of one cycle of
//! the real [`ControlRunner`] (every axis: newest process image, requests,
//! program, outputs, telemetry through the real rings) for 1 to 3 000 axes,
//! on this machine, against the 1 ms period and against the one-axis cycle
//! measured in the same run. The last line names the most axes whose p99.9
//! work time stays under half the period (the other half is the wake-up
//! jitter's).
//!
//! Each size runs `BENCH_CYCLES` (20 000) cycles back to back on one thread
//! at SCHED_FIFO 80 where permitted; every axis gets a fresh image each
//! cycle, and one axis in ten a set-point request every 100 cycles. The
//! work time is what `run_cycle` takes (the sleep between cycles is not
//! part of it); the wake-up jitter on top of it is `control_jitter`'s.
//!
//! Run: `cargo bench -p triad-tests --bench control_axes`. Prints Markdown.

use std::sync::Arc;
use std::time::{Duration, Instant};
use triad_edge::clock::{Clock, SystemClock};
use triad_edge::control::{ControlRequest, ControlRunner, ControlStats, rt};
use triad_hw::LineInputs;
use triad_schemas::CommandAction;

const PERIOD_US: f64 = 1000.0;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Per-cycle work times, µs, of `n` axes over `cycles` cycles.
fn work_times(n: usize, cycles: u64) -> Vec<f64> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (axes, mut ends) = triad_tests::bench_axes(n, clock.now_ns());
    let mut runner = ControlRunner::new(axes, Arc::new(ControlStats::new()), clock, Duration::from_millis(1), 50);
    let mut times = Vec::with_capacity(cycles as usize);
    for k in 0..cycles {
        for (a, e) in ends.iter_mut().enumerate() {
            let _ = e.inputs.push(LineInputs {
                scan_seq: k,
                feed_ppm: 12.0,
                weld_temp_c: 180.0,
                ..Default::default()
            });
            if a % 10 == 0 && k % 100 == 0 {
                let _ = e.requests.push(ControlRequest {
                    handle: k,
                    action: CommandAction::SetRate,
                    value: if k % 200 == 0 { 10.0 } else { 12.0 },
                });
            }
        }
        let t0 = Instant::now();
        runner.run_cycle(0);
        times.push(t0.elapsed().as_secs_f64() * 1e6);
        for e in ends.iter_mut() {
            while e.telemetry.pop().is_ok() {}
            while e.outputs.pop().is_ok() {}
        }
    }
    times
}

fn main() {
    let cycles: u64 = std::env::var("BENCH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let st = rt::prepare_current_thread(Some(80), None);
    println!("scheduling: {}; {cycles} cycles per size\n", st.describe());
    println!(
        "| axes | work p50 µs | p99 µs | p99.9 µs | max µs | p99 per axis µs | p99 / one axis | p99 / 1 ms period |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut one_axis_p99 = f64::NAN;
    let mut fits = 0;
    for n in [1usize, 3, 10, 30, 100, 300, 1000, 3000] {
        let mut t = work_times(n, cycles);
        let (p50, p99, p999) = (quantile(&mut t, 0.5), quantile(&mut t, 0.99), quantile(&mut t, 0.999));
        let max = t.iter().copied().fold(0.0, f64::max);
        if n == 1 {
            one_axis_p99 = p99;
        }
        if p999 < PERIOD_US / 2.0 {
            fits = n;
        }
        println!(
            "| {n} | {p50:.1} | {p99:.1} | {p999:.1} | {max:.1} | {:.2} | {:.1} | {:.3} |",
            p99 / n as f64,
            p99 / one_axis_p99,
            p99 / PERIOD_US
        );
    }
    println!("\nMost axes measured with p99.9 work under half the 1 ms period: {fits}");
}
