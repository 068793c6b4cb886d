//! The command line.
//!
//! ```text
//! triad run --sim [--config FILE] [--scenario NAME] [--duration D] [--report FILE] [--mes-url URL] [--listen ADDR]
//! triad check-config FILE
//! ```

use crate::config::{self, ConfigSource};
use crate::node::{self, RunOptions};
use crate::scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Run the simulated welding line (the only field I/O in this version).
        #[arg(long)]
        sim: bool,
        /// Configuration file (default: the built-in configuration).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Scenario of the simulated line: nominal, weld-drift, short-excursion, weld-step.
        #[arg(long, default_value = "weld-drift")]
        scenario: String,
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
    },
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TRIAD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::CheckConfig { file } => match config::load(&ConfigSource::File(file.clone())) {
            Ok(cfg) => {
                println!(
                    "{}: ok (node {}, line {}, {} axes, {} cells, {} assets, {} rules)",
                    file.display(),
                    cfg.node,
                    cfg.line,
                    cfg.axes.len(),
                    cfg.cells.len(),
                    cfg.assets.len(),
                    cfg.rules.len()
                );
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
            duration,
            report,
            mes_url,
            listen,
            state_dir,
        } => {
            if !sim {
                eprintln!("triad run: only the simulated line is available in this version; add --sim");
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
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = RunOptions {
                scenario,
                duration,
                listen,
            };
            let result = rt.block_on(node::run(cfg, opts, async {
                let _ = tokio::signal::ctrl_c().await;
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
                    println!(
                        "triad: {} ran {:.1} s: {} cycles, {} overruns, jitter p99 {:.0} µs; {} frames, {} defects; {} alerts, {} work orders",
                        rep.scenario,
                        rep.duration_s,
                        rep.control.cycles,
                        rep.control.overruns,
                        rep.control.jitter_p99_us,
                        rep.inspection.frames,
                        rep.inspection.defects,
                        rep.alerts.len(),
                        rep.work_orders.len()
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
