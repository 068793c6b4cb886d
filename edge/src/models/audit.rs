//! The audit trail of security decisions: every deploy, rollback,
//! automatic rollback, probation result, model loaded at start, and every
//! external control command, accepted or refused.
//!
//! Each decision is one JSON line appended to `<state_dir>/audit.jsonl`
//! (written and fsynced before the caller gets its answer), kept in memory
//! for `/api/audit` (the last 500), and published on the bus topic
//! `audit/<node>/event` through the durable outbox. A record holds who
//! (`actor`: the token's issuer, a rule or `node:fuse`; `key_id`;
//! `token_id`; `origin`), what (`action`, `target`, bundle name, version,
//! digest, signer, versions before and after), when (`stamp_ns`) and why
//! (`code`, `reason`). Tokens and keys themselves are never recorded.

use crate::bus::publisher::Publisher;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use triad_schemas::{AuditEvent, AuditOutcome, Topic};

/// Records kept in memory for the API.
pub const RECENT: usize = 500;

/// One decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, ns since the epoch (node clock).
    pub stamp_ns: i64,
    /// Node id.
    pub node: String,
    /// Unique on this node.
    pub event_id: String,
    /// `deploy`, `rollback`, `auto_rollback`, `probation_passed`, `load_at_start`, `command`.
    pub action: String,
    /// `accepted` or `refused`.
    pub outcome: String,
    /// Cell, asset or axis.
    pub target: String,
    /// `ok` or the refusal code.
    pub code: String,
    /// Why, in words.
    pub reason: String,
    /// Who asked.
    pub actor: Option<String>,
    /// Key that signed the token.
    pub key_id: Option<String>,
    /// The token's `jti`.
    pub token_id: Option<String>,
    /// Where the request came from.
    pub origin: String,
    /// Bundle model name.
    pub bundle_name: Option<String>,
    /// Bundle version.
    pub bundle_version: Option<String>,
    /// Bundle digest.
    pub bundle_digest: Option<String>,
    /// Key that signed the bundle.
    pub bundle_signer: Option<String>,
    /// Version before.
    pub from_version: Option<String>,
    /// Version after.
    pub to_version: Option<String>,
}

impl AuditRecord {
    /// A record of `action` on `target`; fill in the rest with struct update.
    pub fn new(action: &str, target: &str, accepted: bool, code: &str, reason: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            target: target.into(),
            outcome: if accepted { "accepted" } else { "refused" }.into(),
            code: code.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    /// Was it accepted?
    pub fn accepted(&self) -> bool {
        self.outcome == "accepted"
    }

    /// The bus message (envelope filled by the publisher).
    pub fn to_event(&self, envelope: triad_schemas::Envelope) -> AuditEvent {
        AuditEvent {
            envelope,
            event_id: self.event_id.clone(),
            action: self.action.clone(),
            outcome: if self.accepted() {
                AuditOutcome::Accepted
            } else {
                AuditOutcome::Refused
            },
            target: self.target.clone(),
            code: self.code.clone(),
            reason: self.reason.clone(),
            actor: self.actor.clone(),
            key_id: self.key_id.clone(),
            token_id: self.token_id.clone(),
            origin: self.origin.clone(),
            bundle_name: self.bundle_name.clone(),
            bundle_version: self.bundle_version.clone(),
            bundle_digest: self.bundle_digest.clone(),
            bundle_signer: self.bundle_signer.clone(),
            from_version: self.from_version.clone(),
            to_version: self.to_version.clone(),
        }
    }
}

/// The audit trail of a node.
pub struct AuditLog {
    node: String,
    path: PathBuf,
    file: Mutex<std::fs::File>,
    recent: Mutex<VecDeque<AuditRecord>>,
    bus: Mutex<Option<tokio::sync::mpsc::UnboundedSender<AuditRecord>>>,
    seq: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Open (append to) `path`; the last records are read back for the API.
    pub fn open(path: &Path, node: &str) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut recent = VecDeque::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                if let Ok(r) = serde_json::from_str::<AuditRecord>(line) {
                    recent.push_back(r);
                    if recent.len() > RECENT {
                        recent.pop_front();
                    }
                }
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            node: node.into(),
            path: path.to_path_buf(),
            file: Mutex::new(file),
            recent: Mutex::new(recent),
            bus: Mutex::new(None),
            seq: AtomicU64::new(0),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Send every later record to `tx` (the bus publisher task).
    pub fn set_bus(&self, tx: tokio::sync::mpsc::UnboundedSender<AuditRecord>) {
        *self.bus.lock().expect("audit poisoned") = Some(tx);
    }

    /// Record a decision at `stamp_ns`: file (fsync), memory, bus. A failure
    /// to write the file is logged loudly; the decision stands.
    pub fn record(&self, stamp_ns: i64, mut rec: AuditRecord) -> AuditRecord {
        rec.stamp_ns = stamp_ns;
        rec.node = self.node.clone();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        rec.event_id = format!("{}-{}-{n}", self.node, stamp_ns);
        let mut line = serde_json::to_vec(&rec).expect("audit record serialises");
        line.push(b'\n');
        {
            let mut f = self.file.lock().expect("audit poisoned");
            if let Err(e) = f.write_all(&line).and_then(|_| f.sync_data()) {
                tracing::error!(path = %self.path.display(), error = %e, "audit record not written to the file");
            }
        }
        if rec.accepted() {
            tracing::info!(action = %rec.action, target = %rec.target, code = %rec.code, actor = ?rec.actor, reason = %rec.reason, "audit");
        } else {
            tracing::warn!(action = %rec.action, target = %rec.target, code = %rec.code, actor = ?rec.actor, reason = %rec.reason, "audit: refused");
        }
        {
            let mut r = self.recent.lock().expect("audit poisoned");
            r.push_back(rec.clone());
            if r.len() > RECENT {
                r.pop_front();
            }
        }
        if let Some(tx) = self.bus.lock().expect("audit poisoned").as_ref() {
            let _ = tx.send(rec.clone());
        }
        rec
    }

    /// The last `n` records, oldest first.
    pub fn recent(&self, n: usize) -> Vec<AuditRecord> {
        let r = self.recent.lock().expect("audit poisoned");
        r.iter().skip(r.len().saturating_sub(n)).cloned().collect()
    }
}

/// Publish audit records on `topic` (at-least-once, through the outbox).
pub async fn publish_audit(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<AuditRecord>,
    publisher: std::sync::Arc<Publisher>,
    topic: Topic,
) {
    while let Some(rec) = rx.recv().await {
        let ev = rec.to_event(publisher.envelope(rec.stamp_ns));
        if let Err(e) = publisher.publish_durably(&topic, ev, false).await {
            tracing::error!(topic = %topic, error = %e, "audit event not stored for the bus; it is in the audit file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_to_the_file_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("triad-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let log = AuditLog::open(&path, "edge-01").unwrap();
            log.set_bus(tx);
            log.record(
                5,
                AuditRecord {
                    actor: Some("alice".into()),
                    ..AuditRecord::new("deploy", "cell_2245", false, "token_expired", "too late")
                },
            );
            log.record(6, AuditRecord::new("rollback", "cell_2245", true, "ok", "asked"));
        }
        assert_eq!(rx.try_recv().unwrap().code, "token_expired");
        let log = AuditLog::open(&path, "edge-01").unwrap();
        let r = log.recent(10);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].stamp_ns, r[0].outcome.as_str()), (5, "refused"));
        assert_eq!(r[1].action, "rollback");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
