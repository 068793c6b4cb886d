//! Each station's async tasks: telemetry pump, result publishing, twin
//! events, the closed loop, and the external command consumer.

use super::StationCtx;
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

/// Which telemetry samples go to the state topic: every 4th, and the one
/// the control thread took for a change (a command applied, the safe state
/// entered or left, any other mode change: `TelemetrySample::changed`, see
/// `control::runner`), so the topic shows the change from the control cycle
/// that made it rather than up to four sample periods later.
#[derive(Debug, Default)]
struct StateCadence {
    /// Samples since the last one published.
    since_published: u32,
    /// Mode of the last sample (a mode change whose sample was lost to a
    /// full ring still publishes with the next one).
    last_mode: Option<AxisMode>,
}

impl StateCadence {
    /// Samples between periodic states.
    const EVERY: u32 = 4;

    /// Whether `s` goes to the state topic.
    fn poll_publish(&mut self, s: &TelemetrySample) -> bool {
        self.since_published += 1;
        let mode_changed = self.last_mode.is_some_and(|m| m != s.mode);
        self.last_mode = Some(s.mode);
        let publish = s.changed || mode_changed || self.since_published >= Self::EVERY;
        if publish {
            self.since_published = 0;
        }
        publish
    }
}

/// Drain the control thread's telemetry every 5 ms: samples to the twin, the
/// dashboard and the state topic (see [`StateCadence`]); events to the
/// command gate and the log.
pub async fn telemetry_pump(
    ctx: Arc<StationCtx>,
    mut telemetry: Consumer<ControlTelemetry>,
    twin_tx: std::sync::mpsc::Sender<TwinSample>,
    state_tx: watch::Sender<Option<ControlState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut cadence = StateCadence::default();
    let mut ticks: u64 = 0;
    let mut last_cycles = 0u64;
    let mut last_overruns = 0u64;
    let mut last_dropped = 0u64;
    // Overrun counts of the last minute, one every 100 ms.
    let mut overrun_window: std::collections::VecDeque<u64> = std::collections::VecDeque::with_capacity(601);
    loop {
        // Every 5 ms; every 1 ms while a command waits for its verdict (its
        // caller, and the state that shows it, wait for this pump).
        let waiting = ctx.gate.awaiting_verdict();
        let ticked = tokio::select! {
            _ = tick.tick() => true,
            _ = shutdown.changed() => false,
            _ = ctx.gate.submitted() => false,
            _ = tokio::time::sleep(Duration::from_millis(1)), if waiting => false,
        };
        while let Ok(t) = telemetry.pop() {
            match t {
                ControlTelemetry::Sample(s) => {
                    let _ = twin_tx.send(s.twin_sample());
                    update_axis(&ctx, &s);
                    if cadence.poll_publish(&s) {
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
        ticks += u64::from(ticked);
        if ticked && ticks.is_multiple_of(20) {
            let st = &ctx.control_stats;
            let cycles = st.cycles.load(Relaxed);
            let overruns = st.overruns.load(Relaxed);
            let dropped = st.telemetry_dropped.load(Relaxed);
            let p99 = st.quantile_us(0.99).unwrap_or(0.0);
            let ob = ctx.publisher.outbox().stats();
            // The control thread and the outbox are the node's: one
            // station's pump counts them.
            if ctx.primary {
                ctx.metrics.control_cycles.inc_by(cycles - last_cycles);
                ctx.metrics.control_overruns.inc_by(overruns - last_overruns);
                ctx.metrics.control_telemetry_dropped.inc_by(dropped - last_dropped);
                ctx.metrics.control_jitter_p99.set(p99 * 1e-6);
                ctx.metrics.control_jitter_max.set(st.max_us() * 1e-6);
                for (lane, v) in [("bus", ob.pending_bus), ("mes", ob.pending_mes)] {
                    ctx.metrics
                        .outbox_pending
                        .get_or_create(&crate::metrics::LaneLabel { lane: lane.into() })
                        .set(v as i64);
                }
            }
            (last_cycles, last_overruns, last_dropped) = (cycles, overruns, dropped);
            overrun_window.push_back(overruns);
            if overrun_window.len() > 600 {
                overrun_window.pop_front();
            }
            let overruns_last_min = overruns - overrun_window.front().copied().unwrap_or(overruns);
            let io_dropped = ctx.io_stats.welds_dropped.load(Relaxed);
            let io_failed = ctx.io_stats.scans_failed.load(Relaxed);
            ctx.live.update(|snap| {
                snap.control.cycles = cycles;
                snap.control.overruns = overruns;
                snap.control.overruns_last_min = overruns_last_min;
                snap.control.jitter_p99_us = p99;
                snap.control.jitter_max_us = st.max_us();
                snap.outbox.pending_bus = ob.pending_bus;
                snap.outbox.pending_mes = ob.pending_mes;
                snap.outbox.dead_letters = ob.dead_letters;
                if io_failed > snap.axis.io_scans_failed {
                    ctx.station_metrics
                        .io_scans_failed
                        .inc_by(io_failed - snap.axis.io_scans_failed);
                    snap.axis.io_scans_failed = io_failed;
                }
                if io_dropped > snap.inspection.dropped {
                    ctx.station_metrics
                        .frames_dropped
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

fn update_axis(ctx: &StationCtx, s: &TelemetrySample) {
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

fn control_state(ctx: &StationCtx, s: &TelemetrySample) -> ControlState {
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

fn log_control_event(ctx: &StationCtx, stamp_ns: i64, ev: &ControlEvent) {
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
    ctx: Arc<StationCtx>,
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
pub async fn results_task(ctx: Arc<StationCtx>, mut rx: mpsc::Receiver<InspectionOutcome>) {
    while let Some(o) = rx.recv().await {
        let t = &o.trigger;
        let insp = match o.result {
            Ok(i) => i,
            Err(e) => {
                ctx.station_metrics.errors.inc();
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
        ctx.station_metrics.frames.inc();
        ctx.metrics.inspection_latency.observe(latency_us as f64 * 1e-6);
        let fail = result.verdict == Verdict::Fail;
        if fail {
            ctx.station_metrics.defects.inc();
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
pub async fn twin_task(ctx: Arc<StationCtx>, mut rx: mpsc::UnboundedReceiver<(TwinStep, Arc<str>)>) {
    let (status_tx, status_rx) = watch::channel(None::<TwinStatus>);
    tokio::spawn(publish_latest(ctx.clone(), ctx.topics.twin_status.clone(), status_rx));
    let mut n: u64 = 0;
    let mut last_state = TwinState::Nominal;
    let mut open_alert: Option<String> = None;
    while let Some((step, model_version)) = rx.recv().await {
        n += 1;
        ctx.station_metrics.residual.set(step.residual_c);
        ctx.station_metrics.health.set(step.health);
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
            ctx.live.update(|s| {
                let ppm = s.axis.ppm_actual;
                s.twin.status = status.clone();
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
            let _ = status_tx.send(Some(status));
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
                open_alert = Some(crate::rules::chain::alert_id(&ctx.rules, onset_ns));
                super::chain::start(
                    &ctx,
                    crate::rules::chain::RaisedAlert {
                        onset_ns,
                        alert_ns: ctx.clock.now_ns(),
                        residual_c,
                        band_c: step.band_c,
                    },
                );
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
pub(crate) fn write_report(ctx: &StationCtx, wo: &WorkOrder) {
    let dir = ctx.settings.state_dir.join("reports");
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
pub async fn command_consumer(ctx: Arc<StationCtx>) {
    let topic = ctx.topics.command.clone();
    let mut sub = crate::bus::subscribe_until_it_works(
        ctx.publisher.bus().as_ref(),
        &topic,
        "triad-node-commands",
        "external commands are",
    )
    .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use crate::bus::embedded::EmbeddedBus;
    use crate::bus::outbox::Outbox;
    use crate::bus::publisher::Publisher;
    use crate::clock::{Clock, ManualClock};
    use crate::commands::CommandGate;
    use crate::config::{ConfigSource, load};
    use crate::control::rings::control_rings;
    use crate::control::{AxisLimits, AxisLoop, AxisProgram, ControlRunner, ControlStats, SafeReason};
    use crate::dashboard::LiveState;
    use crate::metrics::Metrics;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicI64};
    use triad_hw::LineInputs;
    use triad_inspect::history::ResultHistory;
    use triad_schemas::{ClockState, Envelope, codec::SCHEMA_VERSION};

    const MS: i64 = 1_000_000;

    fn sample(mode: AxisMode, changed: bool) -> TelemetrySample {
        TelemetrySample {
            stamp_ns: 0,
            inputs: LineInputs::default(),
            outputs: triad_hw::LineOutputs::SAFE,
            mode,
            setpoint_ppm: 12.0,
            changed,
        }
    }

    #[test]
    fn cadence_publishes_every_fourth_sample_and_the_first_after_a_change() {
        let mut c = StateCadence::default();
        let run = |c: &mut StateCadence, n: usize, mode| -> Vec<bool> {
            (0..n).map(|_| c.poll_publish(&sample(mode, false))).collect()
        };
        let (t, f) = (true, false);
        assert_eq!(run(&mut c, 8, AxisMode::Running), [f, f, f, t, f, f, f, t]);
        // Applied command: its sample is published; the count starts again.
        run(&mut c, 1, AxisMode::Running);
        assert!(c.poll_publish(&sample(AxisMode::Running, true)));
        assert_eq!(run(&mut c, 4, AxisMode::Running), [f, f, f, t]);
        // A sample not taken for a change (a rejection's cycle) waits.
        assert_eq!(run(&mut c, 1, AxisMode::Running), [f]);
        // The safe state, by its own sample or (that sample lost to a full
        // ring) by the next sample's mode alone.
        assert!(c.poll_publish(&sample(AxisMode::SafeState, true)));
        assert_eq!(run(&mut c, 1, AxisMode::SafeState), [f]);
        assert_eq!(run(&mut c, 2, AxisMode::Stopped), [t, f]);
    }

    /// Everything between the control thread and the state topic, as the
    /// node wires it: control runner (its own thread, a hand-advanced clock,
    /// 1 ms cycles, a sample every 50 cycles as configured by default),
    /// command gate, telemetry pump, `publish_latest`, embedded bus.
    struct Loop {
        ctx: Arc<StationCtx>,
        bus: Arc<EmbeddedBus>,
        feed: Arc<AtomicBool>,
        safe_since_ns: Arc<AtomicI64>,
        stop: Arc<AtomicBool>,
        control: Option<std::thread::JoinHandle<()>>,
        _shutdown: watch::Sender<bool>,
        _twin: std::sync::mpsc::Receiver<TwinSample>,
        dir: std::path::PathBuf,
    }

    impl Loop {
        fn start(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("triad-tasks-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let cfg = load(&ConfigSource::Default).unwrap();
            assert_eq!(cfg.control.telemetry_every_cycles, 50, "the default changed");
            let clock = Arc::new(ManualClock::new(1_000 * MS));
            let bus = Arc::new(EmbeddedBus::default());
            let metrics = Arc::new(Metrics::new());
            let outbox = Arc::new(Outbox::open(&dir.join("outbox.redb"), cfg.outbox).unwrap());
            let dyn_bus: Arc<dyn Bus> = bus.clone();
            let publisher = Arc::new(Publisher::new(
                cfg.node.clone(),
                clock.clone(),
                dyn_bus,
                outbox,
                metrics.clone(),
            ));
            let axis = cfg.axes[0].clone();
            let cell = cfg.cells.iter().find(|c| c.axis == axis.id).unwrap().clone();
            let asset = cfg.assets.iter().find(|a| a.axis == axis.id).unwrap().clone();
            let limits = AxisLimits {
                start_running: true,
                ..axis.limits(&cfg.control)
            };
            let (rings, ends) = control_rings();
            let stats = Arc::new(ControlStats::new());
            let mut runner = ControlRunner::new(
                vec![AxisLoop::new(AxisProgram::new(limits, clock.now_ns()), rings)],
                stats.clone(),
                clock.clone(),
                cfg.control.cycle,
                cfg.control.telemetry_every_cycles,
            );
            let gate = Arc::new(CommandGate::new(
                axis.id.to_string(),
                axis.min_ppm,
                axis.max_ppm,
                ends.requests,
                metrics.clone(),
            ));
            let station = &cfg.stations()[0];
            let topics = super::super::Topics::of(&cfg.line, station);
            let ctx = Arc::new(StationCtx {
                settings: super::super::LoopSettings::of(&cfg),
                rules: station.rules(&cfg.line, cfg.analysis),
                clock: clock.clone(),
                publisher,
                station_metrics: crate::metrics::StationMetrics::new(
                    &metrics,
                    axis.id.as_str(),
                    cell.id.as_str(),
                    asset.id.as_str(),
                ),
                metrics,
                live: Arc::new(LiveState::default()),
                gate,
                history: Arc::new(Mutex::new(ResultHistory::new(16))),
                control_stats: stats,
                io_stats: Arc::new(crate::field::IoStats::default()),
                axis,
                cell,
                asset,
                topics,
                chains: Arc::new(super::super::chain::ChainTracker::default()),
                stopping: Arc::new(AtomicBool::new(false)),
                primary: true,
            });
            // The control thread, with the I/O scan's part (a fresh process
            // image each cycle while `feed` is set) done before each cycle.
            let (feed, safe_since_ns, stop) = (
                Arc::new(AtomicBool::new(true)),
                Arc::new(AtomicI64::new(0)),
                Arc::new(AtomicBool::new(false)),
            );
            let control = {
                let (feed, safe_since, stop) = (feed.clone(), safe_since_ns.clone(), stop.clone());
                let (mut inputs, mut outputs) = (ends.inputs, ends.outputs);
                std::thread::spawn(move || {
                    let mut scan = 0;
                    while !stop.load(Relaxed) {
                        if feed.load(Relaxed) {
                            scan += 1;
                            let _ = inputs.push(LineInputs {
                                scan_seq: scan,
                                feed_ppm: 12.0,
                                weld_temp_c: 180.0,
                                ..Default::default()
                            });
                        }
                        clock.advance(MS);
                        runner.run_cycle(0);
                        if runner.axes()[0].program().mode() == AxisMode::SafeState && safe_since.load(Relaxed) == 0 {
                            safe_since.store(clock.now_ns(), Relaxed);
                        }
                        while outputs.pop().is_ok() {}
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            };
            let (shutdown, shutdown_rx) = watch::channel(false);
            let (twin_tx, twin) = std::sync::mpsc::channel();
            let (state_tx, state_rx) = watch::channel(None);
            tokio::spawn(telemetry_pump(
                ctx.clone(),
                ends.telemetry,
                twin_tx,
                state_tx,
                shutdown_rx,
            ));
            tokio::spawn(publish_latest(ctx.clone(), ctx.topics.control_state.clone(), state_rx));
            Self {
                ctx,
                bus,
                feed,
                safe_since_ns,
                stop,
                control: Some(control),
                _shutdown: shutdown,
                _twin: twin,
                dir,
            }
        }

        async fn submit(&self, action: CommandAction, value: Option<f64>) -> i64 {
            let cmd = ControlCommand {
                envelope: Envelope {
                    schema_version: SCHEMA_VERSION,
                    node: "test".into(),
                    sequence: 1,
                    stamp_ns: 0,
                    clock: ClockState::FreeRunning,
                    clock_offset_ns: None,
                },
                command_id: format!("C-{action:?}"),
                axis: self.ctx.axis.id.to_string(),
                action,
                value,
                reason: "test".into(),
                issued_by: "test".into(),
                token: None,
            };
            let (stamp, ev) = self.ctx.gate.submit(&cmd, Origin::Internal).await.unwrap();
            assert!(matches!(ev, ControlEvent::Applied { .. }), "{ev:?}");
            stamp
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            self.stop.store(true, Relaxed);
            if let Some(t) = self.control.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// The next state on `sub` that satisfies `want`.
    async fn state_where(sub: &mut crate::bus::Subscription, want: impl Fn(&ControlState) -> bool) -> ControlState {
        let wait = async {
            loop {
                let d = sub.next().await.expect("state subscription closed");
                let s: ControlState = triad_schemas::codec::decode(&d.msg.payload).unwrap();
                if want(&s) {
                    return s;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("no such state within 5 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applied_commands_and_the_safe_state_are_published_from_the_cycle_that_made_them() {
        let rig = Loop::start("state");
        let topic = rig.ctx.topics.control_state.clone();
        let mut states = rig.bus.subscribe(&topic, "test-state").await.unwrap();
        // The periodic state first (every 4th sample, one per 50 cycles).
        let first = state_where(&mut states, |_| true).await;
        assert_eq!((first.mode, first.ppm_setpoint), (AxisMode::Running, 12.0));

        // The control thread's stamp of the applying cycle is the stamp of
        // the state that shows the new set-point: published from that very
        // cycle's sample. Before, it was the next periodic sample at the
        // earliest (50 cycles on) and, on the state topic, up to 200 on.
        for (action, value, mode) in [
            (CommandAction::SetRate, 9.0, AxisMode::Running),
            (CommandAction::SetRate, 10.0, AxisMode::Running),
            (CommandAction::Derate, 8.0, AxisMode::Derated),
        ] {
            let applied_ns = rig.submit(action, Some(value)).await;
            let s = state_where(&mut states, |s| s.ppm_setpoint == value).await;
            assert_eq!(
                s.envelope.stamp_ns,
                applied_ns,
                "{action:?} {value} applied at {applied_ns}, first state showing it stamped {} ms later",
                (s.envelope.stamp_ns - applied_ns) / MS
            );
            assert_eq!(s.mode, mode);
        }

        // The safe state: the I/O scan stops delivering; the state names
        // the mode and the reason from the cycle that entered it.
        rig.feed.store(false, Relaxed);
        let s = state_where(&mut states, |s| s.mode == AxisMode::SafeState).await;
        // The control thread notes it just after the cycle (bounded wait).
        let mut entered_ns = 0;
        for _ in 0..1000 {
            entered_ns = rig.safe_since_ns.load(Relaxed);
            if entered_ns != 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            s.envelope.stamp_ns,
            entered_ns,
            "safe state entered at {entered_ns}, first state showing it stamped {} ms later",
            (s.envelope.stamp_ns - entered_ns) / MS
        );
        assert_eq!(s.ppm_setpoint, 0.0);
        assert_eq!(s.safe_state_reason.as_deref(), Some(SafeReason::StaleInput.describe()));
    }
}
