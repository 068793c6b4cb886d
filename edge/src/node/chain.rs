//! The closed loop as durable steps: alert raised → derate → alert stored →
//! analysis (work order built) → work order stored in the outbox.
//!
//! Each step is written to a journal (`<state_dir>/chains/<alert_id>.json`,
//! atomically replaced) before the next begins, with what the later steps
//! need (the inspection batches at the alert, the rate before and after the
//! derate, the built work order). An orderly stop waits for chains in flight
//! ([`ChainTracker::wait_idle`], bounded); a chain that a stop, a crash or a
//! power cut interrupted is completed from its journal at the next start
//! ([`resume`]). A journal is deleted once the outbox no longer holds its
//! work order (delivered); if the outbox was lost, the work order is stored
//! again under the same id (the MES sees the same idempotency key).

use super::StationCtx;
use crate::commands::Origin;
use crate::control::ControlEvent;
use crate::dashboard::{AlertView, ChainView, WorkOrderView};
use crate::rules::chain::{self as core, Action, AnalysisInputs, DerateOutcome, DerateRequest, Event, RaisedAlert};
pub use crate::rules::chain::{ChainRecord, Step};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use triad_schemas::{CommandAction, ControlCommand};

/// Counts chains in flight so an orderly stop can wait for them.
#[derive(Default)]
pub struct ChainTracker {
    active: AtomicUsize,
    idle: tokio::sync::Notify,
}

struct Active<'a>(&'a ChainTracker);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl ChainTracker {
    /// Chains in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Wait until no chain is in flight, at most `limit`; true if idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            if self.active() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.active() == 0;
            }
        }
    }
}

/// Where the journals live.
pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("chains")
}

fn journal_path(state_dir: &Path, alert_id: &str) -> PathBuf {
    let safe: String = alert_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    journal_dir(state_dir).join(format!("{safe}.json"))
}

fn save(ctx: &StationCtx, rec: &ChainRecord) {
    let path = journal_path(&ctx.settings.state_dir, &rec.alert_id);
    let res = std::fs::create_dir_all(journal_dir(&ctx.settings.state_dir)).and_then(|_| {
        let text = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        crate::durable::write_atomic(&path, &text)
    });
    if let Err(e) = res {
        tracing::error!(path = %path.display(), alert = %rec.alert_id, step = ?rec.step, error = %e,
            "closed-loop journal not written; the chain goes on, but a stop now could not be completed at the next start");
    }
}

fn remove(ctx: &StationCtx, alert_id: &str) {
    let path = journal_path(&ctx.settings.state_dir, alert_id);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "done closed-loop journal not removed");
    }
}

/// Read every journal; damaged ones are set aside and named.
pub fn load_all(state_dir: &Path) -> Vec<ChainRecord> {
    let dir = journal_dir(state_dir);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<ChainRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => out.push(r),
            Err(why) => {
                let aside = crate::durable::set_aside(&path);
                tracing::error!(file = %path.display(), error = %why, set_aside = ?aside.ok(),
                    "closed-loop journal damaged: that chain's remaining steps (derate, alert, work order) cannot be completed; \
                     check the alert on the twin topic and issue the work order by hand");
            }
        }
    }
    out.sort_by_key(|r| r.alert_ns);
    out
}

