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
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use triad_schemas::{
    AlertKind, AlertState, ChainStamps, CommandAction, ControlCommand, Priority, Severity, TwinAlert, WorkOrder,
};
use triad_twin::analysis::{AnalysisConfig, Baseline, BatchStats, analyze};

/// Inspection counts of one batch, as journaled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Batch id.
    pub batch_id: String,
    /// Frames inspected.
    pub frames: u64,
    /// Defective frames.
    pub defects: u64,
    /// First frame, ns.
    pub first_ns: i64,
    /// Last frame, ns.
    pub last_ns: i64,
}

/// The last step a chain completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The twin raised the alert; nothing else is done.
    Raised,
    /// The derate rule ran (applied, refused, or no rule).
    Derated,
    /// The alert is in the outbox.
    AlertStored,
    /// The analysis ran; the work order is built (in the record).
    Analysed,
    /// The work order is in the outbox.
    WorkOrderStored,
}

/// One chain's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainRecord {
    /// Alert id (`<asset>-<onset ms>`).
    pub alert_id: String,
    /// Residual left its band, ns.
    pub onset_ns: i64,
    /// Alert raised, ns.
    pub alert_ns: i64,
    /// Residual at the alert, °C.
    pub residual_c: f64,
    /// Band, °C.
    pub band_c: f64,
    /// The alert's text.
    pub message: String,
    /// Rate set-point when the alert was raised, PPM.
    pub ppm_before: f64,
    /// The recent inspection batches at the alert.
    pub batches: Vec<BatchRecord>,
    /// Healthy baseline at the alert `(frames, defects)`.
    pub baseline: (u64, u64),
    /// Last completed step.
    pub step: Step,
    /// Derate applied by the control thread, ns.
    pub derate_ns: Option<i64>,
    /// Rate set-point after the derate step, PPM.
    pub ppm_after: f64,
    /// What the derate step did.
    pub derate_text: String,
    /// Analysis done, ns.
    pub analysis_ns: Option<i64>,
    /// The built work order (from [`Step::Analysed`]).
    pub work_order: Option<WorkOrder>,
    /// Topic and sequence of the stored work order.
    pub stored: Option<(String, i64)>,
}

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

