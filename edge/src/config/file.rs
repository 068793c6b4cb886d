//! The configuration file as written: serde structs, units in key names.
//!
//! Every struct denies unknown keys (a typo is an error, not a silent
//! default) and names its defaults with functions.

use super::*;
use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[node]`
    pub node: NodeSection,
    /// `[line]`
    pub line: LineSection,
    /// `[control]`
    #[serde(default)]
    pub control: ControlSection,
    /// `[[devices]]`
    #[serde(default)]
    pub devices: Vec<super::devices::DeviceSection>,
    /// `[modbus_server]`
    #[serde(default)]
    pub modbus_server: Option<super::modbus_server::ModbusServerSection>,
    /// `[[axes]]`
    #[serde(default)]
    pub axes: Vec<AxisSection>,
    /// `[[cells]]`
    #[serde(default)]
    pub cells: Vec<CellSection>,
    /// `[[assets]]`
    #[serde(default)]
    pub assets: Vec<AssetSection>,
    /// `[[rules]]`
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// `[analysis]`
    #[serde(default)]
    pub analysis: AnalysisSection,
    /// `[inspection]`
    #[serde(default)]
    pub inspection: InspectionSection,
    /// `[bus]`
    #[serde(default)]
    pub bus: BusSection,
    /// `[outbox]`
    #[serde(default)]
    pub outbox: OutboxSection,
    /// `[mes]`
    #[serde(default)]
    pub mes: MesSection,
    /// `[dashboard]`
    #[serde(default)]
    pub dashboard: DashboardSection,
    /// `[clock]`
    #[serde(default)]
    pub clock: ClockSection,
    /// `[sim]`
    #[serde(default)]
    pub sim: SimSection,
    /// `[security]`
    #[serde(default)]
    pub security: SecuritySection,
    /// `[models]`
    #[serde(default)]
    pub models: ModelsSection,
    /// `[health]`
    #[serde(default)]
    pub health: HealthSection,
}

/// `[health]`: the bounds past which `/healthz` says "degraded".
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Outbox fill (entries or bytes) that degrades health, % of its limit.
    #[serde(default = "default_outbox_degraded_pct")]
    pub outbox_degraded_pct: u64,
    /// Control overruns in the last minute that degrade health.
    #[serde(default = "default_overruns_per_min_max")]
    pub overruns_per_min_max: u64,
    /// The MES unreachable this long degrades health, s.
    #[serde(default = "default_unreachable_s")]
    pub mes_unreachable_s: u64,
    /// The bus failing this long degrades health, s.
    #[serde(default = "default_unreachable_s")]
    pub bus_unreachable_s: u64,
}
fn default_outbox_degraded_pct() -> u64 {
    80
}
fn default_overruns_per_min_max() -> u64 {
    60
}
fn default_unreachable_s() -> u64 {
    60
}
impl Default for HealthSection {
    fn default() -> Self {
        Self {
            outbox_degraded_pct: default_outbox_degraded_pct(),
            overruns_per_min_max: default_overruns_per_min_max(),
            mes_unreachable_s: default_unreachable_s(),
            bus_unreachable_s: default_unreachable_s(),
        }
    }
}

/// `[node]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node id.
    pub id: String,
    /// State directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(".triad-state")
}

/// `[line]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSection {
    /// Line id.
    pub id: String,
}

/// `[control]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Cycle period, µs.
    #[serde(default = "default_cycle_us")]
    pub cycle_us: u64,
    /// Input staleness limit, ms.
    #[serde(default = "default_input_stale_ms")]
    pub input_stale_ms: u64,
    /// Watchdog, ms.
    #[serde(default = "default_watchdog_ms")]
    pub watchdog_ms: u64,
    /// SCHED_FIFO priority, 0 = off.
    #[serde(default = "default_rt_priority")]
    pub rt_priority: i32,
    /// CPU to pin to, -1 = any.
    #[serde(default = "default_cpu")]
    pub cpu: i64,
    /// Telemetry decimation.
    #[serde(default = "default_telemetry_every")]
    pub telemetry_every_cycles: u32,
}
fn default_cycle_us() -> u64 {
    1000
}
fn default_input_stale_ms() -> u64 {
    50
}
fn default_watchdog_ms() -> u64 {
    100
}
fn default_rt_priority() -> i32 {
    80
}
fn default_cpu() -> i64 {
    -1
}
fn default_telemetry_every() -> u32 {
    50
}
impl Default for ControlSection {
    fn default() -> Self {
        Self {
            cycle_us: default_cycle_us(),
            input_stale_ms: default_input_stale_ms(),
            watchdog_ms: default_watchdog_ms(),
            rt_priority: default_rt_priority(),
            cpu: default_cpu(),
            telemetry_every_cycles: default_telemetry_every(),
        }
    }
}

/// `[[axes]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisSection {
    /// Id.
    pub id: String,
    /// Nominal rate, PPM.
    pub nominal_ppm: f64,
    /// Minimum commanded rate, PPM.
    #[serde(default = "default_min_ppm")]
    pub min_ppm: f64,
    /// Maximum commanded rate, PPM.
    pub max_ppm: f64,
    /// Weld current, A.
    pub weld_current_a: f64,
    /// Start feeding at once.
    #[serde(default)]
    pub start_running: bool,
    /// `[axes.io]`: the device points of its signals (none: only with
    /// `--sim`, which gives the axis a simulated plant).
    #[serde(default)]
    pub io: Option<super::devices::AxisIoSection>,
}
fn default_min_ppm() -> f64 {
    1.0
}

/// `[[cells]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSection {
    /// Id.
    pub id: String,
    /// Axis.
    pub axis: String,
    /// Model directory.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// ROI `[x, y, w, h]`, px.
    pub roi: Vec<u32>,
    /// Threshold.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Modules per batch.
    #[serde(default = "default_modules_per_batch")]
    pub modules_per_batch: u64,
}
fn default_threshold() -> f32 {
    0.5
}
fn default_modules_per_batch() -> u64 {
    1
}

/// `[[assets]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSection {
    /// Id.
    pub id: String,
    /// Axis.
    pub axis: String,
    /// Cell.
    pub cell: String,
    /// Band half-width, °C.
    #[serde(default = "default_band_c")]
    pub band_c: f64,
    /// Re-entry deadband, °C.
    #[serde(default = "default_deadband_c")]
    pub deadband_c: f64,
    /// Persistence, ms.
    #[serde(default = "default_persistence_ms")]
    pub persistence_ms: u64,
    /// Clear time, ms.
    #[serde(default = "default_clear_ms")]
    pub clear_ms: u64,
}
fn default_band_c() -> f64 {
    6.0
}
fn default_deadband_c() -> f64 {
    1.0
}
fn default_persistence_ms() -> u64 {
    3000
}
fn default_clear_ms() -> u64 {
    1000
}

/// `[[rules]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// Rule kind; only `derate_on_alert` exists.
    pub kind: String,
    /// Asset.
    pub asset: String,
    /// Axis.
    pub axis: String,
    /// Derated rate, PPM.
    pub derate_ppm: f64,
}

