//! Make each configured device's driver.

use crate::config::{Driver, NodeConfig};
use triad_hw::sim::{Fault, PlantParams, SimLine};
use triad_hw::{AxisImageDevice, Device, Signal};

/// A scenario's faults and the device (its position in the config) they
/// go to.
pub type DeviceFaults = Option<(usize, Vec<Fault>)>;

/// Every device of `cfg`, in config order. `faults` go to the simulated
/// plant at that position (the one the fault axis' weld temperature comes
/// from). A simulated plant starts warm, at the nominal rate of the axis
/// that drives its feed if that axis starts running.
pub fn open(cfg: &NodeConfig, faults: DeviceFaults) -> Vec<(String, Box<dyn Device>)> {
    let (fault_device, mut faults) = match faults {
        Some((d, f)) => (Some(d), Some(f)),
        None => (None, None),
    };
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
                    let faults = if fault_device == Some(d) {
                        faults.take().unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    Box::new(AxisImageDevice::new(SimLine::warm(
                        PlantParams::default(),
                        seed,
                        faults,
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
