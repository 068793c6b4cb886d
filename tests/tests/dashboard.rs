//! The dashboard as a person sees it: headless Chromium loads the page of a
//! running node during `weld-drift` and must show the live values and the alert.
//! Also checks `/api/state`, `/healthz` and `/metrics`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use triad_tests::{TempDir, free_port, node_lock, triad_bin, workspace_root};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        // SIGINT: the node stops in order (safe outputs, outbox flushed).
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
    }
}

/// The first non-empty text node inside the element with `id` in a
/// serialised DOM (where the page puts the raw value).
fn text_of(dom: &str, id: &str) -> String {
    let pat = format!("id=\"{id}\"");
    let Some(at) = dom.find(&pat) else { return String::new() };
    let rest = &dom[at..];
    let Some(open_end) = rest.find('>') else {
        return String::new();
    };
    let mut text = String::new();
    let mut in_tag = false;
    for ch in rest[open_end + 1..].chars().take(4000) {
        match ch {
            '<' => {
                if !text.trim().is_empty() {
                    break;
                }
                in_tag = true;
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_string()
}

fn chromium() -> String {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(c).exists() {
            return c.into();
        }
    }
    panic!("no Chromium found: install it with `apt-get install chromium` (scripts/test-all.sh does)");
}

fn browse(url: &str, profile: &std::path::Path, extra: &[String]) -> std::process::Output {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,1100",
        "--virtual-time-budget=3000",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c.args(extra).arg(url).stdin(Stdio::null());
    c.output().expect("run chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_live_values_and_the_alert() {
    let _serial = node_lock().await;
    let dir = TempDir::new("dash");
    let port = free_port();
    let child = Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "weld-drift",
            "--duration",
            "40s",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(dir.path())
        .env("TRIAD_LOG", "warn")
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _node = Node(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Wait for the closed loop to complete (work order issued).
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        assert!(Instant::now() < deadline, "no work order within 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(r) = http.get(format!("{base}/api/state")).send().await else {
            continue;
        };
        let s: serde_json::Value = r.json().await.unwrap();
        if s["chain"]["workorder_ns"].as_i64().is_some() {
            break s;
        }
    };
    // The axis view follows the control thread's telemetry samples (one
    // every 50 ms), while the derate and the work order come within ~10 ms
    // of the alert: wait up to 1 s for the sample after the derate.
    let mut state = state;
    let settle = Instant::now() + Duration::from_secs(1);
    while state["axis"]["mode"] != "Derated" && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = http
            .get(format!("{base}/api/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    assert_eq!(state["axis"]["mode"], "Derated");
    assert_eq!(state["alerts"][0]["state"], "Raised");

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let h: serde_json::Value = health.json().await.unwrap();
    assert_eq!(h["checks"]["control"]["status"], "ok", "{h}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        "triad_control_cycles_total",
        "triad_inspection_frames_total",
        "triad_twin_alerts_total 1",
    ] {
        assert!(metrics.contains(m), "/metrics lacks {m}:\n{metrics}");
    }

    // What a person sees.
    let profile = TempDir::new("chromium-profile");
    let out = browse(&format!("{base}/"), profile.path(), &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && dom.contains("<html"),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = text_of(&dom, "axis-mode");
    assert!(mode.contains("Derated"), "axis-mode shows {mode:?}");
    let sp = text_of(&dom, "ppm-setpoint");
    assert!(sp.trim_start().starts_with("8.0"), "ppm-setpoint shows {sp:?}");
    let temp: f64 = text_of(&dom, "weld-temp")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .unwrap_or(0.0);
    assert!(temp > 100.0 && temp < 300.0, "weld-temp shows {temp}");
    let banner = text_of(&dom, "alert-banner");
    assert!(banner.contains("weld temperature"), "alert-banner shows {banner:?}");
    let frames: f64 = text_of(&dom, "inspection-frames").trim().parse().unwrap_or(0.0);
    assert!(frames > 10.0, "inspection-frames shows {frames}");
    assert!(text_of(&dom, "work-orders").contains("WO-"), "work orders not shown");

    // A screenshot for people reading the test output.
    let shot = workspace_root().join("target/dashboard-test.png");
    // target/ may live elsewhere (CARGO_TARGET_DIR): make the folder.
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let out = browse(
        &format!("{base}/"),
        profile.path(),
        &[format!("--screenshot={}", shot.display())],
    );
    assert!(out.status.success());
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "screenshot missing or empty"
    );
}
