//! The Pulsar bus against the Python client (C++ core), same broker, same
//! script: publish latency on a control topic and throughput on an
//! inspection topic, each as a ratio.
//!
//! Run with a broker up: `eval "$(deploy/pulsar/standalone start)"` then
//! `cargo bench -p triad-tests --bench pulsar`. Prints Markdown.

use std::sync::Arc;
use std::time::Instant;
use triad_edge::bus::pulsar::PulsarBus;
use triad_edge::bus::tools::synthetic_result;
use triad_edge::bus::{Bus, RawMessage};
use triad_edge::config::PulsarConfig;
use triad_schemas::ids::{AxisId, CellId};
use triad_schemas::{ClockState, CommandAction, ControlCommand, Envelope, Topic, codec};
use triad_tests::{pulsar_env, python, unique, workspace_root};

fn env(seq: i64) -> Envelope {
    Envelope {
        schema_version: 1,
        node: "rust-bench".into(),
        sequence: seq,
        stamp_ns: triad_tests::now_ns(),
        clock: ClockState::FreeRunning,
        clock_offset_ns: None,
    }
}

fn py(args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new(python())
        .arg(workspace_root().join("tests/python/pulsar_bench.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let (service, admin) = pulsar_env();
    let n_lat: usize = std::env::var("BENCH_LATENCY_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let n_thr: usize = std::env::var("BENCH_THROUGHPUT_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = PulsarConfig::for_url(&service).unwrap();
    cfg.admin_url = admin;
    let bus = Arc::new(PulsarBus::new(cfg).unwrap());
    let id = unique("b");
    let (rust_lat, rust_thr) = rt.block_on(async {
        bus.connect().await.unwrap();
        // Latency: control commands, one at a time.
        let topic = Topic::control_command(&AxisId::new(format!("ra_{id}")).unwrap());
        bus.ensure_producer(&topic).await.unwrap();
        let mk = |i: i64| {
            let c = ControlCommand {
                envelope: env(i),
                command_id: format!("cmd-{i}"),
                axis: "bench_axis".into(),
                action: CommandAction::SetRate,
                value: Some(10.0),
                reason: "benchmark".into(),
                issued_by: "bench".into(),
                token: None,
            };
            RawMessage {
                topic: topic.clone(),
                key: "bench".into(),
                sequence: i,
                payload: codec::encode(&c).unwrap(),
            }
        };
        for i in 0..200 {
            bus.publish(&mk(i)).await.unwrap();
        }
        let mut lat = Vec::with_capacity(n_lat);
        for i in 0..n_lat as i64 {
            let m = mk(1000 + i);
            let t0 = Instant::now();
            bus.publish(&m).await.unwrap();
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        // Throughput: inspection results through publish_many (the flusher's path).
        let topic = Topic::inspection_result(&CellId::new(format!("rc_{id}")).unwrap());
        bus.ensure_producer(&topic).await.unwrap();
        let msgs: Vec<RawMessage> = (1..=n_thr as i64)
            .map(|i| {
                let r = synthetic_result(env(i), "bench_cell", i as u64, triad_tests::now_ns());
                RawMessage {
                    topic: topic.clone(),
                    key: "bench_cell".into(),
                    sequence: i,
                    payload: codec::encode(&r).unwrap(),
                }
            })
            .collect();
        let t0 = Instant::now();
        for chunk in msgs.chunks(512) {
            let (n, err) = bus.publish_many(chunk).await.unwrap();
            assert!(err.is_none() && n == chunk.len(), "{err:?}");
        }
        let secs = t0.elapsed().as_secs_f64();
        (lat, n_thr as f64 / secs)
    });
    let mut rust_lat = rust_lat;
    let (r50, r99, rmax) = (
        pct(&mut rust_lat, 0.5),
        pct(&mut rust_lat, 0.99),
        pct(&mut rust_lat, 1.0),
    );
    let avsc = |f: &str| workspace_root().join("schemas/avro").join(f).display().to_string();
    let py_lat = py(&[
        "--service",
        &service,
        "--mode",
        "latency",
        "--topic",
        &format!("persistent://public/default/ctrl.pa_{id}.cmd"),
        "--schema",
        &avsc("control_command.avsc"),
        "--count",
        &n_lat.to_string(),
    ]);
    let py_thr = py(&[
        "--service",
        &service,
        "--mode",
        "throughput",
        "--topic",
        &format!("persistent://public/default/insp.pc_{id}.result"),
        "--schema",
        &avsc("inspection_result.avsc"),
        "--count",
        &n_thr.to_string(),
    ]);
    let py_thr_b = py(&[
        "--service",
        &service,
        "--mode",
        "throughput",
        "--topic",
        &format!("persistent://public/default/insp.pb_{id}.result"),
        "--schema",
        &avsc("inspection_result.avsc"),
        "--count",
        &n_thr.to_string(),
        "--batching",
    ]);
    let (p50, p99, pmax) = (
        py_lat["p50_us"].as_f64().unwrap(),
        py_lat["p99_us"].as_f64().unwrap(),
        py_lat["max_us"].as_f64().unwrap(),
    );
    let pthr = py_thr["per_s"].as_f64().unwrap();
    let pthr_b = py_thr_b["per_s"].as_f64().unwrap();
    println!("| measure | triad (pulsar-rs) | Python client (C++) | ratio triad / Python |");
    println!("|---|---|---|---|");
    println!(
        "| control publish latency p50, {n_lat} sends | {:.0} µs | {:.0} µs | {:.2} |",
        r50,
        p50,
        r50 / p50
    );
    println!(
        "| control publish latency p99 | {:.0} µs | {:.0} µs | {:.2} |",
        r99,
        p99,
        r99 / p99
    );
    println!(
        "| control publish latency max | {:.0} µs | {:.0} µs | {:.2} |",
        rmax,
        pmax,
        rmax / pmax
    );
    println!(
        "| inspection throughput, {n_thr} msgs, unbatched | {:.0} msg/s | {:.0} msg/s | {:.2} |",
        rust_thr,
        pthr,
        rust_thr / pthr
    );
    println!(
        "| (reference) Python with its default batching | | {:.0} msg/s | {:.2} |",
        pthr_b,
        rust_thr / pthr_b
    );
}
