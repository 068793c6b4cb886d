//! Values in Modbus registers: data types, byte and word order, scaling.
//!
//! A Modbus register is 16 bits sent high byte first; values wider than a
//! register span consecutive registers in an order the device chooses. We
//! name the orders as most HMI and gateway vendors do, by where the bytes
//! A B C D of the big-endian value (A most significant) end up:
//!
//! | order  | 32-bit registers | 64-bit registers        | also called            |
//! |--------|------------------|-------------------------|------------------------|
//! | `ABCD` | `AB CD`          | `AB CD EF GH`           | big-endian             |
//! | `CDAB` | `CD AB`          | `GH EF CD AB`           | word swap              |
//! | `BADC` | `BA DC`          | `BA DC FE HG`           | byte swap              |
//! | `DCBA` | `DC BA`          | `HG FE DC BA`           | little-endian          |
//!
//! The byte swap of `BADC` and `DCBA` applies to every register, 16-bit
//! values included. A bit in a register (`type = "bit"`) is numbered on the
//! decoded 16-bit value, 0 the least significant. Engineering value =
//! raw × scale + offset; a write inverts it and refuses what the type cannot
//! hold rather than wrap or clamp it.

use std::fmt;

/// A Modbus data table (the four of the Modbus Application Protocol v1.1b3, §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Coils: read-write bits (function codes 1, 5, 15).
    Coil,
    /// Discrete inputs: read-only bits (function code 2).
    Discrete,
    /// Input registers: read-only 16-bit words (function code 4).
    Input,
    /// Holding registers: read-write 16-bit words (function codes 3, 6, 16).
    Holding,
}

impl Table {
    /// Its name in the config (`coil`, `discrete`, `input`, `holding`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    /// A bit table (coils, discrete inputs) rather than a register table.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Writable by a client (coils and holding registers).
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::Holding)
    }

    /// Most items one read may ask for: 2000 bits or 125 registers (the
    /// spec's limits, from the 253-byte PDU).
    pub fn max_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    /// Parse a config name.
    pub fn parse(s: &str) -> Option<Table> {
        [Table::Coil, Table::Discrete, Table::Input, Table::Holding]
            .into_iter()
            .find(|t| t.name() == s)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Coil => "coils",
            Table::Discrete => "discrete inputs",
            Table::Input => "input registers",
            Table::Holding => "holding registers",
        })
    }
}

/// How a point's value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// One coil or discrete input.
    Bool,
    /// Bit `n` (0..=15) of one register.
    Bit(u8),
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// IEEE 754 single, two registers.
    F32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// Signed 64-bit, four registers.
    I64,
    /// IEEE 754 double, four registers.
    F64,
}

impl DataType {
    /// Parse a config name (`bool`, `bit`, `u16`, … `f64`); `bit` takes its
    /// bit number from `bit`.
    pub fn parse(s: &str, bit: Option<u8>) -> Option<DataType> {
        Some(match s {
            "bool" => DataType::Bool,
            "bit" => DataType::Bit(bit?),
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "f32" => DataType::F32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f64" => DataType::F64,
            _ => return None,
        })
    }

    /// The config names.
    pub const NAMES: [&'static str; 10] = ["bool", "bit", "u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64"];

    /// Registers (or bits, for `Bool`) the value takes.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::Bit(_) | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// A digital value (a coil, a discrete input or a bit in a register).
    pub fn is_digital(self) -> bool {
        matches!(self, DataType::Bool | DataType::Bit(_))
    }

    /// A floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

/// Byte and word order of multi-byte values (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordOrder {
    /// Big-endian.
    Abcd,
    /// Registers in reverse order, bytes big-endian.
    Cdab,
    /// Registers in order, bytes swapped in each.
    Badc,
    /// Little-endian.
    Dcba,
}

impl WordOrder {
    /// Parse `ABCD`, `CDAB`, `BADC` or `DCBA` (any case).
    pub fn parse(s: &str) -> Option<WordOrder> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ABCD" => WordOrder::Abcd,
            "CDAB" => WordOrder::Cdab,
            "BADC" => WordOrder::Badc,
            "DCBA" => WordOrder::Dcba,
            _ => return None,
        })
    }

    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }

    fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }
}

/// The big-endian bits of `regs` (1, 2 or 4 registers) read in `order`.
fn raw_bits(regs: &[u16], order: WordOrder) -> u64 {
    let n = regs.len();
    (0..n).fold(0u64, |acc, i| {
        let r = regs[if order.swaps_words() { n - 1 - i } else { i }];
        let r = if order.swaps_bytes() { r.swap_bytes() } else { r };
        (acc << 16) | u64::from(r)
    })
}

