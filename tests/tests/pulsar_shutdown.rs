//! Shutting down over Pulsar never panics and loses nothing, against the real
//! broker (started by the test command with deploy/pulsar/standalone).
//!
//! pulsar-rs spawns a task from the `Drop` of every producer and consumer; with
//! its `TokioExecutor` that panicked ("there is no reactor running") whenever a
//! bus was dropped outside a runtime. Here: a bus dropped on a plain thread
//! while its runtime runs (the broker is told), a bus dropped after its
//! runtime ended, and the node stopped while the broker is unreachable and
//! while a publish is pending (broker paused with SIGSTOP). In the node's
//! cases what was accepted stays in the outbox and reaches the topic, once
//! and in order, when the node runs again.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triad_edge::bus::pulsar::PulsarBus;
use triad_edge::bus::{Bus, RawMessage};
use triad_edge::config::PulsarConfig;
use triad_schemas::ids::AxisId;
use triad_schemas::{ClockState, CommandAction, ControlCommand, Envelope, Topic, codec};
use triad_tests::{TempDir, node_lock, pulsar_env, pulsar_read, triad_bin, unique, unique_config, workspace_root};

/// The tests without a node use the broker while the node tests run; the one
/// that pauses the broker (SIGSTOP) takes this for writing, so it never
/// freezes the broker under another test's connect or publish (CI of stop 9:
/// both bus tests failed while the broker was paused).
static BROKER_IN_USE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn bus(service: &str, admin: &str) -> PulsarBus {
    let mut cfg = PulsarConfig::for_url(service).unwrap();
    cfg.admin_url = admin.into();
    PulsarBus::new(cfg).unwrap()
}

fn command(topic: &Topic, seq: i64) -> RawMessage {
    let c = ControlCommand {
        envelope: Envelope {
            schema_version: 1,
            node: "shutdown-test".into(),
            sequence: seq,
            stamp_ns: triad_tests::now_ns(),
            clock: ClockState::FreeRunning,
            clock_offset_ns: None,
        },
        command_id: format!("c-{seq}"),
        axis: "shutdown_axis".into(),
        action: CommandAction::SetRate,
        value: Some(10.0),
        reason: "shutdown test".into(),
        issued_by: "test".into(),
        token: None,
    };
    RawMessage {
        topic: topic.clone(),
        key: "test".into(),
        sequence: seq,
        payload: codec::encode(&c).unwrap(),
    }
}

/// How many producers the broker lists on `topic` (its admin stats).
fn publishers(admin: &str, topic: &Topic) -> usize {
    let url = format!(
        "{admin}/admin/v2/{}/stats",
        topic.pulsar_name("public", "default").replacen("://", "/", 1)
    );
    let v: serde_json::Value = http::get_json(&url);
    v["publishers"].as_array().map(Vec::len).unwrap_or(0)
}

/// Wait (10 s at most) until the broker lists no producer on `topic`.
fn wait_no_publisher(admin: &str, topic: &Topic) {
    let t0 = Instant::now();
    while publishers(admin, topic) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the broker still lists a producer on {topic} 10 s after the bus was dropped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

mod http {
    /// GET `url` as JSON on a throw-away runtime (the callers run on plain threads).
    pub fn get_json(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
    }
}

#[test]
fn a_bus_dropped_on_a_thread_outside_its_running_runtime_closes_its_producer_without_a_panic() {
    let _broker = BROKER_IN_USE.blocking_read();
    let (service, admin) = pulsar_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let topic = Topic::control_command(&AxisId::new(unique("sd_a")).unwrap());
    let bus = Arc::new(bus(&service, &admin));
    rt.block_on(async {
        bus.connect().await.unwrap();
        bus.publish(&command(&topic, 1)).await.unwrap();
        let _sub = bus.subscribe(&topic, "shutdown-test").await.unwrap();
    });
    assert_eq!(publishers(&admin, &topic), 1, "the producer is open");
    // This thread is outside the runtime (block_on returned); the runtime's
    // worker still runs, so the producer's close reaches the broker.
    std::thread::spawn(move || drop(bus))
        .join()
        .expect("dropping the bus panicked");
    wait_no_publisher(&admin, &topic);
    drop(rt);
}

#[test]
fn a_bus_dropped_after_its_runtime_ended_does_not_panic() {
    let _broker = BROKER_IN_USE.blocking_read();
    let (service, admin) = pulsar_env();
    let topic = Topic::control_command(&AxisId::new(unique("sd_b")).unwrap());
    let bus = Arc::new(bus(&service, &admin));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sub = rt.block_on(async {
        bus.connect().await.unwrap();
        let sub = bus.subscribe(&topic, "shutdown-test").await.unwrap();
        for seq in 1..=3 {
            bus.publish(&command(&topic, seq)).await.unwrap();
        }
        sub
    });
    assert_eq!(publishers(&admin, &topic), 1, "the producer is open");
    drop(rt);
    // The runtime is gone: the subscription ends, and dropping the bus (its
    // client, producer and connection) must neither panic nor hang.
    let t0 = Instant::now();
    drop(bus);
    assert!(t0.elapsed() < Duration::from_secs(1), "dropping the bus blocked");
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        rt2.block_on(async { tokio::time::timeout(Duration::from_secs(5), sub.next()).await })
            .expect("the subscription of a bus whose runtime ended must end, not hang")
            .is_none(),
        "no delivery after the runtime ended"
    );
    // The socket closed with the runtime: the broker drops the producer.
    wait_no_publisher(&admin, &topic);
}

