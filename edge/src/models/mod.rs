//! Signed model hot-swap: only an authorised, untampered, newer model for
//! this device ever runs; the swap costs no frame; a bad model is rolled back
//! by itself. The same token scheme authorises control commands
//! ([`crate::commands`]).
//!
//! How the pieces fit, from the people who ship models to the frame path:
//!
//! | module | job | IO? |
//! |---|---|---|
//! | [`keys`] | Ed25519 key generation, PEM files, the signing key | files (CLI) |
//! | [`keyring`] | trusted public keys, their uses, revocation | — |
//! | [`bundle`] | bundle files, canonical manifest, digest, signature, safe unpacking, building | — (in memory) |
//! | [`token`] | EdDSA JWTs: issue and verify (time as an argument) | — |
//! | [`replay`] | token ids remembered once (`ReplayGuard`; redb store) | redb |
//! | [`checks`] | the ordered deploy checks, one sans-IO function, a typed [`checks::Refusal`] | — |
//! | [`fuse`] | probation and the decision to roll back (time as an argument) | — |
//! | [`slot`] | arc-swap slot per target; the worker's swap between frames, local rollback | — |
//! | [`twin`] | the twin's ONNX model (built-in `weld_thermal`), the twin thread's predictor | — |
//! | [`manager`] | the model service thread: deploy, rollback, auto-rollback, persistence | threads, files |
//! | [`store`] | deployed bundles under the state directory | files |
//! | [`audit`] | the audit trail: file, memory, bus topic `audit/<node>/event` | files, bus |
//! | [`http`] | `POST /api/models/{target}/deploy` and `/rollback`, `GET /api/models`, `GET /api/audit` | HTTP |
//! | [`bus`] | deploy and rollback requests on `models/<node>/request` | bus |
//! | [`cli`] | `triad keys gen`, `bundle build/sign/verify`, `token issue`, `deploy`, `rollback` | files, HTTP |
//! | [`node`] | wiring into the node: audit topic, replay store, worker, command gate, dashboard | — |
//!
//! A deploy: the front end hands the token and the archive to
//! [`manager::ModelService::deploy`]; the service thread runs
//! [`checks::check_deploy`] (token, replay, unpack, signer, signature,
//! digests, binding, downgrade), loads the model, builds and warms one
//! inspector per worker, runs the golden cases, stores the bundle, and
//! publishes it in the target's [`slot::ModelSlot`]. Each inspection worker
//! takes it between two frames (one atomic load per frame when nothing
//! changed) and keeps the model it replaced; during probation the
//! [`fuse::Fuse`] watches errors, NaN and latency and rolls back on its own.
//! docs/security.md is the operator's guide.

pub mod audit;
pub mod bundle;
pub mod bus;
pub mod checks;
pub mod cli;
pub mod fuse;
pub mod http;
pub mod keyring;
pub mod keys;
pub mod manager;
pub mod node;
pub mod replay;
pub mod slot;
pub mod store;
pub mod token;
pub mod twin;

pub use checks::Refusal;
pub use manager::{BundlePayload, DeployReport, ModelService, ModelsSettings, ServiceOptions, TargetStatus};

/// The token side of `[security]`: trusted keys and token limits, shared by
/// the model service and the command gate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityConfig {
    /// Trusted keys.
    pub keyring: keyring::Keyring,
    /// Token limits.
    pub policy: token::TokenPolicy,
}
