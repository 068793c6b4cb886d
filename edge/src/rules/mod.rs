//! The closed-loop rules, sans-IO: what an asset's alert does to its axis
//! and how it ends in a work order.
//!
//! [`chain`] is the engine: a chain's state is its journal record
//! ([`chain::ChainRecord`]); [`chain::next_action`] says what to do next
//! (derate the axis, store the alert, analyse, store the work order) and
//! [`chain::handle`] takes what came of it with `now`. Nothing here reads a
//! clock, a file or the bus: `node::chain` does that I/O, journals the
//! record after every step, and feeds the outcomes back; the virtual-time
//! test drives the same engine for hours of simulated line in seconds.
//!
//! The settings are its own ([`StationRules`], [`AnalysisSettings`]); the
//! config builds them (`StationConfig::rules`): the derate rule of the
//! asset, its persistence, and the analysis and priority thresholds of
//! `[analysis]`. This module uses no other part of the node.

pub mod chain;

use triad_schemas::ids::{AssetId, AxisId, CellId, LineId};

/// How a work order's priority follows from its analysis (`[analysis]`).
///
/// | priority | when |
/// |---|---|
/// | Urgent | defect probability ≥ `urgent_defect_probability` |
/// | High | defect probability ≥ `high_defect_probability`, or the rate is elevated with probability ≥ `high_elevated_probability`, or the analysis could not run |
/// | Normal | otherwise |
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Priorities {
    /// Default 0.3.
    pub urgent_defect_probability: f64,
    /// Default 0.1.
    pub high_defect_probability: f64,
    /// Default 0.95.
    pub high_elevated_probability: f64,
}

impl Default for Priorities {
    fn default() -> Self {
        Self {
            urgent_defect_probability: 0.3,
            high_defect_probability: 0.1,
            high_elevated_probability: 0.95,
        }
    }
}

/// Analysis settings (`[analysis]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisSettings {
    /// Batches to analyse.
    pub batches: usize,
    /// Commissioning defect rate.
    pub prior_defect_rate: f64,
    /// Its weight in frames.
    pub prior_weight_frames: f64,
    /// How a work order's priority follows from the analysis.
    pub priorities: Priorities,
}

/// What the rules of one station need: its ids, its derate rule, the
/// alert's persistence (for the alert's text), the analysis settings.
#[derive(Clone, Debug, PartialEq)]
pub struct StationRules {
    /// The line the work orders name.
    pub line: LineId,
    /// The axis derated.
    pub axis: AxisId,
    /// The cell whose inspection batches are analysed.
    pub cell: CellId,
    /// The asset whose alert starts a chain.
    pub asset: AssetId,
    /// `derate_on_alert`: the rate the axis is set to (`None`: no rule, the
    /// rate is kept).
    pub derate_ppm: Option<f64>,
    /// The asset's alert persistence, ms.
    pub persistence_ms: i64,
    /// Batches, priors and priorities.
    pub analysis: AnalysisSettings,
}
