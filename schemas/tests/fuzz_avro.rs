//! Fuzzing Avro decoding of every bus message (issue 9).
//!
//! - `hostile_datums_never_panic_and_allocate_in_proportion`: bytes (seeds
//!   from `fuzz/corpus/avro/`, mutated) go through `validate`, `decode` and
//!   `decode_envelope` of every message kind. None may panic; `validate` and
//!   `decode` agree; a datum that decodes re-encodes to a datum that decodes
//!   to the same message; and the decoder never has more than
//!   `ALLOC_PER_BYTE` x the datum's length (plus a constant) live at once,
//!   whatever lengths the datum declares.
//! - `generated_messages_roundtrip`: messages of every kind built from fuzz
//!   bytes (any strings, any floats including NaN, any option) encode,
//!   validate and decode back to the same message.
//! - `corpus_replays`: every seed, as it is, under the same checks, plus the
//!   seeds named `*-refused-*` are refused.
//!
//! `cargo test --workspace --test fuzz_avro` runs each for 2 s;
//! `scripts/fuzz.sh` runs them longer.

#[path = "../../fuzz/support.rs"]
mod support;

use support::{PeakAlloc, Stats, budget, corpus, mutate};
use triad_schemas::codec::{self, MAX_DATUM_BYTES};
use triad_schemas::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Bytes the decoder may have live per byte of datum: one apache-avro
/// `Value` (and its share of a `Vec`) per byte at worst, then the Rust value.
const ALLOC_PER_BYTE: usize = 256;
/// Fixed allowance (schema resolution, error text).
const ALLOC_BASE: usize = 256 * 1024;

fn check_kind<M: BusMessage>(bytes: &[u8]) {
    let (validated, peak_v) = PeakAlloc::measure(|| codec::validate(M::KIND, bytes));
    let (decoded, peak_d) = PeakAlloc::measure(|| codec::decode::<M>(bytes));
    let (_envelope, peak_e) = PeakAlloc::measure(|| codec::decode_envelope(M::KIND, bytes));
    let bound = ALLOC_BASE + ALLOC_PER_BYTE * bytes.len();
    for (what, peak) in [("validate", peak_v), ("decode", peak_d), ("decode_envelope", peak_e)] {
        assert!(
            peak <= bound,
            "{what} of a {}-byte {:?} datum had {peak} bytes live at once (bound {bound})",
            bytes.len(),
            M::KIND
        );
    }
    match (&validated, &decoded) {
        (Ok(()), Ok(msg)) => {
            let again = codec::encode(msg).expect("a decoded message encodes");
            let back: M = codec::decode(&again).expect("a re-encoded message decodes");
            assert_eq!(
                format!("{back:?}"),
                format!("{msg:?}"),
                "{:?} changed in a round trip",
                M::KIND
            );
        }
        (Err(_), Err(_)) => {}
        (v, d) => panic!(
            "validate and decode disagree on a {}-byte {:?} datum: validate {:?}, decode {:?}",
            bytes.len(),
            M::KIND,
            v.as_ref().err().map(ToString::to_string),
            d.as_ref().err().map(ToString::to_string)
        ),
    }
    if let Err(e) = &decoded {
        let text = e.to_string();
        assert!(
            text.contains(&format!("{:?}", M::KIND)),
            "the error names the kind: {text}"
        );
    }
}

fn check_all_kinds(bytes: &[u8]) {
    check_kind::<ControlCommand>(bytes);
    check_kind::<ControlState>(bytes);
    check_kind::<InspectionResult>(bytes);
    check_kind::<TwinStatus>(bytes);
    check_kind::<TwinAlert>(bytes);
    check_kind::<WorkOrder>(bytes);
    check_kind::<AuditEvent>(bytes);
    check_kind::<ModelRequest>(bytes);
}

fn seeds() -> Vec<Vec<u8>> {
    corpus("avro").into_iter().map(|(_, b)| b).collect()
}

#[test]
fn hostile_datums_never_panic_and_allocate_in_proportion() {
    let seeds = seeds();
    let stats = Stats::new("avro_decode");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        check_all_kinds(&mutate(&seeds, input))
    });
}

