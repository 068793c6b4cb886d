//! The Pulsar bus against the Python client (C++ core), measured fairly:
//! both clients stay connected to the same broker, get the same warm-up, and
//! then run in alternating short blocks (this machine's noise shifts within a
//! minute, so two sequential runs are not comparable). Each block's p50/p99
//! and the spread of the per-pair ratio are printed.
//!
//! 1. Control publish latency: ControlCommands sent one at a time, unbatched,
//!    each waiting for the broker's receipt (triad: `Bus::publish`; Python:
//!    `producer.send`, from `pulsar_reference.py` next to this file).
//! 2. Inspection throughput: InspectionResults pipelined (triad:
//!    `publish_many` in chunks of 512, the outbox flusher's path; Python:
//!    `send_async` then `flush`), unbatched.
//! 3. The node's control path end to end: a running node (`target/release/
//!    triad`, Pulsar bus, a trusted command key) takes signed SetRate
//!    commands from a client on `ctrl/<axis>/cmd` (token check, command gate,
//!    ring, control thread applies it, state published) until the client's
//!    subscriber sees the new setpoint on `ctrl/<axis>/state`; against the
//!    same client's round trip through the broker alone (publish, then its
//!    own subscriber receives it), alternating blocks again.
//!
//! Run with a broker up:
//! `eval "$(deploy/pulsar/standalone start)"`,
//! `cargo build --release --workspace --bins` (the node for part 3), then
//! `cargo bench -p triad-tests --bench pulsar`. Prints Markdown.
//! Knobs (environment): BENCH_PAIRS (6), BENCH_BLOCK (500 sends),
//! BENCH_WARMUP (2000 sends), BENCH_THROUGHPUT_BLOCK (5000 messages),
//! BENCH_E2E_BLOCK (40 commands; 0 skips part 3), BENCH_E2E_TELEMETRY_EVERY
//! (the node's `[control] telemetry_every_cycles`, default its own: 50),
//! BENCH_DEBUG (node log at info, each command's timing on stderr).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triad_edge::bus::pulsar::PulsarBus;
use triad_edge::bus::{Bus, RawMessage, Subscription};
use triad_edge::cli::bus::synthetic_result;
use triad_edge::config::PulsarConfig;
use triad_edge::trust::keys::SigningKey;
use triad_edge::trust::token::{self, Audience, Claims, CommandScope, TokenUse};
use triad_schemas::ids::{AxisId, CellId};
use triad_schemas::{ClockState, CommandAction, ControlCommand, ControlState, Envelope, Topic, codec};
use triad_tests::{TempDir, pulsar_env, python, triad_bin, unique, workspace_root};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn env(node: &str, seq: i64) -> Envelope {
    Envelope {
        schema_version: 1,
        node: node.into(),
        sequence: seq,
        stamp_ns: triad_tests::now_ns(),
        clock: ClockState::FreeRunning,
        clock_offset_ns: None,
    }
}

/// Nearest-rank percentile (the same rule for both clients).
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

