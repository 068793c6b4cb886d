//! Configuration: one TOML file, overridable by environment, validated with
//! errors that name the key, the allowed range, the value and the fix.
//!
//! Two layers, as in statime: [`file`] holds the serde structs exactly as
//! written (units in the key names, `deny_unknown_fields`), and [`NodeConfig`]
//! is what the node uses (ids validated, durations as [`Duration`], cross
//! references resolved). [`load`] goes from one to the other and reports
//! every problem at once.
//!
//! Environment overrides use the prefix `TRIAD_` and `__` between levels:
//! `TRIAD_DASHBOARD__LISTEN=127.0.0.1:9000`, `TRIAD_MES__URL=http://…`.

pub mod devices;
pub mod file;
pub mod gpio;
pub mod modbus;
pub mod modbus_server;

pub use devices::{DeviceConfig, Driver, IoBinding, PointRef};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use triad_schemas::ids::{AssetId, AxisId, CellId, LineId, NodeId};

/// The embedded default configuration (`triad run --sim` with no `--config`).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `control.cycle_us` or `cells[0].axis`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The configuration was refused; every problem is listed.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Where it came from.
    pub source_name: String,
    /// All problems found.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "configuration {} has {} problem(s):",
            self.source_name,
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Typed, validated configuration of the node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node id (goes into every envelope).
    pub node: NodeId,
    /// Where durable state lives.
    pub state_dir: PathBuf,
    /// Line id.
    pub line: LineId,
    /// Control thread settings.
    pub control: ControlConfig,
    /// Inspection worker threads for every cell (`[inspection] workers`,
    /// 0: sized by the cores).
    pub inspection_workers: usize,
    /// Field devices the I/O scan reads and writes (`[[devices]]`).
    pub devices: Vec<DeviceConfig>,
    /// The process image served over Modbus TCP (`[modbus_server]`).
    pub modbus_server: Option<modbus_server::ModbusServerConfig>,
    /// Axes, each a station with its cell and asset (see [`NodeConfig::stations`]).
    pub axes: Vec<AxisConfig>,
    /// Inspection cells.
    pub cells: Vec<CellConfig>,
    /// Twin assets.
    pub assets: Vec<AssetConfig>,
    /// Derate rules.
    pub rules: Vec<DerateRule>,
    /// Analysis settings.
    pub analysis: AnalysisSettings,
    /// Bus backend.
    pub bus: BusConfig,
    /// Outbox limits.
    pub outbox: OutboxLimits,
    /// Disk space preallocated for the outbox, released when the disk fills.
    pub outbox_reserve_bytes: u64,
    /// Bounds of the health checks.
    pub health: HealthBounds,
    /// MES connector.
    pub mes: MesConfig,
    /// Dashboard listen address.
    pub dashboard_listen: SocketAddr,
    /// Clock backend.
    pub clock: ClockBackend,
    /// Simulation seed.
    pub sim_seed: u64,
    /// Trusted keys and token limits (`[security]`).
    pub security: crate::trust::SecurityConfig,
    /// Bundle limits, warm-up and the fuse (`[models]`).
    pub models: crate::models::ModelsSettings,
}

/// Control thread settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlConfig {
    /// Cycle period.
    pub cycle: Duration,
    /// Input staleness limit.
    pub input_stale: Duration,
    /// Wake-up lateness that trips the watchdog.
    pub watchdog: Duration,
    /// SCHED_FIFO priority, `None` = do not ask.
    pub rt_priority: Option<i32>,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// Telemetry decimation.
    pub telemetry_every_cycles: u32,
}

/// One axis.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisConfig {
    /// Id.
    pub id: AxisId,
    /// Rate after start and after `Resume`, PPM.
    pub nominal_ppm: f64,
    /// Lowest rate a command may set, PPM.
    pub min_ppm: f64,
    /// Highest rate a command may set, PPM.
    pub max_ppm: f64,
    /// Weld current while running, A.
    pub weld_current_a: f64,
    /// Start feeding at once (the sim) or wait for a `Start` command.
    pub start_running: bool,
    /// The device points of its signals; `None` until
    /// [`NodeConfig::simulate_unbound`] gives it a simulated plant.
    pub io: Option<IoBinding>,
}

/// One inspection cell.
#[derive(Clone, Debug, PartialEq)]
pub struct CellConfig {
    /// Id.
    pub id: CellId,
    /// Axis feeding it.
    pub axis: AxisId,
    /// Model directory; `None` = the built-in model.
    pub model_dir: Option<PathBuf>,
    /// ROI `[x, y, w, h]`.
    pub roi: [u32; 4],
    /// Defect probability threshold.
    pub threshold: f32,
    /// Modules per batch.
    pub modules_per_batch: u64,
}

