//! The Modbus driver against devices we did not write (pymodbus servers
//! from `tests/python/modbus_device.py`, floats encoded there with `struct`):
//! values decoded and scaled right in all four word orders, writes that
//! land, a register gap split around, a device that hangs or dies going
//! stale and coming back, an unknown unit id and an exception answer as
//! clear errors, and RTU through a socat pty pair surviving the device's
//! restart.

use std::sync::Arc;
use std::time::{Duration, Instant};
use triad_edge::clock::{Clock, SystemClock};
use triad_edge::config::modbus::ModbusConfig;
use triad_edge::config::{DEFAULT_TOML, Driver, from_toml_str};
use triad_edge::field::modbus::link::LinkDevice;
use triad_edge::field::modbus::{ModbusDevice, ModbusLinks, SharedImage};
use triad_hw::Device;
use triad_tests::TempDir;
use triad_tests::modbus_peer::{PtyPair, PyModbusDevice};

/// The Modbus config of the one `[[devices]]` entry `device` (TOML), added
/// to the built-in line.
fn modbus_config(device: &str) -> Arc<ModbusConfig> {
    let cfg = from_toml_str(&format!("{DEFAULT_TOML}\n{device}")).unwrap_or_else(|e| panic!("{e}"));
    match &cfg.devices.last().expect("a device").driver {
        Driver::Modbus(m) => m.clone(),
        other => panic!("not a Modbus device: {other:?}"),
    }
}

/// A device under test: its link task and the scan's view of it.
struct Polled {
    dev: ModbusDevice,
    shared: Arc<SharedImage>,
    cfg: Arc<ModbusConfig>,
    links: Option<ModbusLinks>,
    clock: Arc<dyn Clock>,
    image: Vec<f64>,
}

impl Polled {
    fn start(id: &str, cfg: Arc<ModbusConfig>) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let shared = Arc::new(SharedImage::new(cfg.points.len()));
        let links = ModbusLinks::start(
            vec![LinkDevice {
                id: id.into(),
                cfg: cfg.clone(),
                shared: shared.clone(),
            }],
            clock.clone(),
        );
        Self {
            dev: ModbusDevice::new(cfg.clone(), shared.clone()),
            image: vec![0.0; cfg.points.len()],
            shared,
            cfg,
            links: Some(links),
            clock,
        }
    }

    fn index(&self, name: &str) -> usize {
        self.cfg
            .points
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no point {name}"))
    }

    /// One scan; the value of `name`.
    fn scan(&mut self) {
        self.dev.scan(&mut self.image, self.clock.now_ns()).unwrap();
    }

    fn value(&mut self, name: &str) -> f64 {
        self.scan();
        self.image[self.index(name)]
    }

    fn stale(&self, name: &str) -> bool {
        self.dev.is_stale(self.index(name), self.clock.now_ns())
    }

    fn set_output(&mut self, name: &str, v: f64) {
        let i = self.index(name);
        self.image[i] = v;
        self.scan();
    }

    /// Wait until every input has been read and is fresh.
    async fn wait_fresh(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.scan();
            let now = self.clock.now_ns();
            let stale: Vec<&str> = (0..self.cfg.points.len())
                .filter(|&i| self.cfg.points[i].direction == triad_hw::Direction::Input && self.dev.is_stale(i, now))
                .map(|i| self.cfg.points[i].name.as_str())
                .collect();
            if stale.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still stale: {stale:?}; last error: {:?}",
                self.shared.last_error()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(l) = self.links.take() {
            l.stop(Duration::from_secs(2)).await;
        }
    }
}

/// `value` (of Rust type `$t`) as the registers a device in `order` sends,
/// by the convention the device script documents.
fn registers(be_bytes: &[u8], order: &str) -> Vec<u64> {
    let mut regs: Vec<u64> = be_bytes
        .chunks(2)
        .map(|c| {
            let (a, b) = (u64::from(c[0]), u64::from(c[1]));
            if order == "BADC" || order == "DCBA" {
                (b << 8) | a
            } else {
                (a << 8) | b
            }
        })
        .collect();
    if order == "CDAB" || order == "DCBA" {
        regs.reverse();
    }
    regs
}

