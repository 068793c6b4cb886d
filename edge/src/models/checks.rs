//! The ordered checks of a deploy, as one sans-IO function.
//!
//! [`check_deploy`] takes the token, the bundle (archive bytes or files),
//! what the node runs on the target now, the keyring and `now`, and either
//! returns the verified bundle or the **first** reason to refuse it. The
//! order is fixed, cheapest and least trusting first, so an unauthenticated
//! caller never gets the node to unpack an archive:
//!
//! | # | check | refusal |
//! |---|---|---|
//! | 1 | token form, algorithm (EdDSA only), key, signature, claims, use | [`Refusal::Token`] (`token_malformed`, `token_algorithm`, `token_unknown_key`, `token_key_revoked`, `token_key_not_allowed`, `token_signature`, `token_claims`, `token_wrong_use`) |
//! | 2 | token expiry and not-before | [`Refusal::Token`] (`token_expired`, `token_not_yet_valid`, `token_lifetime`) |
//! | 3 | token audience = this node | [`Refusal::Token`] (`token_audience`) |
//! | 4 | token subject = the target asked for | [`Refusal::WrongTarget`] |
//! | 5 | replay: the token id was never used (durable) | [`Refusal::Replay`] |
//! | 6 | archive unpacks safely within the limits | [`Refusal::Bundle`] (`bundle_unsafe_path`, `bundle_not_a_file`, `bundle_too_large`, …) |
//! | 7 | manifest present and valid | [`Refusal::Bundle`] (`bundle_manifest`) |
//! | 8 | bundle signer trusted for bundles, not revoked | [`Refusal::Unsigned`], [`Refusal::UnknownSigner`], [`Refusal::SignerRevoked`], [`Refusal::SignerNotAllowed`] |
//! | 9 | signature over the canonical manifest | [`Refusal::BadSignature`] |
//! | 10 | SHA-256 of every file, no file missing or unlisted; golden files hold the values their shapes declare, all finite | [`Refusal::DigestMismatch`], [`Refusal::MissingFile`], [`Refusal::UnlistedFile`], [`Refusal::Bundle`] (`golden_size`, `golden_non_finite`) |
//! | 11 | token's digest and version are the bundle's; the bundle is for this target and of its kind | [`Refusal::TokenDigestMismatch`], [`Refusal::TokenVersionMismatch`], [`Refusal::BundleTargetMismatch`], [`Refusal::WrongKind`] |
//! | 12 | version newer than the running model | [`Refusal::Downgrade`] |
//!
//! Then the runtime (`manager`) loads the model, warms it up and runs the
//! golden cases ([`golden_check`]): [`Refusal::ModelLoad`],
//! [`Refusal::Incompatible`], [`Refusal::ModelNonFinite`] (the model
//! outputs NaN or infinity on a golden input), [`Refusal::GoldenMismatch`].
//! Only then is it
//! swapped in. The token id is remembered at step 5, so a token is used up
//! even when a later check refuses its bundle.

use super::bundle::{
    self, Bundle, BundleError, BundleLimits, MANIFEST_FILE, ParsedManifest, SIGNATURE_FILE, f32_values, sha256_hex,
};
use crate::trust::keyring::{KeyRefusal, KeyUse, Keyring};
use crate::trust::replay::{ReplayGuard, ReplayRefusal, TokenId};
use crate::trust::token::{self, TokenPolicy, TokenRefusal, TokenUse, VerifiedToken};
use ring::signature::{ED25519, UnparsedPublicKey};
use std::sync::Arc;
use thiserror::Error;
use triad_inspect::manifest::parse_version;
use triad_inspect::{ModelKind, OnnxModel};

