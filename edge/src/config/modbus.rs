//! Modbus devices in the config (`driver = "modbus-tcp"` or `"modbus-rtu"`).
//!
//! ```toml
//! [[devices]]
//! id = "welder_01"
//! driver = "modbus-tcp"
//! endpoint = "192.168.10.21:502"   # modbus-rtu: port = "/dev/ttyUSB0", baud, parity, …
//! unit = 1
//! addressing = "zero-based"        # or "one-based": stated once, for every point
//! byte_order = "ABCD"              # default of the points; ABCD CDAB BADC DCBA
//! poll_ms = 50                     # the "default" poll group's period
//! groups = { slow = 1000 }         # more poll groups: name = period, ms
//! capture = { counter = "welds_total", per_part = 4, temperature = "weld_temp_c" }
//!
//! [[devices.points]]
//! name = "weld_temp_c"
//! table = "input"                  # input | holding | coil | discrete
//! address = 2
//! type = "f32"                     # bool bit u16 i16 u32 i32 f32 u64 i64 f64
//! unit = "°C"
//! ```
//!
//! Every key, its default and its rule is in `docs/configuration.md`.
//! Validation turns the sections into a [`ModbusConfig`] with wire
//! addresses (zero-based), the points in file order, each with its poll
//! group and staleness bound.

use super::devices::{DeviceSection, PointSection};
use super::file::Problems;
use std::collections::BTreeMap;
use std::time::Duration;
use triad_hw::modbus::{DataType, ModbusPoint, Span, Table, WordOrder};
use triad_hw::{Direction, PointInfo, PointKind};

/// Points one Modbus device may have.
pub const MAX_POINTS: usize = 1024;
/// Poll groups one device may have (the default one included).
pub const MAX_GROUPS: usize = 16;

/// How the node reaches a Modbus device.
#[derive(Clone, Debug, PartialEq)]
pub enum ModbusLink {
    /// Modbus TCP to `host:port` (a name is resolved at each connect).
    Tcp {
        /// `host:port`.
        endpoint: String,
    },
    /// Modbus RTU on a serial port.
    Rtu {
        /// Device path, e.g. `/dev/ttyUSB0`.
        port: String,
        /// Bits per second.
        baud: u32,
        /// `none`, `even` or `odd`.
        parity: Parity,
        /// 7 or 8.
        data_bits: u8,
        /// 1 or 2.
        stop_bits: u8,
    },
}

impl ModbusLink {
    /// Devices on the same link share one connection (a TCP gateway with
    /// several units, an RS-485 bus): this says which.
    pub fn key(&self) -> &str {
        match self {
            ModbusLink::Tcp { endpoint } => endpoint,
            ModbusLink::Rtu { port, .. } => port,
        }
    }
}

/// Serial parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even (the Modbus serial line spec's default, §2.5.1).
    Even,
    /// Odd.
    Odd,
}

/// Where a device's capture triggers come from: each increment of a
/// counter is one weld (one frame) of a part of `per_part` welds.
#[derive(Clone, Debug, PartialEq)]
pub struct Capture {
    /// The counter point (index into the device's points).
    pub counter: usize,
    /// Welds per part.
    pub per_part: u32,
    /// The point whose value the simulated camera takes as the weld's
    /// temperature (a real camera ignores it).
    pub temperature: Option<usize>,
}

/// One Modbus device, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusConfig {
    /// How it is reached.
    pub link: ModbusLink,
    /// Unit id (slave address).
    pub unit: u8,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Further tries of a request that timed out or failed in transport.
    pub retries: u32,
    /// Pause between two requests on the link.
    pub request_gap: Duration,
    /// First wait before reconnecting (or retrying a silent device); it
    /// doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Write outputs at every poll of their group (`every-cycle`), not
    /// only when they change.
    pub write_every_poll: bool,
    /// Items a block read may span between two points.
    pub merge_gap: u16,
    /// Poll groups: name and period; 0 is `default`.
    pub groups: Vec<(String, Duration)>,
    /// Points, in file order.
    pub points: Vec<ModbusPoint>,
    /// The same points as a binding sees them.
    pub infos: Vec<PointInfo>,
    /// Capture triggers from a counter.
    pub capture: Option<Capture>,
}

