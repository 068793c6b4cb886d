//! The inspection pool: a few worker threads serve every cell's camera and
//! model slot.
//!
//! Each cell is a [`CellWork`] behind its own lock: a worker that takes the
//! lock captures and inspects up to [`FRAMES_PER_TURN`] of the cell's parts
//! in order, then moves on to the next cell, so a cell is never inspected
//! by two workers at once (its results stay in order) and a busy cell does
//! not starve the others. Workers start their rounds at different cells.
//! A cell whose results the async side cannot take yet keeps its last
//! outcome and is passed over until there is room: one slow consumer holds
//! back its own cell only. Between two frames a cell takes a newly
//! deployed model, if any (one atomic load; see `models::slot`).
//!
//! `[inspection] workers` sizes the pool (default: one per core but the
//! control thread's, at least one, at most one per cell).

use super::threads::InspectionOutcome;
use crate::clock::Clock;
use crate::models::slot::WorkerModels;
use rtrb::Consumer;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;
use tokio::sync::mpsc::{Sender, error::TrySendError};
use triad_hw::{Camera, CaptureTrigger};
use triad_inspect::GrayImage;

/// Frames a worker inspects for one cell before it turns to the next.
pub const FRAMES_PER_TURN: usize = 4;

/// One cell's inspection: its camera, its model slot, its parts to image
/// (from the I/O scan) and where its outcomes go.
pub struct CellWork {
    camera: Box<dyn Camera>,
    models: WorkerModels,
    triggers: Consumer<CaptureTrigger>,
    results: Sender<InspectionOutcome>,
    /// An outcome the results channel had no room for.
    held: Option<InspectionOutcome>,
    /// The async side is gone: nothing more is handed over.
    closed: bool,
}

/// What a turn at a cell did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Inspected at least one frame.
    Worked,
    /// Holds an outcome it could not hand over.
    Blocked,
    /// Nothing to do.
    Idle,
}

impl CellWork {
    /// A cell imaged by `camera`, inspected with `models`.
    pub fn new(
        camera: Box<dyn Camera>,
        models: WorkerModels,
        triggers: Consumer<CaptureTrigger>,
        results: Sender<InspectionOutcome>,
    ) -> Self {
        Self {
            camera,
            models,
            triggers,
            results,
            held: None,
            closed: false,
        }
    }

    /// Hand `o` over; false if there was no room (it is held).
    fn hand_over(&mut self, o: InspectionOutcome) -> bool {
        match self.results.try_send(o) {
            Ok(()) => true,
            Err(TrySendError::Full(o)) => {
                self.held = Some(o);
                false
            }
            Err(TrySendError::Closed(_)) => {
                self.closed = true;
                false
            }
        }
    }

    fn turn(&mut self, clock: &dyn Clock) -> Turn {
        if self.closed {
            return Turn::Idle;
        }
        if let Some(o) = self.held.take()
            && !self.hand_over(o)
        {
            return if self.closed { Turn::Idle } else { Turn::Blocked };
        }
        self.models.poll_swap();
        let mut worked = false;
        for _ in 0..FRAMES_PER_TURN {
            let Ok(trigger) = self.triggers.pop() else { break };
            worked = true;
            let result = match self.camera.capture(&trigger) {
                Ok(frame) => self
                    .models
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
            if !self.hand_over(outcome) {
                break;
            }
            self.models.poll_swap();
        }
        match (worked, self.held.is_some()) {
            (_, true) => Turn::Blocked,
            (true, false) => Turn::Worked,
            (false, false) => Turn::Idle,
        }
    }
}

/// The running pool.
pub struct InspectionPool {
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Workers for `cells` cells when `[inspection] workers` says `configured`
/// (0: one per core but the control thread's).
pub fn pool_size(configured: usize, cells: usize) -> usize {
    let auto = std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1));
    let n = if configured == 0 { auto } else { configured };
    n.clamp(1, cells.max(1))
}

