//! Modbus TCP scan time: 8 devices × 64 registers, triad's link against
//! pymodbus's asyncio client doing the same reads, in alternating blocks
//! against the same 8 pymodbus devices; then the scan period of 7 devices
//! while the 8th hangs.
//!
//! Run: `cargo bench -p triad-tests --bench modbus_scan` (needs the venv of
//! scripts/test-all.sh). Prints Markdown. Env: `BENCH_SCANS` (2000 a block),
//! `BENCH_BLOCKS` (4 pairs), `BENCH_DEVICES` (8), `BENCH_REGISTERS` (64).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use triad_edge::clock::{Clock, SystemClock};
use triad_edge::config::modbus::ModbusConfig;
use triad_edge::config::{DEFAULT_TOML, Driver, from_toml_str};
use triad_edge::field::modbus::link::{Link, LinkDevice};
use triad_edge::field::modbus::{ModbusLinks, SharedImage};
use triad_tests::modbus_peer::PyModbusDevice;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A bank device's config: `registers` u16 input registers read as one
/// block, polled every `poll_ms`.
fn bank(port: u16, registers: usize, poll_ms: u64) -> Arc<ModbusConfig> {
    let points: String = (0..registers)
        .map(|a| format!("  {{ name = \"r{a}\", table = \"input\", address = {a} }},\n"))
        .collect();
    let text = format!(
        "{DEFAULT_TOML}\n[[devices]]\nid = \"bank\"\ndriver = \"modbus-tcp\"\nendpoint = \"127.0.0.1:{port}\"\n\
         addressing = \"zero-based\"\npoll_ms = {poll_ms}\ntimeout_ms = 100\nretries = 0\npoints = [\n{points}]\n"
    );
    let cfg = from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    match &cfg.devices[1].driver {
        Driver::Modbus(m) => m.clone(),
        other => panic!("{other:?}"),
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// `scans` scans of every device by triad's links, each link polling its
/// device concurrently; (p50, p99, max) µs.
async fn triad_block(links: &mut [Link], shared: &[Arc<SharedImage>], scans: usize) -> (f64, f64, f64) {
    let mut times = Vec::with_capacity(scans);
    for k in 0..scans + 50 {
        let t0 = Instant::now();
        futures::future::join_all(links.iter_mut().map(Link::poll_now)).await;
        if k >= 50 {
            times.push(t0.elapsed().as_nanos() as u64);
        }
    }
    for s in shared {
        assert_eq!(s.value(63), 63.0, "bank values are their addresses");
    }
    times.sort_unstable();
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
    )
}

/// The same with pymodbus (`tests/python/modbus_scan_reference.py`).
fn pymodbus_block(ports: &[u16], registers: usize, scans: usize) -> (f64, f64, f64, String) {
    let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = std::process::Command::new(triad_tests::python())
        .arg(triad_tests::workspace_root().join("tests/python/modbus_scan_reference.py"))
        .args([
            "--endpoints",
            &endpoints.join(","),
            "--registers",
            &registers.to_string(),
        ])
        .args(["--scans", &scans.to_string()])
        .output()
        .expect("run modbus_scan_reference.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let f = |k: &str| v[k].as_f64().unwrap();
    (
        f("p50_us"),
        f("p99_us"),
        f("max_us"),
        v["client"].as_str().unwrap_or("").to_string(),
    )
}

/// Polls each of `shared` completed in `window` (the link tasks running).
async fn polls_in(shared: &[Arc<SharedImage>], window: Duration) -> Vec<u64> {
    let before: Vec<u64> = shared.iter().map(|s| s.stats.polls.load(Relaxed)).collect();
    tokio::time::sleep(window).await;
    shared
        .iter()
        .zip(before)
        .map(|(s, b)| s.stats.polls.load(Relaxed) - b)
        .collect()
}

fn main() {
    let (scans, blocks) = (env("BENCH_SCANS", 2000), env("BENCH_BLOCKS", 4));
    let (n, registers) = (env("BENCH_DEVICES", 8), env("BENCH_REGISTERS", 64));
    let ports = triad_tests::free_ports(n);
    let devices: Vec<PyModbusDevice> = ports
        .iter()
        .map(|p| {
            PyModbusDevice::start(&[
                "--kind",
                "bank",
                "--order",
                "ABCD",
                "--count",
                &registers.to_string(),
                "--tcp",
                &format!("127.0.0.1:{p}"),
            ])
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shared: Vec<Arc<SharedImage>> = (0..n).map(|_| Arc::new(SharedImage::new(registers))).collect();
    let mut links: Vec<Link> = ports
        .iter()
        .zip(&shared)
        .map(|(&p, s)| {
            Link::new(
                vec![LinkDevice {
                    id: format!("bank_{p}"),
                    cfg: bank(p, registers, 10),
                    shared: s.clone(),
                }],
                clock.clone(),
            )
        })
        .collect();

    println!("## Modbus TCP scan: {n} devices × {registers} registers (pymodbus devices on loopback)\n");
    println!("| block | triad p50 / p99 / max µs | pymodbus p50 / p99 / max µs | p99 ratio |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut client = String::new();
    for b in 0..blocks {
        let t = rt.block_on(triad_block(&mut links, &shared, scans));
        let p = pymodbus_block(&ports, registers, scans);
        client = p.3.clone();
        let ratio = t.1 / p.1;
        ratios.push(ratio);
        println!(
            "| {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {ratio:.2} |",
            b + 1,
            t.0,
            t.1,
            t.2,
            p.0,
            p.1,
            p.2
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\np99 ratio triad / {client}: min {:.2}, median {:.2}, max {:.2} over {blocks} pairs of {scans} scans\n",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    );
    drop(links);

    // The link tasks as the node runs them (10 ms polls): the others'
    // periods while one device hangs.
    let window = Duration::from_secs(5);
    let (alive, dead) = rt.block_on(async {
        let tasks = ModbusLinks::start(
            ports
                .iter()
                .zip(&shared)
                .map(|(&p, s)| LinkDevice {
                    id: format!("bank_{p}"),
                    cfg: bank(p, registers, 10),
                    shared: s.clone(),
                })
                .collect(),
            clock.clone(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive = polls_in(&shared, window).await;
        devices[n - 1].signal("STOP");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dead = polls_in(&shared, window).await;
        devices[n - 1].signal("CONT");
        tasks.stop(Duration::from_secs(2)).await;
        (alive, dead)
    });
    let period = |polls: &[u64]| {
        let others = &polls[..n - 1];
        window.as_secs_f64() * 1000.0 * others.len() as f64 / others.iter().sum::<u64>() as f64
    };
    let (p_alive, p_dead) = (period(&alive), period(&dead));
    println!("## One of {n} devices hangs (SIGSTOP): the others' poll period (configured 10 ms)\n");
    println!(
        "| | mean period of the other {} devices | polls of the hung device |",
        n - 1
    );
    println!("|---|---|---|");
    println!("| all answer | {p_alive:.2} ms | {} |", alive[n - 1]);
    println!("| one hangs | {p_dead:.2} ms | {} |", dead[n - 1]);
    println!("\nratio (one hangs / all answer): {:.3}", p_dead / p_alive);
}
