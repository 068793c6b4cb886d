//! The command gate: every control command passes here before it reaches
//! the control thread.
//!
//! The gate checks the command, hands it to the control thread through the
//! request ring, waits for the control program's verdict, and writes the
//! decision to the audit trail. Commands from the node's own rules arrive
//! in-process ([`Origin::Internal`]); writes of a Modbus client allowed by
//! address ([`Origin::Fieldbus`]) skip the token (steps 2–5); commands from outside (the
//! `ctrl/<axis>/cmd` topic, the HTTP API) must carry a signed command token
//! (see [`crate::trust::token`]), checked in this order, the first failure
//! refusing the command with its reason:
//!
//! 1. the command is for this gate's axis ([`CommandError::UnknownAxis`]);
//! 2. it carries a token (`command_unsigned`);
//! 3. the token: EdDSA only, a key trusted for `command` tokens, its
//!    signature, its claims, `use: command`, expiry and not-before, audience
//!    = this node (the `token_*` codes of [`TokenRefusal`]);
//! 4. its scope: `scope.axis` is the command's axis, the action is among
//!    `scope.actions`, a rate is within `scope.min_ppm..=scope.max_ppm`
//!    (`command_out_of_scope`) — so "skip re-inspection" needs a token that
//!    names `SkipReinspection`;
//! 5. replay: the token's id was never used (`token_replayed`, durable
//!    across restarts; every command needs a fresh token);
//! 6. the axis limits ([`CommandError::OutOfRange`]), then the control
//!    program's own verdict ([`CommandError::Rejected`]).
//!
//! A refused command never reaches the request ring: it changes nothing.
//! [`authorise`] (steps 2–5) is sans-IO: it takes the time and the replay
//! store as arguments.

use crate::clock::Clock;
use crate::control::{ControlEvent, ControlRequest};
use crate::metrics::Metrics;
use crate::trust::SecurityConfig;
use crate::trust::SharedReplay;
use crate::trust::audit::{AuditLog, AuditRecord};
use crate::trust::replay::{ReplayGuard, ReplayRefusal, TokenId};
use crate::trust::token::{self, TokenRefusal, TokenUse, VerifiedToken};
use rtrb::Producer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// A write of a Modbus client that `[modbus_server] writers` allows by
    /// its address: Modbus carries no credentials, so the address is its
    /// identity (in `issued_by`); limits, the control program's verdict and
    /// the audit trail apply as to any command.
    Fieldbus,
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
    /// External command without a valid token, or outside its scope.
    #[error("command {id} refused ({code}): {reason}")]
    Unauthorised {
        /// Command id.
        id: String,
        /// Stable code (`command_unsigned`, `command_out_of_scope`, `token_expired`, …).
        code: &'static str,
        /// Why, and what to do.
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

impl CommandError {
    /// Stable code for the audit log and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::UnknownAxis { .. } => "command_unknown_axis",
            CommandError::OutOfRange { .. } => "command_out_of_range",
            CommandError::Unauthorised { code, .. } => code,
            CommandError::QueueFull { .. } => "command_queue_full",
            CommandError::Timeout { .. } => "command_timeout",
            CommandError::Rejected { .. } => "command_rejected",
        }
    }
}

/// Why [`authorise`] refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum AuthRefusal {
    /// No token.
    #[error(
        "unsigned: control commands from outside the node need a signed command token (`triad token issue --use command`)"
    )]
    Unsigned,
    /// The token failed a check.
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    /// The command is outside the token's scope.
    #[error("out of the token's scope: {detail}; ask for a token whose scope allows it")]
    OutOfScope {
        /// What is outside.
        detail: String,
    },
    /// The token was used before, or the store failed.
    #[error(transparent)]
    Replay(#[from] ReplayRefusal),
}

impl AuthRefusal {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthRefusal::Unsigned => "command_unsigned",
            AuthRefusal::Token(t) => t.code(),
            AuthRefusal::OutOfScope { .. } => "command_out_of_scope",
            AuthRefusal::Replay(r) => r.code(),
        }
    }
}

