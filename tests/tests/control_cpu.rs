//! `[control] cpu`: the control thread is pinned to that CPU and has it to
//! itself; every other thread of the node runs on the other CPUs. Read from
//! `/proc/<pid>/task/*/status` of a running `triad run --sim`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use triad_tests::{TempDir, node_lock, triad_bin, workspace_root};

/// CPUs of a `Cpus_allowed_list` value such as `0,2-3`.
fn cpus(list: &str) -> Vec<usize> {
    list.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

/// (thread name, CPUs it may run on) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("status")),
        ) else {
            continue; // ended meanwhile
        };
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list");
        out.push((comm.trim().to_string(), cpus(list)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_control_thread_has_its_cpu_to_itself() {
    let _serial = node_lock().await;
    let mine = cpus(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap(),
    );
    let cpu = *mine.last().unwrap();
    let dir = TempDir::new("control-cpu");
    let default = std::fs::read_to_string(workspace_root().join("edge/src/config/default.toml")).unwrap();
    assert!(default.contains("cpu = -1\n"), "the built-in config changed");
    let cfg = dir.path().join("triad.toml");
    std::fs::write(&cfg, default.replace("cpu = -1\n", &format!("cpu = {cpu}\n"))).unwrap();
    let log = dir.path().join("node.log");
    let mut child = Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--duration",
            "4s",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the node's threads run (the I/O scan starts last, after
    // every station's inspection worker and twin).
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let t = threads(pid);
        let has = |name: &str| t.iter().any(|(n, _)| n.starts_with(name));
        if has("triad-control") && has("triad-insp-") && has("triad-twin-") && has("triad-io") {
            break t;
        }
        assert!(Instant::now() < deadline, "the node's threads did not start: {t:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{said}");
    if mine.len() < 2 {
        // One CPU: pinned, but nothing can be kept off it; the log says so.
        assert!(said.contains("other threads not kept off it"), "{said}");
        return;
    }
    for (name, allowed) in &seen {
        if name == "triad-control" {
            assert_eq!(allowed, &vec![cpu], "{seen:?}");
        } else {
            assert!(!allowed.contains(&cpu), "{name} may run on CPU {cpu}: {seen:?}");
            assert!(!allowed.is_empty(), "{seen:?}");
        }
    }
    assert!(
        said.contains(&format!("pinned to CPU {cpu} alone")),
        "the log names it: {said}"
    );
}
