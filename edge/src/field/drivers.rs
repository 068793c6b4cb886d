//! Make each configured device's driver.

use crate::config::{Driver, NodeConfig};
use triad_hw::sim::{Fault, PlantParams, SimLine};
use triad_hw::{AxisImageDevice, Device, Signal};

/// Every device of `cfg`, in config order. The simulated plant at
/// position `d` gets the faults `faults_of(d)` (the node gives the
/// scenario's to the device the fault axis reads its weld temperature from).
/// A simulated plant starts warm, at the nominal rate of the axis that
/// drives its feed if that axis starts running.
pub fn open(cfg: &NodeConfig, mut faults_of: impl FnMut(usize) -> Vec<Fault>) -> Vec<(String, Box<dyn Device>)> {
    cfg.devices
        .iter()
        .enumerate()
        .map(|(d, dev)| -> (String, Box<dyn Device>) {
            let driver: Box<dyn Device> = match dev.driver {
                Driver::Sim { seed } => {
                    let start_ppm = cfg
                        .axes
                        .iter()
                        .find(|a| a.io.as_ref().is_some_and(|b| b.point(Signal::FeedPpmCmd).device == d))
                        .filter(|a| a.start_running)
                        .map_or(0.0, |a| a.nominal_ppm);
                    Box::new(AxisImageDevice::new(SimLine::warm(
                        PlantParams::default(),
                        seed,
                        faults_of(d),
                        start_ppm,
                    )))
                }
            };
            (dev.id.clone(), driver)
        })
        .collect()
}

/// The device a scenario's faults go to for `axis` (the one its weld
/// temperature is read from), or why there is none.
pub fn fault_device(cfg: &NodeConfig, axis: usize) -> Result<usize, String> {
    let a = &cfg.axes[axis];
    let Some(b) = &a.io else {
        return Err(format!("axis {} is bound to no device", a.id));
    };
    let d = b.point(Signal::WeldTempC).device;
    match cfg.devices[d].driver {
        Driver::Sim { .. } => Ok(d),
    }
}