/// The Python client, kept running between blocks.
struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    fn start(service: &str, latency_topic: &str, throughput_topic: &str) -> Self {
        let avsc = |f: &str| workspace_root().join("schemas/avro").join(f);
        let mut child = Command::new(python())
            .arg(workspace_root().join("tests/benches/pulsar_reference.py"))
            .args(["--service", service, "--latency-topic", latency_topic])
            .args(["--throughput-topic", throughput_topic])
            .arg("--latency-schema")
            .arg(avsc("control_command.avsc"))
            .arg("--throughput-schema")
            .arg(avsc("inspection_result.avsc"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pulsar_reference.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut r = Self { child, stdin, stdout };
        let ready = r.read();
        assert_eq!(ready["ready"], true, "pulsar_reference.py: {ready}");
        r
    }

    fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read pulsar_reference.py");
        assert!(!line.is_empty(), "pulsar_reference.py exited (see its stderr above)");
        serde_json::from_str(&line).expect("JSON from pulsar_reference.py")
    }

    fn call(&mut self, req: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{req}").unwrap();
        self.stdin.flush().unwrap();
        let v = self.read();
        assert!(v.get("error").is_none(), "pulsar_reference.py: {v}");
        v
    }

    /// `n` synchronous sends; µs each.
    fn latency(&mut self, n: usize) -> Vec<f64> {
        let v = self.call(serde_json::json!({"op": "latency", "count": n}));
        v["us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    /// `n` pipelined sends; messages per second.
    fn throughput(&mut self, n: usize) -> f64 {
        let v = self.call(serde_json::json!({"op": "throughput", "count": n}));
        assert_eq!(v["errors"], 0, "Python throughput block had send errors: {v}");
        n as f64 / v["seconds"].as_f64().unwrap()
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", serde_json::json!({"op": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// triad's side: the bus and its topics, with running sequence numbers.
struct Triad {
    bus: Arc<PulsarBus>,
    control: Topic,
    results: Topic,
    seq: i64,
}

impl Triad {
    fn command(
        &mut self,
        topic: &Topic,
        axis: &str,
        value: f64,
        token: Option<String>,
    ) -> (ControlCommand, RawMessage) {
        self.seq += 1;
        let c = ControlCommand {
            envelope: env("rust-bench", self.seq),
            command_id: format!("cmd-{}", self.seq),
            axis: axis.into(),
            action: CommandAction::SetRate,
            value: Some(value),
            reason: "benchmark".into(),
            issued_by: "bench".into(),
            token,
        };
        let m = RawMessage {
            topic: topic.clone(),
            key: "bench".into(),
            sequence: self.seq,
            payload: codec::encode(&c).unwrap(),
        };
        (c, m)
    }

    async fn latency(&mut self, n: usize) -> Vec<f64> {
        let mut us = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, m) = self.command(&self.control.clone(), "bench_axis", 10.0, None);
            let t0 = Instant::now();
            self.bus.publish(&m).await.unwrap();
            us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        us
    }

    async fn throughput(&mut self, n: usize) -> f64 {
        let msgs: Vec<RawMessage> = (0..n)
            .map(|_| {
                self.seq += 1;
                let r = synthetic_result(
                    env("rust-bench", self.seq),
                    "bench_cell",
                    self.seq as u64,
                    triad_tests::now_ns(),
                );
                RawMessage {
                    topic: self.results.clone(),
                    key: "bench_cell".into(),
                    sequence: self.seq,
                    payload: codec::encode(&r).unwrap(),
                }
            })
            .collect();
        let t0 = Instant::now();
        for chunk in msgs.chunks(512) {
            let (k, err) = self.bus.publish_many(chunk).await.unwrap();
            assert!(err.is_none() && k == chunk.len(), "{err:?}");
        }
        n as f64 / t0.elapsed().as_secs_f64()
    }
}

/// One alternating pair's figures.
struct Pair {
    triad_first: bool,
    triad: Vec<f64>,
    other: Vec<f64>,
}

fn print_latency_pairs(title: &str, ours: &str, other: &str, pairs: &[Pair]) {
    println!("\n### {title}\n");
    println!("| pair | first | {ours} p50 | {ours} p99 | {other} p50 | {other} p99 | p99 ratio {ours} / {other} |");
    println!("|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let (t50, t99, o50, o99) = (
            pct(&p.triad, 0.5),
            pct(&p.triad, 0.99),
            pct(&p.other, 0.5),
            pct(&p.other, 0.99),
        );
        ratios.push(t99 / o99);
        println!(
            "| {} | {} | {t50:.0} µs | {t99:.0} µs | {o50:.0} µs | {o99:.0} µs | {:.2} |",
            i + 1,
            if p.triad_first { ours } else { other },
            t99 / o99
        );
    }
    let all_t: Vec<f64> = pairs.iter().flat_map(|p| p.triad.iter().copied()).collect();
    let all_o: Vec<f64> = pairs.iter().flat_map(|p| p.other.iter().copied()).collect();
    println!(
        "| all ({} / {} samples) | | {:.0} µs | **{:.0} µs** | {:.0} µs | {:.0} µs | **{:.2}** |",
        all_t.len(),
        all_o.len(),
        pct(&all_t, 0.5),
        pct(&all_t, 0.99),
        pct(&all_o, 0.5),
        pct(&all_o, 0.99),
        pct(&all_t, 0.99) / pct(&all_o, 0.99)
    );
    println!(
        "\np99 ratio over the {} pairs: median {:.2}, min {:.2}, max {:.2}; p50 ratio of all samples {:.2}; max {ours} {:.0} µs, {other} {:.0} µs",
        pairs.len(),
        median(&ratios),
        pct(&ratios, 0.0),
        pct(&ratios, 1.0),
        pct(&all_t, 0.5) / pct(&all_o, 0.5),
        pct(&all_t, 1.0),
        pct(&all_o, 1.0),
    );
}

fn main() {
    let (service, admin) = pulsar_env();
    let pairs = knob("BENCH_PAIRS", 6);
    let block = knob("BENCH_BLOCK", 500);
    let warmup = knob("BENCH_WARMUP", 2000);
    let thr_block = knob("BENCH_THROUGHPUT_BLOCK", 5000);
    let e2e_block = knob("BENCH_E2E_BLOCK", 40);
    // The node's runtime: one thread (edge/src/cli/mod.rs).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = PulsarConfig::for_url(&service).unwrap();
    cfg.admin_url = admin.clone();
    let id = unique("b");
    let bus = Arc::new(PulsarBus::new(cfg).unwrap());
    let mut triad = Triad {
        bus: bus.clone(),
        control: Topic::control_command(&AxisId::new(format!("ra_{id}")).unwrap()),
        results: Topic::inspection_result(&CellId::new(format!("rc_{id}")).unwrap()),
        seq: 0,
    };
    rt.block_on(async {
        bus.connect().await.unwrap();
        bus.ensure_producer(&triad.control).await.unwrap();
        bus.ensure_producer(&triad.results).await.unwrap();
    });
    let mut py = Reference::start(
        &service,
        &format!("persistent://public/default/ctrl.pa_{id}.cmd"),
        &format!("persistent://public/default/insp.pc_{id}.result"),
    );
    eprintln!("warm-up: {warmup} control sends and {thr_block} results each, alternately");
    for _ in 0..2 {
        rt.block_on(triad.latency(warmup / 2));
        py.latency(warmup / 2);
    }
    rt.block_on(triad.throughput(thr_block));
    py.throughput(thr_block);

    println!("## Pulsar: triad (pulsar-rs) against the Python client (C++), alternating blocks\n");
    println!(
        "{pairs} pairs; latency blocks of {block} sends, throughput blocks of {thr_block} messages; after {warmup} warm-up sends and {thr_block} results each. The first client of a pair alternates."
    );
    let mut lat = Vec::new();
    for i in 0..pairs {
        let triad_first = i % 2 == 0;
        let (t, o) = if triad_first {
            let t = rt.block_on(triad.latency(block));
            (t, py.latency(block))
        } else {
            let o = py.latency(block);
            (rt.block_on(triad.latency(block)), o)
        };
        lat.push(Pair {
            triad_first,
            triad: t,
            other: o,
        });
    }
    print_latency_pairs(
        "Control publish latency (one at a time, receipt awaited)",
        "triad",
        "Python",
        &lat,
    );

    println!("\n### Inspection throughput (pipelined, unbatched)\n");
    println!("| pair | first | triad | Python | ratio triad / Python |");
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for i in 0..pairs {
        let triad_first = i % 2 == 0;
        let (t, o) = if triad_first {
            let t = rt.block_on(triad.throughput(thr_block));
            (t, py.throughput(thr_block))
        } else {
            let o = py.throughput(thr_block);
            (rt.block_on(triad.throughput(thr_block)), o)
        };
        ratios.push(t / o);
        println!(
            "| {} | {} | {t:.0} msg/s | {o:.0} msg/s | {:.2} |",
            i + 1,
            if triad_first { "triad" } else { "Python" },
            t / o
        );
    }
    println!(
        "\nthroughput ratio over the {pairs} pairs: median **{:.2}**, min {:.2}, max {:.2}",
        median(&ratios),
        pct(&ratios, 0.0),
        pct(&ratios, 1.0)
    );
    drop(py);

    if e2e_block > 0 {
        end_to_end(&rt, &mut triad, &service, &admin, &id, pairs, e2e_block);
    }
    // A clean close inside the runtime; dropping the bus afterwards (outside
    // any runtime) must not panic either, and the runtime goes first.
    rt.block_on(bus.close());
    drop(rt);
    drop(triad);
    drop(bus);
}

/// Wait for the next delivery on `sub`, at most `within`.
async fn next(sub: &mut Subscription, within: Duration) -> triad_edge::bus::Delivery {
    tokio::time::timeout(within, sub.next())
        .await
        .expect("no message within the time limit")
        .expect("subscription closed")
}

fn end_to_end(
    rt: &tokio::runtime::Runtime,
    triad: &mut Triad,
    service: &str,
    admin: &str,
    id: &str,
    pairs: usize,
    block: usize,
) {
    let bin = triad_bin();
    let dir = TempDir::new("pulsar-bench-e2e");
    let keys = dir.path().join("keys");
    let o = Command::new(&bin)
        .args(["keys", "gen", "--name", "hmi", "--uses", "command", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "triad keys gen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let key = SigningKey::from_pem(
        "hmi",
        &std::fs::read_to_string(keys.join("hmi.key")).unwrap(),
        "hmi.key",
    )
    .unwrap();
    let suffix = format!("e{id}");
    // BENCH_E2E_TELEMETRY_EVERY: the node's telemetry_every_cycles (default
    // 50 cycles of 1 ms; the state topic gets every 4th sample, and at once
    // the sample of a cycle that applied a command).
    let mut node_cfg = triad_tests::unique_config(&suffix, &triad_tests::pulsar_bus(service, admin, &[]));
    if let Ok(n) = std::env::var("BENCH_E2E_TELEMETRY_EVERY") {
        assert!(
            node_cfg.contains("telemetry_every_cycles = 50"),
            "the default config changed"
        );
        node_cfg = node_cfg.replace("telemetry_every_cycles = 50", &format!("telemetry_every_cycles = {n}"));
    }
    let cfg = format!(
        "{}\n[[security.keys]]\nname = \"hmi\"\npublic_key_file = \"{}\"\nuses = [\"command\"]\n",
        node_cfg,
        keys.join("hmi.pub").display()
    );
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let port = triad_tests::free_port();
    let mut node = Command::new(&bin)
        .args([
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--duration",
            "900s",
            "--config",
        ])
        .arg(&cfg_path)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
        .arg(dir.path().join("state"))
        .env(
            "TRIAD_LOG",
            if std::env::var("BENCH_DEBUG").is_ok() {
                "info"
            } else {
                "warn"
            },
        )
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let axis = format!("axis_{suffix}");
    let device = format!("edge-{suffix}");
    let cmd_topic = Topic::control_command(&AxisId::new(axis.clone()).unwrap());
    let state_topic = Topic::control_state(&AxisId::new(axis.clone()).unwrap());
    let echo_topic = Topic::control_command(&AxisId::new(format!("echo_{id}")).unwrap());
    let bus = triad.bus.clone();
    let token = || {
        let now = triad_tests::now_ns() / 1_000_000_000;
        let claims = Claims {
            iss: "bench-hmi".into(),
            sub: axis.clone(),
            aud: Audience::One(device.clone()),
            nbf: now - 5,
            exp: now + 600,
            iat: Some(now),
            jti: token::new_jti(),
            use_: TokenUse::Command,
            bundle_digest: None,
            bundle_version: None,
            scope: Some(CommandScope {
                axis: axis.clone(),
                actions: vec![CommandAction::SetRate],
                min_ppm: Some(5.0),
                max_ppm: Some(12.0),
            }),
        };
        token::issue(&claims, &key)
    };
    let e2e = rt.block_on(async {
        triad_tests::wait_for_subscription(
            admin,
            &cmd_topic.pulsar_name("public", "default"),
            "triad-node-commands",
        )
        .await;
        bus.ensure_producer(&cmd_topic).await.unwrap();
        bus.ensure_producer(&echo_topic).await.unwrap();
        let mut states = bus.subscribe(&state_topic, &format!("bench-state-{id}")).await.unwrap();
        let mut echo = bus.subscribe(&echo_topic, &format!("bench-echo-{id}")).await.unwrap();
        // The node publishes its state: wait for the first one.
        next(&mut states, Duration::from_secs(30)).await.ack();
        let mut value = 10.0;
        let mut e2e_pairs = Vec::new();
        // One warm-up block of each, then the measured pairs.
        for round in 0..=pairs {
            let mut e2e = Vec::with_capacity(block);
            let mut rtt = Vec::with_capacity(block);
            let e2e_first = round % 2 == 0;
            for half in 0..2 {
                if (half == 0) == e2e_first {
                    for _ in 0..block {
                        value = if value == 10.0 { 11.0 } else { 10.0 };
                        let (_, m) = triad.command(&cmd_topic, &axis, value, Some(token()));
                        let sent_ns = triad_tests::now_ns();
                        let t0 = Instant::now();
                        bus.publish(&m).await.unwrap();
                        loop {
                            assert!(
                                t0.elapsed() < Duration::from_secs(5),
                                "the node did not apply SetRate {value} within 5 s (see its log above)"
                            );
                            let d = next(&mut states, Duration::from_secs(5)).await;
                            let s: ControlState = codec::decode(&d.msg.payload).unwrap();
                            d.ack();
                            if s.ppm_setpoint == value {
                                if std::env::var("BENCH_DEBUG").is_ok() {
                                    eprintln!(
                                        "sent at {sent_ns}: state stamped {:.1} ms after the send, seen after {:.1} ms",
                                        (s.envelope.stamp_ns - sent_ns) as f64 / 1e6,
                                        t0.elapsed().as_secs_f64() * 1e3
                                    );
                                }
                                break;
                            }
                        }
                        e2e.push(t0.elapsed().as_secs_f64() * 1e6);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                } else {
                    for _ in 0..block {
                        let (c, m) = triad.command(&echo_topic, "bench_axis", 10.0, None);
                        let t0 = Instant::now();
                        bus.publish(&m).await.unwrap();
                        loop {
                            let d = next(&mut echo, Duration::from_secs(5)).await;
                            let got: ControlCommand = codec::decode(&d.msg.payload).unwrap();
                            d.ack();
                            if got.command_id == c.command_id {
                                break;
                            }
                        }
                        rtt.push(t0.elapsed().as_secs_f64() * 1e6);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            if round > 0 {
                e2e_pairs.push(Pair {
                    triad_first: e2e_first,
                    triad: e2e,
                    other: rtt,
                });
            }
        }
        e2e_pairs
    });
    let _ = Command::new("kill").arg("-INT").arg(node.id().to_string()).status();
    let status = node.wait().unwrap();
    println!(
        "\n### Control command end to end: client send on ctrl/<axis>/cmd → node (token, gate, ring, applied) → state on ctrl/<axis>/state seen by the client\n"
    );
    println!(
        "Against the same client's round trip through the broker alone (publish, receipt, its own subscriber receives it). {block} commands a block, 10 ms apart, after one warm-up block. telemetry every {} cycles. Node exit: {status}.",
        std::env::var("BENCH_E2E_TELEMETRY_EVERY").unwrap_or_else(|_| "50 (default)".into())
    );
    print_latency_pairs(
        "Command → state against the broker round trip",
        "command → state",
        "round trip",
        &e2e,
    );
}
