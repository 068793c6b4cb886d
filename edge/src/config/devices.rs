//! Field devices (`[[devices]]`) and the binding of each axis' signals to
//! their points (`[axes.io]`).
//!
//! ```toml
//! [[devices]]
//! id = "welder_01"
//! driver = "sim"          # the simulated welding line of one axis
//!
//! [[axes]]
//! id = "axis_01"
//! # ...
//! [axes.io]
//! device = "welder_01"    # every signal from the point of its own name
//! # weld_temp_c = "pyro_01.temp"   # or one signal from another point
//! ```
//!
//! Signals are the fields of the axis program's process image
//! ([`Signal`]): inputs `feed_ppm`, `weld_temp_c`, `weld_current_a`,
//! `ambient_c`, `parts_total`, `estop`; outputs `feed_ppm_cmd`,
//! `weld_enable`, `weld_current_cmd_a`. Validation checks that every signal
//! names a point the device has, of the right direction and kind; that no
//! output point is driven by two axes; and that a device's parts (its
//! capture triggers) go to one axis only.

use super::file::{AxisSection, Problems};
use super::gpio::GpioConfig;
use super::modbus::{ModbusConfig, ModbusLink};
use serde::Deserialize;
use std::sync::Arc;
use triad_hw::{AXIS_IMAGE_POINTS, Direction, PointInfo, PointKind, Signal};

/// Devices one node scans at most.
pub const MAX_DEVICES: usize = 256;

/// `[[devices]]`: the keys of every driver (each refuses the others').
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Id, named by `[axes.io]`.
    pub id: String,
    /// `sim`, `modbus-tcp`, `modbus-rtu` or `gpio`.
    pub driver: String,
    /// `sim`: seed of the simulated plant (default `[sim] seed` + the
    /// device's position in the file).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `modbus-tcp`: `host:port`.
    pub endpoint: Option<String>,
    /// `modbus-rtu`: serial port path.
    pub port: Option<String>,
    /// `modbus-rtu`: bit/s (default 19200).
    pub baud: Option<u32>,
    /// `modbus-rtu`: `none`, `even` (default) or `odd`.
    pub parity: Option<String>,
    /// `modbus-rtu`: 7 or 8 (default).
    pub data_bits: Option<u8>,
    /// `modbus-rtu`: 1 (default) or 2.
    pub stop_bits: Option<u8>,
    /// Modbus unit id (default 1).
    pub unit: Option<u8>,
    /// Modbus: `zero-based` or `one-based` (required).
    pub addressing: Option<String>,
    /// Modbus: default byte and word order of the points (default `ABCD`).
    pub byte_order: Option<String>,
    /// Modbus: longest wait for an answer, ms (default 200).
    pub timeout_ms: Option<u64>,
    /// Modbus: further tries of a request that got no answer (default 1).
    pub retries: Option<u32>,
    /// Modbus: pause between requests on the link, ms (default 0).
    pub request_gap_ms: Option<u64>,
    /// Modbus: first wait before a reconnect, ms (default 100).
    pub reconnect_min_ms: Option<u64>,
    /// Modbus: longest wait before a reconnect, ms (default 5000).
    pub reconnect_max_ms: Option<u64>,
    /// Modbus: outputs written `on-change` (default) or `every-cycle`.
    pub write: Option<String>,
    /// Modbus: items a block read may span between points (default 8).
    pub merge_gap: Option<u16>,
    /// Modbus: period of the `default` poll group, ms (default 50).
    pub poll_ms: Option<u64>,
    /// Modbus: more poll groups, name = period in ms.
    pub groups: Option<std::collections::BTreeMap<String, u64>>,
    /// Modbus: capture triggers from a counter.
    pub capture: Option<CaptureSection>,
    /// `gpio`: the chip (`/dev/gpiochip0` or `gpiochip0`).
    pub chip: Option<String>,
    /// Modbus and `gpio`: the device's points.
    #[serde(default)]
    pub points: Vec<PointSection>,
}

/// `[devices.capture]`: each increment of `counter` is one weld to image.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// The counter point.
    pub counter: String,
    /// Welds per part (default 1).
    pub per_part: Option<u32>,
    /// The point the simulated camera takes as the weld temperature.
    pub temperature: Option<String>,
}

