//! `[modbus_server]`: the node's process image served as a Modbus TCP
//! device, for a SCADA or HMI that speaks only Modbus.
//!
//! ```toml
//! [modbus_server]
//! listen = "0.0.0.0:5502"
//! unit = 1
//! writers = ["10.20.0.15"]         # clients allowed to write (none: read-only)
//! points = [
//!   { value = "axis_07.ppm_actual", table = "input", address = 0, type = "f32" },
//!   { value = "axis_07.mode", table = "input", address = 2, type = "u16" },
//!   { value = "axis_07.ppm_setpoint", table = "holding", address = 0, type = "f32", writable = true },
//!   { value = "axis_07.reset_fault", table = "coil", address = 0, writable = true },
//! ]
//! ```
//!
//! A point serves one value of one axis ([`ServedValue`]). Everything is
//! read-only unless the point says `writable = true` and the client's
//! address is among `writers`: Modbus carries no credentials, so the
//! address is the only identity a write has; each write goes through the
//! axis' command gate (limits, the control program's verdict) and the audit
//! trail with that address.

use super::file::Problems;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use triad_hw::modbus::{DataType, Span, Table, WordOrder};

/// Points the server may map.
pub const MAX_SERVED_POINTS: usize = 1024;

/// `[modbus_server]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusServerSection {
    /// Address to serve on.
    pub listen: String,
    /// Unit id it answers (default 1; others get exception 11).
    pub unit: Option<u8>,
    /// Client addresses allowed to write.
    #[serde(default)]
    pub writers: Vec<String>,
    /// The map.
    #[serde(default)]
    pub points: Vec<ServedPointSection>,
}

/// One point of the map.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ServedPointSection {
    /// `<axis>.<value>`.
    pub value: String,
    pub table: String,
    /// Zero-based wire address.
    pub address: u32,
    pub r#type: Option<String>,
    pub order: Option<String>,
    pub scale: Option<f64>,
    #[serde(default)]
    pub writable: bool,
}

/// What a served point carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedValue {
    /// Measured feed rate, PPM.
    PpmActual,
    /// Set-point, PPM; written: `SetRate`.
    PpmSetpoint,
    /// Weld temperature, °C.
    WeldTempC,
    /// Weld current, A.
    WeldCurrentA,
    /// Modules finished.
    PartsTotal,
    /// Mode: 0 stopped, 1 running, 2 derated, 3 safe state.
    Mode,
    /// In the safe state (bool).
    SafeState,
    /// The twin's residual, °C.
    ResidualC,
    /// The twin's alert is raised (bool).
    Alert,
    /// Written 1: `Start` (reads 0).
    Start,
    /// Written 1: `Stop` (reads 0).
    Stop,
    /// Written 1: `ResetFault` (reads 0).
    ResetFault,
    /// Written 1: `Resume` (reads 0).
    Resume,
}

impl ServedValue {
    /// Every value with its name.
    pub const ALL: [(&'static str, ServedValue); 13] = [
        ("ppm_actual", ServedValue::PpmActual),
        ("ppm_setpoint", ServedValue::PpmSetpoint),
        ("weld_temp_c", ServedValue::WeldTempC),
        ("weld_current_a", ServedValue::WeldCurrentA),
        ("parts_total", ServedValue::PartsTotal),
        ("mode", ServedValue::Mode),
        ("safe_state", ServedValue::SafeState),
        ("residual_c", ServedValue::ResidualC),
        ("alert", ServedValue::Alert),
        ("start", ServedValue::Start),
        ("stop", ServedValue::Stop),
        ("reset_fault", ServedValue::ResetFault),
        ("resume", ServedValue::Resume),
    ];

    /// A digital value (a coil or discrete input).
    pub fn is_digital(self) -> bool {
        matches!(
            self,
            ServedValue::SafeState
                | ServedValue::Alert
                | ServedValue::Start
                | ServedValue::Stop
                | ServedValue::ResetFault
                | ServedValue::Resume
        )
    }

    /// A write of it is a command (which).
    pub fn command(self) -> Option<triad_schemas::CommandAction> {
        use triad_schemas::CommandAction as A;
        Some(match self {
            ServedValue::PpmSetpoint => A::SetRate,
            ServedValue::Start => A::Start,
            ServedValue::Stop => A::Stop,
            ServedValue::ResetFault => A::ResetFault,
            ServedValue::Resume => A::Resume,
            _ => return None,
        })
    }
}

/// One served point, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedPoint {
    /// Position of its axis in `NodeConfig::axes`.
    pub axis: usize,
    /// What it carries.
    pub value: ServedValue,
    /// Table, wire address, width.
    pub span: Span,
    /// Data type.
    pub ty: DataType,
    /// Byte and word order.
    pub order: WordOrder,
    /// Register value = value / scale.
    pub scale: f64,
    /// Written by allowed clients.
    pub writable: bool,
}

