//! # triad-tests: end-to-end tests against real peers
//!
//! Helpers shared by the test files under `tests/tests/`:
//! finding the `triad` binary and the Python venv, running the node as a
//! newcomer would (`triad run --sim …`), a recording MES (an HTTP server that
//! stores every POST with its arrival time), and temporary directories.
//!
//! The README's test command (`scripts/test-all.sh`) builds the binary,
//! prepares the venv and the peers, then runs `cargo test --workspace`.

pub mod modbus_peer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `triad` binary built by `cargo build -p triad-edge` (or `TRIAD_BIN`).
pub fn triad_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRIAD_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/triad
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("triad");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p triad-edge` (scripts/test-all.sh does), or set TRIAD_BIN",
        bin.display()
    );
    bin
}

/// The Python of the project's venv (`.venv`, made by scripts/test-all.sh).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TRIAD_PYTHON") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/test-all.sh once to create the venv",
        p.display()
    );
    p
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create `…/triad-test-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("triad-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Nanoseconds since the Unix epoch (the node's system clock).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

/// One POST the MES received.
#[derive(Clone, Debug)]
pub struct MesRequest {
    /// Arrival, ns since the epoch.
    pub received_ns: i64,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Status we answered.
    pub answered: u16,
}

/// A recording MES: answers POST /workorders with the next status of its
/// script (then 201 forever) and keeps every request.
#[derive(Clone)]
pub struct RecordingMes {
    /// Requests so far.
    pub requests: Arc<Mutex<Vec<MesRequest>>>,
    /// Address.
    pub addr: SocketAddr,
    shutdown: Arc<tokio::sync::Notify>,
}

impl RecordingMes {
    /// Start on `addr` (use port 0 for any) with a script of first answers.
    pub async fn start(addr: SocketAddr, script: Vec<u16>) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;
        let requests: Arc<Mutex<Vec<MesRequest>>> = Arc::default();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (reqs, scr) = (requests.clone(), script.clone());
        let app = axum::Router::new().route(
            "/workorders",
            post(move |headers: HeaderMap, body: String| {
                let (reqs, scr) = (reqs.clone(), scr.clone());
                async move {
                    let status = scr.lock().unwrap().pop_front().unwrap_or(201);
                    reqs.lock().unwrap().push(MesRequest {
                        received_ns: now_ns(),
                        idempotency_key: headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from),
                        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                        answered: status,
                    });
                    (StatusCode::from_u16(status).unwrap(), "{\"ok\":true}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind MES");
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s2.notified().await })
                .await;
        });
        Self {
            requests,
            addr,
            shutdown,
        }
    }

    /// `http://addr/workorders`
    pub fn url(&self) -> String {
        format!("http://{}/workorders", self.addr)
    }

    /// Copy of the requests.
    pub fn received(&self) -> Vec<MesRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.shutdown.notify_waiters();
    }
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct free ports (all bound at once, then released: two calls of
/// [`free_port`] in a row may return the same port).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Run `triad` with `args` to completion.
pub fn triad(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(triad_bin());
    c.args(args).current_dir(workspace_root()).env("TRIAD_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run triad")
}

/// A control-command token from `triad token issue`, signed with `key` (a
/// `triad keys gen --uses command` private key), for `axis_07` of
/// `edge-01` (the built-in configuration): `actions` (comma-separated),
/// set-points 5 to 12 PPM, valid for `ttl` (e.g. `2m`).
pub fn command_token(key: &Path, actions: &str, ttl: &str) -> String {
    let o = triad(
        &[
            "token",
            "issue",
            "--key",
            key.to_str().expect("a UTF-8 key path"),
            "--issuer",
            "hmi-3",
            "--device",
            "edge-01",
            "--use",
            "command",
            "--axis",
            "axis_07",
            "--actions",
            actions,
            "--min-ppm",
            "5",
            "--max-ppm",
            "12",
            "--ttl",
            ttl,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Run one simulated scenario and return its report.
pub async fn run_scenario(scenario: &str, duration: &str, state_dir: &Path, extra: &[&str]) -> serde_json::Value {
    let report = state_dir.join("report.json");
    let mut args = vec![
        "run".to_string(),
        "--sim".into(),
        "--scenario".into(),
        scenario.into(),
        "--duration".into(),
        duration.into(),
        "--report".into(),
        report.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--state-dir".into(),
        state_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        triad(&refs, &[])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "triad run {scenario} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

/// Serialises tests that run the whole node: on two cores, two nodes at once
/// would measure each other, not themselves.
pub async fn node_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The broker the test command started (`deploy/pulsar/standalone start`):
/// `(service URL, admin URL)` from `PULSAR_SERVICE_URL` / `PULSAR_ADMIN_URL`.
pub fn pulsar_env() -> (String, String) {
    match (std::env::var("PULSAR_SERVICE_URL"), std::env::var("PULSAR_ADMIN_URL")) {
        (Ok(s), Ok(a)) => (s, a),
        _ => panic!(
            "no Pulsar broker: run `eval \"$(deploy/pulsar/standalone start)\"` and export PULSAR_SERVICE_URL and PULSAR_ADMIN_URL, or run scripts/test-all.sh, which does"
        ),
    }
}

/// A suffix unique to this test run, for topic and id names.
pub fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{tag}{}x{t}x{n}", std::process::id())
}

/// The built-in config with every id made unique by `suffix` (so topics of
/// one test do not mix with another's) and `extra` appended.
pub fn unique_config(suffix: &str, extra: &str) -> String {
    let base = include_str!("../../edge/src/config/default.toml");
    let mut text = base
        .replace("\"edge-01\"", &format!("\"edge-{suffix}\""))
        .replace("\"axis_07\"", &format!("\"axis_{suffix}\""))
        .replace("\"cell_2245\"", &format!("\"cell_{suffix}\""))
        .replace("\"battery_pack_89\"", &format!("\"pack_{suffix}\""))
        .replace("\"line_1\"", &format!("\"line_{suffix}\""));
    if !extra.is_empty() {
        // Replace the [bus] table when the extra text brings its own.
        if extra.contains("[bus]") {
            text = text.replace("[bus]\nbackend = \"embedded\"\n", "");
        }
        text.push('\n');
        text.push_str(extra);
    }
    text
}

/// A `[bus]` table for a Pulsar broker at `url` (binary) and `admin`
/// (REST), with `more` key lines (e.g. `token_file = "…"`) appended.
pub fn pulsar_bus(url: &str, admin: &str, more: &[String]) -> String {
    let mut t = format!("[bus]\nbackend = \"pulsar\"\nurl = \"{url}\"\nadmin_url = \"{admin}\"\n");
    for line in more {
        t.push_str(line);
        t.push('\n');
    }
    t
}

/// Wait (20 s at most) until `subscription` exists on `topic` (full Pulsar
/// name, `persistent://…`), as the broker's admin API at `admin` lists it:
/// a node subscribes in the background, and a message sent before that is
/// not for it.
pub async fn wait_for_subscription(admin: &str, topic: &str, subscription: &str) {
    let url = format!("{admin}/admin/v2/{}/subscriptions", topic.replacen("://", "/", 1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no subscription {subscription} on {topic} after 20 s"
        );
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
            && r.text().await.unwrap_or_default().contains(subscription)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Read `topic` (full Pulsar name) from the earliest message with the
/// Python client; returns one JSON value per message (`record`, `raw`,
/// `properties`, `key`).
pub fn pulsar_read(
    service: &str,
    topic: &str,
    avsc: &str,
    expect: Option<usize>,
    token_file: Option<&Path>,
) -> Vec<serde_json::Value> {
    let mut c = Command::new(python());
    c.arg(workspace_root().join("tests/python/pulsar_read.py"))
        .args(["--service", service, "--topic", topic, "--timeout", "5"])
        .arg("--schema")
        .arg(workspace_root().join("schemas/avro").join(avsc));
    if let Some(n) = expect {
        c.args(["--expect", &n.to_string()]);
    }
    if let Some(t) = token_file {
        c.arg("--token-file").arg(t);
    }
    let out = c.output().expect("run pulsar_read.py");
    assert!(
        out.status.success(),
        "pulsar_read.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// An inspector of the built-in weld model over the simulated camera's ROI
/// (the node's default cell), for tests and benchmarks.
pub fn weld_inspector() -> triad_inspect::Inspector {
    use triad_hw::sim::camera::{ROI_H, ROI_W, ROI_X, ROI_Y};
    let model = Arc::new(triad_inspect::builtin::weld_seam().expect("the built-in model loads"));
    let roi = triad_inspect::Roi {
        x: ROI_X,
        y: ROI_Y,
        w: ROI_W,
        h: ROI_H,
    };
    triad_inspect::Inspector::new(triad_inspect::InspectorConfig { roi, threshold: 0.5 }, &model)
        .expect("the ROI fits the model")
}

/// A `kB` field (`VmRSS`, `VmHWM`, …) of `/proc/<pid>/status`, in KiB (0
/// if the process or the field is gone).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let rest = l.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

/// `n` axes of the default weld line (12 PPM nominal, 1–15 PPM, running)
/// for the control benchmarks, started at `now_ns`, and the other ends of
/// their rings. Stale-input and watchdog bounds are 1 s: a benchmark's
/// feeder is a plain thread, and the safe state is not what it measures.
pub fn bench_axes(
    n: usize,
    now_ns: i64,
) -> (
    Vec<triad_edge::control::AxisLoop>,
    Vec<triad_edge::control::ControlEndpoints>,
) {
    use triad_edge::control::{AxisLimits, AxisLoop, AxisProgram, rings::control_rings};
    let limits = AxisLimits {
        nominal_ppm: 12.0,
        min_ppm: 1.0,
        max_ppm: 15.0,
        weld_current_a: 5000.0,
        start_running: true,
        input_stale_ns: 1_000_000_000,
        watchdog_ns: 1_000_000_000,
    };
    (0..n)
        .map(|_| {
            let (rings, ends) = control_rings();
            (AxisLoop::new(AxisProgram::new(limits, now_ns), rings), ends)
        })
        .unzip()
}
