//! `triad sim-plant --modbus ADDR`: the simulated welding line as a Modbus
//! TCP device, for running plant and node as two processes
//! (`deploy/examples/sim-plant-modbus.toml` is the node's config for it).

use crate::clock::{Clock, SystemClock};
use crate::scenario;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use triad_hw::sim::{PlantParams, SimLine};

/// `triad sim-plant`.
#[derive(Debug, clap::Args)]
pub struct SimPlantArgs {
    /// Address to serve Modbus TCP on, e.g. 127.0.0.1:5020.
    #[arg(long, value_name = "ADDR")]
    pub modbus: std::net::SocketAddr,
    /// Unit id it answers (others get exception 11).
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Seed of the plant.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Scenario: nominal, weld-drift, short-excursion, weld-step (its
    /// faults count from the node's first write).
    #[arg(long, default_value = "weld-drift")]
    pub scenario: String,
    /// The plant starts warm, running at this rate, PPM (as the node's
    /// `--sim` plant does for an axis that starts running).
    #[arg(long, default_value_t = 12.0)]
    pub warm_ppm: f64,
    /// Stop after this long (e.g. 60s); default: until Ctrl-C.
    #[arg(long, value_name = "D")]
    pub duration: Option<String>,
}

/// Run `triad sim-plant`.
pub fn run(a: SimPlantArgs) -> ExitCode {
    let sc = match scenario::by_name(&a.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("--scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let duration = match a.duration.as_deref().map(scenario::parse_duration).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("--duration: {e}");
            return ExitCode::from(2);
        }
    };
    if !(a.warm_ppm.is_finite() && a.warm_ppm >= 0.0) {
        eprintln!("--warm-ppm {}: give a rate >= 0", a.warm_ppm);
        return ExitCode::from(2);
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let plant = SimLine::warm(PlantParams::default(), a.seed, sc.faults, a.warm_ppm);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.modbus)
            .await
            .map_err(|e| std::io::Error::other(format!("cannot listen on {} for Modbus TCP: {e}", a.modbus)))?;
        println!(
            "triad sim-plant: the simulated welding line ({} scenario) is Modbus TCP unit {} on {}",
            sc.name,
            a.unit,
            listener.local_addr()?
        );
        let _ = std::io::stdout().flush();
        let stop = async move {
            match duration {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = crate::node::stop_signal() => {}
                },
                None => {
                    crate::node::stop_signal().await;
                }
            }
        };
        crate::field::modbus::serve_sim_plant(listener, a.unit, plant, clock, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad sim-plant: {e}");
            ExitCode::FAILURE
        }
    }
}
