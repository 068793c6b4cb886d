//! The node's async tasks: telemetry pump, result publishing, twin events,
//! the closed loop, and the external command consumer.

use super::NodeCtx;
use super::threads::InspectionOutcome;
use crate::commands::Origin;
use crate::control::{ControlEvent, ControlTelemetry, TelemetrySample};
use crate::dashboard::{ExcursionView, RecentResult, SeriesPoint};
use rtrb::Consumer;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use triad_schemas::{
    AlertKind, AlertState, AxisMode, CommandAction, ControlCommand, ControlState, InspectionResult, Severity,
    TwinAlert, TwinState, TwinStatus, Verdict, WorkOrder,
};
use triad_twin::{AlertEvent, TwinSample, TwinStep};

fn mode_name(m: AxisMode) -> &'static str {
    match m {
        AxisMode::Stopped => "Stopped",
        AxisMode::Running => "Running",
        AxisMode::Derated => "Derated",
        AxisMode::SafeState => "SafeState",
    }
}

/// Drain the control thread's telemetry every 5 ms: samples to the twin, the
/// dashboard and the state topic; events to the command gate and the log.
pub async fn telemetry_pump(
    ctx: Arc<NodeCtx>,
    mut telemetry: Consumer<ControlTelemetry>,
    twin_tx: std::sync::mpsc::Sender<TwinSample>,
    state_tx: watch::Sender<Option<ControlState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut n: u64 = 0;
    let mut ticks: u64 = 0;
    let mut last_cycles = 0u64;
    let mut last_overruns = 0u64;
    let mut last_dropped = 0u64;
    // Overrun counts of the last minute, one every 100 ms.
    let mut overrun_window: std::collections::VecDeque<u64> = std::collections::VecDeque::with_capacity(601);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        while let Ok(t) = telemetry.pop() {
            match t {
                ControlTelemetry::Sample(s) => {
                    n += 1;
                    let _ = twin_tx.send(TwinSample {
                        stamp_ns: s.stamp_ns,
                        feed_ppm: s.inputs.feed_ppm,
                        weld_current_a: s.inputs.weld_current_a,
                        ambient_c: s.inputs.ambient_c,
                        measured_c: s.inputs.weld_temp_c,
                        running: matches!(s.mode, AxisMode::Running | AxisMode::Derated),
                    });
                    update_axis(&ctx, &s);
                    if n.is_multiple_of(4) {
                        let _ = state_tx.send(Some(control_state(&ctx, &s)));
                    }
                }
                ControlTelemetry::Event { stamp_ns, event } => {
                    ctx.gate.handle_event(stamp_ns, &event);
                    log_control_event(&ctx, stamp_ns, &event);
                }
            }
        }
        // Counters and gauges, ten times a second.
        ticks += 1;
        if ticks.is_multiple_of(20) {
            let st = &ctx.control_stats;
            let cycles = st.cycles.load(Relaxed);
            let overruns = st.overruns.load(Relaxed);
            let dropped = st.telemetry_dropped.load(Relaxed);
            ctx.metrics.control_cycles.inc_by(cycles - last_cycles);
            ctx.metrics.control_overruns.inc_by(overruns - last_overruns);
            ctx.metrics.control_telemetry_dropped.inc_by(dropped - last_dropped);
            (last_cycles, last_overruns, last_dropped) = (cycles, overruns, dropped);
            let p99 = st.quantile_us(0.99).unwrap_or(0.0);
            ctx.metrics.control_jitter_p99.set(p99 * 1e-6);
            ctx.metrics.control_jitter_max.set(st.max_us() * 1e-6);
            let ob = ctx.publisher.outbox().stats();
            for (lane, v) in [("bus", ob.pending_bus), ("mes", ob.pending_mes)] {
                ctx.metrics
                    .outbox_pending
                    .get_or_create(&crate::metrics::LaneLabel { lane: lane.into() })
                    .set(v as i64);
            }
            overrun_window.push_back(overruns);
            if overrun_window.len() > 600 {
                overrun_window.pop_front();
            }
            let overruns_last_min = overruns - overrun_window.front().copied().unwrap_or(overruns);
            let io_dropped = ctx.io_stats.welds_dropped.load(Relaxed);
            ctx.live.update(|snap| {
                snap.control.cycles = cycles;
                snap.control.overruns = overruns;
                snap.control.overruns_last_min = overruns_last_min;
                snap.control.jitter_p99_us = p99;
                snap.control.jitter_max_us = st.max_us();
                snap.outbox.pending_bus = ob.pending_bus;
                snap.outbox.pending_mes = ob.pending_mes;
                snap.outbox.dead_letters = ob.dead_letters;
                if io_dropped > snap.inspection.dropped {
                    ctx.metrics
                        .inspection_frames_dropped
                        .inc_by(io_dropped - snap.inspection.dropped);
                    snap.inspection.dropped = io_dropped;
                }
            });
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

fn update_axis(ctx: &NodeCtx, s: &TelemetrySample) {
    ctx.live.update(|snap| {
        let a = &mut snap.axis;
        a.mode = mode_name(s.mode).into();
        a.ppm_setpoint = s.setpoint_ppm;
        a.ppm_actual = s.inputs.feed_ppm;
        a.weld_temp_c = s.inputs.weld_temp_c;
        a.weld_current_a = s.inputs.weld_current_a;
        a.parts_total = s.inputs.parts_total;
        a.stack_light = match s.mode {
            AxisMode::Running => "green",
            AxisMode::Derated | AxisMode::Stopped => "amber",
            AxisMode::SafeState => "red",
        }
        .into();
        if s.mode != AxisMode::SafeState {
            a.safe_state_reason = None;
        }
    });
}

fn control_state(ctx: &NodeCtx, s: &TelemetrySample) -> ControlState {
    let st = &ctx.control_stats;
    ControlState {
        envelope: ctx.publisher.envelope(s.stamp_ns),
        axis: ctx.axis.id.to_string(),
        mode: s.mode,
        ppm_setpoint: s.setpoint_ppm,
        ppm_actual: s.inputs.feed_ppm,
        weld_current_a: s.inputs.weld_current_a,
        weld_temp_c: s.inputs.weld_temp_c,
        parts_total: s.inputs.parts_total as i64,
        safe_state_reason: ctx.live.update(|snap| snap.axis.safe_state_reason.clone()),
        cycles: st.cycles.load(Relaxed) as i64,
        overruns: st.overruns.load(Relaxed) as i64,
        jitter_p99_us: st.quantile_us(0.99).unwrap_or(0.0),
        jitter_max_us: st.max_us(),
    }
}

fn log_control_event(ctx: &NodeCtx, stamp_ns: i64, ev: &ControlEvent) {
    match ev {
        ControlEvent::Applied {
            action,
            from_ppm,
            to_ppm,
            mode,
            ..
        } => {
            let text = format!(
                "{action:?} applied: {from_ppm} → {to_ppm} PPM, axis {}",
                mode_name(*mode)
            );
            ctx.live.event(
                stamp_ns,
                if *action == CommandAction::Derate {
                    "derate"
                } else {
                    "command"
                },
                text,
            );
        }
        ControlEvent::Rejected { action, reason, .. } => {
            ctx.live.event(
                stamp_ns,
                "command",
                format!("{action:?} rejected by the control program: {}", reason.describe()),
            );
        }
        ControlEvent::SafeStateEntered { reason } => {
            tracing::error!(axis = %ctx.axis.id, reason = reason.describe(), "outputs in the safe state");
            ctx.live.update(|s| {
                s.axis.safe_state_reason = Some(reason.describe().into());
                s.axis.stack_light = "red".into();
            });
            ctx.live.event(stamp_ns, "safe-state", reason.describe());
        }
        ControlEvent::SafeStateLeft => ctx.live.event(stamp_ns, "safe-state", "safe state reset"),
    }
}

/// Publish the latest control state, at most as fast as it changes (latest value wins).
pub async fn publish_latest<M: triad_schemas::BusMessage>(
    ctx: Arc<NodeCtx>,
    topic: triad_schemas::Topic,
    mut rx: watch::Receiver<Option<M>>,
) {
    // One line when publishing starts failing, one every 30 s while it
    // fails, one when it recovers: not one per value.
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut last_log = tokio::time::Instant::now();
    while rx.changed().await.is_ok() {
        let Some(msg) = rx.borrow_and_update().clone() else {
            continue;
        };
        match ctx.publisher.publish(&topic, msg).await {
            Ok(_) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(topic = %topic, after_s = since.elapsed().as_secs(), "publishing resumed");
                }
            }
            Err(e) => {
                let now = tokio::time::Instant::now();
                if failing_since.is_none() || now - last_log >= Duration::from_secs(30) {
                    tracing::warn!(topic = %topic, error = %e, "publish failed; latest values are dropped until the bus is back");
                    last_log = now;
                }
                failing_since.get_or_insert(now);
            }
        }
    }
}

