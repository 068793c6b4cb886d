//! The Modbus link task: one per connection (a TCP endpoint, a serial
//! port), polling every device (unit) on it.
//!
//! Each device's points are read in blocks ([`triad_hw::modbus::plan`]) per
//! poll group, at the group's period; its outputs are written at the same
//! polls, on change or every poll. Every request is wrapped in the device's
//! timeout. After a timeout or a transport error the connection is dropped
//! and made again before the next request, so that a late answer can never
//! be taken for the next request's (tokio-modbus matches answers to
//! requests by order on RTU). A device whose request fails after its retries
//! is *demoted*: it is tried again after a wait that doubles from
//! `reconnect_min_ms` to `reconnect_max_ms`, with a single try, so the other
//! devices on the link keep their period. Its inputs go stale meanwhile.
//!
//! Exception answers are errors naming device, unit, table and registers;
//! exception 2 (illegal data address) on a block that spans a gap splits
//! the block into its contiguous runs for good. Each failure is logged when
//! it starts and when it ends, not at every poll.

use super::image::SharedImage;
use crate::clock::Clock;
use crate::config::modbus::{ModbusConfig, ModbusLink, Parity};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;
use triad_hw::Direction;
use triad_hw::modbus::point::items;
use triad_hw::modbus::{Block, Table, plan};

/// One device (unit) on a link.
pub struct LinkDevice {
    /// Its id.
    pub id: String,
    /// Its config.
    pub cfg: Arc<ModbusConfig>,
    /// What it shares with the scan.
    pub shared: Arc<SharedImage>,
}

/// Why one request failed.
#[derive(Debug)]
enum Failure {
    /// No answer in time.
    Timeout,
    /// The transport failed (refused, cut, malformed answer).
    Transport(String),
    /// The device answered with an exception.
    Exception(ExceptionCode),
    /// The answer had the wrong number of items.
    Malformed(String),
}

impl Failure {
    /// The device is silent or unreachable (not an exception it chose).
    fn is_link(&self) -> bool {
        matches!(self, Failure::Timeout | Failure::Transport(_) | Failure::Malformed(_))
    }
}

/// What a request brought (a write brings no items).
enum Answer {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// One request.
enum Op {
    Read { table: Table, start: u16, count: u16 },
    WriteCoil { start: u16, on: bool },
    WriteRegisters { start: u16, regs: [u16; 4], count: usize },
}

impl Op {
    async fn call(&self, ctx: &mut Context) -> tokio_modbus::Result<Answer> {
        let none = |r: Result<(), ExceptionCode>| r.map(|()| Answer::Bits(Vec::new()));
        Ok(match *self {
            Op::Read { table, start, count } => match table {
                Table::Coil => ctx.read_coils(start, count).await?.map(Answer::Bits),
                Table::Discrete => ctx.read_discrete_inputs(start, count).await?.map(Answer::Bits),
                Table::Input => ctx.read_input_registers(start, count).await?.map(Answer::Registers),
                Table::Holding => ctx.read_holding_registers(start, count).await?.map(Answer::Registers),
            },
            Op::WriteCoil { start, on } => none(ctx.write_single_coil(start, on).await?),
            Op::WriteRegisters {
                start,
                ref regs,
                count: 1,
            } => none(ctx.write_single_register(start, regs[0]).await?),
            Op::WriteRegisters { start, ref regs, count } => {
                none(ctx.write_multiple_registers(start, &regs[..count]).await?)
            }
        })
    }
}

/// A device's polling state on its link.
struct Polled {
    dev: LinkDevice,
    /// Per group: next poll, its blocks, its outputs.
    groups: Vec<Group>,
    /// Demoted until then (a silent device).
    demoted_until: Option<Instant>,
    backoff: Duration,
    /// The last value written to each output point (f64 bits).
    written: Vec<Option<u64>>,
    /// Failures already logged: (table, start, what), cleared on success.
    reported: Vec<(Table, u16, String)>,
}

struct Group {
    period: Duration,
    next: Instant,
    blocks: Vec<Block>,
    outputs: Vec<usize>,
}

impl Polled {
    fn new(dev: LinkDevice, now: Instant) -> Self {
        let spans: Vec<_> = dev.cfg.points.iter().map(|p| p.span).collect();
        let groups = dev
            .cfg
            .groups
            .iter()
            .enumerate()
            .map(|(g, &(_, period))| {
                let of = |d: Direction| {
                    dev.cfg
                        .points
                        .iter()
                        .enumerate()
                        .filter(move |(_, p)| p.group == g && p.direction == d)
                        .map(|(i, _)| i)
                };
                let inputs: Vec<usize> = of(Direction::Input).collect();
                Group {
                    period,
                    next: now,
                    blocks: plan::plan(&spans, &inputs, dev.cfg.merge_gap),
                    outputs: of(Direction::Output).collect(),
                }
            })
            .collect();
        Self {
            written: vec![None; dev.cfg.points.len()],
            backoff: dev.cfg.reconnect_min,
            groups,
            demoted_until: None,
            reported: Vec::new(),
            dev,
        }
    }

