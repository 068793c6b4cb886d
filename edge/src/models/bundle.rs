//! The model bundle: its files, the canonical manifest, its digest and
//! signature, and safe unpacking of archives.
//!
//! A bundle is a directory, or a `.tar` / `.tar.gz` of one:
//!
//! ```text
//! manifest.json        the model manifest with target, files (sha256 of each) and golden cases
//! signature.json       {"alg": "Ed25519", "key_id": "release-2025", "signature": "<base64url>"}
//! model.onnx
//! golden/0.in.f32      golden input  (raw little-endian f32, the model's input shape)
//! golden/0.out.f32     expected output (raw little-endian f32, the output shape)
//! ```
//!
//! **Canonical manifest**: the manifest's JSON value written with object
//! keys sorted (by their UTF-8 bytes), no whitespace, strings and numbers as
//! serde_json writes them. The signature is Ed25519 over these bytes, and the
//! **bundle digest** is `sha256:` + the hex SHA-256 of them; since the
//! manifest holds the SHA-256 of every other file, the digest names the whole
//! bundle. Re-formatting `manifest.json` keeps the signature valid; changing
//! any value breaks it.
//!
//! **Archives** are what the standard tools make: GNU tar and bsdtar (any
//! of the ustar, pax, gnu and v7 formats), `git archive`, Python's
//! `tarfile`, plain or gzip-compressed (one gzip member or several, any
//! level; `.tar`, `.tar.gz` and `.tgz` are told apart by their first
//! bytes, not their names). Directory entries (`./`, `golden/`), pax
//! headers (global ones, as `git archive` writes, are skipped; per-file ones
//! give the path and size) and GNU long names are accepted.
//!
//! **Unpacking** never touches the disk: entries are read into memory, with
//! limits on the total size, the size of each file, the number of files and
//! the number of entries of any kind, all checked before the bytes they
//! declare are read; the decompressed stream is capped as well (a gzip
//! bomb). Only regular files and directories are accepted; absolute paths,
//! `..`, links, devices, duplicate entries and names with `\` are refused by
//! name. An archive whose files all sit in one top folder
//! (`weld_seam-1.1.0/…`) is read as if they sat at its root.
//!
//! **Golden files** hold exactly the values their shape declares, all finite
//! ([`check_golden_files`], at `bundle sign`, verify and deploy); `bundle
//! build` refuses a model that outputs NaN or infinity on a golden input,
//! naming the output and the element.

use crate::trust::keys::SigningKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};
use thiserror::Error;
use triad_inspect::ModelManifest;
use triad_inspect::manifest::{GoldenCase, GoldenSpec, bounds, parse_version};

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the signature.
pub const SIGNATURE_FILE: &str = "signature.json";
/// File name of the model.
pub const MODEL_FILE: &str = "model.onnx";

/// Largest `signature.json`, bytes (it is about 200).
pub const MAX_SIGNATURE_BYTES: usize = 4096;

/// Size limits for reading a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleLimits {
    /// Largest total of file contents, bytes (also the largest archive).
    pub max_total_bytes: u64,
    /// Most files.
    pub max_files: usize,
}

impl BundleLimits {
    /// Most archive entries of any kind (files, directories, pax and GNU
    /// headers): room for a folder and a header next to every file.
    pub fn max_entries(&self) -> usize {
        self.max_files.saturating_mul(4).saturating_add(16)
    }

    /// Most bytes read from the (decompressed) tar stream: the contents, and
    /// for each entry its headers, a pax record block and padding.
    fn max_stream_bytes(&self) -> u64 {
        self.max_total_bytes
            .saturating_add((self.max_entries() as u64).saturating_mul(4 * 512))
            .saturating_add(64 * 1024)
    }
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 64 * 1024 * 1024,
            max_files: 64,
        }
    }
}

