//! What the state directory looked like at start: which files of earlier
//! runs are missing, empty, torn or were set aside as damaged by their
//! stores during this start. Each finding names the file, what was lost and
//! the recovery step; the node logs them, shows them on the dashboard and
//! reports "degraded" on `/healthz` (`storage` check) for the run.

use crate::durable::Found;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Files set aside as `*.damaged-*` under the state directory (two levels).
pub fn damaged_files(state_dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![state_dir.to_path_buf(), state_dir.join("chains")];
    if let Ok(rd) = std::fs::read_dir(state_dir.join("models")) {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(".damaged-") {
                    out.insert(e.path());
                }
            }
        }
    }
    out
}

/// Findings before the stores open (files that are gone or torn; the
/// stores themselves set damaged files aside, see [`after_start`]).
pub fn before_start(state_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let replay = state_dir.join("replay.redb");
    let found = Found::check(&replay);
    if found != Found::Fine {
        out.push(format!(
            "state file {} was {}: the ids of tokens used before are forgotten; tokens issued before this start are \
             refused until the longest of them has expired (security.max_token_lifetime_s): issue new tokens",
            replay.display(),
            found.describe()
        ));
    }
    let audit = state_dir.join("audit.jsonl");
    let found = Found::check(&audit);
    if found != Found::Fine {
        out.push(format!(
            "state file {} was {}: the audit records of earlier runs are lost (the audit topic on the bus has the \
             records it received); the node starts a new log",
            audit.display(),
            found.describe()
        ));
    } else if let Some(last) = last_line(&audit)
        && serde_json::from_str::<serde_json::Value>(&last).is_err()
    {
        out.push(format!(
            "state file {} ends with a torn record (a power cut while writing): that record is lost; the records \
             before it are intact",
            audit.display()
        ));
    }
    if let Ok(rd) = std::fs::read_dir(state_dir.join("models")) {
        for t in rd.flatten() {
            let dir = t.path();
            let has_bundles = std::fs::read_dir(dir.join("bundles")).is_ok_and(|mut r| r.next().is_some());
            if has_bundles && !dir.join("state.json").exists() {
                out.push(format!(
                    "state file {} is missing while bundles are kept beside it: which deployed bundle was current is \
                     lost; the configured model runs; deploy the bundle again (`triad deploy`)",
                    dir.join("state.json").display()
                ));
            }
        }
    }
    out
}

/// Findings after the stores opened: files they set aside as damaged.
pub fn after_start(state_dir: &Path, before: &BTreeSet<PathBuf>) -> Vec<String> {
    let mut out = Vec::new();
    for p in damaged_files(state_dir).difference(before) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let original = name.split(".damaged-").next().unwrap_or_default();
        if original == "outbox.redb" {
            continue; // said by the outbox itself, with what was lost
        }
        let what = match original {
            "replay.redb" => {
                "the ids of tokens used before are forgotten: tokens issued before this start are refused until they \
                 have expired; issue new tokens"
            }
            "state.json" => {
                "which deployed bundle was current is lost; the configured model runs: deploy the bundle again"
            }
            "outbox.seq" => "the sequence high-water mark is lost: sequence numbers continue from the outbox",
            _ if p.parent().is_some_and(|d| d.ends_with("chains")) => {
                "a closed-loop journal: that chain's remaining steps cannot be completed; check its alert and issue the work order by hand"
            }
            _ => "its content is not used",
        };
        out.push(format!(
            "state file {} was damaged and is kept as {}: {what}",
            p.with_file_name(original).display(),
            p.display()
        ));
    }
    out
}

/// Note the audit log as present, for the next start's check.
pub fn mark(state_dir: &Path) {
    let p = state_dir.join("audit.jsonl");
    if p.exists() {
        let _ = crate::durable::mark_present(&p);
    }
}

fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // Bounded: the last 64 KiB hold the last record.
    let from = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    f.take(64 * 1024).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_missing_and_set_aside_files_are_named() {
        let dir = std::env::temp_dir().join(format!("triad-survey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("models/cell/bundles/abc")).unwrap();
        std::fs::write(dir.join("audit.jsonl"), b"{\"a\":1}\n{\"torn\": ").unwrap();
        crate::durable::mark_present(&dir.join("replay.redb")).unwrap();
        let before = damaged_files(&dir);
        let found = before_start(&dir).join("\n");
        assert!(found.contains("replay.redb was missing"), "{found}");
        assert!(found.contains("audit.jsonl ends with a torn record"), "{found}");
        assert!(found.contains("models/cell/state.json is missing"), "{found}");
        std::fs::write(dir.join("replay.redb.damaged-1"), b"x").unwrap();
        let after = after_start(&dir, &before).join("\n");
        assert!(after.contains("replay.redb was damaged and is kept as"), "{after}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