    /// When this device next needs the link.
    fn next_due(&self) -> Instant {
        let next = self.groups.iter().map(|g| g.next).min().unwrap_or_else(Instant::now);
        self.demoted_until.map_or(next, |d| d.max(next))
    }

    /// Log `what` about `table`/`start` once until it clears.
    fn report_once(&mut self, table: Table, start: u16, what: &str, log: impl FnOnce()) {
        if !self
            .reported
            .iter()
            .any(|r| r.0 == table && r.1 == start && r.2 == what)
        {
            self.reported.push((table, start, what.to_string()));
            log();
        }
    }
}

/// One connection and the devices on it.
pub struct Link {
    link: ModbusLink,
    ctx: Option<Context>,
    devices: Vec<Polled>,
    clock: Arc<dyn Clock>,
    /// Requests need a pause between them (the largest request_gap of its devices).
    gap: Duration,
    last_request: Option<Instant>,
}

impl Link {
    /// A link to `devices` (which share one `link`).
    pub fn new(devices: Vec<LinkDevice>, clock: Arc<dyn Clock>) -> Self {
        let now = Instant::now();
        let link = devices[0].cfg.link.clone();
        let gap = devices.iter().map(|d| d.cfg.request_gap).max().unwrap_or_default();
        Self {
            link,
            ctx: None,
            devices: devices.into_iter().map(|d| Polled::new(d, now)).collect(),
            clock,
            gap,
            last_request: None,
        }
    }

    /// Poll until `stop` turns true, then write every device's outputs once
    /// more (the safe values the scan set last) and close.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let due = self
                .devices
                .iter()
                .map(Polled::next_due)
                .min()
                .unwrap_or_else(Instant::now);
            tokio::select! {
                _ = sleep_until(due) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.poll_due().await;
        }
        // The devices that answer first (a silent one would spend the stop
        // budget on its timeout); the silent ones get one try each after.
        let mut order: Vec<usize> = (0..self.devices.len()).collect();
        order.sort_by_key(|&d| self.devices[d].demoted_until.is_some());
        for d in order {
            for g in 0..self.devices[d].groups.len() {
                if !self.write_outputs(d, g, true).await {
                    break;
                }
            }
        }
        if let Some(mut ctx) = self.ctx.take() {
            let _ = timeout(Duration::from_millis(200), ctx.disconnect()).await;
        }
    }

    /// Poll every group of every device now, due or not (a benchmark's
    /// scan; the link task polls by period with [`Link::poll_due`]).
    pub async fn poll_now(&mut self) {
        let now = Instant::now();
        for d in &mut self.devices {
            for g in &mut d.groups {
                g.next = now;
            }
        }
        self.poll_due().await;
    }

    /// Poll every group that is due now.
    pub async fn poll_due(&mut self) {
        let now = Instant::now();
        for d in 0..self.devices.len() {
            if self.devices[d].demoted_until.is_some_and(|u| u > now) {
                continue;
            }
            for g in 0..self.devices[d].groups.len() {
                let grp = &mut self.devices[d].groups[g];
                if grp.next > now {
                    continue;
                }
                // The next poll one period on; a poll that ran late does
                // not make the next ones crowd in.
                grp.next = (grp.next + grp.period).max(now);
                if !self.poll_group(d, g).await {
                    break;
                }
            }
        }
    }

