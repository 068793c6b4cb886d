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

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Check internal consistency; every problem is listed.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = match self.kind {
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

    fn inspection_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.input.shape.len() != 4 || self.input.shape[0] != 1 || self.input.shape[1] != 1 {
            errs.push(format!(
                "input.shape = {:?}: must be [1, 1, height, width] (one grey-scale image)",
                self.input.shape
            ));
        }
        if self.input.std.is_nan() || self.input.std <= 0.0 {
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
}
