//! Fuzzing bundle archive unpacking and manifest parsing (issue 9):
//! `models::bundle::Bundle::from_archive`, `parse_manifest` (which runs
//! `triad_inspect`'s `ModelManifest::validate`) and `check_golden_files`.
//!
//! - `any_archive_is_unpacked_or_refused_within_its_limits`: archives from
//!   `fuzz/corpus/bundle/` (GNU tar with `./`, pax, bsdtar, `git archive`
//!   with its pax global header, Python's tarfile, gzip -1/-9/multi-member,
//!   and hostile ones), mutated. Nothing panics; an accepted bundle keeps
//!   its limits (files, bytes) and only clean relative paths; and the peak
//!   allocation stays within a small multiple of the byte limit whatever
//!   sizes the archive declares.
//! - `any_manifest_is_parsed_or_refused_with_its_problems`: `manifest.json`
//!   texts from `fuzz/corpus/manifest/` mutated, in a bundle with golden
//!   files; nothing panics, a refusal names its problems, an accepted
//!   manifest's shapes are within `triad_inspect`'s bounds.
//! - `corpus_replays`: every archive seed not named `refused-*` is unpacked
//!   and its manifest and golden files accepted; every `refused-*` seed is
//!   refused somewhere on that path. The `[1,1,60000,60000]` manifest is
//!   refused naming `input.shape`, NaN golden outputs are refused naming
//!   the file and NaN.
//!
//! `cargo test --workspace --test fuzz_bundle` runs each 2 s;
//! `scripts/fuzz.sh` runs them longer.

#[path = "../../fuzz/support.rs"]
mod support;

use support::{PeakAlloc, Stats, budget, corpus, mutate};
use triad_edge::models::bundle::{
    Bundle, BundleError, BundleLimits, MANIFEST_FILE, check_golden_files, clean_path, parse_manifest,
};
use triad_inspect::manifest::bounds;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const LIMITS: BundleLimits = BundleLimits {
    max_total_bytes: 1024 * 1024,
    max_files: 64,
};

/// Unpack, parse the manifest, check the golden files: the path every
/// bundle from outside takes before its signature and model are checked.
fn accept(bundle: &Bundle) -> Result<(), BundleError> {
    let parsed = parse_manifest(bundle)?;
    for dims in [&parsed.manifest.input.shape, &parsed.manifest.output.shape] {
        assert!(
            !dims.is_empty() && dims.len() <= bounds::MAX_RANK,
            "accepted shape {dims:?}"
        );
        let n = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        assert!(
            n.is_some_and(|n| n <= bounds::MAX_TENSOR_VALUES),
            "accepted shape {dims:?}"
        );
    }
    check_golden_files(bundle, &parsed)
}

fn check_archive(bytes: &[u8]) -> Result<(), BundleError> {
    let (unpacked, peak) = PeakAlloc::measure(|| Bundle::from_archive(bytes, LIMITS));
    let bound = 3 * LIMITS.max_total_bytes as usize + 2 * 1024 * 1024;
    assert!(
        peak <= bound,
        "unpacking a {}-byte archive had {peak} bytes live at once (bound {bound})",
        bytes.len()
    );
    let bundle = match unpacked {
        Ok(b) => b,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return Err(e);
        }
    };
    assert!(bundle.paths().count() <= LIMITS.max_files, "more files than the limit");
    assert!(
        bundle.total_bytes() <= LIMITS.max_total_bytes,
        "more bytes than the limit"
    );
    for p in bundle.paths() {
        assert_eq!(
            clean_path(p).ok().as_deref(),
            Some(p),
            "an unclean path was kept: {p:?}"
        );
    }
    accept(&bundle)
}

#[test]
fn any_archive_is_unpacked_or_refused_within_its_limits() {
    let seeds: Vec<Vec<u8>> = corpus("bundle").into_iter().map(|(_, b)| b).collect();
    let stats = Stats::new("bundle_archive");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        let _ = check_archive(&mutate(&seeds, input));
    });
}

/// A bundle around `manifest`: a model, one golden input, a finite and a
/// NaN golden output (the manifest seeds refer to these paths).
fn bundle_with(manifest: &[u8]) -> Bundle {
    let mut b = Bundle::new();
    b.insert(MANIFEST_FILE, manifest.to_vec()).unwrap();
    b.insert("model.onnx", b"\x08\x07\x12\x04onnx-fuzz-seed\x00".to_vec())
        .unwrap();
    b.insert("golden/0.in.f32", vec![0; 64 * 64 * 4]).unwrap();
    let out: Vec<u8> = std::iter::repeat_n(0.25f32.to_le_bytes(), 192).flatten().collect();
    b.insert("golden/0.out.f32", out).unwrap();
    let nan: Vec<u8> = std::iter::repeat_n(f32::NAN.to_le_bytes(), 192).flatten().collect();
    b.insert("golden/nan.out.f32", nan).unwrap();
    b
}

fn check_manifest(manifest: &[u8]) -> Result<(), BundleError> {
    let bundle = bundle_with(manifest);
    let (result, peak) = PeakAlloc::measure(|| accept(&bundle));
    let bound = 2 * 1024 * 1024 + 64 * manifest.len();
    assert!(
        peak <= bound,
        "a {}-byte manifest had {peak} bytes live (bound {bound})",
        manifest.len()
    );
    if let Err(BundleError::Manifest { problems }) = &result {
        assert!(!problems.is_empty(), "a manifest refused without a problem");
        assert!(problems.iter().all(|p| !p.trim().is_empty()));
    }
    result
}

#[test]
fn any_manifest_is_parsed_or_refused_with_its_problems() {
    let seeds: Vec<Vec<u8>> = corpus("manifest").into_iter().map(|(_, b)| b).collect();
    let stats = Stats::new("bundle_manifest");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        let _ = check_manifest(&mutate(&seeds, input));
    });
}

#[test]
fn corpus_replays() {
    for (name, bytes) in corpus("bundle") {
        let result = check_archive(&bytes);
        if name.starts_with("refused-") {
            assert!(result.is_err(), "{name} must be refused");
        } else {
            result.unwrap_or_else(|e| panic!("{name} must be accepted: {e}"));
        }
    }
    for (name, bytes) in corpus("manifest") {
        let result = check_manifest(&bytes);
        let text = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
        match name.as_str() {
            "refused-shape-1-1-60000-60000.json" => {
                assert!(
                    text.contains("input.shape") && text.contains("3600000000 values"),
                    "{name}: {text}"
                )
            }
            "refused-nan-golden-output.json" => {
                assert!(
                    text.contains("golden/nan.out.f32") && text.contains("NaN"),
                    "{name}: {text}"
                )
            }
            n if n.starts_with("refused-") => assert!(result.is_err(), "{name} must be refused"),
            _ => assert!(result.is_ok(), "{name} must be accepted: {text}"),
        }
    }
}
