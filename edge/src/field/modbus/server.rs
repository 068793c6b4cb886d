//! The node's process image as a Modbus TCP device (`[modbus_server]`),
//! for a SCADA or HMI that speaks only Modbus.
//!
//! Reads are answered from each axis' live view (the dashboard's, refreshed
//! with the control telemetry) encoded per the configured map; addresses
//! no point covers answer exception 2. Writes are refused unless the point
//! is writable and the client's address is among `writers` (exception 1,
//! audited); a write must cover exactly one point (exception 2); it then
//! becomes a command (`SetRate` for the set-point, `Start`, `Stop`,
//! `ResetFault`, `Resume` for a coil written 1) through the axis' command
//! gate with [`Origin::Fieldbus`]: a value outside the axis limits answers
//! exception 3, a command the control program refuses exception 4, and
//! either way nothing changes. Other unit ids answer exception 11.

use crate::clock::Clock;
use crate::commands::{CommandError, CommandGate, Origin};
use crate::config::modbus_server::{ModbusServerConfig, ServedPoint, ServedValue};
use crate::dashboard::LiveState;
use crate::trust::audit::{AuditLog, AuditRecord};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use triad_hw::modbus::{DataType, Table, codec};
use triad_schemas::{ControlCommand, TwinState};

/// One served axis: its live view and its command gate.
#[derive(Clone)]
pub struct ServedAxis {
    /// Its view.
    pub live: Arc<LiveState>,
    /// Its gate.
    pub gate: Arc<CommandGate>,
}

/// What every connection shares.
struct Shared {
    cfg: ModbusServerConfig,
    axes: Vec<ServedAxis>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    /// Node id, for the commands' envelopes.
    node: String,
}

/// One client's connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

/// The value of `v` on `live`'s view.
fn value_of(v: ServedValue, live: &LiveState) -> f64 {
    live.read(|s| {
        let a = &s.axis;
        match v {
            ServedValue::PpmActual => a.ppm_actual,
            ServedValue::PpmSetpoint => a.ppm_setpoint,
            ServedValue::WeldTempC => a.weld_temp_c,
            ServedValue::WeldCurrentA => a.weld_current_a,
            ServedValue::PartsTotal => a.parts_total as f64,
            ServedValue::Mode => match a.mode.as_str() {
                "Running" => 1.0,
                "Derated" => 2.0,
                "SafeState" => 3.0,
                _ => 0.0,
            },
            ServedValue::SafeState => f64::from(u8::from(a.mode == "SafeState")),
            ServedValue::ResidualC => s.twin.status.residual_c,
            ServedValue::Alert => f64::from(u8::from(s.twin.status.state == TwinState::Alert)),
            ServedValue::Start | ServedValue::Stop | ServedValue::ResetFault | ServedValue::Resume => 0.0,
        }
    })
}

/// `value` in a point's registers; a value its type cannot hold is
/// clamped to the type's range (a SCADA sees the nearest), a non-finite
/// one is 0.
fn encode(p: &ServedPoint, value: f64, out: &mut [u16]) {
    let raw = value / p.scale;
    let raw = if raw.is_finite() { raw } else { 0.0 };
    let (lo, hi) = match p.ty {
        DataType::U16 => (0.0, 65_535.0),
        DataType::I16 => (-32_768.0, 32_767.0),
        DataType::U32 => (0.0, 4_294_967_295.0),
        DataType::I32 => (-2_147_483_648.0, 2_147_483_647.0),
        DataType::U64 => (0.0, 1.8e19),
        DataType::I64 => (-9.2e18, 9.2e18),
        DataType::F32 => (f64::from(f32::MIN), f64::from(f32::MAX)),
        _ => (f64::MIN, f64::MAX),
    };
    let _ = codec::encode(raw.clamp(lo, hi), p.ty, p.order, out);
}

