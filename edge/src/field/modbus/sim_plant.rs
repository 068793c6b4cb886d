//! The simulated welding line as a Modbus TCP device
//! (`triad sim-plant --modbus ADDR`): the plant and the node run as two
//! processes with a real protocol between them, and the node's config for
//! it has the same shape as for a real welder.
//!
//! The register map is [`triad_hw::modbus::sim_map`]. The plant's physics
//! steps every millisecond on its own thread; its time starts at the first
//! write of its master (the node), so a scenario's faults come at the same
//! times after the node's start as with `triad run --sim`. Requests to
//! another unit id are answered with exception 11 (gateway target device
//! failed to respond), reads or writes outside the map with exception 2.

use crate::clock::{Clock, monotonic_ns, sleep_until_mono};
use std::future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use triad_hw::modbus::codec::{self, Table, WordOrder};
use triad_hw::modbus::sim_map::{SIM_PLANT_MAP, WELDS_TOTAL, table_len};
use triad_hw::sim::SimLine;
use triad_hw::{LineOutputs, ProcessIo};

/// The plant's four tables.
#[derive(Debug, Default)]
struct Tables {
    input: Vec<u16>,
    holding: Vec<u16>,
    discrete: Vec<bool>,
    coils: Vec<bool>,
    /// The master has written at least once: the plant runs.
    started: bool,
    welds_total: u32,
}

impl Tables {
    fn new() -> Self {
        Self {
            input: vec![0; usize::from(table_len(Table::Input))],
            holding: vec![0; usize::from(table_len(Table::Holding))],
            discrete: vec![false; usize::from(table_len(Table::Discrete))],
            coils: vec![false; usize::from(table_len(Table::Coil))],
            ..Self::default()
        }
    }

    /// The outputs the master wrote.
    fn outputs(&self, now_ns: i64) -> LineOutputs {
        let mut out = LineOutputs {
            stamp_ns: now_ns,
            ..LineOutputs::SAFE
        };
        for e in SIM_PLANT_MAP.iter().filter(|e| e.table.is_writable()) {
            let Some(s) = e.signal else { continue };
            let at = usize::from(e.address);
            let v = match e.table {
                Table::Coil => f64::from(u8::from(self.coils[at])),
                _ => codec::decode(&self.holding[at..at + usize::from(e.ty.width())], e.ty, WordOrder::Abcd),
            };
            out.set(s, v);
        }
        out
    }

    /// Put one scan's inputs into the read-only tables.
    fn set_inputs(&mut self, inputs: &triad_hw::LineInputs) {
        for e in SIM_PLANT_MAP.iter().filter(|e| !e.table.is_writable()) {
            let v = e.signal.map_or(f64::from(self.welds_total), |s| inputs.get(s));
            let at = usize::from(e.address);
            match e.table {
                Table::Discrete => self.discrete[at] = v != 0.0,
                _ => {
                    let regs = &mut self.input[at..at + usize::from(e.ty.width())];
                    // Values the map's types hold by construction (counts, f32 readings).
                    let _ = codec::encode(v, e.ty, WordOrder::Abcd, regs);
                }
            }
        }
        debug_assert!(SIM_PLANT_MAP.iter().any(|e| e.address == WELDS_TOTAL));
    }
}

/// The Modbus service over the shared tables.
struct PlantService {
    tables: Arc<Mutex<Tables>>,
    unit: u8,
}