/// A bundle could not be read or is not well-formed.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum BundleError {
    /// A path leaves the bundle folder or is not a plain relative path.
    #[error("bundle entry {path:?} is refused: {why}; bundles hold plain relative paths only")]
    UnsafePath {
        /// The entry's path as written.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A link, device or other non-file entry.
    #[error("bundle entry {path:?} is a {kind}; bundles hold regular files only")]
    NotAFile {
        /// The entry's path.
        path: String,
        /// What it is.
        kind: String,
    },
    /// The same path twice.
    #[error("bundle entry {path:?} appears twice; an archive must name each file once")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// Over the size limit.
    #[error(
        "bundle is larger than {limit} bytes (models.max_bundle_mb): {detail}; ship a smaller model or raise the limit"
    )]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
        /// What exceeded it.
        detail: String,
    },
    /// Too many files.
    #[error(
        "bundle has more than {limit} files; a bundle needs manifest.json, signature.json, model.onnx and its golden files"
    )]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// Too many archive entries of any kind (directories, headers).
    #[error(
        "bundle archive has more than {limit} entries (files, folders and headers); pack only the bundle folder (`triad bundle pack`, or `tar -C DIR -czf B.tar.gz .`)"
    )]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// Not a tar or tar.gz, or corrupt.
    #[error(
        "bundle archive unreadable: {detail}; give a directory, a .tar or a .tar.gz (made with `triad bundle pack`, tar, bsdtar, git archive or Python's tarfile)"
    )]
    Archive {
        /// What the reader said.
        detail: String,
    },
    /// A required file is missing.
    #[error("bundle has no {file}: {fix}")]
    Missing {
        /// Which file.
        file: String,
        /// What to do.
        fix: &'static str,
    },
    /// manifest.json is not valid.
    #[error("bundle manifest.json is invalid: {}", problems.join("; "))]
    Manifest {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// A golden file does not hold the number of values its shape declares.
    #[error(
        "bundle file {file} (golden case {case} {what}) is {bytes} bytes, but the {what} shape declares {values} f32 values ({expected_bytes} bytes): rebuild the bundle with `triad bundle build`"
    )]
    GoldenSize {
        /// Case index.
        case: usize,
        /// `input` or `output`.
        what: &'static str,
        /// The file.
        file: String,
        /// Its size, bytes.
        bytes: usize,
        /// Values the shape declares.
        values: usize,
        /// `values * 4`.
        expected_bytes: usize,
    },
    /// A golden value is NaN or infinite.
    #[error(
        "bundle file {file} (golden case {case} {what}) holds {value} at element {index}: golden values must be finite; rebuild the bundle from finite inputs, with a model that outputs finite values on them"
    )]
    GoldenNonFinite {
        /// Case index.
        case: usize,
        /// `input` or `output`.
        what: &'static str,
        /// The file.
        file: String,
        /// Index of the first non-finite value.
        index: usize,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
    /// `bundle build`: the model outputs NaN or infinity on a golden input.
    #[error(
        "the model outputs {value} (output {output}, element {index}) on golden input {case}: a model must output finite values; fix the model or its export, or give golden inputs (--golden-input) on which it is defined"
    )]
    ModelOutputNonFinite {
        /// Golden input index.
        case: usize,
        /// The output tensor's name.
        output: String,
        /// Index of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// signature.json is not valid.
    #[error("bundle signature.json is invalid: {detail}; sign the bundle again with `triad bundle sign`")]
    SignatureFile {
        /// What is wrong.
        detail: String,
    },
    /// Reading or writing files failed.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        detail: String,
    },
}

/// The files of a bundle, in memory, by relative path (`/`-separated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
}

/// Check a relative path and return it in normal form (`a/b`, no `./`).
pub fn clean_path(raw: &str) -> Result<String, BundleError> {
    let unsafe_path = |why| BundleError::UnsafePath {
        path: raw.to_string(),
        why,
    };
    if raw.contains('\\') {
        return Err(unsafe_path("it contains a backslash"));
    }
    if raw.contains('\0') {
        return Err(unsafe_path("it contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| unsafe_path("it is not UTF-8"))?),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("it climbs out of the bundle with \"..\"")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_path("it is absolute")),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_path("it is empty"));
    }
    Ok(parts.join("/"))
}

/// Counts bytes read and remembers whether the cap was reached.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            self.hit = true;
            return Err(std::io::Error::other("size cap reached"));
        }
        let n = buf.len().min(self.left as usize);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