/// `[modbus_server]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusServerConfig {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Unit id.
    pub unit: u8,
    /// Clients allowed to write.
    pub writers: Vec<IpAddr>,
    /// The map.
    pub points: Vec<ServedPoint>,
}

impl ModbusServerSection {
    /// Check the section against the axes (`axes`: their ids).
    pub(crate) fn validate(&self, axes: &[&str], p: &mut Problems) -> Option<ModbusServerConfig> {
        let before = p.len();
        let k = |f: &str| format!("modbus_server.{f}");
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            p.add(
                k("listen"),
                format!("{:?}: give an address and port, e.g. \"0.0.0.0:502\"", self.listen),
            )
        });
        let unit = self.unit.unwrap_or(1);
        if !(1..=247).contains(&unit) && unit != 255 {
            p.add(k("unit"), format!("{unit}: use 1..=247 (or 255)"));
        }
        let writers: Vec<IpAddr> = self
            .writers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                w.parse()
                    .map_err(|_| p.add(k(&format!("writers[{i}]")), format!("{w:?} is no IP address")))
                    .ok()
            })
            .collect();
        if self.points.len() > MAX_SERVED_POINTS {
            p.add(
                k("points"),
                format!("{} points, more than {MAX_SERVED_POINTS}", self.points.len()),
            );
        }
        let points: Vec<(usize, ServedPoint)> = self
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.validate(axes, &|f| k(&format!("points[{i}].{f}")), p)?)))
            .collect();
        if points.iter().any(|(_, pt)| pt.writable) && self.writers.is_empty() {
            p.add(
                k("writers"),
                "writable points need the addresses of the clients allowed to write (Modbus has no credentials; without writers the server is read-only)",
            );
        }
        for (n, (i, a)) in points.iter().enumerate() {
            let overlaps = |b: &&(usize, ServedPoint)| {
                let b = &b.1;
                b.span.table == a.span.table
                    && u32::from(a.span.start) < b.span.end()
                    && u32::from(b.span.start) < a.span.end()
            };
            if let Some((_, b)) = points[..n].iter().find(overlaps) {
                p.add(
                    k(&format!("points[{i}].address")),
                    format!("overlaps the point at {} {}", b.span.table, b.span.start),
                );
            }
        }
        if p.len() > before {
            return None;
        }
        Some(ModbusServerConfig {
            listen: listen.ok()?,
            unit,
            writers,
            points: points.into_iter().map(|(_, pt)| pt).collect(),
        })
    }
}

