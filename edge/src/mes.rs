//! The MES connector: work orders leave the outbox's MES lane as JSON POSTs.
//!
//! Each work order is POSTed to `[mes] url` with `Content-Type:
//! application/json` and an `Idempotency-Key` header (the work-order id), so
//! an MES that saw a retry can recognise it. A 2xx answer deletes the entry;
//! a network error, a timeout or a 5xx/408/429 answer is retried with
//! exponential backoff for as long as it takes; any other 4xx means the MES
//! refuses the content, so the entry moves to the dead letters with the
//! answer, and an error is logged for the integrator.

use crate::bus::outbox::{Lane, Outbox, OutboxEntry};
use crate::clock::Clock;
use crate::config::MesConfig;
use crate::dashboard::LiveState;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// Outcome of one POST.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Accepted,
    /// Try again later.
    Retry(String),
    /// The MES refuses this content.
    Refused(String),
}

/// Classify an HTTP status.
pub fn classify(status: u16, body: &str) -> Attempt {
    match status {
        200..=299 => Attempt::Accepted,
        408 | 425 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status}: {}", truncate(body))),
        _ => Attempt::Refused(format!("HTTP {status}: {}", truncate(body))),
    }
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s.to_string()
    }
}

async fn post(client: &reqwest::Client, url: &str, e: &OutboxEntry, id: &str) -> Attempt {
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", id)
        .body(e.payload.clone())
        .send()
        .await;
    match res {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            classify(status, &body)
        }
        Err(err) => Attempt::Retry(format!("{err}")),
    }
}

/// Work-order id from the JSON payload (for the header and the dashboard).
fn work_order_id(e: &OutboxEntry) -> String {
    serde_json::from_slice::<serde_json::Value>(&e.payload)
        .ok()
        .and_then(|v| v.get("work_order_id").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("{}#{}", e.topic, e.sequence))
}

/// Deliver the MES lane until `shutdown`.
pub async fn run_mes_connector(
    outbox: Arc<Outbox>,
    cfg: MesConfig,
    metrics: Arc<Metrics>,
    live: Arc<LiveState>,
    clock: Arc<dyn Clock>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(url) = cfg.url.clone() else {
        tracing::warn!("no [mes] url configured: work orders are published on the MES topic only");
        return;
    };
    let client = match reqwest::Client::builder().timeout(cfg.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the MES HTTP client; work orders stay in the outbox");
            return;
        }
    };
    let mut backoff = cfg.retry_initial;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = outbox.blocking(|o| o.pending(Lane::Mes, 16)).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "outbox read failed");
            Vec::new()
        });
        if batch.is_empty() {
            tokio::select! {
                _ = outbox.appended() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut retry = false;
        for e in &batch {
            let id = work_order_id(e);
            live.mes_attempt(&id);
            match post(&client, &url, e, &id).await {
                Attempt::Accepted => {
                    metrics.mes("accepted");
                    live.mes_delivered(&id, clock.now_ns());
                    tracing::info!(work_order = %id, url = %url, "work order accepted by the MES");
                    let id = e.id;
                    if let Err(err) = outbox.blocking(move |o| o.ack(Lane::Mes, &[id])).await {
                        tracing::error!(error = %err, "outbox ack failed; the MES may receive this work order twice");
                    }
                    backoff = cfg.retry_initial;
                }
                Attempt::Refused(why) => {
                    metrics.mes("refused");
                    live.mes_failed(&id, &why, true);
                    tracing::error!(work_order = %id, url = %url, error = %why, "MES refused the work order; kept in the outbox's dead letters for replay");
                    let (dead, reason) = (e.clone(), why.clone());
                    let _ = outbox.blocking(move |o| o.dead_letter(&dead, &reason)).await;
                }
                Attempt::Retry(why) => {
                    metrics.mes("retry");
                    live.mes_failed(&id, &why, false);
                    tracing::warn!(work_order = %id, url = %url, error = %why, retry_ms = backoff.as_millis() as u64, "MES unreachable; retrying from the outbox");
                    retry = true;
                    break;
                }
            }
        }
        if retry {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
            backoff = (backoff * 2).min(cfg.retry_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(201, ""), Attempt::Accepted);
        assert!(matches!(classify(503, "busy"), Attempt::Retry(s) if s.contains("503")));
        assert!(matches!(classify(429, ""), Attempt::Retry(_)));
        assert!(matches!(classify(422, "bad priority"), Attempt::Refused(s) if s.contains("bad priority")));
    }
}
