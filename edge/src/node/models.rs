//! Wiring of the model service into the node: the audit trail (file and
//! bus topic), the durable replay store, the service for the node's cell
//! (inspection model) and asset (twin model), the inspection worker's and
//! the twin thread's sides, the command gate's token checks, and the
//! dashboard's view of models and decisions.

use crate::bus::publisher::Publisher;
use crate::clock::Clock;
use crate::commands::CommandAuth;
use crate::config::{AssetConfig, CellConfig, NodeConfig};
use crate::dashboard::LiveState;
use crate::models::manager::{InitialModel, ModelService, ServiceOptions, TargetSpec};
use crate::models::slot::WorkerModels;
use crate::models::twin::TwinModels;
use crate::trust::SharedReplay;
use crate::trust::audit::{AuditLog, publish_audit};
use crate::trust::replay::RedbReplay;
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
    /// The twin thread's predictor for the asset.
    pub twin: TwinModels,
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

/// Start the model service for `cell` and `asset` (call inside the node's
/// runtime: it spawns the task that publishes audit events on
/// `audit/<node>/event`).
pub fn start(
    cfg: &NodeConfig,
    cell: &CellConfig,
    asset: &AssetConfig,
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
        RedbReplay::open(
            &replay_path,
            cfg.security.policy,
            clock.now_ns().div_euclid(1_000_000_000),
        )
        .map_err(|e| anyhow::anyhow!("cannot open the replay store: {e}"))?,
    ));
    let notify_live = live.clone();
    let service = ModelService::start(ServiceOptions {
        device: cfg.node.to_string(),
        state_dir: cfg.state_dir.clone(),
        keyring: cfg.security.keyring.clone(),
        policy: cfg.security.policy,
        settings: cfg.models.clone(),
        targets: vec![
            TargetSpec {
                id: cell.id.to_string(),
                kind: ModelKind::Inspection,
                inspector: inspector_config(cell),
                initial: match &cell.model_dir {
                    None => InitialModel::Builtin,
                    Some(d) => InitialModel::Dir(crate::config::resolve(d)),
                },
            },
            TargetSpec {
                id: asset.id.to_string(),
                kind: ModelKind::Twin,
                inspector: inspector_config(cell),
                initial: InitialModel::Builtin,
            },
        ],
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
            let model = format!(
                "{} {}{}",
                st.current.name,
                st.current.version,
                if st.probation { " (probation)" } else { "" }
            );
            notify_live.update(|s| match st.kind {
                ModelKind::Inspection => s.inspection.model = model,
                ModelKind::Twin => s.twin.model = model,
            });
            notify_live.event(rec.stamp_ns, "model", text);
        })),
    })?;
    if cfg.security.keyring.is_empty() {
        tracing::warn!(
            "no [security] keys configured: model deploys and external commands are refused (see docs/security.md)"
        );
    }
    for s in service.status() {
        tracing::info!(target = %s.target, kind = ?s.kind, model = %s.current.name, version = %s.current.version, source = %s.current.source, sha256 = %s.current.onnx_sha256, "model loaded");
        let model = format!("{} {}", s.current.name, s.current.version);
        live.update(|l| match s.kind {
            ModelKind::Inspection => l.inspection.model = model,
            ModelKind::Twin => l.twin.model = model,
        });
    }
    let worker = service.worker(cell.id.as_str())?;
    let twin = service.twin_worker(asset.id.as_str())?;
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
        twin,
        command_auth,
    })
}
