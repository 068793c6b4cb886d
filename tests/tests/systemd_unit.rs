//! The shipped systemd unit: `systemd-analyze verify` accepts it and
//! `systemd-analyze security` scores it at most 3.0 ("OK"), with the
//! settings the node needs (notify, watchdog, real-time limits, no
//! capabilities, a system-call filter that keeps the scheduling calls).

use std::process::Command;
use triad_tests::{TempDir, triad_bin, workspace_root};

fn unit_text() -> String {
    std::fs::read_to_string(workspace_root().join("deploy/systemd/triad.service")).unwrap()
}

/// The unit with its binary path pointing at the built `triad`, so that
/// `verify` finds an executable.
fn unit_file(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("triad.service");
    let text = unit_text().replace("/usr/local/bin/triad", triad_bin().to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

fn analyze(args: &[&str]) -> (bool, String) {
    let o = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (apt install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn the_unit_verifies_and_scores_ok_for_exposure() {
    let dir = TempDir::new("unit");
    let unit = unit_file(&dir);
    let (ok, text) = analyze(&["verify", unit.to_str().unwrap()]);
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify: {text}");
    let (_, text) = analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for triad.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 3.0, "exposure {score} > 3.0:\n{text}");
}

#[test]
fn the_unit_runs_the_node_as_notify_with_a_watchdog_and_real_time_limits() {
    let text = unit_text();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "LimitRTPRIO=90",
        "LimitMEMLOCK=infinity",
        "CapabilityBoundingSet=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=triad",
        "ExecStart=/usr/local/bin/triad run --config /etc/triad/triad.toml\n",
    ] {
        assert!(text.contains(line), "the unit lacks {line:?}");
    }
    // The filter must not take the scheduling calls the control thread makes.
    let filters: Vec<&str> = text.lines().filter(|l| l.starts_with("SystemCallFilter=")).collect();
    assert!(filters.iter().all(|f| !f.contains("@resources")), "{filters:?}");
    assert!(!text.contains("RestrictRealtime=yes"), "SCHED_FIFO would be refused");
}
