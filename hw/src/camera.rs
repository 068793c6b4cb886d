//! Cameras: a trigger goes in, a grey-scale frame comes out.

use thiserror::Error;

/// What caused a capture: one weld of one module passing the camera cell.
/// `Copy`: triggers cross a lock-free ring from the I/O scan to the cell's
/// inspection worker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaptureTrigger {
    /// Serial number of the battery module (the part), counting from 1.
    pub module_serial: u64,
    /// Index of the weld within the module, counting from 0.
    pub weld_index: u32,
    /// When the weld passed the camera, in ns on the node clock.
    pub stamp_ns: i64,
    /// Weld temperature in °C when the weld was made. A real camera does not
    /// receive this; the simulated camera uses it to decide how likely a
    /// defect is, because a hotter weld is more likely to be porous or cracked.
    pub weld_temp_c: f64,
}

/// One grey-scale image (8 bits per pixel, row-major, no padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` bytes, row 0 first.
    pub pixels: Vec<u8>,
    /// The trigger that produced this frame.
    pub trigger: CaptureTrigger,
    /// What is really in the image. Only simulated cameras know it; it is
    /// used to train the model and to measure its accuracy, never to decide.
    pub truth: Option<FrameTruth>,
}

impl Frame {
    /// The pixel at column `x`, row `y`.
    ///
    /// # Panics
    /// If the coordinates are outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> u8 {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x},{y}) outside {}x{}",
            self.width,
            self.height
        );
        self.pixels[(y * self.width + x) as usize]
    }
}

/// Ground truth of a simulated frame.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FrameTruth {
    /// Every defect drawn into the frame; empty for a good weld.
    pub defects: Vec<TruthBox>,
}

/// A defect that the simulated camera drew, in frame pixel coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct TruthBox {
    /// Defect class label, one of the model's classes (for example `porosity`, `crack`).
    pub class: String,
    /// Left edge, pixels from the frame's left border.
    pub x: u32,
    /// Top edge, pixels from the frame's top border.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

/// Why a capture failed.
#[derive(Debug, Error)]
pub enum CameraError {
    /// The camera did not deliver a frame in time.
    #[error("camera {camera} delivered no frame within {timeout_ms} ms: check its cable and trigger wiring")]
    Timeout {
        /// Camera name from the config.
        camera: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The camera is not connected or was unplugged.
    #[error("camera {camera} is not available: {reason}")]
    Unavailable {
        /// Camera name from the config.
        camera: String,
        /// What the driver reported.
        reason: String,
    },
}

/// A camera that captures one frame per trigger.
pub trait Camera: Send {
    /// Frame width and height in pixels; fixed for the camera's lifetime.
    fn geometry(&self) -> (u32, u32);
    /// Capture the frame for `trigger`.
    fn capture(&mut self, trigger: &CaptureTrigger) -> Result<Frame, CameraError>;
}
