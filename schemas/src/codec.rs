//! Avro encoding of bus messages, and the schema checks a bus runs.
//!
//! Messages travel as a bare Avro binary datum (no container header), which is
//! what Pulsar's AVRO schema type expects and what any Avro library decodes
//! with the schema from `schemas/avro/`.
//!
//! ## What decoding may allocate
//!
//! A datum comes from outside (a bus, a broker, a peer), so every size it
//! declares is checked before anything is allocated for it:
//!
//! 1. A payload longer than [`MAX_DATUM_BYTES`] is refused unread.
//! 2. The datum is walked once against its schema without allocating
//!    ([`check_declared_sizes`]): every string and bytes length must fit in the
//!    bytes that remain, every array or map block may not declare more items
//!    than bytes remain, enum and union indexes must exist. The error names the
//!    field (`envelope.node`), the declared size and what remains.
//! 3. Only then does apache-avro build the value, with its own allocation cap
//!    (`apache_avro::util::max_allocation_bytes`) set to [`MAX_DATUM_BYTES`]
//!    as a second fence.
//!
//! So a datum of n bytes makes the decoder allocate O(n), never what a hostile
//! length prefix asks for (apache-avro alone would `vec![0; len]` a declared
//! string before reading it, and reserve a declared array count times the size
//! of its `Value`).

use crate::messages::{BusMessage, MessageKind};
use apache_avro::Schema;
use apache_avro::schema::{Name, UnionSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;
use std::collections::HashMap;
use std::sync::OnceLock;
use thiserror::Error;

/// Version of the current schema set. Goes into every envelope.
pub const SCHEMA_VERSION: i32 = 1;

/// The largest datum triad decodes, in bytes (64 MiB), and the allocation cap
/// given to apache-avro. The largest message is a [`ModelRequest`] carrying
/// a bundle; `models.max_bundle_mb` defaults to 64 and a broker's
/// `maxMessageSize` is 5 MB by default, so a bundle bigger than this goes over
/// HTTP (`triad deploy`), which streams it under its own limit.
///
/// [`ModelRequest`]: crate::ModelRequest
pub const MAX_DATUM_BYTES: usize = 64 * 1024 * 1024;

/// Nesting depth the size check follows before it refuses a datum. Triad's
/// schemas nest three deep; only a recursive schema could go further.
const MAX_DEPTH: usize = 32;

/// A message could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The schema file itself does not parse (a build problem).
    #[error("the Avro schema of {kind:?} does not parse: {source}; fix schemas/avro/{file}")]
    BadSchema {
        /// Which message.
        kind: MessageKind,
        /// Schema file name.
        file: &'static str,
        /// Parser error.
        source: Box<apache_avro::Error>,
    },
    /// The value does not fit the schema.
    #[error("{kind:?} does not fit its Avro schema: {detail}")]
    Encode {
        /// Which message.
        kind: MessageKind,
        /// What the encoder said.
        detail: String,
    },
    /// The payload is larger than [`MAX_DATUM_BYTES`]; it was not read.
    #[error(
        "a {kind:?} datum of {len} bytes is larger than the {max}-byte limit and was not decoded; send bundles this large over HTTP (`triad deploy`) or split the message"
    )]
    TooLarge {
        /// Which message.
        kind: MessageKind,
        /// Payload length.
        len: usize,
        /// The limit, [`MAX_DATUM_BYTES`].
        max: usize,
    },
    /// The bytes are not a valid datum of the schema (truncated, corrupt,
    /// declaring a size they do not hold, or written with another schema).
    #[error("{len} bytes are not a valid {kind:?} datum: {detail}; the producer may use an incompatible schema")]
    Decode {
        /// Which message.
        kind: MessageKind,
        /// Payload length.
        len: usize,
        /// What the decoder said.
        detail: String,
    },
}