/// The welder's points; addresses shifted by `base` (1 for one-based).
fn welder_points(base: u32) -> String {
    let p = |name: &str, table: &str, addr: u32, extra: &str| {
        format!(
            "  {{ name = \"{name}\", table = \"{table}\", address = {}{extra} }},\n",
            addr + base
        )
    };
    [
        p("weld_temp_c", "input", 0, ", type = \"f32\", unit = \"°C\""),
        p("weld_current_a", "input", 2, ", type = \"f32\", unit = \"A\""),
        p("ambient_c", "input", 4, ", type = \"f32\""),
        p("welds_total", "input", 10, ", type = \"u32\""),
        p("energy_j", "input", 12, ", type = \"f64\", unit = \"J\""),
        p("temp_x10", "input", 16, ", type = \"i16\", scale = 0.1"),
        p("offset_i32", "input", 17, ", type = \"i32\""),
        p("big_u64", "input", 19, ", type = \"u64\""),
        p("status_0", "input", 23, ", type = \"bit\", bit = 0"),
        p("status_1", "input", 23, ", type = \"bit\", bit = 1"),
        p("status_3", "input", 23, ", type = \"bit\", bit = 3"),
        p("status_15", "input", 23, ", type = \"bit\", bit = 15"),
        p(
            "raw_u16",
            "input",
            24,
            ", type = \"u16\", scale = 2.0, offset = -1000.0",
        ),
        p("estop", "discrete", 0, ""),
        p("arc_ok", "discrete", 1, ""),
        p(
            "weld_current_cmd_a",
            "holding",
            0,
            ", type = \"f32\", direction = \"output\"",
        ),
        p("count_cmd", "holding", 2, ", type = \"u32\", direction = \"output\""),
        p("weld_enable", "coil", 0, ", direction = \"output\""),
    ]
    .concat()
}

fn welder_device(port: u16, order: &str, addressing: &str, extra: &str) -> String {
    let base = if addressing == "one-based" { 1 } else { 0 };
    format!(
        "[[devices]]\nid = \"welder_py\"\ndriver = \"modbus-tcp\"\nendpoint = \"127.0.0.1:{port}\"\nunit = 1\n\
         addressing = \"{addressing}\"\nbyte_order = \"{order}\"\npoll_ms = 20\ntimeout_ms = 300\n{extra}\
         points = [\n{}]\n",
        welder_points(base)
    )
}