/// Why a deploy or rollback is refused. Every message names what was wrong
/// and what to do; [`Refusal::code`] is stable for APIs and the audit log.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum Refusal {
    /// The token failed a check.
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    /// The token is for another target.
    #[error("token is for target {token_sub:?}, not {target:?}: issue it with --target {target}")]
    WrongTarget {
        /// The token's `sub`.
        token_sub: String,
        /// The target asked for.
        target: String,
    },
    /// The target does not exist on this node.
    #[error("this node has no target {target:?}; its targets are {known:?}")]
    UnknownTarget {
        /// Asked for.
        target: String,
        /// What exists.
        known: Vec<String>,
    },
    /// The token was used before.
    #[error(transparent)]
    Replay(#[from] ReplayRefusal),
    /// The bundle is malformed, unsafe or too large.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// No signature.
    #[error("bundle is not signed (no signature.json): sign it with `triad bundle sign`; unsigned models never run")]
    Unsigned,
    /// The signer is not in the keyring.
    #[error(
        "bundle signed by unknown key {key_id:?}: it is not in [security] keys; sign with a trusted release key or add its public key"
    )]
    UnknownSigner {
        /// `key_id` of signature.json.
        key_id: String,
    },
    /// The signer is revoked.
    #[error("bundle signed by revoked key {key_id:?}: re-sign the bundle with a current release key")]
    SignerRevoked {
        /// `key_id` of signature.json.
        key_id: String,
    },
    /// The signer may not sign bundles.
    #[error("key {key_id:?} is not trusted to sign bundles (its uses in [security] keys do not include \"bundle\")")]
    SignerNotAllowed {
        /// `key_id` of signature.json.
        key_id: String,
    },
    /// The signature does not verify.
    #[error(
        "bundle signature does not verify with key {key_id:?}: manifest.json was changed after signing, or another key signed it; rebuild and re-sign the bundle"
    )]
    BadSignature {
        /// `key_id` of signature.json.
        key_id: String,
    },
    /// A file's SHA-256 is not the manifest's.
    #[error(
        "bundle file {file} does not match its SHA-256 in the manifest (expected {expected}, got {actual}): the file was changed or damaged; rebuild the bundle"
    )]
    DigestMismatch {
        /// The file.
        file: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A listed file is missing.
    #[error("bundle file {file} is listed in the manifest but missing; ship the complete bundle")]
    MissingFile {
        /// The file.
        file: String,
    },
    /// A file not covered by the manifest.
    #[error("bundle file {file} is not listed in the signed manifest; remove it or rebuild the bundle")]
    UnlistedFile {
        /// The file.
        file: String,
    },
    /// The token authorises another bundle.
    #[error(
        "token authorises bundle {token_digest}, but this bundle is {bundle_digest}: issue a token for this bundle (`triad token issue --bundle …`)"
    )]
    TokenDigestMismatch {
        /// The token's `bundle_digest`.
        token_digest: String,
        /// The bundle's digest.
        bundle_digest: String,
    },
    /// The token names another version.
    #[error("token authorises version {token_version}, but the bundle is version {bundle_version}")]
    TokenVersionMismatch {
        /// The token's `bundle_version`.
        token_version: String,
        /// The manifest's version.
        bundle_version: String,
    },
    /// The bundle is for another target.
    #[error("bundle is built for target {bundle_target:?}, not {target:?}: rebuild it with --target {target}")]
    BundleTargetMismatch {
        /// The manifest's target.
        bundle_target: String,
        /// The target asked for.
        target: String,
    },
    /// The model is of the wrong kind for the target.
    #[error("target {target} runs {expected:?} models, but the bundle holds a {actual:?} model")]
    WrongKind {
        /// Target.
        target: String,
        /// What it runs.
        expected: ModelKind,
        /// What came.
        actual: ModelKind,
    },
    /// Not newer than what runs.
    #[error(
        "version {offered} is not newer than {running}, which runs on {target}: deploy a higher version, or use `triad rollback` to go back"
    )]
    Downgrade {
        /// Target.
        target: String,
        /// Running version.
        running: String,
        /// Offered version.
        offered: String,
    },
    /// tract could not load the model.
    #[error("model does not load: {detail}")]
    ModelLoad {
        /// What failed.
        detail: String,
    },
    /// The model does not fit the target (input size, kind).
    #[error("model does not fit target {target}: {detail}")]
    Incompatible {
        /// Target.
        target: String,
        /// Why.
        detail: String,
    },
    /// A golden output differs from its expected value.
    #[error(
        "golden case {case} fails: largest difference {max_diff} at output {index} is above the tolerance {tolerance}: the model does not reproduce its reference outputs; check the export or the expected outputs"
    )]
    GoldenMismatch {
        /// Case index.
        case: usize,
        /// Largest absolute difference (NaN if the output was not finite).
        max_diff: f32,
        /// Where.
        index: usize,
        /// The manifest's tolerance.
        tolerance: f32,
    },
    /// The model outputs NaN or infinity on a golden input.
    #[error(
        "golden case {case} fails: the model outputs {value} (output {output}, element {index}) where the bundle expects a finite value: fix the model or its export"
    )]
    ModelNonFinite {
        /// Case index.
        case: usize,
        /// The output tensor's name.
        output: String,
        /// Index of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Nothing to roll back to.
    #[error("target {target} has no previous model to roll back to")]
    NothingToRollBack {
        /// Target.
        target: String,
    },
    /// The node's model service is not running or another operation did not finish.
    #[error("model service unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
    },
}