/// What `addressing` says.
#[derive(Clone, Copy, PartialEq)]
enum Addressing {
    Zero,
    One,
}

/// Keys of `[[devices]]` that only a Modbus device has.
pub(crate) fn keys_set(d: &DeviceSection) -> Vec<&'static str> {
    let keys: [(&str, bool); 18] = [
        ("endpoint", d.endpoint.is_some()),
        ("port", d.port.is_some()),
        ("baud", d.baud.is_some()),
        ("parity", d.parity.is_some()),
        ("data_bits", d.data_bits.is_some()),
        ("stop_bits", d.stop_bits.is_some()),
        ("unit", d.unit.is_some()),
        ("addressing", d.addressing.is_some()),
        ("byte_order", d.byte_order.is_some()),
        ("timeout_ms", d.timeout_ms.is_some()),
        ("retries", d.retries.is_some()),
        ("request_gap_ms", d.request_gap_ms.is_some()),
        ("reconnect_min_ms", d.reconnect_min_ms.is_some()),
        ("reconnect_max_ms", d.reconnect_max_ms.is_some()),
        ("write", d.write.is_some()),
        ("merge_gap", d.merge_gap.is_some()),
        ("poll_ms", d.poll_ms.is_some()),
        ("groups", d.groups.is_some()),
    ];
    let mut set: Vec<&str> = keys.into_iter().filter(|k| k.1).map(|k| k.0).collect();
    if d.capture.is_some() {
        set.push("capture");
    }
    set
}

/// Check a Modbus device's keys and points (`k` makes a key's name).
pub(crate) fn validate(
    d: &DeviceSection,
    rtu: bool,
    k: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<ModbusConfig> {
    let before = p.len();
    let link = link(d, rtu, k, p);
    let unit = d.unit.unwrap_or(1);
    let unit_ok = if rtu { 1..=247 } else { 0..=255 };
    if !unit_ok.contains(&unit) || (!rtu && (248..255).contains(&unit)) {
        p.add(
            k("unit"),
            format!(
                "{unit} is no unit id to poll; use 1..=247{}",
                if rtu {
                    ""
                } else {
                    " (or 255 for a device that ignores it)"
                }
            ),
        );
    }
    let addressing = match d.addressing.as_deref() {
        Some("zero-based") => Addressing::Zero,
        Some("one-based") => Addressing::One,
        other => {
            p.add(
                k("addressing"),
                format!(
                    "{}; say how this device's manual numbers its registers: \"zero-based\" (the address sent on the wire, 0..=65535) or \"one-based\" (1..=65536, the wire address + 1)",
                    other.map_or("missing".to_string(), |o| format!("{o:?} is neither")),
                ),
            );
            Addressing::Zero
        }
    };
    let order = parse_order(d.byte_order.as_deref().unwrap_or("ABCD"), &k("byte_order"), p);
    let ms = |key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64, p: &mut Problems| {
        let v = v.unwrap_or(default);
        p.range(&k(key), v, lo, hi, "ms", "");
        Duration::from_millis(v)
    };
    let timeout = ms("timeout_ms", d.timeout_ms, 200, 1, 60_000, p);
    let retries = d.retries.unwrap_or(1);
    p.range(&k("retries"), retries, 0, 10, "tries", "");
    // RTU frames need 3.5 characters of silence between them (Modbus over
    // serial line, §2.5.1.1): at least 2 ms, 11 bits a character.
    let rtu_gap_ms = match d.baud {
        _ if !rtu => 0,
        Some(b) if b > 0 => (38_500 / u64::from(b)).max(2),
        _ => 2,
    };
    let request_gap = ms("request_gap_ms", d.request_gap_ms, rtu_gap_ms, 0, 10_000, p);
    let reconnect_min = ms("reconnect_min_ms", d.reconnect_min_ms, 100, 1, 600_000, p);
    let reconnect_max = ms("reconnect_max_ms", d.reconnect_max_ms, 5_000, 1, 600_000, p);
    if reconnect_max < reconnect_min {
        p.add(
            k("reconnect_max_ms"),
            "is below reconnect_min_ms; the wait grows from min to max",
        );
    }
    let write_every_poll = match d.write.as_deref().unwrap_or("on-change") {
        "on-change" => false,
        "every-cycle" => true,
        other => {
            p.add(
                k("write"),
                format!("{other:?}: outputs are written \"on-change\" (default) or at every poll of their group, \"every-cycle\""),
            );
            false
        }
    };
    let merge_gap = d.merge_gap.unwrap_or(8);
    p.range(&k("merge_gap"), merge_gap, 0, 120, "items", "");
    let groups = groups(d, k, p);
    let settings = PointDefaults {
        addressing,
        order,
        timeout: timeout * (retries + 1),
        groups: &groups,
    };
    let points: Vec<ModbusPoint> = d
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, s)| point(s, &settings, &|f| k(&format!("points[{i}].{f}")), p))
        .collect();
    if d.points.is_empty() {
        p.add(
            k("points"),
            "a Modbus device needs [[devices.points]] entries: the registers and bits it reads and writes",
        );
    }
    if d.points.len() > MAX_POINTS {
        p.add(
            k("points"),
            format!("{} points, more than the {MAX_POINTS} of one device", d.points.len()),
        );
    }
    for (i, s) in d.points.iter().enumerate() {
        if d.points[..i].iter().any(|o| o.name == s.name) {
            p.add(
                k(&format!("points[{i}].name")),
                format!("{:?} names another point of this device too; names are unique", s.name),
            );
        }
    }
    let capture = d.capture.as_ref().and_then(|c| capture(c, &d.points, &points, k, p));
    if p.len() > before || points.len() != d.points.len() {
        return None;
    }
    let infos = points
        .iter()
        .map(|pt| PointInfo {
            name: pt.name.clone().into(),
            direction: pt.direction,
            kind: pt.kind(),
            unit: pt.unit.clone().into(),
        })
        .collect();
    Some(ModbusConfig {
        link: link?,
        unit,
        timeout,
        retries,
        request_gap,
        reconnect_min,
        reconnect_max,
        write_every_poll,
        merge_gap,
        groups,
        points,
        infos,
        capture,
    })
}