#[test]
fn corpus_replays() {
    for (name, bytes) in corpus("avro") {
        check_all_kinds(&bytes);
        // `any-refused-*` is refused as every kind, `<schema file>-refused-*`
        // as that kind.
        for kind in MessageKind::ALL {
            let file = codec::schema_file(kind).trim_end_matches(".avsc");
            if name.starts_with("any-refused-") || name.starts_with(&format!("{file}-refused-")) {
                assert!(
                    codec::validate(kind, &bytes).is_err(),
                    "{name} must be refused as {kind:?}"
                );
            }
        }
    }
}

#[test]
fn a_2_pow_60_byte_string_is_refused_without_allocating_it() {
    // schema_version 1, then `node` declares 2^60 bytes.
    let datum = [0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, b'x'];
    let (err, peak) = PeakAlloc::measure(|| codec::decode::<WorkOrder>(&datum).unwrap_err());
    assert!(err.to_string().contains("envelope.node"), "{err}");
    assert!(peak < ALLOC_BASE, "{peak} bytes live while refusing it");
    assert_eq!(codec::bound_avro_allocations(), MAX_DATUM_BYTES);
}

/// Builds values from fuzz bytes; runs out into zeros.
struct Gen<'a>(&'a [u8]);

impl Gen<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.bytes(8).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes(4).try_into().unwrap())
    }
    fn f64(&mut self) -> f64 {
        f64::from_bits(self.i64() as u64)
    }
    fn string(&mut self) -> String {
        let n = self.byte() as usize % 40;
        String::from_utf8_lossy(&self.bytes(n)).into_owned()
    }
    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.flag() { Some(f(self)) } else { None }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.byte() as usize % from.len()]
    }
    fn envelope(&mut self) -> Envelope {
        Envelope {
            schema_version: self.i32(),
            node: self.string(),
            sequence: self.i64(),
            stamp_ns: self.i64(),
            clock: self.pick(&[ClockState::Locked, ClockState::Holdover, ClockState::FreeRunning]),
            clock_offset_ns: self.opt(Self::i64),
        }
    }
}

fn roundtrip<M: BusMessage>(m: M) {
    let bytes = codec::encode(&m).unwrap_or_else(|e| panic!("{m:?} does not encode: {e}"));
    codec::validate(M::KIND, &bytes).unwrap();
    assert_eq!(
        codec::check_declared_sizes(codec::schema(M::KIND).unwrap(), &bytes),
        Ok(0)
    );
    let back: M = codec::decode(&bytes).unwrap();
    // Debug text compares NaN and -0.0 as the bits they are.
    assert_eq!(format!("{back:?}"), format!("{m:?}"));
    assert_eq!(codec::decode_envelope(M::KIND, &bytes).unwrap(), *m.envelope());
}

