//! The MES connector: work orders leave the outbox's MES lane as JSON POSTs.
//!
//! Each work order is POSTed to `[mes] url` with `Content-Type:
//! application/json` and an `Idempotency-Key` header (the work-order id), so
//! an MES that sees a retry can recognise it. The entry leaves the outbox
//! only when the MES accepted *that* POST; every other answer keeps it, and
//! each is logged as what it is.
//!
//! What each answer means ([`classify`], a pure function of the status, the
//! headers, at most [`BODY_SNIPPET_MAX`] bytes of the body and `now`):
//!
//! | answer | meaning (RFC 9110) | the connector |
//! |---|---|---|
//! | 2xx | accepted | deletes the entry; the status alone decides, the body is not read |
//! | 307, 308 | POST the same request to `Location` | re-POSTs the same body and `Idempotency-Key` there, at most [`MAX_REDIRECTS`] hops, `http`/`https` only, never from `https` down to `http`; a 308 logs a warning to set `[mes] url` to the new address |
//! | 301, 302, 303, other 3xx | "moved" / "see other": HTTP clients follow them with a body-less GET, which tells nothing about the POST | not delivered: kept in the outbox, retried with backoff, logged as an error naming the `Location` to put in `[mes] url` |
//! | 429, 503 | busy | retried after `Retry-After` (delta-seconds or an IMF-fixdate), at most [`RETRY_AFTER_MAX`]; without one, with backoff |
//! | 408, 409, 425, other 5xx | try again (409: the MES is still processing this `Idempotency-Key`) | retried with exponential backoff |
//! | other 4xx | the MES refuses this request | moved to the outbox's dead letters with the answer and what to fix |
//! | 1xx as a final answer, status ≥ 600 | not HTTP the node understands | not delivered: kept, retried with backoff, logged as an error |
//! | no answer, timeout, connection cut before the status line and headers are complete | nothing was confirmed | retried with backoff |
//!
//! Redirects are never followed by the HTTP client itself
//! (`redirect::Policy::none()`): a client that follows a 301/302/303 turns
//! the POST into a GET, and the 200 of that GET once made the node delete a
//! work order the MES never took. A 303 after a POST may mean "done, see
//! there", but the node cannot confirm that; the order stays, and its
//! `Idempotency-Key` lets the MES drop a repeat. Why a 301/302/303 is not
//! re-POSTed: RFC 9110 (15.4.2, 15.4.3) allows a user agent to change the
//! method to GET for them "for historical reasons" only; re-sending the POST
//! to an address the MES did not mean for POSTs (a login page behind a
//! proxy, say) would hand the work order to someone else.
//!
//! No answer body is ever read beyond [`BODY_SNIPPET_MAX`] bytes: a 2xx is
//! decided on its status and its body is not read at all, any other answer
//! keeps its first bytes for the log and the dead letter, and the rest is
//! left unread (the connection is closed).

use crate::bus::outbox::{Lane, Outbox, OutboxEntry};
use crate::clock::Clock;
use crate::dashboard::LineViews;
use crate::metrics::Metrics;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::sync::Arc;
use std::time::Duration;

/// MES connector.
#[derive(Clone, Debug, PartialEq)]
pub struct MesConfig {
    /// Where work orders are POSTed; `None` = topic only.
    pub url: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

/// The most of an answer's body the connector reads (for the log and the
/// dead letter); the rest is never read.
pub const BODY_SNIPPET_MAX: usize = 4096;

/// The most 307/308 hops one delivery follows.
pub const MAX_REDIRECTS: usize = 5;

/// The longest `Retry-After` honoured; a longer one is cut to this (and
/// logged), so a wrong header cannot park the work orders for days.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

/// How much of a body or header goes into a log line or a dead letter.
const MESSAGE_CHARS: usize = 200;

/// What one answer of the MES means for the work order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 2xx: the MES accepted this POST; the entry may be deleted.
    Accepted {
        /// The status.
        status: u16,
    },
    /// 307/308: POST the same body and `Idempotency-Key` again to `to`.
    Repost {
        /// Where (the `Location`, resolved against the URL that answered).
        to: Url,
        /// 308: the MES says `[mes] url` should change.
        permanent: bool,
        /// The status.
        status: u16,
    },
    /// Not delivered, for a reason that may pass: try again after `after`
    /// (the MES's `Retry-After`, bounded) or, when `None`, the backoff.
    Retry {
        /// What happened, for the log and the dashboard.
        why: String,
        /// The wait the MES asked for.
        after: Option<Duration>,
    },
    /// Not delivered, and retrying will not change that until someone acts
    /// (a 301/302/303, a 307/308 that cannot be followed, an answer that is
    /// not HTTP): kept in the outbox, retried with backoff, logged as an
    /// error that says what to change.
    NotAccepted {
        /// What happened and what to change.
        why: String,
    },
    /// The MES refuses this request for good: dead letter, with what to fix.
    Refused {
        /// What the MES said and what to fix.
        why: String,
    },
}