/// Spread the low `out.len() * 16` bits of `bits` over `out` in `order`.
fn spread_bits(bits: u64, order: WordOrder, out: &mut [u16]) {
    let n = out.len();
    for i in 0..n {
        let r = (bits >> (16 * (n - 1 - i))) as u16;
        let r = if order.swaps_bytes() { r.swap_bytes() } else { r };
        out[if order.swaps_words() { n - 1 - i } else { i }] = r;
    }
}

/// The raw (unscaled) value of `ty` in `regs` (exactly `ty.width()`
/// registers). Not for `Bool`, which comes from a bit table.
pub fn decode(regs: &[u16], ty: DataType, order: WordOrder) -> f64 {
    debug_assert_eq!(regs.len(), usize::from(ty.width()));
    let bits = raw_bits(regs, order);
    match ty {
        DataType::Bool => (bits != 0) as u8 as f64,
        DataType::Bit(n) => ((bits >> n) & 1) as f64,
        DataType::U16 | DataType::U32 | DataType::U64 => bits as f64,
        DataType::I16 => f64::from(bits as u16 as i16),
        DataType::I32 => f64::from(bits as u32 as i32),
        DataType::I64 => bits as i64 as f64,
        DataType::F32 => f64::from(f32::from_bits(bits as u32)),
        DataType::F64 => f64::from_bits(bits),
    }
}

/// Why a value cannot be written.
#[derive(Clone, Debug, PartialEq)]
pub enum EncodeError {
    /// Not a number.
    NotFinite,
    /// Outside what the type holds (after scaling), with the raw value.
    OutOfRange(f64),
    /// A bit in a register is not written (it would overwrite its
    /// neighbours).
    BitInRegister,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::NotFinite => f.write_str("the value is not a finite number"),
            EncodeError::OutOfRange(raw) => write!(f, "the raw value {raw} does not fit the point's type"),
            EncodeError::BitInRegister => f.write_str("a bit in a register is read-only"),
        }
    }
}

