//! The command line.
//!
//! ```text
//! triad run (--sim | --config FILE | --sim --config FILE) [--scenario NAME] [--duration D] [--report FILE] [--mes-url URL] [--listen ADDR]
//! triad check-config FILE
//! triad sim-plant --modbus ADDR [--unit N] [--seed N] [--scenario NAME]   (the simulated line as a Modbus TCP device)
//! triad keys gen | bundle build/sign/verify/pack | token issue | deploy | rollback   (signed models, see `cli::models`)
//! triad bench control [--duration D] [--axes N] [--blocks K] [--priority P] [--cpu C]   (control jitter against cyclictest, see `cli::bench`)
//! ```

pub mod bench;
pub mod bus;
pub mod models;
pub mod sim_plant;

use crate::config::{self, ConfigSource};
use crate::node::{self, RunOptions};
use crate::scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Longest an orderly stop (SIGINT or SIGTERM) may take before the process
/// exits anyway (systemd's TimeoutStopSec should be longer).
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// triad: real-time control, ONNX inspection and a digital twin on one edge node.
#[derive(Debug, Parser)]
#[command(name = "triad", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node.
    Run {
        /// Give every axis without [axes.io] its own simulated welding line
        /// (with no --config: the built-in one-axis line).
        #[arg(long)]
        sim: bool,
        /// Configuration file: the line's devices, axes, cells and assets
        /// (default with --sim: the built-in configuration).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Scenario of the simulated line: nominal, weld-drift, short-excursion, weld-step.
        #[arg(long, default_value = "weld-drift")]
        scenario: String,
        /// The axis whose simulated plant gets the scenario's faults (default:
        /// the first [[axes]] entry); the other axes run nominal.
        #[arg(long, value_name = "AXIS")]
        fault_axis: Option<String>,
        /// Stop after this long (e.g. 30s, 2m); default: run until Ctrl-C.
        #[arg(long, value_name = "D")]
        duration: Option<String>,
        /// Write the run report (JSON) here when the run ends.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// POST work orders to this MES URL (overrides [mes] url).
        #[arg(long, value_name = "URL")]
        mes_url: Option<String>,
        /// Dashboard address (overrides [dashboard] listen), e.g. 127.0.0.1:0.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// State directory (overrides [node] state_dir).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Bus: `embedded`, or a Pulsar URL such as pulsar://127.0.0.1:6650 (overrides [bus]).
        #[arg(long, value_name = "URL")]
        bus: Option<String>,
    },
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Register (push) or check the Avro schemas of every topic in a Pulsar cluster.
    Schemas(SchemasArgs),
    /// Publish N inspection results through the outbox to Pulsar, resuming
    /// after a crash; for durability tests and benchmarks.
    BusLoad(BusLoadArgs),
    /// Make Ed25519 signing keys for bundles and tokens.
    Keys {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cli::models::KeysCmd,
    },
    /// Build, sign, verify and pack model bundles.
    Bundle {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cli::models::BundleCmd,
    },
    /// Issue signed tokens for deploys, rollbacks and control commands.
    Token {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cli::models::TokenCmd,
    },
    /// Deploy a signed model bundle to a running node.
    Deploy(crate::cli::models::DeployArgs),
    /// Roll a target of a running node back to its previous model.
    Rollback(crate::cli::models::RollbackArgs),
    /// Serve the simulated welding line as a Modbus TCP device, for
    /// `triad run --config deploy/examples/sim-plant-modbus.toml`.
    SimPlant(crate::cli::sim_plant::SimPlantArgs),
    /// Benchmarks on this machine: `triad bench control` measures the
    /// control cycle's wake-up latency against cyclictest, in alternating
    /// blocks, with the node's neighbours (inspection, twin, Modbus scan) running.
    Bench(crate::cli::bench::BenchArgs),
}

