//! Eight hours of a three-station line in virtual time.
//!
//! The real parts, stepped by a manual clock 1 ms at a time instead of the
//! node's threads: the simulated welders as `[[devices]]` behind the I/O
//! scan (`field::LineScan`), the axis programs in the control runner, a
//! twin per asset on the control telemetry, and the closed-loop rules
//! (`rules::chain`) per station, whose actions this test carries out at
//! once (a derate goes into the axis' request ring and is answered by the
//! program's next cycle; storing is recording). The camera and model are
//! the one stand-in: each weld's verdict is drawn with the simulated
//! camera's defect probability at its temperature (what the built-in model
//! finds on the rendered frame, docs/models.md), since rendering and
//! inspecting 100,000 frames would take the test's minute many times over.
//!
//! Over the shift, hot welds (a +15 °C excursion for 10 minutes) come on
//! each axis in turn, and once a 2 s spike that must raise nothing. Every
//! chain is checked: one per excursion, on its own station only, alert 3 s
//! after the onset, derate in the next control cycle, work order with the
//! station's ids; the operator resumes the axis once the alert clears, and
//! every axis ends the shift running at its nominal rate.

use std::sync::Arc;
use triad_edge::clock::ManualClock;
use triad_edge::config;
use triad_edge::control::program::{AxisProgram, ControlRequest};
use triad_edge::control::rings::{ControlEndpoints, control_rings};
use triad_edge::control::runner::{AxisLoop, ControlRunner};
use triad_edge::control::{ControlEvent, ControlStats, ControlTelemetry};
use triad_edge::field::{AxisIo, IoStats, LineScan, drivers};
use triad_edge::rules::StationRules;
use triad_edge::rules::chain::{self, Action, AnalysisInputs, ChainRecord, DerateOutcome, Event, RaisedAlert, Step};
use triad_hw::rng::SimRng;
use triad_hw::sim::{Fault, FaultKind, SimCameraConfig};
use triad_inspect::history::ResultHistory;
use triad_schemas::{AxisMode, CommandAction, Verdict};
use triad_twin::physics::ThermalModel;
use triad_twin::{AlertEvent, Twin};

const MS: i64 = 1_000_000;
const S: i64 = 1_000 * MS;
const MIN: i64 = 60 * S;
const HOUR: i64 = 60 * MIN;
const SHIFT: i64 = 8 * HOUR;
const T0: i64 = 1_800_000_000 * S;

/// Hot welds for 10 minutes on (axis index, start): each must run one chain.
const EXCURSIONS: [(usize, i64); 7] = [
    (0, HOUR),
    (1, 2 * HOUR),
    (2, 3 * HOUR),
    (1, 4 * HOUR),
    (0, 5 * HOUR),
    (2, 6 * HOUR),
    (1, 7 * HOUR),
];
/// A 2 s spike: observed, never alerted.
const SPIKE: (usize, i64) = (0, 30 * MIN);

fn faults_of(axis: usize) -> Vec<Fault> {
    let mut f: Vec<Fault> = EXCURSIONS
        .iter()
        .filter(|(a, _)| *a == axis)
        .map(|&(_, at_ns)| Fault {
            at_ns,
            kind: FaultKind::Spike {
                delta_c: 15.0,
                duration_ns: 10 * MIN,
            },
        })
        .collect();
    if SPIKE.0 == axis {
        f.push(Fault {
            at_ns: SPIKE.1,
            kind: FaultKind::Spike {
                delta_c: 15.0,
                duration_ns: 2 * S,
            },
        });
    }
    f
}

/// One station's state outside the control thread.
struct Station {
    rules: StationRules,
    ends_requests: rtrb::Producer<ControlRequest>,
    telemetry: rtrb::Consumer<ControlTelemetry>,
    triggers: rtrb::Consumer<triad_hw::CaptureTrigger>,
    twin: Twin,
    history: ResultHistory,
    verdicts: SimRng,
    camera: SimCameraConfig,
    modules_per_batch: u64,
    /// The chain in flight, and the request handle of its derate.
    chain: Option<(ChainRecord, Option<u64>)>,
    done: Vec<ChainRecord>,
    setpoint: f64,
    mode: AxisMode,
    resume_pending: bool,
    excursions_observed: usize,
}

fn inspection_now(history: &ResultHistory, rules: &StationRules, onset_ns: i64) -> AnalysisInputs {
    AnalysisInputs::from_history(history, rules.analysis.batches, onset_ns)
}