/// Encode the raw value `raw` of `ty` into `out` (exactly `ty.width()`
/// registers). Integers are rounded to the nearest; out of range is an
/// error.
pub fn encode(raw: f64, ty: DataType, order: WordOrder, out: &mut [u16]) -> Result<(), EncodeError> {
    debug_assert_eq!(out.len(), usize::from(ty.width()));
    if !raw.is_finite() {
        return Err(EncodeError::NotFinite);
    }
    let int = |lo: f64, hi: f64| {
        let r = raw.round();
        if r < lo || r > hi {
            Err(EncodeError::OutOfRange(raw))
        } else {
            Ok(r)
        }
    };
    let bits: u64 = match ty {
        DataType::Bit(_) => return Err(EncodeError::BitInRegister),
        DataType::Bool => u64::from(raw != 0.0),
        DataType::U16 => int(0.0, 65535.0)? as u64,
        DataType::I16 => int(-32768.0, 32767.0)? as i16 as u16 as u64,
        DataType::U32 => int(0.0, 4_294_967_295.0)? as u64,
        DataType::I32 => int(-2_147_483_648.0, 2_147_483_647.0)? as i32 as u32 as u64,
        // 2^64 and 2^63 are exact in f64; the largest integers below them are not.
        DataType::U64 => {
            let r = int(0.0, 18_446_744_073_709_551_615.0)?;
            if r >= 18_446_744_073_709_551_616.0 {
                return Err(EncodeError::OutOfRange(raw));
            }
            r as u64
        }
        DataType::I64 => {
            let r = int(-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_807.0)?;
            if r >= 9_223_372_036_854_775_808.0 {
                return Err(EncodeError::OutOfRange(raw));
            }
            r as i64 as u64
        }
        DataType::F32 => {
            let v = raw as f32;
            if v.is_infinite() {
                return Err(EncodeError::OutOfRange(raw));
            }
            u64::from(v.to_bits())
        }
        DataType::F64 => raw.to_bits(),
    };
    spread_bits(bits, order, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: [WordOrder; 4] = [WordOrder::Abcd, WordOrder::Cdab, WordOrder::Badc, WordOrder::Dcba];

    /// Registers of big-endian `bytes` in `order`, built the way the
    /// module doc's table says (independently of `spread_bits`).
    fn by_table(bytes: &[u8], order: WordOrder) -> Vec<u16> {
        let mut regs: Vec<u16> = bytes
            .chunks(2)
            .map(|c| {
                if order.swaps_bytes() {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        if order.swaps_words() {
            regs.reverse();
        }
        regs
    }

    #[test]
    fn the_table_of_the_module_doc() {
        let f = 187.25f32.to_be_bytes(); // 0x433B4000
        assert_eq!(by_table(&f, WordOrder::Abcd), [0x433B, 0x4000]);
        assert_eq!(by_table(&f, WordOrder::Cdab), [0x4000, 0x433B]);
        assert_eq!(by_table(&f, WordOrder::Badc), [0x3B43, 0x0040]);
        assert_eq!(by_table(&f, WordOrder::Dcba), [0x0040, 0x3B43]);
    }

    #[test]
    fn every_type_decodes_in_every_order_and_encodes_back() {
        let cases: [(DataType, f64, Vec<u8>); 8] = [
            (DataType::U16, 65000.0, 65000u16.to_be_bytes().to_vec()),
            (DataType::I16, -123.0, (-123i16).to_be_bytes().to_vec()),
            (DataType::U32, 70_000.0, 70_000u32.to_be_bytes().to_vec()),
            (DataType::I32, -100_000.0, (-100_000i32).to_be_bytes().to_vec()),
            (DataType::F32, 187.25, 187.25f32.to_be_bytes().to_vec()),
            (DataType::U64, 5e9, 5_000_000_000u64.to_be_bytes().to_vec()),
            (DataType::I64, -5e9, (-5_000_000_000i64).to_be_bytes().to_vec()),
            (DataType::F64, 1_234_567.891, 1_234_567.891f64.to_be_bytes().to_vec()),
        ];
        for (ty, value, bytes) in cases {
            for order in ORDERS {
                let regs = by_table(&bytes, order);
                assert_eq!(decode(&regs, ty, order), value, "{ty:?} {order:?}");
                let mut out = vec![0; usize::from(ty.width())];
                encode(value, ty, order, &mut out).unwrap();
                assert_eq!(out, regs, "{ty:?} {order:?}");
            }
        }
    }

    #[test]
    fn a_bit_is_numbered_on_the_decoded_register() {
        let regs = by_table(&0x8009u16.to_be_bytes(), WordOrder::Badc);
        for (bit, set) in [(0, 1.0), (1, 0.0), (3, 1.0), (15, 1.0)] {
            assert_eq!(decode(&regs, DataType::Bit(bit), WordOrder::Badc), set, "bit {bit}");
        }
    }

    #[test]
    fn writes_refuse_what_the_type_cannot_hold() {
        let mut one = [0u16; 1];
        let mut two = [0u16; 2];
        let mut four = [0u16; 4];
        assert_eq!(
            encode(65536.0, DataType::U16, WordOrder::Abcd, &mut one),
            Err(EncodeError::OutOfRange(65536.0))
        );
        assert_eq!(
            encode(-1.0, DataType::U32, WordOrder::Abcd, &mut two),
            Err(EncodeError::OutOfRange(-1.0))
        );
        assert_eq!(
            encode(f64::NAN, DataType::F32, WordOrder::Abcd, &mut two),
            Err(EncodeError::NotFinite)
        );
        assert_eq!(
            encode(1e300, DataType::F32, WordOrder::Abcd, &mut two),
            Err(EncodeError::OutOfRange(1e300))
        );
        assert_eq!(
            encode(18_446_744_073_709_551_616.0, DataType::U64, WordOrder::Abcd, &mut four),
            Err(EncodeError::OutOfRange(18_446_744_073_709_551_616.0))
        );
        assert_eq!(
            encode(1.0, DataType::Bit(2), WordOrder::Abcd, &mut one),
            Err(EncodeError::BitInRegister)
        );
        encode(-32768.4, DataType::I16, WordOrder::Abcd, &mut one).unwrap();
        assert_eq!(one, [0x8000], "rounded to the nearest");
    }

    #[test]
    fn decode_never_panics_on_any_register_contents() {
        bolero::check!().with_type::<([u16; 4], u8)>().for_each(|(regs, sel)| {
            let types = [
                DataType::Bit(sel % 16),
                DataType::U16,
                DataType::I16,
                DataType::U32,
                DataType::I32,
                DataType::F32,
                DataType::U64,
                DataType::I64,
                DataType::F64,
            ];
            let ty = types[usize::from(*sel) % types.len()];
            let order = ORDERS[usize::from(*sel / 16) % 4];
            let v = decode(&regs[..usize::from(ty.width())], ty, order);
            if !ty.is_float() {
                assert!(v.is_finite());
            }
        });
    }
}
