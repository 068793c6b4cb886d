//! Topic names, their QoS classes, and the Pulsar naming rule.
//!
//! A triad topic name has three parts, `<family>/<id>/<kind>`:
//!
//! | topic | message | QoS class |
//! |---|---|---|
//! | `ctrl/<axis>/cmd` | `ControlCommand` | [`QosClass::Command`] |
//! | `ctrl/<axis>/state` | `ControlState` | [`QosClass::LatestValue`] |
//! | `insp/<cell>/result` | `InspectionResult` | [`QosClass::OrderedAtLeastOnce`] |
//! | `dtwin/<asset>/status` | `TwinStatus` | [`QosClass::Compacted`] |
//! | `dtwin/<asset>/alert` | `TwinAlert` | [`QosClass::AtLeastOnce`] |
//! | `mes/<line>/workorder` | `WorkOrder` | [`QosClass::AtLeastOnce`], written by every node of the line |
//! | `audit/<node>/event` | `AuditEvent` | [`QosClass::AtLeastOnce`] |
//! | `models/<node>/request` | `ModelRequest` | [`QosClass::SignedRequest`] |
//!
//! **Pulsar rule**: `persistent://<tenant>/<namespace>/<family>.<id>.<kind>`,
//! e.g. `ctrl/axis_07/cmd` → `persistent://public/default/ctrl.axis_07.cmd`.
//! Slashes are replaced by dots because Pulsar reads extra slashes as the
//! legacy cluster-qualified format; ids cannot contain dots, so the rule is
//! reversible.

use crate::ids::{AssetId, AxisId, CellId, LineId, NodeId};
use crate::messages::MessageKind;
use std::fmt;
use std::time::Duration;

/// Delivery guarantees a topic needs; the bus configures producers from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Control commands: latency budget 2 ms, signed token required, never batched.
    Command,
    /// Latest value wins; a lost intermediate value does not matter.
    LatestValue,
    /// Ordered per key, at-least-once through the outbox, deduplicated by sequence.
    OrderedAtLeastOnce,
    /// Eventually consistent, compacted to the latest message per key.
    Compacted,
    /// At-least-once through the outbox.
    AtLeastOnce,
    /// A request to the node (a model deploy or rollback): signed token
    /// required, never batched; the node acknowledges it once its decision
    /// is durable.
    SignedRequest,
}

impl QosClass {
    /// Must a message survive a broker outage or a node restart (outbox)?
    pub fn durable(self) -> bool {
        matches!(self, QosClass::OrderedAtLeastOnce | QosClass::AtLeastOnce)
    }
    /// May the producer batch messages?
    pub fn batching(self) -> bool {
        matches!(
            self,
            QosClass::OrderedAtLeastOnce | QosClass::Compacted | QosClass::AtLeastOnce
        )
    }
    /// Latency budget from send to receipt, if the class has one.
    pub fn latency_budget(self) -> Option<Duration> {
        match self {
            QosClass::Command => Some(Duration::from_millis(2)),
            _ => None,
        }
    }
    /// Does every message need a signed token?
    pub fn signed(self) -> bool {
        matches!(self, QosClass::Command | QosClass::SignedRequest)
    }
    /// Should the broker deduplicate by producer sequence?
    pub fn deduplicated(self) -> bool {
        self.durable()
    }
    /// Should the broker compact the topic to the latest message per key?
    pub fn compacted(self) -> bool {
        matches!(self, QosClass::Compacted | QosClass::LatestValue)
    }
}

/// The six topic families of DESIGN.md, the node's audit trail and its
/// model requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicFamily {
    /// `ctrl/<axis>/cmd`
    ControlCommand,
    /// `ctrl/<axis>/state`
    ControlState,
    /// `insp/<cell>/result`
    InspectionResult,
    /// `dtwin/<asset>/status`
    TwinStatus,
    /// `dtwin/<asset>/alert`
    TwinAlert,
    /// `mes/<line>/workorder`
    MesWorkOrder,
    /// `audit/<node>/event`
    AuditEvent,
    /// `models/<node>/request`
    ModelRequest,
}