/// Record, publish and show every inspection result, in order.
pub async fn results_task(ctx: Arc<NodeCtx>, mut rx: mpsc::Receiver<InspectionOutcome>) {
    while let Some(o) = rx.recv().await {
        let t = &o.trigger;
        let insp = match o.result {
            Ok(i) => i,
            Err(e) => {
                ctx.metrics.inspection_errors.inc();
                ctx.live.update(|s| s.inspection.errors += 1);
                tracing::error!(cell = %ctx.cell.id, module = t.module_serial, weld = t.weld_index, error = %e, "frame not inspected");
                continue;
            }
        };
        let batch = (t.module_serial - 1) / ctx.cell.modules_per_batch + 1;
        let latency_us = (o.done_ns - t.stamp_ns) / 1000;
        let result = InspectionResult {
            envelope: ctx.publisher.envelope(o.done_ns),
            cell: ctx.cell.id.to_string(),
            part_id: format!("M{:06}", t.module_serial),
            weld_index: t.weld_index as i32,
            batch_id: format!("B{batch:06}"),
            frame_stamp_ns: t.stamp_ns,
            roi_hash: insp.roi_hash,
            verdict: insp.verdict,
            defects: insp.defects,
            model_name: insp.model_name,
            model_version: insp.model_version,
            latency_us,
        };
        ctx.history
            .lock()
            .expect("history poisoned")
            .record(&result.batch_id, result.verdict, t.stamp_ns);
        ctx.metrics.inspection_frames.inc();
        ctx.metrics.inspection_latency.observe(latency_us as f64 * 1e-6);
        let fail = result.verdict == Verdict::Fail;
        if fail {
            ctx.metrics.inspection_defects.inc();
        }
        let result = match ctx
            .publisher
            .publish_durably(&ctx.topics.inspection, result, false)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(cell = %ctx.cell.id, error = %e, "inspection result not stored");
                continue;
            }
        };
        ctx.live.update(|s| {
            let v = &mut s.inspection;
            v.frames += 1;
            v.defects += u64::from(fail);
            v.push_verdict(fail);
            // `v.model` is the model that runs now, set by the model service
            // at each swap; a result still in flight from the model before a
            // swap names its own model here and must not set it back.
            v.recent.push_front(RecentResult {
                sequence: result.envelope.sequence,
                model: format!("{} {}", result.model_name, result.model_version),
                part_id: result.part_id.clone(),
                weld_index: result.weld_index,
                batch_id: result.batch_id.clone(),
                verdict: format!("{:?}", result.verdict),
                defects: result
                    .defects
                    .iter()
                    .map(|d| format!("{} ({:.2})", d.class, d.score))
                    .collect(),
                latency_us,
                stamp_ns: result.frame_stamp_ns,
            });
            v.recent.truncate(crate::dashboard::RECENT_LEN);
        });
    }
}

