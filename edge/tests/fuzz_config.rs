//! Fuzzing the config loader (issue 9): `config::from_toml_str` and, for
//! the seeds, `config::load` of a file (figment and `TRIAD_*` overrides).
//!
//! - `any_text_is_loaded_or_refused_with_named_problems`: seeds from
//!   `fuzz/corpus/config/` mutated; the loader never panics, a refusal lists
//!   at least one problem and each names a key and says what is wrong, and
//!   the loader's peak allocation stays proportional to the text.
//! - `corpus_replays`: each seed through both loaders, which must agree;
//!   `refused-*` seeds are refused, the others load. The 200 `[[axes]]` seed
//!   is refused naming `axes` and the count.
//!
//! `cargo test --workspace --test fuzz_config` runs 2 s; `scripts/fuzz.sh`
//! runs it longer.

#[path = "../../fuzz/support.rs"]
mod support;

use support::{PeakAlloc, Stats, budget, corpus, mutate};
use triad_edge::config::{self, ConfigError, ConfigSource};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Bytes the loader may have live at once per byte of text, and a base.
const ALLOC_PER_BYTE: usize = 512;
const ALLOC_BASE: usize = 4 * 1024 * 1024;

fn check_refusal(e: &ConfigError, text_len: usize) {
    assert!(!e.problems.is_empty(), "a refusal without a problem ({text_len} bytes)");
    for p in &e.problems {
        assert!(!p.key.is_empty(), "a problem without a key: {p:?}");
        assert!(!p.message.trim().is_empty(), "a problem without a message: {p:?}");
    }
}

fn check_text(bytes: &[u8]) -> Result<(), ConfigError> {
    let text = String::from_utf8_lossy(bytes);
    let (result, peak) = PeakAlloc::measure(|| config::from_toml_str(&text));
    let bound = ALLOC_BASE + ALLOC_PER_BYTE * text.len();
    assert!(
        peak <= bound,
        "loading {} bytes of config had {peak} bytes live at once (bound {bound})",
        text.len()
    );
    match &result {
        Ok(cfg) => {
            assert!(!cfg.axes.is_empty(), "a config loaded without an axis");
        }
        Err(e) => check_refusal(e, text.len()),
    }
    result.map(drop)
}

#[test]
fn any_text_is_loaded_or_refused_with_named_problems() {
    let seeds: Vec<Vec<u8>> = corpus("config").into_iter().map(|(_, b)| b).collect();
    let stats = Stats::new("config");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        let _ = check_text(&mutate(&seeds, input));
    });
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    for (name, bytes) in corpus("config") {
        let from_text = check_text(&bytes);
        let from_file = config::load(&ConfigSource::File(dir.join(&name)));
        if let Err(e) = &from_file {
            check_refusal(e, bytes.len());
        }
        assert_eq!(
            from_text.is_ok(),
            from_file.is_ok(),
            "{name}: from_toml_str and load disagree: {:?} / {:?}",
            from_text.as_ref().err().map(ToString::to_string),
            from_file.as_ref().err().map(ToString::to_string)
        );
        if name.starts_with("refused-") {
            assert!(from_text.is_err(), "{name} must be refused");
        } else {
            assert!(from_text.is_ok(), "{name} must load: {}", from_text.unwrap_err());
        }
    }
    let many = corpus("config")
        .into_iter()
        .find(|(n, _)| n == "refused-200-axes.toml")
        .unwrap()
        .1;
    let err = config::from_toml_str(std::str::from_utf8(&many).unwrap()).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.key == "axes" && p.message.contains("201 [[axes]] entries")),
        "{err}"
    );
}
