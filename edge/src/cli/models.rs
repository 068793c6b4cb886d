//! The commands for the people who ship models and the people who deploy
//! them:
//!
//! ```text
//! triad keys gen --name release-2025 [--uses bundle] [--out DIR]
//! triad bundle build (--from MODEL_DIR | --model FILE --manifest FILE) --target cell_2245 [--version 1.1.0]
//!                    [--golden-input F]... [--golden-output F]... [--tolerance 1e-4] --out DIR
//! triad bundle sign DIR --key FILE [--key-id NAME]            (or the key in TRIAD_SIGNING_KEY)
//! triad bundle verify DIR|ARCHIVE (--config FILE | --trust FILE...) [--skip-golden]
//! triad bundle pack DIR --out FILE.tar.gz
//! triad token issue --key FILE --issuer NAME --device NODE --use deploy --bundle DIR [--ttl 15m]
//! triad token issue --key FILE --issuer NAME --device NODE --use rollback --target cell_2245
//! triad token issue --key FILE --issuer NAME --device NODE --use command --axis axis_07 --actions SetRate,Derate [--min-ppm 5 --max-ppm 12]
//! triad deploy --node http://gateway:8480 --bundle DIR|ARCHIVE --token-file FILE   (or TRIAD_TOKEN)
//! triad rollback --node http://gateway:8480 --target cell_2245 --token-file FILE
//! ```
//!
//! Private keys come from a file or from the environment, never from the
//! command line, and are never printed. Tokens are printed to stdout (or
//! written with `--out`, mode 0600) for the deployer to pass on; they are
//! never logged. Exit codes: 0 done, 1 could not try (file, network), 2 bad
//! arguments, 3 refused (by verification or by the node).

use crate::models::bundle::{self, BuildSpec, Bundle, BundleLimits, MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE};
use crate::models::checks::{check_bundle, golden_check};
use crate::trust::keyring::{KeyUse, Keyring, TrustedKey};
use crate::trust::keys::{self, SigningKey};
use crate::trust::token::{self, Audience, Claims, CommandScope, TokenUse};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use triad_inspect::{ModelManifest, OnnxModel};
use triad_schemas::CommandAction;

/// `triad keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Make a new Ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub.
    Gen {
        /// Key name: the `kid` of tokens and `key_id` of bundle signatures.
        #[arg(long)]
        name: String,
        /// What the node should trust it for, in the printed config snippet: bundle, deploy, command.
        #[arg(long, value_delimiter = ',', default_value = "bundle")]
        uses: Vec<String>,
        /// Folder to write the files to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `triad bundle …`
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Assemble an (unsigned) bundle: model, golden cases, manifest with digests.
    Build(BuildArgs),
    /// Sign a bundle directory's manifest (writes signature.json).
    Sign(SignArgs),
    /// Check a bundle offline: signer, signature, digests and golden cases.
    Verify(VerifyArgs),
    /// Pack a bundle directory into a .tar.gz.
    Pack {
        /// The bundle directory.
        dir: PathBuf,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `triad bundle build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// A model directory with model.onnx and manifest.json (e.g. inspect/models/weld_seam).
    #[arg(long, conflicts_with_all = ["model", "manifest"])]
    pub from: Option<PathBuf>,
    /// The ONNX file (with --manifest).
    #[arg(long, requires = "manifest")]
    pub model: Option<PathBuf>,
    /// Its manifest.json (name, version, kind, input, output).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Cell (or asset) the model is for.
    #[arg(long)]
    pub target: String,
    /// Version, overriding the manifest's (major.minor.patch).
    #[arg(long)]
    pub version: Option<String>,
    /// Golden input: raw little-endian f32 of the input shape (repeatable).
    /// Default: four generated inputs (black, grey, ramp, noise).
    #[arg(long = "golden-input")]
    pub golden_inputs: Vec<PathBuf>,
    /// Expected output for each golden input, in order (default: computed now with tract).
    #[arg(long = "golden-output")]
    pub golden_outputs: Vec<PathBuf>,
    /// Largest allowed absolute difference of a golden output.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f32,
    /// Bundle directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing directory.
    #[arg(long)]
    pub force: bool,
}

/// `triad bundle sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Private key file (PEM); default: the PEM text in TRIAD_SIGNING_KEY.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Key name as the node knows it (default: the key file's name without .key).
    #[arg(long)]
    pub key_id: Option<String>,
}

/// `triad bundle verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Bundle directory, .tar or .tar.gz.
    pub bundle: PathBuf,
    /// Trust the `[security]` keys of this node configuration.
    #[arg(long, conflicts_with = "trust")]
    pub config: Option<PathBuf>,
    /// Trust this public key file (NAME.pub; the key's name is the file name), repeatable.
    #[arg(long)]
    pub trust: Vec<PathBuf>,
    /// Do not load the model and run the golden cases.
    #[arg(long)]
    pub skip_golden: bool,
}

/// `triad token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue a signed token (EdDSA JWT) and print it.
    Issue(IssueArgs),
}

