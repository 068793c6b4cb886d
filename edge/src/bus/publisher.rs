//! Stamps, numbers, encodes and routes outgoing messages.
//!
//! - Topics whose QoS class is durable (`insp/…/result`, `dtwin/…/alert`,
//!   `mes/…/workorder`) go into the [`Outbox`] first; the [`flush_bus_lane`]
//!   task delivers them in order and deletes them once the bus acknowledged.
//! - Latest-value and compacted topics go straight to the bus; a failure is
//!   counted and logged, and the next value replaces the lost one.

use super::outbox::{Lane, Outbox, OutboxError};
use super::{Bus, BusError, RawMessage};
use crate::clock::Clock;
use crate::metrics::Metrics;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use triad_schemas::codec::{self, SCHEMA_VERSION};
use triad_schemas::ids::NodeId;
use triad_schemas::{BusMessage, Envelope, Topic};

/// Publishing failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The outbox refused (full or storage failure).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The bus refused.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The message does not fit its schema (a bug).
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

/// The node's publisher.
pub struct Publisher {
    node: NodeId,
    clock: Arc<dyn Clock>,
    bus: Arc<dyn Bus>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    volatile_seq: Mutex<HashMap<String, i64>>,
    opened: Mutex<HashSet<String>>,
}

impl Publisher {
    /// Assemble.
    pub fn new(
        node: NodeId,
        clock: Arc<dyn Clock>,
        bus: Arc<dyn Bus>,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            clock,
            bus,
            outbox,
            metrics,
            volatile_seq: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashSet::new()),
        }
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// The outbox.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// An envelope for an event at `stamp_ns` (sequence filled at publish).
    pub fn envelope(&self, stamp_ns: i64) -> Envelope {
        let st = self.clock.status();
        Envelope {
            schema_version: SCHEMA_VERSION,
            node: self.node.to_string(),
            sequence: 0,
            stamp_ns,
            clock: st.state,
            clock_offset_ns: st.offset_ns,
        }
    }

    /// Open the producer of `topic` once (schema registration and check).
    pub async fn open(&self, topic: &Topic) -> Result<(), BusError> {
        if self.opened.lock().expect("poisoned").contains(topic.name()) {
            return Ok(());
        }
        self.bus.ensure_producer(topic).await?;
        self.opened.lock().expect("poisoned").insert(topic.name().to_string());
        Ok(())
    }

    /// Publish `msg` on `topic`; returns it with its sequence filled in.
    /// For durable topics this returns once the outbox holds the message.
    pub async fn publish<M: BusMessage>(&self, topic: &Topic, msg: M) -> Result<M, PublishError> {
        self.publish_lanes(topic, msg, false).await
    }

    /// Publish a work order: on its topic and, as JSON, on the MES lane,
    /// both from one outbox transaction.
    pub async fn publish_with_mes<M: BusMessage>(&self, topic: &Topic, msg: M) -> Result<M, PublishError> {
        self.publish_lanes(topic, msg, true).await
    }

    async fn publish_lanes<M: BusMessage>(&self, topic: &Topic, mut msg: M, mes: bool) -> Result<M, PublishError> {
        debug_assert_eq!(topic.kind(), M::KIND, "message kind does not match topic {topic}");
        self.open(topic).await?;
        if !(topic.qos().durable() || mes) {
            let seq = {
                let mut s = self.volatile_seq.lock().expect("poisoned");
                let e = s.entry(topic.name().to_string()).or_insert(0);
                *e += 1;
                *e
            };
            msg.envelope_mut().sequence = seq;
            let raw = RawMessage {
                topic: topic.clone(),
                key: msg.key().to_string(),
                sequence: seq,
                payload: codec::encode(&msg)?,
            };
            let res = tokio::time::timeout(Duration::from_secs(2), self.bus.publish(&raw)).await;
            return match res {
                Ok(Ok(())) => {
                    self.metrics.bus_published(topic.name());
                    Ok(msg)
                }
                Ok(Err(e)) => {
                    self.metrics.bus_publish_error(topic.name());
                    Err(e.into())
                }
                Err(_) => {
                    self.metrics.bus_publish_error(topic.name());
                    Err(BusError::Unavailable {
                        backend: self.bus.backend(),
                        detail: "publish timed out after 2 s".into(),
                    }
                    .into())
                }
            };
        }
        let outbox = self.outbox.clone();
        let topic_name = topic.name().to_string();
        let key = msg.key().to_string();
        let now = self.clock.now_ns();
        let msg = tokio::task::spawn_blocking(move || {
            let mut stored = None;
            outbox.append(&topic_name, &key, now, |seq| {
                msg.envelope_mut().sequence = seq;
                let avro = codec::encode(&msg).map_err(|e| e.to_string())?;
                let mut lanes = vec![(Lane::Bus, avro)];
                if mes {
                    lanes.push((Lane::Mes, serde_json::to_vec(&msg).map_err(|e| e.to_string())?));
                }
                stored = Some(msg.clone());
                Ok(lanes)
            })?;
            Ok::<M, OutboxError>(stored.expect("build ran"))
        })
        .await
        .expect("outbox task panicked")?;
        Ok(msg)
    }

    /// Like [`Publisher::publish`], but while the outbox is full, wait and
    /// retry (logging the outage every 10 s) instead of failing: the caller
    /// is slowed down, nothing is dropped.
    pub async fn publish_durably<M: BusMessage>(&self, topic: &Topic, msg: M, mes: bool) -> Result<M, PublishError> {
        let mut waited = Duration::ZERO;
        let mut last_log = None::<Duration>;
        loop {
            match self.publish_lanes(topic, msg.clone(), mes).await {
                Err(PublishError::Outbox(e @ OutboxError::Full { .. })) => {
                    self.metrics.outbox_full();
                    if last_log.is_none_or(|t| waited - t >= Duration::from_secs(10)) {
                        tracing::error!(topic = %topic, error = %e, waited_s = waited.as_secs(), "outbox full; holding the message and retrying");
                        last_log = Some(waited);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    waited += Duration::from_millis(200);
                }
                other => return other,
            }
        }
    }
}

