//! Who may do what: the keys, tokens, replay memory and audit trail shared
//! by signed model deploys ([`crate::models`]) and control commands
//! ([`crate::commands`]).
//!
//! | module | job | IO? |
//! |---|---|---|
//! | [`keys`] | Ed25519 key generation, PEM files, the signing key | files (CLI) |
//! | [`keyring`] | trusted public keys, their uses, revocation | — |
//! | [`token`] | EdDSA JWTs: issue and verify (time as an argument) | — |
//! | [`replay`] | token ids remembered once ([`replay::ReplayGuard`]; redb store) | redb |
//! | [`audit`] | the audit trail: file, memory, bus topic `audit/<node>/event` | files, bus |
//!
//! docs/security.md is the operator's guide.

pub mod audit;
pub mod keyring;
pub mod keys;
pub mod replay;
pub mod token;

use std::sync::{Arc, Mutex};

/// The token side of `[security]`: trusted keys and token limits, shared by
/// the model service and the command gate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityConfig {
    /// Trusted keys.
    pub keyring: keyring::Keyring,
    /// Token limits.
    pub policy: token::TokenPolicy,
}

/// The node's one replay store, shared by the model service and the command
/// gate (a token id is used once, whatever it was for).
pub type SharedReplay = Arc<Mutex<dyn replay::ReplayGuard>>;