/// `[[devices.points]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PointSection {
    pub name: String,
    /// Read (`input`, default) or written (`output`).
    pub direction: Option<String>,
    pub unit: Option<String>,
    // Modbus
    pub table: Option<String>,
    pub address: Option<u32>,
    pub r#type: Option<String>,
    pub bit: Option<u8>,
    pub order: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub group: Option<String>,
    pub stale_ms: Option<u64>,
    // gpio
    pub line: Option<u32>,
    pub active_low: Option<bool>,
}

impl PointSection {
    /// The gpio keys set.
    pub(crate) fn gpio_keys(&self) -> Vec<&'static str> {
        [("line", self.line.is_some()), ("active_low", self.active_low.is_some())]
            .into_iter()
            .filter(|k| k.1)
            .map(|k| k.0)
            .collect()
    }

    /// The Modbus keys set.
    pub(crate) fn modbus_keys(&self) -> Vec<&'static str> {
        [
            ("table", self.table.is_some()),
            ("address", self.address.is_some()),
            ("type", self.r#type.is_some()),
            ("bit", self.bit.is_some()),
            ("order", self.order.is_some()),
            ("scale", self.scale.is_some()),
            ("offset", self.offset.is_some()),
            ("group", self.group.is_some()),
            ("stale_ms", self.stale_ms.is_some()),
        ]
        .into_iter()
        .filter(|k| k.1)
        .map(|k| k.0)
        .collect()
    }
}

/// `[axes.io]`: `device` binds every signal to the point of its name on
/// that device; a signal key (`"device.point"`) binds that signal alone.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AxisIoSection {
    pub device: Option<String>,
    pub feed_ppm: Option<String>,
    pub weld_temp_c: Option<String>,
    pub weld_current_a: Option<String>,
    pub ambient_c: Option<String>,
    pub parts_total: Option<String>,
    pub estop: Option<String>,
    pub feed_ppm_cmd: Option<String>,
    pub weld_enable: Option<String>,
    pub weld_current_cmd_a: Option<String>,
}

impl AxisIoSection {
    fn signal(&self, s: Signal) -> Option<&String> {
        match s {
            Signal::FeedPpm => self.feed_ppm.as_ref(),
            Signal::WeldTempC => self.weld_temp_c.as_ref(),
            Signal::WeldCurrentA => self.weld_current_a.as_ref(),
            Signal::AmbientC => self.ambient_c.as_ref(),
            Signal::PartsTotal => self.parts_total.as_ref(),
            Signal::Estop => self.estop.as_ref(),
            Signal::FeedPpmCmd => self.feed_ppm_cmd.as_ref(),
            Signal::WeldEnable => self.weld_enable.as_ref(),
            Signal::WeldCurrentCmdA => self.weld_current_cmd_a.as_ref(),
        }
    }
}

/// A device's driver and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Driver {
    /// The simulated welding line of one axis (its points:
    /// [`AXIS_IMAGE_POINTS`]), deterministic by seed.
    Sim {
        /// Seed of its plant.
        seed: u64,
    },
    /// A Modbus TCP or RTU device.
    Modbus(Arc<ModbusConfig>),
    /// Digital points on the lines of a GPIO chip.
    Gpio(Arc<GpioConfig>),
}

impl Driver {
    /// The driver's name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Sim { .. } => "sim",
            Driver::Modbus(m) => match m.link {
                ModbusLink::Tcp { .. } => "modbus-tcp",
                ModbusLink::Rtu { .. } => "modbus-rtu",
            },
            Driver::Gpio(_) => "gpio",
        }
    }

    /// The points a device of this driver has.
    pub fn points(&self) -> &[PointInfo] {
        match self {
            Driver::Sim { .. } => &AXIS_IMAGE_POINTS,
            Driver::Modbus(m) => &m.infos,
            Driver::Gpio(g) => &g.infos,
        }
    }
}

/// One field device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig {
    /// Id (file devices follow the id rule; the simulated plant `--sim`
    /// gives an unbound axis is `sim:<axis>`).
    pub id: String,
    /// Driver and settings.
    pub driver: Driver,
}

/// A point of a device: indices into `NodeConfig::devices` and the
/// device's point list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointRef {
    /// Position of the device in `NodeConfig::devices`.
    pub device: usize,
    /// Position of the point in the device's points.
    pub point: usize,
}

