//! The model built into the binary: `weld_seam` 1.0.0, trained by
//! `inspect/training/train_weld_model.py` on the simulated camera's images.
//! Used when a cell's config names no model directory, so `triad run --sim`
//! works from any directory with nothing else installed.

use crate::manifest::ModelManifest;
use crate::model::{ModelError, OnnxModel};

/// ONNX bytes of the built-in model.
pub const WELD_SEAM_ONNX: &[u8] = include_bytes!("../models/weld_seam/model.onnx");
/// Its manifest.
pub const WELD_SEAM_MANIFEST: &str = include_str!("../models/weld_seam/manifest.json");

/// Load the built-in weld-seam model.
pub fn weld_seam() -> Result<OnnxModel, ModelError> {
    let manifest: ModelManifest = serde_json::from_str(WELD_SEAM_MANIFEST).map_err(|e| ModelError::Manifest {
        name: "builtin weld_seam".into(),
        problems: vec![e.to_string()],
    })?;
    OnnxModel::load(WELD_SEAM_ONNX, manifest)
}