impl Refusal {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Token(t) => t.code(),
            Refusal::WrongTarget { .. } => "token_target",
            Refusal::UnknownTarget { .. } => "unknown_target",
            Refusal::Replay(r) => r.code(),
            Refusal::Bundle(b) => match b {
                BundleError::UnsafePath { .. } => "bundle_unsafe_path",
                BundleError::NotAFile { .. } => "bundle_not_a_file",
                BundleError::Duplicate { .. } => "bundle_duplicate_entry",
                BundleError::TooLarge { .. } => "bundle_too_large",
                BundleError::TooManyFiles { .. } | BundleError::TooManyEntries { .. } => "bundle_too_many_files",
                BundleError::Archive { .. } => "bundle_archive",
                BundleError::Missing { .. } => "bundle_missing_file",
                BundleError::Manifest { .. } => "bundle_manifest",
                BundleError::SignatureFile { .. } => "bundle_signature_file",
                BundleError::GoldenSize { .. } => "golden_size",
                BundleError::GoldenNonFinite { .. } => "golden_non_finite",
                BundleError::ModelOutputNonFinite { .. } => "model_non_finite",
                BundleError::Io { .. } => "bundle_io",
            },
            Refusal::Unsigned => "bundle_unsigned",
            Refusal::UnknownSigner { .. } => "bundle_unknown_signer",
            Refusal::SignerRevoked { .. } => "bundle_signer_revoked",
            Refusal::SignerNotAllowed { .. } => "bundle_signer_not_allowed",
            Refusal::BadSignature { .. } => "bundle_signature",
            Refusal::DigestMismatch { .. } => "bundle_digest",
            Refusal::MissingFile { .. } => "bundle_missing_file",
            Refusal::UnlistedFile { .. } => "bundle_unlisted_file",
            Refusal::TokenDigestMismatch { .. } => "token_digest",
            Refusal::TokenVersionMismatch { .. } => "token_version",
            Refusal::BundleTargetMismatch { .. } => "bundle_target",
            Refusal::WrongKind { .. } => "bundle_kind",
            Refusal::Downgrade { .. } => "downgrade",
            Refusal::ModelLoad { .. } => "model_load",
            Refusal::Incompatible { .. } => "model_incompatible",
            Refusal::ModelNonFinite { .. } => "model_non_finite",
            Refusal::GoldenMismatch { .. } => "golden_mismatch",
            Refusal::NothingToRollBack { .. } => "nothing_to_roll_back",
            Refusal::Unavailable { .. } => "unavailable",
        }
    }
}

