//! Replay protection: every token id (`jti`) is accepted once.
//!
//! Ids are remembered per signing key (its fingerprint), with the token's
//! expiry, so that two issuers choosing the same id do not collide. An entry
//! is forgotten once its token has expired (plus the clock skew): such a
//! token is refused by its expiry anyway, and the store stays small (tokens
//! live at most `security.max_token_lifetime_s`).
//!
//! [`ReplayGuard`] is the interface the sans-IO checks call, with time as an
//! argument; [`MemoryReplay`] is for tests and tools, [`RedbReplay`] the
//! node's durable store (`<state_dir>/replay.redb`, fsync per id), which
//! survives restarts.
//!
//! A store of earlier runs found missing, empty or damaged at start is said
//! (file, what was lost, what to do) and replaced by a new one, never a
//! reason not to start: [`RedbReplay::lost`].

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use thiserror::Error;

/// Why an id is refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ReplayRefusal {
    /// Seen before.
    #[error(
        "token id {jti:?} was already used at {first_seen_s} (s since the epoch): every token works once; ask for a new one"
    )]
    Seen {
        /// The id.
        jti: String,
        /// When it was first accepted, s.
        first_seen_s: i64,
    },
    /// The store failed; the token is refused rather than risk a replay.
    #[error("replay store failed ({detail}); the token is refused to be safe: check the disk of the state directory")]
    Store {
        /// What failed.
        detail: String,
    },
}

/// Remembers token ids.
pub trait ReplayGuard: Send {
    /// Refuse `jti` of signer `signer` if seen; otherwise remember it until
    /// `exp_s + forget_after_s`. `now_s` is the node's time.
    fn check_and_remember(
        &mut self,
        signer: &str,
        jti: &str,
        exp_s: i64,
        forget_after_s: i64,
        now_s: i64,
    ) -> Result<(), ReplayRefusal>;
}

fn key(signer: &str, jti: &str) -> String {
    format!("{signer}\u{1f}{jti}")
}

/// In-memory store (lost at exit).
#[derive(Debug, Default)]
pub struct MemoryReplay {
    seen: HashMap<String, (i64, i64)>,
}

impl ReplayGuard for MemoryReplay {
    fn check_and_remember(
        &mut self,
        signer: &str,
        jti: &str,
        exp_s: i64,
        forget_after_s: i64,
        now_s: i64,
    ) -> Result<(), ReplayRefusal> {
        self.seen.retain(|_, (forget, _)| *forget > now_s);
        let k = key(signer, jti);
        if let Some((_, first)) = self.seen.get(&k) {
            return Err(ReplayRefusal::Seen {
                jti: jti.into(),
                first_seen_s: *first,
            });
        }
        self.seen.insert(k, (exp_s.saturating_add(forget_after_s), now_s));
        Ok(())
    }
}

/// `signer␟jti` → (forget at, first seen), seconds.
const SEEN: TableDefinition<&str, (i64, i64)> = TableDefinition::new("seen_token_ids");

/// The durable store.
pub struct RedbReplay {
    db: Database,
    last_prune_s: i64,
    lost: Option<String>,
}

impl std::fmt::Debug for RedbReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbReplay").finish_non_exhaustive()
    }
}

impl RedbReplay {
    /// Open or create the store at `path`. A damaged file is set aside and
    /// replaced; a store of earlier runs found missing or empty is said.
    pub fn open(path: &Path) -> Result<Self, ReplayRefusal> {
        let store = |e: &dyn std::fmt::Display| ReplayRefusal::Store {
            detail: format!("{}: {e}", path.display()),
        };
        let init = |db: &Database| -> Result<(), ReplayRefusal> {
            let tx = db.begin_write().map_err(|e| store(&e))?;
            tx.open_table(SEEN).map_err(|e| store(&e))?;
            tx.commit().map_err(|e| store(&e))
        };
        let found = crate::durable::Found::check(path);
        let mut how = (found != crate::durable::Found::Fine).then(|| found.describe().to_string());
        let db = match Database::create(path)
            .map_err(|e| store(&e))
            .and_then(|db| init(&db).map(|_| db))
        {
            Ok(db) => db,
            Err(e) => {
                let aside =
                    crate::durable::set_aside(path).map_err(|e2| store(&format!("{e}; cannot set it aside: {e2}")))?;
                how = Some(format!("damaged ({e}; kept as {})", aside.display()));
                let db = Database::create(path).map_err(|e| store(&e))?;
                init(&db)?;
                db
            }
        };
        let lost = how.map(|how| {
            format!(
                "state file {} was {how} at start: the ids of tokens used before are forgotten, so a token used before \
                 this start and not yet expired (at most security.max_token_lifetime_s) could be used once more; if \
                 that matters, rotate the signing keys (revoke the old key in the keyring)",
                path.display()
            )
        });
        if let Some(l) = &lost {
            tracing::error!("{l}");
        }
        crate::durable::mark_present(path).map_err(|e| store(&e))?;
        Ok(Self {
            db,
            last_prune_s: 0,
            lost,
        })
    }

