//! The embedded bus: in-process topics with the broker's schema rules.

use super::{Bus, BusError, BusFuture, Delivery, RawMessage, Subscription};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{broadcast, mpsc};
use triad_schemas::{Topic, codec};

struct TopicState {
    schema: String,
    tx: broadcast::Sender<RawMessage>,
}

/// In-process bus. Subscribers see messages published after they subscribed.
pub struct EmbeddedBus {
    topics: Mutex<HashMap<String, TopicState>>,
    capacity: usize,
}

impl Default for EmbeddedBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl EmbeddedBus {
    /// A bus whose topics buffer `capacity` messages per slow subscriber.
    pub fn new(capacity: usize) -> Self {
        Self {
            topics: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Register `schema_json` for `topic` as if another producer had done so
    /// first (what a broker's registry holds). Later producers must be
    /// compatible with it.
    pub fn register_schema(&self, topic: &Topic, schema_json: &str) {
        let mut topics = self.topics.lock().expect("bus registry poisoned");
        let (tx, _) = broadcast::channel(self.capacity);
        topics.insert(
            topic.name().to_string(),
            TopicState {
                schema: schema_json.to_string(),
                tx,
            },
        );
    }

    fn sender(&self, topic: &Topic) -> Result<broadcast::Sender<RawMessage>, BusError> {
        let ours = codec::schema_json(topic.kind());
        let mut topics = self.topics.lock().expect("bus registry poisoned");
        if let Some(state) = topics.get(topic.name()) {
            if state.schema != ours {
                codec::check_compatible(&state.schema, ours).map_err(|e| BusError::IncompatibleSchema {
                    topic: topic.name().into(),
                    detail: e.to_string(),
                })?;
            }
            return Ok(state.tx.clone());
        }
        let (tx, _) = broadcast::channel(self.capacity);
        topics.insert(
            topic.name().to_string(),
            TopicState {
                schema: ours.to_string(),
                tx: tx.clone(),
            },
        );
        Ok(tx)
    }
}

impl Bus for EmbeddedBus {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn ensure_producer<'a>(&'a self, topic: &'a Topic) -> BusFuture<'a, ()> {
        Box::pin(async move { self.sender(topic).map(|_| ()) })
    }

    fn publish<'a>(&'a self, msg: &'a RawMessage) -> BusFuture<'a, ()> {
        Box::pin(async move {
            codec::validate(msg.topic.kind(), &msg.payload).map_err(|e| BusError::InvalidPayload {
                topic: msg.topic.name().into(),
                detail: e.to_string(),
            })?;
            let tx = self.sender(&msg.topic)?;
            // No subscriber is not an error: the message is simply not read.
            let _ = tx.send(msg.clone());
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a Topic, _name: &'a str) -> BusFuture<'a, Subscription> {
        Box::pin(async move {
            let mut rx = self.sender(topic)?.subscribe();
            let (tx, out) = mpsc::channel(self.capacity.min(1024));
            let topic_name = topic.name().to_string();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(msg) => {
                            if tx.send(Delivery::new(msg, None)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(topic = %topic_name, skipped = n, "embedded bus subscriber too slow; skipped messages");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            Ok(Subscription::new(out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triad_schemas::ids::AssetId;
    use triad_schemas::messages::MessageKind;

    fn topic() -> Topic {
        Topic::twin_status(&AssetId::new("battery_pack_89").unwrap())
    }

    #[tokio::test]
    async fn refuses_garbage_and_delivers_valid_messages() {
        let bus = EmbeddedBus::default();
        let t = topic();
        let mut sub = bus.subscribe(&t, "test").await.unwrap();
        let garbage = RawMessage {
            topic: t.clone(),
            key: "k".into(),
            sequence: 1,
            payload: vec![1, 2, 3],
        };
        let err = bus.publish(&garbage).await.unwrap_err();
        assert!(matches!(err, BusError::InvalidPayload { .. }), "{err}");
        let status = triad_schemas::TwinStatus {
            envelope: triad_schemas::Envelope {
                schema_version: 1,
                node: "n".into(),
                sequence: 7,
                stamp_ns: 1,
                clock: triad_schemas::ClockState::FreeRunning,
                clock_offset_ns: None,
            },
            asset: "battery_pack_89".into(),
            measured_c: 1.0,
            predicted_c: 1.0,
            residual_c: 0.0,
            band_c: 6.0,
            state: triad_schemas::TwinState::Nominal,
            outside_since_ns: None,
            health: 1.0,
            rul_s: None,
            model_version: "m".into(),
        };
        let good = RawMessage {
            topic: t.clone(),
            key: "battery_pack_89".into(),
            sequence: 7,
            payload: codec::encode(&status).unwrap(),
        };
        bus.publish(&good).await.unwrap();
        let got = sub.next().await.unwrap();
        assert_eq!(got.msg, good);
        assert_eq!(
            codec::decode::<triad_schemas::TwinStatus>(&got.msg.payload).unwrap(),
            status
        );
        assert_eq!(MessageKind::TwinStatus, t.kind());
    }

    #[tokio::test]
    async fn incompatible_registered_schema_refuses_the_producer_and_names_the_field() {
        let bus = EmbeddedBus::default();
        let t = topic();
        // The registry holds a schema whose `health` is a string: ours (double)
        // cannot read it.
        let foreign = codec::schema_json(t.kind()).replacen(
            "\"name\": \"health\",\n      \"type\": \"double\"",
            "\"name\": \"health\",\n      \"type\": \"string\"",
            1,
        );
        assert_ne!(foreign, codec::schema_json(t.kind()));
        bus.register_schema(&t, &foreign);
        let err = bus.ensure_producer(&t).await.unwrap_err().to_string();
        assert!(
            err.contains("health") && err.contains("dtwin/battery_pack_89/status"),
            "{err}"
        );
    }
}
