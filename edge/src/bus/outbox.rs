//! The durable outbox (redb): nothing of an at-least-once topic is lost to a
//! broker outage, an MES outage or a restart.
//!
//! A message is written here, in one transaction with its topic's next
//! sequence number, before anyone tries to deliver it. Each destination has a
//! lane ([`Lane::Bus`], [`Lane::Mes`]); a flusher reads its lane oldest
//! first, delivers, and acknowledges, which deletes the entry. Sequence
//! numbers are persisted, so a restarted node continues where it stopped and
//! never reuses one (broker deduplication relies on that).
//!
//! The outbox is bounded ([`crate::config::OutboxLimits`]): when full,
//! [`Outbox::append`] refuses with [`OutboxError::Full`], naming the limits,
//! and the caller keeps the message and retries; nothing is dropped silently.
//!
//! Faults of the disk are survived, not just reported:
//! - **Sequence high-water mark.** Beside the database, `outbox.seq` (an
//!   atomically replaced JSON file) holds, per topic, a sequence number no
//!   message has reached yet (reserved in blocks of [`SEQ_BLOCK`]). If the
//!   database is missing, empty or damaged at start, it is set aside and
//!   named, a new one is created, and every topic continues above its mark:
//!   sequence numbers are never reused.
//! - **Storage faults** (disk full, I/O errors): redb refuses every call
//!   after a failed write until it is re-opened, so the outbox re-opens it
//!   (at most every [`REOPEN_EVERY`]) until a call succeeds. The fault is
//!   logged once and its end once; [`Outbox::fault`] says it meanwhile (for
//!   `/healthz`). A delivery acknowledged while the disk cannot record it
//!   is remembered in memory and not offered again; it is recorded once the
//!   disk is back (a restart before that offers it again, with the same
//!   sequence and idempotency key).
//! - **Reserve.** A preallocated file (`outbox.reserve`) is released at the
//!   first "disk full", so the outbox can still store while everything else
//!   on the disk has run out; it is taken again once there is room (four
//!   times its size free, looked at most every [`RESERVE_RETAKE_EVERY`]).
//!   While it is released, or the disk has less free space than it, the
//!   disk counts as full ([`Outbox::disk`]): the outbox stores on, but
//!   `/healthz` says "degraded" until the space is back.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Outbox limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutboxLimits {
    /// Maximum pending entries.
    pub max_entries: u64,
    /// Maximum pending payload bytes.
    pub max_bytes: u64,
}

/// Sequence numbers reserved in the high-water file at a time.
pub const SEQ_BLOCK: i64 = 1024;
/// How often a failed database is re-opened.
pub const REOPEN_EVERY: Duration = Duration::from_millis(500);

type EntryValue<'a> = (&'a str, &'a str, i64, i64, &'a [u8]);
const ENTRIES: TableDefinition<(u8, u64), EntryValue> = TableDefinition::new("entries");
const DEAD: TableDefinition<(u8, u64), (EntryValue, &str)> = TableDefinition::new("dead_letters");
const SEQUENCES: TableDefinition<&str, i64> = TableDefinition::new("sequences");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A destination with its own queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The bus backend (Avro payload).
    Bus = 0,
    /// The MES HTTP endpoint (JSON payload).
    Mes = 1,
}

impl Lane {
    fn from_u8(v: u8) -> Lane {
        if v == 1 { Lane::Mes } else { Lane::Bus }
    }
    /// Name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Bus => "bus",
            Lane::Mes => "mes",
        }
    }
}

/// One stored message.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// Lane.
    pub lane: Lane,
    /// Position in the lane (increasing).
    pub id: u64,
    /// Topic name.
    pub topic: String,
    /// Key.
    pub key: String,
    /// Sequence within the topic.
    pub sequence: i64,
    /// When it was stored, ns.
    pub created_ns: i64,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Outbox failure.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OutboxError {
    /// The bound is reached.
    #[error(
        "outbox full: {entries} entries / {bytes} bytes pending (limits {max_entries} entries / {max_bytes} bytes); deliveries are failing, see the bus and MES status; raise [outbox] max_entries/max_mb if outages are longer"
    )]
    Full {
        /// Pending entries.
        entries: u64,
        /// Pending bytes.
        bytes: u64,
        /// Limit.
        max_entries: u64,
        /// Limit.
        max_bytes: u64,
    },
    /// The database failed.
    #[error("outbox database {path}: {detail}; check disk space and permissions of the state directory")]
    Storage {
        /// File.
        path: String,
        /// What redb said.
        detail: String,
    },
    /// The caller could not build the payload.
    #[error("cannot encode message for {topic}: {detail}")]
    Encode {
        /// Topic.
        topic: String,
        /// Why.
        detail: String,
    },
}

/// Sizes for status pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Pending on the bus lane.
    pub pending_bus: u64,
    /// Pending on the MES lane.
    pub pending_mes: u64,
    /// Pending payload bytes.
    pub bytes: u64,
    /// Entries moved to dead letters.
    pub dead_letters: u64,
}

