//! The Apache Pulsar backend of the bus.
//!
//! - **One long-lived client**, connected lazily and re-connected on demand:
//!   a broker that is down at start-up or goes away later never stops the
//!   node; publishes fail with [`BusError::Unavailable`] and durable messages
//!   wait in the outbox. Every call runs under a timeout.
//! - **Topic names** follow the rule in `triad_schemas::topic`:
//!   `persistent://<tenant>/<namespace>/<family>.<id>.<kind>`.
//! - **Schemas**: every producer and consumer carries the topic's AVRO schema
//!   from `schemas/avro/`. Before a producer opens, the schema registered for
//!   the topic (if any) is fetched and checked with our own BACKWARD rule, so a
//!   refusal names the field that broke which rule; the broker enforces the
//!   same rule (the node sets the namespace's strategy to BACKWARD).
//! - **QoS**: no batching anywhere (control commands must not wait, and one
//!   entry per message keeps the "last message" check below exact);
//!   durable topics use an exclusive producer; compacted topics get a
//!   topic-level compaction threshold.
//! - **Exactly once on the topic**: pulsar-rs numbers messages itself from 0
//!   for every new producer and cannot send the outbox's sequence as the
//!   Pulsar sequence id, so broker deduplication alone cannot recognise a
//!   restarted node's resends. Instead, whenever a durable topic's producer is
//!   (re)created or a send failed, the node reads the topic's last message
//!   (admin `examinemessage`) and skips every outbox entry whose envelope
//!   sequence is already there. Messages are persisted in order and the
//!   producer is exclusive, so "the last one" identifies everything before it.
//!   The one topic every node of a line writes (`mes/<line>/workorder`) takes
//!   a shared producer instead; there the node looks back for the last
//!   message whose envelope names it (at most [`SHARED_TOPIC_LOOKBACK`]).
//!   Broker deduplication stays enabled on the namespace for pulsar-rs's own
//!   in-session resends.
//! - **Drop anywhere**: pulsar-rs spawns a task from the `Drop` of every
//!   producer and consumer (to tell the broker it closed), and its
//!   `TokioExecutor` spawns with `tokio::spawn`, which panics outside a runtime
//!   ("there is no reactor running"). The client here runs on
//!   [`RuntimeExecutor`], which spawns on the `Handle` of the runtime the bus
//!   first connected in: a bus, client or producer dropped on a plain thread,
//!   or after that runtime has ended, never panics (after the end, the close
//!   task is dropped unrun; the broker notices the closed socket).
//!   [`PulsarBus::close`] closes the producers explicitly, inside the runtime.
//! - **No Nagle**: pulsar-rs leaves Nagle's algorithm on for its broker
//!   connections (the C++ and Java clients turn it off). One connection
//!   carries the node's command consumer and its producers, so a publish
//!   written right after an acknowledgement would wait for the broker's
//!   delayed TCP ACK. Until pulsar-rs sets `TCP_NODELAY` itself
//!   (docs/upstream/pulsar-rs-tcp-nodelay.patch), [`set_nodelay`] sets it on
//!   this process's sockets to the broker's port after every connect,
//!   producer and subscription.

use super::pulsar_admin::{AdminError, PulsarAdmin};
use super::pulsar_config::PulsarConfig;
use super::{Bus, BusError, BusFuture, Delivery, RawMessage, Subscription};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::executor::{Delay, Executor, ExecutorKind, Interval, JoinHandle};
use pulsar::proto::MessageIdData;
use pulsar::{
    Authentication, ConnectionRetryOptions, ConsumerOptions, OperationRetryOptions, ProducerOptions, Pulsar, SubType,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use triad_schemas::{Topic, codec};

type Client = Pulsar<RuntimeExecutor>;
type Producer = pulsar::Producer<RuntimeExecutor>;

/// pulsar-rs's executor, bound to one tokio runtime through its `Handle`.
///
/// Unlike `pulsar::TokioExecutor` (`tokio::spawn`, which needs the calling
/// thread to be inside a runtime), it can spawn from any thread, including
/// from the `Drop` of a producer on a thread that never entered a runtime;
/// once the runtime has shut down, tokio drops a spawned task instead of
/// running it, without a panic.
#[derive(Clone, Debug)]
pub struct RuntimeExecutor {
    handle: tokio::runtime::Handle,
}

impl RuntimeExecutor {
    /// An executor spawning on the runtime of `handle`.
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Self { handle }
    }
}

