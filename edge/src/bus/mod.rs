//! The bus: one trait, two backends with the same topics and schema checks.
//!
//! - [`embedded`]: in-process (the default): every topic is a broadcast
//!   channel; producers register their Avro schema and are refused if it is
//!   not BACKWARD compatible with the registered one, as a broker would.
//! - `pulsar`: Apache Pulsar through pulsar-rs, with the schemas registered
//!   in the broker's registry ([`pulsar_admin`]). Built with the cargo feature
//!   `pulsar` (pulsar-rs needs `protoc` at build time); without it the node
//!   refuses `[bus] backend = "pulsar"` at start with [`PULSAR_NOT_BUILT`].
//!
//! Above the backends sit the durable [`outbox`] (redb) for at-least-once
//! topics, and the [`publisher`], which stamps envelopes, numbers messages,
//! encodes them and routes them through the outbox or straight to the bus.

pub mod embedded;
pub mod outbox;
pub mod publisher;
#[cfg(feature = "pulsar")]
pub mod pulsar;
pub mod pulsar_admin;
pub mod pulsar_config;

use std::future::Future;
use std::pin::Pin;
use thiserror::Error;
use triad_schemas::Topic;

/// What a node built without the `pulsar` feature says when asked for Pulsar.
pub const PULSAR_NOT_BUILT: &str = "this triad was built without the Apache Pulsar backend; rebuild it with \
`cargo build --release --features pulsar` (pulsar-rs needs protoc: `apt install protobuf-compiler`), \
or set [bus] backend = \"embedded\"";

/// A message as it travels: topic, key, sequence and the Avro payload.
#[derive(Clone, Debug, PartialEq)]
pub struct RawMessage {
    /// Topic.
    pub topic: Topic,
    /// Partition/compaction key.
    pub key: String,
    /// Producer sequence (the envelope's sequence).
    pub sequence: i64,
    /// Avro binary datum.
    pub payload: Vec<u8>,
}

/// A bus failure.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum BusError {
    /// The topic's registered schema cannot be read by ours.
    #[error("producer for {topic} refused: {detail}")]
    IncompatibleSchema {
        /// Topic.
        topic: String,
        /// Which field broke which rule.
        detail: String,
    },
    /// The payload is not a datum of the topic's schema.
    #[error("message for {topic} refused: {detail}")]
    InvalidPayload {
        /// Topic.
        topic: String,
        /// Decoder's complaint.
        detail: String,
    },
    /// The broker cannot be reached or did not acknowledge in time.
    #[error("bus {backend} unavailable: {detail}; messages wait in the outbox")]
    Unavailable {
        /// Backend.
        backend: &'static str,
        /// What happened.
        detail: String,
    },
    /// The bus is shutting down.
    #[error("bus closed")]
    Closed,
}

/// A future returned by bus methods.
pub type BusFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BusError>> + Send + 'a>>;

/// One received message with its acknowledgement.
pub struct Delivery {
    /// The message.
    pub msg: RawMessage,
    ack: Option<Box<dyn FnOnce() + Send>>,
}

impl Delivery {
    /// A delivery with an acknowledgement callback.
    pub fn new(msg: RawMessage, ack: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Self { msg, ack }
    }
    /// Acknowledge: call only once the message's effect is durable.
    pub fn ack(mut self) {
        if let Some(f) = self.ack.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("msg", &self.msg).finish()
    }
}

/// A stream of deliveries for one subscription.
pub struct Subscription {
    rx: tokio::sync::mpsc::Receiver<Delivery>,
}

impl Subscription {
    /// Wrap a receiver fed by a backend.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Delivery>) -> Self {
        Self { rx }
    }
    /// Next delivery; `None` when the bus closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// A bus backend.