fn link(d: &DeviceSection, rtu: bool, k: &dyn Fn(&str) -> String, p: &mut Problems) -> Option<ModbusLink> {
    let (mine, theirs): (&[&str], &[&str]) = if rtu {
        (&["port"], &["endpoint"])
    } else {
        (&["endpoint"], &["port", "baud", "parity", "data_bits", "stop_bits"])
    };
    let set = keys_set(d);
    for key in theirs.iter().filter(|t| set.contains(t)) {
        p.add(
            k(key),
            format!(
                "is a key of {} devices; this one is {}",
                if rtu { "modbus-tcp" } else { "modbus-rtu" },
                d.driver
            ),
        );
    }
    if !rtu {
        let Some(endpoint) = &d.endpoint else {
            p.add(
                k("endpoint"),
                "missing: the device's \"host:port\", e.g. \"192.168.10.21:502\"",
            );
            return None;
        };
        let port_ok = endpoint
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
        if !port_ok {
            p.add(
                k("endpoint"),
                format!("{endpoint:?}: give \"host:port\", e.g. \"192.168.10.21:502\" (502 is Modbus TCP's port)"),
            );
            return None;
        }
        return Some(ModbusLink::Tcp {
            endpoint: endpoint.clone(),
        });
    }
    let Some(port) = &d.port else {
        p.add(k(mine[0]), "missing: the serial port's path, e.g. \"/dev/ttyUSB0\"");
        return None;
    };
    let baud = d.baud.unwrap_or(19_200);
    p.range(&k("baud"), baud, 300, 4_000_000, "bit/s", "");
    let parity = match d.parity.as_deref().unwrap_or("even") {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => {
            p.add(
                k("parity"),
                format!("{other:?}: use \"none\", \"even\" (default) or \"odd\""),
            );
            Parity::Even
        }
    };
    let data_bits = d.data_bits.unwrap_or(8);
    p.range(
        &k("data_bits"),
        data_bits,
        8,
        8,
        "bits",
        "Modbus RTU frames have 8 data bits",
    );
    let stop_bits = d.stop_bits.unwrap_or(1);
    p.range(&k("stop_bits"), stop_bits, 1, 2, "bits", "");
    Some(ModbusLink::Rtu {
        port: port.clone(),
        baud,
        parity,
        data_bits,
        stop_bits,
    })
}

