//! The audit trail of security decisions: every deploy, rollback,
//! automatic rollback, probation result, model loaded at start, and every
//! external control command, accepted or refused.
//!
//! Each decision is one JSON line appended to `<state_dir>/audit.jsonl`,
//! kept in memory for `/api/audit` (the last 500), and published on the bus
//! topic `audit/<node>/event` through the durable outbox. A record holds who
//! (`actor`: the token's issuer, a rule or `node:fuse`; `key_id`;
//! `token_id`; `origin`), what (`action`, `target`, bundle name, version,
//! digest, signer, versions before and after), when (`stamp_ns`) and why
//! (`code`, `reason`). Tokens and keys themselves are never recorded.
//!
//! # Bounds: what a hostile caller can make the trail cost
//!
//! - **Fields are truncated.** Every text a caller controls (target, origin,
//!   actor, ids, versions, reason) is cut to [`AuditLimits::max_field_bytes`]
//!   (the reason to [`AuditLimits::max_reason_bytes`]) with a note of how
//!   much was cut, before it is logged, kept, written or published.
//! - **Refusals of unauthenticated callers are aggregated.** A refusal whose
//!   caller has not proven who it is (no token, a token that does not verify
//!   or was used already, an unknown target or axis, a malformed or
//!   oversized body: see [`is_unauthenticated`]) is recorded in full the
//!   first time in an interval ([`AuditLimits::aggregate_ns`], 1 s) for its
//!   action, code and origin class (`http <ip>`, `bus <topic>`, …); the
//!   others of that interval are counted and written as one summary record
//!   whose `repeats` is their number. Such records are written by the
//!   writer thread with one fsync per batch: the caller never waits for the
//!   disk.
//! - **Every other decision is durable before the answer.** Accepted
//!   decisions and refusals of authenticated callers wait until their line
//!   is written and fsynced (by the same writer thread, in order).
//! - **The file rotates.** When `audit.jsonl` would pass
//!   [`AuditLimits::max_file_bytes`] it becomes `audit.jsonl.1` (`.1`
//!   becomes `.2`, …); [`AuditLimits::keep_files`] old files are kept, so
//!   the trail never takes more than about `(keep_files + 1) ×
//!   max_file_bytes` of the state directory.

use crate::bus::publisher::Publisher;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triad_schemas::{AuditEvent, AuditOutcome, Topic};

/// Records kept in memory for the API.
pub const RECENT: usize = 500;

/// One decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, ns since the epoch (node clock).
    pub stamp_ns: i64,
    /// Node id.
    pub node: String,
    /// Unique on this node.
    pub event_id: String,
    /// `deploy`, `rollback`, `auto_rollback`, `probation_passed`, `load_at_start`, `command`.
    pub action: String,
    /// `accepted` or `refused`.
    pub outcome: String,
    /// Cell, asset or axis.
    pub target: String,
    /// `ok` or the refusal code.
    pub code: String,
    /// Why, in words.
    pub reason: String,
    /// Who asked.
    pub actor: Option<String>,
    /// Key that signed the token.
    pub key_id: Option<String>,
    /// The token's `jti`.
    pub token_id: Option<String>,
    /// Where the request came from.
    pub origin: String,
    /// Bundle model name.
    pub bundle_name: Option<String>,
    /// Bundle version.
    pub bundle_version: Option<String>,
    /// Bundle digest.
    pub bundle_digest: Option<String>,
    /// Key that signed the bundle.
    pub bundle_signer: Option<String>,
    /// Version before.
    pub from_version: Option<String>,
    /// Version after.
    pub to_version: Option<String>,
    /// A summary of refusals counted instead of recorded one by one: how
    /// many (0 for a record of one decision).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditRecord {
    /// A record of `action` on `target`; fill in the rest with struct update.
    pub fn new(action: &str, target: &str, accepted: bool, code: &str, reason: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            target: target.into(),
            outcome: if accepted { "accepted" } else { "refused" }.into(),
            code: code.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    /// Was it accepted?
    pub fn accepted(&self) -> bool {
        self.outcome == "accepted"
    }

    /// How many decisions this record stands for: 1, or a summary's
    /// `repeats`.
    pub fn decisions(&self) -> u64 {
        if self.repeats == 0 { 1 } else { self.repeats }
    }

    /// The bus message (envelope filled by the publisher).
    pub fn to_event(&self, envelope: triad_schemas::Envelope) -> AuditEvent {
        AuditEvent {
            envelope,
            event_id: self.event_id.clone(),
            action: self.action.clone(),
            outcome: if self.accepted() {
                AuditOutcome::Accepted
            } else {
                AuditOutcome::Refused
            },
            target: self.target.clone(),
            code: self.code.clone(),
            reason: self.reason.clone(),
            actor: self.actor.clone(),
            key_id: self.key_id.clone(),
            token_id: self.token_id.clone(),
            origin: self.origin.clone(),
            bundle_name: self.bundle_name.clone(),
            bundle_version: self.bundle_version.clone(),
            bundle_digest: self.bundle_digest.clone(),
            bundle_signer: self.bundle_signer.clone(),
            from_version: self.from_version.clone(),
            to_version: self.to_version.clone(),
        }
    }

    /// Cut every field a caller controls to `limits`.
    pub fn bound(&mut self, limits: &AuditLimits) {
        let f = limits.max_field_bytes;
        for s in [
            &mut self.action,
            &mut self.outcome,
            &mut self.target,
            &mut self.code,
            &mut self.origin,
        ] {
            truncate(s, f);
        }
        for s in [
            &mut self.actor,
            &mut self.key_id,
            &mut self.token_id,
            &mut self.bundle_name,
            &mut self.bundle_version,
            &mut self.bundle_digest,
            &mut self.bundle_signer,
            &mut self.from_version,
            &mut self.to_version,
        ]
        .into_iter()
        .flatten()
        {
            truncate(s, f);
        }
        truncate(&mut self.reason, limits.max_reason_bytes);
    }
}

