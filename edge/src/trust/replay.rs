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
//! **A lost store.** A store of earlier runs found missing, empty or damaged
//! at start is said (file, what was lost) and replaced by a new one, never a
//! reason not to start: [`RedbReplay::lost`]. The ids it held are gone, so
//! the new store records a [`Fence`] (durably, in the same transaction that
//! makes its tables): until every token that could have been used before the
//! loss has expired, such tokens are refused ([`ReplayRefusal::Fenced`]).
//! With `L` the node's time at that start, `skew` = `security.clock_skew_s`
//! and `max` = `security.max_token_lifetime_s`, a token is refused while
//! `now < L + max + 2·skew` if both its `nbf` and its `iat` (when it has
//! one) are before `L + skew`: only such a token can have been accepted
//! before `L` (a token is accepted from `nbf − skew` on, and an honest
//! issuer's `iat` is at most `skew` ahead of the node). Every such token has
//! `exp ≤ nbf + max < L + skew + max` and is refused by its expiry from
//! `exp + skew` on, which is why the fence can end then; after it the store
//! works as before. A restart during the fence keeps it (it is in the file).

use super::token::{TokenPolicy, VerifiedToken};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use std::collections::HashMap;
use std::path::Path;
use thiserror::Error;

/// `s` (seconds since the epoch) as `Tue, 01 Dec 2026 03:40:11 GMT (1796096411)`.
fn when(s: i64) -> String {
    let t = u64::try_from(s)
        .ok()
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)));
    match t {
        Some(t) => format!("{} ({s})", httpdate::fmt_http_date(t)),
        None => format!("{s} s since the epoch"),
    }
}

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
    /// The store of earlier runs was lost, and this token could have been
    /// used before that (see the module doc).
    #[error(
        "token id {jti:?} refused: the replay store was lost at {}, so the ids used before are unknown; tokens issued or valid before {} (iat and nbf) are refused until {}: issue a new token (issued at or after {})",
        when(*lost_at_s),
        when(*before_s),
        when(*until_s),
        when(*before_s)
    )]
    Fenced {
        /// The id.
        jti: String,
        /// Node time when the loss was found (the start), s.
        lost_at_s: i64,
        /// Tokens whose `nbf` and `iat` are both before this are refused, s.
        before_s: i64,
        /// The fence ends here, s.
        until_s: i64,
    },
}

impl ReplayRefusal {
    /// Stable snake_case code for APIs, metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            ReplayRefusal::Seen { .. } => "token_replayed",
            ReplayRefusal::Store { .. } => "replay_store",
            ReplayRefusal::Fenced { .. } => "token_before_replay_loss",
        }
    }
}

/// What the replay check needs of a verified token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenId<'a> {
    /// Fingerprint of the signing key.
    pub signer: &'a str,
    /// `jti`.
    pub jti: &'a str,
    /// `nbf`, s.
    pub nbf_s: i64,
    /// `exp`, s.
    pub exp_s: i64,
    /// `iat`, s, if the token has one.
    pub iat_s: Option<i64>,
}

impl<'a> TokenId<'a> {
    /// The id and times of `tok`.
    pub fn of(tok: &'a VerifiedToken) -> Self {
        Self {
            signer: &tok.key_fingerprint,
            jti: &tok.claims.jti,
            nbf_s: tok.claims.nbf,
            exp_s: tok.claims.exp,
            iat_s: tok.claims.iat,
        }
    }
}

/// Refusal of the tokens that could have been used before a lost store
/// (see the module doc for the rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// Node time when the loss was found, s.
    pub lost_at_s: i64,
    /// `lost_at_s + clock_skew_s`: a token whose `nbf` and `iat` are both
    /// before this could have been accepted before the loss.
    pub before_s: i64,
    /// `lost_at_s + max_lifetime_s + 2 · clock_skew_s`: every such token is
    /// expired by then.
    pub until_s: i64,
}

impl Fence {
    /// The fence for a loss found at `lost_at_s` under `policy`.
    pub fn new(lost_at_s: i64, policy: TokenPolicy) -> Self {
        let skew = policy.clock_skew_s.max(0);
        Self {
            lost_at_s,
            before_s: lost_at_s.saturating_add(skew),
            until_s: lost_at_s
                .saturating_add(policy.max_lifetime_s.max(0))
                .saturating_add(skew.saturating_mul(2)),
        }
    }