/// `[inspection]`: the pool of inspection workers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectionSection {
    /// Worker threads for every cell (0: one per core but the control
    /// thread's; never more than the cells).
    #[serde(default)]
    pub workers: usize,
}

/// `[analysis]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    /// Batches to analyse.
    #[serde(default = "default_batches")]
    pub batches: usize,
    /// Commissioning defect rate.
    #[serde(default = "default_prior_rate")]
    pub prior_defect_rate: f64,
    /// Its weight, frames.
    #[serde(default = "default_prior_weight")]
    pub prior_weight_frames: f64,
    /// A work order is Urgent from this defect probability.
    #[serde(default = "default_urgent_probability")]
    pub urgent_defect_probability: f64,
    /// A work order is High from this defect probability...
    #[serde(default = "default_high_probability")]
    pub high_defect_probability: f64,
    /// ... or when the defect rate is elevated with this probability.
    #[serde(default = "default_high_elevated")]
    pub high_elevated_probability: f64,
}
fn default_urgent_probability() -> f64 {
    0.3
}
fn default_high_probability() -> f64 {
    0.1
}
fn default_high_elevated() -> f64 {
    0.95
}
fn default_batches() -> usize {
    3
}
fn default_prior_rate() -> f64 {
    0.02
}
fn default_prior_weight() -> f64 {
    200.0
}
impl Default for AnalysisSection {
    fn default() -> Self {
        Self {
            batches: default_batches(),
            prior_defect_rate: default_prior_rate(),
            prior_weight_frames: default_prior_weight(),
            urgent_defect_probability: default_urgent_probability(),
            high_defect_probability: default_high_probability(),
            high_elevated_probability: default_high_elevated(),
        }
    }
}

/// `[bus]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    /// `embedded` or `pulsar`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Pulsar service URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Pulsar admin (REST) URL.
    #[serde(default)]
    pub admin_url: Option<String>,
    /// Pulsar tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Pulsar namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// File holding the JWT the node authenticates with.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the broker over pulsar+ssl:// and https://.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Per-operation timeout, ms.
    #[serde(default = "default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// Set the namespace policies (schema compatibility, deduplication) at start.
    #[serde(default = "default_true")]
    pub configure_namespace: bool,
}
fn default_backend() -> String {
    "embedded".into()
}
fn default_tenant() -> String {
    "public".into()
}
fn default_namespace() -> String {
    "default".into()
}
fn default_operation_timeout_ms() -> u64 {
    30_000
}
fn default_true() -> bool {
    true
}
impl Default for BusSection {
    fn default() -> Self {
        Self {
            backend: default_backend(),
            url: None,
            admin_url: None,
            tenant: default_tenant(),
            namespace: default_namespace(),
            token_file: None,
            tls_ca_file: None,
            operation_timeout_ms: default_operation_timeout_ms(),
            configure_namespace: true,
        }
    }
}

impl BusSection {
    /// Validate the pulsar settings for `url`.
    pub(crate) fn pulsar(&self, url: &str, p: &mut Problems) -> Option<PulsarConfig> {
        let admin_url = match &self.admin_url {
            Some(a) if a.starts_with("http://") || a.starts_with("https://") => a.trim_end_matches('/').to_string(),
            Some(a) => {
                p.add("bus.admin_url", format!("{a:?} is not an http:// or https:// URL"));
                return None;
            }
            None => {
                // The broker's web service on the same host, default port 8080.
                let host = url
                    .split("://")
                    .nth(1)
                    .unwrap_or("")
                    .split(':')
                    .next()
                    .unwrap_or("127.0.0.1");
                let scheme = if url.starts_with("pulsar+ssl://") {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{host}:8080")
            }
        };
        for (key, v) in [("bus.tenant", &self.tenant), ("bus.namespace", &self.namespace)] {
            let ok = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                p.add(key, format!("{v:?} is not a Pulsar name (letters, digits, - _ .)"));
            }
        }
        for (key, f) in [
            ("bus.token_file", &self.token_file),
            ("bus.tls_ca_file", &self.tls_ca_file),
        ] {
            if let Some(f) = f
                && !resolve(f).exists()
            {
                p.add(
                    key,
                    format!("{} does not exist; point it at the file or remove the key", f.display()),
                );
            }
        }
        p.range(
            "bus.operation_timeout_ms",
            self.operation_timeout_ms,
            100,
            600_000,
            "ms",
            "30000 rides through a broker restart",
        );
        Some(PulsarConfig {
            url: url.to_string(),
            admin_url,
            tenant: self.tenant.clone(),
            namespace: self.namespace.clone(),
            token_file: self.token_file.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            operation_timeout: Duration::from_millis(self.operation_timeout_ms),
            configure_namespace: self.configure_namespace,
        })
    }
}

/// `[outbox]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    /// Maximum pending entries.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Maximum pending payload, MiB.
    #[serde(default = "default_max_mb")]
    pub max_mb: u64,
    /// Disk space kept preallocated for the outbox and released when the
    /// disk fills, so the outbox is the last writer to run out, MiB (0: none).
    #[serde(default = "default_reserve_mb")]
    pub reserve_mb: u64,
}
fn default_reserve_mb() -> u64 {
    4
}
fn default_max_entries() -> u64 {
    200_000
}
fn default_max_mb() -> u64 {
    256
}
impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
            max_mb: default_max_mb(),
            reserve_mb: default_reserve_mb(),
        }
    }
}

/// `[mes]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MesSection {
    /// Work-order endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// Request timeout, ms.
    #[serde(default = "default_mes_timeout")]
    pub timeout_ms: u64,
    /// First retry delay, ms.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, ms.
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
}
fn default_mes_timeout() -> u64 {
    2000
}
fn default_retry_initial() -> u64 {
    200
}
fn default_retry_max() -> u64 {
    5000
}
impl Default for MesSection {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: default_mes_timeout(),
            retry_initial_ms: default_retry_initial(),
            retry_max_ms: default_retry_max(),
        }
    }
}

/// `[dashboard]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSection {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
}
fn default_listen() -> String {
    "127.0.0.1:8480".into()
}
impl Default for DashboardSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

/// `[clock]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    /// `system`.
    #[serde(default = "default_clock")]
    pub backend: String,
}
fn default_clock() -> String {
    "system".into()
}
impl Default for ClockSection {
    fn default() -> Self {
        Self {
            backend: default_clock(),
        }
    }
}

/// `[sim]`
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SimSection {
    /// Seed of the simulated line and camera.
    #[serde(default)]
    pub seed: u64,
}

/// `[security]`: who may sign bundles and tokens, and token limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Trusted public keys (`[[security.keys]]`).
    #[serde(default)]
    pub keys: Vec<KeySection>,
    /// Allowed clock difference between a token's issuer and the node, s.
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// Longest validity (`exp - nbf`) a token may have, s.
    #[serde(default = "default_max_token_lifetime_s")]
    pub max_token_lifetime_s: u64,
}
fn default_clock_skew_s() -> u64 {
    60
}
fn default_max_token_lifetime_s() -> u64 {
    24 * 3600
}
impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            clock_skew_s: default_clock_skew_s(),
            max_token_lifetime_s: default_max_token_lifetime_s(),
        }
    }
}