fn roundtrip_all(g: &mut Gen) {
    roundtrip(ControlCommand {
        envelope: g.envelope(),
        command_id: g.string(),
        axis: g.string(),
        action: g.pick(&[
            CommandAction::Start,
            CommandAction::Stop,
            CommandAction::SetRate,
            CommandAction::Derate,
            CommandAction::Resume,
            CommandAction::ResetFault,
            CommandAction::SkipReinspection,
        ]),
        value: g.opt(Gen::f64),
        reason: g.string(),
        issued_by: g.string(),
        token: g.opt(Gen::string),
    });
    roundtrip(ControlState {
        envelope: g.envelope(),
        axis: g.string(),
        mode: g.pick(&[
            AxisMode::Stopped,
            AxisMode::Running,
            AxisMode::Derated,
            AxisMode::SafeState,
        ]),
        ppm_setpoint: g.f64(),
        ppm_actual: g.f64(),
        weld_current_a: g.f64(),
        weld_temp_c: g.f64(),
        parts_total: g.i64(),
        safe_state_reason: g.opt(Gen::string),
        cycles: g.i64(),
        overruns: g.i64(),
        jitter_p99_us: g.f64(),
        jitter_max_us: g.f64(),
    });
    let defects = (0..g.byte() % 5)
        .map(|_| DefectBox {
            class: g.string(),
            score: g.f64(),
            x: g.i32(),
            y: g.i32(),
            w: g.i32(),
            h: g.i32(),
        })
        .collect();
    roundtrip(InspectionResult {
        envelope: g.envelope(),
        cell: g.string(),
        part_id: g.string(),
        weld_index: g.i32(),
        batch_id: g.string(),
        frame_stamp_ns: g.i64(),
        roi_hash: g.string(),
        verdict: g.pick(&[Verdict::Pass, Verdict::Fail]),
        defects,
        model_name: g.string(),
        model_version: g.string(),
        latency_us: g.i64(),
    });
    roundtrip(TwinStatus {
        envelope: g.envelope(),
        asset: g.string(),
        measured_c: g.f64(),
        predicted_c: g.f64(),
        residual_c: g.f64(),
        band_c: g.f64(),
        state: g.pick(&[TwinState::Nominal, TwinState::Excursion, TwinState::Alert]),
        outside_since_ns: g.opt(Gen::i64),
        health: g.f64(),
        rul_s: g.opt(Gen::f64),
        model_version: g.string(),
    });
    roundtrip(TwinAlert {
        envelope: g.envelope(),
        alert_id: g.string(),
        asset: g.string(),
        kind: AlertKind::ResidualOutOfBand,
        state: g.pick(&[AlertState::Raised, AlertState::Cleared, AlertState::Acknowledged]),
        severity: g.pick(&[Severity::Warning, Severity::Critical]),
        onset_ns: g.i64(),
        raised_ns: g.i64(),
        residual_c: g.f64(),
        band_c: g.f64(),
        persistence_ms: g.i64(),
        message: g.string(),
    });
    let batches = (0..g.byte() % 5).map(|_| g.string()).collect();
    roundtrip(WorkOrder {
        envelope: g.envelope(),
        work_order_id: g.string(),
        line: g.string(),
        asset: g.string(),
        cell: g.string(),
        axis: g.string(),
        alert_id: g.string(),
        priority: g.pick(&[Priority::Low, Priority::Normal, Priority::High, Priority::Urgent]),
        defect_probability: g.opt(Gen::f64),
        baseline_defect_rate: g.f64(),
        recent_defect_rate: g.f64(),
        elevated_probability: g.f64(),
        batches,
        frames_analysed: g.i64(),
        defects_found: g.i64(),
        ppm_before: g.f64(),
        ppm_after: g.f64(),
        chain: ChainStamps {
            fault_onset_ns: g.i64(),
            alert_ns: g.i64(),
            derate_ns: g.opt(Gen::i64),
            analysis_ns: g.i64(),
            workorder_ns: g.i64(),
        },
        summary: g.string(),
    });
    roundtrip(AuditEvent {
        envelope: g.envelope(),
        event_id: g.string(),
        action: g.string(),
        outcome: g.pick(&[AuditOutcome::Accepted, AuditOutcome::Refused]),
        target: g.string(),
        code: g.string(),
        reason: g.string(),
        actor: g.opt(Gen::string),
        key_id: g.opt(Gen::string),
        token_id: g.opt(Gen::string),
        origin: g.string(),
        bundle_name: g.opt(Gen::string),
        bundle_version: g.opt(Gen::string),
        bundle_digest: g.opt(Gen::string),
        bundle_signer: g.opt(Gen::string),
        from_version: g.opt(Gen::string),
        to_version: g.opt(Gen::string),
    });
    roundtrip(ModelRequest {
        envelope: g.envelope(),
        request_id: g.string(),
        target: g.string(),
        action: g.pick(&[ModelAction::Deploy, ModelAction::Rollback]),
        token: g.string(),
        bundle: g.opt(|g| {
            let n = g.byte() as usize * 16;
            g.bytes(n)
        }),
        issued_by: g.string(),
    });
}

#[test]
fn generated_messages_roundtrip() {
    let stats = Stats::new("avro_roundtrip");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        roundtrip_all(&mut Gen(input))
    });
}