    /// Still refusing at `now_s`?
    pub fn active(&self, now_s: i64) -> bool {
        now_s < self.until_s
    }

    /// Refuse `token` at `now_s` if it could have been used before the loss.
    pub fn check(&self, token: &TokenId<'_>, now_s: i64) -> Result<(), ReplayRefusal> {
        let before = |t: i64| t < self.before_s;
        if self.active(now_s) && before(token.nbf_s) && token.iat_s.is_none_or(before) {
            return Err(ReplayRefusal::Fenced {
                jti: token.jti.into(),
                lost_at_s: self.lost_at_s,
                before_s: self.before_s,
                until_s: self.until_s,
            });
        }
        Ok(())
    }
}

/// Remembers token ids.
pub trait ReplayGuard: Send {
    /// Refuse `token` if its id was seen from its signer (or if it could
    /// have been used before a lost store, see [`Fence`]); otherwise
    /// remember the id until `exp_s + forget_after_s`. `now_s` is the node's
    /// time.
    fn check_and_remember(&mut self, token: TokenId<'_>, forget_after_s: i64, now_s: i64) -> Result<(), ReplayRefusal>;
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
    fn check_and_remember(&mut self, token: TokenId<'_>, forget_after_s: i64, now_s: i64) -> Result<(), ReplayRefusal> {
        self.seen.retain(|_, (forget, _)| *forget > now_s);
        let k = key(token.signer, token.jti);
        if let Some((_, first)) = self.seen.get(&k) {
            return Err(ReplayRefusal::Seen {
                jti: token.jti.into(),
                first_seen_s: *first,
            });
        }
        self.seen.insert(k, (token.exp_s.saturating_add(forget_after_s), now_s));
        Ok(())
    }
}

/// `signer␟jti` → (forget at, first seen), seconds.
const SEEN: TableDefinition<&str, (i64, i64)> = TableDefinition::new("seen_token_ids");
/// [`FENCE_KEY`] → the [`Fence`] (lost at, before, until), seconds.
const META: TableDefinition<&str, (i64, i64, i64)> = TableDefinition::new("replay_meta");
const FENCE_KEY: &str = "fence";

/// The durable store.
pub struct RedbReplay {
    db: Database,
    last_prune_s: i64,
    lost: Option<String>,
    fence: Option<Fence>,
}

impl std::fmt::Debug for RedbReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbReplay")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl RedbReplay {
    /// Open or create the store at `path` at node time `now_s`. A damaged
    /// file is set aside and replaced; a store of earlier runs found
    /// missing or empty is said. A new store that replaces a lost one
    /// records a [`Fence`] under `policy` (the node's `[security]` token
    /// limits).
    pub fn open(path: &Path, policy: TokenPolicy, now_s: i64) -> Result<Self, ReplayRefusal> {
        let store = |e: &dyn std::fmt::Display| ReplayRefusal::Store {
            detail: format!("{}: {e}", path.display()),
        };
        // Make the tables and, for a lost store, the fence, in one
        // transaction: a power cut before its commit leaves a file without
        // tables, which the next start takes as lost again.
        let init = |db: &Database, fence: Option<Fence>| -> Result<(), ReplayRefusal> {
            let tx = db.begin_write().map_err(|e| store(&e))?;
            tx.open_table(SEEN).map_err(|e| store(&e))?;
            {
                let mut meta = tx.open_table(META).map_err(|e| store(&e))?;
                if let Some(f) = fence {
                    meta.insert(FENCE_KEY, (f.lost_at_s, f.before_s, f.until_s))
                        .map_err(|e| store(&e))?;
                }
            }
            tx.commit().map_err(|e| store(&e))
        };
        let found = crate::durable::Found::check(path);
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let mut how = (found != crate::durable::Found::Fine).then(|| found.describe().to_string());
        let opened = Database::create(path).map_err(|e| store(&e)).and_then(|db| {
            // A file of an earlier run without tables was cut before its
            // first commit, e.g. while it replaced a lost store: a fence it
            // should have recorded is unknown.
            let tables = db
                .begin_read()
                .map_err(|e| store(&e))?
                .open_table(SEEN)
                .map(|_| true)
                .or_else(|e| match e {
                    TableError::TableDoesNotExist(_) => Ok(false),
                    e => Err(store(&e)),
                })?;
            if !tables && existed && how.is_none() {
                how = Some("without its tables (cut before its first commit)".into());
            }
            Ok(db)
        });
        let db = match opened {
            Ok(db) => db,
            Err(e) => {
                let aside =
                    crate::durable::set_aside(path).map_err(|e2| store(&format!("{e}; cannot set it aside: {e2}")))?;
                how = Some(format!("damaged ({e}; kept as {})", aside.display()));
                Database::create(path).map_err(|e| store(&e))?
            }
        };
        let new_fence = how.is_some().then(|| Fence::new(now_s, policy));
        init(&db, new_fence)?;
        let fence = match new_fence {
            Some(f) => Some(f),
            None => db
                .begin_read()
                .map_err(|e| store(&e))?
                .open_table(META)
                .map_err(|e| store(&e))?
                .get(FENCE_KEY)
                .map_err(|e| store(&e))?
                .map(|v| {
                    let (lost_at_s, before_s, until_s) = v.value();
                    Fence {
                        lost_at_s,
                        before_s,
                        until_s,
                    }
                }),
        };
        let lost = how.map(|how| {
            format!(
                "state file {} was {how} at start: the ids of tokens used before are forgotten, so every token issued or \
                 valid before {} (its iat and nbf) could have been used already and is refused until {} \
                 (security.max_token_lifetime_s + 2 x security.clock_skew_s from now, when all such tokens have \
                 expired); issue new tokens for deploys and commands",
                path.display(),
                when(new_fence.map_or(now_s, |f| f.before_s)),
                when(new_fence.map_or(now_s, |f| f.until_s)),
            )
        });
        if let Some(l) = &lost {
            tracing::error!("{l}");
        } else if let Some(f) = fence.filter(|f| f.active(now_s)) {
            tracing::warn!(
                "the replay store {} was lost at {}: tokens issued or valid before {} are refused until {}",
                path.display(),
                when(f.lost_at_s),
                when(f.before_s),
                when(f.until_s)
            );
        }
        crate::durable::mark_present(path).map_err(|e| store(&e))?;
        Ok(Self {
            db,
            last_prune_s: 0,
            lost,
            fence,
        })
    }

