//! One worker's inspector: preprocess → model → postprocess, for every
//! model family the manifest may declare.
//!
//! The family (`"family"` in the manifest) picks a [`Head`]: how the ROI
//! becomes the model's input and how the output becomes a verdict (the
//! table and rules are in [`crate::families::head`]). Whatever the family,
//! an [`Inspection`] is a verdict, defect boxes in frame pixels (none on a
//! Pass, at least one on a Fail), the ROI's hash and the model's name and
//! version, and the errors are the same: a non-finite output is
//! [`InspectError::NonFinite`], an engine failure [`InspectError::Model`],
//! which the node's probation fuse counts alike for every family.

use crate::families::Detection;
use crate::families::head::Head;
use crate::model::{ModelError, ModelSession, OnnxModel};
use crate::preprocess::{GrayImage, Normalization, Roi, roi_hash};
use std::sync::Arc;
use thiserror::Error;
use triad_schemas::{DefectBox, Verdict};

/// Settings of one inspection cell.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectorConfig {
    /// Region of the frame the model sees: the model's input size for a
    /// `grid` or `classifier` model; any size for a `detector-yolo` model
    /// (it is letterboxed into the input).
    pub roi: Roi,
    /// `grid` models: a cell is defective when its defect probability
    /// exceeds this. (A classifier passes on its ok class; a detector's
    /// thresholds are in its manifest.)
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
    /// A detector's ROI is empty.
    #[error("ROI {roi:?} is empty: model {model} needs a ROI of at least 1x1 pixels; set the cell's roi")]
    EmptyRoi {
        /// Model name.
        model: String,
        /// ROI.
        roi: Roi,
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
    head: Head,
    norm: Normalization,
    input: Vec<f32>,
    output: Vec<f32>,
    detections: Vec<Detection>,
}

impl Inspector {
    /// An inspector for `model`; checks that the ROI fits its input (see
    /// [`InspectorConfig::roi`]).
    pub fn new(cfg: InspectorConfig, model: &Arc<OnnxModel>) -> Result<Self, InspectError> {
        let m = model.manifest();
        let head = Head::new(m, cfg.roi)?;
        let norm = Normalization {
            mean: m.input.mean,
            std: m.input.std,
        };
        // `load` validated the manifest: both products are within bounds.
        let n_in = m.input_values().unwrap_or(0);
        let n_out = m.output_values().unwrap_or(0);
        Ok(Self {
            cfg,
            session: model.session()?,
            head,
            norm,
            input: vec![0.0; n_in],
            output: Vec::with_capacity(n_out),
            detections: Vec::new(),
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
        self.detections.clear();
        self.head.prepare(image, roi, self.norm, &mut self.input);
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
        let j = self.head.judge(m, &self.output, roi, self.cfg.threshold)?;
        self.detections = j.detections;
        Ok(Inspection {
            verdict: j.verdict,
            defects: j.defects,
            roi_hash: roi_hash(image, roi),
            model_name: m.name.clone(),
            model_version: m.version.clone(),
        })
    }

    /// The raw output of the last inference (class grid, class scores or
    /// detector tensor), for tests and tools.
    pub fn last_output(&self) -> &[f32] {
        &self.output
    }

    /// The input tensor of the last inference, for tests and tools.
    pub fn last_input(&self) -> &[f32] {
        &self.input
    }

    /// `detector-yolo`: the boxes of the last inspection in frame pixels
    /// before rounding (its defects are these rounded outwards), highest
    /// score first; empty for other families.
    pub fn last_detections(&self) -> &[Detection] {
        &self.detections
    }
}