impl Bundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a file (the path is checked).
    pub fn insert(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), BundleError> {
        let p = clean_path(path)?;
        self.files.insert(p, bytes);
        Ok(())
    }

    /// Remove a file.
    pub fn remove(&mut self, path: &str) -> Option<Vec<u8>> {
        self.files.remove(path)
    }

    /// A file's bytes.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// A file's bytes, mutable (for tools and tests).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Vec<u8>> {
        self.files.get_mut(path)
    }

    /// Every path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Total size of the contents, bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|v| v.len() as u64).sum()
    }

    fn check_limits(&self, limits: BundleLimits) -> Result<(), BundleError> {
        if self.files.len() > limits.max_files {
            return Err(BundleError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        let total = self.total_bytes();
        if total > limits.max_total_bytes {
            return Err(BundleError::TooLarge {
                limit: limits.max_total_bytes,
                detail: format!("its files hold {total} bytes"),
            });
        }
        Ok(())
    }

    /// If every file sits in one top folder, drop that folder.
    fn strip_single_top(&mut self) {
        if self.files.keys().any(|p| !p.contains('/')) {
            return;
        }
        let mut tops = self.files.keys().map(|p| p.split('/').next().unwrap_or_default());
        let Some(first) = tops.next().map(str::to_string) else {
            return;
        };
        if tops.all(|t| t == first) {
            let prefix = format!("{first}/");
            self.files = std::mem::take(&mut self.files)
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }

    /// Read a bundle directory (symlinks and special files are refused).
    pub fn from_dir(dir: &Path, limits: BundleLimits) -> Result<Self, BundleError> {
        let io = |p: &Path, e: std::io::Error| BundleError::Io {
            path: p.display().to_string(),
            detail: e.to_string(),
        };
        let mut b = Bundle::new();
        let mut total = 0u64;
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((path, rel)) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| io(&path, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| io(&path, e))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel_child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                let meta = std::fs::symlink_metadata(e.path()).map_err(|er| io(&e.path(), er))?;
                let ft = meta.file_type();
                if ft.is_dir() {
                    stack.push((e.path(), rel_child));
                } else if ft.is_file() {
                    total += meta.len();
                    if total > limits.max_total_bytes {
                        return Err(BundleError::TooLarge {
                            limit: limits.max_total_bytes,
                            detail: format!("{} alone brings it past the limit", rel_child),
                        });
                    }
                    if b.files.len() >= limits.max_files {
                        return Err(BundleError::TooManyFiles {
                            limit: limits.max_files,
                        });
                    }
                    let bytes = std::fs::read(e.path()).map_err(|er| io(&e.path(), er))?;
                    b.insert(&rel_child, bytes)?;
                } else {
                    return Err(BundleError::NotAFile {
                        path: rel_child,
                        kind: if ft.is_symlink() {
                            "symbolic link".into()
                        } else {
                            "special file".into()
                        },
                    });
                }
            }
        }
        b.check_limits(limits)?;
        Ok(b)
    }

    /// Read a `.tar` or `.tar.gz` held in memory.
    pub fn from_archive(bytes: &[u8], limits: BundleLimits) -> Result<Self, BundleError> {
        if bytes.len() as u64 > limits.max_total_bytes {
            return Err(BundleError::TooLarge {
                limit: limits.max_total_bytes,
                detail: format!("the archive is {} bytes", bytes.len()),
            });
        }
        for (magic, what) in [
            (&b"\xfd7zXZ\0"[..], "an xz"),
            (b"BZh", "a bzip2"),
            (b"\x28\xb5\x2f\xfd", "a zstd"),
            (b"PK\x03\x04", "a zip"),
        ] {
            if bytes.starts_with(magic) {
                return Err(BundleError::Archive {
                    detail: format!("it is {what} file; pack the bundle as .tar or .tar.gz (`tar -czf`)"),
                });
            }
        }
        // Several gzip members (`cat a.gz b.gz`, bgzip, parallel gzips) are
        // one stream, as gzip -d reads them.
        let inner: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(bytes))
        } else {
            Box::new(bytes)
        };
        let cap = limits.max_stream_bytes();
        let mut capped = Capped {
            inner,
            left: cap,
            hit: false,
        };
        let result = Self::read_tar(&mut capped, limits);
        if capped.hit {
            return Err(BundleError::TooLarge {
                limit: limits.max_total_bytes,
                detail: "the archive unpacks to more than the limit".into(),
            });
        }
        let mut b = result?;
        b.strip_single_top();
        b.check_limits(limits)?;
        Ok(b)
    }

    fn read_tar<R: Read>(reader: R, limits: BundleLimits) -> Result<Self, BundleError> {
        let archive_err = |e: std::io::Error| BundleError::Archive { detail: e.to_string() };
        let mut ar = tar::Archive::new(reader);
        let mut b = Bundle::new();
        let mut total = 0u64;
        let mut count = 0usize;
        let mut entries = 0usize;
        for entry in ar.entries().map_err(archive_err)? {
            let mut entry = entry.map_err(archive_err)?;
            entries += 1;
            if entries > limits.max_entries() {
                return Err(BundleError::TooManyEntries {
                    limit: limits.max_entries(),
                });
            }
            let kind = entry.header().entry_type();
            // A pax global header (`git archive` writes one with the commit
            // id) describes the archive, not a file: its data is skipped
            // unread.
            if kind == tar::EntryType::XGlobalHeader {
                continue;
            }
            let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // Pre-POSIX tars mark a folder only by its trailing `/`.
            let old_style_dir = kind == tar::EntryType::Regular && raw_path.ends_with('/') && entry.size() == 0;
            if kind == tar::EntryType::Directory || old_style_dir {
                // `./` (tar -C DIR -cf B .) and `golden/` need no file; an
                // unsafe folder name is still refused.
                match clean_path(&raw_path) {
                    Ok(_) => continue,
                    Err(BundleError::UnsafePath { why: "it is empty", .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let path = clean_path(&raw_path)?;
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink => {
                    return Err(BundleError::NotAFile {
                        path,
                        kind: "symbolic link".into(),
                    });
                }
                tar::EntryType::Link => {
                    return Err(BundleError::NotAFile {
                        path,
                        kind: "hard link".into(),
                    });
                }
                other => {
                    return Err(BundleError::NotAFile {
                        path,
                        kind: format!("{other:?} entry"),
                    });
                }
            }
            count += 1;
            if count > limits.max_files {
                return Err(BundleError::TooManyFiles {
                    limit: limits.max_files,
                });
            }
            // The size a pax header gives wins over the ustar field, as
            // every tar reader does.
            let size = entry.size();
            total = total.saturating_add(size);
            if total > limits.max_total_bytes {
                return Err(BundleError::TooLarge {
                    limit: limits.max_total_bytes,
                    detail: format!("{path} ({size} bytes) brings the contents past the limit"),
                });
            }
            if b.files.contains_key(&path) {
                return Err(BundleError::Duplicate { path });
            }
            // The declared size is checked, but the bytes may not be there:
            // grow with what is read, from at most 1 MiB.
            let mut bytes = Vec::with_capacity(size.min(1024 * 1024) as usize);
            (&mut entry).take(size).read_to_end(&mut bytes).map_err(archive_err)?;
            if bytes.len() as u64 != size {
                return Err(BundleError::Archive {
                    detail: format!(
                        "{path} declares {size} bytes but the archive ends after {}",
                        bytes.len()
                    ),
                });
            }
            b.files.insert(path, bytes);
        }
        Ok(b)
    }

    /// A directory or an archive file, whichever `path` is.
    pub fn from_path(path: &Path, limits: BundleLimits) -> Result<Self, BundleError> {
        let meta = std::fs::metadata(path).map_err(|e| BundleError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        if meta.is_dir() {
            return Self::from_dir(path, limits);
        }
        if meta.len() > limits.max_total_bytes {
            return Err(BundleError::TooLarge {
                limit: limits.max_total_bytes,
                detail: format!("{} is {} bytes", path.display(), meta.len()),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| BundleError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::from_archive(&bytes, limits)
    }

    /// A deterministic `.tar.gz` of the bundle (mtime 0, mode 0644).
    pub fn to_archive(&self) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, bytes) in &self.files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, bytes.as_slice())
                .expect("writing to memory does not fail");
        }
        tar.into_inner()
            .and_then(|gz| gz.finish())
            .expect("writing to memory does not fail")
    }

    /// Write the files under `dir` (created; existing files are replaced).
    pub fn write_dir(&self, dir: &Path) -> Result<(), BundleError> {
        for (rel, bytes) in &self.files {
            let path = dir.join(rel);
            let io = |e: std::io::Error| BundleError::Io {
                path: path.display().to_string(),
                detail: e.to_string(),
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, bytes).map_err(io)?;
        }
        Ok(())
    }
}

/// Write `v` as canonical JSON (sorted keys, no whitespace).
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match v {
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).expect("strings serialise");
                    out.push(b':');
                    write(&map[k], out);
                }
                out.push(b'}');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialise"),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `signature.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always `Ed25519`.
    pub alg: String,
    /// Name (or fingerprint) of the signing key in the node's keyring.
    pub key_id: String,
    /// The 64-byte signature over the canonical manifest, base64url.
    pub signature: String,
}

