//! Wiring of the model service into the node: the audit trail (file and
//! bus topic), the durable replay store, the service for the node's cell,
//! the inspection worker's side, the command gate's token checks, and the
//! dashboard's view of models and decisions.

use super::audit::{AuditLog, publish_audit};
use super::manager::{InitialModel, ModelService, ServiceOptions, SharedReplay, TargetSpec};
use super::replay::RedbReplay;
use super::slot::WorkerModels;
use crate::bus::publisher::Publisher;
use crate::clock::Clock;
use crate::commands::CommandAuth;
use crate::config::{CellConfig, NodeConfig};
use crate::dashboard::LiveState;
use anyhow::Context;
use std::sync::{Arc, Mutex};
use triad_inspect::{InspectorConfig, ModelKind, Roi};
use triad_schemas::Topic;

/// What the node gets from the model side.
pub struct NodeModels {
    /// The model service.
    pub service: ModelService,
    /// The inspection worker's models for the cell.
    pub worker: WorkerModels,
    /// Token checks for the command gate.
    pub command_auth: Arc<CommandAuth>,
}

/// The inspector settings of a cell.
pub fn inspector_config(cell: &CellConfig) -> InspectorConfig {
    InspectorConfig {
        roi: Roi {
            x: cell.roi[0],
            y: cell.roi[1],
            w: cell.roi[2],
            h: cell.roi[3],
        },
        threshold: cell.threshold,
    }
}

/// Start the model service for `cell` (call inside the node's runtime: it
/// spawns the task that publishes audit events on `audit/<node>/event`).
pub fn start(
    cfg: &NodeConfig,
    cell: &CellConfig,
    clock: Arc<dyn Clock>,
    publisher: Arc<Publisher>,
    live: Arc<LiveState>,
) -> anyhow::Result<NodeModels> {
    let audit_path = cfg.state_dir.join("audit.jsonl");
    let audit = Arc::new(
        AuditLog::open(&audit_path, cfg.node.as_str())
            .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?,
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    audit.set_bus(tx);
    tokio::spawn(publish_audit(rx, publisher, Topic::audit_event(&cfg.node)));
    let replay_path = cfg.state_dir.join("replay.redb");
    let replay: SharedReplay = Arc::new(Mutex::new(
        RedbReplay::open(&replay_path).map_err(|e| anyhow::anyhow!("cannot open the replay store: {e}"))?,
    ));
    let notify_live = live.clone();
    let service = ModelService::start(ServiceOptions {
        device: cfg.node.to_string(),
        state_dir: cfg.state_dir.clone(),
        keyring: cfg.security.keyring.clone(),
        policy: cfg.security.policy,
        settings: cfg.models.clone(),
        targets: vec![TargetSpec {
            id: cell.id.to_string(),
            kind: ModelKind::Inspection,
            inspector: inspector_config(cell),
            initial: match &cell.model_dir {
                None => InitialModel::Builtin,
                Some(d) => InitialModel::Dir(d.clone()),
            },
        }],
        clock: clock.clone(),
        audit: audit.clone(),
        replay: replay.clone(),
        notify: Some(Box::new(move |rec, st| {
            let text = format!(
                "{} {} on {}: {}{}",
                rec.action,
                rec.outcome,
                rec.target,
                rec.reason,
                rec.actor.as_ref().map(|a| format!(" (by {a})")).unwrap_or_default()
            );
            notify_live.update(|s| {
                s.inspection.model = format!(
                    "{} {}{}",
                    st.current.name,
                    st.current.version,
                    if st.probation { " (probation)" } else { "" }
                )
            });
            notify_live.event(rec.stamp_ns, "model", text);
        })),
    })?;
    if cfg.security.keyring.is_empty() {
        tracing::warn!(
            "no [security] keys configured: model deploys and external commands are refused (see docs/security.md)"
        );
    }
    let st = service.status();
    if let Some(s) = st.first() {
        tracing::info!(cell = %s.target, model = %s.current.name, version = %s.current.version, source = %s.current.source, sha256 = %s.current.onnx_sha256, "inspection model loaded");
        live.update(|l| l.inspection.model = format!("{} {}", s.current.name, s.current.version));
    }
    let worker = service.worker(cell.id.as_str())?;
    let command_auth = Arc::new(CommandAuth {
        device: cfg.node.to_string(),
        security: cfg.security.clone(),
        replay,
        audit,
        clock,
    });
    Ok(NodeModels {
        service,
        worker,
        command_auth,
    })
}
