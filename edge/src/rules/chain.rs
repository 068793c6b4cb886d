//! One closed-loop chain as a state machine: alert raised → derate →
//! alert stored → analysis (work order built) → work order stored.
//!
//! The state is the journal record [`ChainRecord`] (its [`Step`] is the
//! last step done), so a chain interrupted by a stop or a power cut goes on
//! from its journal with the same two calls:
//!
//! ```text
//! loop {
//!     match next_action(&rec, &rules) {          // what to do
//!         Action::Done => break,
//!         action => { let ev = do_io(action);     // the driver's I/O
//!                     handle(&mut rec, ev, now, &rules);   // what came of it
//!                     journal(&rec); }
//!     }
//! }
//! ```
//!
//! Messages built here carry only their stamp in the envelope; the driver
//! fills in the node and the clock's state (`Publisher::envelope`) when it
//! stores them.

use super::StationRules;
use serde::{Deserialize, Serialize};
use triad_inspect::history::ResultHistory;
use triad_schemas::codec::SCHEMA_VERSION;
use triad_schemas::{
    AlertKind, AlertState, ChainStamps, ClockState, Envelope, Priority, Severity, TwinAlert, WorkOrder,
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

/// One chain's journal: its state.
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

/// The twin's alert that starts a chain.
#[derive(Clone, Debug, PartialEq)]
pub struct RaisedAlert {
    /// Residual left its band, ns.
    pub onset_ns: i64,
    /// Alert raised, ns.
    pub alert_ns: i64,
    /// Residual at the alert, °C.
    pub residual_c: f64,
    /// Band, °C.
    pub band_c: f64,
}

/// The derate command the rule asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct DerateRequest {
    /// Its id (`CMD-<alert id>`): one derate per alert, however often the
    /// chain is resumed.
    pub command_id: String,
    /// The rate, PPM.
    pub ppm: f64,
    /// Why, for the audit trail.
    pub reason: String,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Submit the derate to the axis' command gate; answer with
    /// [`Event::Derate`].
    Derate(DerateRequest),
    /// Store the alert durably (outbox, then bus); answer [`Event::AlertStored`].
    StoreAlert(Box<TwinAlert>),
    /// Gather the inspection batches; answer [`Event::Analysis`].
    Analyse,
    /// Store the work order durably; answer [`Event::WorkOrderStored`].
    StoreWorkOrder(Box<WorkOrder>),
    /// The chain is complete.
    Done,
}

/// What came of the derate.
#[derive(Clone, Debug, PartialEq)]
pub enum DerateOutcome {
    /// The control thread applied it at `stamp_ns`, setting `to_ppm`.
    Applied {
        /// When, ns.
        stamp_ns: i64,
        /// The rate set, PPM.
        to_ppm: f64,
    },
    /// Refused or not answered, and why.
    NotApplied(String),
}

/// The inspection figures an analysis runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisInputs {
    /// The most recent batches.
    pub batches: Vec<BatchRecord>,
    /// The healthy baseline `(frames, defects)` before the onset.
    pub baseline: (u64, u64),
}

impl AnalysisInputs {
    /// The last `batches` of a cell's `history` and its healthy baseline
    /// before `onset_ns`.
    pub fn from_history(history: &ResultHistory, batches: usize, onset_ns: i64) -> Self {
        Self {
            batches: history
                .last_batches(batches)
                .into_iter()
                .map(|b| BatchRecord {
                    batch_id: b.batch_id,
                    frames: b.frames,
                    defects: b.defects,
                    first_ns: b.first_ns,
                    last_ns: b.last_ns,
                })
                .collect(),
            baseline: history.baseline(onset_ns, batches),
        }
    }
}

/// What came of an action.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The derate's outcome.
    Derate(DerateOutcome),
    /// The alert is stored.
    AlertStored,
    /// The inspection figures as they are now; `None`: use those journaled
    /// at the alert (a chain resumed after a restart has no live history).
    Analysis(Option<AnalysisInputs>),
    /// The work order is stored as `sequence` on `topic`.
    WorkOrderStored {
        /// Topic name.
        topic: String,
        /// Its sequence there.
        sequence: i64,
    },
}

/// The envelope of a message built here: its stamp only.
fn stamped(stamp_ns: i64) -> Envelope {
    Envelope {
        schema_version: SCHEMA_VERSION,
        node: String::new(),
        sequence: 0,
        stamp_ns,
        clock: ClockState::FreeRunning,
        clock_offset_ns: None,
    }
}

