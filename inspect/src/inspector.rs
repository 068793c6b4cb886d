//! One worker's inspector: preprocess → model → postprocess.

use crate::model::{ModelError, ModelSession, OnnxModel};
use crate::postprocess::boxes;
use crate::preprocess::{GrayImage, Normalization, Roi, normalize_roi, roi_hash};
use std::sync::Arc;
use thiserror::Error;
use triad_schemas::{DefectBox, Verdict};

/// Settings of one inspection cell.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectorConfig {
    /// Region of the frame the model sees; must match the model's input size.
    pub roi: Roi,
    /// A cell is defective when its defect probability exceeds this.
    pub threshold: f32,
}

/// The result of inspecting one frame (the caller adds ids and stamps).
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    /// Pass or fail.
    pub verdict: Verdict,
    /// Defects, highest score first.
    pub defects: Vec<DefectBox>,
    /// Hash of the ROI pixels.
    pub roi_hash: String,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
}

/// Inspection failed; the frame is not judged.
#[derive(Debug, Error)]
pub enum InspectError {
    /// The frame does not fit the configured ROI.
    #[error(
        "frame {width}x{height} ({len} bytes) does not contain the ROI {roi:?}: check the camera resolution against the cell's roi setting"
    )]
    Geometry {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Pixel buffer length.
        len: usize,
        /// ROI.
        roi: Roi,
    },
    /// The ROI size is not the model's input size.
    #[error(
        "ROI {roi_w}x{roi_h} does not match model {model}'s input {input_w}x{input_h}: set the cell's roi to the model's size"
    )]
    RoiMismatch {
        /// Model name.
        model: String,
        /// ROI width.
        roi_w: u32,
        /// ROI height.
        roi_h: u32,
        /// Model input width.
        input_w: usize,
        /// Model input height.
        input_h: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model produced NaN or infinite values.
    #[error("model {model} {version} produced {count} non-finite outputs: the model is broken; roll it back")]
    NonFinite {
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// How many values.
        count: usize,
    },
}

/// One worker's inspector, holding its model session and buffers.
#[derive(Debug)]
pub struct Inspector {
    cfg: InspectorConfig,
    session: ModelSession,
    norm: Normalization,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl Inspector {
    /// An inspector for `model`; checks that the ROI fits its input.
    pub fn new(cfg: InspectorConfig, model: &Arc<OnnxModel>) -> Result<Self, InspectError> {
        let m = model.manifest();
        let (input_h, input_w) = (m.input.shape[2], m.input.shape[3]);
        if cfg.roi.w as usize != input_w || cfg.roi.h as usize != input_h {
            return Err(InspectError::RoiMismatch {
                model: m.name.clone(),
                roi_w: cfg.roi.w,
                roi_h: cfg.roi.h,
                input_w,
                input_h,
            });
        }
        let norm = Normalization {
            mean: m.input.mean,
            std: m.input.std,
        };
        let n_in = input_w * input_h;
        let n_out = m.output.shape.iter().product();
        Ok(Self {
            cfg,
            session: model.session()?,
            norm,
            input: vec![0.0; n_in],
            output: Vec::with_capacity(n_out),
        })
    }

    /// The model in use.
    pub fn model(&self) -> &Arc<OnnxModel> {
        self.session.model()
    }

    /// Inspect one frame.
    pub fn inspect(&mut self, image: &GrayImage<'_>) -> Result<Inspection, InspectError> {
        let roi = self.cfg.roi;
        if !image.is_consistent() || !roi.fits(image.width, image.height) {
            return Err(InspectError::Geometry {
                width: image.width,
                height: image.height,
                len: image.pixels.len(),
                roi,
            });
        }
        normalize_roi(image, roi, self.norm, &mut self.input);
        self.session.infer(&self.input, &mut self.output)?;
        let m = self.session.model().manifest();
        let bad = self.output.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(InspectError::NonFinite {
                model: m.name.clone(),
                version: m.version.clone(),
                count: bad,
            });
        }
        let (rows, cols) = (m.output.shape[2], m.output.shape[3]);
        let defects = boxes(&self.output, &m.output.classes, rows, cols, roi, self.cfg.threshold);
        Ok(Inspection {
            verdict: if defects.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            defects,
            roi_hash: roi_hash(image, roi),
            model_name: m.name.clone(),
            model_version: m.version.clone(),
        })
    }

    /// The raw output of the last inference (class grid), for tests and tools.
    pub fn last_output(&self) -> &[f32] {
        &self.output
    }

    /// The normalised input of the last inference, for tests and tools.
    pub fn last_input(&self) -> &[f32] {
        &self.input
    }
}