/// `[[security.keys]]`: one trusted public key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// Name: the `kid` of tokens, the `key_id` of bundle signatures.
    pub name: String,
    /// The 32-byte Ed25519 public key, base64 (as `triad keys gen` prints it).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Or a file holding it (PEM or base64).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// What it may sign: `bundle`, `deploy`, `command`.
    pub uses: Vec<String>,
    /// Revoked: everything it signed is refused.
    #[serde(default)]
    pub revoked: bool,
}

/// `[models]`: bundle limits, warm-up, and the fuse.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    /// Largest bundle (archive and unpacked contents), MiB.
    #[serde(default = "default_max_bundle_mb")]
    pub max_bundle_mb: u64,
    /// Most files in a bundle.
    #[serde(default = "default_max_bundle_files")]
    pub max_bundle_files: usize,
    /// Warm-up runs of each worker's new inspector before the swap.
    #[serde(default = "default_warmup_runs")]
    pub warmup_runs: u32,
    /// How long a deploy waits for the workers to take the model, ms.
    #[serde(default = "default_swap_wait_ms")]
    pub swap_wait_ms: u64,
    /// Probation of a deployed model, s.
    #[serde(default = "default_probation_s")]
    pub probation_s: u64,
    /// Frames a deployed model must judge before probation can pass.
    #[serde(default = "default_probation_min_frames")]
    pub probation_min_frames: u32,
    /// Inference errors during probation that roll the model back.
    #[serde(default = "default_fuse_max_errors")]
    pub fuse_max_errors: u32,
    /// Slower than this many times the previous model's median rolls back.
    #[serde(default = "default_fuse_max_slowdown")]
    pub fuse_max_slowdown: f64,
    /// Absolute bound on a frame's inspection time, ms (0 = none).
    #[serde(default)]
    pub fuse_max_inference_ms: f64,
    /// Consecutive slow frames that roll back.
    #[serde(default = "default_fuse_slow_frames")]
    pub fuse_slow_frames: u32,
    /// Accept a plain model directory (no signature) in `cells[].model_dir`.
    #[serde(default)]
    pub allow_unsigned_model_dir: bool,
}
fn default_max_bundle_mb() -> u64 {
    64
}
fn default_max_bundle_files() -> usize {
    64
}
fn default_warmup_runs() -> u32 {
    3
}
fn default_swap_wait_ms() -> u64 {
    2000
}
fn default_probation_s() -> u64 {
    60
}
fn default_probation_min_frames() -> u32 {
    50
}
fn default_fuse_max_errors() -> u32 {
    1
}
fn default_fuse_max_slowdown() -> f64 {
    3.0
}
fn default_fuse_slow_frames() -> u32 {
    5
}
impl Default for ModelsSection {
    fn default() -> Self {
        Self {
            max_bundle_mb: default_max_bundle_mb(),
            max_bundle_files: default_max_bundle_files(),
            warmup_runs: default_warmup_runs(),
            swap_wait_ms: default_swap_wait_ms(),
            probation_s: default_probation_s(),
            probation_min_frames: default_probation_min_frames(),
            fuse_max_errors: default_fuse_max_errors(),
            fuse_max_slowdown: default_fuse_max_slowdown(),
            fuse_max_inference_ms: 0.0,
            fuse_slow_frames: default_fuse_slow_frames(),
            allow_unsigned_model_dir: false,
        }
    }
}

impl SecuritySection {
    fn validate(&self, p: &mut Problems) -> crate::trust::SecurityConfig {
        use crate::trust::keyring::{KeyUse, Keyring, TrustedKey};
        let mut keys = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let key = |f: &str| format!("security.keys[{i}].{f}");
            let name_ok = !k.name.is_empty()
                && k.name.len() <= 64
                && k.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                p.add(
                    key("name"),
                    format!("{:?}: use 1 to 64 letters, digits, '-', '_' or '.'", k.name),
                );
            }
            if self.keys.iter().filter(|o| o.name == k.name).count() > 1 {
                p.add(
                    key("name"),
                    format!("{:?} is used by more than one key; names must be unique", k.name),
                );
            }
            let public = match (&k.public_key, &k.public_key_file) {
                (Some(text), None) => crate::trust::keys::parse_public(text, "the value")
                    .map_err(|e| p.add(key("public_key"), e.to_string()))
                    .ok(),
                (None, Some(f)) => match std::fs::read_to_string(resolve(f)) {
                    Ok(text) => crate::trust::keys::parse_public(&text, &f.display().to_string())
                        .map_err(|e| p.add(key("public_key_file"), e.to_string()))
                        .ok(),
                    Err(e) => {
                        p.add(
                            key("public_key_file"),
                            format!("{}: {e}; point it at the key's .pub file", f.display()),
                        );
                        None
                    }
                },
                _ => {
                    p.add(
                        key("public_key"),
                        "give exactly one of public_key (base64, printed by `triad keys gen`) or public_key_file",
                    );
                    None
                }
            };
            let mut uses = Vec::new();
            if k.uses.is_empty() {
                p.add(
                    key("uses"),
                    "empty; list what the key may sign: \"bundle\", \"deploy\", \"command\"",
                );
            }
            for u in &k.uses {
                match KeyUse::parse(u) {
                    Some(u) => uses.push(u),
                    None => p.add(
                        key("uses"),
                        format!("{u:?} is not a use; use \"bundle\", \"deploy\" or \"command\""),
                    ),
                }
            }
            if let Some(public) = public {
                keys.push(TrustedKey {
                    name: k.name.clone(),
                    public,
                    uses,
                    revoked: k.revoked,
                });
            }
        }
        p.range(
            "security.clock_skew_s",
            self.clock_skew_s,
            0,
            3600,
            "s",
            "60 tolerates unsynchronised clocks; use PTP/NTP and keep it small",
        );
        p.range(
            "security.max_token_lifetime_s",
            self.max_token_lifetime_s,
            60,
            30 * 24 * 3600,
            "s",
            "tokens should be short-lived; 86400 is one day",
        );
        crate::trust::SecurityConfig {
            keyring: Keyring::new(keys),
            policy: crate::trust::token::TokenPolicy {
                clock_skew_s: self.clock_skew_s as i64,
                max_lifetime_s: self.max_token_lifetime_s as i64,
            },
        }
    }
}