/// `triad token issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Private key file (PEM); default: the PEM text in TRIAD_SIGNING_KEY.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Key name as the node knows it (default: the key file's name without .key).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Who issues it (goes to the node's audit log).
    #[arg(long)]
    pub issuer: String,
    /// The node it is for (its `[node]` id).
    #[arg(long)]
    pub device: String,
    /// deploy, rollback or command.
    #[arg(long = "use", value_parser = ["deploy", "rollback", "command"])]
    pub use_: String,
    /// Deploy: the bundle (directory or archive) it authorises.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Deploy/rollback: the target (default for deploys: the bundle's).
    #[arg(long)]
    pub target: Option<String>,
    /// Command: the axis.
    #[arg(long)]
    pub axis: Option<String>,
    /// Command: allowed actions (Start, Stop, SetRate, Derate, Resume, ResetFault, SkipReinspection).
    #[arg(long, value_delimiter = ',')]
    pub actions: Vec<String>,
    /// Command: lowest allowed rate, PPM.
    #[arg(long)]
    pub min_ppm: Option<f64>,
    /// Command: highest allowed rate, PPM.
    #[arg(long)]
    pub max_ppm: Option<f64>,
    /// Validity, e.g. 15m, 2h.
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Valid only from this long after now, e.g. 10m.
    #[arg(long)]
    pub starts_in: Option<String>,
    /// Write the token to this file (mode 0600) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `triad deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The node's HTTP address, e.g. http://127.0.0.1:8480.
    #[arg(long)]
    pub node: String,
    /// Bundle directory, .tar or .tar.gz.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Target (default: the bundle's).
    #[arg(long)]
    pub target: Option<String>,
    /// File with the deploy token (`-` for stdin); default: TRIAD_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the node's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `triad rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The node's HTTP address, e.g. http://127.0.0.1:8480.
    #[arg(long)]
    pub node: String,
    /// The target to roll back.
    #[arg(long)]
    pub target: String,
    /// File with the rollback token (`-` for stdin); default: TRIAD_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the node's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A failure of a command, with its exit code.
struct Fail(u8, String);

type Out = Result<(), Fail>;

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}
fn io_fail(msg: impl Into<String>) -> Fail {
    Fail(1, msg.into())
}
fn refused(msg: impl Into<String>) -> Fail {
    Fail(3, msg.into())
}