/// Cut `s` to at most `max` bytes (on a character boundary), saying how
/// many bytes were cut. Text a caller sends is bounded with this before it
/// is logged, kept or published.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let note = format!("…[{} bytes cut]", s.len());
    let mut end = max.saturating_sub(note.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("…[{cut} bytes cut]"));
}

/// The bounds of an audit trail (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditLimits {
    /// Rotate `audit.jsonl` before it passes this size.
    pub max_file_bytes: u64,
    /// Old files kept (`audit.jsonl.1` … `audit.jsonl.<keep_files>`).
    pub keep_files: usize,
    /// Bound of each text field but the reason, bytes.
    pub max_field_bytes: usize,
    /// Bound of the reason, bytes.
    pub max_reason_bytes: usize,
    /// Interval over which refusals of unauthenticated callers of one kind
    /// are counted into one summary record, ns.
    pub aggregate_ns: i64,
    /// Kinds (action, code, origin class) counted at once; further origins
    /// share one kind, `(other origins)`.
    pub max_kinds: usize,
}

impl Default for AuditLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 2 * 1024 * 1024,
            keep_files: 4,
            max_field_bytes: 256,
            max_reason_bytes: 1024,
            aggregate_ns: 1_000_000_000,
            max_kinds: 256,
        }
    }
}

/// Is `code` a refusal of a caller that has not proven who it is (so that a
/// flood of them is counted, not recorded one by one)? No token, a token
/// that fails verification or was used already, a target or axis that does
/// not exist, a body refused before its token was checked.
pub fn is_unauthenticated(code: &str) -> bool {
    code.starts_with("token_")
        || matches!(
            code,
            "command_unsigned"
                | "command_no_keys"
                | "command_unknown_axis"
                | "command_malformed"
                | "command_too_large"
                | "unknown_target"
                | "modbus_write_not_allowed"
        )
}

/// The class of an origin that refusals are counted by: the caller's
/// address without its port for HTTP (`http 10.0.0.9`), else the origin
/// without its last word (a request or command id).
pub fn origin_class(origin: &str) -> String {
    if let Some(peer) = origin.strip_prefix("http ") {
        let host = match peer.parse::<std::net::SocketAddr>() {
            Ok(a) => a.ip().to_string(),
            Err(_) => peer.to_string(),
        };
        return format!("http {host}");
    }
    match origin.trim().rsplit_once(' ') {
        Some((head, _)) => head.to_string(),
        None => origin.to_string(),
    }
}

