//! Scenarios of the simulated line: which faults happen when.
//!
//! | name | what happens | expected |
//! |---|---|---|
//! | `nominal` | nothing | no alert, no derate, no work order |
//! | `weld-drift` | from 8 s the weld runs hotter by 3 °C/s (up to 35 °C) | alert > 3 s after the residual leaves its band, derate 12 → 8 PPM, analysis, work order |
//! | `short-excursion` | at 8 s a +15 °C spike for 2 s | an excursion is observed; no alert, no derate |
//! | `weld-step` | at 8 s the weld runs 12 °C hotter for good | like `weld-drift`, with a sharp onset |

use std::time::Duration;
use triad_hw::sim::{Fault, FaultKind};

const S: i64 = 1_000_000_000;

/// A named fault schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Name.
    pub name: &'static str,
    /// Faults, relative to the plant's start.
    pub faults: Vec<Fault>,
    /// How long `--duration` defaults to for tests and demos (`None` runs
    /// until interrupted).
    pub suggested_duration: Duration,
}

/// Every scenario name.
pub const NAMES: [&str; 4] = ["nominal", "weld-drift", "short-excursion", "weld-step"];

/// Look a scenario up by name.
pub fn by_name(name: &str) -> Result<Scenario, String> {
    let (name, faults, secs) = match name {
        "nominal" => ("nominal", vec![], 20),
        "weld-drift" => (
            "weld-drift",
            vec![Fault {
                at_ns: 8 * S,
                kind: FaultKind::Drift {
                    rate_c_per_s: 3.0,
                    max_c: 35.0,
                },
            }],
            22,
        ),
        "short-excursion" => (
            "short-excursion",
            vec![Fault {
                at_ns: 8 * S,
                kind: FaultKind::Spike {
                    delta_c: 15.0,
                    duration_ns: 2 * S,
                },
            }],
            20,
        ),
        "weld-step" => (
            "weld-step",
            vec![Fault {
                at_ns: 8 * S,
                kind: FaultKind::Step { delta_c: 12.0 },
            }],
            20,
        ),
        other => {
            return Err(format!(
                "unknown scenario {other:?}; choose one of {}",
                NAMES.join(", ")
            ));
        }
    };
    Ok(Scenario {
        name,
        faults,
        suggested_duration: Duration::from_secs(secs),
    })
}

/// Parse a duration such as `30s`, `2m`, `500ms` or `45` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s, 2m, 500ms"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("{text:?}: a duration must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_and_durations() {
        for n in NAMES {
            assert_eq!(by_name(n).unwrap().name, n);
        }
        assert!(by_name("meltdown").unwrap_err().contains("weld-drift"));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("12").unwrap(), Duration::from_secs(12));
        assert!(parse_duration("-3s").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }
}