fn parse_order(s: &str, key: &str, p: &mut Problems) -> WordOrder {
    WordOrder::parse(s).unwrap_or_else(|| {
        p.add(
            key,
            format!("{s:?}: use \"ABCD\" (big-endian), \"CDAB\" (word swap), \"BADC\" (byte swap) or \"DCBA\" (little-endian)"),
        );
        WordOrder::Abcd
    })
}

fn groups(d: &DeviceSection, k: &dyn Fn(&str) -> String, p: &mut Problems) -> Vec<(String, Duration)> {
    let mut out = vec![("default".to_string(), Duration::from_millis(d.poll_ms.unwrap_or(50)))];
    p.range(&k("poll_ms"), d.poll_ms.unwrap_or(50), 1, 3_600_000, "ms", "");
    let extra: &BTreeMap<String, u64> = match &d.groups {
        Some(g) => g,
        None => return out,
    };
    if extra.len() + 1 > MAX_GROUPS {
        p.add(
            k("groups"),
            format!(
                "{} groups, more than {MAX_GROUPS} with the default one",
                extra.len() + 1
            ),
        );
    }
    for (name, &ms) in extra {
        if name == "default" {
            p.add(
                k("groups"),
                "\"default\" is poll_ms's group: set its period with poll_ms",
            );
            continue;
        }
        p.range(&k(&format!("groups.{name}")), ms, 1, 3_600_000, "ms", "");
        out.push((name.clone(), Duration::from_millis(ms)));
    }
    out
}

/// Device-wide settings a point starts from.
struct PointDefaults<'a> {
    addressing: Addressing,
    order: WordOrder,
    /// The longest one request can take with its retries.
    timeout: Duration,
    groups: &'a [(String, Duration)],
}