/// Show and publish the twin's view; start the closed loop on an alert.
pub async fn twin_task(ctx: Arc<NodeCtx>, mut rx: mpsc::UnboundedReceiver<(TwinStep, Arc<str>)>) {
    let (status_tx, status_rx) = watch::channel(None::<TwinStatus>);
    tokio::spawn(publish_latest(ctx.clone(), ctx.topics.twin_status.clone(), status_rx));
    let mut n: u64 = 0;
    let mut last_state = TwinState::Nominal;
    let mut open_alert: Option<String> = None;
    while let Some((step, model_version)) = rx.recv().await {
        n += 1;
        ctx.metrics.twin_residual.set(step.residual_c);
        ctx.metrics.twin_health.set(step.health);
        let changed = step.state != last_state;
        last_state = step.state;
        if n.is_multiple_of(4) || changed {
            let status = TwinStatus {
                envelope: ctx.publisher.envelope(step.stamp_ns),
                asset: ctx.asset.id.to_string(),
                measured_c: step.measured_c,
                predicted_c: step.predicted_c,
                residual_c: step.residual_c,
                band_c: step.band_c,
                state: step.state,
                outside_since_ns: step.outside_since_ns,
                health: step.health,
                rul_s: step.rul_s,
                model_version: model_version.to_string(),
            };
            let _ = status_tx.send(Some(status));
            ctx.live.update(|s| {
                let ppm = s.axis.ppm_actual;
                s.twin.asset = ctx.asset.id.to_string();
                s.twin.measured_c = step.measured_c;
                s.twin.predicted_c = step.predicted_c;
                s.twin.residual_c = step.residual_c;
                s.twin.band_c = step.band_c;
                s.twin.state = format!("{:?}", step.state);
                s.twin.health = step.health;
                s.twin.rul_s = step.rul_s;
                s.twin.outside_since_ns = step.outside_since_ns;
                s.series.push_back(SeriesPoint {
                    t_ns: step.stamp_ns,
                    measured_c: step.measured_c,
                    predicted_c: step.predicted_c,
                    band_c: step.band_c,
                    ppm,
                });
                if s.series.len() > crate::dashboard::SERIES_LEN {
                    s.series.pop_front();
                }
            });
        }
        match step.excursion {
            Some(triad_twin::persistence::TimerAction::ExcursionStarted { onset_ns }) => {
                ctx.live.update(|s| {
                    s.excursions.push(ExcursionView {
                        onset_ns,
                        duration_ms: None,
                        alerted: false,
                    });
                    if s.excursions.len() > 100 {
                        s.excursions.remove(0);
                    }
                });
                ctx.live.event(
                    onset_ns,
                    "excursion",
                    format!(
                        "residual {:+.1} °C left the ±{:.1} °C band",
                        step.residual_c, step.band_c
                    ),
                )
            }
            Some(triad_twin::persistence::TimerAction::ExcursionEnded { onset_ns, duration_ns }) => {
                ctx.live.update(|s| {
                    if let Some(e) = s.excursions.iter_mut().rev().find(|e| e.onset_ns == onset_ns) {
                        e.duration_ms = Some(duration_ns as f64 / 1e6);
                    }
                });
                ctx.live.event(
                    step.stamp_ns,
                    "excursion",
                    format!(
                        "residual back in band after {:.2} s (below the {:.1} s persistence time: observed, not alerted)",
                        duration_ns as f64 * 1e-9,
                        ctx.asset.persistence.as_secs_f64()
                    ),
                )
            }
            _ => {}
        }
        match step.alert {
            Some(AlertEvent::Raised {
                onset_ns, residual_c, ..
            }) => {
                let alert_ns = ctx.clock.now_ns();
                let alert_id = format!("{}-{}", ctx.asset.id, onset_ns / 1_000_000);
                open_alert = Some(alert_id.clone());
                super::chain::start(&ctx, alert_id, onset_ns, alert_ns, residual_c, step.band_c);
            }
            Some(AlertEvent::Cleared { onset_ns, cleared_ns }) => {
                let alert_id = open_alert
                    .take()
                    .unwrap_or_else(|| format!("{}-{}", ctx.asset.id, onset_ns / 1_000_000));
                let alert = TwinAlert {
                    envelope: ctx.publisher.envelope(cleared_ns),
                    alert_id: alert_id.clone(),
                    asset: ctx.asset.id.to_string(),
                    kind: AlertKind::ResidualOutOfBand,
                    state: AlertState::Cleared,
                    severity: Severity::Warning,
                    onset_ns,
                    raised_ns: cleared_ns,
                    residual_c: step.residual_c,
                    band_c: step.band_c,
                    persistence_ms: ctx.asset.persistence.as_millis() as i64,
                    message: format!("residual back inside ±{:.1} °C", step.band_c),
                };
                if let Err(e) = ctx
                    .publisher
                    .publish_durably(&ctx.topics.twin_alert, alert, false)
                    .await
                {
                    tracing::error!(error = %e, "alert clear not stored");
                }
                ctx.live.update(|s| {
                    if let Some(a) = s.alerts.iter_mut().find(|a| a.alert_id == alert_id) {
                        a.state = "Cleared".into();
                        a.cleared_ns = Some(cleared_ns);
                    }
                });
                ctx.live.event(cleared_ns, "alert", format!("alert {alert_id} cleared"));
            }
            None => {}
        }
    }
}

