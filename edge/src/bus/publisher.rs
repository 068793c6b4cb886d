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
use triad_schemas::codec;
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
        crate::clock::envelope(&*self.clock, self.node.as_str(), stamp_ns)
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
        // No producer check here: a durable message goes into the outbox even
        // while the bus is unreachable; the backends open producers themselves.
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

    /// Like [`Publisher::publish`], but while the outbox is full or its disk
    /// fails (full, I/O errors), wait and retry instead of failing: the
    /// caller is slowed down, nothing it hands over is dropped. A full
    /// outbox is logged every 10 s; a storage fault is logged once by the
    /// outbox itself (and shown on `/healthz`), so not here.
    pub async fn publish_durably<M: BusMessage>(&self, topic: &Topic, msg: M, mes: bool) -> Result<M, PublishError> {
        let mut waited = Duration::ZERO;
        let mut last_log = None::<Duration>;
        let mut nap = Duration::from_millis(200);
        loop {
            match self.publish_lanes(topic, msg.clone(), mes).await {
                Err(PublishError::Outbox(e @ OutboxError::Full { .. })) => {
                    self.metrics.outbox_full();
                    if last_log.is_none_or(|t| waited - t >= Duration::from_secs(10)) {
                        tracing::error!(topic = %topic, error = %e, waited_s = waited.as_secs(), "outbox full; holding the message and retrying");
                        last_log = Some(waited);
                    }
                    nap = Duration::from_millis(200);
                }
                Err(PublishError::Outbox(OutboxError::Storage { .. })) => {
                    self.metrics.outbox_storage_error();
                    nap = (nap * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
            tokio::time::sleep(nap).await;
            waited += nap;
        }
    }
}

/// Delivery state of one topic in the flusher.
struct Retry {
    at: std::time::Instant,
    backoff: Duration,
    logged: Option<std::time::Instant>,
}

/// Deliver the bus lane of the outbox until `shutdown`: oldest first and in
/// order per topic, pipelined per topic; a topic that cannot be delivered
/// (broker down, schema refused) backs off without holding up the others.
pub async fn flush_bus_lane(
    outbox: Arc<Outbox>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use std::time::Instant;
    let mut retry: HashMap<String, Retry> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = Instant::now();
        let waiting: std::collections::HashSet<String> = retry
            .iter()
            .filter(|(_, r)| r.at > now)
            .map(|(t, _)| t.clone())
            .collect();
        let batch = match outbox
            .blocking(move |o| o.pending_filtered(Lane::Bus, 512, |t| waiting.contains(t)))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "outbox read failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            let next_retry = retry
                .values()
                .map(|r| r.at)
                .min()
                .map(|t| t.saturating_duration_since(now));
            let nap = next_retry
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_millis(200));
            tokio::select! {
                _ = outbox.appended() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // Group by topic, keeping each topic's order.
        let mut groups: Vec<(String, Vec<&super::outbox::OutboxEntry>)> = Vec::new();
        for e in &batch {
            match groups.iter_mut().find(|(t, _)| *t == e.topic) {
                Some((_, v)) => v.push(e),
                None => groups.push((e.topic.clone(), vec![e])),
            }
        }
        for (name, entries) in groups {
            let topic = match Topic::parse(&name) {
                Ok(t) => t,
                Err(why) => {
                    let dead: Vec<_> = entries.into_iter().cloned().collect();
                    outbox
                        .blocking(move |o| {
                            for e in &dead {
                                let _ = o.dead_letter(e, &why);
                            }
                        })
                        .await;
                    continue;
                }
            };
            let raws: Vec<RawMessage> = entries
                .iter()
                .map(|e| RawMessage {
                    topic: topic.clone(),
                    key: e.key.clone(),
                    sequence: e.sequence,
                    payload: e.payload.clone(),
                })
                .collect();
            let (n, err) = match tokio::time::timeout(Duration::from_secs(120), bus.publish_many(&raws)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => (0, Some(e)),
                Err(_) => (
                    0,
                    Some(BusError::Unavailable {
                        backend: bus.backend(),
                        detail: "publish took over 120 s".into(),
                    }),
                ),
            };
            let ids: Vec<u64> = entries[..n].iter().map(|e| e.id).collect();
            for _ in 0..n {
                metrics.bus_published(&name);
            }
            if let Err(e) = outbox.blocking(move |o| o.ack(Lane::Bus, &ids)).await {
                tracing::error!(error = %e, "outbox ack failed; messages may be offered twice (the bus skips what the topic already has)");
            }
            let Some(err) = err else {
                if let Some(r) = retry.remove(&name)
                    && r.logged.is_some()
                {
                    tracing::info!(topic = %name, "bus delivery resumed");
                }
                continue;
            };
            metrics.bus_publish_error(&name);
            match err {
                BusError::InvalidPayload { .. } => {
                    tracing::error!(topic = %name, sequence = entries[n].sequence, error = %err, "bus refused the message for good; moved to dead letters");
                    let (dead, why) = (entries[n].clone(), err.to_string());
                    let _ = outbox.blocking(move |o| o.dead_letter(&dead, &why)).await;
                }
                other => {
                    let permanent = matches!(other, BusError::IncompatibleSchema { .. });
                    let r = retry.entry(name.clone()).or_insert(Retry {
                        at: now,
                        backoff: Duration::from_millis(100),
                        logged: None,
                    });
                    r.backoff = if permanent {
                        Duration::from_secs(30)
                    } else {
                        (r.backoff * 2).min(Duration::from_secs(5))
                    };
                    r.at = Instant::now() + r.backoff;
                    if r.logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        let pending = outbox.stats().pending_bus;
                        if permanent {
                            tracing::error!(topic = %name, error = %other, pending, "topic not delivered: fix the schema registry; messages wait in the outbox");
                        } else {
                            tracing::warn!(topic = %name, error = %other, pending, retry_ms = r.backoff.as_millis() as u64, "bus delivery failing; messages wait in the outbox");
                        }
                        r.logged = Some(Instant::now());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::outbox::OutboxLimits;
    use crate::bus::{BusFuture, Subscription};
    use crate::clock::SystemClock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use triad_schemas::ids::AssetId;
    use triad_schemas::{AlertKind, AlertState, Severity, TwinAlert};

    /// A bus that refuses everything until `up` is set, then records.
    #[derive(Default)]
    struct FlakyBus {
        up: AtomicBool,
        got: Mutex<Vec<i64>>,
    }

    impl Bus for FlakyBus {
        fn backend(&self) -> &'static str {
            "flaky"
        }
        fn ensure_producer<'a>(&'a self, _topic: &'a Topic) -> BusFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn publish<'a>(&'a self, msg: &'a RawMessage) -> BusFuture<'a, ()> {
            Box::pin(async move {
                if !self.up.load(Ordering::SeqCst) {
                    return Err(BusError::Unavailable {
                        backend: "flaky",
                        detail: "down".into(),
                    });
                }
                self.got.lock().unwrap().push(msg.sequence);
                Ok(())
            })
        }
        fn subscribe<'a>(&'a self, _topic: &'a Topic, _name: &'a str) -> BusFuture<'a, Subscription> {
            Box::pin(async { Err(BusError::Closed) })
        }
    }

    fn alert(p: &Publisher, i: i64) -> TwinAlert {
        TwinAlert {
            envelope: p.envelope(i),
            alert_id: format!("A{i}"),
            asset: "pack".into(),
            kind: AlertKind::ResidualOutOfBand,
            state: AlertState::Raised,
            severity: Severity::Warning,
            onset_ns: 0,
            raised_ns: 0,
            residual_c: 7.0,
            band_c: 6.0,
            persistence_ms: 3000,
            message: "m".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_outbox_holds_producers_back_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("triad-pub-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let outbox = Arc::new(
            Outbox::open(
                &dir.join("o.redb"),
                OutboxLimits {
                    max_entries: 2,
                    max_bytes: 1 << 20,
                },
            )
            .unwrap(),
        );
        let bus = Arc::new(FlakyBus::default());
        let metrics = Arc::new(Metrics::new());
        let p = Arc::new(Publisher::new(
            NodeId::new("n1").unwrap(),
            Arc::new(SystemClock),
            bus.clone(),
            outbox.clone(),
            metrics.clone(),
        ));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let flusher = tokio::spawn(flush_bus_lane(outbox.clone(), bus.clone(), metrics.clone(), stop_rx));
        let topic = Topic::twin_alert(&AssetId::new("pack").unwrap());
        // Two fit; the third waits for room while the bus is down.
        for i in 1..=2 {
            p.publish_durably(&topic, alert(&p, i), false).await.unwrap();
        }
        let (p2, t2) = (p.clone(), topic.clone());
        let waiting = tokio::spawn(async move {
            for i in 3..=5 {
                p2.publish_durably(&t2, alert(&p2, i), false).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!waiting.is_finished(), "a full outbox must hold the producer back");
        assert!(metrics.outbox_full.get() > 0);
        // The bus comes back: everything goes out, once, in order.
        bus.up.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bus.got.lock().unwrap().len() < 5 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*bus.got.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        let _ = stop_tx.send(true);
        let _ = flusher.await;
        assert_eq!(outbox.stats().pending_bus, 0);
    }
}
