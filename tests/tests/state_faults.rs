//! The node's state directory meets the faults of a small flash disk: full,
//! then space back; files damaged or gone after a power cut. Nothing
//! accepted is lost, nothing is sent twice, sequence numbers never go back,
//! and `/healthz` says "degraded" while it is.
//!
//! The disk-full tests mount a small tmpfs (tests run as root here and in
//! CI); they panic with the reason if the mount is refused.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triad_tests::{RecordingMes, TempDir, free_port, node_lock, run_scenario, triad_bin, workspace_root};

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} ({}): this test fills a small disk and needs root (CAP_SYS_ADMIN); run it as root or in the CI container",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system of `path` with a file there until it is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x42u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc_enospc()), "filling: {e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
    n
}

fn libc_enospc() -> i32 {
    28
}

/// The node with its stderr collected.
struct Node {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    listen: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(config: &Path, scenario: &str, extra: &[&str]) -> Node {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(triad_bin())
            .args([
                "run",
                "--sim",
                "--scenario",
                scenario,
                "--duration",
                "120s",
                "--listen",
                &listen,
                "--config",
            ])
            .arg(config)
            .args(extra)
            .current_dir(workspace_root())
            .env("TRIAD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start triad");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, log2) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line);
            }
        });
        Node { child, log, listen }
    }

    fn count(&self, what: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(what)).count()
    }

    fn dump(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    async fn wait_for(&self, what: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(what) < n {
            assert!(
                Instant::now() < deadline,
                "no {what:?} (x{n}) within {limit:?}; log:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn health(&self) -> serde_json::Value {
        // The node may still be starting: retry the connection for 20 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match reqwest::get(format!("http://{}/healthz", self.listen)).await {
                Ok(r) => return r.json().await.unwrap(),
                Err(e) => assert!(Instant::now() < deadline, "no /healthz: {e}; log:\n{}", self.dump()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self, accept: Option<&str>) -> (String, String) {
        let c = reqwest::Client::new();
        let mut r = c.get(format!("http://{}/metrics", self.listen));
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        let r = r.send().await.unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (ct, r.text().await.unwrap())
    }

    async fn wait_health(&self, check: &str, status: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let h = self.health().await;
            if h["checks"][check]["status"] == status {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "{check} not {status} within {limit:?}: {h}\nlog:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "exit {st}; log:\n{}", self.dump());
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(25), "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn config(dir: &Path, state: &Path, extra: &str) -> PathBuf {
    let text = include_str!("../../edge/src/config/default.toml")
        .replace("reserve_mb = 4", "reserve_mb = 2")
        .replace("mes_unreachable_s = 60", "mes_unreachable_s = 1")
        .replace("bus_unreachable_s = 60", "bus_unreachable_s = 1");
    let text = format!("{text}\n{extra}\n").replacen(
        "state_dir = \".triad-state\"",
        &format!("state_dir = \"{}\"", state.display()),
        1,
    );
    let path = dir.join("triad.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn disk_full_then_space_back(bus: Option<String>) {
    let grows = bus.is_some();
    let tmp = TempDir::new("disk-full");
    let state = tmp.path().join("state");
    let _fs = Tmpfs::mount(&state, "16m");
    let cfg = config(tmp.path(), &state, "");
    // The MES is down when the work order is stored; it comes up while the
    // disk is full, so its acceptance cannot be recorded.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/workorders");
    let mut args = vec!["--mes-url", url.as_str()];
    if let Some(b) = &bus {
        args.extend(["--bus", b.as_str()]);
    }
    let mut node = Node::start(&cfg, "weld-step", &args);
    node.wait_for("work order issued", 1, Duration::from_secs(40)).await;
    assert_eq!(
        std::fs::metadata(state.join("outbox.reserve")).map(|m| m.len()).ok(),
        Some(2 * 1024 * 1024),
        "the reserve is preallocated"
    );

    // The disk fills: the outbox releases its reserve and stores on...
    fill(&state.join("filler-1"));
    if grows {
        node.wait_for("released the outbox's reserve", 1, Duration::from_secs(10))
            .await;
        assert!(!state.join("outbox.reserve").exists());
    }
    // ...until the space is taken too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fill(&state.join("filler-2"));
    // With an unreachable broker the outbox grows and must fail; with the
    // embedded bus it reuses its freed pages and may store on. Either way
    // the disk is full, and health says so.
    let h = node.wait_health("storage", "degraded", Duration::from_secs(10)).await;
    assert_eq!(h["status"], "degraded", "{h}");
    let why = h["checks"]["storage"]["detail"].as_str().unwrap();
    assert!(why.contains("disk full"), "{why}");
    let (_, m) = node.metrics(None).await;
    assert!(m.contains("triad_health_status{check=\"storage\"} 1"), "{m}");
    let failing_lines = node.count("outbox storage failing");

    // The MES comes up and accepts: once, although the disk cannot record it.
    let mes = RecordingMes::start(format!("127.0.0.1:{port}").parse().unwrap(), vec![]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while mes.received().is_empty() {
        assert!(Instant::now() < deadline, "the MES got nothing; log:\n{}", node.dump());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mes.received().len(),
        1,
        "a delivery that cannot be recorded is not repeated"
    );
    assert_eq!(
        node.count("outbox storage failing"),
        failing_lines,
        "the fault is logged once"
    );

    // Space comes back: the node recovers by itself.
    std::fs::remove_file(state.join("filler-1")).unwrap();
    std::fs::remove_file(state.join("filler-2")).unwrap();
    node.wait_health("storage", "ok", Duration::from_secs(10)).await;
    let recovered = node.count("outbox storage recovered");
    assert_eq!(
        recovered,
        node.count("outbox storage failing"),
        "each fault's end is logged once:\n{}",
        node.dump()
    );
    assert!(
        !grows || recovered >= 1,
        "a growing outbox met the full disk:\n{}",
        node.dump()
    );
    assert_eq!(
        node.count("inspection result not stored"),
        0,
        "nothing accepted is dropped"
    );
    assert_eq!(node.count("work order not stored"), 0);
    // Stores again: results keep flowing into the outbox.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node.count("Previous I/O error"), 0, "{}", node.dump());
    node.stop();
    assert_eq!(mes.received().len(), 1);

    // A restart on the same state finds it whole and sends nothing twice.
    let r = run_scenario("nominal", "3s", &state, &["--mes-url", &url]).await;
    assert_eq!(r["outbox_pending_mes"], 0, "{r}");
    assert_eq!(
        mes.received().len(),
        1,
        "the recorded delivery is not repeated after a restart"
    );
    mes.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_space_back_with_an_unreachable_broker() {
    let _serial = node_lock().await;
    disk_full_then_space_back(Some(format!("pulsar://127.0.0.1:{}", free_port()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_space_back_with_the_embedded_bus() {
    let _serial = node_lock().await;
    disk_full_then_space_back(None).await;
}

/// Sequence numbers of `topic` (inspection results) that the node gave, as
/// the run report cannot show them: read from the dashboard's recent list.
async fn last_inspection_sequence(listen: &str) -> i64 {
    let s: serde_json::Value = reqwest::get(format!("http://{listen}/api/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s["inspection"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["sequence"].as_i64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_files_are_said_and_sequences_keep_growing() {
    let _serial = node_lock().await;
    let tmp = TempDir::new("damaged");
    let state = tmp.path().join("state");
    let cfg = config(tmp.path(), &state, "");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/workorders");

    // Run 1: a work order waits for the MES (down); results are numbered.
    let mut node = Node::start(&cfg, "weld-step", &["--mes-url", &url]);
    node.wait_for("work order issued", 1, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seq1 = last_inspection_sequence(&node.listen).await;
    assert!(seq1 > 10, "{seq1}");
    node.stop();

    // Power cut while stopped: every state file damaged or gone.
    std::fs::File::create(state.join("outbox.redb")).unwrap(); // 0 bytes
    std::fs::write(state.join("replay.redb"), vec![0x5a; 4096]).unwrap();
    std::fs::remove_file(state.join("audit.jsonl")).ok();
    std::fs::write(state.join("audit.jsonl"), b"{\"torn\": ").unwrap();
    // A deployed bundle whose record is torn (none was deployed in run 1:
    // make the record as a deploy would have left it).
    let target = state.join("models/cell_2245");
    std::fs::create_dir_all(target.join("bundles/0123456789abcdef")).unwrap();
    std::fs::write(target.join("state.json"), b"").unwrap();

    // Run 2: the node starts, says what was lost, numbers on, and the work
    // order of run 1 reaches the MES (from the closed-loop journal).
    let mes = RecordingMes::start(format!("127.0.0.1:{port}").parse().unwrap(), vec![]).await;
    let mut node = Node::start(&cfg, "nominal", &["--mes-url", &url]);
    let h = node.wait_health("storage", "degraded", Duration::from_secs(20)).await;
    let why = h["checks"]["storage"]["detail"].as_str().unwrap().to_string();
    assert!(why.contains("outbox.redb") && why.contains("empty"), "{why}");
    assert!(why.contains("replay.redb") && why.contains("damaged"), "{why}");
    assert!(why.contains("audit.jsonl"), "{why}");
    assert!(why.contains("state.json"), "{why}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while mes.received().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the lost work order was not sent again; log:\n{}",
            node.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seq2 = last_inspection_sequence(&node.listen).await;
    assert!(seq2 > seq1, "sequence numbers never go back: {seq2} after {seq1}");
    assert_eq!(node.count("panicked"), 0, "{}", node.dump());
    node.stop();
    let got = mes.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].body["work_order_id"].as_str().unwrap().starts_with("WO-"));
    mes.stop();
}

/// A replay store damaged by a power cut forgets the used token ids: the
/// node refuses every command token that could have been used before
/// (used or not), says until when, audits it, and takes a token issued
/// after the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_before_a_lost_replay_store_are_refused_and_new_ones_work() {
    let _serial = node_lock().await;
    let tmp = TempDir::new("replay-lost");
    let state = tmp.path().join("state");
    let keys = tmp.path().join("keys");
    let o = triad_tests::triad(
        &[
            "keys",
            "gen",
            "--name",
            "hmi",
            "--uses",
            "command",
            "--out",
            keys.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = config(
        tmp.path(),
        &state,
        &format!(
            "[[security.keys]]\nname = \"hmi\"\npublic_key_file = \"{}\"\nuses = [\"command\"]\n",
            keys.join("hmi.pub").display()
        ),
    );
    // A 1 s clock skew, so that a token issued 2 s after the start is
    // after the loss (the fence refuses iat and nbf before start + skew).
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("clock_skew_s = 60"));
    std::fs::write(&cfg, text.replace("clock_skew_s = 60", "clock_skew_s = 1")).unwrap();
    let token = || triad_tests::command_token(&keys.join("hmi.key"), "SetRate", "10m");
    async fn set_rate(node: &Node, ppm: f64, tok: &str) -> serde_json::Value {
        node.health().await; // up
        reqwest::Client::new()
            .post(format!("http://{}/api/axes/axis_07/commands", node.listen))
            .bearer_auth(tok)
            .json(&serde_json::json!({"action": "SetRate", "value": ppm}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    // Run 1: token A is used; token B is issued but not used.
    let mut node = Node::start(&cfg, "nominal", &[]);
    let (a, b) = (token(), token());
    let v = set_rate(&node, 10.0, &a).await;
    assert_eq!(v["outcome"], "applied", "{v}");
    let v = set_rate(&node, 10.0, &a).await;
    assert_eq!(v["code"], "token_replayed", "{v}");
    node.stop();

    // Power cut while stopped: the replay store is damaged.
    std::fs::write(state.join("replay.redb"), vec![0x5a; 4096]).unwrap();

    // Run 2: both are refused as possibly used before the loss.
    let mut node = Node::start(&cfg, "nominal", &[]);
    for (name, tok) in [("used", &a), ("unused", &b)] {
        let v = set_rate(&node, 9.0, tok).await;
        assert_eq!(v["code"], "token_before_replay_loss", "{name}: {v}");
        let msg = v["reason"].as_str().unwrap_or_default();
        assert!(
            msg.contains("replay store was lost at") && msg.contains("refused until"),
            "{name}: {v}"
        );
    }
    assert!(node.count("refused until") >= 1, "the loss is logged:\n{}", node.dump());
    // A token issued after the start (+ skew) works, once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = token();
    let v = set_rate(&node, 9.0, &c).await;
    assert_eq!(v["outcome"], "applied", "{v}");
    let v = set_rate(&node, 9.0, &c).await;
    assert_eq!(v["code"], "token_replayed", "{v}");
    node.stop();

    // A restart during the fence keeps it.
    let mut node = Node::start(&cfg, "nominal", &[]);
    let v = set_rate(&node, 8.0, &b).await;
    assert_eq!(v["code"], "token_before_replay_loss", "{v}");
    let v = set_rate(&node, 8.0, &token()).await;
    assert_eq!(v["outcome"], "applied", "{v}");
    node.stop();

    // The refusals are audited (repeats within a short time are counted
    // in one record).
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let fenced: i64 = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["code"] == "token_before_replay_loss")
        .map(|r| r["repeats"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(fenced, 3, "{audit}");
}