/// Write the analysis report of a work order to `<state_dir>/reports/`.
pub(crate) fn write_report(ctx: &NodeCtx, wo: &WorkOrder) {
    let dir = ctx.cfg.state_dir.join("reports");
    let path = dir.join(format!("{}.json", wo.alert_id));
    let res = std::fs::create_dir_all(&dir).and_then(|_| {
        let text = serde_json::to_string_pretty(wo).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)
    });
    if let Err(e) = res {
        tracing::error!(path = %path.display(), error = %e, "analysis report not written; the work order still goes out");
    }
}

/// Consume external commands from the axis' command topic.
pub async fn command_consumer(ctx: Arc<NodeCtx>) {
    let topic = ctx.topics.command.clone();
    let mut sub = match ctx.publisher.bus().subscribe(&topic, "triad-node-commands").await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(topic = %topic, error = %e, "cannot subscribe to commands; external commands are unavailable");
            return;
        }
    };
    while let Some(d) = sub.next().await {
        let now = ctx.clock.now_ns();
        match triad_schemas::codec::decode::<ControlCommand>(&d.msg.payload) {
            Ok(cmd) => match ctx.gate.submit(&cmd, Origin::External).await {
                Ok(_) => ctx.live.event(
                    now,
                    "command",
                    format!("{} {:?} applied (from {})", cmd.command_id, cmd.action, cmd.issued_by),
                ),
                Err(e) => ctx.live.event(now, "command", format!("{e} (from {})", cmd.issued_by)),
            },
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "malformed command dropped");
                ctx.live
                    .event(now, "command", format!("malformed command refused: {e}"));
            }
        }
        // The decision is recorded (audit log and event log): acknowledge.
        d.ack();
    }
}
