//! A flood of refused requests must not stall the node's async side:
//! control jitter and inspection frame latency of the real `triad` binary
//! during 1,000 refused requests per second, against a quiet run, in the
//! same bench.
//!
//! Three kinds of block: quiet; flood (the refused requests go to the
//! node); decoy (the same client sends the same requests to a small server
//! in this process that refuses them, so the machine carries the client's
//! and a server's work but the node's async side does not). Flood / quiet
//! is the goal's ratio; flood / decoy separates what the node's handling
//! costs from what the load on a 2-core machine costs. Kinds rotate (Q F D,
//! F D Q, D Q F, …) so all meet the same machine noise (see NOTES.md). Each block is one run of `triad run --sim
//! --scenario nominal --duration <block>` (start-up included in both kinds):
//! control jitter and frames inspected come from its run report,
//! inspection frame latency (capture to result) from the dashboard's recent
//! results (`/api/state`, polled every 100 ms, each frame counted once). In a flood block, as soon as the node answers, a client in
//! this process sends refused requests at `FLOOD_RATE` per second for
//! `FLOOD_SECONDS`: anonymous commands, anonymous deploys to a target of
//! 8,000 characters, and deploys with a token that does not verify.
//!
//! Run (release binary first):
//! `cargo build --release --workspace --bins && cargo bench -p triad-tests --bench refusal_flood`
//! Env: `ROUNDS` (3), `FLOOD_SECONDS` (10), `FLOOD_RATE` (1000), `BENCH_NODE_LOG`
//! (a directory for each block's node log). Prints Markdown. The node runs
//! the built-in configuration with this process's environment, so its
//! overrides apply: `TRIAD_CONTROL__CPU=1` gives the control thread CPU 1 to
//! itself (`[control] cpu`); the output's first line says which.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use triad_tests::{TempDir, free_port, triad_bin, workspace_root};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Kind {
    #[default]
    Quiet,
    Flood,
    Decoy,
}