/// One twin asset.
#[derive(Clone, Debug, PartialEq)]
pub struct AssetConfig {
    /// Id.
    pub id: AssetId,
    /// Axis whose process it models.
    pub axis: AxisId,
    /// Cell that inspects its output.
    pub cell: CellId,
    /// Residual band half-width, °C.
    pub band_c: f64,
    /// Re-entry deadband, °C.
    pub deadband_c: f64,
    /// Persistence time.
    pub persistence: Duration,
    /// Clear time.
    pub clear: Duration,
}

/// `derate_on_alert` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct DerateRule {
    /// Asset whose alert triggers it.
    pub asset: AssetId,
    /// Axis to derate.
    pub axis: AxisId,
    /// Target rate, PPM.
    pub derate_ppm: f64,
}

/// Bus backend.
#[derive(Clone, Debug, PartialEq)]
pub enum BusConfig {
    /// In-process.
    Embedded,
    /// Apache Pulsar.
    Pulsar(PulsarConfig),
}

// The per-part settings are defined by their parts (which never import
// this module); `load` builds them, and they are re-exported here.
pub use crate::bus::outbox::OutboxLimits;
pub use crate::bus::pulsar_config::PulsarConfig;
pub use crate::dashboard::HealthBounds;
pub use crate::mes::MesConfig;
pub use crate::rules::AnalysisSettings;

impl PulsarConfig {
    /// Settings for `url` with every other key at its default.
    pub fn for_url(url: &str) -> Result<Self, ConfigError> {
        let section = file::BusSection {
            backend: "pulsar".into(),
            url: Some(url.into()),
            ..Default::default()
        };
        let mut p = file::Problems::default();
        match section.pulsar(url, &mut p) {
            Some(c) if p.is_empty() => Ok(c),
            _ => Err(ConfigError {
                source_name: "--bus".into(),
                problems: p.into_vec(),
            }),
        }
    }
}

/// Clock backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockBackend {
    /// CLOCK_REALTIME, free-running.
    System,
}

/// One station of the line: an axis with the inspection cell and the twin
/// asset on it, and the rule that derates it on that asset's alert.
#[derive(Clone, Debug, PartialEq)]
pub struct StationConfig {
    /// The axis and its program's limits.
    pub axis: AxisConfig,
    /// The camera cell on the axis.
    pub cell: CellConfig,
    /// The asset the twin watches.
    pub asset: AssetConfig,
    /// What the asset's alert does to the axis (`None`: the alert is
    /// raised and analysed, the rate is kept).
    pub rule: Option<DerateRule>,
}

impl AxisConfig {
    /// Its program's limits, with the control thread's staleness and
    /// watchdog bounds.
    pub fn limits(&self, control: &ControlConfig) -> crate::control::AxisLimits {
        crate::control::AxisLimits {
            nominal_ppm: self.nominal_ppm,
            min_ppm: self.min_ppm,
            max_ppm: self.max_ppm,
            weld_current_a: self.weld_current_a,
            start_running: self.start_running,
            input_stale_ns: control.input_stale.as_nanos() as i64,
            watchdog_ns: control.watchdog.as_nanos() as i64,
        }
    }
}

impl AssetConfig {
    /// Its twin's band, deadband and timers.
    pub fn twin_config(&self) -> triad_twin::TwinConfig {
        triad_twin::TwinConfig {
            band_c: self.band_c,
            deadband_c: self.deadband_c,
            persist_ns: self.persistence.as_nanos() as i64,
            clear_ns: self.clear.as_nanos() as i64,
            ..triad_twin::TwinConfig::default()
        }
    }
}

impl StationConfig {
    /// The closed-loop rules of this station on `line`.
    pub fn rules(&self, line: &LineId, analysis: AnalysisSettings) -> crate::rules::StationRules {
        crate::rules::StationRules {
            line: line.clone(),
            axis: self.axis.id.clone(),
            cell: self.cell.id.clone(),
            asset: self.asset.id.clone(),
            derate_ppm: self.rule.as_ref().map(|r| r.derate_ppm),
            persistence_ms: self.asset.persistence.as_millis() as i64,
            analysis,
        }
    }
}

impl NodeConfig {
    /// Axis by id.
    pub fn axis(&self, id: &AxisId) -> Option<&AxisConfig> {
        self.axes.iter().find(|a| &a.id == id)
    }

