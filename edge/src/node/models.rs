//! Wiring of the model service into the node: the audit trail (file and
//! bus topic), the durable replay store, the service for every cell
//! (inspection model) and asset (twin model) of the line, the inspection
//! workers' and twin threads' sides, the command gates' token checks, and
//! each station's dashboard view of its models and decisions.

use crate::bus::publisher::Publisher;
use crate::clock::Clock;
use crate::commands::CommandAuth;
use crate::config::{CellConfig, NodeConfig, StationConfig};
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
    /// Each station's inspection worker models and twin predictor, in
    /// station order.
    pub stations: Vec<(WorkerModels, TwinModels)>,
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

/// Start the model service for every station's cell and asset (call inside
/// the node's runtime: it spawns the task that publishes audit events on
/// `audit/<node>/event`). `lives[i]` is station `i`'s dashboard view: a
/// model decision on its cell or asset shows there.
pub fn start(
    cfg: &NodeConfig,
    stations: &[StationConfig],
    clock: Arc<dyn Clock>,
    publisher: Arc<Publisher>,
    lives: &[Arc<LiveState>],
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
    // Which view shows a target's decisions: cells and assets by id.
    let view_of: std::collections::HashMap<String, Arc<LiveState>> = stations
        .iter()
        .zip(lives)
        .flat_map(|(st, live)| {
            [
                (st.cell.id.to_string(), live.clone()),
                (st.asset.id.to_string(), live.clone()),
            ]
        })
        .collect();
    let notify_views = view_of.clone();
    let mut targets = Vec::with_capacity(stations.len() * 2);
    for st in stations {
        targets.push(TargetSpec {
            id: st.cell.id.to_string(),
            kind: ModelKind::Inspection,
            inspector: inspector_config(&st.cell),
            initial: match &st.cell.model_dir {
                None => InitialModel::Builtin,
                Some(d) => InitialModel::Dir(crate::config::resolve(d)),
            },
        });
        targets.push(TargetSpec {
            id: st.asset.id.to_string(),
            kind: ModelKind::Twin,
            inspector: inspector_config(&st.cell),
            initial: InitialModel::Builtin,
        });
    }
    let service = ModelService::start(ServiceOptions {
        device: cfg.node.to_string(),
        state_dir: cfg.state_dir.clone(),
        keyring: cfg.security.keyring.clone(),
        policy: cfg.security.policy,
        settings: cfg.models.clone(),
        targets,
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
            if let Some(live) = notify_views.get(rec.target.as_str()) {
                live.update(|s| match st.kind {
                    ModelKind::Inspection => s.inspection.model = model,
                    ModelKind::Twin => s.twin.model = model,
                });
                live.event(rec.stamp_ns, "model", text);
            }
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
        if let Some(live) = view_of.get(s.target.as_str()) {
            live.update(|l| match s.kind {
                ModelKind::Inspection => l.inspection.model = model,
                ModelKind::Twin => l.twin.model = model,
            });
        }
    }
    let sides = stations
        .iter()
        .map(|st| {
            Ok((
                service.worker(st.cell.id.as_str())?,
                service.twin_worker(st.asset.id.as_str())?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let command_auth = Arc::new(CommandAuth {
        device: cfg.node.to_string(),
        security: cfg.security.clone(),
        replay,
        audit,
        clock,
    });
    Ok(NodeModels {
        service,
        stations: sides,
        command_auth,
    })
}