#[derive(Debug, Default)]
struct Block {
    kind: Kind,
    jitter_p50_us: f64,
    jitter_p99_us: f64,
    jitter_p999_us: f64,
    jitter_max_us: f64,
    overruns: u64,
    frames: u64,
    polled: usize,
    latency_p50_us: f64,
    latency_p99_us: f64,
    sent: u64,
    answers: BTreeMap<u16, u64>,
    refusal_p99_ms: f64,
    rss_kb: u64,
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

async fn run_block(kind: Kind, flood_s: u64, rate: u64, decoy: &str) -> Block {
    let dir = TempDir::new("refusal-flood");
    let port = free_port();
    let report = dir.path().join("report.json");
    let duration = flood_s + 4;
    let mut child = Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--duration",
            &format!("{duration}s"),
        ])
        .args(["--report", report.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .current_dir(workspace_root())
        .env("TRIAD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(match std::env::var("BENCH_NODE_LOG") {
            // Keep the node's warnings of each block: <dir>/<kind>-<n>.log.
            Ok(d) => {
                static N: AtomicU64 = AtomicU64::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                std::fs::create_dir_all(&d).unwrap();
                Stdio::from(std::fs::File::create(format!("{d}/{kind:?}-{n}.log")).unwrap())
            }
            Err(_) => Stdio::null(),
        })
        .spawn()
        .expect("run triad");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{base}/api/models"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "node did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Inspection latency of every frame the dashboard shows, polled.
    let poll_http = http.clone();
    let poll_base = base.clone();
    let poll_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ps = poll_stop.clone();
    let poller = tokio::spawn(async move {
        let mut seen: HashMap<i64, f64> = HashMap::new();
        while !ps.load(Ordering::Relaxed) {
            if let Ok(r) = poll_http.get(format!("{poll_base}/api/state")).send().await
                && let Ok(v) = r.json::<Value>().await
                && let Some(recent) = v["inspection"]["recent"].as_array()
            {
                for r in recent {
                    if let (Some(seq), Some(l)) = (r["sequence"].as_i64(), r["latency_us"].as_f64()) {
                        seen.insert(seq, l);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen.into_values().collect::<Vec<f64>>()
    });
    let mut b = Block {
        kind,
        ..Block::default()
    };
    if kind != Kind::Quiet {
        let base = if kind == Kind::Flood {
            base.clone()
        } else {
            decoy.to_string()
        };
        let sent = Arc::new(AtomicU64::new(0));
        let answers: Arc<std::sync::Mutex<BTreeMap<u16, u64>>> = Arc::default();
        let times: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
        let long = format!("{base}/api/models/{}/deploy", "x".repeat(8_000));
        let urls = Arc::new([
            (format!("{base}/api/axes/axis_07/commands"), None),
            (long, None),
            (
                format!("{base}/api/models/cell_2245/deploy"),
                Some("eyJhbGciOiJFZERTQSJ9.e30.AAAA"),
            ),
        ]);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = Instant::now() + Duration::from_secs(flood_s);
        let mut n = 0usize;
        while Instant::now() < end {
            tick.tick().await;
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let (http, urls, sent, answers, times) =
                (http.clone(), urls.clone(), sent.clone(), answers.clone(), times.clone());
            n += 1;
            tokio::spawn(async move {
                let (url, tok) = &urls[n % urls.len()];
                let mut r = http.post(url).body("{\"action\": \"SetRate\", \"value\": 1}");
                if let Some(t) = tok {
                    r = r.bearer_auth(t);
                }
                let t0 = Instant::now();
                let status = r.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                times.lock().unwrap().push(t0.elapsed().as_secs_f64() * 1e3);
                sent.fetch_add(1, Ordering::Relaxed);
                *answers.lock().unwrap().entry(status).or_default() += 1;
                drop(permit);
            });
        }
        let _ = in_flight.acquire_many(64).await;
        b.sent = sent.load(Ordering::Relaxed);
        b.answers = answers.lock().unwrap().clone();
        b.refusal_p99_ms = quantile(&mut times.lock().unwrap(), 0.99);
    } else {
        tokio::time::sleep(Duration::from_secs(flood_s)).await;
    }
    b.rss_kb = triad_tests::proc_status_kb(child.id(), "VmHWM");
    poll_stop.store(true, Ordering::Relaxed);
    let mut lat = poller.await.unwrap();
    let polled = lat.len();
    b.latency_p50_us = quantile(&mut lat, 0.5);
    b.latency_p99_us = quantile(&mut lat, 0.99);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "triad run failed: {status}");
    let rep: Value = serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).unwrap();
    let c = &rep["control"];
    b.jitter_p50_us = c["jitter_p50_us"].as_f64().unwrap();
    b.jitter_p99_us = c["jitter_p99_us"].as_f64().unwrap();
    b.jitter_p999_us = c["jitter_p999_us"].as_f64().unwrap();
    b.jitter_max_us = c["jitter_max_us"].as_f64().unwrap();
    b.overruns = c["overruns"].as_u64().unwrap();
    b.frames = rep["inspection"]["frames"].as_u64().unwrap_or(0);
    b.polled = polled;
    b
}

/// The median of the finite values (a block whose poller saw no frame
/// gives no latency ratio).
/// The median: the middle value, or the mean of the two middle values of an
/// even count (until 2026-12-01 08:14 UTC this took the lower of the two,
/// which flattered even-round runs).
fn median(v: Vec<f64>) -> f64 {
    let mut v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The decoy: refuses every POST like the node does (401 with a JSON
/// reason), without reading the body.
async fn start_decoy() -> String {
    use axum::http::StatusCode;
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"outcome": "refused", "code": "token_missing", "reason": "decoy"})),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let pairs = env("ROUNDS", 3);
    let flood_s = env("FLOOD_SECONDS", 10);
    let rate = env("FLOOD_RATE", 1000);
    let decoy = start_decoy().await;
    let kinds = [Kind::Quiet, Kind::Flood, Kind::Decoy];
    let mut rows: Vec<[Block; 3]> = Vec::new();
    for p in 0..pairs {
        // Rotate the order so that no kind always goes first.
        let mut got: Vec<Block> = Vec::new();
        for i in 0..3 {
            got.push(run_block(kinds[(p as usize + i) % 3], flood_s, rate, &decoy).await);
        }
        got.sort_by_key(|b| b.kind as u8);
        eprintln!("round {p}: {got:#?}");
        rows.push(got.try_into().unwrap());
    }
    println!(
        "[control] cpu = {} ({} rounds, {flood_s} s of {rate} refused requests/s per flood block)\n",
        std::env::var("TRIAD_CONTROL__CPU").unwrap_or_else(|_| "-1 (built-in: any core)".into()),
        pairs
    );
    println!(
        "| round | kind | jitter p50 / p99 / p99.9 / max µs | overruns | frames (polled) | frame latency p50 / p99 µs | refused requests sent (answers) | refusal p99 ms | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        for b in row {
            println!(
                "| {i} | {:?} | {:.0} / {:.0} / {:.0} / {:.0} | {} | {} ({}) | {:.0} / {:.0} | {} ({:?}) | {:.1} | {:.1} |",
                b.kind,
                b.jitter_p50_us,
                b.jitter_p99_us,
                b.jitter_p999_us,
                b.jitter_max_us,
                b.overruns,
                b.frames,
                b.polled,
                b.latency_p50_us,
                b.latency_p99_us,
                b.sent,
                b.answers,
                b.refusal_p99_ms,
                b.rss_kb as f64 / 1024.0
            );
        }
    }
    println!();
    println!("| ratio | flood / quiet per round | median | flood / decoy per round | median |");
    println!("|---|---|---|---|---|");
    type Metric = fn(&Block) -> f64;
    let metrics: [(&str, Metric); 6] = [
        ("control jitter p50", |b| b.jitter_p50_us),
        ("control jitter p99", |b| b.jitter_p99_us),
        ("control jitter p99.9", |b| b.jitter_p999_us),
        ("inspection frame latency p50", |b| b.latency_p50_us),
        ("inspection frame latency p99", |b| b.latency_p99_us),
        ("frames inspected", |b| b.frames as f64),
    ];
    for (name, f) in metrics {
        let vs_quiet: Vec<f64> = rows.iter().map(|r| f(&r[1]) / f(&r[0])).collect();
        let vs_decoy: Vec<f64> = rows.iter().map(|r| f(&r[1]) / f(&r[2])).collect();
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
        println!(
            "| {name} | {} | **{:.2}** | {} | **{:.2}** |",
            fmt(&vs_quiet),
            median(vs_quiet.clone()),
            fmt(&vs_decoy),
            median(vs_decoy.clone())
        );
    }
}