/// The alert id of an asset's alert: `<asset>-<onset ms>`.
pub fn alert_id(rules: &StationRules, onset_ns: i64) -> String {
    format!("{}-{}", rules.asset, onset_ns / 1_000_000)
}

/// A new chain for `alert`, with the rate and inspection figures at that
/// moment. Without a derate rule it starts past the derate step.
pub fn raise(rules: &StationRules, alert: &RaisedAlert, ppm_before: f64, at_alert: AnalysisInputs) -> ChainRecord {
    let message = format!(
        "weld temperature {:+.1} °C off the twin's prediction for more than {:.1} s (band ±{:.1} °C)",
        alert.residual_c,
        rules.persistence_ms as f64 / 1000.0,
        alert.band_c,
    );
    ChainRecord {
        alert_id: alert_id(rules, alert.onset_ns),
        onset_ns: alert.onset_ns,
        alert_ns: alert.alert_ns,
        residual_c: alert.residual_c,
        band_c: alert.band_c,
        message,
        ppm_before,
        batches: at_alert.batches,
        baseline: at_alert.baseline,
        step: if rules.derate_ppm.is_some() {
            Step::Raised
        } else {
            Step::Derated
        },
        derate_ns: None,
        ppm_after: ppm_before,
        derate_text: "No derate rule for this asset".into(),
        analysis_ns: None,
        work_order: None,
        stored: None,
    }
}

/// What the chain does next, from its last step.
pub fn next_action(rec: &ChainRecord, rules: &StationRules) -> Action {
    match rec.step {
        Step::Raised => match rules.derate_ppm {
            Some(ppm) => Action::Derate(DerateRequest {
                command_id: format!("CMD-{}", rec.alert_id),
                ppm,
                reason: format!("alert {}: {}", rec.alert_id, rec.message),
            }),
            None => Action::StoreAlert(Box::new(alert_message(rec, rules))),
        },
        Step::Derated => Action::StoreAlert(Box::new(alert_message(rec, rules))),
        Step::AlertStored => Action::Analyse,
        Step::Analysed => match &rec.work_order {
            Some(wo) => Action::StoreWorkOrder(Box::new(wo.clone())),
            // A journal from before its work order was written: analyse again.
            None => Action::Analyse,
        },
        Step::WorkOrderStored => Action::Done,
    }
}

/// Take what came of the last action, at `now_ns`. An event that does not
/// answer the chain's next action changes nothing (and returns false).
pub fn handle(rec: &mut ChainRecord, event: Event, now_ns: i64, rules: &StationRules) -> bool {
    match (rec.step, event) {
        (Step::Raised, Event::Derate(outcome)) => {
            match outcome {
                DerateOutcome::Applied { stamp_ns, to_ppm } => {
                    rec.derate_ns = Some(stamp_ns);
                    // A chain resumed after a restart derates from the rate
                    // the line restarted at; the work order reports the rate
                    // before the alert.
                    rec.ppm_after = to_ppm;
                    rec.derate_text = format!("Line derated {} → {to_ppm} PPM", rec.ppm_before);
                }
                DerateOutcome::NotApplied(why) => rec.derate_text = format!("Derate NOT applied ({why})"),
            }
            rec.step = Step::Derated;
        }
        (Step::Derated, Event::AlertStored) => rec.step = Step::AlertStored,
        // A journal of a chain whose rule has since been removed.
        (Step::Raised, Event::AlertStored) if rules.derate_ppm.is_none() => rec.step = Step::AlertStored,
        (Step::AlertStored | Step::Analysed, Event::Analysis(inputs)) if rec.work_order.is_none() => {
            let inputs = inputs.unwrap_or_else(|| AnalysisInputs {
                batches: rec.batches.clone(),
                baseline: rec.baseline,
            });
            rec.work_order = Some(work_order(rec, &inputs, now_ns, rules));
            rec.analysis_ns = Some(now_ns);
            rec.step = Step::Analysed;
        }
        (Step::Analysed, Event::WorkOrderStored { topic, sequence }) => {
            rec.stored = Some((topic, sequence));
            rec.step = Step::WorkOrderStored;
        }
        _ => return false,
    }
    true
}

/// The alert message of a chain.
fn alert_message(rec: &ChainRecord, rules: &StationRules) -> TwinAlert {
    TwinAlert {
        envelope: stamped(rec.alert_ns),
        alert_id: rec.alert_id.clone(),
        asset: rules.asset.to_string(),
        kind: AlertKind::ResidualOutOfBand,
        state: AlertState::Raised,
        severity: Severity::Critical,
        onset_ns: rec.onset_ns,
        raised_ns: rec.alert_ns,
        residual_c: rec.residual_c,
        band_c: rec.band_c,
        persistence_ms: rules.persistence_ms,
        message: rec.message.clone(),
    }
}