/// The JSON lines of the device's `--writes` file.
fn writes(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_in_every_word_order_reads_scaled_and_writes_land() {
    let dir = TempDir::new("modbus-orders");
    for (order, addressing) in [
        ("ABCD", "zero-based"),
        ("CDAB", "one-based"),
        ("BADC", "zero-based"),
        ("DCBA", "one-based"),
    ] {
        let port = triad_tests::free_port();
        let log = dir.path().join(format!("writes-{order}.jsonl"));
        let _py = PyModbusDevice::start(&[
            "--kind",
            "welder",
            "--order",
            order,
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--writes",
            log.to_str().unwrap(),
        ]);
        let mut w = Polled::start("welder_py", modbus_config(&welder_device(port, order, addressing, "")));
        w.wait_fresh(Duration::from_secs(10)).await;
        let ctx = format!("order {order}, {addressing}");
        assert_eq!(w.value("weld_temp_c"), 187.25, "{ctx}");
        assert_eq!(w.value("weld_current_a"), 4875.5, "{ctx}");
        assert_eq!(w.value("ambient_c"), 23.5, "{ctx}");
        assert!(w.value("welds_total") >= 65534.0, "{ctx}");
        assert_eq!(w.value("energy_j"), 1_234_567.891, "{ctx}");
        assert!((w.value("temp_x10") - -12.3).abs() < 1e-9, "{ctx}");
        assert_eq!(w.value("offset_i32"), -100_000.0, "{ctx}");
        assert_eq!(w.value("big_u64"), 5e9, "{ctx}");
        let bits: Vec<f64> = ["status_0", "status_1", "status_3", "status_15"]
            .iter()
            .map(|b| w.value(b))
            .collect();
        assert_eq!(bits, [1.0, 0.0, 1.0, 1.0], "{ctx}");
        assert_eq!(w.value("raw_u16"), 65000.0 * 2.0 - 1000.0, "{ctx}");
        assert_eq!((w.value("estop"), w.value("arc_ok")), (0.0, 1.0), "{ctx}");
        // The counter counts on (every 100 ms on the device), across 65536.
        let c0 = w.value("welds_total");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(w.value("welds_total") > c0, "{ctx}");
        // Input registers 6..9 are a gap: the merged read 0..24 answered
        // exception 2 and was split around it, once.
        assert!(w.shared.stats.exceptions.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        let exc = w.shared.stats.exceptions.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            w.shared.stats.exceptions.load(std::sync::atomic::Ordering::Relaxed),
            exc,
            "{ctx}: the split is remembered"
        );

        w.set_output("weld_current_cmd_a", 5123.5);
        w.set_output("count_cmd", 70_000.0);
        w.set_output("weld_enable", 1.0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let want_f32 = registers(&5123.5f32.to_be_bytes(), order);
        let want_u32 = registers(&70_000u32.to_be_bytes(), order);
        loop {
            let got = writes(&log);
            let has = |table: &str, addr: u64, values: serde_json::Value| {
                got.iter()
                    .any(|g| g["table"] == table && g["address"] == addr && g["values"] == values)
            };
            if has("holding", 0, serde_json::json!(want_f32))
                && has("holding", 2, serde_json::json!(want_u32))
                && has("coil", 0, serde_json::json!([true]))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{ctx}: writes seen {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // On change only: the same values are not written again.
        let n = writes(&log).len();
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.scan();
        assert_eq!(writes(&log).len(), n, "{ctx}: nothing changed, nothing written");
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_dead_device_goes_stale_within_its_bound_and_comes_back() {
    let port = triad_tests::free_port();
    let mut py = PyModbusDevice::start(&[
        "--kind",
        "conveyor",
        "--order",
        "CDAB",
        "--tcp",
        &format!("127.0.0.1:{port}"),
    ]);
    let cfg = modbus_config(&format!(
        "[[devices]]\nid = \"conveyor_py\"\ndriver = \"modbus-tcp\"\nendpoint = \"127.0.0.1:{port}\"\n\
         addressing = \"zero-based\"\nbyte_order = \"CDAB\"\npoll_ms = 20\ntimeout_ms = 100\nretries = 1\n\
         reconnect_min_ms = 50\nreconnect_max_ms = 400\n\
         points = [\n  {{ name = \"feed_ppm\", table = \"input\", address = 0, type = \"f32\" }},\n\
                   {{ name = \"parts_total\", table = \"input\", address = 2, type = \"u32\" }},\n\
                   {{ name = \"estop\", table = \"discrete\", address = 0 }},\n]\n"
    ));
    // Three polls missed (60 ms) or one poll and both tries (20 + 2 x 100 ms).
    let bound = Duration::from_nanos(cfg.points[0].stale_ns as u64);
    assert_eq!(bound, Duration::from_millis(220));
    let mut c = Polled::start("conveyor_py", cfg);
    c.wait_fresh(Duration::from_secs(10)).await;
    assert_eq!(c.value("feed_ppm"), 11.75);

    // Hung: the process stops answering but keeps its connection open.
    py.signal("STOP");
    let t0 = Instant::now();
    while !c.stale("feed_ppm") {
        assert!(t0.elapsed() < Duration::from_secs(2), "never stale");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t0.elapsed();
    // The last sample was at most one poll (20 ms) before the stop.
    assert!(
        took >= bound - Duration::from_millis(25) && took <= bound + Duration::from_millis(60),
        "stale {took:?} after the stop; bound {bound:?}"
    );
    // The link says why once its tries are spent (about when the bound passes).
    let deadline = Instant::now() + Duration::from_secs(2);
    let err = loop {
        if let Some(e) = c.shared.last_error() {
            break e;
        }
        assert!(Instant::now() < deadline, "no error recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        err.contains("conveyor_py (unit 1 at 127.0.0.1:") && err.contains("no answer within 100 ms"),
        "{err}"
    );
    let connects = c.shared.stats.connects.load(std::sync::atomic::Ordering::Relaxed);
    py.signal("CONT");
    c.wait_fresh(Duration::from_secs(3)).await;
    assert_eq!(
        c.value("feed_ppm"),
        11.75,
        "a late answer was not taken for a new request's"
    );
    assert!(
        c.shared.stats.connects.load(std::sync::atomic::Ordering::Relaxed) > connects,
        "the connection was dropped after the timeout and made again"
    );
    let p0 = c.value("parts_total");
    assert!(p0 >= 131_070.0);

    // Dead: killed and started again on the same port.
    py.signal("KILL");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.stale("feed_ppm"));
    py.restart();
    c.wait_fresh(Duration::from_secs(3)).await;
    assert_eq!(c.value("feed_ppm"), 11.75);
    let p1 = c.value("parts_total");
    assert!(p1 >= 131_070.0 && p1 < p0 + 10.0, "a restarted counter: {p0} then {p1}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_unit_and_an_exception_answer_are_errors_that_name_the_registers() {
    let port = triad_tests::free_port();
    let _py = PyModbusDevice::start(&[
        "--kind",
        "welder",
        "--order",
        "ABCD",
        "--tcp",
        &format!("127.0.0.1:{port}"),
    ]);
    let text = welder_device(port, "ABCD", "zero-based", "").replace("unit = 1", "unit = 7");
    let mut w = Polled::start("welder_py", modbus_config(&text));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.stale("weld_temp_c"), "nothing read from a unit that is not there");
    let err = w.shared.last_error().expect("an error");
    assert!(
        err.starts_with("welder_py (unit 7) answered exception 4") && err.contains("registers"),
        "{err}"
    );
    w.stop().await;

    // Unit 1, but a point past the device's last register: that block
    // (and only it) is refused, with its registers named; the rest reads.
    let text = welder_device(port, "ABCD", "zero-based", "merge_gap = 0\n").replace(
        "points = [\n",
        "points = [\n  { name = \"beyond\", table = \"input\", address = 200, type = \"u16\" },\n",
    );
    let mut w = Polled::start("welder_py", modbus_config(&text));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.stale("beyond"));
    assert!(!w.stale("weld_temp_c"));
    assert_eq!(w.value("weld_temp_c"), 187.25);
    let err = w.shared.last_error().expect("an error");
    assert_eq!(
        err,
        "welder_py (unit 1) answered exception 2 (Illegal data address) for input register 200; those points keep their last value and go stale"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_through_a_pty_pair_survives_the_devices_restart() {
    let dir = TempDir::new("modbus-rtu");
    let pty = PtyPair::new(dir.path());
    let mut py = PyModbusDevice::start(&[
        "--kind",
        "conveyor",
        "--order",
        "DCBA",
        "--rtu",
        pty.device.to_str().unwrap(),
    ]);
    let cfg = modbus_config(&format!(
        "[[devices]]\nid = \"conveyor_rtu\"\ndriver = \"modbus-rtu\"\nport = \"{}\"\nbaud = 19200\nparity = \"none\"\n\
         unit = 1\naddressing = \"zero-based\"\nbyte_order = \"DCBA\"\npoll_ms = 50\ntimeout_ms = 200\n\
         reconnect_min_ms = 50\nreconnect_max_ms = 400\n\
         points = [\n  {{ name = \"feed_ppm\", table = \"input\", address = 0, type = \"f32\" }},\n\
                   {{ name = \"parts_total\", table = \"input\", address = 2, type = \"u32\" }},\n\
                   {{ name = \"feed_ppm_cmd\", table = \"holding\", address = 0, type = \"f32\", direction = \"output\" }},\n]\n",
        pty.node.display()
    ));
    let mut c = Polled::start("conveyor_rtu", cfg);
    c.wait_fresh(Duration::from_secs(10)).await;
    assert_eq!(c.value("feed_ppm"), 11.75);
    assert!(c.value("parts_total") >= 131_070.0);
    py.signal("KILL");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(c.stale("feed_ppm"));
    py.restart();
    c.wait_fresh(Duration::from_secs(5)).await;
    assert_eq!(c.value("feed_ppm"), 11.75);
    c.stop().await;
}