fn point(s: &PointSection, dev: &PointDefaults, k: &dyn Fn(&str) -> String, p: &mut Problems) -> Option<ModbusPoint> {
    let before = p.len();
    for key in s.gpio_keys() {
        p.add(k(key), "is a key of gpio points; this is a Modbus device");
    }
    p.id(&k("name"), triad_schemas::ids::validate("point", &s.name));
    let table = match s.table.as_deref().map(|t| (t, Table::parse(t))) {
        Some((_, Some(t))) => Some(t),
        Some((t, None)) => {
            p.add(
                k("table"),
                format!("{t:?}: use \"input\", \"holding\", \"coil\" or \"discrete\""),
            );
            None
        }
        None => {
            p.add(k("table"), "missing: \"input\", \"holding\", \"coil\" or \"discrete\"");
            None
        }
    };
    let default_ty = if table.is_some_and(Table::is_bits) {
        "bool"
    } else {
        "u16"
    };
    let ty_name = s.r#type.as_deref().unwrap_or(default_ty);
    let ty = match DataType::parse(ty_name, s.bit) {
        Some(t) => Some(t),
        None if ty_name == "bit" => {
            p.add(
                k("bit"),
                "type = \"bit\" needs bit = 0..15 (0 the least significant bit of the register)",
            );
            None
        }
        None => {
            p.add(k("type"), format!("{ty_name:?}: use one of {:?}", DataType::NAMES));
            None
        }
    };
    if let (Some(b), Some(t)) = (s.bit, ty) {
        if !matches!(t, DataType::Bit(_)) {
            p.add(k("bit"), "only for type = \"bit\"");
        } else if b > 15 {
            p.add(k("bit"), format!("{b}: a register has bits 0..=15"));
        }
    }
    if let (Some(table), Some(ty)) = (table, ty)
        && table.is_bits() != (ty == DataType::Bool)
    {
        p.add(
            k("type"),
            if table.is_bits() {
                format!("{table} hold single bits: use type = \"bool\"")
            } else {
                format!("{table} hold 16-bit words: type \"bool\" is for coils and discrete inputs (a bit of a register is type = \"bit\")")
            },
        );
    }
    let direction = match s.direction.as_deref().unwrap_or("input") {
        "input" => Direction::Input,
        "output" => Direction::Output,
        other => {
            p.add(
                k("direction"),
                format!("{other:?}: \"input\" (read, default) or \"output\" (written)"),
            );
            Direction::Input
        }
    };
    if direction == Direction::Output {
        if table.is_some_and(|t| !t.is_writable()) {
            p.add(
                k("direction"),
                "only coils and holding registers are written; this table is read-only",
            );
        }
        if matches!(ty, Some(DataType::Bit(_))) {
            p.add(
                k("direction"),
                "a bit of a register is not written (that would rewrite its neighbours): use a coil or a whole register",
            );
        }
    }
    let address = match (s.address, dev.addressing) {
        (None, _) => {
            p.add(k("address"), "missing");
            None
        }
        (Some(a), Addressing::Zero) if a <= 65_535 => Some(a as u16),
        (Some(a), Addressing::One) if (1..=65_536).contains(&a) => Some((a - 1) as u16),
        (Some(a), mode) => {
            let (lo, hi) = if mode == Addressing::Zero {
                (0, 65_535)
            } else {
                (1, 65_536)
            };
            let hint = if a > 65_536 {
                " (for a \"40001\"-style number, give table = \"holding\" and the number after the table's digit)"
            } else {
                ""
            };
            p.add(
                k("address"),
                format!("{a} is outside {lo}..={hi} for this device's addressing{hint}"),
            );
            None
        }
    };
    if let (Some(a), Some(t)) = (address, ty)
        && u32::from(a) + u32::from(t.width()) > 65_536
    {
        p.add(k("address"), format!("a {ty_name} at {a} runs past the table's end"));
    }
    let order = s.order.as_deref().map_or(dev.order, |o| parse_order(o, &k("order"), p));
    let digital = ty.is_some_and(DataType::is_digital);
    for (key, v) in [("scale", s.scale), ("offset", s.offset)] {
        match v {
            Some(_) if digital => p.add(k(key), "a digital point has no scale or offset"),
            Some(v) if !v.is_finite() || (key == "scale" && v == 0.0) => p.add(
                k(key),
                format!(
                    "{v} is no {key}: a finite number{}",
                    if key == "scale" { ", not 0" } else { "" }
                ),
            ),
            _ => {}
        }
    }
    let group = s.group.as_deref().unwrap_or("default");
    let Some(gi) = dev.groups.iter().position(|g| g.0 == group) else {
        let names: Vec<&str> = dev.groups.iter().map(|g| g.0.as_str()).collect();
        p.add(
            k("group"),
            format!("no poll group {group:?}; this device's groups are {names:?}"),
        );
        return None;
    };
    let period = dev.groups[gi].1;
    // Three polls missed, or one poll and every retry of it.
    let default_stale = (period * 3).max(period + dev.timeout);
    if let Some(ms) = s.stale_ms {
        p.range(&k("stale_ms"), ms, 1, 3_600_000, "ms", "");
    }
    let stale = s
        .stale_ms
        .map_or(default_stale, |ms| Duration::from_millis(ms.min(3_600_000)));
    if stale < period {
        p.add(
            k("stale_ms"),
            format!(
                "{} ms is shorter than the point's poll period ({} ms): it would be stale between two polls",
                stale.as_millis(),
                period.as_millis()
            ),
        );
    }
    if p.len() > before {
        return None;
    }
    let (table, ty, start) = (table?, ty?, address?);
    Some(ModbusPoint {
        name: s.name.clone(),
        span: Span {
            table,
            start,
            width: ty.width(),
        },
        ty,
        order,
        scale: s.scale.unwrap_or(1.0),
        offset: s.offset.unwrap_or(0.0),
        unit: s.unit.clone().unwrap_or_default(),
        direction,
        group: gi,
        stale_ns: stale.as_nanos() as i64,
    })
}