/// What to do with one refusal of an unauthenticated caller.
#[derive(Debug, PartialEq)]
#[must_use]
pub struct Admission {
    /// Record this refusal in full (the first of its kind in an interval).
    pub record: bool,
    /// The summary of the kind's previous interval, to record first.
    pub summary: Option<AuditRecord>,
}

#[derive(Debug)]
struct Window {
    start_ns: i64,
    last_ns: i64,
    counted: u64,
    last: Option<AuditRecord>,
}

/// Counts refusals of unauthenticated callers per kind (action, code,
/// origin class) and interval. Sans-IO: it is given each record's stamp
/// and, to close intervals, `now`.
#[derive(Debug)]
pub struct RefusalCounter {
    interval_ns: i64,
    max_kinds: usize,
    windows: HashMap<(String, String, String), Window>,
}

impl RefusalCounter {
    /// Count over `interval_ns`, at most `max_kinds` kinds at once.
    pub fn new(interval_ns: i64, max_kinds: usize) -> Self {
        Self {
            interval_ns,
            max_kinds: max_kinds.max(2),
            windows: HashMap::new(),
        }
    }

    /// A refusal (already bounded) at `rec.stamp_ns`.
    pub fn handle_refusal(&mut self, rec: &AuditRecord) -> Admission {
        let now = rec.stamp_ns;
        let mut key = (rec.action.clone(), rec.code.clone(), origin_class(&rec.origin));
        // One slot stays free for the kinds that find the others taken.
        if !self.windows.contains_key(&key) && self.windows.len() + 1 >= self.max_kinds {
            key.2 = "(other origins)".into();
        }
        let interval = self.interval_ns;
        match self.windows.get_mut(&key) {
            Some(w) if now.saturating_sub(w.start_ns) < interval => {
                w.counted += 1;
                w.last_ns = now;
                w.last = Some(rec.clone());
                Admission {
                    record: false,
                    summary: None,
                }
            }
            Some(w) => {
                let summary = summary(&key, w);
                *w = Window {
                    start_ns: now,
                    last_ns: now,
                    counted: 0,
                    last: None,
                };
                Admission { record: true, summary }
            }
            None => {
                self.windows.insert(
                    key,
                    Window {
                        start_ns: now,
                        last_ns: now,
                        counted: 0,
                        last: None,
                    },
                );
                Admission {
                    record: true,
                    summary: None,
                }
            }
        }
    }

    /// Close the intervals that ended by `now` (all of them if `all`):
    /// their summaries, oldest first.
    pub fn poll(&mut self, now: i64, all: bool) -> Vec<AuditRecord> {
        let interval = self.interval_ns;
        let mut out = Vec::new();
        self.windows.retain(|key, w| {
            if all || now.saturating_sub(w.start_ns) >= interval {
                out.extend(summary(key, w));
                false
            } else {
                true
            }
        });
        out.sort_by_key(|r| r.stamp_ns);
        out
    }
}

fn summary(key: &(String, String, String), w: &Window) -> Option<AuditRecord> {
    let last = w.last.as_ref().filter(|_| w.counted > 0)?;
    let (action, code, class) = key;
    let secs = (w.last_ns - w.start_ns) as f64 / 1e9;
    Some(AuditRecord {
        stamp_ns: w.last_ns,
        origin: class.clone(),
        repeats: w.counted,
        ..AuditRecord::new(
            action,
            &last.target,
            false,
            code,
            format!(
                "{} more refusals ({code}) of {action} from {class} within {secs:.1} s after the one recorded, counted here instead of one record each; the last: {}",
                w.counted, last.reason
            ),
        )
    })
}

/// One line for the writer; `ack` is answered once it is fsynced.
struct Job {
    line: Vec<u8>,
    ack: Option<SyncSender<()>>,
}

struct Shared {
    node: String,
    limits: AuditLimits,
    recent: Mutex<VecDeque<AuditRecord>>,
    bus: Mutex<Option<tokio::sync::mpsc::UnboundedSender<AuditRecord>>>,
    seq: AtomicU64,
    counter: Mutex<(RefusalCounter, Option<(i64, Instant)>)>,
    /// Lines of refusals dropped because the writer was behind.
    dropped: AtomicU64,
}