impl ModelsSection {
    fn validate(&self, p: &mut Problems) -> crate::models::ModelsSettings {
        p.range(
            "models.max_bundle_mb",
            self.max_bundle_mb,
            1,
            4096,
            "MiB",
            "64 holds most edge models",
        );
        p.range(
            "models.max_bundle_files",
            self.max_bundle_files,
            3,
            10_000,
            "files",
            "64 is plenty",
        );
        p.range(
            "models.warmup_runs",
            self.warmup_runs,
            0,
            1000,
            "runs",
            "3 pages in the weights",
        );
        p.range(
            "models.swap_wait_ms",
            self.swap_wait_ms,
            0,
            600_000,
            "ms",
            "2000 covers an idle worker's poll",
        );
        p.range(
            "models.probation_s",
            self.probation_s,
            0,
            7 * 24 * 3600,
            "s",
            "60 s watches a new model for a minute",
        );
        p.range(
            "models.probation_min_frames",
            self.probation_min_frames,
            0,
            10_000_000,
            "frames",
            "50 frames at least",
        );
        p.range(
            "models.fuse_max_errors",
            self.fuse_max_errors,
            1,
            1_000_000,
            "errors",
            "1 rolls back at the first error",
        );
        p.range(
            "models.fuse_max_slowdown",
            self.fuse_max_slowdown,
            1.01,
            1000.0,
            "x",
            "3.0 allows three times the previous model's time",
        );
        p.range(
            "models.fuse_max_inference_ms",
            self.fuse_max_inference_ms,
            0.0,
            60_000.0,
            "ms",
            "0 disables the absolute bound",
        );
        p.range(
            "models.fuse_slow_frames",
            self.fuse_slow_frames,
            1,
            100_000,
            "frames",
            "5 ignores single slow frames",
        );
        crate::models::ModelsSettings {
            limits: crate::models::bundle::BundleLimits {
                max_total_bytes: self.max_bundle_mb.saturating_mul(1024 * 1024),
                max_files: self.max_bundle_files,
            },
            fuse: crate::models::fuse::FuseConfig {
                probation: Duration::from_secs(self.probation_s),
                min_frames: self.probation_min_frames,
                max_errors: self.fuse_max_errors,
                max_slowdown: self.fuse_max_slowdown,
                // Out of range (NaN, huge) is refused above; never a panic here.
                max_inference: (self.fuse_max_inference_ms > 0.0)
                    .then(|| Duration::try_from_secs_f64(self.fuse_max_inference_ms / 1000.0).ok())
                    .flatten(),
                slow_frames: self.fuse_slow_frames,
            },
            warmup_runs: self.warmup_runs,
            swap_wait: Duration::from_millis(self.swap_wait_ms),
            allow_unsigned_model_dir: self.allow_unsigned_model_dir,
        }
    }
}

/// Collects problems while validating.
#[derive(Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn into_vec(self) -> Vec<ConfigProblem> {
        self.0
    }
    pub(crate) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    pub(crate) fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        key: &str,
        value: T,
        lo: T,
        hi: T,
        unit: &str,
        fix: &str,
    ) {
        if !(value >= lo && value <= hi) {
            let fix = if fix.is_empty() {
                String::new()
            } else {
                format!("; {fix}")
            };
            self.add(key, format!("{value} is outside {lo}..={hi} {unit}{fix}"));
        }
    }
    pub(crate) fn id<T>(&mut self, key: &str, r: Result<T, triad_schemas::ids::IdError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(key, e.to_string());
                None
            }
        }
    }
}

/// Axes (each with its cell and asset) one node runs at most. The control
/// cycle has room for far more (`cargo bench --bench control_axes`); the
/// bound is the threads: a twin per asset.
pub const MAX_AXES: usize = 64;
/// Largest camera frame side a cell's ROI may reach, px (x + width and
/// y + height): 8192 x 8192 is 64 MiB of grey pixels.
pub const MAX_FRAME_SIDE_PX: u64 = 8192;
/// Derate rules at most.
pub const MAX_RULES: usize = 64;
/// The twin must get at least this many samples per alert persistence time.
pub const TWIN_SAMPLES_PER_PERSISTENCE: u64 = 10;
/// Longest path in the config, bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest URL or address in the config, bytes.
pub const MAX_URL_LEN: usize = 2048;