/// The high-water file: per topic, a sequence no message has reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct HighWater {
    /// Identity of the database these marks go with.
    outbox_id: u64,
    /// Topic → reserved sequence.
    topics: BTreeMap<String, i64>,
}

/// What [`Outbox::open`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpenReport {
    /// The database of earlier runs was missing, empty or damaged: what
    /// happened, what was lost and what was done, for the log.
    pub lost: Option<String>,
}

/// A storage fault in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageFault {
    /// What failed, as the disk or redb said it.
    pub error: String,
    /// How long it has lasted.
    pub for_s: f64,
    /// The disk is full.
    pub disk_full: bool,
}

struct FaultState {
    since: Instant,
    error: String,
    last_reopen: Option<Instant>,
    /// The last call failed: re-open before the next.
    needs_reopen: bool,
    /// Writes have worked since (the fault ends after [`FAULT_CLEARS_AFTER`]).
    ok_since: Option<Instant>,
}

/// Writes must work this long before a storage fault is over (a nearly full
/// disk lets some writes through: one fault, not a flapping one).
pub const FAULT_CLEARS_AFTER: Duration = Duration::from_secs(2);

/// How often a released reserve is tried again.
pub const RESERVE_RETAKE_EVERY: Duration = Duration::from_secs(5);

/// The outbox's disk, for the health check.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskState {
    /// Free bytes on the file system of the state directory (`None`: unknown).
    pub free_bytes: Option<u64>,
    /// The reserve's configured size, bytes (0: none).
    pub reserve_bytes: u64,
    /// The reserve was released to a full disk and not taken back yet.
    pub reserve_released: bool,
}

impl DiskState {
    /// The disk is full: the reserve is released, or less than its size (at
    /// least 1 MiB) is free.
    pub fn is_full(&self) -> bool {
        self.reserve_released || self.free_bytes.is_some_and(|f| f < self.reserve_bytes.max(1 << 20))
    }

    /// One line for `/healthz`: what is full and what to do.
    pub fn describe(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let free = self
            .free_bytes
            .map_or("unknown".into(), |f| format!("{:.1} MiB", mib(f)));
        if self.reserve_released {
            format!(
                "disk full: {free} free in the state directory, the outbox stores into its released reserve of {:.1} MiB; \
                 free space (the reserve is taken back once {:.1} MiB are free)",
                mib(self.reserve_bytes),
                mib(4 * self.reserve_bytes)
            )
        } else {
            format!("disk full: {free} free in the state directory; free space before the outbox runs out")
        }
    }
}

/// The outbox.
pub struct Outbox {
    db: RwLock<Option<Database>>,
    path: PathBuf,
    hwm_path: PathBuf,
    reserve_path: PathBuf,
    reserve_bytes: Mutex<u64>,
    reserve_tried: Mutex<Option<Instant>>,
    limits: OutboxLimits,
    stats: Mutex<OutboxStats>,
    notify: tokio::sync::Notify,
    hwm: Mutex<HighWater>,
    fault: Mutex<Option<FaultState>>,
    /// Delivered, but the deletion is not recorded yet: (lane, id) → bytes.
    delivered: Mutex<HashMap<(u8, u64), u64>>,
    opened: OpenReport,
}