/// Where each of an axis' signals lives, indexed by [`Signal::index`].
#[derive(Clone, Debug, PartialEq)]
pub struct IoBinding(pub [PointRef; 9]);

impl IoBinding {
    /// The point of `s`.
    pub fn point(&self, s: Signal) -> PointRef {
        self.0[s.index()]
    }
}

/// Check `[[devices]]` and every axis' `[axes.io]`.
pub(crate) fn validate(
    devices: &[DeviceSection],
    axes: &[AxisSection],
    sim_seed: u64,
    p: &mut Problems,
) -> (Vec<DeviceConfig>, Vec<Option<IoBinding>>) {
    if devices.len() > MAX_DEVICES {
        p.add(
            "devices",
            format!(
                "{} [[devices]] entries, more than the {MAX_DEVICES} one node scans",
                devices.len()
            ),
        );
    }
    let mut out = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let k = |f: &str| format!("devices[{i}].{f}");
        p.id(&k("id"), triad_schemas::ids::validate("device", &d.id));
        if devices[..i].iter().any(|e| e.id == d.id) {
            p.add(
                k("id"),
                format!("{:?} is used by more than one device; ids must be unique", d.id),
            );
        }
        let driver = match d.driver.as_str() {
            "sim" => {
                let foreign = [super::modbus::keys_set(d), points_keys(d)].concat();
                for key in foreign {
                    p.add(k(key), "is no key of a sim device (it has id, driver and seed)");
                }
                Driver::Sim {
                    seed: d.seed.unwrap_or(sim_seed.wrapping_add(i as u64)),
                }
            }
            "gpio" => match super::gpio::validate(d, &k, p) {
                Some(g) => Driver::Gpio(Arc::new(g)),
                None => continue,
            },
            "modbus-tcp" | "modbus-rtu" => {
                if d.seed.is_some() {
                    p.add(k("seed"), "only a sim device has a seed");
                }
                if d.chip.is_some() {
                    p.add(k("chip"), "is a key of gpio devices");
                }
                match super::modbus::validate(d, d.driver == "modbus-rtu", &k, p) {
                    Some(m) => Driver::Modbus(Arc::new(m)),
                    None => continue,
                }
            }
            other => {
                let why = format!("{other:?} is no driver");
                p.add(
                    k("driver"),
                    format!("{why}; this version has \"sim\" (the simulated welding line), \"modbus-tcp\", \"modbus-rtu\" and \"gpio\""),
                );
                continue;
            }
        };
        out.push(DeviceConfig {
            id: d.id.clone(),
            driver,
        });
    }
    let bindings: Vec<Option<IoBinding>> = axes
        .iter()
        .enumerate()
        .map(|(i, a)| a.io.as_ref().and_then(|io| bind(i, io, &out, p)))
        .collect();
    check_shared_points(axes, &bindings, &out, p);
    check_links(&out, p);
    check_capture(&bindings, &out, p);
    (out, bindings)
}

/// `chip` and `points`, which a sim device has not.
fn points_keys(d: &DeviceSection) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if d.chip.is_some() {
        keys.push("chip");
    }
    if !d.points.is_empty() {
        keys.push("points");
    }
    keys
}

