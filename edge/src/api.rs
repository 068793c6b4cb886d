//! The node's write API, served next to the dashboard. Nothing here is
//! anonymous: every request that changes something carries a signed token
//! in `Authorization: Bearer <token>` and is checked like any deploy or
//! command; every decision, including requests without a token, goes to the
//! audit trail.
//!
//! | method and path | body | token | answer |
//! |---|---|---|---|
//! | `POST /api/models/{target}/deploy` | the bundle, `.tar.gz` or `.tar` | `use: deploy` | 200 [`DeployReport`], or a refusal |
//! | `POST /api/models/{target}/rollback` | — | `use: rollback` | 200 [`DeployReport`], or a refusal |
//! | `POST /api/axes/{axis}/commands` | JSON `{"action": "SetRate", "value": 10, "reason": "…", "command_id": "…"}` | `use: command` | 200 `{"outcome": "applied", …}`, or a refusal |
//! | `GET /api/models` | — | — | [`TargetStatus`] of every target |
//! | `GET /api/audit?limit=N` | — | — | the last N audit records (default 100) |
//!
//! Every body from outside is bounded before it is buffered, and nobody
//! without credentials makes the node read one:
//!
//! - A request without a token is refused (401) before its body is read.
//! - A deploy's token is checked (all but the replay check) before its body
//!   is read; a body larger than `models.max_bundle_mb` is refused from its
//!   `Content-Length` (413) before it is received, and a body without one
//!   (chunked) is read up to that bound and no further (413).
//! - A command's body is at most [`MAX_COMMAND_BODY`] bytes (413 from its
//!   `Content-Length`, or as soon as more arrives), its text fields have
//!   bounds of their own (400 naming the field), and malformed JSON is a 400
//!   that shows what to send.
//! - Rollbacks and the GET routes read no body.
//!
//! Refusals of callers that have not proven who they are cost the node no
//! fsync each: the audit trail counts them (see [`crate::trust::audit`]).
//!
//! A refusal is `{"outcome": "refused", "code": "<stable code>", "reason":
//! "<what was wrong and what to do>"}` with status 400 (malformed body), 401
//! (no token), 403 (token, signer or scope refused), 404 (no such target),
//! 409 (not newer), 413 (body too large), 422 (bundle or model refused) or
//! 503.

use crate::clock::Clock;
use crate::commands::{CommandError, CommandGate, Origin};
use crate::control::ControlEvent;
use crate::models::bundle::BundleError;
use crate::models::checks::Refusal;
use crate::models::manager::{BundlePayload, DeployReport, ModelService, TargetStatus};
use crate::trust::audit::AuditRecord;
use crate::trust::token::TokenUse;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use triad_schemas::{CommandAction, ControlCommand};

/// The largest body of `POST /api/axes/{axis}/commands`, bytes.
pub const MAX_COMMAND_BODY: usize = 4 * 1024;
/// Bounds of a command's `command_id` and `issued_by`, bytes.
pub const MAX_COMMAND_ID: usize = 128;
/// Bound of a command's `reason`, bytes.
pub const MAX_COMMAND_REASON: usize = 1024;

/// What the handlers use.
#[derive(Clone)]
pub struct ApiState {
    /// The model service.
    pub models: ModelService,
    /// Command gates, one per axis.
    pub gates: Vec<Arc<CommandGate>>,
    /// The node's clock.
    pub clock: Arc<dyn Clock>,
    /// Node id (for command envelopes).
    pub node: String,
    /// The node's metrics (commands refused before they reach a gate).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The API's routes (serve with connect info, see `dashboard::serve_router`).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/models", get(models))
        .route("/api/audit", get(audit))
        .route("/api/models/{target}/deploy", post(deploy))
        .route("/api/models/{target}/rollback", post(rollback))
        .route("/api/axes/{axis}/commands", post(command))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn refused(status: StatusCode, code: &str, reason: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"outcome": "refused", "code": code, "reason": reason})),
    )
        .into_response()
}