/// A new schema cannot read what the registered one wrote.
#[derive(Debug, Error, Clone, PartialEq)]
#[error(
    "schema of {record} is not BACKWARD compatible with the registered one: {detail}. Add new fields with a default, keep old fields, or register the change under a new topic"
)]
pub struct CompatError {
    /// Record name.
    pub record: String,
    /// Which field broke which rule.
    pub detail: String,
}

/// The schema file name of `kind` under `schemas/avro/`.
pub fn schema_file(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::ControlCommand => "control_command.avsc",
        MessageKind::ControlState => "control_state.avsc",
        MessageKind::InspectionResult => "inspection_result.avsc",
        MessageKind::TwinStatus => "twin_status.avsc",
        MessageKind::TwinAlert => "twin_alert.avsc",
        MessageKind::WorkOrder => "work_order.avsc",
        MessageKind::AuditEvent => "audit_event.avsc",
        MessageKind::ModelRequest => "model_request.avsc",
    }
}

/// The Avro schema of `kind` as JSON text, exactly as in `schemas/avro/`.
pub fn schema_json(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::ControlCommand => include_str!("../avro/control_command.avsc"),
        MessageKind::ControlState => include_str!("../avro/control_state.avsc"),
        MessageKind::InspectionResult => include_str!("../avro/inspection_result.avsc"),
        MessageKind::TwinStatus => include_str!("../avro/twin_status.avsc"),
        MessageKind::TwinAlert => include_str!("../avro/twin_alert.avsc"),
        MessageKind::WorkOrder => include_str!("../avro/work_order.avsc"),
        MessageKind::AuditEvent => include_str!("../avro/audit_event.avsc"),
        MessageKind::ModelRequest => include_str!("../avro/model_request.avsc"),
    }
}

fn slot(kind: MessageKind) -> &'static OnceLock<Schema> {
    static SLOTS: [OnceLock<Schema>; MessageKind::ALL.len()] = [const { OnceLock::new() }; MessageKind::ALL.len()];
    let idx = MessageKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL");
    &SLOTS[idx]
}

/// The parsed schema of `kind` (parsed once, then shared).
pub fn schema(kind: MessageKind) -> Result<&'static Schema, CodecError> {
    let cell = slot(kind);
    if let Some(s) = cell.get() {
        return Ok(s);
    }
    let parsed = Schema::parse_str(schema_json(kind)).map_err(|e| CodecError::BadSchema {
        kind,
        file: schema_file(kind),
        source: Box::new(e),
    })?;
    Ok(cell.get_or_init(|| parsed))
}

