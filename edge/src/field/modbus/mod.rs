//! Modbus TCP and RTU devices (tokio-modbus).
//!
//! A device's points are polled by a [`link`] task on the node's runtime
//! (one per connection: a TCP endpoint or a serial port, shared by the
//! units on it) into a [`SharedImage`]; the I/O scan reads and writes that
//! image through [`ModbusDevice`] without ever waiting on the network. The
//! encoding of values and the planning of block reads are the sans-IO core
//! in [`triad_hw::modbus`].
//!
//! [`serve_sim_plant`] is the other side: the simulated welding line served
//! as a Modbus TCP device (`triad sim-plant --modbus ADDR`); [`server`]
//! serves the node's own process image to a SCADA (`[modbus_server]`).

pub mod device;
pub mod image;
pub mod link;
pub mod server;
pub mod sim_plant;

pub use device::ModbusDevice;
pub use image::{LinkStats, SharedImage};
pub use sim_plant::serve_sim_plant;

use crate::clock::Clock;
use crate::config::modbus::ModbusConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The running link tasks of the node's Modbus devices.
pub struct ModbusLinks {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ModbusLinks {
    /// Start a link task per connection of `devices` on the current
    /// runtime (none for an empty list, and then no runtime is needed).
    pub fn start(devices: Vec<link::LinkDevice>, clock: Arc<dyn Clock>) -> Self {
        let (stop, rx) = watch::channel(false);
        let tasks = if devices.is_empty() {
            Vec::new()
        } else {
            link::spawn(devices, clock, rx)
        };
        Self { stop, tasks }
    }

    /// Stop every link: each writes its devices' outputs once more (the
    /// scan's last values: the safe state once the programs have stopped)
    /// and closes. Waits at most `within` for them.
    pub async fn stop(self, within: Duration) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                "Modbus links did not close within {} ms; outputs may keep their last values",
                within.as_millis()
            );
        }
    }
}

/// A Modbus device as the node sees it: its id, its config and the image
/// its link fills.
#[derive(Clone)]
pub struct ModbusView {
    /// Device id.
    pub id: String,
    /// Its config.
    pub cfg: Arc<ModbusConfig>,
    /// Its shared image.
    pub image: Arc<SharedImage>,
}

impl ModbusView {
    /// Inputs never read yet.
    pub fn unread_inputs(&self) -> usize {
        self.cfg
            .points
            .iter()
            .enumerate()
            .filter(|(i, p)| p.direction == triad_hw::Direction::Input && self.image.stamp(*i) == image::NEVER)
            .count()
    }
}

/// Wait (at most `within`) until every Modbus device's inputs have been
/// read once, so the control programs start on a full process image; log
/// the devices that have not answered by then.
pub async fn wait_first_samples(devices: &[ModbusView], within: Duration, clock: &Arc<dyn Clock>) {
    if devices.is_empty() {
        return;
    }
    let t0 = clock.now_ns();
    let deadline = tokio::time::Instant::now() + within;
    while devices.iter().any(|d| d.unread_inputs() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for d in devices.iter().filter(|d| d.unread_inputs() > 0) {
        tracing::warn!(
            device = %d.id,
            "{} has not answered within {} ms of the start ({} inputs unread); the axes bound to them start in the safe state",
            d.id,
            within.as_millis(),
            d.unread_inputs()
        );
    }
    tracing::info!(
        devices = devices.len(),
        waited_ms = (clock.now_ns() - t0) / 1_000_000,
        "Modbus devices polled"
    );
}

/// Copy the links' counters of `devices` into `metrics` every second
/// (`triad_modbus_*_total{device}`), until the runtime ends.
pub async fn export_metrics(devices: Vec<ModbusView>, metrics: Arc<crate::metrics::Metrics>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last = vec![[0u64; 5]; devices.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (d, seen) in devices.iter().zip(&mut last) {
            let s = &d.image.stats;
            let now = [
                &s.requests,
                &s.timeouts,
                &s.exceptions,
                &s.transport_errors,
                &s.connects,
            ]
            .map(|c| c.load(Relaxed));
            let label = crate::metrics::DeviceLabel { device: d.id.clone() };
            let families = [
                &metrics.modbus_requests,
                &metrics.modbus_timeouts,
                &metrics.modbus_exceptions,
                &metrics.modbus_transport_errors,
                &metrics.modbus_connects,
            ];
            for ((f, n), old) in families.into_iter().zip(now).zip(seen.iter_mut()) {
                if n > *old {
                    f.get_or_create(&label).inc_by(n - *old);
                    *old = n;
                }
            }
        }
    }
}