impl Executor for RuntimeExecutor {
    fn spawn(&self, f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Result<(), ()> {
        drop(self.handle.spawn(f));
        Ok(())
    }

    fn spawn_blocking<F, Res>(&self, f: F) -> JoinHandle<Res>
    where
        F: FnOnce() -> Res + Send + 'static,
        Res: Send + 'static,
    {
        JoinHandle::Tokio(self.handle.spawn_blocking(f))
    }

    fn interval(&self, duration: Duration) -> Interval {
        let _runtime = self.handle.enter();
        Interval::Tokio(tokio::time::interval(duration))
    }

    fn delay(&self, duration: Duration) -> Delay {
        let _runtime = self.handle.enter();
        Delay::Tokio(tokio::time::sleep(duration))
    }

    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Tokio
    }
}

/// Producer state of one topic.
struct TopicState {
    producer: Option<Producer>,
    /// Highest envelope sequence known to be on the topic (durable topics);
    /// `None` means unknown: read the last message before sending.
    on_broker: Option<i64>,
    /// Set when the schema was refused: the producer is not started.
    refused: Option<String>,
}

/// The Pulsar bus.
pub struct PulsarBus {
    cfg: PulsarConfig,
    token: Option<String>,
    client: tokio::sync::Mutex<Option<Client>>,
    /// Last failed connection attempt, its error and the current backoff:
    /// callers in between get the error at once instead of hammering the broker.
    last_failure: Mutex<Option<(std::time::Instant, BusError, Duration)>>,
    admin: PulsarAdmin,
    topics: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TopicState>>>>,
}

/// Turn Nagle's algorithm off on every TCP socket of this process whose peer
/// port is `port` (the broker's): pulsar-rs gives no access to its sockets.
/// Harmless on a socket that is not pulsar-rs's (another client of the same
/// port only gets lower latency). Returns how many sockets it set. Linux.
#[cfg(target_os = "linux")]
pub fn set_nodelay(port: u16) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<libc::c_int>() else {
            continue;
        };
        if !std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: getpeername/setsockopt only read and write the buffers given
        // with their lengths; on an fd that closed meanwhile they fail (EBADF),
        // and one reused for another socket is checked by its peer port first.
        unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getpeername(fd, (&raw mut addr).cast(), &mut len) != 0 {
                continue;
            }
            let peer_port = match addr.ss_family as libc::c_int {
                libc::AF_INET => u16::from_be((*(&raw const addr).cast::<libc::sockaddr_in>()).sin_port),
                libc::AF_INET6 => u16::from_be((*(&raw const addr).cast::<libc::sockaddr_in6>()).sin6_port),
                _ => continue,
            };
            if peer_port != port {
                continue;
            }
            let one: libc::c_int = 1;
            if libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
            {
                set += 1;
            }
        }
    }
    set
}

/// Elsewhere pulsar-rs's sockets keep Nagle's algorithm on.
#[cfg(not(target_os = "linux"))]
pub fn set_nodelay(_port: u16) -> usize {
    0
}

/// The port of a `pulsar://` / `pulsar+ssl://` URL (6650 / 6651 if absent).
fn broker_port(url: &str) -> u16 {
    let tls = url.starts_with("pulsar+ssl://");
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', ',']).next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(if tls { 6651 } else { 6650 })
}

fn unavailable(detail: impl Into<String>) -> BusError {
    BusError::Unavailable {
        backend: "pulsar",
        detail: detail.into(),
    }
}

fn admin_err(e: AdminError) -> BusError {
    unavailable(e.to_string())
}

/// How many messages back a node looks for its own last one on a topic
/// every node of a line writes (each look is one admin call, made only when
/// a producer is (re)created or a send failed).
pub const SHARED_TOPIC_LOOKBACK: u32 = 256;

