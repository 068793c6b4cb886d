//! Signed model hot-swap: only an authorised, untampered, newer model for
//! this device ever runs; the swap costs no frame; a bad model is rolled back
//! by itself. Keys, tokens, replay and audit are [`crate::trust`]'s, shared
//! with control commands ([`crate::commands`]).
//!
//! How the pieces fit, from the people who ship models to the frame path:
//!
//! | module | job | IO? |
//! |---|---|---|
//! | [`bundle`] | bundle files, canonical manifest, digest, signature, safe unpacking, building | — (in memory) |
//! | [`checks`] | the ordered deploy checks, one sans-IO function, a typed [`checks::Refusal`] | — |
//! | [`fuse`] | probation and the decision to roll back (time as an argument) | — |
//! | [`slot`] | arc-swap slot per target; the worker's swap between frames, local rollback | — |
//! | [`twin`] | the twin's ONNX model (built-in `weld_thermal`), the twin thread's predictor | — |
//! | [`manager`] | the model service thread: deploy, rollback, auto-rollback, persistence | threads, files |
//! | [`store`] | deployed bundles under the state directory | files |
//! | [`bus`] | deploy and rollback requests on `models/<node>/request` | bus |
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
//! Around it: [`crate::trust`] (keys, keyring, tokens, replay, audit),
//! [`crate::api`] (the HTTP routes), [`crate::cli::models`] (`triad keys`,
//! `bundle`, `token`, `deploy`, `rollback`) and [`crate::node::models`] (the
//! wiring into the node). docs/security.md is the operator's guide.

pub mod bundle;
pub mod bus;
pub mod checks;
pub mod fuse;
pub mod manager;
pub mod slot;
pub mod store;
pub mod twin;

pub use checks::Refusal;
pub use manager::{BundlePayload, DeployReport, ModelService, ModelsSettings, ServiceOptions, TargetStatus};
