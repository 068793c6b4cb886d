//! Avro encoding of bus messages, and the schema checks a bus runs.
//!
//! Messages travel as a bare Avro binary datum (no container header), which is
//! what Pulsar's AVRO schema type expects and what any Avro library decodes
//! with the schema from `schemas/avro/`.

use crate::messages::{BusMessage, MessageKind};
use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use std::sync::OnceLock;
use thiserror::Error;

/// Version of the current schema set. Goes into every envelope.
pub const SCHEMA_VERSION: i32 = 1;

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
    /// The bytes are not a valid datum of the schema (truncated, corrupt, or
    /// written with another schema).
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
    let schema = schema(M::KIND)?;
    let err = |detail: String| CodecError::Decode {
        kind: M::KIND,
        len: bytes.len(),
        detail,
    };
    let mut reader = bytes;
    let value = apache_avro::from_avro_datum(schema, &mut reader, None).map_err(|e| err(e.to_string()))?;
    if !reader.is_empty() {
        return Err(err(format!("{} trailing bytes after the datum", reader.len())));
    }
    apache_avro::from_value::<M>(&value).map_err(|e| err(e.to_string()))
}

/// Decode only the envelope of a datum of `kind` (every message starts with
/// it), e.g. to learn the sequence of the last message on a topic.
pub fn decode_envelope(kind: MessageKind, payload: &[u8]) -> Result<crate::Envelope, CodecError> {
    let schema = schema(kind)?;
    let err = |detail: String| CodecError::Decode {
        kind,
        len: payload.len(),
        detail,
    };
    let mut reader = payload;
    let value = apache_avro::from_avro_datum(schema, &mut reader, None).map_err(|e| err(e.to_string()))?;
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
    let schema = schema(kind)?;
    let mut reader = payload;
    apache_avro::from_avro_datum(schema, &mut reader, None).map_err(|e| CodecError::Decode {
        kind,
        len: payload.len(),
        detail: e.to_string(),
    })?;
    if reader.is_empty() {
        Ok(())
    } else {
        Err(CodecError::Decode {
            kind,
            len: payload.len(),
            detail: format!("{} trailing bytes", reader.len()),
        })
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
