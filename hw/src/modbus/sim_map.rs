//! The register map of the simulated welding line served over Modbus TCP
//! (`triad sim-plant --modbus ADDR`): the same points as a real welder and
//! conveyor would offer, named as the axis signals they feed, so that
//! `[axes.io] device = "…"` binds them all. Values are big-endian (`ABCD`),
//! addresses zero-based wire addresses.
//!
//! | point                | table    | address | type | unit |
//! |----------------------|----------|---------|------|------|
//! | `feed_ppm`           | input    | 0       | f32  | PPM  |
//! | `weld_temp_c`        | input    | 2       | f32  | °C   |
//! | `weld_current_a`     | input    | 4       | f32  | A    |
//! | `ambient_c`          | input    | 6       | f32  | °C   |
//! | `parts_total`        | input    | 8       | u32  |      |
//! | `welds_total`        | input    | 10      | u32  |      |
//! | `estop`              | discrete | 0       | bool |      |
//! | `feed_ppm_cmd`       | holding  | 0       | f32  | PPM  |
//! | `weld_current_cmd_a` | holding  | 2       | f32  | A    |
//! | `weld_enable`        | coil     | 0       | bool |      |
//!
//! `welds_total` counts welds made: the node images one frame per weld
//! (`capture = { counter = "welds_total", … }` in the device's config).

use super::codec::{DataType, Table};
use crate::process::Signal;

/// One point of the map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimMapEntry {
    /// Point name.
    pub name: &'static str,
    /// The axis signal it carries, if any (`welds_total` carries none).
    pub signal: Option<Signal>,
    /// Its table.
    pub table: Table,
    /// Wire address.
    pub address: u16,
    /// Data type.
    pub ty: DataType,
}

const fn entry(signal: Signal, table: Table, address: u16, ty: DataType) -> SimMapEntry {
    SimMapEntry {
        name: signal.name(),
        signal: Some(signal),
        table,
        address,
        ty,
    }
}

/// Address of the `welds_total` counter (input registers).
pub const WELDS_TOTAL: u16 = 10;

/// The map, inputs first.
pub const SIM_PLANT_MAP: [SimMapEntry; 10] = [
    entry(Signal::FeedPpm, Table::Input, 0, DataType::F32),
    entry(Signal::WeldTempC, Table::Input, 2, DataType::F32),
    entry(Signal::WeldCurrentA, Table::Input, 4, DataType::F32),
    entry(Signal::AmbientC, Table::Input, 6, DataType::F32),
    entry(Signal::PartsTotal, Table::Input, 8, DataType::U32),
    SimMapEntry {
        name: "welds_total",
        signal: None,
        table: Table::Input,
        address: WELDS_TOTAL,
        ty: DataType::U32,
    },
    entry(Signal::Estop, Table::Discrete, 0, DataType::Bool),
    entry(Signal::FeedPpmCmd, Table::Holding, 0, DataType::F32),
    entry(Signal::WeldCurrentCmdA, Table::Holding, 2, DataType::F32),
    entry(Signal::WeldEnable, Table::Coil, 0, DataType::Bool),
];

/// Registers (or bits) each table of the map spans.
pub fn table_len(table: Table) -> u16 {
    SIM_PLANT_MAP
        .iter()
        .filter(|e| e.table == table)
        .map(|e| e.address + e.ty.width())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Direction;

    #[test]
    fn every_signal_is_served_once_in_a_table_of_its_direction() {
        for s in Signal::ALL {
            let e: Vec<_> = SIM_PLANT_MAP.iter().filter(|e| e.signal == Some(s)).collect();
            assert_eq!(e.len(), 1, "{s:?}");
            assert_eq!(e[0].table.is_writable(), s.direction() == Direction::Output, "{s:?}");
        }
        assert_eq!(table_len(Table::Input), 12);
        assert_eq!(table_len(Table::Coil), 1);
    }
}
