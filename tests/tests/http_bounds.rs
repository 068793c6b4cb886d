//! Every body from outside is bounded before it is buffered, against the
//! real `triad` binary: 200 MB streamed (chunked, never held by the test)
//! or a 1 GiB `Content-Length` at every route of the node's HTTP API and the
//! dashboard. Without a token: 401 before the body is read; with one: 413
//! past the route's bound, 400 naming what to send for malformed JSON. The
//! node's peak RSS (`VmHWM`) must not grow by more than a few MB. Then the
//! refusal flood of issue 16: 2,000 anonymous deploys to a target of 8,000
//! characters leave the state directory small and are counted in the audit.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use triad_tests::{TempDir, free_port, node_lock, triad, triad_bin, workspace_root};

/// What the node may grow by while refusing a 200 MB body, bytes.
const GROWTH_BOUND: u64 = 8 * 1024 * 1024;
const STREAM: u64 = 200 * 1024 * 1024;

struct Node {
    dir: TempDir,
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// A node with the key `ops` (deploy, command) trusted and bundles of at most 1 MB.
    async fn start(name: &str) -> Self {
        let dir = TempDir::new(name);
        let keys = dir.path().join("keys");
        let o = triad(
            &[
                "keys",
                "gen",
                "--name",
                "ops",
                "--uses",
                "deploy,command",
                "--out",
                keys.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let cfg = format!(
            "{}\n[[security.keys]]\nname = \"ops\"\npublic_key_file = \"{}\"\nuses = [\"deploy\", \"command\"]\n",
            include_str!("../../edge/src/config/default.toml").replace("max_bundle_mb = 64", "max_bundle_mb = 1"),
            keys.join("ops.pub").display()
        );
        let cfg_path = dir.path().join("node.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let port = free_port();
        let child = Command::new(triad_bin())
            .args([
                "run",
                "--sim",
                "--scenario",
                "nominal",
                "--config",
                cfg_path.to_str().unwrap(),
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
            ])
            .current_dir(workspace_root())
            .env("TRIAD_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("http://{addr}/api/models"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "node did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { dir, child, addr }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `VmHWM` (peak resident set) of the node, bytes.
    fn peak_rss(&self) -> u64 {
        triad_tests::proc_status_kb(self.child.id(), "VmHWM") * 1024
    }

    fn token(&self, args: &[&str]) -> String {
        let key = self.dir.path().join("keys/ops.key");
        let mut a = vec![
            "token",
            "issue",
            "--key",
            key.to_str().unwrap(),
            "--issuer",
            "alice@plant",
            "--device",
            "edge-01",
        ];
        a.extend_from_slice(args);
        let o = triad(&a, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Send `body_len` bytes (chunked, or with that `Content-Length`) to
    /// `path` on a blocking thread; the answer's status and JSON body.
    async fn post_stream(&self, method: &str, path: &str, token: Option<&str>, body_len: u64, chunked: bool) -> Answer {
        let (addr, method, path, token) = (self.addr, method.to_string(), path.to_string(), token.map(String::from));
        tokio::task::spawn_blocking(move || stream_request(addr, &method, &path, token.as_deref(), body_len, chunked))
            .await
            .unwrap()
    }

    /// Peak RSS growth of the node over `f`, with its answer.
    async fn growth<F: std::future::Future<Output = Answer>>(&self, f: F) -> (Answer, u64) {
        let before = self.peak_rss();
        let a = f.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let grew = self.peak_rss().saturating_sub(before);
        eprintln!(
            "answer {} {}, {} body bytes sent, peak RSS +{grew} bytes",
            a.status, a.body["code"], a.sent
        );
        (a, grew)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    /// Body bytes the test got to send before the answer (or the node closing).
    sent: u64,
}

/// One request over a raw connection: headers, then `body_len` bytes of
/// `x` written 64 KiB at a time by a second thread (so nothing large is
/// ever held here) while this one reads the answer.
fn stream_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body_len: u64,
    chunked: bool,
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent_w = sent.clone();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            let ok = if chunked {
                w.write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|_| w.write_all(&chunk[..n]))
                    .and_then(|_| w.write_all(b"\r\n"))
            } else {
                w.write_all(&chunk[..n])
            };
            if ok.is_err() {
                return;
            }
            left -= n as u64;
            sent_w.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    // Read the answer: headers, then Content-Length bytes (the node's answers are small).
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let (status, body) = loop {
        let n = s.read(&mut tmp).unwrap_or(0);
        assert!(
            n > 0 || !buf.is_empty(),
            "the node closed the connection without an answer"
        );
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if rest.len() >= len || n == 0 {
                break (
                    status,
                    serde_json::from_str(&rest[..len.min(rest.len())]).unwrap_or(Value::Null),
                );
            }
        }
        assert!(n > 0, "the answer was cut: {text}");
    };
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    Answer {
        status,
        body,
        sent: sent.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn without_a_token_no_body_is_read_and_get_routes_read_none() {
    let _g = node_lock().await;
    let node = Node::start("http-anon").await;
    let cases = [
        ("/api/axes/axis_07/commands", "command_unsigned"),
        ("/api/models/cell_2245/deploy", "token_missing"),
        ("/api/models/cell_2245/rollback", "token_missing"),
    ];
    for (path, code) in cases {
        for chunked in [true, false] {
            // Chunked: 200 MB sent as fast as the node takes it. With a
            // length: 1 GiB declared, 200 MB sent at most.
            let len = if chunked { STREAM } else { 1 << 30 };
            let (a, grew) = node
                .growth(node.post_stream("POST", path, None, len.min(STREAM), chunked))
                .await;
            let a = if chunked {
                a
            } else {
                // The declared length is what the node sees first.
                let (b, g2) = node.growth(node.post_stream("POST", path, None, len, false)).await;
                assert!(g2 <= GROWTH_BOUND, "{path}: grew {g2} bytes");
                b
            };
            assert_eq!(a.status, 401, "{path} chunked={chunked}: {a:?}");
            assert_eq!(a.body["code"], code, "{path}: {a:?}");
            assert!(
                a.body["reason"].as_str().unwrap().contains("Authorization: Bearer"),
                "{path}: {a:?}"
            );
            assert!(
                grew <= GROWTH_BOUND,
                "{path} chunked={chunked}: the node grew by {grew} bytes"
            );
        }
    }
    // The dashboard's and the API's GET routes read no body either.
    for path in ["/", "/api/state", "/metrics", "/healthz", "/api/models", "/api/audit"] {
        let (a, grew) = node.growth(node.post_stream("GET", path, None, STREAM, true)).await;
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        assert!(grew <= GROWTH_BOUND, "GET {path}: the node grew by {grew} bytes");
    }
    // The refusals are in the audit trail.
    let audit: Value = reqwest::get(format!("http://{}/api/audit", node.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"command_unsigned") && codes.contains(&"token_missing"),
        "{audit}"
    );
    // And counted: three unsigned commands (chunked, declared twice).
    let metrics = reqwest::get(format!("http://{}/metrics", node.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("triad_commands_total{outcome=\"refused\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_a_token_bodies_past_their_bound_are_413_and_bad_json_is_400() {
    let _g = node_lock().await;
    let node = Node::start("http-bound").await;
    let cmd = |n: &Node| {
        n.token(&[
            "--use",
            "command",
            "--axis",
            "axis_07",
            "--actions",
            "SetRate",
            "--min-ppm",
            "5",
            "--max-ppm",
            "12",
            "--ttl",
            "2m",
        ])
    };
    let path = "/api/axes/axis_07/commands";
    // Commands: a few KiB at most, from the length or as the body arrives.
    for chunked in [false, true] {
        let tok = cmd(&node);
        let len = if chunked { STREAM } else { 1 << 30 };
        let (a, grew) = node
            .growth(node.post_stream("POST", path, Some(&tok), len, chunked))
            .await;
        assert_eq!(a.status, 413, "chunked={chunked}: {a:?}");
        assert_eq!(a.body["code"], "command_too_large", "{a:?}");
        assert!(
            a.body["reason"].as_str().unwrap().contains("at most 4096 bytes"),
            "{a:?}"
        );
        assert!(grew <= GROWTH_BOUND, "chunked={chunked}: the node grew by {grew} bytes");
        assert!(a.sent < STREAM, "the whole body was taken in before the answer");
    }
    // Malformed JSON: 400 naming what to send; an over-long field: 400 naming it.
    let http = reqwest::Client::new();
    let url = format!("http://{}{path}", node.addr);
    let r = http
        .post(&url)
        .bearer_auth(cmd(&node))
        .body("{\"action\": SetRate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "command_malformed", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("send JSON like {\"action\": \"SetRate\""),
        "{v}"
    );
    let r = http
        .post(&url)
        .bearer_auth(cmd(&node))
        .json(&serde_json::json!({"action": "SetRate", "value": 9.0, "command_id": "c".repeat(2000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("`command_id` is 2000 bytes; at most 128"),
        "{v}"
    );
    // A good command still works.
    let r = http
        .post(&url)
        .bearer_auth(cmd(&node))
        .json(&serde_json::json!({"action": "SetRate", "value": 9.0, "reason": "test"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outcome"], "applied", "{v}");

    // Deploys: a checked token, then `models.max_bundle_mb` (1 here).
    let weld = workspace_root().join("inspect/models/weld_seam");
    let bundle = node.dir.path().join("weld-1.1.0");
    let o = triad(
        &[
            "bundle",
            "build",
            "--from",
            weld.to_str().unwrap(),
            "--target",
            "cell_2245",
            "--version",
            "1.1.0",
            "--out",
            bundle.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dtok = node.token(&["--use", "deploy", "--bundle", bundle.to_str().unwrap()]);
    let dpath = "/api/models/cell_2245/deploy";
    for chunked in [false, true] {
        let len = if chunked { STREAM } else { 1 << 30 };
        let (a, grew) = node
            .growth(node.post_stream("POST", dpath, Some(&dtok), len, chunked))
            .await;
        assert_eq!(a.status, 413, "chunked={chunked}: {a:?}");
        assert_eq!(a.body["code"], "bundle_too_large", "{a:?}");
        assert!(
            grew <= GROWTH_BOUND + 1024 * 1024,
            "chunked={chunked}: the node grew by {grew} bytes"
        );
        assert!(a.sent < STREAM, "the whole body was taken in before the answer");
    }
    // A forged deploy token: refused before the body is read.
    let forged = format!("{}x", &dtok[..dtok.len() - 1]);
    let (a, grew) = node
        .growth(node.post_stream("POST", dpath, Some(&forged), STREAM, true))
        .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.body["code"].as_str().unwrap().starts_with("token_"), "{a:?}");
    assert!(grew <= GROWTH_BOUND, "the node grew by {grew} bytes");
}

#[tokio::test]
async fn an_anonymous_flood_leaves_the_state_directory_small_and_is_counted() {
    let _g = node_lock().await;
    let node = Node::start("http-flood").await;
    let state = node.state();
    // Let start-up writes settle, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = dir_size(&state);
    let target = "x".repeat(8_000);
    let url = format!("http://{}/api/models/{target}/deploy", node.addr);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            for _ in (w..2_000).step_by(8) {
                let r = http.post(&url).body("bundle").send().await.unwrap();
                assert_eq!(r.status().as_u16(), 401);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let took = started.elapsed();
    // The counts of the last interval are written within about a second.
    let audit_path = state.join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let n: u64 = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["code"] == "token_missing" && r["action"] == "deploy")
            .map(|r| r["repeats"].as_u64().unwrap_or(1))
            .sum();
        if n >= 2_000 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counted, 2_000, "refusals counted in {}", audit_path.display());
    let text = std::fs::read_to_string(&audit_path).unwrap();
    assert!(
        !text.contains(&"x".repeat(300)),
        "a caller's 8,000-character target was written in full"
    );
    // Outbox and replay store settle in the background; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grew = dir_size(&state).saturating_sub(before);
    assert!(
        grew < 256 * 1024,
        "2,000 refused requests (in {took:?}) grew the state directory by {grew} bytes"
    );
    // The API shows the count too.
    let audit: Value = reqwest::get(format!("http://{}/api/audit", node.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "token_missing" && a["repeats"].as_u64().unwrap_or(0) > 1),
        "{audit}"
    );
}
