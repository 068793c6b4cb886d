//! systemd integration (`Type=notify`, `WatchdogSec`): `READY=1` once the
//! control thread cycles and the durable state is open, `WATCHDOG=1` pings
//! only while the control thread cycles, `STOPPING=1` at an orderly stop.
//!
//! Without systemd (`NOTIFY_SOCKET` unset) every call does nothing. A hung
//! control cycle stops the pings: systemd then kills and restarts the node
//! after `WatchdogSec` (the outputs' safe state on the field side is the
//! devices' own watchdog's job; the node's is the I/O scan's last write).

use crate::clock::monotonic_ns;
use crate::control::ControlStats;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;

/// The control thread counts as hung when its last cycle is older than
/// this (the same bound as `/healthz`'s `control` check).
pub const CONTROL_HUNG: Duration = Duration::from_millis(100);

/// Tell systemd the node is ready, with a status line.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!(error = %e, "could not notify systemd of readiness");
    }
}

/// Tell systemd the node is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Ping systemd's watchdog at half its interval while the control thread
/// cycles; none at all when the unit has no watchdog. Runs until dropped.
pub async fn watchdog(control: Arc<ControlStats>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog: pinging while the control thread cycles"
    );
    let mut tick = tokio::time::interval(interval / 2);
    let mut withheld = false;
    loop {
        tick.tick().await;
        match control.cycling(monotonic_ns(), CONTROL_HUNG.as_nanos() as i64) {
            Ok(_) => {
                if std::mem::take(&mut withheld) {
                    tracing::info!("control thread cycles again: watchdog pings resume");
                }
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            Err(age) if !withheld => {
                withheld = true;
                tracing::error!(
                    last_cycle_ms = age / 1_000_000,
                    "control thread not cycling: systemd watchdog pings withheld; systemd restarts the node after WatchdogSec"
                );
            }
            Err(_) => {}
        }
    }
}