fn capture(
    c: &super::devices::CaptureSection,
    sections: &[PointSection],
    points: &[ModbusPoint],
    k: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Capture> {
    let find = |key: &str, name: &str, p: &mut Problems| -> Option<usize> {
        let i = sections.iter().position(|s| s.name == name);
        let pt = i.and_then(|i| points.get(i).filter(|pt| pt.name == name));
        match pt {
            None if i.is_none() => {
                p.add(
                    k(&format!("capture.{key}")),
                    format!("no point {name:?} on this device"),
                );
                None
            }
            None => None,
            Some(pt) if pt.direction != Direction::Input || pt.kind() == PointKind::Bool => {
                p.add(
                    k(&format!("capture.{key}")),
                    format!("{name:?} must be a numeric input point"),
                );
                None
            }
            Some(_) => i,
        }
    };
    let counter = find("counter", &c.counter, p);
    let temperature = c.temperature.as_ref().map(|t| find("temperature", t, p));
    let per_part = c.per_part.unwrap_or(1);
    p.range(&k("capture.per_part"), per_part, 1, 64, "welds per part", "");
    Some(Capture {
        counter: counter?,
        per_part,
        temperature: temperature.unwrap_or(None),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{DEFAULT_TOML, Driver, from_toml_str};
    use std::time::Duration;
    use triad_hw::modbus::{DataType, Table, WordOrder};

    const DEVICE: &str = "[[devices]]\nid = \"plc\"\ndriver = \"modbus-tcp\"\nendpoint = \"10.0.0.5:502\"\n\
                          addressing = \"one-based\"\nbyte_order = \"CDAB\"\ngroups = { slow = 1000 }\n";

    fn with(device: &str) -> Result<super::ModbusConfig, Vec<(String, String)>> {
        match from_toml_str(&format!("{DEFAULT_TOML}\n{device}")) {
            Ok(cfg) => match &cfg.devices[1].driver {
                Driver::Modbus(m) => Ok((**m).clone()),
                other => panic!("{other:?}"),
            },
            Err(e) => Err(e.problems.into_iter().map(|p| (p.key, p.message)).collect()),
        }
    }

    fn problem(device: &str, key: &str) -> String {
        let p = with(device).expect_err("refused");
        p.iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no problem at {key}: {p:?}"))
            .1
            .clone()
    }

    #[test]
    fn a_device_becomes_wire_addresses_with_groups_orders_and_bounds() {
        let m = with(&format!(
            "{DEVICE}points = [\n\
               {{ name = \"temp\", table = \"input\", address = 1, type = \"f32\", unit = \"°C\" }},\n\
               {{ name = \"raw\", table = \"holding\", address = 40, type = \"i16\", scale = 0.1, order = \"BADC\", group = \"slow\" }},\n\
               {{ name = \"run\", table = \"coil\", address = 1, direction = \"output\" }},\n\
               {{ name = \"alarm\", table = \"input\", address = 3, type = \"bit\", bit = 15, stale_ms = 500 }},\n]\n"
        ))
        .unwrap();
        let p = &m.points;
        assert_eq!(
            (p[0].span.table, p[0].span.start, p[0].ty),
            (Table::Input, 0, DataType::F32)
        );
        assert_eq!(p[0].order, WordOrder::Cdab, "the device's order");
        assert_eq!((p[1].span.start, p[1].order, p[1].group), (39, WordOrder::Badc, 1));
        assert_eq!(p[2].span.table, Table::Coil);
        assert_eq!(p[3].ty, DataType::Bit(15));
        // Default bound: 3 polls of 50 ms, or one poll and both tries of 200 ms.
        assert_eq!(p[0].stale_ns, 450_000_000);
        assert_eq!(p[1].stale_ns, 3_000_000_000, "three polls of the slow group");
        assert_eq!(p[3].stale_ns, 500_000_000);
        assert_eq!(m.groups[1], ("slow".to_string(), Duration::from_secs(1)));
        assert_eq!(m.infos[2].direction, triad_hw::Direction::Output);
        assert_eq!(m.infos[3].kind, triad_hw::PointKind::Bool);
    }

    #[test]
    fn each_wrong_key_is_named_with_its_fix() {
        let d = "[[devices]]\nid = \"plc\"\ndriver = \"modbus-tcp\"\nendpoint = \"10.0.0.5:502\"\n";
        let pt = |p: &str| format!("{d}addressing = \"zero-based\"\npoints = [ {{ name = \"x\", {p} }} ]\n");
        let m = problem(
            &format!("{d}points = [ {{ name = \"x\", table = \"input\", address = 0 }} ]\n"),
            "devices[1].addressing",
        );
        assert!(m.contains("\"zero-based\"") && m.contains("\"one-based\""), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, type = \"bool\""),
            "devices[1].points[0].type",
        );
        assert!(m.contains("type = \"bit\""), "{m}");
        let m = problem(
            &pt("table = \"coil\", address = 0, type = \"u16\""),
            "devices[1].points[0].type",
        );
        assert!(m.contains("use type = \"bool\""), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, direction = \"output\""),
            "devices[1].points[0].direction",
        );
        assert!(m.contains("read-only"), "{m}");
        let m = problem(
            &pt("table = \"holding\", address = 0, type = \"bit\", bit = 2, direction = \"output\""),
            "devices[1].points[0].direction",
        );
        assert!(m.contains("use a coil or a whole register"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, type = \"bit\""),
            "devices[1].points[0].bit",
        );
        assert!(m.contains("bit = 0..15"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, type = \"f32\", order = \"ABDC\""),
            "devices[1].points[0].order",
        );
        assert!(m.contains("\"CDAB\" (word swap)"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 400001"),
            "devices[1].points[0].address",
        );
        assert!(m.contains("40001\"-style"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 65535, type = \"u32\""),
            "devices[1].points[0].address",
        );
        assert!(m.contains("runs past the table's end"), "{m}");
        let m = problem(
            &pt("table = \"discrete\", address = 0, scale = 2.0"),
            "devices[1].points[0].scale",
        );
        assert!(m.contains("no scale"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, scale = 0.0"),
            "devices[1].points[0].scale",
        );
        assert!(m.contains("not 0"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, group = \"fast\""),
            "devices[1].points[0].group",
        );
        assert!(m.contains("[\"default\"]"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, stale_ms = 10"),
            "devices[1].points[0].stale_ms",
        );
        assert!(m.contains("shorter than the point's poll period (50 ms)"), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0, line = 4"),
            "devices[1].points[0].line",
        );
        assert!(m.contains("gpio"), "{m}");
        let m = problem(
            &format!(
                "{}capture = {{ counter = \"parts\" }}\n",
                pt("table = \"input\", address = 0")
            ),
            "devices[1].capture.counter",
        );
        assert!(m.contains("no point \"parts\""), "{m}");
        let m = problem(
            &pt("table = \"input\", address = 0").replace("10.0.0.5:502", "10.0.0.5"),
            "devices[1].endpoint",
        );
        assert!(m.contains("\"host:port\""), "{m}");
        let m = problem(
            &format!("{}port = \"/dev/ttyS0\"\n", pt("table = \"input\", address = 0")),
            "devices[1].port",
        );
        assert!(m.contains("key of modbus-rtu devices"), "{m}");
        let m = problem(
            &format!("{}unit = 248\n", pt("table = \"input\", address = 0")),
            "devices[1].unit",
        );
        assert!(m.contains("1..=247"), "{m}");
        let m = problem(
            "[[devices]]\nid = \"plc\"\ndriver = \"sim\"\nendpoint = \"10.0.0.5:502\"\n",
            "devices[1].endpoint",
        );
        assert!(m.contains("no key of a sim device"), "{m}");
        let m = problem(&format!("{d}addressing = \"zero-based\"\n"), "devices[1].points");
        assert!(m.contains("[[devices.points]]"), "{m}");
        let m = problem(
            &format!(
                "{d}addressing = \"zero-based\"\npoints = [ {{ name = \"x\", table = \"input\", address = 0 }}, {{ name = \"x\", table = \"input\", address = 1 }} ]\n"
            ),
            "devices[1].points[1].name",
        );
        assert!(m.contains("unique"), "{m}");
    }

    #[test]
    fn rtu_has_the_serial_line_specs_defaults() {
        let m = with(
            "[[devices]]\nid = \"drive\"\ndriver = \"modbus-rtu\"\nport = \"/dev/ttyUSB0\"\nunit = 3\naddressing = \"zero-based\"\n\
             points = [ { name = \"speed\", table = \"holding\", address = 0 } ]\n",
        )
        .unwrap();
        assert_eq!(
            m.link,
            super::ModbusLink::Rtu {
                port: "/dev/ttyUSB0".into(),
                baud: 19_200,
                parity: super::Parity::Even,
                data_bits: 8,
                stop_bits: 1
            }
        );
        assert_eq!(m.points[0].ty, DataType::U16, "a register's default type");
        assert_eq!(
            m.points[0].direction,
            triad_hw::Direction::Input,
            "read unless said otherwise"
        );
    }
}
