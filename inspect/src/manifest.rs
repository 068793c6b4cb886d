//! The model manifest: what a model expects and produces.
//!
//! `manifest.json` sits next to `model.onnx`:
//!
//! ```json
//! {
//!   "name": "weld_seam",
//!   "version": "1.0.0",
//!   "kind": "inspection",
//!   "input": { "name": "roi", "shape": [1, 1, 64, 64], "mean": 0.5, "std": 0.25 },
//!   "output": { "name": "grid", "shape": [1, 3, 8, 8], "classes": ["good", "porosity", "crack"] }
//! }
//! ```
//!
//! Channel 0 of the output is the "no defect" class; the others are defect
//! classes, named in `classes`.
//!
//! `"family"` picks the layout and post-processing: `grid` (the default,
//! above), `classifier` (output `[1, C]`, optional
//! `"classifier": {"softmax": true, "ok_class": "good", "top_k": 3}`) or
//! `detector-yolo` (output `[1, 4 + C, N]`, optional
//! `"detector": {"confidence": 0.25, "iou": 0.7, "max_detections": 300}`);
//! see [`crate::families`] and docs/models.md.
//!
//! A twin model (`"kind": "twin"`) has no normalisation or classes; its
//! input is the feature vector [`TWIN_FEATURES`] and its output the
//! predicted temperature:
//!
//! ```json
//! {
//!   "name": "weld_thermal", "version": "1.0.0", "kind": "twin",
//!   "input": { "name": "x", "shape": [1, 5], "features": ["temp_c", "dt_s", "feed_ppm", "weld_current_a", "ambient_c"] },
//!   "output": { "name": "y", "shape": [1, 1] }
//! }
//! ```
//!
//! A **signed model bundle** (see the node's `models` module and
//! docs/security.md) uses the same file with three more keys, all optional
//! so that a plain model directory stays valid:
//!
//! ```json
//! {
//!   "target": "cell_2245",
//!   "files": { "model.onnx": "<sha256 hex>", "golden/0.in.f32": "<sha256 hex>", "golden/0.out.f32": "<sha256 hex>" },
//!   "golden": { "tolerance": 0.0001, "cases": [ { "input": "golden/0.in.f32", "output": "golden/0.out.f32" } ] }
//! }
//! ```
//!
//! `target` is the cell (or asset) the model is for, `files` the SHA-256 of
//! every other file of the bundle, and `golden` reference inputs with the
//! outputs the model must reproduce (raw little-endian `f32`, the input and
//! output shapes above) within `tolerance` (largest absolute difference).
//!
//! **Bounds.** Every size a manifest declares is checked by
//! [`ModelManifest::validate`] before anything is allocated from it (see
//! [`bounds`]): the rank of a shape, each dimension and the number of values
//! (a product computed with checked arithmetic), the number of classes,
//! features, files and golden cases, the length of every string, and that
//! `mean`, `std` and `tolerance` are finite. Each problem names the field,
//! its bound, the value found and what to do.

use crate::families::ModelFamily;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest sizes a manifest may declare. They are far above any model
/// an edge node runs (the built-in weld model takes 4,096 values) and far
/// below what would exhaust its memory.
pub mod bounds {
    /// Most dimensions of a tensor shape.
    pub const MAX_RANK: usize = 8;
    /// Largest dimension of a tensor shape.
    pub const MAX_DIM: usize = 65_536;
    /// Most values of one tensor (the product of its shape): 64 MiB of `f32`.
    pub const MAX_TENSOR_VALUES: usize = 16 * 1024 * 1024;
    /// Most output classes of an inspection model.
    pub const MAX_CLASSES: usize = 256;
    /// Most input features of a twin model.
    pub const MAX_FEATURES: usize = 64;
    /// Longest name (model, tensor, class, feature, target), bytes.
    pub const MAX_NAME_BYTES: usize = 128;
    /// Longest version string, bytes.
    pub const MAX_VERSION_BYTES: usize = 64;
    /// Longest bundle file path, bytes.
    pub const MAX_PATH_BYTES: usize = 256;
    /// Most files listed in `files`.
    pub const MAX_FILES: usize = 1024;
    /// Most golden cases.
    pub const MAX_GOLDEN_CASES: usize = 256;
    /// Most boxes a detector may keep per frame.
    pub const MAX_DETECTIONS: usize = 1000;
    /// Largest `manifest.json`, bytes (the weld model's is under 2 KiB;
    /// parsing JSON takes several times its size in memory).
    pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
}