impl Decision {
    /// The `mes_deliveries_total{outcome}` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Accepted { .. } => "accepted",
            Decision::Repost { .. } => "redirected",
            Decision::Retry { .. } => "retry",
            Decision::NotAccepted { .. } => "not_accepted",
            Decision::Refused { .. } => "refused",
        }
    }
}

/// Decide what the answer `status` (with `headers` and the first bytes of
/// its `body`) to a POST of `url` means, at `now_ns` (ns since the Unix
/// epoch, for a `Retry-After` date). Pure; see the module table.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], url: &Url, now_ns: i64) -> Decision {
    let name = status_name(status);
    let said = snippet(body);
    let answer = if said.is_empty() {
        format!("HTTP {name}")
    } else {
        format!("HTTP {name}: {said}")
    };
    match status {
        200..=299 => Decision::Accepted { status },
        307 | 308 => {
            let permanent = status == 308;
            match redirect_target(headers, url) {
                Ok(to) => Decision::Repost { to, permanent, status },
                Err(problem) => Decision::NotAccepted {
                    why: format!(
                        "{answer}; the MES asks to POST the work order elsewhere, but {problem}; set [mes] url to the address that accepts work orders"
                    ),
                },
            }
        }
        300..=399 => {
            let location = match headers.get(LOCATION).map(|v| v.to_str()) {
                Some(Ok(l)) => format!("Location {}", clip(l)),
                Some(Err(_)) => "a Location that is not text".to_string(),
                None => "no Location".to_string(),
            };
            Decision::NotAccepted {
                why: format!(
                    "{answer} ({location}) to the POST: not delivered, the MES did not accept it; a POST is not re-sent across a {status} (HTTP clients turn it into a GET, which delivers nothing); set [mes] url to the address that accepts work-order POSTs (the Location if it is that); the work order stays in the outbox"
                ),
            }
        }
        429 | 503 => {
            let (after, note) = match headers.get(RETRY_AFTER).map(|v| v.to_str()) {
                None => (None, String::new()),
                Some(Ok(v)) => match retry_after(v, now_ns) {
                    Some(d) if d > RETRY_AFTER_MAX => (
                        Some(RETRY_AFTER_MAX),
                        format!(
                            "; Retry-After {} cut to {} s",
                            clip(v.trim()),
                            RETRY_AFTER_MAX.as_secs()
                        ),
                    ),
                    Some(d) => (Some(d), format!("; Retry-After {}", clip(v.trim()))),
                    None => (
                        None,
                        format!(
                            "; Retry-After {} is neither delta-seconds nor an IMF-fixdate: backing off instead",
                            clip(v.trim())
                        ),
                    ),
                },
                Some(Err(_)) => (None, "; Retry-After is not text: backing off instead".to_string()),
            };
            let what = if status == 429 {
                "the MES limits the rate of requests"
            } else {
                "the MES is unavailable"
            };
            Decision::Retry {
                why: format!("{answer} ({what}{note})"),
                after,
            }
        }
        408 | 409 | 425 | 500..=599 => Decision::Retry {
            why: answer,
            after: None,
        },
        400..=499 => Decision::Refused {
            why: format!("{answer}; {}", what_to_fix(status)),
        },
        _ => Decision::NotAccepted {
            why: format!(
                "{answer}: not a final HTTP answer the node understands, so not an acceptance; check what answers at [mes] url (a proxy?)"
            ),
        },
    }
}

