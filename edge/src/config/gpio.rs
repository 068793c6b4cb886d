//! GPIO devices in the config (`driver = "gpio"`): digital points on the
//! lines of one Linux GPIO chip (a Jetson's, a RISC-V board's, any chip
//! `gpioinfo` lists).
//!
//! ```toml
//! [[devices]]
//! id = "panel"
//! driver = "gpio"
//! chip = "gpiochip0"               # or "/dev/gpiochip0"
//! points = [
//!   { name = "estop", line = 17, active_low = true },   # normally-closed contact
//!   { name = "lamp_red", line = 27, direction = "output" },
//! ]
//! ```

use super::devices::{DeviceSection, PointSection};
use super::file::Problems;
use triad_hw::{Direction, GpioPoint, PointInfo, PointKind};

/// Lines one GPIO device may use.
pub const MAX_LINES: usize = 256;

/// One GPIO device, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct GpioConfig {
    /// The chip, as given (`gpiochip0` or a path).
    pub chip: String,
    /// Its points, in file order.
    pub points: Vec<GpioPoint>,
    /// The same points as a binding sees them.
    pub infos: Vec<PointInfo>,
}

/// Check a GPIO device (`k` makes a key's name).
pub(crate) fn validate(d: &DeviceSection, k: &dyn Fn(&str) -> String, p: &mut Problems) -> Option<GpioConfig> {
    let before = p.len();
    for key in super::modbus::keys_set(d) {
        p.add(k(key), "is a key of Modbus devices; this one is gpio");
    }
    if d.seed.is_some() {
        p.add(k("seed"), "only a sim device has a seed");
    }
    let chip = match &d.chip {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            p.add(
                k("chip"),
                "missing: the GPIO chip, e.g. \"gpiochip0\" or \"/dev/gpiochip0\" (`gpioinfo` lists them)",
            );
            String::new()
        }
    };
    if d.points.is_empty() {
        p.add(
            k("points"),
            "a gpio device needs points: { name, line, direction, active_low }",
        );
    }
    if d.points.len() > MAX_LINES {
        p.add(
            k("points"),
            format!("{} points, more than the {MAX_LINES} of one device", d.points.len()),
        );
    }
    let points: Vec<GpioPoint> = d
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, s)| point(s, &|f| k(&format!("points[{i}].{f}")), p))
        .collect();
    for (i, s) in d.points.iter().enumerate() {
        let earlier = &d.points[..i];
        if earlier.iter().any(|o| o.name == s.name) {
            p.add(
                k(&format!("points[{i}].name")),
                format!("{:?} names another point of this device too", s.name),
            );
        }
        if s.line.is_some() && earlier.iter().any(|o| o.line == s.line) {
            p.add(
                k(&format!("points[{i}].line")),
                format!(
                    "line {} is another point's too; a line is one point",
                    s.line.unwrap_or_default()
                ),
            );
        }
    }
    if p.len() > before {
        return None;
    }
    let infos = points
        .iter()
        .map(|pt| PointInfo {
            name: pt.name.clone().into(),
            direction: pt.direction,
            kind: PointKind::Bool,
            unit: "".into(),
        })
        .collect();
    Some(GpioConfig { chip, points, infos })
}

fn point(s: &PointSection, k: &dyn Fn(&str) -> String, p: &mut Problems) -> Option<GpioPoint> {
    for key in s.modbus_keys() {
        p.add(
            k(key),
            "is a key of Modbus points; a gpio point has name, line, direction and active_low",
        );
    }
    if s.unit.is_some() {
        p.add(k("unit"), "a digital line has no unit");
    }
    let name_ok = p
        .id(&k("name"), triad_schemas::ids::validate("point", &s.name))
        .is_some();
    let direction = match s.direction.as_deref().unwrap_or("input") {
        "input" => Some(Direction::Input),
        "output" => Some(Direction::Output),
        other => {
            p.add(
                k("direction"),
                format!("{other:?}: \"input\" (read, default) or \"output\" (driven)"),
            );
            None
        }
    };
    let Some(line) = s.line else {
        p.add(
            k("line"),
            "missing: the line's offset on the chip, as `gpioinfo` lists it",
        );
        return None;
    };
    name_ok.then_some(())?;
    Some(GpioPoint {
        name: s.name.clone(),
        line,
        direction: direction?,
        active_low: s.active_low.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{DEFAULT_TOML, Driver, from_toml_str};

    fn problems(device: &str) -> Vec<(String, String)> {
        match from_toml_str(&format!("{DEFAULT_TOML}\n{device}")) {
            Ok(_) => vec![],
            Err(e) => e.problems.into_iter().map(|p| (p.key, p.message)).collect(),
        }
    }

    #[test]
    fn a_chip_with_its_lines_and_every_mistake_named() {
        let ok = "[[devices]]\nid = \"panel\"\ndriver = \"gpio\"\nchip = \"gpiochip0\"\n\
                  points = [ { name = \"estop\", line = 17, active_low = true }, { name = \"lamp\", line = 27, direction = \"output\" } ]\n";
        let cfg = from_toml_str(&format!("{DEFAULT_TOML}\n{ok}")).unwrap();
        let Driver::Gpio(g) = &cfg.devices[1].driver else {
            panic!()
        };
        assert_eq!(g.points[0].line, 17);
        assert!(g.points[0].active_low);
        assert_eq!(g.points[1].direction, triad_hw::Direction::Output);
        assert_eq!(g.infos[0].kind, triad_hw::PointKind::Bool);

        let p = problems(
            "[[devices]]\nid = \"panel\"\ndriver = \"gpio\"\nendpoint = \"1.2.3.4:502\"\n\
             points = [ { name = \"a\", line = 1 }, { name = \"b\", line = 1, table = \"coil\" }, { name = \"a\" } ]\n",
        );
        let has = |k: &str, m: &str| p.iter().any(|(key, msg)| key == k && msg.contains(m));
        assert!(has("devices[1].chip", "gpioinfo"), "{p:?}");
        assert!(has("devices[1].endpoint", "Modbus"), "{p:?}");
        assert!(has("devices[1].points[1].line", "another point's"), "{p:?}");
        assert!(has("devices[1].points[1].table", "Modbus points"), "{p:?}");
        assert!(has("devices[1].points[2].line", "missing"), "{p:?}");
        assert!(has("devices[1].points[2].name", "another point"), "{p:?}");
    }
}
