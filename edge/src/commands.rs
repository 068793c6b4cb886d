//! The command gate: every control command passes here before it reaches
//! the control thread.
//!
//! The gate checks the command (axis, action, value against the axis limits,
//! authorisation), hands it to the control thread through the request ring,
//! waits for the control program's verdict, and writes the decision to the
//! audit trail. Commands from the node's own rules arrive in-process;
//! commands from outside (the `ctrl/<axis>/cmd` topic) must carry a signed
//! token, and in this version every external command is refused because
//! token verification is not built yet (see docs/security.md).

use crate::control::{ControlEvent, ControlRequest};
use crate::metrics::Metrics;
use rtrb::Producer;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;
use triad_schemas::{CommandAction, ControlCommand};

/// Where a command came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A rule of this node (trusted, in-process).
    Internal,
    /// The bus or an operator tool (must be signed).
    External,
}

/// Why the gate refused a command.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CommandError {
    /// Not for an axis this node controls.
    #[error("command {id} is for axis {axis:?}, which this node does not control")]
    UnknownAxis {
        /// Command id.
        id: String,
        /// Axis.
        axis: String,
    },
    /// Value missing or outside the axis limits.
    #[error("command {id}: {action:?} needs a rate within {min}..={max} PPM, got {value:?}")]
    OutOfRange {
        /// Command id.
        id: String,
        /// Action.
        action: CommandAction,
        /// Given.
        value: Option<f64>,
        /// Limit.
        min: f64,
        /// Limit.
        max: f64,
    },
    /// External command without a valid token.
    #[error("command {id} refused: {reason}")]
    Unauthorised {
        /// Command id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The request ring is full (the control thread is not taking requests).
    #[error("command {id}: the control thread's request queue is full; is the control loop running?")]
    QueueFull {
        /// Command id.
        id: String,
    },
    /// No verdict from the control thread in time.
    #[error("command {id}: no answer from the control thread within {timeout_ms} ms")]
    Timeout {
        /// Command id.
        id: String,
        /// Timeout.
        timeout_ms: u64,
    },
    /// The control program refused it.
    #[error("command {id} rejected by the control program: {reason}")]
    Rejected {
        /// Command id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// The gate for one axis.
pub struct CommandGate {
    axis: String,
    min_ppm: f64,
    max_ppm: f64,
    requests: Mutex<Producer<ControlRequest>>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<(i64, ControlEvent)>>>,
    next_handle: AtomicU64,
    metrics: std::sync::Arc<Metrics>,
}

impl CommandGate {
    /// A gate feeding `requests`.
    pub fn new(
        axis: String,
        min_ppm: f64,
        max_ppm: f64,
        requests: Producer<ControlRequest>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            axis,
            min_ppm,
            max_ppm,
            requests: Mutex::new(requests),
            waiters: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            metrics,
        }
    }

    /// Check `cmd` without executing it.
    pub fn check(&self, cmd: &ControlCommand, origin: Origin) -> Result<(), CommandError> {
        if cmd.axis != self.axis {
            return Err(CommandError::UnknownAxis {
                id: cmd.command_id.clone(),
                axis: cmd.axis.clone(),
            });
        }
        if origin == Origin::External {
            let reason = match &cmd.token {
                None => "unsigned: control commands from outside the node need a signed token".to_string(),
                Some(_) => {
                    "token verification is not available in this version; external commands are refused".to_string()
                }
            };
            return Err(CommandError::Unauthorised {
                id: cmd.command_id.clone(),
                reason,
            });
        }
        if matches!(cmd.action, CommandAction::SetRate | CommandAction::Derate) {
            let ok = cmd
                .value
                .is_some_and(|v| v.is_finite() && v >= self.min_ppm && v <= self.max_ppm);
            if !ok {
                return Err(CommandError::OutOfRange {
                    id: cmd.command_id.clone(),
                    action: cmd.action,
                    value: cmd.value,
                    min: self.min_ppm,
                    max: self.max_ppm,
                });
            }
        }
        Ok(())
    }

    /// Check, execute and wait for the control program's verdict. Returns the
    /// control thread's clock stamp of the cycle that applied it.
    pub async fn submit(&self, cmd: &ControlCommand, origin: Origin) -> Result<(i64, ControlEvent), CommandError> {
        let result = self.submit_inner(cmd, origin).await;
        match &result {
            Ok(ev) => {
                self.metrics.command("applied");
                tracing::info!(command = %cmd.command_id, axis = %cmd.axis, action = ?cmd.action, value = ?cmd.value, issued_by = %cmd.issued_by, outcome = ?ev, "command applied");
            }
            Err(e) => {
                self.metrics.command("rejected");
                tracing::warn!(command = %cmd.command_id, axis = %cmd.axis, action = ?cmd.action, issued_by = %cmd.issued_by, error = %e, "command rejected");
            }
        }
        result
    }

    async fn submit_inner(&self, cmd: &ControlCommand, origin: Origin) -> Result<(i64, ControlEvent), CommandError> {
        self.check(cmd, origin)?;
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("poisoned").insert(handle, tx);
        let req = ControlRequest {
            handle,
            action: cmd.action,
            value: cmd.value.unwrap_or(0.0),
        };
        if self.requests.lock().expect("poisoned").push(req).is_err() {
            self.waiters.lock().expect("poisoned").remove(&handle);
            return Err(CommandError::QueueFull {
                id: cmd.command_id.clone(),
            });
        }
        let timeout = Duration::from_millis(1000);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((_, ControlEvent::Rejected { reason, .. }))) => Err(CommandError::Rejected {
                id: cmd.command_id.clone(),
                reason: reason.describe().into(),
            }),
            Ok(Ok(applied)) => Ok(applied),
            _ => {
                self.waiters.lock().expect("poisoned").remove(&handle);
                Err(CommandError::Timeout {
                    id: cmd.command_id.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    /// The control thread reported on a request at `stamp_ns` (called by the
    /// telemetry pump).
    pub fn handle_event(&self, stamp_ns: i64, ev: &ControlEvent) {
        let handle = match ev {
            ControlEvent::Applied { handle, .. } | ControlEvent::Rejected { handle, .. } => *handle,
            _ => return,
        };
        if let Some(tx) = self.waiters.lock().expect("poisoned").remove(&handle) {
            let _ = tx.send((stamp_ns, *ev));
        }
    }
}
