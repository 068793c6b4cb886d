//! The node on Modbus field devices, end to end through the `triad`
//! binary: an axis bound across two pymodbus devices goes to its safe
//! state when one stops, writes that state to the field, and runs again
//! only after the device is back and an authorised reset; the simulated
//! plant served over Modbus TCP (`triad sim-plant`) runs the weld-drift
//! closed loop with the chain timings of `triad run --sim`.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use triad_tests::modbus_peer::PyModbusDevice;
use triad_tests::{TempDir, free_port, node_lock, triad, triad_bin, workspace_root};

/// A node process, interrupted (and waited for) when dropped, so a failed
/// assertion leaves no node running.
struct Node(Child);

impl Node {
    /// SIGINT and wait: did it stop cleanly?
    fn stop(mut self) -> bool {
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        self.0.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(cfg: &Path, dir: &Path, port: u16, extra: &[&str]) -> Node {
    Node(
        Command::new(triad_bin())
            .args([
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--state-dir", dir.join("state").to_str().unwrap()])
            .args(extra)
            .current_dir(workspace_root())
            .env("TRIAD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start triad"),
    )
}

async fn state(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(format!("{url}/api/state"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Wait until the axis' state satisfies `ok`; the state then.
async fn wait_axis(
    http: &reqwest::Client,
    url: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = state(http, url).await {
            if ok(&s["axis"]) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: axis {}", s["axis"]);
        } else {
            assert!(Instant::now() < deadline, "{what}: the node does not answer");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn writes(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_device_puts_its_axis_in_the_safe_state_until_an_authorised_reset() {
    let _g = node_lock().await;
    let dir = TempDir::new("modbus-line");
    let [wport, cport, port] = triad_tests::free_ports(3)[..] else {
        unreachable!()
    };
    let conveyor_log = dir.path().join("conveyor-writes.jsonl");
    let mut welder = PyModbusDevice::start(&[
        "--kind",
        "welder",
        "--order",
        "ABCD",
        "--tcp",
        &format!("127.0.0.1:{wport}"),
    ]);
    let _conveyor = PyModbusDevice::start(&[
        "--kind",
        "conveyor",
        "--order",
        "CDAB",
        "--tcp",
        &format!("127.0.0.1:{cport}"),
        "--writes",
        conveyor_log.to_str().unwrap(),
    ]);
    let keys = dir.path().join("keys");
    let o = triad(
        &[
            "keys",
            "gen",
            "--name",
            "hmi",
            "--uses",
            "command",
            "--out",
            keys.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success());
    let devices = format!(
        r#"[[devices]]
id = "welder"
driver = "modbus-tcp"
endpoint = "127.0.0.1:{wport}"
addressing = "zero-based"
poll_ms = 20
timeout_ms = 100
retries = 1
points = [
  {{ name = "weld_temp_c", table = "input", address = 0, type = "f32" }},
  {{ name = "weld_current_a", table = "input", address = 2, type = "f32" }},
  {{ name = "ambient_c", table = "input", address = 4, type = "f32" }},
  {{ name = "estop", table = "discrete", address = 0 }},
  {{ name = "weld_current_cmd_a", table = "holding", address = 0, type = "f32", direction = "output" }},
  {{ name = "weld_enable", table = "coil", address = 0, direction = "output" }},
]

[[devices]]
id = "conveyor"
driver = "modbus-tcp"
endpoint = "127.0.0.1:{cport}"
addressing = "one-based"
byte_order = "CDAB"
poll_ms = 20
points = [
  {{ name = "feed_ppm", table = "input", address = 1, type = "f32", unit = "PPM" }},
  {{ name = "parts_total", table = "input", address = 3, type = "u32" }},
  {{ name = "feed_ppm_cmd", table = "holding", address = 1, type = "f32", direction = "output" }},
]
"#
    );
    let io = "io = { device = \"welder\", feed_ppm = \"conveyor.feed_ppm\", parts_total = \"conveyor.parts_total\", feed_ppm_cmd = \"conveyor.feed_ppm_cmd\" }";
    let base = include_str!("../../edge/src/config/default.toml");
    let cfg_text = base
        .replace("[[devices]]\nid = \"welder_07\"\ndriver = \"sim\"\n", &devices)
        .replace("io = { device = \"welder_07\" }", io)
        // The pymodbus welder's temperature is fixed, far from the twin's
        // prediction: without the derate rule its alert changes no rate.
        .replace(
            "[[rules]]\nkind = \"derate_on_alert\"\nasset = \"battery_pack_89\"\naxis = \"axis_07\"\nderate_ppm = 8.0\n",
            "",
        )
        + &format!(
            "\n[[security.keys]]\nname = \"hmi\"\npublic_key_file = \"{}\"\nuses = [\"command\"]\n",
            keys.join("hmi.pub").display()
        );
    let cfg = dir.path().join("line.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let o = triad(&["check-config", cfg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let node = start_node(&cfg, dir.path(), port, &["--scenario", "nominal"]);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let s = wait_axis(&http, &url, Duration::from_secs(30), "running on Modbus", |a| {
        a["mode"] == "Running"
    })
    .await;
    assert_eq!(s["axis"]["weld_temp_c"], 187.25, "{s}");
    assert_eq!(s["axis"]["ppm_actual"], 11.75, "{s}");
    // The program's feed command reached the conveyor (12 PPM, f32, CDAB).
    let feed_12 = serde_json::json!([0, 0x4140]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !writes(&conveyor_log)
        .iter()
        .any(|w| w["address"] == 0 && w["values"] == feed_12)
    {
        assert!(Instant::now() < deadline, "{:?}", writes(&conveyor_log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The welder stops answering: the axis is safe within the points'
    // bound (220 ms: one poll and both tries), HTTP polling included.
    welder.signal("STOP");
    let t0 = Instant::now();
    let s = wait_axis(&http, &url, Duration::from_secs(3), "safe state", |a| {
        a["mode"] == "SafeState"
    })
    .await;
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(600), "safe {took:?} after the stop");
    let why = s["axis"]["safe_state_reason"].as_str().unwrap_or_default();
    assert!(why.contains("stale"), "{s}");
    // The safe state reached the device that still answers: feed 0.
    let feed_0 = serde_json::json!([0, 0]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !writes(&conveyor_log)
        .iter()
        .any(|w| w["address"] == 0 && w["values"] == feed_0)
    {
        assert!(Instant::now() < deadline, "{:?}", writes(&conveyor_log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stale scans are counted (the view is refreshed with the telemetry).
    wait_axis(&http, &url, Duration::from_secs(2), "stale scans counted", |a| {
        a["io_scans_failed"].as_u64().unwrap_or(0) > 0
    })
    .await;

    // The link's figures are exported per device.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let timeouts = m
            .lines()
            .find(|l| l.starts_with("triad_modbus_timeouts_total{device=\"welder\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if timeouts.is_some_and(|t| t > 0.0) {
            assert!(m.contains("triad_modbus_requests_total{device=\"conveyor\"}"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no Modbus timeouts exported: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let token = |actions: &str| triad_tests::command_token(&keys.join("hmi.key"), actions, "2m");
    let command = |action: &'static str| {
        let (http, url, tok) = (http.clone(), url.clone(), token(action));
        async move {
            let r = http
                .post(format!("{url}/api/axes/axis_07/commands"))
                .bearer_auth(tok)
                .json(&serde_json::json!({"action": action, "reason": "welder checked"}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    // Still silent: the reset is refused, the axis stays safe.
    let v = command("ResetFault").await;
    assert_eq!(v["outcome"], "refused", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("cause is still present"), "{v}");
    // Back (dead process replaced): it reconnects, but the axis waits for a reset.
    welder.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = state(&http, &url).await.unwrap();
    assert_eq!(s["axis"]["mode"], "SafeState", "no return to auto by itself: {s}");
    let v = command("ResetFault").await;
    assert_eq!(v["outcome"], "applied", "{v}");
    wait_axis(&http, &url, Duration::from_secs(2), "stopped after the reset", |a| {
        a["mode"] == "Stopped"
    })
    .await;
    let v = command("Start").await;
    assert_eq!(v["outcome"], "applied", "{v}");
    wait_axis(&http, &url, Duration::from_secs(2), "running again", |a| {
        a["mode"] == "Running"
    })
    .await;
    let audit: Value = http
        .get(format!("{url}/api/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resets = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "command" && a.to_string().contains("ResetFault"))
        .count();
    assert!(resets >= 2, "both resets are audited: {audit}");
    assert!(node.stop(), "the node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_plant_over_modbus_runs_the_weld_drift_loop_with_the_timings_of_sim() {
    let _g = node_lock().await;
    let dir = TempDir::new("sim-plant");
    let mport = free_port();
    let mut plant = Command::new(triad_bin())
        .args([
            "sim-plant",
            "--modbus",
            &format!("127.0.0.1:{mport}"),
            "--scenario",
            "weld-drift",
        ])
        .current_dir(workspace_root())
        .env("TRIAD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start triad sim-plant");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(plant.stdout.take().unwrap()), &mut line).unwrap();
    assert!(
        line.contains(&format!("Modbus TCP unit 1 on 127.0.0.1:{mport}")),
        "{line}"
    );
    let example = std::fs::read_to_string(workspace_root().join("deploy/examples/sim-plant-modbus.toml")).unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, example.replace("127.0.0.1:5020", &format!("127.0.0.1:{mport}"))).unwrap();
    let report = dir.path().join("report.json");
    let args = [
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--duration",
        "22s",
        "--report",
        report.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]
    .map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        triad(&refs, &[])
    })
    .await
    .unwrap();
    let _ = plant.kill();
    let _ = plant.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let f = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    let chain = &r["chain"];
    let (onset, alert, derate) = (
        f(&chain["fault_onset_ns"]),
        f(&chain["alert_ns"]),
        f(&chain["derate_ns"]),
    );
    // The bounds of tests/tests/closed_loop.rs, which runs the same line with --sim.
    let gap = (alert - onset) / 1e9;
    assert!(gap > 3.0 && gap < 3.5, "alert {gap:.3} s after onset; chain {chain}");
    let derate_ms = (derate - alert) / 1e6;
    assert!(
        (0.0..=50.0).contains(&derate_ms),
        "derate {derate_ms:.3} ms after the alert"
    );
    assert!(f(&chain["workorder_ns"]) >= f(&chain["analysis_ns"]), "{chain}");
    assert_eq!(f(&r["ppm_before"]), 12.0);
    assert_eq!(f(&r["ppm_after"]), 8.0);
    assert!(
        f(&r["inspection"]["frames"]) > 60.0,
        "one frame per weld over Modbus: {}",
        r["inspection"]
    );
    assert_eq!(r["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(r["work_orders"].as_array().unwrap().len(), 1);
    assert!(
        r["fault_injected_ns"].is_null(),
        "the node injected nothing: the plant did"
    );
}

/// One operation of `tests/python/scada_client.py` (pymodbus) against
/// `addr`: its JSON outcome.
fn scada(addr: &str, extra: &[&str], op: &[&str]) -> Value {
    let out = Command::new(triad_tests::python())
        .arg(workspace_root().join("tests/python/scada_client.py"))
        .args(["--tcp", addr])
        .args(extra)
        .args(op)
        .output()
        .expect("run scada_client.py");
    assert!(out.status.success(), "{op:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{op:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn f32_of(regs: &Value) -> f32 {
    let r: Vec<u16> = regs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect();
    f32::from_bits((u32::from(r[0]) << 16) | u32::from(r[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scada_reads_the_process_image_over_modbus_and_writes_only_what_it_may() {
    let _g = node_lock().await;
    let dir = TempDir::new("modbus-server");
    let [mport, port] = triad_tests::free_ports(2)[..] else {
        unreachable!()
    };
    let cfg_text = format!(
        "{}\n[modbus_server]\nlisten = \"127.0.0.1:{mport}\"\nwriters = [\"127.0.0.1\"]\npoints = [\n\
         {{ value = \"axis_07.ppm_actual\", table = \"input\", address = 0, type = \"f32\" }},\n\
         {{ value = \"axis_07.mode\", table = \"input\", address = 2, type = \"u16\" }},\n\
         {{ value = \"axis_07.weld_temp_c\", table = \"input\", address = 3, type = \"i16\", scale = 0.1 }},\n\
         {{ value = \"axis_07.ppm_setpoint\", table = \"holding\", address = 0, type = \"f32\", writable = true }},\n\
         {{ value = \"axis_07.weld_current_a\", table = \"holding\", address = 2, type = \"f32\" }},\n\
         {{ value = \"axis_07.safe_state\", table = \"discrete\", address = 0 }},\n\
         {{ value = \"axis_07.stop\", table = \"coil\", address = 0, writable = true }},\n]\n",
        include_str!("../../edge/src/config/default.toml")
    );
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let node = start_node(&cfg, dir.path(), port, &["--sim", "--scenario", "nominal"]);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_axis(&http, &url, Duration::from_secs(30), "running", |a| {
        a["mode"] == "Running"
    })
    .await;
    let addr = format!("127.0.0.1:{mport}");
    let s = |op: &[&str]| scada(&addr, &[], op);

    let v = s(&["read", "input", "0", "4"]);
    assert_eq!(v["ok"], true, "{v}");
    let regs = &v["values"];
    let ppm = f32_of(&serde_json::json!([regs[0], regs[1]]));
    assert!((ppm - 12.0).abs() < 1.0, "ppm_actual {ppm}");
    assert_eq!(regs[2], 1, "mode: running");
    let temp = f64::from(regs[3].as_u64().unwrap() as u16 as i16) * 0.1;
    assert!(temp > 100.0, "weld_temp_c {temp}, scaled by 0.1");
    assert_eq!(s(&["read", "discrete", "0", "1"])["values"], serde_json::json!([0]));

    // The set-point, written as an f32 over two registers: a SetRate.
    let nine = 9.0f32.to_bits();
    let (hi, lo) = ((nine >> 16).to_string(), (nine & 0xffff).to_string());
    assert_eq!(s(&["write-registers", "0", &hi, &lo])["ok"], true);
    let v = s(&["read", "holding", "0", "2"]);
    assert_eq!(f32_of(&v["values"]), 9.0, "{v}");
    // Refused, and nothing changes: outside the axis limits (exception 3),
    // half a point (2), a point that is not writable (1), an address no
    // point covers (2), another unit (11), a client not among the writers (1).
    let ninety = 99.0f32.to_bits();
    let exc = |v: Value| v["exception"].as_u64().unwrap_or_else(|| panic!("no exception: {v}"));
    assert_eq!(exc(s(&["write-registers", "0", &(ninety >> 16).to_string(), "0"])), 3);
    assert_eq!(exc(s(&["write-register", "0", "16656"])), 2);
    assert_eq!(exc(s(&["write-registers", "2", &hi, &lo])), 1);
    assert_eq!(exc(s(&["read", "input", "4", "2"])), 2);
    assert_eq!(exc(scada(&addr, &["--unit", "7"], &["read", "input", "0", "2"])), 11);
    assert_eq!(
        exc(scada(&addr, &["--source", "127.0.0.2"], &["write-coil", "0", "1"])),
        1
    );
    let st = state(&http, &url).await.unwrap();
    assert_eq!(st["axis"]["ppm_setpoint"], 9.0, "{st}");
    assert_eq!(st["axis"]["mode"], "Running");

    // The stop coil from an allowed client: a Stop command.
    assert_eq!(s(&["write-coil", "0", "1"])["ok"], true);
    wait_axis(&http, &url, Duration::from_secs(2), "stopped", |a| {
        a["mode"] == "Stopped"
    })
    .await;
    assert_eq!(s(&["read", "input", "2", "1"])["values"], serde_json::json!([0]));

    let audit: Value = http
        .get(format!("{url}/api/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trail: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "command")
        .collect();
    let text = serde_json::to_string(&trail).unwrap();
    assert!(
        text.contains("modbus:127.0.0.1") && text.contains("SetRate 9 PPM applied"),
        "{text}"
    );
    assert!(text.contains("command_out_of_range"), "{text}");
    assert!(node.stop(), "the node stops cleanly");
}
