//! The node's OS threads other than control and the I/O scan
//! ([`crate::field::scan`]): an inspection worker per cell and a twin per
//! asset. Neither can delay a control cycle: they meet the control thread
//! only through lock-free rings.

use crate::clock::Clock;
use crate::control::rt;
use crate::models::slot::WorkerModels;
use crate::models::twin::TwinModels;
use rtrb::Consumer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use triad_hw::{Camera, CaptureTrigger};
use triad_inspect::{GrayImage, Inspection};
use triad_twin::{Twin, TwinSample, TwinStep};

/// What the inspection worker hands to the async side.
#[derive(Debug)]
pub struct InspectionOutcome {
    /// The weld that was imaged.
    pub trigger: CaptureTrigger,
    /// The verdict, or why there is none.
    pub result: Result<Inspection, String>,
    /// When the result was ready, ns.
    pub done_ns: i64,
}

/// The inspection worker: capture, inspect, hand over, in order. Between two
/// frames it takes a newly deployed model, if any (one atomic load; see
/// `models::slot`).
pub fn run_inspection(
    mut camera: Box<dyn Camera>,
    mut models: WorkerModels,
    mut triggers: Consumer<CaptureTrigger>,
    results: tokio::sync::mpsc::Sender<InspectionOutcome>,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
) {
    loop {
        models.poll_swap();
        let trigger = match triggers.pop() {
            Ok(t) => t,
            Err(_) if stop.load(Relaxed) => return,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        let result = match camera.capture(&trigger) {
            Ok(frame) => models
                .inspect(&GrayImage {
                    width: frame.width,
                    height: frame.height,
                    pixels: &frame.pixels,
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let outcome = InspectionOutcome {
            trigger,
            result,
            done_ns: clock.now_ns(),
        };
        if results.blocking_send(outcome).is_err() {
            return;
        }
    }
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