impl FileConfig {
    /// Check everything and build the typed config.
    pub fn validate(self) -> Result<NodeConfig, Vec<ConfigProblem>> {
        let mut p = Problems(Vec::new());
        let node = p.id("node.id", NodeId::new(self.node.id.clone()));
        let line = p.id("line.id", LineId::new(self.line.id.clone()));

        self.check_control(&mut p);
        self.check_stations(&mut p);
        self.check_lengths(&mut p);
        let (devices, bindings) = super::devices::validate(&self.devices, &self.axes, self.sim.seed, &mut p);
        let axes = self.axes_config(bindings, &mut p);
        let cells = self.cells_config(&mut p);
        let assets = self.assets_config(&mut p);
        let rules = self.rules_config(&mut p);
        self.check_analysis(&mut p);
        p.range(
            "inspection.workers",
            self.inspection.workers,
            0,
            MAX_AXES,
            "threads",
            "0 sizes the pool by the cores; more workers than cells are never started",
        );
        let bus = self.bus_config(&mut p);
        self.check_outbox_health_mes(&mut p);
        let listen = match self.dashboard.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    "dashboard.listen",
                    format!(
                        "{:?} is not an address:port, e.g. \"127.0.0.1:8480\"",
                        self.dashboard.listen
                    ),
                );
                None
            }
        };
        let clock = match self.clock.backend.as_str() {
            "system" => Some(ClockBackend::System),
            other => {
                p.add(
                    "clock.backend",
                    format!("{other:?} is not available in this version; use \"system\" (PTP backends are planned)"),
                );
                None
            }
        };

        let security = self.security.validate(&mut p);
        let models = self.models.validate(&mut p);
        let axis_ids: Vec<&str> = self.axes.iter().map(|a| a.id.as_str()).collect();
        let modbus_server = self.modbus_server.as_ref().and_then(|m| m.validate(&axis_ids, &mut p));

        if !p.0.is_empty() {
            return Err(p.0);
        }
        let (c, an, m) = (self.control, &self.analysis, &self.mes);
        Ok(NodeConfig {
            node: node.expect("checked"),
            state_dir: self.node.state_dir,
            line: line.expect("checked"),
            control: ControlConfig {
                cycle: Duration::from_micros(c.cycle_us),
                input_stale: Duration::from_millis(c.input_stale_ms),
                watchdog: Duration::from_millis(c.watchdog_ms),
                rt_priority: (c.rt_priority > 0).then_some(c.rt_priority),
                cpu: (c.cpu >= 0).then_some(c.cpu as usize),
                telemetry_every_cycles: c.telemetry_every_cycles,
            },
            inspection_workers: self.inspection.workers,
            devices,
            modbus_server,
            axes,
            cells,
            assets,
            rules,
            analysis: AnalysisSettings {
                batches: an.batches,
                prior_defect_rate: an.prior_defect_rate,
                prior_weight_frames: an.prior_weight_frames,
                priorities: crate::rules::Priorities {
                    urgent_defect_probability: an.urgent_defect_probability,
                    high_defect_probability: an.high_defect_probability,
                    high_elevated_probability: an.high_elevated_probability,
                },
            },
            bus: bus.expect("checked"),
            outbox: OutboxLimits {
                max_entries: self.outbox.max_entries,
                max_bytes: self.outbox.max_mb.saturating_mul(1024 * 1024),
            },
            outbox_reserve_bytes: self.outbox.reserve_mb.saturating_mul(1024 * 1024),
            health: HealthBounds {
                outbox_degraded_pct: self.health.outbox_degraded_pct,
                overruns_per_min_max: self.health.overruns_per_min_max,
                mes_unreachable: Duration::from_secs(self.health.mes_unreachable_s),
                bus_unreachable: Duration::from_secs(self.health.bus_unreachable_s),
            },
            mes: MesConfig {
                url: m.url.clone(),
                timeout: Duration::from_millis(m.timeout_ms),
                retry_initial: Duration::from_millis(m.retry_initial_ms),
                retry_max: Duration::from_millis(m.retry_max_ms),
            },
            dashboard_listen: listen.expect("checked"),
            clock: clock.expect("checked"),
            sim_seed: self.sim.seed,
            security,
            models,
        })
    }

    /// `[control]`.
    fn check_control(&self, p: &mut Problems) {
        let c = &self.control;
        p.range(
            "control.cycle_us",
            c.cycle_us,
            100,
            100_000,
            "µs",
            "set the line's control period (1000 = 1 kHz)",
        );
        let min_stale = (2 * c.cycle_us).div_ceil(1000).max(1);
        p.range(
            "control.input_stale_ms",
            c.input_stale_ms,
            min_stale,
            10_000,
            "ms",
            "allow at least two cycles, at most 10 s",
        );
        p.range(
            "control.watchdog_ms",
            c.watchdog_ms,
            1,
            10_000,
            "ms",
            "use a few cycle periods, e.g. 100",
        );
        p.range(
            "control.rt_priority",
            c.rt_priority,
            0,
            99,
            "",
            "1-99 asks for SCHED_FIFO, 0 runs at normal priority",
        );
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        if c.cpu < -1 || c.cpu >= cpus {
            p.add(
                "control.cpu",
                format!(
                    "{} but this machine has CPUs 0..={}; use -1 to leave it to the scheduler",
                    c.cpu,
                    cpus - 1
                ),
            );
        }
        p.range(
            "control.telemetry_every_cycles",
            c.telemetry_every_cycles,
            1,
            10_000,
            "cycles",
            "50 gives 20 Hz at 1 kHz",
        );
    }

    /// Counts, and every axis a station with its one cell, asset and rule.
    fn check_stations(&self, p: &mut Problems) {
        let c = &self.control;
        if self.axes.is_empty() {
            p.add("axes", "no axis configured; add an [[axes]] table");
        }
        for (key, n) in [
            ("axes", self.axes.len()),
            ("cells", self.cells.len()),
            ("assets", self.assets.len()),
        ] {
            if n > MAX_AXES {
                p.add(
                    key,
                    format!(
                        "{n} [[{key}]] entries, more than the {MAX_AXES} one node runs (an axis with its cell and asset each); \
                         split the line over more nodes"
                    ),
                );
            }
        }
        // Each axis is a station: its program, one inspection cell and one
        // twin asset. An axis without them, or with two, would run partly.
        for (i, a) in self.axes.iter().enumerate() {
            for (what, ids) in [
                (
                    "cells",
                    self.cells
                        .iter()
                        .filter(|c| c.axis == a.id)
                        .map(|c| c.id.as_str())
                        .collect::<Vec<_>>(),
                ),
                (
                    "assets",
                    self.assets
                        .iter()
                        .filter(|x| x.axis == a.id)
                        .map(|x| x.id.as_str())
                        .collect(),
                ),
            ] {
                if ids.len() != 1 {
                    p.add(
                        format!("axes[{i}]"),
                        format!(
                            "axis {:?} has {} [[{what}]] entries {ids:?}; each axis runs exactly one inspection cell and one twin asset: \
                             give it one [[{what}]] entry with axis = {:?}",
                            a.id,
                            ids.len(),
                            a.id
                        ),
                    );
                }
            }
        }
        for (key, ids) in [
            ("cells", self.cells.iter().map(|c| c.id.as_str()).collect::<Vec<_>>()),
            ("assets", self.assets.iter().map(|a| a.id.as_str()).collect()),
        ] {
            for (i, id) in ids.iter().enumerate() {
                if ids[..i].contains(id) {
                    p.add(
                        format!("{key}[{i}].id"),
                        format!("{id:?} is used by more than one [[{key}]] entry; ids must be unique"),
                    );
                }
            }
        }
        // Cells and assets are both model targets, addressed by id alone.
        for (i, a) in self.assets.iter().enumerate() {
            if self.cells.iter().any(|c| c.id == a.id) {
                p.add(
                    format!("assets[{i}].id"),
                    format!(
                        "{:?} is also a cell's id; cells and assets are both model deploy targets, named by id alone: give them different ids",
                        a.id
                    ),
                );
            }
        }
        if self.rules.len() > MAX_RULES {
            p.add(
                "rules",
                format!(
                    "{} [[rules]] entries, more than the {MAX_RULES} allowed; one derate rule per asset is enough",
                    self.rules.len()
                ),
            );
        }
        // The twin sees one sample per telemetry record: a sparse feed makes
        // the alert late by up to one sample period.
        let sample_us = c.cycle_us.saturating_mul(u64::from(c.telemetry_every_cycles));
        for (i, a) in self.assets.iter().enumerate() {
            let bound_us = a.persistence_ms.saturating_mul(1000) / TWIN_SAMPLES_PER_PERSISTENCE;
            if sample_us > bound_us {
                p.add(
                    format!("assets[{i}].persistence_ms"),
                    format!(
                        "the twin gets one sample every {:.1} ms (control.cycle_us {} × control.telemetry_every_cycles {}), \
                         but an alert after {} ms needs one at least every {:.1} ms (a {TWIN_SAMPLES_PER_PERSISTENCE}th of it), \
                         or it is raised up to a sample period late: lower telemetry_every_cycles or cycle_us, or raise persistence_ms",
                        sample_us as f64 / 1000.0,
                        c.cycle_us,
                        c.telemetry_every_cycles,
                        a.persistence_ms,
                        bound_us as f64 / 1000.0
                    ),
                );
            }
        }
    }

    /// Paths and URLs are bounded.
    fn check_lengths(&self, p: &mut Problems) {
        for (key, len, max) in [
            ("node.state_dir", self.node.state_dir.as_os_str().len(), MAX_PATH_LEN),
            ("mes.url", self.mes.url.as_ref().map_or(0, String::len), MAX_URL_LEN),
            ("bus.url", self.bus.url.as_ref().map_or(0, String::len), MAX_URL_LEN),
            ("dashboard.listen", self.dashboard.listen.len(), MAX_URL_LEN),
        ] {
            if len > max {
                p.add(key, format!("{len} bytes long, more than the {max} allowed"));
            }
        }
    }

    /// `[[axes]]`, each with its bound points.
    fn axes_config(&self, mut bindings: Vec<Option<super::devices::IoBinding>>, p: &mut Problems) -> Vec<AxisConfig> {
        let mut axes = Vec::new();
        for (i, a) in self.axes.iter().enumerate() {
            let k = |f: &str| format!("axes[{i}].{f}");
            let id = p.id(&k("id"), AxisId::new(a.id.clone()));
            if self.axes.iter().filter(|b| b.id == a.id).count() > 1 {
                p.add(
                    k("id"),
                    format!("{:?} is used by more than one axis; ids must be unique", a.id),
                );
            }
            p.range(
                &k("max_ppm"),
                a.max_ppm,
                0.1,
                600.0,
                "PPM",
                "set the axis' mechanical limit",
            );
            if !(a.min_ppm > 0.0 && a.min_ppm <= a.nominal_ppm && a.nominal_ppm <= a.max_ppm) {
                p.add(
                    k("nominal_ppm"),
                    format!(
                        "need 0 < min_ppm ({}) <= nominal_ppm ({}) <= max_ppm ({})",
                        a.min_ppm, a.nominal_ppm, a.max_ppm
                    ),
                );
            }
            p.range(
                &k("weld_current_a"),
                a.weld_current_a,
                1.0,
                50_000.0,
                "A",
                "set the weld schedule's current",
            );
            if let Some(id) = id {
                axes.push(AxisConfig {
                    id,
                    nominal_ppm: a.nominal_ppm,
                    min_ppm: a.min_ppm,
                    max_ppm: a.max_ppm,
                    weld_current_a: a.weld_current_a,
                    start_running: a.start_running,
                    io: bindings[i].take(),
                });
            }
        }
        axes
    }

    /// The configured axis `name`, or a problem at `key` naming the known ones.
    fn axis_ref(&self, p: &mut Problems, key: String, name: &str) -> Option<AxisId> {
        match self.axes.iter().find(|a| a.id == name) {
            Some(_) => AxisId::new(name).ok(),
            None => {
                let known: Vec<&str> = self.axes.iter().map(|a| a.id.as_str()).collect();
                p.add(key, format!("axis {name:?} is not configured; known axes: {known:?}"));
                None
            }
        }
    }

    /// `[[cells]]`.
    fn cells_config(&self, p: &mut Problems) -> Vec<CellConfig> {
        let mut cells = Vec::new();
        for (i, c) in self.cells.iter().enumerate() {
            let k = |f: &str| format!("cells[{i}].{f}");
            let id = p.id(&k("id"), CellId::new(c.id.clone()));
            let axis = self.axis_ref(p, k("axis"), &c.axis);
            let roi: Option<[u32; 4]> = c.roi.clone().try_into().ok();
            match roi {
                Some([x, y, w, h])
                    if w > 0
                        && h > 0
                        && u64::from(x) + u64::from(w) <= MAX_FRAME_SIDE_PX
                        && u64::from(y) + u64::from(h) <= MAX_FRAME_SIDE_PX => {}
                _ => p.add(
                    k("roi"),
                    format!(
                        "{:?}: give [x, y, width, height] in pixels, width and height > 0, inside a frame of at most {MAX_FRAME_SIDE_PX}x{MAX_FRAME_SIDE_PX}",
                        c.roi
                    ),
                ),
            }
            if !(c.threshold > 0.0 && c.threshold < 1.0) {
                p.add(
                    k("threshold"),
                    format!("{} is outside (0, 1); 0.5 is the usual choice", c.threshold),
                );
            }
            p.range(
                &k("modules_per_batch"),
                c.modules_per_batch,
                1,
                1_000_000,
                "modules",
                "1 makes every module a batch",
            );
            if let Some(dir) = &c.model_dir {
                if !resolve(dir).join("model.onnx").exists() {
                    p.add(
                        k("model_dir"),
                        format!("{} has no model.onnx; point it at a model directory or remove the key to use the built-in model", dir.display()),
                    );
                } else if !resolve(dir).join("signature.json").exists() && !self.models.allow_unsigned_model_dir {
                    p.add(
                        k("model_dir"),
                        format!("{} is not a signed bundle (no signature.json): sign it with `triad bundle sign`, or set models.allow_unsigned_model_dir = true to run an unsigned model", dir.display()),
                    );
                }
            }
            if let (Some(id), Some(axis), Some(roi)) = (id, axis, roi) {
                cells.push(CellConfig {
                    id,
                    axis,
                    model_dir: c.model_dir.clone(),
                    roi,
                    threshold: c.threshold,
                    modules_per_batch: c.modules_per_batch,
                });
            }
        }
        cells
    }

    /// `[[assets]]`.
    fn assets_config(&self, p: &mut Problems) -> Vec<AssetConfig> {
        let mut assets = Vec::new();
        for (i, a) in self.assets.iter().enumerate() {
            let k = |f: &str| format!("assets[{i}].{f}");
            let id = p.id(&k("id"), AssetId::new(a.id.clone()));
            let axis = self.axis_ref(p, k("axis"), &a.axis);
            let cell = if let Some(c) = self.cells.iter().find(|c| c.id == a.cell) {
                if c.axis != a.axis {
                    p.add(
                        k("cell"),
                        format!(
                            "cell {:?} is on axis {:?}, but this asset is on axis {:?}: an asset is analysed with the cell of its own axis",
                            a.cell, c.axis, a.axis
                        ),
                    );
                }
                CellId::new(a.cell.clone()).ok()
            } else {
                p.add(
                    k("cell"),
                    format!("cell {:?} is not configured; add it under [[cells]]", a.cell),
                );
                None
            };
            p.range(
                &k("band_c"),
                a.band_c,
                0.01,
                500.0,
                "°C",
                "use a few standard deviations of the nominal residual",
            );
            if !(a.deadband_c >= 0.0 && a.deadband_c < a.band_c) {
                p.add(
                    k("deadband_c"),
                    format!("{} must be at least 0 and below band_c ({})", a.deadband_c, a.band_c),
                );
            }
            p.range(
                &k("persistence_ms"),
                a.persistence_ms,
                100,
                3_600_000,
                "ms",
                "3000 alerts after 3 s outside the band",
            );
            p.range(
                &k("clear_ms"),
                a.clear_ms,
                0,
                3_600_000,
                "ms",
                "time back inside the band before an alert clears",
            );
            if let (Some(id), Some(axis), Some(cell)) = (id, axis, cell) {
                assets.push(AssetConfig {
                    id,
                    axis,
                    cell,
                    band_c: a.band_c,
                    deadband_c: a.deadband_c,
                    persistence: Duration::from_millis(a.persistence_ms),
                    clear: Duration::from_millis(a.clear_ms),
                });
            }
        }
        assets
    }

    /// `[[rules]]`.
    fn rules_config(&self, p: &mut Problems) -> Vec<DerateRule> {
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let k = |f: &str| format!("rules[{i}].{f}");
            if r.kind != "derate_on_alert" {
                p.add(
                    k("kind"),
                    format!("{:?} is not a rule kind; the only kind is \"derate_on_alert\"", r.kind),
                );
            }
            let asset = if self.assets.iter().any(|a| a.id == r.asset) {
                AssetId::new(r.asset.clone()).ok()
            } else {
                p.add(
                    k("asset"),
                    format!("asset {:?} is not configured; add it under [[assets]]", r.asset),
                );
                None
            };
            let axis = self.axis_ref(p, k("axis"), &r.axis);
            if let Some(a) = self.assets.iter().find(|a| a.id == r.asset)
                && a.axis != r.axis
            {
                p.add(
                    k("axis"),
                    format!(
                        "asset {:?} is on axis {:?}: a rule derates the axis of its own asset; set axis = {:?}",
                        r.asset, a.axis, a.axis
                    ),
                );
            }
            if self.rules[..i].iter().any(|o| o.asset == r.asset) {
                p.add(
                    k("asset"),
                    format!("asset {:?} already has a rule; one derate rule per asset", r.asset),
                );
            }
            if let Some(a) = self.axes.iter().find(|a| a.id == r.axis)
                && !(r.derate_ppm >= a.min_ppm && r.derate_ppm < a.nominal_ppm)
            {
                p.add(
                    k("derate_ppm"),
                    format!(
                        "{} must be at least the axis' min_ppm ({}) and below its nominal_ppm ({})",
                        r.derate_ppm, a.min_ppm, a.nominal_ppm
                    ),
                );
            }
            if let (Some(asset), Some(axis)) = (asset, axis) {
                rules.push(DerateRule {
                    asset,
                    axis,
                    derate_ppm: r.derate_ppm,
                });
            }
        }
        rules
    }

    /// `[analysis]`.
    fn check_analysis(&self, p: &mut Problems) {
        let an = &self.analysis;
        p.range(
            "analysis.batches",
            an.batches,
            1,
            1000,
            "batches",
            "3 compares the last three batches",
        );
        if !(0.0..1.0).contains(&an.prior_defect_rate) {
            p.add(
                "analysis.prior_defect_rate",
                format!("{} is outside [0, 1)", an.prior_defect_rate),
            );
        }
        p.range(
            "analysis.prior_weight_frames",
            an.prior_weight_frames,
            0.0,
            1e9,
            "frames",
            "200 is a light prior",
        );
        for (key, v) in [
            ("analysis.urgent_defect_probability", an.urgent_defect_probability),
            ("analysis.high_defect_probability", an.high_defect_probability),
            ("analysis.high_elevated_probability", an.high_elevated_probability),
        ] {
            p.range(key, v, 0.0, 1.0, "", "a probability");
        }
        if an.high_defect_probability > an.urgent_defect_probability {
            p.add(
                "analysis.high_defect_probability",
                format!(
                    "{} is above urgent_defect_probability ({}): a work order would skip High; keep high <= urgent",
                    an.high_defect_probability, an.urgent_defect_probability
                ),
            );
        }
    }

    /// `[bus]`.
    fn bus_config(&self, p: &mut Problems) -> Option<BusConfig> {
        match (self.bus.backend.as_str(), &self.bus.url) {
            ("embedded", _) => Some(BusConfig::Embedded),
            ("pulsar", Some(url)) if url.starts_with("pulsar://") || url.starts_with("pulsar+ssl://") => {
                self.bus.pulsar(url, p).map(BusConfig::Pulsar)
            }
            ("pulsar", _) => {
                p.add(
                    "bus.url",
                    "the pulsar backend needs url = \"pulsar://host:6650\" (or pulsar+ssl://)",
                );
                None
            }
            (other, _) => {
                p.add(
                    "bus.backend",
                    format!("{other:?} is not a backend; use \"embedded\" or \"pulsar\""),
                );
                None
            }
        }
    }

    /// `[outbox]`, `[health]`, `[mes]`.
    fn check_outbox_health_mes(&self, p: &mut Problems) {
        p.range(
            "outbox.max_entries",
            self.outbox.max_entries,
            1,
            1_000_000_000,
            "entries",
            "size it for the longest broker outage",
        );
        p.range(
            "outbox.max_mb",
            self.outbox.max_mb,
            1,
            1_000_000,
            "MiB",
            "size it for the longest broker outage",
        );
        p.range(
            "outbox.reserve_mb",
            self.outbox.reserve_mb,
            0,
            4096,
            "MiB",
            "a few MiB lets the outbox store on after the disk filled; 0 turns the reserve off",
        );
        let h = &self.health;
        p.range(
            "health.outbox_degraded_pct",
            h.outbox_degraded_pct,
            1,
            100,
            "%",
            "80 warns before the outbox refuses",
        );
        p.range(
            "health.overruns_per_min_max",
            h.overruns_per_min_max,
            0,
            60_000_000,
            "overruns",
            "60 is one a second",
        );
        p.range(
            "health.mes_unreachable_s",
            h.mes_unreachable_s,
            1,
            86_400,
            "s",
            "60 is usual",
        );
        p.range(
            "health.bus_unreachable_s",
            h.bus_unreachable_s,
            1,
            86_400,
            "s",
            "60 is usual",
        );

        let m = &self.mes;
        if let Some(url) = &m.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            p.add("mes.url", format!("{url:?} is not an http:// or https:// URL"));
        }
        p.range("mes.timeout_ms", m.timeout_ms, 1, 600_000, "ms", "2000 suits most MES");
        p.range(
            "mes.retry_initial_ms",
            m.retry_initial_ms,
            1,
            600_000,
            "ms",
            "200 is a good first retry",
        );
        if m.retry_max_ms < m.retry_initial_ms {
            p.add(
                "mes.retry_max_ms",
                format!("{} is below retry_initial_ms ({})", m.retry_max_ms, m.retry_initial_ms),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid() {
        let cfg = from_toml_str(DEFAULT_TOML).unwrap();
        assert_eq!(cfg.axes[0].id.as_str(), "axis_07");
        assert_eq!(cfg.control.cycle, Duration::from_millis(1));
        assert_eq!(cfg.assets[0].persistence, Duration::from_secs(3));
        assert_eq!(cfg.rules[0].derate_ppm, 8.0);
    }

    #[test]
    fn every_problem_is_reported_with_key_value_and_fix() {
        let bad = DEFAULT_TOML
            .replace("cycle_us = 1000", "cycle_us = 5")
            .replace("axis = \"axis_07\"\nmodel_dir", "axis = \"axis_99\"\nmodel_dir")
            .replace("derate_ppm = 8.0", "derate_ppm = 20.0")
            .replace("band_c = 6.0", "band_c = -1.0")
            .replace("listen = \"127.0.0.1:8480\"", "listen = \"nowhere\"");
        let bad = bad.replacen("axis = \"axis_07\"", "axis = \"axis_99\"", 1);
        let err = from_toml_str(&bad).unwrap_err();
        let text = err.to_string();
        for needle in [
            "control.cycle_us: 5 is outside 100..=100000 µs",
            "cells[0].axis: axis \"axis_99\" is not configured",
            "rules[0].derate_ppm: 20 must be",
            "assets[0].band_c: -1 is outside",
            "dashboard.listen: \"nowhere\" is not an address:port",
            // The cell moved off axis_07, which is then left without one.
            "axes[0]: axis \"axis_07\" has 0 [[cells]] entries",
            "assets[0].cell: cell \"cell_2245\" is on axis \"axis_99\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.problems.len(), 8, "{text}");
    }

    const LINE_3: &str = include_str!("../../../deploy/examples/line-3-stations.toml");

    #[test]
    fn more_axes_cells_or_assets_than_the_node_runs_are_refused_with_the_count() {
        let axis = DEFAULT_TOML
            .split("[[axes]]")
            .nth(1)
            .and_then(|t| t.split("\n[").next())
            .unwrap()
            .to_string();
        let many: String = (0..200)
            .map(|i| format!("\n[[axes]]{}", axis.replace("\"axis_07\"", &format!("\"axis_{i}\""))))
            .collect();
        let text = format!("{DEFAULT_TOML}\n{many}");
        let err = from_toml_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("axes: 201 [[axes]] entries, more than the 64 one node runs"),
            "{err}"
        );
    }

    #[test]
    fn every_axis_is_a_station_with_its_cell_asset_and_rule() {
        let cfg = from_toml_str(LINE_3).unwrap();
        let st = cfg.stations();
        let ids: Vec<(&str, &str, &str, Option<&str>)> = st
            .iter()
            .map(|s| {
                (
                    s.axis.id.as_str(),
                    s.cell.id.as_str(),
                    s.asset.id.as_str(),
                    s.rule.as_ref().map(|r| r.axis.as_str()),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("axis_01", "cell_01", "pack_01", Some("axis_01")),
                ("axis_02", "cell_02", "pack_02", Some("axis_02")),
                ("axis_03", "cell_03", "pack_03", Some("axis_03")),
            ]
        );
    }

    #[test]
    fn a_station_missing_or_doubling_a_part_or_crossing_axes_is_refused_by_name() {
        let cases = [
            // axis_03 loses its cell (cell_03 moves to axis_02).
            (
                LINE_3.replace(
                    "id = \"cell_03\"\naxis = \"axis_03\"",
                    "id = \"cell_03\"\naxis = \"axis_02\"",
                ),
                vec![
                    "axes[1]: axis \"axis_02\" has 2 [[cells]] entries [\"cell_02\", \"cell_03\"]",
                    "axes[2]: axis \"axis_03\" has 0 [[cells]] entries",
                    "assets[2].cell: cell \"cell_03\" is on axis \"axis_02\", but this asset is on axis \"axis_03\"",
                ],
            ),
            // The rule of pack_02 derates another axis.
            (
                LINE_3.replace(
                    "asset = \"pack_02\"\naxis = \"axis_02\"",
                    "asset = \"pack_02\"\naxis = \"axis_01\"",
                ),
                vec![
                    "rules[1].axis: asset \"pack_02\" is on axis \"axis_02\": a rule derates the axis of its own asset",
                ],
            ),
            // Two rules for one asset, two cells with one id.
            (
                LINE_3
                    .replace(
                        "asset = \"pack_03\"\naxis = \"axis_03\"",
                        "asset = \"pack_01\"\naxis = \"axis_01\"",
                    )
                    .replace("id = \"cell_03\"", "id = \"cell_01\"")
                    .replace("cell = \"cell_03\"", "cell = \"cell_01\""),
                vec![
                    "rules[2].asset: asset \"pack_01\" already has a rule",
                    "cells[2].id: \"cell_01\" is used by more than one [[cells]] entry",
                ],
            ),
            // An asset named like a cell: one model target would hide the other.
            (
                LINE_3
                    .replace("id = \"pack_02\"", "id = \"cell_02\"")
                    .replace("asset = \"pack_02\"", "asset = \"cell_02\""),
                vec!["assets[1].id: \"cell_02\" is also a cell's id"],
            ),
        ];
        for (text, needles) in cases {
            let err = from_toml_str(&text).unwrap_err().to_string();
            for n in needles {
                assert!(err.contains(n), "missing {n:?} in:\n{err}");
            }
        }
    }

    #[test]
    fn a_twin_feed_too_sparse_for_the_alert_persistence_is_refused() {
        // 100 ms × 50 = one sample every 5 s against a 3 s persistence.
        let text = DEFAULT_TOML
            .replace("cycle_us = 1000", "cycle_us = 100000")
            .replace("input_stale_ms = 50", "input_stale_ms = 500")
            .replace("watchdog_ms = 100", "watchdog_ms = 1000");
        let err = from_toml_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("assets[0].persistence_ms: the twin gets one sample every 5000.0 ms"),
            "{err}"
        );
        assert!(err.contains("at least every 300.0 ms"), "{err}");
        // One every 50 ms is fine for 3 s.
        from_toml_str(DEFAULT_TOML).unwrap();
    }

    #[test]
    fn long_strings_are_refused_by_key() {
        let text = DEFAULT_TOML.replace(
            "# url = \"http://mes.example:8080/api/workorders\"",
            &format!("url = \"http://{}\"", "x".repeat(3000)),
        );
        let err = from_toml_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("mes.url: 3007 bytes long, more than the 2048 allowed"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = from_toml_str(&DEFAULT_TOML.replace("[line]\nid = \"line_1\"", "[line]\nid = \"line_1\"\nspeed = 3"))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `speed`"), "{err}");
    }

    #[test]
    fn security_keys_and_model_settings_are_checked_by_name() {
        let key = crate::trust::keys::public_base64(&[7u8; 32]);
        let good = format!(
            "{DEFAULT_TOML}\n[[security.keys]]\nname = \"release-2025\"\npublic_key = \"{key}\"\nuses = [\"bundle\"]\n"
        );
        let cfg = from_toml_str(&good).unwrap();
        let k = cfg
            .security
            .keyring
            .lookup("release-2025", crate::trust::keyring::KeyUse::Bundle)
            .unwrap();
        assert_eq!(k.public, [7u8; 32]);
        assert_eq!(cfg.models.limits.max_total_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.models.fuse.probation, Duration::from_secs(60));
        let bad = format!(
            "{}\n[[security.keys]]\nname = \"x y\"\npublic_key = \"AAAA\"\nuses = [\"everything\"]\n[[security.keys]]\nname = \"k2\"\nuses = [\"deploy\"]\n",
            DEFAULT_TOML.replace("fuse_max_slowdown = 3.0", "fuse_max_slowdown = 0.5")
        );
        let text = from_toml_str(&bad).unwrap_err().to_string();
        for needle in [
            "security.keys[0].name: \"x y\"",
            "security.keys[0].public_key: the value: 3 bytes instead of 32",
            "security.keys[0].uses: \"everything\" is not a use",
            "security.keys[1].public_key: give exactly one of public_key",
            "models.fuse_max_slowdown: 0.5 is outside",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn an_unsigned_model_dir_is_refused_unless_allowed() {
        let dir = std::env::temp_dir().join(format!("triad-cfg-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), b"x").unwrap();
        let text = DEFAULT_TOML.replace(
            "# model_dir = \"/opt/triad/models/weld_seam\"",
            &format!("model_dir = \"{}\"", dir.display()),
        );
        let err = from_toml_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("cells[0].model_dir") && err.contains("not a signed bundle"),
            "{err}"
        );
        from_toml_str(&text.replace("allow_unsigned_model_dir = false", "allow_unsigned_model_dir = true")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_ids_are_named() {
        let err = from_toml_str(&DEFAULT_TOML.replace("id = \"edge-01\"", "id = \"Edge 01\"")).unwrap_err();
        assert!(
            err.to_string().contains("node.id: invalid node id \"Edge 01\""),
            "{err}"
        );
    }
}