    /// Axes whose signals are bound to no device point.
    pub fn unbound_axes(&self) -> Vec<&str> {
        self.axes
            .iter()
            .filter(|a| a.io.is_none())
            .map(|a| a.id.as_str())
            .collect()
    }

    /// `--sim`: give every axis without `[axes.io]` its own simulated plant,
    /// a `sim` device `sim:<axis>` seeded `[sim] seed` + the axis' position
    /// (so the built-in config and every file without devices run the same
    /// line as before devices existed).
    pub fn simulate_unbound(&mut self) {
        for (i, axis) in self.axes.iter_mut().enumerate() {
            if axis.io.is_some() {
                continue;
            }
            let device = self.devices.len();
            self.devices.push(DeviceConfig {
                id: format!("sim:{}", axis.id),
                driver: Driver::Sim {
                    seed: self.sim_seed.wrapping_add(i as u64),
                },
            });
            axis.io = Some(IoBinding(std::array::from_fn(|point| PointRef { device, point })));
        }
    }

    /// The line's stations, one per `[[axes]]` entry, in file order.
    /// Validation gives every axis exactly one cell and one asset; an axis
    /// without them (a config built by hand) is left out.
    pub fn stations(&self) -> Vec<StationConfig> {
        self.axes
            .iter()
            .filter_map(|axis| {
                let cell = self.cells.iter().find(|c| c.axis == axis.id)?;
                let asset = self.assets.iter().find(|a| a.axis == axis.id)?;
                Some(StationConfig {
                    axis: axis.clone(),
                    cell: cell.clone(),
                    asset: asset.clone(),
                    rule: self.rules.iter().find(|r| r.asset == asset.id).cloned(),
                })
            })
            .collect()
    }
}

/// Where configuration text comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// The embedded default.
    Default,
    /// A file.
    File(PathBuf),
}

/// Largest config file read, bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Load, apply `TRIAD_*` environment overrides, and validate.
pub fn load(source: &ConfigSource) -> Result<NodeConfig, ConfigError> {
    use figment::Figment;
    use figment::providers::{Env, Format, Toml};
    let (name, fig) = match source {
        ConfigSource::Default => (
            "(built-in default)".to_string(),
            Figment::from(Toml::string(DEFAULT_TOML)),
        ),
        ConfigSource::File(p) => {
            if !p.exists() {
                return Err(ConfigError {
                    source_name: p.display().to_string(),
                    problems: vec![ConfigProblem {
                        key: "(file)".into(),
                        message: "file not found: check the path, or run without --config for the built-in default"
                            .into(),
                    }],
                });
            }
            // Bounded before it is read.
            if let Ok(m) = std::fs::metadata(p)
                && m.len() > MAX_FILE_BYTES
            {
                return Err(ConfigError {
                    source_name: p.display().to_string(),
                    problems: vec![ConfigProblem {
                        key: "(file)".into(),
                        message: format!(
                            "{} bytes, more than the {MAX_FILE_BYTES} a config file may have: is it the right file?",
                            m.len()
                        ),
                    }],
                });
            }
            (p.display().to_string(), Figment::from(Toml::file_exact(p)))
        }
    };
    // Only `TRIAD_<SECTION>__<KEY>` variables are config; `TRIAD_LOG` and the
    // like are read by other parts.
    let fig = fig.merge(
        Env::prefixed("TRIAD_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let raw: file::FileConfig = fig.extract().map_err(|e| ConfigError {
        source_name: name.clone(),
        problems: e
            .into_iter()
            .map(|e| ConfigProblem {
                key: if e.path.is_empty() {
                    "(file)".into()
                } else {
                    e.path.join(".")
                },
                message: format!("{}; see docs/configuration.md", e.kind),
            })
            .collect(),
    })?;
    raw.validate().map_err(|problems| ConfigError {
        source_name: name,
        problems,
    })
}

/// Parse a TOML text (no environment), for tests and `check-config` of text.
pub fn from_toml_str(text: &str) -> Result<NodeConfig, ConfigError> {
    let raw: file::FileConfig = toml::from_str(text).map_err(|e| ConfigError {
        source_name: "(text)".into(),
        problems: vec![ConfigProblem {
            key: "(toml)".into(),
            message: e.to_string(),
        }],
    })?;
    raw.validate().map_err(|problems| ConfigError {
        source_name: "(text)".into(),
        problems,
    })
}

/// Resolve a path from the config relative to the working directory.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}
