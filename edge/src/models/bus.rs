//! The model service's bus front end: `models/<node>/request`.
//!
//! A fleet manager or an MES deploys a signed bundle to a node, or rolls a
//! target back, by publishing a [`ModelRequest`] (Avro
//! `schemas/avro/model_request.avsc`) on the node's request topic. The
//! request goes through the same path as `POST /api/models/{target}/deploy`
//! ([`ModelService::deploy`] and [`ModelService::rollback`]): the same
//! token, the same ordered checks, the same audit record, whose `origin` is
//! `bus models/<node>/request <request_id>` so the sender finds its answer
//! on `audit/<node>/event`.
//!
//! A request is acknowledged once the service has decided and the decision
//! is durable (audit log fsynced, deploy persisted), accepted or refused
//! alike; only when the service is not running (the node is stopping) is it
//! left unacknowledged, so that the broker delivers it again after the
//! restart. A malformed request is logged, shown on the dashboard and
//! acknowledged (it can never become valid).
//!
//! The bundle travels inside the message, so its size is bounded by the
//! broker's `maxMessageSize` (5 MB by default) as well as by
//! `models.max_bundle_mb`; larger bundles go over HTTP (`triad deploy`).

use super::checks::Refusal;
use super::manager::{BundlePayload, ModelService};
use crate::bus::publisher::Publisher;
use crate::clock::Clock;
use crate::dashboard::LineViews;
use std::sync::Arc;
use triad_schemas::{ModelAction, ModelRequest, Topic};

/// Subscription name of the node on its request topic.
pub const SUBSCRIPTION: &str = "triad-node-models";

/// What one request came to, for the log and the dashboard.
fn describe(req: &ModelRequest, outcome: &Result<super::DeployReport, Refusal>) -> String {
    let what = match req.action {
        ModelAction::Deploy => "deploy",
        ModelAction::Rollback => "rollback",
    };
    match outcome {
        Ok(r) => format!(
            "bus request {} ({what} on {} by {}): {} {} runs (was {})",
            req.request_id, req.target, req.issued_by, r.model.name, r.model.version, r.from_version
        ),
        Err(e) => format!(
            "bus request {} ({what} on {} by {}) refused ({}): {e}",
            req.request_id,
            req.target,
            req.issued_by,
            e.code()
        ),
    }
}

/// Decide one request. `Err` only when the service could not decide (do
/// not acknowledge).
pub async fn handle(service: &ModelService, topic: &Topic, req: &ModelRequest) -> Result<super::DeployReport, Refusal> {
    let origin = format!("bus {topic} {}", req.request_id);
    match req.action {
        ModelAction::Deploy => match &req.bundle {
            Some(b) if !b.is_empty() => {
                service
                    .deploy(&req.target, &req.token, BundlePayload::Archive(b.clone()), &origin)
                    .await
            }
            _ => {
                let r = Refusal::MissingFile {
                    file: "bundle (the request's `bundle` field is empty; a deploy carries the .tar or .tar.gz)".into(),
                };
                service.audit_refusal("deploy", &req.target, &origin, &req.token, &r);
                Err(r)
            }
        },
        ModelAction::Rollback => service.rollback(&req.target, &req.token, &origin).await,
    }
}

/// Serve `models/<node>/request` until the bus subscription ends (a
/// subscription the broker refuses at first is asked for again).
pub async fn serve_requests(
    publisher: Arc<Publisher>,
    topic: Topic,
    service: ModelService,
    views: LineViews,
    clock: Arc<dyn Clock>,
) {
    let mut sub = crate::bus::subscribe_until_it_works(
        publisher.bus().as_ref(),
        &topic,
        SUBSCRIPTION,
        "deploys and rollbacks over the bus are (HTTP works meanwhile)",
    )
    .await;
    while let Some(d) = sub.next().await {
        match triad_schemas::codec::decode::<ModelRequest>(&d.msg.payload) {
            Ok(req) => {
                let outcome = handle(&service, &topic, &req).await;
                let text = describe(&req, &outcome);
                match &outcome {
                    Ok(_) => tracing::info!(topic = %topic, "{text}"),
                    Err(e) => tracing::warn!(topic = %topic, code = e.code(), "{text}"),
                }
                views.of_target(&req.target).event(clock.now_ns(), "model", text);
                if matches!(outcome, Err(Refusal::Unavailable { .. })) {
                    // Not decided: the broker redelivers it after the restart.
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "malformed model request dropped");
                views
                    .first()
                    .event(clock.now_ns(), "model", format!("malformed model request refused: {e}"));
            }
        }
        d.ack();
    }
}
