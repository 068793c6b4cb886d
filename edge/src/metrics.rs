//! Prometheus metrics, named `triad_<name>_<unit>[_total]` after vector's
//! instrumentation spec. Served at `/metrics` in the format the scraper asks
//! for ([`Format::from_accept`]): OpenMetrics 1.0 or Prometheus text 0.0.4.
//!
//! Besides the counters, the metrics remember since when each delivery path
//! (bus, MES) has been failing, for the health checks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// Label: health check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    /// Check name.
    pub check: String,
}

/// Exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 (`application/openmetrics-text`).
    OpenMetrics,
    /// Prometheus text 0.0.4 (`text/plain`), what older scrapers ask for.
    Prometheus004,
}

impl Format {
    /// Content type of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// Pick from an `Accept` header: OpenMetrics when it is asked for with a
    /// higher or equal weight than text/plain, else Prometheus text 0.0.4 (also
    /// without a header, as the Prometheus format is the older contract).
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus004;
        };
        let mut om = None::<f32>;
        let mut text = None::<f32>;
        for part in accept.split(',') {
            let mut it = part.split(';').map(str::trim);
            let media = it.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in it {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => om = Some(om.unwrap_or(0.0).max(q)),
                "text/plain" | "text/*" | "*/*" => text = Some(text.unwrap_or(0.0).max(q)),
                _ => {}
            }
        }
        match (om, text) {
            (Some(o), t) if o > 0.0 && o >= t.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::Prometheus004,
        }
    }
}

/// Turn OpenMetrics text into Prometheus text 0.0.4: counters' `TYPE` and
/// `HELP` lines name the `_total` series, `unknown` is `untyped`, and the
/// `UNIT` and `EOF` lines go.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            let tail = if tail == "unknown" { "untyped" } else { tail };
            Some(if counters.contains(name) {
                format!("{p}{name}_total {tail}")
            } else {
                format!("{p}{name} {tail}")
            })
        });
        match fixed {
            Some(f) => out.push_str(&f),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Label: topic name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic.
    pub topic: String,
}

/// Label: inspection cell.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CellLabel {
    /// Cell id.
    pub cell: String,
}

/// Label: axis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AxisLabel {
    /// Axis id.
    pub axis: String,
}

/// Label: field device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// Device id.
    pub device: String,
}

/// Label: twin asset.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssetLabel {
    /// Asset id.
    pub asset: String,
}

/// Label: outbox lane.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    /// Lane.
    pub lane: String,
}

/// Label: delivery outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Outcome.
    pub outcome: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// One station's handles into the labelled families: made once, so the
/// hot paths count without building a label each time.
#[derive(Clone, Debug)]
pub struct StationMetrics {
    /// Frames inspected on the cell.
    pub frames: Counter,
    /// Defective frames on the cell.
    pub defects: Counter,
    /// Frames of the cell lost before inspection.
    pub frames_dropped: Counter,
    /// Frames of the cell that failed to inspect.
    pub errors: Counter,
    /// The asset's residual, °C.
    pub residual: FGauge,
    /// The asset's health.
    pub health: FGauge,
    /// Alerts raised on the asset.
    pub alerts: Counter,
    /// I/O scans in which a device the axis is bound to did not answer.
    pub io_scans_failed: Counter,
}

impl StationMetrics {
    /// The handles of `axis`, `cell` and `asset` in `m`.
    pub fn new(m: &Metrics, axis: &str, cell: &str, asset: &str) -> Self {
        let c = CellLabel { cell: cell.into() };
        let a = AssetLabel { asset: asset.into() };
        Self {
            frames: m.inspection_frames.get_or_create(&c).clone(),
            defects: m.inspection_defects.get_or_create(&c).clone(),
            frames_dropped: m.inspection_frames_dropped.get_or_create(&c).clone(),
            errors: m.inspection_errors.get_or_create(&c).clone(),
            residual: m.twin_residual.get_or_create(&a).clone(),
            health: m.twin_health.get_or_create(&a).clone(),
            alerts: m.twin_alerts.get_or_create(&a).clone(),
            io_scans_failed: m
                .io_scans_failed
                .get_or_create(&AxisLabel { axis: axis.into() })
                .clone(),
        }
    }
}

