//! The HTTP side of the node: the dashboard page (a line overview and one
//! station's view), its JSON (`/api/line`, `/api/state?axis=ID`),
//! `/metrics` and `/healthz`. Read-only: nothing here changes the line. The node's write
//! API (model deploy and rollback, control commands; `crate::api`) is
//! served on the same listener and requires a signed token on every write.
//!
//! The server is handed its listener and a shutdown future (tests bind port 0).

mod state;

pub use state::*;

use crate::clock::monotonic_ns;
use crate::control::ControlStats;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("index.html");

/// Bounds past which `/healthz` and `triad_health_status` say "degraded".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthBounds {
    /// Outbox fill that degrades, % of its entry or byte limit.
    pub outbox_degraded_pct: u64,
    /// Control overruns in the last minute that degrade.
    pub overruns_per_min_max: u64,
    /// How long the MES may be unreachable.
    pub mes_unreachable: std::time::Duration,
    /// How long the bus may fail.
    pub bus_unreachable: std::time::Duration,
}

impl Default for HealthBounds {
    fn default() -> Self {
        Self {
            outbox_degraded_pct: 80,
            overruns_per_min_max: 60,
            mes_unreachable: std::time::Duration::from_secs(60),
            bus_unreachable: std::time::Duration::from_secs(60),
        }
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Every station's snapshot (the first is the default view).
    pub stations: LineViews,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Control counters.
    pub control: Arc<ControlStats>,
    /// Outbox entry limit (for the health check).
    pub outbox_max_entries: u64,
    /// The node's clock.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The outbox (its storage fault and fill, for the health checks).
    pub outbox: Option<Arc<crate::bus::outbox::Outbox>>,
    /// Outbox byte limit.
    pub outbox_max_bytes: u64,
    /// Bounds of the checks.
    pub bounds: HealthBounds,
}

/// One health check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// ok, degraded or failing.
    pub status: &'static str,
    /// Why.
    pub detail: String,
}

/// `/healthz` body.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Worst of the checks.
    pub status: &'static str,
    /// Each check.
    pub checks: std::collections::BTreeMap<&'static str, Check>,
}

/// What the health checks read of one station.
struct StationHealth {
    axis: String,
    mode: String,
    safe_state_reason: Option<String>,
    cell: String,
    frames: u64,
    dropped: u64,
    refused_work_orders: usize,
}

impl StationHealth {
    fn of(s: &Snapshot) -> Self {
        Self {
            axis: s.axis.id.clone(),
            mode: s.axis.mode.clone(),
            safe_state_reason: s.axis.safe_state_reason.clone(),
            cell: s.inspection.cell.clone(),
            frames: s.inspection.frames,
            dropped: s.inspection.dropped,
            refused_work_orders: s.work_orders.iter().filter(|w| w.refused).count(),
        }
    }
}

/// What the health checks read of the node (every station's view holds it;
/// the first's is read).
struct NodeHealth {
    outbox: OutboxView,
    state_warnings: Vec<String>,
    overruns_last_min: u64,
}