impl Shared {
    /// Stamp, log, keep and publish `rec`; its JSON line.
    fn emit(&self, stamp_ns: i64, mut rec: AuditRecord) -> (AuditRecord, Vec<u8>) {
        rec.stamp_ns = stamp_ns;
        rec.node = self.node.clone();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        rec.event_id = format!("{}-{}-{n}", self.node, stamp_ns);
        let mut line = serde_json::to_vec(&rec).expect("audit record serialises");
        line.push(b'\n');
        if rec.accepted() {
            tracing::info!(action = %rec.action, target = %rec.target, code = %rec.code, actor = ?rec.actor, reason = %rec.reason, "audit");
        } else {
            tracing::warn!(action = %rec.action, target = %rec.target, code = %rec.code, actor = ?rec.actor, origin = %rec.origin, repeats = rec.repeats, reason = %rec.reason, "audit: refused");
        }
        {
            let mut r = self.recent.lock().expect("audit poisoned");
            r.push_back(rec.clone());
            if r.len() > RECENT {
                r.pop_front();
            }
        }
        if let Some(tx) = self.bus.lock().expect("audit poisoned").as_ref() {
            let _ = tx.send(rec.clone());
        }
        (rec, line)
    }

    /// Summaries of the intervals that ended (all if `all`).
    fn close_intervals(&self, all: bool) -> Vec<Vec<u8>> {
        let summaries = {
            let mut c = self.counter.lock().expect("audit poisoned");
            let now = c.1.map(|(stamp, at)| stamp + at.elapsed().as_nanos() as i64);
            match now {
                Some(now) => c.0.poll(now, all),
                None => Vec::new(),
            }
        };
        summaries.into_iter().map(|s| self.emit(s.stamp_ns, s).1).collect()
    }
}