/// The analysis of `inputs` and the work order that reports it.
fn work_order(rec: &ChainRecord, inputs: &AnalysisInputs, now_ns: i64, rules: &StationRules) -> WorkOrder {
    let batches: Vec<BatchStats> = inputs
        .batches
        .iter()
        .map(|b| BatchStats {
            batch_id: b.batch_id.clone(),
            frames: b.frames,
            defects: b.defects,
            first_ns: b.first_ns,
            last_ns: b.last_ns,
        })
        .collect();
    let acfg = AnalysisConfig {
        prior_rate: rules.analysis.prior_defect_rate,
        prior_weight_frames: rules.analysis.prior_weight_frames,
    };
    let baseline = Baseline {
        frames: inputs.baseline.0,
        defects: inputs.baseline.1,
    };
    let pr = &rules.analysis.priorities;
    let mut wo = WorkOrder {
        envelope: stamped(now_ns),
        work_order_id: format!("WO-{}", rec.alert_id),
        line: rules.line.to_string(),
        asset: rules.asset.to_string(),
        cell: rules.cell.to_string(),
        axis: rules.axis.to_string(),
        alert_id: rec.alert_id.clone(),
        priority: Priority::High,
        defect_probability: None,
        baseline_defect_rate: acfg.prior_rate,
        recent_defect_rate: 0.0,
        elevated_probability: 0.0,
        batches: Vec::new(),
        frames_analysed: 0,
        defects_found: 0,
        ppm_before: rec.ppm_before,
        ppm_after: rec.ppm_after,
        chain: ChainStamps {
            fault_onset_ns: rec.onset_ns,
            alert_ns: rec.alert_ns,
            derate_ns: rec.derate_ns,
            analysis_ns: now_ns,
            workorder_ns: now_ns,
        },
        summary: String::new(),
    };
    let summary = match analyze(&batches, &baseline, &acfg, now_ns) {
        Ok(a) => {
            wo.priority = if a.defect_probability >= pr.urgent_defect_probability {
                Priority::Urgent
            } else if a.defect_probability >= pr.high_defect_probability
                || a.elevated_probability >= pr.high_elevated_probability
            {
                Priority::High
            } else {
                Priority::Normal
            };
            wo.defect_probability = a.defect_probability.is_finite().then_some(a.defect_probability);
            wo.baseline_defect_rate = a.baseline_rate;
            wo.recent_defect_rate = a.recent_rate;
            wo.elevated_probability = a.elevated_probability;
            wo.batches = a.batches;
            wo.frames_analysed = a.frames as i64;
            wo.defects_found = a.defects as i64;
            a.summary
        }
        Err(e) => e.to_string(),
    };
    wo.summary = format!(
        "{}. {}. {summary}. Check the weld cooling and electrode of {}.",
        rec.message, rec.derate_text, rules.asset
    );
    wo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{AnalysisSettings, Priorities};

    fn rules(derate_ppm: Option<f64>) -> StationRules {
        StationRules {
            line: "line_1".parse().unwrap(),
            axis: "axis_02".parse().unwrap(),
            cell: "cell_02".parse().unwrap(),
            asset: "pack_02".parse().unwrap(),
            derate_ppm,
            persistence_ms: 3000,
            analysis: AnalysisSettings {
                batches: 3,
                prior_defect_rate: 0.02,
                prior_weight_frames: 200.0,
                priorities: Priorities::default(),
            },
        }
    }

    fn batches(defects: [u64; 3]) -> AnalysisInputs {
        AnalysisInputs {
            batches: defects
                .iter()
                .enumerate()
                .map(|(i, &d)| BatchRecord {
                    batch_id: format!("B{i:06}"),
                    frames: 40,
                    defects: d,
                    first_ns: i as i64,
                    last_ns: i as i64 + 1,
                })
                .collect(),
            baseline: (2000, 40),
        }
    }

    const S: i64 = 1_000_000_000;

    fn alert() -> RaisedAlert {
        RaisedAlert {
            onset_ns: 100 * S,
            alert_ns: 103 * S,
            residual_c: 7.5,
            band_c: 6.0,
        }
    }

    #[test]
    fn a_chain_runs_alert_derate_store_analyse_work_order_and_is_done() {
        let r = rules(Some(8.0));
        let mut rec = raise(&r, &alert(), 12.0, batches([1, 1, 1]));
        assert_eq!(rec.alert_id, "pack_02-100000");
        let Action::Derate(req) = next_action(&rec, &r) else {
            panic!()
        };
        assert_eq!((req.command_id.as_str(), req.ppm), ("CMD-pack_02-100000", 8.0));
        assert!(handle(
            &mut rec,
            Event::Derate(DerateOutcome::Applied {
                stamp_ns: 103 * S + 500,
                to_ppm: 8.0
            }),
            103 * S,
            &r
        ));
        let Action::StoreAlert(a) = next_action(&rec, &r) else {
            panic!()
        };
        assert_eq!(
            (a.asset.as_str(), a.envelope.stamp_ns, a.persistence_ms),
            ("pack_02", 103 * S, 3000)
        );
        assert!(
            !handle(
                &mut rec,
                Event::WorkOrderStored {
                    topic: "t".into(),
                    sequence: 1
                },
                0,
                &r
            ),
            "out of order: ignored"
        );
        assert!(handle(&mut rec, Event::AlertStored, 103 * S, &r));
        assert_eq!(next_action(&rec, &r), Action::Analyse);
        assert!(handle(
            &mut rec,
            Event::Analysis(Some(batches([10, 14, 16]))),
            104 * S,
            &r
        ));
        let Action::StoreWorkOrder(wo) = next_action(&rec, &r) else {
            panic!()
        };
        assert_eq!(
            (wo.work_order_id.as_str(), wo.asset.as_str(), wo.axis.as_str()),
            ("WO-pack_02-100000", "pack_02", "axis_02")
        );
        assert_eq!(
            (wo.ppm_before, wo.ppm_after, wo.chain.derate_ns),
            (12.0, 8.0, Some(103 * S + 500))
        );
        assert_eq!(wo.frames_analysed, 120);
        assert_eq!(
            wo.priority,
            Priority::Urgent,
            "40 of 120 frames defective: {:?}",
            wo.defect_probability
        );
        assert!(wo.summary.contains("Line derated 12 → 8 PPM"), "{}", wo.summary);
        assert!(handle(
            &mut rec,
            Event::WorkOrderStored {
                topic: "mes/line_1/workorder".into(),
                sequence: 4
            },
            104 * S,
            &r
        ));
        assert_eq!(next_action(&rec, &r), Action::Done);
        assert_eq!(rec.stored, Some(("mes/line_1/workorder".into(), 4)));
    }

    #[test]
    fn without_a_rule_the_rate_is_kept_and_a_refused_derate_is_said() {
        let r = rules(None);
        let rec = raise(&r, &alert(), 12.0, batches([0, 0, 0]));
        assert_eq!(rec.step, Step::Derated);
        assert!(matches!(next_action(&rec, &r), Action::StoreAlert(_)));
        let r = rules(Some(8.0));
        let mut rec = raise(&r, &alert(), 12.0, batches([0, 0, 0]));
        handle(
            &mut rec,
            Event::Derate(DerateOutcome::NotApplied("axis in SafeState".into())),
            0,
            &r,
        );
        assert_eq!((rec.step, rec.ppm_after), (Step::Derated, 12.0));
        assert_eq!(rec.derate_text, "Derate NOT applied (axis in SafeState)");
    }

    #[test]
    fn a_resumed_chain_analyses_the_batches_journaled_at_the_alert() {
        let r = rules(Some(8.0));
        let mut rec = raise(&r, &alert(), 12.0, batches([9, 9, 9]));
        rec.step = Step::AlertStored;
        let journal: ChainRecord = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        let mut rec = journal;
        handle(&mut rec, Event::Analysis(None), 110 * S, &r);
        let wo = rec.work_order.as_ref().unwrap();
        assert_eq!((wo.frames_analysed, wo.defects_found), (120, 27));
        assert_eq!(rec.analysis_ns, Some(110 * S));
    }

    #[test]
    fn priorities_follow_the_configured_thresholds() {
        let mut r = rules(Some(8.0));
        let prio = |r: &StationRules, d: [u64; 3]| {
            let mut rec = raise(r, &alert(), 12.0, batches(d));
            rec.step = Step::AlertStored;
            handle(&mut rec, Event::Analysis(None), 0, r);
            rec.work_order.unwrap().priority
        };
        assert_eq!(prio(&r, [0, 0, 0]), Priority::Normal);
        assert_eq!(prio(&r, [10, 14, 16]), Priority::Urgent);
        r.analysis.priorities.urgent_defect_probability = 0.9;
        assert_eq!(
            prio(&r, [10, 14, 16]),
            Priority::High,
            "the same figures, a stricter plant"
        );
    }
}
