//! The node's OS threads other than control: the simulated I/O scan of
//! every axis, an inspection worker per cell and a twin per asset. None of them can delay a control cycle:
//! they meet the control thread only through lock-free rings.

use crate::clock::{Clock, monotonic_ns, sleep_until_mono};
use crate::control::rt;
use crate::models::slot::WorkerModels;
use crate::models::twin::TwinModels;
use rtrb::{Consumer, Producer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use triad_hw::{Camera, CaptureTrigger, LineInputs, LineOutputs, ProcessIo};
use triad_inspect::{GrayImage, Inspection};
use triad_twin::{Twin, TwinSample, TwinStep};

/// Figures of one axis in the I/O scan.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Frames that did not fit the weld ring (lost before inspection).
    pub welds_dropped: AtomicU64,
    /// Clock time of the plant's first scan, ns (fault times are relative to it).
    pub plant_start_ns: AtomicI64,
}

/// One axis' field I/O (a [`ProcessIo`] driver: the simulated plant today)
/// and its ends of the rings: the process image to and from the control
/// thread, and the capture triggers to its cell's inspection.
pub struct AxisIo {
    /// The driver.
    pub io: Box<dyn ProcessIo>,
    /// Process image to the axis' program.
    pub inputs: Producer<LineInputs>,
    /// The program's outputs.
    pub outputs: Consumer<LineOutputs>,
    /// Parts to image.
    pub triggers: Producer<CaptureTrigger>,
    /// Its figures.
    pub stats: Arc<IoStats>,
}

/// The I/O scan: every `period`, scans each axis' driver in turn,
/// exchanging its process image with the control thread and handing its
/// capture triggers to its cell's inspection.
pub fn run_io_scan(
    mut plants: Vec<AxisIo>,
    clock: Arc<dyn Clock>,
    period: Duration,
    rt_priority: Option<i32>,
    stop: Arc<AtomicBool>,
) {
    // The scan feeds the control loop: it runs real-time too, just below it.
    let st = rt::prepare_current_thread(rt_priority, None);
    if let Err(e) = &st.fifo {
        tracing::debug!(reason = %e, "I/O scan at normal priority");
    }
    let period_ns = period.as_nanos() as i64;
    let mut outs = vec![LineOutputs::SAFE; plants.len()];
    let mut next = monotonic_ns() + period_ns;
    let mut first = true;
    while !stop.load(Relaxed) {
        sleep_until_mono(next);
        next += period_ns;
        let behind = monotonic_ns() - next;
        if behind > period_ns {
            next += (behind / period_ns) * period_ns;
        }
        let now = clock.now_ns();
        for (p, out) in plants.iter_mut().zip(outs.iter_mut()) {
            while let Ok(o) = p.outputs.pop() {
                *out = o;
            }
            if first {
                p.stats.plant_start_ns.store(now, Relaxed);
            }
            match p.io.scan(out, now) {
                Ok(image) => {
                    let _ = p.inputs.push(image);
                }
                Err(e) => tracing::warn!(error = %e, "I/O scan failed"),
            }
            let (triggers, stats) = (&mut p.triggers, &p.stats);
            p.io.take_triggers(&mut |t| {
                if triggers.push(t).is_err() {
                    stats.welds_dropped.fetch_add(1, Relaxed);
                }
            });
        }
        first = false;
    }
}

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