/// Does the file's last byte (of `size`) fail to end a line?
fn ends_torn(file: &mut std::fs::File, size: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if size == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(size - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The audit trail of a node.
pub struct AuditLog {
    path: PathBuf,
    shared: Arc<Shared>,
    tx: Option<SyncSender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Lines the writer's queue holds before refusals of unauthenticated
/// callers are dropped (counted, and said in the trail).
const QUEUE: usize = 4096;

impl AuditLog {
    /// Open (append to) `path` with the default [`AuditLimits`]; the last
    /// records are read back for the API.
    pub fn open(path: &Path, node: &str) -> std::io::Result<Self> {
        Self::open_with(path, node, AuditLimits::default())
    }

    /// Open (append to) `path` with `limits`.
    pub fn open_with(path: &Path, node: &str, limits: AuditLimits) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut recent = VecDeque::new();
        for p in [rotated(path, 1), path.to_path_buf()] {
            if let Ok(text) = std::fs::read_to_string(&p) {
                for line in text.lines() {
                    if let Ok(r) = serde_json::from_str::<AuditRecord>(line) {
                        recent.push_back(r);
                        if recent.len() > RECENT {
                            recent.pop_front();
                        }
                    }
                }
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let mut size = file.metadata()?.len();
        if ends_torn(&mut file, size)? {
            // A power cut tore the last record: end its line, so the next
            // record is not glued to it (and lost with it) when read back.
            file.write_all(b"\n")?;
            file.sync_data()?;
            size += 1;
        }
        let shared = Arc::new(Shared {
            node: node.into(),
            limits,
            recent: Mutex::new(recent),
            bus: Mutex::new(None),
            seq: AtomicU64::new(0),
            counter: Mutex::new((RefusalCounter::new(limits.aggregate_ns, limits.max_kinds), None)),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let mut w = Writer {
            path: path.to_path_buf(),
            file,
            size,
            failing: false,
            shared: shared.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))?;
        Ok(Self {
            path: path.to_path_buf(),
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bounds.
    pub fn limits(&self) -> AuditLimits {
        self.shared.limits
    }

    /// Send every later record to `tx` (the bus publisher task).
    pub fn set_bus(&self, tx: tokio::sync::mpsc::UnboundedSender<AuditRecord>) {
        *self.shared.bus.lock().expect("audit poisoned") = Some(tx);
    }

    /// Record a decision at `stamp_ns`: its fields bounded, then file,
    /// memory, bus. An accepted decision or a refusal of an authenticated
    /// caller returns once its line is fsynced (blocking: call it off the
    /// async runtime); a refusal of an unauthenticated caller
    /// ([`is_unauthenticated`]) never waits and may be counted into a
    /// summary instead of recorded. A failure to write the file is logged
    /// loudly; the decision stands.
    pub fn record(&self, stamp_ns: i64, mut rec: AuditRecord) -> AuditRecord {
        rec.bound(&self.shared.limits);
        rec.stamp_ns = stamp_ns;
        if !rec.accepted() && is_unauthenticated(&rec.code) {
            return self.record_unauthenticated(rec);
        }
        let (rec, line) = self.shared.emit(stamp_ns, rec);
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        let sent = self.tx.as_ref().map(|tx| {
            tx.send(Job {
                line,
                ack: Some(ack_tx),
            })
        });
        if !matches!(sent, Some(Ok(()))) || ack_rx.recv().is_err() {
            tracing::error!(path = %self.path.display(), "audit record not written: the audit writer has stopped");
        }
        rec
    }

    fn record_unauthenticated(&self, rec: AuditRecord) -> AuditRecord {
        let stamp_ns = rec.stamp_ns;
        let adm = {
            let mut c = self.shared.counter.lock().expect("audit poisoned");
            c.1 = Some((stamp_ns, Instant::now()));
            c.0.handle_refusal(&rec)
        };
        let mut out = rec.clone();
        if let Some(s) = adm.summary {
            let (_, line) = self.shared.emit(s.stamp_ns, s);
            self.enqueue(line);
        }
        if adm.record {
            let (r, line) = self.shared.emit(stamp_ns, rec);
            self.enqueue(line);
            out = r;
        }
        out
    }

    /// Queue a line without waiting (dropped and counted if the writer is
    /// behind by [`QUEUE`] lines).
    fn enqueue(&self, line: Vec<u8>) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(Job { line, ack: None })
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last `n` records, oldest first.
    pub fn recent(&self, n: usize) -> Vec<AuditRecord> {
        let r = self.shared.recent.lock().expect("audit poisoned");
        r.iter().skip(r.len().saturating_sub(n)).cloned().collect()
    }
}

impl Drop for AuditLog {
    /// Write what is queued and the summaries of open intervals, then stop
    /// the writer.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// `<path>.<n>`: the `n`-th newest rotated file.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The thread that owns the file: writes batches, one fsync each, rotates.
struct Writer {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    failing: bool,
    shared: Arc<Shared>,
}

/// Bytes gathered into one write and fsync at most.
const BATCH_BYTES: usize = 256 * 1024;

impl Writer {
    fn run(&mut self, rx: Receiver<Job>) {
        let tick = Duration::from_nanos((self.shared.limits.aggregate_ns / 4).clamp(1_000_000, 250_000_000) as u64);
        loop {
            let mut jobs = Vec::new();
            let closing = match rx.recv_timeout(tick) {
                Ok(j) => {
                    jobs.push(j);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            let mut bytes: usize = jobs.iter().map(|j| j.line.len()).sum();
            while bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(j) => {
                        bytes += j.line.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let mut lines: Vec<Vec<u8>> = Vec::new();
            let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let rec = AuditRecord {
                    origin: "node".into(),
                    repeats: dropped,
                    ..AuditRecord::new(
                        "audit",
                        "audit.jsonl",
                        false,
                        "audit_behind",
                        format!(
                            "{dropped} records of refused unauthenticated requests were not written: the audit writer was behind"
                        ),
                    )
                };
                let stamp = self.shared.counter.lock().expect("audit poisoned").1.map_or(0, |c| c.0);
                lines.push(self.shared.emit(stamp, rec).1);
            }
            lines.extend(jobs.iter_mut().map(|j| std::mem::take(&mut j.line)));
            lines.extend(self.shared.close_intervals(closing));
            if !lines.is_empty() {
                self.write(&lines);
            }
            for j in jobs {
                if let Some(ack) = j.ack {
                    let _ = ack.send(());
                }
            }
            if closing {
                return;
            }
        }
    }

    fn write(&mut self, lines: &[Vec<u8>]) {
        let len: u64 = lines.iter().map(|l| l.len() as u64).sum();
        if self.size > 0
            && self.size + len > self.shared.limits.max_file_bytes
            && let Err(e) = self.rotate()
        {
            tracing::error!(path = %self.path.display(), error = %e, "audit file not rotated; appending to it");
        }
        let buf = lines.concat();
        let res = self.file.write_all(&buf).and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.size += len;
                if self.failing {
                    self.failing = false;
                    tracing::warn!(path = %self.path.display(), "audit records are written to the file again");
                }
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::error!(path = %self.path.display(), error = %e, "audit records not written to the file (they stay in memory and go to the bus); free space in the state directory");
                }
                // What was written in part is counted, so that rotation still bounds the file.
                self.size = self.file.metadata().map_or(self.size, |m| m.len());
            }
        }
    }

    /// `audit.jsonl` → `.1` → `.2` … keeping `keep_files`; a new empty file.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.shared.limits.keep_files;
        if keep == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            if let Some(dir) = self.path.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
        }
        self.size = 0;
        Ok(())
    }
}

/// Publish audit records on `topic` (at-least-once, through the outbox).
pub async fn publish_audit(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<AuditRecord>,
    publisher: std::sync::Arc<Publisher>,
    topic: Topic,
) {
    while let Some(rec) = rx.recv().await {
        let ev = rec.to_event(publisher.envelope(rec.stamp_ns));
        if let Err(e) = publisher.publish_durably(&topic, ev, false).await {
            tracing::error!(topic = %topic, error = %e, "audit event not stored for the bus; it is in the audit file");
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_to_the_file_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("triad-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let log = AuditLog::open(&path, "edge-01").unwrap();
            log.set_bus(tx);
            log.record(
                5,
                AuditRecord {
                    actor: Some("alice".into()),
                    ..AuditRecord::new("deploy", "cell_2245", false, "token_expired", "too late")
                },
            );
            log.record(6, AuditRecord::new("rollback", "cell_2245", true, "ok", "asked"));
        }
        assert_eq!(rx.try_recv().unwrap().code, "token_expired");
        let log = AuditLog::open(&path, "edge-01").unwrap();
        let r = log.recent(10);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].stamp_ns, r[0].outcome.as_str()), (5, "refused"));
        assert_eq!(r[1].action, "rollback");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_torn_by_a_power_cut_does_not_swallow_the_next() {
        let dir = std::env::temp_dir().join(format!("triad-audit-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, b"{\"stamp_ns\":1,\"node\":\"edge-01\",\"act").unwrap();
        {
            let log = AuditLog::open(&path, "edge-01").unwrap();
            log.record(7, AuditRecord::new("rollback", "cell_2245", true, "ok", "asked"));
        }
        let log = AuditLog::open(&path, "edge-01").unwrap();
        let r = log.recent(10);
        assert_eq!(r.len(), 1, "the record after the torn line is read back");
        assert_eq!((r[0].stamp_ns, r[0].action.as_str()), (7, "rollback"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn anon(stamp_ns: i64, origin: &str, target: &str) -> AuditRecord {
        AuditRecord {
            stamp_ns,
            origin: origin.into(),
            ..AuditRecord::new(
                "deploy",
                target,
                false,
                "token_missing",
                "a deploy needs a signed token",
            )
        }
    }

    #[test]
    fn refusals_of_one_kind_are_counted_per_interval() {
        let mut c = RefusalCounter::new(1_000, 8);
        let first = c.handle_refusal(&anon(0, "http 10.0.0.9:5000", "a"));
        assert_eq!(
            first,
            Admission {
                record: true,
                summary: None
            }
        );
        for i in 1..100 {
            let a = c.handle_refusal(&anon(i, &format!("http 10.0.0.9:{}", 5000 + i), "b"));
            assert!(!a.record && a.summary.is_none(), "{i}: {a:?}");
        }
        // Another address is another kind.
        assert!(c.handle_refusal(&anon(50, "http 10.0.0.10:1", "a")).record);
        // The interval ends: the next one is recorded, after the summary of 99.
        let a = c.handle_refusal(&anon(1_000, "http 10.0.0.9:7", "c"));
        assert!(a.record);
        let s = a.summary.expect("a summary");
        assert_eq!((s.repeats, s.stamp_ns, s.origin.as_str()), (99, 99, "http 10.0.0.9"));
        assert_eq!(
            (s.code.as_str(), s.target.as_str(), s.outcome.as_str()),
            ("token_missing", "b", "refused")
        );
        assert!(
            s.reason
                .starts_with("99 more refusals (token_missing) of deploy from http 10.0.0.9"),
            "{}",
            s.reason
        );
        // Polling closes the intervals that ended, and only those.
        assert!(!c.handle_refusal(&anon(1_001, "http 10.0.0.9:8", "d")).record);
        assert!(c.poll(1_999, false).is_empty());
        let s = c.poll(2_000, false);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].repeats, 1);
        assert!(c.poll(5_000, true).is_empty());
    }

    #[test]
    fn many_origins_share_one_kind_past_the_bound() {
        let mut c = RefusalCounter::new(1_000, 4);
        let recorded = (0..1000)
            .filter(|i| {
                c.handle_refusal(&anon(*i, &format!("http 10.0.{}.{}:80", i / 256, i % 256), "x"))
                    .record
            })
            .count();
        // Three kinds of their own, then one shared: 4 records in full.
        assert_eq!(recorded, 4);
        let s = c.poll(2_000, false);
        assert_eq!(s.iter().map(|r| r.repeats).sum::<u64>(), 996);
        assert!(s.iter().any(|r| r.origin == "(other origins)"));
    }

    #[test]
    fn fields_a_caller_controls_are_cut_to_their_bound() {
        let limits = AuditLimits::default();
        let mut r = AuditRecord {
            origin: "http 10.0.0.9:1".into(),
            actor: Some("é".repeat(10_000)),
            ..AuditRecord::new(
                "deploy",
                &"x".repeat(8_000),
                false,
                "token_missing",
                "y".repeat(100_000),
            )
        };
        r.bound(&limits);
        assert!(r.target.len() <= limits.max_field_bytes, "{}", r.target.len());
        assert!(
            r.target.starts_with("xxx") && r.target.ends_with(" bytes cut]"),
            "{}",
            r.target
        );
        assert!(r.actor.as_ref().unwrap().len() <= limits.max_field_bytes);
        assert!(r.reason.len() <= limits.max_reason_bytes);
        assert_eq!(r.origin, "http 10.0.0.9:1");
    }

    #[test]
    fn the_file_rotates_and_keeps_a_bounded_number_of_old_files() {
        let dir = std::env::temp_dir().join(format!("triad-audit-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let limits = AuditLimits {
            max_file_bytes: 4 * 1024,
            keep_files: 2,
            ..AuditLimits::default()
        };
        {
            let log = AuditLog::open_with(&path, "edge-01", limits).unwrap();
            for i in 0..200 {
                log.record(i, AuditRecord::new("rollback", "cell_2245", true, "ok", "asked"));
            }
        }
        let total: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(path.exists() && rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        assert!(total <= 3 * 4 * 1024 + 1024, "{total} bytes");
        // The newest records are read back.
        let log = AuditLog::open_with(&path, "edge-01", limits).unwrap();
        assert_eq!(log.recent(1)[0].stamp_ns, 199);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flood_of_anonymous_refusals_writes_a_few_records_that_count_it() {
        let dir = std::env::temp_dir().join(format!("triad-audit-flood-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        {
            let log = AuditLog::open(&path, "edge-01").unwrap();
            let t0 = 1_000_000_000_000;
            for i in 0..2_000 {
                log.record(
                    t0 + i * 100_000,
                    anon(0, &format!("http 127.0.0.1:{}", 1024 + i), &"x".repeat(8_000)),
                );
            }
            // A decision that must be durable still is, after the flood.
            log.record(
                t0 + 300_000_000,
                AuditRecord::new("rollback", "cell_2245", true, "ok", "asked"),
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
        let recs: Vec<AuditRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let refused: u64 = recs
            .iter()
            .filter(|r| r.code == "token_missing")
            .map(AuditRecord::decisions)
            .sum();
        assert_eq!(refused, 2_000, "{text}");
        assert!(recs.iter().any(|r| r.code == "ok"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
