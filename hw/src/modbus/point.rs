//! A configured Modbus point: where it lies, how it is encoded, what it
//! means, and its value in a block read or a write.

use super::codec::{self, DataType, EncodeError, Table, WordOrder};
use super::plan::{Block, Span};
use crate::process::{Direction, PointKind};

/// One point of a Modbus device.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusPoint {
    /// Its name on the device (what `[axes.io]` names).
    pub name: String,
    /// Table, wire address (zero-based) and width.
    pub span: Span,
    /// Data type.
    pub ty: DataType,
    /// Byte and word order.
    pub order: WordOrder,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Engineering unit.
    pub unit: String,
    /// Read (input) or written (output) by the scan.
    pub direction: Direction,
    /// Its poll group (index into the device's groups).
    pub group: usize,
    /// Older than this, the value is stale, ns.
    pub stale_ns: i64,
}

impl ModbusPoint {
    /// What its value means to a binding.
    pub fn kind(&self) -> PointKind {
        if self.ty.is_digital() {
            PointKind::Bool
        } else if self.ty.is_float() || self.scale != 1.0 || self.offset != 0.0 {
            PointKind::Analog
        } else {
            PointKind::Counter
        }
    }

    /// Its engineering value in the answer to `block`: `regs` for a
    /// register table, `bits` for a bit table (as many as the block asked).
    pub fn value_in(&self, block: &Block, regs: &[u16], bits: &[bool]) -> f64 {
        let at = usize::from(self.span.start - block.start);
        let raw = if self.span.table.is_bits() {
            f64::from(u8::from(bits[at]))
        } else {
            codec::decode(&regs[at..at + usize::from(self.ty.width())], self.ty, self.order)
        };
        if self.ty.is_digital() {
            raw
        } else {
            raw * self.scale + self.offset
        }
    }

    /// The registers that write engineering value `value` (its first
    /// `ty.width()` entries of `out`), or why it cannot be written.
    pub fn encode(&self, value: f64, out: &mut [u16; 4]) -> Result<(), EncodeError> {
        let raw = if self.ty.is_digital() {
            value
        } else {
            (value - self.offset) / self.scale
        };
        codec::encode(raw, self.ty, self.order, &mut out[..usize::from(self.ty.width())])
    }

    /// "input registers 10..11" (wire addresses), for errors.
    pub fn location(&self) -> String {
        items(self.span.table, self.span.start, self.span.width)
    }
}

/// "input registers 10..11" or "coil 3", wire addresses, for errors.
pub fn items(table: Table, start: u16, count: u16) -> String {
    if count == 1 {
        let one = table.to_string();
        format!("{} {start}", one.strip_suffix('s').unwrap_or(&one))
    } else {
        format!("{table} {start}..{}", u32::from(start) + u32::from(count) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(table: Table, start: u16, ty: DataType) -> ModbusPoint {
        ModbusPoint {
            name: "p".into(),
            span: Span {
                table,
                start,
                width: ty.width(),
            },
            ty,
            order: WordOrder::Abcd,
            scale: 0.1,
            offset: -40.0,
            unit: "°C".into(),
            direction: Direction::Input,
            group: 0,
            stale_ns: 1,
        }
    }

    #[test]
    fn scale_and_offset_apply_to_numbers_not_to_bits() {
        let block = Block {
            table: Table::Input,
            start: 10,
            count: 3,
            points: vec![],
        };
        let p = point(Table::Input, 11, DataType::I16);
        assert_eq!(p.value_in(&block, &[0, 650, 0], &[]), 650.0 * 0.1 - 40.0);
        let mut out = [0; 4];
        p.encode(25.0, &mut out).unwrap();
        assert_eq!(out[0], 650);
        assert_eq!(p.kind(), PointKind::Analog);
        let b = point(Table::Input, 12, DataType::Bit(1));
        assert_eq!(b.value_in(&block, &[0, 0, 2], &[]), 1.0);
        assert_eq!(b.kind(), PointKind::Bool);
        let c = point(Table::Coil, 5, DataType::Bool);
        let cb = Block {
            table: Table::Coil,
            start: 4,
            count: 2,
            points: vec![],
        };
        assert_eq!(c.value_in(&cb, &[], &[false, true]), 1.0);
        assert_eq!(c.location(), "coil 5");
        assert_eq!(p.location(), "input register 11");
        assert_eq!(items(Table::Holding, 0, 2), "holding registers 0..1");
    }
}
