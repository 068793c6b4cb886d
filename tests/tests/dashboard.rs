//! The dashboard as a person sees it: headless Chromium loads the page of a
//! running node during `weld-drift` and must show the live values and the alert.
//! Also checks `/api/state`, `/healthz` and `/metrics`, and a line of three
//! stations from `deploy/examples/line-3-stations.toml` with a drift on the
//! second: the overview, every station's view, the MES and the run report.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use triad_tests::{RecordingMes, TempDir, free_port, node_lock, triad_bin, workspace_root};

struct Node(Child);

impl Node {
    /// `triad run --sim` with `args`, its dashboard on `port`, its state in `dir`.
    fn start(port: u16, dir: &std::path::Path, args: &[&str]) -> Self {
        let child = Command::new(triad_bin())
            .args(["run", "--sim"])
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(dir)
            .env("TRIAD_LOG", "warn")
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Node(child)
    }
}

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
    let _node = Node::start(port, dir.path(), &["--scenario", "weld-drift", "--duration", "40s"]);
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
    metrics_contain(
        &http,
        &base,
        &[
            "triad_control_cycles_total",
            "triad_inspection_frames_total",
            "triad_twin_alerts_total{asset=\"battery_pack_89\"} 1",
        ],
    )
    .await;

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

/// `/metrics` of the node at `base`, which must contain every line of `want`.
async fn metrics_contain(http: &reqwest::Client, base: &str, want: &[&str]) -> String {
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in want {
        assert!(metrics.contains(m), "/metrics lacks {m}:\n{metrics}");
    }
    metrics
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_station_line_derates_only_the_drifting_axis_and_shows_all_three() {
    let _serial = node_lock().await;
    let mes = RecordingMes::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let dir = TempDir::new("line3");
    let port = free_port();
    let report = dir.path().join("report.json");
    let mes_url = mes.url();
    let mut node = Node::start(
        port,
        dir.path(),
        &[
            "--config",
            "deploy/examples/line-3-stations.toml",
            "--scenario",
            "weld-drift",
            "--fault-axis",
            "axis_02",
            "--duration",
            "26s",
            "--mes-url",
            &mes_url,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Wait for the drifting station's closed loop, as the overview shows it.
    let deadline = Instant::now() + Duration::from_secs(24);
    let line = loop {
        assert!(Instant::now() < deadline, "no work order on axis_02 within 24 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(l) = get_json(&http, &format!("{base}/api/line")).await else {
            continue;
        };
        if l["stations"][1]["work_orders"] == 1 && l["stations"][1]["axis"]["mode"] == "Derated" {
            break l;
        }
    };
    let st = line["stations"].as_array().unwrap();
    assert_eq!(st.len(), 3, "{line}");
    for (i, (axis, cell, asset)) in [
        ("axis_01", "cell_01", "pack_01"),
        ("axis_02", "cell_02", "pack_02"),
        ("axis_03", "cell_03", "pack_03"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(st[i]["axis"]["id"], axis, "{line}");
        assert_eq!(st[i]["cell"], cell, "{line}");
        assert_eq!(st[i]["asset"], asset, "{line}");
        assert!(
            st[i]["frames"].as_u64().unwrap() > 10,
            "{axis} inspected nothing: {line}"
        );
        if i != 1 {
            assert_eq!(st[i]["axis"]["mode"], "Running", "{line}");
            assert_eq!(st[i]["axis"]["ppm_setpoint"], 12.0, "{line}");
            assert_eq!(st[i]["alerts_total"], 0, "{axis} raised an alert: {line}");
            assert_eq!(st[i]["work_orders"], 0, "{line}");
        }
    }
    assert_eq!(st[1]["axis"]["ppm_setpoint"], 8.0, "{line}");

    // One station's view by its axis; an axis the line lacks is a 404 that names the axes.
    let s2 = get_json(&http, &format!("{base}/api/state?axis=axis_02"))
        .await
        .unwrap();
    assert_eq!(s2["axis"]["id"], "axis_02");
    assert_eq!(s2["twin"]["asset"], "pack_02");
    assert!(s2["chain"]["workorder_ns"].as_i64().is_some(), "{}", s2["chain"]);
    let s1 = get_json(&http, &format!("{base}/api/state")).await.unwrap();
    assert_eq!(s1["axis"]["id"], "axis_01", "the default view is the first station");
    assert!(s1["chain"].is_null(), "{}", s1["chain"]);
    let missing = http.get(format!("{base}/api/state?axis=axis_09")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let why = missing.text().await.unwrap();
    assert!(why.contains("axis_09") && why.contains("axis_03"), "{why}");
    let metrics = metrics_contain(
        &http,
        &base,
        &[
            "triad_twin_alerts_total{asset=\"pack_02\"} 1",
            "triad_inspection_frames_total{cell=\"cell_03\"}",
            "triad_twin_residual_celsius{asset=\"pack_01\"}",
            "triad_io_scans_failed_total{axis=\"axis_03\"} 0",
        ],
    )
    .await;
    assert!(
        !metrics.contains("triad_twin_alerts_total{asset=\"pack_01\"} 1"),
        "{metrics}"
    );

    // What a person sees: the overview lists all three, the station page
    // of axis_02 shows its derate.
    let profile = TempDir::new("chromium-profile-line");
    let out = browse(&format!("{base}/?axis=axis_02"), profile.path(), &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && dom.contains("<html"), "chromium failed");
    for axis in ["axis_01", "axis_02", "axis_03"] {
        assert!(dom.contains(&format!("id=\"station-{axis}\"")), "overview lacks {axis}");
    }
    assert_eq!(text_of(&dom, "axis-id"), "axis_02");
    let mode = text_of(&dom, "axis-mode");
    assert!(mode.contains("Derated"), "axis-mode shows {mode:?}");
    assert!(text_of(&dom, "station-axis_01").contains("axis_01"));

    // The MES got one work order, naming the drifting station.
    let got = mes.received();
    assert_eq!(got.len(), 1, "MES requests: {got:?}");
    let body = &got[0].body;
    assert_eq!(body["asset"], "pack_02");
    assert_eq!(body["axis"], "axis_02");
    assert_eq!(body["cell"], "cell_02");

    // The run report has every station; its top level is the fault axis.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(node.0.try_wait(), Ok(Some(_))) {
        assert!(Instant::now() < deadline, "the node did not stop after --duration");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["axis"], "axis_02");
    assert_eq!(r["ppm_after"], 8.0);
    let rs = r["stations"].as_array().unwrap();
    assert_eq!(rs.len(), 3, "{r}");
    assert_eq!(rs[0]["scenario"], "nominal");
    assert_eq!(rs[1]["scenario"], "weld-drift");
    for i in [0, 2] {
        assert_eq!(rs[i]["mode"], "Running", "{}", rs[i]);
        assert_eq!(rs[i]["ppm_setpoint"], 12.0);
        assert!(rs[i]["alerts"].as_array().unwrap().is_empty(), "{}", rs[i]);
        assert!(rs[i]["chain"].is_null());
    }
    assert_eq!(rs[1]["mode"], "Derated");
    assert_eq!(rs[1]["work_orders"].as_array().unwrap().len(), 1);
}
