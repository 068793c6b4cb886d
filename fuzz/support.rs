//! What every fuzz harness of triad shares (included with `#[path]` by
//! `schemas/tests/fuzz_avro.rs` and `edge/tests/fuzz_*.rs`).
//!
//! - [`corpus`]: the seed files of a target, `fuzz/corpus/<target>/*` (a
//!   `pending/` folder below it holds inputs that still fail and is not run).
//! - [`mutate`]: turns a fuzz input into a test case. Random bytes alone
//!   rarely get past a parser's first check, so most inputs are read as an
//!   edit script applied to a seed (overwrite, insert, delete, truncate,
//!   duplicate, splice, and insert a hostile token such as a varint of 2^60
//!   or `NaN`); one input in four is used as it is.
//! - [`budget`]: the time each `bolero::check!` runs under `cargo test` (2 s;
//!   `BOLERO_RANDOM_TEST_TIME_MS` overrides it, which is what
//!   `scripts/fuzz.sh` does for the longer run).
//! - [`PeakAlloc`]: a global allocator that records, per thread, the most
//!   bytes live at once, so a harness can assert that a parser allocates in
//!   proportion to its input and not to what the input declares.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

/// The time budget of one `bolero::check!` under plain `cargo test`.
pub fn budget() -> Duration {
    Duration::from_secs(2)
}

/// Counts the inputs one harness ran and prints the count when dropped
/// (`fuzz-stats harness=<name> inputs=<n>`, which `scripts/fuzz.sh` sums).
pub struct Stats {
    name: &'static str,
    inputs: std::sync::atomic::AtomicU64,
}

impl Stats {
    /// Start counting for harness `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            inputs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// One more input.
    pub fn count(&self) {
        self.inputs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Stats {
    fn drop(&mut self) {
        eprintln!(
            "fuzz-stats harness={} inputs={}",
            self.name,
            self.inputs.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// The seed files of `target`, sorted by name, as (name, bytes).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing ({e})", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap();
            (name, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "corpus {} has no seed", dir.display());
    out
}

/// Hostile tokens the mutator inserts.
const TOKENS: &[&[u8]] = &[
    // Avro zig-zag varints: 2^60, -1, i64::MAX, 2^31.
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20],
    &[0x01],
    &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x10],
    &[0xff; 11],
    b"NaN",
    b"-inf",
    b"1e309",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"4294967296",
    b"[1,1,60000,60000]",
    b"\"\\u0000\"",
    b"\"../../etc/passwd\"",
    b"./",
    b"\0",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"=",
    b"\n[[axes]]\n",
    b"\xff\xfe",
    b"\xf0\x9f\x92\xa9",
    b"Content-Length: 1073741824\r\n",
    b"eyJhbGciOiJub25lIn0",
    b"%00",
];

/// The test case for fuzz `input` over `seeds` (see the module doc).
pub fn mutate(seeds: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = input.split_first() else {
        return seeds.first().cloned().unwrap_or_default();
    };
    if mode % 4 == 0 || seeds.is_empty() {
        return rest.to_vec();
    }
    let Some((&pick, script)) = rest.split_first() else {
        return seeds[mode as usize % seeds.len()].clone();
    };
    let mut out = seeds[pick as usize % seeds.len()].clone();
    for op in script.chunks_exact(4) {
        let pos = u16::from_le_bytes([op[1], op[2]]) as usize % (out.len() + 1);
        let val = op[3];
        match op[0] % 8 {
            0 => {
                if pos < out.len() {
                    out[pos] = val;
                }
            }
            1 => out.insert(pos, val),
            2 => {
                let end = (pos + val as usize % 16 + 1).min(out.len());
                out.drain(pos..end);
            }
            3 => {
                let token = TOKENS[val as usize % TOKENS.len()];
                out.splice(pos..pos, token.iter().copied());
            }
            4 => out.truncate(pos),
            5 => {
                let end = (pos + val as usize % 64 + 1).min(out.len());
                let piece = out[pos..end].to_vec();
                out.splice(pos..pos, piece);
            }
            6 => {
                if pos < out.len() {
                    out[pos] ^= 1 << (val % 8);
                }
            }
            _ => {
                let other = &seeds[val as usize % seeds.len()];
                let from = pos.min(other.len());
                out.truncate(pos);
                out.extend_from_slice(&other[from..]);
            }
        }
        if out.len() > 1 << 20 {
            out.truncate(1 << 20);
        }
    }
    out
}

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// A global allocator that counts, per thread, the bytes live and the most
/// live at once since [`PeakAlloc::reset`].
pub struct PeakAlloc;

impl PeakAlloc {
    /// Start measuring on this thread: the peak becomes what is live now.
    pub fn reset() {
        let live = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(live));
    }

    /// Most bytes live on this thread at once since [`PeakAlloc::reset`],
    /// above what was live then.
    pub fn peak_since(base: usize) -> usize {
        PEAK.with(Cell::get).saturating_sub(base)
    }

    /// Bytes live on this thread now.
    pub fn live() -> usize {
        LIVE.with(Cell::get)
    }

    /// Run `f` and return its result with the most bytes it had live at once.
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
        Self::reset();
        let base = Self::live();
        let out = f();
        (out, Self::peak_since(base))
    }
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get().wrapping_add(n);
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().wrapping_sub(n)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are thread-local cells with const initialisers (no allocation).
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        shrink(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
