//! Command-line tools around the bus: `triad schemas push|check` against a
//! Pulsar admin API, and `triad bus-load`, which drives the node's delivery
//! path (publisher → outbox → flusher → Pulsar) at full speed.

use crate::bus::pulsar_admin::PulsarAdmin;
use crate::config::NodeConfig;
use triad_schemas::{DefectBox, Envelope, InspectionResult, Topic, Verdict, codec};

/// Every topic the configured node produces or consumes.
pub fn topics_of(cfg: &NodeConfig) -> Vec<Topic> {
    let mut t = Vec::new();
    for a in &cfg.axes {
        t.push(Topic::control_command(&a.id));
        t.push(Topic::control_state(&a.id));
    }
    for c in &cfg.cells {
        t.push(Topic::inspection_result(&c.id));
    }
    for a in &cfg.assets {
        t.push(Topic::twin_status(&a.id));
        t.push(Topic::twin_alert(&a.id));
    }
    t.push(Topic::mes_work_order(&cfg.line));
    t.push(Topic::audit_event(&cfg.node));
    t.push(Topic::model_request(&cfg.node));
    t
}

/// `triad schemas push|check`: register or check every topic's schema.
/// Returns the number of topics whose schema is refused.
pub async fn schemas_command(
    push: bool,
    topics: &[Topic],
    admin: &PulsarAdmin,
    tenant: &str,
    namespace: &str,
) -> anyhow::Result<usize> {
    if push {
        admin.configure_namespace(tenant, namespace).await?;
        println!("namespace {tenant}/{namespace}: schema compatibility BACKWARD, deduplication on");
    } else {
        let strategy = admin.compatibility_strategy(tenant, namespace).await?;
        println!("namespace {tenant}/{namespace}: schema compatibility {strategy}");
    }
    let mut refused = 0;
    for t in topics {
        let local = crate::bus::pulsar_admin::local_name(t);
        let ours = codec::schema_json(t.kind());
        let name = t.pulsar_name(tenant, namespace);
        let registered = admin.get_schema(tenant, namespace, &local).await?;
        // Our own rule first: it names the field.
        if let Some(reg) = &registered
            && let Err(e) = codec::check_compatible(reg, ours)
        {
            println!("REFUSED  {:<28} {name}\n         {e}", t.name());
            refused += 1;
            continue;
        }
        if push {
            match admin.push_schema(tenant, namespace, &local, ours).await {
                Ok(v) => println!("ok       {:<28} {name} (schema version {v})", t.name()),
                Err(e) => {
                    println!("REFUSED  {:<28} {name}\n         {e}", t.name());
                    refused += 1;
                }
            }
        } else {
            match admin.check_schema(tenant, namespace, &local, ours).await {
                Ok(()) if registered.is_none() => println!("ok       {:<28} {name} (nothing registered yet)", t.name()),
                Ok(()) => println!(
                    "ok       {:<28} {name} (compatible with the registered schema)",
                    t.name()
                ),
                Err(e) => {
                    println!("REFUSED  {:<28} {name}\n         {e}", t.name());
                    refused += 1;
                }
            }
        }
    }
    Ok(refused)
}

/// A synthetic inspection result number `i` (every 17th fails), for load
/// tests and benchmarks.
pub fn synthetic_result(envelope: Envelope, cell: &str, i: u64, now: i64) -> InspectionResult {
    let fail = i.is_multiple_of(17);
    InspectionResult {
        envelope,
        cell: cell.to_string(),
        part_id: format!("M{:06}", 1 + i / 24),
        weld_index: (i % 24) as i32,
        batch_id: format!("B{:06}", 1 + i / 24),
        frame_stamp_ns: now,
        roi_hash: format!("{i:032x}"),
        verdict: if fail { Verdict::Fail } else { Verdict::Pass },
        defects: if fail {
            vec![DefectBox {
                class: "porosity".into(),
                score: 0.9,
                x: 24,
                y: 16,
                w: 8,
                h: 8,
            }]
        } else {
            vec![]
        },
        model_name: "weld_seam".into(),
        model_version: "1.0.0".into(),
        latency_us: 800,
    }
}

/// `triad bus-load`: publish inspection results 1..=`count` of `cell`
/// through the outbox to Pulsar, resuming where a previous (possibly killed)
/// run stopped, and return once every one is acknowledged by the broker.
#[cfg(feature = "pulsar")]
pub async fn bus_load(
    pulsar: crate::config::PulsarConfig,
    state_dir: &std::path::Path,
    cell: triad_schemas::ids::CellId,
    count: u64,
) -> anyhow::Result<()> {
    use crate::bus::Bus;
    use crate::bus::outbox::Outbox;
    use crate::bus::publisher::{Publisher, flush_bus_lane};
    use crate::bus::pulsar::PulsarBus;
    use crate::clock::{Clock, SystemClock};
    use crate::config::OutboxLimits;
    use crate::metrics::Metrics;
    use std::sync::Arc;
    use std::time::Duration;
    use triad_schemas::ids::NodeId;
    std::fs::create_dir_all(state_dir)?;
    let limits = OutboxLimits {
        max_entries: 1_000_000,
        max_bytes: 1 << 30,
    };
    let outbox = Arc::new(Outbox::open(&state_dir.join("outbox.redb"), limits)?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let bus = Arc::new(PulsarBus::new(pulsar).map_err(anyhow::Error::msg)?);
    if let Err(e) = bus.connect().await {
        tracing::warn!(error = %e, "Pulsar not reachable yet; publishing into the outbox meanwhile");
    }
    let bus: Arc<dyn Bus> = bus;
    let node = NodeId::new("bus-load").expect("valid id");
    let publisher = Publisher::new(node, clock.clone(), bus.clone(), outbox.clone(), metrics.clone());
    let topic = Topic::inspection_result(&cell);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(flush_bus_lane(outbox.clone(), bus.clone(), metrics, stop_rx));
    let start = outbox.last_sequence(topic.name())? as u64;
    println!("{{\"event\":\"start\",\"resume_after\":{start},\"count\":{count}}}");
    let mut last_print = std::time::Instant::now();
    for i in start + 1..=count {
        let now = clock.now_ns();
        let msg = synthetic_result(publisher.envelope(now), cell.as_str(), i, now);
        let stored = publisher.publish_durably(&topic, msg, false).await?;
        anyhow::ensure!(
            stored.envelope.sequence == i as i64,
            "sequence {} stored for result {i}",
            stored.envelope.sequence
        );
        if last_print.elapsed() >= Duration::from_millis(250) {
            println!(
                "{{\"event\":\"progress\",\"appended\":{i},\"pending\":{}}}",
                outbox.stats().pending_bus
            );
            last_print = std::time::Instant::now();
        }
    }
    loop {
        let pending = outbox.stats().pending_bus;
        println!("{{\"event\":\"progress\",\"appended\":{count},\"pending\":{pending}}}");
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop_tx.send(true);
    let _ = flusher.await;
    println!("{{\"event\":\"done\",\"count\":{count}}}");
    Ok(())
}
