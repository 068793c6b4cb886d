//! systemd's side of `Type=notify` and `WatchdogSec`, played by the test:
//! a datagram socket as `NOTIFY_SOCKET` sees `READY=1` once the node runs,
//! `WATCHDOG=1` pings while the control thread cycles and none once it is
//! made to hang (a test build's `TRIAD_TEST_CONTROL_HANG_AFTER_MS`), and
//! `STOPPING=1` at the orderly stop.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use triad_tests::{TempDir, free_port, node_lock, triad_bin, workspace_root};

/// Datagrams received until `until`, each with its arrival.
fn receive(sock: &UnixDatagram, until: Instant) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        sock.set_read_timeout(Some(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_watchdog_pings_that_stop_when_the_control_thread_hangs() {
    let _g = node_lock().await;
    let dir = TempDir::new("sd-notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let start = Instant::now();
    let mut node = Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .current_dir(workspace_root())
        .env("TRIAD_LOG", "warn")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env("TRIAD_TEST_CONTROL_HANG_AFTER_MS", "6000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = receive(&sock, start + Duration::from_secs(12));
    let _ = Command::new("kill").arg("-INT").arg(node.id().to_string()).status();
    let stop = receive(&sock, Instant::now() + Duration::from_secs(3));
    let _ = node.wait();

    let ready = got.iter().position(|(_, m)| m.contains("READY=1")).expect("READY=1");
    assert!(got[ready].1.contains("STATUS=1 axes under control"), "{:?}", got[ready]);
    let pings: Vec<Instant> = got[ready..]
        .iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        pings.len() >= 5,
        "pings at half the 400 ms interval while it cycles: {got:?}"
    );
    for w in pings.windows(2) {
        assert!(w[1] - w[0] < Duration::from_millis(400), "a ping every 200 ms: {got:?}");
    }
    // Hung 6 s after the control thread started: the pings stop and stay stopped.
    let last = *pings.last().unwrap();
    assert!(
        last < start + Duration::from_secs(10),
        "no ping after the hang: last {:?} after start",
        last - start
    );
    assert!(stop.iter().any(|(_, m)| m.contains("STOPPING=1")), "{stop:?}");
}