/// What the integrator should do about a 4xx refusal.
fn what_to_fix(status: u16) -> &'static str {
    match status {
        400 | 422 => {
            "the MES refuses the work order's content: fix the field it names (or its mapping on the MES side), then replay the dead letter"
        }
        401 | 407 => {
            "the MES (or a proxy) asks for credentials, and the node sends none: let the node's address POST work orders without them"
        }
        403 => "the MES forbids the node to POST work orders: grant it access, then replay the dead letter",
        404 | 405 | 410 => {
            "no work-order endpoint takes POSTs at [mes] url: check the URL, then replay the dead letter"
        }
        413 => "the work order is larger than the MES accepts: raise its request body limit",
        415 => "the MES does not take application/json at [mes] url: check the URL or the MES's content types",
        _ => "the MES refuses this work order: see its answer, fix the cause, then replay the dead letter",
    }
}

/// The `Location` of a 307/308, resolved against `url`, if the connector may
/// follow it.
fn redirect_target(headers: &HeaderMap, url: &Url) -> Result<Url, String> {
    let Some(value) = headers.get(LOCATION) else {
        return Err("the answer has no Location".to_string());
    };
    let Ok(text) = value.to_str() else {
        return Err("its Location is not text".to_string());
    };
    let to = url
        .join(text.trim())
        .map_err(|e| format!("its Location {} is not a URL ({e})", clip(text)))?;
    match (url.scheme(), to.scheme()) {
        ("https", "http") => Err(format!(
            "its Location {} would send the work order unencrypted (https to http)",
            clip(text)
        )),
        (_, "http" | "https") => Ok(to),
        (_, other) => Err(format!("its Location {} is an {other} URL, not http(s)", clip(text))),
    }
}

/// `Retry-After` as a wait from `now_ns`: delta-seconds, or an HTTP-date
/// (RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a
/// recipient must still read; a date in the past is no wait). `None` for
/// anything else.
pub fn retry_after(value: &str, now_ns: i64) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is a very long wait (cut by the caller).
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let at_s = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    let now_s = now_ns.div_euclid(1_000_000_000);
    Some(Duration::from_secs(at_s.saturating_sub(now_s).max(0) as u64))
}

/// `503 Service Unavailable`, or the bare number for an unknown status.
fn status_name(status: u16) -> String {
    match StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// The first [`MESSAGE_CHARS`] characters of a body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clip(one_line.trim())
}

/// `s`, cut to [`MESSAGE_CHARS`] bytes (on a character boundary) with `…`.
fn clip(s: &str) -> String {
    if s.len() > MESSAGE_CHARS {
        format!("{}…", &s[..s.floor_char_boundary(MESSAGE_CHARS)])
    } else {
        s.to_string()
    }
}

/// An error and its causes on one line (reqwest's own message is only the
/// first of them).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// What a request that got no complete answer means.
fn transport_failure(err: &reqwest::Error, timeout: Duration) -> Decision {
    let what = if err.is_timeout() {
        format!(
            "no complete answer within [mes] timeout_ms ({} ms)",
            timeout.as_millis()
        )
    } else if err.is_connect() {
        "cannot connect to the MES".to_string()
    } else {
        "the connection ended before a complete answer (status line and headers)".to_string()
    };
    Decision::Retry {
        why: format!("{what}: {}", error_chain(err)),
        after: None,
    }
}

/// The status, headers and first bytes of an answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// POST the work order once to `url`. A 2xx comes back without its body;
/// any other answer with at most [`BODY_SNIPPET_MAX`] bytes of it.
async fn post_once(
    client: &reqwest::Client,
    url: &Url,
    e: &OutboxEntry,
    id: &str,
    timeout: Duration,
) -> Result<Answer, Decision> {
    let mut r = client
        .post(url.clone())
        .header("content-type", "application/json")
        .header("idempotency-key", id)
        .body(e.payload.clone())
        .send()
        .await
        .map_err(|err| transport_failure(&err, timeout))?;
    let status = r.status().as_u16();
    let headers = std::mem::take(r.headers_mut());
    let mut body = Vec::new();
    if !r.status().is_success() {
        while body.len() < BODY_SNIPPET_MAX {
            match r.chunk().await {
                Ok(Some(chunk)) => {
                    let n = chunk.len().min(BODY_SNIPPET_MAX - body.len());
                    body.extend_from_slice(&chunk[..n]);
                }
                Ok(None) => break,
                // The status and headers decide; a cut body only shortens the
                // snippet.
                Err(err) => {
                    tracing::debug!(error = %error_chain(&err), "the MES's answer body ended early");
                    break;
                }
            }
        }
    }
    // Dropping the response leaves the rest of a long body unread.
    Ok(Answer { status, headers, body })
}