impl Shared {
    /// Registers (or bits as 0/1) `start..start+count` of `table`, or
    /// exception 2 if one of them is no point's.
    fn read(&self, table: Table, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        // The spec's quantity limits (1..=125 registers, 1..=2000 bits).
        if count == 0 || count > table.max_read() {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let (start, end) = (u32::from(start), u32::from(start) + u32::from(count));
        let mut out = vec![0u16; usize::from(count)];
        let mut covered = vec![false; usize::from(count)];
        for p in self.cfg.points.iter().filter(|p| p.span.table == table) {
            let (ps, pe) = (u32::from(p.span.start), p.span.end());
            if pe <= start || ps >= end {
                continue;
            }
            let v = value_of(p.value, &self.axes[p.axis].live);
            let mut regs = [0u16; 4];
            if table.is_bits() {
                regs[0] = u16::from(v != 0.0);
            } else {
                encode(p, v, &mut regs[..usize::from(p.ty.width())]);
            }
            for a in ps.max(start)..pe.min(end) {
                let i = (a - start) as usize;
                out[i] = regs[(a - ps) as usize];
                covered[i] = true;
            }
        }
        if covered.iter().all(|&c| c) {
            Ok(out)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    /// The writable point exactly at `start` with `count` items.
    fn point_at(&self, table: Table, start: u16, count: u16) -> Option<&ServedPoint> {
        self.cfg
            .points
            .iter()
            .find(|p| p.span.table == table && p.span.start == start && p.span.width == count)
    }
}

impl Connection {
    /// A write of `regs` (or one coil as `[0|1]`) to `table` at `start`.
    fn write(&self, table: Table, start: u16, regs: Vec<u16>, echo: Response) -> Answer {
        let shared = self.shared.clone();
        let peer = self.peer;
        Box::pin(async move {
            let Some(p) = shared.point_at(table, start, regs.len() as u16).cloned() else {
                return Err(ExceptionCode::IllegalDataAddress);
            };
            let axis = shared.axes[p.axis].gate.axis().to_string();
            let allowed = p.writable && shared.cfg.writers.contains(&peer.ip());
            if !allowed {
                let why = if p.writable {
                    format!("client {peer} is not among [modbus_server] writers")
                } else {
                    "the point is not writable".to_string()
                };
                shared.audit.record(
                    shared.clock.now_ns(),
                    AuditRecord {
                        origin: format!("modbus {peer}"),
                        ..AuditRecord::new("command", &axis, false, "modbus_write_not_allowed", &why)
                    },
                );
                tracing::warn!(client = %peer, axis = %axis, "Modbus write refused: {why}");
                return Err(ExceptionCode::IllegalFunction);
            }
            let value = if table.is_bits() {
                f64::from(regs[0])
            } else {
                codec::decode(&regs, p.ty, p.order) * p.scale
            };
            let Some(action) = p.value.command() else {
                return Err(ExceptionCode::IllegalDataAddress);
            };
            if table.is_bits() && value == 0.0 {
                // A command coil written 0 is no command.
                return Ok(echo);
            }
            let now = shared.clock.now_ns();
            let cmd = ControlCommand {
                envelope: crate::clock::envelope(&*shared.clock, &shared.node, now),
                command_id: format!("modbus-{peer}-{now}"),
                axis,
                action,
                value: (action == triad_schemas::CommandAction::SetRate).then_some(value),
                reason: format!("Modbus write to {} {}", p.span.table, p.span.start),
                issued_by: format!("modbus:{}", peer.ip()),
                token: None,
            };
            match shared.axes[p.axis].gate.submit(&cmd, Origin::Fieldbus).await {
                Ok(_) => Ok(echo),
                Err(CommandError::OutOfRange { .. }) => Err(ExceptionCode::IllegalDataValue),
                Err(_) => Err(ExceptionCode::ServerDeviceFailure),
            }
        })
    }
}

impl tokio_modbus::server::Service for Connection {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != self.shared.cfg.unit {
            return Box::pin(async { Err(ExceptionCode::GatewayTargetDevice) });
        }
        let bits = |r: Result<Vec<u16>, ExceptionCode>| r.map(|v| v.into_iter().map(|b| b != 0).collect::<Vec<bool>>());
        let s = &self.shared;
        let res = match req.request {
            Request::ReadInputRegisters(a, n) => s.read(Table::Input, a, n).map(Response::ReadInputRegisters),
            Request::ReadHoldingRegisters(a, n) => s.read(Table::Holding, a, n).map(Response::ReadHoldingRegisters),
            Request::ReadDiscreteInputs(a, n) => bits(s.read(Table::Discrete, a, n)).map(Response::ReadDiscreteInputs),
            Request::ReadCoils(a, n) => bits(s.read(Table::Coil, a, n)).map(Response::ReadCoils),
            Request::WriteSingleRegister(a, v) => {
                return self.write(Table::Holding, a, vec![v], Response::WriteSingleRegister(a, v));
            }
            Request::WriteMultipleRegisters(a, ref v) => {
                let echo = Response::WriteMultipleRegisters(a, v.len() as u16);
                return self.write(Table::Holding, a, v.to_vec(), echo);
            }
            Request::WriteSingleCoil(a, on) => {
                return self.write(Table::Coil, a, vec![u16::from(on)], Response::WriteSingleCoil(a, on));
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(async move { res })
    }
}

/// Serve `axes` (in `NodeConfig::axes` order) per `cfg` on `listener`
/// until `shutdown`.
pub async fn serve_process_image(
    listener: tokio::net::TcpListener,
    cfg: ModbusServerConfig,
    axes: Vec<ServedAxis>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    node: String,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        cfg,
        axes,
        audit,
        clock,
        node,
    });
    let server = Server::new(listener);
    let new_service = move |peer| {
        Ok(Some(Connection {
            shared: shared.clone(),
            peer,
        }))
    };
    let on_connected = |stream, peer| {
        let new_service = new_service.clone();
        async move { accept_tcp_connection(stream, peer, new_service) }
    };
    tokio::select! {
        r = server.serve(&on_connected, |e| tracing::debug!(error = %e, "Modbus client connection ended")) => r,
        () = shutdown => Ok(()),
    }
}
