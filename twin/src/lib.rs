//! # triad-twin: the weld's digital twin and the closed-loop analysis
//!
//! A sans-IO core: every function takes data and the time (`now_ns`) as
//! arguments and returns decisions. No threads, sockets or clocks.
//!
//! How the pieces fit:
//!
//! 1. [`physics::ThermalModel`] predicts the weld temperature from the process
//!    inputs (feed rate, weld current, ambient), integrating the same
//!    first-order heat balance the plant obeys. Its parameters are
//!    [`fit::fit_thermal`]ted on nominal data.
//!    Any other [`Predictor`] can stand in for it (the node runs a signed,
//!    hot-swappable ONNX model of the same heat balance).
//! 2. The residual (measured − predicted) is checked against a band
//!    ([`Twin`] does it with [`TwinConfig::band_c`]).
//! 3. [`persistence::PersistenceTimer`] turns "outside the band" into an
//!    alert only when it lasts longer than the persistence time (3 s by
//!    default); shorter excursions are observed, never alerted.
//! 4. [`health::HealthEstimator`] keeps a health score and a remaining useful
//!    life estimate from the residual's history.
//! 5. When an alert is raised, [`analysis::analyze`] compares the last
//!    inspection batches with the healthy baseline and estimates the
//!    probability of a weld defect (a Beta–binomial model, see its docs).
//!
//! ```
//! use triad_twin::{Twin, TwinConfig, TwinSample, physics::ThermalModel};
//! let mut twin = Twin::new(TwinConfig::default(), ThermalModel::default());
//! let s = TwinSample { stamp_ns: 0, feed_ppm: 12.0, weld_current_a: 5000.0, ambient_c: 25.0, measured_c: 180.0, running: true };
//! let step = twin.handle_sample(&s);
//! assert!(step.alert.is_none());
//! ```
#![deny(missing_docs)]

pub mod analysis;
pub mod fit;
pub mod health;
pub mod persistence;
pub mod physics;
pub mod predictor;
pub mod stats;
mod twin;

pub use predictor::Predictor;
pub use twin::{AlertEvent, Twin, TwinConfig, TwinSample, TwinStep};