/// Resolve one axis' signals to points.
fn bind(axis: usize, io: &AxisIoSection, devices: &[DeviceConfig], p: &mut Problems) -> Option<IoBinding> {
    let mut refs = [PointRef { device: 0, point: 0 }; 9];
    let mut ok = true;
    let mut missing = Vec::new();
    for s in Signal::ALL {
        let key = format!("axes[{axis}].io.{}", s.name());
        let (device, point, key) = match (io.signal(s), &io.device) {
            (Some(spec), _) => match spec.split_once('.') {
                Some((d, pt)) => (d.to_string(), pt.to_string(), key),
                None => {
                    p.add(
                        key,
                        format!(
                            "{spec:?}: name a point as \"device.point\", e.g. \"welder_01.{}\"",
                            s.name()
                        ),
                    );
                    ok = false;
                    continue;
                }
            },
            (None, Some(d)) => (d.clone(), s.name().to_string(), format!("axes[{axis}].io.device")),
            (None, None) => {
                missing.push(s.name());
                continue;
            }
        };
        let Some(di) = devices.iter().position(|d| d.id == device) else {
            let known: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
            p.add(
                key,
                format!("no [[devices]] entry has id {device:?}; the devices are {known:?}"),
            );
            ok = false;
            continue;
        };
        let points = devices[di].driver.points();
        let Some(pi) = points.iter().position(|x| x.name == point) else {
            let names: Vec<&str> = points.iter().map(|x| x.name.as_ref()).collect();
            p.add(
                key,
                format!("device {device:?} has no point {point:?}; its points are {names:?}"),
            );
            ok = false;
            continue;
        };
        let info = &points[pi];
        if info.direction != s.direction() {
            let (want, got) = match s.direction() {
                Direction::Input => ("an input", "an output"),
                Direction::Output => ("an output", "an input"),
            };
            p.add(
                key,
                format!(
                    "{} is {want} of the program, but {device}.{point} is {got}; bind a point the scan {}",
                    s.name(),
                    if s.direction() == Direction::Input {
                        "reads"
                    } else {
                        "writes"
                    }
                ),
            );
            ok = false;
            continue;
        }
        if (info.kind == PointKind::Bool) != (s.kind() == PointKind::Bool) {
            p.add(
                key,
                format!(
                    "{} is {}, but {device}.{point} is {}; bind a point of its kind",
                    s.name(),
                    kind_text(s.kind()),
                    kind_text(info.kind)
                ),
            );
            ok = false;
            continue;
        }
        refs[s.index()] = PointRef { device: di, point: pi };
    }
    if !missing.is_empty() {
        p.add(
            format!("axes[{axis}].io"),
            format!("signals {missing:?} are bound to no point: give each a \"device.point\", or set device = \"…\" for every signal left out"),
        );
        ok = false;
    }
    ok.then_some(IoBinding(refs))
}

fn kind_text(k: PointKind) -> &'static str {
    match k {
        PointKind::Bool => "a digital point",
        PointKind::Analog => "a number",
        PointKind::Counter => "a count",
    }
}

/// Modbus RTU devices on one serial port share its line settings.
fn check_links(devices: &[DeviceConfig], p: &mut Problems) {
    let rtu = |d: &DeviceConfig| match &d.driver {
        Driver::Modbus(m) if matches!(m.link, ModbusLink::Rtu { .. }) => Some(m.link.clone()),
        _ => None,
    };
    for (i, d) in devices.iter().enumerate() {
        let Some(link) = rtu(d) else { continue };
        let other = devices[..i]
            .iter()
            .find(|e| rtu(e).is_some_and(|l| l.key() == link.key() && l != link));
        if let Some(e) = other {
            p.add(
                format!("devices[{i}].baud"),
                format!(
                    "shares port {} with device {:?} but not its baud, parity or stop bits; units on one line share them",
                    link.key(),
                    e.id
                ),
            );
        }
    }
}

/// A device's capture triggers go to the axis that binds its
/// `parts_total`: a device with `capture` must be that device for an axis.
fn check_capture(bindings: &[Option<IoBinding>], devices: &[DeviceConfig], p: &mut Problems) {
    for (i, d) in devices.iter().enumerate() {
        let Driver::Modbus(m) = &d.driver else { continue };
        if m.capture.is_none() {
            continue;
        }
        let owned = bindings
            .iter()
            .flatten()
            .any(|b| b.point(Signal::PartsTotal).device == i);
        if !owned {
            p.add(
                format!("devices[{i}].capture"),
                format!(
                    "the capture triggers of {:?} go to the axis whose parts_total is bound to this device, and none is: bind an axis' parts_total here or move capture to that axis' parts device",
                    d.id
                ),
            );
        }
    }
}

/// What an axis takes for itself: an output point it drives, or the
/// parts (the capture triggers) of a device.
#[derive(PartialEq)]
enum Claim {
    Output(PointRef),
    Parts(usize),
}

fn claims(b: &IoBinding) -> impl Iterator<Item = (Signal, Claim)> + '_ {
    Signal::ALL.into_iter().filter_map(move |s| match s {
        Signal::PartsTotal => Some((s, Claim::Parts(b.point(s).device))),
        _ if s.direction() == Direction::Output => Some((s, Claim::Output(b.point(s)))),
        _ => None,
    })
}

