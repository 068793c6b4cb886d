//! # triad-inspect: weld inspection with an ONNX model
//!
//! A frame goes through four steps, each its own module:
//!
//! 1. [`preprocess`]: crop the region of interest (ROI), hash it, and
//!    normalise it into the model's input tensor (a detector's ROI is
//!    letterboxed into its input, [`families::letterbox`]).
//! 2. [`model`]: run the ONNX model with tract. The model is loaded, given
//!    fixed input shapes, optimised once and turned into a plan; each worker
//!    keeps its own [`model::ModelSession`] so nothing is rebuilt per frame.
//! 3. Post-processing by the manifest's model family ([`families`]): the
//!    grid of class probabilities per 8×8-pixel cell ([`postprocess`]), a
//!    classifier's top classes, or a YOLOv8 detector's boxes after
//!    class-wise NMS; each becomes a verdict and
//!    [`triad_schemas::DefectBox`]es in frame coordinates
//!    ([`families::head`] dispatches and states the verdict rules).
//! 4. [`history`]: results are counted per batch so the closed-loop analysis
//!    can pull the last batches of a cell.
//!
//! [`Inspector`] ties 1–3 together. Everything is sans-IO: it takes frames
//! and returns results; timing and publishing are the caller's.
//!
//! A model directory holds `model.onnx` and `manifest.json` (name, version,
//! input and output shapes, normalisation, classes); see [`manifest`].
#![deny(missing_docs)]

pub mod builtin;
pub mod families;
pub mod history;
pub mod inspector;
pub mod manifest;
pub mod model;
pub mod postprocess;
pub mod preprocess;

pub use inspector::{InspectError, Inspection, Inspector, InspectorConfig};
pub use manifest::{ModelKind, ModelManifest};
pub use model::{ModelError, ModelSession, OnnxModel};
pub use preprocess::{GrayImage, Normalization, Roi};