/// `triad schemas`.
#[derive(Debug, clap::Args)]
pub struct SchemasArgs {
    /// `push` registers every topic's schema (and sets the namespace to BACKWARD); `check` only compares.
    #[arg(value_parser = ["push", "check"])]
    pub action: String,
    /// Pulsar admin URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub admin_url: String,
    /// Configuration whose topics to register (default: the built-in one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Tenant (default: [bus] tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Namespace (default: [bus] namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// File with a JWT for the admin API (default: [bus] token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `triad bus-load`.
#[derive(Debug, clap::Args)]
pub struct BusLoadArgs {
    /// Pulsar URL.
    #[arg(long, value_name = "URL")]
    pub bus: String,
    /// Pulsar admin URL (default: the broker host, port 8080).
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,
    /// How many results in total (sequences 1..=N).
    #[arg(long)]
    pub count: u64,
    /// Where the outbox lives; reuse it to resume.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Cell id.
    #[arg(long, default_value = "cell_2245")]
    pub cell: String,
    /// File with a JWT for the broker.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Logs on stderr, one event per line: colours only on a terminal (a file
/// or the journal gets plain text), JSON objects with
/// `TRIAD_LOG_FORMAT=json`; `TRIAD_LOG` filters.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TRIAD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match std::env::var("TRIAD_LOG_FORMAT").as_deref() {
        Ok("json") => fmt.json().flatten_event(true).try_init(),
        Ok("text") | Err(_) => fmt.try_init(),
        Ok(other) => {
            let r = fmt.try_init();
            tracing::warn!("TRIAD_LOG_FORMAT={other:?} is not a log format (\"text\" or \"json\"); logging text");
            r
        }
    };
}

/// The async runtime: one thread. The node's async side is light (bus,
/// dashboard, MES, closed loop); on one thread a bus round trip costs no
/// cross-thread wake-ups (docs/benchmarks.md measured 2.3 ms → 1.3 ms p99 on
/// a control topic), and it leaves the second core to the real-time threads
/// and the inspection worker. Disk and CPU-heavy work goes to the blocking
/// pool or the node's own threads.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn run_schemas(a: SchemasArgs) -> ExitCode {
    let source = a
        .config
        .clone()
        .map(ConfigSource::File)
        .unwrap_or(ConfigSource::Default);
    let cfg = match config::load(&source) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let (tenant, namespace, token_file) = match &cfg.bus {
        config::BusConfig::Pulsar(p) => (p.tenant.clone(), p.namespace.clone(), p.token_file.clone()),
        config::BusConfig::Embedded => ("public".to_string(), "default".to_string(), None),
    };
    let tenant = a.tenant.unwrap_or(tenant);
    let namespace = a.namespace.unwrap_or(namespace);
    let token = match a
        .token_file
        .or(token_file)
        .map(|f| crate::bus::pulsar_admin::read_token(&f))
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let admin =
        match crate::bus::pulsar_admin::PulsarAdmin::new(&a.admin_url, token, None, std::time::Duration::from_secs(10))
        {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let topics = bus::topics_of(&cfg);
    match rt.block_on(bus::schemas_command(
        a.action == "push",
        &topics,
        &admin,
        &tenant,
        &namespace,
    )) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("{n} topic(s) refused: the new schema cannot read what is registered (BACKWARD); see above");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("triad schemas {}: {e:#}", a.action);
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "pulsar"))]
fn run_bus_load(_: BusLoadArgs) -> ExitCode {
    eprintln!("triad bus-load: {}", crate::bus::PULSAR_NOT_BUILT);
    ExitCode::from(2)
}