impl TopicFamily {
    /// Every family.
    pub const ALL: [TopicFamily; 8] = [
        TopicFamily::ControlCommand,
        TopicFamily::ControlState,
        TopicFamily::InspectionResult,
        TopicFamily::TwinStatus,
        TopicFamily::TwinAlert,
        TopicFamily::MesWorkOrder,
        TopicFamily::AuditEvent,
        TopicFamily::ModelRequest,
    ];

    /// `(prefix, suffix)` of the name around the id.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            TopicFamily::ControlCommand => ("ctrl", "cmd"),
            TopicFamily::ControlState => ("ctrl", "state"),
            TopicFamily::InspectionResult => ("insp", "result"),
            TopicFamily::TwinStatus => ("dtwin", "status"),
            TopicFamily::TwinAlert => ("dtwin", "alert"),
            TopicFamily::MesWorkOrder => ("mes", "workorder"),
            TopicFamily::AuditEvent => ("audit", "event"),
            TopicFamily::ModelRequest => ("models", "request"),
        }
    }

    /// Message carried.
    pub fn kind(self) -> MessageKind {
        match self {
            TopicFamily::ControlCommand => MessageKind::ControlCommand,
            TopicFamily::ControlState => MessageKind::ControlState,
            TopicFamily::InspectionResult => MessageKind::InspectionResult,
            TopicFamily::TwinStatus => MessageKind::TwinStatus,
            TopicFamily::TwinAlert => MessageKind::TwinAlert,
            TopicFamily::MesWorkOrder => MessageKind::WorkOrder,
            TopicFamily::AuditEvent => MessageKind::AuditEvent,
            TopicFamily::ModelRequest => MessageKind::ModelRequest,
        }
    }

    /// Is the topic written by every node of a line (`mes/<line>/workorder`)
    /// rather than by the one node that owns its axis, cell, asset or node
    /// id? Such a topic takes several producers; each node finds its own
    /// last message by the envelope's `node`.
    pub fn shared_by_nodes(self) -> bool {
        matches!(self, TopicFamily::MesWorkOrder)
    }

    /// QoS class.
    pub fn qos(self) -> QosClass {
        match self {
            TopicFamily::ControlCommand => QosClass::Command,
            TopicFamily::ControlState => QosClass::LatestValue,
            TopicFamily::InspectionResult => QosClass::OrderedAtLeastOnce,
            TopicFamily::TwinStatus => QosClass::Compacted,
            TopicFamily::TwinAlert => QosClass::AtLeastOnce,
            TopicFamily::MesWorkOrder => QosClass::AtLeastOnce,
            TopicFamily::AuditEvent => QosClass::AtLeastOnce,
            TopicFamily::ModelRequest => QosClass::SignedRequest,
        }
    }
}

/// A concrete topic: a family and the id it is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    name: String,
    family_idx: u8,
}

impl Topic {
    fn make(family: TopicFamily, id: &str) -> Self {
        let (p, s) = family.parts();
        let family_idx = TopicFamily::ALL.iter().position(|f| *f == family).expect("in ALL") as u8;
        Self {
            name: format!("{p}/{id}/{s}"),
            family_idx,
        }
    }
    /// `ctrl/<axis>/cmd`
    pub fn control_command(axis: &AxisId) -> Self {
        Self::make(TopicFamily::ControlCommand, axis.as_str())
    }
    /// `ctrl/<axis>/state`
    pub fn control_state(axis: &AxisId) -> Self {
        Self::make(TopicFamily::ControlState, axis.as_str())
    }
    /// `insp/<cell>/result`
    pub fn inspection_result(cell: &CellId) -> Self {
        Self::make(TopicFamily::InspectionResult, cell.as_str())
    }
    /// `dtwin/<asset>/status`
    pub fn twin_status(asset: &AssetId) -> Self {
        Self::make(TopicFamily::TwinStatus, asset.as_str())
    }
    /// `dtwin/<asset>/alert`
    pub fn twin_alert(asset: &AssetId) -> Self {
        Self::make(TopicFamily::TwinAlert, asset.as_str())
    }
    /// `mes/<line>/workorder`
    pub fn mes_work_order(line: &LineId) -> Self {
        Self::make(TopicFamily::MesWorkOrder, line.as_str())
    }