fn slice<T: Clone>(table: &[T], addr: u16, cnt: u16) -> Result<Vec<T>, ExceptionCode> {
    let (a, n) = (usize::from(addr), usize::from(cnt));
    table
        .get(a..a + n)
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

fn write<T: Copy>(table: &mut [T], addr: u16, values: &[T]) -> Result<(), ExceptionCode> {
    let a = usize::from(addr);
    table
        .get_mut(a..a + values.len())
        .ok_or(ExceptionCode::IllegalDataAddress)?
        .copy_from_slice(values);
    Ok(())
}

impl tokio_modbus::server::Service for PlantService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != self.unit {
            return future::ready(Err(ExceptionCode::GatewayTargetDevice));
        }
        let mut t = self.tables.lock().expect("plant tables");
        let writes = matches!(
            req.request,
            Request::WriteSingleCoil(..)
                | Request::WriteMultipleCoils(..)
                | Request::WriteSingleRegister(..)
                | Request::WriteMultipleRegisters(..)
        );
        let res = match req.request {
            Request::ReadInputRegisters(a, n) => slice(&t.input, a, n).map(Response::ReadInputRegisters),
            Request::ReadHoldingRegisters(a, n) => slice(&t.holding, a, n).map(Response::ReadHoldingRegisters),
            Request::ReadDiscreteInputs(a, n) => slice(&t.discrete, a, n).map(Response::ReadDiscreteInputs),
            Request::ReadCoils(a, n) => slice(&t.coils, a, n).map(Response::ReadCoils),
            Request::WriteSingleCoil(a, v) => write(&mut t.coils, a, &[v]).map(|()| Response::WriteSingleCoil(a, v)),
            Request::WriteMultipleCoils(a, ref v) => {
                write(&mut t.coils, a, v).map(|()| Response::WriteMultipleCoils(a, v.len() as u16))
            }
            Request::WriteSingleRegister(a, v) => {
                write(&mut t.holding, a, &[v]).map(|()| Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, ref v) => {
                write(&mut t.holding, a, v).map(|()| Response::WriteMultipleRegisters(a, v.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        if writes && res.is_ok() {
            t.started = true;
        }
        future::ready(res)
    }
}

/// Step `plant` every millisecond until `stop`, from the master's first
/// write on.
fn run_plant(mut plant: SimLine, tables: Arc<Mutex<Tables>>, clock: Arc<dyn Clock>, stop: Arc<AtomicBool>) {
    let period = 1_000_000;
    let mut next = monotonic_ns();
    while !stop.load(Relaxed) {
        next += period;
        sleep_until_mono(next);
        let now = clock.now_ns();
        let out = {
            let t = tables.lock().expect("plant tables");
            if !t.started {
                continue;
            }
            t.outputs(now)
        };
        // Every weld counts, also the few the plant's queue could not hold.
        let dropped_before = plant.welds_dropped();
        let Ok(inputs) = plant.scan(&out, now) else { continue };
        let mut welds = 0u32;
        plant.take_triggers(&mut |_| welds += 1);
        welds += (plant.welds_dropped() - dropped_before) as u32;
        let mut t = tables.lock().expect("plant tables");
        t.welds_total = t.welds_total.wrapping_add(welds);
        t.set_inputs(&inputs);
    }
}

/// Serve `plant` as Modbus TCP unit `unit` on `listener` until `shutdown`.
pub async fn serve_sim_plant(
    listener: tokio::net::TcpListener,
    unit: u8,
    plant: SimLine,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tables = Arc::new(Mutex::new(Tables::new()));
    // What the plant shows before its master's first write: its state at
    // rest, read from a copy (the plant's own time starts at that write).
    if let Ok(idle) = plant.clone().scan(&LineOutputs::SAFE, clock.now_ns()) {
        tables.lock().expect("plant tables").set_inputs(&idle);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let physics = {
        let (tables, stop) = (tables.clone(), stop.clone());
        std::thread::Builder::new()
            .name("triad-sim-plant".into())
            .spawn(move || run_plant(plant, tables, clock, stop))?
    };
    let server = Server::new(listener);
    let new_service = move |_addr| {
        Ok(Some(PlantService {
            tables: tables.clone(),
            unit,
        }))
    };
    let on_connected = |stream, addr| {
        let new_service = new_service.clone();
        async move { accept_tcp_connection(stream, addr, new_service) }
    };
    let result = tokio::select! {
        r = server.serve(&on_connected, |e| tracing::debug!(error = %e, "Modbus connection ended")) => r,
        () = shutdown => Ok(()),
    };
    stop.store(true, Relaxed);
    let _ = physics.join();
    result
}

#[cfg(test)]
mod tests {
    use crate::config::{Driver, from_toml_str};
    use triad_hw::modbus::sim_map::SIM_PLANT_MAP;

    #[test]
    fn the_shipped_example_reads_the_plant_by_its_map() {
        let cfg = from_toml_str(include_str!("../../../../deploy/examples/sim-plant-modbus.toml")).unwrap();
        let Driver::Modbus(m) = &cfg.devices[0].driver else {
            panic!()
        };
        for e in SIM_PLANT_MAP {
            let p = m
                .points
                .iter()
                .find(|p| p.name == e.name)
                .unwrap_or_else(|| panic!("{}", e.name));
            assert_eq!(
                (p.span.table, p.span.start, p.ty),
                (e.table, e.address, e.ty),
                "{}",
                e.name
            );
        }
        assert_eq!(m.points.len(), SIM_PLANT_MAP.len());
        let c = m.capture.as_ref().unwrap();
        assert_eq!(m.points[c.counter].name, "welds_total");
        assert_eq!(c.per_part, triad_hw::sim::PlantParams::default().welds_per_module);
    }
}