/// The HTTP status of a refusal.
pub fn status_of(r: &Refusal) -> StatusCode {
    match r {
        Refusal::Token(_) | Refusal::WrongTarget { .. } | Refusal::Replay(_) => StatusCode::FORBIDDEN,
        Refusal::Unsigned
        | Refusal::UnknownSigner { .. }
        | Refusal::SignerRevoked { .. }
        | Refusal::SignerNotAllowed { .. }
        | Refusal::BadSignature { .. } => StatusCode::FORBIDDEN,
        Refusal::UnknownTarget { .. } => StatusCode::NOT_FOUND,
        Refusal::Downgrade { .. } | Refusal::NothingToRollBack { .. } => StatusCode::CONFLICT,
        Refusal::Bundle(BundleError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn refusal(r: &Refusal) -> Response {
    refused(status_of(r), r.code(), &r.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn no_token(s: &ApiState, action: &str, target: &str, origin: &str, what: &str) -> Response {
    let reason = format!(
        "{what} needs a signed token: send `Authorization: Bearer <token>` (made with `triad token issue --use {action}`); nothing anonymous changes this node"
    );
    s.models.audit().record(
        s.clock.now_ns(),
        AuditRecord {
            origin: origin.into(),
            ..AuditRecord::new(action, target, false, "token_missing", reason.clone())
        },
    );
    refused(StatusCode::UNAUTHORIZED, "token_missing", &reason)
}

async fn models(State(s): State<ApiState>) -> Json<Vec<TargetStatus>> {
    Json(s.models.status())
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(State(s): State<ApiState>, Query(q): Query<AuditQuery>) -> Json<Vec<AuditRecord>> {
    Json(
        s.models
            .audit()
            .recent(q.limit.unwrap_or(100).min(crate::trust::audit::RECENT)),
    )
}

async fn deploy(
    State(s): State<ApiState>,
    Path(target): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = format!("http {peer}");
    let Some(token) = bearer(&headers) else {
        return no_token(&s, "deploy", &target, &origin, "a deploy");
    };
    // The token is checked before the body is read (and again, with the
    // replay check, by the service).
    if let Err(r) = s.models.precheck(&target, &token, TokenUse::Deploy) {
        s.models.audit_refusal("deploy", &target, &origin, &token, &r);
        return refusal(&r);
    }
    let limit = s.models.limits().max_total_bytes;
    let bytes = match read_bounded(&headers, body, usize::try_from(limit).unwrap_or(usize::MAX)).await {
        Ok(b) => b,
        Err(size) => {
            let r = Refusal::Bundle(BundleError::TooLarge {
                limit,
                detail: format!("the request body is {size}"),
            });
            // The caller's token verified (all but the replay check): a
            // durable record, like every decision on an authenticated request.
            let audit = s.models.audit().clone();
            let rec = AuditRecord {
                origin: origin.clone(),
                ..AuditRecord::new("deploy", &target, false, r.code(), r.to_string())
            };
            let stamp = s.clock.now_ns();
            let _ = tokio::task::spawn_blocking(move || audit.record(stamp, rec)).await;
            return refusal(&r);
        }
    };
    match s
        .models
        .deploy(&target, &token, BundlePayload::Archive(bytes.to_vec()), &origin)
        .await
    {
        Ok(rep) => ok(rep),
        Err(r) => refusal(&r),
    }
}

/// Read `body` if it is at most `limit` bytes: refused from its
/// `Content-Length` before any of it is read, or as soon as more than
/// `limit` bytes have arrived (a chunked body). `Err` says how large it is
/// (or "larger").
async fn read_bounded(headers: &HeaderMap, body: Body, limit: usize) -> Result<axum::body::Bytes, String> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        return Err(format!("{n} bytes"));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| format!("more than {limit} bytes"))
}

/// Parse and bound a command's body; the error says what was wrong and
/// what to send.
fn parse_command(body: &[u8]) -> Result<CommandBody, String> {
    const EXAMPLE: &str = r#"{"action": "SetRate", "value": 10, "reason": "…", "command_id": "…"}"#;
    let b: CommandBody = serde_json::from_slice(body).map_err(|e| {
        let mut e = e.to_string();
        crate::trust::audit::truncate(&mut e, 200);
        format!("body is not a command ({e}); send JSON like {EXAMPLE}")
    })?;
    let fields = [
        (
            "command_id",
            b.command_id.as_deref().map_or(0, str::len),
            MAX_COMMAND_ID,
        ),
        ("issued_by", b.issued_by.as_deref().map_or(0, str::len), MAX_COMMAND_ID),
        ("reason", b.reason.len(), MAX_COMMAND_REASON),
    ];
    for (name, len, max) in fields {
        if len > max {
            return Err(format!(
                "the command's `{name}` is {len} bytes; at most {max} are allowed: send a shorter one"
            ));
        }
    }
    Ok(b)
}

/// Audit a command refused before it reached its gate (the trail counts
/// these, see [`crate::trust::audit::is_unauthenticated`]; no fsync here).
fn audit_command_refusal(s: &ApiState, axis: &str, origin: &str, code: &str, reason: &str) {
    s.metrics.command("refused");
    s.models.audit().record(
        s.clock.now_ns(),
        AuditRecord {
            origin: origin.into(),
            ..AuditRecord::new("command", axis, false, code, reason)
        },
    );
}

fn ok(rep: DeployReport) -> Response {
    (StatusCode::OK, Json(rep)).into_response()
}

async fn rollback(
    State(s): State<ApiState>,
    Path(target): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let origin = format!("http {peer}");
    let Some(token) = bearer(&headers) else {
        return no_token(&s, "rollback", &target, &origin, "a rollback");
    };
    match s.models.rollback(&target, &token, &origin).await {
        Ok(rep) => ok(rep),
        Err(r) => refusal(&r),
    }
}

/// Body of `POST /api/axes/{axis}/commands`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    action: CommandAction,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    command_id: Option<String>,
    #[serde(default)]
    issued_by: Option<String>,
}

async fn command(
    State(s): State<ApiState>,
    Path(axis): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = format!("http {peer}");
    // Credentials first: without a token the body is never read.
    let Some(token) = bearer(&headers) else {
        let reason = "a command needs a signed command token: send `Authorization: Bearer <token>` (made with `triad token issue --use command`); nothing anonymous changes this node";
        audit_command_refusal(&s, &axis, &origin, "command_unsigned", reason);
        return refused(StatusCode::UNAUTHORIZED, "command_unsigned", reason);
    };
    let Some(gate) = s.gates.iter().find(|g| g.axis() == axis).cloned() else {
        let mut shown = axis.clone();
        crate::trust::audit::truncate(&mut shown, 64);
        let reason = format!("this node controls no axis {shown:?}");
        audit_command_refusal(&s, &axis, &origin, "command_unknown_axis", &reason);
        return refused(StatusCode::NOT_FOUND, "command_unknown_axis", &reason);
    };
    let body = match read_bounded(&headers, body, MAX_COMMAND_BODY).await {
        Ok(b) => b,
        Err(size) => {
            let reason = format!(
                "a command's body is at most {MAX_COMMAND_BODY} bytes and this one is {size}; send only {{\"action\": …, \"value\": …, \"reason\": …}}"
            );
            audit_command_refusal(&s, &axis, &origin, "command_too_large", &reason);
            return refused(StatusCode::PAYLOAD_TOO_LARGE, "command_too_large", &reason);
        }
    };
    let b = match parse_command(&body) {
        Ok(b) => b,
        Err(reason) => {
            audit_command_refusal(&s, &axis, &origin, "command_malformed", &reason);
            return refused(StatusCode::BAD_REQUEST, "command_malformed", &reason);
        }
    };
    let now = s.clock.now_ns();
    let cmd = ControlCommand {
        envelope: crate::clock::envelope(&*s.clock, &s.node, now),
        command_id: b.command_id.unwrap_or_else(|| format!("HTTP-{now}")),
        axis,
        action: b.action,
        value: b.value,
        reason: b.reason,
        issued_by: b.issued_by.unwrap_or(origin),
        token: Some(token),
    };
    match gate.submit(&cmd, Origin::External).await {
        Ok((
            stamp,
            ControlEvent::Applied {
                from_ppm, to_ppm, mode, ..
            },
        )) => Json(serde_json::json!({
            "outcome": "applied", "command_id": cmd.command_id, "applied_ns": stamp,
            "from_ppm": from_ppm, "to_ppm": to_ppm, "mode": format!("{mode:?}"),
        }))
        .into_response(),
        Ok((stamp, _)) => {
            Json(serde_json::json!({"outcome": "applied", "command_id": cmd.command_id, "applied_ns": stamp}))
                .into_response()
        }
        Err(e) => {
            let status = match &e {
                CommandError::Unauthorised {
                    code: "command_unsigned",
                    ..
                } => StatusCode::UNAUTHORIZED,
                CommandError::Unauthorised { .. } => StatusCode::FORBIDDEN,
                CommandError::UnknownAxis { .. } => StatusCode::NOT_FOUND,
                CommandError::OutOfRange { .. } | CommandError::Rejected { .. } => StatusCode::CONFLICT,
                CommandError::QueueFull { .. } | CommandError::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            };
            refused(status, e.code(), &e.to_string())
        }
    }
}