/// The number of values of a tensor of `shape` named `field`, checked
/// against [`bounds`] with checked arithmetic; the error names the field,
/// the bound, the value and what to do.
pub fn tensor_values(field: &str, shape: &[usize]) -> Result<usize, String> {
    use bounds::{MAX_DIM, MAX_RANK, MAX_TENSOR_VALUES};
    if shape.is_empty() || shape.len() > MAX_RANK {
        return Err(format!(
            "{field} has {} dimensions; the bound is 1 to {MAX_RANK}: declare the tensor's real shape",
            shape.len()
        ));
    }
    if let Some((i, d)) = shape.iter().enumerate().find(|(_, d)| **d == 0 || **d > MAX_DIM) {
        return Err(format!(
            "{field}[{i}] = {d}; the bound is 1 to {MAX_DIM}: declare the tensor's real shape"
        ));
    }
    let product = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
    match product {
        Some(n) if n <= MAX_TENSOR_VALUES => Ok(n),
        _ => Err(format!(
            "{field} = {shape:?} holds {} values, more than the bound {MAX_TENSOR_VALUES} (64 MiB of f32): declare the model's real input and output (an inspection model sees its ROI, not the whole frame)",
            shape
                .iter()
                .try_fold(1u128, |acc, d| acc.checked_mul(*d as u128))
                .map_or_else(|| "more than 2^128".to_string(), |n| n.to_string())
        )),
    }
}

fn check_len(errs: &mut Vec<String>, field: &str, value: &str, max: usize) {
    if value.is_empty() || value.len() > max {
        errs.push(format!(
            "{field} is {} bytes long; the bound is 1 to {max} bytes: use a shorter {field}",
            value.len()
        ));
    }
}

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Visual inspection: image in, defect grid out.
    Inspection,
    /// Twin predictor: process inputs in, prediction out.
    Twin,
}

/// The model's input tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Fixed shape: NCHW for inspection, `[1, 5]` for a twin.
    pub shape: Vec<usize>,
    /// Inspection: normalisation `x = (pixel / 255 − mean) / std`.
    #[serde(default)]
    pub mean: f32,
    /// See `mean`.
    #[serde(default = "one")]
    pub std: f32,
    /// Twin: the names of the input features, in order (see [`TWIN_FEATURES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

fn one() -> f32 {
    1.0
}

/// The model's output tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Fixed shape: `[1, classes, rows, cols]` for inspection, `[1, 1]` for a twin.
    pub shape: Vec<usize>,
    /// Inspection: class names by channel; channel 0 is "no defect".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

/// The input features of a twin model, in order: the temperature now, the
/// step, and the process inputs held over it. Its one output is the
/// predicted temperature `dt_s` later, °C.
pub const TWIN_FEATURES: [&str; 5] = ["temp_c", "dt_s", "feed_ppm", "weld_current_a", "ambient_c"];

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name.
    pub name: String,
    /// Semantic version (`major.minor.patch`).
    pub version: String,
    /// What it is for.
    pub kind: ModelKind,
    /// Inspection models: the layout of the output and so its pre- and
    /// post-processing (`grid`, the default; `classifier`; `detector-yolo`).
    #[serde(default, skip_serializing_if = "is_grid")]
    pub family: ModelFamily,
    /// `detector-yolo` only: the decoding's thresholds (defaults: Ultralytics').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorSpec>,
    /// `classifier` only: how its output is read and which class passes
    /// (defaults: softmax, the first class, top 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierSpec>,
    /// Input tensor.
    pub input: InputSpec,
    /// Output tensor.
    pub output: OutputSpec,
    /// Bundle only: the cell or asset id the model is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Bundle only: SHA-256 (lower-case hex) of every file of the bundle
    /// other than `manifest.json` and its signature, by relative path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Bundle only: golden inputs and the outputs they must produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<GoldenSpec>,
}