fn finish(r: Out) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn write_private(path: &Path, text: &str, force: bool) -> Out {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(0o600);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o
        .open(path)
        .map_err(|e| io_fail(format!("{}: {e} (use --force to replace it)", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_fail(format!("{}: {e}", path.display())))
}

/// `triad keys …`
pub fn keys(cmd: KeysCmd) -> ExitCode {
    finish(match cmd {
        KeysCmd::Gen { name, uses, out, force } => keys_gen(&name, &uses, &out, force),
    })
}

fn keys_gen(name: &str, uses: &[String], out: &Path, force: bool) -> Out {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(usage(format!(
            "--name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', e.g. release-2025"
        )));
    }
    for u in uses {
        if KeyUse::parse(u).is_none() {
            return Err(usage(format!("--uses {u:?}: use bundle, deploy or command")));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| io_fail(format!("{}: {e}", out.display())))?;
    let (key, seed) = SigningKey::generate(name).map_err(|e| io_fail(e.to_string()))?;
    let (kp, pp) = (out.join(format!("{name}.key")), out.join(format!("{name}.pub")));
    if !force && pp.exists() {
        return Err(io_fail(format!("{} exists (use --force to replace it)", pp.display())));
    }
    write_private(&kp, &keys::private_pem(&seed), force)?;
    std::fs::write(&pp, keys::public_pem(key.public())).map_err(|e| io_fail(format!("{}: {e}", pp.display())))?;
    let uses_toml: Vec<String> = uses.iter().map(|u| format!("{u:?}")).collect();
    println!(
        "private key: {}  (mode 0600; keep it off the gateway and out of the repository)",
        kp.display()
    );
    println!("public key:  {}", pp.display());
    println!("fingerprint: {}", keys::fingerprint(key.public()));
    println!();
    println!("Trust it on a node by adding to its configuration:");
    println!();
    println!("[[security.keys]]");
    println!("name = {name:?}");
    println!("public_key = {:?}", keys::public_base64(key.public()));
    println!("uses = [{}]", uses_toml.join(", "));
    Ok(())
}

fn signing_key(path: &Option<PathBuf>, key_id: &Option<String>) -> Result<SigningKey, Fail> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| io_fail(format!("--key {}: {e}", p.display())))?;
            let name = match key_id {
                Some(n) => n.clone(),
                None => p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .ok_or_else(|| usage("--key-id: give the key's name"))?,
            };
            SigningKey::from_pem(&name, &text, &p.display().to_string()).map_err(|e| usage(e.to_string()))
        }
        None => {
            let text = std::env::var("TRIAD_SIGNING_KEY")
                .map_err(|_| usage("no key: give --key FILE, or the PEM text in TRIAD_SIGNING_KEY"))?;
            let name = key_id
                .clone()
                .or_else(|| std::env::var("TRIAD_SIGNING_KEY_ID").ok())
                .ok_or_else(|| usage("--key-id (or TRIAD_SIGNING_KEY_ID) names the key from TRIAD_SIGNING_KEY"))?;
            SigningKey::from_pem(&name, &text, "TRIAD_SIGNING_KEY").map_err(|e| usage(e.to_string()))
        }
    }
}

