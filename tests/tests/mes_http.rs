//! The MES connector against the answers real MES servers and the proxies in
//! front of them give: a work order leaves the outbox only when the MES
//! accepted that POST.
//!
//! The MES here is a small HTTP/1.1 server on a raw socket, so a test can
//! give any answer, cut a connection half-way through the status line, or
//! stream a 1.5 GiB body without holding it in memory. The node is the real
//! `triad` binary running the `weld-drift` scenario, which makes one work
//! order.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use triad_tests::{TempDir, node_lock, run_scenario, triad_bin, workspace_root};

/// What the MES does with one request.
#[derive(Clone, Debug)]
enum Reply {
    /// A complete answer: status, extra headers, body.
    Answer(u16, Vec<(&'static str, String)>, &'static str),
    /// Send the first bytes of a 200's status line, then close the connection.
    Cut,
    /// A 200 that announces 1.5 GiB and streams spaces until the client
    /// closes (or all of it is sent).
    Endless,
}

/// One request the MES received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    idempotency_key: Option<String>,
    body: Vec<u8>,
    at: Instant,
}

/// The body size an [`Reply::Endless`] answer announces.
const ENDLESS_BYTES: u64 = 1536 << 20;

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A scripted MES on a loopback port.
struct ScriptedMes {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Body bytes an endless answer got out before the client closed.
    streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedMes {
    async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let streamed = Arc::new(AtomicU64::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (s, st) = (seen.clone(), streamed.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, script.clone(), s.clone(), st.clone()));
            }
        });
        Self {
            base,
            seen,
            streamed,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ScriptedMes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve the requests of one connection.
async fn serve(mut conn: TcpStream, script: Arc<Script>, seen: Arc<Mutex<Vec<Seen>>>, streamed: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        seen.lock().unwrap().push(req.clone());
        match script(&req) {
            Reply::Answer(status, headers, body) => {
                let mut head = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(body);
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Cut => {
                let _ = conn.write_all(b"HTTP/1.1 20").await;
                let _ = conn.shutdown().await;
                return;
            }
            Reply::Endless => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {ENDLESS_BYTES}\r\n\r\n"
                );
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let filler = vec![b' '; 64 << 10];
                let mut sent = 0u64;
                while sent < ENDLESS_BYTES {
                    match conn.write_all(&filler).await {
                        Ok(()) => {
                            sent += filler.len() as u64;
                            streamed.store(sent, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                return;
            }
        }
    }
}

/// Read one request (head at most 64 KiB, body by Content-Length at most
/// 1 MiB) from `conn`; `buf` carries bytes over between requests.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let mut length = 0usize;
    let mut idempotency_key = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().ok()?,
                "idempotency-key" => idempotency_key = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    if length > 1 << 20 {
        return None;
    }
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Seen {
        method,
        path,
        idempotency_key,
        body,
        at,
    })
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// The POSTs the MES received, in order.
fn posts(mes: &ScriptedMes) -> Vec<Seen> {
    let all = mes.seen();
    assert!(
        all.iter().all(|s| s.method == "POST"),
        "the node sent something other than a POST: {:?}",
        all.iter().map(|s| (&s.method, &s.path)).collect::<Vec<_>>()
    );
    all
}

/// Every request carries the same body and Idempotency-Key.
fn assert_same_work_order(got: &[Seen]) {
    assert!(!got.is_empty());
    let key = got[0].idempotency_key.clone().expect("an Idempotency-Key");
    for s in got {
        assert_eq!(
            s.idempotency_key.as_deref(),
            Some(key.as_str()),
            "{} {}",
            s.method,
            s.path
        );
        assert_eq!(s.body, got[0].body, "{} {}", s.method, s.path);
    }
    assert_eq!(json(&got[0].body)["work_order_id"], key.as_str());
}

/// The report's one work order (a run that made none, e.g. because the
/// line stood in the safe state, fails here and says so).
fn work_order(report: &serde_json::Value) -> &serde_json::Value {
    let wos = report["work_orders"].as_array().expect("work_orders");
    assert_eq!(
        wos.len(),
        1,
        "the run made {} work orders, not 1: alerts {}, axis {} ({}), overruns {}, jitter max {} µs, inspection {}",
        wos.len(),
        report["alerts"],
        report["control"]["mode"],
        report["control"]["safe_state_reason"],
        report["control"]["overruns"],
        report["control"]["jitter_max_us"],
        report["inspection"]
    );
    &wos[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_301_to_the_post_loses_nothing() {
    let _serial = node_lock().await;
    // The tried case: 301 to the POST, and a 200 for whoever follows with a GET.
    let mes = ScriptedMes::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/workorders") => Reply::Answer(301, vec![("location", "/new".into())], "moved"),
        _ => Reply::Answer(200, vec![], "{\"ok\":true}"),
    })
    .await;
    let dir = TempDir::new("mes-301");
    let r = run_scenario("weld-drift", "16s", dir.path(), &["--mes-url", &mes.url("/workorders")]).await;
    let wo = work_order(&r);
    let got = posts(&mes);
    assert!(got.len() >= 2, "kept trying: {got:?}");
    assert!(got.iter().all(|s| s.path == "/workorders"), "the 301 was not followed");
    assert_same_work_order(&got);
    assert!(wo["delivered_ns"].is_null(), "not delivered: {wo}");
    assert_eq!(wo["refused"], false, "{wo}");
    let err = wo["last_error"].as_str().unwrap();
    assert!(
        err.contains("301") && err.contains("/new") && err.contains("[mes] url"),
        "{err}"
    );
    assert_eq!(r["outbox_pending_mes"], 1, "still in the outbox");
    assert_eq!(r["outbox_dead_letters"], 0);

    // The integrator sets [mes] url to the Location: the order arrives there.
    let id = wo["work_order_id"].as_str().unwrap().to_string();
    let r2 = run_scenario("nominal", "4s", dir.path(), &["--mes-url", &mes.url("/new")]).await;
    let at_new: Vec<Seen> = posts(&mes).into_iter().filter(|s| s.path == "/new").collect();
    assert_eq!(at_new.len(), 1, "{at_new:?}");
    assert_eq!(json(&at_new[0].body)["work_order_id"], id.as_str());
    assert_eq!(r2["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_307_and_a_308_are_posted_again_with_the_same_body_and_key() {
    let _serial = node_lock().await;
    let later = Arc::new(Mutex::new(String::new()));
    let l2 = later.clone();
    let mes = ScriptedMes::start(move |s| match s.path.as_str() {
        "/workorders" => Reply::Answer(307, vec![("location", "/maintenance/workorders".into())], ""),
        "/maintenance/workorders" => Reply::Answer(308, vec![("location", l2.lock().unwrap().clone())], ""),
        "/v2/workorders" => Reply::Answer(201, vec![], "{\"ok\":true}"),
        _ => Reply::Answer(404, vec![], "no such path"),
    })
    .await;
    *later.lock().unwrap() = mes.url("/v2/workorders"); // absolute
    let dir = TempDir::new("mes-307");
    let r = run_scenario("weld-drift", "16s", dir.path(), &["--mes-url", &mes.url("/workorders")]).await;
    let wo = work_order(&r);
    let got = posts(&mes);
    assert_eq!(
        got.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        ["/workorders", "/maintenance/workorders", "/v2/workorders"]
    );
    assert_same_work_order(&got);
    assert!(wo["delivered_ns"].as_i64().is_some(), "{wo}");
    assert_eq!(wo["attempts"], 1, "one delivery, three hops: {wo}");
    assert_eq!(r["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_for() {
    let _serial = node_lock().await;
    let n = Arc::new(AtomicU64::new(0));
    let mes = ScriptedMes::start(move |_| {
        if n.fetch_add(1, Ordering::Relaxed) == 0 {
            Reply::Answer(429, vec![("retry-after", "2".into())], "slow down")
        } else {
            Reply::Answer(201, vec![], "{\"ok\":true}")
        }
    })
    .await;
    let dir = TempDir::new("mes-429");
    let r = run_scenario("weld-drift", "18s", dir.path(), &["--mes-url", &mes.url("/workorders")]).await;
    let wo = work_order(&r);
    let got = posts(&mes);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_same_work_order(&got);
    let gap = got[1].at - got[0].at;
    // The backoff alone would have retried after [mes] retry_initial_ms (200 ms).
    assert!(
        gap >= Duration::from_millis(1950) && gap < Duration::from_secs(5),
        "retried {gap:?} after the 429 with Retry-After: 2"
    );
    assert!(wo["delivered_ns"].as_i64().is_some(), "{wo}");
    assert_eq!(wo["attempts"], 2, "{wo}");
    assert_eq!(r["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_then_a_200_delivers_once() {
    let _serial = node_lock().await;
    let script = Mutex::new(VecDeque::from([503, 200]));
    let mes = ScriptedMes::start(move |_| {
        let status = script.lock().unwrap().pop_front().unwrap_or(500);
        Reply::Answer(status, vec![], "{}")
    })
    .await;
    let dir = TempDir::new("mes-503");
    let r = run_scenario("weld-drift", "16s", dir.path(), &["--mes-url", &mes.url("/workorders")]).await;
    let wo = work_order(&r);
    let got = posts(&mes);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_same_work_order(&got);
    assert!(wo["delivered_ns"].as_i64().is_some(), "{wo}");
    assert_eq!(wo["attempts"], 2, "{wo}");
    assert_eq!(r["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_answer_is_retried() {
    let _serial = node_lock().await;
    let n = Arc::new(AtomicU64::new(0));
    let mes = ScriptedMes::start(move |_| {
        if n.fetch_add(1, Ordering::Relaxed) == 0 {
            Reply::Cut
        } else {
            Reply::Answer(201, vec![], "{\"ok\":true}")
        }
    })
    .await;
    let dir = TempDir::new("mes-cut");
    let r = run_scenario("weld-drift", "16s", dir.path(), &["--mes-url", &mes.url("/workorders")]).await;
    let wo = work_order(&r);
    let got = posts(&mes);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_same_work_order(&got);
    assert!(wo["delivered_ns"].as_i64().is_some(), "{wo}");
    assert_eq!(
        wo["attempts"], 2,
        "the cut answer was not taken for an acceptance: {wo}"
    );
    assert_eq!(r["outbox_pending_mes"], 0);
}

/// `VmRSS` and `VmHWM` of `pid` in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Run `weld-drift` against `mes_url`, sampling the node's memory every
/// 20 ms: the report and the samples (time, VmRSS KiB, VmHWM KiB).
async fn run_sampled(dir: &Path, duration: &str, mes_url: &str) -> (serde_json::Value, Vec<(Instant, u64, u64)>) {
    let report: PathBuf = dir.join("report.json");
    let mut child = std::process::Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "weld-drift",
            "--duration",
            duration,
            "--listen",
        ])
        .arg("127.0.0.1:0")
        .arg("--report")
        .arg(&report)
        .arg("--state-dir")
        .arg(dir)
        .args(["--mes-url", mes_url])
        .current_dir(workspace_root())
        .env("TRIAD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run triad");
    let pid = child.id();
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some((rss, hwm)) = memory_kib(pid) {
            samples.push((Instant::now(), rss, hwm));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "triad run failed: {status}");
    let text = std::fs::read_to_string(&report).expect("report written");
    (serde_json::from_str(&text).unwrap(), samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_with_an_endless_body_is_accepted_once_without_swelling() {
    let _serial = node_lock().await;
    let mes = ScriptedMes::start(|_| Reply::Endless).await;
    let dir = TempDir::new("mes-huge");
    let (r, samples) = run_sampled(dir.path(), "16s", &mes.url("/workorders")).await;
    let wo = work_order(&r);
    let got = posts(&mes);
    assert_eq!(got.len(), 1, "accepted once: {got:?}");
    assert!(wo["delivered_ns"].as_i64().is_some(), "{wo}");
    assert_eq!(wo["attempts"], 1, "{wo}");
    assert_eq!(r["outbox_pending_mes"], 0);

    // The node closed the connection instead of reading the body: what got
    // out is what the loopback socket buffers hold, not the 1.5 GiB.
    let streamed = mes.streamed.load(Ordering::Relaxed);
    assert!(streamed < 64 << 20, "the node read {streamed} bytes of the body");

    let post = got[0].at;
    let before: Vec<_> = samples.iter().filter(|s| s.0 < post).collect();
    let after: Vec<_> = samples.iter().filter(|s| s.0 >= post).collect();
    assert!(
        before.len() > 10 && after.len() > 10,
        "{} / {} samples",
        before.len(),
        after.len()
    );
    let (_, rss_before, hwm_before) = **before.last().unwrap();
    let rss_after_max = after.iter().map(|s| s.1).max().unwrap();
    let (_, _, hwm_end) = **after.last().unwrap();
    eprintln!(
        "VmRSS before the POST {rss_before} KiB, max after {rss_after_max} KiB; VmHWM {hwm_before} -> {hwm_end} KiB; {streamed} body bytes left the MES"
    );
    assert!(
        rss_after_max < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after_max} KiB after the answer"
    );
    assert!(
        hwm_end < hwm_before.max(rss_before) + 32 * 1024,
        "peak RSS grew from {hwm_before} KiB to {hwm_end} KiB after the answer"
    );
}