fn is_grid(f: &ModelFamily) -> bool {
    *f == ModelFamily::Grid
}

/// Thresholds of a `detector-yolo` model (see [`crate::families::yolo`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Best class score an anchor needs to be a candidate, (0, 1).
    #[serde(default = "default_confidence")]
    pub confidence: f32,
    /// IoU above which class-wise NMS drops the lower box, (0, 1].
    #[serde(default = "default_iou")]
    pub iou: f32,
    /// Most boxes kept per frame, 1 to [`bounds::MAX_DETECTIONS`].
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
}

fn default_confidence() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.7
}
fn default_max_detections() -> usize {
    300
}

impl Default for DetectorSpec {
    fn default() -> Self {
        Self {
            confidence: default_confidence(),
            iou: default_iou(),
            max_detections: default_max_detections(),
        }
    }
}

/// How a `classifier` model's output is read (see
/// [`crate::families::classifier`] and [`crate::inspector`]).
///
/// The verdict does not depend on `softmax` (the softmax keeps the order of
/// the classes), only the scores do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// The output is logits, turned into probabilities with a softmax
    /// (default). `false` when the graph ends in a Softmax already (an
    /// Ultralytics classify export does).
    #[serde(default = "yes")]
    pub softmax: bool,
    /// The class that means "no defect": a frame passes when it is the most
    /// likely class. Default: the first class, as channel 0 of a grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_class: Option<String>,
    /// How many classes are ranked, at least 1 (default 3; more than the
    /// model has means all of them). A failed frame lists the defect
    /// classes among them.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn yes() -> bool {
    true
}
fn default_top_k() -> usize {
    3
}

impl Default for ClassifierSpec {
    fn default() -> Self {
        Self {
            softmax: true,
            ok_class: None,
            top_k: default_top_k(),
        }
    }
}

impl ModelManifest {
    /// A classifier's settings with the defaults filled in: `(softmax, index
    /// of the ok class, top_k)`; `None` if the ok class is not one of the
    /// classes (refused by [`ModelManifest::validate`]).
    pub fn classifier_settings(&self) -> Option<(bool, usize, usize)> {
        let spec = self.classifier.clone().unwrap_or_default();
        let classes = &self.output.classes;
        let ok = match &spec.ok_class {
            None => 0,
            Some(name) => classes.iter().position(|c| c == name)?,
        };
        Some((spec.softmax, ok, spec.top_k.clamp(1, classes.len().max(1))))
    }
}

/// Golden cases of a bundle: reference inputs and expected outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenSpec {
    /// Largest allowed absolute difference between an output and its
    /// expected value.
    pub tolerance: f32,
    /// The cases, each a pair of files of the bundle.
    pub cases: Vec<GoldenCase>,
}

/// One golden case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    /// Bundle path of the input tensor (raw little-endian `f32`, the input shape).
    pub input: String,
    /// Bundle path of the expected output (raw little-endian `f32`, the output shape).
    pub output: String,
}