/// Read a file of at most `max` bytes; its size is checked before it is read.
fn read_bounded(path: &Path, what: &str, max: u64, fix: &str) -> Result<Vec<u8>, Fail> {
    let size = std::fs::metadata(path)
        .map_err(|e| io_fail(format!("{what} {}: {e}", path.display())))?
        .len();
    if size > max {
        return Err(usage(format!(
            "{what} {} is {size} bytes; the bound is {max} bytes: {fix}",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| io_fail(format!("{what} {}: {e}", path.display())))
}

/// A golden file of exactly `values` finite f32 (the size is checked before
/// the file is read).
fn read_f32(path: &Path, what: &str, values: usize, shape: &[usize]) -> Result<Vec<f32>, Fail> {
    let size = std::fs::metadata(path)
        .map_err(|e| io_fail(format!("{what} {}: {e}", path.display())))?
        .len();
    if size != values as u64 * 4 {
        return Err(usage(format!(
            "{what} {} is {size} bytes, but the manifest's shape {shape:?} declares {values} f32 values ({} bytes): give raw little-endian f32 of that shape",
            path.display(),
            values * 4
        )));
    }
    let b = std::fs::read(path).map_err(|e| io_fail(format!("{what} {}: {e}", path.display())))?;
    let v = bundle::f32_values(&b)
        .ok_or_else(|| usage(format!("{what} {}: not little-endian f32 values", path.display())))?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(usage(format!(
            "{what} {} holds {} at element {i}: golden values must be finite numbers",
            path.display(),
            v[i]
        )));
    }
    Ok(v)
}

/// `triad bundle …`
pub fn bundle(cmd: BundleCmd) -> ExitCode {
    finish(match cmd {
        BundleCmd::Build(a) => bundle_build(a),
        BundleCmd::Sign(a) => bundle_sign(a),
        BundleCmd::Verify(a) => bundle_verify(a),
        BundleCmd::Pack { dir, out } => bundle_pack(&dir, &out),
    })
}

fn bundle_build(a: BuildArgs) -> Out {
    let (model_path, manifest_path) = match (&a.from, &a.model, &a.manifest) {
        (Some(d), _, _) => (d.join(MODEL_FILE), d.join(MANIFEST_FILE)),
        (None, Some(m), Some(f)) => (m.clone(), f.clone()),
        _ => return Err(usage("give --from MODEL_DIR, or --model FILE and --manifest FILE")),
    };
    let limits = BundleLimits::default();
    let onnx = read_bounded(
        &model_path,
        "model",
        limits.max_total_bytes,
        "a bundle holds at most that much (models.max_bundle_mb)",
    )?;
    let text = read_bounded(
        &manifest_path,
        "manifest",
        triad_inspect::manifest::bounds::MAX_MANIFEST_BYTES as u64,
        "a manifest describes the model, it does not hold data",
    )?;
    let mut manifest: ModelManifest =
        serde_json::from_slice(&text).map_err(|e| usage(format!("{}: {e}", manifest_path.display())))?;
    if let Some(v) = a.version {
        manifest.version = v;
    }
    // Every size the manifest declares is checked before anything is read
    // or allocated from it.
    if let Err(problems) = manifest.validate() {
        return Err(refused(format!(
            "{}: {}",
            manifest_path.display(),
            bundle::BundleError::Manifest { problems }
        )));
    }
    let (Some(n_in), Some(n_out)) = (manifest.input_values(), manifest.output_values()) else {
        unreachable!("validate checked the shapes");
    };
    let max_cases = triad_inspect::manifest::bounds::MAX_GOLDEN_CASES;
    if a.golden_inputs.len() > max_cases || a.golden_outputs.len() > max_cases {
        return Err(usage(format!(
            "{} --golden-input and {} --golden-output files; the bound is {max_cases} of each",
            a.golden_inputs.len(),
            a.golden_outputs.len()
        )));
    }
    let inputs = a
        .golden_inputs
        .iter()
        .map(|p| read_f32(p, "--golden-input", n_in, &manifest.input.shape))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = if a.golden_outputs.is_empty() {
        None
    } else {
        Some(
            a.golden_outputs
                .iter()
                .map(|p| read_f32(p, "--golden-output", n_out, &manifest.output.shape))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    if a.out.exists() {
        if !a.force {
            return Err(io_fail(format!(
                "{} exists (use --force to replace it)",
                a.out.display()
            )));
        }
        std::fs::remove_dir_all(&a.out).map_err(|e| io_fail(format!("{}: {e}", a.out.display())))?;
    }
    let computed = outputs.is_none();
    let b = bundle::build(BuildSpec {
        model_onnx: onnx,
        manifest,
        target: a.target,
        golden_inputs: inputs,
        golden_outputs: outputs,
        tolerance: a.tolerance,
    })
    .map_err(|e| refused(e.to_string()))?;
    b.write_dir(&a.out).map_err(|e| io_fail(e.to_string()))?;
    let p = bundle::parse_manifest(&b).map_err(|e| refused(e.to_string()))?;
    let g = p.manifest.golden.as_ref().map_or(0, |g| g.cases.len());
    println!(
        "built {}: {} {} for {} ({} golden case(s){}), digest {}",
        a.out.display(),
        p.manifest.name,
        p.manifest.version,
        p.target(),
        g,
        if computed { ", outputs computed with tract" } else { "" },
        p.digest
    );
    println!("next: triad bundle sign {} --key RELEASE.key", a.out.display());
    Ok(())
}

fn bundle_sign(a: SignArgs) -> Out {
    if !a.dir.is_dir() {
        return Err(usage(format!("{} is not a bundle directory", a.dir.display())));
    }
    let key = signing_key(&a.key, &a.key_id)?;
    let mut b = Bundle::from_dir(&a.dir, BundleLimits::default()).map_err(|e| refused(e.to_string()))?;
    b.remove(SIGNATURE_FILE);
    let digest = bundle::sign(&mut b, &key).map_err(|e| refused(e.to_string()))?;
    let sig = b.get(SIGNATURE_FILE).expect("just signed");
    std::fs::write(a.dir.join(SIGNATURE_FILE), sig).map_err(|e| io_fail(e.to_string()))?;
    println!(
        "signed {} with key {:?} ({}); bundle digest {digest}",
        a.dir.display(),
        key.name(),
        keys::fingerprint(key.public())
    );
    Ok(())
}

fn keyring_from(a: &VerifyArgs) -> Result<Keyring, Fail> {
    if let Some(c) = &a.config {
        let cfg =
            crate::config::load(&crate::config::ConfigSource::File(c.clone())).map_err(|e| usage(e.to_string()))?;
        return Ok(cfg.security.keyring);
    }
    if a.trust.is_empty() {
        return Err(usage(
            "give --config NODE.toml or --trust NAME.pub to say which signers to trust",
        ));
    }
    let mut ks = Vec::new();
    for p in &a.trust {
        let text = std::fs::read_to_string(p).map_err(|e| io_fail(format!("{}: {e}", p.display())))?;
        let public = keys::parse_public(&text, &p.display().to_string()).map_err(|e| usage(e.to_string()))?;
        ks.push(TrustedKey {
            name: p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            public,
            uses: vec![KeyUse::Bundle],
            revoked: false,
        });
    }
    Ok(Keyring::new(ks))
}

fn bundle_verify(a: VerifyArgs) -> Out {
    let keyring = keyring_from(&a)?;
    let b = Bundle::from_path(&a.bundle, BundleLimits::default()).map_err(|e| refused(e.to_string()))?;
    let (p, signer) = check_bundle(&b, &keyring).map_err(|r| refused(format!("refused ({}): {r}", r.code())))?;
    let golden = if a.skip_golden {
        "golden cases not run".to_string()
    } else {
        let model = Arc::new(
            OnnxModel::load(b.get(MODEL_FILE).unwrap_or_default(), p.manifest.clone())
                .map_err(|e| refused(format!("refused (model_load): {e}")))?,
        );
        let n = golden_check(&model, &b, &p).map_err(|r| refused(format!("refused ({}): {r}", r.code())))?;
        format!("{n} golden case(s) pass")
    };
    println!(
        "ok: {} {} ({:?}) for {}, signed by {signer:?}, every file matches its digest, {golden}; digest {}",
        p.manifest.name,
        p.manifest.version,
        p.manifest.kind,
        p.target(),
        p.digest
    );
    Ok(())
}

fn bundle_pack(dir: &Path, out: &Path) -> Out {
    let b = Bundle::from_dir(dir, BundleLimits::default()).map_err(|e| refused(e.to_string()))?;
    std::fs::write(out, b.to_archive()).map_err(|e| io_fail(format!("{}: {e}", out.display())))?;
    println!("packed {} into {}", dir.display(), out.display());
    Ok(())
}

fn parse_duration_s(what: &str, s: &str) -> Result<i64, Fail> {
    crate::scenario::parse_duration(s)
        .map(|d| d.as_secs() as i64)
        .map_err(|e| usage(format!("{what}: {e}")))
}

/// `triad token …`
pub fn token(cmd: TokenCmd) -> ExitCode {
    finish(match cmd {
        TokenCmd::Issue(a) => token_issue(a),
    })
}

fn token_issue(a: IssueArgs) -> Out {
    let key = signing_key(&a.key, &a.key_id)?;
    let use_ = match a.use_.as_str() {
        "deploy" => TokenUse::Deploy,
        "rollback" => TokenUse::Rollback,
        _ => TokenUse::Command,
    };
    let now = crate::clock::realtime_ns().div_euclid(1_000_000_000);
    let ttl = parse_duration_s("--ttl", &a.ttl)?;
    let start = now
        + a.starts_in
            .as_deref()
            .map(|s| parse_duration_s("--starts-in", s))
            .transpose()?
            .unwrap_or(0);
    let mut claims = Claims {
        iss: a.issuer.clone(),
        sub: String::new(),
        aud: Audience::One(a.device.clone()),
        nbf: start,
        exp: start + ttl,
        iat: Some(now),
        jti: token::new_jti(),
        use_,
        bundle_digest: None,
        bundle_version: None,
        scope: None,
    };
    match use_ {
        TokenUse::Deploy => {
            let path = a
                .bundle
                .as_ref()
                .ok_or_else(|| usage("--use deploy needs --bundle DIR|ARCHIVE"))?;
            let b = Bundle::from_path(path, BundleLimits::default()).map_err(|e| refused(e.to_string()))?;
            let p = bundle::parse_manifest(&b).map_err(|e| refused(e.to_string()))?;
            claims.sub = a.target.clone().unwrap_or_else(|| p.target().to_string());
            claims.bundle_digest = Some(p.digest.clone());
            claims.bundle_version = Some(p.manifest.version.clone());
            eprintln!(
                "deploy token for {} {} ({}) to {} on {}, valid {} s",
                p.manifest.name, p.manifest.version, p.digest, claims.sub, a.device, ttl
            );
        }
        TokenUse::Rollback => {
            claims.sub = a.target.clone().ok_or_else(|| usage("--use rollback needs --target"))?;
        }
        TokenUse::Command => {
            let axis = a.axis.clone().ok_or_else(|| usage("--use command needs --axis"))?;
            if a.actions.is_empty() {
                return Err(usage("--use command needs --actions, e.g. SetRate,Derate"));
            }
            let actions = a
                .actions
                .iter()
                .map(|s| {
                    serde_json::from_value::<CommandAction>(serde_json::Value::String(s.clone())).map_err(|_| {
                        usage(format!(
                            "--actions {s:?}: use Start, Stop, SetRate, Derate, Resume, ResetFault or SkipReinspection"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            claims.sub = axis.clone();
            claims.scope = Some(CommandScope {
                axis,
                actions,
                min_ppm: a.min_ppm,
                max_ppm: a.max_ppm,
            });
        }
    }
    let jwt = token::issue(&claims, &key);
    match &a.out {
        Some(p) => {
            write_private(p, &format!("{jwt}\n"), true)?;
            eprintln!("token written to {}", p.display());
        }
        None => println!("{jwt}"),
    }
    Ok(())
}

fn read_token(file: &Option<PathBuf>) -> Result<String, Fail> {
    use std::io::Read;
    // A token is at most MAX_TOKEN_BYTES; with room for surrounding blanks,
    // anything longer is refused without reading it all.
    let max = token::MAX_TOKEN_BYTES as u64 + 1024;
    let read_capped = |r: &mut dyn Read, what: &str| -> Result<String, Fail> {
        let mut buf = Vec::new();
        r.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| io_fail(format!("{what}: {e}")))?;
        if buf.len() as u64 > max {
            return Err(usage(format!(
                "{what} holds more than {max} bytes; a token is at most {} bytes: give the file with only the token",
                token::MAX_TOKEN_BYTES
            )));
        }
        String::from_utf8(buf).map_err(|_| usage(format!("{what}: the token is not UTF-8 text")))
    };
    let text = match file {
        Some(p) if p.as_os_str() == "-" => read_capped(&mut std::io::stdin(), "stdin")?,
        Some(p) => {
            let what = format!("--token-file {}", p.display());
            let mut f = std::fs::File::open(p).map_err(|e| io_fail(format!("{what}: {e}")))?;
            read_capped(&mut f, &what)?
        }
        None => std::env::var("TRIAD_TOKEN")
            .map_err(|_| usage("no token: give --token-file FILE (or -), or set TRIAD_TOKEN"))?,
    };
    let t = text.trim().to_string();
    if t.is_empty() {
        return Err(usage("the token is empty"));
    }
    Ok(t)
}

fn post(url: &str, token: &str, body: Option<Vec<u8>>) -> Result<(u16, serde_json::Value), Fail> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_fail(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| io_fail(e.to_string()))?;
        let mut req = client.post(url).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/gzip").body(b);
        }
        let resp = req.send().await.map_err(|e| io_fail(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| io_fail(format!("{url}: {e}")))?;
        let v = serde_json::from_str(&text)
            .unwrap_or(serde_json::json!({"outcome": "refused", "code": "http", "reason": text}));
        Ok((status, v))
    })
}

fn report(status: u16, v: &serde_json::Value, json: bool) -> Out {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
    if status == 200 {
        if !json {
            let m = &v["model"];
            let t = &v["timings"];
            println!(
                "{} {}: {} {} runs on {} (was {}); verify {:.1} ms, load {:.1} ms, warm-up {:.1} ms, golden {:.1} ms; taken by {}/{} worker(s), swap {} ns",
                v["outcome"].as_str().unwrap_or("?"),
                v["target"].as_str().unwrap_or("?"),
                m["name"].as_str().unwrap_or("?"),
                m["version"].as_str().unwrap_or("?"),
                v["target"].as_str().unwrap_or("?"),
                v["from_version"].as_str().unwrap_or("?"),
                t["verify_ms"].as_f64().unwrap_or(0.0),
                t["load_ms"].as_f64().unwrap_or(0.0),
                t["warmup_ms"].as_f64().unwrap_or(0.0),
                t["golden_ms"].as_f64().unwrap_or(0.0),
                v["swapped_workers"],
                v["workers"],
                v["swap_ns_max"]
            );
        }
        Ok(())
    } else {
        Err(refused(format!(
            "refused by the node ({}, {}): {}",
            if status == 0 {
                "connection closed; reason from its audit log".to_string()
            } else {
                format!("HTTP {status}")
            },
            v["code"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or("?")
        )))
    }
}

/// `triad deploy`.
pub fn deploy(a: DeployArgs) -> ExitCode {
    finish((|| {
        let token = read_token(&a.token_file)?;
        let limits = BundleLimits {
            max_total_bytes: u64::MAX / 2,
            max_files: 10_000,
        };
        let b = Bundle::from_path(&a.bundle, limits).map_err(|e| refused(e.to_string()))?;
        let target = match &a.target {
            Some(t) => t.clone(),
            None => bundle::parse_manifest(&b)
                .map_err(|e| refused(e.to_string()))?
                .target()
                .to_string(),
        };
        let body = if a.bundle.is_dir() {
            b.to_archive()
        } else {
            std::fs::read(&a.bundle).map_err(|e| io_fail(format!("{}: {e}", a.bundle.display())))?
        };
        let url = format!("{}/api/models/{target}/deploy", a.node.trim_end_matches('/'));
        let (status, v) = post(&url, &token, Some(body)).or_else(|e| explain(&a.node, &target, "deploy", e))?;
        report(status, &v, a.json)
    })())
}

/// The node may answer before it has read a request (a bundle over its size
/// limit, a token refused before the body): the connection then breaks while
/// the bundle is still being sent. Its reason is in its audit log.
fn explain(node: &str, target: &str, action: &str, fail: Fail) -> Result<(u16, serde_json::Value), Fail> {
    let url = format!("{}/api/audit?limit=20", node.trim_end_matches('/'));
    let recent = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                let r = reqwest::get(&url).await.ok()?;
                r.json::<Vec<serde_json::Value>>().await.ok()
            })
        });
    let since = crate::clock::realtime_ns() - 30_000_000_000;
    let hit = recent.unwrap_or_default().into_iter().rev().find(|r| {
        r["target"] == target
            && r["action"] == action
            && r["outcome"] == "refused"
            && r["stamp_ns"].as_i64().is_some_and(|t| t >= since)
    });
    match hit {
        Some(r) => Ok((
            0,
            serde_json::json!({"outcome": "refused", "code": r["code"], "reason": r["reason"]}),
        )),
        None => Err(fail),
    }
}

/// `triad rollback`.
pub fn rollback(a: RollbackArgs) -> ExitCode {
    finish((|| {
        let token = read_token(&a.token_file)?;
        let url = format!("{}/api/models/{}/rollback", a.node.trim_end_matches('/'), a.target);
        let (status, v) = post(&url, &token, None).or_else(|e| explain(&a.node, &a.target, "rollback", e))?;
        report(status, &v, a.json)
    })())
}