/// Evaluate the health checks (the `axis` and `inspection` checks over
/// every station: the worst one, named).
pub fn health(app: &AppState) -> Health {
    // Read in place: /healthz is polled twice a second, the snapshots hold
    // charts and logs.
    let snaps: Vec<StationHealth> = app.stations.0.iter().map(|v| v.read(StationHealth::of)).collect();
    let snap = app.stations.first().read(|s| NodeHealth {
        outbox: s.outbox.clone(),
        state_warnings: s.state_warnings.clone(),
        overruns_last_min: s.control.overruns_last_min,
    });
    let mut checks = std::collections::BTreeMap::new();
    checks.insert(
        "control",
        match app.control.cycling(monotonic_ns(), 100_000_000) {
            Ok(age) => Check {
                status: "ok",
                detail: format!("last cycle {} ms ago", age / 1_000_000),
            },
            Err(age) => Check {
                status: "failing",
                detail: format!("control loop not cycling (last cycle {} ms ago)", age / 1_000_000),
            },
        },
    );
    let safe: Vec<String> = snaps
        .iter()
        .filter_map(|s| Some(format!("{}: {}", s.axis, s.safe_state_reason.as_ref()?)))
        .collect();
    checks.insert(
        "axis",
        if safe.is_empty() {
            Check {
                status: "ok",
                detail: snaps
                    .iter()
                    .map(|s| format!("{} {}", s.axis, s.mode))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        } else {
            Check {
                status: "degraded",
                detail: format!("safe state: {}", safe.join("; ")),
            }
        },
    );
    let b = &app.bounds;
    let pending = snap.outbox.pending_bus + snap.outbox.pending_mes;
    let bytes = app.outbox.as_ref().map(|o| o.stats().bytes).unwrap_or(0);
    let pct = b.outbox_degraded_pct.max(1);
    checks.insert(
        "outbox",
        if pending * 100 >= app.outbox_max_entries * pct
            || (app.outbox_max_bytes > 0 && bytes * 100 >= app.outbox_max_bytes * pct)
        {
            Check {
                status: "degraded",
                detail: format!(
                    "{pending} pending of {} allowed, {bytes} of {} bytes: over the {pct} % bound ([health] outbox_degraded_pct); deliveries are failing",
                    app.outbox_max_entries, app.outbox_max_bytes
                ),
            }
        } else {
            Check {
                status: "ok",
                detail: format!("{pending} pending"),
            }
        },
    );
    let fault = app.outbox.as_ref().and_then(|o| o.fault());
    let disk = app.outbox.as_ref().map(|o| o.disk()).filter(|d| d.is_full());
    checks.insert(
        "storage",
        match (&fault, snap.state_warnings.is_empty()) {
            (Some(f), _) => Check {
                status: "degraded",
                detail: format!(
                    "the outbox cannot store for {:.0} s{}: {}; producers hold their messages, deliveries wait",
                    f.for_s,
                    if f.disk_full {
                        " (disk full: free space in the state directory)"
                    } else {
                        ""
                    },
                    f.error
                ),
            },
            (None, _) if let Some(d) = &disk => Check {
                status: "degraded",
                detail: d.describe(),
            },
            (None, false) => Check {
                status: "degraded",
                detail: format!("state damaged or lost at start: {}", snap.state_warnings.join(" | ")),
            },
            (None, true) => Check {
                status: "ok",
                detail: "state files readable and writable".into(),
            },
        },
    );
    let overruns = snap.overruns_last_min;
    checks.insert(
        "overruns",
        if overruns > b.overruns_per_min_max {
            Check {
                status: "degraded",
                detail: format!(
                    "{overruns} control cycles missed their deadline in the last minute (bound {}, [health] overruns_per_min_max)",
                    b.overruns_per_min_max
                ),
            }
        } else {
            Check {
                status: "ok",
                detail: format!("{overruns} overruns in the last minute"),
            }
        },
    );
    let dropped: Vec<String> = snaps
        .iter()
        .filter(|s| s.dropped > 0)
        .map(|s| format!("{}: {}", s.cell, s.dropped))
        .collect();
    checks.insert(
        "inspection",
        if dropped.is_empty() {
            Check {
                status: "ok",
                detail: format!("{} frames inspected", snaps.iter().map(|s| s.frames).sum::<u64>()),
            }
        } else {
            Check {
                status: "degraded",
                detail: format!("frames lost before inspection ({})", dropped.join(", ")),
            }
        },
    );
    let refused: usize = snaps.iter().map(|s| s.refused_work_orders).sum();
    let mes_down = app.metrics.mes_failing_for().filter(|d| *d >= b.mes_unreachable);
    checks.insert(
        "mes",
        if let Some(d) = mes_down {
            Check {
                status: "degraded",
                detail: format!(
                    "MES unreachable for {} s (bound {} s, [health] mes_unreachable_s); {} work orders waiting",
                    d.as_secs(),
                    b.mes_unreachable.as_secs(),
                    snap.outbox.pending_mes
                ),
            }
        } else if refused > 0 {
            Check {
                status: "degraded",
                detail: format!("{refused} work orders refused by the MES (dead letters)"),
            }
        } else {
            Check {
                status: "ok",
                detail: format!("{} work orders waiting", snap.outbox.pending_mes),
            }
        },
    );
    let bus_down = app.metrics.bus_failing_for().filter(|d| *d >= b.bus_unreachable);
    checks.insert(
        "bus",
        match bus_down {
            Some(d) => Check {
                status: "degraded",
                detail: format!(
                    "bus failing for {} s (bound {} s, [health] bus_unreachable_s); {} messages wait in the outbox",
                    d.as_secs(),
                    b.bus_unreachable.as_secs(),
                    snap.outbox.pending_bus
                ),
            },
            None => Check {
                status: "ok",
                detail: format!("{} messages waiting", snap.outbox.pending_bus),
            },
        },
    );
    for (name, c) in &checks {
        let v = match c.status {
            "ok" => 0,
            "degraded" => 1,
            _ => 2,
        };
        app.metrics
            .health
            .get_or_create(&crate::metrics::CheckLabel {
                check: (*name).to_string(),
            })
            .set(v);
    }
    let status = if checks.values().any(|c| c.status == "failing") {
        "failing"
    } else if checks.values().any(|c| c.status == "degraded") {
        "degraded"
    } else {
        "ok"
    };
    Health { status, checks }
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// `/api/state?axis=ID`: one station's view (without `axis`: the first).
#[derive(Debug, serde::Deserialize)]
struct StationQuery {
    axis: Option<String>,
}

async fn api_state(
    State(app): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<StationQuery>,
) -> Result<Json<Snapshot>, (StatusCode, String)> {
    let Some(view) = app.stations.station(q.axis.as_deref()) else {
        let known: Vec<String> = app.stations.0.iter().map(|v| v.read(|s| s.axis.id.clone())).collect();
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no axis {:?} on this node; its axes are {known:?}",
                q.axis.unwrap_or_default()
            ),
        ));
    };
    let mut s = view.snapshot();
    s.node.now_ns = app.clock.now_ns();
    Ok(Json(s))
}

async fn api_line(State(app): State<AppState>) -> Json<LineView> {
    let mut v = LineView::of(&app.stations);
    v.node.now_ns = app.clock.now_ns();
    Json(v)
}

async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    // The health gauges are current as of this scrape.
    let _ = health(&app);
    let format = crate::metrics::Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [(header::CONTENT_TYPE, format.content_type())],
        app.metrics.encode_as(format),
    )
}

async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let h = health(&app);
    let code = if h.status == "failing" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(h))
}

/// The router.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/state", get(api_state))
        .route("/api/line", get(api_line))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(app), shutdown).await
}

/// Serve `router` (the dashboard merged with the node's write API, see
/// `crate::api`) until `shutdown` resolves; handlers can see the peer's
/// address (`ConnectInfo`) for the audit log.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