    /// What was lost at start, if the store of earlier runs was damaged.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.db
            .begin_read()
            .ok()
            .and_then(|tx| tx.open_table(SEEN).ok())
            .and_then(|t| t.len().ok())
            .unwrap_or(0) as usize
    }

    /// No id remembered?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayGuard for RedbReplay {
    fn check_and_remember(
        &mut self,
        signer: &str,
        jti: &str,
        exp_s: i64,
        forget_after_s: i64,
        now_s: i64,
    ) -> Result<(), ReplayRefusal> {
        let err = |e: &dyn std::fmt::Display| ReplayRefusal::Store { detail: e.to_string() };
        let k = key(signer, jti);
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(SEEN).map_err(|e| err(&e))?;
            if let Some(v) = t.get(k.as_str()).map_err(|e| err(&e))? {
                let (forget, first) = v.value();
                if forget > now_s {
                    return Err(ReplayRefusal::Seen {
                        jti: jti.into(),
                        first_seen_s: first,
                    });
                }
            }
            t.insert(k.as_str(), (exp_s.saturating_add(forget_after_s), now_s))
                .map_err(|e| err(&e))?;
            // Forget expired ids at most once a minute.
            if now_s - self.last_prune_s >= 60 {
                t.retain(|_, (forget, _)| forget > now_s).map_err(|e| err(&e))?;
                self.last_prune_s = now_s;
            }
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(g: &mut dyn ReplayGuard) {
        g.check_and_remember("k1", "a", 100, 60, 50).unwrap();
        assert!(matches!(
            g.check_and_remember("k1", "a", 100, 60, 51),
            Err(ReplayRefusal::Seen { first_seen_s: 50, .. })
        ));
        // Same id from another signer is another token.
        g.check_and_remember("k2", "a", 100, 60, 52).unwrap();
        // Forgotten after expiry + skew.
        g.check_and_remember("k1", "a", 300, 60, 161).unwrap();
    }

    #[test]
    fn memory_store_refuses_twice() {
        exercise(&mut MemoryReplay::default());
    }

    #[test]
    fn redb_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("triad-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replay.redb");
        {
            let mut s = RedbReplay::open(&path).unwrap();
            exercise(&mut s);
        }
        let mut s = RedbReplay::open(&path).unwrap();
        assert!(matches!(
            s.check_and_remember("k1", "a", 300, 60, 200),
            Err(ReplayRefusal::Seen { first_seen_s: 161, .. })
        ));
        assert!(!s.is_empty());
        assert!(s.lost().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_empty_or_missing_store_is_replaced_and_said() {
        let dir = std::env::temp_dir().join(format!("triad-replay-damage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replay.redb");
        drop(RedbReplay::open(&path).unwrap());
        // Power cut: garbage in the file.
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let s = RedbReplay::open(&path).unwrap();
        let lost = s.lost().expect("damage is said");
        assert!(
            lost.contains("replay.redb") && lost.contains("damaged") && lost.contains("rotate"),
            "{lost}"
        );
        drop(s);
        assert!(
            std::fs::read_dir(&dir).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("replay.redb.damaged-")),
            "the damaged file is kept"
        );
        // Truncated to 0 bytes.
        std::fs::File::create(&path).unwrap();
        let s = RedbReplay::open(&path).unwrap();
        assert!(s.lost().unwrap().contains("empty"), "{:?}", s.lost());
        drop(s);
        // Deleted.
        std::fs::remove_file(&path).unwrap();
        let mut s = RedbReplay::open(&path).unwrap();
        assert!(s.lost().unwrap().contains("missing"), "{:?}", s.lost());
        s.check_and_remember("k", "a", 100, 60, 50).unwrap();
        drop(s);
        assert!(
            RedbReplay::open(&path).unwrap().lost().is_none(),
            "a healthy store says nothing"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