impl SignatureFile {
    /// The raw signature.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, BundleError> {
        URL_SAFE_NO_PAD
            .decode(self.signature.trim_end_matches('='))
            .map_err(|e| BundleError::SignatureFile {
                detail: format!("signature is not base64url ({e})"),
            })
    }
}

/// The manifest of a bundle, parsed and canonicalised.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedManifest {
    /// The manifest.
    pub manifest: ModelManifest,
    /// Its canonical bytes (what is signed).
    pub canonical: Vec<u8>,
    /// `sha256:` of the canonical bytes: the bundle digest.
    pub digest: String,
}

impl ParsedManifest {
    /// The target (checked present by [`parse_manifest`]).
    pub fn target(&self) -> &str {
        self.manifest.target.as_deref().unwrap_or_default()
    }
}

/// Parse and check `manifest.json` of `bundle`.
pub fn parse_manifest(bundle: &Bundle) -> Result<ParsedManifest, BundleError> {
    let bytes = bundle.get(MANIFEST_FILE).ok_or(BundleError::Missing {
        file: MANIFEST_FILE.into(),
        fix: "build the bundle with `triad bundle build`",
    })?;
    let bad = |p: String| BundleError::Manifest { problems: vec![p] };
    if bytes.len() > bounds::MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "it is {} bytes; the bound is {} bytes: a manifest describes the model, it does not hold data; rebuild it with `triad bundle build`",
            bytes.len(),
            bounds::MAX_MANIFEST_BYTES
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
    let canonical = canonical_json(&value);
    let manifest: ModelManifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    let mut problems = manifest.validate().err().unwrap_or_default();
    match &manifest.target {
        None => problems.push("target: missing; name the cell or asset the model is for, e.g. \"cell_2245\"".into()),
        Some(t) => {
            if let Err(e) = triad_schemas::ids::validate("target", t) {
                problems.push(format!("target: {e}"));
            }
        }
    }
    if !manifest.files.contains_key(MODEL_FILE) {
        problems.push("files: no sha256 for model.onnx".into());
    }
    for (path, hex) in &manifest.files {
        if clean_path(path).ok().as_deref() != Some(path.as_str()) || path == MANIFEST_FILE || path == SIGNATURE_FILE {
            problems.push(format!("files: {path:?} is not a plain relative path of a bundle file"));
        }
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            problems.push(format!("files.{path}: {hex:?} is not a lower-case hex SHA-256"));
        }
    }
    match &manifest.golden {
        None => problems.push("golden: missing; a bundle needs at least one golden case".into()),
        Some(g) => {
            if !(g.tolerance.is_finite() && (0.0..=1.0).contains(&g.tolerance)) {
                problems.push(format!("golden.tolerance = {}: must be within 0..=1", g.tolerance));
            }
            if g.cases.is_empty() {
                problems.push("golden.cases: empty; give at least one case".into());
            }
            for (i, c) in g.cases.iter().enumerate() {
                for (what, p) in [("input", &c.input), ("output", &c.output)] {
                    if !manifest.files.contains_key(p) {
                        problems.push(format!("golden.cases[{i}].{what}: {p:?} is not listed in files"));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(BundleError::Manifest { problems });
    }
    let digest = sha256_digest(&canonical);
    Ok(ParsedManifest {
        manifest,
        canonical,
        digest,
    })
}

/// Parse `signature.json` of `bundle` (`None` if absent).
pub fn parse_signature(bundle: &Bundle) -> Result<Option<SignatureFile>, BundleError> {
    let Some(bytes) = bundle.get(SIGNATURE_FILE) else {
        return Ok(None);
    };
    if bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(BundleError::SignatureFile {
            detail: format!("it is {} bytes; the bound is {MAX_SIGNATURE_BYTES} bytes", bytes.len()),
        });
    }
    let s: SignatureFile =
        serde_json::from_slice(bytes).map_err(|e| BundleError::SignatureFile { detail: e.to_string() })?;
    if s.alg != "Ed25519" {
        return Err(BundleError::SignatureFile {
            detail: format!("alg {:?}: only Ed25519 is accepted", s.alg),
        });
    }
    Ok(Some(s))
}

/// Sign the bundle's manifest with `key` and store `signature.json`.
/// Returns the bundle digest.
pub fn sign(bundle: &mut Bundle, key: &SigningKey) -> Result<String, BundleError> {
    let parsed = parse_manifest(bundle)?;
    check_golden_files(bundle, &parsed)?;
    let sig = key.sign(&parsed.canonical);
    let file = SignatureFile {
        alg: "Ed25519".into(),
        key_id: key.name().into(),
        signature: URL_SAFE_NO_PAD.encode(sig),
    };
    bundle.insert(
        SIGNATURE_FILE,
        serde_json::to_vec_pretty(&file).expect("signature serialises"),
    )?;
    Ok(parsed.digest)
}

/// Check that every golden file of `parsed` holds exactly the values its
/// shape declares (its size is checked before it is decoded) and that all
/// of them are finite. A listed file that is missing is left to the digest
/// check.
pub fn check_golden_files(bundle: &Bundle, parsed: &ParsedManifest) -> Result<(), BundleError> {
    let m = &parsed.manifest;
    let Some(golden) = &m.golden else {
        return Ok(());
    };
    // parse_manifest checked the shapes against their bounds.
    let (Some(n_in), Some(n_out)) = (m.input_values(), m.output_values()) else {
        return Err(BundleError::Manifest {
            problems: m.validate().err().unwrap_or_default(),
        });
    };
    for (case, c) in golden.cases.iter().enumerate() {
        for (what, file, values) in [("input", &c.input, n_in), ("output", &c.output, n_out)] {
            let Some(bytes) = bundle.get(file) else {
                continue;
            };
            let expected_bytes = values * 4;
            if bytes.len() != expected_bytes {
                return Err(BundleError::GoldenSize {
                    case,
                    what,
                    file: file.clone(),
                    bytes: bytes.len(),
                    values,
                    expected_bytes,
                });
            }
            if let Some((index, value)) = first_non_finite(bytes) {
                return Err(BundleError::GoldenNonFinite {
                    case,
                    what,
                    file: file.clone(),
                    index,
                    value,
                });
            }
        }
    }
    Ok(())
}

/// Index and value of the first NaN or infinite little-endian `f32` of `bytes`.
fn first_non_finite(bytes: &[u8]) -> Option<(usize, f32)> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .enumerate()
        .find(|(_, v)| !v.is_finite())
}

/// Little-endian bytes of `values`.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `f32` values of little-endian bytes (`None` if the length is not a multiple of 4).
pub fn f32_values(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    )
}