/// Carry out the chain's actions until it waits for the control thread or
/// is done.
fn drive(st: &mut Station, now: i64, next_handle: &mut u64) {
    let Some((mut rec, None)) = st.chain.take() else { return };
    loop {
        let event = match chain::next_action(&rec, &st.rules) {
            Action::Done => {
                st.done.push(rec);
                return;
            }
            Action::Derate(req) => {
                *next_handle += 1;
                st.ends_requests
                    .push(ControlRequest {
                        handle: *next_handle,
                        action: CommandAction::Derate,
                        value: req.ppm,
                    })
                    .unwrap();
                st.chain = Some((rec, Some(*next_handle)));
                return;
            }
            Action::StoreAlert(a) => {
                assert_eq!(a.asset, st.rules.asset.as_str());
                Event::AlertStored
            }
            Action::Analyse => Event::Analysis(Some(inspection_now(&st.history, &st.rules, rec.onset_ns))),
            Action::StoreWorkOrder(wo) => Event::WorkOrderStored {
                topic: "mes/line_1/workorder".into(),
                sequence: wo.envelope.stamp_ns,
            },
        };
        assert!(
            chain::handle(&mut rec, event, now, &st.rules),
            "every action's outcome is taken"
        );
    }
}

#[test]
fn eight_hours_of_a_three_station_line_run_every_chain_on_its_own_station() {
    let wall = std::time::Instant::now();
    let cfg = config::from_toml_str(include_str!("../../deploy/examples/line-3-stations.toml")).unwrap();
    let stations_cfg = cfg.stations();
    assert_eq!(stations_cfg.len(), 3);
    let clock = Arc::new(ManualClock::new(T0));

    // The devices as the node makes them, each with its excursions (in
    // the example, device i is axis i's welder).
    assert!(
        (cfg.axes.iter().enumerate())
            .all(|(i, a)| a.io.as_ref().unwrap().point(triad_hw::Signal::WeldTempC).device == i),
        "device i is axis i's welder"
    );
    let dyn_clock: Arc<dyn triad_edge::clock::Clock> = clock.clone();
    let devices = drivers::open(&cfg, faults_of, &dyn_clock).unwrap().devices;
    let mut loops = Vec::new();
    let mut axes_io = Vec::new();
    let mut stations = Vec::new();
    for (i, sc) in stations_cfg.iter().enumerate() {
        let (rings, ends): (_, ControlEndpoints) = control_rings();
        loops.push(AxisLoop::new(AxisProgram::new(sc.axis.limits(&cfg.control), T0), rings));
        let (trig_tx, trig_rx) = rtrb::RingBuffer::new(1024);
        axes_io.push(AxisIo {
            binding: sc.axis.io.clone().unwrap(),
            inputs: ends.inputs,
            outputs: ends.outputs,
            triggers: trig_tx,
            stats: Arc::new(IoStats::default()),
        });
        stations.push(Station {
            rules: sc.rules(&cfg.line, cfg.analysis),
            ends_requests: ends.requests,
            telemetry: ends.telemetry,
            triggers: trig_rx,
            twin: Twin::new(sc.asset.twin_config(), ThermalModel::default()),
            history: ResultHistory::new(512),
            verdicts: SimRng::new(cfg.sim_seed + i as u64),
            camera: SimCameraConfig::default(),
            modules_per_batch: sc.cell.modules_per_batch,
            chain: None,
            done: Vec::new(),
            setpoint: sc.axis.nominal_ppm,
            mode: AxisMode::Running,
            resume_pending: false,
            excursions_observed: 0,
        });
    }
    let mut scan = LineScan::new(devices, axes_io);
    let stats = Arc::new(ControlStats::new());
    let mut runner = ControlRunner::new(
        loops,
        stats.clone(),
        clock.clone(),
        cfg.control.cycle,
        cfg.control.telemetry_every_cycles,
    );
    let cycle_ns = cfg.control.cycle.as_nanos() as i64;
    let mut handle = 0;
    let mut frames = 0u64;

    let mut t = 0;
    while t < SHIFT {
        t += cycle_ns;
        let now = T0 + t;
        clock.set(now);
        scan.scan(now);
        runner.run_cycle(0);
        for st in stations.iter_mut() {
            while let Ok(tr) = st.triggers.pop() {
                let fail = st.verdicts.chance(st.camera.defect_probability(tr.weld_temp_c));
                let batch = (tr.module_serial - 1) / st.modules_per_batch + 1;
                st.history.record(
                    &format!("B{batch:06}"),
                    if fail { Verdict::Fail } else { Verdict::Pass },
                    tr.stamp_ns,
                );
                frames += 1;
            }
            while let Ok(tel) = st.telemetry.pop() {
                match tel {
                    ControlTelemetry::Sample(s) => {
                        st.setpoint = s.setpoint_ppm;
                        st.mode = s.mode;
                        let step = st.twin.handle_sample(&s.twin_sample());
                        if step.excursion.is_some() {
                            st.excursions_observed += 1;
                        }
                        match step.alert {
                            Some(AlertEvent::Raised {
                                onset_ns, residual_c, ..
                            }) => {
                                assert!(st.chain.is_none(), "one chain at a time per station");
                                let alert = RaisedAlert {
                                    onset_ns,
                                    alert_ns: now,
                                    residual_c,
                                    band_c: step.band_c,
                                };
                                let inputs = inspection_now(&st.history, &st.rules, onset_ns);
                                st.chain = Some((chain::raise(&st.rules, &alert, st.setpoint, inputs), None));
                            }
                            Some(AlertEvent::Cleared { .. }) => st.resume_pending = true,
                            None => {}
                        }
                    }
                    ControlTelemetry::Event {
                        stamp_ns,
                        event: ControlEvent::Applied { handle: h, to_ppm, .. },
                    } => {
                        if let Some((rec, pending)) = st.chain.as_mut()
                            && *pending == Some(h)
                        {
                            *pending = None;
                            chain::handle(
                                rec,
                                Event::Derate(DerateOutcome::Applied { stamp_ns, to_ppm }),
                                now,
                                &st.rules,
                            );
                        }
                    }
                    ControlTelemetry::Event { event, .. } => {
                        assert!(
                            !matches!(event, ControlEvent::SafeStateEntered { .. }),
                            "no axis may fall into the safe state: {event:?}"
                        );
                    }
                }
            }
            drive(st, now, &mut handle);
            // The operator resumes the axis once its alert cleared and its
            // chain is complete.
            if st.resume_pending && st.chain.is_none() && st.mode == AxisMode::Derated {
                handle += 1;
                st.ends_requests
                    .push(ControlRequest {
                        handle,
                        action: CommandAction::Resume,
                        value: 0.0,
                    })
                    .unwrap();
                st.resume_pending = false;
            }
        }
    }
    let elapsed = wall.elapsed();

    for (i, st) in stations.iter().enumerate() {
        let expected: Vec<i64> = EXCURSIONS.iter().filter(|(a, _)| *a == i).map(|&(_, at)| at).collect();
        assert!(st.chain.is_none(), "{}: a chain left in flight", st.rules.asset);
        assert_eq!(
            st.done.len(),
            expected.len(),
            "{}: one chain per excursion: {:#?}",
            st.rules.asset,
            st.done
        );
        for (rec, at) in st.done.iter().zip(&expected) {
            // The plant's clock starts at its first scan, one cycle in.
            let fault_ns = T0 + cycle_ns + at;
            assert_eq!(rec.step, Step::WorkOrderStored);
            assert!(
                (0..2 * S).contains(&(rec.onset_ns - fault_ns)),
                "{}: onset {} ms after the fault",
                rec.alert_id,
                (rec.onset_ns - fault_ns) / MS
            );
            let persistence = st.rules.persistence_ms * MS;
            assert!(
                (persistence..persistence + 200 * MS).contains(&(rec.alert_ns - rec.onset_ns)),
                "{}: alert {} ms after onset",
                rec.alert_id,
                (rec.alert_ns - rec.onset_ns) / MS
            );
            let derate = rec.derate_ns.expect("derated");
            assert!(
                derate - rec.alert_ns <= 2 * cycle_ns,
                "{}: derate in the next cycle",
                rec.alert_id
            );
            assert_eq!((rec.ppm_before, rec.ppm_after), (12.0, 8.0), "{}", rec.alert_id);
            let wo = rec.work_order.as_ref().expect("work order");
            assert_eq!(
                (wo.asset.as_str(), wo.axis.as_str(), wo.cell.as_str(), wo.line.as_str()),
                (
                    st.rules.asset.as_str(),
                    st.rules.axis.as_str(),
                    st.rules.cell.as_str(),
                    "line_1"
                )
            );
            assert!(wo.frames_analysed > 0 && wo.defect_probability.is_some(), "{wo:?}");
        }
        assert_eq!(
            st.mode,
            AxisMode::Running,
            "{}: resumed after each alert",
            st.rules.axis
        );
        assert_eq!(st.setpoint, 12.0);
    }
    assert!(
        stations[SPIKE.0].excursions_observed > EXCURSIONS.iter().filter(|(a, _)| *a == SPIKE.0).count(),
        "the 2 s spike was observed (and raised nothing: the chains above are the excursions')"
    );
    assert_eq!(stats.overruns.load(std::sync::atomic::Ordering::Relaxed), 0);
    eprintln!(
        "8 h of 3 stations in {:.1} s wall: {} cycles, {frames} frames, {} chains",
        elapsed.as_secs_f64(),
        SHIFT / cycle_ns,
        stations.iter().map(|s| s.done.len()).sum::<usize>()
    );
    assert!(frames > 100_000, "{frames} frames");
}