/// Steps 2–5 of the module doc for `cmd` on `device` at `now_s`.
pub fn authorise(
    cmd: &ControlCommand,
    security: &SecurityConfig,
    device: &str,
    now_s: i64,
    replay: &mut dyn ReplayGuard,
) -> Result<VerifiedToken, AuthRefusal> {
    let text = cmd
        .token
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or(AuthRefusal::Unsigned)?;
    let tok = token::verify(
        text,
        &security.keyring,
        TokenUse::Command,
        device,
        now_s,
        security.policy,
    )?;
    let scope = tok
        .claims
        .scope
        .as_ref()
        .expect("verify requires a scope for command tokens");
    let out = |detail: String| AuthRefusal::OutOfScope { detail };
    if scope.axis != cmd.axis {
        return Err(out(format!(
            "the token is for axis {:?}, the command for {:?}",
            scope.axis, cmd.axis
        )));
    }
    if !scope.actions.contains(&cmd.action) {
        return Err(out(format!(
            "{:?} is not among the allowed actions {:?}",
            cmd.action, scope.actions
        )));
    }
    if matches!(cmd.action, CommandAction::SetRate | CommandAction::Derate) {
        let v = cmd.value.unwrap_or(f64::NAN);
        let lo = scope.min_ppm.unwrap_or(f64::NEG_INFINITY);
        let hi = scope.max_ppm.unwrap_or(f64::INFINITY);
        if !(v >= lo && v <= hi) {
            return Err(out(format!(
                "{:?} to {v} PPM is outside the token's {}..={} PPM",
                cmd.action,
                scope.min_ppm.map_or("-".into(), |x| x.to_string()),
                scope.max_ppm.map_or("-".into(), |x| x.to_string())
            )));
        }
    }
    replay.check_and_remember(TokenId::of(&tok), security.policy.clock_skew_s, now_s)?;
    Ok(tok)
}

