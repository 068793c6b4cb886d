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

use crate::config::OutboxLimits;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

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

/// The outbox.
pub struct Outbox {
    db: Database,
    path: PathBuf,
    limits: OutboxLimits,
    stats: Mutex<OutboxStats>,
    notify: tokio::sync::Notify,
}

impl Outbox {
    /// Open or create the outbox file at `path`.
    pub fn open(path: &Path, limits: OutboxLimits) -> Result<Self, OutboxError> {
        let storage = |e: &dyn std::fmt::Display| OutboxError::Storage {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        }
        let db = Database::create(path).map_err(|e| storage(&e))?;
        let mut stats = OutboxStats::default();
        {
            let tx = db.begin_write().map_err(|e| storage(&e))?;
            {
                let entries = tx.open_table(ENTRIES).map_err(|e| storage(&e))?;
                tx.open_table(SEQUENCES).map_err(|e| storage(&e))?;
                tx.open_table(META).map_err(|e| storage(&e))?;
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
            }
            tx.commit().map_err(|e| storage(&e))?;
        }
        Ok(Self {
            db,
            path: path.to_path_buf(),
            limits,
            stats: Mutex::new(stats),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn storage(&self, e: impl std::fmt::Display) -> OutboxError {
        OutboxError::Storage {
            path: self.path.display().to_string(),
            detail: e.to_string(),
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

    /// Current sizes.
    pub fn stats(&self) -> OutboxStats {
        *self.stats.lock().expect("outbox stats poisoned")
    }

    /// Wait until something is appended.
    pub async fn appended(&self) {
        self.notify.notified().await
    }

    /// The last sequence number used for `topic` (0 if none).
    pub fn last_sequence(&self, topic: &str) -> Result<i64, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = tx.open_table(SEQUENCES).map_err(|e| self.storage(e))?;
        Ok(t.get(topic)
            .map_err(|e| self.storage(e))?
            .map(|v| v.value())
            .unwrap_or(0))
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
        let tx = self.db.begin_write().map_err(|e| self.storage(e))?;
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
        tx.commit().map_err(|e| self.storage(e))?;
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

    /// Up to `max` pending entries of `lane`, oldest first.
    pub fn pending(&self, lane: Lane, max: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.pending_filtered(lane, max, |_| false)
    }

    /// Like [`Outbox::pending`], passing over entries whose topic `skip`
    /// says to (topics that cannot be delivered now must not hold up others).
    pub fn pending_filtered(
        &self,
        lane: Lane,
        max: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
        let l = lane as u8;
        let mut out = Vec::new();
        for row in t.range((l, 0)..=(l, u64::MAX)).map_err(|e| self.storage(e))? {
            if out.len() >= max {
                break;
            }
            let (k, v) = row.map_err(|e| self.storage(e))?;
            let (topic, key, sequence, created_ns, payload) = v.value();
            if skip(topic) {
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
    }

    /// Delivered: delete these entries.
    pub fn ack(&self, lane: Lane, ids: &[u64]) -> Result<(), OutboxError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.storage(e))?;
        let mut removed = (0u64, 0u64);
        {
            let mut t = tx.open_table(ENTRIES).map_err(|e| self.storage(e))?;
            for id in ids {
                if let Some(v) = t.remove((lane as u8, *id)).map_err(|e| self.storage(e))? {
                    removed.0 += 1;
                    removed.1 += v.value().4.len() as u64;
                }
            }
        }
        tx.commit().map_err(|e| self.storage(e))?;
        let mut s = self.stats.lock().expect("outbox stats poisoned");
        match lane {
            Lane::Bus => s.pending_bus -= removed.0,
            Lane::Mes => s.pending_mes -= removed.0,
        }
        s.bytes -= removed.1;
        Ok(())
    }

    /// The destination refused this entry for good: keep it aside with the
    /// reason (for an operator to inspect and replay), out of the lane.
    pub fn dead_letter(&self, entry: &OutboxEntry, reason: &str) -> Result<(), OutboxError> {
        let tx = self.db.begin_write().map_err(|e| self.storage(e))?;
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
        tx.commit().map_err(|e| self.storage(e))?;
        let mut s = self.stats.lock().expect("outbox stats poisoned");
        match entry.lane {
            Lane::Bus => s.pending_bus -= 1,
            Lane::Mes => s.pending_mes -= 1,
        }
        s.bytes -= entry.payload.len() as u64;
        s.dead_letters += 1;
        Ok(())
    }
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
    fn a_failed_build_stores_nothing() {
        let ob = Outbox::open(&tmp("build"), limits()).unwrap();
        let err = ob.append("t", "k", 0, |_| Err("bad value".into())).unwrap_err();
        assert!(matches!(err, OutboxError::Encode { .. }));
        assert_eq!(ob.last_sequence("t").unwrap(), 0);
        assert_eq!(ob.stats(), OutboxStats::default());
    }
}