impl ServedPointSection {
    fn validate(&self, axes: &[&str], k: &dyn Fn(&str) -> String, p: &mut Problems) -> Option<ServedPoint> {
        let before = p.len();
        let names: Vec<&str> = ServedValue::ALL.iter().map(|v| v.0).collect();
        let (axis, value) = match self.value.split_once('.') {
            Some((a, v)) => (a, v),
            None => {
                p.add(
                    k("value"),
                    format!("{:?}: give \"<axis>.<value>\", values {names:?}", self.value),
                );
                return None;
            }
        };
        let axis_i = axes.iter().position(|x| *x == axis);
        if axis_i.is_none() {
            p.add(k("value"), format!("no axis {axis:?}; the axes are {axes:?}"));
        }
        let served = ServedValue::ALL.iter().find(|v| v.0 == value).map(|v| v.1);
        if served.is_none() {
            p.add(k("value"), format!("{value:?} is not served; values are {names:?}"));
        }
        let table = Table::parse(&self.table);
        if table.is_none() {
            p.add(
                k("table"),
                format!("{:?}: use \"input\", \"holding\", \"coil\" or \"discrete\"", self.table),
            );
        }
        let default_ty = if table.is_some_and(Table::is_bits) {
            "bool"
        } else {
            "f32"
        };
        let ty = DataType::parse(self.r#type.as_deref().unwrap_or(default_ty), None);
        if ty.is_none() || matches!(ty, Some(DataType::Bit(_))) {
            p.add(
                k("type"),
                "use bool (bit tables) or u16, i16, u32, i32, f32, u64, i64, f64",
            );
        }
        if let (Some(t), Some(ty)) = (table, ty)
            && t.is_bits() != (ty == DataType::Bool)
        {
            p.add(
                k("type"),
                "bool goes in coils and discrete inputs, numbers in registers",
            );
        }
        if let (Some(t), Some(v)) = (table, served)
            && t.is_bits() != v.is_digital()
        {
            p.add(
                k("table"),
                format!(
                    "{value} is {}: serve it in {}",
                    if v.is_digital() { "digital" } else { "a number" },
                    if v.is_digital() {
                        "coils or discrete inputs"
                    } else {
                        "input or holding registers"
                    }
                ),
            );
        }
        if self.writable {
            if served.is_some_and(|v| v.command().is_none()) {
                p.add(k("writable"), format!("{value} is measured, not commanded: only ppm_setpoint, start, stop, reset_fault and resume are written"));
            }
            if table.is_some_and(|t| !t.is_writable()) {
                p.add(k("writable"), "a written point goes in holding registers or coils");
            }
        }
        let order = match self.order.as_deref() {
            None => WordOrder::Abcd,
            Some(o) => WordOrder::parse(o).unwrap_or_else(|| {
                p.add(k("order"), format!("{o:?}: use ABCD, CDAB, BADC or DCBA"));
                WordOrder::Abcd
            }),
        };
        let scale = self.scale.unwrap_or(1.0);
        if !scale.is_finite() || scale == 0.0 {
            p.add(k("scale"), "a finite number, not 0");
        }
        let width = ty.map_or(1, DataType::width);
        if self.address.saturating_add(u32::from(width)) > 65_536 {
            p.add(
                k("address"),
                format!("{} is past the table's end (0..=65535, zero-based)", self.address),
            );
        }
        if p.len() > before {
            return None;
        }
        let ty = ty?;
        Some(ServedPoint {
            axis: axis_i?,
            value: served?,
            span: Span {
                table: table?,
                start: self.address as u16,
                width,
            },
            ty,
            order,
            scale,
            writable: self.writable,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{DEFAULT_TOML, from_toml_str};

    fn problems(section: &str) -> Vec<(String, String)> {
        match from_toml_str(&format!("{DEFAULT_TOML}\n{section}")) {
            Ok(_) => vec![],
            Err(e) => e.problems.into_iter().map(|p| (p.key, p.message)).collect(),
        }
    }

    #[test]
    fn a_map_of_axis_values_with_every_mistake_named() {
        let ok = "[modbus_server]\nlisten = \"127.0.0.1:5502\"\nwriters = [\"127.0.0.1\"]\npoints = [\n\
                  { value = \"axis_07.ppm_actual\", table = \"input\", address = 0 },\n\
                  { value = \"axis_07.ppm_setpoint\", table = \"holding\", address = 0, writable = true },\n\
                  { value = \"axis_07.reset_fault\", table = \"coil\", address = 0, writable = true },\n]\n";
        let cfg = from_toml_str(&format!("{DEFAULT_TOML}\n{ok}")).unwrap();
        let s = cfg.modbus_server.unwrap();
        assert_eq!(s.points.len(), 3);
        assert_eq!(s.points[0].span.width, 2, "f32 by default");
        let p = problems(
            "[modbus_server]\nlisten = \"5502\"\npoints = [\n\
             { value = \"axis_7.mode\", table = \"input\", address = 0 },\n\
             { value = \"axis_07.weld_temp_c\", table = \"holding\", address = 0, writable = true },\n\
             { value = \"axis_07.alert\", table = \"input\", address = 4 },\n\
             { value = \"axis_07.ppm_actual\", table = \"input\", address = 1 },\n\
             { value = \"axis_07.mode\", table = \"input\", address = 0 },\n\
             { value = \"axis_07.ppm_setpoint\", table = \"holding\", address = 10, writable = true },\n]\n",
        );
        let has = |key: &str, m: &str| p.iter().any(|(k, msg)| k == key && msg.contains(m));
        assert!(has("modbus_server.listen", "address and port"), "{p:?}");
        assert!(has("modbus_server.points[0].value", "no axis \"axis_7\""), "{p:?}");
        assert!(
            has("modbus_server.points[1].writable", "measured, not commanded"),
            "{p:?}"
        );
        assert!(
            has("modbus_server.points[2].table", "coils or discrete inputs"),
            "{p:?}"
        );
        assert!(has("modbus_server.points[4].address", "overlaps"), "{p:?}");
        assert!(has("modbus_server.writers", "no credentials"), "{p:?}");
    }
}