/// Deterministic golden inputs when the shipper gives none. Inspection:
/// black, mid-grey, a horizontal ramp and uniform noise, in the normalised
/// range of a frame. Twin: four operating points of the weld.
pub fn default_golden_inputs(manifest: &ModelManifest) -> Vec<Vec<f32>> {
    if manifest.kind == triad_inspect::ModelKind::Twin {
        // Operating points of the weld (temp_c, dt_s, feed_ppm,
        // weld_current_a, ambient_c): cold start, nominal, derated, stopped.
        return vec![
            vec![25.0, 0.05, 12.0, 5000.0, 25.0],
            vec![180.0, 0.05, 12.0, 5000.0, 25.0],
            vec![180.0, 0.05, 8.0, 5000.0, 25.0],
            vec![150.0, 1.0, 0.0, 0.0, 22.0],
        ];
    }
    // Out of bounds: none (`build` refuses such a manifest first).
    let Some(n) = manifest.input_values() else {
        return Vec::new();
    };
    let width = *manifest.input.shape.last().unwrap_or(&1);
    let norm = |p: f32| (p / 255.0 - manifest.input.mean) / manifest.input.std;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = Vec::with_capacity(n);
    for _ in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.push(norm((state % 256) as f32));
    }
    vec![
        vec![norm(0.0); n],
        vec![norm(128.0); n],
        (0..n)
            .map(|i| norm(((i % width) * 255 / width.max(2).saturating_sub(1).max(1)) as f32))
            .collect(),
        noise,
    ]
}

/// What `triad bundle build` needs.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// The ONNX bytes.
    pub model_onnx: Vec<u8>,
    /// The model manifest (name, version, kind, input, output); bundle keys are replaced.
    pub manifest: ModelManifest,
    /// The cell or asset.
    pub target: String,
    /// Golden inputs (empty: [`default_golden_inputs`]).
    pub golden_inputs: Vec<Vec<f32>>,
    /// Expected outputs, one per input; `None`: computed with tract now.
    pub golden_outputs: Option<Vec<Vec<f32>>>,
    /// Largest allowed absolute difference.
    pub tolerance: f32,
}