pub trait Bus: Send + Sync + 'static {
    /// Backend name for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Open (or check) the producer of `topic`: registers its schema and
    /// refuses an incompatible one. Idempotent.
    fn ensure_producer<'a>(&'a self, topic: &'a Topic) -> BusFuture<'a, ()>;
    /// Publish and wait for the acknowledgement.
    fn publish<'a>(&'a self, msg: &'a RawMessage) -> BusFuture<'a, ()>;
    /// Publish several messages of one topic in order, pipelined where the
    /// backend can. Returns how many (a prefix) were acknowledged, and the
    /// error that stopped the rest.
    fn publish_many<'a>(&'a self, msgs: &'a [RawMessage]) -> BusFuture<'a, (usize, Option<BusError>)> {
        Box::pin(async move {
            for (i, m) in msgs.iter().enumerate() {
                if let Err(e) = self.publish(m).await {
                    return Ok((i, Some(e)));
                }
            }
            Ok((msgs.len(), None))
        })
    }
    /// Subscribe to `topic` under the subscription name `name`.
    fn subscribe<'a>(&'a self, topic: &'a Topic, name: &'a str) -> BusFuture<'a, Subscription>;
    /// Close producers and connections cleanly (at the node's orderly stop,
    /// inside its runtime). What the outbox holds stays there. Dropping a
    /// bus without closing it is safe too; the broker then learns of the
    /// close when the socket shuts.
    fn close(&self) -> BusFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// Subscribe to `topic` as `name`, asking again (1 s doubling to 10 s) for
/// as long as it takes: a broker that is down or still recovering at start
/// (its bookie not yet writable) refuses subscriptions for a while, and a
/// consumer that gave up would leave `what` unavailable for the node's
/// whole run. The first refusal is logged as an error naming `what`, the
/// subscription that finally works as info. Only a dropped future stops it
/// (the node's stop).
pub async fn subscribe_until_it_works(bus: &dyn Bus, topic: &Topic, name: &str, what: &str) -> Subscription {
    use backon::{ExponentialBuilder, Retryable};
    let mut failed = false;
    let policy = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_secs(1))
        .with_max_delay(std::time::Duration::from_secs(10))
        .without_max_times();
    let subscribed = (|| bus.subscribe(topic, name))
        .retry(policy)
        .notify(|e, _| {
            if !std::mem::replace(&mut failed, true) {
                tracing::error!(topic = %topic, error = %e, "cannot subscribe yet; {what} unavailable until it works (asking again)");
            }
        })
        .await;
    let Ok(sub) = subscribed else {
        unreachable!("a retry policy without a bound on its attempts ends only in success")
    };
    if failed {
        tracing::info!(topic = %topic, "subscribed; {what} available");
    }
    sub
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// The embedded bus behind a broker that refuses the first `refusals`
    /// subscriptions, as a recovering Pulsar broker does.
    struct Recovering {
        refusals: AtomicU32,
        asked: AtomicU32,
        inner: embedded::EmbeddedBus,
    }

    impl Bus for Recovering {
        fn backend(&self) -> &'static str {
            "recovering"
        }
        fn ensure_producer<'a>(&'a self, topic: &'a Topic) -> BusFuture<'a, ()> {
            self.inner.ensure_producer(topic)
        }
        fn publish<'a>(&'a self, msg: &'a RawMessage) -> BusFuture<'a, ()> {
            self.inner.publish(msg)
        }
        fn subscribe<'a>(&'a self, topic: &'a Topic, name: &'a str) -> BusFuture<'a, Subscription> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let refuse = self
                .refusals
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                return Box::pin(async {
                    Err(BusError::Unavailable {
                        backend: "recovering",
                        detail: "Not enough non-faulty bookies available".into(),
                    })
                });
            }
            self.inner.subscribe(topic, name)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_refused_at_first_is_asked_for_again_until_it_works() {
        let bus = Recovering {
            refusals: AtomicU32::new(5),
            asked: AtomicU32::new(0),
            inner: embedded::EmbeddedBus::new(16),
        };
        let topic = Topic::control_command(&triad_schemas::ids::AxisId::new("axis_1").unwrap());
        let t0 = tokio::time::Instant::now();
        let _sub = subscribe_until_it_works(&bus, &topic, "test", "commands are").await;
        assert_eq!(
            bus.asked.load(Ordering::Relaxed),
            6,
            "five refusals, then the subscription"
        );
        // 1 + 2 + 4 + 8 + 10 s of backoff (jitter off), on the paused clock.
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(20) && waited <= Duration::from_secs(30),
            "{waited:?}"
        );
    }
}
