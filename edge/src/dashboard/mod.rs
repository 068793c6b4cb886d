//! The HTTP side of the node: the dashboard page, its JSON, `/metrics` and
//! `/healthz`. Read-only: nothing here changes the line. The node's write
//! API (model deploy and rollback, control commands; `models::http`) is
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
use std::sync::atomic::Ordering::Relaxed;

const INDEX_HTML: &str = include_str!("index.html");

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The snapshot.
    pub live: Arc<LiveState>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Control counters.
    pub control: Arc<ControlStats>,
    /// Outbox entry limit (for the health check).
    pub outbox_max_entries: u64,
    /// The node's clock.
    pub clock: Arc<dyn crate::clock::Clock>,
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

/// Evaluate the health checks.
pub fn health(app: &AppState) -> Health {
    let snap = app.live.snapshot();
    let mut checks = std::collections::BTreeMap::new();
    let last = app.control.last_cycle_mono_ns.load(Relaxed);
    let age_ms = (monotonic_ns() - last) / 1_000_000;
    checks.insert(
        "control",
        if app.control.running.load(Relaxed) && age_ms < 100 {
            Check {
                status: "ok",
                detail: format!("last cycle {age_ms} ms ago"),
            }
        } else {
            Check {
                status: "failing",
                detail: format!("control loop not cycling (last cycle {age_ms} ms ago)"),
            }
        },
    );
    checks.insert(
        "axis",
        match &snap.axis.safe_state_reason {
            Some(r) => Check {
                status: "degraded",
                detail: format!("safe state: {r}"),
            },
            None => Check {
                status: "ok",
                detail: snap.axis.mode.clone(),
            },
        },
    );
    let pending = snap.outbox.pending_bus + snap.outbox.pending_mes;
    checks.insert(
        "outbox",
        if pending * 10 >= app.outbox_max_entries * 8 {
            Check {
                status: "degraded",
                detail: format!("{pending} pending of {} allowed", app.outbox_max_entries),
            }
        } else {
            Check {
                status: "ok",
                detail: format!("{pending} pending"),
            }
        },
    );
    checks.insert(
        "inspection",
        if snap.inspection.dropped > 0 {
            Check {
                status: "degraded",
                detail: format!("{} frames lost before inspection", snap.inspection.dropped),
            }
        } else {
            Check {
                status: "ok",
                detail: format!("{} frames inspected", snap.inspection.frames),
            }
        },
    );
    let refused = snap.work_orders.iter().filter(|w| w.refused).count();
    checks.insert(
        "mes",
        if refused > 0 {
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

async fn api_state(State(app): State<AppState>) -> Json<Snapshot> {
    let mut s = app.live.snapshot();
    s.node.now_ns = app.clock.now_ns();
    Json(s)
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
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
/// `models::http`) until `shutdown` resolves; handlers can see the peer's
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
