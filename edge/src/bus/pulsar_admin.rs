//! A small client of the Pulsar admin REST API: the schema registry, the
//! namespace policies triad relies on, and reading a topic's last message.
//!
//! Calls and answers verified against Pulsar 4.0.8 (see deploy/pulsar/README.md):
//!
//! | what | call | success |
//! |---|---|---|
//! | register a schema | `POST /admin/v2/schemas/{t}/{ns}/{topic}/schema` `{"type":"AVRO","schema":…,"properties":{}}` | 200 `{"version":…}`; incompatible: 409 |
//! | test compatibility | `POST …/compatibility` (same body) | 202 `{"compatibility":true}`; incompatible: 409/500 |
//! | read the schema | `GET …/schema` | 200 `{"data":…}`; none: 404 |
//! | compatibility strategy | `PUT /admin/v2/namespaces/{t}/{ns}/schemaCompatibilityStrategy` `"BACKWARD"` | 204 |
//! | deduplication | `POST /admin/v2/namespaces/{t}/{ns}/deduplication` `true` | 204 |
//! | retention | `POST /admin/v2/namespaces/{t}/{ns}/retention` `{"retentionTimeInMinutes":…,"retentionSizeInMB":…}` | 204 |
//! | compaction threshold | `POST /admin/v2/persistent/{t}/{ns}/{topic}/compactionThreshold` | 204 |
//! | last message | `GET /admin/v2/persistent/{t}/{ns}/{topic}/examinemessage?initialPosition=latest&messagePosition=1` | 200 payload |
//!
//! Error bodies are sometimes JSON, sometimes an HTML page: both are reduced
//! to one readable line.

use std::time::Duration;
use thiserror::Error;

/// An admin call failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AdminError {
    /// The broker's web service cannot be reached.
    #[error("Pulsar admin {url} unreachable: {detail}; check [bus] admin_url and that the broker runs")]
    Unreachable {
        /// URL called.
        url: String,
        /// Transport error.
        detail: String,
    },
    /// Authentication or authorisation refused.
    #[error(
        "Pulsar admin {url} refused the credentials (HTTP {status}): {detail}; check [bus] token_file and the role's permissions"
    )]
    Auth {
        /// URL called.
        url: String,
        /// Status.
        status: u16,
        /// Broker's message.
        detail: String,
    },
    /// The schema registry refused an incompatible schema.
    #[error("broker refused the schema of {topic}: {detail}")]
    Incompatible {
        /// Topic.
        topic: String,
        /// Broker's message.
        detail: String,
    },
    /// Any other failure.
    #[error("Pulsar admin {method} {url} failed (HTTP {status}): {detail}")]
    Http {
        /// Method.
        method: &'static str,
        /// URL called.
        url: String,
        /// Status.
        status: u16,
        /// Broker's message.
        detail: String,
    },
}

/// Longest admin answer read, bytes.
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Retries of a transient answer, and the waits between them (doubling):
/// 0.2 + 0.4 + 0.8 + 1.6 + 2 s, about 5 s in all.
const RETRY_TIMES: usize = 5;
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Is an answer one a busy or recovering broker gives, worth asking again?
/// 429, 502, 503 and 504 always are; a 500 when its message names a cause
/// that passes (BookKeeper not yet writable, a bundle being moved, a
/// timeout). An incompatible schema or a bad request never is.
pub fn is_transient(status: u16, body: &str) -> bool {
    match status {
        429 | 502 | 503 | 504 => true,
        500 => {
            let t = body.to_ascii_lowercase();
            [
                "bookie",
                "not ready",
                "unavailable",
                "timeout",
                "timed out",
                "being unloaded",
                "try again",
            ]
            .iter()
            .any(|w| t.contains(w))
        }
        _ => false,
    }
}

/// The outcome of one request that is not an answer to pass on: a transient
/// answer (retried) or a failure (`error`, returned at once).
struct Busy {
    transient: bool,
    status: u16,
    body: bytes_body::Body,
    error: Option<AdminError>,
}

