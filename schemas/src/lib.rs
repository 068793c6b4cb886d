//! # triad-schemas: every message on triad's buses
//!
//! This crate is the single home of the data contracts between the node's
//! workloads and the outside world (Pulsar consumers, the MES):
//!
//! - [`ids`]: validated identifiers (`axis_07`, `cell_2245`, …) as newtypes.
//! - [`envelope`]: the header every message carries: clock stamp in ns,
//!   clock state and offset estimate, node id, per-topic sequence and schema
//!   version.
//! - [`messages`]: one Rust type per message family of DESIGN.md's topic
//!   table, each matching an Avro schema kept as a file under `schemas/avro/`.
//! - [`topic`]: topic names (`ctrl/axis_07/cmd`), their QoS class, and the one
//!   rule that turns them into Pulsar topic names.
//! - [`codec`]: Avro binary encoding and decoding of messages against their
//!   schema, and the compatibility check a bus runs before it opens a producer.
//!
//! ```
//! use triad_schemas::{codec, ids::CellId, topic::Topic, messages::MessageKind};
//! let topic = Topic::inspection_result(&CellId::new("cell_2245").unwrap());
//! assert_eq!(topic.name(), "insp/cell_2245/result");
//! assert_eq!(topic.kind(), MessageKind::InspectionResult);
//! assert!(codec::schema(MessageKind::InspectionResult).is_ok());
//! ```
//!
//! ## Compatibility rules
//!
//! Schemas evolve BACKWARD-compatibly: a consumer built with the new schema
//! must read every message written with the previous one. In practice: add
//! fields only with a default, never remove a field without a default, never
//! change a field's type except by Avro promotion (int → long → double).
//! [`codec::check_compatible`] enforces this before a producer opens.
#![deny(missing_docs)]

pub mod codec;
pub mod envelope;
pub mod ids;
pub mod messages;
pub mod topic;

pub use envelope::{ClockState, Envelope};
pub use messages::{
    AlertKind, AlertState, AuditEvent, AuditOutcome, AxisMode, BusMessage, ChainStamps, CommandAction, ControlCommand,
    ControlState, DefectBox, InspectionResult, MessageKind, ModelAction, ModelRequest, Priority, Severity, TwinAlert,
    TwinState, TwinStatus, Verdict, WorkOrder,
};
pub use topic::{QosClass, Topic, TopicFamily};
