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