impl ModelManifest {
    /// Check internal consistency and every declared size against
    /// [`bounds`]; every problem is listed.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = self.bound_problems();
        if !errs.is_empty() {
            // Sizes out of bounds: the consistency checks below would only
            // repeat them.
            return Err(errs);
        }
        errs = match self.kind {
            ModelKind::Inspection => self.inspection_problems(),
            ModelKind::Twin => self.twin_problems(),
        };
        if parse_version(&self.version).is_none() {
            errs.push(format!(
                "version = {:?}: use major.minor.patch, e.g. \"1.2.0\"",
                self.version
            ));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The number of input values (the product of `input.shape`), `None`
    /// if it is out of [`bounds`].
    pub fn input_values(&self) -> Option<usize> {
        tensor_values("input.shape", &self.input.shape).ok()
    }

    /// The number of output values (the product of `output.shape`), `None`
    /// if it is out of [`bounds`].
    pub fn output_values(&self) -> Option<usize> {
        tensor_values("output.shape", &self.output.shape).ok()
    }

    /// Sizes, counts, lengths and finiteness of what the manifest declares.
    fn bound_problems(&self) -> Vec<String> {
        use bounds::*;
        let mut errs = Vec::new();
        check_len(&mut errs, "name", &self.name, MAX_NAME_BYTES);
        check_len(&mut errs, "version", &self.version, MAX_VERSION_BYTES);
        check_len(&mut errs, "input.name", &self.input.name, MAX_NAME_BYTES);
        check_len(&mut errs, "output.name", &self.output.name, MAX_NAME_BYTES);
        if let Some(t) = &self.target {
            check_len(&mut errs, "target", t, MAX_NAME_BYTES);
        }
        for (field, shape) in [("input.shape", &self.input.shape), ("output.shape", &self.output.shape)] {
            if let Err(e) = tensor_values(field, shape) {
                errs.push(e);
            }
        }
        for (field, v) in [("input.mean", self.input.mean), ("input.std", self.input.std)] {
            if !v.is_finite() {
                errs.push(format!("{field} = {v}: must be a finite number"));
            }
        }
        for (field, list, max) in [
            ("output.classes", &self.output.classes, MAX_CLASSES),
            ("input.features", &self.input.features, MAX_FEATURES),
        ] {
            if list.len() > max {
                errs.push(format!(
                    "{field} has {} names; the bound is {max}: name only the model's real {}",
                    list.len(),
                    field.rsplit('.').next().unwrap_or(field)
                ));
            } else {
                for (i, n) in list.iter().enumerate() {
                    check_len(&mut errs, &format!("{field}[{i}]"), n, MAX_NAME_BYTES);
                }
            }
        }
        if self.files.len() > MAX_FILES {
            errs.push(format!(
                "files lists {} files; the bound is {MAX_FILES}: a bundle holds the model and its golden files",
                self.files.len()
            ));
        } else if let Some(p) = self.files.keys().find(|p| p.is_empty() || p.len() > MAX_PATH_BYTES) {
            errs.push(format!(
                "files: a path is {} bytes long; the bound is 1 to {MAX_PATH_BYTES} bytes: use shorter file names",
                p.len()
            ));
        }
        if let Some(g) = &self.golden {
            if !g.tolerance.is_finite() {
                errs.push(format!("golden.tolerance = {}: must be a finite number", g.tolerance));
            }
            if g.cases.len() > MAX_GOLDEN_CASES {
                errs.push(format!(
                    "golden.cases has {} cases; the bound is {MAX_GOLDEN_CASES}: a few representative cases suffice",
                    g.cases.len()
                ));
            } else {
                for (i, c) in g.cases.iter().enumerate() {
                    for (what, p) in [("input", &c.input), ("output", &c.output)] {
                        if p.len() > MAX_PATH_BYTES {
                            errs.push(format!(
                                "golden.cases[{i}].{what} is {} bytes long; the bound is {MAX_PATH_BYTES} bytes: use shorter file names",
                                p.len()
                            ));
                        }
                    }
                }
            }
        }
        errs
    }

    fn inspection_problems(&self) -> Vec<String> {
        if self.detector.is_some() && self.family != ModelFamily::DetectorYolo {
            return vec![format!(
                "detector: thresholds apply to \"family\": \"detector-yolo\" only; this model is {:?}",
                self.family
            )];
        }
        if self.classifier.is_some() && self.family != ModelFamily::Classifier {
            return vec![format!(
                "classifier: settings apply to \"family\": \"classifier\" only; this model is {:?}",
                self.family
            )];
        }
        match self.family {
            ModelFamily::Grid => self.grid_problems(),
            ModelFamily::Classifier | ModelFamily::DetectorYolo => self.image_model_problems(),
        }
    }

    /// `classifier` and `detector-yolo`: an image in, `[1, C]` or
    /// `[1, 4 + C, N]` out, a name for every class.
    fn image_model_problems(&self) -> Vec<String> {
        use bounds::MAX_DETECTIONS;
        let mut errs = Vec::new();
        let s = &self.input.shape;
        if s.len() != 4 || s[0] != 1 || !(s[1] == 1 || s[1] == 3) {
            errs.push(format!(
                "input.shape = {s:?}: must be [1, channels, height, width] with 1 (grey) or 3 (RGB) channels"
            ));
        }
        if self.input.std <= 0.0 {
            errs.push(format!("input.std = {}: must be > 0", self.input.std));
        }
        let (o, c) = (&self.output.shape, self.output.classes.len());
        if self.family == ModelFamily::Classifier {
            if o.len() != 2 || o[0] != 1 || o[1] != c || c < 2 {
                errs.push(format!(
                    "output.shape = {o:?} with {c} class names: a classifier outputs [1, classes] and names each of at least 2 classes"
                ));
            }
            if let Some(spec) = &self.classifier {
                if let Some(name) = spec.ok_class.as_ref().filter(|n| !self.output.classes.contains(n)) {
                    errs.push(format!(
                        "classifier.ok_class = {name:?} is not one of output.classes {:?}: name the class that means no defect",
                        self.output.classes
                    ));
                }
                if spec.top_k == 0 {
                    errs.push("classifier.top_k = 0: rank at least 1 class, e.g. 3".into());
                }
            }
        } else {
            if o.len() != 3 || o[0] != 1 || o[1] != 4 + c || c == 0 || o[2] == 0 {
                errs.push(format!(
                    "output.shape = {o:?} with {c} class names: a YOLOv8 detector outputs [1, 4 + classes, anchors] (e.g. [1, 84, 8400] for 80 classes at 640x640) and names every class"
                ));
            }
            let d = self.detector.unwrap_or_default();
            if !(d.confidence > 0.0 && d.confidence < 1.0) {
                errs.push(format!(
                    "detector.confidence = {}: must be in (0, 1), e.g. 0.25",
                    d.confidence
                ));
            }
            if !(d.iou > 0.0 && d.iou <= 1.0) {
                errs.push(format!("detector.iou = {}: must be in (0, 1], e.g. 0.7", d.iou));
            }
            if d.max_detections == 0 || d.max_detections > MAX_DETECTIONS {
                errs.push(format!(
                    "detector.max_detections = {}: must be 1 to {MAX_DETECTIONS}",
                    d.max_detections
                ));
            }
        }
        errs
    }

    fn grid_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.input.shape.len() != 4 || self.input.shape[0] != 1 || self.input.shape[1] != 1 {
            errs.push(format!(
                "input.shape = {:?}: must be [1, 1, height, width] (one grey-scale image)",
                self.input.shape
            ));
        }
        if self.input.std <= 0.0 {
            errs.push(format!("input.std = {}: must be > 0", self.input.std));
        }
        if self.output.shape.len() != 4 || self.output.shape[0] != 1 {
            errs.push(format!(
                "output.shape = {:?}: must be [1, classes, rows, cols]",
                self.output.shape
            ));
        } else if self.output.shape[1] != self.output.classes.len() {
            errs.push(format!(
                "output.classes has {} names but output.shape has {} channels: name every channel",
                self.output.classes.len(),
                self.output.shape[1]
            ));
        }
        if self.output.classes.len() < 2 {
            errs.push("output.classes: need the no-defect class and at least one defect class".into());
        }
        errs
    }