/// Test hook (feature `test-support`): pause before `step` for
/// `TRIAD_TEST_CHAIN_PAUSE_MS` when `TRIAD_TEST_CHAIN_PAUSE_AT` names it, so
/// a test can stop the node at that step.
async fn pause_before(step: &str) {
    #[cfg(feature = "test-support")]
    if std::env::var("TRIAD_TEST_CHAIN_PAUSE_AT").is_ok_and(|s| s == step) {
        let ms: u64 = std::env::var("TRIAD_TEST_CHAIN_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        tracing::warn!(step, ms, "test hook: closed loop paused before this step");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    #[cfg(not(feature = "test-support"))]
    let _ = step;
}

/// The inspection figures of the station now: the last batches and the
/// healthy baseline before `onset_ns`.
fn inspection_now(ctx: &StationCtx, onset_ns: i64) -> AnalysisInputs {
    let h = ctx.history.lock().expect("history poisoned");
    AnalysisInputs::from_history(&h, ctx.rules.analysis.batches, onset_ns)
}

/// Start a new chain for a raised alert (journaled before anything is done).
pub fn start(ctx: &Arc<StationCtx>, alert: RaisedAlert) {
    let ppm_before = ctx.live.update(|s| s.axis.ppm_setpoint);
    let rec = core::raise(&ctx.rules, &alert, ppm_before, inspection_now(ctx, alert.onset_ns));
    ctx.station_metrics.alerts.inc();
    tracing::warn!(alert = %rec.alert_id, asset = %ctx.asset.id, residual_c = alert.residual_c, "twin alert raised");
    show_raised(ctx, &rec);
    save(ctx, &rec);
    spawn(ctx, rec, false);
}

fn spawn(ctx: &Arc<StationCtx>, rec: ChainRecord, resumed: bool) {
    ctx.chains.active.fetch_add(1, Ordering::SeqCst);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _active = Active(&ctx.chains);
        advance(&ctx, rec, resumed).await;
    });
}

fn show_raised(ctx: &StationCtx, rec: &ChainRecord) {
    ctx.live.update(|s| {
        if let Some(e) = s.excursions.iter_mut().rev().find(|e| e.onset_ns == rec.onset_ns) {
            e.alerted = true;
        }
        if !s.alerts.iter().any(|a| a.alert_id == rec.alert_id) {
            s.alerts.push(AlertView {
                alert_id: rec.alert_id.clone(),
                asset: ctx.asset.id.to_string(),
                state: "Raised".into(),
                severity: "Critical".into(),
                message: rec.message.clone(),
                onset_ns: rec.onset_ns,
                raised_ns: rec.alert_ns,
                cleared_ns: None,
            });
        }
        s.chain = Some(ChainView {
            alert_id: rec.alert_id.clone(),
            fault_onset_ns: Some(rec.onset_ns),
            alert_ns: Some(rec.alert_ns),
            derate_ns: rec.derate_ns,
            ppm_before: (rec.step >= Step::Derated).then_some(rec.ppm_before),
            ppm_after: (rec.step >= Step::Derated).then_some(rec.ppm_after),
            analysis_ns: rec.analysis_ns,
            workorder_ns: rec.work_order.as_ref().map(|w| w.chain.workorder_ns),
            defect_probability: rec.work_order.as_ref().and_then(|w| w.defect_probability),
            ..Default::default()
        });
    });
    ctx.live.event(
        rec.alert_ns,
        "alert",
        format!("alert {}: {}", rec.alert_id, rec.message),
    );
}

/// Complete the chains a stop or a power cut interrupted, each on the
/// station of its asset (alert ids are `<asset>-<onset ms>`), and forget
/// those whose work order has left the outbox. `outbox_lost`: the outbox was
/// damaged or missing at this start, so a stored work order is stored again.
/// A journal whose asset is no longer configured is kept and named in the
/// log: its derate has no axis to act on.
pub fn resume(stations: &[Arc<StationCtx>], outbox_lost: bool) {
    let Some(first) = stations.first() else {
        return;
    };
    for mut rec in load_all(&first.settings.state_dir) {
        let asset = rec.alert_id.rsplit_once('-').map_or("", |(a, _)| a);
        let Some(ctx) = stations.iter().find(|c| c.asset.id.as_str() == asset) else {
            tracing::error!(alert = %rec.alert_id, asset, journal = %journal_path(&first.settings.state_dir, &rec.alert_id).display(), "an interrupted closed loop names an asset this configuration does not have: not completed; put the asset back or delete the journal");
            continue;
        };
        if rec.step == Step::WorkOrderStored {
            if outbox_lost {
                tracing::warn!(alert = %rec.alert_id, "the outbox was lost with this work order in it: storing it again (same id, the MES sees the same idempotency key)");
                rec.step = Step::Analysed;
                rec.stored = None;
            } else {
                continue; // the sweep forgets it once delivered
            }
        }
        tracing::warn!(alert = %rec.alert_id, step = ?rec.step, "completing a closed loop interrupted by the last stop");
        show_raised(ctx, &rec);
        spawn(ctx, rec, true);
    }
    let ctx = first.clone();
    tokio::spawn(async move { sweep(ctx).await });
}

