//! Fuzzing the body (and head) of every HTTP route of a whole node (issue 9).
//!
//! The node runs in this process (`node::run` with the simulated line and
//! the embedded bus, as `triad run --sim` does), trusting one key made from
//! a fixed seed for deploy, rollback and command tokens. Requests are raw
//! HTTP/1.1 bytes over TCP, so the request line, headers, declared lengths
//! and bodies are all fuzzed; seeds are in `fuzz/corpus/http/`, one request
//! per file, where `{TOKEN:deploy}` (`rollback`, `command`) becomes a fresh
//! valid token and `{LEN}` the length of the body as sent.
//!
//! Every request gets an answer that is never a 5xx other than 503, or a
//! close for bytes that are not HTTP; a request that declares more bytes
//! than it sends may wait, but the node then still answers `/healthz` at
//! once. A request declaring 1 GiB is answered 401 or 413 within 2 s,
//! without the node waiting for the GiB. After the campaign the node still answers `/healthz`, and
//! its resident memory has not grown by more than `RSS_GROWTH_MAX`.
//!
//! `cargo test --workspace --test fuzz_http` runs 2 s of fuzzing after the
//! seeds; `scripts/fuzz.sh` runs it longer.

#[path = "../../fuzz/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{Stats, budget, corpus, mutate};
use triad_edge::config;
use triad_edge::node::{RunOptions, run};
use triad_edge::scenario;
use triad_edge::trust::keys::{SigningKey, private_pem, public_base64};
use triad_edge::trust::token::{Audience, Claims, CommandScope, TokenUse, issue, new_jti};

/// Most resident memory the node may gain over the campaign.
const RSS_GROWTH_MAX: u64 = 256 * 1024 * 1024;
/// Longest wait for an answer after the request is sent.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// The same while fuzzing: a request still waiting after this is taken as
/// waiting for bytes it declared (and the node must then answer `/healthz`).
const FUZZ_ANSWER_WITHIN: Duration = Duration::from_millis(300);

fn key() -> SigningKey {
    SigningKey::from_pem("ops", &private_pem(&[7; 32]), "fuzz seed").unwrap()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(k: &SigningKey, use_: TokenUse) -> String {
    let now = now_s();
    let (sub, scope, digest, version) = match use_ {
        TokenUse::Command => (
            "axis_07",
            Some(CommandScope {
                axis: "axis_07".into(),
                actions: vec![
                    triad_schemas::CommandAction::SetRate,
                    triad_schemas::CommandAction::Derate,
                    triad_schemas::CommandAction::Stop,
                    triad_schemas::CommandAction::Start,
                ],
                min_ppm: Some(1.0),
                max_ppm: Some(15.0),
            }),
            None,
            None,
        ),
        TokenUse::Deploy => (
            "cell_2245",
            None,
            Some(format!("sha256:{}", "ab".repeat(32))),
            Some("9.9.9".to_string()),
        ),
        TokenUse::Rollback => ("cell_2245", None, None, None),
    };
    issue(
        &Claims {
            iss: "fuzz".into(),
            sub: sub.into(),
            aud: Audience::One("edge-01".into()),
            nbf: now - 5,
            exp: now + 300,
            iat: Some(now - 5),
            jti: new_jti(),
            use_,
            bundle_digest: digest,
            bundle_version: version,
            scope,
        },
        k,
    )
}

/// Fill the placeholders of a request seed.
fn fill(k: &SigningKey, raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    for (mark, use_) in [
        (&b"{TOKEN:deploy}"[..], TokenUse::Deploy),
        (b"{TOKEN:rollback}", TokenUse::Rollback),
        (b"{TOKEN:command}", TokenUse::Command),
    ] {
        while let Some(i) = find(&out, mark) {
            out.splice(i..i + mark.len(), token(k, use_).into_bytes());
        }
    }
    if let Some(i) = find(&out, b"{LEN}") {
        let body = find(&out, b"\r\n\r\n").map_or(0, |h| out.len() - (h + 4));
        out.splice(i..i + 5, body.to_string().into_bytes());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What the node did with a request.
#[derive(Debug, PartialEq)]
enum Answer {
    /// It answered with this status.
    Status(u16),
    /// It closed the connection without an answer.
    Closed,
    /// Nothing within [`ANSWER_WITHIN`]: it waits for more bytes (a body
    /// or headers the request declared and did not send).
    Waiting,
}

/// Send `request` and read the status of the answer. The client does not
/// half-close (hyper drops a request whose client did).
fn send(addr: SocketAddr, request: &[u8], within: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).expect("the node accepts connections");
    s.set_read_timeout(Some(within)).unwrap();
    s.set_write_timeout(Some(ANSWER_WITHIN)).unwrap();
    // The node may answer (413, 401) and close before reading the body.
    let _ = s.write_all(request);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.len() >= 12 {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Answer::Waiting;
            }
            Err(_) => break,
        }
    }
    if head.is_empty() {
        return Answer::Closed;
    }
    assert!(
        head.starts_with(b"HTTP/1."),
        "not an HTTP answer: {:?}",
        String::from_utf8_lossy(&head)
    );
    let status = std::str::from_utf8(&head[9..12.min(head.len())])
        .ok()
        .and_then(|s| s.parse().ok());
    Answer::Status(status.unwrap_or_else(|| panic!("no status in {:?}", String::from_utf8_lossy(&head))))
}