/// Assemble an unsigned bundle: model, golden files and manifest with the
/// SHA-256 of every file. Expected outputs not given are computed by
/// running the model with tract, the engine of the node.
pub fn build(spec: BuildSpec) -> Result<Bundle, BundleError> {
    let bad = |p: String| BundleError::Manifest { problems: vec![p] };
    let mut m = spec.manifest;
    if parse_version(&m.version).is_none() {
        return Err(bad(format!("version {:?}: use major.minor.patch", m.version)));
    }
    triad_schemas::ids::validate("target", &spec.target).map_err(|e| bad(format!("target: {e}")))?;
    m.target = Some(spec.target.clone());
    m.files.clear();
    m.golden = None;
    // Every declared size is checked before anything is allocated from it.
    m.validate().map_err(|problems| BundleError::Manifest { problems })?;
    let (Some(n_in), Some(n_out)) = (m.input_values(), m.output_values()) else {
        unreachable!("validate checked the shapes");
    };
    if !(spec.tolerance.is_finite() && (0.0..=1.0).contains(&spec.tolerance)) {
        return Err(bad(format!(
            "golden.tolerance = {}: must be within 0..=1",
            spec.tolerance
        )));
    }
    if spec.golden_inputs.len() > bounds::MAX_GOLDEN_CASES {
        return Err(bad(format!(
            "{} golden inputs; the bound is {}: a few representative cases suffice",
            spec.golden_inputs.len(),
            bounds::MAX_GOLDEN_CASES
        )));
    }
    let inputs = if spec.golden_inputs.is_empty() {
        default_golden_inputs(&m)
    } else {
        spec.golden_inputs
    };
    let non_finite = |case: usize, what: &'static str, values: &[f32]| {
        values
            .iter()
            .position(|v| !v.is_finite())
            .map(|index| BundleError::GoldenNonFinite {
                case,
                what,
                file: format!("golden/{case}.{}.f32", &what[..if what == "input" { 2 } else { 3 }]),
                index,
                value: values[index],
            })
    };
    for (i, x) in inputs.iter().enumerate() {
        if x.len() != n_in {
            return Err(bad(format!(
                "golden input {i} has {} values; the input shape {:?} needs {n_in}",
                x.len(),
                m.input.shape
            )));
        }
        if let Some(e) = non_finite(i, "input", x) {
            return Err(e);
        }
    }
    let outputs = match spec.golden_outputs {
        Some(o) => {
            if o.len() != inputs.len() {
                return Err(bad(format!("{} golden outputs for {} inputs", o.len(), inputs.len())));
            }
            o
        }
        None => {
            let model = std::sync::Arc::new(
                triad_inspect::OnnxModel::load(&spec.model_onnx, m.clone()).map_err(|e| bad(e.to_string()))?,
            );
            let mut session = model.session().map_err(|e| bad(e.to_string()))?;
            let mut outs = Vec::new();
            for (case, x) in inputs.iter().enumerate() {
                let mut y = Vec::new();
                session.infer(x, &mut y).map_err(|e| bad(e.to_string()))?;
                if let Some(index) = y.iter().position(|v| !v.is_finite()) {
                    return Err(BundleError::ModelOutputNonFinite {
                        case,
                        output: m.output.name.clone(),
                        index,
                        value: y[index],
                    });
                }
                outs.push(y);
            }
            outs
        }
    };
    for (i, y) in outputs.iter().enumerate() {
        if y.len() != n_out {
            return Err(bad(format!(
                "golden output {i} has {} values; the output shape {:?} needs {n_out}",
                y.len(),
                m.output.shape
            )));
        }
        if let Some(e) = non_finite(i, "output", y) {
            return Err(e);
        }
    }
    let mut b = Bundle::new();
    let mut cases = Vec::new();
    b.insert(MODEL_FILE, spec.model_onnx)?;
    for (i, (x, y)) in inputs.iter().zip(&outputs).enumerate() {
        let (ip, op) = (format!("golden/{i}.in.f32"), format!("golden/{i}.out.f32"));
        b.insert(&ip, f32_bytes(x))?;
        b.insert(&op, f32_bytes(y))?;
        cases.push(GoldenCase { input: ip, output: op });
    }
    for p in b.paths().map(str::to_string).collect::<Vec<_>>() {
        let digest = sha256_hex(b.get(&p).expect("listed"));
        m.files.insert(p, digest);
    }
    m.golden = Some(GoldenSpec {
        tolerance: spec.tolerance,
        cases,
    });
    b.insert(
        MANIFEST_FILE,
        serde_json::to_vec_pretty(&m).expect("manifest serialises"),
    )?;
    parse_manifest(&b)?;
    Ok(b)
}