/// Encode `msg` as an Avro binary datum of its schema.
pub fn encode<M: BusMessage>(msg: &M) -> Result<Vec<u8>, CodecError> {
    let schema = schema(M::KIND)?;
    let mut out = Vec::with_capacity(128);
    apache_avro::write_avro_datum_ref(schema, msg, &mut out).map_err(|e| CodecError::Encode {
        kind: M::KIND,
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Decode an Avro binary datum of `M`'s schema. Trailing bytes are an error.
pub fn decode<M: BusMessage>(bytes: &[u8]) -> Result<M, CodecError> {
    let value = read_datum(M::KIND, bytes, Trailing::Refuse)?;
    apache_avro::from_value::<M>(&value).map_err(|e| decode_error(M::KIND, bytes, e.to_string()))
}

/// Decode only the envelope of a datum of `kind` (every message starts with
/// it), e.g. to learn the sequence of the last message on a topic.
pub fn decode_envelope(kind: MessageKind, payload: &[u8]) -> Result<crate::Envelope, CodecError> {
    let err = |detail: String| decode_error(kind, payload, detail);
    let value = read_datum(kind, payload, Trailing::Ignore)?;
    let apache_avro::types::Value::Record(fields) = value else {
        return Err(err("not a record".into()));
    };
    let env = fields
        .into_iter()
        .find(|(k, _)| k == "envelope")
        .map(|(_, v)| v)
        .ok_or_else(|| err("no envelope field".into()))?;
    apache_avro::from_value::<crate::Envelope>(&env).map_err(|e| err(e.to_string()))
}

/// Check that `payload` is a valid datum of `kind`'s schema, without building
/// the Rust value. This is the check the bus runs on everything it accepts.
pub fn validate(kind: MessageKind, payload: &[u8]) -> Result<(), CodecError> {
    read_datum(kind, payload, Trailing::Refuse).map(drop)
}

fn decode_error(kind: MessageKind, payload: &[u8], detail: String) -> CodecError {
    CodecError::Decode {
        kind,
        len: payload.len(),
        detail,
    }
}

/// Whether bytes after the datum are an error.
#[derive(Clone, Copy, PartialEq)]
enum Trailing {
    Refuse,
    Ignore,
}

/// The one way triad reads a datum from outside: bound the payload, check
/// every size it declares, then let apache-avro build the value under its
/// allocation cap.
fn read_datum(kind: MessageKind, payload: &[u8], trailing: Trailing) -> Result<apache_avro::types::Value, CodecError> {
    let schema = schema(kind)?;
    if payload.len() > MAX_DATUM_BYTES {
        return Err(CodecError::TooLarge {
            kind,
            len: payload.len(),
            max: MAX_DATUM_BYTES,
        });
    }
    let rest = check_declared_sizes(schema, payload).map_err(|e| decode_error(kind, payload, e.to_string()))?;
    if trailing == Trailing::Refuse && rest > 0 {
        return Err(decode_error(
            kind,
            payload,
            format!("{rest} trailing bytes after the datum"),
        ));
    }
    bound_avro_allocations();
    let mut reader = payload;
    apache_avro::from_avro_datum(schema, &mut reader, None).map_err(|e| decode_error(kind, payload, e.to_string()))
}

/// Set apache-avro's allocation cap (a process-wide value that only its first
/// setter decides) to [`MAX_DATUM_BYTES`], before triad decodes anything.
/// Returns the cap in force.
pub fn bound_avro_allocations() -> usize {
    apache_avro::util::max_allocation_bytes(MAX_DATUM_BYTES)
}

/// A size or index in a datum that its bytes cannot hold.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("field {}: {detail}", if path.is_empty() { "<datum>".to_string() } else { path.join(".") })]
pub struct DeclaredSizeError {
    /// Field names from the record down to the bad value (`envelope`, `node`).
    pub path: Vec<String>,
    /// What was declared and what the datum holds.
    pub detail: String,
}

impl DeclaredSizeError {
    fn new(detail: String) -> Self {
        Self {
            path: Vec::new(),
            detail,
        }
    }

    fn within(mut self, field: &str) -> Self {
        self.path.insert(0, field.to_string());
        self
    }
}

/// Walk a datum of `schema` without allocating for its values, and check that
/// every length, item count and index it declares fits in the bytes it has:
/// strings and bytes no longer than what remains, array and map blocks with no
/// more items than bytes remain (every item of triad's schemas takes at least
/// one byte), enum and union indexes in range. Returns how many bytes follow
/// the datum.
pub fn check_declared_sizes(schema: &Schema, payload: &[u8]) -> Result<usize, DeclaredSizeError> {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let mut walk = SizeWalk {
        rest: payload,
        names: &names,
    };
    walk.value(schema, 0)?;
    Ok(walk.rest.len())
}

fn collect_names<'s>(schema: &'s Schema, names: &mut HashMap<&'s str, &'s Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.name.as_str(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.name.as_str(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.name.as_str(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

struct SizeWalk<'a, 's> {
    rest: &'a [u8],
    names: &'a HashMap<&'s str, &'s Schema>,
}

impl<'s> SizeWalk<'_, 's> {
    fn value(&mut self, schema: &Schema, depth: usize) -> Result<(), DeclaredSizeError> {
        if depth > MAX_DEPTH {
            return Err(DeclaredSizeError::new(format!(
                "nested deeper than {MAX_DEPTH} levels; triad's schemas are not recursive"
            )));
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1, "a boolean"),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.varint().map(drop),
            Schema::Float => self.skip(4, "a float"),
            Schema::Double => self.skip(8, "a double"),
            Schema::Duration => self.skip(12, "a duration"),
            Schema::String | Schema::Uuid => self.sized("string"),
            Schema::Bytes | Schema::BigDecimal => self.sized("bytes value"),
            Schema::Decimal(d) => self.value(&d.inner, depth + 1),
            Schema::Fixed(f) => self.skip(f.size, "a fixed value"),
            Schema::Enum(e) => {
                let index = self.varint()?;
                if index < 0 || index as u64 >= e.symbols.len() as u64 {
                    return Err(DeclaredSizeError::new(format!(
                        "enum {} has {} symbols, the datum names symbol {index}",
                        e.name.name,
                        e.symbols.len()
                    )));
                }
                Ok(())
            }
            Schema::Union(u) => self.union(u, depth),
            Schema::Record(r) => {
                for f in &r.fields {
                    self.value(&f.schema, depth + 1).map_err(|e| e.within(&f.name))?;
                }
                Ok(())
            }
            Schema::Array(a) => self.blocks(depth, |w, d| w.value(&a.items, d)),
            Schema::Map(m) => self.blocks(depth, |w, d| {
                w.sized("map key")?;
                w.value(&m.types, d)
            }),
            Schema::Ref { name } => {
                let target = self.lookup(name)?;
                self.value(target, depth + 1)
            }
        }
    }

    fn lookup(&self, name: &Name) -> Result<&'s Schema, DeclaredSizeError> {
        self.names
            .get(name.name.as_str())
            .copied()
            .ok_or_else(|| DeclaredSizeError::new(format!("the schema refers to an unknown type {}", name.name)))
    }

    fn union(&mut self, u: &UnionSchema, depth: usize) -> Result<(), DeclaredSizeError> {
        let index = self.varint()?;
        let variants = u.variants();
        let Some(variant) = usize::try_from(index).ok().and_then(|i| variants.get(i)) else {
            return Err(DeclaredSizeError::new(format!(
                "the union has {} branches, the datum picks branch {index}",
                variants.len()
            )));
        };
        self.value(variant, depth + 1)
    }

    /// Array and map blocks: a count, then that many items, until a 0 count.
    /// A negative count is followed by the block's size in bytes.
    fn blocks(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), DeclaredSizeError>,
    ) -> Result<(), DeclaredSizeError> {
        loop {
            let declared = self.varint()?;
            if declared == 0 {
                return Ok(());
            }
            let count = declared.unsigned_abs();
            if declared < 0 {
                let size = self.varint()?;
                if size < 0 || size as u64 > self.rest.len() as u64 {
                    return Err(DeclaredSizeError::new(format!(
                        "a block declares {size} bytes, only {} remain in the datum",
                        self.rest.len()
                    )));
                }
            }
            if count > self.rest.len() as u64 {
                return Err(DeclaredSizeError::new(format!(
                    "a block declares {count} items, only {} bytes remain in the datum",
                    self.rest.len()
                )));
            }
            for i in 0..count {
                item(self, depth + 1).map_err(|e| e.within(&format!("[{i}]")))?;
            }
        }
    }

    /// A length-prefixed string or bytes value.
    fn sized(&mut self, what: &str) -> Result<(), DeclaredSizeError> {
        let len = self.varint()?;
        if len < 0 {
            return Err(DeclaredSizeError::new(format!(
                "a {what} declares a negative length {len}"
            )));
        }
        if len as u64 > self.rest.len() as u64 {
            return Err(DeclaredSizeError::new(format!(
                "a {what} declares {len} bytes, only {} remain in the datum",
                self.rest.len()
            )));
        }
        self.rest = &self.rest[len as usize..];
        Ok(())
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), DeclaredSizeError> {
        if n > self.rest.len() {
            return Err(DeclaredSizeError::new(format!(
                "{what} needs {n} bytes, only {} remain in the datum",
                self.rest.len()
            )));
        }
        self.rest = &self.rest[n..];
        Ok(())
    }

    /// A zig-zag varint long (at most 10 bytes).
    fn varint(&mut self) -> Result<i64, DeclaredSizeError> {
        let mut raw: u64 = 0;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(DeclaredSizeError::new(if self.rest.len() < 10 {
            "the datum ends inside a number".to_string()
        } else {
            "a number is longer than 10 bytes".to_string()
        }))
    }
}

/// BACKWARD compatibility: can a consumer using `new` read data written with
/// `registered`? Both are Avro schema JSON texts.
pub fn check_compatible(registered: &str, new: &str) -> Result<(), CompatError> {
    let parse = |text: &str, which: &str| {
        Schema::parse_str(text).map_err(|e| CompatError {
            record: "?".into(),
            detail: format!("the {which} schema does not parse: {e}"),
        })
    };
    let old = parse(registered, "registered")?;
    let new_schema = parse(new, "new")?;
    let record = match &new_schema {
        Schema::Record(r) => r.name.fullname(None),
        other => format!("{other:?}"),
    };
    SchemaCompatibility::can_read(&old, &new_schema).map_err(|e| CompatError {
        record,
        detail: describe(&e),
    })
}

fn describe(e: &apache_avro::error::CompatibilityError) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ClockState, Envelope};
    use crate::messages::*;

    fn env(seq: i64) -> Envelope {
        Envelope {
            schema_version: SCHEMA_VERSION,
            node: "edge-01".into(),
            sequence: seq,
            stamp_ns: 1_764_000_000_123_456_789,
            clock: ClockState::Locked,
            clock_offset_ns: Some(-42),
        }
    }

    fn roundtrip<M: BusMessage + PartialEq>(m: M) {
        let bytes = encode(&m).unwrap();
        validate(M::KIND, &bytes).unwrap();
        let back: M = decode(&bytes).unwrap();
        assert_eq!(back, m);
    }

    pub(crate) fn samples() -> (
        ControlCommand,
        ControlState,
        InspectionResult,
        TwinStatus,
        TwinAlert,
        WorkOrder,
    ) {
        (
            ControlCommand {
                envelope: env(1),
                command_id: "cmd-1".into(),
                axis: "axis_07".into(),
                action: CommandAction::Derate,
                value: Some(8.0),
                reason: "twin alert".into(),
                issued_by: "rule:derate".into(),
                token: None,
            },
            ControlState {
                envelope: Envelope {
                    clock: ClockState::FreeRunning,
                    clock_offset_ns: None,
                    ..env(2)
                },
                axis: "axis_07".into(),
                mode: AxisMode::SafeState,
                ppm_setpoint: 12.0,
                ppm_actual: 11.9,
                weld_current_a: 5000.0,
                weld_temp_c: 181.2,
                parts_total: 77,
                safe_state_reason: Some("stale input".into()),
                cycles: 1000,
                overruns: 0,
                jitter_p99_us: 12.5,
                jitter_max_us: 40.0,
            },
            InspectionResult {
                envelope: env(3),
                cell: "cell_2245".into(),
                part_id: "M000042".into(),
                weld_index: 7,
                batch_id: "B000042".into(),
                frame_stamp_ns: 5,
                roi_hash: "00ff".into(),
                verdict: Verdict::Fail,
                defects: vec![
                    DefectBox {
                        class: "porosity".into(),
                        score: 0.93,
                        x: 16,
                        y: 8,
                        w: 8,
                        h: 16,
                    },
                    DefectBox {
                        class: "crack".into(),
                        score: 0.71,
                        x: 40,
                        y: 30,
                        w: 24,
                        h: 8,
                    },
                ],
                model_name: "weld_seam".into(),
                model_version: "1.0.0".into(),
                latency_us: 900,
            },
            TwinStatus {
                envelope: env(4),
                asset: "battery_pack_89".into(),
                measured_c: 190.0,
                predicted_c: 180.0,
                residual_c: 10.0,
                band_c: 6.0,
                state: TwinState::Excursion,
                outside_since_ns: Some(99),
                health: 0.8,
                rul_s: None,
                model_version: "physics-1".into(),
            },
            TwinAlert {
                envelope: env(5),
                alert_id: "A-1".into(),
                asset: "battery_pack_89".into(),
                kind: AlertKind::ResidualOutOfBand,
                state: AlertState::Raised,
                severity: Severity::Critical,
                onset_ns: 1,
                raised_ns: 2,
                residual_c: 9.5,
                band_c: 6.0,
                persistence_ms: 3000,
                message: "weld temperature 9.5 °C above prediction".into(),
            },
            WorkOrder {
                envelope: env(6),
                work_order_id: "WO-1".into(),
                line: "line_1".into(),
                asset: "battery_pack_89".into(),
                cell: "cell_2245".into(),
                axis: "axis_07".into(),
                alert_id: "A-1".into(),
                priority: Priority::High,
                defect_probability: Some(0.31),
                baseline_defect_rate: 0.02,
                recent_defect_rate: 0.3,
                elevated_probability: 0.999,
                batches: vec!["B1".into(), "B2".into(), "B3".into()],
                frames_analysed: 72,
                defects_found: 22,
                ppm_before: 12.0,
                ppm_after: 8.0,
                chain: ChainStamps {
                    fault_onset_ns: 1,
                    alert_ns: 2,
                    derate_ns: None,
                    analysis_ns: 4,
                    workorder_ns: 5,
                },
                summary: "weld defects likely".into(),
            },
        )
    }

    #[test]
    fn every_schema_parses_and_names_its_record() {
        for kind in MessageKind::ALL {
            let s = schema(kind).unwrap();
            match s {
                Schema::Record(r) => assert_eq!(r.name.name, kind.record_name()),
                other => panic!("{kind:?} is not a record: {other:?}"),
            }
        }
    }

    #[test]
    fn model_requests_roundtrip_with_and_without_a_bundle() {
        let deploy = ModelRequest {
            envelope: env(3),
            request_id: "req-1".into(),
            target: "cell_2245".into(),
            action: ModelAction::Deploy,
            token: "eyJ.e30.sig".into(),
            bundle: Some((0..=255u8).cycle().take(70_000).collect()),
            issued_by: "fleet-manager".into(),
        };
        let bytes = encode(&deploy).unwrap();
        // Avro `bytes`, not an array of ints: the archive costs its length.
        assert!(bytes.len() < 70_200, "{} bytes", bytes.len());
        roundtrip(deploy.clone());
        roundtrip(ModelRequest {
            action: ModelAction::Rollback,
            bundle: None,
            ..deploy
        });
    }

    #[test]
    fn audit_events_roundtrip_with_and_without_options() {
        let full = AuditEvent {
            envelope: env(7),
            event_id: "edge-01-42".into(),
            action: "deploy".into(),
            outcome: AuditOutcome::Refused,
            target: "cell_2245".into(),
            code: "token_expired".into(),
            reason: "token expired at 5".into(),
            actor: Some("alice".into()),
            key_id: Some("ops-2025".into()),
            token_id: Some("jti-1".into()),
            origin: "http 127.0.0.1:5000".into(),
            bundle_name: Some("weld_seam".into()),
            bundle_version: Some("1.1.0".into()),
            bundle_digest: Some("sha256:00".into()),
            bundle_signer: Some("release".into()),
            from_version: Some("1.0.0".into()),
            to_version: Some("1.0.0".into()),
        };
        roundtrip(full.clone());
        roundtrip(AuditEvent {
            actor: None,
            key_id: None,
            token_id: None,
            bundle_name: None,
            bundle_version: None,
            bundle_digest: None,
            bundle_signer: None,
            from_version: None,
            to_version: None,
            outcome: AuditOutcome::Accepted,
            ..full
        });
    }

    #[test]
    fn every_message_roundtrips_through_its_schema() {
        let (a, b, c, d, e, f) = samples();
        roundtrip(a);
        roundtrip(b);
        roundtrip(c);
        roundtrip(d);
        roundtrip(e);
        roundtrip(f);
    }

    #[test]
    fn the_envelope_decodes_alone() {
        let (_, _, insp, ..) = samples();
        let bytes = encode(&insp).unwrap();
        assert_eq!(
            decode_envelope(MessageKind::InspectionResult, &bytes).unwrap(),
            insp.envelope
        );
        assert!(decode_envelope(MessageKind::InspectionResult, &bytes[..5]).is_err());
    }

    #[test]
    fn truncated_and_foreign_payloads_are_refused_with_the_kind() {
        let (_, _, insp, status, ..) = samples();
        let bytes = encode(&insp).unwrap();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let err = decode::<InspectionResult>(&bytes[..cut]).unwrap_err().to_string();
            assert!(err.contains("InspectionResult"), "{err}");
        }
        let other = encode(&status).unwrap();
        assert!(validate(MessageKind::InspectionResult, &other).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(
            decode::<InspectionResult>(&long)
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
    }

    /// An Avro long as zig-zag varint bytes.
    pub(crate) fn long(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn a_datum_declaring_a_2_pow_60_byte_string_is_refused_naming_the_field() {
        // schema_version = 1, then `node` declares 2^60 bytes and holds 3.
        let mut datum = long(1);
        datum.extend(long(1 << 60));
        datum.extend(b"abc");
        for kind in MessageKind::ALL {
            let err = validate(kind, &datum).unwrap_err().to_string();
            assert!(err.contains("envelope.node"), "{kind:?}: {err}");
            assert!(
                err.contains("1152921504606846976 bytes, only 3 remain"),
                "{kind:?}: {err}"
            );
        }
        let err = decode::<ControlCommand>(&datum).unwrap_err().to_string();
        assert!(err.contains("envelope.node"), "{err}");
        assert!(decode_envelope(MessageKind::TwinStatus, &datum).is_err());
        // apache-avro's own cap is ours, and refuses the same datum by itself.
        assert_eq!(bound_avro_allocations(), MAX_DATUM_BYTES);
        let schema = schema(MessageKind::ControlCommand).unwrap();
        let err = apache_avro::from_avro_datum(schema, &mut &datum[..], None).unwrap_err();
        assert!(err.to_string().contains(&MAX_DATUM_BYTES.to_string()), "{err}");
    }

    #[test]
    fn declared_counts_indexes_and_lengths_beyond_the_datum_are_refused() {
        let (_, _, insp, ..) = samples();
        let good = encode(&InspectionResult {
            defects: vec![],
            ..insp.clone()
        })
        .unwrap();
        // The datum ends with: defects (0), model_name, model_version, latency_us.
        let tail = {
            let mut t = long(0);
            for s in [&insp.model_name, &insp.model_version] {
                t.extend(long(s.len() as i64));
                t.extend(s.as_bytes());
            }
            t.extend(long(insp.latency_us));
            t
        };
        assert!(good.ends_with(&tail));
        let head = &good[..good.len() - tail.len()];
        let with_defects = |block: Vec<u8>| [head, &block, &tail[1..]].concat();
        // An array block declaring 2^40 items (apache-avro would reserve 2^40 `Value`s).
        let err = validate(MessageKind::InspectionResult, &with_defects(long(1 << 40))).unwrap_err();
        assert!(
            err.to_string()
                .contains("defects: a block declares 1099511627776 items"),
            "{err}"
        );
        // The same as a negative count with a block size.
        let mut block = long(-(1 << 40));
        block.extend(long(1 << 50));
        let err = validate(MessageKind::InspectionResult, &with_defects(block)).unwrap_err();
        assert!(
            err.to_string()
                .contains("defects: a block declares 1125899906842624 bytes"),
            "{err}"
        );
        // An item's string longer than the datum names the item.
        let mut block = long(1);
        block.extend(long(1 << 33));
        let err = validate(MessageKind::InspectionResult, &with_defects(block)).unwrap_err();
        assert!(err.to_string().contains("defects.[0].class"), "{err}");
        // An enum index out of range, a union branch that does not exist, a negative length.
        let mut bad_enum = long(1);
        bad_enum.extend(long(4));
        bad_enum.extend(b"edge");
        bad_enum.extend(long(1));
        bad_enum.extend(long(1));
        bad_enum.extend(long(7));
        let err = validate(MessageKind::ControlState, &bad_enum).unwrap_err();
        assert!(
            err.to_string()
                .contains("envelope.clock: enum ClockState has 3 symbols"),
            "{err}"
        );
        let mut bad_union = bad_enum.clone();
        *bad_union.last_mut().unwrap() = long(0)[0];
        bad_union.extend(long(5));
        let err = validate(MessageKind::ControlState, &bad_union).unwrap_err();
        assert!(
            err.to_string()
                .contains("envelope.clock_offset_ns: the union has 2 branches"),
            "{err}"
        );
        let mut negative = long(1);
        negative.extend(long(-3));
        let err = validate(MessageKind::ControlState, &negative).unwrap_err();
        assert!(err.to_string().contains("negative length -3"), "{err}");
        // Eleven continuation bytes are not a number.
        let err = validate(MessageKind::ControlState, &[0xff; 11]).unwrap_err();
        assert!(err.to_string().contains("longer than 10 bytes"), "{err}");
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_unread() {
        let big = vec![0u8; MAX_DATUM_BYTES + 1];
        let err = validate(MessageKind::ModelRequest, &big).unwrap_err();
        assert!(
            matches!(err, CodecError::TooLarge { len, .. } if len == MAX_DATUM_BYTES + 1),
            "{err}"
        );
        assert!(err.to_string().contains("triad deploy"), "{err}");
    }

    #[test]
    fn the_size_check_passes_every_valid_sample_and_reports_trailing_bytes() {
        let (a, b, c, d, e, f) = samples();
        let datums = [
            (MessageKind::ControlCommand, encode(&a).unwrap()),
            (MessageKind::ControlState, encode(&b).unwrap()),
            (MessageKind::InspectionResult, encode(&c).unwrap()),
            (MessageKind::TwinStatus, encode(&d).unwrap()),
            (MessageKind::TwinAlert, encode(&e).unwrap()),
            (MessageKind::WorkOrder, encode(&f).unwrap()),
        ];
        for (kind, mut bytes) in datums {
            let schema = schema(kind).unwrap();
            assert_eq!(check_declared_sizes(schema, &bytes), Ok(0), "{kind:?}");
            bytes.extend([0, 0]);
            assert_eq!(check_declared_sizes(schema, &bytes), Ok(2), "{kind:?}");
        }
    }

    #[test]
    fn compatibility_allows_added_defaults_and_names_the_broken_field() {
        let current = schema_json(MessageKind::TwinStatus);
        check_compatible(current, current).unwrap();
        // Adding a field with a default is BACKWARD compatible.
        let added = current.replacen(
            "\"fields\": [",
            "\"fields\": [{\"name\": \"site\", \"type\": \"string\", \"default\": \"plant-1\"},",
            1,
        );
        check_compatible(current, &added).unwrap();
        // Adding one without a default is not, and the error names it.
        let broken = current.replacen(
            "\"fields\": [",
            "\"fields\": [{\"name\": \"site\", \"type\": \"string\"},",
            1,
        );
        let err = check_compatible(current, &broken).unwrap_err();
        assert!(err.to_string().contains("site"), "{err}");
        // Changing a type the old data cannot be promoted to is refused.
        let retyped = current.replacen(
            "{\n      \"name\": \"measured_c\",\n      \"type\": \"double\"",
            "{\n      \"name\": \"measured_c\",\n      \"type\": \"string\"",
            1,
        );
        assert_ne!(retyped, current, "the test must really change the schema");
        let err = check_compatible(current, &retyped).unwrap_err();
        assert!(err.to_string().contains("measured_c"), "{err}");
    }
}