    /// Write the group's outputs, then read its blocks. False if the
    /// device went silent (it is demoted; its other groups wait).
    async fn poll_group(&mut self, d: usize, g: usize) -> bool {
        let t0 = Instant::now();
        if !self.write_outputs(d, g, false).await {
            return false;
        }
        let mut complete = true;
        let mut b = 0;
        while b < self.devices[d].groups[g].blocks.len() {
            let block = self.devices[d].groups[g].blocks[b].clone();
            match self.request_read(d, &block).await {
                Ok(answer) => {
                    self.store(d, &block, &answer);
                    self.clear_reports(d, &block);
                }
                // Devices answer a read across unmapped registers with 2
                // (the spec's), some with 3 or 4.
                Err(Failure::Exception(
                    ExceptionCode::IllegalDataAddress
                    | ExceptionCode::IllegalDataValue
                    | ExceptionCode::ServerDeviceFailure,
                )) if self.split(d, g, b) => continue,
                Err(f) if f.is_link() => {
                    self.demote(d, &f);
                    return false;
                }
                Err(f) => {
                    complete = false;
                    self.report_failure(d, &block, &f);
                }
            }
            b += 1;
        }
        self.promote(d);
        if complete {
            let stats = &self.devices[d].dev.shared.stats;
            stats.polls.fetch_add(1, Relaxed);
            if g == 0 {
                stats.last_poll_ns.store(t0.elapsed().as_nanos() as u64, Relaxed);
            }
        }
        true
    }

    /// Store the values of `block`'s points from `answer`.
    fn store(&self, d: usize, block: &Block, answer: &Answer) {
        let now = self.clock.now_ns();
        let dev = &self.devices[d].dev;
        let (regs, bits): (&[u16], &[bool]) = match answer {
            Answer::Registers(r) => (r, &[]),
            Answer::Bits(b) => (&[], b),
        };
        for &i in &block.points {
            dev.shared.set(i, dev.cfg.points[i].value_in(block, regs, bits), now);
        }
    }

    /// Split block `b` of group `g` at its gaps after an exception 2; false
    /// if it has none (the exception stands).
    fn split(&mut self, d: usize, g: usize, b: usize) -> bool {
        let dev = &mut self.devices[d];
        let spans: Vec<_> = dev.dev.cfg.points.iter().map(|p| p.span).collect();
        let block = &dev.groups[g].blocks[b];
        let Some((runs, gaps)) = plan::split(block, &spans) else {
            return false;
        };
        let gaps: Vec<String> = gaps.iter().map(|&(s, n)| items(block.table, s, n)).collect();
        let reads: Vec<String> = runs.iter().map(|r| items(r.table, r.start, r.count)).collect();
        tracing::warn!(
            device = %dev.dev.id,
            unit = dev.dev.cfg.unit,
            "{} refused the block read of {} (an exception): {} are not readable; reading {} apart from now on (set merge_gap lower to plan it so from the start)",
            dev.dev.id,
            items(block.table, block.start, block.count),
            gaps.join(", "),
            reads.join(", "),
        );
        dev.groups[g].blocks.splice(b..=b, runs);
        true
    }

    /// Write the outputs of group `g` that changed (or all of them, if the
    /// device writes every poll or `all`). False if the device went silent.
    async fn write_outputs(&mut self, d: usize, g: usize, all: bool) -> bool {
        for k in 0..self.devices[d].groups[g].outputs.len() {
            let i = self.devices[d].groups[g].outputs[k];
            let dev = &self.devices[d];
            let value = dev.dev.shared.value(i);
            let bits = value.to_bits();
            if value.is_nan() || (!all && !dev.dev.cfg.write_every_poll && dev.written[i] == Some(bits)) {
                continue;
            }
            let point = &dev.dev.cfg.points[i];
            let mut regs = [0u16; 4];
            let count = usize::from(point.ty.width());
            if let Err(e) = point.encode(value, &mut regs) {
                let (table, start, name, id) = (
                    point.span.table,
                    point.span.start,
                    point.name.clone(),
                    dev.dev.id.clone(),
                );
                self.devices[d].report_once(table, start, "encode", || {
                    tracing::warn!(device = %id, point = %name, value, "cannot write {value} to {id}.{name}: {e}; the point keeps its last value");
                });
                continue;
            }
            let (table, start) = (point.span.table, point.span.start);
            let block = Block {
                table,
                start,
                count: point.span.width,
                points: vec![i],
            };
            let op = if table == Table::Coil {
                Op::WriteCoil {
                    start,
                    on: value != 0.0,
                }
            } else {
                Op::WriteRegisters { start, regs, count }
            };
            let mut result = Err(Failure::Timeout);
            for _ in 0..self.tries(d) {
                result = self.request(d, &op).await.map(|_| ());
                if !matches!(&result, Err(f) if f.is_link()) {
                    break;
                }
            }
            match result {
                Ok(()) => {
                    self.devices[d].written[i] = Some(bits);
                    self.clear_reports(d, &block);
                }
                Err(f) if f.is_link() => {
                    self.demote(d, &f);
                    return false;
                }
                Err(f) => self.report_failure(d, &block, &f),
            }
        }
        true
    }