/// Every metric of the node.
pub struct Metrics {
    registry: Registry,
    /// Control cycles run.
    pub control_cycles: Counter,
    /// Control cycles missed.
    pub control_overruns: Counter,
    /// Jitter p99, seconds.
    pub control_jitter_p99: FGauge,
    /// Jitter max, seconds.
    pub control_jitter_max: FGauge,
    /// Telemetry records dropped.
    pub control_telemetry_dropped: Counter,
    /// Frames inspected.
    pub inspection_frames: Family<CellLabel, Counter>,
    /// Defective frames.
    pub inspection_defects: Family<CellLabel, Counter>,
    /// Frames lost before inspection.
    pub inspection_frames_dropped: Family<CellLabel, Counter>,
    /// Inspection errors.
    pub inspection_errors: Family<CellLabel, Counter>,
    /// I/O scans an axis got no inputs from (a bound device did not answer).
    pub io_scans_failed: Family<AxisLabel, Counter>,
    /// Frame-to-result latency.
    pub inspection_latency: Histogram,
    /// Twin residual, °C.
    pub twin_residual: Family<AssetLabel, FGauge>,
    /// Twin health.
    pub twin_health: Family<AssetLabel, FGauge>,
    /// Alerts raised.
    pub twin_alerts: Family<AssetLabel, Counter>,
    /// Messages published per topic.
    pub bus_published: Family<TopicLabel, Counter>,
    /// Publish failures per topic.
    pub bus_publish_errors: Family<TopicLabel, Counter>,
    /// Outbox pending per lane.
    pub outbox_pending: Family<LaneLabel, Gauge>,
    /// Outbox refusals because full.
    pub outbox_full: Counter,
    /// MES deliveries by outcome.
    pub mes_deliveries: Family<OutcomeLabel, Counter>,
    /// Commands by outcome.
    pub commands: Family<OutcomeLabel, Counter>,
    /// Outbox writes refused by the disk (full, I/O error).
    pub outbox_storage_errors: Counter,
    /// Health of each check: 0 ok, 1 degraded, 2 failing.
    pub health: Family<CheckLabel, Gauge>,
    /// Modbus requests sent per device (retries included).
    pub modbus_requests: Family<DeviceLabel, Counter>,
    /// Modbus requests that got no answer in time.
    pub modbus_timeouts: Family<DeviceLabel, Counter>,
    /// Modbus requests answered with an exception.
    pub modbus_exceptions: Family<DeviceLabel, Counter>,
    /// Modbus requests lost to the transport.
    pub modbus_transport_errors: Family<DeviceLabel, Counter>,
    /// Modbus connections made.
    pub modbus_connects: Family<DeviceLabel, Counter>,
    /// Since when the bus, and the MES, have been failing.
    failing_since: Mutex<[Option<Instant>; 2]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register everything.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("triad");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        Self {
            control_cycles: reg!("control_cycles", "Control cycles run", Counter::default()),
            control_overruns: reg!(
                "control_overruns",
                "Control cycles whose deadline passed",
                Counter::default()
            ),
            control_jitter_p99: reg!(
                "control_jitter_p99_seconds",
                "99th percentile wake-up lateness",
                FGauge::default()
            ),
            control_jitter_max: reg!(
                "control_jitter_max_seconds",
                "Largest wake-up lateness",
                FGauge::default()
            ),
            control_telemetry_dropped: reg!(
                "control_telemetry_dropped",
                "Telemetry records dropped (ring full)",
                Counter::default()
            ),
            inspection_frames: reg!("inspection_frames", "Frames inspected", Family::default()),
            inspection_defects: reg!("inspection_defects", "Frames with a defect", Family::default()),
            inspection_frames_dropped: reg!(
                "inspection_frames_dropped",
                "Frames lost before inspection (queue full)",
                Family::default()
            ),
            io_scans_failed: reg!(
                "io_scans_failed",
                "I/O scans in which a device the axis is bound to did not answer (the axis got no new inputs)",
                Family::default()
            ),
            inspection_errors: reg!(
                "inspection_errors",
                "Frames that could not be inspected",
                Family::default()
            ),
            inspection_latency: reg!(
                "inspection_latency_seconds",
                "Capture to result",
                Histogram::new(exponential_buckets(0.0002, 2.0, 14))
            ),
            twin_residual: reg!(
                "twin_residual_celsius",
                "Measured minus predicted weld temperature",
                Family::default()
            ),
            twin_health: reg!("twin_health_ratio", "Twin health score", Family::default()),
            twin_alerts: reg!("twin_alerts", "Alerts raised", Family::default()),
            bus_published: reg!(
                "bus_published_messages",
                "Messages acknowledged by the bus",
                Family::default()
            ),
            bus_publish_errors: reg!("bus_publish_errors", "Publish failures", Family::default()),
            outbox_pending: reg!(
                "outbox_pending_messages",
                "Messages waiting in the outbox",
                Family::default()
            ),
            outbox_full: reg!(
                "outbox_full",
                "Appends refused because the outbox was full",
                Counter::default()
            ),
            mes_deliveries: reg!("mes_deliveries", "Work-order deliveries to the MES", Family::default()),
            commands: reg!("commands", "Control commands by outcome", Family::default()),
            outbox_storage_errors: reg!(
                "outbox_storage_errors",
                "Outbox writes refused by the disk (full or I/O error)",
                Counter::default()
            ),
            health: reg!(
                "health_status",
                "Health of each check: 0 ok, 1 degraded, 2 failing (reasons on /healthz)",
                Family::default()
            ),
            modbus_requests: reg!(
                "modbus_requests",
                "Modbus requests sent (retries included)",
                Family::default()
            ),
            modbus_timeouts: reg!(
                "modbus_timeouts",
                "Modbus requests that got no answer in time",
                Family::default()
            ),
            modbus_exceptions: reg!(
                "modbus_exceptions",
                "Modbus requests answered with an exception",
                Family::default()
            ),
            modbus_transport_errors: reg!(
                "modbus_transport_errors",
                "Modbus requests lost to the transport (refused, cut, malformed)",
                Family::default()
            ),
            modbus_connects: reg!("modbus_connects", "Modbus connections made", Family::default()),
            failing_since: Mutex::new([None, None]),
            registry: r,
        }
    }

    /// Text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }

    /// Exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Prometheus004 => openmetrics_to_prometheus(&self.encode()),
        }
    }

    fn mark(&self, which: usize, failing: bool) {
        let mut f = self.failing_since.lock().expect("poisoned");
        if failing {
            f[which].get_or_insert_with(Instant::now);
        } else {
            f[which] = None;
        }
    }

    /// How long the bus has been failing (`None`: its last attempt worked).
    pub fn bus_failing_for(&self) -> Option<std::time::Duration> {
        self.failing_since.lock().expect("poisoned")[0].map(|t| t.elapsed())
    }

    /// How long the MES has been unreachable (`None`: its last answer was final).
    pub fn mes_failing_for(&self) -> Option<std::time::Duration> {
        self.failing_since.lock().expect("poisoned")[1].map(|t| t.elapsed())
    }

    /// Count an outbox write the disk refused.
    pub fn outbox_storage_error(&self) {
        self.outbox_storage_errors.inc();
    }

    /// Count a publish.
    pub fn bus_published(&self, topic: &str) {
        self.bus_published
            .get_or_create(&TopicLabel { topic: topic.into() })
            .inc();
        self.mark(0, false);
    }
    /// Count a publish failure.
    pub fn bus_publish_error(&self, topic: &str) {
        self.bus_publish_errors
            .get_or_create(&TopicLabel { topic: topic.into() })
            .inc();
        self.mark(0, true);
    }
    /// Count an outbox refusal.
    pub fn outbox_full(&self) {
        self.outbox_full.inc();
    }
    /// Count an MES delivery outcome.
    pub fn mes(&self, outcome: &str) {
        self.mark(1, outcome == "retry");
        self.mes_deliveries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }
    /// Count a command outcome.
    pub fn command(&self, outcome: &str) {
        self.commands
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_accept_header() {
        assert_eq!(Format::from_accept(None), Format::Prometheus004);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Prometheus004
        );
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("text/plain;q=1, application/openmetrics-text;q=0.5")),
            Format::Prometheus004
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_has_no_eof() {
        let m = Metrics::new();
        m.control_cycles.inc_by(5);
        m.twin_residual
            .get_or_create(&AssetLabel {
                asset: "battery_pack_89".into(),
            })
            .set(1.5);
        let om = m.encode_as(Format::OpenMetrics);
        assert!(om.contains("# TYPE triad_control_cycles counter"), "{om}");
        assert!(om.trim_end().ends_with("# EOF"), "{om}");
        let p = m.encode_as(Format::Prometheus004);
        assert!(p.contains("# TYPE triad_control_cycles_total counter"), "{p}");
        assert!(p.contains("# HELP triad_control_cycles_total "), "{p}");
        assert!(p.contains("triad_control_cycles_total 5"), "{p}");
        assert!(p.contains("# TYPE triad_twin_residual_celsius gauge"), "{p}");
        assert!(
            p.contains("triad_twin_residual_celsius{asset=\"battery_pack_89\"} 1.5"),
            "{p}"
        );
        assert!(!p.contains("# EOF") && !p.contains("# UNIT"), "{p}");
    }

    #[test]
    fn failing_paths_are_timed_until_they_work() {
        let m = Metrics::new();
        assert!(m.mes_failing_for().is_none());
        m.mes("retry");
        assert!(m.mes_failing_for().is_some());
        m.mes("accepted");
        assert!(m.mes_failing_for().is_none());
        m.bus_publish_error("t");
        assert!(m.bus_failing_for().is_some());
        m.bus_published("t");
        assert!(m.bus_failing_for().is_none());
    }
}
