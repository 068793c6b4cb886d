//! Modbus devices we did not write: `tests/python/modbus_device.py`
//! (pymodbus servers: a welder, a conveyor, a bank of registers), started
//! as child processes, and the socat pty pair that carries RTU.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One pymodbus device process.
pub struct PyModbusDevice {
    child: Child,
    args: Vec<String>,
}

impl PyModbusDevice {
    /// Start `modbus_device.py` with `args` (e.g. `--kind welder --order
    /// ABCD --tcp 127.0.0.1:PORT`) and wait for it to listen.
    pub fn start(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let child = spawn(&args);
        Self { child, args }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (`STOP`, `CONT`, `KILL`) to it.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// Kill it and start it again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.args);
    }

    /// Kill it (and wait for it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyModbusDevice {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[String]) -> Child {
    let script = crate::workspace_root().join("tests/python/modbus_device.py");
    let mut child = Command::new(crate::python())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start modbus_device.py");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next().and_then(Result::ok);
        let _ = tx.send(ready);
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(l)) if l.trim() == "READY" => child,
        other => {
            let _ = child.kill();
            panic!("modbus_device.py {args:?} did not get ready: {other:?}");
        }
    }
}

/// A socat pty pair: the device opens one end, the node the other.
pub struct PtyPair {
    child: Child,
    /// The device's end.
    pub device: PathBuf,
    /// The node's end.
    pub node: PathBuf,
}

impl PtyPair {
    /// Make the pair under `dir`.
    pub fn new(dir: &Path) -> Self {
        let (device, node) = (dir.join("pty-device"), dir.join("pty-node"));
        let child = Command::new("socat")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", device.display()))
            .arg(format!("pty,raw,echo=0,link={}", node.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (apt install socat)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(device.exists() && node.exists()) {
            assert!(Instant::now() < deadline, "socat made no pty pair");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, device, node }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
