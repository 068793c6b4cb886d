//! Prometheus metrics, named `triad_<name>_<unit>[_total]` after vector's
//! instrumentation spec. Served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label: topic name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic.
    pub topic: String,
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
    pub inspection_frames: Counter,
    /// Defective frames.
    pub inspection_defects: Counter,
    /// Frames lost before inspection.
    pub inspection_frames_dropped: Counter,
    /// Inspection errors.
    pub inspection_errors: Counter,
    /// Frame-to-result latency.
    pub inspection_latency: Histogram,
    /// Twin residual, °C.
    pub twin_residual: FGauge,
    /// Twin health.
    pub twin_health: FGauge,
    /// Alerts raised.
    pub twin_alerts: Counter,
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
            inspection_frames: reg!("inspection_frames", "Frames inspected", Counter::default()),
            inspection_defects: reg!("inspection_defects", "Frames with a defect", Counter::default()),
            inspection_frames_dropped: reg!(
                "inspection_frames_dropped",
                "Frames lost before inspection (queue full)",
                Counter::default()
            ),
            inspection_errors: reg!(
                "inspection_errors",
                "Frames that could not be inspected",
                Counter::default()
            ),
            inspection_latency: reg!(
                "inspection_latency_seconds",
                "Capture to result",
                Histogram::new(exponential_buckets(0.0002, 2.0, 14))
            ),
            twin_residual: reg!(
                "twin_residual_celsius",
                "Measured minus predicted weld temperature",
                FGauge::default()
            ),
            twin_health: reg!("twin_health_ratio", "Twin health score", FGauge::default()),
            twin_alerts: reg!("twin_alerts", "Alerts raised", Counter::default()),
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
            registry: r,
        }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }

    /// Count a publish.
    pub fn bus_published(&self, topic: &str) {
        self.bus_published
            .get_or_create(&TopicLabel { topic: topic.into() })
            .inc();
    }
    /// Count a publish failure.
    pub fn bus_publish_error(&self, topic: &str) {
        self.bus_publish_errors
            .get_or_create(&TopicLabel { topic: topic.into() })
            .inc();
    }
    /// Count an outbox refusal.
    pub fn outbox_full(&self) {
        self.outbox_full.inc();
    }
    /// Count an MES delivery outcome.
    pub fn mes(&self, outcome: &str) {
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
