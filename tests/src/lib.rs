//! # triad-tests: end-to-end tests against real peers
//!
//! Helpers shared by the test files under `tests/tests/`:
//! finding the `triad` binary and the Python venv, running the node as a
//! newcomer would (`triad run --sim …`), a recording MES (an HTTP server that
//! stores every POST with its arrival time), and temporary directories.
//!
//! The README's test command (`scripts/test-all.sh`) builds the binary,
//! prepares the venv and the peers, then runs `cargo test --workspace`.

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

/// Run `triad` with `args` to completion.
pub fn triad(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(triad_bin());
    c.args(args).current_dir(workspace_root()).env("TRIAD_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run triad")
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