/// Spawn `triad run --sim` on `dir` with the [bus] table `bus`, for `duration`.
fn spawn_node(dir: &std::path::Path, id: &str, bus: &str, duration: &str, report: &str) -> std::process::Child {
    let cfg = dir.join("triad.toml");
    std::fs::write(&cfg, unique_config(id, bus)).unwrap();
    Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--duration",
            duration,
            "--config",
        ])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir)
        .arg("--report")
        .arg(dir.join(report))
        .env("TRIAD_LOG", "warn")
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for `child` (at most `within`) and return its stderr; asserts that
/// it exited successfully and that nothing panicked.
fn finished(child: std::process::Child, within: Duration, what: &str) -> String {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(within) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("{what}: the node did not stop within {within:?}");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{what}: the node panicked:\n{stderr}");
    assert!(
        out.status.success(),
        "{what}: the node exited with {}:\n{stderr}",
        out.status
    );
    stderr
}

fn report(dir: &std::path::Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect("report written")).unwrap()
}

/// Run the node again on `dir` against the live broker until its outbox is
/// empty; then every inspection result is on the topic once, in order.
fn resumes_and_delivers_everything(dir: &std::path::Path, id: &str, service: &str, admin: &str, at_least: u64) {
    let child = spawn_node(
        dir,
        id,
        &triad_tests::pulsar_bus(service, admin, &[]),
        "8s",
        "report2.json",
    );
    finished(child, Duration::from_secs(60), "second run");
    let r = report(dir, "report2.json");
    assert_eq!(r["outbox_pending_bus"], 0, "the second run delivered the outbox: {r}");
    let topic = format!("persistent://public/default/insp.cell_{id}.result");
    let msgs = pulsar_read(service, &topic, "inspection_result.avsc", None, None);
    let seqs: Vec<i64> = msgs
        .iter()
        .map(|m| m["record"]["envelope"]["sequence"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.len() as u64 >= at_least,
        "{} results on the topic, fewer than the {at_least} the first run accepted",
        seqs.len()
    );
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "every accepted result reached the topic once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_while_the_broker_is_unreachable_exits_cleanly_and_keeps_its_messages() {
    let _serial = node_lock().await;
    let (service, admin) = pulsar_env();
    let id = unique("sdd");
    let dir = TempDir::new("pulsar-shutdown-down");
    // Nothing listens on these ports: the broker is down for this node.
    let dead = format!("pulsar://127.0.0.1:{}", triad_tests::free_port());
    let dead_admin = format!("http://127.0.0.1:{}", triad_tests::free_port());
    let d = dir.path().to_path_buf();
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || {
        let child = spawn_node(
            &d,
            &id2,
            &triad_tests::pulsar_bus(&dead, &dead_admin, &["operation_timeout_ms = 2000".into()]),
            "8s",
            "report1.json",
        );
        finished(child, Duration::from_secs(60), "run with the broker down");
        let r = report(&d, "report1.json");
        let frames = r["inspection"]["frames"].as_u64().unwrap();
        let pending = r["outbox_pending_bus"].as_u64().unwrap();
        assert!(frames > 0, "the run inspected nothing: {r}");
        assert!(
            pending >= frames,
            "with the broker down every result waits in the outbox: {pending} pending, {frames} frames"
        );
        resumes_and_delivers_everything(&d, &id2, &service, &admin, frames);
    })
    .await
    .unwrap();
}

/// The running broker's pid, from `deploy/pulsar/standalone env` (other
/// tests kill and restart the broker, so the pid printed at the first start
/// may be gone); `PULSAR_PID` if the script cannot tell.
fn broker_pid() -> String {
    let out = Command::new(workspace_root().join("deploy/pulsar/standalone"))
        .arg("env")
        .output()
        .expect("deploy/pulsar/standalone env");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("PULSAR_PID=").map(str::to_string))
        .or_else(|| std::env::var("PULSAR_PID").ok())
        .expect("no broker pid: start the broker with `deploy/pulsar/standalone start` (this test pauses it)")
}

/// Resumes a SIGSTOPped broker when dropped, whatever happens in the test.
struct Paused(String);

impl Paused {
    fn new(pid: String) -> Self {
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_while_a_publish_is_pending_exits_cleanly_and_keeps_its_messages() {
    let _serial = node_lock().await;
    let _broker = BROKER_IN_USE.write().await;
    let (service, admin) = pulsar_env();
    let pid = broker_pid();
    let id = unique("sdp");
    let dir = TempDir::new("pulsar-shutdown-pending");
    let child = spawn_node(
        dir.path(),
        &id,
        &triad_tests::pulsar_bus(&service, &admin, &["operation_timeout_ms = 5000".into()]),
        "60s",
        "report1.json",
    );
    triad_tests::wait_for_subscription(
        &admin,
        &format!("persistent://public/default/ctrl.axis_{id}.cmd"),
        "triad-node-commands",
    )
    .await;
    // Let results flow, then freeze the broker: the publishes in flight get
    // no receipt. Stop the node (SIGINT) while they are pending.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused = Paused::new(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let d = dir.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        finished(child, Duration::from_secs(45), "stop while a publish is pending");
        report(&d, "report1.json")
    })
    .await
    .unwrap();
    drop(paused);
    let frames = r["inspection"]["frames"].as_u64().unwrap();
    let pending = r["outbox_pending_bus"].as_u64().unwrap();
    assert!(
        pending > 0,
        "results made while the broker was paused wait in the outbox: {r}"
    );
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || resumes_and_delivers_everything(&d, &id, &service, &admin, frames))
        .await
        .unwrap();
}
