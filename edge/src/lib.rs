//! # triad-edge: the node
//!
//! One process runs real-time control, ONNX inspection and the twin, on one
//! clock and one bus. The modules, from the hardware side out:
//!
//! | module | job |
//! |---|---|
//! | [`field`] | the line's devices (`[[devices]]`, drivers behind `triad_hw::Device`) and the I/O scan between their points and each axis' process image |
//! | [`control`] | the RT control thread: sans-IO axis program, fixed-period runner, lock-free rings, jitter histogram |
//! | [`node`] | builds every station from the config: an inspection and a twin thread per station, the async tasks, the closed loop, the model wiring and the run report |
//! | [`rules`] | the closed-loop rules, sans-IO: alert → derate → alert stored → analysis → work order, as actions from events and `now` |
//! | [`commands`] | the command gate: checks command tokens and scope, executes and audits control commands |
//! | [`models`] | signed model bundles, the ordered deploy checks, the arc-swap slot, the fuse, rollback, the model service |
//! | [`trust`] | keys, keyring, tokens, replay memory and the audit trail, shared by model deploys and commands |
//! | [`api`] | the node's HTTP API: model deploy and rollback, control commands, the audit trail |
//! | [`bus`] | the bus trait, the embedded backend, the durable outbox (redb) and the publisher |
//! | [`mes`] | delivers work orders to the MES over HTTP, retried from the outbox |
//! | [`dashboard`] | the HTTP dashboard, `/api/state`, `/metrics`, `/healthz` |
//! | [`clock`] | the `Clock` trait and its backends |
//! | [`durable`] | atomically replaced state files; damaged files set aside |
//! | [`config`] | the TOML config, environment overrides, validation |
//! | [`scenario`] | simulated fault schedules |
//! | [`cli`] | `triad run`, `triad check-config`, the model and token commands of [`cli::models`], the bus tools of [`cli::bus`] (`schemas push/check`, `bus-load`) |
//!
//! Data flow of the closed loop: control thread → telemetry ring → twin
//! thread → alert → derate rule → command gate → request ring → control
//! thread; in parallel the analysis reads the inspection history and the
//! work order goes through the outbox to the bus and the MES.
#![deny(missing_docs)]

pub mod api;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod durable;
pub mod field;
pub mod mes;
pub mod metrics;
pub mod models;
pub mod node;
pub mod rules;
pub mod scenario;
pub mod trust;
