//! The bus over a real Apache Pulsar broker (started by the test command with
//! deploy/pulsar/standalone): an independent client (Python pulsar-client
//! with its Avro schema support) reads what the node publishes, field for
//! field, and the node reads what that client publishes; incompatible
//! schemas are refused; 10 000 inspection results survive a broker SIGKILL and
//! a node SIGKILL, exactly once and in order; two nodes of one line share the
//! broker and its work-order topic.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use triad_schemas::{ControlState, InspectionResult, TwinAlert, TwinStatus, WorkOrder, codec};
use triad_tests::{
    RecordingMes, TempDir, node_lock, pulsar_env, pulsar_read, python, triad, triad_bin, unique, unique_config,
    workspace_root,
};

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Decode the raw payload with our codec and compare with what Python's
/// Avro decoder made of the same bytes, field by field.
fn same_fields<M: triad_schemas::BusMessage>(msgs: &[serde_json::Value]) -> Vec<M> {
    msgs.iter()
        .map(|m| {
            let ours: M = codec::decode(&b64(m["raw"].as_str().unwrap())).expect("our codec decodes what Python read");
            let ours_json = serde_json::to_value(&ours).unwrap();
            assert_eq!(ours_json, m["record"], "Python and triad disagree on a {:?}", M::KIND);
            ours
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_loop_over_pulsar_is_read_field_for_field_by_the_python_client() {
    let _serial = node_lock().await;
    let (service, admin) = pulsar_env();
    let id = unique("p");
    let dir = TempDir::new("pulsar-loop");
    let cfg = dir.path().join("triad.toml");
    std::fs::write(
        &cfg,
        unique_config(&id, &triad_tests::pulsar_bus(&service, &admin, &[])),
    )
    .unwrap();
    let mes = RecordingMes::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let url = mes.url();
    let r = triad_tests::run_scenario(
        "weld-drift",
        "20s",
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "--mes-url", &url],
    )
    .await;
    assert_eq!(r["outbox_pending_bus"], 0, "everything reached the broker");
    let frames = r["inspection"]["frames"].as_u64().unwrap() as usize;
    let topic = |t: &str| format!("persistent://public/default/{t}");

    // Inspection results: all of them, in order, sequences 1..=n.
    let insp = pulsar_read(
        &service,
        &topic(&format!("insp.cell_{id}.result")),
        "inspection_result.avsc",
        Some(frames),
        None,
    );
    let results: Vec<InspectionResult> = same_fields(&insp);
    assert_eq!(results.len(), frames);
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, r)| r.envelope.sequence == i as i64 + 1),
        "sequences are 1..=n in order"
    );
    assert!(insp.iter().all(|m| m["key"] == format!("cell_{id}")), "keyed by cell");
    assert!(
        results.iter().any(|r| r.verdict == triad_schemas::Verdict::Fail),
        "the drift produced defects"
    );

    // The alert and the work order; the work order equals what the MES got.
    let alerts: Vec<TwinAlert> = same_fields(&pulsar_read(
        &service,
        &topic(&format!("dtwin.pack_{id}.alert")),
        "twin_alert.avsc",
        Some(1),
        None,
    ));
    assert_eq!(alerts[0].alert_id, r["alerts"][0]["alert_id"].as_str().unwrap());
    let wos: Vec<WorkOrder> = same_fields(&pulsar_read(
        &service,
        &topic(&format!("mes.line_{id}.workorder")),
        "work_order.avsc",
        Some(1),
        None,
    ));
    let at_mes = &mes.received()[0].body;
    assert_eq!(
        serde_json::to_value(&wos[0]).unwrap(),
        *at_mes,
        "topic and MES carry the same work order"
    );
    assert_eq!(wos[0].ppm_after, 8.0);

    // Latest-value topics: present and decodable.
    let status: Vec<TwinStatus> = same_fields(&pulsar_read(
        &service,
        &topic(&format!("dtwin.pack_{id}.status")),
        "twin_status.avsc",
        None,
        None,
    ));
    assert!(status.len() > 10, "{} status messages", status.len());
    let state: Vec<ControlState> = same_fields(&pulsar_read(
        &service,
        &topic(&format!("ctrl.axis_{id}.state")),
        "control_state.avsc",
        None,
        None,
    ));
    assert!(state.iter().any(|s| s.mode == triad_schemas::AxisMode::Derated));
}

