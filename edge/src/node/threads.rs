//! The twin thread of each asset, and what the inspection pool
//! ([`super::inspection`]) hands to the async side. Like the I/O scan
//! ([`crate::field::scan`]), neither can delay a control cycle: they meet
//! the control thread only through lock-free rings.

use crate::control::rt;
use crate::models::twin::TwinModels;
use std::sync::Arc;
use triad_hw::CaptureTrigger;
use triad_inspect::Inspection;
use triad_twin::{Twin, TwinSample, TwinStep};

/// What the inspection pool hands to the async side for one part.
#[derive(Debug)]
pub struct InspectionOutcome {
    /// The weld that was imaged.
    pub trigger: CaptureTrigger,
    /// The verdict, or why there is none.
    pub result: Result<Inspection, String>,
    /// When the result was ready, ns.
    pub done_ns: i64,
}

/// The twin worker, at low priority. Before each sample it takes a newly
/// deployed twin model, if any (one atomic load when nothing changed); each
/// step goes out with the version of the model that predicted it.
pub fn run_twin(
    mut twin: Twin<TwinModels>,
    samples: std::sync::mpsc::Receiver<TwinSample>,
    steps: tokio::sync::mpsc::UnboundedSender<(TwinStep, Arc<str>)>,
) {
    if let Err(e) = rt::set_nice(10) {
        tracing::debug!(error = %e, "could not lower the twin thread's priority");
    }
    let mut version: Arc<str> = twin.predictor_mut().version().into();
    twin.set_model_version(&version);
    for s in samples {
        twin.predictor_mut().poll_swap();
        let step = twin.handle_sample(&s);
        // A swap, or a rollback by the fuse during this very sample.
        if *version != *twin.predictor_mut().version() {
            version = twin.predictor_mut().version().into();
            twin.set_model_version(&version);
        }
        if steps.send((step, version.clone())).is_err() {
            return;
        }
    }
}