fn storage_err(path: &Path, e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Storage {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Open the tables, count what is pending, and read or set the database's
/// identity. Returns (stats, identity, was the database new).
fn init_db(db: &Database, path: &Path) -> Result<(OutboxStats, u64, bool), OutboxError> {
    let storage = |e: &dyn std::fmt::Display| storage_err(path, e);
    let mut stats = OutboxStats::default();
    let tx = db.begin_write().map_err(|e| storage(&e))?;
    let (id, fresh) = {
        let entries = tx.open_table(ENTRIES).map_err(|e| storage(&e))?;
        tx.open_table(SEQUENCES).map_err(|e| storage(&e))?;
        let mut meta = tx.open_table(META).map_err(|e| storage(&e))?;
        let dead = tx.open_table(DEAD).map_err(|e| storage(&e))?;
        for row in entries.iter().map_err(|e| storage(&e))? {
            let (k, v) = row.map_err(|e| storage(&e))?;
            let (lane, _) = k.value();
            match Lane::from_u8(lane) {
                Lane::Bus => stats.pending_bus += 1,
                Lane::Mes => stats.pending_mes += 1,
            }
            stats.bytes += v.value().4.len() as u64;
        }
        stats.dead_letters = dead.len().map_err(|e| storage(&e))?;
        let existing = meta.get("outbox_id").map_err(|e| storage(&e))?.map(|v| v.value());
        match existing {
            Some(id) => (id, false),
            None => {
                // A new database: give it an identity the high-water file remembers.
                let id = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1;
                meta.insert("outbox_id", id).map_err(|e| storage(&e))?;
                (id, true)
            }
        }
    };
    tx.commit().map_err(|e| storage(&e))?;
    Ok((stats, id, fresh))
}

fn read_hwm(path: &Path) -> Result<Option<HighWater>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn write_hwm(path: &Path, hwm: &HighWater) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(hwm).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(path, &text)
}

impl Outbox {
    /// Open or create the outbox file at `path` (and its high-water file
    /// beside it). A damaged, empty or missing database of earlier runs is
    /// set aside and replaced; [`Outbox::open_report`] says what was lost.
    pub fn open(path: &Path, limits: OutboxLimits) -> Result<Self, OutboxError> {
        let storage = |e: &dyn std::fmt::Display| storage_err(path, e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        }
        let hwm_path = path.with_extension("seq");
        let reserve_path = path.with_extension("reserve");
        let mut notes = Vec::new();
        let hwm = match read_hwm(&hwm_path) {
            Ok(h) => h,
            Err(why) => {
                let aside = crate::durable::set_aside(&hwm_path);
                notes.push(format!(
                    "sequence high-water file {} is damaged ({why}; set aside as {:?}): sequence numbers continue from the outbox only",
                    hwm_path.display(),
                    aside.ok()
                ));
                None
            }
        };
        let existed = std::fs::metadata(path).map(|m| m.len()).ok();
        let (db, (stats, id, fresh)) = match Database::create(path)
            .map_err(|e| storage(&e))
            .and_then(|db| init_db(&db, path).map(|r| (db, r)))
        {
            Ok(ok) => ok,
            Err(e) => {
                // Damaged beyond what redb repairs: keep it for inspection, start anew.
                let aside = crate::durable::set_aside(path)
                    .map_err(|e2| storage(&format!("{e}; and it cannot be set aside: {e2}")))?;
                notes.push(format!("{e}; the damaged file is kept as {}", aside.display()));
                let db = Database::create(path).map_err(|e| storage(&e))?;
                let r = init_db(&db, path)?;
                (db, r)
            }
        };
        let mut hwm_now = hwm.clone().unwrap_or_default();
        for n in notes.iter().filter(|n| n.starts_with("sequence high-water")) {
            tracing::error!(file = %hwm_path.display(), "{n}");
        }
        let set_aside: Vec<&String> = notes.iter().filter(|n| !n.starts_with("sequence high-water")).collect();
        let replaced = fresh && hwm.is_some() || hwm.as_ref().is_some_and(|h| h.outbox_id != id);
        let mut lost = None;
        if replaced || !set_aside.is_empty() {
            let how = match existed {
                _ if !set_aside.is_empty() => format!("damaged ({})", set_aside[0]),
                None => "missing".to_string(),
                Some(0) => "empty (0 bytes)".to_string(),
                Some(n) => format!("not the one of the earlier runs ({n} bytes, another identity)"),
            };
            lost = Some(format!(
                "state file {} was {how} at start: the messages that waited in it for the bus and the MES are lost \
                 (work orders of the closed loop are stored again from their journal in chains/); sequence numbers \
                 continue above the high-water mark in {}",
                path.display(),
                hwm_path.display()
            ));
        }
        let fresh = fresh || replaced;
        // Topics continue above their mark (a new database has no sequences).
        if !hwm_now.topics.is_empty() {
            let tx = db.begin_write().map_err(|e| storage(&e))?;
            {
                let mut seqs = tx.open_table(SEQUENCES).map_err(|e| storage(&e))?;
                for (topic, mark) in &hwm_now.topics {
                    let cur = seqs.get(topic.as_str()).map_err(|e| storage(&e))?.map(|v| v.value());
                    if cur.is_none_or(|c| c < *mark) && (fresh || hwm_now.outbox_id != id) {
                        seqs.insert(topic.as_str(), *mark).map_err(|e| storage(&e))?;
                    }
                }
            }
            tx.commit().map_err(|e| storage(&e))?;
        }
        if hwm_now.outbox_id != id || hwm.is_none() {
            hwm_now.outbox_id = id;
            write_hwm(&hwm_path, &hwm_now).map_err(|e| storage_err(&hwm_path, e))?;
        }
        Ok(Self {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            hwm_path,
            reserve_path,
            reserve_bytes: Mutex::new(0),
            reserve_tried: Mutex::new(None),
            limits,
            stats: Mutex::new(stats),
            notify: tokio::sync::Notify::new(),
            hwm: Mutex::new(hwm_now),
            fault: Mutex::new(None),
            delivered: Mutex::new(HashMap::new()),
            opened: OpenReport { lost },
        })
    }

    /// What the open found (a lost database of earlier runs).
    pub fn open_report(&self) -> &OpenReport {
        &self.opened
    }

    /// Keep `bytes` preallocated beside the database, released when the disk
    /// fills so the outbox is the last to run out. 0 turns it off.
    pub fn set_reserve(&self, bytes: u64) {
        *self.reserve_bytes.lock().expect("poisoned") = bytes;
        if bytes == 0 {
            let _ = std::fs::remove_file(&self.reserve_path);
        } else if let Err(e) = take_reserve(&self.reserve_path, bytes) {
            tracing::warn!(file = %self.reserve_path.display(), bytes, error = %e, "cannot preallocate the outbox's disk reserve; a full disk stops the outbox as soon as anything else");
        }
    }

    /// Free space and the reserve.
    pub fn disk(&self) -> DiskState {
        let reserve_bytes = *self.reserve_bytes.lock().expect("poisoned");
        DiskState {
            free_bytes: free_bytes(&self.path),
            reserve_bytes,
            reserve_released: reserve_bytes > 0 && !self.reserve_path.exists(),
        }
    }

    /// Take a released reserve back once four times its size is free (at
    /// most every [`RESERVE_RETAKE_EVERY`]).
    fn retake_reserve(&self) {
        let bytes = *self.reserve_bytes.lock().expect("poisoned");
        if bytes == 0 || self.reserve_path.exists() {
            return;
        }
        {
            let mut tried = self.reserve_tried.lock().expect("poisoned");
            if tried.is_some_and(|t| t.elapsed() < RESERVE_RETAKE_EVERY) {
                return;
            }
            *tried = Some(Instant::now());
        }
        if free_bytes(&self.path).is_some_and(|free| free >= 4 * bytes) {
            match take_reserve(&self.reserve_path, bytes) {
                Ok(()) => {
                    tracing::info!(file = %self.reserve_path.display(), bytes, "disk space is back: the outbox's reserve is taken again")
                }
                Err(e) => {
                    tracing::debug!(file = %self.reserve_path.display(), error = %e, "cannot take the outbox's reserve back yet")
                }
            }
        }
    }

    /// The storage fault in progress, if any.
    pub fn fault(&self) -> Option<StorageFault> {
        self.fault.lock().expect("poisoned").as_ref().map(|f| StorageFault {
            error: f.error.clone(),
            for_s: f.since.elapsed().as_secs_f64(),
            disk_full: crate::durable::is_disk_full(&f.error),
        })
    }

    fn storage(&self, e: impl std::fmt::Display) -> OutboxError {
        storage_err(&self.path, e)
    }

    /// Run `f` on the database; on a storage failure, note the fault (and
    /// re-open the database at the next call); on success, end the fault.
    fn with_db<T>(&self, write: bool, f: impl FnOnce(&Database) -> Result<T, OutboxError>) -> Result<T, OutboxError> {
        self.maybe_reopen();
        let closed = || self.storage("the database is closed after a storage fault and could not be re-opened yet");
        let res = if write {
            // Writers one at a time, and a database whose write failed is
            // closed before anyone else can use it: redb must be re-opened
            // after an I/O error, and a second writer on the failed instance
            // trips redb's own consistency assertions.
            let mut g = self.db.write().unwrap_or_else(PoisonError::into_inner);
            let res = g.as_ref().map_or_else(|| Err(closed()), |db| self.guarded(|| f(db)));
            if matches!(res, Err(OutboxError::Storage { .. })) {
                close_failed(g.take());
            }
            res
        } else {
            let g = self.db.read().unwrap_or_else(PoisonError::into_inner);
            g.as_ref().map_or_else(|| Err(closed()), |db| self.guarded(|| f(db)))
        };
        match &res {
            Err(OutboxError::Storage { detail, .. }) => self.note_fault(detail),
            Err(_) => {}
            // Only a write shows the disk takes writes again.
            Ok(_) if write => {
                self.end_fault();
                self.retake_reserve();
            }
            Ok(_) => {}
        }
        res
    }

    fn note_fault(&self, detail: &str) {
        let mut f = self.fault.lock().expect("poisoned");
        match f.as_mut() {
            Some(st) => {
                st.needs_reopen = true;
                st.ok_since = None;
                st.error = detail.to_string();
            }
            None => {
                let full = crate::durable::is_disk_full(detail);
                tracing::error!(path = %self.path.display(), error = %detail, disk_full = full,
                    "outbox storage failing: new messages are held by their producers, deliveries are not repeated; re-opening until the disk is back");
                *f = Some(FaultState {
                    since: Instant::now(),
                    error: detail.to_string(),
                    last_reopen: None,
                    needs_reopen: true,
                    ok_since: None,
                });
                drop(f);
                if full && std::fs::remove_file(&self.reserve_path).is_ok() {
                    tracing::warn!(file = %self.reserve_path.display(), "disk full: released the outbox's reserve so it can keep storing");
                    // Re-open at once into the freed space.
                    if let Some(st) = self.fault.lock().expect("poisoned").as_mut() {
                        st.last_reopen = None;
                    }
                }
            }
        }
    }

    fn end_fault(&self) {
        let ended = {
            let mut f = self.fault.lock().expect("poisoned");
            match f.as_mut() {
                None => None,
                Some(st) => match st.ok_since {
                    None => {
                        st.ok_since = Some(Instant::now());
                        None
                    }
                    Some(t) if t.elapsed() < FAULT_CLEARS_AFTER => None,
                    Some(_) => f.take(),
                },
            }
        };
        if let Some(f) = ended {
            tracing::info!(path = %self.path.display(), after_s = f.since.elapsed().as_secs_f64(), "outbox storage recovered");
            self.record_delivered();
        }
    }

    /// Run `f`, turning a panic of the database library (an assertion it
    /// trips after an I/O error) into a storage fault: the database is
    /// re-opened, and the node does not stop.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, OutboxError>) -> Result<T, OutboxError> {
        std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(self.storage(format!("the database library failed ({why})")))
        })
    }

    /// After a fault, drop the database and open it again (redb refuses
    /// every call after a failed write until then).
    fn maybe_reopen(&self) {
        {
            let mut f = self.fault.lock().expect("poisoned");
            let Some(st) = f.as_mut() else { return };
            if !st.needs_reopen || st.last_reopen.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return;
            }
            st.last_reopen = Some(Instant::now());
            st.needs_reopen = false;
        }
        let mut g = self.db.write().unwrap_or_else(PoisonError::into_inner);
        close_failed(g.take()); // close first: redb holds a lock on the file
        match Database::create(&self.path) {
            Ok(db) => *g = Some(db),
            Err(e) => {
                if let Some(st) = self.fault.lock().expect("poisoned").as_mut() {
                    st.error = format!("re-open failed: {e}");
                    st.needs_reopen = true;
                }
            }
        }
    }

    /// Deletions of delivered entries that the disk could not record.
    fn record_delivered(&self) {
        let pending: Vec<(u8, u64)> = self.delivered.lock().expect("poisoned").keys().copied().collect();
        if pending.is_empty() {
            return;
        }
        let res = (|| {
            let g = self.db.write().unwrap_or_else(PoisonError::into_inner);
            let db = g.as_ref().ok_or_else(|| self.storage("closed"))?;
            let tx = db.begin_write().map_err(|e| self.storage(e))?;
            {
                let mut t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
                for k in &pending {
                    t.remove(*k).map_err(|e| self.storage(e))?;
                }
            }
            tx.commit().map_err(|e| self.storage(e))
        })();
        if res.is_ok() {
            let mut d = self.delivered.lock().expect("poisoned");
            for k in &pending {
                d.remove(k);
            }
        }
    }

    /// Run `f` (a database call, which may wait for the disk) on the
    /// blocking pool, so async tasks never stall their runtime thread.
    pub async fn blocking<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&Outbox) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .expect("outbox call panicked")
    }

    /// Current sizes (entries delivered but not yet recorded as such are
    /// not counted as pending).
    pub fn stats(&self) -> OutboxStats {
        *self.stats.lock().expect("outbox stats poisoned")
    }

    /// Wait until something is appended.
    pub async fn appended(&self) {
        self.notify.notified().await
    }

    /// The last sequence number used for `topic` (0 if none).
    pub fn last_sequence(&self, topic: &str) -> Result<i64, OutboxError> {
        self.with_db(false, |db| {
            let tx = db.begin_read().map_err(|e| self.storage(e))?;
            let t = tx.open_table(SEQUENCES).map_err(|e| self.storage(e))?;
            Ok(t.get(topic)
                .map_err(|e| self.storage(e))?
                .map(|v| v.value())
                .unwrap_or(0))
        })
    }

    /// Does any lane still hold the message `sequence` of `topic`?
    pub fn holds(&self, topic: &str, sequence: i64) -> Result<bool, OutboxError> {
        let delivered = self.delivered.lock().expect("poisoned").clone();
        self.with_db(false, |db| {
            let tx = db.begin_read().map_err(|e| self.storage(e))?;
            let t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
            for row in t.iter().map_err(|e| self.storage(e))? {
                let (k, v) = row.map_err(|e| self.storage(e))?;
                let (tp, _, seq, _, _) = v.value();
                if tp == topic && seq == sequence && !delivered.contains_key(&k.value()) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Take the next sequence of `topic`, let `build` make the payload of
    /// each lane for it, and store everything in one transaction.
    pub fn append(
        &self,
        topic: &str,
        key: &str,
        now_ns: i64,
        build: impl FnOnce(i64) -> Result<Vec<(Lane, Vec<u8>)>, String>,
    ) -> Result<i64, OutboxError> {
        let current = self.stats();
        let pending = current.pending_bus + current.pending_mes;
        if pending >= self.limits.max_entries || current.bytes >= self.limits.max_bytes {
            return Err(OutboxError::Full {
                entries: pending,
                bytes: current.bytes,
                max_entries: self.limits.max_entries,
                max_bytes: self.limits.max_bytes,
            });
        }
        let (sequence, added) = self.with_db(true, |db| {
            let tx = db.begin_write().map_err(|e| self.storage(e))?;
            let (sequence, added) = {
                let mut seqs = tx.open_table(SEQUENCES).map_err(|e| self.storage(e))?;
                let mut meta = tx.open_table(META).map_err(|e| self.storage(e))?;
                let mut entries = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
                let sequence = seqs
                    .get(topic)
                    .map_err(|e| self.storage(e))?
                    .map(|v| v.value())
                    .unwrap_or(0)
                    + 1;
                let lanes = build(sequence).map_err(|detail| OutboxError::Encode {
                    topic: topic.into(),
                    detail,
                })?;
                let mut next_id = meta
                    .get("next_id")
                    .map_err(|e| self.storage(e))?
                    .map(|v| v.value())
                    .unwrap_or(1);
                let mut added = Vec::new();
                for (lane, payload) in &lanes {
                    entries
                        .insert(
                            (*lane as u8, next_id),
                            (topic, key, sequence, now_ns, payload.as_slice()),
                        )
                        .map_err(|e| self.storage(e))?;
                    added.push((*lane, payload.len() as u64));
                    next_id += 1;
                }
                meta.insert("next_id", next_id).map_err(|e| self.storage(e))?;
                seqs.insert(topic, sequence).map_err(|e| self.storage(e))?;
                (sequence, added)
            };
            // The mark moves ahead of the sequence before the sequence is committed.
            self.raise_mark(topic, sequence)?;
            tx.commit().map_err(|e| self.storage(e))?;
            Ok((sequence, added))
        })?;
        {
            let mut s = self.stats.lock().expect("outbox stats poisoned");
            for (lane, bytes) in added {
                match lane {
                    Lane::Bus => s.pending_bus += 1,
                    Lane::Mes => s.pending_mes += 1,
                }
                s.bytes += bytes;
            }
        }
        self.notify.notify_waiters();
        Ok(sequence)
    }

    fn raise_mark(&self, topic: &str, sequence: i64) -> Result<(), OutboxError> {
        let mut h = self.hwm.lock().expect("poisoned");
        if h.topics.get(topic).is_some_and(|m| *m >= sequence) {
            return Ok(());
        }
        let mut next = h.clone();
        next.topics.insert(topic.to_string(), sequence + SEQ_BLOCK);
        write_hwm(&self.hwm_path, &next).map_err(|e| storage_err(&self.hwm_path, e))?;
        *h = next;
        Ok(())
    }

    /// Up to `max` pending entries of `lane`, oldest first.
    pub fn pending(&self, lane: Lane, max: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.pending_filtered(lane, max, |_| false)
    }

    /// Like [`Outbox::pending`], passing over entries whose topic `skip`
    /// says to (topics that cannot be delivered now must not hold up others).
    ///
    /// While a storage fault lasts (already logged once and shown on
    /// `/healthz`), this offers nothing rather than an error per call:
    /// deliveries wait for the disk instead of repeating.
    pub fn pending_filtered(
        &self,
        lane: Lane,
        max: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        let delivered = self.delivered.lock().expect("poisoned").clone();
        let res = self.with_db(false, |db| {
            let tx = db.begin_read().map_err(|e| self.storage(e))?;
            let t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
            let l = lane as u8;
            let mut out = Vec::new();
            for row in t.range((l, 0)..=(l, u64::MAX)).map_err(|e| self.storage(e))? {
                if out.len() >= max {
                    break;
                }
                let (k, v) = row.map_err(|e| self.storage(e))?;
                let (topic, key, sequence, created_ns, payload) = v.value();
                if skip(topic) || delivered.contains_key(&k.value()) {
                    continue;
                }
                out.push(OutboxEntry {
                    lane,
                    id: k.value().1,
                    topic: topic.to_string(),
                    key: key.to_string(),
                    sequence,
                    created_ns,
                    payload: payload.to_vec(),
                });
            }
            Ok(out)
        });
        match res {
            Err(OutboxError::Storage { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Delivered: delete these entries. If the disk cannot record it now,
    /// the deletion is kept in memory (the entries are not offered again)
    /// and recorded once the disk is back.
    pub fn ack(&self, lane: Lane, ids: &[u64]) -> Result<(), OutboxError> {
        if ids.is_empty() {
            return Ok(());
        }
        let res = self.with_db(true, |db| {
            let tx = db.begin_write().map_err(|e| self.storage(e))?;
            let mut removed = Vec::new();
            {
                let mut t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
                for id in ids {
                    if let Some(v) = t.remove((lane as u8, *id)).map_err(|e| self.storage(e))? {
                        removed.push((*id, v.value().4.len() as u64));
                    }
                }
            }
            tx.commit().map_err(|e| self.storage(e))?;
            Ok(removed)
        });
        let removed = match res {
            Ok(r) => r,
            Err(OutboxError::Storage { .. }) => {
                // Remember the delivery; the payload sizes come from a read
                // that may fail too, so count what we know.
                let mut d = self.delivered.lock().expect("poisoned");
                let mut removed = Vec::new();
                for id in ids {
                    if d.insert((lane as u8, *id), 0).is_none() {
                        removed.push((*id, 0));
                    }
                }
                removed
            }
            Err(e) => return Err(e),
        };
        let mut s = self.stats.lock().expect("outbox stats poisoned");
        for (_, bytes) in &removed {
            match lane {
                Lane::Bus => s.pending_bus = s.pending_bus.saturating_sub(1),
                Lane::Mes => s.pending_mes = s.pending_mes.saturating_sub(1),
            }
            s.bytes = s.bytes.saturating_sub(*bytes);
        }
        Ok(())
    }

    /// The destination refused this entry for good: keep it aside with the
    /// reason (for an operator to inspect and replay), out of the lane.
    pub fn dead_letter(&self, entry: &OutboxEntry, reason: &str) -> Result<(), OutboxError> {
        self.with_db(true, |db| {
            let tx = db.begin_write().map_err(|e| self.storage(e))?;
            {
                let mut t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
                let mut d = tx.open_table(DEAD).map_err(|e| self.storage(e))?;
                t.remove((entry.lane as u8, entry.id)).map_err(|e| self.storage(e))?;
                let v = (
                    entry.topic.as_str(),
                    entry.key.as_str(),
                    entry.sequence,
                    entry.created_ns,
                    entry.payload.as_slice(),
                );
                d.insert((entry.lane as u8, entry.id), (v, reason))
                    .map_err(|e| self.storage(e))?;
            }
            tx.commit().map_err(|e| self.storage(e))
        })?;
        let mut s = self.stats.lock().expect("outbox stats poisoned");
        match entry.lane {
            Lane::Bus => s.pending_bus = s.pending_bus.saturating_sub(1),
            Lane::Mes => s.pending_mes = s.pending_mes.saturating_sub(1),
        }
        s.bytes = s.bytes.saturating_sub(entry.payload.len() as u64);
        s.dead_letters += 1;
        Ok(())
    }
}

/// Preallocate `bytes` at `path` (real blocks, not a sparse file).
fn take_reserve(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: the descriptor is open for writing for the length of the call.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, bytes as libc::off_t) };
    if rc != 0 {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    f.sync_all()
}

/// Close a database after a storage fault; a panic of the library while it
/// closes the failed instance is not the node's end.
fn close_failed(db: Option<Database>) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent()?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("triad-outbox-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("outbox.redb")
    }

    fn limits() -> OutboxLimits {
        OutboxLimits {
            max_entries: 1000,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn sequences_survive_a_restart_and_entries_stay_until_acked() {
        let path = tmp("restart");
        {
            let ob = Outbox::open(&path, limits()).unwrap();
            for i in 0..3u8 {
                let s = ob
                    .append("insp/c/result", "c", 10, |seq| {
                        Ok(vec![(Lane::Bus, vec![i, seq as u8])])
                    })
                    .unwrap();
                assert_eq!(s, i as i64 + 1);
            }
            let p = ob.pending(Lane::Bus, 10).unwrap();
            ob.ack(Lane::Bus, &[p[0].id]).unwrap();
        }
        let ob = Outbox::open(&path, limits()).unwrap();
        assert_eq!(ob.stats().pending_bus, 2);
        let p = ob.pending(Lane::Bus, 10).unwrap();
        assert_eq!(p.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(p[0].payload, vec![1, 2]);
        assert_eq!(
            ob.append("insp/c/result", "c", 11, |_| Ok(vec![(Lane::Bus, vec![])]))
                .unwrap(),
            4
        );
        assert_eq!(ob.last_sequence("insp/c/result").unwrap(), 4);
        assert_eq!(ob.last_sequence("other").unwrap(), 0);
    }

    #[test]
    fn lanes_are_independent_and_one_append_feeds_both() {
        let ob = Outbox::open(&tmp("lanes"), limits()).unwrap();
        ob.append("mes/l/workorder", "a", 0, |_| {
            Ok(vec![(Lane::Bus, vec![1]), (Lane::Mes, b"{}".to_vec())])
        })
        .unwrap();
        let bus = ob.pending(Lane::Bus, 10).unwrap();
        let mes = ob.pending(Lane::Mes, 10).unwrap();
        assert_eq!((bus.len(), mes.len()), (1, 1));
        assert_eq!(bus[0].sequence, mes[0].sequence);
        ob.ack(Lane::Bus, &[bus[0].id]).unwrap();
        assert_eq!(ob.pending(Lane::Mes, 10).unwrap().len(), 1);
        ob.dead_letter(&mes[0], "422 Unprocessable").unwrap();
        let s = ob.stats();
        assert_eq!((s.pending_bus, s.pending_mes, s.dead_letters, s.bytes), (0, 0, 1, 0));
    }

    #[test]
    fn a_full_outbox_refuses_with_the_limits_and_accepts_again_after_delivery() {
        let ob = Outbox::open(
            &tmp("full"),
            OutboxLimits {
                max_entries: 3,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
        for _ in 0..3 {
            ob.append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![0; 10])])).unwrap();
        }
        let err = ob
            .append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![0; 10])]))
            .unwrap_err();
        assert_eq!(
            err,
            OutboxError::Full {
                entries: 3,
                bytes: 30,
                max_entries: 3,
                max_bytes: 1 << 20
            }
        );
        assert!(err.to_string().contains("limits 3 entries"), "{err}");
        // A refused append does not consume a sequence number.
        assert_eq!(ob.last_sequence("t").unwrap(), 3);
        let p = ob.pending(Lane::Bus, 1).unwrap();
        ob.ack(Lane::Bus, &[p[0].id]).unwrap();
        assert_eq!(ob.append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![])])).unwrap(), 4);
    }

    #[test]
    fn a_lost_outbox_is_said_and_sequences_keep_growing() {
        let path = tmp("lost");
        let append = |ob: &Outbox| {
            ob.append("insp/c/result", "c", 0, |_| Ok(vec![(Lane::Bus, vec![1])]))
                .unwrap()
        };
        {
            let ob = Outbox::open(&path, limits()).unwrap();
            assert_eq!(ob.open_report().lost, None, "a first start loses nothing");
            for _ in 0..5 {
                append(&ob);
            }
        }
        // Power cut: the database truncated to 0 bytes.
        std::fs::File::create(&path).unwrap();
        let ob = Outbox::open(&path, limits()).unwrap();
        let lost = ob.open_report().lost.clone().expect("the loss is said");
        assert!(
            lost.contains("outbox.redb") && lost.contains("empty") && lost.contains("lost"),
            "{lost}"
        );
        let s = append(&ob);
        assert!(s > 5, "sequence numbers are never reused: got {s} after 5");
        drop(ob);
        // A healthy restart continues from the database, says nothing.
        let ob = Outbox::open(&path, limits()).unwrap();
        assert_eq!(ob.open_report().lost, None);
        assert_eq!(append(&ob), s + 1);
        drop(ob);
        // Garbage: set aside and replaced.
        std::fs::write(&path, vec![0xa5; 8192]).unwrap();
        let ob = Outbox::open(&path, limits()).unwrap();
        let lost = ob.open_report().lost.clone().expect("the damage is said");
        assert!(lost.contains("damaged"), "{lost}");
        assert!(append(&ob) > s + 1);
        drop(ob);
        // Deleted.
        std::fs::remove_file(&path).unwrap();
        let ob = Outbox::open(&path, limits()).unwrap();
        assert!(ob.open_report().lost.as_deref().is_some_and(|l| l.contains("missing")));
        assert!(append(&ob) > s + 1);
        let dir = path.parent().unwrap();
        assert!(
            std::fs::read_dir(dir).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("outbox.redb.damaged-")),
            "the damaged file is kept for inspection"
        );
    }

    #[test]
    fn a_panic_of_the_database_library_is_a_storage_fault_not_a_stop() {
        let path = tmp("panic");
        let ob = Outbox::open(&path, limits()).unwrap();
        // As redb's assertion did after an I/O error, inside a write.
        let r: Result<(), _> = ob.with_db(true, |_| panic!("assertion failed: self.get_order_free_mut(order)"));
        match r {
            Err(OutboxError::Storage { detail, .. }) => {
                assert!(detail.contains("database library failed"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        assert!(ob.fault().is_some());
        // The database is re-opened and takes writes again.
        std::thread::sleep(REOPEN_EVERY);
        ob.append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![1])])).unwrap();
        assert_eq!(ob.stats().pending_bus, 1);
    }

    #[test]
    fn a_released_reserve_counts_as_a_full_disk_until_it_is_taken_back() {
        let path = tmp("reserve");
        let ob = Outbox::open(&path, limits()).unwrap();
        ob.set_reserve(1 << 20);
        let reserve = path.with_extension("reserve");
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20);
        assert!(!ob.disk().is_full(), "{:?}", ob.disk());
        // Released to a full disk (as note_fault does).
        std::fs::remove_file(&reserve).unwrap();
        let d = ob.disk();
        assert!(d.reserve_released && d.is_full(), "{d:?}");
        assert!(d.describe().contains("released reserve of 1.0 MiB"), "{}", d.describe());
        // The next write finds room (this disk has far more than 4 MiB free)
        // and takes it back; the disk is no longer full.
        ob.append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![1])])).unwrap();
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20);
        assert!(!ob.disk().is_full(), "{:?}", ob.disk());
        // Less free space than the reserve is a full disk too.
        let d = DiskState {
            free_bytes: Some(512 << 10),
            reserve_bytes: 1 << 20,
            reserve_released: false,
        };
        assert!(d.is_full() && d.describe().contains("0.5 MiB free"), "{}", d.describe());
    }

    #[test]
    fn the_high_water_mark_is_reserved_in_blocks() {
        let path = tmp("hwm");
        let ob = Outbox::open(&path, limits()).unwrap();
        let writes = || {
            std::fs::metadata(path.with_extension("seq"))
                .unwrap()
                .modified()
                .unwrap()
        };
        ob.append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![])])).unwrap();
        let first = writes();
        for _ in 0..100 {
            ob.append("t", "k", 0, |_| Ok(vec![(Lane::Bus, vec![])])).unwrap();
        }
        assert_eq!(writes(), first, "the mark file is not rewritten for every message");
        let text = std::fs::read_to_string(path.with_extension("seq")).unwrap();
        assert!(text.contains(&format!("\"t\": {}", 1 + SEQ_BLOCK)), "{text}");
    }

    #[test]
    fn a_failed_build_stores_nothing() {
        let ob = Outbox::open(&tmp("build"), limits()).unwrap();
        let err = ob.append("t", "k", 0, |_| Err("bad value".into())).unwrap_err();
        assert!(matches!(err, OutboxError::Encode { .. }));
        assert_eq!(ob.last_sequence("t").unwrap(), 0);
        assert_eq!(ob.stats(), OutboxStats::default());
    }
}