#[cfg(feature = "pulsar")]
fn run_bus_load(a: BusLoadArgs) -> ExitCode {
    let mut p = match config::PulsarConfig::for_url(&a.bus) {
        Ok(p) => p,
        Err(e) => {
            eprint!("--bus: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(u) = a.admin_url {
        p.admin_url = u;
    }
    p.token_file = a.token_file;
    let cell = match triad_schemas::ids::CellId::new(a.cell) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("--cell: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    match rt.block_on(bus::bus_load(p, &a.state_dir, cell, a.count)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad bus-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Schemas(a) => run_schemas(a),
        Command::BusLoad(a) => run_bus_load(a),
        Command::Keys { cmd } => crate::cli::models::keys(cmd),
        Command::Bundle { cmd } => crate::cli::models::bundle(cmd),
        Command::Token { cmd } => crate::cli::models::token(cmd),
        Command::Deploy(a) => crate::cli::models::deploy(a),
        Command::Rollback(a) => crate::cli::models::rollback(a),
        Command::SimPlant(a) => crate::cli::sim_plant::run(a),
        Command::Bench(a) => crate::cli::bench::run(a),
        Command::CheckConfig { file } => match config::load(&ConfigSource::File(file.clone())) {
            Ok(cfg) => {
                println!(
                    "{}: ok (node {}, line {}, {} devices, {} axes, {} cells, {} assets, {} rules)",
                    file.display(),
                    cfg.node,
                    cfg.line,
                    cfg.devices.len(),
                    cfg.axes.len(),
                    cfg.cells.len(),
                    cfg.assets.len(),
                    cfg.rules.len()
                );
                let unbound = cfg.unbound_axes();
                if !unbound.is_empty() {
                    println!(
                        "note: axes {unbound:?} have no [axes.io]: they run only with --sim (a simulated welding line each)"
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            sim,
            config: cfg_path,
            scenario: sc,
            fault_axis,
            duration,
            report,
            mes_url,
            listen,
            state_dir,
            bus,
        } => {
            if !sim && cfg_path.is_none() {
                eprintln!(
                    "triad run: give --config FILE (a line's devices and axes, docs/configuration.md) or --sim (the built-in simulated line)"
                );
                return ExitCode::from(2);
            }
            let source = cfg_path.map(ConfigSource::File).unwrap_or(ConfigSource::Default);
            let mut cfg = match config::load(&source) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            if sim {
                cfg.simulate_unbound();
            } else if let unbound @ [_, ..] = cfg.unbound_axes().as_slice() {
                eprintln!(
                    "triad run: axes {unbound:?} have no [axes.io] binding their signals to device points; \
                     add one (docs/configuration.md), or add --sim to give each a simulated welding line"
                );
                return ExitCode::from(2);
            }
            if let Some(url) = mes_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    eprintln!("--mes-url {url:?}: give an http:// or https:// URL");
                    return ExitCode::from(2);
                }
                cfg.mes.url = Some(url);
            }
            if let Some(dir) = state_dir {
                cfg.state_dir = dir;
            }
            match bus.as_deref() {
                None => {}
                Some("embedded") => cfg.bus = config::BusConfig::Embedded,
                Some(url) => match config::PulsarConfig::for_url(url) {
                    Ok(mut p) => {
                        // Keep credentials and names from the config file, if it had a pulsar section.
                        if let config::BusConfig::Pulsar(old) = &cfg.bus {
                            p.token_file = old.token_file.clone();
                            p.tls_ca_file = old.tls_ca_file.clone();
                            p.tenant = old.tenant.clone();
                            p.namespace = old.namespace.clone();
                        }
                        cfg.bus = config::BusConfig::Pulsar(p);
                    }
                    Err(e) => {
                        eprint!("--bus: {e}");
                        return ExitCode::from(2);
                    }
                },
            }
            let scenario = match scenario::by_name(&sc) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("--scenario: {e}");
                    return ExitCode::from(2);
                }
            };
            let duration = match duration.map(|d| scenario::parse_duration(&d)).transpose() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("--duration: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(c) => return c,
            };
            let fault_axis = match fault_axis.map(|a| (a.parse::<triad_schemas::ids::AxisId>().ok(), a)) {
                None => None,
                Some((Some(id), _)) if cfg.axis(&id).is_some() => Some(id),
                Some((_, a)) => {
                    let known: Vec<&str> = cfg.axes.iter().map(|x| x.id.as_str()).collect();
                    eprintln!("--fault-axis {a}: the configuration has no such axis; its axes are {known:?}");
                    return ExitCode::from(2);
                }
            };
            let opts = RunOptions {
                scenario,
                fault_axis,
                duration,
                listen,
            };
            let result = rt.block_on(node::run(cfg, opts, async {
                let which = node::stop_signal().await;
                tracing::info!(signal = which, limit_s = STOP_LIMIT.as_secs(), "orderly stop");
                // The stop is bounded: if it hangs (a disk that blocks, a
                // peer that never answers), exit anyway; what was not stored
                // is completed from the journals at the next start.
                std::thread::spawn(|| {
                    std::thread::sleep(STOP_LIMIT);
                    eprintln!(
                        "triad: the orderly stop took longer than {} s; exiting now (interrupted closed-loop steps complete at the next start)",
                        STOP_LIMIT.as_secs()
                    );
                    std::process::exit(1);
                });
            }));
            match result {
                Ok(rep) => {
                    let text = serde_json::to_string_pretty(&rep).expect("report serialises");
                    if let Some(path) = report {
                        if let Err(e) = std::fs::write(&path, &text) {
                            eprintln!("cannot write the report to {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                        eprintln!("triad: report written to {}", path.display());
                    }
                    let st = &rep.stations;
                    println!(
                        "triad: {} on {} ran {:.1} s: {} cycles, {} overruns, jitter p99 {:.0} µs; {} axes: {} frames, {} defects; {} alerts, {} work orders",
                        rep.scenario,
                        rep.axis,
                        rep.duration_s,
                        rep.control.cycles,
                        rep.control.overruns,
                        rep.control.jitter_p99_us,
                        st.len(),
                        st.iter().map(|s| s.frames).sum::<u64>(),
                        st.iter().map(|s| s.defects).sum::<u64>(),
                        st.iter().map(|s| s.alerts.len()).sum::<usize>(),
                        st.iter().map(|s| s.work_orders.len()).sum::<usize>()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("triad run failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