    /// What was lost at start, if the store of earlier runs was damaged.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// The fence of the last loss, if a store was ever lost (it may have
    /// ended: [`Fence::active`]).
    pub fn fence(&self) -> Option<Fence> {
        self.fence
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
    fn check_and_remember(&mut self, token: TokenId<'_>, forget_after_s: i64, now_s: i64) -> Result<(), ReplayRefusal> {
        if let Some(f) = &self.fence {
            f.check(&token, now_s)?;
        }
        let err = |e: &dyn std::fmt::Display| ReplayRefusal::Store { detail: e.to_string() };
        let k = key(token.signer, token.jti);
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(SEEN).map_err(|e| err(&e))?;
            if let Some(v) = t.get(k.as_str()).map_err(|e| err(&e))? {
                let (forget, first) = v.value();
                if forget > now_s {
                    return Err(ReplayRefusal::Seen {
                        jti: token.jti.into(),
                        first_seen_s: first,
                    });
                }
            }
            t.insert(k.as_str(), (token.exp_s.saturating_add(forget_after_s), now_s))
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

    /// skew 60 s, max lifetime 600 s.
    const POLICY: TokenPolicy = TokenPolicy {
        clock_skew_s: 60,
        max_lifetime_s: 600,
    };

    /// A token of `signer` with id `jti`, valid `nbf..exp`, issued at `iat`.
    fn tok<'a>(signer: &'a str, jti: &'a str, nbf_s: i64, exp_s: i64, iat_s: Option<i64>) -> TokenId<'a> {
        TokenId {
            signer,
            jti,
            nbf_s,
            exp_s,
            iat_s,
        }
    }

    /// A token without `iat`, valid for 70 s until `exp_s`.
    fn t<'a>(signer: &'a str, jti: &'a str, exp_s: i64) -> TokenId<'a> {
        tok(signer, jti, exp_s - 70, exp_s, None)
    }

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("triad-replay-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn exercise(g: &mut dyn ReplayGuard) {
        g.check_and_remember(t("k1", "a", 100), 60, 50).unwrap();
        assert!(matches!(
            g.check_and_remember(t("k1", "a", 100), 60, 51),
            Err(ReplayRefusal::Seen { first_seen_s: 50, .. })
        ));
        // Same id from another signer is another token.
        g.check_and_remember(t("k2", "a", 100), 60, 52).unwrap();
        // Forgotten after expiry + skew.
        g.check_and_remember(t("k1", "a", 300), 60, 161).unwrap();
    }

    #[test]
    fn memory_store_refuses_twice() {
        exercise(&mut MemoryReplay::default());
    }

    #[test]
    fn redb_store_survives_reopening() {
        let dir = Dir::new("reopen");
        let path = dir.0.join("replay.redb");
        {
            let mut s = RedbReplay::open(&path, POLICY, 10).unwrap();
            exercise(&mut s);
        }
        let mut s = RedbReplay::open(&path, POLICY, 190).unwrap();
        assert!(matches!(
            s.check_and_remember(t("k1", "a", 300), 60, 200),
            Err(ReplayRefusal::Seen { first_seen_s: 161, .. })
        ));
        assert!(!s.is_empty());
        assert!(s.lost().is_none());
        assert_eq!(s.fence(), None, "a first start and a healthy store fence nothing");
    }

    #[test]
    fn a_damaged_empty_or_missing_store_is_replaced_and_said() {
        let dir = Dir::new("damage");
        let path = dir.0.join("replay.redb");
        drop(RedbReplay::open(&path, POLICY, 10).unwrap());
        // Power cut: garbage in the file.
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let s = RedbReplay::open(&path, POLICY, 1000).unwrap();
        let lost = s.lost().expect("damage is said");
        assert!(
            lost.contains("replay.redb") && lost.contains("damaged") && lost.contains("refused until"),
            "{lost}"
        );
        assert!(lost.contains("(1720)") && lost.contains("(1060)"), "{lost}");
        drop(s);
        assert!(
            std::fs::read_dir(&dir.0).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("replay.redb.damaged-")),
            "the damaged file is kept"
        );
        // Truncated to 0 bytes.
        std::fs::File::create(&path).unwrap();
        let s = RedbReplay::open(&path, POLICY, 2000).unwrap();
        assert!(s.lost().unwrap().contains("empty"), "{:?}", s.lost());
        drop(s);
        // Deleted.
        std::fs::remove_file(&path).unwrap();
        let mut s = RedbReplay::open(&path, POLICY, 3000).unwrap();
        assert!(s.lost().unwrap().contains("missing"), "{:?}", s.lost());
        assert_eq!(s.fence().unwrap().lost_at_s, 3000);
        s.check_and_remember(t("k", "a", 3200), 60, 3100).unwrap();
        drop(s);
        assert!(
            RedbReplay::open(&path, POLICY, 3300).unwrap().lost().is_none(),
            "a healthy store says nothing"
        );
    }

    #[test]
    fn fence_rule() {
        // Lost at 1000: refuse nbf and iat before 1060, until 1000 + 600 + 120.
        let f = Fence::new(1000, POLICY);
        assert_eq!(
            f,
            Fence {
                lost_at_s: 1000,
                before_s: 1060,
                until_s: 1720
            }
        );
        let refused = |t: TokenId<'_>, now| matches!(f.check(&t, now), Err(ReplayRefusal::Fenced { .. }));
        // Issued before the loss (iat), or without iat and valid before it.
        assert!(refused(tok("k", "a", 990, 1500, Some(990)), 1100));
        assert!(refused(tok("k", "a", 1059, 1600, Some(1059)), 1100));
        assert!(refused(tok("k", "a", 900, 1500, None), 1100));
        assert!(refused(tok("k", "a", 1059, 1659, None), 1700));
        // The last such token is accepted by its expiry until 1059 + 600 + 60 = 1719.
        assert!(refused(tok("k", "a", 1059, 1659, Some(1000)), 1719));
        // Issued after the loss (iat), or not valid before it (nbf).
        assert!(!refused(tok("k", "a", 1100, 1400, Some(1100)), 1100));
        assert!(!refused(tok("k", "a", 1000, 1400, Some(1060)), 1100));
        assert!(!refused(tok("k", "a", 1060, 1400, None), 1100));
        assert!(!refused(tok("k", "a", 1060, 1400, Some(900)), 1100));
        // After the fence: as before.
        assert!(!refused(tok("k", "a", 990, 1500, Some(990)), 1720));
        let msg = f.check(&tok("k", "x1", 990, 1500, Some(990)), 1100).unwrap_err();
        assert_eq!(msg.code(), "token_before_replay_loss");
        let msg = msg.to_string();
        assert!(
            msg.contains("\"x1\"")
                && msg.contains("replay store was lost at Thu, 01 Jan 1970 00:16:40 GMT (1000)")
                && msg.contains("refused until Thu, 01 Jan 1970 00:28:40 GMT (1720)")
                && msg.contains("issue a new token"),
            "{msg}"
        );
    }

    #[test]
    fn a_lost_store_fences_old_tokens_durably_until_they_expired() {
        let dir = Dir::new("fence");
        let path = dir.0.join("replay.redb");
        // Run 1 at 1000: a token is used.
        let mut s = RedbReplay::open(&path, POLICY, 900).unwrap();
        s.check_and_remember(tok("k", "old", 950, 1500, Some(950)), 60, 1000)
            .unwrap();
        drop(s);
        // Power cut at 1010: the store is damaged; run 2 starts at 1020.
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let mut s = RedbReplay::open(&path, POLICY, 1020).unwrap();
        let f = s.fence().expect("a loss records a fence");
        assert_eq!((f.lost_at_s, f.before_s, f.until_s), (1020, 1080, 1740));
        // The used token, and another issued before the loss, are refused.
        let used = tok("k", "old", 950, 1500, Some(950));
        for t in [
            used,
            tok("k", "unused", 1000, 1500, Some(1000)),
            tok("k", "no-iat", 1000, 1500, None),
        ] {
            let e = s.check_and_remember(t, 60, 1030).unwrap_err();
            assert!(matches!(e, ReplayRefusal::Fenced { until_s: 1740, .. }), "{e}");
        }
        // A token issued after the loss works, once.
        let fresh = tok("k", "new", 1090, 1600, Some(1090));
        s.check_and_remember(fresh, 60, 1100).unwrap();
        assert!(matches!(
            s.check_and_remember(fresh, 60, 1101),
            Err(ReplayRefusal::Seen { .. })
        ));
        drop(s);
        // A restart during the fence keeps it, and the used ids.
        let mut s = RedbReplay::open(&path, POLICY, 1200).unwrap();
        assert!(s.lost().is_none(), "a healthy store of the fence's run is not lost");
        assert_eq!(s.fence(), Some(f));
        assert!(matches!(
            s.check_and_remember(used, 60, 1210),
            Err(ReplayRefusal::Fenced { .. })
        ));
        assert!(matches!(
            s.check_and_remember(fresh, 60, 1210),
            Err(ReplayRefusal::Seen { .. })
        ));
        // After the fence, a token valid before the loss (were one still
        // unexpired) is checked as before.
        s.check_and_remember(tok("k", "late", 1070, 1670, Some(1000)), 60, 1740)
            .unwrap();
    }

    #[test]
    fn a_store_cut_before_its_first_commit_is_taken_as_lost() {
        let dir = Dir::new("uncommitted");
        let path = dir.0.join("replay.redb");
        // A redb file without tables: what a power cut right after it was
        // made (replacing a lost store) leaves.
        drop(Database::create(&path).unwrap());
        let s = RedbReplay::open(&path, POLICY, 5000).unwrap();
        assert!(s.lost().unwrap().contains("without its tables"), "{:?}", s.lost());
        assert_eq!(s.fence().map(|f| f.lost_at_s), Some(5000));
    }
}