    /// Tries of one request: 1 + retries, or 1 for a demoted device (a
    /// probe) or a device that shares its link.
    fn tries(&self, d: usize) -> u32 {
        let dev = &self.devices[d];
        // On a shared link a silent unit gets one try and is demoted, so it
        // delays the others by one timeout at most.
        if dev.demoted_until.is_some() || self.devices.len() > 1 {
            1
        } else {
            1 + dev.dev.cfg.retries
        }
    }

    /// Read `block` with the device's retries.
    async fn request_read(&mut self, d: usize, block: &Block) -> Result<Answer, Failure> {
        let op = Op::Read {
            table: block.table,
            start: block.start,
            count: block.count,
        };
        let mut result = Err(Failure::Timeout);
        for _ in 0..self.tries(d) {
            result = self.request(d, &op).await;
            let got = match &result {
                Ok(Answer::Registers(r)) => r.len(),
                Ok(Answer::Bits(b)) => b.len(),
                Err(f) if f.is_link() => continue,
                Err(_) => break,
            };
            if got == usize::from(block.count) {
                break;
            }
            // Not what was asked: drop the connection like after a timeout.
            self.ctx = None;
            result = Err(Failure::Malformed(format!(
                "{got} items in the answer, {} asked",
                block.count
            )));
        }
        result
    }

