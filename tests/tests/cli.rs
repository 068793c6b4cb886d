//! The command line: bad configs and arguments get clear errors, good ones pass.

use triad_tests::{TempDir, triad};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const GOOD: &str = include_str!("../../edge/src/config/default.toml");

#[test]
fn check_config_accepts_the_shipped_examples() {
    for file in [
        "edge/src/config/default.toml",
        "deploy/triad.toml",
        "deploy/examples/line-3-stations.toml",
        "deploy/examples/sim-plant-modbus.toml",
    ] {
        let o = triad(&["check-config", file], &[]);
        assert!(o.status.success(), "{file}: {}", text(&o));
        assert!(text(&o).contains(": ok (node"), "{}", text(&o));
    }
}

#[test]
fn check_config_lists_every_problem_with_key_and_fix() {
    let dir = TempDir::new("cfg");
    let bad = GOOD
        .replace("cycle_us = 1000", "cycle_us = 0")
        .replace("nominal_ppm = 12.0", "nominal_ppm = 40.0")
        .replace("backend = \"embedded\"", "backend = \"kafka\"")
        .replace("persistence_ms = 3000", "persistence_ms = 3000\ncolour = \"red\"");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let o = triad(&["check-config", path.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    // serde stops at the unknown key first: it is named with its table.
    assert!(t.contains("colour"), "{t}");
    std::fs::write(
        &path,
        GOOD.replace("cycle_us = 1000", "cycle_us = 0")
            .replace("nominal_ppm = 12.0", "nominal_ppm = 40.0")
            .replace("backend = \"embedded\"", "backend = \"kafka\""),
    )
    .unwrap();
    let o = triad(&["check-config", path.to_str().unwrap()], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for needle in [
        "3 problem(s)",
        "control.cycle_us: 0 is outside 100..=100000 µs",
        "axes[0].nominal_ppm: need 0 < min_ppm (1) <= nominal_ppm (40) <= max_ppm (15)",
        "bus.backend: \"kafka\" is not a backend",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
}

#[test]
fn environment_overrides_are_validated_too() {
    let o = triad(
        &["check-config", "edge/src/config/default.toml"],
        &[("TRIAD_DASHBOARD__LISTEN", "not-an-address")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("dashboard.listen: \"not-an-address\""),
        "{}",
        text(&o)
    );
}

#[test]
fn missing_files_and_bad_arguments_say_what_to_do() {
    let o = triad(&["check-config", "/nonexistent/triad.toml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("file not found"), "{}", text(&o));
    let o = triad(&["run", "--sim", "--scenario", "meltdown", "--duration", "1s"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown scenario \"meltdown\""), "{}", text(&o));
    let o = triad(&["run", "--sim", "--duration", "soon"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--duration"), "{}", text(&o));
    let o = triad(&["run", "--sim", "--mes-url", "ftp://x", "--duration", "1s"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("http://"), "{}", text(&o));
    let o = triad(&["run", "--duration", "1s"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("give --config FILE") && text(&o).contains("--sim"),
        "{}",
        text(&o)
    );
}

#[test]
fn axes_bound_to_no_device_run_only_with_sim() {
    let dir = TempDir::new("unbound");
    let path = dir.path().join("unbound.toml");
    std::fs::write(&path, GOOD.replace("io = { device = \"welder_07\" }", "")).unwrap();
    let cfg = path.to_str().unwrap();
    let o = triad(&["check-config", cfg], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("axes [\"axis_07\"] have no [axes.io]: they run only with --sim"),
        "{}",
        text(&o)
    );
    let o = triad(&["run", "--config", cfg, "--duration", "1s"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("axes [\"axis_07\"] have no [axes.io]") && text(&o).contains("add --sim"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_busy_dashboard_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("busy");
    let o = triad(
        &[
            "run",
            "--sim",
            "--duration",
            "2s",
            "--listen",
            &addr,
            "--state-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains(&format!("cannot listen on {addr}")), "{}", text(&o));
}