/// Start a new chain for a raised alert (journaled before anything is done).
pub fn start(ctx: &Arc<StationCtx>, alert_id: String, onset_ns: i64, alert_ns: i64, residual_c: f64, band_c: f64) {
    let persistence_ms = ctx.asset.persistence.as_millis() as i64;
    let message = format!(
        "weld temperature {:+.1} °C off the twin's prediction for more than {:.1} s (band ±{band_c:.1} °C)",
        residual_c,
        persistence_ms as f64 / 1000.0,
    );
    let (batches, baseline) = {
        let n = ctx.settings.analysis.batches;
        let h = ctx.history.lock().expect("history poisoned");
        (h.last_batches(n), h.baseline(onset_ns, n))
    };
    let ppm_before = ctx.live.update(|s| s.axis.ppm_setpoint);
    let rec = ChainRecord {
        alert_id,
        onset_ns,
        alert_ns,
        residual_c,
        band_c,
        message,
        ppm_before,
        batches: batches
            .into_iter()
            .map(|b| BatchRecord {
                batch_id: b.batch_id,
                frames: b.frames,
                defects: b.defects,
                first_ns: b.first_ns,
                last_ns: b.last_ns,
            })
            .collect(),
        baseline,
        step: Step::Raised,
        derate_ns: None,
        ppm_after: ppm_before,
        derate_text: "No derate rule for this asset".into(),
        analysis_ns: None,
        work_order: None,
        stored: None,
    };
    ctx.station_metrics.alerts.inc();
    tracing::warn!(alert = %rec.alert_id, asset = %ctx.asset.id, residual_c, "twin alert raised");
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

async fn advance(ctx: &Arc<StationCtx>, mut rec: ChainRecord, resumed: bool) {
    if rec.step == Step::Raised {
        pause_before("derate").await;
        if !derate(ctx, &mut rec).await {
            return;
        }
        rec.step = Step::Derated;
        save(ctx, &rec);
    }
    if rec.step == Step::Derated {
        pause_before("alert").await;
        let alert = TwinAlert {
            envelope: ctx.publisher.envelope(rec.alert_ns),
            alert_id: rec.alert_id.clone(),
            asset: ctx.asset.id.to_string(),
            kind: AlertKind::ResidualOutOfBand,
            state: AlertState::Raised,
            severity: Severity::Critical,
            onset_ns: rec.onset_ns,
            raised_ns: rec.alert_ns,
            residual_c: rec.residual_c,
            band_c: rec.band_c,
            persistence_ms: ctx.asset.persistence.as_millis() as i64,
            message: rec.message.clone(),
        };
        if let Err(e) = ctx
            .publisher
            .publish_durably(&ctx.topics.twin_alert, alert, false)
            .await
        {
            tracing::error!(alert = %rec.alert_id, error = %e, "alert not stored");
        }
        rec.step = Step::AlertStored;
        save(ctx, &rec);
    }
    if rec.step == Step::AlertStored {
        pause_before("analysis").await;
        let wo = analyse(ctx, &mut rec, resumed);
        crate::node::tasks::write_report(ctx, &wo);
        rec.work_order = Some(wo);
        rec.step = Step::Analysed;
        save(ctx, &rec);
    }
    if rec.step == Step::Analysed {
        pause_before("workorder").await;
        let wo = rec.work_order.clone().expect("analysed chains carry their work order");
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
        match ctx.publisher.publish_durably(&ctx.topics.work_order, wo, to_mes).await {
            Ok(wo) => {
                tracing::info!(work_order = %wo.work_order_id, priority = ?wo.priority, defect_probability = wo.defect_probability, to_mes, "work order issued");
                ctx.live.event(
                    workorder_ns,
                    "workorder",
                    format!("work order {} ({:?}) issued", wo.work_order_id, wo.priority),
                );
                rec.stored = Some((ctx.topics.work_order.name().to_string(), wo.envelope.sequence));
                rec.step = Step::WorkOrderStored;
                save(ctx, &rec);
            }
            Err(e) => {
                tracing::error!(alert = %rec.alert_id, error = %e, "work order not stored; it is stored at the next start")
            }
        }
    }
}

/// The derate step. False: not decided (the node is stopping and the control
/// thread did not answer); the journal keeps the chain for the next start.
async fn derate(ctx: &Arc<StationCtx>, rec: &mut ChainRecord) -> bool {
    let Some(rule) = &ctx.rule else {
        return true;
    };
    let cmd = ControlCommand {
        envelope: ctx.publisher.envelope(rec.alert_ns),
        command_id: format!("CMD-{}", rec.alert_id),
        axis: rule.axis.to_string(),
        action: CommandAction::Derate,
        value: Some(rule.derate_ppm),
        reason: format!("alert {}: {}", rec.alert_id, rec.message),
        issued_by: "rule:derate_on_alert".into(),
        token: None,
    };
    match ctx.gate.submit(&cmd, Origin::Internal).await {
        Ok((stamp, ControlEvent::Applied { to_ppm, .. })) => {
            rec.derate_ns = Some(stamp);
            // A chain resumed after a restart derates from the rate the line
            // restarted at; the work order reports the rate before the alert.
            rec.ppm_after = to_ppm;
            rec.derate_text = format!("Line derated {} → {to_ppm} PPM", rec.ppm_before);
        }
        Ok(_) => {}
        Err(e) => {
            if ctx.stopping.load(Ordering::SeqCst) {
                tracing::warn!(alert = %rec.alert_id, error = %e, "derate not applied before the stop; it is applied at the next start");
                return false;
            }
            rec.derate_text = format!("Derate NOT applied ({e})");
            ctx.live
                .event(ctx.clock.now_ns(), "derate", format!("derate not applied: {e}"));
        }
    }
    ctx.live.update(|s| {
        if let Some(c) = s.chain.as_mut().filter(|c| c.alert_id == rec.alert_id) {
            c.derate_ns = rec.derate_ns;
            c.ppm_before = Some(rec.ppm_before);
            c.ppm_after = Some(rec.ppm_after);
        }
    });
    true
}

fn analyse(ctx: &StationCtx, rec: &mut ChainRecord, resumed: bool) -> WorkOrder {
    // Live: the history as it is now (results kept coming during the
    // derate). Resumed: the batches journaled at the alert.
    let (batches, base) = if resumed {
        (
            rec.batches
                .iter()
                .map(|b| BatchStats {
                    batch_id: b.batch_id.clone(),
                    frames: b.frames,
                    defects: b.defects,
                    first_ns: b.first_ns,
                    last_ns: b.last_ns,
                })
                .collect::<Vec<_>>(),
            rec.baseline,
        )
    } else {
        let n = ctx.settings.analysis.batches;
        let h = ctx.history.lock().expect("history poisoned");
        (
            h.last_batches(n)
                .into_iter()
                .map(|b| BatchStats {
                    batch_id: b.batch_id,
                    frames: b.frames,
                    defects: b.defects,
                    first_ns: b.first_ns,
                    last_ns: b.last_ns,
                })
                .collect(),
            h.baseline(rec.onset_ns, n),
        )
    };
    let acfg = AnalysisConfig {
        prior_rate: ctx.settings.analysis.prior_defect_rate,
        prior_weight_frames: ctx.settings.analysis.prior_weight_frames,
    };
    let analysis = analyze(
        &batches,
        &Baseline {
            frames: base.0,
            defects: base.1,
        },
        &acfg,
        ctx.clock.now_ns(),
    );
    let analysis_ns = ctx.clock.now_ns();
    rec.analysis_ns = Some(analysis_ns);
    let (probability, priority, summary, recent_rate, baseline_rate, elevated, frames, defects, batch_ids) =
        match &analysis {
            Ok(a) => {
                let priority = if a.defect_probability >= 0.3 {
                    Priority::Urgent
                } else if a.defect_probability >= 0.1 || a.elevated_probability >= 0.95 {
                    Priority::High
                } else {
                    Priority::Normal
                };
                (
                    a.defect_probability,
                    priority,
                    a.summary.clone(),
                    a.recent_rate,
                    a.baseline_rate,
                    a.elevated_probability,
                    a.frames,
                    a.defects,
                    a.batches.clone(),
                )
            }
            Err(e) => (
                f64::NAN,
                Priority::High,
                e.to_string(),
                0.0,
                acfg.prior_rate,
                0.0,
                0,
                0,
                Vec::new(),
            ),
        };
    ctx.live.update(|s| {
        if let Some(c) = s.chain.as_mut().filter(|c| c.alert_id == rec.alert_id) {
            c.analysis_ns = Some(analysis_ns);
            c.defect_probability = probability.is_finite().then_some(probability);
        }
    });
    ctx.live.event(analysis_ns, "analysis", summary.clone());
    let workorder_ns = ctx.clock.now_ns();
    WorkOrder {
        envelope: ctx.publisher.envelope(workorder_ns),
        work_order_id: format!("WO-{}", rec.alert_id),
        line: ctx.settings.line.to_string(),
        asset: ctx.asset.id.to_string(),
        cell: ctx.cell.id.to_string(),
        axis: ctx.axis.id.to_string(),
        alert_id: rec.alert_id.clone(),
        priority,
        defect_probability: probability.is_finite().then_some(probability),
        baseline_defect_rate: baseline_rate,
        recent_defect_rate: recent_rate,
        elevated_probability: elevated,
        batches: batch_ids,
        frames_analysed: frames as i64,
        defects_found: defects as i64,
        ppm_before: rec.ppm_before,
        ppm_after: rec.ppm_after,
        chain: ChainStamps {
            fault_onset_ns: rec.onset_ns,
            alert_ns: rec.alert_ns,
            derate_ns: rec.derate_ns,
            analysis_ns,
            workorder_ns,
        },
        summary: format!(
            "{}. {}. {summary}. Check the weld cooling and electrode of {}.",
            rec.message, rec.derate_text, ctx.asset.id
        ),
    }
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
