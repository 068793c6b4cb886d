//! The ONNX model, loaded once into an optimised tract plan.

use crate::manifest::ModelManifest;
use std::sync::Arc;
use thiserror::Error;
use tract_onnx::prelude::*;

/// A model could not be loaded or run.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The manifest is inconsistent.
    #[error("model manifest of {name} is invalid: {}", problems.join("; "))]
    Manifest {
        /// Model name.
        name: String,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// tract could not parse or optimise the ONNX file.
    #[error("ONNX model {name} {version} does not load: {detail}; rebuild it with opset 13-17 and fixed shapes")]
    Load {
        /// Model name.
        name: String,
        /// Version.
        version: String,
        /// What tract said.
        detail: String,
    },
    /// The graph's output shape is not what the manifest declares.
    #[error("ONNX model {name}: output shape {actual:?} differs from the manifest's {declared:?}")]
    Shape {
        /// Model name.
        name: String,
        /// From the manifest.
        declared: Vec<usize>,
        /// From the graph.
        actual: Vec<usize>,
    },
    /// Inference failed.
    #[error("inference with {name} failed: {detail}")]
    Run {
        /// Model name.
        name: String,
        /// What tract said.
        detail: String,
    },
}

type Plan = TypedSimplePlan;

/// A loaded, optimised model. Cheap to share (`Arc`); each worker opens its
/// own [`ModelSession`].
#[derive(Debug)]
pub struct OnnxModel {
    manifest: ModelManifest,
    plan: Arc<Plan>,
    sha256: String,
}

impl OnnxModel {
    /// Load `onnx` bytes described by `manifest`: fix the input shape,
    /// optimise, build the plan, and check the output shape.
    pub fn load(onnx: &[u8], manifest: ModelManifest) -> Result<Self, ModelError> {
        manifest.validate().map_err(|problems| ModelError::Manifest {
            name: manifest.name.clone(),
            problems,
        })?;
        let load_err = |e: TractError| ModelError::Load {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            detail: format!("{e:#}"),
        };
        let shape: Vec<usize> = manifest.input.shape.clone();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(load_err)?;
        let out_fact = plan.model().output_fact(0).map_err(load_err)?;
        let actual: Vec<usize> = out_fact.shape.as_concrete().map(|s| s.to_vec()).unwrap_or_default();
        if actual != manifest.output.shape {
            return Err(ModelError::Shape {
                name: manifest.name.clone(),
                declared: manifest.output.shape.clone(),
                actual,
            });
        }
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(onnx));
        Ok(Self { manifest, plan, sha256 })
    }

    /// Load `model.onnx` and `manifest.json` from a model directory.
    pub fn load_dir(dir: &std::path::Path) -> Result<Self, ModelError> {
        let name = dir.display().to_string();
        let read = |file: &str| {
            std::fs::read(dir.join(file)).map_err(|e| ModelError::Load {
                name: name.clone(),
                version: "?".into(),
                detail: format!("cannot read {}: {e}", dir.join(file).display()),
            })
        };
        let manifest_path = dir.join("manifest.json");
        let size = std::fs::metadata(&manifest_path).map(|m| m.len()).unwrap_or(0);
        if size > crate::manifest::bounds::MAX_MANIFEST_BYTES as u64 {
            return Err(ModelError::Manifest {
                name,
                problems: vec![format!(
                    "{} is {size} bytes; the bound is {} bytes: a manifest describes the model, it does not hold data",
                    manifest_path.display(),
                    crate::manifest::bounds::MAX_MANIFEST_BYTES
                )],
            });
        }
        let manifest: ModelManifest =
            serde_json::from_slice(&read("manifest.json")?).map_err(|e| ModelError::Manifest {
                name: name.clone(),
                problems: vec![format!("manifest.json: {e}")],
            })?;
        Self::load(&read("model.onnx")?, manifest)
    }

    /// The manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// SHA-256 of the ONNX bytes, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// A session for one worker.
    pub fn session(self: &Arc<Self>) -> Result<ModelSession, ModelError> {
        let state = self.plan.spawn().map_err(|e| ModelError::Run {
            name: self.manifest.name.clone(),
            detail: format!("{e:#}"),
        })?;
        Ok(ModelSession {
            model: self.clone(),
            state,
        })
    }
}

/// One worker's handle on a model: keeps tract's state between frames.
#[derive(Debug)]
pub struct ModelSession {
    model: Arc<OnnxModel>,
    state: TypedSimpleState,
}

impl ModelSession {
    /// The model this session runs.
    pub fn model(&self) -> &Arc<OnnxModel> {
        &self.model
    }

    /// Run on one normalised input (length = product of the input shape) and
    /// copy the output into `out` (length = product of the output shape).
    pub fn infer(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ModelError> {
        let m = &self.model.manifest;
        let err = |detail: String| ModelError::Run {
            name: m.name.clone(),
            detail,
        };
        let tensor = Tensor::from_shape(&m.input.shape, input).map_err(|e| err(format!("{e:#}")))?;
        let outputs = self
            .state
            .run(tvec!(tensor.into()))
            .map_err(|e| err(format!("{e:#}")))?;
        let plain = outputs[0].try_as_plain_ram().map_err(|e| err(format!("{e:#}")))?;
        let view = plain.as_slice::<f32>().map_err(|e| err(format!("{e:#}")))?;
        out.clear();
        out.extend_from_slice(view);
        Ok(())
    }
}