    /// `audit/<node>/event`
    pub fn audit_event(node: &NodeId) -> Self {
        Self::make(TopicFamily::AuditEvent, node.as_str())
    }

    /// `models/<node>/request`
    pub fn model_request(node: &NodeId) -> Self {
        Self::make(TopicFamily::ModelRequest, node.as_str())
    }

    /// Parse a triad topic name such as `insp/cell_2245/result`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut it = name.split('/');
        let (Some(p), Some(id), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(format!(
                "topic {name:?} is not of the form <family>/<id>/<kind>, e.g. insp/cell_2245/result"
            ));
        };
        crate::ids::validate("topic", id).map_err(|e| e.to_string())?;
        let family = TopicFamily::ALL
            .into_iter()
            .find(|f| f.parts() == (p, s))
            .ok_or_else(|| format!("topic {name:?}: unknown family {p}/…/{s}; known: ctrl/…/cmd, ctrl/…/state, insp/…/result, dtwin/…/status, dtwin/…/alert, mes/…/workorder, audit/…/event, models/…/request"))?;
        Ok(Self::make(family, id))
    }

    /// The triad name, e.g. `insp/cell_2245/result`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Family.
    pub fn family(&self) -> TopicFamily {
        TopicFamily::ALL[self.family_idx as usize]
    }
    /// Message carried.
    pub fn kind(&self) -> MessageKind {
        self.family().kind()
    }
    /// QoS class.
    pub fn qos(&self) -> QosClass {
        self.family().qos()
    }
    /// Written by every node of a line (see [`TopicFamily::shared_by_nodes`]).
    pub fn shared_by_nodes(&self) -> bool {
        self.family().shared_by_nodes()
    }
    /// The id part.
    pub fn id(&self) -> &str {
        self.name.split('/').nth(1).expect("made with three parts")
    }
    /// The Pulsar topic for this topic (see the module doc for the rule).
    pub fn pulsar_name(&self, tenant: &str, namespace: &str) -> String {
        format!("persistent://{tenant}/{namespace}/{}", self.name.replace('/', "."))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_families_and_pulsar_rule() {
        let axis = AxisId::new("axis_07").unwrap();
        let t = Topic::control_command(&axis);
        assert_eq!(t.name(), "ctrl/axis_07/cmd");
        assert_eq!(t.qos(), QosClass::Command);
        assert_eq!(t.id(), "axis_07");
        assert_eq!(
            t.pulsar_name("public", "default"),
            "persistent://public/default/ctrl.axis_07.cmd"
        );
        assert!(!t.qos().batching() && t.qos().signed());
        let r = Topic::parse("insp/cell_2245/result").unwrap();
        assert_eq!(r.family(), TopicFamily::InspectionResult);
        assert!(r.qos().durable() && r.qos().deduplicated());
        assert!(
            Topic::twin_status(&AssetId::new("battery_pack_89").unwrap())
                .qos()
                .compacted()
        );
    }

    #[test]
    fn parse_every_family_and_refuse_nonsense() {
        for f in TopicFamily::ALL {
            let (p, s) = f.parts();
            let t = Topic::parse(&format!("{p}/x1/{s}")).unwrap();
            assert_eq!(t.family(), f);
            assert_eq!(Topic::parse(t.name()).unwrap(), t);
        }
        assert!(
            Topic::parse("insp/cell/result/extra")
                .unwrap_err()
                .contains("<family>/<id>/<kind>")
        );
        assert!(Topic::parse("foo/x/bar").unwrap_err().contains("unknown family"));
        assert!(Topic::parse("insp/Bad Id/result").is_err());
    }
}