/// What the gate needs to check command tokens.
pub struct CommandAuth {
    /// This node's id (the tokens' audience).
    pub device: String,
    /// Trusted keys and token limits.
    pub security: SecurityConfig,
    /// Token ids seen (shared with the model service).
    pub replay: SharedReplay,
    /// The audit trail.
    pub audit: Arc<AuditLog>,
    /// The node's clock.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CommandAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandAuth")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// The gate for one axis.
pub struct CommandGate {
    axis: String,
    min_ppm: f64,
    max_ppm: f64,
    requests: Mutex<Producer<ControlRequest>>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<(i64, ControlEvent)>>>,
    /// Woken when a request enters the ring (see [`CommandGate::submitted`]).
    submitted: tokio::sync::Notify,
    next_handle: AtomicU64,
    metrics: std::sync::Arc<Metrics>,
    auth: Option<Arc<CommandAuth>>,
}

impl CommandGate {
    /// A gate feeding `requests`. Without [`CommandGate::with_auth`] every
    /// external command is refused.
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
            submitted: tokio::sync::Notify::new(),
            next_handle: AtomicU64::new(1),
            metrics,
            auth: None,
        }
    }

    /// Resolves when a request has entered the ring (a permit is kept if
    /// nobody waits): the telemetry pump then looks for its verdict every
    /// cycle instead of every 5 ms.
    pub async fn submitted(&self) {
        self.submitted.notified().await
    }

    /// Does a request wait for the control program's verdict?
    pub fn awaiting_verdict(&self) -> bool {
        !self.waiters.lock().expect("poisoned").is_empty()
    }

    /// Check external commands' tokens with `auth` and audit decisions.
    pub fn with_auth(mut self, auth: Arc<CommandAuth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The axis.
    pub fn axis(&self) -> &str {
        &self.axis
    }

    /// Check `cmd`'s axis and value (not its token; see [`CommandGate::authorise`]).
    pub fn check(&self, cmd: &ControlCommand, _origin: Origin) -> Result<(), CommandError> {
        if cmd.axis != self.axis {
            return Err(CommandError::UnknownAxis {
                id: cmd.command_id.clone(),
                axis: cmd.axis.clone(),
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

    /// Check an external command's token (steps 2–5) at the node's time.
    /// Blocking (the replay store writes to disk).
    pub fn authorise(&self, cmd: &ControlCommand) -> Result<Option<VerifiedToken>, CommandError> {
        let refuse = |code: &'static str, reason: String| CommandError::Unauthorised {
            id: cmd.command_id.clone(),
            code,
            reason,
        };
        let Some(auth) = &self.auth else {
            return Err(refuse(
                "command_no_keys",
                "this node has no command-token verification configured; external commands are refused".into(),
            ));
        };
        let now_s = auth.clock.now_ns().div_euclid(1_000_000_000);
        let mut replay = auth.replay.lock().expect("replay poisoned");
        authorise(cmd, &auth.security, &auth.device, now_s, &mut *replay)
            .map(Some)
            .map_err(|r| refuse(r.code(), r.to_string()))
    }

    /// Check, execute and wait for the control program's verdict. Returns the
    /// control thread's clock stamp of the cycle that applied it.
    pub async fn submit(&self, cmd: &ControlCommand, origin: Origin) -> Result<(i64, ControlEvent), CommandError> {
        let (result, tok) = self.submit_inner(cmd, origin).await;
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
        if let Some(auth) = &self.auth {
            let rec = audit_record(cmd, origin, tok.as_ref(), &result);
            let (audit, stamp) = (auth.audit.clone(), auth.clock.now_ns());
            let _ = tokio::task::spawn_blocking(move || audit.record(stamp, rec)).await;
        }
        result
    }

    async fn submit_inner(
        &self,
        cmd: &ControlCommand,
        origin: Origin,
    ) -> (Result<(i64, ControlEvent), CommandError>, Option<VerifiedToken>) {
        if let Err(e) = self.check_axis(cmd) {
            return (Err(e), None);
        }
        let tok = if origin == Origin::External {
            match blocking(|| self.authorise(cmd)) {
                Ok(t) => t,
                Err(e) => return (Err(e), None),
            }
        } else {
            None
        };
        if let Err(e) = self.check(cmd, origin) {
            return (Err(e), tok);
        }
        (self.execute(cmd).await, tok)
    }

    fn check_axis(&self, cmd: &ControlCommand) -> Result<(), CommandError> {
        if cmd.axis != self.axis {
            return Err(CommandError::UnknownAxis {
                id: cmd.command_id.clone(),
                axis: cmd.axis.clone(),
            });
        }
        Ok(())
    }

    async fn execute(&self, cmd: &ControlCommand) -> Result<(i64, ControlEvent), CommandError> {
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
        self.submitted.notify_one();
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

/// Run `f`, which may block on disk, without stalling the other tasks of a
/// multi-threaded runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn audit_record(
    cmd: &ControlCommand,
    origin: Origin,
    tok: Option<&VerifiedToken>,
    result: &Result<(i64, ControlEvent), CommandError>,
) -> AuditRecord {
    let what = format!(
        "{:?}{}",
        cmd.action,
        cmd.value.map(|v| format!(" {v} PPM")).unwrap_or_default()
    );
    let (accepted, code, reason) = match result {
        Ok((_, ControlEvent::Applied { from_ppm, to_ppm, .. })) => (
            true,
            "ok",
            format!("{what} applied: {from_ppm} → {to_ppm} PPM ({})", cmd.reason),
        ),
        Ok(_) => (true, "ok", format!("{what} applied ({})", cmd.reason)),
        Err(e) => (false, e.code(), format!("{what}: {e}")),
    };
    let actor = match (origin, tok) {
        (_, Some(t)) => Some(t.claims.iss.clone()),
        (Origin::Internal, None) => Some(cmd.issued_by.clone()),
        (Origin::External, None) => Some(format!("{} (unverified)", cmd.issued_by)),
        (Origin::Fieldbus, None) => Some(cmd.issued_by.clone()),
    };
    AuditRecord {
        origin: match origin {
            Origin::Internal => "node".into(),
            Origin::External => format!("external command {}", cmd.command_id),
            Origin::Fieldbus => format!("modbus write {}", cmd.command_id),
        },
        actor,
        key_id: tok.map(|t| t.key_name.clone()),
        token_id: tok.map(|t| t.claims.jti.clone()),
        ..AuditRecord::new("command", &cmd.axis, accepted, code, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keyring::{KeyUse, Keyring, TrustedKey};
    use crate::trust::keys::SigningKey;
    use crate::trust::replay::MemoryReplay;
    use crate::trust::token::{Audience, Claims, CommandScope, TokenPolicy, issue};
    use triad_schemas::{ClockState, Envelope};

    const NOW: i64 = 1_800_000_000;

    fn setup() -> (SigningKey, SecurityConfig) {
        let k = SigningKey::generate("hmi").unwrap().0;
        let sec = SecurityConfig {
            keyring: Keyring::new(vec![TrustedKey {
                name: "hmi".into(),
                public: *k.public(),
                uses: vec![KeyUse::Command],
                revoked: false,
            }]),
            policy: TokenPolicy::default(),
        };
        (k, sec)
    }

    fn cmd(action: CommandAction, value: Option<f64>, token: Option<String>) -> ControlCommand {
        ControlCommand {
            envelope: Envelope {
                schema_version: 1,
                node: "hmi".into(),
                sequence: 1,
                stamp_ns: 0,
                clock: ClockState::FreeRunning,
                clock_offset_ns: None,
            },
            command_id: "c1".into(),
            axis: "axis_07".into(),
            action,
            value,
            reason: String::new(),
            issued_by: "hmi".into(),
            token,
        }
    }

    fn claims(actions: Vec<CommandAction>) -> Claims {
        Claims {
            iss: "hmi-3".into(),
            sub: "axis_07".into(),
            aud: Audience::One("edge-01".into()),
            nbf: NOW - 1,
            exp: NOW + 60,
            iat: None,
            jti: "j1".into(),
            use_: TokenUse::Command,
            bundle_digest: None,
            bundle_version: None,
            scope: Some(CommandScope {
                axis: "axis_07".into(),
                actions,
                min_ppm: Some(5.0),
                max_ppm: Some(12.0),
            }),
        }
    }

    #[test]
    fn authorise_checks_token_then_scope_then_replay() {
        let (k, sec) = setup();
        let mut replay = MemoryReplay::default();
        let mut auth = |c: &ControlCommand| authorise(c, &sec, "edge-01", NOW, &mut replay).map_err(|e| e.code());
        use CommandAction::*;
        assert_eq!(auth(&cmd(SetRate, Some(9.0), None)), Err("command_unsigned"));
        let t = issue(&claims(vec![SetRate]), &k);
        assert_eq!(
            auth(&cmd(SkipReinspection, None, Some(t.clone()))),
            Err("command_out_of_scope")
        );
        assert_eq!(
            auth(&cmd(SetRate, Some(13.0), Some(t.clone()))),
            Err("command_out_of_scope")
        );
        assert_eq!(auth(&cmd(SetRate, None, Some(t.clone()))), Err("command_out_of_scope"));
        // Out-of-scope attempts did not use the token up.
        assert!(auth(&cmd(SetRate, Some(9.0), Some(t.clone()))).is_ok());
        assert_eq!(auth(&cmd(SetRate, Some(9.0), Some(t))), Err("token_replayed"));
        let mut other = cmd(SetRate, Some(9.0), None);
        other.axis = "axis_08".into();
        other.token = Some(issue(&claims(vec![SetRate]), &k));
        assert_eq!(auth(&other), Err("command_out_of_scope"));
    }
}