impl InspectionPool {
    /// Start `workers` threads (`triad-insp-<k>`) over `cells`. They end
    /// once `stop` is set and every cell's parts are inspected and handed
    /// over (or the async side is gone).
    pub fn start(
        cells: Vec<CellWork>,
        workers: usize,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let cells: Arc<[Mutex<CellWork>]> = cells.into_iter().map(Mutex::new).collect();
        let threads = (0..workers.max(1))
            .map(|k| {
                let (cells, clock, stop) = (cells.clone(), clock.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("triad-insp-{k}"))
                    .spawn(move || run_worker(&cells, k, &*clock, &stop))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// Wait for every worker (after `stop` was set).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run_worker(cells: &[Mutex<CellWork>], first: usize, clock: &dyn Clock, stop: &AtomicBool) {
    let n = cells.len();
    loop {
        // Read before the round: a round that began after the stop and
        // found every cell idle is the last.
        let stopping = stop.load(Relaxed);
        let (mut worked, mut pending) = (false, false);
        for k in 0..n {
            let cell = &cells[(first + k) % n];
            let turn = match cell.try_lock() {
                Ok(mut c) => c.turn(clock),
                // Another worker is at this cell: it is not done yet.
                Err(TryLockError::WouldBlock) => Turn::Blocked,
                // A worker panicked inside this cell: it takes no more frames.
                Err(TryLockError::Poisoned(_)) => Turn::Idle,
            };
            worked |= turn == Turn::Worked;
            pending |= turn != Turn::Idle;
        }
        if stopping && !pending {
            return;
        }
        if !worked {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::models::slot::{ModelInfo, ModelSlot};
    use triad_hw::sim::{SimCamera, SimCameraConfig};
    use triad_inspect::{InspectorConfig, Roi};

    fn cell(seed: u64, parts: u64, results: usize) -> (CellWork, tokio::sync::mpsc::Receiver<InspectionOutcome>) {
        let model = Arc::new(triad_inspect::builtin::weld_seam().unwrap());
        let info = ModelInfo {
            name: "weld_seam".into(),
            version: "builtin".into(),
            source: "builtin".into(),
            digest: None,
            signer: None,
            deployed_by: None,
            deployed_ns: None,
            onnx_sha256: String::new(),
        };
        let config = InspectorConfig {
            roi: Roi {
                x: 16,
                y: 8,
                w: 64,
                h: 64,
            },
            threshold: 0.5,
        };
        let slot = Arc::new(ModelSlot::new(&format!("cell_{seed}"), config, model, info));
        let models = slot.worker(Default::default(), Box::new(|_| {})).unwrap();
        let (mut tx, rx) = rtrb::RingBuffer::new(1024);
        for serial in 1..=parts {
            tx.push(CaptureTrigger {
                module_serial: serial,
                weld_index: 0,
                stamp_ns: serial as i64,
                weld_temp_c: 180.0,
            })
            .unwrap();
        }
        let camera = Box::new(SimCamera::new(SimCameraConfig {
            seed,
            ..SimCameraConfig::default()
        }));
        let (res_tx, res_rx) = tokio::sync::mpsc::channel(results);
        (CellWork::new(camera, models, rx, res_tx), res_rx)
    }

    fn serials(rx: &mut tokio::sync::mpsc::Receiver<InspectionOutcome>) -> Vec<u64> {
        let mut v = Vec::new();
        while let Ok(o) = rx.try_recv() {
            assert!(o.result.is_ok(), "{:?}", o.result);
            v.push(o.trigger.module_serial);
        }
        v
    }

    #[test]
    fn one_worker_serves_every_cell_in_order_and_a_full_consumer_holds_back_only_its_cell() {
        // Cell 0's consumer takes 5 results and then reads none; cells 1
        // and 2 are read as they come.
        let (c0, mut r0) = cell(1, 40, 5);
        let (c1, mut r1) = cell(2, 40, 1024);
        let (c2, mut r2) = cell(3, 40, 1024);
        let stop = Arc::new(AtomicBool::new(false));
        let pool = InspectionPool::start(vec![c0, c1, c2], 1, Arc::new(SystemClock), stop.clone()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (mut got1, mut got2) = (Vec::new(), Vec::new());
        while (got1.len() < 40 || got2.len() < 40) && std::time::Instant::now() < deadline {
            got1.extend(serials(&mut r1));
            got2.extend(serials(&mut r2));
            std::thread::sleep(Duration::from_millis(5));
        }
        let want: Vec<u64> = (1..=40).collect();
        assert_eq!(
            (got1.clone(), got2.clone()),
            (want.clone(), want.clone()),
            "every part of the other cells, in order"
        );
        // Cell 0 is held at its channel's 5; once read, the rest comes, in order.
        let mut got0 = Vec::new();
        while got0.len() < 40 && std::time::Instant::now() < deadline {
            got0.extend(serials(&mut r0));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got0, want);
        stop.store(true, Relaxed);
        pool.join();
    }

    #[test]
    fn a_stop_ends_the_workers_once_every_part_is_handed_over() {
        let (c0, mut r0) = cell(4, 30, 1024);
        let (c1, mut r1) = cell(5, 30, 1024);
        let stop = Arc::new(AtomicBool::new(true));
        InspectionPool::start(vec![c0, c1], 2, Arc::new(SystemClock), stop)
            .unwrap()
            .join();
        assert_eq!(serials(&mut r0).len(), 30);
        assert_eq!(serials(&mut r1).len(), 30);
    }

    #[test]
    fn the_pool_is_sized_by_the_cores_but_never_above_the_cells() {
        assert_eq!(pool_size(4, 2), 2);
        assert_eq!(pool_size(1, 64), 1);
        assert_eq!(pool_size(0, 1), 1);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(pool_size(0, 64), (cores - 1).max(1));
    }
}
