//! A stop in the middle of the closed loop loses nothing: SIGINT and SIGTERM
//! take the same orderly stop, which finishes the chain in flight (or, past
//! its budget, leaves it journaled), and the next start completes it; the
//! run report says what was applied.
//!
//! The node is built with the `test-support` feature (on in the workspace
//! build), whose hook `TRIAD_TEST_CHAIN_PAUSE_AT=<step>` /
//! `TRIAD_TEST_CHAIN_PAUSE_MS` pauses the chain before that step, so each
//! test stops the node at a known step instead of racing it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use triad_tests::{RecordingMes, TempDir, free_port, node_lock, run_scenario, triad_bin, workspace_root};

/// A node running `weld-step` (sharp onset at 8 s, alert about 3 s later)
/// whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, mes_url: &str, pause_at: &str, pause_ms: u64) -> Running {
    let mut child = Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "weld-step",
            "--duration",
            "60s",
            "--listen",
            "127.0.0.1:0",
            "--mes-url",
            mes_url,
            "--state-dir",
            &dir.display().to_string(),
            "--report",
            &dir.join("report.json").display().to_string(),
        ])
        .current_dir(workspace_root())
        .env("TRIAD_LOG", "warn")
        .env("TRIAD_TEST_CHAIN_PAUSE_AT", pause_at)
        .env("TRIAD_TEST_CHAIN_PAUSE_MS", pause_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start triad");
    let (tx, rx) = mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stderr, log2) = (child.stderr.take().unwrap(), log.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    Running { child, lines: rx, log }
}

impl Running {
    fn wait_for(&self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!(
            "no {what:?} within {limit:?}; log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    /// Send `signal` and wait for the exit; returns how long the stop took.
    fn stop(&mut self, signal: &str) -> Duration {
        let t0 = Instant::now();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "an orderly stop on {signal} exits 0, got {st}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
                return t0.elapsed();
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no exit 30 s after {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report written")).unwrap()
}

/// Restart on the same state with an MES that accepts; the work order of
/// the interrupted chain must arrive, exactly once.
async fn restart_delivers(
    dir: &Path,
    port: u16,
    mes_503: &RecordingMes,
) -> (serde_json::Value, Vec<triad_tests::MesRequest>) {
    mes_503.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mes = RecordingMes::start(format!("127.0.0.1:{port}").parse().unwrap(), vec![]).await;
    let url = mes.url();
    let r = run_scenario("nominal", "5s", dir, &["--mes-url", &url]).await;
    mes.stop();
    (r, mes.received())
}

async fn stop_at(step: &str, signal: &str) {
    let port = free_port();
    let mes = RecordingMes::start(format!("127.0.0.1:{port}").parse().unwrap(), vec![503; 10_000]).await;
    let url = mes.url();
    let dir = TempDir::new(&format!("stop-{step}-{signal}"));
    let mut node = start(dir.path(), &url, step, 300);
    node.wait_for("test hook: closed loop paused", Duration::from_secs(40));
    let took = node.stop(signal);
    assert!(
        took < Duration::from_secs(10),
        "stop at {step} on {signal} took {took:?}"
    );
    let r = report(dir.path());
    // The chain that had begun was finished before the exit...
    assert!(
        r["chain"]["derate_ns"].as_i64().is_some(),
        "{step}/{signal}: {}",
        r["chain"]
    );
    assert_eq!(r["ppm_before"], 12.0, "{step}/{signal}");
    assert_eq!(r["ppm_after"], 8.0, "{step}/{signal}");
    assert_eq!(
        r["work_orders"].as_array().unwrap().len(),
        1,
        "{step}/{signal}: {}",
        r["work_orders"]
    );
    assert!(r["chain"]["workorder_ns"].as_i64().is_some(), "{step}/{signal}");
    // ...and its work order, refused with 503 so far, waits in the outbox.
    assert_eq!(r["outbox_pending_mes"], 1, "{step}/{signal}");
    let id = r["work_orders"][0]["work_order_id"].as_str().unwrap().to_string();
    let (r2, got) = restart_delivers(dir.path(), port, &mes).await;
    assert_eq!(got.len(), 1, "{step}/{signal}: {got:?}");
    assert_eq!(got[0].body["work_order_id"], id.as_str());
    assert_eq!(got[0].idempotency_key.as_deref(), Some(id.as_str()));
    assert_eq!(r2["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_at_each_step_of_the_chain_finishes_it_on_sigint_and_sigterm() {
    let _serial = node_lock().await;
    for step in ["derate", "alert", "analysis", "workorder"] {
        for signal in ["INT", "TERM"] {
            stop_at(step, signal).await;
        }
    }
}

/// A chain that cannot finish within the stop budget (here: paused for
/// 60 s) is journaled; the next start completes it from the step it reached.
async fn interrupted_at(step: &str, signal: &str, derated_before_stop: bool) {
    let port = free_port();
    let mes = RecordingMes::start(format!("127.0.0.1:{port}").parse().unwrap(), vec![503; 10_000]).await;
    let url = mes.url();
    let dir = TempDir::new(&format!("interrupt-{step}"));
    let mut node = start(dir.path(), &url, step, 60_000);
    node.wait_for("test hook: closed loop paused", Duration::from_secs(40));
    let took = node.stop(signal);
    assert!(took < Duration::from_secs(21), "the stop is bounded, took {took:?}");
    let r = report(dir.path());
    // The report says what was applied, no more.
    assert_eq!(
        r["chain"]["derate_ns"].as_i64().is_some(),
        derated_before_stop,
        "{step}: {}",
        r["chain"]
    );
    assert_eq!(
        r["work_orders"].as_array().unwrap().len(),
        0,
        "{step}: {}",
        r["work_orders"]
    );
    let journals: Vec<_> = std::fs::read_dir(dir.path().join("chains")).unwrap().collect();
    assert_eq!(journals.len(), 1, "the interrupted chain is journaled");
    let alert_id = r["alerts"][0]["alert_id"].as_str().unwrap().to_string();
    let (r2, got) = restart_delivers(dir.path(), port, &mes).await;
    assert_eq!(got.len(), 1, "{step}: {got:?}");
    let wo = &got[0].body;
    assert_eq!(wo["work_order_id"], format!("WO-{alert_id}").as_str());
    assert_eq!(wo["ppm_before"], 12.0, "{wo}");
    assert_eq!(wo["ppm_after"], 8.0, "the derate is in the work order: {wo}");
    assert!(wo["chain"]["derate_ns"].as_i64().is_some(), "{wo}");
    // The second run applied what the first could not, and says so.
    assert_eq!(r2["work_orders"].as_array().unwrap().len(), 1, "{}", r2["work_orders"]);
    if !derated_before_stop {
        assert!(r2["chain"]["derate_ns"].as_i64().is_some(), "{}", r2["chain"]);
        assert_eq!(r2["ppm_after"], 8.0);
    }
    assert_eq!(r2["outbox_pending_mes"], 0);
    // Delivered: the journal is forgotten (swept every 2 s).
    let left = std::fs::read_dir(dir.path().join("chains"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(left, 0, "the journal of a delivered chain is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_the_stop_cannot_finish_is_completed_at_the_next_start() {
    let _serial = node_lock().await;
    interrupted_at("analysis", "TERM", true).await;
    interrupted_at("derate", "INT", false).await;
}