/// An output point is driven by one axis; a device's parts (and so its
/// capture triggers) count for one axis.
fn check_shared_points(
    axes: &[AxisSection],
    bindings: &[Option<IoBinding>],
    devices: &[DeviceConfig],
    p: &mut Problems,
) {
    for (i, b) in bindings.iter().enumerate() {
        let Some(b) = b else { continue };
        for (s, claim) in claims(b) {
            let Some(j) = bindings[..i]
                .iter()
                .position(|o| o.as_ref().is_some_and(|o| claims(o).any(|(_, c)| c == claim)))
            else {
                continue;
            };
            let what = match claim {
                Claim::Parts(d) => format!(
                    "the parts of device {:?} (its capture triggers) already count for axis {:?}; a device's parts go to one axis",
                    devices[d].id, axes[j].id
                ),
                Claim::Output(r) => format!(
                    "point {}.{} is already driven by axis {:?}; an output has one writer",
                    devices[r.device].id,
                    devices[r.device].driver.points()[r.point].name,
                    axes[j].id
                ),
            };
            p.add(format!("axes[{i}].io.{}", s.name()), what);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigProblem, DEFAULT_TOML, from_toml_str};
    use triad_hw::Signal;

    /// The built-in config with its `[[axes]]` binding replaced by `io` and
    /// `devices` added.
    fn with(devices: &str, io: &str) -> Result<crate::config::NodeConfig, Vec<ConfigProblem>> {
        let text = DEFAULT_TOML.replace("io = { device = \"welder_07\" }", io).replace(
            "[[devices]]\nid = \"welder_07\"\ndriver = \"sim\"\n",
            &format!("[[devices]]\nid = \"welder_07\"\ndriver = \"sim\"\n{devices}"),
        );
        from_toml_str(&text).map_err(|e| e.problems)
    }

    fn problem(r: Result<crate::config::NodeConfig, Vec<ConfigProblem>>, key: &str) -> String {
        let p = r.expect_err("refused");
        p.iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem at {key}: {p:?}"))
            .message
            .clone()
    }

    #[test]
    fn a_device_binds_every_signal_and_one_signal_may_come_from_another() {
        let cfg = with(
            "[[devices]]\nid = \"pyro\"\ndriver = \"sim\"\nseed = 99\n",
            "io = { device = \"welder_07\", weld_temp_c = \"pyro.weld_temp_c\" }",
        )
        .unwrap();
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(
            cfg.devices[0].driver,
            super::Driver::Sim { seed: 7 },
            "[sim] seed + position 0"
        );
        assert_eq!(cfg.devices[1].driver, super::Driver::Sim { seed: 99 });
        let b = cfg.axes[0].io.as_ref().unwrap();
        assert_eq!(b.point(Signal::WeldTempC), super::PointRef { device: 1, point: 1 });
        assert_eq!(b.point(Signal::WeldEnable), super::PointRef { device: 0, point: 7 });
        assert!(cfg.unbound_axes().is_empty());
    }

    #[test]
    fn each_wrong_binding_is_named_by_its_key_with_the_fix() {
        let m = problem(with("", "io = { device = \"welder_7\" }"), "axes[0].io.device");
        assert!(
            m.contains("no [[devices]] entry has id \"welder_7\"") && m.contains("welder_07"),
            "{m}"
        );
        let m = problem(
            with("", "io = { device = \"welder_07\", feed_ppm = \"welder_07.feed\" }"),
            "axes[0].io.feed_ppm",
        );
        assert!(m.contains("has no point \"feed\"") && m.contains("feed_ppm_cmd"), "{m}");
        let m = problem(
            with(
                "",
                "io = { device = \"welder_07\", feed_ppm = \"welder_07.feed_ppm_cmd\" }",
            ),
            "axes[0].io.feed_ppm",
        );
        assert!(
            m.contains("is an input of the program, but welder_07.feed_ppm_cmd is an output"),
            "{m}"
        );
        let m = problem(
            with("", "io = { device = \"welder_07\", estop = \"welder_07.ambient_c\" }"),
            "axes[0].io.estop",
        );
        assert!(
            m.contains("estop is a digital point, but welder_07.ambient_c is a number"),
            "{m}"
        );
        let m = problem(
            with("", "io = { device = \"welder_07\", estop = \"estop\" }"),
            "axes[0].io.estop",
        );
        assert!(m.contains("\"device.point\""), "{m}");
        let m = problem(with("", "io = { feed_ppm = \"welder_07.feed_ppm\" }"), "axes[0].io");
        assert!(m.contains("weld_temp_c") && m.contains("device = "), "{m}");
        let m = problem(
            with("", "io = { device = \"welder_07\", speed = \"welder_07.feed_ppm\" }"),
            "(toml)",
        );
        assert!(m.contains("unknown field `speed`") && m.contains("weld_temp_c"), "{m}");
    }

    #[test]
    fn unknown_drivers_and_duplicate_or_bad_ids_are_refused_by_name() {
        let m = problem(
            with(
                "[[devices]]\nid = \"plc\"\ndriver = \"ethercat\"\n",
                "io = { device = \"welder_07\" }",
            ),
            "devices[1].driver",
        );
        assert!(m.contains("\"ethercat\" is no driver") && m.contains("\"gpio\""), "{m}");
        let m = problem(
            with(
                "[[devices]]\nid = \"plc\"\ndriver = \"profinet\"\n",
                "io = { device = \"welder_07\" }",
            ),
            "devices[1].driver",
        );
        assert!(m.contains("\"profinet\" is no driver"), "{m}");
        let m = problem(
            with(
                "[[devices]]\nid = \"welder_07\"\ndriver = \"sim\"\n",
                "io = { device = \"welder_07\" }",
            ),
            "devices[1].id",
        );
        assert!(m.contains("more than one device"), "{m}");
        let m = problem(
            with(
                "[[devices]]\nid = \"Welder 8\"\ndriver = \"sim\"\n",
                "io = { device = \"welder_07\" }",
            ),
            "devices[1].id",
        );
        assert!(m.contains("invalid device id"), "{m}");
    }

    #[test]
    fn an_output_has_one_writer_and_a_device_its_parts_for_one_axis() {
        let second = "\n[[axes]]\nid = \"axis_08\"\nnominal_ppm = 12.0\nmax_ppm = 15.0\nweld_current_a = 5000.0\n\
                      io = { device = \"welder_08\", weld_enable = \"welder_07.weld_enable\", parts_total = \"welder_07.parts_total\" }\n\
                      [[cells]]\nid = \"cell_08\"\naxis = \"axis_08\"\nroi = [16, 8, 64, 64]\n\
                      [[assets]]\nid = \"pack_08\"\naxis = \"axis_08\"\ncell = \"cell_08\"\n";
        let text = DEFAULT_TOML.replace(
            "[[devices]]\nid = \"welder_07\"\ndriver = \"sim\"\n",
            "[[devices]]\nid = \"welder_07\"\ndriver = \"sim\"\n[[devices]]\nid = \"welder_08\"\ndriver = \"sim\"\n",
        ) + second;
        let p = from_toml_str(&text).expect_err("refused").problems;
        let find = |k: &str| {
            p.iter()
                .find(|x| x.key == k)
                .map(|x| x.message.clone())
                .unwrap_or_else(|| panic!("{k}: {p:?}"))
        };
        assert!(find("axes[1].io.weld_enable").contains("welder_07.weld_enable is already driven by axis \"axis_07\""));
        assert!(find("axes[1].io.parts_total").contains("parts of device \"welder_07\""));
    }

    #[test]
    fn sim_gives_each_unbound_axis_its_own_plant_seeded_by_its_position() {
        let text = DEFAULT_TOML.replace("io = { device = \"welder_07\" }\n", "");
        let mut cfg = from_toml_str(&text).unwrap();
        assert_eq!(cfg.unbound_axes(), ["axis_07"]);
        cfg.simulate_unbound();
        assert!(cfg.unbound_axes().is_empty());
        assert_eq!(cfg.devices[1].id, "sim:axis_07");
        assert_eq!(cfg.devices[1].driver, super::Driver::Sim { seed: 7 });
        assert_eq!(
            cfg.axes[0].io.as_ref().unwrap().point(Signal::Estop),
            super::PointRef { device: 1, point: 5 }
        );
    }
}