/// What the checks need to know about the node.
#[derive(Clone, Copy, Debug)]
pub struct CheckContext<'a> {
    /// Trusted keys.
    pub keyring: &'a Keyring,
    /// This node's id (the tokens' audience).
    pub device: &'a str,
    /// Token limits.
    pub policy: TokenPolicy,
    /// Bundle limits.
    pub limits: BundleLimits,
}

/// What runs on a target now.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetState {
    /// Cell or asset id.
    pub id: String,
    /// The kind of model it runs.
    pub kind: ModelKind,
    /// The running model's version.
    pub running_version: String,
}

/// The bundle as it arrives.
#[derive(Debug)]
pub enum BundleInput<'a> {
    /// A `.tar` or `.tar.gz`, not yet unpacked.
    Archive(&'a [u8]),
    /// Files already read (a directory).
    Files(Bundle),
}

/// A deploy that passed checks 1–12.
#[derive(Clone, Debug)]
pub struct VerifiedDeploy {
    /// The token.
    pub token: VerifiedToken,
    /// The bundle's files.
    pub bundle: Bundle,
    /// Its manifest.
    pub manifest: ParsedManifest,
    /// Name of the key that signed the bundle.
    pub signer: String,
}

/// Checks 1–5 for a token of `use_` on `target`.
pub fn check_token(
    token_text: &str,
    use_: TokenUse,
    target: &str,
    ctx: &CheckContext<'_>,
    now_s: i64,
    replay: &mut dyn ReplayGuard,
) -> Result<VerifiedToken, Refusal> {
    let tok = token::verify(token_text, ctx.keyring, use_, ctx.device, now_s, ctx.policy)?;
    if tok.claims.sub != target {
        return Err(Refusal::WrongTarget {
            token_sub: tok.claims.sub.clone(),
            target: target.into(),
        });
    }
    replay.check_and_remember(TokenId::of(&tok), ctx.policy.clock_skew_s, now_s)?;
    Ok(tok)
}