/// Every 2 s: delete journals whose work order is no longer in the outbox.
async fn sweep(ctx: Arc<StationCtx>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done: Vec<ChainRecord> = load_all(&ctx.settings.state_dir)
            .into_iter()
            .filter(|r| r.step == Step::WorkOrderStored)
            .collect();
        for rec in done {
            let Some((topic, seq)) = rec.stored.clone() else {
                remove(&ctx, &rec.alert_id);
                continue;
            };
            let ob = ctx.publisher.outbox().clone();
            match ob.blocking(move |o| o.holds(&topic, seq)).await {
                Ok(false) => remove(&ctx, &rec.alert_id),
                Ok(true) => {}
                Err(_) => {} // storage fault: reported by the outbox
            }
        }
    }
}

/// Drive one chain: do each action the rules ask for, hand back its
/// outcome, journal the record, until the work order is stored. A step that
/// cannot be done now (a stop before the derate is answered, a work order
/// the outbox could not take) leaves the journal for the next start.
async fn advance(ctx: &Arc<StationCtx>, mut rec: ChainRecord, resumed: bool) {
    loop {
        let event = match core::next_action(&rec, &ctx.rules) {
            Action::Done => return,
            Action::Derate(req) => {
                pause_before("derate").await;
                match derate(ctx, &rec, req).await {
                    Some(outcome) => Event::Derate(outcome),
                    None => return,
                }
            }
            Action::StoreAlert(mut alert) => {
                pause_before("alert").await;
                alert.envelope = ctx.publisher.envelope(alert.envelope.stamp_ns);
                if let Err(e) = ctx
                    .publisher
                    .publish_durably(&ctx.topics.twin_alert, *alert, false)
                    .await
                {
                    tracing::error!(alert = %rec.alert_id, error = %e, "alert not stored");
                }
                Event::AlertStored
            }
            Action::Analyse => {
                pause_before("analysis").await;
                // Live: the history as it is now (results kept coming during
                // the derate). Resumed: the batches journaled at the alert.
                Event::Analysis((!resumed).then(|| inspection_now(ctx, rec.onset_ns)))
            }
            Action::StoreWorkOrder(mut wo) => {
                pause_before("workorder").await;
                show_work_order(ctx, &rec, &wo);
                wo.envelope = ctx.publisher.envelope(wo.envelope.stamp_ns);
                let to_mes = ctx.settings.to_mes;
                match ctx.publisher.publish_durably(&ctx.topics.work_order, *wo, to_mes).await {
                    Ok(wo) => {
                        tracing::info!(work_order = %wo.work_order_id, priority = ?wo.priority, defect_probability = wo.defect_probability, to_mes, "work order issued");
                        ctx.live.event(
                            wo.chain.workorder_ns,
                            "workorder",
                            format!("work order {} ({:?}) issued", wo.work_order_id, wo.priority),
                        );
                        Event::WorkOrderStored {
                            topic: ctx.topics.work_order.name().to_string(),
                            sequence: wo.envelope.sequence,
                        }
                    }
                    Err(e) => {
                        tracing::error!(alert = %rec.alert_id, error = %e, "work order not stored; it is stored at the next start");
                        return;
                    }
                }
            }
        };
        let analysed = matches!(event, Event::Analysis(_));
        core::handle(&mut rec, event, ctx.clock.now_ns(), &ctx.rules);
        if analysed && let Some(wo) = &rec.work_order {
            crate::node::tasks::write_report(ctx, wo);
            ctx.live.event(
                wo.chain.analysis_ns,
                "analysis",
                format!(
                    "{} frames, {} defective in {:?}: defect probability {}, priority {:?}",
                    wo.frames_analysed,
                    wo.defects_found,
                    wo.batches,
                    wo.defect_probability.map_or("unknown".into(), |p| format!("{p:.3}")),
                    wo.priority
                ),
            );
        }
        show_chain(ctx, &rec);
        save(ctx, &rec);
    }
}

