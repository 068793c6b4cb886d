//! Make each configured device's driver.

use super::modbus::link::LinkDevice;
use super::modbus::{ModbusDevice, ModbusLinks, ModbusView, SharedImage};
use crate::clock::Clock;
use crate::config::gpio::GpioConfig;
use crate::config::{Driver, NodeConfig};
use std::sync::Arc;
use triad_hw::sim::{Fault, PlantParams, SimLine};
use triad_hw::{AxisImageDevice, Device, GpioDevice, Signal};

/// The line's devices, ready for the I/O scan, and what runs behind them.
pub struct Field {
    /// Every device (id, driver), in config order.
    pub devices: Vec<(String, Box<dyn Device>)>,
    /// The Modbus devices' link tasks (none without Modbus devices).
    pub modbus: ModbusLinks,
    /// Each Modbus device with its shared image, for its figures.
    pub modbus_images: Vec<ModbusView>,
}

/// Every device of `cfg`, in config order. The simulated plant at
/// position `d` gets the faults `faults_of(d)` (the node gives the
/// scenario's to the device the fault axis reads its weld temperature from).
/// A simulated plant starts warm, at the nominal rate of the axis that
/// drives its feed if that axis starts running. Modbus devices get their
/// link tasks on the current tokio runtime (needed only if there are any).
/// A GPIO chip that cannot be opened is an error naming device and chip.
pub fn open(
    cfg: &NodeConfig,
    mut faults_of: impl FnMut(usize) -> Vec<Fault>,
    clock: &Arc<dyn Clock>,
) -> Result<Field, String> {
    let mut links = Vec::new();
    let mut modbus_images = Vec::new();
    let devices = cfg
        .devices
        .iter()
        .enumerate()
        .map(|(d, dev)| -> Result<(String, Box<dyn Device>), String> {
            let driver: Box<dyn Device> = match &dev.driver {
                Driver::Sim { seed } => {
                    let start_ppm = cfg
                        .axes
                        .iter()
                        .find(|a| a.io.as_ref().is_some_and(|b| b.point(Signal::FeedPpmCmd).device == d))
                        .filter(|a| a.start_running)
                        .map_or(0.0, |a| a.nominal_ppm);
                    Box::new(AxisImageDevice::new(SimLine::warm(
                        PlantParams::default(),
                        *seed,
                        faults_of(d),
                        start_ppm,
                    )))
                }
                Driver::Modbus(m) => {
                    let shared = Arc::new(SharedImage::new(m.points.len()));
                    modbus_images.push(ModbusView {
                        id: dev.id.clone(),
                        cfg: m.clone(),
                        image: shared.clone(),
                    });
                    links.push(LinkDevice {
                        id: dev.id.clone(),
                        cfg: m.clone(),
                        shared: shared.clone(),
                    });
                    Box::new(ModbusDevice::new(m.clone(), shared))
                }
                Driver::Gpio(g) => open_gpio(&dev.id, g)?,
            };
            Ok((dev.id.clone(), driver))
        })
        .collect::<Result<_, String>>()?;
    Ok(Field {
        devices,
        modbus: ModbusLinks::start(links, clock.clone()),
        modbus_images,
    })
}

/// The GPIO chip's lines as a device (Linux's GPIO character device).
#[cfg(target_os = "linux")]
fn open_gpio(id: &str, g: &GpioConfig) -> Result<Box<dyn Device>, String> {
    let lines = triad_hw::ChipLines::open(&g.chip, &g.points).map_err(|e| format!("device {id}: {e}"))?;
    Ok(Box::new(GpioDevice::new(id, g.points.clone(), lines)?))
}

#[cfg(not(target_os = "linux"))]
fn open_gpio(id: &str, _: &GpioConfig) -> Result<Box<dyn Device>, String> {
    Err(format!(
        "device {id}: the gpio driver needs Linux's GPIO character device"
    ))
}

/// The device a scenario's faults go to for `axis` (the simulated plant its
/// weld temperature is read from), or why there is none.
pub fn fault_device(cfg: &NodeConfig, axis: usize) -> Result<usize, String> {
    let a = &cfg.axes[axis];
    let Some(b) = &a.io else {
        return Err(format!("axis {} is bound to no device", a.id));
    };
    let d = b.point(Signal::WeldTempC).device;
    match &cfg.devices[d].driver {
        Driver::Sim { .. } => Ok(d),
        other => Err(format!(
            "axis {} reads its weld temperature from {} device {:?}; faults are injected into simulated plants only (for the simulated plant served over Modbus, give the scenario to `triad sim-plant --scenario`)",
            a.id,
            other.name(),
            cfg.devices[d].id
        )),
    }
}