/// Checks 7–10 on a bundle's files: manifest, signer, signature, digests.
/// Also used at start to re-check bundles stored by earlier deploys.
pub fn check_bundle(bundle: &Bundle, keyring: &Keyring) -> Result<(ParsedManifest, String), Refusal> {
    let manifest = bundle::parse_manifest(bundle)?;
    let sig = bundle::parse_signature(bundle)?.ok_or(Refusal::Unsigned)?;
    let key = keyring.lookup(&sig.key_id, KeyUse::Bundle).map_err(|r| match r {
        KeyRefusal::Unknown => Refusal::UnknownSigner {
            key_id: sig.key_id.clone(),
        },
        KeyRefusal::Revoked => Refusal::SignerRevoked {
            key_id: sig.key_id.clone(),
        },
        KeyRefusal::NotFor(_) => Refusal::SignerNotAllowed {
            key_id: sig.key_id.clone(),
        },
    })?;
    let raw = sig.signature_bytes()?;
    if UnparsedPublicKey::new(&ED25519, &key.public)
        .verify(&manifest.canonical, &raw)
        .is_err()
    {
        return Err(Refusal::BadSignature {
            key_id: sig.key_id.clone(),
        });
    }
    for (file, expected) in &manifest.manifest.files {
        let bytes = bundle
            .get(file)
            .ok_or_else(|| Refusal::MissingFile { file: file.clone() })?;
        let actual = sha256_hex(bytes);
        if &actual != expected {
            return Err(Refusal::DigestMismatch {
                file: file.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    if let Some(extra) = bundle
        .paths()
        .find(|p| *p != MANIFEST_FILE && *p != SIGNATURE_FILE && !manifest.manifest.files.contains_key(*p))
    {
        return Err(Refusal::UnlistedFile { file: extra.into() });
    }
    bundle::check_golden_files(bundle, &manifest)?;
    Ok((manifest, key.name.clone()))
}

/// Checks 1–12 of a deploy of `input` to `target` at `now_s`.
pub fn check_deploy(
    token_text: &str,
    target: &TargetState,
    input: BundleInput<'_>,
    ctx: &CheckContext<'_>,
    now_s: i64,
    replay: &mut dyn ReplayGuard,
) -> Result<VerifiedDeploy, Refusal> {
    let tok = check_token(token_text, TokenUse::Deploy, &target.id, ctx, now_s, replay)?;
    check_deploy_bundle(tok, target, input, ctx)
}

/// Checks 6–12, for a token that passed checks 1–5.
pub fn check_deploy_bundle(
    tok: VerifiedToken,
    target: &TargetState,
    input: BundleInput<'_>,
    ctx: &CheckContext<'_>,
) -> Result<VerifiedDeploy, Refusal> {
    let bundle = match input {
        BundleInput::Archive(bytes) => Bundle::from_archive(bytes, ctx.limits)?,
        BundleInput::Files(b) => b,
    };
    let (manifest, signer) = check_bundle(&bundle, ctx.keyring)?;
    let (token_digest, token_version) = (
        tok.claims.bundle_digest.clone().unwrap_or_default(),
        tok.claims.bundle_version.clone().unwrap_or_default(),
    );
    if token_digest != manifest.digest {
        return Err(Refusal::TokenDigestMismatch {
            token_digest,
            bundle_digest: manifest.digest.clone(),
        });
    }
    if token_version != manifest.manifest.version {
        return Err(Refusal::TokenVersionMismatch {
            token_version,
            bundle_version: manifest.manifest.version.clone(),
        });
    }
    if manifest.target() != target.id {
        return Err(Refusal::BundleTargetMismatch {
            bundle_target: manifest.target().into(),
            target: target.id.clone(),
        });
    }
    if manifest.manifest.kind != target.kind {
        return Err(Refusal::WrongKind {
            target: target.id.clone(),
            expected: target.kind,
            actual: manifest.manifest.kind,
        });
    }
    let newer = match (
        parse_version(&manifest.manifest.version),
        parse_version(&target.running_version),
    ) {
        (Some(new), Some(running)) => new > running,
        (Some(_), None) => true,
        _ => false,
    };
    if !newer {
        return Err(Refusal::Downgrade {
            target: target.id.clone(),
            running: target.running_version.clone(),
            offered: manifest.manifest.version.clone(),
        });
    }
    Ok(VerifiedDeploy {
        token: tok,
        bundle,
        manifest,
        signer,
    })
}

/// Run every golden case of `manifest` through a fresh session of `model`
/// and compare with the expected outputs.
pub fn golden_check(model: &Arc<OnnxModel>, bundle: &Bundle, manifest: &ParsedManifest) -> Result<usize, Refusal> {
    let golden = manifest.manifest.golden.as_ref().ok_or_else(|| {
        Refusal::Bundle(BundleError::Manifest {
            problems: vec!["golden: missing".into()],
        })
    })?;
    let mut session = model
        .session()
        .map_err(|e| Refusal::ModelLoad { detail: e.to_string() })?;
    // Sizes, lengths and finiteness of the golden files, before any of them
    // is decoded (check_bundle did this too; golden_check may be called alone).
    bundle::check_golden_files(bundle, manifest)?;
    let (Some(n_in), Some(n_out)) = (manifest.manifest.input_values(), manifest.manifest.output_values()) else {
        return Err(Refusal::Bundle(BundleError::Manifest {
            problems: manifest.manifest.validate().err().unwrap_or_default(),
        }));
    };
    let mut out = Vec::with_capacity(n_out);
    for (i, case) in golden.cases.iter().enumerate() {
        let bad_file = |file: &str, n: usize| {
            Refusal::Bundle(BundleError::Manifest {
                problems: vec![format!(
                    "golden.cases[{i}]: {file} does not hold {n} little-endian f32 values"
                )],
            })
        };
        let x = bundle
            .get(&case.input)
            .filter(|b| b.len() == n_in * 4)
            .and_then(f32_values)
            .ok_or_else(|| bad_file(&case.input, n_in))?;
        let expected = bundle
            .get(&case.output)
            .filter(|b| b.len() == n_out * 4)
            .and_then(f32_values)
            .ok_or_else(|| bad_file(&case.output, n_out))?;
        session
            .infer(&x, &mut out)
            .map_err(|e| Refusal::ModelLoad { detail: e.to_string() })?;
        if let Some(index) = out.iter().position(|v| !v.is_finite()) {
            return Err(Refusal::ModelNonFinite {
                case: i,
                output: manifest.manifest.output.name.clone(),
                index,
                value: out[index],
            });
        }
        let mut worst = (0.0f32, 0usize);
        for (k, (a, b)) in out.iter().zip(&expected).enumerate() {
            let d = (a - b).abs();
            if !d.is_finite() {
                worst = (f32::NAN, k);
                break;
            }
            if d > worst.0 {
                worst = (d, k);
            }
        }
        if worst.0.is_nan() || worst.0 > golden.tolerance {
            return Err(Refusal::GoldenMismatch {
                case: i,
                max_diff: worst.0,
                index: worst.1,
                tolerance: golden.tolerance,
            });
        }
    }
    Ok(golden.cases.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bundle::{BuildSpec, build, sign};
    use crate::trust::keyring::TrustedKey;
    use crate::trust::keys::SigningKey;
    use crate::trust::replay::MemoryReplay;
    use crate::trust::token::{Audience, Claims, issue};

    const NOW: i64 = 1_800_000_000;

    struct Fx {
        release: SigningKey,
        ops: SigningKey,
        ring: Keyring,
        bundle: Bundle,
    }

    fn fx() -> Fx {
        let release = SigningKey::generate("release").unwrap().0;
        let ops = SigningKey::generate("ops").unwrap().0;
        let ring = Keyring::new(vec![
            TrustedKey {
                name: "release".into(),
                public: *release.public(),
                uses: vec![KeyUse::Bundle],
                revoked: false,
            },
            TrustedKey {
                name: "ops".into(),
                public: *ops.public(),
                uses: vec![KeyUse::Deploy],
                revoked: false,
            },
        ]);
        let mut manifest: triad_inspect::ModelManifest =
            serde_json::from_str(triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap();
        manifest.version = "1.1.0".into();
        let n_in: usize = manifest.input.shape.iter().product();
        let n_out: usize = manifest.output.shape.iter().product();
        let mut bundle = build(BuildSpec {
            model_onnx: b"not really onnx; the checks do not load it".to_vec(),
            manifest,
            target: "cell_2245".into(),
            golden_inputs: vec![vec![0.0; n_in]],
            golden_outputs: Some(vec![vec![0.0; n_out]]),
            tolerance: 1e-4,
        })
        .unwrap();
        sign(&mut bundle, &release).unwrap();
        Fx {
            release,
            ops,
            ring,
            bundle,
        }
    }

    fn claims(b: &Bundle) -> Claims {
        let p = bundle::parse_manifest(b).unwrap();
        Claims {
            iss: "alice".into(),
            sub: "cell_2245".into(),
            aud: Audience::One("edge-01".into()),
            nbf: NOW - 10,
            exp: NOW + 300,
            iat: None,
            jti: crate::trust::token::new_jti(),
            use_: TokenUse::Deploy,
            bundle_digest: Some(p.digest),
            bundle_version: Some("1.1.0".into()),
            scope: None,
        }
    }

    fn target() -> TargetState {
        TargetState {
            id: "cell_2245".into(),
            kind: ModelKind::Inspection,
            running_version: "1.0.0".into(),
        }
    }

    fn run(f: &Fx, c: &Claims, b: Bundle, replay: &mut MemoryReplay) -> Result<VerifiedDeploy, Refusal> {
        let ctx = CheckContext {
            keyring: &f.ring,
            device: "edge-01",
            policy: TokenPolicy::default(),
            limits: BundleLimits::default(),
        };
        check_deploy(&issue(c, &f.ops), &target(), BundleInput::Files(b), &ctx, NOW, replay)
    }

    #[test]
    fn a_good_deploy_passes_every_check() {
        let f = fx();
        let v = run(&f, &claims(&f.bundle), f.bundle.clone(), &mut MemoryReplay::default()).unwrap();
        assert_eq!((v.signer.as_str(), v.token.claims.iss.as_str()), ("release", "alice"));
        let _ = &f.release;
    }

    #[test]
    fn the_first_failing_check_in_order_is_reported() {
        let f = fx();
        // Expired AND for another device: expiry comes first.
        let mut c = claims(&f.bundle);
        c.exp = NOW - 100;
        c.aud = Audience::One("edge-02".into());
        let e = run(&f, &c, f.bundle.clone(), &mut MemoryReplay::default()).unwrap_err();
        assert_eq!(e.code(), "token_expired");
        // Replayed AND an unsafe bundle: the archive is never looked at.
        let mut replay = MemoryReplay::default();
        let c = claims(&f.bundle);
        run(&f, &c, f.bundle.clone(), &mut replay).unwrap();
        let mut tampered = f.bundle.clone();
        tampered.get_mut("model.onnx").unwrap()[0] ^= 1;
        let e = run(&f, &c, tampered.clone(), &mut replay).unwrap_err();
        assert_eq!(e.code(), "token_replayed");
        // Edited manifest AND a flipped byte: the signature fails first.
        let mut both = tampered.clone();
        let text = String::from_utf8(both.get("manifest.json").unwrap().to_vec()).unwrap();
        both.insert("manifest.json", text.replace("0.0001", "0.5").into_bytes())
            .unwrap();
        let e = run(&f, &claims(&f.bundle), both, &mut MemoryReplay::default()).unwrap_err();
        assert_eq!(e.code(), "bundle_signature");
        // Flipped byte AND a token for another digest: digests come first.
        let mut c = claims(&f.bundle);
        c.bundle_digest = Some(format!("sha256:{}", "00".repeat(32)));
        let e = run(&f, &c, tampered, &mut MemoryReplay::default()).unwrap_err();
        assert_eq!(e.code(), "bundle_digest");
        // A token for another digest on an intact bundle.
        let e = run(&f, &c, f.bundle.clone(), &mut MemoryReplay::default()).unwrap_err();
        assert_eq!(e.code(), "token_digest");
        // Version in the token differs.
        let mut c = claims(&f.bundle);
        c.bundle_version = Some("9.9.9".into());
        let e = run(&f, &c, f.bundle.clone(), &mut MemoryReplay::default()).unwrap_err();
        assert_eq!(e.code(), "token_version");
    }

    #[test]
    fn downgrade_and_target_checks() {
        let f = fx();
        let ctx = CheckContext {
            keyring: &f.ring,
            device: "edge-01",
            policy: TokenPolicy::default(),
            limits: BundleLimits::default(),
        };
        let tok = issue(&claims(&f.bundle), &f.ops);
        let newer = TargetState {
            running_version: "1.10.0".into(),
            ..target()
        };
        let e = check_deploy(
            &tok,
            &newer,
            BundleInput::Files(f.bundle.clone()),
            &ctx,
            NOW,
            &mut MemoryReplay::default(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "downgrade");
        assert!(e.to_string().contains("1.1.0 is not newer than 1.10.0"), "{e}");
        let other = TargetState {
            id: "cell_9".into(),
            ..target()
        };
        let e = check_deploy(
            &tok,
            &other,
            BundleInput::Files(f.bundle.clone()),
            &ctx,
            NOW,
            &mut MemoryReplay::default(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "token_target");
    }
}