/// Deliver the bus lane of the outbox, oldest first, until `shutdown`.
pub async fn flush_bus_lane(
    outbox: Arc<Outbox>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = match outbox.pending(Lane::Bus, 64) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "outbox read failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = outbox.appended() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut failed = false;
        for e in &batch {
            let topic = match Topic::parse(&e.topic) {
                Ok(t) => t,
                Err(why) => {
                    let _ = outbox.dead_letter(e, &why);
                    continue;
                }
            };
            let raw = RawMessage {
                topic,
                key: e.key.clone(),
                sequence: e.sequence,
                payload: e.payload.clone(),
            };
            match tokio::time::timeout(Duration::from_secs(5), bus.publish(&raw)).await {
                Ok(Ok(())) => {
                    metrics.bus_published(&e.topic);
                    done.push(e.id);
                }
                Ok(Err(err @ (BusError::InvalidPayload { .. } | BusError::IncompatibleSchema { .. }))) => {
                    tracing::error!(topic = %e.topic, sequence = e.sequence, error = %err, "bus refused the message for good; moved to dead letters");
                    let _ = outbox.ack(Lane::Bus, &done);
                    done.clear();
                    let _ = outbox.dead_letter(e, &err.to_string());
                }
                Ok(Err(err)) => {
                    metrics.bus_publish_error(&e.topic);
                    tracing::warn!(topic = %e.topic, error = %err, retry_ms = backoff.as_millis() as u64, "bus publish failed; will retry from the outbox");
                    failed = true;
                    break;
                }
                Err(_) => {
                    metrics.bus_publish_error(&e.topic);
                    tracing::warn!(topic = %e.topic, "bus publish timed out after 5 s; will retry from the outbox");
                    failed = true;
                    break;
                }
            }
        }
        if let Err(e) = outbox.ack(Lane::Bus, &done) {
            tracing::error!(error = %e, "outbox ack failed; messages may be delivered twice (consumers deduplicate by sequence)");
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}