    fn twin_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.family != ModelFamily::Grid || self.detector.is_some() || self.classifier.is_some() {
            errs.push(
                "family, detector and classifier apply to inspection models; remove them from a twin model's manifest"
                    .into(),
            );
        }
        if self.input.shape != [1, TWIN_FEATURES.len()] {
            errs.push(format!(
                "input.shape = {:?}: a twin model takes [1, {}] ({})",
                self.input.shape,
                TWIN_FEATURES.len(),
                TWIN_FEATURES.join(", ")
            ));
        }
        if self.input.features != TWIN_FEATURES {
            errs.push(format!(
                "input.features = {:?}: a twin model takes {:?}, in that order",
                self.input.features, TWIN_FEATURES
            ));
        }
        if self.output.shape != [1, 1] {
            errs.push(format!(
                "output.shape = {:?}: a twin model predicts one temperature, [1, 1]",
                self.output.shape
            ));
        }
        if !self.output.classes.is_empty() {
            errs.push("output.classes: a twin model has no classes; remove the key".into());
        }
        errs
    }
}

/// Parse `major.minor.patch` into a comparable tuple.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("1.10.0") > parse_version("1.9.3"));
        assert_eq!(parse_version("1.2"), None);
        assert_eq!(parse_version("a.b.c"), None);
    }

    #[test]
    fn twin_manifests_have_their_own_contract() {
        let twin = r#"{"name": "weld_thermal", "version": "1.0.0", "kind": "twin",
            "input": {"name": "x", "shape": [1, 5], "features": ["temp_c", "dt_s", "feed_ppm", "weld_current_a", "ambient_c"]},
            "output": {"name": "y", "shape": [1, 1]}}"#;
        let m: ModelManifest = serde_json::from_str(twin).unwrap();
        m.validate().unwrap();
        let mut bad = m.clone();
        bad.input.features.swap(0, 1);
        bad.output.shape = vec![1, 2];
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("in that order") && problems[1].contains("[1, 1]"),
            "{problems:?}"
        );
        // An inspection manifest must still name its classes.
        let mut insp: ModelManifest = serde_json::from_str(crate::builtin::WELD_SEAM_MANIFEST).unwrap();
        insp.output.classes.clear();
        assert!(insp.validate().is_err());
    }

    #[test]
    fn plain_manifests_still_parse_and_bundle_keys_roundtrip() {
        let plain: ModelManifest = serde_json::from_str(crate::builtin::WELD_SEAM_MANIFEST).unwrap();
        assert!(plain.target.is_none() && plain.files.is_empty() && plain.golden.is_none());
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("target") && !text.contains("golden"), "{text}");
        let mut b = plain.clone();
        b.target = Some("cell_2245".into());
        b.files.insert("model.onnx".into(), "00".repeat(32));
        b.golden = Some(GoldenSpec {
            tolerance: 1e-4,
            cases: vec![GoldenCase {
                input: "golden/0.in.f32".into(),
                output: "golden/0.out.f32".into(),
            }],
        });
        let back: ModelManifest = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn declared_sizes_are_bounded_with_checked_arithmetic() {
        let base: ModelManifest = serde_json::from_str(crate::builtin::WELD_SEAM_MANIFEST).unwrap();
        assert_eq!((base.input_values(), base.output_values()), (Some(4096), Some(192)));
        let problems = |f: &dyn Fn(&mut ModelManifest)| {
            let mut m = base.clone();
            f(&mut m);
            m.validate().unwrap_err().join("; ")
        };
        // The tried case: 3.6e9 values, named with the field, bound and value.
        let e = problems(&|m| m.input.shape = vec![1, 1, 60000, 60000]);
        assert!(
            e.contains("input.shape = [1, 1, 60000, 60000] holds 3600000000 values, more than the bound 16777216"),
            "{e}"
        );
        // A product that overflows usize does not panic.
        let e = problems(&|m| m.input.shape = vec![65536; 8]);
        assert!(e.contains("more than the bound") && e.contains("input.shape"), "{e}");
        assert!(
            tensor_values("x", &[usize::MAX, usize::MAX])
                .unwrap_err()
                .contains("x[0] = ")
        );
        let e = problems(&|m| m.output.shape = vec![1; 9]);
        assert!(e.contains("output.shape has 9 dimensions; the bound is 1 to 8"), "{e}");
        let e = problems(&|m| m.output.shape = vec![1, 3, 0, 8]);
        assert!(e.contains("output.shape[2] = 0; the bound is 1 to 65536"), "{e}");
        let e = problems(&|m| m.output.classes = vec!["c".into(); 300]);
        assert!(e.contains("output.classes has 300 names; the bound is 256"), "{e}");
        let e = problems(&|m| m.name = "n".repeat(129));
        assert!(e.contains("name is 129 bytes long; the bound is 1 to 128 bytes"), "{e}");
        let e = problems(&|m| m.output.classes[1] = "x".repeat(1000));
        assert!(e.contains("output.classes[1] is 1000 bytes long"), "{e}");
        let e = problems(&|m| m.input.mean = f32::INFINITY);
        assert!(e.contains("input.mean = inf: must be a finite number"), "{e}");
        let e = problems(&|m| m.input.std = f32::NAN);
        assert!(e.contains("input.std = NaN: must be a finite number"), "{e}");
        let e = problems(&|m| {
            m.golden = Some(GoldenSpec {
                tolerance: 1e-4,
                cases: vec![
                    GoldenCase {
                        input: "a".into(),
                        output: "b".into()
                    };
                    257
                ],
            })
        });
        assert!(e.contains("golden.cases has 257 cases; the bound is 256"), "{e}");
        // JSON cannot say NaN, and serde refuses a number past f32's range.
        let text = crate::builtin::WELD_SEAM_MANIFEST.replace("\"mean\": 0.5", "\"mean\": 1e39");
        let e = serde_json::from_str::<ModelManifest>(&text).unwrap_err();
        assert!(e.to_string().contains("number out of range"), "{e}");
    }

    fn yolo(classes: usize, shape: serde_json::Value) -> ModelManifest {
        let names: Vec<String> = (0..classes).map(|c| format!("c{c}")).collect();
        serde_json::from_value(serde_json::json!({
            "name": "det", "version": "1.0.0", "kind": "inspection", "family": "detector-yolo",
            "input": {"name": "images", "shape": [1, 3, 640, 640], "mean": 0.0, "std": 1.0},
            "output": {"name": "output0", "shape": shape, "classes": names},
        }))
        .unwrap()
    }

    #[test]
    fn families_check_their_own_layouts() {
        assert_eq!(yolo(80, serde_json::json!([1, 84, 8400])).validate(), Ok(()));
        let e = yolo(80, serde_json::json!([1, 80, 8400])).validate().unwrap_err();
        assert!(e[0].contains("[1, 4 + classes, anchors]"), "{e:?}");
        let mut m = yolo(2, serde_json::json!([1, 6, 100]));
        m.detector = Some(DetectorSpec {
            confidence: 1.5,
            iou: 0.0,
            max_detections: 0,
        });
        let e = m.validate().unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("detector.confidence = 1.5"));
        // A classifier: [1, C] with C names; the grid's shape is refused.
        let mut c = yolo(3, serde_json::json!([1, 3]));
        c.family = ModelFamily::Classifier;
        assert_eq!(c.validate(), Ok(()));
        c.output.shape = vec![1, 3, 8, 8];
        assert!(c.validate().unwrap_err()[0].contains("a classifier outputs [1, classes]"));
        // Thresholds on a grid model are a mistake, said as such.
        let mut g: ModelManifest = serde_json::from_str(crate::builtin::WELD_SEAM_MANIFEST).unwrap();
        assert_eq!(g.validate(), Ok(()));
        g.detector = Some(DetectorSpec::default());
        assert!(g.validate().unwrap_err()[0].contains("detector-yolo"));
    }

    #[test]
    fn a_grid_manifest_serialises_without_the_new_keys() {
        let g: ModelManifest = serde_json::from_str(crate::builtin::WELD_SEAM_MANIFEST).unwrap();
        let text = serde_json::to_string(&g).unwrap();
        assert!(!text.contains("family") && !text.contains("detector"), "{text}");
    }
}