impl PulsarBus {
    /// A bus for `cfg`. Does not connect yet; [`PulsarBus::connect`] does.
    pub fn new(cfg: PulsarConfig) -> Result<Self, String> {
        let token = cfg
            .token_file
            .as_deref()
            .map(super::pulsar_admin::read_token)
            .transpose()?;
        let ca = match &cfg.tls_ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|e| format!("cannot read the CA file {}: {e}", f.display()))?),
            None => None,
        };
        let admin = PulsarAdmin::new(&cfg.admin_url, token.clone(), ca.as_deref(), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cfg,
            token,
            client: tokio::sync::Mutex::new(None),
            last_failure: Mutex::new(None),
            admin,
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// The admin client.
    pub fn admin(&self) -> &PulsarAdmin {
        &self.admin
    }

    /// The settings.
    pub fn config(&self) -> &PulsarConfig {
        &self.cfg
    }

    /// Connect now (and set the namespace policies if configured). Errors
    /// are returned, not fatal: the bus keeps trying on every call.
    pub async fn connect(&self) -> Result<(), BusError> {
        self.client().await?;
        if self.cfg.configure_namespace {
            self.admin
                .configure_namespace(&self.cfg.tenant, &self.cfg.namespace)
                .await
                .map_err(admin_err)?;
        }
        Ok(())
    }

    /// Close every producer (telling the broker) and forget the client; a
    /// later call connects again. Call it inside the runtime before the bus
    /// is dropped for a clean close. A producer busy with a publish for more
    /// than 2 s is left to be dropped with the bus, which is safe too. What
    /// the outbox holds stays there: this only closes connections.
    pub async fn close(&self) {
        let states: Vec<_> = self
            .topics
            .lock()
            .expect("topic map poisoned")
            .values()
            .cloned()
            .collect();
        for state in states {
            let Ok(mut st) = tokio::time::timeout(Duration::from_secs(2), state.lock()).await else {
                continue;
            };
            if let Some(mut p) = st.producer.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), p.close()).await;
            }
            st.on_broker = None;
        }
        if let Ok(mut client) = tokio::time::timeout(Duration::from_secs(2), self.client.lock()).await {
            *client = None;
        }
    }

    async fn client(&self) -> Result<Client, BusError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        if let Some((at, err, backoff)) = self.last_failure.lock().expect("poisoned").as_ref()
            && at.elapsed() < *backoff
        {
            return Err(err.clone());
        }
        let result = self.build_client().await;
        match &result {
            Ok(c) => {
                *guard = Some(c.clone());
                *self.last_failure.lock().expect("poisoned") = None;
            }
            Err(e) => {
                let mut lf = self.last_failure.lock().expect("poisoned");
                let backoff = lf
                    .as_ref()
                    .map(|(_, _, b)| (*b * 2).min(Duration::from_secs(30)))
                    .unwrap_or(Duration::from_secs(1));
                *lf = Some((std::time::Instant::now(), e.clone(), backoff));
            }
        }
        result
    }

    async fn build_client(&self) -> Result<Client, BusError> {
        let executor = RuntimeExecutor::new(tokio::runtime::Handle::current());
        let mut b = Pulsar::builder(self.cfg.url.clone(), executor)
            .with_operation_retry_options(OperationRetryOptions {
                operation_timeout: self.cfg.operation_timeout,
                retry_delay: Duration::from_millis(500),
                max_retries: None,
            })
            .with_connection_retry_options(ConnectionRetryOptions {
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                max_retries: 3,
                connection_timeout: Duration::from_secs(5),
                keep_alive: Duration::from_secs(10),
                ..ConnectionRetryOptions::default()
            });
        if let Some(t) = &self.token {
            b = b.with_auth(Authentication {
                name: "token".into(),
                data: t.clone().into_bytes(),
            });
        }
        if let Some(ca) = &self.cfg.tls_ca_file {
            b = b
                .with_certificate_chain_file(ca)
                .map_err(|e| unavailable(format!("CA file {}: {e}", ca.display())))?;
        }
        let client = tokio::time::timeout(Duration::from_secs(15), b.build())
            .await
            .map_err(|_| unavailable(format!("no connection to {} within 15 s", self.cfg.url)))?
            .map_err(|e| {
                let hint = if self.cfg.url.starts_with("pulsar+ssl://") {
                    match &self.cfg.tls_ca_file {
                        None => " (TLS: if the broker's certificate is not from a public CA, set [bus] tls_ca_file to the CA that signed it)",
                        Some(_) => " (TLS: check that [bus] tls_ca_file is the CA that signed the broker's certificate and that the certificate names the address in [bus] url)",
                    }
                } else {
                    ""
                };
                unavailable(format!("cannot connect to {}: {e}{hint}", self.cfg.url))
            })?;
        let nodelay = set_nodelay(broker_port(&self.cfg.url));
        tracing::info!(url = %self.cfg.url, nodelay_sockets = nodelay, "connected to Pulsar");
        Ok(client)
    }

    fn state(&self, topic: &Topic) -> Arc<tokio::sync::Mutex<TopicState>> {
        self.topics
            .lock()
            .expect("topic map poisoned")
            .entry(topic.name().to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(TopicState {
                    producer: None,
                    on_broker: None,
                    refused: None,
                }))
            })
            .clone()
    }

    /// The local part of the Pulsar name (`insp.cell_2245.result`).
    pub fn local_name(topic: &Topic) -> String {
        super::pulsar_admin::local_name(topic)
    }

    /// Compare our schema with the one registered for `topic`; the error
    /// names the field and the rule.
    pub async fn check_registered(&self, topic: &Topic) -> Result<(), BusError> {
        let ours = codec::schema_json(topic.kind());
        let local = Self::local_name(topic);
        let registered = self
            .admin
            .get_schema(&self.cfg.tenant, &self.cfg.namespace, &local)
            .await
            .map_err(admin_err)?;
        if let Some(reg) = registered
            && let Err(e) = codec::check_compatible(&reg, ours)
        {
            return Err(BusError::IncompatibleSchema {
                topic: topic.name().into(),
                detail: e.to_string(),
            });
        }
        Ok(())
    }

    async fn open_producer(&self, topic: &Topic, st: &mut TopicState) -> Result<(), BusError> {
        if let Some(why) = &st.refused {
            return Err(BusError::IncompatibleSchema {
                topic: topic.name().into(),
                detail: why.clone(),
            });
        }
        if st.producer.is_some() {
            return Ok(());
        }
        let client = self.client().await?;
        if let Err(e) = self.check_registered(topic).await {
            if let BusError::IncompatibleSchema { detail, .. } = &e {
                st.refused = Some(detail.clone());
                tracing::error!(topic = %topic, error = %e, "producer not started: schema incompatible with the broker's registry");
            }
            return Err(e);
        }
        let qos = topic.qos();
        let schema = pulsar::proto::Schema {
            name: topic.kind().record_name().into(),
            schema_data: codec::schema_json(topic.kind()).as_bytes().to_vec(),
            r#type: pulsar::proto::schema::Type::Avro as i32,
            ..Default::default()
        };
        let options = ProducerOptions {
            schema: Some(schema),
            batch_size: None,
            // Exclusive: one producer per durable topic, which the last-message
            // check relies on. A topic every node of a line writes
            // (`mes/<line>/workorder`) is shared: the check looks for this
            // node's last message there ([`Self::resync`]).
            access_mode: if qos.durable() && !topic.shared_by_nodes() {
                Some(1)
            } else {
                None
            },
            block_queue_if_full: true,
            ..Default::default()
        };
        let full = topic.pulsar_name(&self.cfg.tenant, &self.cfg.namespace);
        let build = client.producer().with_topic(full.clone()).with_options(options).build();
        let producer = match tokio::time::timeout(self.cfg.operation_timeout, build).await {
            Err(_) => {
                return Err(unavailable(format!(
                    "producer for {full} not created within {:?}",
                    self.cfg.operation_timeout
                )));
            }
            Ok(Err(e)) => {
                let text = e.to_string();
                if text.contains("IncompatibleSchema") || text.contains("ncompatible") {
                    let detail = match self.check_registered(topic).await {
                        Err(BusError::IncompatibleSchema { detail, .. }) => format!("{detail} (broker: {text})"),
                        _ => format!("broker: {text}"),
                    };
                    st.refused = Some(detail.clone());
                    tracing::error!(topic = %topic, error = %detail, "producer not started: the broker refused the schema");
                    return Err(BusError::IncompatibleSchema {
                        topic: topic.name().into(),
                        detail,
                    });
                }
                return Err(unavailable(format!("cannot create the producer for {full}: {text}")));
            }
            Ok(Ok(p)) => p,
        };
        if qos.compacted() {
            let local = Self::local_name(topic);
            if let Err(e) = self
                .admin
                .set_compaction(&self.cfg.tenant, &self.cfg.namespace, &local, 1 << 20)
                .await
            {
                tracing::warn!(topic = %topic, error = %e, "could not set the compaction threshold; the topic keeps every message");
            }
        }
        // The producer may have opened a connection to the topic's owner.
        set_nodelay(broker_port(&self.cfg.url));
        st.producer = Some(producer);
        st.on_broker = None;
        Ok(())
    }

    /// The highest sequence of this node's messages on `topic`: the last
    /// message's, or on a topic every node of a line writes, the last one
    /// whose envelope names `node` (looking back at most
    /// [`SHARED_TOPIC_LOOKBACK`] messages; past that, or on an empty topic,
    /// 0: everything pending is sent, and the MES recognises a repeat by its
    /// idempotency key).
    async fn resync(&self, topic: &Topic, st: &mut TopicState, node: &str) -> Result<i64, BusError> {
        if let Some(s) = st.on_broker {
            return Ok(s);
        }
        let local = Self::local_name(topic);
        let positions = if topic.shared_by_nodes() {
            SHARED_TOPIC_LOOKBACK
        } else {
            1
        };
        let mut seq = 0;
        for position in 1..=positions {
            let msg = self
                .admin
                .message_from_end(&self.cfg.tenant, &self.cfg.namespace, &local, position)
                .await
                .map_err(admin_err)?;
            let Some(bytes) = msg else { break };
            match codec::decode_envelope(topic.kind(), &bytes) {
                Ok(env) if !topic.shared_by_nodes() || env.node == node => {
                    seq = env.sequence;
                    break;
                }
                Ok(_) => {} // another node's
                Err(e) => {
                    tracing::warn!(topic = %topic, position, error = %e, "a message on the topic is not ours; sending everything pending");
                    break;
                }
            }
            if position == positions {
                tracing::warn!(topic = %topic, node, looked_back = positions, "none of the topic's last messages is this node's; sending everything pending (the MES recognises a repeat by its idempotency key)");
            }
        }
        tracing::debug!(topic = %topic, last_sequence = seq, "resynchronised with the topic");
        st.on_broker = Some(seq);
        Ok(seq)
    }

    /// Publish `msgs` (one topic, increasing sequences): pipelined sends, then
    /// receipts in order.
    async fn send_all(&self, msgs: &[RawMessage]) -> (usize, Option<BusError>) {
        let Some(first) = msgs.first() else { return (0, None) };
        let topic = &first.topic;
        let durable = topic.qos().durable();
        let state = self.state(topic);
        let mut st = state.lock().await;
        if let Err(e) = self.open_producer(topic, &mut st).await {
            return (0, Some(e));
        }
        let already = if durable {
            // The node is the one in the envelopes it sends.
            let node = codec::decode_envelope(topic.kind(), &first.payload)
                .map(|e| e.node)
                .unwrap_or_default();
            match self.resync(topic, &mut st, &node).await {
                Ok(s) => s,
                Err(e) => return (0, Some(e)),
            }
        } else {
            i64::MIN
        };
        let skip = msgs.iter().take_while(|m| durable && m.sequence <= already).count();
        let mut futures = Vec::with_capacity(msgs.len() - skip);
        let producer = st.producer.as_mut().expect("opened above");
        let mut failure = None;
        for m in &msgs[skip..] {
            let message = pulsar::producer::Message {
                payload: m.payload.clone(),
                partition_key: Some(m.key.clone()),
                properties: HashMap::from([("triad-seq".to_string(), m.sequence.to_string())]),
                ..Default::default()
            };
            match tokio::time::timeout(self.cfg.operation_timeout, producer.send_non_blocking(message)).await {
                Ok(Ok(f)) => futures.push((m.sequence, f)),
                Ok(Err(e)) => {
                    failure = Some(unavailable(format!("send to {topic} failed: {e}")));
                    break;
                }
                Err(_) => {
                    failure = Some(unavailable(format!("send to {topic} timed out")));
                    break;
                }
            }
        }
        let mut acked = skip;
        for (seq, f) in futures {
            if failure.is_some() {
                break;
            }
            match tokio::time::timeout(self.cfg.operation_timeout, f).await {
                Ok(Ok(_receipt)) => {
                    acked += 1;
                    if durable {
                        st.on_broker = Some(seq);
                    }
                }
                Ok(Err(e)) => failure = Some(unavailable(format!("broker did not persist a message of {topic}: {e}"))),
                Err(_) => {
                    failure = Some(unavailable(format!(
                        "no receipt from the broker for {topic} within {:?}",
                        self.cfg.operation_timeout
                    )))
                }
            }
        }
        if failure.is_some() {
            // Forget the producer (its pending resends die with it) and what we
            // believed was on the topic: the next attempt starts from the
            // broker's truth.
            if let Some(mut p) = st.producer.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), p.close()).await;
            }
            st.on_broker = None;
        }
        (acked, failure)
    }
}

