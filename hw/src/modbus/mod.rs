//! The sans-IO core of the Modbus driver: how values sit in registers
//! ([`codec`]), which requests read a device's points ([`plan`]), and a
//! configured point ([`point`]). The connection, timeouts and polling live
//! in the node (`triad_edge::field::modbus`); nothing here does I/O or reads
//! a clock.
//!
//! Addresses here are wire addresses (the PDU's, zero-based); the config
//! converts one-based manual numbering once, at load.

pub mod codec;
pub mod plan;
pub mod point;
pub mod sim_map;

pub use codec::{DataType, EncodeError, Table, WordOrder};
pub use plan::{Block, Span};
pub use point::ModbusPoint;