/// The derate step. `None`: not decided (the node is stopping and the
/// control thread did not answer); the journal keeps the chain for the next
/// start.
async fn derate(ctx: &Arc<StationCtx>, rec: &ChainRecord, req: DerateRequest) -> Option<DerateOutcome> {
    let cmd = ControlCommand {
        envelope: ctx.publisher.envelope(rec.alert_ns),
        command_id: req.command_id,
        axis: ctx.axis.id.to_string(),
        action: CommandAction::Derate,
        value: Some(req.ppm),
        reason: req.reason,
        issued_by: "rule:derate_on_alert".into(),
        token: None,
    };
    let why = match ctx.gate.submit(&cmd, Origin::Internal).await {
        Ok((stamp_ns, ControlEvent::Applied { to_ppm, .. })) => {
            return Some(DerateOutcome::Applied { stamp_ns, to_ppm });
        }
        Ok((_, other)) => format!("{other:?}"),
        Err(e) if ctx.stopping.load(Ordering::SeqCst) => {
            tracing::warn!(alert = %rec.alert_id, error = %e, "derate not applied before the stop; it is applied at the next start");
            return None;
        }
        Err(e) => e.to_string(),
    };
    ctx.live
        .event(ctx.clock.now_ns(), "derate", format!("derate not applied: {why}"));
    Some(DerateOutcome::NotApplied(why))
}

/// The dashboard's view of the chain after a step.
fn show_chain(ctx: &StationCtx, rec: &ChainRecord) {
    ctx.live.update(|s| {
        if let Some(c) = s.chain.as_mut().filter(|c| c.alert_id == rec.alert_id) {
            c.derate_ns = rec.derate_ns;
            if rec.step >= Step::Derated {
                c.ppm_before = Some(rec.ppm_before);
                c.ppm_after = Some(rec.ppm_after);
            }
            c.analysis_ns = rec.analysis_ns;
            if let Some(wo) = &rec.work_order {
                c.defect_probability = wo.defect_probability;
            }
        }
    });
}

fn show_work_order(ctx: &StationCtx, rec: &ChainRecord, wo: &triad_schemas::WorkOrder) {
    let workorder_ns = wo.chain.workorder_ns;
    let to_mes = ctx.settings.to_mes;
    ctx.live.update(|s| {
        if !s.work_orders.iter().any(|w| w.work_order_id == wo.work_order_id) {
            s.work_orders.push(WorkOrderView {
                work_order_id: wo.work_order_id.clone(),
                priority: format!("{:?}", wo.priority),
                defect_probability: wo.defect_probability,
                summary: wo.summary.clone(),
                issued_ns: workorder_ns,
                to_mes,
                ..Default::default()
            });
        }
        if let Some(c) = s.chain.as_mut().filter(|c| c.alert_id == rec.alert_id) {
            c.workorder_ns = Some(workorder_ns);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_round_trip_and_a_damaged_one_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("triad-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(journal_dir(&dir)).unwrap();
        let rec = ChainRecord {
            alert_id: "pack-1".into(),
            onset_ns: 1,
            alert_ns: 2,
            residual_c: 7.0,
            band_c: 6.0,
            message: "m".into(),
            ppm_before: 12.0,
            batches: vec![],
            baseline: (10, 0),
            step: Step::Derated,
            derate_ns: Some(3),
            ppm_after: 8.0,
            derate_text: "d".into(),
            analysis_ns: None,
            work_order: None,
            stored: None,
        };
        crate::durable::write_atomic(&journal_path(&dir, "pack-1"), &serde_json::to_vec(&rec).unwrap()).unwrap();
        std::fs::write(journal_dir(&dir).join("pack-2.json"), b"{\"alert_id\": ").unwrap();
        let got = load_all(&dir);
        assert_eq!(got, vec![rec]);
        assert!(
            !journal_dir(&dir).join("pack-2.json").exists(),
            "the damaged journal is set aside"
        );
        let names: Vec<String> = std::fs::read_dir(journal_dir(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("pack-2.json.damaged-")), "{names:?}");
    }
}