    /// One request on the connection (made first if there is none), within
    /// the device's timeout; a timeout or transport error drops the connection.
    async fn request(&mut self, d: usize, op: &Op) -> Result<Answer, Failure> {
        let cfg = self.devices[d].dev.cfg.clone();
        let shared = self.devices[d].dev.shared.clone();
        let stats = &shared.stats;
        if let Some(last) = self.last_request {
            sleep_until(last + self.gap).await;
        }
        if self.ctx.is_none() {
            match timeout(cfg.timeout, connect(&self.link, cfg.unit)).await {
                Ok(Ok(ctx)) => {
                    stats.connects.fetch_add(1, Relaxed);
                    self.ctx = Some(ctx);
                    // A device that restarted lost what it was told: every
                    // output is written again at its next poll.
                    for dev in &mut self.devices {
                        dev.written.fill(None);
                    }
                }
                Ok(Err(e)) => {
                    stats.transport_errors.fetch_add(1, Relaxed);
                    return Err(Failure::Transport(format!("cannot connect: {e}")));
                }
                Err(_) => {
                    stats.timeouts.fetch_add(1, Relaxed);
                    return Err(Failure::Timeout);
                }
            }
        }
        let ctx = self.ctx.as_mut().expect("connected above");
        ctx.set_slave(Slave(cfg.unit));
        stats.requests.fetch_add(1, Relaxed);
        let result = timeout(cfg.timeout, op.call(ctx)).await;
        self.last_request = Some(Instant::now());
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Relaxed);
        };
        match result {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(code))) => {
                count(&stats.exceptions);
                Err(Failure::Exception(code))
            }
            Ok(Err(e)) => {
                count(&stats.transport_errors);
                self.ctx = None;
                Err(Failure::Transport(e.to_string()))
            }
            Err(_) => {
                count(&stats.timeouts);
                // A late answer must not be taken for the next request's.
                self.ctx = None;
                Err(Failure::Timeout)
            }
        }
    }

    /// The device answered: back to its periods if it was demoted.
    fn promote(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        if dev.demoted_until.take().is_some() {
            tracing::info!(device = %dev.dev.id, unit = dev.dev.cfg.unit, "{} answers again; polled at its periods", dev.dev.id);
        }
        dev.backoff = dev.dev.cfg.reconnect_min;
    }

    /// The device is silent: try it again after its backoff, which doubles.
    fn demote(&mut self, d: usize, why: &Failure) {
        let dev = &mut self.devices[d];
        let first = dev.demoted_until.is_none();
        let wait = dev.backoff;
        dev.demoted_until = Some(Instant::now() + wait);
        dev.backoff = (wait * 2).min(dev.dev.cfg.reconnect_max);
        let what = match why {
            Failure::Timeout => format!("no answer within {} ms", dev.dev.cfg.timeout.as_millis()),
            Failure::Transport(e) => e.clone(),
            Failure::Malformed(e) => format!("malformed answer: {e}"),
            Failure::Exception(c) => format!("exception {}", u8::from(*c)),
        };
        let text = format!(
            "{} (unit {} at {}) does not answer ({what}) after {} tries; its inputs go stale; tried again every {}..{} ms until it does, the link's other devices keep their periods",
            dev.dev.id,
            dev.dev.cfg.unit,
            self.link.key(),
            if first { 1 + dev.dev.cfg.retries } else { 1 },
            dev.dev.cfg.reconnect_min.as_millis(),
            dev.dev.cfg.reconnect_max.as_millis(),
        );
        if first {
            tracing::warn!(device = %dev.dev.id, unit = dev.dev.cfg.unit, link = %self.link.key(), "{text}");
        }
        dev.dev.shared.set_last_error(text);
    }

    fn report_failure(&mut self, d: usize, block: &Block, f: &Failure) {
        let (id, unit) = (self.devices[d].dev.id.clone(), self.devices[d].dev.cfg.unit);
        let what = match f {
            Failure::Exception(c) => format!("exception {} ({c})", u8::from(*c)),
            other => format!("{other:?}"),
        };
        let text = format!(
            "{id} (unit {unit}) answered {what} for {}; those points keep their last value and go stale",
            items(block.table, block.start, block.count)
        );
        self.devices[d].dev.shared.set_last_error(text.clone());
        self.devices[d].report_once(block.table, block.start, &what, || {
            tracing::warn!(device = %id, unit, "{text}");
        });
    }

    fn clear_reports(&mut self, d: usize, block: &Block) {
        let dev = &mut self.devices[d];
        if dev.reported.is_empty() {
            return;
        }
        let before = dev.reported.len();
        dev.reported.retain(|r| !(r.0 == block.table && r.1 == block.start));
        if dev.reported.len() < before {
            tracing::info!(device = %dev.dev.id, "{} answers {} again", dev.dev.id, items(block.table, block.start, block.count));
        }
    }
}

/// Open the link's connection, addressed to `unit`.
async fn connect(link: &ModbusLink, unit: u8) -> std::io::Result<Context> {
    match link {
        ModbusLink::Tcp { endpoint } => {
            let addr = tokio::net::lookup_host(endpoint.as_str())
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{endpoint} resolves to no address")))?;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            // Requests are small and each waits for its answer: send at once.
            stream.set_nodelay(true)?;
            Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
        }
        ModbusLink::Rtu {
            port,
            baud,
            parity,
            data_bits,
            stop_bits,
        } => {
            use tokio_serial::SerialPortBuilderExt;
            let serial = tokio_serial::new(port, *baud)
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(if *data_bits == 7 {
                    tokio_serial::DataBits::Seven
                } else {
                    tokio_serial::DataBits::Eight
                })
                .stop_bits(if *stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .open_native_async()
                .map_err(|e| std::io::Error::other(format!("cannot open serial port {port}: {e}")))?;
            Ok(tokio_modbus::client::rtu::attach_slave(serial, Slave(unit)))
        }
    }
}

/// Start one link task per connection for `devices`, on the current runtime.
pub fn spawn(
    devices: Vec<LinkDevice>,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut links: Vec<(String, Vec<LinkDevice>)> = Vec::new();
    for dev in devices {
        let key = dev.cfg.link.key().to_string();
        match links.iter_mut().find(|l| l.0 == key) {
            Some(l) => l.1.push(dev),
            None => links.push((key, vec![dev])),
        }
    }
    links
        .into_iter()
        .map(|(_, devs)| tokio::spawn(Link::new(devs, clock.clone()).run(stop.clone())))
        .collect()
}
