//! Inspection throughput on the simulated camera, and tract's latency as a
//! ratio to onnxruntime's on the same inputs (single thread each).
//!
//! Run: `cargo bench -p triad-tests --bench inspection` (needs `.venv`, made by
//! scripts/test-all.sh). Prints a Markdown table for docs/benchmarks.md.

use std::time::Instant;
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_hw::{Camera, CaptureTrigger};
use triad_inspect::GrayImage;
use triad_tests::{TempDir, python, workspace_root};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn main() {
    let n: u64 = std::env::var("BENCH_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut insp = triad_tests::weld_inspector();
    let mut cam = SimCamera::new(SimCameraConfig {
        seed: 99,
        ..SimCameraConfig::default()
    });
    // Warm-up.
    for k in 0..50 {
        let f = cam
            .capture(&CaptureTrigger {
                module_serial: 1,
                weld_index: k,
                stamp_ns: 0,
                weld_temp_c: 190.0,
            })
            .unwrap();
        insp.inspect(&GrayImage {
            width: f.width,
            height: f.height,
            pixels: &f.pixels,
        })
        .unwrap();
    }
    // Whole pipeline: render + preprocess + tract + postprocess, one thread.
    let mut capture_us = Vec::new();
    let mut inspect_us = Vec::new();
    let mut inputs: Vec<f32> = Vec::new();
    let t_all = Instant::now();
    for k in 0..n {
        let trig = CaptureTrigger {
            module_serial: 2 + k / 24,
            weld_index: (k % 24) as u32,
            stamp_ns: 0,
            weld_temp_c: 180.0 + (k % 30) as f64,
        };
        let t0 = Instant::now();
        let f = cam.capture(&trig).unwrap();
        let t1 = Instant::now();
        insp.inspect(&GrayImage {
            width: f.width,
            height: f.height,
            pixels: &f.pixels,
        })
        .unwrap();
        let t2 = Instant::now();
        capture_us.push((t1 - t0).as_secs_f64() * 1e6);
        inspect_us.push((t2 - t1).as_secs_f64() * 1e6);
        if k < 200 {
            inputs.extend_from_slice(insp.last_input());
        }
    }
    let wall = t_all.elapsed().as_secs_f64();
    // tract alone on the 200 saved inputs, 10 runs each (same protocol as the ORT script).
    let model2 = insp.model().clone();
    let mut session = model2.session().unwrap();
    let mut out = Vec::new();
    let mut tract_us = Vec::new();
    for x in inputs.chunks_exact(64 * 64) {
        session.infer(x, &mut out).unwrap();
        for _ in 0..10 {
            let t0 = Instant::now();
            session.infer(x, &mut out).unwrap();
            tract_us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    let dir = TempDir::new("bench-ort");
    let (inp, outp) = (dir.path().join("in.f32"), dir.path().join("out.f32"));
    std::fs::write(&inp, inputs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let o = std::process::Command::new(python())
        .arg(workspace_root().join("tests/python/ort_reference.py"))
        .arg(workspace_root().join("inspect/models/weld_seam/model.onnx"))
        .arg(&inp)
        .arg(&outp)
        .args(["--repeat", "10"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ort: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (ort50, ort99) = (ort["p50_us"].as_f64().unwrap(), ort["p99_us"].as_f64().unwrap());
    let (t50, t99) = (pct(&mut tract_us, 50.0), pct(&mut tract_us, 99.0));
    println!("| measure | value |");
    println!("|---|---|");
    println!("| frames | {n} |");
    println!(
        "| pipeline throughput, one worker (render + inspect) | {:.0} frames/s |",
        n as f64 / wall
    );
    println!(
        "| inspect only (preprocess + tract + postprocess) p50 / p99 | {:.0} / {:.0} µs |",
        pct(&mut inspect_us, 50.0),
        pct(&mut inspect_us, 99.0)
    );
    println!(
        "| inspection capacity, one worker | {:.0} frames/s |",
        1e6 / pct(&mut inspect_us, 50.0)
    );
    println!("| simulated camera render p50 | {:.0} µs |", pct(&mut capture_us, 50.0));
    println!("| tract inference p50 / p99 | {t50:.1} / {t99:.1} µs |");
    println!("| onnxruntime CPU inference p50 / p99 (1 thread) | {ort50:.1} / {ort99:.1} µs |");
    println!(
        "| **tract / onnxruntime latency ratio (p50)** | **{:.2}** |",
        t50 / ort50
    );
    println!("| tract / onnxruntime latency ratio (p99) | {:.2} |", t99 / ort99);
}