/// Two nodes with their own ids and stations on one line and one broker:
/// each publishes on its own control, inspection and twin topics, both
/// write the line's work-order topic (a shared producer each), and one
/// subscription reads both work orders, each once with its node's sequence;
/// a restarted node goes on with its own sequence past the other's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_one_line_share_the_broker_and_its_work_order_topic() {
    let _serial = node_lock().await;
    let (service, admin) = pulsar_env();
    let line = unique("l");
    let bus = triad_tests::pulsar_bus(&service, &admin, &[]);
    let mes = RecordingMes::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let url = mes.url();
    let node = |tag: &str| {
        let id = unique(tag);
        let dir = TempDir::new(&format!("pulsar-two-{tag}"));
        let cfg = dir.path().join("triad.toml");
        let text = unique_config(&id, &bus).replace(&format!("\"line_{id}\""), &format!("\"line_{line}\""));
        std::fs::write(&cfg, text).unwrap();
        (id, dir, cfg)
    };
    let (a, dir_a, cfg_a) = node("a");
    let (b, dir_b, cfg_b) = node("b");
    let run = |dir: &TempDir, cfg: &std::path::Path, scenario: &'static str| {
        let (dir, cfg, url) = (dir.path().to_path_buf(), cfg.to_path_buf(), url.clone());
        async move {
            // Two nodes start at once next to the broker on a small
            // machine: 30 s leaves the drift (8 s after the plant's start,
            // alert ~5 s later) room for a slow start.
            triad_tests::run_scenario(
                scenario,
                "30s",
                &dir,
                &["--config", cfg.to_str().unwrap(), "--mes-url", &url],
            )
            .await
        }
    };
    let (ra, rb) = tokio::join!(run(&dir_a, &cfg_a, "weld-drift"), run(&dir_b, &cfg_b, "weld-drift"));
    for r in [&ra, &rb] {
        assert_eq!(r["outbox_pending_bus"], 0, "everything reached the broker: {r}");
        assert_eq!(r["work_orders"].as_array().unwrap().len(), 1, "{r}");
    }
    let topic = format!("persistent://public/default/mes.line_{line}.workorder");
    let wos: Vec<WorkOrder> = same_fields(&pulsar_read(&service, &topic, "work_order.avsc", Some(2), None));
    let mut seen: Vec<(String, i64, String)> = wos
        .iter()
        .map(|w| (w.envelope.node.clone(), w.envelope.sequence, w.asset.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (format!("edge-{a}"), 1, format!("pack_{a}")),
            (format!("edge-{b}"), 1, format!("pack_{b}")),
        ],
        "one subscription reads both nodes' work orders, once each"
    );
    // Each node's own topics carry only its own messages.
    let alerts: Vec<TwinAlert> = same_fields(&pulsar_read(
        &service,
        &format!("persistent://public/default/dtwin.pack_{b}.alert"),
        "twin_alert.avsc",
        Some(1),
        None,
    ));
    assert!(alerts.iter().all(|x| x.envelope.node == format!("edge-{b}")));

    // Node a again, on its state: its next work order is its sequence 2,
    // whatever node wrote the topic's last message.
    let again = run(&dir_a, &cfg_a, "weld-drift").await;
    assert_eq!(again["outbox_pending_bus"], 0, "{again}");
    let wos: Vec<WorkOrder> = same_fields(&pulsar_read(&service, &topic, "work_order.avsc", Some(3), None));
    let mut of_a: Vec<i64> = wos
        .iter()
        .filter(|w| w.envelope.node == format!("edge-{a}"))
        .map(|w| w.envelope.sequence)
        .collect();
    of_a.sort();
    assert_eq!(of_a, vec![1, 2], "node a's work orders on the line topic");
    assert_eq!(mes.received().len(), 3, "the MES got every work order once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reads_commands_the_python_client_publishes() {
    let _serial = node_lock().await;
    let (service, admin) = pulsar_env();
    let id = unique("c");
    let dir = TempDir::new("pulsar-cmd");
    let cfg = dir.path().join("triad.toml");
    std::fs::write(
        &cfg,
        unique_config(&id, &triad_tests::pulsar_bus(&service, &admin, &[])),
    )
    .unwrap();
    let port = triad_tests::free_port();
    let mut node = Command::new(triad_bin())
        .args(["run", "--sim", "--scenario", "nominal", "--duration", "25s", "--config"])
        .arg(&cfg)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(dir.path())
        .env("TRIAD_LOG", "warn")
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // Wait until the node's command subscription exists.
    triad_tests::wait_for_subscription(
        &admin,
        &format!("persistent://public/default/ctrl.axis_{id}.cmd"),
        "triad-node-commands",
    )
    .await;
    let cmd = serde_json::json!({
        "envelope": {"schema_version": 1, "node": "python-client", "sequence": 1, "stamp_ns": triad_tests::now_ns(), "clock": "FreeRunning", "clock_offset_ns": null},
        "command_id": format!("py-{id}"), "axis": format!("axis_{id}"), "action": "SetRate", "value": 10.0,
        "reason": "integration test", "issued_by": "python-pulsar-client", "token": null
    });
    let out = Command::new(python())
        .arg(workspace_root().join("tests/python/pulsar_publish.py"))
        .args([
            "--service",
            &service,
            "--topic",
            &format!("persistent://public/default/ctrl.axis_{id}.cmd"),
            "--record",
            &cmd.to_string(),
        ])
        .arg("--schema")
        .arg(workspace_root().join("schemas/avro/control_command.avsc"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The node decoded it (id and issuer) and refused it: it carries no token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        assert!(Instant::now() < deadline, "the node never reported the command");
        let s: serde_json::Value = http
            .get(format!("{base}/api/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(e) = s["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["text"].as_str().unwrap().contains(&format!("py-{id}")))
        {
            break e.clone();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let text = event["text"].as_str().unwrap();
    assert!(text.contains("python-pulsar-client"), "{text}");
    assert!(
        text.contains("refused") || text.contains("rejected"),
        "an unsigned command must be refused: {text}"
    );
    let s: serde_json::Value = http
        .get(format!("{base}/api/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["axis"]["ppm_setpoint"], 12.0, "the refused command changed nothing");
    let _ = Command::new("kill").arg("-INT").arg(node.id().to_string()).status();
    let _ = node.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_schemas_are_refused_by_the_broker_and_by_the_node() {
    let _serial = node_lock().await;
    let (service, admin) = pulsar_env();
    let id = unique("s");
    let status_topic = format!("dtwin.pack_{id}.status");
    let ours = codec::schema_json(triad_schemas::MessageKind::TwinStatus);

    // 1. Our schema is registered first (as the node does); then a producer
    //    whose `health` is a string is refused by the broker.
    let dir = TempDir::new("pulsar-schema");
    let cfg = dir.path().join("triad.toml");
    std::fs::write(
        &cfg,
        unique_config(&id, &triad_tests::pulsar_bus(&service, &admin, &[])),
    )
    .unwrap();
    let o = triad(
        &[
            "schemas",
            "push",
            "--admin-url",
            &admin,
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let foreign = ours.replacen(
        "\"name\": \"health\",\n      \"type\": \"double\"",
        "\"name\": \"health\",\n      \"type\": \"string\"",
        1,
    );
    assert_ne!(foreign, ours);
    let out = Command::new(python())
        .arg(workspace_root().join("tests/python/pulsar_publish.py"))
        .args([
            "--service",
            &service,
            "--topic",
            &format!("persistent://public/default/{status_topic}"),
            "--schema-json",
            &foreign,
            "--expect-refusal",
        ])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the broker accepted an incompatible producer: {said}"
    );
    assert!(said.contains("IncompatibleSchema"), "{said}");
    assert!(said.contains("strategy BACKWARD"), "the broker names the rule: {said}");

    // 2. A topic whose registry holds that foreign schema: the node refuses to
    //    start that producer, says which field broke which rule, and runs on.
    let id2 = unique("t");
    let topic2 = format!("dtwin.pack_{id2}.status");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{admin}/admin/v2/schemas/public/default/{topic2}/schema"))
        .json(&serde_json::json!({"type": "AVRO", "schema": foreign, "properties": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cfg2 = dir.path().join("triad2.toml");
    std::fs::write(
        &cfg2,
        unique_config(&id2, &triad_tests::pulsar_bus(&service, &admin, &[])),
    )
    .unwrap();
    let o = triad(
        &[
            "schemas",
            "check",
            "--admin-url",
            &admin,
            "--config",
            cfg2.to_str().unwrap(),
        ],
        &[],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("REFUSED  dtwin/pack_{id2}/status")) && said.contains("health"),
        "{said}"
    );
    let state = TempDir::new("pulsar-schema-node");
    let o = triad(
        &[
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--duration",
            "6s",
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg2.to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
        &[("TRIAD_LOG", "warn")],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "the node must run on without that producer: {said}");
    assert!(
        said.contains("producer not started") && said.contains("health"),
        "{said}"
    );
    assert!(said.contains(&format!("dtwin/pack_{id2}/status")), "{said}");
}

fn standalone(args: &[&str]) {
    let st = Command::new(workspace_root().join("deploy/pulsar/standalone"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "deploy/pulsar/standalone {args:?} failed");
}

fn progress(path: &std::path::Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "progress")
        .map(|v| (v["appended"].as_u64().unwrap(), v["pending"].as_u64().unwrap()))
        .unwrap_or((0, u64::MAX))
}

/// When dropped (the test passed or failed), replaces the broker by a fresh
/// one (graceful stop, data removed, start). A standalone broker restarted on
/// the data of a SIGKILLed one can loop re-registering its own bookie
/// (`ResourceLockImpl ... was invalidated`, tens of thousands of times a
/// minute, as in apache/pulsar#17759): it refused new ledgers ("Not enough
/// non-faulty bookies") now and then for minutes and loaded the CPU, and the
/// next test binaries failed (CI of this stop: pulsar_shutdown, and a node
/// of state_faults went to the safe state). The tests after this one need no
/// old data.
struct FreshBrokerAfter {
    /// Broker and admin ports: the same again, the other tests have them in
    /// their environment.
    ports: (String, String),
}

impl FreshBrokerAfter {
    fn new(service: &str, admin: &str) -> Self {
        let port = |url: &str| {
            url.rsplit(':')
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string()
        };
        Self {
            ports: (port(service), port(admin)),
        }
    }
}

impl Drop for FreshBrokerAfter {
    fn drop(&mut self) {
        for args in [&["stop"][..], &["start"][..]] {
            let ok = Command::new(workspace_root().join("deploy/pulsar/standalone"))
                .args(args)
                .env("TRIAD_PULSAR_PORT", &self.ports.0)
                .env("TRIAD_PULSAR_WEB_PORT", &self.ports.1)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("deploy/pulsar/standalone {args:?} failed while replacing the broker");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_results_survive_a_broker_kill_and_a_node_kill_exactly_once_in_order() {
    let _serial = node_lock().await;
    let (service, admin) = pulsar_env();
    let _fresh = FreshBrokerAfter::new(&service, &admin);
    let cell = unique("d");
    let dir = TempDir::new("pulsar-durable");
    let spawn = |log: &std::path::Path| {
        Command::new(triad_bin())
            .args([
                "bus-load",
                "--bus",
                &service,
                "--admin-url",
                &admin,
                "--count",
                "10000",
                "--cell",
                &cell,
                "--state-dir",
            ])
            .arg(dir.path())
            .env("TRIAD_LOG", "error")
            .stdout(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let log1 = dir.path().join("run1.jsonl");
    let mut node = spawn(&log1);
    // Mid-stream (some delivered, most not yet): SIGKILL the broker.
    let t0 = Instant::now();
    while progress(&log1).0 < 1500 {
        assert!(t0.elapsed() < Duration::from_secs(60), "bus-load made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    standalone(&["kill"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // While the broker is down, SIGKILL the node too.
    node.kill().unwrap();
    let _ = node.wait();
    let (appended, pending) = progress(&log1);
    assert!(
        pending > 0 && appended > 1500,
        "the kills must land mid-stream: appended {appended}, pending {pending}"
    );
    standalone(&["start"]);
    // Restart the node on the same state directory: it resumes.
    let log2 = dir.path().join("run2.jsonl");
    let mut node = spawn(&log2);
    let t0 = Instant::now();
    loop {
        if let Some(st) = node.try_wait().unwrap() {
            assert!(st.success(), "bus-load failed after the restarts");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "bus-load did not finish: {:?}",
            progress(&log2)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let topic = format!("persistent://public/default/insp.{cell}.result");
    let msgs = pulsar_read(&service, &topic, "inspection_result.avsc", Some(10_000), None);
    let seqs: Vec<i64> = msgs
        .iter()
        .map(|m| m["record"]["envelope"]["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 10_000, "messages on the topic");
    assert_eq!(
        seqs,
        (1..=10_000).collect::<Vec<i64>>(),
        "every result exactly once, in order"
    );
    // Nothing more arrives later (no late duplicates).
    let again = pulsar_read(&service, &topic, "inspection_result.avsc", None, None);
    assert_eq!(again.len(), 10_000);
}