/// Whether `request` begins with a request line a server must answer.
fn looks_like_http(request: &[u8]) -> bool {
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(m), Some(p), Some("HTTP/1.1"), None) if ["GET", "POST", "PUT", "DELETE", "HEAD"].contains(&m) && p.starts_with('/')
    )
}

fn check(addr: SocketAddr, request: &[u8], within: Duration) -> Answer {
    let answer = send(addr, request, within);
    let shown = || String::from_utf8_lossy(&request[..request.len().min(300)]).into_owned();
    match answer {
        Answer::Status(code) => assert!(
            code < 500 || code == 503,
            "answer {code} to a request beginning {:?}",
            shown()
        ),
        Answer::Closed => assert!(
            !looks_like_http(request) || find(request, b"\r\n\r\n").is_none(),
            "closed without an answer: {:?}",
            shown()
        ),
        // A request that declares more than it sends waits; the node must
        // still answer others at once.
        Answer::Waiting => assert!(
            matches!(
                send(
                    addr,
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    ANSWER_WITHIN
                ),
                Answer::Status(200 | 503)
            ),
            "the node stopped answering after a request beginning {:?}",
            shown()
        ),
    }
    answer
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

struct Node {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: std::path::PathBuf,
}

impl Node {
    fn start(k: &SigningKey) -> Self {
        let state = std::env::temp_dir().join(format!("triad-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let text = config::DEFAULT_TOML
            .replace(
                "state_dir = \".triad-state\"",
                &format!("state_dir = {:?}", state.display().to_string()),
            )
            .replace("rt_priority = 80", "rt_priority = 0")
            + &format!(
                "\n[[security.keys]]\nname = \"ops\"\npublic_key = \"{}\"\nuses = [\"deploy\", \"command\", \"bundle\"]\n",
                public_base64(k.public())
            );
        let cfg = config::from_toml_str(&text).unwrap_or_else(|e| panic!("fuzz node config: {e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let opts = RunOptions {
                scenario: scenario::by_name("nominal").unwrap(),
                fault_axis: None,
                duration: None,
                listen: Some(addr),
            };
            rt.block_on(async move {
                run(cfg, opts, async move {
                    let _ = rx.await;
                })
                .await
                .expect("the fuzz node runs");
            });
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the fuzz node did not listen on {addr} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Node {
            addr,
            stop: Some(tx),
            thread: Some(thread),
            state,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take()
            && !std::thread::panicking()
        {
            t.join().expect("the fuzz node stops cleanly");
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[test]
fn every_route_answers_any_request_without_5xx_or_swelling() {
    let k = key();
    let node = Node::start(&k);
    let addr = node.addr;
    let seeds = corpus("http");
    let rss_before = rss_bytes();
    // The seeds as they are, with their expected answers.
    for (name, raw) in &seeds {
        let request = fill(&k, raw);
        let started = Instant::now();
        let answer = check(addr, &request, ANSWER_WITHIN);
        let expect: &[u16] = match name.split('-').next().unwrap_or_default() {
            "200" => &[200],
            "401" => &[401],
            "403" => &[403],
            "404" => &[404],
            "413" => &[413],
            "4xx" => &[400, 401, 403, 404, 405, 409, 411, 413, 415, 422, 431],
            _ => &[],
        };
        if !expect.is_empty() {
            assert!(
                matches!(answer, Answer::Status(s) if expect.contains(&s)),
                "{name}: answered {answer:?}, expected one of {expect:?}"
            );
        }
        // A declared 1 GiB with a Content-Length is refused from the header.
        if name.contains("1gib") && !name.starts_with("any-") {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{name} took {:?}",
                started.elapsed()
            );
        }
    }
    // Then the fuzzing.
    let seed_bytes: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
    let stats = Stats::new("http");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        let mut request = fill(&k, &mutate(&seed_bytes, input));
        // A head without its end only waits; end it, so the node reads it.
        if find(&request, b"\r\n\r\n").is_none() {
            request.extend_from_slice(b"\r\n\r\n");
        }
        check(addr, &request, FUZZ_ANSWER_WITHIN);
    });
    drop(stats);
    let health = check(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ANSWER_WITHIN,
    );
    assert!(
        matches!(health, Answer::Status(200 | 503)),
        "healthz after the campaign: {health:?}"
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    eprintln!("fuzz-stats harness=http rss_growth_bytes={grown}");
    assert!(
        grown <= RSS_GROWTH_MAX,
        "the node's resident memory grew by {grown} bytes"
    );
}