impl Bus for PulsarBus {
    fn backend(&self) -> &'static str {
        "pulsar"
    }

    fn close(&self) -> BusFuture<'_, ()> {
        Box::pin(async move {
            PulsarBus::close(self).await;
            Ok(())
        })
    }

    fn ensure_producer<'a>(&'a self, topic: &'a Topic) -> BusFuture<'a, ()> {
        Box::pin(async move {
            let state = self.state(topic);
            let mut st = state.lock().await;
            self.open_producer(topic, &mut st).await
        })
    }

    fn publish<'a>(&'a self, msg: &'a RawMessage) -> BusFuture<'a, ()> {
        Box::pin(async move {
            match self.send_all(std::slice::from_ref(msg)).await {
                (_, Some(e)) => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn publish_many<'a>(&'a self, msgs: &'a [RawMessage]) -> BusFuture<'a, (usize, Option<BusError>)> {
        Box::pin(async move { Ok(self.send_all(msgs).await) })
    }

    fn subscribe<'a>(&'a self, topic: &'a Topic, name: &'a str) -> BusFuture<'a, Subscription> {
        Box::pin(async move {
            let client = self.client().await?;
            let full = topic.pulsar_name(&self.cfg.tenant, &self.cfg.namespace);
            let schema = pulsar::proto::Schema {
                name: topic.kind().record_name().into(),
                schema_data: codec::schema_json(topic.kind()).as_bytes().to_vec(),
                r#type: pulsar::proto::schema::Type::Avro as i32,
                ..Default::default()
            };
            let build = client
                .consumer()
                .with_topic(full.clone())
                .with_subscription(name)
                .with_subscription_type(SubType::Failover)
                .with_options(ConsumerOptions {
                    durable: Some(true),
                    schema: Some(schema),
                    initial_position: InitialPosition::Latest,
                    ..Default::default()
                })
                .build::<Vec<u8>>();
            let mut consumer = tokio::time::timeout(self.cfg.operation_timeout, build)
                .await
                .map_err(|_| unavailable(format!("subscription {name} to {full} not created in time")))?
                .map_err(|e| unavailable(format!("cannot subscribe {name} to {full}: {e}")))?;
            set_nodelay(broker_port(&self.cfg.url));
            let (tx, rx) = mpsc::channel(256);
            let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<MessageIdData>();
            let topic = topic.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(id) = ack_rx.recv() => {
                            if let Err(e) = consumer.ack_with_id(&full, id).await {
                                tracing::warn!(topic = %topic, error = %e, "ack failed; the message will be redelivered");
                            }
                        }
                        next = consumer.next() => {
                            let Some(next) = next else { return };
                            let msg = match next {
                                Ok(m) => m,
                                Err(e) => {
                                    tracing::warn!(topic = %topic, error = %e, "receive failed");
                                    continue;
                                }
                            };
                            let id = msg.message_id.id.clone();
                            let raw = RawMessage {
                                topic: topic.clone(),
                                key: msg.payload.metadata.partition_key.clone().unwrap_or_default(),
                                sequence: msg.payload.metadata.sequence_id as i64,
                                payload: msg.payload.data.clone(),
                            };
                            let ack_tx = ack_tx.clone();
                            let delivery = Delivery::new(raw, Some(Box::new(move || { let _ = ack_tx.send(id); })));
                            if tx.send(delivery).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Ok(Subscription::new(rx))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_port_comes_from_the_url_or_the_scheme_default() {
        assert_eq!(broker_port("pulsar://127.0.0.1:6650"), 6650);
        assert_eq!(broker_port("pulsar://broker.example:16650/"), 16650);
        assert_eq!(broker_port("pulsar://a:7000,b:7000"), 7000);
        assert_eq!(broker_port("pulsar://broker.example"), 6650);
        assert_eq!(broker_port("pulsar+ssl://broker.example"), 6651);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn set_nodelay_turns_nagle_off_on_sockets_to_that_port_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to_broker = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_broker.nodelay().unwrap() && !elsewhere.nodelay().unwrap());
        assert!(set_nodelay(port) >= 1);
        assert!(to_broker.nodelay().unwrap(), "the socket to the port has TCP_NODELAY");
        assert!(!elsewhere.nodelay().unwrap(), "a socket to another port keeps Nagle");
    }
}