/// Builders of hostile archives for the attack tests; the node never uses
/// them (feature `test-support`, which `triad-tests` turns on).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    /// A USTAR archive with arbitrary (unchecked) entry names and types
    /// (`b'0'` file, `b'2'` symbolic link, …).
    pub fn raw_tar(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[108..115].copy_from_slice(b"0000000");
            h[116..123].copy_from_slice(b"0000000");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[136..147].copy_from_slice(b"00000000000");
            h[156] = *kind;
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|b| *b as u32).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::raw_tar;
    use super::*;

    #[test]
    fn paths_are_cleaned_or_refused_by_name() {
        assert_eq!(clean_path("./golden/0.in.f32").unwrap(), "golden/0.in.f32");
        for (p, why) in [
            ("../etc/passwd", "climbs out"),
            ("golden/../../x", "climbs out"),
            ("/etc/passwd", "absolute"),
            ("a\\b", "backslash"),
            (".", "empty"),
        ] {
            let e = clean_path(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn archives_roundtrip_and_hostile_ones_are_refused() {
        let mut b = Bundle::new();
        b.insert("manifest.json", b"{}".to_vec()).unwrap();
        b.insert("golden/0.in.f32", vec![1, 2, 3, 4]).unwrap();
        let lim = BundleLimits::default();
        assert_eq!(Bundle::from_archive(&b.to_archive(), lim).unwrap(), b);
        // One top folder is stripped.
        let t = raw_tar(&[
            ("w-1.1.0/manifest.json", b'0', b"{}"),
            ("w-1.1.0/golden/0.in.f32", b'0', &[1, 2, 3, 4]),
        ]);
        assert_eq!(Bundle::from_archive(&t, lim).unwrap(), b);
        let bad = raw_tar(&[("manifest.json", b'0', b"{}"), ("../../evil", b'0', b"x")]);
        let e = Bundle::from_archive(&bad, lim).unwrap_err();
        assert!(matches!(e, BundleError::UnsafePath { .. }), "{e}");
        assert!(e.to_string().contains("\"../../evil\""), "{e}");
        let abs = raw_tar(&[("/tmp/evil", b'0', b"x")]);
        assert!(matches!(
            Bundle::from_archive(&abs, lim),
            Err(BundleError::UnsafePath { .. })
        ));
        let link = raw_tar(&[("model.onnx", b'2', b"")]);
        assert!(
            Bundle::from_archive(&link, lim)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        let dup = raw_tar(&[("a", b'0', b"1"), ("./a", b'0', b"2")]);
        assert!(matches!(
            Bundle::from_archive(&dup, lim),
            Err(BundleError::Duplicate { .. })
        ));
        let small = BundleLimits {
            max_total_bytes: 1000,
            max_files: 4,
        };
        let big = raw_tar(&[("model.onnx", b'0', &[7u8; 2000])]);
        assert!(matches!(
            Bundle::from_archive(&big, small),
            Err(BundleError::TooLarge { .. })
        ));
        // A gzip bomb: small archive, large contents.
        let mut bomb = Bundle::new();
        bomb.insert("model.onnx", vec![0u8; 100_000]).unwrap();
        let gz = bomb.to_archive();
        assert!(gz.len() < 1000);
        assert!(matches!(
            Bundle::from_archive(&gz, small),
            Err(BundleError::TooLarge { .. })
        ));
        assert!(matches!(
            Bundle::from_archive(b"definitely not a tar archive, just text padding...", lim),
            Err(BundleError::Archive { .. })
        ));
    }

    #[test]
    fn canonical_json_sorts_keys_and_ignores_formatting() {
        let a: serde_json::Value = serde_json::from_str(r#"{ "b": [1, 2.5, {"z": 1, "a": "x"}], "a": null }"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":null,"b":[1,2.50,{"a":"x","z":1}]}"#).unwrap();
        assert_eq!(canonical_json(&a), br#"{"a":null,"b":[1,2.5,{"a":"x","z":1}]}"#);
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn build_sign_and_parse_the_builtin_model() {
        let manifest: ModelManifest = serde_json::from_str(triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap();
        let mut b = build(BuildSpec {
            model_onnx: triad_inspect::builtin::WELD_SEAM_ONNX.to_vec(),
            manifest,
            target: "cell_2245".into(),
            golden_inputs: vec![],
            golden_outputs: None,
            tolerance: 1e-4,
        })
        .unwrap();
        let (k, _) = SigningKey::generate("release").unwrap();
        let digest = sign(&mut b, &k).unwrap();
        let p = parse_manifest(&b).unwrap();
        assert_eq!(p.digest, digest);
        assert_eq!(p.target(), "cell_2245");
        assert_eq!(p.manifest.golden.as_ref().unwrap().cases.len(), 4);
        assert_eq!(parse_signature(&b).unwrap().unwrap().key_id, "release");
        // Pretty-printing the manifest differently keeps the digest.
        let v: serde_json::Value = serde_json::from_slice(b.get(MANIFEST_FILE).unwrap()).unwrap();
        b.insert(MANIFEST_FILE, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(parse_manifest(&b).unwrap().digest, digest);
    }

    /// One pax record: `"<len> <key>=<value>\n"`, the length counting itself.
    fn pax(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut n = body.len() + 1;
        while format!("{n}{body}").len() != n {
            n += 1;
        }
        format!("{n}{body}").into_bytes()
    }

    #[test]
    fn what_standard_tools_write_is_read() {
        let lim = BundleLimits::default();
        let mut want = Bundle::new();
        want.insert("manifest.json", b"{}".to_vec()).unwrap();
        want.insert("golden/0.in.f32", vec![1, 2, 3, 4]).unwrap();
        // GNU tar -C DIR -cf B .: `./` and `./golden/` folders first.
        let gnu = raw_tar(&[
            ("./", b'5', b""),
            ("./manifest.json", b'0', b"{}"),
            ("./golden/", b'5', b""),
            ("./golden/0.in.f32", b'0', &[1, 2, 3, 4]),
        ]);
        assert_eq!(Bundle::from_archive(&gnu, lim).unwrap(), want);
        // git archive: a pax global header; Python: "." as the folder; v7:
        // a folder is a file entry whose name ends with `/`.
        let git = raw_tar(&[
            ("pax_global_header", b'g', &pax("comment", "0123abcd")),
            (".", b'5', b""),
            ("golden/", b'\0', b""),
            ("manifest.json", b'0', b"{}"),
            ("golden/0.in.f32", b'0', &[1, 2, 3, 4]),
        ]);
        assert_eq!(Bundle::from_archive(&git, lim).unwrap(), want);
        // Per-file pax headers: the path they give is the entry's path.
        let mut x = pax("mtime", "1.5");
        x.extend(pax("path", "golden/0.in.f32"));
        let posix = raw_tar(&[
            ("./PaxHeaders/m", b'x', &pax("atime", "1.5")),
            ("manifest.json", b'0', b"{}"),
            ("./PaxHeaders/g", b'x', &x),
            ("short-name", b'0', &[1, 2, 3, 4]),
        ]);
        assert_eq!(Bundle::from_archive(&posix, lim).unwrap(), want);
        // Several gzip members are one stream.
        let plain = raw_tar(&[("manifest.json", b'0', b"{}"), ("golden/0.in.f32", b'0', &[1, 2, 3, 4])]);
        let gz = |part: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            e.finish().unwrap()
        };
        let mut multi = gz(&plain[..512]);
        multi.extend(gz(&plain[512..]));
        assert_eq!(Bundle::from_archive(&multi, lim).unwrap(), want);
    }

    #[test]
    fn hostile_entries_stay_refused_and_declared_sizes_are_not_trusted() {
        let lim = BundleLimits::default();
        // A pax header hiding `..` behind a harmless ustar name.
        let hidden = raw_tar(&[("x", b'x', &pax("path", "../evil")), ("ok", b'0', b"1")]);
        let e = Bundle::from_archive(&hidden, lim).unwrap_err();
        assert!(e.to_string().contains("\"../evil\" is refused"), "{e}");
        // An unsafe folder is refused too, as are devices and FIFOs.
        let e = Bundle::from_archive(&raw_tar(&[("../up/", b'5', b"")]), lim).unwrap_err();
        assert!(matches!(e, BundleError::UnsafePath { .. }), "{e}");
        for kind in [b'3', b'4', b'6'] {
            let e = Bundle::from_archive(&raw_tar(&[("dev", kind, b"")]), lim).unwrap_err();
            assert!(matches!(e, BundleError::NotAFile { .. }), "{e}");
        }
        // Folders and headers count as entries.
        let names: Vec<String> = (0..300).map(|i| format!("d{i}/")).collect();
        let many: Vec<(&str, u8, &[u8])> = names.iter().map(|n| (n.as_str(), b'5', &b""[..])).collect();
        let e = Bundle::from_archive(&raw_tar(&many), lim).unwrap_err();
        assert_eq!(e, BundleError::TooManyEntries { limit: 272 });
        // A header declaring 8 GiB that the archive does not hold: refused
        // without reserving the 8 GiB, even under the client's huge limits.
        let mut t = raw_tar(&[("model.onnx", b'0', b"abc")]);
        t[124..135].copy_from_slice(b"77777777777");
        t[148..156].copy_from_slice(b"        ");
        let sum: u32 = t[..512].iter().map(|b| *b as u32).sum();
        t[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let huge = BundleLimits {
            max_total_bytes: u64::MAX / 2,
            max_files: 10_000,
        };
        let e = Bundle::from_archive(&t, huge).unwrap_err();
        assert!(matches!(e, BundleError::Archive { .. }), "{e}");
        let e = Bundle::from_archive(&t, lim).unwrap_err();
        assert!(matches!(e, BundleError::TooLarge { .. }), "{e}");
        // Other compressions are named.
        let e = Bundle::from_archive(b"\xfd7zXZ\0 and more bytes of an xz stream", lim).unwrap_err();
        assert!(e.to_string().contains("it is an xz file"), "{e}");
    }

    #[test]
    fn build_refuses_huge_shapes_and_non_finite_golden_values() {
        let weld: ModelManifest = serde_json::from_str(triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap();
        let spec = |m: ModelManifest, outputs: Option<Vec<Vec<f32>>>| BuildSpec {
            model_onnx: triad_inspect::builtin::WELD_SEAM_ONNX.to_vec(),
            manifest: m,
            target: "cell_2245".into(),
            golden_inputs: vec![],
            golden_outputs: outputs,
            tolerance: 1e-4,
        };
        let mut huge = weld.clone();
        huge.input.shape = vec![1, 1, 60000, 60000];
        let e = build(spec(huge, None)).unwrap_err().to_string();
        assert!(
            e.contains("input.shape = [1, 1, 60000, 60000] holds 3600000000 values"),
            "{e}"
        );
        let mut y = vec![vec![0.0f32; 192]; 4];
        y[2][9] = f32::NEG_INFINITY;
        let e = build(spec(weld.clone(), Some(y))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bundle file golden/2.out.f32 (golden case 2 output) holds -inf at element 9: golden values must be finite; rebuild the bundle from finite inputs, with a model that outputs finite values on them"
        );
        // A bundle whose golden output was made NaN after the build.
        let mut b = build(spec(weld, None)).unwrap();
        let mut out = f32_values(b.get("golden/1.out.f32").unwrap()).unwrap();
        out[4] = f32::NAN;
        b.insert("golden/1.out.f32", f32_bytes(&out)).unwrap();
        let p = parse_manifest(&b).unwrap();
        let e = check_golden_files(&b, &p).unwrap_err();
        assert!(
            matches!(e, BundleError::GoldenNonFinite { case: 1, index: 4, .. }),
            "{e}"
        );
        let (k, _) = SigningKey::generate("release").unwrap();
        assert_eq!(sign(&mut b, &k).unwrap_err().to_string(), e.to_string());
        b.insert("golden/1.out.f32", vec![0; 12]).unwrap();
        let e = check_golden_files(&b, &parse_manifest(&b).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("is 12 bytes, but the output shape declares 192 f32 values"),
            "{e}"
        );
    }
}
