//! Deployed bundles on disk, so that a restart runs what was deployed.
//!
//! ```text
//! <state_dir>/models/<target>/state.json          which bundle is current, which previous
//! <state_dir>/models/<target>/bundles/<digest16>/ the bundle's files as accepted
//! ```
//!
//! `state.json` is replaced atomically (write, fsync, rename). At start the
//! node re-checks each stored bundle's signature and digests against the
//! keyring of the day (a signer revoked since is refused) before loading it;
//! bundles no longer referenced are removed.

use super::bundle::{Bundle, BundleError, BundleLimits};
use super::slot::ModelInfo;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One stored model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    /// Folder under `bundles/`.
    pub dir: String,
    /// What it is.
    pub info: ModelInfoRecord,
}

/// [`ModelInfo`] as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfoRecord {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Digest.
    pub digest: Option<String>,
    /// Signer.
    pub signer: Option<String>,
    /// Token issuer.
    pub deployed_by: Option<String>,
    /// When, ns.
    pub deployed_ns: Option<i64>,
}

impl From<&ModelInfo> for ModelInfoRecord {
    fn from(i: &ModelInfo) -> Self {
        Self {
            name: i.name.clone(),
            version: i.version.clone(),
            digest: i.digest.clone(),
            signer: i.signer.clone(),
            deployed_by: i.deployed_by.clone(),
            deployed_ns: i.deployed_ns,
        }
    }
}

/// A model of a target: the configured one, or a deployed bundle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredRef {
    /// The model of the configuration (built-in or `model_dir`).
    #[default]
    Initial,
    /// A deployed bundle.
    Bundle(StoredModel),
}

impl StoredRef {
    fn dir(&self) -> Option<&str> {
        match self {
            StoredRef::Initial => None,
            StoredRef::Bundle(s) => Some(&s.dir),
        }
    }
}

/// `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRecord {
    /// The model to run.
    pub current: StoredRef,
    /// The model to roll back to.
    pub previous: Option<StoredRef>,
}

/// The store of one target.
#[derive(Clone, Debug)]
pub struct TargetStore {
    root: PathBuf,
}

impl TargetStore {
    /// The store of `target` under `state_dir`.
    pub fn new(state_dir: &Path, target: &str) -> Self {
        Self {
            root: state_dir.join("models").join(target),
        }
    }

    /// Read `state.json` (absent on a first start: the configured model runs).
    /// Damaged (set aside) or missing while bundles are left: an error that
    /// names the file, what was lost and how to recover.
    pub fn load(&self) -> Result<TargetRecord, String> {
        let path = self.root.join("state.json");
        let bundles: Vec<String> = std::fs::read_dir(self.root.join("bundles"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        let lost = |how: &str| {
            format!(
                "state file {} is {how}: which deployed bundle was current (and which previous) is lost{}; \
                 the node runs the configured model; recovery: deploy the bundle again (`triad deploy`)",
                path.display(),
                if bundles.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (bundles kept in {}: {})",
                        self.root.join("bundles").display(),
                        bundles.join(", ")
                    )
                }
            )
        };
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                let aside = crate::durable::set_aside(&path)
                    .map(|p| format!("kept as {}", p.display()))
                    .unwrap_or_else(|e| format!("cannot be set aside: {e}"));
                lost(&format!("damaged ({e}; {aside})"))
            }),
            // Bundles but no record of them: the record was lost.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !bundles.is_empty() => Err(lost("missing")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TargetRecord::default()),
            Err(e) => Err(lost(&format!("unreadable ({e})"))),
        }
    }

    /// Replace `state.json` atomically and remove bundles it no longer names.
    pub fn save(&self, rec: &TargetRecord) -> Result<(), String> {
        let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        std::fs::create_dir_all(&self.root).map_err(|e| err(&self.root, e))?;
        let tmp = self.root.join("state.json.tmp");
        let path = self.root.join("state.json");
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
            f.write_all(&serde_json::to_vec_pretty(rec).expect("record serialises"))
                .and_then(|_| f.sync_all())
                .map_err(|e| err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        if let Ok(d) = std::fs::File::open(&self.root) {
            let _ = d.sync_all();
        }
        let keep: Vec<&str> = [Some(&rec.current), rec.previous.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(StoredRef::dir)
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.root.join("bundles")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name.as_str()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// Store a bundle's files under `bundles/<dir>` (written to a temporary
    /// folder, then renamed). Returns `<dir>`.
    pub fn put_bundle(&self, digest: &str, bundle: &Bundle) -> Result<String, BundleError> {
        let name: String = digest.trim_start_matches("sha256:").chars().take(16).collect();
        let dir = self.root.join("bundles").join(&name);
        if dir.join("manifest.json").exists() {
            return Ok(name);
        }
        let tmp = self.root.join("bundles").join(format!(".{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        bundle.write_dir(&tmp)?;
        std::fs::rename(&tmp, &dir).map_err(|e| BundleError::Io {
            path: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(name)
    }

    /// Read a stored bundle.
    pub fn get_bundle(&self, dir: &str, limits: BundleLimits) -> Result<Bundle, BundleError> {
        Bundle::from_dir(&self.root.join("bundles").join(dir), limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_or_missing_record_is_said_with_the_bundles_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("triad-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = TargetStore::new(&dir, "weld-cell-1");
        assert_eq!(
            store.load().unwrap(),
            TargetRecord::default(),
            "first start: nothing deployed"
        );
        store.save(&TargetRecord::default()).unwrap();
        std::fs::create_dir_all(dir.join("models/weld-cell-1/bundles/0123456789abcdef")).unwrap();
        let state = dir.join("models/weld-cell-1/state.json");
        // Power cut while replacing it: empty file.
        std::fs::write(&state, b"").unwrap();
        let err = store.load().unwrap_err();
        assert!(err.contains("state.json") && err.contains("damaged"), "{err}");
        assert!(
            err.contains("0123456789abcdef") && err.contains("triad deploy"),
            "{err}"
        );
        assert!(!state.exists(), "the damaged record is set aside");
        // Missing, with a bundle left: the record was lost.
        let err = store.load().unwrap_err();
        assert!(err.contains("missing") && err.contains("0123456789abcdef"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