/// POST the work order to `url`, following 307/308 (at most
/// [`MAX_REDIRECTS`] hops); the decision and the URL that gave it.
async fn deliver(
    client: &reqwest::Client,
    url: &Url,
    e: &OutboxEntry,
    id: &str,
    cfg: &MesConfig,
    clock: &dyn Clock,
    metrics: &Metrics,
) -> (Decision, Url) {
    let mut target = url.clone();
    let mut hops = 0;
    loop {
        let answer = match post_once(client, &target, e, id, cfg.timeout).await {
            Ok(a) => a,
            Err(d) => return (d, target),
        };
        let decision = classify(answer.status, &answer.headers, &answer.body, &target, clock.now_ns());
        let Decision::Repost { to, permanent, status } = decision else {
            return (decision, target);
        };
        if hops == MAX_REDIRECTS {
            let why = format!(
                "HTTP {status}: more than {MAX_REDIRECTS} redirects in a row (last from {target} to {to}); set [mes] url to the address that accepts work orders"
            );
            return (Decision::NotAccepted { why }, target);
        }
        hops += 1;
        metrics.mes("redirected");
        if permanent {
            tracing::warn!(work_order = %id, from = %target, to = %to, status, "the MES moved its work-order endpoint for good (308): POSTing the work order there; set [mes] url = \"{to}\"");
        } else {
            tracing::info!(work_order = %id, from = %target, to = %to, status, "the MES redirects the POST for now (307): POSTing the same work order there");
        }
        target = to;
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
    live: LineViews,
    clock: Arc<dyn Clock>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(url) = cfg.url.clone() else {
        tracing::warn!("no [mes] url configured: work orders are published on the MES topic only");
        return;
    };
    let url = match Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(url = %url, error = %e, "[mes] url is not a URL; work orders stay in the outbox");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
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
        let mut wait = None;
        for e in &batch {
            let id = work_order_id(e);
            live.mes_attempt(&id);
            let (decision, at) = deliver(&client, &url, e, &id, &cfg, clock.as_ref(), &metrics).await;
            metrics.mes(decision.outcome());
            match decision {
                Decision::Accepted { status } => {
                    live.mes_delivered(&id, clock.now_ns());
                    tracing::info!(work_order = %id, url = %at, status, "work order accepted by the MES");
                    let entry = e.id;
                    if let Err(err) = outbox.blocking(move |o| o.ack(Lane::Mes, &[entry])).await {
                        tracing::error!(error = %err, "outbox ack failed; the MES may receive this work order twice");
                    }
                    backoff = cfg.retry_initial;
                }
                Decision::Refused { why } => {
                    live.mes_failed(&id, &why, true);
                    tracing::error!(work_order = %id, url = %at, error = %why, "MES refused the work order; kept in the outbox's dead letters for replay");
                    let (dead, reason) = (e.clone(), why.clone());
                    if let Err(err) = outbox.blocking(move |o| o.dead_letter(&dead, &reason)).await {
                        tracing::error!(work_order = %id, error = %err, "cannot move the refused work order to the dead letters; it stays pending and is tried again");
                        wait = Some(backoff);
                        break;
                    }
                }
                Decision::Retry {
                    why,
                    after: Some(after),
                } => {
                    live.mes_failed(&id, &why, false);
                    tracing::warn!(work_order = %id, url = %at, error = %why, retry_ms = after.as_millis() as u64, "MES asks to wait; retrying from the outbox after Retry-After");
                    wait = Some(after.max(cfg.retry_initial));
                    break;
                }
                Decision::Retry { why, after: None } => {
                    live.mes_failed(&id, &why, false);
                    tracing::warn!(work_order = %id, url = %at, error = %why, retry_ms = backoff.as_millis() as u64, "work order not delivered; retrying from the outbox");
                    wait = Some(backoff);
                    backoff = (backoff * 2).min(cfg.retry_max);
                    break;
                }
                Decision::NotAccepted { why } => {
                    live.mes_failed(&id, &why, false);
                    tracing::error!(work_order = %id, url = %at, error = %why, retry_ms = backoff.as_millis() as u64, "work order not delivered: the MES's answer is not an acceptance; kept in the outbox and retried");
                    wait = Some(backoff);
                    backoff = (backoff * 2).min(cfg.retry_max);
                    break;
                }
                // `deliver` follows every Repost itself; should one come
                // back, it is not an acceptance either.
                Decision::Repost { to, status, .. } => {
                    let why = format!("HTTP {status} to {to} was not followed");
                    live.mes_failed(&id, &why, false);
                    tracing::error!(work_order = %id, url = %at, error = %why, "work order not delivered; kept in the outbox and retried");
                    wait = Some(backoff);
                    backoff = (backoff * 2).min(cfg.retry_max);
                    break;
                }
            }
        }
        if let Some(wait) = wait {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const NOW_NS: i64 = 784_111_777 * 1_000_000_000; // Sun, 06 Nov 1994 08:49:37 GMT

    fn url() -> Url {
        Url::parse("http://mes.example:8080/api/workorders").unwrap()
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn decide(status: u16, headers: &[(&str, &str)], body: &str) -> Decision {
        classify(status, &with(headers), body.as_bytes(), &url(), NOW_NS)
    }

    #[test]
    fn every_2xx_is_accepted_on_its_status_alone() {
        for s in 200..=299 {
            assert_eq!(decide(s, &[], ""), Decision::Accepted { status: s });
        }
        assert_eq!(
            decide(202, &[("location", "/elsewhere")], "{\"queued\":true}"),
            Decision::Accepted { status: 202 }
        );
    }

    #[test]
    fn a_307_or_308_is_posted_again_to_its_location() {
        assert_eq!(
            decide(307, &[("location", "/v2/workorders")], ""),
            Decision::Repost {
                to: Url::parse("http://mes.example:8080/v2/workorders").unwrap(),
                permanent: false,
                status: 307
            }
        );
        assert_eq!(
            decide(308, &[("location", "https://mes2.example/wo")], ""),
            Decision::Repost {
                to: Url::parse("https://mes2.example/wo").unwrap(),
                permanent: true,
                status: 308
            }
        );
    }

    #[test]
    fn a_307_that_cannot_be_followed_is_not_accepted() {
        for (headers, expect) in [
            (vec![], "no Location"),
            (vec![("location", "ftp://mes.example/wo")], "ftp URL"),
            (vec![("location", "http://[::1")], "not a URL"),
        ] {
            match decide(307, &headers, "") {
                Decision::NotAccepted { why } => {
                    assert!(why.contains(expect) && why.contains("[mes] url"), "{why}")
                }
                other => panic!("{headers:?}: {other:?}"),
            }
        }
        let https = Url::parse("https://mes.example/wo").unwrap();
        let d = classify(
            308,
            &with(&[("location", "http://mes.example/wo")]),
            b"",
            &https,
            NOW_NS,
        );
        assert!(
            matches!(d, Decision::NotAccepted { ref why } if why.contains("unencrypted")),
            "{d:?}"
        );
    }

    #[test]
    fn a_301_302_or_303_to_a_post_is_not_delivered() {
        for s in [301, 302, 303] {
            match decide(s, &[("location", "http://mes.example/new")], "moved") {
                Decision::NotAccepted { why } => {
                    assert!(why.contains(&s.to_string()), "{why}");
                    assert!(why.contains("Location http://mes.example/new"), "{why}");
                    assert!(why.contains("set [mes] url"), "{why}");
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        for s in [300, 304, 305, 306, 399] {
            assert!(matches!(decide(s, &[], ""), Decision::NotAccepted { .. }), "{s}");
        }
    }

    #[test]
    fn rate_limits_and_unavailability_honour_retry_after() {
        let d = decide(429, &[("retry-after", "2")], "slow down");
        assert!(
            matches!(d, Decision::Retry { after: Some(a), ref why } if a == Duration::from_secs(2) && why.contains("429") && why.contains("slow down")),
            "{d:?}"
        );
        let d = decide(503, &[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")], "");
        assert!(
            matches!(d, Decision::Retry { after: Some(a), .. } if a == Duration::from_secs(30)),
            "{d:?}"
        );
        // A date in the past: no wait (the connector still waits retry_initial).
        let d = decide(503, &[("retry-after", "Sat, 05 Nov 1994 08:49:37 GMT")], "");
        assert!(
            matches!(
                d,
                Decision::Retry {
                    after: Some(Duration::ZERO),
                    ..
                }
            ),
            "{d:?}"
        );
        // Too long: cut.
        let d = decide(503, &[("retry-after", "99999999999999999999999")], "");
        assert!(
            matches!(d, Decision::Retry { after: Some(a), ref why } if a == RETRY_AFTER_MAX && why.contains("cut")),
            "{d:?}"
        );
        // Unreadable or absent: backoff.
        for h in [vec![("retry-after", "soon")], vec![("retry-after", "-3")], vec![]] {
            assert!(
                matches!(decide(429, &h, ""), Decision::Retry { after: None, .. }),
                "{h:?}"
            );
        }
        // Only 429 and 503 are asked to wait.
        assert!(matches!(
            decide(500, &[("retry-after", "5")], ""),
            Decision::Retry { after: None, .. }
        ));
    }

    #[test]
    fn server_errors_and_timeouts_are_retried_with_backoff() {
        for s in [408, 409, 425, 500, 502, 504, 599] {
            assert!(
                matches!(decide(s, &[], "x"), Decision::Retry { after: None, .. }),
                "{s}"
            );
        }
    }

    #[test]
    fn other_4xx_are_refused_with_what_to_fix() {
        for (s, fix) in [
            (400, "content"),
            (422, "content"),
            (401, "credentials"),
            (403, "grant it access"),
            (404, "check the URL"),
            (405, "check the URL"),
            (413, "body limit"),
            (415, "application/json"),
            (418, "see its answer"),
        ] {
            match decide(s, &[], "bad priority") {
                Decision::Refused { why } => {
                    assert!(
                        why.contains(&s.to_string()) && why.contains("bad priority") && why.contains(fix),
                        "{why}"
                    )
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn oddities_are_not_acceptance() {
        for s in [0, 100, 101, 103, 199, 600, 999, u16::MAX] {
            assert!(matches!(decide(s, &[], ""), Decision::NotAccepted { .. }), "{s}");
        }
    }

    #[test]
    fn every_status_is_decided_without_panicking() {
        let odd = [
            ("location", "../../x?y#z"),
            ("retry-after", "Sun, 31 Feb 2026 25:61:61 GMT"),
        ];
        for s in 0..=1000 {
            let d = decide(s, &odd, "\u{0}\u{7f}é\n");
            assert_eq!(d == (Decision::Accepted { status: s }), (200..300).contains(&s));
        }
    }

    #[test]
    fn the_body_snippet_and_headers_in_messages_are_bounded() {
        let body = "é".repeat(10_000);
        let Decision::Refused { why } = decide(422, &[], &body) else {
            panic!()
        };
        assert!(why.len() < MESSAGE_CHARS + 400, "{}", why.len());
        let loc = format!("http://mes.example/{}", "a".repeat(5000));
        let Decision::NotAccepted { why } = decide(301, &[("location", &loc)], "") else {
            panic!()
        };
        assert!(why.len() < MESSAGE_CHARS + 600, "{}", why.len());
        let Decision::Refused { why } = decide(400, &[], "line one\r\nline two") else {
            panic!()
        };
        assert!(why.contains("line one  line two"), "{why}");
    }

    #[test]
    fn retry_after_reads_delta_seconds_and_every_http_date_form() {
        assert_eq!(retry_after(" 120 ", NOW_NS), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("0", NOW_NS), Some(Duration::ZERO));
        // The three forms RFC 9110 5.6.7 names, one second after NOW_NS.
        for date in [
            "Sun, 06 Nov 1994 08:49:38 GMT",
            "Sunday, 06-Nov-94 08:49:38 GMT",
            "Sun Nov  6 08:49:38 1994",
        ] {
            assert_eq!(retry_after(date, NOW_NS), Some(Duration::from_secs(1)), "{date:?}");
        }
        // In the past: no wait.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:00 GMT", NOW_NS),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "1.5",
            "-3",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 0a Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08-49-37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}",
        ] {
            assert_eq!(retry_after(bad, NOW_NS), None, "{bad:?}");
        }
    }
}