impl Busy {
    fn failed(e: AdminError) -> Self {
        Self {
            transient: false,
            status: 0,
            body: bytes_body::Body(Vec::new()),
            error: Some(e),
        }
    }
}

/// The admin client.
#[derive(Clone)]
pub struct PulsarAdmin {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for PulsarAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("PulsarAdmin")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Reduce an error body (JSON or HTML) to one line.
pub fn error_text(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for k in ["reason", "message", "error"] {
            if let Some(s) = v.get(k).and_then(|s| s.as_str()) {
                return s.replace("&quot;", "\"");
            }
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let line = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("&quot;", "\"");
    if line.len() > 600 {
        format!("{}…", &line[..line.floor_char_boundary(600)])
    } else {
        line
    }
}

impl PulsarAdmin {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`), with an optional
    /// JWT and CA certificate (PEM) for https.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let mut b = reqwest::Client::builder().timeout(timeout);
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| AdminError::Unreachable {
                url: base.into(),
                detail: format!("the CA certificate is not PEM: {e}"),
            })?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| AdminError::Unreachable {
            url: base.into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn url_schema(&self, tenant: &str, ns: &str, topic_local: &str) -> String {
        format!("{}/admin/v2/schemas/{tenant}/{ns}/{topic_local}", self.base)
    }

    async fn call(
        &self,
        method: &'static str,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, bytes_body::Body), AdminError> {
        use backon::{ExponentialBuilder, Retryable};
        // A broker that is busy or recovering (its bookie not yet writable
        // after a restart, a namespace bundle moving) answers 5xx for a few
        // seconds; such an answer is asked again, with backoff, and only then
        // reported, as what it is (never as a refusal of the request).
        let policy = ExponentialBuilder::default()
            .with_min_delay(RETRY_FIRST)
            .with_max_delay(RETRY_MAX)
            .with_max_times(RETRY_TIMES);
        let answer = (|| self.call_once(method, url, body.clone()))
            .retry(policy)
            .when(|r: &Busy| r.transient)
            .notify(|r: &Busy, wait: Duration| {
                tracing::warn!(%method, %url, status = r.status, detail = %error_text(&r.body.text()), ?wait, "Pulsar admin busy; asking again")
            })
            .await;
        match answer {
            Ok(ok) => Ok(ok),
            Err(Busy {
                status, body, error, ..
            }) => match error {
                Some(e) => Err(e),
                None => Ok((status, body)),
            },
        }
    }

    /// One request; a transient answer comes back as `Err(Busy)` to be retried.
    async fn call_once(
        &self,
        method: &'static str,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, bytes_body::Body), Busy> {
        let mut req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let unreachable = |e: reqwest::Error| {
            Busy::failed(AdminError::Unreachable {
                url: url.into(),
                detail: e.to_string(),
            })
        };
        let mut res = req.send().await.map_err(unreachable)?;
        let status = res.status().as_u16();
        // Bounded before it is buffered: the largest answer is a message
        // payload (Pulsar's default maxMessageSize is 5 MiB).
        let mut bytes = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Busy::failed(AdminError::Http {
                    method,
                    url: url.into(),
                    status,
                    detail: format!(
                        "the answer is longer than {} MiB; is admin_url the broker's web service?",
                        MAX_ANSWER_BYTES >> 20
                    ),
                }));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status == 401 || status == 403 {
            return Err(Busy::failed(AdminError::Auth {
                url: url.into(),
                status,
                detail: error_text(&String::from_utf8_lossy(&bytes)),
            }));
        }
        let body = bytes_body::Body(bytes);
        if is_transient(status, &body.text()) {
            return Err(Busy {
                transient: true,
                status,
                body,
                error: None,
            });
        }
        Ok((status, body))
    }

    fn http_err(method: &'static str, url: &str, status: u16, body: &bytes_body::Body) -> AdminError {
        AdminError::Http {
            method,
            url: url.into(),
            status,
            detail: error_text(&body.text()),
        }
    }

    /// Set BACKWARD schema compatibility, broker deduplication and a
    /// retention of 7 days / 10 GiB on the namespace. Without retention a
    /// topic nobody subscribes to yet loses acknowledged messages when the
    /// broker rolls its ledgers (for example after a restart).
    pub async fn configure_namespace(&self, tenant: &str, ns: &str) -> Result<(), AdminError> {
        let base = format!("{}/admin/v2/namespaces/{tenant}/{ns}", self.base);
        let url = format!("{base}/schemaCompatibilityStrategy");
        let (st, body) = self.call("PUT", &url, Some(serde_json::json!("BACKWARD"))).await?;
        if st != 204 && st != 200 {
            return Err(Self::http_err("PUT", &url, st, &body));
        }
        let url = format!("{base}/deduplication");
        let (st, body) = self.call("POST", &url, Some(serde_json::json!(true))).await?;
        if st != 204 && st != 200 {
            return Err(Self::http_err("POST", &url, st, &body));
        }
        let url = format!("{base}/retention");
        let retention = serde_json::json!({ "retentionTimeInMinutes": 7 * 24 * 60, "retentionSizeInMB": 10 * 1024 });
        let (st, body) = self.call("POST", &url, Some(retention)).await?;
        if st != 204 && st != 200 {
            return Err(Self::http_err("POST", &url, st, &body));
        }
        Ok(())
    }

    /// The namespace's compatibility strategy (`BACKWARD`, `FULL`, … or `UNDEFINED`).
    pub async fn compatibility_strategy(&self, tenant: &str, ns: &str) -> Result<String, AdminError> {
        let url = format!(
            "{}/admin/v2/namespaces/{tenant}/{ns}/schemaCompatibilityStrategy",
            self.base
        );
        let (st, body) = self.call("GET", &url, None).await?;
        if st != 200 {
            return Err(Self::http_err("GET", &url, st, &body));
        }
        Ok(body.text().trim().trim_matches('"').to_string())
    }

    /// The registered schema of a topic (Avro JSON), if any.
    pub async fn get_schema(&self, tenant: &str, ns: &str, topic_local: &str) -> Result<Option<String>, AdminError> {
        let url = format!("{}/schema", self.url_schema(tenant, ns, topic_local));
        let (st, body) = self.call("GET", &url, None).await?;
        match st {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&body.0)
                    .map_err(|e| Self::http_err("GET", &url, st, &bytes_body::Body(e.to_string().into_bytes())))?;
                Ok(v.get("data").and_then(|d| d.as_str()).map(str::to_string))
            }
            404 => Ok(None),
            _ => Err(Self::http_err("GET", &url, st, &body)),
        }
    }

    /// Register `schema_json` (AVRO) for a topic; returns the version.
    pub async fn push_schema(
        &self,
        tenant: &str,
        ns: &str,
        topic_local: &str,
        schema_json: &str,
    ) -> Result<i64, AdminError> {
        let url = format!("{}/schema", self.url_schema(tenant, ns, topic_local));
        let body = serde_json::json!({ "type": "AVRO", "schema": schema_json, "properties": {} });
        let (st, resp) = self.call("POST", &url, Some(body)).await?;
        match st {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&resp.0).unwrap_or_default();
                Ok(v.pointer("/version/version")
                    .or_else(|| v.get("version"))
                    .and_then(|x| x.as_i64())
                    .unwrap_or(0))
            }
            409 | 422 => Err(AdminError::Incompatible {
                topic: topic_local.into(),
                detail: error_text(&resp.text()),
            }),
            _ => Err(Self::http_err("POST", &url, st, &resp)),
        }
    }

    /// Ask the registry whether `schema_json` may be registered for a topic.
    pub async fn check_schema(
        &self,
        tenant: &str,
        ns: &str,
        topic_local: &str,
        schema_json: &str,
    ) -> Result<(), AdminError> {
        let url = format!("{}/compatibility", self.url_schema(tenant, ns, topic_local));
        let body = serde_json::json!({ "type": "AVRO", "schema": schema_json, "properties": {} });
        let (st, resp) = self.call("POST", &url, Some(body)).await?;
        let v: serde_json::Value = serde_json::from_slice(&resp.0).unwrap_or_default();
        match st {
            200 | 202 if v.get("compatibility").and_then(|c| c.as_bool()) != Some(false) => Ok(()),
            // A 500 the retries could not get past (the broker still
            // recovering) is not a refusal of the schema.
            500 if is_transient(st, &resp.text()) => Err(Self::http_err("POST", &url, st, &resp)),
            200 | 202 | 409 | 500 => Err(AdminError::Incompatible {
                topic: topic_local.into(),
                detail: error_text(&resp.text()),
            }),
            404 => Ok(()), // no schema registered yet: anything goes
            _ => Err(Self::http_err("POST", &url, st, &resp)),
        }
    }

    /// Keep only the latest message per key in the compacted view once the
    /// backlog passes `threshold_bytes` (topic-level policy; the topic must exist).
    pub async fn set_compaction(
        &self,
        tenant: &str,
        ns: &str,
        topic_local: &str,
        threshold_bytes: u64,
    ) -> Result<(), AdminError> {
        let url = format!(
            "{}/admin/v2/persistent/{tenant}/{ns}/{topic_local}/compactionThreshold",
            self.base
        );
        let (st, body) = self
            .call("POST", &url, Some(serde_json::json!(threshold_bytes)))
            .await?;
        if st == 204 || st == 200 {
            Ok(())
        } else {
            Err(Self::http_err("POST", &url, st, &body))
        }
    }

    /// The payload of the topic's last message, `None` if the topic is empty
    /// or does not exist.
    pub async fn last_message(&self, tenant: &str, ns: &str, topic_local: &str) -> Result<Option<Vec<u8>>, AdminError> {
        self.message_from_end(tenant, ns, topic_local, 1).await
    }

    /// The payload of the topic's `position`-th message counted from the
    /// end (1: the last), `None` past the first message or on an empty or
    /// missing topic.
    pub async fn message_from_end(
        &self,
        tenant: &str,
        ns: &str,
        topic_local: &str,
        position: u32,
    ) -> Result<Option<Vec<u8>>, AdminError> {
        let url = format!(
            "{}/admin/v2/persistent/{tenant}/{ns}/{topic_local}/examinemessage?initialPosition=latest&messagePosition={position}",
            self.base
        );
        let (st, body) = self.call("GET", &url, None).await?;
        match st {
            200 => Ok(Some(body.0)),
            // 404: no topic; 409/412/500 "no message" variants on an empty topic.
            404 | 409 | 412 => Ok(None),
            500 if body.text().to_ascii_lowercase().contains("no message") || body.text().contains("Empty") => Ok(None),
            // A position before the topic's first message (Pulsar 4.0:
            // "ManagedLedgerException: Incorrect parameter input error code: -14").
            500 if position > 1 && body.text().contains("Incorrect parameter") => Ok(None),
            _ => Err(Self::http_err("GET", &url, st, &body)),
        }
    }

    /// Topic statistics (JSON), for tests and tools.
    pub async fn topic_stats(
        &self,
        tenant: &str,
        ns: &str,
        topic_local: &str,
    ) -> Result<serde_json::Value, AdminError> {
        let url = format!("{}/admin/v2/persistent/{tenant}/{ns}/{topic_local}/stats", self.base);
        let (st, body) = self.call("GET", &url, None).await?;
        if st != 200 {
            return Err(Self::http_err("GET", &url, st, &body));
        }
        serde_json::from_slice(&body.0)
            .map_err(|e| Self::http_err("GET", &url, st, &bytes_body::Body(e.to_string().into_bytes())))
    }
}

mod bytes_body {
    /// A response body.
    pub struct Body(pub Vec<u8>);
    impl Body {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0).into_owned()
        }
    }
}

/// The local part of a topic's Pulsar name (`insp.cell_2245.result`): the
/// name under which its schema is registered.
pub fn local_name(topic: &triad_schemas::Topic) -> String {
    topic.name().replace('/', ".")
}

/// Read the JWT from `path` (trimmed). The token is never logged.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the Pulsar token file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.split('.').count() != 3 {
        return Err(format!(
            "{} does not hold a JWT (three dot-separated parts)",
            path.display()
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line() {
        assert_eq!(error_text(r#"{"reason":"Schema not found"}"#), "Schema not found");
        assert_eq!(
            error_text(
                r#"{"message":"Error during schema compatibility check with strategy BACKWARD: &quot;x&quot;"}"#
            ),
            "Error during schema compatibility check with strategy BACKWARD: \"x\""
        );
        let html = "<html><head><title>Error 415</title></head><body><h2>HTTP ERROR 415 Unsupported Media Type</h2></body></html>";
        assert_eq!(error_text(html), "Error 415 HTTP ERROR 415 Unsupported Media Type");
    }

    /// A broker stand-in on loopback that answers each request with the next
    /// of `answers` (status, body) and counts the requests.
    async fn scripted_broker(answers: Vec<(u16, Vec<u8>)>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = count.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut sock, _) = listener.accept().await.unwrap();
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the declared body.
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = sock.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..k]);
                }
                let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let have = req.len() - (head.find("\r\n\r\n").unwrap() + 4);
                let mut left = len.saturating_sub(have);
                while left > 0 {
                    left -= sock.read(&mut buf).await.unwrap();
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                sock.write_all(head.as_bytes()).await.unwrap();
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            }
        });
        (url, count)
    }

    fn admin(url: &str) -> PulsarAdmin {
        PulsarAdmin::new(url, None, None, Duration::from_secs(5)).unwrap()
    }

    const NO_BOOKIES: &str =
        r#"{"reason":"org.apache.bookkeeper.mledger.ManagedLedgerException: Not enough non-faulty bookies available"}"#;

    #[tokio::test]
    async fn a_recovering_broker_is_asked_again_and_its_answer_taken() {
        let (url, count) = scripted_broker(vec![
            (500, NO_BOOKIES.into()),
            (503, b"Service Unavailable".to_vec()),
            (200, br#"{"version":3}"#.to_vec()),
        ])
        .await;
        let v = admin(&url).push_schema("public", "default", "t", "{}").await.unwrap();
        assert_eq!(v, 3);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_broker_that_stays_busy_is_an_error_not_a_schema_refusal() {
        let (url, count) = scripted_broker(vec![(500, NO_BOOKIES.into()); RETRY_TIMES + 1]).await;
        let e = admin(&url)
            .check_schema("public", "default", "t", "{}")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AdminError::Http { status: 500, detail, .. } if detail.contains("bookies")),
            "{e:?}"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), RETRY_TIMES + 1);
    }

    #[tokio::test]
    async fn an_incompatible_schema_is_refused_at_once() {
        let body = br#"{"reason":"org.apache.pulsar.broker.service.schema.exceptions.IncompatibleSchemaException: Incompatible schema: strategy BACKWARD"}"#;
        let (url, count) = scripted_broker(vec![(500, body.to_vec())]).await;
        let e = admin(&url)
            .check_schema("public", "default", "t", "{}")
            .await
            .unwrap_err();
        assert!(matches!(&e, AdminError::Incompatible { .. }), "{e:?}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_is_bounded_before_it_is_buffered() {
        let (url, _) = scripted_broker(vec![(200, vec![b'x'; MAX_ANSWER_BYTES + 1])]).await;
        let e = admin(&url).get_schema("public", "default", "t").await.unwrap_err();
        assert!(
            matches!(&e, AdminError::Http { detail, .. } if detail.contains("longer than 8 MiB")),
            "{e:?}"
        );
    }

    #[test]
    fn transient_answers_are_told_from_refusals() {
        assert!(is_transient(503, ""));
        assert!(is_transient(500, NO_BOOKIES));
        assert!(!is_transient(500, "IncompatibleSchemaException"));
        assert!(!is_transient(409, "busy"));
        assert!(!is_transient(404, "timeout"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let a = PulsarAdmin::new(
            "http://127.0.0.1:8080",
            Some("secret.jwt.value".into()),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let d = format!("{a:?}");
        assert!(!d.contains("secret") && d.contains("***"), "{d}");
    }
}
